//! `masv server start`: run the agent.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::config::parse_size;
use crate::daemon::{self, AgentConfig};
use crate::transfer::EngineConfig;

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Run the agent: its local REST API, and the transfers.
    #[command(
        after_help = "Example:\n  masv server start --listen 127.0.0.1:8080 --data-dir /var/lib/masv-agent --max-connections 16"
    )]
    Start(StartArgs),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Address of the local API (loopback only).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Where the agent keeps its database (default: ~/.local/share/masv-agent).
    #[arg(long, env = "MASV_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The MASV API base URL; point it at a hub (`http://HOST:PORT/v1`) to use one.
    #[arg(
        long,
        env = "MASV_CLOUD_URL",
        default_value = "https://api.massive.app/v1"
    )]
    cloud_url: String,
    /// Resume the transfers that were running when the agent stopped.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    auto_resume: bool,
    /// Default chunk size of downloads (e.g. 16MiB).
    #[arg(long, value_parser = parse_size, default_value = "16MiB")]
    chunk_size: u64,
    /// Requests in flight at once, across all transfers.
    #[arg(long, default_value_t = 16)]
    max_connections: usize,
    /// Finalize uploads as soon as their files are sent (false: they wait in idle for
    /// `masv upload finalize`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    auto_finalize: bool,
    /// The MASV API key, for team uploads (prefer the environment variable: arguments show in ps).
    #[arg(long, env = "MASV_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

pub async fn run(command: ServerCommand) -> anyhow::Result<ExitCode> {
    let ServerCommand::Start(args) = command;
    anyhow::ensure!(
        args.max_connections >= 1,
        "--max-connections must be at least 1"
    );
    anyhow::ensure!(
        args.chunk_size >= 1,
        "--chunk-size must be more than 0 bytes"
    );
    let config = AgentConfig {
        data_dir: args.data_dir.unwrap_or_else(daemon::default_data_dir),
        engine: EngineConfig {
            cloud_url: args.cloud_url,
            max_connections: args.max_connections,
            download_chunk_size: args.chunk_size,
            auto_resume: args.auto_resume,
            auto_finalize: args.auto_finalize,
            api_key: args.api_key.map(crate::cloud::dto::Secret::new),
            ..EngineConfig::default()
        },
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; is another agent running there? (masv download ls)",
                args.listen
            )
        })?;
    daemon::run(config, listener, super::hub::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
