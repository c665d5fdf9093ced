//! The agent as a running service: opens the store, starts the transfer engine (resuming what
//! was running), serves the local API, and on shutdown stops intake first, then the jobs.

use std::future::Future;
use std::path::PathBuf;

use tokio::net::TcpListener;

use crate::store::{Store, StoreError};
use crate::transfer::{Engine, EngineConfig, TransferError};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where the agent keeps its database.
    pub data_dir: PathBuf,
    pub engine: EngineConfig,
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
    #[error("refusing to serve the local API on {0}: it is not a loopback address (use 127.0.0.1)")]
    NotLoopback(std::net::SocketAddr),
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

/// Runs the agent on `listener` until `shutdown` completes.
pub async fn run(
    config: AgentConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let addr = listener.local_addr().map_err(DaemonError::Serve)?;
    if !addr.ip().is_loopback() {
        return Err(DaemonError::NotLoopback(addr));
    }
    create_private_dir(&config.data_dir)?;
    let store = Store::open(&config.data_dir.join("agent.db"))?;
    let engine = Engine::start(store, config.engine.clone()).await?;
    tracing::info!(%addr, data = %config.data_dir.display(), cloud = %config.engine.cloud_url, "agent serving");
    let served = axum::serve(listener, crate::api::router(engine.clone()))
        .with_graceful_shutdown(shutdown)
        .await;
    tracing::info!("stopping transfers");
    engine.shutdown().await;
    served.map_err(DaemonError::Serve)
}

fn create_private_dir(path: &std::path::Path) -> Result<(), DaemonError> {
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
