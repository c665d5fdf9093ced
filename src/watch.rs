//! Watched folders → "this file is settled": quiet (no event) for the settle period with the
//! same size and modification time as when last seen; or, when polling (network shares that send
//! no events), the same size and time in two scans a settle period apart. Files present at start
//! are reported too. The notify callback never blocks: events go through a bounded channel, and
//! when it overflows (or inotify itself does) the whole tree is scanned again instead of guessed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::files::is_ignored;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// Filesystem events (inotify).
    Events,
    /// A scan every `interval`.
    Poll { interval: Duration },
}

/// What to watch.
#[derive(Clone)]
pub struct WatchSpec {
    /// An absolute folder.
    pub root: PathBuf,
    pub recursive: bool,
    pub mode: WatchMode,
    /// The quiet period.
    pub settle: Duration,
    /// Whether a file (path relative to `root`) is wanted.
    pub filter: Arc<dyn Fn(&Path) -> bool + Send + Sync>,
}

/// A file that stopped changing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub path: PathBuf,
    pub size: u64,
    pub modified: SystemTime,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{path} is not a folder; create it or fix the rule's folder")]
    NotAFolder { path: PathBuf },
    #[error(
        "cannot watch {path}: the inotify watch limit is reached; raise it with `sysctl -w fs.inotify.max_user_watches=524288` (and a file in /etc/sysctl.d to keep it), or use mode = \"poll\""
    )]
    WatchLimit { path: PathBuf },
    #[error("cannot watch {path}: {message}")]
    Notify { path: PathBuf, message: String },
}

/// Events in flight between the notify thread and the watcher task.
const EVENT_QUEUE: usize = 8192;
/// How often candidates are looked at.
const TICK: Duration = Duration::from_millis(50);
/// When a folder that appeared is looked at a second time.
const NEW_FOLDER_LOOK: Duration = Duration::from_millis(500);
/// How often a tree is scanned again once inotify refused to watch some of its folders.
const LIMITED_RESCAN: Duration = Duration::from_secs(30);

type Stamp = (u64, SystemTime);

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    meta.is_file().then(|| {
        (
            meta.len(),
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        )
    })
}

/// Every wanted regular file under `from` (the root or a folder in it; symlinks and junk names
/// skipped).
fn scan(spec: &WatchSpec, from: &Path) -> Vec<(PathBuf, Stamp)> {
    let mut out = Vec::new();
    let mut stack = vec![from.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if is_ignored(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                if spec.recursive {
                    stack.push(path);
                }
            } else if kind.is_file()
                && wanted(spec, &path)
                && let Some(s) = stamp(&path)
            {
                out.push((path, s));
            }
        }
    }
    out
}

fn wanted(spec: &WatchSpec, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(&spec.root) else {
        return false;
    };
    if rel.as_os_str().is_empty() || (!spec.recursive && rel.components().count() > 1) {
        return false;
    }
    !rel.components()
        .any(|c| is_ignored(&c.as_os_str().to_string_lossy()))
        && (spec.filter)(rel)
}

fn check_root(spec: &WatchSpec) -> Result<(), WatchError> {
    if spec.root.is_dir() {
        Ok(())
    } else {
        Err(WatchError::NotAFolder {
            path: spec.root.clone(),
        })
    }
}

/// One scan now: the wanted files whose size and time did not change over the settle period.
pub async fn sweep(spec: &WatchSpec) -> Result<Vec<Settled>, WatchError> {
    check_root(spec)?;
    let first_spec = spec.clone();
    let first = tokio::task::spawn_blocking(move || scan(&first_spec, &first_spec.root))
        .await
        .unwrap_or_default();
    tokio::time::sleep(spec.settle).await;
    let again_spec = spec.clone();
    let again: HashMap<PathBuf, Stamp> =
        tokio::task::spawn_blocking(move || scan(&again_spec, &again_spec.root))
            .await
            .unwrap_or_default()
            .into_iter()
            .collect();
    Ok(first
        .into_iter()
        .filter(|(p, s)| again.get(p) == Some(s))
        .map(|(path, (size, modified))| Settled {
            path,
            size,
            modified,
        })
        .collect())
}

/// A file that changed lately.
struct Candidate {
    stamp: Stamp,
    since: Instant,
}

/// The watcher's memory: files not settled yet, and what was reported (so a rescan does not
/// report a file twice unless it changed).
struct Tracker {
    spec: WatchSpec,
    candidates: HashMap<PathBuf, Candidate>,
    reported: HashMap<PathBuf, Stamp>,
    /// Events name every change, so a file whose last modification is older than the quiet
    /// period is settled even if it changed after it was last looked at.
    by_events: bool,
    /// Files were reported since the last `Quiet`.
    unquiet: bool,
}

impl Tracker {
    /// Something happened to `path` (or it was found by a scan).
    fn touched(&mut self, path: PathBuf, now: Instant) {
        // A file being written sends thousands of events: only the first one costs a stat.
        if let Some(candidate) = self.candidates.get_mut(&path) {
            candidate.since = now;
            return;
        }
        match stamp(&path) {
            Some(s) if self.reported.get(&path) == Some(&s) => {
                self.candidates.remove(&path);
            }
            Some(s) => {
                self.candidates.insert(
                    path,
                    Candidate {
                        stamp: s,
                        since: now,
                    },
                );
            }
            None => {
                // Gone (moved away or deleted after sending): forgotten, so that what is
                // remembered stays bounded by what is in the folder.
                self.candidates.remove(&path);
                self.reported.remove(&path);
            }
        }
    }

    /// Looks at every file under `from` (the root, or a folder that appeared in it).
    fn rescan(&mut self, from: &Path, now: Instant) {
        for (path, s) in scan(&self.spec, from) {
            if self.reported.get(&path) != Some(&s) {
                match self.candidates.get_mut(&path) {
                    Some(c) if c.stamp == s => {}
                    // With events, a file's last event dates its last change: a scan that
                    // catches it mid-write must not restart its quiet period (the check at
                    // the end of it looks again anyway).
                    Some(c) if self.by_events => c.stamp = s,
                    // When polling, a change found by a scan restarts the quiet period.
                    _ => {
                        self.candidates.insert(
                            path,
                            Candidate {
                                stamp: s,
                                since: now,
                            },
                        );
                    }
                }
            }
        }
    }

    /// Sends what settled, then `Quiet` once nothing is pending any more.
    async fn report(&mut self, now: Instant, out: &mpsc::Sender<Watched>) -> Result<(), ()> {
        for settled in self.settled(now) {
            self.unquiet = true;
            out.send(Watched::Settled(settled)).await.map_err(|_| ())?;
        }
        if self.unquiet && self.candidates.is_empty() {
            self.unquiet = false;
            out.send(Watched::Quiet).await.map_err(|_| ())?;
        }
        Ok(())
    }

    /// Files quiet for the settle period and unchanged: reported once.
    fn settled(&mut self, now: Instant) -> Vec<Settled> {
        let settle = self.spec.settle;
        let due: Vec<PathBuf> = self
            .candidates
            .iter()
            .filter(|(_, c)| now.duration_since(c.since) >= settle)
            .map(|(p, _)| p.clone())
            .collect();
        let mut out = Vec::new();
        for path in due {
            let Some(candidate) = self.candidates.remove(&path) else {
                continue;
            };
            let quiet_since = SystemTime::now() - settle;
            match stamp(&path) {
                Some(s) if s == candidate.stamp || (self.by_events && s.1 <= quiet_since) => {
                    if self.reported.get(&path) == Some(&s) {
                        continue;
                    }
                    self.reported.insert(path.clone(), s);
                    out.push(Settled {
                        path,
                        size: s.0,
                        modified: s.1,
                    });
                }
                Some(s) => {
                    self.candidates.insert(
                        path,
                        Candidate {
                            stamp: s,
                            since: now,
                        },
                    );
                }
                None => {}
            }
        }
        out
    }
}

/// What a watcher reports.
#[derive(Debug)]
pub enum Watched {
    /// A file stopped changing.
    Settled(Settled),
    /// Files were reported and none is pending now: the folder is quiet (a batch is complete).
    Quiet,
    /// Trouble that does not stop the watcher (the inotify watch limit reached for a folder made
    /// later: the tree is then rescanned now and then).
    Trouble(WatchError),
}

type EventQueue = mpsc::Sender<notify::Result<notify::Event>>;

/// The notify callback: hands events on without ever blocking; a full queue means events were
/// lost, which the watcher answers with a rescan.
fn hand_on(events: EventQueue, lost: Arc<AtomicBool>) -> impl Fn(notify::Result<notify::Event>) {
    move |event| {
        if events.try_send(event).is_err() {
            lost.store(true, Ordering::Relaxed);
        }
    }
}

/// Starts watching; settled files arrive on the receiver until `cancel` fires.
pub fn watch(
    spec: WatchSpec,
    cancel: CancellationToken,
) -> Result<(mpsc::Receiver<Watched>, JoinHandle<()>), WatchError> {
    check_root(&spec)?;
    let (out, settled) = mpsc::channel(1024);
    let task = match spec.mode {
        WatchMode::Events => {
            let (events, incoming) = mpsc::channel::<notify::Result<notify::Event>>(EVENT_QUEUE);
            let overflow = Arc::new(AtomicBool::new(false));
            let mut watcher = notify::recommended_watcher(hand_on(events, overflow.clone()))
                .map_err(|e| notify_error(&spec.root, e))?;
            let mode = if spec.recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            watcher
                .watch(&spec.root, mode)
                .map_err(|e| notify_error(&spec.root, e))?;
            tokio::spawn(run_events(
                spec,
                Box::new(watcher),
                incoming,
                overflow,
                out,
                cancel,
            ))
        }
        WatchMode::Poll { interval } => tokio::spawn(run_poll(spec, interval, out, cancel)),
    };
    Ok((settled, task))
}

fn notify_error(path: &Path, e: notify::Error) -> WatchError {
    let limit = matches!(e.kind, notify::ErrorKind::MaxFilesWatch)
        || matches!(&e.kind, notify::ErrorKind::Io(io) if io.raw_os_error() == Some(28));
    if limit {
        WatchError::WatchLimit {
            path: path.to_path_buf(),
        }
    } else {
        WatchError::Notify {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}

/// `watcher` is only kept alive (tests pass none and send the events themselves).
async fn run_events(
    spec: WatchSpec,
    watcher: Box<dyn Send>,
    mut incoming: mpsc::Receiver<notify::Result<notify::Event>>,
    overflow: Arc<AtomicBool>,
    out: mpsc::Sender<Watched>,
    cancel: CancellationToken,
) {
    let _watcher = watcher;
    // Set once inotify refused a folder: from then on, a rescan now and then finds its files.
    let mut limited: Option<Instant> = None;
    // Folders that appeared, to be looked at again once their watch is in place.
    let mut new_folders: Vec<(PathBuf, Instant)> = Vec::new();
    let mut tracker = Tracker {
        spec,
        candidates: HashMap::new(),
        reported: HashMap::new(),
        by_events: true,
        unquiet: false,
    };
    let root = tracker.spec.root.clone();
    tracker.rescan(&root, Instant::now());
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            event = incoming.recv() => {
                let Some(event) = event else { return };
                let now = Instant::now();
                match event {
                    Ok(event) if event.need_rescan() => overflow.store(true, Ordering::Relaxed),
                    Ok(event) => {
                        if matches!(event.kind, EventKind::Access(_)) && !matches!(event.kind, EventKind::Access(notify::event::AccessKind::Close(_))) {
                            continue;
                        }
                        for path in event.paths {
                            if path.is_dir() {
                                // A folder moved in brings files no event named: only that
                                // folder is scanned (thousands dropped at once are thousands
                                // of folder events, and the tree may be large). notify adds
                                // its watch after handing the event on, so files made in
                                // between are found by a second look once it surely exists.
                                if tracker.spec.recursive && path != tracker.spec.root {
                                    tracker.rescan(&path, now);
                                    new_folders.push((path, now));
                                }
                            } else if wanted(&tracker.spec, &path) {
                                tracker.touched(path, now);
                            } else {
                                tracker.reported.remove(&path);
                            }
                        }
                    }
                    Err(e) => {
                        overflow.store(true, Ordering::Relaxed);
                        match notify_error(&tracker.spec.root, e) {
                            limit @ WatchError::WatchLimit { .. } => {
                                tracing::error!(folder = %tracker.spec.root.display(), "{limit}");
                                limited = Some(now);
                                if out.send(Watched::Trouble(limit)).await.is_err() {
                                    return;
                                }
                            }
                            e => tracing::warn!(folder = %tracker.spec.root.display(), error = %e, "watch error; rescanning"),
                        }
                    }
                }
            }
            _ = ticker.tick() => {
                let now = Instant::now();
                if let Some(at) = limited && now.duration_since(at) >= LIMITED_RESCAN {
                    limited = Some(now);
                    overflow.store(true, Ordering::Relaxed);
                }
                if overflow.swap(false, Ordering::Relaxed) {
                    tracing::debug!(folder = %root.display(), "events lost; rescanning");
                    tracker.rescan(&root, now);
                    new_folders.clear();
                }
                while new_folders.first().is_some_and(|(_, at)| now.duration_since(*at) >= NEW_FOLDER_LOOK) {
                    let (folder, _) = new_folders.remove(0);
                    tracker.rescan(&folder, now);
                }
                if tracker.report(now, &out).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn run_poll(
    spec: WatchSpec,
    interval: Duration,
    out: mpsc::Sender<Watched>,
    cancel: CancellationToken,
) {
    let mut tracker = Tracker {
        spec,
        candidates: HashMap::new(),
        reported: HashMap::new(),
        by_events: false,
        unquiet: false,
    };
    let mut ticker = tokio::time::interval(interval.min(tracker.spec.settle).max(TICK));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_scan: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        if last_scan.is_none_or(|t| now.duration_since(t) >= interval) {
            last_scan = Some(now);
            let root = tracker.spec.root.clone();
            tracker.rescan(&root, now);
        }
        if tracker.report(now, &out).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
