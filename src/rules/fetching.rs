//! Download rules: a link (once, or checked again on a schedule until its package is fetched),
//! a folder where dropped `.txt`/`.url` files hold links, and a team inbox polled for new
//! packages. Each package is fetched once, into the rule's destination, with its owner and modes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::{Context, Live, outside_window};
use crate::cloud::dto::{InboxQuery, LinkUrl, Secret};
use crate::config::{DownloadRule, DownloadSource, Rule};
use crate::schedule;
use crate::store::{LedgerEntry, TransferKind};
use crate::transfer::{DownloadRequest, PackageSource};
use crate::watch::{self, WatchMode, WatchSpec, Watched};

pub(super) async fn run(
    ctx: &Context,
    rule: &Rule,
    d: &DownloadRule,
    live: &Live,
    cancel: &CancellationToken,
) -> Result<(), String> {
    match &d.source {
        DownloadSource::LinksFolder(folder) => {
            links_folder(ctx, rule, d, folder, live, cancel).await
        }
        source => loop {
            live.ran();
            let result = match source {
                DownloadSource::Link(link) => link_once(ctx, rule, d, link).await.map(|_| ()),
                DownloadSource::Inbox { .. } => inbox(ctx, rule, d).await,
                DownloadSource::LinksFolder(_) => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(rule = %rule.name, error = %e, "download automation run failed");
                live.failed(e);
            }
            match &d.schedule {
                // A one-off link still answers `masv automation run`.
                None => {
                    live.next(None);
                    live.state("done");
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        _ = live.run_now.notified() => {}
                    }
                }
                Some(schedule) => {
                    live.state("waiting");
                    live.next(schedule.next_after(Utc::now()));
                    tokio::select! {
                        tick = schedule::next_tick(schedule, cancel) => if tick.is_none() { return Ok(()) },
                        _ = live.run_now.notified() => {}
                    }
                }
            }
        },
    }
}

fn request(rule: &Rule, d: &DownloadRule, destination: &Path) -> DownloadRequest {
    DownloadRequest {
        url: String::new(),
        dst_folder: destination.to_path_buf(),
        password: d.password.clone(),
        file_ids: Vec::new(),
        chunk_size: rule.chunk_size,
        priority: rule.priority,
        create_package_folder: d.create_package_folder,
        bypass_package_quarantine: true,
        user_id: d.uid,
        group_id: d.gid,
        file_mode: d.file_mode,
        folder_mode: d.folder_mode,
        package: None,
        require_manifest: d.require_manifest,
    }
}

/// Queues the download and records it in the ledger under every one of `keys` (a package, and
/// the link it came from), so that none of them is fetched again unless the download fails.
async fn queue(
    ctx: &Context,
    rule: &Rule,
    keys: Vec<String>,
    req: DownloadRequest,
) -> Result<(), String> {
    let id = ctx
        .engine
        .create_download_for(req, Some(&rule.name))
        .await
        .map_err(|e| e.to_string())?;
    let entries = keys
        .into_iter()
        .map(|key| LedgerEntry {
            rule: rule.name.clone(),
            key,
            size: None,
            mtime_ns: None,
            transfer_id: Some(id.clone()),
            state: "queued".into(),
        })
        .collect();
    ctx.store
        .ledger_put(entries)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(rule = %rule.name, download_id = %id, "download queued");
    if let Some(reason) = outside_window(rule) {
        let _ = ctx.engine.hold(TransferKind::Download, &id, reason).await;
    }
    Ok(())
}

async fn seen(ctx: &Context, rule: &Rule, key: &str) -> Result<bool, String> {
    Ok(ctx
        .store
        .ledger_get(&rule.name, key)
        .await
        .map_err(|e| e.to_string())?
        .is_some_and(|e| e.state != "failed"))
}

/// Downloads what a link holds, unless it was fetched already; true if queued.
///
/// A link lookup may count as an access against the link's download limit (spec §3), so a
/// link is looked up once per package fetch and never to poll: once its download is queued
/// the ledger holds the link, and later runs do nothing until that download fails. The
/// package learnt here is handed to the download as it is (no second lookup); the link stays
/// in the request so that an expired package token can be renewed.
async fn link_once(
    ctx: &Context,
    rule: &Rule,
    d: &DownloadRule,
    link: &Secret,
) -> Result<bool, String> {
    let parsed = LinkUrl::parse(link.expose())?;
    let link_key = format!("link:{}", parsed.link_id);
    if seen(ctx, rule, &link_key).await? {
        return Ok(false);
    }
    let info = ctx
        .engine
        .client()
        .link(&parsed.link_id, &parsed.secret, d.password.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    let key = format!("package:{}", info.package_id);
    if seen(ctx, rule, &key).await? {
        // Fetched by an agent that did not record links yet: record it now, ask no more.
        ctx.store
            .ledger_put(vec![LedgerEntry {
                rule: rule.name.clone(),
                key: link_key,
                size: None,
                mtime_ns: None,
                transfer_id: None,
                state: "sent".into(),
            }])
            .await
            .map_err(|e| e.to_string())?;
        return Ok(false);
    }
    let mut req = request(rule, d, &d.destination);
    req.url = link.expose().to_owned();
    req.package = Some(PackageSource {
        package_id: info.package_id,
        package_name: info.name,
        package_token: info.package_token,
    });
    queue(ctx, rule, vec![key, link_key], req).await?;
    Ok(true)
}

/// The links written in a dropped file: `URL=…` lines of `.url` files, or any http(s) link.
fn links_in(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|t| t.strip_prefix("URL=").unwrap_or(t))
        .filter(|t| {
            (t.starts_with("https://") || t.starts_with("http://")) && t.contains("secret=")
        })
        .map(str::to_owned)
        .collect()
}

async fn links_folder(
    ctx: &Context,
    rule: &Rule,
    d: &DownloadRule,
    folder: &Path,
    live: &Live,
    cancel: &CancellationToken,
) -> Result<(), String> {
    std::fs::create_dir_all(folder).map_err(|e| format!("{}: {e}", folder.display()))?;
    let spec = WatchSpec {
        root: folder.to_path_buf(),
        recursive: false,
        mode: WatchMode::Events,
        settle: Duration::from_millis(500),
        filter: Arc::new(|rel: &Path| {
            rel.extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("url") || x.eq_ignore_ascii_case("txt"))
        }),
    };
    let (mut dropped, _watcher) =
        watch::watch(spec, cancel.child_token()).map_err(|e| e.to_string())?;
    live.state("watching");
    loop {
        let file = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            f = dropped.recv() => match f {
                Some(Watched::Settled(f)) => f,
                Some(Watched::Quiet) => continue,
                Some(Watched::Trouble(trouble)) => {
                    live.failed(trouble.to_string());
                    continue;
                }
                None => return Ok(()),
            },
        };
        live.ran();
        ctx.engine.metrics().watch_event();
        let text = match std::fs::read_to_string(&file.path) {
            Ok(t) => t,
            Err(e) => {
                live.failed(format!("{}: {e}", file.path.display()));
                continue;
            }
        };
        for link in links_in(&text) {
            let Ok(parsed) = LinkUrl::parse(&link) else {
                continue;
            };
            let key = format!("link:{}", parsed.link_id);
            match seen(ctx, rule, &key).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    live.failed(e);
                    continue;
                }
            }
            let mut req = request(rule, d, &d.destination);
            req.url = link;
            if let Err(e) = queue(ctx, rule, vec![key], req).await {
                tracing::warn!(rule = %rule.name, file = %file.path.display(), error = %e, "cannot queue a dropped link");
                live.failed(e);
            }
        }
    }
}

/// Fetches the packages that arrived in the team inbox since the rule's start.
async fn inbox(ctx: &Context, rule: &Rule, d: &DownloadRule) -> Result<(), String> {
    let DownloadSource::Inbox {
        team_id,
        portal,
        since,
        subfolder_per_portal,
    } = &d.source
    else {
        return Ok(());
    };
    let team_id = team_id
        .clone()
        .or_else(|| ctx.default_team.clone())
        .ok_or("an inbox rule needs team_id (or an embedded hub)")?;
    let api_key = ctx
        .engine
        .config()
        .api_key
        .clone()
        .ok_or("an inbox rule needs the agent's API key")?;
    let client = ctx.engine.client();
    // Folders per portal are named by subdomain: known here when the rule names its portal by
    // subdomain, else asked for once per portal id and run.
    let mut folders: HashMap<String, String> = HashMap::new();
    let portal_id = match portal {
        Some(p) if p.len() == 26 => Some(p.clone()),
        Some(sub) => {
            let found = client.portal(sub).await.map_err(|e| e.to_string())?;
            let name = if found.subdomain.is_empty() {
                sub.clone()
            } else {
                found.subdomain
            };
            folders.insert(found.id.clone(), name);
            Some(found.id)
        }
        None => None,
    };
    // Without a `since`, the rule takes what arrives from its first run on.
    let mut record = ctx
        .store
        .automation(&rule.name)
        .await
        .map_err(|e| e.to_string())?;
    let since = match since {
        Some(s) => *s,
        None => match record.first_run {
            Some(t) => t,
            None => {
                let now = Utc::now();
                record.first_run = Some(now);
                ctx.store
                    .set_automation(record)
                    .await
                    .map_err(|e| e.to_string())?;
                now
            }
        },
    };
    let mut page = 1;
    let mut listed: u64 = 0;
    loop {
        let found = client
            .team_inbox(
                &team_id,
                &api_key,
                &InboxQuery {
                    portal: portal_id.clone(),
                    created_at_start: Some(since),
                    page: Some(page),
                    limit: Some(INBOX_PAGE),
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        let count = found.records.len() as u64;
        listed += count;
        for record in found.records {
            let key = format!("package:{}", record.id);
            if seen(ctx, rule, &key).await? {
                continue;
            }
            let destination = match (subfolder_per_portal, &record.portal_id) {
                (true, Some(p)) => {
                    let folder = portal_folder(ctx, &api_key, &mut folders, p).await;
                    d.destination.join(folder)
                }
                _ => d.destination.clone(),
            };
            let mut req = request(rule, d, &destination);
            req.package = Some(PackageSource {
                package_id: record.id.clone(),
                package_name: record.name.clone(),
                package_token: record.access_token.clone(),
            });
            queue(ctx, rule, vec![key], req).await?;
        }
        if last_page(count, listed, found.metadata.total) {
            return Ok(());
        }
        page += 1;
    }
}

/// Packages asked for per inbox page: MASV's docs allow 1 to 50.
const INBOX_PAGE: u32 = 50;

/// Whether the inbox page just read was the last: it was empty, or everything the service
/// counts (`total`) has been listed. A service that sends no total (0) ends with a short page.
fn last_page(count: u64, listed: u64, total: u64) -> bool {
    count == 0 || listed >= total && (total > 0 || count < u64::from(INBOX_PAGE))
}

/// The folder of a portal's packages: its subdomain (cleaned for this platform), asked for
/// once per run. Should the service not say, the portal id is used and the reason logged.
async fn portal_folder(
    ctx: &Context,
    api_key: &Secret,
    folders: &mut HashMap<String, String>,
    portal_id: &str,
) -> String {
    if let Some(name) = folders.get(portal_id) {
        return name.clone();
    }
    let name = match ctx.engine.client().team_portal(portal_id, api_key).await {
        Ok(portal) if !portal.subdomain.is_empty() => portal.subdomain,
        Ok(_) => portal_id.to_owned(),
        Err(e) => {
            tracing::warn!(portal_id, error = %e, "cannot learn the portal's subdomain; its folder is named by its id");
            portal_id.to_owned()
        }
    };
    let name = crate::files::clean_name(&name).unwrap_or_else(|| portal_id.to_owned());
    folders.insert(portal_id.to_owned(), name.clone());
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inbox_is_read_until_its_total_is_listed() {
        assert!(last_page(3, 3, 3), "total listed: no second page");
        assert!(last_page(0, 0, 0));
        assert!(!last_page(50, 50, 51));
        assert!(last_page(1, 51, 51));
        // A service that sends no total: a short page is the last.
        assert!(last_page(7, 7, 0));
        assert!(!last_page(50, 50, 0));
    }

    #[test]
    fn links_are_found_in_url_and_text_files() {
        let url_file = "[InternetShortcut]\r\nURL=https://get.massive.io/A?secret=s\r\n";
        assert_eq!(links_in(url_file), ["https://get.massive.io/A?secret=s"]);
        let text = "here: http://hub:9000/B?secret=t and https://example.com/nothing";
        assert_eq!(links_in(text), ["http://hub:9000/B?secret=t"]);
    }
}
