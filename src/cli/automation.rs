//! `masv automation ls|status|run|enable|disable`: the rules in force, through the agent's API.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::agent::{AgentArgs, AgentClient, Column, print_json, table};

#[derive(Debug, Args)]
pub struct AutomationArgs {
    #[command(flatten)]
    agent: AgentArgs,
    #[command(subcommand)]
    command: AutomationCommand,
}

#[derive(Debug, Subcommand)]
enum AutomationCommand {
    /// List the automations with their state, last and next run, and counts.
    #[command(after_help = "Example:\n  masv automation ls")]
    Ls,
    /// One automation in detail.
    #[command(after_help = "Example:\n  masv automation status outbox")]
    Status { name: String },
    /// Run an automation now (sweep its folder, check its link or inbox).
    #[command(after_help = "Example:\n  masv automation run nightly-link")]
    Run { name: String },
    /// Switch an automation on (kept across restarts).
    #[command(after_help = "Example:\n  masv automation enable outbox")]
    Enable { name: String },
    /// Switch an automation off (kept across restarts).
    #[command(after_help = "Example:\n  masv automation disable outbox")]
    Disable { name: String },
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("-").to_owned()
}

pub async fn run(args: AutomationArgs) -> anyhow::Result<ExitCode> {
    let client = AgentClient::new(&args.agent)?;
    let json = args.agent.json;
    match args.command {
        AutomationCommand::Ls => {
            let answer = client.get(&["automations"]).await?;
            if json {
                print_json(&answer);
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(error) = answer.get("config_error").and_then(Value::as_str) {
                eprintln!(
                    "The configuration on disk has errors; the last good rules are in force:\n{error}\n"
                );
            }
            let rows: Vec<Vec<String>> = answer["automations"]
                .as_array()
                .map(|rules| {
                    rules
                        .iter()
                        .map(|r| {
                            let counts = &r["counts"];
                            vec![
                                text(r, "name"),
                                text(r, "kind"),
                                text(r, "state"),
                                text(r, "last_run"),
                                text(r, "next_run"),
                                format!(
                                    "{}/{}/{}",
                                    counts["queued"], counts["sent"], counts["failed"]
                                ),
                                text(r, "last_error"),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            print!(
                "{}",
                table(
                    &[
                        Column::left("NAME"),
                        Column::left("KIND"),
                        Column::left("STATE"),
                        Column::left("LAST RUN"),
                        Column::left("NEXT RUN"),
                        Column::right("QUEUED/SENT/FAILED"),
                        Column::left("LAST ERROR"),
                    ],
                    &rows
                )
            );
        }
        AutomationCommand::Status { name } => {
            let answer = client.get(&["automations", &name]).await?;
            print_json(&answer);
        }
        AutomationCommand::Run { name } => {
            let answer = client.post_empty(&["automations", &name, "run"]).await?;
            if json {
                print_json(&answer)
            } else {
                println!("Automation {name} runs now.")
            }
        }
        AutomationCommand::Enable { name } => {
            let answer = client.post_empty(&["automations", &name, "enable"]).await?;
            if json {
                print_json(&answer)
            } else {
                println!("Automation {name} enabled.")
            }
        }
        AutomationCommand::Disable { name } => {
            let answer = client
                .post_empty(&["automations", &name, "disable"])
                .await?;
            if json {
                print_json(&answer)
            } else {
                println!("Automation {name} disabled.")
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
