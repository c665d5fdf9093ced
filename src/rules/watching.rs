//! Watch rules: settled files → ledger check → grouped into packages → uploads; after a send,
//! the files are kept, deleted or moved, and a link upload's share link is written out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::Local;
use tokio_util::sync::CancellationToken;

use super::naming::{NameParts, package_name};
use super::{Context, Live, outside_window};
use crate::config::{After, GroupName, Rule, Scan, UploadTarget, WatchRule};
use crate::files::LocalEntry;
use crate::schedule;
use crate::store::{LedgerEntry, TransferKind};
use crate::transfer::{PortalUploadRequest, QueuedUpload, TeamUploadRequest, UploadRequest};
use crate::watch::{self, Settled, WatchMode, WatchSpec, Watched};

/// How often pending groups are looked at.
const TICK: Duration = Duration::from_millis(100);
/// How long a group waits before trying again when its upload could not be queued.
const RETRY_AFTER: Duration = Duration::from_secs(30);

fn nanos(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn spec(w: &WatchRule) -> WatchSpec {
    let rule = w.clone();
    WatchSpec {
        root: w.folder.clone(),
        recursive: w.recursive,
        mode: match w.scan {
            Scan::Events => WatchMode::Events,
            Scan::Poll(interval) => WatchMode::Poll { interval },
        },
        settle: w.settle,
        filter: Arc::new(move |rel: &Path| rule.wants(rel)),
    }
}

/// Files waiting to become a package.
struct Group {
    files: BTreeMap<PathBuf, Settled>,
    last_added: Instant,
    not_before: Instant,
}

pub(super) async fn run(
    ctx: &Context,
    rule: &Rule,
    w: &WatchRule,
    live: &Live,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let spec = spec(w);
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    if let Some(sweep) = &w.sweep {
        live.state("waiting");
        loop {
            live.next(sweep.next_after(chrono::Utc::now()));
            tokio::select! {
                tick = schedule::next_tick(sweep, cancel) => if tick.is_none() { return Ok(()) },
                _ = live.run_now.notified() => {}
            }
            live.ran();
            let settled = watch::sweep(&spec).await.map_err(|e| e.to_string())?;
            for file in settled {
                consider(ctx, rule, w, &mut groups, file).await;
            }
            // A sweep sends what it found at once.
            for group in groups.values_mut() {
                group.last_added = Instant::now() - w.settle;
            }
            flush(ctx, rule, w, &mut groups, live, true).await;
        }
    }
    let (mut settled, _watcher) =
        watch::watch(spec.clone(), cancel.child_token()).map_err(|e| e.to_string())?;
    live.state("watching");
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            file = settled.recv() => match file {
                Some(Watched::Settled(file)) => {
                    live.ran();
                    consider(ctx, rule, w, &mut groups, file).await;
                }
                // Nothing is being written any more: a batch is complete now, not a quiet
                // period after its last file settled (which was quiet a period already).
                Some(Watched::Quiet) => flush(ctx, rule, w, &mut groups, live, true).await,
                Some(Watched::Trouble(trouble)) => live.failed(trouble.to_string()),
                None if cancel.is_cancelled() => return Ok(()),
                None => return Err(format!("the watcher of {} stopped", w.folder.display())),
            },
            _ = ticker.tick() => flush(ctx, rule, w, &mut groups, live, false).await,
            _ = live.run_now.notified() => {
                live.ran();
                match watch::sweep(&spec).await {
                    Ok(found) => for file in found { consider(ctx, rule, w, &mut groups, file).await },
                    Err(e) => live.failed(e.to_string()),
                }
            }
        }
    }
}

/// The package path and name of a file relative to the watched folder.
fn split(rel: &Path) -> (String, String) {
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let folder = rel
        .parent()
        .map(|p| {
            p.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_default();
    (folder, name)
}

/// Which group a file joins.
fn group_key(group: GroupName, rel: &Path) -> String {
    match group {
        GroupName::File => rel.to_string_lossy().into_owned(),
        GroupName::Folder => {
            let mut parts = rel.components();
            match (parts.next(), parts.next()) {
                (Some(top), Some(_)) => top.as_os_str().to_string_lossy().into_owned(),
                _ => rel.to_string_lossy().into_owned(),
            }
        }
        GroupName::Batch => String::new(),
    }
}

async fn consider(
    ctx: &Context,
    rule: &Rule,
    w: &WatchRule,
    groups: &mut BTreeMap<String, Group>,
    file: Settled,
) {
    ctx.engine.metrics().watch_event();
    let Ok(rel) = file.path.strip_prefix(&w.folder).map(Path::to_path_buf) else {
        return;
    };
    let key = rel.to_string_lossy().into_owned();
    match ctx.store.ledger_get(&rule.name, &key).await {
        // Sent (or on its way) with this very content: never twice.
        Ok(Some(e))
            if e.size == Some(file.size)
                && e.mtime_ns == Some(nanos(file.modified))
                && e.state != "failed" =>
        {
            return;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(rule = %rule.name, error = %e, "cannot read the ledger");
            return;
        }
    }
    let now = Instant::now();
    let group = groups
        .entry(group_key(w.group, &rel))
        .or_insert_with(|| Group {
            files: BTreeMap::new(),
            last_added: now,
            not_before: now,
        });
    group.last_added = now;
    group.files.insert(rel, file);
}

/// Whether every wanted file of a dropped folder has settled (none is still being copied).
fn folder_complete(w: &WatchRule, top: &str, group: &Group) -> bool {
    let mut stack = vec![w.folder.join(top)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file()
                && let Ok(rel) = path.strip_prefix(&w.folder)
                && w.wants(rel)
                && !crate::files::is_ignored(&entry.file_name().to_string_lossy())
                && !group.files.contains_key(rel)
            {
                return false;
            }
        }
    }
    true
}

/// Sends the groups that are ready (all of them with `now`).
async fn flush(
    ctx: &Context,
    rule: &Rule,
    w: &WatchRule,
    groups: &mut BTreeMap<String, Group>,
    live: &Live,
    now: bool,
) {
    let ready: Vec<String> = groups
        .iter()
        .filter(|(key, g)| {
            let quiet = g.last_added.elapsed() >= w.settle || w.group == GroupName::File || now;
            quiet
                && g.not_before <= Instant::now()
                && (w.group != GroupName::Folder || folder_complete(w, key, g))
        })
        .map(|(k, _)| k.clone())
        .collect();
    if ready.is_empty() {
        return;
    }
    let ready: Vec<(String, Group)> = ready
        .into_iter()
        .filter_map(|key| groups.remove(&key).map(|g| (key, g)))
        .collect();
    // Every package ready now is queued in one transaction: thousands of files dropped at
    // once with one package per file are queued in milliseconds, each job creating its
    // package on the service when it starts.
    let (uploads, names): (Vec<QueuedUpload>, Vec<(String, usize)>) = ready
        .iter()
        .map(|(key, group)| upload_of(ctx, rule, w, key, group))
        .unzip();
    match ctx.engine.queue_uploads(&rule.name, uploads).await {
        Ok(ids) => {
            let hold = outside_window(rule);
            for (id, (package, files)) in ids.iter().zip(names) {
                tracing::info!(rule = %rule.name, upload_id = %id, package = %package, files, "upload queued");
                // At once: the engine starts a job as it queues it.
                if let Some(reason) = &hold {
                    let _ = ctx
                        .engine
                        .hold(TransferKind::Upload, id, reason.clone())
                        .await;
                }
            }
        }
        Err(e) => {
            let e = e.to_string();
            tracing::warn!(rule = %rule.name, error = %e, "cannot queue the uploads; trying again later");
            live.failed(e);
            for (key, mut group) in ready {
                group.not_before = Instant::now() + RETRY_AFTER;
                groups.insert(key, group);
            }
        }
    }
}

/// The upload of a group of files, with their ledger entries; and its package's name and
/// number of files, for the log.
fn upload_of(
    ctx: &Context,
    rule: &Rule,
    w: &WatchRule,
    key: &str,
    group: &Group,
) -> (QueuedUpload, (String, usize)) {
    let entries: Vec<LocalEntry> = group
        .files
        .iter()
        .map(|(rel, f)| {
            let (package_path, name) = split(rel);
            LocalEntry {
                source: f.path.clone(),
                package_path,
                name,
                size: f.size,
                modified: Some(f.modified),
                directory: false,
            }
        })
        .collect();
    let first = group.files.keys().next().cloned().unwrap_or_default();
    let folder = match w.group {
        GroupName::Folder if group.files.len() > 1 || first.components().count() > 1 => {
            key.to_owned()
        }
        _ => w
            .folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let name = package_name(
        &w.package_name,
        &NameParts {
            rule: &rule.name,
            folder: &folder,
            file: &first
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            count: entries.len(),
            at: Local::now(),
        },
    );
    let req = match &w.target {
        UploadTarget::Team {
            team_id,
            recipients,
            password,
            download_limit,
        } => UploadRequest::Team(TeamUploadRequest {
            team_id: team_id.clone().or_else(|| ctx.default_team.clone()),
            subdomain: None,
            paths: Vec::new(),
            package_name: Some(name.clone()),
            package_description: Some(w.description.clone()),
            recipients: recipients.clone(),
            password: password.clone(),
            chunk_size: rule.chunk_size,
            priority: rule.priority,
            delete_after: None,
            download_limit: *download_limit,
            tag_name: None,
            tag_id: None,
            teamspace_id: None,
            unlimited_storage: false,
            manifest: w.manifest,
        }),
        UploadTarget::Portal {
            subdomain,
            sender,
            access_code,
            metadata,
        } => UploadRequest::Portal(PortalUploadRequest {
            subdomain: subdomain.clone(),
            sender_email: sender.clone(),
            paths: Vec::new(),
            access_code: access_code.clone(),
            package_name: Some(name.clone()),
            package_description: Some(w.description.clone()),
            metadata: (!metadata.is_empty()).then(|| metadata.clone()),
            chunk_size: rule.chunk_size,
            priority: rule.priority,
            manifest: w.manifest,
        }),
    };
    let ledger = group
        .files
        .iter()
        .map(|(rel, f)| LedgerEntry {
            rule: rule.name.clone(),
            key: rel.to_string_lossy().into_owned(),
            size: Some(f.size),
            mtime_ns: Some(nanos(f.modified)),
            // Filled in as the upload is recorded.
            transfer_id: None,
            state: "queued".into(),
        })
        .collect();
    let count = entries.len();
    (
        QueuedUpload {
            req,
            entries,
            ledger,
        },
        (name, count),
    )
}

/// What a rule does once its upload is sent: the share link written out, files kept, deleted
/// or moved (only if still what was sent).
pub(super) async fn after_send(
    ctx: &Context,
    rule: &Rule,
    w: &WatchRule,
    transfer_id: &str,
    entries: &[LedgerEntry],
) {
    if let Some(folder) = &w.link_folder
        && let Ok(summary) = ctx.engine.detail(TransferKind::Upload, transfer_id).await
        && let Some(link) = summary.link
    {
        let name = crate::files::clean_name(summary.package_name.as_deref().unwrap_or(transfer_id))
            .unwrap_or_else(|| transfer_id.to_owned());
        if let Err(e) = write_link(folder, &name, &link) {
            tracing::warn!(rule = %rule.name, folder = %folder.display(), error = %e, "cannot write the share link");
        }
    }
    for entry in entries {
        let path = w.folder.join(&entry.key);
        let unchanged = std::fs::symlink_metadata(&path).ok().is_some_and(|m| {
            Some(m.len()) == entry.size && m.modified().ok().map(nanos) == entry.mtime_ns
        });
        if !unchanged {
            continue;
        }
        let done = match &w.after {
            After::Keep => Ok(()),
            After::Delete => std::fs::remove_file(&path),
            After::Move(to) => move_file(&path, &to.join(&entry.key)),
        };
        match done {
            Ok(()) if w.after != After::Keep => remove_empty_parents(&path, &w.folder),
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(rule = %rule.name, path = %path.display(), error = %e, "cannot clear a sent file")
            }
        }
    }
}

fn write_link(folder: &Path, name: &str, link: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(folder)?;
    let tmp = folder.join(format!(".{name}.url.tmp"));
    std::fs::write(&tmp, format!("[InternetShortcut]\r\nURL={link}\r\n"))?;
    std::fs::rename(tmp, folder.join(format!("{name}.url")))
}

fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        // Across filesystems: copy, then delete.
        Err(e) if e.raw_os_error() == Some(18) => {
            std::fs::copy(from, to)?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

/// Removes the folders a sent file leaves empty, up to (not including) the watched folder.
fn remove_empty_parents(path: &Path, root: &Path) {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || std::fs::remove_dir(d).is_err() {
            return;
        }
        dir = d.parent();
    }
}
