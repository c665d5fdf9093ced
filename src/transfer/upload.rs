//! Uploading a package: the paths are walked and the package created when the upload is asked
//! for (so bad paths, access codes and keys fail at once); then every file is sent as a
//! multipart upload whose parts stream from disk under the shared connection budget, each
//! part's ETag committed as it arrives so a restart sends only what was in flight.
//!
//! # State machine, and what a crash at any instruction leaves
//! Durable facts (store) are in brackets; requests to the service are plain. Each named crash
//! point (`crate::crash::POINTS`) sits where a crash is tested.
//! 1. Package: created (by the API call, or by the job for a queued upload) → [remote]. A crash
//!    between the two leaves an empty package on the service, never delivered.
//! 2. Per file: [declaring] (`upload.file.declaring`) → `POST …/files` (`upload.file.declared`)
//!    → [file id, create blueprint]. After a crash, or an answer lost on the way back (a cut
//!    connection, a timeout, a 5xx), the file is not declared again blindly: the package's
//!    entries are listed and the entry of the same kind, name, folder and size that no other
//!    file of the upload owns is adopted, with the create blueprint the listing gives the
//!    sender ([`adopt`]). A second entry would never be uploaded, and the package could never
//!    be finalized.
//! 3. Multipart upload opened with the blueprint (`upload.multipart.opened`) → [upload id]. A
//!    crash between them opens another one; the first is abandoned, harmless.
//! 4. Per part: PUT (`upload.part.sent`) → [ETag] (`upload.part.committed`). Sent again if the
//!    crash came before the commit: same bytes, same ETag.
//! 5. File finalize (`upload.file.finalized`) → [file `complete`]. Finalizing a finalized file
//!    is answered as done.
//! 6. Package: [upload `idle`] (`upload.package.finalizing`) → package finalize
//!    (`upload.package.finalized`) → [upload `complete`]. An idle upload under auto-finalize
//!    is finished at the next start; finalizing a finalized package is answered as done.
//! 7. A store write that fails (a full disk) stops the run with `JobError::Store`; the engine
//!    shows why the transfer waits and runs it again once the store writes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::progress::Progress;
use super::queue::{Next, WorkQueue};
use super::{
    InFlight, Inner, JobError, TransferError, file_state, new_record, retry_cloud, run_workers,
    state,
};
use crate::cloud::CloudError;
use crate::cloud::dto::{
    AddFile, Blueprint, ChunkExtra, CreateLink, CreatePortalPackage, CreateTeamPackage, FileExtras,
    FileKind, FinalizeFile, PackageSpec, Secret,
};
use crate::config::Manifest;
use crate::files::{self, LocalEntry};
use crate::mhl::HashFormat;
use crate::store::{ChunkRecord, FileRecord, TransferKind, TransferRecord};

/// Part URLs asked for at once.
const PART_URL_BATCH: u64 = 64;
/// Read buffer of a part's body stream.
const READ_BUFFER: usize = 1024 * 1024;

/// `POST /api/v1/uploads`: a team upload, to recipients or (with none) behind a link.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamUploadRequest {
    #[serde(default)]
    pub team_id: Option<String>,
    /// The team's subdomain, as MASV's docs send it (seed 004); resolved to the team when the
    /// package is created. A team id given here is taken as it is.
    #[serde(default)]
    pub subdomain: Option<String>,
    /// Not kept in the stored spec (see [`create`]): empty there.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    #[serde(default)]
    pub package_name: Option<String>,
    #[serde(default)]
    pub package_description: Option<String>,
    #[serde(default)]
    pub recipients: Vec<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub chunk_size: Option<u64>,
    #[serde(default)]
    pub priority: i64,
    #[serde(default)]
    pub delete_after: Option<u32>,
    #[serde(default)]
    pub download_limit: Option<u32>,
    #[serde(default)]
    pub tag_name: Option<String>,
    #[serde(default)]
    pub tag_id: Option<String>,
    #[serde(default)]
    pub teamspace_id: Option<String>,
    #[serde(default)]
    pub unlimited_storage: bool,
    /// `"ascmhl"`: an ASC MHL manifest of the files goes into the package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
}

/// `POST /api/v1/portals/uploads`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalUploadRequest {
    pub subdomain: String,
    pub sender_email: String,
    /// Not kept in the stored spec (see [`create`]): empty there.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    #[serde(default)]
    pub access_code: Option<Secret>,
    #[serde(default)]
    pub package_name: Option<String>,
    #[serde(default)]
    pub package_description: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub chunk_size: Option<u64>,
    #[serde(default)]
    pub priority: i64,
    /// `"ascmhl"`: an ASC MHL manifest of the files goes into the package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
}

/// What an upload was asked to do, as stored.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UploadRequest {
    Team(TeamUploadRequest),
    Portal(PortalUploadRequest),
}

impl UploadRequest {
    pub(super) fn paths(&self) -> &[PathBuf] {
        match self {
            UploadRequest::Team(r) => &r.paths,
            UploadRequest::Portal(r) => &r.paths,
        }
    }
    pub(super) fn chunk_size(&self) -> Option<u64> {
        match self {
            UploadRequest::Team(r) => r.chunk_size,
            UploadRequest::Portal(r) => r.chunk_size,
        }
    }
    fn priority(&self) -> i64 {
        match self {
            UploadRequest::Team(r) => r.priority,
            UploadRequest::Portal(r) => r.priority,
        }
    }
    fn manifest(&self) -> Option<Manifest> {
        match self {
            UploadRequest::Team(r) => r.manifest,
            UploadRequest::Portal(r) => r.manifest,
        }
    }
    /// `team`, `link` or `portal`, as the status API shows it.
    pub fn kind(&self) -> &'static str {
        match self {
            UploadRequest::Team(r) if r.recipients.is_empty() => "link",
            UploadRequest::Team(_) => "team",
            UploadRequest::Portal(_) => "portal",
        }
    }
}

/// What the cloud gave us when the package was created.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct Remote {
    pub package_id: String,
    pub package_name: String,
    pub access_token: Secret,
    #[serde(default)]
    pub link: Option<Secret>,
}

/// A file's ids on the cloud side, committed as they are obtained.
#[derive(Clone, Default, Serialize, Deserialize)]
struct FileRemote {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file_id: Option<String>,
    /// A declaration was (or may have been) sent: before declaring again, the package's
    /// entries are listed and the file's own adopted ([`adopt`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    declaring: bool,
    /// How to open the file's multipart upload, kept from its declaration until it is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    create_blueprint: Option<Blueprint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upload_id: Option<String>,
    /// Modification time (Unix nanoseconds) when the upload was created: a change means the
    /// file was edited while being sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtime_ns: Option<i128>,
}

fn nanos(t: Option<SystemTime>) -> Option<i128> {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128)
}

/// Whether `s` is a ULID (26 characters of Crockford base 32, upper case as MASV writes ids)
/// rather than a subdomain (a lower-case DNS label).
fn looks_like_id(s: &str) -> bool {
    s.len() == 26
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b.is_ascii_uppercase() && !b"ILOU".contains(&b)))
}

/// Walks the paths and plans the files, starting at index `first`.
pub(super) fn plan_files(
    paths: &[PathBuf],
    chunk_size: Option<u64>,
    first: u32,
) -> Result<Vec<FileRecord>, TransferError> {
    if paths.is_empty() {
        return Err(TransferError::Invalid(
            "paths is empty: give the files or folders to send".into(),
        ));
    }
    let entries =
        files::walk_upload_roots(paths).map_err(|e| TransferError::Invalid(e.to_string()))?;
    Ok(file_records(entries, chunk_size, first))
}

/// The files of an upload, from what is to be sent, numbered from `first`.
pub(super) fn file_records(
    entries: Vec<LocalEntry>,
    chunk_size: Option<u64>,
    first: u32,
) -> Vec<FileRecord> {
    let spec = PackageSpec::default();
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| FileRecord {
            idx: first + i as u32,
            remote_id: None,
            kind: if e.directory {
                "directory".into()
            } else {
                "file".into()
            },
            name: e.name,
            path: e.package_path,
            local_path: e.source.display().to_string(),
            size: e.size,
            chunk_size: spec.chunk_size_for(e.size, chunk_size.unwrap_or(0)),
            last_modified: e.modified.map(DateTime::<Utc>::from),
            state: file_state::PENDING.into(),
            error: None,
            extra: Some(
                serde_json::to_string(&FileRemote {
                    mtime_ns: nanos(e.modified),
                    ..FileRemote::default()
                })
                .expect("file remote serializes"),
            ),
            hash: None,
        })
        .collect()
}

/// The record of a new upload, its package not created yet. The spec keeps what was asked but
/// the paths: the files table holds what is sent, each file with its source path, and every
/// listing reads the spec (a watch folder's upload may name 100,000 files).
pub(super) fn new_upload(
    req: &UploadRequest,
    hash: Option<HashFormat>,
) -> Result<TransferRecord, TransferError> {
    if req.manifest().is_some() && !hash.is_some_and(|h| HashFormat::ALL.contains(&h)) {
        return Err(TransferError::Invalid(format!(
            "manifest = \"ascmhl\" is made from the hashes computed while files are sent, and \
             [server] hash is {}: set it to an ASC MHL format (xxh64, the default; xxh3, xxh128, \
             md5, sha1 or c4)",
            hash.map(|h| h.name()).unwrap_or("off")
        )));
    }
    let mut spec = serde_json::to_value(req).map_err(|e| TransferError::Invalid(e.to_string()))?;
    if let Some(fields) = spec.as_object_mut() {
        fields.remove("paths");
    }
    Ok(new_record(TransferKind::Upload, req.priority(), spec))
}

/// Creates the package of an upload of `count` files (and the link of a link upload).
pub(super) async fn create_package(
    inner: &Inner,
    req: &UploadRequest,
    count: usize,
) -> Result<Remote, TransferError> {
    let default_name = format!(
        "{count} files, {}",
        chrono::Local::now().format("%Y-%m-%d %H:%M")
    );
    let remote = match req {
        UploadRequest::Team(r) => {
            let api_key = inner.config.api_key.clone().ok_or_else(|| {
                TransferError::Invalid("team uploads need the agent's API key: start it with --api-key or MASV_API_KEY".into())
            })?;
            let team_id = match (&r.team_id, &r.subdomain) {
                (Some(id), _) => id.clone(),
                (None, Some(sub)) if looks_like_id(sub) => sub.clone(),
                (None, Some(sub)) => inner
                    .client
                    .team_by_subdomain(sub, &api_key)
                    .await
                    .map_err(|e| match e {
                        CloudError::NotFound { .. } => TransferError::Invalid(format!(
                            "no team has the subdomain {sub:?}: give the team's subdomain, or its id as team_id ({e})"
                        )),
                        e => TransferError::Cloud(e),
                    })?
                    .id,
                (None, None) => {
                    return Err(TransferError::Invalid(
                        "team uploads need the team: subdomain (the team's subdomain) or team_id".into(),
                    ));
                }
            };
            let created = inner
                .client
                .create_team_package(
                    &team_id,
                    &api_key,
                    &CreateTeamPackage {
                        name: r.package_name.clone().unwrap_or(default_name),
                        description: r.package_description.clone().unwrap_or_default(),
                        recipients: r.recipients.clone(),
                        password: r.password.clone().filter(|p| !p.is_empty()),
                        access_limit: r.download_limit,
                        expiry: None,
                    },
                )
                .await?;
            let link = if r.recipients.is_empty() {
                let link = inner
                    .client
                    .create_link(&created.id, &created.access_token, &CreateLink::default())
                    .await?;
                Some(Secret::new(
                    inner
                        .config
                        .share_url(&link.id, link.download_secret.expose()),
                ))
            } else {
                None
            };
            Remote {
                package_id: created.id,
                package_name: created.name,
                access_token: created.access_token,
                link,
            }
        }
        UploadRequest::Portal(r) => {
            let portal = inner.client.portal(&r.subdomain).await?;
            let created = inner
                .client
                .create_portal_package(
                    &portal.id,
                    &CreatePortalPackage {
                        name: r.package_name.clone().unwrap_or(default_name),
                        description: r.package_description.clone().unwrap_or_default(),
                        sender: r.sender_email.clone(),
                        access_code: r.access_code.clone().filter(|c| !c.is_empty()),
                        metadata: r.metadata.clone(),
                    },
                )
                .await?;
            Remote {
                package_id: created.id,
                package_name: created.name,
                access_token: created.access_token,
                link: None,
            }
        }
    };
    tracing::info!(package_id = %remote.package_id, files = count, "package created");
    Ok(remote)
}

/// The package of a queued upload, created now if it was not when the upload was queued (a
/// watch folder queues its uploads at once and lets each job create its package). While the
/// service cannot be reached the job waits, trying again now and then: nothing is lost by
/// waiting, and the reason shows in the upload's status.
async fn ensure_package(
    inner: &Inner,
    record: &TransferRecord,
    count: usize,
    cancel: &CancellationToken,
) -> Result<Remote, JobError> {
    if record.remote.is_some() {
        return remote_of(record).map_err(|e| JobError::Failed(e.to_string()));
    }
    let req: UploadRequest = serde_json::from_value(record.spec.clone())
        .map_err(|e| JobError::Failed(format!("the upload's request cannot be read: {e}")))?;
    let mut attempt = 0;
    loop {
        let created = {
            // A package creation is a connection like any other: it waits its turn, by priority.
            let _permit = tokio::select! {
                _ = cancel.cancelled() => return Err(JobError::Stopped),
                _ = inner.draining.cancelled() => return Err(JobError::Stopped),
                p = inner.budget.acquire(record.priority) => p,
            };
            create_package(inner, &req, count).await
        };
        let delay = match created {
            Ok(remote) => {
                // Kept even if the job was stopped meanwhile: a resumed job must not create a
                // second package.
                let value = serde_json::to_value(&remote).expect("remote serializes");
                inner.store.set_remote(&record.id, value).await?;
                if attempt > 0 {
                    inner.store.set_error(&record.id, None).await?;
                }
                return Ok(remote);
            }
            Err(TransferError::Cloud(e)) if e.is_transient() => {
                attempt += 1;
                inner.metrics.cloud_error(&e);
                inner.metrics.retry();
                let reason = format!("waiting for the service to create the package: {e}");
                tracing::warn!(upload_id = %record.id, attempt, error = %e, "cannot create the package yet; trying again");
                inner.store.set_error(&record.id, Some(reason)).await?;
                inner.config.retry.delay(attempt, e.retry_after())
            }
            Err(e) => return Err(JobError::Failed(format!("creating the package: {e}"))),
        };
        tokio::select! {
            _ = cancel.cancelled() => return Err(JobError::Stopped),
            _ = inner.draining.cancelled() => return Err(JobError::Stopped),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// What a job keeps of every file: enough to plan and count its parts. Names, paths and ids
/// are read when the file starts ([`Active`]): a job may hold 100,000 files.
struct FileJob {
    directory: bool,
    /// Still to send (pending or transferring) when the job started.
    open: bool,
    remaining: AtomicU32,
    failed: AtomicBool,
    /// Bumped when the file changed and is sent again from its start: parts of an older
    /// generation still in flight are dropped, not committed.
    generation: AtomicU32,
    /// A worker is waiting for the changed file to settle.
    restarting: AtomicBool,
}

/// A file being sent: read when its first part goes, dropped once it is finished.
struct Active {
    record: FileRecord,
    remote: FileRemote,
    urls: tokio::sync::Mutex<BTreeMap<u32, Blueprint>>,
    etags: Mutex<BTreeMap<u32, String>>,
    /// MD5s of parts that reached the storage altered (their ETag was not the MD5 of what was
    /// read): sent again with `Content-MD5`, so that the storage refuses altered bytes itself.
    md5s: Mutex<BTreeMap<u32, [u8; 16]>>,
    /// The whole file's hash, fed by the parts' reads where they continue its hashed start,
    /// the rest read behind the transfer.
    feed: Option<Arc<super::digest::Feed>>,
    /// That hash being computed; taken when the file is finished.
    digest: Mutex<Option<super::digest::Digest>>,
}

struct Part {
    file: usize,
    /// 0-based; the part number on the wire is one more.
    index: u32,
    start: u64,
    len: u64,
    /// Tries that failed for a transient reason, and since when it fails.
    attempt: u32,
    failing_since: Option<std::time::Instant>,
    /// The file's generation when the part was planned.
    generation: u32,
}

impl Part {
    /// The parts of a file of `size` bytes in parts of `chunk_size`, but those in `sent`.
    fn plan(file: usize, size: u64, chunk_size: u64, sent: &[u32], generation: u32) -> Vec<Part> {
        let count = PackageSpec::part_count(size, chunk_size) as u32;
        (0..count)
            .filter(|index| sent.binary_search(index).is_err())
            .map(|index| {
                let start = u64::from(index) * chunk_size;
                Part {
                    file,
                    index,
                    start,
                    len: chunk_size.min(size.saturating_sub(start)),
                    attempt: 0,
                    failing_since: None,
                    generation,
                }
            })
            .collect()
    }
}

struct Job {
    inner: Arc<Inner>,
    id: String,
    priority: i64,
    cancel: CancellationToken,
    progress: Arc<Progress>,
    remote: Remote,
    files: Vec<FileJob>,
    /// The files started and not finished, each set up once by whichever worker comes first.
    active: Mutex<HashMap<usize, Arc<OnceCell<Arc<Active>>>>>,
    /// The package's entries that files of this upload own, read when a file is adopted.
    claimed: tokio::sync::Mutex<Option<std::collections::HashSet<String>>>,
    /// Held (shared) while a part is committed, and (alone) while a changed file's parts are
    /// planned anew: a part of an old generation is never committed after that.
    commits: tokio::sync::RwLock<()>,
    queue: WorkQueue<Part>,
}

enum PartError {
    Stopped,
    /// A transient failure: the part goes again after a backoff.
    Retry(CloudError),
    /// The file on disk is not what the upload planned (it was written to): it is sent again
    /// from its start once it has settled ([`restart_file`]).
    Changed(String),
    File(String),
    /// The agent's database could not write: the job waits for it (see [`JobError::Store`]).
    Store(String),
}

/// Sends what is left of an upload; `Ok` with the state it ends in (`idle` or `complete`).
pub(super) async fn run(
    inner: Arc<Inner>,
    id: &str,
    cancel: CancellationToken,
    progress_slot: Arc<Mutex<Option<Arc<Progress>>>>,
) -> Result<(&'static str, Option<String>), JobError> {
    let record = inner
        .store
        .transfer(id)
        .await?
        .ok_or_else(|| JobError::Failed("the upload's record is gone".into()))?;
    let outlines = inner.store.file_outlines(id).await?;
    let count = outlines.iter().filter(|f| !f.directory).count();
    let remote = ensure_package(&inner, &record, count, &cancel).await?;
    let mut sent: Vec<Vec<u32>> = vec![Vec::new(); outlines.len()];
    for (file, chunk) in inner.store.committed_chunks(id).await? {
        if let Some(parts) = sent.get_mut(file as usize) {
            parts.push(chunk);
        }
    }
    let mut done = vec![0u64; outlines.len()];
    let mut queue = VecDeque::new();
    let mut jobs = Vec::with_capacity(outlines.len());
    for (i, (f, sent)) in outlines.into_iter().zip(sent).enumerate() {
        let open = f.state == file_state::PENDING || f.state == file_state::TRANSFERRING;
        let part_len = |index: u32| {
            let start = u64::from(index) * f.chunk_size;
            f.chunk_size.min(f.size.saturating_sub(start))
        };
        done[i] = if f.state == file_state::COMPLETE {
            f.size
        } else {
            sent.iter().map(|&index| part_len(index)).sum()
        };
        let mut remaining = 0;
        // Folders have no parts: they are declared before the workers start.
        if open && !f.directory {
            let parts = Part::plan(i, f.size, f.chunk_size, &sent, 0);
            remaining = parts.len() as u32;
            queue.extend(parts);
        }
        jobs.push(FileJob {
            generation: AtomicU32::new(0),
            restarting: AtomicBool::new(false),
            directory: f.directory,
            open,
            remaining: AtomicU32::new(remaining),
            failed: AtomicBool::new(false),
        });
    }
    let progress = Arc::new(Progress::new(&done));
    drop(done);
    let (inner_again, cancel_again) = (inner.clone(), cancel.clone());
    *progress_slot
        .lock()
        .expect("progress slot lock is never poisoned") = Some(progress.clone());
    let job = Arc::new(Job {
        inner,
        id: id.to_owned(),
        priority: record.priority,
        cancel,
        progress,
        remote,
        files: jobs,
        active: Mutex::new(HashMap::new()),
        claimed: tokio::sync::Mutex::new(None),
        commits: tokio::sync::RwLock::new(()),
        queue: WorkQueue::new(queue),
    });

    // Folders, and files whose parts were all sent before a restart but not finalized.
    for i in 0..job.files.len() {
        let f = &job.files[i];
        if f.open && f.remaining.load(Ordering::Relaxed) == 0 {
            finish_file(&job, i).await?;
        }
    }

    let queued = job.queue.len();
    let pool = job.clone();
    // Uploads refuse no name: every failure fails the upload.
    let _ = run_workers(&job.inner, &job.id, &job.cancel, queued, move || {
        worker(pool.clone())
    })
    .await?;
    if add_manifest(&job.inner, &job.id, &record).await? {
        // Its files go like any other, then the package is finalized.
        drop(job);
        return Box::pin(run(inner_again, id, cancel_again, progress_slot)).await;
    }
    tracing::info!(upload_id = %job.id, package_id = %job.remote.package_id, "all files sent");
    if job.inner.config.auto_finalize {
        job.inner
            .store
            .set_state(&job.id, state::IDLE, None)
            .await?;
        crate::crash_point!("upload.package.finalizing");
        finalize_package(&job.inner, &job.remote, job.priority, &job.cancel).await?;
        crate::crash_point!("upload.package.finalized");
        // The manifest is in the package: its copy here is no longer needed.
        let _ = tokio::fs::remove_dir_all(manifest_root(&job.inner, &job.id)).await;
        Ok((state::COMPLETE, None))
    } else {
        Ok((state::IDLE, None))
    }
}

/// The folder an upload's manifest (`ascmhl/`) is written into before it is sent.
fn manifest_root(inner: &Inner, id: &str) -> PathBuf {
    inner.config.work_dir.join("manifests").join(id)
}

/// When the upload asks for a manifest and its files are all sent: writes an ASC MHL
/// generation of them (from the hashes computed while they were sent) and adds its two files
/// to the upload, once. `true` when files were added, to be sent before the package is
/// finalized. Files added to an idle upload after the manifest went are not in it.
async fn add_manifest(inner: &Inner, id: &str, record: &TransferRecord) -> Result<bool, JobError> {
    let spec: UploadRequest = serde_json::from_value(record.spec.clone())
        .map_err(|e| JobError::Failed(format!("the upload's stored request: {e}")))?;
    let (Some(Manifest::Ascmhl), Some(format)) = (spec.manifest(), inner.config.hash) else {
        return Ok(false);
    };
    let root = manifest_root(inner, id);
    let dir = root.join(crate::mhl::FOLDER);
    let files = inner.store.files(id).await?;
    let prefix = dir.display().to_string();
    if files.iter().any(|f| f.local_path.starts_with(&prefix)) {
        return Ok(false);
    }
    let package_path = |f: &FileRecord| {
        if f.path.is_empty() {
            f.name.clone()
        } else {
            format!("{}/{}", f.path, f.name)
        }
    };
    let mut records = Vec::new();
    let mut dirs = Vec::new();
    for f in &files {
        if f.state != file_state::COMPLETE {
            continue;
        }
        if f.kind == "directory" {
            dirs.push(package_path(f));
            continue;
        }
        let Some((name, digest)) = f.hash.as_deref().and_then(|h| h.split_once(':')) else {
            continue;
        };
        if name != format.name() {
            continue;
        }
        records.push(crate::mhl::FileRecord {
            path: package_path(f),
            size: f.size,
            modified: f.last_modified,
            hashes: vec![crate::mhl::FileHash {
                format,
                digest: digest.to_owned(),
                action: Some("original".into()),
            }],
        });
    }
    let list = crate::mhl::HashList::build(
        records,
        &dirs,
        format,
        "transfer",
        crate::mhl::DEFAULT_IGNORE
            .iter()
            .map(|p| p.to_string())
            .collect(),
    );
    let name = remote_of(record)
        .map(|r| r.package_name)
        .unwrap_or_else(|_| "package".into());
    let generation =
        tokio::task::spawn_blocking(move || crate::mhl::write_new_history(&root, &name, &list))
            .await
            .map_err(|e| JobError::Failed(format!("writing the manifest: {e}")))?
            .map_err(|e| JobError::Failed(format!("writing the manifest: {e}")))?;
    let first = inner.store.file_outlines(id).await?.len() as u32;
    let planned = plan_files(&[dir], spec.chunk_size(), first)
        .map_err(|e| JobError::Failed(format!("adding the manifest: {e}")))?;
    tracing::info!(upload_id = %id, %generation, "ASC MHL manifest added");
    inner.store.insert_files(id, planned).await?;
    Ok(true)
}

/// Finalizes the package: it is delivered, and its links go active.
pub(super) async fn finalize_package(
    inner: &Inner,
    remote: &Remote,
    priority: i64,
    cancel: &CancellationToken,
) -> Result<(), JobError> {
    retry_cloud(
        inner,
        cancel,
        priority,
        "package finalize",
        InFlight::Finish,
        || {
            inner
                .client
                .finalize_package(&remote.package_id, &remote.access_token)
        },
    )
    .await
    .map_err(|e| match e {
        None => JobError::Stopped,
        Some(e) => JobError::Failed(e.to_string()),
    })?;
    tracing::info!(package_id = %remote.package_id, "package finalized");
    Ok(())
}

pub(super) fn remote_of(record: &TransferRecord) -> Result<Remote, TransferError> {
    record
        .remote
        .clone()
        .and_then(|r| serde_json::from_value(r).ok())
        .ok_or_else(|| TransferError::Conflict(format!("upload {} has no package", record.id)))
}

async fn worker(job: Arc<Job>) -> Result<(), JobError> {
    loop {
        if job.cancel.is_cancelled() || job.inner.draining.is_cancelled() {
            return Err(JobError::Stopped);
        }
        let mut part = match job.queue.next(&[&job.cancel, &job.inner.draining]).await {
            Next::Item(part) => part,
            Next::Done => return Ok(()),
            Next::Stopped => return Err(JobError::Stopped),
        };
        let file = &job.files[part.file];
        if file.failed.load(Ordering::Relaxed)
            || part.generation != file.generation.load(Ordering::Acquire)
        {
            continue;
        }
        let sent = match active(&job, part.file).await {
            Ok(active) => send_part(&job, &active, &part)
                .await
                .map(|etag| (active, etag)),
            Err(e) => Err(e),
        };
        match sent {
            Ok((active, etag)) => {
                job.inner.moving();
                crate::crash_point!("upload.part.sent");
                let commit = job.commits.read().await;
                if part.generation != file.generation.load(Ordering::Acquire) {
                    continue; // The file changed meanwhile: this part is of its old bytes.
                }
                job.inner
                    .store
                    .add_chunk(
                        &job.id,
                        ChunkRecord {
                            file_idx: part.file as u32,
                            chunk_idx: part.index,
                            size: part.len,
                            etag: Some(etag.clone()),
                        },
                    )
                    .await?;
                crate::crash_point!("upload.part.committed");
                active
                    .etags
                    .lock()
                    .expect("etags lock is never poisoned")
                    .insert(part.index, etag);
                let last = file.remaining.fetch_sub(1, Ordering::AcqRel) == 1;
                drop(commit);
                if last {
                    finish_file(&job, part.file).await?;
                }
            }
            Err(PartError::Changed(reason)) => restart_file(&job, part.file, reason).await?,
            Err(PartError::Retry(e)) => {
                // The part waits in the queue, not in this worker: the others go on meanwhile.
                let retry = job.inner.config.retry;
                let since = *part
                    .failing_since
                    .get_or_insert_with(std::time::Instant::now);
                if retry.gives_up(since) {
                    let reason = format!(
                        "{}gave up after {}s of failures: {e}",
                        super::GAVE_UP,
                        since.elapsed().as_secs()
                    );
                    fail_file(&job, part.file, reason).await?;
                    continue;
                }
                part.attempt += 1;
                job.inner.metrics.retry();
                let delay = job.inner.retry_delay(part.attempt, &e);
                tracing::debug!(upload_id = %job.id, part = part.index + 1, attempt = part.attempt, error = %e, "part failed; retrying");
                job.inner
                    .wait_noted(format!("part {}: {e}; trying again", part.index + 1), delay);
                job.queue.retry_at(part, std::time::Instant::now() + delay);
            }
            Err(PartError::Stopped) => return Err(JobError::Stopped),
            Err(PartError::File(reason)) => fail_file(&job, part.file, reason).await?,
            Err(PartError::Store(reason)) => return Err(JobError::Store(reason)),
        }
    }
}

/// Forgets a finished (or failed) file: its names and part URLs are not needed any more.
fn retire(job: &Job, i: usize) {
    job.active
        .lock()
        .expect("active lock is never poisoned")
        .remove(&i);
}

async fn fail_file(job: &Job, i: usize, reason: String) -> Result<(), JobError> {
    let file = &job.files[i];
    if !file.failed.swap(true, Ordering::AcqRel) {
        let path = job
            .inner
            .store
            .file(&job.id, i as u32)
            .await?
            .map(|f| f.local_path)
            .unwrap_or_default();
        tracing::warn!(upload_id = %job.id, path = %path, error = %reason, "file failed");
        job.inner
            .store
            .set_file_state(&job.id, i as u32, file_state::ERROR, Some(reason))
            .await?;
    }
    retire(job, i);
    Ok(())
}

fn cloud_step<T>(r: Result<T, Option<CloudError>>) -> Result<T, PartError> {
    r.map_err(|e| match e {
        None => PartError::Stopped,
        Some(e) => PartError::File(e.to_string()),
    })
}

/// The file `i`, set up once: read from the database (with the ETags of its parts sent before
/// a restart), declared to the cloud and its multipart upload opened (ids committed).
async fn active(job: &Job, i: usize) -> Result<Arc<Active>, PartError> {
    let cell = job
        .active
        .lock()
        .expect("active lock is never poisoned")
        .entry(i)
        .or_default()
        .clone();
    cell.get_or_try_init(|| start_file(job, i))
        .await
        .map(Arc::clone)
}

async fn start_file(job: &Job, i: usize) -> Result<Arc<Active>, PartError> {
    let inner = &job.inner;
    let database = |e: crate::store::StoreError| PartError::Store(e.to_string());
    let record = inner
        .store
        .file(&job.id, i as u32)
        .await
        .map_err(database)?
        .ok_or_else(|| PartError::File("the file's record is gone".into()))?;
    let etags = inner
        .store
        .file_chunks(&job.id, i as u32)
        .await
        .map_err(database)?
        .into_iter()
        .filter_map(|c| c.etag.map(|etag| (c.chunk_idx, etag)))
        .collect();
    let mut remote: FileRemote = record
        .extra
        .as_deref()
        .and_then(|e| serde_json::from_str(e).ok())
        .unwrap_or_default();
    let directory = record.kind == "directory";
    let save = |remote: &FileRemote| {
        let extra = serde_json::to_string(remote).expect("file remote serializes");
        inner.store.set_file_extra(&job.id, i as u32, extra)
    };
    if remote.file_id.is_none() && !directory {
        // Not declared yet: what is declared is what is on disk now (a file written to since it
        // was planned is planned anew once it has settled).
        let path = &record.local_path;
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| PartError::File(format!("{path} cannot be read any more: {e}")))?;
        if meta.len() != record.size
            || (remote.mtime_ns.is_some() && nanos(meta.modified().ok()) != remote.mtime_ns)
        {
            return Err(PartError::Changed(format!(
                "{path} changed since the upload was asked for"
            )));
        }
    }
    if remote.file_id.is_none() {
        let req = AddFile {
            kind: if directory {
                FileKind::Directory
            } else {
                FileKind::File
            },
            name: record.name.clone(),
            path: record.path.clone(),
            last_modified: record.last_modified,
            size: record.size,
            chunk_size: record.chunk_size,
        };
        let adopted = if remote.declaring {
            // Declared before a crash, its answer lost: the entry may be there already.
            adopt(job, &req).await?
        } else {
            // Recorded before the declaration goes: a restart knows to look for the entry.
            remote.declaring = true;
            save(&remote).await.map_err(database)?;
            crate::crash_point!("upload.file.declaring");
            None
        };
        let (file_id, blueprint) = match adopted {
            Some(found) => found,
            None => declare(job, &req).await?,
        };
        crate::crash_point!("upload.file.declared");
        remote.file_id = Some(file_id);
        remote.declaring = false;
        // Committed before the multipart upload is opened: declared twice, a file would be
        // left unfinished in the package, and the package could not be finalized.
        if !directory && blueprint.is_none() {
            return Err(PartError::File(
                "adding a file to the package: the service answered no create_blueprint for a file with bytes".into(),
            ));
        }
        remote.create_blueprint = blueprint.filter(|_| !directory);
        save(&remote).await.map_err(database)?;
        let _ = inner
            .store
            .set_file_state(&job.id, i as u32, file_state::TRANSFERRING, None)
            .await;
    }
    if let (Some(blueprint), None) = (&remote.create_blueprint, &remote.upload_id) {
        let upload_id = cloud_step(
            retry_cloud(
                inner,
                &job.cancel,
                job.priority,
                "starting a multipart upload",
                InFlight::Finish,
                || inner.client.create_multipart(blueprint),
            )
            .await,
        )?;
        crate::crash_point!("upload.multipart.opened");
        remote.upload_id = Some(upload_id);
        remote.create_blueprint = None;
        save(&remote).await.map_err(database)?;
    }
    // A file of one part feeds the whole hash as its part is read (no second read): its read
    // stays behind what is sent. A larger file's first part feeds its start; the read may run
    // a part ahead of what is sent (at the end it has less left to catch up).
    let feed = inner
        .config
        .hash
        .filter(|_| !directory)
        .map(|format| super::digest::Feed::new(format, record.size));
    let digest = feed.as_ref().map(|feed| {
        let progress = job.progress.clone();
        super::digest::read_behind(
            feed.clone(),
            super::digest::Source::Path(record.local_path.clone()),
            if record.size > record.chunk_size {
                record.chunk_size
            } else {
                0
            },
            move || progress.file_done(i).unwrap_or(0),
        )
    });
    Ok(Arc::new(Active {
        record,
        remote,
        urls: tokio::sync::Mutex::new(BTreeMap::new()),
        etags: Mutex::new(etags),
        md5s: Mutex::default(),
        feed,
        digest: Mutex::new(digest),
    }))
}

/// Declares a file to the package. A declaration whose answer is lost (a connection cut
/// after the service took the request, a timeout, a 5xx) is never simply sent again: the
/// package's entries are listed first, and the file's own adopted if it is there.
async fn declare(job: &Job, req: &AddFile) -> Result<(String, Option<Blueprint>), PartError> {
    let inner = &job.inner;
    let mut attempt = 0;
    let since = std::time::Instant::now();
    loop {
        // Like every step that creates something on the service, it goes even if the job is
        // stopped meanwhile: its answer must not be lost.
        let permit = inner.budget.acquire(job.priority).await;
        let added = inner
            .client
            .add_file(&job.remote.package_id, &job.remote.access_token, req)
            .await;
        drop(permit);
        let error = match added {
            Ok(added) => {
                inner.moving();
                return Ok((added.file.id, added.create_blueprint));
            }
            Err(e) => e,
        };
        inner.metrics.cloud_error(&error);
        if !error.is_transient() {
            return Err(PartError::File(error.to_string()));
        }
        if inner.config.retry.gives_up(since) {
            return Err(PartError::File(format!(
                "{}gave up after {}s of failures: {error}",
                super::GAVE_UP,
                since.elapsed().as_secs()
            )));
        }
        if job.cancel.is_cancelled() {
            return Err(PartError::Stopped);
        }
        attempt += 1;
        inner.metrics.retry();
        let delay = inner.config.retry.delay(attempt, error.retry_after());
        tracing::debug!(upload_id = %job.id, file = %req.name, attempt, error = %error, "declaring a file failed; looking for it before trying again");
        inner.wait_noted(format!("declaring {}: {error}", req.name), delay);
        tokio::select! {
            _ = job.cancel.cancelled() => return Err(PartError::Stopped),
            _ = inner.draining.cancelled() => return Err(PartError::Stopped),
            _ = tokio::time::sleep(delay) => {}
        }
        if let Some(found) = adopt(job, req).await? {
            return Ok(found);
        }
    }
}

/// The package's entry for a file whose declaration may have been taken without its answer
/// reaching us: same kind, name, folder and size, and not the entry of another file of this
/// upload. An entry of a file is adopted with the create blueprint the listing gives the
/// sender; without one (a service that does not give it) it cannot be opened, so the file is
/// declared again.
async fn adopt(job: &Job, req: &AddFile) -> Result<Option<(String, Option<Blueprint>)>, PartError> {
    let inner = &job.inner;
    let listing = cloud_step(
        retry_cloud(
            inner,
            &job.cancel,
            job.priority,
            "listing the package's files",
            InFlight::Interrupt,
            || {
                inner
                    .client
                    .package_files(&job.remote.package_id, &job.remote.access_token)
            },
        )
        .await,
    )?;
    let mut claimed = job.claimed.lock().await;
    if claimed.is_none() {
        let ids = inner
            .store
            .files(&job.id)
            .await
            .map_err(|e| PartError::Store(e.to_string()))?
            .into_iter()
            .filter_map(|f| {
                f.extra
                    .and_then(|e| serde_json::from_str::<FileRemote>(&e).ok())
                    .and_then(|r| r.file_id)
            })
            .collect();
        *claimed = Some(ids);
    }
    let claimed = claimed.as_mut().expect("claimed ids were read");
    let folder = |p: &str| p.replace('\\', "/").trim_matches('/').to_owned();
    let directory = req.kind == FileKind::Directory;
    let found = listing.into_iter().find(|f| {
        f.kind == req.kind
            && f.name == req.name
            && folder(&f.path) == folder(&req.path)
            && (directory || f.size == req.size)
            && !claimed.contains(&f.id)
            && (directory || f.create_blueprint.is_some())
    });
    Ok(found.map(|f| {
        tracing::info!(upload_id = %job.id, file = %req.name, file_id = %f.id, "the file was declared before its answer was lost: adopted");
        claimed.insert(f.id.clone());
        (f.id, f.create_blueprint)
    }))
}

/// The signed URL of a part, from a cached batch; asked for again when `refresh`.
async fn part_url(
    job: &Job,
    file: &Active,
    part: &Part,
    refresh: bool,
) -> Result<Blueprint, PartError> {
    let mut urls = file.urls.lock().await;
    if refresh {
        urls.clear();
    }
    if let Some(url) = urls.remove(&part.index) {
        return Ok(url);
    }
    let (Some(file_id), Some(upload_id)) = (&file.remote.file_id, &file.remote.upload_id) else {
        return Err(PartError::File("the file has no multipart upload".into()));
    };
    let total = PackageSpec::part_count(file.record.size, file.record.chunk_size);
    let count = PART_URL_BATCH.min(total - u64::from(part.index));
    let inner = &job.inner;
    let batch = cloud_step(
        retry_cloud(
            inner,
            &job.cancel,
            job.priority,
            "asking for part URLs",
            InFlight::Interrupt,
            || {
                inner.client.part_urls(
                    &job.remote.package_id,
                    file_id,
                    &job.remote.access_token,
                    upload_id,
                    u64::from(part.index),
                    count,
                )
            },
        )
        .await,
    )?;
    let mut batch = batch.into_iter();
    let first = batch
        .next()
        .ok_or_else(|| PartError::File("the service gave no URL for a part".into()))?;
    for (n, url) in batch.enumerate() {
        urls.insert(part.index + 1 + n as u32, url);
    }
    Ok(first)
}

/// Whether the file on disk is still what the upload was created from.
async fn unchanged(file: &Active) -> Result<(), PartError> {
    let path = &file.record.local_path;
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| PartError::File(format!("{path} cannot be read any more: {e}")))?;
    let expected = file.remote.mtime_ns;
    if meta.len() != file.record.size
        || (expected.is_some() && nanos(meta.modified().ok()) != expected)
    {
        return Err(PartError::Changed(format!(
            "{path} changed while it was being sent"
        )));
    }
    Ok(())
}

/// How long a changed file must go unwritten before it is sent again.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Sends a file that changed again from its start, once it has settled (nothing written to it
/// for [`SETTLE`]), in the same package: its parts are planned anew (a new generation; parts
/// of the old one still in flight are dropped), its committed parts forgotten, its size the
/// one it has now (the file's finalize states it, whatever was declared).
async fn restart_file(job: &Job, i: usize, reason: String) -> Result<(), JobError> {
    let file = &job.files[i];
    if file.restarting.swap(true, Ordering::AcqRel) {
        return Ok(()); // Another worker is at it.
    }
    let restarted = restart(job, i, &reason).await;
    file.restarting.store(false, Ordering::Release);
    match restarted {
        Ok(()) => Ok(()),
        Err(PartError::Stopped) => Err(JobError::Stopped),
        Err(PartError::Store(e)) => Err(JobError::Store(e)),
        Err(PartError::File(e) | PartError::Changed(e)) => fail_file(job, i, e).await,
        Err(PartError::Retry(e)) => fail_file(job, i, e.to_string()).await,
    }
}

async fn restart(job: &Job, i: usize, reason: &str) -> Result<(), PartError> {
    let inner = &job.inner;
    let database = |e: crate::store::StoreError| PartError::Store(e.to_string());
    let record = inner
        .store
        .file(&job.id, i as u32)
        .await
        .map_err(database)?
        .ok_or_else(|| PartError::File("the file's record is gone".into()))?;
    let path = record.local_path.clone();
    tracing::info!(upload_id = %job.id, path = %path, "{reason}; it is sent again once it has settled");
    let meta = loop {
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| PartError::File(format!("{path} cannot be read any more: {e}")))?;
        let age = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .unwrap_or(SETTLE);
        if age >= SETTLE {
            break meta;
        }
        let wait = (SETTLE - age).min(std::time::Duration::from_millis(500));
        inner.wait_noted(
            format!("{path} is being written; it is sent again once it has settled"),
            wait,
        );
        tokio::select! {
            _ = job.cancel.cancelled() => return Err(PartError::Stopped),
            _ = inner.draining.cancelled() => return Err(PartError::Stopped),
            _ = tokio::time::sleep(wait) => {}
        }
    };
    let mut remote: FileRemote = record
        .extra
        .as_deref()
        .and_then(|e| serde_json::from_str(e).ok())
        .unwrap_or_default();
    // Declared or not, it goes whole with its new size: the file's finalize states its size
    // (spec §3 step 5).
    let size = meta.len();
    let chunk_size = PackageSpec::default().chunk_size_for(size, record.chunk_size);
    remote.mtime_ns = nanos(meta.modified().ok());
    let extra = serde_json::to_string(&remote).expect("file remote serializes");
    // The old generation's parts in flight are dropped from here on (see `worker`).
    let _restarting = job.commits.write().await;
    let generation = job.files[i].generation.fetch_add(1, Ordering::AcqRel) + 1;
    inner
        .store
        .clear_chunks(&job.id, i as u32)
        .await
        .map_err(database)?;
    inner
        .store
        .set_file_size(&job.id, i as u32, size, chunk_size, extra)
        .await
        .map_err(database)?;
    retire(job, i);
    let parts = Part::plan(i, size, chunk_size, &[], generation);
    job.files[i]
        .remaining
        .store(parts.len() as u32, Ordering::Release);
    if let Some(done) = job.progress.file_done(i) {
        job.progress.undo(i, done);
    }
    let now = std::time::Instant::now();
    for part in parts {
        job.queue.retry_at(part, now);
    }
    inner.moving();
    Ok(())
}

/// Sends one part, retrying transient failures; returns its ETag.
async fn send_part(job: &Job, file: &Active, part: &Part) -> Result<String, PartError> {
    let mut refreshes = 0u32;
    let mut refresh = false;
    loop {
        let url = part_url(job, file, part, std::mem::take(&mut refresh)).await?;
        unchanged(file).await?;
        let permit = tokio::select! {
            _ = job.cancel.cancelled() => return Err(PartError::Stopped),
            p = job.inner.budget.acquire(job.priority) => p,
        };
        let (body, streamed, md5) = part_body(job, file, part).await?;
        let known = file
            .md5s
            .lock()
            .expect("md5s lock is never poisoned")
            .get(&part.index)
            .copied();
        let sent = tokio::select! {
            _ = job.cancel.cancelled() => {
                job.progress.undo(part.file, streamed.load(Ordering::Relaxed));
                return Err(PartError::Stopped);
            }
            r = job.inner.client.put_part(&url, body, part.len, known) => r,
        };
        // Whether the storage got what was read: S3 and the hub answer a part's MD5 as its
        // ETag (not with SSE-KMS, whose ETags are opaque: those are taken as they come). The
        // reads were handed to the hasher as they went: waiting for it may block.
        let sent = match sent {
            Ok(etag) => {
                let digest = tokio::task::spawn_blocking(move || {
                    md5.lock().expect("md5 lock is never poisoned").finalize()
                })
                .await
                .map_err(|e| PartError::File(format!("hashing part {}: {e}", part.index + 1)))?;
                Ok((etag, digest))
            }
            Err(e) => Err(e),
        };
        let sent = sent.and_then(|(etag, md5)| match etag_md5(&etag) {
            Some(stored) if stored != md5 => {
                file.md5s
                    .lock()
                    .expect("md5s lock is never poisoned")
                    .insert(part.index, md5);
                Err(CloudError::Transient {
                    status: None,
                    message: format!(
                        "part {} of {}: the storage received other bytes than were sent \
                             (ETag {}, sent MD5 {}); sending it again with Content-MD5",
                        part.index + 1,
                        file.record.local_path,
                        hex::encode(stored),
                        hex::encode(md5)
                    ),
                    retry_after: None,
                })
            }
            _ => Ok(etag),
        });
        drop(permit);
        if let Err(e) = &sent {
            job.inner.metrics.cloud_error(e);
            // Counted as they went; the part goes again, so they are taken back.
            job.progress
                .undo(part.file, streamed.load(Ordering::Relaxed));
        }
        match sent {
            Ok(etag) => {
                // Read while the file kept its size and time: what was sent is what was there.
                unchanged(file).await?;
                return Ok(etag);
            }
            Err(CloudError::Expired { .. }) if refreshes < 3 => {
                refreshes += 1;
                refresh = true;
            }
            Err(e) if e.is_transient() => return Err(PartError::Retry(e)),
            Err(e) => return Err(PartError::File(e.to_string())),
        }
    }
}

/// The part's bytes, streamed from disk through a small buffer, each buffer counted in the
/// transfer's progress and the metrics as it goes (not once the whole part is accepted: a
/// 100 MiB part at 50 Mbit/s would show nothing moving for 16 s); with the count so far, to
/// take back if the part fails.
///
/// Each buffer is one positional read straight into the memory handed to the HTTP client (no
/// second copy through `tokio::fs`'s own buffer), hashed in the same blocking task, so MD5 (the
/// agent's largest cost on an upload) never runs on the runtime's threads.
async fn part_body(job: &Job, file: &Active, part: &Part) -> Result<PartBody, PartError> {
    let path = file.record.local_path.clone();
    let disk = |e: String| {
        job.inner.metrics.error(crate::metrics::ErrorKind::Disk);
        PartError::File(e)
    };
    let opened = path.clone();
    let source = tokio::task::spawn_blocking(move || std::fs::File::open(opened))
        .await
        .map_err(|e| disk(format!("{path} cannot be read: {e}")))?
        .map_err(|e| disk(format!("{path} cannot be read: {e}")))?;
    let md5 = Arc::new(Mutex::new(crate::md5s::Md5::new()));
    let reads = read_hashed(
        Arc::new(source),
        path,
        part.start,
        part.len,
        md5.clone(),
        file.feed.clone(),
    );
    let stream = super::rate::throttle_upload(&job.inner, reads, &job.cancel);
    let streamed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (count, progress, inner, index) = (
        streamed.clone(),
        job.progress.clone(),
        job.inner.clone(),
        part.file,
    );
    let stream = futures_util::StreamExt::inspect(stream, move |read| {
        if let Ok(bytes) = read {
            let n = bytes.len() as u64;
            count.fetch_add(n, Ordering::Relaxed);
            progress.add(index, n);
            inner.metrics.uploaded(n);
        }
    });
    Ok((reqwest::Body::wrap_stream(stream), streamed, md5))
}

/// The buffers part bodies are read into, given back once sent: a fresh megabyte per read
/// costs page faults and zeroing (the allocator hands large blocks back to the kernel).
fn read_buffers() -> &'static crate::direct::BufferPool {
    static POOL: std::sync::OnceLock<crate::direct::BufferPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| crate::direct::BufferPool::new(READ_BUFFER, 32))
}

/// `len` bytes of `file` from `start`, in reads of [`READ_BUFFER`] bytes one after the other
/// on the blocking pool, each added to `md5` and offered to the whole file's hash `feed` there;
/// a file that ends early is an error.
fn read_hashed(
    file: Arc<std::fs::File>,
    path: String,
    start: u64,
    len: u64,
    md5: Arc<Mutex<crate::md5s::Md5>>,
    feed: Option<Arc<super::digest::Feed>>,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    futures_util::stream::try_unfold(0u64, move |done| {
        let (file, path, md5, feed) = (file.clone(), path.clone(), md5.clone(), feed.clone());
        async move {
            if done >= len {
                return Ok(None);
            }
            let want = (len - done).min(READ_BUFFER as u64) as usize;
            let read = tokio::task::spawn_blocking(move || {
                let at = start + done;
                let read = crate::direct::read_at(&file, at, want, read_buffers())?;
                if read.len() < want {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "{path} ended at byte {} while it was sent",
                            at + read.len() as u64
                        ),
                    ));
                }
                // Hashed later, with the other parts' reads (see `md5s`): wanted only once the
                // storage has answered. One read waits at most (no part's bytes pile up).
                let mut md5 = md5.lock().expect("md5 lock is never poisoned");
                md5.wait();
                md5.update_later(read.clone());
                drop(md5);
                if let Some(feed) = feed {
                    feed.offer(at, &read);
                    feed.wake();
                }
                Ok(read)
            })
            .await
            .map_err(std::io::Error::other)??;
            let next = done + read.len() as u64;
            Ok(Some((read, next)))
        }
    })
}

/// A part's body, the bytes it has streamed so far, and their MD5, computed as they go.
type PartBody = (
    reqwest::Body,
    Arc<std::sync::atomic::AtomicU64>,
    Arc<Mutex<crate::md5s::Md5>>,
);

/// The MD5 an ETag stands for, when it is one (32 hex digits, quoted or not; a multipart or
/// opaque ETag is not).
fn etag_md5(etag: &str) -> Option<[u8; 16]> {
    let hex = etag.trim().trim_matches('"');
    let mut out = [0u8; 16];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
}

/// Finalizes a file whose parts are all sent.
async fn finish_file(job: &Job, i: usize) -> Result<(), JobError> {
    let file = match active(job, i).await {
        Ok(file) => file,
        Err(PartError::Stopped) => return Err(JobError::Stopped),
        Err(PartError::File(e) | PartError::Changed(e)) => return fail_file(job, i, e).await,
        Err(PartError::Retry(e)) => return fail_file(job, i, e.to_string()).await,
        Err(PartError::Store(e)) => return Err(JobError::Store(e)),
    };
    if job.files[i].directory {
        job.inner
            .store
            .complete_files(&job.id, vec![(i as u32, None)])
            .await?;
        retire(job, i);
        return Ok(());
    }
    let (Some(file_id), Some(upload_id)) = (&file.remote.file_id, &file.remote.upload_id) else {
        return fail_file(job, i, "the file has no multipart upload".into()).await;
    };
    let digest = file
        .digest
        .lock()
        .expect("digest lock is never poisoned")
        .take();
    let hash = match digest {
        Some(digest) => match digest.await {
            Ok(Ok(hash)) => Some(hash),
            Ok(Err(e)) => return fail_file(job, i, e).await,
            Err(e) => return fail_file(job, i, format!("hashing the file: {e}")).await,
        },
        None => None,
    };
    let chunk_extras: Vec<ChunkExtra> = file
        .etags
        .lock()
        .expect("etags lock is never poisoned")
        .iter()
        .map(|(index, etag)| ChunkExtra {
            part_number: index + 1,
            etag: etag.clone(),
        })
        .collect();
    let req = FinalizeFile {
        size: file.record.size,
        chunk_size: file.record.chunk_size,
        file_extras: FileExtras {
            upload_id: upload_id.clone(),
        },
        chunk_extras,
    };
    let inner = &job.inner;
    let done = retry_cloud(
        inner,
        &job.cancel,
        job.priority,
        "file finalize",
        InFlight::Finish,
        || {
            inner.client.finalize_file(
                &job.remote.package_id,
                file_id,
                &job.remote.access_token,
                &req,
            )
        },
    )
    .await;
    match done {
        Ok(()) => {
            crate::crash_point!("upload.file.finalized");
            inner
                .store
                .complete_files(&job.id, vec![(i as u32, hash)])
                .await?;
            retire(job, i);
            Ok(())
        }
        Err(None) => Err(JobError::Stopped),
        Err(Some(e)) => fail_file(job, i, e.to_string()).await,
    }
}
