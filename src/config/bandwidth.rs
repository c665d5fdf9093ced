//! `[bandwidth]` as the engine uses it: rates in bytes per second, schedule rules as transfer
//! windows (`crate::schedule::Window`, the automations' windows) each with its limits, and the
//! FIFO caps. One check serves the file and the bodies of `PUT`/`PATCH /api/v1/bandwidth`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::raw::{RateValue, RawBandwidth};
use super::units::parse_rate;
use crate::schedule::Window;

/// Rates in bytes per second; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub upload: Option<u64>,
    pub download: Option<u64>,
}

#[derive(Debug, Clone)]
struct LimitRule {
    window: Window,
    limits: Limits,
}

/// Checked bandwidth settings: the default limits, the schedule, the FIFO caps. The default
/// value limits nothing.
#[derive(Debug, Clone, Default)]
pub struct BandwidthSettings {
    default: Limits,
    rules: Vec<LimitRule>,
    max_active_uploads: Option<usize>,
    max_active_downloads: Option<usize>,
    /// As written, for showing and for merging a `PATCH` into.
    raw: RawBandwidth,
}

/// Two settings are the same when they were written the same.
impl PartialEq for BandwidthSettings {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

/// One thing wrong in a `[bandwidth]` section: the key (and schedule rule) it is at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BandwidthProblem {
    pub key: &'static str,
    /// Index in `schedule`, for a problem inside one of its rules.
    pub rule: Option<usize>,
    pub message: String,
}

/// What a written rate means: not written, no limit, or bytes per second.
enum Rate {
    Unset,
    Unlimited,
    Limit(u64),
}

fn rate(value: Option<&RateValue>) -> Result<Rate, String> {
    match value {
        None => Ok(Rate::Unset),
        Some(RateValue::Text(t)) if t.trim().eq_ignore_ascii_case("unlimited") => {
            Ok(Rate::Unlimited)
        }
        Some(RateValue::Text(t)) => parse_rate(t).map(Rate::Limit),
        Some(RateValue::BytesPerSecond(0)) => Err(
            "0 bytes per second would stop every transfer; leave the limit out, or write \"unlimited\", for no limit (pause transfers to stop them)".into(),
        ),
        Some(RateValue::BytesPerSecond(b)) => Ok(Rate::Limit(*b)),
    }
}

impl Rate {
    fn or(self, default: Option<u64>) -> Option<u64> {
        match self {
            Rate::Unset => default,
            Rate::Unlimited => None,
            Rate::Limit(b) => Some(b),
        }
    }
}

struct Problems(Vec<BandwidthProblem>);

impl Problems {
    fn add(&mut self, key: &'static str, rule: Option<usize>, message: String) {
        let message = match rule {
            Some(i) if key == "schedule" => format!("schedule rule {}: {message}", i + 1),
            Some(i) => format!("schedule rule {}: {key}: {message}", i + 1),
            None => format!("{key}: {message}"),
        };
        self.0.push(BandwidthProblem { key, rule, message });
    }

    fn limit(
        &mut self,
        key: &'static str,
        rule: Option<usize>,
        value: Option<&RateValue>,
        default: Option<u64>,
    ) -> Option<u64> {
        match rate(value) {
            Ok(r) => r.or(default),
            Err(e) => {
                self.add(key, rule, e);
                None
            }
        }
    }

    fn cap(&mut self, key: &'static str, value: Option<usize>) -> Option<usize> {
        if value == Some(0) {
            self.add(
                key,
                None,
                "must be at least 1; leave it out for no cap (pause transfers to stop them)".into(),
            );
            return None;
        }
        value
    }
}

impl BandwidthSettings {
    /// Checks what was written; every problem is reported.
    pub fn check(raw: RawBandwidth) -> Result<BandwidthSettings, Vec<BandwidthProblem>> {
        let mut problems = Problems(Vec::new());
        let default = Limits {
            upload: problems.limit("upload", None, raw.upload.as_ref(), None),
            download: problems.limit("download", None, raw.download.as_ref(), None),
        };
        let tz = raw.timezone.as_deref();
        // A bad time zone would fail every rule: say it once, at `timezone`.
        let zone_ok = match Window::parse(&[], "00:00", "00:00", tz) {
            Ok(_) => true,
            Err(e) => {
                problems.add("timezone", None, e.to_string());
                false
            }
        };
        let mut rules = Vec::new();
        for (i, r) in raw.schedule.iter().enumerate() {
            let limits = Limits {
                upload: problems.limit("upload", Some(i), r.upload.as_ref(), default.upload),
                download: problems.limit(
                    "download",
                    Some(i),
                    r.download.as_ref(),
                    default.download,
                ),
            };
            match Window::parse(&r.days, &r.start, &r.end, tz) {
                Ok(window) => rules.push(LimitRule { window, limits }),
                Err(_) if !zone_ok => {}
                Err(e) => problems.add("schedule", Some(i), e.to_string()),
            }
        }
        let max_active_uploads = problems.cap("max_active_uploads", raw.max_active_uploads);
        let max_active_downloads = problems.cap("max_active_downloads", raw.max_active_downloads);
        if !problems.0.is_empty() {
            return Err(problems.0);
        }
        Ok(BandwidthSettings {
            default,
            rules,
            max_active_uploads,
            max_active_downloads,
            raw,
        })
    }

    /// As written.
    pub fn raw(&self) -> &RawBandwidth {
        &self.raw
    }

    pub fn max_active_uploads(&self) -> Option<usize> {
        self.max_active_uploads
    }

    pub fn max_active_downloads(&self) -> Option<usize> {
        self.max_active_downloads
    }

    /// The limits in force at `at`, and the schedule rule (0-based) they come from, if any:
    /// the first rule that holds `at`, else the default limits.
    pub fn limits_at(&self, at: DateTime<Utc>) -> (Limits, Option<usize>) {
        match self.rules.iter().position(|r| r.window.contains(at)) {
            Some(i) => (self.rules[i].limits, Some(i)),
            None => (self.default, None),
        }
    }

    /// The next time after `at` that a schedule rule starts or ends (within eight days).
    pub fn next_change(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.rules
            .iter()
            .filter_map(|r| r.window.next_change(at))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::RawLimitRule;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn text(s: &str) -> Option<RateValue> {
        Some(RateValue::Text(s.into()))
    }

    fn rule(days: &[&str], start: &str, end: &str) -> RawLimitRule {
        RawLimitRule {
            days: days.iter().map(|d| d.to_string()).collect(),
            start: start.into(),
            end: end.into(),
            upload: None,
            download: None,
        }
    }

    #[test]
    fn the_schedule_picks_the_first_rule_holding_the_moment_else_the_defaults() {
        let raw = RawBandwidth {
            upload: text("200Mbit"),
            download: None,
            timezone: Some("America/Toronto".into()),
            schedule: vec![
                RawLimitRule {
                    upload: text("50Mbit"),
                    download: text("100Mbit"),
                    ..rule(&["weekdays"], "09:00", "18:00")
                },
                RawLimitRule {
                    download: text("unlimited"),
                    upload: text("unlimited"),
                    ..rule(&["fri"], "12:00", "02:00")
                },
                RawLimitRule {
                    download: text("1MiB"),
                    ..rule(&["weekends"], "00:00", "00:00")
                },
            ],
            ..RawBandwidth::default()
        };
        let s = BandwidthSettings::check(raw).unwrap();
        // Monday 2026-11-23, 10:00 in Toronto (UTC-5) is 15:00 UTC.
        let office = Limits {
            upload: Some(6_250_000),
            download: Some(12_500_000),
        };
        assert_eq!(s.limits_at(utc("2026-11-23T15:00:00Z")), (office, Some(0)));
        // 08:59 Toronto: before the rule, the defaults (download unlimited).
        let default = Limits {
            upload: Some(25_000_000),
            download: None,
        };
        assert_eq!(s.limits_at(utc("2026-11-23T13:59:00Z")), (default, None));
        assert_eq!(
            s.next_change(utc("2026-11-23T13:59:00Z")),
            Some(utc("2026-11-23T14:00:00Z")),
            "the boundary is 09:00 Toronto"
        );
        // Friday 13:00 Toronto: both the office rule and the Friday one hold; the first wins.
        assert_eq!(s.limits_at(utc("2026-11-27T18:00:00Z")).1, Some(0));
        // Friday 20:00 Toronto: only the Friday rule, which lifts every limit.
        assert_eq!(
            s.limits_at(utc("2026-11-28T01:00:00Z")),
            (Limits::default(), Some(1))
        );
        // Saturday 01:00 Toronto still belongs to Friday's rule (it crosses midnight).
        assert_eq!(s.limits_at(utc("2026-11-28T06:00:00Z")).1, Some(1));
        // Saturday 03:00 Toronto: the weekend rule; its upload falls back to the default.
        assert_eq!(
            s.limits_at(utc("2026-11-28T08:00:00Z")),
            (
                Limits {
                    upload: Some(25_000_000),
                    download: Some(1 << 20),
                },
                Some(2)
            )
        );
        assert_eq!(
            BandwidthSettings::default().limits_at(Utc::now()),
            (Limits::default(), None),
            "no settings, no limits"
        );
    }

    #[test]
    fn every_bad_value_is_named_with_the_way_to_write_it() {
        let raw = RawBandwidth {
            upload: text("fast"),
            download: Some(RateValue::BytesPerSecond(0)),
            timezone: Some("Mars/Olympus".into()),
            schedule: vec![
                rule(&["someday"], "09:00", "18:00"),
                RawLimitRule {
                    upload: text("10 parsecs"),
                    ..rule(&[], "9am", "18:00")
                },
            ],
            max_active_uploads: Some(0),
            max_active_downloads: Some(2),
        };
        let problems = BandwidthSettings::check(raw).unwrap_err();
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        let all = messages.join("\n");
        for expected in [
            "upload: \"fast\" is not a rate",
            "download: 0 bytes per second",
            "schedule rule 2: upload: \"10 parsecs\" is not a rate",
            "timezone: unknown time zone \"Mars/Olympus\"",
            "max_active_uploads: must be at least 1",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
        assert_eq!(
            all.matches("Mars/Olympus").count(),
            1,
            "the zone is named once: {all}"
        );
        let raw = RawBandwidth {
            schedule: vec![rule(&["someday"], "09:00", "18:00"), rule(&[], "9am", "x")],
            ..RawBandwidth::default()
        };
        let problems = BandwidthSettings::check(raw).unwrap_err();
        assert_eq!(problems[0].rule, Some(0));
        assert!(problems[0].message.contains("\"someday\" is not a day"));
        assert_eq!(problems[1].rule, Some(1));
        assert!(problems[1].message.contains("\"9am\" is not a time of day"));
    }
}
