//! `masv bandwidth show|set`: the rate limits and FIFO caps of a running agent, through its API
//! (`GET` and `PATCH /api/v1/bandwidth`).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::agent::{AgentArgs, AgentClient, Column, human_speed, print_json, table};

#[derive(Debug, Args)]
pub struct BandwidthArgs {
    #[command(flatten)]
    agent: AgentArgs,
    #[command(subcommand)]
    command: BandwidthCommand,
}

#[derive(Debug, Subcommand)]
enum BandwidthCommand {
    /// The limits in force now, the settings and schedule they come from, and the FIFO queues.
    #[command(after_help = "Example:\n  masv bandwidth show")]
    Show,
    /// Change some settings at run time; the others stay. They hold until the agent restarts
    /// or its configuration file's [bandwidth] section changes.
    #[command(
        after_help = "Examples:\n  masv bandwidth set --upload 50Mbit --download 25MiB\n  masv bandwidth set --download unlimited --max-active-downloads 1\n  masv bandwidth set --max-active-uploads none --no-schedule"
    )]
    Set(SetArgs),
}

#[derive(Debug, Args)]
struct SetArgs {
    /// Upload limit outside the schedule's rules: "200Mbit", "25MiB", "unlimited".
    #[arg(long)]
    upload: Option<String>,
    /// Download limit outside the schedule's rules, written like --upload.
    #[arg(long)]
    download: Option<String>,
    /// FIFO mode: uploads active at once, the others wait queued; "none" for no cap.
    #[arg(long, value_parser = parse_cap)]
    max_active_uploads: Option<Cap>,
    /// FIFO mode for downloads, like --max-active-uploads.
    #[arg(long, value_parser = parse_cap)]
    max_active_downloads: Option<Cap>,
    /// IANA time zone of the schedule's times, e.g. "Europe/London".
    #[arg(long)]
    timezone: Option<String>,
    /// Drop the schedule: the default limits hold at all times.
    #[arg(long)]
    no_schedule: bool,
}

#[derive(Debug, Clone, Copy)]
enum Cap {
    None,
    Transfers(u64),
}

fn parse_cap(text: &str) -> Result<Cap, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(Cap::None);
    }
    match text.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(Cap::Transfers(n)),
        _ => Err(format!(
            "{text:?}: write a number of transfers (1 or more), or \"none\" for no cap"
        )),
    }
}

impl SetArgs {
    /// The JSON merge patch these flags make.
    fn patch(&self) -> Map<String, Value> {
        let mut patch = Map::new();
        for (key, value) in [
            ("upload", &self.upload),
            ("download", &self.download),
            ("timezone", &self.timezone),
        ] {
            if let Some(v) = value {
                patch.insert(key.into(), json!(v));
            }
        }
        for (key, cap) in [
            ("max_active_uploads", self.max_active_uploads),
            ("max_active_downloads", self.max_active_downloads),
        ] {
            match cap {
                Some(Cap::None) => {
                    patch.insert(key.into(), Value::Null);
                }
                Some(Cap::Transfers(n)) => {
                    patch.insert(key.into(), json!(n));
                }
                None => {}
            }
        }
        if self.no_schedule {
            patch.insert("schedule".into(), Value::Null);
        }
        patch
    }
}

fn rate(v: &Value) -> String {
    v.as_u64().map_or_else(|| "unlimited".into(), human_speed)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The answer of `GET /bandwidth` as text.
fn render(view: &Value) -> String {
    let (now, settings) = (&view["now"], &view["settings"]);
    let row = |dir: &str, flow: &str, cap: &str| {
        vec![
            dir.to_owned(),
            rate(&now[dir]),
            text(&settings[dir]),
            text(&view[flow]["active"]),
            text(&view[flow]["queued"]),
            text(&settings[cap]),
        ]
    };
    let mut out = table(
        &[
            Column::left("DIRECTION"),
            Column::right("LIMIT NOW"),
            Column::left("DEFAULT"),
            Column::right("ACTIVE"),
            Column::right("QUEUED"),
            Column::right("MAX ACTIVE"),
        ],
        &[
            row("upload", "uploads", "max_active_uploads"),
            row("download", "downloads", "max_active_downloads"),
        ],
    );
    match now["rule"].as_u64() {
        Some(rule) => out.push_str(&format!("In force: schedule rule {rule}")),
        None => out.push_str("In force: the default limits"),
    }
    match now["next_change"].as_str() {
        Some(t) => out.push_str(&format!("; the schedule changes next at {t}\n")),
        None => out.push('\n'),
    }
    if let Some(rules) = settings["schedule"].as_array() {
        let zone = settings["timezone"].as_str().unwrap_or("the machine's");
        out.push_str(&format!("Schedule (time zone: {zone}):\n"));
        let rows: Vec<Vec<String>> = rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let days = r["days"].as_array().map_or("daily".into(), |d| {
                    d.iter().map(text).collect::<Vec<_>>().join(",")
                });
                vec![
                    (i + 1).to_string(),
                    days,
                    format!("{}-{}", text(&r["start"]), text(&r["end"])),
                    text(&r["upload"]),
                    text(&r["download"]),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                Column::right("RULE"),
                Column::left("DAYS"),
                Column::left("HOURS"),
                Column::left("UPLOAD"),
                Column::left("DOWNLOAD"),
            ],
            &rows,
        ));
    }
    out
}

pub async fn run(args: BandwidthArgs) -> anyhow::Result<ExitCode> {
    let client = AgentClient::new(&args.agent)?;
    let answer = match args.command {
        BandwidthCommand::Show => client.get(&["bandwidth"]).await?,
        BandwidthCommand::Set(set) => {
            let patch = set.patch();
            anyhow::ensure!(
                !patch.is_empty(),
                "nothing to set; give --upload, --download, --max-active-uploads, --max-active-downloads, --timezone or --no-schedule"
            );
            client.patch(&["bandwidth"], &Value::Object(patch)).await?
        }
    };
    if args.agent.json {
        print_json(&answer);
    } else {
        print!("{}", render(&answer));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_flags_become_a_merge_patch_and_none_removes_a_cap() {
        let args = SetArgs {
            upload: Some("50Mbit".into()),
            download: None,
            max_active_uploads: Some(parse_cap("none").unwrap()),
            max_active_downloads: Some(parse_cap("2").unwrap()),
            timezone: None,
            no_schedule: true,
        };
        assert_eq!(
            Value::Object(args.patch()),
            json!({"upload": "50Mbit", "max_active_uploads": null, "max_active_downloads": 2, "schedule": null})
        );
        assert!(parse_cap("0").unwrap_err().contains("\"none\""));
    }

    #[test]
    fn the_view_reads_as_a_table_with_the_schedule() {
        let view = json!({
            "now": {"upload": 6_250_000, "download": null, "rule": 1, "next_change": "2026-11-23T18:00:00.000Z"},
            "settings": {"upload": "200Mbit", "timezone": "UTC", "max_active_downloads": 1,
                "schedule": [{"days": ["weekdays"], "start": "09:00", "end": "18:00", "upload": "50Mbit"}]},
            "uploads": {"active": 2, "queued": 0},
            "downloads": {"active": 1, "queued": 3},
        });
        let text = render(&view);
        assert!(text.contains("upload     6.0 MiB/s  200Mbit"), "{text}");
        assert!(text.contains("download   unlimited  -"), "{text}");
        assert!(
            text.contains(
                "In force: schedule rule 1; the schedule changes next at 2026-11-23T18:00:00.000Z"
            ),
            "{text}"
        );
        assert!(
            text.contains("1  weekdays  09:00-18:00  50Mbit  -"),
            "{text}"
        );
    }
}
