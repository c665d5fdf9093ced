//! The shared transfer core: every trigger (CLI, REST API, rules) becomes a job here. Jobs are
//! recorded in the store, run under one connection budget with priorities, retried when the
//! failure is transient, paused and resumed on demand, and resumed after a restart from their
//! committed chunks.

mod budget;
mod digest;
mod download;
mod progress;
mod queue;
mod rate;
mod retry;
mod upload;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use budget::Budget;
pub use download::{DownloadRequest, PackageSource};
pub use rate::{BandwidthView, Flow, InForce};
pub use retry::RetryPolicy;
pub use upload::{PortalUploadRequest, TeamUploadRequest, UploadRequest};

use crate::cloud::dto::Secret;
use crate::cloud::{self, CloudError};
use crate::metrics::{Gauges, Metrics};
use crate::store::{Store, StoreError, TransferKind, TransferRecord};
use progress::Progress;

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The MASV API base, e.g. `https://api.massive.app/v1`, or a hub's `http://host:port/v1`.
    pub cloud_url: String,
    /// Requests in flight at once, across all transfers.
    pub max_connections: usize,
    /// Range size of downloads when the request does not say.
    pub download_chunk_size: u64,
    /// Resume transfers that were running when the agent stopped.
    pub auto_resume: bool,
    /// Finalize an upload as soon as all its files are sent (else it waits in `idle`).
    pub auto_finalize: bool,
    /// The MASV API key, for team uploads.
    pub api_key: Option<Secret>,
    /// Where share links point (`[server] share_link_base`): `{link_base}{link_id}?secret=…`.
    /// `None` is MASV's [`DEFAULT_LINK_BASE`], whatever the cloud URL: a link's host does not
    /// matter to the agent, which looks any link up on its own cloud URL.
    pub link_base: Option<String>,
    pub retry: RetryPolicy,
    /// The hash of every file, computed as its bytes move (`None`: none).
    pub hash: Option<crate::mhl::HashFormat>,
    /// Where the engine writes the files it makes itself (the ASC MHL manifests it sends):
    /// the agent's data folder.
    pub work_dir: std::path::PathBuf,
    /// Rate limits, their schedule and the FIFO caps at start (changeable while running).
    pub bandwidth: crate::config::BandwidthSettings,
}

/// Where MASV's share links point.
pub const DEFAULT_LINK_BASE: &str = "https://get.massive.io/";

/// Checks a share-link base: an http(s) URL without query or fragment that can take a path.
pub fn check_link_base(base: &str) -> Result<(), String> {
    let url = url::Url::parse(base.trim()).map_err(|e| {
        format!("share_link_base = {base:?} is not a URL ({e}); expected e.g. {DEFAULT_LINK_BASE}")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(format!(
            "share_link_base = {base:?} is not an http(s) URL; expected e.g. {DEFAULT_LINK_BASE}"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "share_link_base = {base:?} has a query or fragment; give scheme, host and path only"
        ));
    }
    Ok(())
}

impl EngineConfig {
    /// The share URL of a link: `{link_base}{link_id}?secret={secret}`.
    pub fn share_url(&self, link_id: &str, secret: &str) -> String {
        let base = self.link_base.as_deref().unwrap_or(DEFAULT_LINK_BASE);
        let mut url = url::Url::parse(base.trim())
            .ok()
            .filter(|u| !u.cannot_be_a_base())
            .unwrap_or_else(|| url::Url::parse(DEFAULT_LINK_BASE).expect("a valid URL"));
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push(link_id);
        }
        url.query_pairs_mut().append_pair("secret", secret);
        url.to_string()
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cloud_url: "https://api.massive.app/v1".into(),
            max_connections: 16,
            download_chunk_size: 16 * 1024 * 1024,
            auto_resume: true,
            auto_finalize: true,
            api_key: None,
            link_base: None,
            retry: RetryPolicy::default(),
            hash: Some(crate::mhl::HashFormat::Xxh64),
            work_dir: std::env::temp_dir().join("masv-agent"),
            bandwidth: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("{0}")]
    Invalid(String),
    #[error("no {kind} {id}; list them with `masv {kind} ls`")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cloud(#[from] CloudError),
}

/// The states of spec §5.
pub mod state {
    pub const TRANSFERRING: &str = "transferring";
    pub const PAUSED: &str = "paused";
    pub const IDLE: &str = "idle";
    pub const COMPLETE: &str = "complete";
    pub const ERROR: &str = "error";
}

/// The states of one file of a transfer.
pub mod file_state {
    pub const PENDING: &str = "pending";
    pub const TRANSFERRING: &str = "transferring";
    pub const COMPLETE: &str = "complete";
    pub const SKIPPED: &str = "skipped";
    pub const ERROR: &str = "error";
}

/// How the error of a file starts when its transient failures outlasted `give_up_after`:
/// such transfers are resumed by themselves once the service answers again.
const GAVE_UP: &str = "transient: ";

/// How the error of a file that can never be fetched starts (a name that would escape the
/// destination): resuming a transfer tries its other failed files again, not these.
const REFUSED: &str = "refused: ";

/// How a job ended, short of success.
#[derive(Debug)]
enum JobError {
    /// Paused, deleted or shut down: whoever stopped it has recorded the state.
    Stopped,
    Failed(String),
    /// The agent's database could not take a write (its disk full, say): nothing of the job's
    /// state can be recorded, so it waits for the database and runs again (every step may be
    /// repeated).
    Store(String),
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> JobError {
        JobError::Store(e.to_string())
    }
}

/// What the status API shows of a transfer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferSummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    pub state: String,
    /// `team`, `link` or `portal` (uploads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_folder: Option<String>,
    /// The share link of a link upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    pub package_id: Option<String>,
    pub package_name: Option<String>,
    pub priority: i64,
    pub created_at: String,
    pub updated_at: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub bytes_per_second: u64,
    pub files_total: u64,
    pub files_done: u64,
    /// FIFO mode: the transfer waits for a place (1 is next); it stays `transferring`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<usize>,
    pub error: Option<String>,
    /// Why a transferring transfer is not moving (a transient failure retried, the agent's
    /// database unable to write), and when it tries next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_try_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileView>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileView {
    pub id: Option<String>,
    pub name: String,
    pub path: String,
    pub size: u64,
    pub state: String,
    pub bytes_done: u64,
    pub error: Option<String>,
    pub local_path: String,
    /// The hash of the file's bytes, computed as they moved: `{"xxh64": "e4c1…"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<std::collections::BTreeMap<String, String>>,
}

/// The transfer engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    client: cloud::Client,
    budget: Budget,
    bandwidth: Arc<rate::Bandwidth>,
    config: EngineConfig,
    running: Mutex<HashMap<String, Running>>,
    events: tokio::sync::broadcast::Sender<TransferEvent>,
    metrics: Metrics,
    /// Cancelled at shutdown: workers take no new chunk or part, those in flight finish.
    draining: CancellationToken,
    /// Running transfers that wait, by id.
    waiting: Mutex<HashMap<String, Waiting>>,
    /// Transfers paused outside their rule's window, by id, with when it opens.
    held: Mutex<HashMap<String, String>>,
    /// When a chunk or part last went through (since `started`, in ms): whether the service
    /// answers, so that a failed request is tried again soon rather than after a backoff.
    last_success_ms: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
}

impl Inner {
    /// Says that the transfer of the current task waits `delay` because of `reason`.
    fn wait_noted(&self, reason: String, delay: Duration) {
        if let Ok(id) = TRANSFER.try_with(Clone::clone) {
            self.note_waiting(&id, reason, delay);
        }
    }

    fn note_waiting(&self, id: &str, reason: String, delay: Duration) {
        let next_try = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        self.waiting
            .lock()
            .expect("waiting lock is never poisoned")
            .insert(id.to_owned(), Waiting { reason, next_try });
    }

    /// The delay before retry `attempt` of a chunk or part that failed: short while other
    /// requests succeed (within the last second), a growing backoff while none does.
    fn retry_delay(&self, attempt: u32, error: &CloudError) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self
            .last_success_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if last > 0 && now.saturating_sub(last) < 1000 {
            self.config.retry.delay_while_answering(error.retry_after())
        } else {
            self.config.retry.delay(attempt, error.retry_after())
        }
    }

    /// The transfer of the current task moves again.
    fn moving(&self) {
        let now = (self.started.elapsed().as_millis() as u64).max(1);
        self.last_success_ms
            .store(now, std::sync::atomic::Ordering::Relaxed);
        if let Ok(id) = TRANSFER.try_with(Clone::clone) {
            self.not_waiting(&id);
        }
    }

    fn not_waiting(&self, id: &str) {
        let mut waiting = self.waiting.lock().expect("waiting lock is never poisoned");
        if !waiting.is_empty() {
            waiting.remove(id);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.bandwidth.stop();
    }
}

/// An upload a rule queues: what to ask for, the files (as a watch folder found them) and
/// the rule's ledger entries for them.
pub struct QueuedUpload {
    pub req: UploadRequest,
    pub entries: Vec<crate::files::LocalEntry>,
    pub ledger: Vec<crate::store::LedgerEntry>,
}

/// A transfer stopped moving: it ended (complete, idle, error). Sent to whoever subscribed.
#[derive(Debug, Clone)]
pub struct TransferEvent {
    pub id: String,
    pub kind: TransferKind,
    pub state: &'static str,
}

struct Running {
    cancel: CancellationToken,
    progress: Arc<Mutex<Option<Arc<Progress>>>>,
    task: JoinHandle<()>,
}

/// Why a running transfer is not moving, and when it tries again: a transient failure being
/// retried, or a database that cannot write. Shown by the status API; never recorded (it
/// changes too often, and may be about the database itself).
#[derive(Debug, Clone)]
struct Waiting {
    reason: String,
    next_try: chrono::DateTime<Utc>,
}

tokio::task_local! {
    /// The transfer a job's task works for, so that deep steps can say why it waits.
    static TRANSFER: String;
}

impl Engine {
    /// Starts the engine and, with `auto_resume`, the transfers that were running at the last
    /// stop (paused ones stay paused).
    pub async fn start(store: Store, config: EngineConfig) -> Result<Engine, TransferError> {
        let client = cloud::Client::new(&config.cloud_url)?;
        let engine = Engine {
            inner: Arc::new(Inner {
                store,
                client,
                budget: Budget::new(config.max_connections),
                bandwidth: rate::Bandwidth::start(config.bandwidth.clone()),
                config,
                running: Mutex::new(HashMap::new()),
                events: tokio::sync::broadcast::channel(4096).0,
                metrics: Metrics::default(),
                draining: CancellationToken::new(),
                waiting: Mutex::new(HashMap::new()),
                held: Mutex::new(HashMap::new()),
                last_success_ms: std::sync::atomic::AtomicU64::new(0),
                started: std::time::Instant::now(),
            }),
        };
        tokio::spawn(heal(engine.clone()));
        if engine.inner.config.auto_resume {
            for kind in [TransferKind::Download, TransferKind::Upload] {
                let mut transfers = engine.inner.store.transfers(kind).await?;
                // Oldest first from the store; FIFO mode lets the first ones in.
                transfers.sort_by_key(|t| std::cmp::Reverse(t.priority));
                for t in transfers {
                    // An idle upload under auto-finalize was stopped between its last file and
                    // the package's finalize: it is finished now.
                    let finishing = kind == TransferKind::Upload
                        && t.state == state::IDLE
                        && engine.inner.config.auto_finalize;
                    if t.state == state::TRANSFERRING || finishing {
                        tracing::info!(transfer_id = %t.id, kind = kind.as_str(), "resuming");
                        engine.spawn(&t);
                    }
                }
            }
        }
        Ok(engine)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Every end of a transfer from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<TransferEvent> {
        self.inner.events.subscribe()
    }

    /// The client of the cloud the engine talks to.
    pub fn client(&self) -> &cloud::Client {
        &self.inner.client
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The counters of this engine (and of the watch folders feeding it).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// What `/metrics` reads at scrape time: transfers by kind and state (every state, zeros
    /// included), and requests waiting for a connection.
    pub async fn gauges(&self) -> Result<Gauges, TransferError> {
        let counted = self.inner.store.count_by_state().await?;
        let mut transfers = Vec::new();
        for kind in [TransferKind::Download, TransferKind::Upload] {
            for st in [
                state::TRANSFERRING,
                state::PAUSED,
                state::IDLE,
                state::COMPLETE,
                state::ERROR,
            ] {
                let n = counted
                    .iter()
                    .find(|(k, s, _)| k == kind.as_str() && s == st)
                    .map_or(0, |(_, _, n)| *n);
                transfers.push((kind.as_str().to_owned(), st.to_owned(), n));
            }
        }
        Ok(Gauges {
            transfers,
            queue_depth: self.inner.budget.waiting() as u64,
        })
    }

    /// Records a new download and starts it; returns its id.
    pub async fn create_download(&self, req: DownloadRequest) -> Result<String, TransferError> {
        self.create_download_for(req, None).await
    }

    /// [`Engine::create_download`] on behalf of automation `rule`.
    pub async fn create_download_for(
        &self,
        req: DownloadRequest,
        rule: Option<&str>,
    ) -> Result<String, TransferError> {
        let mut record = download::record(req, &self.inner.config)?;
        record.rule = rule.map(str::to_owned);
        let id = record.id.clone();
        self.inner.store.insert_transfer(record.clone()).await?;
        tracing::info!(transfer_id = %id, kind = "download", rule, "download created");
        self.spawn(&record);
        Ok(id)
    }

    /// Checks the paths, creates the package (and link), records the upload and starts it;
    /// returns its id and, for a link upload, the share link.
    pub async fn create_upload(
        &self,
        req: UploadRequest,
    ) -> Result<(String, Option<String>), TransferError> {
        let files = upload::plan_files(req.paths(), req.chunk_size(), 0)?;
        let mut record = upload::new_upload(&req, self.inner.config.hash)?;
        let remote = upload::create_package(&self.inner, &req, files.len()).await?;
        let link = remote.link.as_ref().map(|l| l.expose().to_owned());
        record.remote = Some(serde_json::to_value(&remote).expect("remote serializes"));
        self.inner
            .store
            .insert_transfers(vec![(record.clone(), files)], Vec::new())
            .await?;
        tracing::info!(transfer_id = %record.id, kind = "upload", "upload created");
        self.spawn(&record);
        Ok((record.id, link))
    }

    /// Queues uploads of exactly the files a rule found, recording each with its ledger entries
    /// (their `transfer_id` is filled in here) in one transaction, then starts them; returns
    /// their ids. Each job creates its package when it starts: a file is queued as soon as it
    /// has settled, whether or not the service is quick, or reachable at all.
    pub async fn queue_uploads(
        &self,
        rule: &str,
        uploads: Vec<QueuedUpload>,
    ) -> Result<Vec<String>, TransferError> {
        let mut rows = Vec::with_capacity(uploads.len());
        let mut ledger = Vec::new();
        for u in uploads {
            let mut record = upload::new_upload(&u.req, self.inner.config.hash)?;
            record.rule = Some(rule.to_owned());
            let files = upload::file_records(u.entries, u.req.chunk_size(), 0);
            ledger.extend(u.ledger.into_iter().map(|mut e| {
                e.transfer_id = Some(record.id.clone());
                e
            }));
            rows.push((record, files));
        }
        let records: Vec<TransferRecord> = rows.iter().map(|(r, _)| r.clone()).collect();
        self.inner.store.insert_transfers(rows, ledger).await?;
        for record in &records {
            tracing::info!(transfer_id = %record.id, kind = "upload", rule, "upload queued");
            self.spawn(record);
        }
        Ok(records.into_iter().map(|r| r.id).collect())
    }

    /// Finalizes an idle upload; a complete one is left as it is.
    pub async fn finalize(&self, id: &str) -> Result<TransferSummary, TransferError> {
        let t = self.record(TransferKind::Upload, id).await?;
        match t.state.as_str() {
            state::COMPLETE => {}
            state::IDLE => {
                let remote = upload::remote_of(&t)?;
                upload::finalize_package(
                    &self.inner,
                    &remote,
                    t.priority,
                    &CancellationToken::new(),
                )
                .await
                .map_err(|e| match e {
                    JobError::Failed(e) | JobError::Store(e) => {
                        TransferError::Conflict(format!("finalizing upload {id}: {e}"))
                    }
                    JobError::Stopped => TransferError::Conflict("stopped".into()),
                })?;
                let event = ended_event(self, id, state::COMPLETE, None).await;
                self.inner
                    .store
                    .end_transfer(id, state::COMPLETE, None, event)
                    .await?;
            }
            other => {
                return Err(TransferError::Conflict(format!(
                    "upload {id} is {other}; it can be finalized once idle (all files sent)"
                )));
            }
        }
        self.detail_summary(TransferKind::Upload, id).await
    }

    /// A new share link for a complete team upload.
    pub async fn link(&self, id: &str) -> Result<serde_json::Value, TransferError> {
        let t = self.record(TransferKind::Upload, id).await?;
        let spec: UploadRequest = serde_json::from_value(t.spec.clone())
            .map_err(|e| TransferError::Invalid(e.to_string()))?;
        if matches!(spec, UploadRequest::Portal(_)) {
            return Err(TransferError::Conflict(format!(
                "upload {id} went to a portal; links are for team uploads"
            )));
        }
        if t.state != state::COMPLETE {
            return Err(TransferError::Conflict(format!(
                "upload {id} is {}; links are made for complete uploads",
                t.state
            )));
        }
        let remote = upload::remote_of(&t)?;
        let link = self
            .inner
            .client
            .create_link(
                &remote.package_id,
                &remote.access_token,
                &cloud::dto::CreateLink::default(),
            )
            .await?;
        Ok(serde_json::json!({
            "id": link.id,
            "secret": link.download_secret.expose(),
            "email": link.email.unwrap_or_default(),
            "expiry": link.expiry.map(|e| cloud::dto::format_time(&e)),
            "locked": link.password == "****",
            "link": self.inner.config.share_url(&link.id, link.download_secret.expose()),
        }))
    }

    /// Adds files to an idle upload and sends them.
    pub async fn add_files(
        &self,
        id: &str,
        paths: Vec<std::path::PathBuf>,
    ) -> Result<TransferSummary, TransferError> {
        let t = self.record(TransferKind::Upload, id).await?;
        if t.state != state::IDLE {
            return Err(TransferError::Conflict(format!(
                "upload {id} is {}; files can be added while it is idle",
                t.state
            )));
        }
        let spec: UploadRequest = serde_json::from_value(t.spec.clone())
            .map_err(|e| TransferError::Invalid(e.to_string()))?;
        let first = self.inner.store.file_outlines(id).await?.len() as u32;
        let files = upload::plan_files(&paths, spec.chunk_size(), first)?;
        self.inner.store.insert_files(id, files).await?;
        self.inner
            .store
            .set_state(id, state::TRANSFERRING, None)
            .await?;
        let t = self.record(TransferKind::Upload, id).await?;
        self.spawn(&t);
        self.detail_summary(TransferKind::Upload, id).await
    }

    fn spawn(&self, record: &TransferRecord) {
        let cancel = CancellationToken::new();
        let progress = Arc::new(Mutex::new(None));
        let inner = self.inner.clone();
        let (id, job_cancel, job_progress) = (record.id.clone(), cancel.clone(), progress.clone());
        let kind = record.kind;
        // FIFO mode: a place in line now, in the order jobs are spawned.
        let ticket = inner
            .bandwidth
            .enqueue(kind, &id, record.priority, record.created_at);
        let job = async move {
            // Paused or deleted while waiting: whoever did it has recorded the state.
            let Some(_slot) = ticket.admitted(&job_cancel).await else {
                return;
            };
            let store_waits = |reason: String| {
                inner.note_waiting(
                    &id,
                    format!(
                        "the agent's database cannot write ({reason}); free space under the data folder and the transfer goes on by itself"
                    ),
                    STORE_CHECK,
                );
            };
            let outcome = loop {
                // A run of its own: a worker failing the run stops that run's other workers.
                let run_cancel = job_cancel.child_token();
                let run = async {
                    match kind {
                        TransferKind::Download => {
                            download::run(inner.clone(), &id, run_cancel, job_progress.clone())
                                .await
                        }
                        TransferKind::Upload => {
                            upload::run(inner.clone(), &id, run_cancel, job_progress.clone()).await
                        }
                    }
                };
                let result = TRANSFER.scope(id.clone(), run).await;
                match result {
                    Ok((state, note)) => break Some((state, note)),
                    Err(JobError::Stopped) => break None,
                    Err(JobError::Failed(reason)) => break Some((state::ERROR, Some(reason))),
                    Err(JobError::Store(reason)) => {
                        tracing::error!(transfer_id = %id, error = %reason, "the agent's database cannot write; the transfer waits for it");
                        store_waits(reason);
                        if !wait_for_store(&inner, &job_cancel).await {
                            break None;
                        }
                        inner.not_waiting(&id);
                        tracing::info!(transfer_id = %id, "the agent's database writes again; the transfer goes on");
                    }
                }
            };
            if let Some((state, error)) = outcome {
                match &error {
                    Some(reason) if state == state::ERROR => {
                        tracing::warn!(transfer_id = %id, kind = kind.as_str(), error = %reason, "transfer failed")
                    }
                    Some(note) => {
                        tracing::warn!(transfer_id = %id, kind = kind.as_str(), state, note = %note, "transfer ended without some files")
                    }
                    None => {
                        tracing::info!(transfer_id = %id, kind = kind.as_str(), state, "transfer ended")
                    }
                }
                if state == state::COMPLETE
                    && let Err(e) = scrub_secrets(&inner.store, &id).await
                {
                    tracing::warn!(transfer_id = %id, error = %e, "cannot scrub the secrets of a complete transfer");
                }
                let engine = Engine {
                    inner: inner.clone(),
                };
                loop {
                    // The event of the end (for the post-transfer actions) is recorded with it.
                    let event = ended_event(&engine, &id, state, error.clone()).await;
                    match inner
                        .store
                        .end_transfer(&id, state, error.clone(), event)
                        .await
                    {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::error!(transfer_id = %id, error = %e, "cannot record the end of a transfer; waiting for the database");
                            store_waits(e.to_string());
                            if !wait_for_store(&inner, &job_cancel).await {
                                break;
                            }
                        }
                    }
                }
                crate::crash_point!("transfer.ended");
                let _ = inner.events.send(TransferEvent {
                    id: id.clone(),
                    kind,
                    state,
                });
            }
            inner.not_waiting(&id);
            let mut running = inner
                .running
                .lock()
                .expect("running lock is never poisoned");
            if running
                .get(&id)
                .is_some_and(|r| r.task.is_finished() || r.cancel.is_cancelled())
            {
                running.remove(&id);
            }
        };
        // Every event of the job, its workers' included, carries the transfer and its rule.
        let rule = record.rule.as_deref();
        let span =
            tracing::info_span!("transfer", transfer_id = %record.id, kind = kind.as_str(), rule);
        let task = tokio::spawn(job.instrument(span));
        self.inner
            .running
            .lock()
            .expect("running lock is never poisoned")
            .insert(
                record.id.clone(),
                Running {
                    cancel,
                    progress,
                    task,
                },
            );
    }

    /// Stops the job of `id` (if running) and waits until it has.
    async fn stop(&self, id: &str) {
        let running = self
            .inner
            .running
            .lock()
            .expect("running lock is never poisoned")
            .remove(id);
        if let Some(running) = running {
            running.cancel.cancel();
            let _ = running.task.await;
        }
    }

    /// The bandwidth limits in force, their settings, and the FIFO queues.
    pub fn bandwidth(&self) -> BandwidthView {
        self.inner.bandwidth.view()
    }

    /// The bandwidth settings in force (as the file or the API last set them).
    pub fn bandwidth_settings(&self) -> crate::config::BandwidthSettings {
        self.inner.bandwidth.settings()
    }

    /// New bandwidth settings, in force at once under running transfers.
    pub fn set_bandwidth(&self, settings: crate::config::BandwidthSettings) -> BandwidthView {
        self.inner.bandwidth.replace(settings);
        self.inner.bandwidth.view()
    }

    /// Stops every job at a safe point: no new chunk or part starts, and those in flight get
    /// until `deadline` to finish and be committed; then whatever is left is cut off. States
    /// stay as they are, so the next start resumes the jobs.
    pub async fn shutdown(&self, deadline: Duration) {
        self.inner.bandwidth.stop();
        self.inner.draining.cancel();
        let all: Vec<Running> = self
            .inner
            .running
            .lock()
            .expect("running lock is never poisoned")
            .drain()
            .map(|(_, r)| r)
            .collect();
        let cancels: Vec<CancellationToken> = all.iter().map(|r| r.cancel.clone()).collect();
        let mut tasks = futures_util::future::join_all(all.into_iter().map(|r| r.task));
        if tokio::time::timeout(deadline, &mut tasks).await.is_err() {
            tracing::warn!(
                ?deadline,
                "chunks still in flight at the shutdown deadline are cut off; the next start fetches them again"
            );
            for cancel in &cancels {
                cancel.cancel();
            }
            tasks.await;
        }
    }

    async fn record(&self, kind: TransferKind, id: &str) -> Result<TransferRecord, TransferError> {
        self.inner
            .store
            .transfer(id)
            .await?
            .filter(|t| t.kind == kind)
            .ok_or_else(|| TransferError::NotFound {
                kind: kind.as_str(),
                id: id.to_owned(),
            })
    }

    pub async fn list(&self, kind: TransferKind) -> Result<Vec<TransferSummary>, TransferError> {
        Ok(self
            .list_where(kind, |_| true)
            .await?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }

    /// The summaries of the transfers of `kind` that `keep` picks from their records (the live
    /// stream recomputes only those that moved), with each record's `updated_at` in ms.
    pub async fn list_where(
        &self,
        kind: TransferKind,
        mut keep: impl FnMut(&TransferRecord) -> bool,
    ) -> Result<Vec<(i64, TransferSummary)>, TransferError> {
        let mut out = Vec::new();
        for t in self.inner.store.transfers(kind).await? {
            if keep(&t) {
                out.push((
                    t.updated_at.timestamp_millis(),
                    self.summary(&t, false).await?,
                ));
            }
        }
        Ok(out)
    }

    pub async fn detail(
        &self,
        kind: TransferKind,
        id: &str,
    ) -> Result<TransferSummary, TransferError> {
        let t = self.record(kind, id).await?;
        self.summary(&t, true).await
    }

    async fn summary(
        &self,
        t: &TransferRecord,
        with_files: bool,
    ) -> Result<TransferSummary, TransferError> {
        let progress = self.inner.store.file_progress(&t.id).await?;
        let live = self
            .inner
            .running
            .lock()
            .expect("running lock is never poisoned")
            .get(&t.id)
            .and_then(|r| {
                r.progress
                    .lock()
                    .expect("progress slot lock is never poisoned")
                    .clone()
            });
        let waiting = self
            .inner
            .waiting
            .lock()
            .expect("waiting lock is never poisoned")
            .get(&t.id)
            .cloned()
            .filter(|_| t.state == state::TRANSFERRING);
        let held = self
            .inner
            .held
            .lock()
            .expect("held lock is never poisoned")
            .get(&t.id)
            .cloned()
            .filter(|_| t.state == state::PAUSED);
        let done_of = |i: usize, p: &crate::store::FileProgress| match p.state.as_str() {
            file_state::COMPLETE => p.size,
            _ => live
                .as_ref()
                .and_then(|l| l.file_done(i))
                .unwrap_or(p.committed)
                .min(p.size),
        };
        let counted = || {
            progress
                .iter()
                .enumerate()
                .filter(|(_, p)| p.state != file_state::SKIPPED)
        };
        let bytes_total = counted().map(|(_, p)| p.size).sum();
        let bytes_done = counted().map(|(i, p)| done_of(i, p)).sum();
        let files_total = counted().count() as u64;
        let files_done = progress
            .iter()
            .filter(|p| p.state == file_state::COMPLETE)
            .count() as u64;
        let views = if with_files {
            let files = self.inner.store.files(&t.id).await?;
            let views: Vec<FileView> = files
                .into_iter()
                .zip(&progress)
                .enumerate()
                .map(|(i, (f, p))| FileView {
                    bytes_done: done_of(i, p),
                    id: f.remote_id,
                    name: f.name,
                    path: f.path,
                    size: f.size,
                    state: f.state,
                    error: f.error,
                    local_path: f.local_path,
                    hash: f.hash.as_deref().and_then(|h| {
                        let (format, digest) = h.split_once(':')?;
                        Some([(format.to_owned(), digest.to_owned())].into())
                    }),
                })
                .collect();
            Some(views)
        } else {
            None
        };
        let remote = t.remote.clone().unwrap_or_default();
        let text =
            |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        let mut summary = TransferSummary {
            download_id: None,
            upload_id: None,
            state: t.state.clone(),
            kind: None,
            url: None,
            dst_folder: None,
            link: None,
            recipients: None,
            subdomain: None,
            package_id: text(&remote, "package_id"),
            // An upload whose job has not created its package yet shows the name it asks for.
            package_name: text(&remote, "package_name").or_else(|| text(&t.spec, "package_name")),
            priority: t.priority,
            created_at: cloud::dto::format_time(&t.created_at),
            updated_at: cloud::dto::format_time(&t.updated_at),
            bytes_done,
            bytes_total,
            bytes_per_second: if t.state == state::TRANSFERRING {
                live.as_ref().map(|p| p.speed()).unwrap_or(0)
            } else {
                0
            },
            files_total,
            files_done,
            queue_position: self.inner.bandwidth.queue_position(t.kind, &t.id),
            error: t.error.clone(),
            waiting: held.or_else(|| waiting.as_ref().map(|w| w.reason.clone())),
            next_try_at: waiting.map(|w| cloud::dto::format_time(&w.next_try)),
            rule: t.rule.clone(),
            files: views,
        };
        match t.kind {
            TransferKind::Download => {
                summary.download_id = Some(t.id.clone());
                summary.url = text(&t.spec, "url").map(|u| download::public_url(&u));
                summary.dst_folder = text(&t.spec, "dst_folder");
            }
            TransferKind::Upload => {
                summary.upload_id = Some(t.id.clone());
                if let Ok(spec) = serde_json::from_value::<UploadRequest>(t.spec.clone()) {
                    summary.kind = Some(spec.kind().to_owned());
                    match &spec {
                        UploadRequest::Team(r) => summary.recipients = Some(r.recipients.clone()),
                        UploadRequest::Portal(r) => summary.subdomain = Some(r.subdomain.clone()),
                    }
                }
                summary.link = remote
                    .get("link")
                    .and_then(|l| l.as_str())
                    .map(str::to_owned);
            }
        }
        Ok(summary)
    }

    pub async fn pause(
        &self,
        kind: TransferKind,
        id: &str,
    ) -> Result<TransferSummary, TransferError> {
        let t = self.record(kind, id).await?;
        if t.state == state::TRANSFERRING {
            // Record first: the job, seeing itself stopped, leaves the state alone.
            self.inner.store.set_state(id, state::PAUSED, None).await?;
            self.stop(id).await;
            tracing::info!(transfer_id = %id, "paused");
        } else if t.state != state::PAUSED {
            return Err(TransferError::Conflict(format!(
                "{} {id} is {}; only a transferring one can be paused",
                kind.as_str(),
                t.state
            )));
        }
        self.detail_summary(kind, id).await
    }

    /// Pauses a transfer that must wait for its rule's window, saying why (`reason`, e.g.
    /// `waiting for window (opens 19:00 America/Toronto)`); a held transfer is not resumed by
    /// hand ([`Engine::resume`] says why), only by [`Engine::release`].
    pub async fn hold(
        &self,
        kind: TransferKind,
        id: &str,
        reason: String,
    ) -> Result<(), TransferError> {
        let t = self.record(kind, id).await?;
        if t.state != state::TRANSFERRING && t.state != state::PAUSED {
            return Ok(());
        }
        self.inner
            .held
            .lock()
            .expect("held lock is never poisoned")
            .insert(id.to_owned(), reason);
        if t.state == state::TRANSFERRING {
            self.pause(kind, id).await?;
        }
        Ok(())
    }

    /// Lets a held transfer go: its window is open.
    pub async fn release(&self, kind: TransferKind, id: &str) -> Result<(), TransferError> {
        self.inner
            .held
            .lock()
            .expect("held lock is never poisoned")
            .remove(id);
        if self.record(kind, id).await?.state == state::PAUSED {
            self.resume(kind, id).await?;
        }
        Ok(())
    }

    fn held_reason(&self, id: &str) -> Option<String> {
        self.inner
            .held
            .lock()
            .expect("held lock is never poisoned")
            .get(id)
            .cloned()
    }

    /// Resumes a paused transfer, or one in error. A transfer held outside its rule's window
    /// is refused with when the window opens: it starts by itself then (the window is the
    /// rule's to change, not a resume's to override).
    pub async fn resume(
        &self,
        kind: TransferKind,
        id: &str,
    ) -> Result<TransferSummary, TransferError> {
        let t = self.record(kind, id).await?;
        if let Some(reason) = self.held_reason(id).filter(|_| t.state == state::PAUSED) {
            return Err(TransferError::Conflict(format!(
                "{} {id} is {reason}; it starts by itself then. To send it now, change the window of its rule (or remove it) and the file is reloaded",
                kind.as_str()
            )));
        }
        match t.state.as_str() {
            state::PAUSED | state::ERROR => {
                // What failed (a network down longer than the retries, say) is tried again.
                let retried = self.inner.store.retry_failed_files(id, REFUSED).await?;
                if retried > 0 {
                    tracing::info!(transfer_id = %id, files = retried, "failed files are tried again");
                }
                self.inner
                    .store
                    .set_state(id, state::TRANSFERRING, None)
                    .await?;
                let t = self.record(kind, id).await?;
                self.spawn(&t);
                tracing::info!(transfer_id = %id, "resumed");
            }
            state::TRANSFERRING => {
                let running = self
                    .inner
                    .running
                    .lock()
                    .expect("running lock is never poisoned")
                    .contains_key(id);
                if !running {
                    self.spawn(&t);
                }
            }
            other => {
                return Err(TransferError::Conflict(format!(
                    "{} {id} is {other}; nothing to resume",
                    kind.as_str()
                )));
            }
        }
        self.detail_summary(kind, id).await
    }

    async fn detail_summary(
        &self,
        kind: TransferKind,
        id: &str,
    ) -> Result<TransferSummary, TransferError> {
        let t = self.record(kind, id).await?;
        self.summary(&t, false).await
    }

    /// The ids and states of the transfers an automation made.
    pub async fn transfers_of(
        &self,
        rule: &str,
    ) -> Result<Vec<(TransferKind, String, String)>, TransferError> {
        let mut out = Vec::new();
        for kind in [TransferKind::Download, TransferKind::Upload] {
            for t in self.inner.store.transfers(kind).await? {
                if t.rule.as_deref() == Some(rule) {
                    out.push((kind, t.id, t.state));
                }
            }
        }
        Ok(out)
    }

    /// Pauses (or resumes) every transfer of a kind that can be; returns their ids.
    pub async fn pause_all(
        &self,
        kind: TransferKind,
        pause: bool,
    ) -> Result<Vec<String>, TransferError> {
        let mut changed = Vec::new();
        for t in self.inner.store.transfers(kind).await? {
            let applies = if pause {
                t.state == state::TRANSFERRING
            } else {
                t.state == state::PAUSED && self.held_reason(&t.id).is_none()
            };
            if applies {
                if pause {
                    self.pause(kind, &t.id).await?;
                } else {
                    self.resume(kind, &t.id).await?;
                }
                changed.push(t.id);
            }
        }
        Ok(changed)
    }

    /// Forgets a transfer; with `remove_files`, also deletes what it wrote.
    pub async fn delete(
        &self,
        kind: TransferKind,
        id: &str,
        remove_files: bool,
    ) -> Result<(), TransferError> {
        self.record(kind, id).await?;
        self.stop(id).await;
        if kind == TransferKind::Download {
            download::remove_files(&self.inner.store, id, remove_files).await?;
        }
        self.inner.store.delete_transfer(id).await?;
        tracing::info!(transfer_id = %id, remove_files, "deleted");
        Ok(())
    }

    /// Deletes every transfer of a kind, or only those in `states`; returns their ids.
    pub async fn delete_all(
        &self,
        kind: TransferKind,
        states: Option<&[String]>,
        remove_files: bool,
    ) -> Result<Vec<String>, TransferError> {
        let mut deleted = Vec::new();
        for t in self.inner.store.transfers(kind).await? {
            if states.is_none_or(|s| s.iter().any(|x| x == &t.state)) {
                self.delete(kind, &t.id, remove_files).await?;
                deleted.push(t.id);
            }
        }
        Ok(deleted)
    }
}

/// Resumes, once the service answers again, the transfers that ended in `error` because a
/// transient fault outlasted `give_up_after`. Checks every `max_delay` (at most every 30 s).
async fn heal(engine: Engine) {
    let inner = &engine.inner;
    let every = inner
        .config
        .retry
        .max_delay
        .clamp(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = inner.draining.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let mut gave_up = Vec::new();
        for kind in [TransferKind::Download, TransferKind::Upload] {
            let Ok(transfers) = inner.store.transfers(kind).await else {
                continue;
            };
            gave_up.extend(
                transfers
                    .into_iter()
                    .filter(|t| {
                        t.state == state::ERROR
                            && t.error.as_deref().is_some_and(|e| e.starts_with(GAVE_UP))
                    })
                    .map(|t| (kind, t.id)),
            );
        }
        if gave_up.is_empty() || inner.client.package_spec().await.is_err() {
            continue;
        }
        for (kind, id) in gave_up {
            tracing::info!(transfer_id = %id, "the service answers again: resuming a transfer that gave up on it");
            if let Err(e) = engine.resume(kind, &id).await {
                tracing::warn!(transfer_id = %id, error = %e, "cannot resume");
            }
        }
    }
}

/// Forgets what a complete transfer no longer needs and nobody should read in the agent's
/// database: a download link's secret (its URL keeps the link id), link passwords, package
/// tokens, portal access codes and package passwords. An upload keeps its own share link and
/// the package's access token: `masv upload link` makes new links with it.
/// The event a transfer's end causes, for the post-transfer actions: `upload.delivered` (a
/// package finalized), `download.arrived`, `transfer.failed`; `None` for other ends (an upload
/// left idle) or when the transfer cannot be read (its end is recorded all the same).
async fn ended_event(
    engine: &Engine,
    id: &str,
    end: &str,
    error: Option<String>,
) -> Option<crate::store::NewEvent> {
    use crate::actions::event::{self, ByteCounts, Counts, FileInfo, PackageInfo, Payload};
    let t = engine.inner.store.transfer(id).await.ok()??;
    let kind = match (end, t.kind) {
        (state::COMPLETE, TransferKind::Upload) => event::UPLOAD_DELIVERED,
        (state::COMPLETE, TransferKind::Download) => event::DOWNLOAD_ARRIVED,
        (state::ERROR, _) => event::TRANSFER_FAILED,
        _ => return None,
    };
    let summary = match engine.summary(&t, true).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(transfer_id = %id, error = %e, "cannot read the transfer for its event");
            return None;
        }
    };
    let now = Utc::now();
    let files: Vec<FileInfo> = summary
        .files
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f.state != file_state::SKIPPED)
        .map(|f| FileInfo {
            local_path: f.local_path,
            package_path: f.path,
            name: f.name,
            size: f.size,
            state: f.state,
            hash: f.hash,
        })
        .collect();
    let mut payload = Payload::new(kind, now);
    payload.rule = t.rule.clone();
    payload.transfer = Some(event::TransferInfo {
        id: t.id.clone(),
        kind: t.kind.as_str().to_owned(),
        state: end.to_owned(),
        created_at: cloud::dto::format_time(&t.created_at),
        ended_at: cloud::dto::format_time(&now),
        duration_seconds: (now - t.created_at).num_milliseconds().max(0) as f64 / 1000.0,
    });
    if summary.package_id.is_some() || summary.package_name.is_some() {
        payload.package = Some(PackageInfo {
            id: summary.package_id,
            name: summary.package_name,
        });
    }
    payload.link = summary.link;
    payload.counts = Counts {
        files: summary.files_total,
        files_done: summary.files_done,
        files_failed: files
            .iter()
            .filter(|f| f.state == file_state::ERROR)
            .count() as u64,
    };
    payload.bytes = ByteCounts {
        total: summary.bytes_total,
        done: summary.bytes_done,
    };
    payload.files = files;
    payload.error = error;
    Some(payload.into_event())
}

async fn scrub_secrets(store: &Store, id: &str) -> Result<(), StoreError> {
    let Some(t) = store.transfer(id).await? else {
        return Ok(());
    };
    let mut spec = t.spec.clone();
    let mut remote = t.remote.clone();
    let fields = spec.as_object_mut();
    match t.kind {
        TransferKind::Download => {
            if let Some(fields) = fields {
                if let Some(url) = fields.get("url").and_then(|u| u.as_str()) {
                    let public = download::public_url(url);
                    fields.insert("url".into(), public.into());
                }
                fields.remove("password");
                if let Some(package) = fields.get_mut("package").and_then(|p| p.as_object_mut()) {
                    package.insert("package_token".into(), "".into());
                }
            }
            if let Some(remote) = remote.as_mut().and_then(|r| r.as_object_mut()) {
                remote.insert("package_token".into(), "".into());
            }
        }
        TransferKind::Upload => {
            if let Some(fields) = fields {
                fields.remove("password");
                fields.remove("access_code");
            }
        }
    }
    if spec != t.spec || remote != t.remote {
        store.set_spec_and_remote(id, spec, remote).await?;
    }
    Ok(())
}

/// How often a job waiting for the database checks whether it writes again.
const STORE_CHECK: Duration = Duration::from_secs(1);

/// Waits until the database takes writes again (checked every second); `false` if the job
/// was stopped (paused, deleted, shut down) meanwhile.
async fn wait_for_store(inner: &Inner, cancel: &CancellationToken) -> bool {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = inner.draining.cancelled() => return false,
            _ = tokio::time::sleep(STORE_CHECK) => {}
        }
        if inner.store.probe_write().await.is_ok() {
            return true;
        }
    }
}

/// A new transfer row.
fn new_record(kind: TransferKind, priority: i64, spec: serde_json::Value) -> TransferRecord {
    let now = Utc::now();
    TransferRecord {
        id: uuid::Uuid::new_v4().to_string(),
        kind,
        state: state::TRANSFERRING.into(),
        priority,
        spec,
        remote: None,
        error: None,
        rule: None,
        created_at: now,
        updated_at: now,
    }
}

/// Runs a job's workers (one per connection, at most one per `queued` item) until they are
/// all done, then tells how its files fared: `Ok(None)` when none failed, `Ok(Some(note))`
/// when only files that can never arrive failed (refused names), else
/// `Failed("N of M files failed; first: …")`. A worker failing the whole job (the database,
/// say) stops the others.
async fn run_workers<Fut>(
    inner: &Inner,
    id: &str,
    cancel: &CancellationToken,
    queued: usize,
    worker: impl Fn() -> Fut,
) -> Result<Option<String>, JobError>
where
    Fut: std::future::Future<Output = Result<(), JobError>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..inner.config.max_connections.max(1).min(queued) {
        set.spawn(TRANSFER.scope(id.to_owned(), worker()).in_current_span());
    }
    let mut stopped = false;
    let mut fatal = None;
    while let Some(result) = set.join_next().await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(JobError::Stopped)) => stopped = true,
            Ok(Err(e)) => {
                cancel.cancel();
                fatal.get_or_insert(e);
            }
            Err(e) => {
                cancel.cancel();
                fatal.get_or_insert(JobError::Failed(format!("a transfer worker crashed: {e}")));
            }
        }
    }
    if let Some(e) = fatal {
        return Err(e);
    }
    if stopped || cancel.is_cancelled() {
        return Err(JobError::Stopped);
    }
    outcome(inner, id).await
}

/// How a job's files fared, once its workers are done (see [`run_workers`]).
async fn outcome(inner: &Inner, id: &str) -> Result<Option<String>, JobError> {
    let failures = inner.store.file_failures(id, GAVE_UP, REFUSED).await?;
    match failures.first {
        None => Ok(None),
        // Only files that can never arrive failed: the others did, and the transfer is
        // complete, its note naming what is missing (a rule records the package as fetched).
        Some((path, error)) if failures.refused == failures.failed => Ok(Some(format!(
            "{} of {} files could never arrive; first: {path}: {}",
            failures.failed,
            failures.total,
            error.as_deref().unwrap_or("unknown error")
        ))),
        Some((path, error)) => {
            // Every failure a transient one that outlasted `give_up_after`: the transfer is
            // resumed by itself once the service answers again ([`heal`]).
            let prefix = if failures.transient == failures.failed {
                GAVE_UP
            } else {
                ""
            };
            Err(JobError::Failed(format!(
                "{prefix}{} of {} files failed; first: {path}: {}",
                failures.failed,
                failures.total,
                error.as_deref().unwrap_or("unknown error")
            )))
        }
    }
}

/// What a pause does to a request already sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InFlight {
    /// Drop it: asking again later costs nothing (URLs, listings, lookups).
    Interrupt,
    /// Let it finish: it creates something on the service (a file, a multipart upload, a
    /// finalize) whose answer must not be lost, or a resumed job would make a second one.
    Finish,
}

/// Runs a cloud call, retrying transient failures with backoff until the policy gives up;
/// `Err(None)` when the job was stopped meanwhile, `Err(Some(e))` for the final failure. Each
/// attempt takes a connection from the shared budget, by `priority`, like every request to the
/// service: a thousand jobs starting at once ask a few at a time, not on a thousand
/// connections.
async fn retry_cloud<T, F, Fut>(
    inner: &Inner,
    cancel: &CancellationToken,
    priority: i64,
    what: &str,
    in_flight: InFlight,
    mut call: F,
) -> Result<T, Option<CloudError>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CloudError>>,
{
    let mut attempt = 0;
    let mut failing_since = None;
    loop {
        let permit = match in_flight {
            InFlight::Interrupt => tokio::select! {
                _ = cancel.cancelled() => return Err(None),
                p = inner.budget.acquire(priority) => p,
            },
            // A step whose answer must not be lost often follows another (a file declared,
            // then its multipart upload opened): it goes, stopped or not.
            InFlight::Finish => inner.budget.acquire(priority).await,
        };
        let result = match in_flight {
            InFlight::Interrupt => tokio::select! {
                _ = cancel.cancelled() => return Err(None),
                r = call() => r,
            },
            InFlight::Finish => call().await,
        };
        drop(permit);
        match result {
            Ok(v) => {
                if attempt > 0 {
                    inner.moving();
                }
                return Ok(v);
            }
            Err(_) if cancel.is_cancelled() => return Err(None),
            Err(e)
                if e.is_transient()
                    && !inner
                        .config
                        .retry
                        .gives_up(*failing_since.get_or_insert_with(std::time::Instant::now)) =>
            {
                attempt += 1;
                inner.metrics.cloud_error(&e);
                inner.metrics.retry();
                let delay = inner.config.retry.delay(attempt, e.retry_after());
                tracing::debug!(step = what, attempt, error = %e, "transient failure; retrying");
                inner.wait_noted(format!("{what}: {e}"), delay);
                // A shutdown does not wait for a backoff: the step is taken again at the next
                // start (every step may be repeated).
                tokio::select! {
                    _ = cancel.cancelled() => return Err(None),
                    _ = inner.draining.cancelled() => return Err(None),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => {
                inner.metrics.cloud_error(&e);
                return Err(Some(e));
            }
        }
    }
}

/// [`retry_cloud`] for steps whose failure ends the job (the client's errors name the step).
async fn with_retries<T, F, Fut>(
    inner: &Inner,
    cancel: &CancellationToken,
    priority: i64,
    what: &str,
    call: F,
) -> Result<T, JobError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CloudError>>,
{
    retry_cloud(inner, cancel, priority, what, InFlight::Interrupt, call)
        .await
        .map_err(|e| match e {
            None => JobError::Stopped,
            Some(e) if e.is_transient() => JobError::Failed(format!("{GAVE_UP}{e}")),
            Some(e) => JobError::Failed(e.to_string()),
        })
}
