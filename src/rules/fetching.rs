//! Download rules: a link (once, or checked again on a schedule until its package is fetched),
//! a folder where dropped `.txt`/`.url` files hold links, and a team inbox polled for new
//! packages. Each package is fetched once, into the rule's destination, with its owner and modes.

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
    }
}

async fn queue(
    ctx: &Context,
    rule: &Rule,
    key: String,
    req: DownloadRequest,
) -> Result<(), String> {
    let id = ctx
        .engine
        .create_download_for(req, Some(&rule.name))
        .await
        .map_err(|e| e.to_string())?;
    ctx.store
        .ledger_put(vec![LedgerEntry {
            rule: rule.name.clone(),
            key,
            size: None,
            mtime_ns: None,
            transfer_id: Some(id.clone()),
            state: "queued".into(),
        }])
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(rule = %rule.name, download_id = %id, "download queued");
    if outside_window(rule) {
        let _ = ctx.engine.pause(TransferKind::Download, &id).await;
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

/// Downloads what a link holds, unless its package was fetched already; true if queued.
async fn link_once(
    ctx: &Context,
    rule: &Rule,
    d: &DownloadRule,
    link: &Secret,
) -> Result<bool, String> {
    let parsed = LinkUrl::parse(link.expose())?;
    // A link is checked by its package: a vendor's link may come to hold a new package.
    let info = ctx
        .engine
        .client()
        .link(&parsed.link_id, &parsed.secret, d.password.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    let key = format!("package:{}", info.package_id);
    if seen(ctx, rule, &key).await? {
        return Ok(false);
    }
    let mut req = request(rule, d, &d.destination);
    req.url = link.expose().to_owned();
    queue(ctx, rule, key, req).await?;
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
            if let Err(e) = queue(ctx, rule, key, req).await {
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
    let portal_id = match portal {
        Some(p) if p.len() == 26 => Some(p.clone()),
        Some(sub) => Some(client.portal(sub).await.map_err(|e| e.to_string())?.id),
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
    loop {
        let found = client
            .team_inbox(
                &team_id,
                &api_key,
                &InboxQuery {
                    portal: portal_id.clone(),
                    created_at_start: Some(since),
                    page: Some(page),
                    limit: Some(100),
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        if found.records.is_empty() {
            return Ok(());
        }
        for record in found.records {
            let key = format!("package:{}", record.id);
            if seen(ctx, rule, &key).await? {
                continue;
            }
            let destination = match (subfolder_per_portal, &record.portal_id) {
                (true, Some(p)) => d.destination.join(
                    crate::files::clean_name(portal.as_deref().unwrap_or(p))
                        .unwrap_or_else(|| p.clone()),
                ),
                _ => d.destination.clone(),
            };
            let mut req = request(rule, d, &destination);
            req.package = Some(PackageSource {
                package_id: record.id.clone(),
                package_name: record.name.clone(),
                package_token: record.access_token.clone(),
            });
            queue(ctx, rule, key, req).await?;
        }
        page += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_found_in_url_and_text_files() {
        let url_file = "[InternetShortcut]\r\nURL=https://get.massive.io/A?secret=s\r\n";
        assert_eq!(links_in(url_file), ["https://get.massive.io/A?secret=s"]);
        let text = "here: http://hub:9000/B?secret=t and https://example.com/nothing";
        assert_eq!(links_in(text), ["http://hub:9000/B?secret=t"]);
    }
}
