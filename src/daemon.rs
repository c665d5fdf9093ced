//! The agent as a running service: an embedded hub when configured, the store, the transfer
//! engine (resuming what was running), the automations, the delivery of post-transfer actions,
//! and the local API. Editing the
//! configuration (or SIGHUP) reloads the rules; on shutdown intake stops first, then the jobs
//! get a deadline to finish their chunks in flight. Under systemd it reports READY, WATCHDOG and
//! STOPPING (`systemd`).

mod systemd;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::actions::Actions;
use crate::cloud::dto::Secret;
use crate::config::{self, Config};
use crate::hub::{Hub, HubError};
use crate::rules::{Automations, Context};
use crate::store::{Store, StoreError};
use crate::transfer::{Engine, EngineConfig, TransferError};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where the agent keeps its database.
    pub data_dir: PathBuf,
    pub engine: EngineConfig,
    /// The configuration file, watched for changes to the rules.
    pub config_path: Option<PathBuf>,
    /// What that file held at start (its rules, its embedded hub).
    pub config: Config,
    /// Serve the API without a token when none is configured (tests only): by default the
    /// agent makes one (see [`local_token`]).
    pub insecure_no_token: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create the data folder {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] TransferError),
    #[error("embedded hub: {0}")]
    Hub(#[from] HubError),
    #[error("the embedded hub cannot listen on {addr}: {source}; is another hub running there?")]
    HubListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "refusing to serve the local API on {0} without an API token: set api_token in [server] (or MASV_API_TOKEN), or listen on 127.0.0.1"
    )]
    TokenNeeded(std::net::SocketAddr),
    #[error(
        "refusing an empty API token: set api_token in [server] (or MASV_API_TOKEN) to a long random value, or leave it out and the agent makes one in its data folder"
    )]
    BlankToken,
    #[error("the API token file {path}: {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
    #[error("serving the API: {0}")]
    Serve(std::io::Error),
}

/// The default data folder: `$XDG_DATA_HOME/masv-agent`, else `~/.local/share/masv-agent`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("masv-agent")
}

/// How long chunks in flight may take to finish at shutdown, unless configured.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the agent on `listener` until `shutdown` completes.
pub async fn run(
    mut config: AgentConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let addr = listener.local_addr().map_err(DaemonError::Serve)?;
    create_private_dir(&config.data_dir)?;
    let token = match config.config.server.api_token.clone() {
        Some(token) if token.expose().trim().is_empty() => return Err(DaemonError::BlankToken),
        Some(token) => Some(token),
        None if config.insecure_no_token => {
            if !addr.ip().is_loopback() {
                return Err(DaemonError::TokenNeeded(addr));
            }
            tracing::warn!(
                "serving the local API without a token (--insecure-no-token): any local user can use the agent"
            );
            None
        }
        None => Some(local_token(&config.data_dir)?),
    };
    let stop = CancellationToken::new();
    let default_team = match config.config.hub.clone() {
        Some(hub) => Some(embedded_hub(&mut config, &hub, stop.clone()).await?),
        None => None,
    };
    let store = Store::open(&config.data_dir.join("agent.db"))?;
    let engine = Engine::start(
        store.clone(),
        crate::transfer::EngineConfig {
            work_dir: config.data_dir.clone(),
            ..config.engine.clone()
        },
    )
    .await?;
    let actions = Actions::start(
        store.clone(),
        config.config.actions.clone(),
        config.data_dir.clone(),
    );
    {
        // A transfer's end has just recorded its event: deliver it now, not at the next poll.
        let (actions, mut ends, stop) = (actions.clone(), engine.subscribe(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    end = ends.recv() => match end {
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        _ => actions.wake(),
                    },
                }
            }
        });
    }
    let automations = Automations::start(
        Context {
            engine: engine.clone(),
            store,
            default_team,
        },
        config.config.rules.clone(),
    );
    if let Some(path) = config.config_path.clone() {
        // `--config agent.toml` from the folder it is in: its folder is "", which cannot be
        // watched; the working directory is.
        let path = std::path::absolute(&path).unwrap_or(path);
        let (automations, stop) = (automations.clone(), stop.clone());
        let rules_dir = config.config.server.rules_dir.clone();
        let loaded = (config.config.rules.clone(), config.config.bandwidth.clone());
        let engine = engine.clone();
        let actions = actions.clone();
        tokio::spawn(async move {
            reload_on_change(
                path,
                rules_dir,
                (automations, actions),
                (engine, loaded),
                stop,
            )
            .await
        });
    }
    let throughput = crate::metrics::throughput::Throughput::default();
    tokio::spawn(sample_throughput(
        engine.clone(),
        throughput.clone(),
        stop.clone(),
    ));
    let notifier = Arc::new(systemd::Notifier::from_env());
    if let Some(every) = notifier.watchdog_interval() {
        tokio::spawn(watchdog(
            notifier.clone(),
            engine.store().clone(),
            every,
            stop.clone(),
        ));
    }
    tracing::info!(%addr, data = %config.data_dir.display(), cloud = %config.engine.cloud_url, rules = config.config.rules.len(), "agent serving");
    notifier.notify(&format!("READY=1\nSTATUS=serving on {addr}"));
    let stopping = notifier.clone();
    let closing = CancellationToken::new();
    let served = axum::serve(
        listener,
        crate::api::router(
            engine.clone(),
            automations.clone(),
            (throughput, closing.clone()),
            token,
        ),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        // Live streams (open dashboards) end, so that their connections close.
        closing.cancel();
        stopping.notify("STOPPING=1\nSTATUS=finishing the chunks in flight");
    })
    .await;
    let deadline = config
        .config
        .server
        .shutdown_timeout
        .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
    tracing::info!(
        ?deadline,
        "stopping: no new work; letting the chunks in flight finish"
    );
    automations.stop();
    engine.shutdown(deadline).await;
    // After the engine: the ends of the last transfers are recorded (their events delivered at
    // the next start if not now).
    actions.stop().await;
    // Last: the embedded hub may be serving the chunks that were finishing.
    stop.cancel();
    tracing::info!("stopped");
    served.map_err(DaemonError::Serve)
}

/// Reads the byte counters and the limits in force once a second into `throughput`, for the
/// dashboard's chart of the last hour (whether a dashboard is open or not).
async fn sample_throughput(
    engine: Engine,
    throughput: crate::metrics::throughput::Throughput,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let limits = engine.bandwidth().now;
        throughput.record(
            chrono::Utc::now().timestamp_millis(),
            engine.metrics().byte_totals(),
            (limits.download, limits.upload),
        );
    }
}

/// Sends `WATCHDOG=1` every `every` while the database answers: a stuck agent gets restarted.
async fn watchdog(
    notifier: Arc<systemd::Notifier>,
    store: Store,
    every: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match tokio::time::timeout(every, store.ping()).await {
            Ok(Ok(())) => notifier.notify("WATCHDOG=1"),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the database does not answer; not pinging the watchdog")
            }
            Err(_) => {
                tracing::error!("the database did not answer in time; not pinging the watchdog")
            }
        }
    }
}

/// Starts the configured hub, makes sure its team and the agent's API key exist, and points the
/// engine at it; returns the team's id.
async fn embedded_hub(
    config: &mut AgentConfig,
    hub: &config::HubConfig,
    stop: CancellationToken,
) -> Result<String, DaemonError> {
    let data = hub
        .data_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.join("hub"));
    let mut hub_config = crate::hub::HubConfig::new(&data);
    hub_config.public_url = hub.public_url.clone();
    let opened = Hub::open(hub_config)?;
    let team = match opened.find_team(&hub.team) {
        Ok(id) => id,
        Err(_) => opened.add_team(&hub.team, None)?,
    };
    // The agent's key to its own hub, made once and kept beside the hub's data (owner-only).
    let key_file = data.join("agent-api-key");
    let key = match std::fs::read_to_string(&key_file) {
        Ok(k) if !k.trim().is_empty() => Secret::new(k.trim().to_owned()),
        _ => {
            let key = opened.add_api_key(&team, None)?;
            write_private(&key_file, key.expose().as_bytes()).map_err(|source| {
                DaemonError::DataDir {
                    path: key_file.display().to_string(),
                    source,
                }
            })?;
            key
        }
    };
    let listener =
        TcpListener::bind(hub.listen)
            .await
            .map_err(|source| DaemonError::HubListen {
                addr: hub.listen,
                source,
            })?;
    let public = opened.public_url(listener.local_addr().map_err(DaemonError::Serve)?);
    config.engine.cloud_url = public
        .join("v1")
        .map(|u| u.to_string())
        .unwrap_or_else(|_| format!("{public}v1"));
    if config.engine.api_key.is_none() {
        config.engine.api_key = Some(key);
    }
    if config.engine.link_base.is_none() {
        // Links to the agent's own hub point where that hub says its links live.
        config.engine.link_base = Some(opened.link_base(&public).to_string());
    }
    tracing::info!(url = %public, team = %hub.team, "embedded hub serving");
    tokio::spawn(async move {
        if let Err(e) = opened
            .serve(listener, async move { stop.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "the embedded hub stopped");
        }
    });
    Ok(team)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

/// Reloads the rules when the configuration file or a rules file changes, or on SIGHUP. A file
/// that does not check keeps the rules in force; the error shows in the log and the API.
/// `[bandwidth]` is put in force again only when its text changed (replacing what the API set
/// meanwhile); `bandwidth` is the engine and the section as last loaded.
async fn reload_on_change(
    path: PathBuf,
    rules_dir: Option<PathBuf>,
    (automations, actions): (Automations, Actions),
    (engine, loaded): (Engine, (Vec<config::Rule>, config::BandwidthSettings)),
    stop: CancellationToken,
) {
    // What is in force, to tell a change from a save that changed nothing (or the files found
    // when the watch starts).
    let fingerprints = |rules: &[config::Rule]| -> Vec<(String, u64)> {
        rules
            .iter()
            .map(|r| (r.name.clone(), r.fingerprint))
            .collect()
    };
    let (mut loaded_rules, mut loaded_bandwidth) = (fingerprints(&loaded.0), loaded.1);
    let (tx, mut changed) = tokio::sync::mpsc::channel::<()>(16);
    // Editors replace files (write elsewhere, rename over): watch the folders, not the files.
    let mut folders = vec![
        path.parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    ];
    folders.extend(rules_dir);
    for folder in folders {
        let name = path.file_name().map(|n| n.to_os_string());
        let is_config_folder = path.parent() == Some(folder.as_path());
        let spec = crate::watch::WatchSpec {
            root: folder.clone(),
            recursive: false,
            mode: crate::watch::WatchMode::Events,
            settle: Duration::from_millis(300),
            filter: Arc::new(move |rel: &Path| {
                if is_config_folder {
                    Some(rel.as_os_str()) == name.as_deref()
                        || rel.extension().is_some_and(|x| x == "toml")
                } else {
                    rel.extension().is_some_and(|x| x == "toml")
                }
            }),
        };
        match crate::watch::watch(spec, stop.child_token()) {
            Ok((mut settled, _handle)) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _handle = _handle;
                    while let Some(watched) = settled.recv().await {
                        if matches!(watched, crate::watch::Watched::Settled(_)) {
                            let _ = tx.try_send(());
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!(folder = %folder.display(), error = %e, "cannot watch the configuration; SIGHUP still reloads it")
            }
        }
    }
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<()>();
        let asked = tokio::select! {
            _ = stop.cancelled() => return,
            _ = changed.recv() => false,
            _ = hup => {
                tracing::info!("SIGHUP: reloading the configuration");
                true
            }
        };
        // Several files saved at once make one reload.
        while changed.try_recv().is_ok() {}
        match config::load(&path) {
            Ok(config) => {
                let rules = fingerprints(&config.rules);
                let changed = rules != loaded_rules || config.bandwidth != loaded_bandwidth;
                if changed || asked {
                    tracing::info!(path = %path.display(), rules = config.rules.len(), changed, "configuration reloaded");
                } else {
                    tracing::debug!(path = %path.display(), "configuration read again: no change");
                }
                loaded_rules = rules;
                // Also clears the error of a broken file put back as it was.
                automations.apply(config.rules);
                actions.apply(config.actions);
                if config.bandwidth != loaded_bandwidth {
                    tracing::info!(path = %path.display(), "[bandwidth] changed: new limits in force");
                    engine.set_bandwidth(config.bandwidth.clone());
                    loaded_bandwidth = config.bandwidth;
                }
            }
            Err(e) => {
                tracing::error!(path = %path.display(), "the configuration has errors; the last good rules stay in force:\n{e}");
                automations.reload_failed(e.to_string());
            }
        }
    }
}

/// Where the agent keeps the API token it made: in its data folder, readable by its owner only.
pub fn token_file(data_dir: &Path) -> PathBuf {
    data_dir.join("api-token")
}

/// The API token of an agent with none configured: read from [`token_file`], made there
/// (32 random bytes, hex, mode 0600 in the 0700 data folder) at the first start. Only who may
/// read the agent's data folder (its user, root) may use its API; `masv` commands read the
/// file themselves.
fn local_token(data_dir: &Path) -> Result<Secret, DaemonError> {
    let path = token_file(data_dir);
    let err = |source| DaemonError::TokenFile {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(Secret::new(text.trim())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let token = hex::encode(bytes);
    let tmp = path.with_extension("tmp");
    write_private(&tmp, format!("{token}\n").as_bytes()).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    tracing::info!(path = %path.display(), "made the local API's token; masv commands read it from there");
    Ok(Secret::new(token))
}

fn create_private_dir(path: &Path) -> Result<(), DaemonError> {
    let err = |source| DaemonError::DataDir {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(path).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}
