//! The MASV-compatible service: the control plane of spec §2–3 under `/v1` (and the team inbox
//! under `/v1.1` too), and S3-like signed storage (§4) under `/storage`. State lives in SQLite
//! under the data folder, blobs beside it, so a restarted hub carries on where it was.
//!
//! It shares only the wire types of `cloud::dto` with the agent, and is a real service: operators
//! run it with `masv hub serve` to move files between their own sites.

mod api;
mod auth;
mod db;
mod error;
mod operator;
mod s3;
mod storage;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

pub use error::HubError;
pub use operator::{Seed, SeedPortal, SeedTeam};
pub use s3::S3Config;
pub use storage::Faults;

use crate::cloud::dto::PackageSpec;

/// How a hub runs.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Where the database (`hub.db`) and the blobs (`blobs/`, `parts/`) live.
    pub data_dir: PathBuf,
    /// The address clients reach this hub at, used in signed URLs and share links; by default
    /// `http://` + the listening address.
    pub public_url: Option<url::Url>,
    /// Where share links point, as `{link_base}{link_id}?secret=…`; by default `public_url`.
    /// Answered at `GET /v1/system/link_base`.
    pub link_base: Option<url::Url>,
    /// Failures injected into storage requests, for tests. Off by default.
    pub faults: Faults,
    /// How long a signed storage URL stays valid.
    pub url_ttl: Duration,
    /// How long a package token stays valid.
    pub token_ttl: Duration,
    /// The part limits enforced on uploads.
    pub spec: PackageSpec,
    /// Store file names and paths exactly as senders give them (`../x`, `/abs`, `C:\\x`)
    /// instead of refusing them with 400. Only for testing clients against a hostile service.
    pub accept_hostile_names: bool,
    /// Files on S3-compatible object storage (pre-signed URLs of the store) instead of the
    /// hub's own disk.
    pub s3: Option<S3Config>,
}

impl HubConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> HubConfig {
        HubConfig {
            data_dir: data_dir.into(),
            public_url: None,
            link_base: None,
            faults: Faults::default(),
            url_ttl: Duration::from_secs(3600),
            token_ttl: Duration::from_secs(7 * 24 * 3600),
            spec: PackageSpec::default(),
            accept_hostile_names: false,
            s3: None,
        }
    }
}

/// An open hub: its database and signing key. Serve it, or run operator commands on it.
pub struct Hub {
    config: HubConfig,
    db: db::Db,
    signer: Arc<auth::Signer>,
    s3: Option<Arc<s3::S3>>,
}

impl Hub {
    /// Opens (creating) the hub's data folder.
    pub fn open(config: HubConfig) -> Result<Hub, HubError> {
        for dir in [
            config.data_dir.clone(),
            config.data_dir.join("blobs"),
            config.data_dir.join("parts"),
            config.data_dir.join("outbox"),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| {
                HubError::Internal(format!(
                    "cannot create the hub folder {}: {e}",
                    dir.display()
                ))
            })?;
            // The senders' files are nobody else's business on this machine: owner only,
            // as hub.db is (a folder made by an older hub is made so too).
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(
                    |e| {
                        HubError::Internal(format!(
                            "cannot make the hub folder {} private: {e}",
                            dir.display()
                        ))
                    },
                )?;
            }
        }
        let db = db::Db::open(&config.data_dir.join("hub.db"))?;
        let key = db.with(|conn| match db::meta_get(conn, "signing_key")? {
            Some(key) => Ok(key),
            None => {
                let mut key = vec![0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
                db::meta_set(conn, "signing_key", &key)?;
                Ok(key)
            }
        })?;
        let s3 = config
            .s3
            .as_ref()
            .map(s3::S3::new)
            .transpose()?
            .map(Arc::new);
        Ok(Hub {
            config,
            db,
            signer: Arc::new(auth::Signer::new(key)),
            s3,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Where this hub's share links point, given its public URL.
    pub fn link_base(&self, public_url: &url::Url) -> url::Url {
        self.config
            .link_base
            .clone()
            .unwrap_or_else(|| public_url.clone())
    }

    /// The routes, answering as `public_url`.
    pub fn router(&self, public_url: url::Url) -> Router {
        let state = Arc::new(api::State {
            link_base: self.link_base(&public_url),
            db: self.db.clone(),
            signer: self.signer.clone(),
            throttle: auth::Throttle::default(),
            listing_limiter: Default::default(),
            metrics: Default::default(),
            buffers: storage::buffer_pool(),
            public_url,
            config: self.config.clone(),
            s3: self.s3.clone(),
        });
        api::router(state.clone()).merge(storage::router(state))
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let addr = listener.local_addr()?;
        let public_url = self.public_url(addr);
        let link_base = self.link_base(&public_url);
        tracing::info!(%addr, public_url = %public_url, link_base = %link_base, data = %self.config.data_dir.display(), "hub serving");
        let router = self.router(public_url);
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// The URL clients use, given the address the hub listens on.
    pub fn public_url(&self, addr: SocketAddr) -> url::Url {
        self.config.public_url.clone().unwrap_or_else(|| {
            url::Url::parse(&format!("http://{addr}/")).expect("a socket address makes a valid URL")
        })
    }
}
