//! Time: cron schedules (5-field crontab, `@daily` …, in a time zone) → ticks, and transfer
//! windows (days and hours when a rule's transfers may run).

use std::time::Duration;

use chrono::{DateTime, Datelike, Local, NaiveTime, Timelike, Utc, Weekday};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "{expr:?}: {message}; a crontab line has 5 fields (minute hour day month weekday), e.g. \"0 2 * * *\", or @hourly, @daily, @weekly, @monthly"
    )]
    Cron { expr: String, message: String },
    #[error("unknown time zone {0:?}; use an IANA name like \"Europe/London\" or \"UTC\"")]
    TimeZone(String),
    #[error("{0}")]
    Window(String),
}

/// A time zone: a named one, or the machine's.
#[derive(Debug, Clone, Copy)]
enum Zone {
    Local,
    Named(chrono_tz::Tz),
}

impl Zone {
    fn parse(tz: Option<&str>) -> Result<Zone, ScheduleError> {
        match tz {
            None => Ok(Zone::Local),
            Some(name) => name
                .parse::<chrono_tz::Tz>()
                .map(Zone::Named)
                .map_err(|_| ScheduleError::TimeZone(name.to_owned())),
        }
    }

    /// The wall-clock time and weekday at `at` in this zone.
    fn wall(&self, at: DateTime<Utc>) -> (NaiveTime, Weekday) {
        match self {
            Zone::Local => {
                let t = at.with_timezone(&Local);
                (t.time(), t.weekday())
            }
            Zone::Named(tz) => {
                let t = at.with_timezone(tz);
                (t.time(), t.weekday())
            }
        }
    }
}

/// A cron schedule in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
    zone: Zone,
}

impl Schedule {
    /// `expr`: 5-field crontab or `@hourly`, `@daily`…; `tz`: an IANA name (None: the machine's).
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Schedule, ScheduleError> {
        let zone = Zone::parse(tz)?;
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| ScheduleError::Cron {
                expr: expr.to_owned(),
                message: e.to_string(),
            })?;
        Ok(Schedule {
            expr: expr.to_owned(),
            cron,
            zone,
        })
    }

    pub fn expression(&self) -> &str {
        &self.expr
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.zone {
            Zone::Local => self
                .cron
                .find_next_occurrence(&after.with_timezone(&Local), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            Zone::Named(tz) => self
                .cron
                .find_next_occurrence(&after.with_timezone(&tz), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
        }
    }
}

/// Sleeps until the next tick after now; `None` when cancelled or when no tick will come.
pub async fn next_tick(schedule: &Schedule, cancel: &CancellationToken) -> Option<DateTime<Utc>> {
    let next = schedule.next_after(Utc::now())?;
    let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    tokio::select! {
        _ = cancel.cancelled() => None,
        _ = tokio::time::sleep(wait) => Some(next),
    }
}

/// When a rule's transfers may run: on some days, between two wall-clock times.
#[derive(Debug, Clone)]
pub struct Window {
    /// Monday first.
    days: [bool; 7],
    start: NaiveTime,
    end: NaiveTime,
    zone: Zone,
}

fn day_names(days: &[String]) -> Result<[bool; 7], ScheduleError> {
    if days.is_empty() {
        return Ok([true; 7]);
    }
    let mut set = [false; 7];
    for day in days {
        let d = day.trim().to_ascii_lowercase();
        let range: &[usize] = match d.as_str() {
            "daily" | "every day" | "all" => &[0, 1, 2, 3, 4, 5, 6],
            "weekdays" => &[0, 1, 2, 3, 4],
            "weekends" => &[5, 6],
            _ => {
                let index = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                    .iter()
                    .position(|p| d.starts_with(p) && d.len() <= 9)
                    .ok_or_else(|| {
                        ScheduleError::Window(format!(
                            "{day:?} is not a day; use mon … sun, weekdays, weekends or daily"
                        ))
                    })?;
                set[index] = true;
                continue;
            }
        };
        for &i in range {
            set[i] = true;
        }
    }
    Ok(set)
}

fn clock(text: &str) -> Result<NaiveTime, ScheduleError> {
    NaiveTime::parse_from_str(text.trim(), "%H:%M")
        .map_err(|_| ScheduleError::Window(format!("{text:?} is not a time of day like \"22:30\"")))
}

impl Window {
    /// `days`: "mon".."sun", "weekdays", "weekends", "daily" (empty: every day); `start` and `end`
    /// "HH:MM" in `tz`. An end before the start crosses midnight (the part after midnight
    /// belongs to the day it started); start equal to end is the whole day.
    pub fn parse(
        days: &[String],
        start: &str,
        end: &str,
        tz: Option<&str>,
    ) -> Result<Window, ScheduleError> {
        Ok(Window {
            days: day_names(days)?,
            start: clock(start)?,
            end: clock(end)?,
            zone: Zone::parse(tz)?,
        })
    }

    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let (t, day) = self.zone.wall(at);
        let today = self.days[day.num_days_from_monday() as usize];
        let yesterday = self.days[day.pred().num_days_from_monday() as usize];
        if self.start == self.end {
            today
        } else if self.start < self.end {
            today && t >= self.start && t < self.end
        } else {
            (today && t >= self.start) || (yesterday && t < self.end)
        }
    }

    /// When the window next opens after `at`, as people read it: `opens 19:00
    /// America/Toronto`, or `opens Mon 19:00 …` when that is not today.
    pub fn opening(&self, at: DateTime<Utc>) -> String {
        let zone = match self.zone {
            Zone::Local => "local time".to_owned(),
            Zone::Named(tz) => tz.name().to_owned(),
        };
        let next = if self.contains(at) {
            self.next_change(at)
                .and_then(|closes| self.next_change(closes))
        } else {
            self.next_change(at)
        };
        match next {
            Some(opens) => {
                let (time, day) = self.zone.wall(opens);
                let (_, today) = self.zone.wall(at);
                let day = if day == today {
                    String::new()
                } else {
                    format!("{day} ")
                };
                format!("opens {day}{} {zone}", time.format("%H:%M"))
            }
            None => format!("does not open within a week ({zone})"),
        }
    }

    /// When `contains` next changes after `at` (to the minute), if within eight days.
    pub fn next_change(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let now = self.contains(at);
        // Minute steps in UTC are immune to DST gaps and folds; a week is ~11,000 steps.
        let mut t = at.with_second(0)?.with_nanosecond(0)? + chrono::Duration::minutes(1);
        let limit = at + chrono::Duration::days(8);
        while t < limit {
            if self.contains(t) != now {
                return Some(t);
            }
            t += chrono::Duration::minutes(1);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_window_says_when_it_opens_in_its_zone() {
        let w = Window::parse(&[], "19:00", "23:00", Some("America/Toronto")).unwrap();
        // 14:00 in Toronto (EST, UTC-5).
        assert_eq!(
            w.opening(utc("2026-12-04T19:00:00Z")),
            "opens 19:00 America/Toronto"
        );
        // 23:30 in Toronto: closed until tomorrow.
        assert_eq!(
            w.opening(utc("2026-12-05T04:30:00Z")),
            "opens Sat 19:00 America/Toronto"
        );
    }

    #[test]
    fn crontab_lines_and_shortcuts_tick_in_their_zone() {
        let s = Schedule::parse("*/15 9-17 * * mon-fri", Some("UTC")).unwrap();
        assert_eq!(
            s.next_after(utc("2026-11-20T17:50:00Z")),
            Some(utc("2026-11-23T09:00:00Z")),
            "friday evening → monday"
        );
        let daily = Schedule::parse("@daily", Some("UTC")).unwrap();
        assert_eq!(
            daily.next_after(utc("2026-11-22T10:00:00Z")),
            Some(utc("2026-11-23T00:00:00Z"))
        );
        let hourly = Schedule::parse("@hourly", Some("UTC")).unwrap();
        assert_eq!(
            hourly.next_after(utc("2026-11-22T10:00:00Z")),
            Some(utc("2026-11-22T11:00:00Z"))
        );
        // 02:00 in New York is 07:00 UTC in winter, 06:00 UTC in summer.
        let ny = Schedule::parse("0 2 * * *", Some("America/New_York")).unwrap();
        assert_eq!(
            ny.next_after(utc("2026-01-10T12:00:00Z")),
            Some(utc("2026-01-11T07:00:00Z"))
        );
        assert_eq!(
            ny.next_after(utc("2026-07-10T12:00:00Z")),
            Some(utc("2026-07-11T06:00:00Z"))
        );
    }

    #[test]
    fn bad_expressions_and_zones_say_what_to_write() {
        let e = Schedule::parse("61 * * * *", None).unwrap_err().to_string();
        assert!(
            e.contains("\"61 * * * *\"") && e.contains("5 fields"),
            "{e}"
        );
        assert!(
            Schedule::parse("0 0 2 * * *", None).is_err(),
            "seconds are not crontab"
        );
        let e = Schedule::parse("@daily", Some("Mars/Olympus"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Mars/Olympus"), "{e}");
    }

    #[test]
    fn windows_cross_midnight_and_keep_to_their_days() {
        let w = Window::parse(&["fri".into()], "22:00", "06:00", Some("UTC")).unwrap();
        assert!(w.contains(utc("2026-11-20T23:00:00Z")), "friday night");
        assert!(
            w.contains(utc("2026-11-21T05:59:00Z")),
            "saturday morning belongs to friday"
        );
        assert!(!w.contains(utc("2026-11-21T06:00:00Z")));
        assert!(
            !w.contains(utc("2026-11-21T23:00:00Z")),
            "saturday night is not in"
        );
        assert_eq!(
            w.next_change(utc("2026-11-20T12:00:00Z")),
            Some(utc("2026-11-20T22:00:00Z"))
        );
        assert_eq!(
            w.next_change(utc("2026-11-20T22:30:00Z")),
            Some(utc("2026-11-21T06:00:00Z"))
        );
        let weekdays = Window::parse(
            &["weekdays".into()],
            "09:00",
            "17:00",
            Some("Europe/London"),
        )
        .unwrap();
        assert!(weekdays.contains(utc("2026-11-23T10:00:00Z")));
        assert!(!weekdays.contains(utc("2026-11-22T10:00:00Z")), "sunday");
        let all_day = Window::parse(&[], "00:00", "00:00", None).unwrap();
        assert!(all_day.contains(Utc::now()) && all_day.next_change(Utc::now()).is_none());
        assert!(Window::parse(&["someday".into()], "09:00", "10:00", None).is_err());
        assert!(Window::parse(&[], "9am", "10:00", None).is_err());
        // A DST change day does not trip anything.
        let dst = Window::parse(&[], "01:30", "03:30", Some("Europe/London")).unwrap();
        assert!(dst.next_change(utc("2026-03-28T12:00:00Z")).is_some());
    }
}
