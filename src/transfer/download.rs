//! Downloading a package from a link: look the link up, plan the files, then fetch every file
//! as parallel ranged chunks written in place into a preallocated part file, each chunk
//! committed to the store once written and synced, so a restart fetches only what was in
//! flight.
//!
//! # State machine, and what a crash at any instruction leaves
//! Durable facts (store) are in brackets; side effects on disk are plain. Each named crash
//! point (`crate::crash::POINTS`) sits where a crash is tested.
//! 1. Plan: [remote] (`download.planned`), then [files, `pending`], each with its local path
//!    made unique (`name (2).ext`). A crash before the files are recorded plans again.
//! 2. Per chunk: part file `NAME.TAG.part` created (TAG = transfer and file: no two writers ever
//!    share one, and it fits 255 bytes whatever NAME) and preallocated → bytes written
//!    (`download.chunk.written`) → the file's data synced, once for every chunk written by
//!    then (`download.chunks.synced`) → [those chunks] (`download.chunk.committed`): a chunk
//!    is never recorded before its bytes are durable, so a power cut loses no recorded chunk.
//!    The file's last chunk is synced and recorded by step 3. A crash before the commit
//!    fetches the chunk again; the write is positional, so repeating it is harmless.
//! 3. Per file, once every chunk is written (apart from the connection that wrote the last
//!    one, which goes on fetching; a pass ends only once every such file is finished,
//!    [`worker`]): mode, time and owner set, data synced (`download.chunks.synced`) → [its
//!    chunks not recorded yet] (`download.chunk.committed`, `download.file.synced`) → renamed
//!    to NAME (`download.file.renamed`). Then, for every
//!    file renamed by then at once (group commit): their folders synced, each once
//!    (`download.files.synced`) → [files `complete`] (`download.file.complete`).
//! 4. A restart looks at each open file that has committed chunks ([`run`]): its part file
//!    there → go on; no part file but NAME a plain file of the planned size with every chunk
//!    committed → the rename happened: recorded `complete`, nothing written; neither → its
//!    chunks are forgotten and it is fetched again. A part file is only ever created for a
//!    file with chunks left to fetch, so finishing a file never creates data.
//! 5. A store write that fails (a full disk) stops the run with `JobError::Store`; the engine
//!    shows why the transfer waits and runs it again once the store writes: every step above
//!    may be repeated.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::digest::Tap;
use super::progress::Progress;
use super::queue::{Next, WorkQueue};
use super::{
    EngineConfig, InFlight, Inner, JobError, TransferError, file_state, new_record, outcome,
    retry_cloud, run_workers, with_retries,
};
use crate::cloud::CloudError;
use crate::cloud::dto::{DownloadUrl, FileKind, LinkUrl, PackageFile, Secret};
use crate::direct::{BufferPool, Writer};
use crate::files::{self, Destination, PartFile};
use crate::store::{ChunkRecord, FileRecord, Store, TransferKind, TransferRecord};

/// Bytes gathered from the network before one positional write.
const WRITE_BUFFER: usize = 1024 * 1024;
/// Files after the one a worker starts among which it asks for one download URL ahead.
const URL_LOOKAHEAD: usize = 64;
/// Times a chunk may find its URL expired in a row before that counts as a failure.
const URL_REFRESHES: u32 = 3;

/// `POST /api/v1/downloads` (spec §5), plus what automations add: modes, and packages from a
/// team inbox (which have a token but no link).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadRequest {
    #[serde(default)]
    pub url: String,
    pub dst_folder: PathBuf,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub file_ids: Vec<String>,
    #[serde(default)]
    pub chunk_size: Option<u64>,
    #[serde(default)]
    pub priority: i64,
    #[serde(default = "yes")]
    pub create_package_folder: bool,
    #[serde(default = "yes")]
    pub bypass_package_quarantine: bool,
    #[serde(default)]
    pub user_id: Option<u32>,
    #[serde(default)]
    pub group_id: Option<u32>,
    /// Mode of the files created (octal 0644 is 420).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<u32>,
    /// Mode of the folders created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder_mode: Option<u32>,
    /// A package known by id and token (from a team inbox, or a link an automation looked up
    /// already) instead of by link: the download looks nothing up. With `url` also given, the
    /// link is looked up only to renew an expired package token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageSource>,
    /// Fail when the package has no ASC MHL manifest (`ascmhl/` at its root). With one, every
    /// file is checked against it whether or not this is set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_manifest: bool,
}

/// A package to download without a link.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSource {
    pub package_id: String,
    pub package_name: String,
    pub package_token: Secret,
}

fn yes() -> bool {
    true
}

impl std::fmt::Debug for DownloadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadRequest")
            .field("url", &public_url(&self.url))
            .field("dst_folder", &self.dst_folder)
            .field("file_ids", &self.file_ids)
            .finish_non_exhaustive()
    }
}

/// What the cloud told us about the package, kept so a restart does not ask again.
#[derive(Clone, Serialize, Deserialize)]
struct Remote {
    package_id: String,
    package_name: String,
    package_token: Secret,
}

/// A link URL without its secret, for showing.
pub fn public_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "<not a URL>".into(),
    }
}

/// Checks a request and makes the transfer row for it.
pub(super) fn record(
    req: DownloadRequest,
    config: &EngineConfig,
) -> Result<TransferRecord, TransferError> {
    if req.package.is_none() {
        LinkUrl::parse(&req.url).map_err(TransferError::Invalid)?;
    }
    if !req.dst_folder.is_absolute() {
        return Err(TransferError::Invalid(format!(
            "dst_folder {} must be an absolute path",
            req.dst_folder.display()
        )));
    }
    if req.chunk_size == Some(0) {
        return Err(TransferError::Invalid(
            "chunk_size must be more than 0 bytes".into(),
        ));
    }
    let _ = config;
    let priority = req.priority;
    let spec = serde_json::to_value(&req).map_err(|e| TransferError::Invalid(e.to_string()))?;
    Ok(new_record(TransferKind::Download, priority, spec))
}

/// One file being downloaded.
struct FileJob {
    record: FileRecord,
    /// Path under the destination root.
    rel: PathBuf,
    url: tokio::sync::Mutex<Option<DownloadUrl>>,
    /// Open while the file is written, closed once it is finished: a package of thousands of
    /// files holds descriptors for the few in flight only.
    part: tokio::sync::Mutex<Option<PartFile>>,
    remaining: AtomicU32,
    /// Chunks written and not recorded yet: a chunk is recorded only once the file's data is
    /// synced ([`commit_chunks`]), so that no crash, a power cut included, leaves a chunk
    /// recorded whose bytes are not on the disk.
    unsynced: Mutex<Vec<ChunkRecord>>,
    /// Taken by whoever syncs the file and records the chunks written by then.
    syncing: tokio::sync::Mutex<()>,
    failed: AtomicBool,
    /// Recorded complete in the store (by this run).
    recorded: AtomicBool,
    /// Chunks written out of order, waiting for those before them; and the length of the
    /// file's start that is written in full, which the file's hash reads up to.
    written: Mutex<(BTreeSet<u32>, u32)>,
    prefix: Arc<AtomicU64>,
    /// The file's hash when hashes are on: fed by the range that writes at its position, and
    /// by `digest`, the read of what other ranges wrote ([`super::digest`]).
    feed: Option<Arc<super::digest::Feed>>,
    digest: Mutex<Option<super::digest::Digest>>,
}

impl FileJob {
    /// Chunk `index` is written: the written start grows over it and those it joins.
    fn written(&self, index: u32) {
        let mut written = self.written.lock().expect("written lock is never poisoned");
        let (pending, next) = &mut *written;
        pending.insert(index);
        while pending.remove(next) {
            *next += 1;
        }
        let end = (u64::from(*next) * self.record.chunk_size.max(1)).min(self.record.size);
        self.prefix.store(end, Ordering::Release);
        if let Some(feed) = &self.feed {
            feed.wake();
        }
    }
}

struct Chunk {
    file: usize,
    index: u32,
    start: u64,
    len: u64,
    /// Tries that failed for a transient reason, and since when it fails.
    attempt: u32,
    failing_since: Option<std::time::Instant>,
}

struct Job {
    inner: Arc<Inner>,
    id: String,
    spec: DownloadRequest,
    priority: i64,
    cancel: CancellationToken,
    progress: Arc<Progress>,
    dest: Destination,
    /// This run made `dst_folder`: it gets the package's owner at the end too.
    created_destination: bool,
    remote: RwLock<Remote>,
    files: Vec<FileJob>,
    queue: WorkQueue<Chunk>,
    /// The ranges' write buffers, reused from range to range.
    buffers: BufferPool,
    /// Files renamed into place, not yet recorded complete ([`record_complete`]), with the
    /// hashes of their bytes.
    renamed: Mutex<Vec<(usize, PartFile, Option<String>)>>,
    /// Taken by whoever records a batch of renamed files.
    recording: tokio::sync::Mutex<()>,
    /// Files whose ranges are all written, being finished ([`finish_file`]) while the
    /// connections fetch the next ones: a file's syncs and its record wait on the disk, not on
    /// a connection.
    finishing: tokio::sync::Mutex<tokio::task::JoinSet<Result<(), JobError>>>,
    /// Bounds the files being finished at once (their syncs wait in the blocking pool).
    finish_slots: Arc<tokio::sync::Semaphore>,
}

pub(super) async fn run(
    inner: Arc<Inner>,
    id: &str,
    cancel: CancellationToken,
    progress_slot: Arc<Mutex<Option<Arc<Progress>>>>,
) -> Result<(&'static str, Option<String>), JobError> {
    run_pass(inner, id, cancel, progress_slot, false).await
}

/// One pass over what is left of a download. Files that do not match the package's ASC MHL
/// manifest are fetched again once (`refetched` then), and fail if they still do not.
async fn run_pass(
    inner: Arc<Inner>,
    id: &str,
    cancel: CancellationToken,
    progress_slot: Arc<Mutex<Option<Arc<Progress>>>>,
    refetched: bool,
) -> Result<(&'static str, Option<String>), JobError> {
    let (inner_again, cancel_again, slot_again) =
        (inner.clone(), cancel.clone(), progress_slot.clone());
    let record = inner
        .store
        .transfer(id)
        .await?
        .ok_or_else(|| JobError::Failed("the download's record is gone".into()))?;
    let spec: DownloadRequest = serde_json::from_value(record.spec.clone())
        .map_err(|e| JobError::Failed(format!("the stored request is unreadable: {e}")))?;
    let mut files = inner.store.files(id).await?;
    let remote = match record
        .remote
        .clone()
        .and_then(|r| serde_json::from_value::<Remote>(r).ok())
    {
        Some(remote) if !files.is_empty() => remote,
        _ => {
            let (remote, planned) = plan(&inner, id, &spec, &cancel).await?;
            inner
                .store
                .set_remote(
                    id,
                    serde_json::to_value(&remote).expect("remote serializes"),
                )
                .await?;
            crate::crash_point!("download.planned");
            inner.store.insert_files(id, planned.clone()).await?;
            files = planned;
            remote
        }
    };
    let (dest, created_destination) = open_destination(&spec)?;
    let root = package_root(&spec, &remote);
    let rel_of = |f: &FileRecord| {
        PathBuf::from(&f.local_path)
            .strip_prefix(&spec.dst_folder)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| root.join(&f.name))
    };
    let mut chunks = inner.store.chunks(id).await?;
    // What was committed is only worth what is on disk: a file whose part file is gone (deleted
    // by hand, or renamed into place before a crash) is checked before anything is planned.
    let mut started = vec![false; files.len()];
    for c in &chunks {
        started[c.file_idx as usize] = true;
    }
    for (i, f) in files.iter_mut().enumerate() {
        let open = f.state == file_state::PENDING || f.state == file_state::TRANSFERRING;
        if !open || f.kind == "directory" || !started[i] {
            continue;
        }
        let committed: u64 = chunks
            .iter()
            .filter(|c| c.file_idx as usize == i)
            .map(|c| c.size)
            .sum();
        let probed = dest
            .probe(&rel_of(f), &part_tag(id, f.idx), f.size)
            .map_err(|e| JobError::Failed(e.to_string()))?;
        match probed {
            files::OnDisk::Part => {}
            // Renamed into place, then stopped before it was recorded: it is complete. Its
            // part file is never made again (that would write zeros over the file).
            files::OnDisk::Final if committed == f.size => {
                inner.store.complete_files(id, vec![(f.idx, None)]).await?;
                f.state = file_state::COMPLETE.into();
            }
            _ => {
                tracing::info!(download_id = %id, file = %f.name, "the file's part is gone; fetching it again");
                inner.store.clear_chunks(id, f.idx).await?;
                chunks.retain(|c| c.file_idx as usize != i);
            }
        }
    }
    let mut done_per_file = vec![0u64; files.len()];
    let mut done_chunks: HashSet<(u32, u32)> = HashSet::new();
    for c in &chunks {
        done_per_file[c.file_idx as usize] += c.size;
        done_chunks.insert((c.file_idx, c.chunk_idx));
    }
    for (i, f) in files.iter().enumerate() {
        if f.state == file_state::COMPLETE {
            done_per_file[i] = f.size;
        }
    }
    let progress = Arc::new(Progress::new(&done_per_file));
    *progress_slot
        .lock()
        .expect("progress slot lock is never poisoned") = Some(progress.clone());

    let mut queue = VecDeque::new();
    let mut jobs = Vec::with_capacity(files.len());
    for (i, f) in files.into_iter().enumerate() {
        let rel = rel_of(&f);
        let mut remaining = 0;
        if f.kind != "directory"
            && (f.state == file_state::PENDING || f.state == file_state::TRANSFERRING)
        {
            let chunk_size = f.chunk_size.max(1);
            let count = f.size.div_ceil(chunk_size).max(1) as u32;
            for index in 0..count {
                if done_chunks.contains(&(i as u32, index)) {
                    continue;
                }
                let start = u64::from(index) * chunk_size;
                queue.push_back(Chunk {
                    file: i,
                    index,
                    start,
                    len: chunk_size.min(f.size - start.min(f.size)),
                    attempt: 0,
                    failing_since: None,
                });
                remaining += 1;
            }
        }
        let feed = (f.kind != "directory")
            .then_some(inner.config.hash)
            .flatten()
            .map(|format| super::digest::Feed::new(format, f.size));
        jobs.push(FileJob {
            record: f,
            rel,
            url: tokio::sync::Mutex::new(None),
            part: tokio::sync::Mutex::new(None),
            remaining: AtomicU32::new(remaining),
            unsynced: Mutex::new(Vec::new()),
            syncing: tokio::sync::Mutex::new(()),
            failed: AtomicBool::new(false),
            recorded: AtomicBool::new(false),
            written: Mutex::new((BTreeSet::new(), 0)),
            prefix: Arc::new(AtomicU64::new(0)),
            feed,
            digest: Mutex::new(None),
        });
        let file = jobs.last().expect("just pushed");
        for c in done_chunks.iter().filter(|(f, _)| *f == i as u32) {
            file.written(c.1);
        }
    }
    let finishing = inner.config.max_connections.max(1);
    let job = Arc::new(Job {
        priority: record.priority,
        inner,
        id: id.to_owned(),
        spec,
        cancel,
        progress,
        dest,
        created_destination,
        remote: RwLock::new(remote),
        files: jobs,
        queue: WorkQueue::new(queue),
        // Room for what arrives after a batch is full, so a buffer never grows; one kept per
        // connection the download may have.
        buffers: BufferPool::new(2 * WRITE_BUFFER, 64),
        renamed: Mutex::new(Vec::new()),
        recording: tokio::sync::Mutex::new(()),
        finishing: tokio::sync::Mutex::new(tokio::task::JoinSet::new()),
        // As many files finished at once as connections: a file's last chunks are recorded by
        // its finish, so a crash fetches again at most a chunk per connection being fetched and
        // a file's last chunk per file being finished.
        finish_slots: Arc::new(tokio::sync::Semaphore::new(finishing)),
    });

    // Folders first (empty ones included), then files whose chunks were all committed before a
    // restart but that were not finished yet.
    for i in 0..job.files.len() {
        let f = &job.files[i];
        let open =
            f.record.state == file_state::PENDING || f.record.state == file_state::TRANSFERRING;
        if !open {
            continue;
        }
        if f.record.kind == "directory" {
            job.dest
                .create_dirs(&f.rel)
                .map_err(|e| JobError::Failed(e.to_string()))?;
            job.inner
                .store
                .complete_files(&job.id, vec![(i as u32, None)])
                .await?;
        } else if f.remaining.load(Ordering::Relaxed) == 0 {
            finish_file(&job, i).await?;
        }
    }

    let queued = job.queue.len();
    let pool = job.clone();
    let mut ended = run_workers(&job.inner, &job.id, &job.cancel, queued, move || {
        worker(pool.clone())
    })
    .await;
    if ended.is_ok() {
        let altered = check_manifest(&job).await?;
        if !altered.is_empty() {
            if !refetched {
                for (i, reason) in &altered {
                    tracing::warn!(download_id = %job.id, file = %job.files[*i].record.name, reason, "the file does not match the package's ASC MHL manifest; fetching it again");
                    // Recorded to fetch again before the altered copy goes: a crash in between
                    // fetches it at the restart (the new copy is renamed over the old), never
                    // leaves a file recorded complete that is not there.
                    let f = &job.files[*i];
                    job.inner.store.clear_chunks(&job.id, f.record.idx).await?;
                    job.inner
                        .store
                        .set_file_state(&job.id, f.record.idx, file_state::PENDING, None)
                        .await?;
                    job.dest
                        .remove_file(&f.rel, &part_tag(&job.id, f.record.idx), false)
                        .map_err(|e| JobError::Failed(e.to_string()))?;
                }
                drop(job);
                return Box::pin(run_pass(inner_again, id, cancel_again, slot_again, true)).await;
            }
            for (i, reason) in altered {
                fail_file(&job, i, format!("{reason}, also when fetched again: the copy on the service is not what was sealed")).await?;
            }
            ended = outcome(&job.inner, &job.id).await;
        }
    }
    if !matches!(ended, Err(JobError::Stopped)) {
        let owned = job.clone();
        tokio::task::spawn_blocking(move || give_folders(&owned))
            .await
            .map_err(|e| JobError::Failed(e.to_string()))??;
    }
    let note = ended?;
    Ok((super::state::COMPLETE, note))
}

/// Checks every file that arrived against the package's ASC MHL manifest (`ascmhl/` at its
/// root), when it has one: `(file, what differs)` for those whose hash is not the one sealed.
/// The hash computed while the file arrived is compared when the manifest has the same
/// format; otherwise the file is read once more in the manifest's format. A package without a
/// manifest fails when the download requires one.
async fn check_manifest(job: &Job) -> Result<Vec<(usize, String)>, JobError> {
    let records = job.inner.store.files(&job.id).await?;
    let chain = records.iter().find(|f| {
        f.state == file_state::COMPLETE
            && f.path == crate::mhl::FOLDER
            && f.name == crate::mhl::CHAIN
    });
    let Some(chain) = chain else {
        if job.spec.require_manifest {
            return Err(JobError::Failed(format!(
                "the package has no ASC MHL manifest ({}/{} at its root), and this download requires one (require_manifest)",
                crate::mhl::FOLDER,
                crate::mhl::CHAIN
            )));
        }
        return Ok(Vec::new());
    };
    let Some(root) = Path::new(&chain.local_path).parent().and_then(Path::parent) else {
        return Ok(Vec::new());
    };
    let root = root.to_path_buf();
    let loaded = root.clone();
    let history = tokio::task::spawn_blocking(move || crate::mhl::History::load(&loaded))
        .await
        .map_err(|e| JobError::Failed(e.to_string()))?
        .map_err(|e| {
            JobError::Failed(format!(
                "the package's ASC MHL manifest cannot be read: {e}"
            ))
        })?;
    let mut altered = Vec::new();
    for (i, f) in records.iter().enumerate() {
        if f.state != file_state::COMPLETE || f.kind == "directory" || f.path == crate::mhl::FOLDER
        {
            continue;
        }
        let rel = if f.path.is_empty() {
            f.name.clone()
        } else {
            format!("{}/{}", f.path, f.name)
        };
        let Some(sealed) = history.original(&rel) else {
            tracing::info!(download_id = %job.id, file = %rel, "not in the package's ASC MHL manifest");
            continue;
        };
        let (format, expected) = (sealed.format, sealed.digest.clone());
        let ours = f
            .hash
            .as_deref()
            .and_then(|h| h.split_once(':'))
            .filter(|(name, _)| *name == format.name())
            .map(|(_, digest)| digest.to_owned());
        let actual = match ours {
            Some(digest) => digest,
            None => {
                let path = PathBuf::from(&f.local_path);
                tokio::task::spawn_blocking(move || crate::mhl::hash_file(&path, format))
                    .await
                    .map_err(|e| JobError::Failed(e.to_string()))?
                    .map_err(|e| JobError::Failed(format!("{}: {e}", f.local_path)))?
            }
        };
        if actual != expected {
            altered.push((
                i,
                format!("ASC MHL manifest: {format} expected {expected}, got {actual}"),
            ));
        }
    }
    Ok(altered)
}

fn package_root(spec: &DownloadRequest, remote: &Remote) -> PathBuf {
    if spec.create_package_folder {
        let name =
            files::clean_name(&remote.package_name).unwrap_or_else(|| remote.package_id.clone());
        PathBuf::from(name)
    } else {
        PathBuf::new()
    }
}

/// Opens (creating it if need be) the destination; tells whether it was created.
fn open_destination(spec: &DownloadRequest) -> Result<(Destination, bool), JobError> {
    let existed = spec.dst_folder.exists();
    let dest = Destination::open(&spec.dst_folder).map_err(|e| JobError::Failed(e.to_string()))?;
    Ok((dest, !existed))
}

/// Gives the package's folders their mode and owner, once the download has ended: until then
/// the agent keeps writing into them, which it could not do in folders given away (not without
/// more than CAP_CHOWN). The folders are those on the way to the package's files (and its
/// empty folders), worked out from the files so that folders made before a restart or a pause
/// are not forgotten, and the destination itself when this run created it. Deepest first: a
/// folder given away may no longer let the agent reach what is inside.
fn give_folders(job: &Job) -> Result<(), JobError> {
    let (uid, gid, mode) = (job.spec.user_id, job.spec.group_id, job.spec.folder_mode);
    if uid.is_none() && gid.is_none() && mode.is_none() {
        return Ok(());
    }
    let mut folders = std::collections::BTreeSet::new();
    for f in &job.files {
        if f.record.kind == "directory" {
            folders.insert(f.rel.as_path());
        }
        folders.extend(f.rel.ancestors().skip(1));
    }
    if !job.created_destination {
        folders.remove(Path::new(""));
    }
    let mut folders: Vec<&Path> = folders.into_iter().collect();
    folders.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for rel in folders {
        match job.dest.give_folder(rel, uid, gid, mode) {
            // A file's folder that a hostile name kept from being made is no folder to give.
            Ok(_) | Err(files::FilesError::Symlink { .. } | files::FilesError::Refused { .. }) => {}
            Err(e) => return Err(JobError::Failed(e.to_string())),
        }
    }
    Ok(())
}

/// Looks the link up and decides what goes where.
async fn plan(
    inner: &Arc<Inner>,
    id: &str,
    spec: &DownloadRequest,
    cancel: &CancellationToken,
) -> Result<(Remote, Vec<FileRecord>), JobError> {
    let remote = match &spec.package {
        // From a team inbox: the package and a token are known, there is no link.
        Some(p) => Remote {
            package_id: p.package_id.clone(),
            package_name: p.package_name.clone(),
            package_token: p.package_token.clone(),
        },
        None => {
            let link = LinkUrl::parse(&spec.url).map_err(JobError::Failed)?;
            let info = with_retries(inner, cancel, spec.priority, "link lookup", || {
                inner
                    .client
                    .link(&link.link_id, &link.secret, spec.password.as_ref())
            })
            .await?;
            Remote {
                package_id: info.package_id,
                package_name: info.name,
                package_token: info.package_token,
            }
        }
    };
    let info = &remote;
    let listing = with_retries(
        inner,
        cancel,
        spec.priority,
        "listing the package's files",
        || {
            inner
                .client
                .package_files(&info.package_id, &info.package_token)
        },
    )
    .await?;
    let wanted: HashSet<&str> = spec.file_ids.iter().map(String::as_str).collect();
    if let Some(missing) = spec
        .file_ids
        .iter()
        .find(|w| !listing.iter().any(|f| &f.id == *w))
    {
        return Err(JobError::Failed(format!(
            "file id {missing} is not in package {}",
            info.package_id
        )));
    }
    if !spec.bypass_package_quarantine
        && let Some(infected) = listing
            .iter()
            .find(|f| f.virus_detected && (wanted.is_empty() || wanted.contains(f.id.as_str())))
    {
        return Err(JobError::Failed(format!(
            "{:?} is quarantined (a virus was detected); set bypass_package_quarantine to download the other files",
            infected.name
        )));
    }
    let root = package_root(spec, &remote);
    let chunk_size = spec
        .chunk_size
        .unwrap_or(inner.config.download_chunk_size)
        .max(1);
    let mut planned = Vec::new();
    for f in &listing {
        let selected = if wanted.is_empty() {
            matches!(f.kind, FileKind::File | FileKind::Directory)
        } else {
            wanted.contains(f.id.as_str())
        };
        if !selected {
            continue;
        }
        planned.push(plan_file(planned.len() as u32, f, &root, spec, chunk_size));
    }
    unique_local_paths(&mut planned);
    for _ in planned.iter().filter(|f| {
        f.error
            .as_deref()
            .is_some_and(|e| e.starts_with(super::REFUSED))
    }) {
        inner.metrics.error(crate::metrics::ErrorKind::Refused);
    }
    tracing::info!(download_id = %id, package_id = %info.package_id, files = planned.len(), "download planned");
    Ok((remote, planned))
}

/// One writer per local path: entries of a package whose cleaned paths collide (the same name
/// twice, names that differ only in what cleaning removed, long names cut to the same 255
/// bytes, a file where a folder of the package is) keep the first one's name, in listing
/// order; the others become `name (2).ext`, `name (3).ext`… (within 255 bytes).
fn unique_local_paths(planned: &mut [FileRecord]) {
    let placed = |f: &FileRecord| f.state == file_state::PENDING;
    let mut folders: HashSet<PathBuf> = HashSet::new();
    for f in planned.iter().filter(|f| placed(f)) {
        let path = PathBuf::from(&f.local_path);
        if f.kind == "directory" {
            folders.insert(path.clone());
        }
        folders.extend(path.ancestors().skip(1).map(Path::to_path_buf));
    }
    let mut taken: HashSet<PathBuf> = HashSet::new();
    for f in planned
        .iter_mut()
        .filter(|f| f.kind != "directory" && placed(f))
    {
        let path = PathBuf::from(&f.local_path);
        if !folders.contains(&path) && taken.insert(path.clone()) {
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let free = (2..)
            .map(|n| path.with_file_name(files::numbered_name(&name, n)))
            .find(|p| !folders.contains(p) && !taken.contains(p))
            .expect("some number is free");
        tracing::info!(file = %f.name, local_path = %free.display(), "a name taken by another entry of the package: numbered");
        taken.insert(free.clone());
        f.local_path = free.display().to_string();
    }
}

fn plan_file(
    idx: u32,
    f: &PackageFile,
    root: &Path,
    spec: &DownloadRequest,
    chunk_size: u64,
) -> FileRecord {
    let directory = f.kind == FileKind::Directory;
    // A folder entry names the folder itself: its path plus its name.
    let placed = files::package_relative_path(&f.path, &f.name);
    let (local_path, state, error) = match placed {
        Ok(rel) => (
            spec.dst_folder.join(root).join(rel),
            file_state::PENDING,
            None,
        ),
        Err(e) => (
            spec.dst_folder.clone(),
            file_state::ERROR,
            Some(format!("{}{e}", super::REFUSED)),
        ),
    };
    let (state, error) = if f.virus_detected && error.is_none() {
        (
            file_state::SKIPPED,
            Some("quarantined: a virus was detected; skipped".to_owned()),
        )
    } else {
        (state, error)
    };
    FileRecord {
        idx,
        remote_id: Some(f.id.clone()),
        kind: if directory {
            "directory".into()
        } else {
            "file".into()
        },
        name: f.name.clone(),
        path: f.path.clone(),
        local_path: local_path.display().to_string(),
        size: if directory { 0 } else { f.size },
        chunk_size,
        last_modified: f.last_modified,
        state: state.into(),
        error,
        extra: None,
        hash: None,
    }
}

/// A connection: fetches ranges until none is left, then waits for the files it handed over
/// to be finished (on every way out: a paused download's files are finished before it can be
/// resumed, never twice at once).
async fn worker(job: Arc<Job>) -> Result<(), JobError> {
    let fetched = fetch_ranges(&job).await;
    let finished = finished(&job).await;
    fetched.and(finished)
}

/// Waits for every file being finished; the first error of theirs.
async fn finished(job: &Job) -> Result<(), JobError> {
    let mut finishing = job.finishing.lock().await;
    let mut first = Ok(());
    while let Some(ended) = finishing.join_next().await {
        keep_first_error(&mut first, ended);
    }
    first
}

type Finished = Result<Result<(), JobError>, tokio::task::JoinError>;

fn keep_first_error(first: &mut Result<(), JobError>, ended: Finished) {
    if first.is_ok() {
        *first = ended
            .map_err(|e| JobError::Failed(format!("finishing a file: {e}")))
            .and_then(|r| r);
    }
}

/// Hands a file whose ranges are all written over to be finished, and goes on; an error of a
/// file finished by then comes back here.
async fn finish_later(job: &Arc<Job>, i: usize) -> Result<(), JobError> {
    let slot = job
        .finish_slots
        .clone()
        .acquire_owned()
        .await
        .expect("the finish slots are never closed");
    let owner = job.clone();
    let mut finishing = job.finishing.lock().await;
    let mut first = Ok(());
    while let Some(ended) = finishing.try_join_next() {
        keep_first_error(&mut first, ended);
    }
    let finish = async move {
        let _slot = slot;
        finish_file(&owner, i).await
    };
    finishing.spawn(
        super::TRANSFER
            .scope(job.id.clone(), finish)
            .in_current_span(),
    );
    first
}

async fn fetch_ranges(job: &Arc<Job>) -> Result<(), JobError> {
    loop {
        if job.cancel.is_cancelled() || job.inner.draining.is_cancelled() {
            return Err(JobError::Stopped);
        }
        let mut chunk = match job.queue.next(&[&job.cancel, &job.inner.draining]).await {
            Next::Item(chunk) => chunk,
            Next::Done => return Ok(()),
            Next::Stopped => return Err(JobError::Stopped),
        };
        let file = &job.files[chunk.file];
        if file.failed.load(Ordering::Relaxed) {
            continue;
        }
        let fetched = if chunk.index == 0 {
            tokio::join!(fetch_chunk(job, &chunk), prefetch_url(job, chunk.file)).0
        } else {
            fetch_chunk(job, &chunk).await
        };
        match fetched {
            Ok(part) => {
                job.inner.moving();
                file.written(chunk.index);
                start_digest(job, chunk.file).await;
                crate::crash_point!("download.chunk.written");
                file.unsynced
                    .lock()
                    .expect("the unsynced list's lock is never poisoned")
                    .push(ChunkRecord {
                        file_idx: chunk.file as u32,
                        chunk_idx: chunk.index,
                        size: chunk.len,
                        etag: None,
                    });
                if file.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    // The file's last chunk: recorded by the file's finish, after its sync (a
                    // file of one chunk is synced once).
                    drop(part);
                    finish_later(job, chunk.file).await?;
                } else {
                    let sync = move || part.sync().map_err(|e| part.write_error(e));
                    commit_chunks(job, chunk.file, sync, false).await?;
                }
            }
            Err(ChunkError::Retry(e)) => {
                // The chunk waits in the queue, not in this worker: the others go on meanwhile.
                let retry = job.inner.config.retry;
                let since = *chunk
                    .failing_since
                    .get_or_insert_with(std::time::Instant::now);
                if retry.gives_up(since) {
                    let reason = format!(
                        "{}gave up after {}s of failures: {e}",
                        super::GAVE_UP,
                        since.elapsed().as_secs()
                    );
                    fail_file(job, chunk.file, reason).await?;
                    continue;
                }
                chunk.attempt += 1;
                job.inner.metrics.retry();
                let delay = job.inner.retry_delay(chunk.attempt, &e);
                tracing::debug!(download_id = %job.id, chunk = chunk.index, attempt = chunk.attempt, error = %e, "chunk failed; retrying");
                job.inner
                    .wait_noted(format!("{}: {e}; trying again", file.record.name), delay);
                job.queue.retry_at(chunk, std::time::Instant::now() + delay);
            }
            Err(ChunkError::Stopped) => return Err(JobError::Stopped),
            Err(ChunkError::File(reason)) => fail_file(job, chunk.file, reason).await?,
        }
    }
}

enum ChunkError {
    Stopped,
    /// A transient failure: the chunk goes again after a backoff.
    Retry(CloudError),
    /// This file cannot be downloaded; the others go on.
    File(String),
}

async fn fail_file(job: &Job, i: usize, reason: String) -> Result<(), JobError> {
    let file = &job.files[i];
    if !file.failed.swap(true, Ordering::AcqRel) {
        tracing::warn!(download_id = %job.id, file = %file.record.name, error = %reason, "file failed");
        job.inner
            .store
            .set_file_state(&job.id, i as u32, file_state::ERROR, Some(reason))
            .await?;
    }
    Ok(())
}

/// Dates, chowns, syncs and renames a file whose chunks are all written, then records it
/// complete. Each step may be repeated after a crash: the part file is opened, never created,
/// so a file renamed before a crash is found complete at the restart ([`run`]), not replaced.
async fn finish_file(job: &Job, i: usize) -> Result<(), JobError> {
    let file = &job.files[i];
    let part = match part_file(job, i, false).await {
        Ok(part) => part,
        Err(reason) => return fail_file(job, i, reason).await,
    };
    // Every chunk is written: nothing opens the file again.
    *file.part.lock().await = None;
    file.prefix.store(file.record.size, Ordering::Release);
    let digest = match &file.feed {
        Some(feed) => {
            let running = file
                .digest
                .lock()
                .expect("digest lock is never poisoned")
                .take();
            let joined = |r: Result<Result<String, String>, tokio::task::JoinError>| {
                r.map_err(|e| format!("hashing the file: {e}"))?
            };
            // Hashed by the ranges as they wrote and by the read behind them; or, written in
            // full before a restart, read now.
            let answer = match running {
                Some(reading) => joined(reading.await),
                None => match feed.answer() {
                    Some(hash) => Ok(hash),
                    None => joined(spawn_digest(file, feed, &part).await),
                },
            };
            match answer {
                Ok(hash) => Some(hash),
                Err(e) => return fail_file(job, i, e).await,
            }
        }
        None => None,
    };
    let mtime = file.record.last_modified.map(std::time::SystemTime::from);
    let (uid, gid, mode) = (job.spec.user_id, job.spec.group_id, job.spec.file_mode);
    let sealed = part.clone();
    let seal = move || {
        // Mode and time while the agent still owns the file, then the owner.
        if let Some(mode) = mode {
            sealed.set_mode(mode)?;
        }
        sealed.seal(mtime, uid, gid)
    };
    // The seal's sync makes the last chunks durable: they are recorded before the rename, so a
    // file found renamed at a restart has every chunk recorded.
    if !commit_chunks(job, i, seal, true).await? {
        return Ok(());
    }
    crate::crash_point!("download.file.synced");
    let renamed = part.clone();
    let finished = tokio::task::spawn_blocking(move || renamed.rename())
        .await
        .map_err(|e| JobError::Failed(e.to_string()))?;
    match finished {
        Ok(_) => {
            crate::crash_point!("download.file.renamed");
            job.renamed
                .lock()
                .expect("the renamed list's lock is never poisoned")
                .push((i, part, digest));
            record_complete(job, i).await
        }
        Err(e) => {
            job.inner.metrics.files_error(&e);
            fail_file(job, i, e.to_string()).await
        }
    }
}

/// Makes the file's chunks written by now durable with `sync` and records them (group commit:
/// whoever takes the turn first syncs once for every chunk written by then and records them
/// in one store call; the others find theirs recorded). `always`: sync even with no chunk to
/// record (a file's finish, whose sync seals it). Returns whether the file is still good: a
/// sync that fails fails the file, its chunks unrecorded.
async fn commit_chunks(
    job: &Job,
    i: usize,
    sync: impl FnOnce() -> Result<(), files::FilesError> + Send + 'static,
    always: bool,
) -> Result<bool, JobError> {
    let file = &job.files[i];
    let _turn = file.syncing.lock().await;
    // Taken before the sync: a chunk is listed once written, so the sync covers every one.
    let batch = std::mem::take(
        &mut *file
            .unsynced
            .lock()
            .expect("the unsynced list's lock is never poisoned"),
    );
    if batch.is_empty() && !always {
        return Ok(true);
    }
    let synced = tokio::task::spawn_blocking(sync)
        .await
        .map_err(|e| JobError::Failed(e.to_string()))?;
    if let Err(e) = synced {
        job.inner.metrics.files_error(&e);
        fail_file(job, i, e.to_string()).await?;
        return Ok(false);
    }
    crate::crash_point!("download.chunks.synced");
    if !batch.is_empty() {
        job.inner.store.add_chunks(&job.id, batch).await?;
        crate::crash_point!("download.chunk.committed");
    }
    Ok(true)
}

/// The read of the file's bytes that its ranges wrote but could not hash themselves (they
/// wrote ahead of the hash), behind its written start.
fn spawn_digest(
    file: &FileJob,
    feed: &Arc<super::digest::Feed>,
    part: &PartFile,
) -> super::digest::Digest {
    let prefix = file.prefix.clone();
    super::digest::read_behind(
        feed.clone(),
        super::digest::Source::Open {
            file: part.reader(),
            name: file.record.name.clone(),
        },
        0,
        move || prefix.load(Ordering::Acquire),
    )
}

/// Starts reading the file for its hash once its written start holds bytes that its ranges
/// could not hash as they wrote them.
async fn start_digest(job: &Job, i: usize) {
    let file = &job.files[i];
    let Some(feed) = &file.feed else {
        return;
    };
    let running = || {
        file.digest
            .lock()
            .expect("digest lock is never poisoned")
            .is_some()
    };
    if running() || feed.position() >= file.prefix.load(Ordering::Acquire) {
        return;
    }
    let Ok(part) = part_file(job, i, false).await else {
        return;
    };
    let mut slot = file.digest.lock().expect("digest lock is never poisoned");
    if slot.is_none() {
        *slot = Some(spawn_digest(file, feed, &part));
    }
}

/// Records renamed files complete, many at a time (group commit): whoever comes first takes
/// every file renamed by then, syncs each of their folders once (which makes the renames
/// durable: a file is recorded complete only once its data and its name are), and records
/// them all in one store call; the others find their file recorded. A crash in between finds
/// the renamed files at the restart ([`run`]).
async fn record_complete(job: &Job, i: usize) -> Result<(), JobError> {
    let _turn = job.recording.lock().await;
    let file = &job.files[i];
    if file.recorded.load(Ordering::Acquire) || file.failed.load(Ordering::Acquire) {
        return Ok(());
    }
    let batch = std::mem::take(
        &mut *job
            .renamed
            .lock()
            .expect("the renamed list's lock is never poisoned"),
    );
    let parts: Vec<PartFile> = batch.iter().map(|(_, part, _)| part.clone()).collect();
    let synced = tokio::task::spawn_blocking(move || files::sync_folders(&parts))
        .await
        .map_err(|e| JobError::Failed(e.to_string()))?;
    if let Err(e) = synced {
        job.inner.metrics.files_error(&e);
        for (j, _, _) in &batch {
            fail_file(job, *j, e.to_string()).await?;
        }
        return Ok(());
    }
    crate::crash_point!("download.files.synced");
    let done = batch
        .iter()
        .map(|(j, _, hash)| (*j as u32, hash.clone()))
        .collect();
    if let Err(e) = job.inner.store.complete_files(&job.id, done).await {
        // Whoever comes next tries again (the job stops on this error; a restart finds the
        // renamed files anyway).
        job.renamed
            .lock()
            .expect("the renamed list's lock is never poisoned")
            .extend(batch);
        return Err(e.into());
    }
    crate::crash_point!("download.file.complete");
    for (j, _, _) in &batch {
        job.files[*j].recorded.store(true, Ordering::Release);
        tracing::debug!(download_id = %job.id, file = %job.files[*j].record.name, "file complete");
    }
    Ok(())
}

/// The tag of a file's part name: the transfer and the file, so that no two writers (two
/// downloads into one folder, two entries of a package) ever share a part file.
fn part_tag(id: &str, idx: u32) -> String {
    format!("{}-{idx}", id.get(..8).unwrap_or(id))
}

/// The file's part file, opened (with `create`, made along with its folders) at first use.
async fn part_file(job: &Job, i: usize, create: bool) -> Result<PartFile, String> {
    let file = &job.files[i];
    let mut slot = file.part.lock().await;
    if let Some(part) = slot.as_ref() {
        return Ok(part.clone());
    }
    let parent = file.rel.parent().map(Path::to_path_buf).unwrap_or_default();
    let counted = |e: files::FilesError| {
        job.inner.metrics.files_error(&e);
        e.to_string()
    };
    if create {
        job.dest.create_dirs(&parent).map_err(counted)?;
    }
    let tag = part_tag(&job.id, file.record.idx);
    // Direct I/O for a file of many ranges (written in parallel, large: no page-cache churn);
    // the page cache for a file of one range, which its sync follows at once: a direct write
    // waits for the disk, and on the project's machine 1,000 x 1 MiB downloaded in 2.50 s
    // direct and 1.72 s cached, 128 x 8 MiB in 2.03 s and 1.54 s (`scripts/bench.py`).
    let direct = file.record.size > file.record.chunk_size;
    let part = job
        .dest
        .part_file(&file.rel, &tag, file.record.size, create, direct)
        .map_err(counted)?;
    if file.record.state == file_state::PENDING {
        let _ = job
            .inner
            .store
            .set_file_state(&job.id, i as u32, file_state::TRANSFERRING, None)
            .await;
    }
    *slot = Some(part.clone());
    Ok(part)
}

/// The file's download URL, asked for once (or found asked ahead, [`prefetch_url`]) and again
/// when it expires.
async fn download_url(job: &Job, i: usize, refresh: bool) -> Result<DownloadUrl, ChunkError> {
    let mut cached = job.files[i].url.lock().await;
    if refresh {
        *cached = None;
    }
    if let Some(url) = cached.as_ref() {
        return Ok(url.clone());
    }
    let url = ask_url(job, i).await?;
    *cached = Some(url.clone());
    Ok(url)
}

/// Asks ahead for the download URL of the first file after `i` that has none and that nobody
/// is asking for: a worker that takes that file finds its URL waiting instead of making one
/// more round trip before its first byte. A failure is left to that worker to meet again.
async fn prefetch_url(job: &Job, i: usize) {
    for (idx, file) in job.files.iter().enumerate().skip(i + 1).take(URL_LOOKAHEAD) {
        let wanted = file.record.kind != "directory"
            && file.remaining.load(Ordering::Relaxed) > 0
            && !file.failed.load(Ordering::Relaxed);
        let Some(mut cached) = wanted.then(|| file.url.try_lock().ok()).flatten() else {
            continue;
        };
        if cached.is_some() {
            continue;
        }
        if let Ok(url) = ask_url(job, idx).await {
            *cached = Some(url);
        }
        return;
    }
}

/// Asks the cloud for file `i`'s download URL (looking the link up again if the package token
/// expired).
async fn ask_url(job: &Job, i: usize) -> Result<DownloadUrl, ChunkError> {
    let file_id = job.files[i].record.remote_id.clone().unwrap_or_default();
    let mut relooked = false;
    loop {
        let remote = job.remote.read().await.clone();
        let asked = retry_cloud(
            &job.inner,
            &job.cancel,
            job.priority,
            "asking for a download URL",
            InFlight::Interrupt,
            || {
                job.inner
                    .client
                    .download_url(&remote.package_id, &file_id, &remote.package_token)
            },
        )
        .await;
        match asked {
            Ok(url) => return Ok(url),
            Err(None) => return Err(ChunkError::Stopped),
            Err(Some(CloudError::Auth { .. })) if !relooked => {
                // The package token expired (a long pause, a restart days later): look the link
                // up again for a fresh one.
                relooked = true;
                refresh_token(job).await?;
            }
            Err(Some(e)) => {
                return Err(ChunkError::File(format!("asking for a download URL: {e}")));
            }
        }
    }
}

async fn refresh_token(job: &Job) -> Result<(), ChunkError> {
    if job.spec.package.is_some() && job.spec.url.is_empty() {
        return Err(ChunkError::File(
            "the package token has expired; the inbox automation fetches a new one on its next run"
                .into(),
        ));
    }
    let link = LinkUrl::parse(&job.spec.url).map_err(ChunkError::File)?;
    let info = with_retries(&job.inner, &job.cancel, job.priority, "link lookup", || {
        job.inner
            .client
            .link(&link.link_id, &link.secret, job.spec.password.as_ref())
    })
    .await
    .map_err(|e| match e {
        JobError::Stopped => ChunkError::Stopped,
        JobError::Failed(e) | JobError::Store(e) => ChunkError::File(e),
    })?;
    let mut remote = job.remote.write().await;
    remote.package_token = info.package_token;
    let _ = job
        .inner
        .store
        .set_remote(
            &job.id,
            serde_json::to_value(&*remote).expect("remote serializes"),
        )
        .await;
    Ok(())
}

/// Fetches one range into place, retrying transient failures.
/// Fetches a chunk into the file's part file; the part file, once the chunk is written.
async fn fetch_chunk(job: &Job, chunk: &Chunk) -> Result<PartFile, ChunkError> {
    let part = part_file(job, chunk.file, true)
        .await
        .map_err(ChunkError::File)?;
    if chunk.len == 0 {
        return Ok(part);
    }
    let mut refreshes = 0u32;
    let mut refresh = false;
    loop {
        let url = download_url(job, chunk.file, std::mem::take(&mut refresh)).await?;
        let permit = tokio::select! {
            _ = job.cancel.cancelled() => return Err(ChunkError::Stopped),
            p = job.inner.budget.acquire(job.priority) => p,
        };
        let result = fetch_range(job, chunk, &url, &part).await;
        drop(permit);
        count_error(&job.inner.metrics, &result);
        let error = match result {
            Ok(()) => return Ok(part),
            Err(FetchError::Stopped) => return Err(ChunkError::Stopped),
            Err(FetchError::Disk(e)) => return Err(ChunkError::File(e)),
            Err(FetchError::Cloud(e)) => e,
        };
        match error {
            CloudError::Expired { .. } if refreshes < URL_REFRESHES => {
                refreshes += 1;
                refresh = true;
            }
            e if e.is_transient() => return Err(ChunkError::Retry(e)),
            CloudError::Quarantined { .. } if job.spec.bypass_package_quarantine => {
                return Err(ChunkError::File("quarantined: a virus was detected".into()));
            }
            e => return Err(ChunkError::File(e.to_string())),
        }
    }
}

enum FetchError {
    Stopped,
    Cloud(CloudError),
    Disk(String),
}

/// Counts a failed fetch in the metrics, by kind.
fn count_error(metrics: &crate::metrics::Metrics, result: &Result<(), FetchError>) {
    match result {
        Err(FetchError::Cloud(e)) => metrics.cloud_error(e),
        Err(FetchError::Disk(_)) => metrics.error(crate::metrics::ErrorKind::Disk),
        Ok(()) | Err(FetchError::Stopped) => {}
    }
}

async fn fetch_range(
    job: &Job,
    chunk: &Chunk,
    url: &DownloadUrl,
    part: &PartFile,
) -> Result<(), FetchError> {
    let end = chunk.start + chunk.len - 1;
    let response = tokio::select! {
        _ = job.cancel.cancelled() => return Err(FetchError::Stopped),
        r = job.inner.client.get_range(url, Some((chunk.start, end))) => r.map_err(FetchError::Cloud)?,
    };
    let mut body = response.bytes_stream();
    let mut writer = part.range_writer(chunk.start, WRITE_BUFFER, job.buffers.take());
    let mut tap = Tap {
        feed: job.files[chunk.file].feed.clone(),
        at: chunk.start,
    };
    let mut received = 0u64;
    let outcome = loop {
        let next = tokio::select! {
            _ = job.cancel.cancelled() => break Err(FetchError::Stopped),
            n = body.next() => n,
        };
        match next {
            Some(Ok(bytes)) => {
                if received + bytes.len() as u64 > chunk.len {
                    break Err(FetchError::Cloud(CloudError::Protocol {
                        message: "storage sent more bytes than the range asked for".into(),
                    }));
                }
                super::rate::take_download(&job.inner, bytes.len(), &job.cancel).await;
                received += bytes.len() as u64;
                job.progress.add(chunk.file, bytes.len() as u64);
                job.inner.metrics.downloaded(bytes.len() as u64);
                writer.push(&bytes);
                if writer.is_full() {
                    (writer, tap) = flush(writer, tap, part).await?;
                }
            }
            Some(Err(e)) => {
                break Err(FetchError::Cloud(CloudError::Transient {
                    status: None,
                    message: format!("the download was cut: {e}"),
                    retry_after: None,
                }));
            }
            None if received == chunk.len => break Ok(()),
            None => {
                break Err(FetchError::Cloud(CloudError::Transient {
                    status: None,
                    message: format!("storage sent {received} of {} bytes", chunk.len),
                    retry_after: None,
                }));
            }
        }
    };
    if let Err(e) = outcome {
        job.progress.undo(chunk.file, received);
        return Err(e);
    }
    // The last write of the range also starts writeback of what went through the page cache,
    // so the file's final sync does not find it all still to write.
    let written = part.clone();
    let range = (chunk.start, chunk.len);
    tokio::task::spawn_blocking(move || {
        writer.keep_cached(tap.ahead());
        writer.finish(&mut |bytes| tap.written(bytes))?;
        written.start_writeback(range.0, range.1);
        Ok::<_, std::io::Error>(())
    })
    .await
    .map_err(|e| FetchError::Disk(e.to_string()))?
    .map_err(|e| FetchError::Disk(part.write_error(e).to_string()))
    .inspect_err(|_| job.progress.undo(chunk.file, received))
}

/// Writes what `writer` gathered off the runtime, showing it to the file's hash; gives both
/// back for more.
async fn flush(
    mut writer: Writer,
    mut tap: Tap,
    part: &PartFile,
) -> Result<(Writer, Tap), FetchError> {
    tokio::task::spawn_blocking(move || {
        writer.keep_cached(tap.ahead());
        writer
            .flush(&mut |bytes| tap.written(bytes))
            .map(|()| (writer, tap))
    })
    .await
    .map_err(|e| FetchError::Disk(e.to_string()))?
    .map_err(|e| FetchError::Disk(part.write_error(e).to_string()))
}

/// Deletes what a download wrote: finished files and `.part` files, never following links.
/// Deletes what a download wrote: with `finished_too`, every file (and the folders left
/// empty); without, only the `.part` files of the files it had not finished, so that a
/// forgotten download leaves no preallocated leftovers while what arrived stays.
pub(super) async fn remove_files(
    store: &Store,
    id: &str,
    finished_too: bool,
) -> Result<(), TransferError> {
    let Some(record) = store.transfer(id).await? else {
        return Ok(());
    };
    let spec: DownloadRequest =
        serde_json::from_value(record.spec).map_err(|e| TransferError::Invalid(e.to_string()))?;
    let files = store.files(id).await?;
    let root = spec.dst_folder.clone();
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || {
        let id = id.as_str();
        let Ok(dest) = Destination::open_existing(&root) else {
            return;
        };
        let mut folders = Vec::new();
        for f in &files {
            let Ok(rel) = Path::new(&f.local_path).strip_prefix(&root) else {
                continue;
            };
            if !finished_too {
                if f.kind != "directory" && f.state != file_state::COMPLETE {
                    let _ = dest.remove_file(rel, &part_tag(id, f.idx), true);
                }
                continue;
            }
            if f.kind == "directory" {
                folders.push(rel.to_path_buf());
            } else {
                let _ = dest.remove_file(rel, &part_tag(id, f.idx), false);
                if let Some(parent) = rel.parent() {
                    folders.push(parent.to_path_buf());
                }
            }
        }
        // Deepest first, and only folders left empty.
        folders.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        folders.dedup();
        for folder in folders {
            let mut current = Some(folder.as_path());
            while let Some(dir) = current.filter(|d| !d.as_os_str().is_empty()) {
                let _ = dest.remove_empty_dir(dir);
                current = dir.parent();
            }
        }
    })
    .await
    .map_err(|e| TransferError::Invalid(e.to_string()))?;
    Ok(())
}
