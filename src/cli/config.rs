//! `masv config check|schema`: a configuration file checked without starting anything, and the
//! JSON Schema editors use to complete keys.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file: every error as file:line:col, exit 1 if there is any.
    #[command(after_help = "Example:\n  masv config check /etc/masv-agent/agent.toml")]
    Check {
        /// The file (default: $MASV_CONFIG).
        #[arg(env = "MASV_CONFIG")]
        file: PathBuf,
        /// Check everything but whether secrets ({env}, {file}) can be read: for linting
        /// configurations in CI, where the secrets are not.
        #[arg(long)]
        no_secrets: bool,
    },
    /// Print the JSON Schema of the configuration format (or of the events' payload).
    #[command(
        after_help = "Examples:\n  masv config schema > schema/masv-agent.schema.json\n  masv config schema --event > schema/masv-agent-event.schema.json"
    )]
    Schema {
        /// The schema of the JSON the post-transfer actions get (webhook body, command stdin).
        #[arg(long)]
        event: bool,
    },
}

pub fn run(command: ConfigCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Check { file, no_secrets } => match if no_secrets {
            // Every secret reads as a placeholder: what depends on a secret is still checked.
            crate::config::load_with(&file, &|_| Ok(crate::cloud::dto::Secret::new("unread")))
        } else {
            crate::config::load(&file)
        } {
            Ok(config) => {
                println!("{}: ok, {} rules", file.display(), config.rules.len());
                for rule in &config.rules {
                    println!(
                        "  {} ({}{})",
                        rule.name,
                        rule.kind_name(),
                        if rule.enabled { "" } else { ", disabled" }
                    );
                }
                for action in &config.actions {
                    println!("  action {} ({})", action.name, action.kind());
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                eprintln!("{errors}");
                Ok(ExitCode::FAILURE)
            }
        },
        ConfigCommand::Schema { event } => {
            if event {
                print!("{}", crate::actions::event::schema());
            } else {
                print!("{}", crate::config::schema());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
