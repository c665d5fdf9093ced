//! Conformance: the agent against the hub as a strict reference of `shared/spec/masv-api.md`,
//! section by section. Each test names the rule of the spec it checks; where the hub is strict
//! (page limits, `null` blueprints, counted link accesses) a raw request shows the hub refusing
//! what the spec refuses, and the agent is run against it end to end over real HTTP.
//!
//! A defect found by running the agent against an independent, docs-following server
//! (issue 12) gets its test here, so that our own hub can no longer hide it.

use std::path::Path;
use std::time::{Duration, Instant};

use masv_agent::transfer::EngineConfig;
use serde_json::{Value, json};

use crate::agent::{TestAgent, download_request, engine_config};
use crate::support::{
    DataDir, FileSpec, HubOptions, MIB, TestHub, World, pseudo_random_bytes, raw_http,
};

const LONG: Duration = Duration::from_secs(60);

/// An agent of `world`'s team, with its API key.
fn uploading(world: &World) -> EngineConfig {
    let mut config = engine_config(&world.hub.base_url);
    config.api_key = Some(world.api_key.clone());
    config
}

/// Downloads `link` through `agent` into `dst`, waits for the end, and returns the detail.
async fn fetched(agent: &TestAgent, link: &str, dst: &Path) -> Value {
    let id = agent.api.download(download_request(link, dst)).await;
    agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await
}

// ----- §2 Download flow -----

/// §2.3 + §5: names are only refused when they would leave the destination on this platform.
/// On Unix `a:b.txt` at the root of a package is a plain name (it was refused as "a drive").
#[tokio::test(flavor = "multi_thread")]
async fn s2_a_root_level_name_with_a_colon_is_a_plain_name_on_unix() {
    let world = World::new().await;
    let (_, link) = world
        .shared(vec![
            FileSpec::file("a:b.txt", b"colon".to_vec()),
            FileSpec::file("C:", b"drive-like".to_vec()).at("clips"),
        ])
        .await;
    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;
    let dst = tempfile::tempdir().unwrap();
    let done = fetched(&agent, &link, dst.path()).await;
    assert_eq!(done["state"], "complete", "{done}");
    let root = dst.path().join("dailies day 1");
    assert_eq!(std::fs::read(root.join("a:b.txt")).unwrap(), b"colon");
    assert_eq!(std::fs::read(root.join("clips/C:")).unwrap(), b"drive-like");
}

/// §2.3: `path` is the folder inside the package. An absolute one (from a hostile or careless
/// service) is re-rooted under the destination, as the README says, never written outside.
#[tokio::test(flavor = "multi_thread")]
async fn s2_an_absolute_entry_path_is_re_rooted_under_the_destination() {
    let hub = TestHub::start_with(
        DataDir::new(),
        HubOptions {
            accept_hostile_names: true,
            ..HubOptions::default()
        },
    )
    .await;
    let world = World::on(hub);
    let (_, link) = world
        .shared(vec![
            FileSpec::file("x.txt", b"rooted".to_vec()).at("/abs/olute"),
        ])
        .await;
    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;
    let dst = tempfile::tempdir().unwrap();
    let done = fetched(&agent, &link, dst.path()).await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(
        std::fs::read(dst.path().join("dailies day 1/abs/olute/x.txt")).unwrap(),
        b"rooted"
    );
    assert!(!Path::new("/abs/olute/x.txt").exists());
}

// ----- §3 Upload flow -----

/// §3 step 1, hub side: a directory entry carries no bytes, so file-add answers
/// `create_blueprint: null` (as a docs-following service does), a file a real blueprint.
#[tokio::test(flavor = "multi_thread")]
async fn s3_file_add_answers_a_null_blueprint_for_a_directory() {
    let world = World::new().await;
    let package = world.team_package(crate::support::named("folders")).await;
    let http = raw_http();
    let add = |body: Value| {
        http.post(world.hub.url(&format!("/packages/{}/files", package.id)))
            .header("X-Package-Token", package.access_token.expose())
            .json(&body)
            .send()
    };
    let answer = add(json!({"kind": "directory", "name": "empty", "path": "reel", "size": 0}))
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let body: Value = answer.json().await.unwrap();
    assert!(body["file"]["id"].is_string(), "{body}");
    assert!(
        body.get("create_blueprint").is_some_and(Value::is_null),
        "a directory's blueprint is null: {body}"
    );
    let answer = add(json!({"kind": "file", "name": "a.mov", "path": "reel", "size": 3}))
        .await
        .unwrap();
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["create_blueprint"]["method"], "POST", "{body}");
}

/// §3 step 1, agent side: a folder holding an empty subfolder is delivered (the agent
/// accepted only a blueprint object, so a `null` one failed the upload) and comes back down
/// with the empty folder recreated.
#[tokio::test(flavor = "multi_thread")]
async fn s3_a_folder_with_an_empty_subfolder_is_delivered() {
    let world = World::new().await;
    let src = tempfile::tempdir().unwrap();
    let reel = src.path().join("Reel");
    std::fs::create_dir_all(reel.join("empty")).unwrap();
    std::fs::create_dir_all(reel.join("cuts/also empty")).unwrap();
    let take = pseudo_random_bytes(7, MIB + 3);
    std::fs::write(reel.join("cuts/take.mov"), &take).unwrap();
    let agent = TestAgent::start(uploading(&world)).await;
    let (status, created) = agent
        .api
        .post(
            "/uploads",
            json!({"team_id": world.team_id, "paths": [reel], "package_name": "Reel"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["upload_id"].as_str().unwrap();
    let done = agent
        .api
        .wait_for("uploads", id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(done["files_total"], 3, "{done}");
    let link = done["link"].as_str().unwrap().to_owned();

    let dst = tempfile::tempdir().unwrap();
    let got = fetched(&agent, &link, dst.path()).await;
    assert_eq!(got["state"], "complete", "{got}");
    let root = dst.path().join("Reel/Reel");
    assert!(root.join("empty").is_dir(), "the empty folder arrives");
    assert!(root.join("cuts/also empty").is_dir());
    assert_eq!(std::fs::read(root.join("cuts/take.mov")).unwrap(), take);
}

#[allow(dead_code)]
async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
