//! The `masv` command line (clap). Agent commands talk to a running agent over its REST API,
//! never to its database; `masv hub …` commands run or administer a hub's data folder.

mod agent;
mod automation;
mod bandwidth;
mod config;
mod download;
mod hub;
mod server;
mod transfers;
mod upload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "masv",
    version,
    about = "A MASV-compatible file-transfer agent and hub"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run or administer a MASV-compatible hub.
    #[command(subcommand)]
    Hub(hub::HubCommand),
    /// Run the agent.
    #[command(subcommand)]
    Server(server::ServerCommand),
    /// Download Packages through a running agent (start, ls, status, pause, resume, rm).
    Download(download::DownloadArgs),
    /// Upload files and folders through a running agent (start email|link|portal, ls, status,
    /// pause, resume, finalize, link, rm).
    Upload(upload::UploadArgs),
    /// The automations of a running agent (ls, status, run, enable, disable).
    Automation(automation::AutomationArgs),
    /// Rate limits and FIFO caps of a running agent (show, set).
    Bandwidth(bandwidth::BandwidthArgs),
    /// Check a configuration file, or print its JSON Schema.
    #[command(subcommand)]
    Config(config::ConfigCommand),
}

/// Runs the command line; the exit code says whether it worked.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Hub(command) => hub::run(command).await,
            Command::Server(command) => server::run(command).await,
            Command::Download(args) => download::run(args).await,
            Command::Upload(args) => upload::run(args).await,
            Command::Automation(args) => automation::run(args).await,
            Command::Bandwidth(args) => bandwidth::run(args).await,
            Command::Config(command) => config::run(command),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
