//! Automations end to end: configuration files run by an agent with an embedded hub, files
//! dropped in watched folders, links and inboxes downloaded, reloads while running.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::{Api, ProcessAgent, TestAgent, engine_config};
use crate::support::{FileSpec, TestHub, World, pseudo_random_bytes};

const LONG: Duration = Duration::from_secs(90);

/// A folder with a config file in it, and the agent's state.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        Site {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config(&self, text: &str) -> PathBuf {
        let path = self.path("agent.toml");
        // Editors replace files: write beside, then rename over.
        let tmp = self.path(".agent.toml.swp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    /// An agent of `world`'s team, on its hub, running `file`.
    async fn agent_of(&self, world: &World, file: &Path) -> TestAgent {
        let mut engine = engine_config(&world.hub.base_url);
        engine.api_key = Some(world.api_key.clone());
        TestAgent::start_configured(self.dir.path(), engine, Some(file)).await
    }

    async fn agent(&self, file: &Path) -> TestAgent {
        // The embedded hub decides the cloud URL; the engine's own is overridden.
        TestAgent::start_configured(
            self.dir.path(),
            engine_config("http://127.0.0.1:9/v1"),
            Some(file),
        )
        .await
    }
}

/// The quickstart's chain: an outbox watched, sent as a link package, the link written to a
/// folder whose rule downloads it.
pub fn chain(extra: &str) -> String {
    format!(
        r#"
[hub]
listen = "127.0.0.1:0"
team = "Test"

[[watch]]
name = "outbox"
folder = "outbox"
settle = "300ms"
group = "batch"
package_name = "{{rule}} {{count}} files"
link_folder = "links"
{extra}
[watch.team]

[[download]]
name = "links"
links_folder = "links"
destination = "inbox"
"#
    )
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the agent has made `n` uploads, all complete.
async fn wait_for_uploads(agent: &TestAgent, n: usize) {
    let start = Instant::now();
    loop {
        let (_, uploads) = agent.api.get("/uploads").await;
        let list = uploads.as_array().cloned().unwrap_or_default();
        if list.len() >= n && list.iter().all(|u| u["state"] == "complete") {
            assert_eq!(list.len(), n, "{uploads}");
            return;
        }
        assert!(start.elapsed() < LONG, "waiting for {n} uploads: {uploads}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn automations(api: &Api) -> Value {
    let (status, answer) = api.get("/automations").await;
    assert_eq!(status, 200, "{answer}");
    answer
}

fn rule<'a>(answer: &'a Value, name: &str) -> &'a Value {
    answer["automations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no rule {name} in {answer}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn files_dropped_in_the_outbox_arrive_in_the_inbox_by_way_of_a_link() {
    let site = Site::new();
    std::fs::create_dir_all(site.path("outbox")).unwrap();
    let config = site.config(&chain("after = \"move\"\nmove_to = \"sent\"\n"));
    let agent = site.agent(&config).await;
    let big = pseudo_random_bytes(3, 6 * 1024 * 1024 + 1);
    std::fs::create_dir_all(site.path("outbox/reel 1")).unwrap();
    std::fs::write(site.path("outbox/reel 1/take1.mov"), &big).unwrap();
    std::fs::write(site.path("outbox/notes.txt"), b"use take 1").unwrap();

    let inbox = site.path("inbox");
    wait_until("both files in the inbox", LONG, || {
        files_under(&inbox)
            .iter()
            .filter(|p| p.extension().is_none_or(|x| x != "part"))
            .count()
            == 2
    })
    .await;
    let package = inbox.join("outbox 2 files");
    assert_eq!(
        std::fs::read(package.join("reel 1/take1.mov")).unwrap(),
        big
    );
    assert_eq!(
        std::fs::read(package.join("notes.txt")).unwrap(),
        b"use take 1"
    );
    wait_until("the sent files moved out of the outbox", LONG, || {
        site.path("sent/reel 1/take1.mov").exists()
    })
    .await;
    assert!(
        files_under(&site.path("outbox")).is_empty(),
        "{:?}",
        files_under(&site.path("outbox"))
    );
    let links = files_under(&site.path("links"));
    assert_eq!(links.len(), 1, "{links:?}");

    let status = automations(&agent.api).await;
    assert_eq!(status["config_error"], Value::Null);
    assert_eq!(rule(&status, "outbox")["counts"]["sent"], 2);
    assert_eq!(rule(&status, "links")["counts"]["sent"], 1);
    let (_, uploads) = agent.api.get("/uploads").await;
    assert_eq!(
        uploads.as_array().unwrap().len(),
        1,
        "one package for the batch: {uploads}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_sends_a_file_once_across_restarts_unless_it_changes() {
    let site = Site::new();
    std::fs::create_dir_all(site.path("outbox")).unwrap();
    std::fs::write(site.path("outbox/a.txt"), b"first").unwrap();
    std::fs::write(site.path("outbox/b.txt"), b"second").unwrap();
    let config = site.config(&chain("group = \"file\"\n").replace("group = \"batch\"\n", ""));
    let agent = site.agent(&config).await;
    wait_for_uploads(&agent, 2).await;
    agent.stop().await;

    // Present at start-up again: known to the ledger, not sent again; a changed one is.
    std::fs::write(site.path("outbox/b.txt"), b"second, revised").unwrap();
    let agent = site.agent(&config).await;
    wait_for_uploads(&agent, 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, uploads) = agent.api.get("/uploads").await;
    assert_eq!(
        uploads.as_array().unwrap().len(),
        3,
        "a.txt once, b.txt twice: {uploads}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn editing_the_file_changes_the_rules_and_a_broken_file_keeps_the_last_good_ones() {
    let site = Site::new();
    for d in ["outbox", "second"] {
        std::fs::create_dir_all(site.path(d)).unwrap();
    }
    let config = site.config(&chain(""));
    let agent = site.agent(&config).await;
    assert_eq!(
        automations(&agent.api).await["automations"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // A typo: the rules in force stay, and the error is shown.
    site.config(&chain("").replace("settle = ", "setle = "));
    let start = Instant::now();
    loop {
        let status = automations(&agent.api).await;
        if let Some(error) = status["config_error"].as_str() {
            assert!(
                error.contains("agent.toml:") && error.contains("setle"),
                "{error}"
            );
            break;
        }
        assert!(start.elapsed() < LONG, "the broken file was not noticed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(site.path("outbox/still.txt"), b"still watched").unwrap();
    wait_until("the old rule still works", LONG, || {
        !files_under(&site.path("links")).is_empty()
    })
    .await;

    // Fixed, with a second watch folder.
    let with_second = chain("")
        + "\n[[watch]]\nname = \"second\"\nfolder = \"second\"\nsettle = \"300ms\"\nlink_folder = \"links\"\n[watch.team]\n";
    site.config(&with_second);
    let start = Instant::now();
    loop {
        let status = automations(&agent.api).await;
        if status["config_error"].is_null() && status["automations"].as_array().unwrap().len() == 3
        {
            break;
        }
        assert!(
            start.elapsed() < LONG,
            "the fixed file was not taken: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(site.path("second/new.txt"), b"new rule").unwrap();
    wait_until("the new rule sends", LONG, || {
        files_under(&site.path("links")).len() == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_files_dropped_at_once_are_each_sent_exactly_once() {
    let site = Site::new();
    std::fs::create_dir_all(site.path("outbox")).unwrap();
    let config = site.config(&chain("").replace("settle = \"300ms\"", "settle = \"1s\""));
    let agent = site.agent(&config).await;
    for i in 0..10_000 {
        let dir = site.path(&format!("outbox/d{}", i % 20));
        if i < 20 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        std::fs::write(dir.join(format!("f{i}.txt")), format!("file {i}")).unwrap();
    }
    let start = Instant::now();
    loop {
        let status = automations(&agent.api).await;
        let counts = &rule(&status, "outbox")["counts"];
        if counts["sent"] == 10_000 {
            break;
        }
        assert!(counts["failed"] == 0, "{status}");
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "not all sent: {counts}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, uploads) = agent.api.get("/uploads").await;
    let files: u64 = uploads
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["files_total"].as_u64().unwrap())
        .sum();
    assert_eq!(files, 10_000, "every file in exactly one package");
    let (_, downloads) = agent.api.get("/downloads").await;
    let _ = downloads;
}

/// A watch folder queues what settles at once, service or not: each upload waits for its
/// package (the reason in its status) and goes when the service is back, each file once.
#[tokio::test(flavor = "multi_thread")]
async fn files_settled_while_the_service_is_down_are_queued_at_once_and_sent_once_it_is_back() {
    let World {
        hub,
        team_id,
        api_key,
        ..
    } = World::new().await;
    let addr = hub.addr;
    let data = hub.stop().await;
    let site = Site::new();
    std::fs::create_dir_all(site.path("drop")).unwrap();
    let config = site.config(&format!(
        r#"
[server]
api_key = "{key}"

[[watch]]
name = "drop"
folder = "drop"
settle = "200ms"
group = "file"
[watch.team]
team_id = "{team_id}"
"#,
        key = api_key.expose()
    ));
    let mut engine = engine_config(&format!("http://{addr}/v1"));
    engine.api_key = Some(api_key);
    let agent = TestAgent::start_configured(site.dir.path(), engine, Some(&config)).await;
    for name in ["a.mov", "b.mov", "c.mov"] {
        std::fs::write(site.path(&format!("drop/{name}")), name.repeat(1000)).unwrap();
    }
    let start = Instant::now();
    loop {
        let (_, uploads) = agent.api.get("/uploads").await;
        let list = uploads.as_array().cloned().unwrap_or_default();
        let waiting = list.iter().filter(|u| {
            u["state"] == "transferring"
                && u["package_id"].is_null()
                && u["package_name"].is_string()
                && u["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("waiting for the service"))
        });
        if list.len() == 3 && waiting.count() == 3 {
            break;
        }
        assert!(start.elapsed() < LONG, "three uploads waiting: {uploads}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        rule(&automations(&agent.api).await, "drop")["counts"]["queued"],
        3
    );

    let hub = TestHub::start_at(data, addr).await;
    wait_for_uploads(&agent, 3).await;
    let (_, uploads) = agent.api.get("/uploads").await;
    let mut names = Vec::new();
    for u in uploads.as_array().unwrap() {
        assert_eq!(u["error"], Value::Null, "{u}");
        let package_id = u["package_id"].as_str().expect("a package once sent");
        let (_, detail) = agent
            .api
            .get(&format!("/uploads/{}", u["upload_id"].as_str().unwrap()))
            .await;
        assert!(!package_id.is_empty());
        for f in detail["files"].as_array().unwrap() {
            names.push(f["name"].as_str().unwrap().to_owned());
        }
    }
    names.sort();
    assert_eq!(
        names,
        ["a.mov", "b.mov", "c.mov"],
        "each file in one package"
    );
    assert_eq!(
        rule(&automations(&agent.api).await, "drop")["counts"]["sent"],
        3
    );
    drop(hub);
}

/// A portal that refuses the rule's access code: the upload fails when its job creates the
/// package, and the rule shows why in its last error and its failed count.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_access_code_shows_in_the_rule_that_queued_the_upload() {
    let world = World::new().await;
    let site = Site::new();
    std::fs::create_dir_all(site.path("drop")).unwrap();
    std::fs::write(site.path("portal-code"), "not the code\n").unwrap();
    let config = site.config(&format!(
        r#"
[[watch]]
name = "vault"
folder = "drop"
settle = "200ms"
[watch.portal]
subdomain = "{subdomain}"
sender = "scanner@example.com"
access_code = {{ file = "{code}" }}
"#,
        subdomain = world.coded_portal.subdomain,
        code = site.path("portal-code").display(),
    ));
    let agent = site.agent_of(&world, &config).await;
    std::fs::write(site.path("drop/page.tif"), b"scan").unwrap();
    let start = Instant::now();
    loop {
        let status = automations(&agent.api).await;
        let vault = rule(&status, "vault");
        if vault["counts"]["failed"] == 1 {
            let error = vault["last_error"].as_str().unwrap_or_default();
            assert!(
                error.contains("creating the package") && error.contains("access code"),
                "{vault}"
            );
            break;
        }
        assert!(start.elapsed() < LONG, "the upload never failed: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, uploads) = agent.api.get("/uploads").await;
    assert_eq!(uploads[0]["state"], "error", "{uploads}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inbox_rule_fetches_portal_packages_once_into_a_folder_per_portal_with_owner_and_modes()
{
    assert!(
        rustix::process::geteuid().is_root(),
        "this test gives files away with chown: run the tests as root (CI does)"
    );
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let world = World::new().await;
    let site = Site::new();
    let config = site.config(&format!(
        r#"
[server]
cloud_url = "{}"
api_key = "{}"

[[download]]
name = "portal-inbox"
destination = "ingest"
schedule = "@hourly"
owner = {{ uid = 4242, gid = 4343 }}
file_mode = "0640"
folder_mode = "0750"
[download.inbox]
team_id = "{}"
since = "2020-01-01T00:00:00Z"
subfolder_per_portal = true
portal = "dailies"
"#,
        world.hub.base_url,
        world.api_key.expose(),
        world.team_id
    ));
    world
        .portal_upload(
            &world.open_portal,
            "Ep 1",
            vec![FileSpec::file("ep1.mov", b"episode one".to_vec())],
        )
        .await;
    let agent = site.agent_of(&world, &config).await;
    let file = site.path("ingest/dailies/Ep 1/ep1.mov");
    wait_until("the portal package downloaded", LONG, || file.exists()).await;
    assert_eq!(std::fs::read(&file).unwrap(), b"episode one");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.permissions().mode() & 0o777),
        (4242, 4343, 0o640)
    );
    let folder = std::fs::metadata(site.path("ingest/dailies/Ep 1")).unwrap();
    assert_eq!(
        (folder.uid(), folder.permissions().mode() & 0o777),
        (4242, 0o750)
    );

    // Run again: nothing new is fetched twice; a new package is.
    world
        .portal_upload(
            &world.open_portal,
            "Ep 2",
            vec![FileSpec::file("ep2.mov", b"episode two".to_vec())],
        )
        .await;
    let (status, _) = agent
        .api
        .post("/automations/portal-inbox/run", serde_json::json!({}))
        .await;
    assert_eq!(status, 200);
    wait_until("the second package", LONG, || {
        site.path("ingest/dailies/Ep 2/ep2.mov").exists()
    })
    .await;
    let (_, downloads) = agent.api.get("/downloads").await;
    assert_eq!(downloads.as_array().unwrap().len(), 2, "{downloads}");
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_rules_and_closed_windows_hold_their_transfers() {
    let site = Site::new();
    std::fs::create_dir_all(site.path("outbox")).unwrap();
    // A window that is never open today: only on the day after tomorrow.
    let day = (chrono::Local::now() + chrono::Duration::days(2))
        .format("%a")
        .to_string()
        .to_lowercase();
    let config = site.config(&chain(&format!(
        "window = {{ days = [\"{day}\"], start = \"00:00\", end = \"00:01\" }}\n"
    )));
    let agent = site.agent(&config).await;
    std::fs::write(site.path("outbox/held.txt"), b"wait for the window").unwrap();
    let start = Instant::now();
    loop {
        let (_, uploads) = agent.api.get("/uploads").await;
        if let Some(u) = uploads.as_array().unwrap().first() {
            // Started as created, paused at once: never a byte outside the window.
            assert_eq!(
                u["bytes_done"], 0,
                "outside its window the upload waits: {u}"
            );
            if u["state"] == "paused" {
                break;
            }
        }
        assert!(start.elapsed() < LONG);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = agent
        .api
        .post("/automations/outbox/disable", serde_json::json!({}))
        .await;
    assert_eq!(status, 200);
    let status = automations(&agent.api).await;
    assert_eq!(rule(&status, "outbox")["state"], "disabled");
    let (status, missing) = agent
        .api
        .post("/automations/nope/run", serde_json::json!({}))
        .await;
    assert_eq!(status, 404, "{missing}");
}

#[test]
fn config_check_exits_1_and_prints_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = \"x\"\n[[watch]]\nname = \"w\"\nfolder = \"/x\"\nsettle = \"soon\"\n[watch.portal]\nsubdomain = \"s\"\nsender = \"a@b.c\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_masv"))
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:2:1: listen") && err.contains("bad.toml:6:1: settle"),
        "{err}"
    );
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_masv"))
        .args([
            "config",
            "check",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/configs/quickstart.toml"
            ),
        ])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_dropped_in_goes_as_one_package_and_is_deleted_once_sent() {
    let site = Site::new();
    std::fs::create_dir_all(site.path("outbox")).unwrap();
    let config = site.config(
        &chain("after = \"delete\"\n")
            .replace("group = \"batch\"", "group = \"folder\"")
            .replace("{rule} {count} files", "{folder}"),
    );
    let agent = site.agent(&config).await;
    let staging = site.path("staging/Show A");
    std::fs::create_dir_all(staging.join("day1")).unwrap();
    std::fs::write(staging.join("day1/a.mov"), b"a").unwrap();
    std::fs::write(staging.join("b.mov"), b"b").unwrap();
    std::fs::rename(&staging, site.path("outbox/Show A")).unwrap();
    std::fs::write(site.path("outbox/loose.txt"), b"alone").unwrap();
    wait_for_uploads(&agent, 2).await;
    let (_, uploads) = agent.api.get("/uploads").await;
    let mut names: Vec<(String, u64)> = uploads
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["package_name"].as_str().unwrap().to_owned(),
                u["files_total"].as_u64().unwrap(),
            )
        })
        .collect();
    names.sort();
    assert_eq!(names, [("Show A".to_owned(), 2), ("outbox".to_owned(), 1)]);
    wait_until("sent files deleted", LONG, || {
        files_under(&site.path("outbox")).is_empty()
    })
    .await;
    assert!(
        !site.path("outbox/Show A").exists(),
        "the emptied folder goes too"
    );
    wait_until("both packages downloaded", LONG, || {
        site.path("inbox/Show A/Show A/day1/a.mov").exists()
            && site.path("inbox/outbox/loose.txt").exists()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_link_rule_fetches_its_package_once_and_a_swept_folder_waits_for_run() {
    let world = World::new().await;
    let (_, url) = world
        .shared(vec![FileSpec::file("cut.mov", b"the cut".to_vec())])
        .await;
    let site = Site::new();
    std::fs::create_dir_all(site.path("drop")).unwrap();
    let config = site.config(&format!(
        r#"
[server]
api_key = "{key}"

[[download]]
name = "nightly"
link = "{url}"
schedule = "@yearly"
destination = "incoming"

[[watch]]
name = "swept"
folder = "drop"
sweep = "@yearly"
settle = "200ms"
[watch.team]
team_id = "{team}"
"#,
        key = world.api_key.expose(),
        team = world.team_id
    ));
    let agent = site.agent_of(&world, &config).await;
    let file = site.path("incoming/dailies day 1/cut.mov");
    wait_until("the link's package", LONG, || file.exists()).await;
    let (status, _) = agent
        .api
        .post("/automations/nightly/run", serde_json::json!({}))
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, downloads) = agent.api.get("/downloads").await;
    assert_eq!(
        downloads.as_array().unwrap().len(),
        1,
        "the same package is not fetched twice: {downloads}"
    );
    let status = automations(&agent.api).await;
    assert!(
        rule(&status, "nightly")["next_run"].as_str().is_some(),
        "{status}"
    );

    // The swept folder sends nothing until its schedule (next year) or a run.
    std::fs::write(site.path("drop/report.pdf"), b"report").unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, uploads) = agent.api.get("/uploads").await;
    assert!(uploads.as_array().unwrap().is_empty(), "{uploads}");
    let (status, _) = agent
        .api
        .post("/automations/swept/run", serde_json::json!({}))
        .await;
    assert_eq!(status, 200);
    wait_for_uploads(&agent, 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_polled_portal_folder_sends_only_finished_files_and_an_inbox_rule_fetches_them() {
    let world = World::new().await;
    let site = Site::new();
    std::fs::create_dir_all(site.path("scans")).unwrap();
    // The access code comes from a file, never from the config itself.
    std::fs::write(site.path("portal-code"), "open sesame\n").unwrap();
    let config = site.config(&format!(
        r#"
[server]
api_key = "{key}"

[[watch]]
name = "scans"
folder = "scans"
mode = "poll"
poll_interval = "200ms"
settle = "600ms"
group = "file"
package_name = "{{file}}"
after = "move"
move_to = "sent"
[watch.portal]
subdomain = "{subdomain}"
sender = "scanner@example.com"
access_code = {{ file = "{code}" }}

[[download]]
name = "inbox"
destination = "ingest"
schedule = "@yearly"
[download.inbox]
team_id = "{team}"
portal = "{subdomain}"
subfolder_per_portal = true
"#,
        key = world.api_key.expose(),
        team = world.team_id,
        subdomain = world.coded_portal.subdomain,
        code = site.path("portal-code").display(),
    ));
    let agent = site.agent_of(&world, &config).await;

    // Written slowly, as over a network share: polled size and time change until the end.
    let scan = pseudo_random_bytes(9, 64 * 1024);
    let path = site.path("scans/page.tif");
    for piece in scan.chunks(8 * 1024) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, piece).unwrap();
        drop(file);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_for_uploads(&agent, 1).await;
    let (_, uploads) = agent.api.get("/uploads").await;
    assert_eq!(uploads[0]["kind"], "portal", "{uploads}");
    assert_eq!(uploads[0]["package_name"], "page.tif", "{uploads}");
    wait_until("the sent file moved", LONG, || {
        site.path("sent/page.tif").exists() && !path.exists()
    })
    .await;

    // The team's inbox rule fetches it into the portal's folder, whole.
    let fetched = site.path(&format!(
        "ingest/{}/page.tif/page.tif",
        world.coded_portal.subdomain
    ));
    let start = Instant::now();
    while !fetched.exists() {
        assert!(start.elapsed() < LONG, "the inbox rule did not fetch it");
        agent
            .api
            .post("/automations/inbox/run", serde_json::json!({}))
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_until("the download complete", LONG, || {
        std::fs::read(&fetched).is_ok_and(|b| b == scan)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_held_outside_its_window_resumes_when_the_window_opens() {
    // The window opens at the next minute (UTC): leave time to queue the upload before it.
    let mut now = chrono::Utc::now();
    if chrono::Timelike::second(&now) > 45 {
        tokio::time::sleep(Duration::from_secs(16)).await;
        now = chrono::Utc::now();
    }
    let opens = now + chrono::Duration::minutes(1);
    let site = Site::new();
    std::fs::create_dir_all(site.path("outbox")).unwrap();
    let config = site.config(&chain(&format!(
        "window = {{ start = \"{}\", end = \"{}\" }}\ntimezone = \"UTC\"\n",
        opens.format("%H:%M"),
        (opens + chrono::Duration::hours(1)).format("%H:%M")
    )));
    let agent = site.agent(&config).await;
    std::fs::write(site.path("outbox/late.txt"), b"after the window opens").unwrap();
    let start = Instant::now();
    // The engine starts a job as it creates it; the rule pauses it at once, before any byte.
    let id = loop {
        let (_, uploads) = agent.api.get("/uploads").await;
        if let Some(u) = uploads.as_array().unwrap().first() {
            assert_eq!(u["bytes_done"], 0, "nothing sent outside the window: {u}");
            if u["state"] == "paused" {
                break u["upload_id"].as_str().unwrap().to_owned();
            }
            assert_eq!(u["state"], "transferring", "{u}");
        }
        assert!(start.elapsed() < LONG);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Held, and it says until when; resuming it by hand is refused with the same reason.
    let (_, held) = agent.api.get(&format!("/uploads/{id}")).await;
    let expected = format!("waiting for window (opens {} UTC)", opens.format("%H:%M"));
    assert_eq!(held["waiting"], expected.as_str(), "{held}");
    let (status, refused) = agent
        .api
        .post(&format!("/uploads/{id}/resume"), serde_json::json!({}))
        .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains(&expected) && m.contains("by itself")),
        "{refused}"
    );
    let done = agent
        .api
        .wait_for(
            "uploads",
            &id,
            &["complete", "error"],
            Duration::from_secs(100),
        )
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    assert!(
        chrono::Utc::now().timestamp() >= opens.timestamp() / 60 * 60,
        "sent only once the window opened"
    );
    wait_until("the package downloaded", LONG, || {
        site.path("inbox/outbox 1 files/late.txt").exists()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_rules_and_the_cli_drives_them() {
    let site = Site::new();
    for d in ["outbox", "second", "real"] {
        std::fs::create_dir_all(site.path(d)).unwrap();
    }
    // The config is a symlink to a file elsewhere (as a deployment tool links it): changing that
    // file makes no event in the config's folder, so only SIGHUP can apply it.
    let root = site.dir.path().display().to_string();
    let absolute = |text: String| {
        text.replace("folder = \"", &format!("folder = \"{root}/"))
            .replace("destination = \"", &format!("destination = \"{root}/"))
    };
    let real = site.path("real/agent.toml");
    std::fs::write(&real, absolute(chain(""))).unwrap();
    std::os::unix::fs::symlink(&real, site.path("agent.toml")).unwrap();
    let agent = ProcessAgent::start(
        site.dir.path(),
        "http://127.0.0.1:9/v1",
        &["--config", site.path("agent.toml").to_str().unwrap()],
        None,
    )
    .await;
    let base = agent.api.base.trim_end_matches("/api/v1").to_owned();
    let masv = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_masv"))
            .args(["automation", "--agent-url", &base])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, listed, _) = masv(&["ls"]);
    assert_eq!(code, Some(0));
    assert!(
        listed.contains("outbox") && listed.contains("links") && !listed.contains("second"),
        "{listed}"
    );

    let with_second = chain("")
        + "\n[[watch]]\nname = \"second\"\nfolder = \"second\"\nsettle = \"300ms\"\nlink_folder = \"links\"\n[watch.team]\n";
    std::fs::write(&real, absolute(with_second)).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        automations(&agent.api).await["automations"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "no event names the change: nothing reloads before the signal"
    );
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(agent.pid() as i32).unwrap(),
        rustix::process::Signal::HUP,
    )
    .unwrap();
    let start = Instant::now();
    while automations(&agent.api).await["automations"]
        .as_array()
        .unwrap()
        .len()
        != 3
    {
        assert!(start.elapsed() < LONG, "SIGHUP did not reload the rules");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (code, status, _) = masv(&["status", "second"]);
    assert_eq!(code, Some(0));
    assert!(status.contains("\"name\": \"second\""), "{status}");
    assert_eq!(masv(&["disable", "second"]).0, Some(0));
    let (_, listed, _) = masv(&["ls"]);
    let line = listed.lines().find(|l| l.starts_with("second")).unwrap();
    assert!(line.contains("disabled"), "{listed}");
    assert_eq!(masv(&["enable", "second"]).0, Some(0));
    assert_eq!(masv(&["run", "second"]).0, Some(0));
    std::fs::write(site.path("second/new.txt"), b"sent by the reloaded rule").unwrap();
    wait_until("the new rule sends", LONG, || {
        !files_under(&site.path("links")).is_empty()
    })
    .await;
    let (code, _, err) = masv(&["run", "nope"]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("nope") && err.contains("masv automation ls"),
        "{err}"
    );
}

/// `GET /readyz` and `GET /metrics` of an agent, beside its API.
async fn beside_api(api: &Api, path: &str) -> (u16, String) {
    let url = api.base.replace("/api/v1", path);
    let response = reqwest::get(url).await.expect("the agent answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_whose_folder_is_mounted_late_starts_by_itself_and_monitoring_sees_it() {
    let world = World::new().await;
    let site = Site::new();
    let file = site.config(&format!(
        r#"
[[watch]]
name = "late"
folder = "nas/outbox"
settle = "200ms"
portal = {{ subdomain = "{}", sender = "dit@example.com" }}
"#,
        world.open_portal.subdomain
    ));
    let agent = site.agent_of(&world, &file).await;
    // The share is not mounted: the rule is in error, and readiness and metrics say so.
    let mut seen = false;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let (ready, body) = beside_api(&agent.api, "/readyz").await;
        let (_, metrics) = beside_api(&agent.api, "/metrics").await;
        if ready == 503
            && body.contains("late")
            && metrics.contains("masv_agent_rule_up{rule=\"late\"} 0")
        {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "readiness and metrics show the rule in error");
    let (health, _) = beside_api(&agent.api, "/healthz").await;
    assert_eq!(health, 200, "liveness does not fail for a rule");

    // Mounted 1.5 s later: the rule starts by itself and sends what is dropped there.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::fs::create_dir_all(site.path("nas/outbox")).unwrap();
    let start = Instant::now();
    loop {
        let answer = automations(&agent.api).await;
        if rule(&answer, "late")["state"] == "watching" {
            break;
        }
        assert!(start.elapsed() < LONG, "{answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(site.path("nas/outbox/take.mov"), b"frames").unwrap();
    wait_for_uploads(&agent, 1).await;
    let (ready, body) = beside_api(&agent.api, "/readyz").await;
    assert_eq!(ready, 200, "{body}");
    let start = Instant::now();
    loop {
        let (_, metrics) = beside_api(&agent.api, "/metrics").await;
        if metrics.contains("masv_agent_rule_up{rule=\"late\"} 1")
            && metrics.contains("masv_agent_rule_last_success_timestamp_seconds{rule=\"late\"}")
        {
            break;
        }
        assert!(start.elapsed() < LONG, "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = automations(&agent.api).await;
    assert!(
        rule(&answer, "late")["last_success"].is_string(),
        "{answer}"
    );
}

/// The packages on the hub with `name`: (sender, number of files).
fn hub_packages(world: &World, name: &str) -> Vec<(String, i64)> {
    let db = rusqlite::Connection::open(world.hub.data.path().join("hub.db")).unwrap();
    db.prepare(
        "SELECT sender, (SELECT COUNT(*) FROM files f WHERE f.package_id = p.id) \
         FROM packages p WHERE name = ?1",
    )
    .unwrap()
    .query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn editing_any_key_of_a_rule_restarts_it_with_the_new_behaviour() {
    let world = World::new().await;
    let (_, link) = world
        .shared(vec![FileSpec::file("cut.mov", b"the cut".to_vec())])
        .await;
    let site = Site::new();
    for d in ["a", "b", "links"] {
        std::fs::create_dir_all(site.path(d)).unwrap();
    }
    let portal = &world.open_portal.subdomain;
    let rules = |folder: &str, sender: &str, name: &str, include: &str, destination: &str| {
        format!(
            r#"
[[watch]]
name = "out"
folder = "{folder}"
settle = "200ms"
include = ["{include}"]
package_name = "{name}"
portal = {{ subdomain = "{portal}", sender = "{sender}" }}

[[download]]
name = "links"
links_folder = "links"
destination = "{destination}"
"#
        )
    };
    let file = site.config(&rules("a", "one@example.com", "first", "*.mov", "inbox1"));
    let agent = site.agent_of(&world, &file).await;
    std::fs::write(site.path("a/x.mov"), b"x").unwrap();
    std::fs::write(site.path("a/skip.txt"), b"not included").unwrap();
    wait_for_uploads(&agent, 1).await;
    assert_eq!(
        hub_packages(&world, "first"),
        vec![("one@example.com".to_owned(), 1)]
    );

    // Every kind of key changes at once: a path, an inline table, a string, an array (watch
    // rule) and the destination (download rule). The file is saved as an editor does.
    site.config(&rules("b", "two@example.com", "second", "*.wav", "inbox2"));
    let start = Instant::now();
    loop {
        // The restarted rule watches `b`: a file there is sent by the new rule.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (_, uploads) = agent.api.get("/uploads").await;
        if uploads.as_array().unwrap().len() > 1 {
            break;
        }
        std::fs::write(site.path("b/y.wav"), b"y").unwrap();
        assert!(start.elapsed() < LONG, "the edited rule never sent b/y.wav");
    }
    std::fs::write(site.path("b/z.mov"), b"no longer included").unwrap();
    std::fs::write(site.path("a/w.mov"), b"no longer watched").unwrap();
    wait_for_uploads(&agent, 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, uploads) = agent.api.get("/uploads").await;
    assert_eq!(uploads.as_array().unwrap().len(), 2, "{uploads}");
    assert_eq!(
        hub_packages(&world, "second"),
        vec![("two@example.com".to_owned(), 1)]
    );

    // The download rule puts what it fetches where it now says.
    std::fs::write(site.path("links/vendor.url"), &link).unwrap();
    wait_until("the link fetched into inbox2", LONG, || {
        site.path("inbox2/dailies day 1/cut.mov").exists()
    })
    .await;
    assert!(!site.path("inbox1").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configuration_named_by_a_bare_file_name_is_watched() {
    let world = World::new().await;
    let site = Site::new();
    std::fs::create_dir_all(site.path("outbox")).unwrap();
    site.config("");
    let agent = ProcessAgent::start_with(
        site.path("").as_path(),
        &world.hub.base_url,
        &["--config", "agent.toml"],
        |c| {
            c.current_dir(site.path(""));
            c.env("MASV_API_KEY", world.api_key.expose());
        },
    )
    .await;
    site.config(&format!(
        "[[watch]]\nname = \"added\"\nfolder = \"outbox\"\nportal = {{ subdomain = \"{}\", sender = \"a@example.com\" }}\n",
        world.open_portal.subdomain
    ));
    let start = Instant::now();
    loop {
        let (_, status) = agent.api.get("/automations").await;
        if status["automations"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["name"] == "added"))
        {
            break;
        }
        assert!(start.elapsed() < LONG, "the edit was not seen: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn config_check_without_secrets_lints_a_file_whose_secrets_are_elsewhere() {
    let site = Site::new();
    let file = site.config(
        "[server]\napi_key = { file = \"/nonexistent/masv-api-key\" }\n\n[[watch]]\nname = \"out\"\nfolder = \"outbox\"\n[watch.team]\n",
    );
    let check = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_masv"))
            .args(["config", "check"])
            .args(extra)
            .arg(&file)
            .output()
            .unwrap()
    };
    let strict = check(&[]);
    assert_eq!(strict.status.code(), Some(1));
    let said = String::from_utf8_lossy(&strict.stderr);
    assert!(
        said.contains("api_key") && said.contains("agent.toml:2:"),
        "{said}"
    );
    let lint = check(&["--no-secrets"]);
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stderr)
    );
    assert!(String::from_utf8_lossy(&lint.stdout).contains("1 rules"));
}
