//! Uploads end to end: folders from disk through an agent to a hub, and back down again.

use std::path::Path;
use std::time::Duration;

use masv_agent::cloud::dto::InboxQuery;
use masv_agent::hub::Faults;
use masv_agent::transfer::EngineConfig;
use serde_json::{Value, json};

use crate::agent::{ProcessAgent, TestAgent, download_request, engine_config};
use crate::support::{
    DataDir, HubOptions, MIB, TestHub, World, pseudo_random_bytes, shared_contents,
};

const LONG: Duration = Duration::from_secs(60);

fn uploading(world: &World) -> EngineConfig {
    let mut config = engine_config(&world.hub.base_url);
    config.api_key = Some(world.api_key.clone());
    config
}

/// A folder as editors leave them: nested media, an empty folder, a zero-byte file, junk, and a
/// symlink that leads out of the folder.
fn footage(root: &Path) -> Vec<u8> {
    let big = pseudo_random_bytes(42, 11 * MIB + 5);
    std::fs::create_dir_all(root.join("Footage/day1/.fcpcache")).unwrap();
    std::fs::create_dir_all(root.join("Footage/renders")).unwrap();
    std::fs::write(root.join("Footage/day1/a.mov"), &big).unwrap();
    std::fs::write(root.join("Footage/day1/.fcpcache/cache"), b"junk").unwrap();
    std::fs::write(root.join("Footage/.DS_Store"), b"junk").unwrap();
    std::fs::write(root.join("Footage/desktop.ini"), b"junk").unwrap();
    std::fs::write(root.join("Footage/zero.txt"), b"").unwrap();
    std::fs::write(root.join("secret.txt"), b"not for sending").unwrap();
    std::os::unix::fs::symlink(root.join("secret.txt"), root.join("Footage/leak.txt")).unwrap();
    big
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_goes_up_as_a_link_package_and_comes_back_identical() {
    let world = World::new().await;
    let src = tempfile::tempdir().unwrap();
    let big = footage(src.path());
    let agent = TestAgent::start(uploading(&world)).await;
    let (status, created) = agent
        .api
        .post(
            "/uploads",
            json!({
                "team_id": world.team_id,
                "paths": [src.path().join("Footage")],
                "package_name": "Day 1",
                "chunk_size": "5MiB",
            }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["upload_id"].as_str().unwrap();
    let link = created["link"]
        .as_str()
        .expect("a link upload answers its link")
        .to_owned();
    let done = agent
        .api
        .wait_for("uploads", id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(done["kind"], "link");
    assert_eq!(done["link"], link);
    let names: Vec<&str> = done["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["a.mov", "renders", "zero.txt"],
        "junk and the outward symlink stay home"
    );

    let dst = tempfile::tempdir().unwrap();
    let down = agent
        .api
        .download(download_request(&link, dst.path()))
        .await;
    let got = agent
        .api
        .wait_for("downloads", &down, &["complete", "error"], LONG)
        .await;
    assert_eq!(got["state"], "complete", "{got}");
    let root = dst.path().join("Day 1/Footage");
    assert_eq!(std::fs::read(root.join("day1/a.mov")).unwrap(), big);
    assert!(root.join("renders").is_dir());
    assert_eq!(std::fs::read(root.join("zero.txt")).unwrap(), b"");
    assert!(!root.join("leak.txt").exists() && !root.join(".DS_Store").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn email_uploads_notify_every_recipient() {
    let world = World::new().await;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("cut.mov"), b"cut").unwrap();
    let agent = TestAgent::start(uploading(&world)).await;
    let (status, created) = agent
        .api
        .post(
            "/uploads",
            json!({
                "subdomain": world.team_id,
                "paths": [src.path().join("cut.mov")],
                "recipients": ["a@example.com", "b@example.com"],
                "password": "pw",
            }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    assert!(
        created.get("link").is_none(),
        "an email upload has no link of its own"
    );
    let id = created["upload_id"].as_str().unwrap();
    let done = agent
        .api
        .wait_for("uploads", id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(done["kind"], "team");
    let outbox: Vec<String> = std::fs::read_dir(world.hub.data.path().join("outbox"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(outbox.len(), 2);
    assert!(outbox.iter().any(|m| m.contains("To: a@example.com")));
}

#[tokio::test(flavor = "multi_thread")]
async fn portal_uploads_check_the_access_code_and_paths_before_sending() {
    let world = World::new().await;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("ep1.mov"), b"episode").unwrap();
    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;
    let request = |code: &str, path: &Path| {
        json!({
            "subdomain": world.coded_portal.subdomain,
            "sender_email": "editor@example.com",
            "paths": [path],
            "access_code": code,
            "package_name": "Episode 1",
            "metadata": {"show": "Pilot"},
        })
    };
    let (status, wrong) = agent
        .api
        .post(
            "/portals/uploads",
            request("nope", &src.path().join("ep1.mov")),
        )
        .await;
    assert_eq!(status, 401, "{wrong}");
    let missing = src.path().join("missing.mov");
    let (status, bad) = agent
        .api
        .post("/portals/uploads", request("open sesame", &missing))
        .await;
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["message"].as_str().unwrap().contains("missing.mov"),
        "{bad}"
    );
    let (status, unknown) = agent
        .api
        .post("/portals/uploads", json!({"subdomain": "nowhere", "sender_email": "a@b.c", "paths": [src.path().join("ep1.mov")]}))
        .await;
    assert_eq!(status, 404, "{unknown}");

    let (status, created) = agent
        .api
        .post(
            "/portals/uploads",
            request("open sesame", &src.path().join("ep1.mov")),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["upload_id"].as_str().unwrap();
    let done = agent
        .api
        .wait_for("uploads", id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(done["kind"], "portal");
    let inbox = world
        .client
        .team_inbox(
            &world.team_id,
            &world.api_key,
            &InboxQuery {
                portal: Some(world.coded_portal.id.clone()),
                ..InboxQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(inbox.records.len(), 1);
    assert_eq!(inbox.records[0].name, "Episode 1");
    assert_eq!(inbox.records[0].sender, "editor@example.com");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_auto_finalize_an_upload_waits_idle_takes_more_files_and_finalizes_once() {
    let world = World::new().await;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("one.txt"), b"one").unwrap();
    std::fs::write(src.path().join("two.txt"), b"two").unwrap();
    let mut config = uploading(&world);
    config.auto_finalize = false;
    let agent = TestAgent::start(config).await;
    let (_, created) = agent
        .api
        .post(
            "/uploads",
            json!({"team_id": world.team_id, "paths": [src.path().join("one.txt")]}),
        )
        .await;
    let id = created["upload_id"].as_str().unwrap().to_owned();
    let idle = agent
        .api
        .wait_for("uploads", &id, &["idle", "error"], LONG)
        .await;
    assert_eq!(idle["state"], "idle", "{idle}");
    let (status, early) = agent
        .api
        .post(&format!("/uploads/{id}/link"), json!({}))
        .await;
    assert_eq!(status, 409, "links wait for a complete upload: {early}");

    let (status, more) = agent
        .api
        .post(
            &format!("/uploads/{id}/files"),
            json!({"paths": [src.path().join("two.txt")]}),
        )
        .await;
    assert_eq!(status, 200, "{more}");
    let idle = agent
        .api
        .wait_for("uploads", &id, &["idle", "error"], LONG)
        .await;
    assert_eq!(idle["files_done"], 2, "{idle}");

    let (status, done) = agent
        .api
        .post(&format!("/uploads/{id}/finalize"), json!({}))
        .await;
    assert_eq!(
        (status, done["state"].as_str()),
        (200, Some("complete")),
        "{done}"
    );
    let (status, again) = agent
        .api
        .post(&format!("/uploads/{id}/finalize"), json!({}))
        .await;
    assert_eq!(
        (status, again["state"].as_str()),
        (200, Some("complete")),
        "finalizing twice is harmless"
    );
    let (status, more) = agent
        .api
        .post(
            &format!("/uploads/{id}/files"),
            json!({"paths": [src.path().join("two.txt")]}),
        )
        .await;
    assert_eq!(
        status, 409,
        "a finalized package takes no more files: {more}"
    );

    let (status, link) = agent
        .api
        .post(&format!("/uploads/{id}/link"), json!({}))
        .await;
    assert_eq!(status, 200, "{link}");
    for key in ["id", "secret", "email", "expiry", "locked"] {
        assert!(link.get(key).is_some(), "{key} in {link}");
    }
    let contents = shared_contents(&world.client, link["link"].as_str().unwrap()).await;
    assert_eq!(contents.len(), 2);
}

/// An upload of `files` (name, bytes) in parts of 5 MiB on one connection, through a hub whose
/// storage answers slowly; its id, link, and the folder the files are in.
async fn slow_upload(
    files: &[(&str, Vec<u8>)],
) -> (World, TestAgent, String, String, tempfile::TempDir) {
    let hub = TestHub::start_with(
        DataDir::new(),
        HubOptions::faults(Faults {
            delay: Duration::from_millis(200),
            ..Faults::default()
        }),
    )
    .await;
    let world = World::on(hub);
    let src = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (name, bytes) in files {
        std::fs::write(src.path().join(name), bytes).unwrap();
        paths.push(src.path().join(name));
    }
    let mut config = uploading(&world);
    config.max_connections = 1;
    let agent = TestAgent::start(config).await;
    let (status, created) = agent
        .api
        .post(
            "/uploads",
            json!({"team_id": world.team_id, "paths": paths, "chunk_size": "5MiB"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["upload_id"].as_str().unwrap().to_owned();
    let link = created["link"].as_str().unwrap().to_owned();
    (world, agent, id, link, src)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_rewritten_while_it_is_sent_is_sent_again_once_it_has_settled() {
    let first = pseudo_random_bytes(8, 16 * MIB);
    let (world, agent, id, link, src) = slow_upload(&[("grade.mov", first)]).await;
    agent
        .api
        .wait_for_bytes("uploads", &id, 5 * MIB as u64, LONG)
        .await;
    // Rewritten in place (same size) after its first part went: a new render.
    let second = pseudo_random_bytes(9, 16 * MIB);
    std::fs::write(src.path().join("grade.mov"), &second).unwrap();
    let done = agent
        .api
        .wait_for("uploads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    let delivered = shared_contents(&world.client, &link).await;
    assert_eq!(delivered.len(), 1);
    assert!(
        delivered[0].1 == second,
        "the settled version arrived, whole"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_still_growing_when_its_turn_comes_is_sent_as_it_settles() {
    let (world, agent, id, link, src) = slow_upload(&[
        ("a first.mov", pseudo_random_bytes(1, 11 * MIB)),
        ("b growing.mov", pseudo_random_bytes(2, MIB)),
    ])
    .await;
    agent
        .api
        .wait_for_bytes("uploads", &id, 5 * MIB as u64, LONG)
        .await;
    // The recorder is still writing the second file while the first one is sent.
    let mut grown = pseudo_random_bytes(2, MIB);
    grown.extend(pseudo_random_bytes(3, 3 * MIB));
    std::fs::write(src.path().join("b growing.mov"), &grown).unwrap();
    let done = agent
        .api
        .wait_for("uploads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    let delivered = shared_contents(&world.client, &link).await;
    let growing = delivered
        .iter()
        .find(|(name, _)| name == "b growing.mov")
        .unwrap();
    assert!(growing.1 == grown, "the grown file arrived whole");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_grows_while_it_is_sent_arrives_whole_once_it_has_settled() {
    let first = pseudo_random_bytes(8, 16 * MIB);
    let (world, agent, id, link, src) = slow_upload(&[("growing.mov", first.clone())]).await;
    agent
        .api
        .wait_for_bytes("uploads", &id, 5 * MIB as u64, LONG)
        .await;
    // Declared with 16 MiB, it grows after its first part went.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(src.path().join("growing.mov"))
        .unwrap();
    std::io::Write::write_all(&mut file, b"more frames").unwrap();
    // Not "idle" among the ends: with auto-finalize an upload is idle for a moment before its
    // package is finalized; one stuck there times out, its state shown.
    let done = agent
        .api
        .wait_for("uploads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    let delivered = shared_contents(&world.client, &link).await;
    let mut expected = first;
    expected.extend_from_slice(b"more frames");
    assert!(
        delivered[0].1 == expected,
        "it arrived whole, with what was added"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_upload_resumes_from_committed_parts_to_identical_files() {
    let hub = TestHub::start_with(
        DataDir::new(),
        HubOptions::faults(Faults {
            delay: Duration::from_millis(100),
            ..Faults::default()
        }),
    )
    .await;
    let world = World::on(hub);
    let src = tempfile::tempdir().unwrap();
    let bytes = pseudo_random_bytes(77, 40 * MIB + 11);
    std::fs::write(src.path().join("master.mxf"), &bytes).unwrap();
    let data = tempfile::tempdir().unwrap();
    let flags = ["--max-connections", "2"];
    let agent = ProcessAgent::start(
        data.path(),
        &world.hub.base_url,
        &flags,
        Some(&world.api_key),
    )
    .await;
    let (status, created) = agent
        .api
        .post("/uploads", json!({"team_id": world.team_id, "paths": [src.path().join("master.mxf")], "chunk_size": "5MiB"}))
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["upload_id"].as_str().unwrap().to_owned();
    let link = created["link"].as_str().unwrap().to_owned();
    agent
        .api
        .wait_for_bytes("uploads", &id, 15 * MIB as u64, LONG)
        .await;
    agent.kill_9();
    let received_before = hub_bytes_received(&world).await;

    let agent = ProcessAgent::start(
        data.path(),
        &world.hub.base_url,
        &flags,
        Some(&world.api_key),
    )
    .await;
    let done = agent
        .api
        .wait_for("uploads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "it resumed by itself: {done}");
    let received = hub_bytes_received(&world).await;
    assert!(
        received - received_before <= bytes.len() as u64 - 15 * MIB as u64 + 2 * 5 * MIB as u64,
        "after the restart only what was not committed (plus the 2 parts in flight) went up again"
    );
    let contents = shared_contents(&world.client, &link).await;
    assert!(
        contents == [("master.mxf".to_owned(), bytes)],
        "the hub holds exactly the file"
    );
}

async fn hub_bytes_received(world: &World) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", world.hub.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("masv_hub_storage_bytes_received_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// A crash between declaring a file and opening its multipart upload: the restarted agent opens
/// it from what it committed, instead of declaring the file again (a second, unfinished file
/// would keep the package from ever being finalized).
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_before_the_multipart_upload_opens_does_not_declare_the_file_twice() {
    // Storage refuses everything: the agent declares the file, then keeps retrying to open
    // its multipart upload.
    let refusing = TestHub::refusing(DataDir::new()).await;
    let World {
        hub: refusing,
        team_id,
        api_key,
        client,
        ..
    } = World::on(refusing);
    let src = tempfile::tempdir().unwrap();
    let bytes = pseudo_random_bytes(91, 3 * MIB);
    std::fs::write(src.path().join("take.mov"), &bytes).unwrap();
    let data = tempfile::tempdir().unwrap();
    let base_url = refusing.base_url.clone();
    let agent = ProcessAgent::start(data.path(), &base_url, &[], Some(&api_key)).await;
    let (status, created) = agent
        .api
        .post(
            "/uploads",
            json!({"team_id": team_id, "paths": [src.path().join("take.mov")]}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["upload_id"].as_str().unwrap().to_owned();
    let link = created["link"].as_str().unwrap().to_owned();
    // Declared, and the opening of its multipart upload refused and retried at least twice.
    let metrics = agent.api.base.replace("/api/v1", "/metrics");
    let start = std::time::Instant::now();
    loop {
        let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        let retries: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("masv_agent_retries_total "))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if retries >= 2 {
            break;
        }
        assert!(start.elapsed() < LONG, "no retry of the multipart upload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.kill_9();

    let _healthy = refusing.heal().await;
    let agent = ProcessAgent::start(data.path(), &base_url, &[], Some(&api_key)).await;
    let done = agent
        .api
        .wait_for("uploads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    let contents = shared_contents(&client, &link).await;
    assert!(
        contents == [("take.mov".to_owned(), bytes)],
        "declared once, and whole"
    );
}

/// Storage down longer than the retries last: the upload ends in error; once storage is back,
/// resuming it sends the failed file (its multipart upload opened from what was committed) and
/// the package arrives whole.
#[tokio::test(flavor = "multi_thread")]
async fn resuming_a_failed_upload_sends_its_failed_files_again() {
    let world = World::new().await;
    let refusing = TestHub::refusing(world.hub.data.clone()).await;
    let mut config = engine_config(&refusing.base_url);
    config.api_key = Some(world.api_key.clone());
    let agent = TestAgent::start(config).await;
    let src = tempfile::tempdir().unwrap();
    let bytes = pseudo_random_bytes(17, 2 * MIB + 9);
    std::fs::write(src.path().join("cut.mov"), &bytes).unwrap();
    let (status, created) = agent
        .api
        .post(
            "/uploads",
            json!({"team_id": world.team_id, "paths": [src.path().join("cut.mov")]}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["upload_id"].as_str().unwrap().to_owned();
    let failed = agent
        .api
        .wait_for("uploads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(failed["state"], "error", "{failed}");

    let _healthy = refusing.heal().await;
    let (status, resumed) = agent
        .api
        .post(&format!("/uploads/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, 200, "{resumed}");
    let done = agent
        .api
        .wait_for("uploads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    let contents = shared_contents(&world.client, created["link"].as_str().unwrap()).await;
    assert!(
        contents == [("cut.mov".to_owned(), bytes)],
        "the package arrived whole"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_pause_resume_and_are_deleted_by_state() {
    let hub = TestHub::start_with(
        DataDir::new(),
        HubOptions::faults(Faults {
            delay: Duration::from_millis(150),
            ..Faults::default()
        }),
    )
    .await;
    let world = World::on(hub);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(
        src.path().join("reel.mov"),
        pseudo_random_bytes(4, 20 * MIB),
    )
    .unwrap();
    let mut config = uploading(&world);
    config.max_connections = 1;
    let agent = TestAgent::start(config).await;
    let (_, created) = agent
        .api
        .post("/uploads", json!({"team_id": world.team_id, "paths": [src.path().join("reel.mov")], "chunk_size": "5MiB"}))
        .await;
    let id = created["upload_id"].as_str().unwrap().to_owned();
    let (status, paused) = agent.api.post("/uploads/pause", json!({})).await;
    assert_eq!((status, paused["upload_ids"].clone()), (200, json!([id])));
    let (_, detail) = agent.api.get(&format!("/uploads/{id}")).await;
    assert_eq!(detail["state"], "paused");
    let (status, _) = agent
        .api
        .post(&format!("/uploads/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, 200);
    let done = agent
        .api
        .wait_for("uploads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    let (status, deleted) = agent.api.delete("/uploads?states=complete").await;
    assert_eq!((status, deleted["upload_ids"].clone()), (200, json!([id])));
    let (_, list) = agent.api.get("/uploads").await;
    assert_eq!(list, Value::Array(vec![]));
    assert!(
        src.path().join("reel.mov").exists(),
        "deleting an upload never touches its source"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn team_uploads_without_an_api_key_say_how_to_give_one() {
    let world = World::new().await;
    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;
    let (status, answer) = agent
        .api
        .post(
            "/uploads",
            json!({"team_id": world.team_id, "paths": ["/etc/hostname"]}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("--api-key"),
        "{answer}"
    );
    let (status, answer) = agent
        .api
        .post(
            "/uploads",
            json!({"team_id": world.team_id, "paths": ["relative/path"]}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = agent
        .api
        .post(
            "/uploads",
            json!({"team_id": world.team_id, "paths": [], "colour": 1}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
}

/// Parts corrupted on their way to the storage (the hub flips a byte of half the part uploads):
/// each part's MD5, computed as it streams from disk, is not the ETag the storage answers, so
/// the part goes again with `Content-MD5`, and every file arrives byte-identical.
#[tokio::test(flavor = "multi_thread")]
async fn parts_corrupted_in_flight_are_sent_again_and_arrive_byte_identical() {
    let hub = TestHub::start_with(
        DataDir::new(),
        HubOptions::faults(Faults {
            flip_ratio: 0.5,
            ..Faults::default()
        }),
    )
    .await;
    let world = World::on(hub);
    let src = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("reel{i}.mov"),
                pseudo_random_bytes(70 + i, 16 * MIB + 3),
            )
        })
        .collect();
    for (name, bytes) in &files {
        std::fs::write(src.path().join(name), bytes).unwrap();
    }
    // A part may be flipped several times in a row: never given up.
    let mut config = uploading(&world);
    config.retry.give_up_after = None;
    let agent = TestAgent::start(config).await;
    let (status, created) = agent
        .api
        .post(
            "/uploads",
            json!({"team_id": world.team_id, "paths": [src.path()], "chunk_size": "5MiB"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["upload_id"].as_str().unwrap().to_owned();
    let done = agent
        .api
        .wait_for("uploads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    // 12 parts, each flipped with odds of one half: some were, and were retried.
    let metrics = agent.api.base.replace("/api/v1", "/metrics");
    let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    let retries: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("masv_agent_retries_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(retries > 0, "{text}");
    let mut delivered = shared_contents(&world.client, created["link"].as_str().unwrap()).await;
    delivered.sort();
    assert_eq!(delivered.len(), 3);
    for ((name, bytes), (got_name, got)) in files.iter().zip(&delivered) {
        assert!(got_name.ends_with(name.as_str()), "{got_name}");
        assert!(got == bytes, "{name} arrived altered");
    }
}

/// Every file's hash (xxh64 by default) is computed while its parts go, and shown with the file
/// in the transfer's detail; `[server] hash` chooses another format.
#[tokio::test(flavor = "multi_thread")]
async fn each_file_sent_has_its_hash_in_the_transfer_detail() {
    use masv_agent::mhl::{HashFormat, hash_data};
    let world = World::new().await;
    let src = tempfile::tempdir().unwrap();
    let big = pseudo_random_bytes(81, 16 * MIB + 3);
    std::fs::write(src.path().join("big.mov"), &big).unwrap();
    std::fs::write(src.path().join("small.txt"), b"hello\n").unwrap();
    for (format, name) in [
        (Some(HashFormat::Xxh64), "xxh64"),
        (Some(HashFormat::Sha256), "sha256"),
        (None, ""),
    ] {
        let mut config = uploading(&world);
        config.hash = format;
        let agent = TestAgent::start(config).await;
        let (_, done) = agent
            .api
            .upload_to_end(
                json!({"team_id": world.team_id, "paths": [src.path()], "chunk_size": "5MiB"}),
            )
            .await;
        assert_eq!(done["state"], "complete", "{done}");
        for file in done["files"].as_array().unwrap() {
            let bytes: &[u8] = if file["name"] == "big.mov" {
                &big
            } else {
                b"hello\n"
            };
            match format {
                Some(f) => assert_eq!(file["hash"], json!({ name: hash_data(f, bytes) }), "{file}"),
                None => assert!(file.get("hash").is_none(), "{file}"),
            }
        }
    }
}

/// `manifest = "ascmhl"`: the package carries an ASC MHL generation of its files, made from the
/// hashes computed while they were sent; downloaded, the package verifies with the ASC's
/// reference tool and with `masv verify`, and an altered file fails both.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_with_a_manifest_arrives_sealed_for_the_reference_tool() {
    let world = World::new().await;
    let src = tempfile::tempdir().unwrap();
    let big = footage(src.path());
    let agent = TestAgent::start(uploading(&world)).await;
    let (created, done) = agent
        .api
        .upload_to_end(json!({
            "team_id": world.team_id,
            "paths": [src.path().join("Footage")],
            "package_name": "Day 2",
            "chunk_size": "5MiB",
            "manifest": "ascmhl",
        }))
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    let names: Vec<&str> = done["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"ascmhl_chain.xml"), "{names:?}");

    let dst = tempfile::tempdir().unwrap();
    let link = created["link"].as_str().unwrap();
    let down = agent.api.download(download_request(link, dst.path())).await;
    let got = agent
        .api
        .wait_for("downloads", &down, &["complete", "error"], LONG)
        .await;
    assert_eq!(got["state"], "complete", "{got}");
    let package = dst.path().join("Day 2");
    assert_eq!(
        std::fs::read(package.join("Footage/day1/a.mov")).unwrap(),
        big
    );
    let run = |program: &str, args: &[&std::ffi::OsStr]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e} (installed by .ci/run: pip install ascmhl)"))
    };
    let masv = env!("CARGO_BIN_EXE_masv");
    for (program, verb) in [("ascmhl-debug", "verify"), (masv, "verify")] {
        let out = run(program, &[verb.as_ref(), package.as_os_str()]);
        assert!(
            out.status.success(),
            "{program} {verb}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut altered = big.clone();
    altered[5] ^= 1;
    std::fs::write(package.join("Footage/day1/a.mov"), altered).unwrap();
    for (program, verb) in [("ascmhl-debug", "verify"), (masv, "verify")] {
        let out = run(program, &[verb.as_ref(), package.as_os_str()]);
        assert!(
            !out.status.success(),
            "{program} {verb} passed an altered file"
        );
    }
}

/// A manifest is made from the hashes computed while sending: with `[server] hash = "off"`
/// an upload asking for one is refused, naming the setting to change.
#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_without_hashes_is_refused_naming_the_setting() {
    let world = World::new().await;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a.txt"), b"a").unwrap();
    let mut config = uploading(&world);
    config.hash = None;
    let agent = TestAgent::start(config).await;
    let (status, body) = agent
        .api
        .post(
            "/uploads",
            json!({"team_id": world.team_id, "paths": [src.path()], "manifest": "ascmhl"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("[server] hash is off"), "{body}");
}
