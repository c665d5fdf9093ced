//! `masv server start`: run the agent.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::cloud::dto::Secret;
use crate::config::{LogFormat, parse_duration, parse_size};
use crate::daemon::{self, AgentConfig};
use crate::transfer::EngineConfig;

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Run the agent: its local REST API, its automations, and the transfers.
    #[command(
        after_help = "Example:\n  masv server start --config /etc/masv-agent/agent.toml\n  masv server start --listen 127.0.0.1:8080 --data-dir /var/lib/masv-agent --max-connections 16"
    )]
    Start(StartArgs),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// A configuration file (TOML): [server] settings (flags win), an embedded [hub], and the
    /// automations, reloaded when the file changes.
    #[arg(long, env = "MASV_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the local API, e.g. 127.0.0.1:8080 or localhost:8080 [default: 127.0.0.1:8080].
    #[arg(long, value_parser = crate::config::parse_listen)]
    listen: Option<std::net::SocketAddr>,
    /// Serve the API without a token when none is configured, so that any local user can use
    /// the agent. For tests only: by default the agent makes a token in its data folder
    /// (`api-token`, mode 0600), which `masv` commands read when they may.
    #[arg(long)]
    insecure_no_token: bool,
    /// The token every API request must carry as `Authorization: Bearer …` (prefer the
    /// environment variable or [server] api_token) [default: one the agent makes in its data
    /// folder, `api-token`].
    #[arg(long, env = "MASV_API_TOKEN", hide_env_values = true, value_parser = super::agent::parse_secret)]
    api_token: Option<Secret>,
    /// How long chunks in flight may take to finish at shutdown (SIGTERM), e.g. 20s [default: 20s].
    #[arg(long, value_parser = parse_duration)]
    shutdown_timeout: Option<std::time::Duration>,
    /// Where the agent keeps its database [default: ~/.local/share/masv-agent].
    #[arg(long, env = "MASV_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The MASV API base URL; a hub's is http://HOST:PORT/v1 [default: https://api.massive.app/v1].
    #[arg(long, env = "MASV_CLOUD_URL")]
    cloud_url: Option<String>,
    /// Where share links point, as {BASE}{LINK_ID}?secret=… [default: https://get.massive.io/;
    /// with an embedded hub, the hub's link base].
    #[arg(long, env = "MASV_SHARE_LINK_BASE")]
    share_link_base: Option<String>,
    /// Resume the transfers that were running when the agent stopped [default: true].
    #[arg(long, action = clap::ArgAction::Set)]
    auto_resume: Option<bool>,
    /// Default range size of downloads, e.g. 16MiB [default: 16MiB].
    #[arg(long, value_parser = parse_size)]
    chunk_size: Option<u64>,
    /// Requests in flight at once, across all transfers [default: 16].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Finalize uploads as soon as their files are sent; false: they wait in idle for
    /// `masv upload finalize` [default: true].
    #[arg(long, action = clap::ArgAction::Set)]
    auto_finalize: Option<bool>,
    /// The MASV API key, for team uploads (prefer the environment variable: arguments show in ps).
    #[arg(long, env = "MASV_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

pub async fn run(
    command: ServerCommand,
    log_format: Option<LogFormat>,
) -> anyhow::Result<ExitCode> {
    let ServerCommand::Start(args) = command;
    let mut loaded = match &args.config {
        Some(path) => crate::config::load(path),
        None => Ok(Default::default()),
    };
    if let Ok(config) = &mut loaded {
        // Flags win over the file; the daemon reads these from the configuration.
        let server = &mut config.server;
        server.api_token = args.api_token.clone().or(server.api_token.take());
        server.shutdown_timeout = args.shutdown_timeout.or(server.shutdown_timeout);
    }
    let server = loaded.as_ref().ok().map(|c| &c.server);
    super::init_logging(
        log_format
            .or(server.and_then(|s| s.log_format))
            .unwrap_or_default(),
        server.and_then(|s| s.log_level.as_deref()),
    );
    let loaded = loaded?;
    let file = loaded.server.clone();
    let defaults = EngineConfig::default();
    let max_connections = args
        .max_connections
        .or(file.max_connections)
        .unwrap_or(defaults.max_connections);
    let chunk_size = args
        .chunk_size
        .or(file.chunk_size)
        .unwrap_or(defaults.download_chunk_size);
    anyhow::ensure!(max_connections >= 1, "--max-connections must be at least 1");
    anyhow::ensure!(chunk_size >= 1, "--chunk-size must be more than 0 bytes");
    let link_base = args.share_link_base.or(file.share_link_base);
    if let Some(base) = &link_base {
        crate::transfer::check_link_base(base).map_err(|e| anyhow::anyhow!("--{e}"))?;
    }
    let config = AgentConfig {
        data_dir: args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(daemon::default_data_dir),
        engine: EngineConfig {
            cloud_url: args
                .cloud_url
                .or(file.cloud_url)
                .unwrap_or(defaults.cloud_url),
            max_connections,
            download_chunk_size: chunk_size,
            auto_resume: args
                .auto_resume
                .or(file.auto_resume)
                .unwrap_or(defaults.auto_resume),
            auto_finalize: args
                .auto_finalize
                .or(file.auto_finalize)
                .unwrap_or(defaults.auto_finalize),
            api_key: args
                .api_key
                .map(crate::cloud::dto::Secret::new)
                .or(file.api_key),
            bandwidth: loaded.bandwidth.clone(),
            retry: crate::transfer::RetryPolicy {
                max_delay: file.retry_max_delay.unwrap_or(defaults.retry.max_delay),
                give_up_after: file
                    .retry_give_up_after
                    .unwrap_or(defaults.retry.give_up_after),
                ..defaults.retry
            },
            hash: file.hash.unwrap_or(defaults.hash),
            // The daemon sets it to the data folder.
            work_dir: defaults.work_dir,
            link_base,
        },
        config_path: args.config.clone(),
        config: loaded,
        insecure_no_token: args.insecure_no_token,
    };
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or(([127, 0, 0, 1], 8080).into());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen}; is another agent running there? (masv download ls)")
        })?;
    daemon::run(config, listener, super::hub::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
