//! Crash consistency, proven by crashing: the real agent process is aborted at every named
//! crash point of the transfer core (`masv_agent::crash::POINTS`, between a side effect and
//! the record of it) during a download and an upload of many small files and one large file,
//! then started again; the transfer must complete by itself with every file byte-identical,
//! no part file left behind, the package finalized with exactly one entry per file, and
//! nothing sent again beyond what was in flight.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use masv_agent::crash::POINTS;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::agent::{Api, ProcessAgent, TestAgent, download_request, engine_config, hub_bytes_sent};
use crate::proxy::LossProxy;
use crate::support::{
    DataDir, FileSpec, HubOptions, MIB, TestHub, World, pseudo_random_bytes, shared_contents,
};

const LONG: Duration = Duration::from_secs(60);
/// Requests in flight at once, and the download range size: what a crash may cost again.
const CONNECTIONS: u64 = 4;
const DOWNLOAD_CHUNK: u64 = MIB as u64;
const UPLOAD_PART: u64 = 5 * MIB as u64;

/// Many small files (an empty one among them) in nested folders, and one large file of
/// several chunks and parts: (folder inside the package, name, bytes). Names are unique.
fn dataset() -> Vec<(String, String, Vec<u8>)> {
    dataset_of(30)
}

/// [`dataset`] with `small` small files.
fn dataset_of(small: u64) -> Vec<(String, String, Vec<u8>)> {
    let mut files = Vec::new();
    for i in 0..small {
        let folder = match i % 3 {
            0 => "",
            1 => "reels",
            _ => "reels/sound",
        };
        let len = (i * 7919 % 90_000) as usize;
        files.push((
            folder.into(),
            format!("take {i:02}.wav"),
            pseudo_random_bytes(i, len),
        ));
    }
    files.push((
        "masters".into(),
        "master.mxf".into(),
        pseudo_random_bytes(99, 12 * MIB + 7),
    ));
    files
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The point's environment: abort the `nth` time it is reached.
fn crash_at(point: &str) -> String {
    // Points met once per transfer crash there; the others part-way through.
    let nth = match point {
        "download.planned" | "upload.package.finalizing" | "upload.package.finalized" => 1,
        _ => 5,
    };
    format!("{point}@{nth}")
}

/// Posts `body` to `path`; `None` when the agent died before it answered (the crash point
/// came first), in which case the test finds the transfer after the restart.
pub async fn post_racing_the_crash(api: &Api, path: &str, body: Value) -> Option<Value> {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", api.base))
        .json(&body)
        .send()
        .await
        .ok()?;
    assert!(response.status().is_success(), "{path} refused");
    response.json().await.ok()
}

/// Waits for the crashed agent, and checks that it died at the crash point (SIGABRT), not of
/// something else or not at all.
pub async fn crashed(agent: ProcessAgent, point: &str) {
    let status = agent.exit_status(LONG).await;
    assert_eq!(
        status.signal(),
        Some(6),
        "the agent was to abort at crash point {point}, but exited with {status}"
    );
}

/// The only transfer of `kind` on the agent.
async fn only_transfer(api: &Api, kind: &str) -> String {
    let (status, list) = api.get(&format!("/{kind}")).await;
    assert_eq!(status, 200, "{list}");
    let list = list.as_array().expect("a list of transfers").clone();
    assert_eq!(list.len(), 1, "{list:?}");
    let key = if kind == "downloads" {
        "download_id"
    } else {
        "upload_id"
    };
    list[0][key].as_str().expect("an id").to_owned()
}

/// Every regular file under `root` by its path relative to `root`, with its SHA-256; panics
/// on a part file left behind.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            assert!(
                !rel.ends_with(".part"),
                "a part file was left behind: {rel}"
            );
            out.insert(rel, sha256(&std::fs::read(&path).unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_completes_intact_after_a_crash_at_every_point() {
    let world = World::new().await;
    let files = dataset();
    let specs = files
        .iter()
        .map(|(folder, name, bytes)| FileSpec::file(name, bytes.clone()).at(folder))
        .collect();
    let (package, url) = world.shared(specs).await;
    let expected: BTreeMap<String, String> = files
        .iter()
        .map(|(folder, name, bytes)| {
            let rel = Path::new("dailies day 1").join(folder).join(name);
            (rel.display().to_string(), sha256(bytes))
        })
        .collect();
    let total = package.size();
    let flags = ["--max-connections", "4", "--chunk-size", "1MiB"];
    for point in POINTS.iter().filter(|p| p.starts_with("download.")) {
        let data = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let sent_before = hub_bytes_sent(world.hub.addr).await;
        let agent = ProcessAgent::start_with(data.path(), &world.hub.base_url, &flags, |c| {
            c.env("MASV_CRASH_AT", crash_at(point));
        })
        .await;
        let api = agent.api.clone();
        post_racing_the_crash(&api, "/downloads", download_request(&url, dst.path())).await;
        crashed(agent, point).await;

        let agent = ProcessAgent::start(data.path(), &world.hub.base_url, &flags, None).await;
        let id = only_transfer(&agent.api, "downloads").await;
        let done = agent
            .api
            .wait_for("downloads", &id, &["complete", "error"], LONG)
            .await;
        assert_eq!(
            done["state"], "complete",
            "after a crash at {point}: {done}"
        );
        assert_eq!(
            tree(dst.path()),
            expected,
            "after a crash at {point}, the files on disk differ from the package's"
        );
        let sent = hub_bytes_sent(world.hub.addr).await - sent_before;
        // In flight: a chunk being fetched per connection, and the last chunk of a file being
        // finished (as many as connections), recorded only once the file is synced.
        assert!(
            sent <= total + 2 * CONNECTIONS * DOWNLOAD_CHUNK,
            "after a crash at {point}, {sent} bytes were fetched for a package of {total}: more than what was in flight was fetched again"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_is_delivered_once_after_a_crash_at_every_point() {
    let world = World::new().await;
    let files = dataset();
    let src = tempfile::tempdir().unwrap();
    for (folder, name, bytes) in &files {
        let dir = src.path().join("day 1").join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let expected: BTreeMap<String, String> = files
        .iter()
        .map(|(_, name, bytes)| (name.clone(), sha256(bytes)))
        .collect();
    let total: u64 = files.iter().map(|(_, _, b)| b.len() as u64).sum();
    let flags = ["--max-connections", "4"];
    for (n, point) in POINTS
        .iter()
        .filter(|p| p.starts_with("upload."))
        .enumerate()
    {
        let data = tempfile::tempdir().unwrap();
        let received_before = hub_received(&world).await;
        let package_name = format!("crash {n}");
        let agent = ProcessAgent::start_with(data.path(), &world.hub.base_url, &flags, |c| {
            c.env("MASV_API_KEY", world.api_key.expose());
            c.env("MASV_CRASH_AT", crash_at(point));
        })
        .await;
        let api = agent.api.clone();
        let body = json!({
            "team_id": world.team_id,
            "package_name": package_name,
            "paths": [src.path().join("day 1")],
        });
        post_racing_the_crash(&api, "/uploads", body).await;
        crashed(agent, point).await;

        let agent = ProcessAgent::start(
            data.path(),
            &world.hub.base_url,
            &flags,
            Some(&world.api_key),
        )
        .await;
        let id = only_transfer(&agent.api, "uploads").await;
        let done = agent
            .api
            .wait_for("uploads", &id, &["complete", "error"], LONG)
            .await;
        assert_eq!(
            done["state"], "complete",
            "after a crash at {point}: {done}"
        );
        let link = done["link"].as_str().expect("a link upload has its link");

        // The package: finalized, one package for the upload, one finalized entry per file.
        let hub_db = rusqlite::Connection::open(world.hub.data.path().join("hub.db")).unwrap();
        let packages: Vec<(String, Option<String>)> = hub_db
            .prepare("SELECT id, finalized_at FROM packages WHERE name = ?1")
            .unwrap()
            .query_map([&package_name], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(packages.len(), 1, "after a crash at {point}: {packages:?}");
        assert!(
            packages[0].1.is_some(),
            "after a crash at {point}: not finalized"
        );
        let entries: Vec<(String, String, bool)> = hub_db
            .prepare(
                "SELECT path, name, finalized FROM files WHERE package_id = ?1 AND kind = 'file'",
            )
            .unwrap()
            .query_map([&packages[0].0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            entries.len(),
            files.len(),
            "after a crash at {point}, the package holds duplicate or missing entries: {entries:?}"
        );
        assert!(
            entries.iter().all(|e| e.2),
            "after a crash at {point}, entries are left unfinalized: {entries:?}"
        );
        let delivered: BTreeMap<String, String> = shared_contents(&world.client, link)
            .await
            .into_iter()
            .map(|(name, bytes)| (name, sha256(&bytes)))
            .collect();
        assert_eq!(delivered, expected, "after a crash at {point}");
        let received = hub_received(&world).await - received_before;
        assert!(
            received <= total + CONNECTIONS * UPLOAD_PART,
            "after a crash at {point}, {received} bytes were sent for {total}: more than what was in flight was sent again"
        );
    }
}

/// A world whose hub is reached only through a proxy (signed storage URLs included), and the
/// proxy, which cuts nothing until told to.
async fn lossy_world() -> (World, LossProxy) {
    let mut proxy = LossProxy::bind().await;
    let options = HubOptions {
        public_url: Some(format!("http://{}/", proxy.addr).parse().unwrap()),
        ..HubOptions::default()
    };
    let hub = TestHub::start_with(DataDir::new(), options).await;
    proxy.forward(hub.addr, 4096);
    (World::on(hub), proxy)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_through_a_lossy_network_arrives_intact() {
    let (world, proxy) = lossy_world().await;
    let files = dataset();
    let specs = files
        .iter()
        .map(|(folder, name, bytes)| FileSpec::file(name, bytes.clone()).at(folder))
        .collect();
    let (_, url) = world.shared(specs).await;
    // 30 % of the connections cut after at most 4 KiB, from now on.
    proxy.set_ratio(0.3);
    let dst = tempfile::tempdir().unwrap();
    let cloud_url = format!("http://{}/v1", proxy.addr);
    let mut config = engine_config(&cloud_url);
    config.retry.give_up_after = None;
    let agent = TestAgent::start(config).await;
    let id = agent.api.download(download_request(&url, dst.path())).await;
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    let expected: BTreeMap<String, String> = files
        .iter()
        .map(|(folder, name, bytes)| {
            let rel = Path::new("dailies day 1").join(folder).join(name);
            (rel.display().to_string(), sha256(bytes))
        })
        .collect();
    assert_eq!(tree(dst.path()), expected);
    assert!(proxy.cuts() > 0, "the proxy cut no connection");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_through_a_lossy_network_is_delivered_once() {
    let (world, proxy) = lossy_world().await;
    // Enough files that declarations are cut after the service took them.
    let files = dataset_of(150);
    let src = tempfile::tempdir().unwrap();
    for (folder, name, bytes) in &files {
        let dir = src.path().join("day 1").join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    proxy.set_ratio(0.3);
    let cloud_url = format!("http://{}/v1", proxy.addr);
    let mut config = engine_config(&cloud_url);
    config.retry.give_up_after = None;
    config.api_key = Some(world.api_key.clone());
    let agent = TestAgent::start(config).await;
    // The package is created while the upload is asked for, through the lossy network too:
    // asked again until it is (a refused creation leaves an empty package, never delivered).
    let mut created = None;
    for _ in 0..20 {
        let (status, answer) = agent
            .api
            .post(
                "/uploads",
                json!({"team_id": world.team_id, "paths": [src.path().join("day 1")]}),
            )
            .await;
        if status == 200 {
            created = Some(answer);
            break;
        }
    }
    let created = created.expect("the upload is created within 20 tries");
    let id = created["upload_id"].as_str().unwrap();
    let done = agent
        .api
        .wait_for("uploads", id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    let cut = proxy.cuts();
    proxy.set_ratio(0.0);
    let package_id = done["package_id"].as_str().unwrap();
    let hub_db = rusqlite::Connection::open(world.hub.data.path().join("hub.db")).unwrap();
    let entries: Vec<(String, bool)> = hub_db
        .prepare("SELECT name, finalized FROM files WHERE package_id = ?1 AND kind = 'file'")
        .unwrap()
        .query_map([package_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        entries.len(),
        files.len(),
        "duplicate or missing entries: {entries:?}"
    );
    assert!(entries.iter().all(|e| e.1), "{entries:?}");
    let delivered: BTreeMap<String, String> =
        shared_contents(&world.hub.client(), created["link"].as_str().unwrap())
            .await
            .into_iter()
            .map(|(name, bytes)| (name, sha256(&bytes)))
            .collect();
    let expected: BTreeMap<String, String> = files
        .iter()
        .map(|(_, name, bytes)| (name.clone(), sha256(bytes)))
        .collect();
    assert_eq!(delivered, expected);
    assert!(cut > 0, "the proxy cut no connection");
}

/// The hub's counter of part bytes received.
async fn hub_received(world: &World) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", world.hub.addr))
        .await
        .expect("the hub answers /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("masv_hub_storage_bytes_received_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the hub counts bytes received")
}

/// Every crash point in the code is in [`POINTS`] (so the tests above crash there), and every
/// point listed is in the code.
#[test]
fn the_list_of_crash_points_matches_the_code() {
    let mut found = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for piece in text.split("crash_point!(\"").skip(1) {
                    found.push(piece.split('"').next().unwrap().to_owned());
                }
            }
        }
    }
    found.sort();
    let mut listed: Vec<String> = POINTS.iter().map(|p| (*p).to_owned()).collect();
    listed.sort();
    assert_eq!(found, listed);
}
