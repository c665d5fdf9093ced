//! `masv hub …`: serve a hub, and the operator commands on its data folder.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::cloud::dto::Secret;
use crate::hub::{Faults, Hub, HubConfig, Seed};

#[derive(Debug, Subcommand)]
pub enum HubCommand {
    /// Serve the hub's API and storage.
    #[command(
        after_help = "Example:\n  masv hub serve --listen 127.0.0.1:9000 --data /var/lib/masv-hub --seed hub.toml"
    )]
    Serve(Box<ServeArgs>),
    /// Teams.
    #[command(
        subcommand,
        after_help = "Example:\n  masv hub team add --data /var/lib/masv-hub --name 'Post House'"
    )]
    Team(TeamCommand),
    /// API keys of teams.
    #[command(
        subcommand,
        name = "api-key",
        after_help = "Example:\n  masv hub api-key add --data /var/lib/masv-hub --team 'Post House'"
    )]
    ApiKey(ApiKeyCommand),
    /// Portals (upload pages that need no account).
    #[command(
        subcommand,
        after_help = "Example:\n  masv hub portal add --data /var/lib/masv-hub --team 'Post House' --subdomain dailies"
    )]
    Portal(PortalCommand),
    /// Files stored on the hub.
    #[command(
        subcommand,
        after_help = "Example:\n  masv hub file quarantine --data /var/lib/masv-hub 01J..."
    )]
    File(FileCommand),
    /// Apply a TOML seed file (teams, API keys, portals); what exists already is left alone.
    #[command(after_help = "Example:\n  masv hub seed --data /var/lib/masv-hub hub.toml")]
    Seed {
        #[command(flatten)]
        data: DataArg,
        /// The seed file.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct DataArg {
    /// The hub's data folder (database and blobs).
    #[arg(long, env = "MASV_HUB_DATA")]
    data: PathBuf,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: String,
    #[command(flatten)]
    data: DataArg,
    /// The URL clients reach this hub at (default: http://LISTEN/).
    #[arg(long)]
    public_url: Option<url::Url>,
    /// Where share links point, as {BASE}{LINK_ID}?secret=… (default: the public URL);
    /// answered at GET /v1/system/link_base.
    #[arg(long)]
    link_base: Option<url::Url>,
    /// A seed file applied at start.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// For tests: fraction (0-1) of storage requests that fail with 500.
    #[arg(long, default_value_t = 0.0)]
    fault_fail_ratio: f64,
    /// For tests: fraction (0-1) of storage downloads cut off halfway.
    #[arg(long, default_value_t = 0.0)]
    fault_cut_ratio: f64,
    /// For tests: fraction (0-1) of part uploads with a byte flipped on the way in.
    #[arg(long, default_value_t = 0.0)]
    fault_flip_ratio: f64,
    /// For tests: milliseconds added before every storage request.
    #[arg(long, default_value_t = 0)]
    fault_delay_ms: u64,
    /// For tests of clients: store file names as senders give them, `../x` included.
    #[arg(long)]
    accept_hostile_names: bool,
    /// Keep files on S3-compatible object storage, s3://BUCKET[/PREFIX], instead of the data
    /// folder: storage URLs are pre-signed URLs of the store (credentials from
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).
    #[arg(long, value_name = "s3://BUCKET[/PREFIX]")]
    storage: Option<String>,
    /// The object store's endpoint (default https://s3.REGION.amazonaws.com).
    #[arg(long, requires = "storage")]
    s3_endpoint: Option<url::Url>,
    /// The object store's region.
    #[arg(long, default_value = "us-east-1", requires = "storage")]
    s3_region: String,
    /// Path-style URLs (ENDPOINT/BUCKET/KEY), as most self-hosted stores want.
    #[arg(long, requires = "storage")]
    s3_path_style: bool,
}

/// `--storage` and its options, with the credentials from the environment.
/// `--storage` and its options, with the credentials from the seed file's `[s3]`, else from the
/// environment.
fn s3_config(
    args: &ServeArgs,
    seed: Option<&Seed>,
) -> anyhow::Result<Option<crate::hub::S3Config>> {
    let Some(location) = &args.storage else {
        return Ok(None);
    };
    let (bucket, prefix) =
        crate::hub::S3Config::parse_location(location).map_err(anyhow::Error::msg)?;
    let from_seed = seed.and_then(|s| s.s3.as_ref());
    let credential = |name: &str, seeded: Option<&crate::cloud::dto::SecretSource>| {
        if let Some(source) = seeded {
            return source
                .resolve()
                .map_err(|e| anyhow::anyhow!("--storage {location}: the seed file's [s3]: {e}"));
        }
        std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(crate::cloud::dto::Secret::new)
            .with_context(|| {
                format!(
                    "--storage {location}: set {name}, or [s3] in the seed file (the object store's credentials)"
                )
            })
    };
    let endpoint = match &args.s3_endpoint {
        Some(e) => e.clone(),
        None => url::Url::parse(&format!("https://s3.{}.amazonaws.com", args.s3_region))
            .context("--s3-region makes no endpoint URL; give --s3-endpoint")?,
    };
    Ok(Some(crate::hub::S3Config {
        endpoint,
        bucket,
        prefix,
        region: args.s3_region.clone(),
        path_style: args.s3_path_style,
        access_key: credential("AWS_ACCESS_KEY_ID", from_seed.map(|s| &s.access_key))?,
        secret_key: credential("AWS_SECRET_ACCESS_KEY", from_seed.map(|s| &s.secret_key))?,
    }))
}

#[derive(Debug, Subcommand)]
pub enum TeamCommand {
    /// Create a team; prints its id.
    #[command(
        after_help = "Example:\n  masv hub team add --data /var/lib/masv-hub --name 'Post House'"
    )]
    Add {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        name: String,
        /// A fixed id (a ULID) instead of a new one.
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key for a team; prints it (the only time it is shown).
    #[command(
        after_help = "Example:\n  masv hub api-key add --data /var/lib/masv-hub --team 'Post House'"
    )]
    Add {
        #[command(flatten)]
        data: DataArg,
        /// The team, by id or name.
        #[arg(long)]
        team: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PortalCommand {
    /// Create a portal; prints its id.
    #[command(
        after_help = "Example:\n  masv hub portal add --data /var/lib/masv-hub --team 'Post House' --subdomain dailies --access-code-env DAILIES_CODE"
    )]
    Add {
        #[command(flatten)]
        data: DataArg,
        /// The team, by id or name.
        #[arg(long)]
        team: String,
        #[arg(long)]
        subdomain: String,
        #[arg(long)]
        name: Option<String>,
        /// An access code senders must give (prefer --access-code-env: arguments show in `ps`).
        #[arg(long, conflicts_with = "access_code_env")]
        access_code: Option<String>,
        /// The environment variable holding the access code.
        #[arg(long)]
        access_code_env: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum FileCommand {
    /// Flag a file as virus-infected: downloads of it are refused (403).
    #[command(after_help = "Example:\n  masv hub file quarantine --data /var/lib/masv-hub 01J...")]
    Quarantine {
        #[command(flatten)]
        data: DataArg,
        file_id: String,
        /// Clear the flag instead.
        #[arg(long)]
        clear: bool,
    },
}

fn open(data: &DataArg) -> anyhow::Result<Hub> {
    Hub::open(HubConfig::new(&data.data))
        .with_context(|| format!("opening the hub at {}", data.data.display()))
}

pub async fn run(command: HubCommand) -> anyhow::Result<ExitCode> {
    match command {
        HubCommand::Serve(args) => serve(*args).await?,
        HubCommand::Team(TeamCommand::Add { data, name, id }) => {
            println!("{}", open(&data)?.add_team(&name, id.as_deref())?);
        }
        HubCommand::ApiKey(ApiKeyCommand::Add { data, team }) => {
            println!("{}", open(&data)?.add_api_key(&team, None)?.expose());
        }
        HubCommand::Portal(PortalCommand::Add {
            data,
            team,
            subdomain,
            name,
            access_code,
            access_code_env,
        }) => {
            let code = match (access_code, access_code_env) {
                (Some(code), _) => Some(Secret::new(code)),
                (None, Some(var)) => {
                    Some(Secret::new(std::env::var(&var).with_context(|| {
                        format!("environment variable {var} is not set")
                    })?))
                }
                (None, None) => None,
            };
            println!(
                "{}",
                open(&data)?.add_portal(&team, &subdomain, name.as_deref(), code.as_ref())?
            );
        }
        HubCommand::File(FileCommand::Quarantine {
            data,
            file_id,
            clear,
        }) => {
            open(&data)?.set_virus_detected(&file_id, !clear)?;
            println!(
                "file {file_id} {}",
                if clear { "released" } else { "quarantined" }
            );
        }
        HubCommand::Seed { data, file } => {
            for line in open(&data)?.apply_seed(&Seed::load(&file)?)? {
                println!("{line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    for (name, ratio) in [
        ("--fault-fail-ratio", args.fault_fail_ratio),
        ("--fault-cut-ratio", args.fault_cut_ratio),
        ("--fault-flip-ratio", args.fault_flip_ratio),
    ] {
        anyhow::ensure!(
            (0.0..=1.0).contains(&ratio),
            "{name} must be between 0 and 1"
        );
    }
    let mut config = HubConfig::new(&args.data.data);
    let seed = args.seed.as_deref().map(Seed::load).transpose()?;
    config.s3 = s3_config(&args, seed.as_ref())?;
    config.public_url = args.public_url;
    config.link_base = args.link_base;
    config.accept_hostile_names = args.accept_hostile_names;
    config.faults = Faults {
        fail_ratio: args.fault_fail_ratio,
        cut_ratio: args.fault_cut_ratio,
        flip_ratio: args.fault_flip_ratio,
        delay: Duration::from_millis(args.fault_delay_ms),
    };
    let hub = Hub::open(config)
        .with_context(|| format!("opening the hub at {}", args.data.data.display()))?;
    if let Some(seed) = &seed {
        for line in hub.apply_seed(seed)? {
            tracing::info!("seed: {line}");
        }
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; is another hub running there?",
                args.listen
            )
        })?;
    hub.serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// Completes at SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
