//! `masv events ls|show|retry`: the post-transfer actions' events and their deliveries, through
//! the agent's API.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::agent::{AgentArgs, AgentClient, Column, print_json, table};

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    agent: AgentArgs,
    #[command(subcommand)]
    command: EventsCommand,
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// List the latest events, newest first, with each action's delivery: its state, attempts
    /// and last error.
    #[command(after_help = "Examples:\n  masv events ls\n  masv events ls --failed")]
    Ls {
        /// Only events with a delivery given up or failing.
        #[arg(long)]
        failed: bool,
        /// At most this many events.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// One event in detail: its payload and its deliveries (JSON).
    #[command(after_help = "Example:\n  masv events show 01JEXAMPLE0000000000000000")]
    Show { id: String },
    /// Attempt again, now, the deliveries of an event that were given up.
    #[command(after_help = "Example:\n  masv events retry 01JEXAMPLE0000000000000000")]
    Retry { id: String },
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

pub async fn run(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let client = AgentClient::new(&args.agent)?;
    let json = args.agent.json;
    match args.command {
        EventsCommand::Ls { failed, limit } => {
            let limit = limit.to_string();
            let mut query = vec![("limit", limit.as_str())];
            if failed {
                query.push(("failed", "true"));
            }
            let answer = client.get_query(&["events"], &query).await?;
            if json {
                print_json(&answer);
                return Ok(ExitCode::SUCCESS);
            }
            let mut rows = Vec::new();
            for e in answer["events"].as_array().into_iter().flatten() {
                let deliveries = e["deliveries"].as_array().cloned().unwrap_or_default();
                let subject = e["payload"]["package"]["name"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| e["transfer_id"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "-".into());
                let first = |d: Option<&Value>| match d {
                    Some(d) => vec![
                        text(d, "action"),
                        text(d, "state"),
                        text(d, "attempts"),
                        text(d, "last_error")
                            .lines()
                            .next()
                            .unwrap_or("-")
                            .to_owned(),
                    ],
                    None => vec!["(no action)".into(), "-".into(), "-".into(), "-".into()],
                };
                let mut row = vec![
                    text(e, "id"),
                    text(e, "event"),
                    text(e, "created_at"),
                    text(e, "rule"),
                    subject,
                ];
                row.extend(first(deliveries.first()));
                rows.push(row);
                for d in deliveries.iter().skip(1) {
                    let mut row = vec![String::new(); 5];
                    row.extend(first(Some(d)));
                    rows.push(row);
                }
            }
            print!(
                "{}",
                table(
                    &[
                        Column::left("ID"),
                        Column::left("EVENT"),
                        Column::left("AT"),
                        Column::left("RULE"),
                        Column::left("PACKAGE/TRANSFER"),
                        Column::left("ACTION"),
                        Column::left("STATE"),
                        Column::right("ATTEMPTS"),
                        Column::left("LAST ERROR"),
                    ],
                    &rows
                )
            );
        }
        EventsCommand::Show { id } => {
            let answer = client.get(&["events", &id]).await?;
            print_json(&answer);
        }
        EventsCommand::Retry { id } => {
            let answer = client.post_empty(&["events", &id, "retry"]).await?;
            if json {
                print_json(&answer);
            } else {
                match answer["retried"].as_u64().unwrap_or(0) {
                    0 => println!(
                        "Event {id}: no delivery was given up; nothing to retry (see `masv events show {id}`)."
                    ),
                    n => println!("Event {id}: {n} deliveries will be attempted again now."),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
