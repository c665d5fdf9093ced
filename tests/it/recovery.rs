//! Unattended recovery: transient faults cost time, never a delivery, and the agent says what
//! it is waiting for.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::agent::{ProcessAgent, TestAgent, download_request, engine_config};
use crate::support::{
    DataDir, FileSpec, HubOptions, MIB, TestHub, World, pseudo_random_bytes, shared_contents,
};
use masv_agent::hub::Faults;

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn transfers_outlive_an_outage_longer_than_any_retry_window_and_say_they_wait() {
    let slow = Faults {
        delay: Duration::from_millis(30),
        ..Faults::default()
    };
    let hub = TestHub::start_with(DataDir::new(), HubOptions::faults(slow.clone())).await;
    let world = World::on(hub);
    let down_bytes = pseudo_random_bytes(5, 30 * MIB);
    let (_, url) = world
        .shared(vec![FileSpec::file("reel.mov", down_bytes.clone())])
        .await;
    let src = tempfile::tempdir().unwrap();
    let up_bytes = pseudo_random_bytes(6, 24 * MIB);
    std::fs::write(src.path().join("grade.mov"), &up_bytes).unwrap();

    // The backoff capped at 200 ms (shortened by configuration), never giving up.
    let mut config = engine_config(&world.hub.base_url);
    config.retry.give_up_after = None;
    config.api_key = Some(world.api_key.clone());
    config.max_connections = 2;
    let agent = TestAgent::start(config).await;
    let dst = tempfile::tempdir().unwrap();
    let download = agent.api.download(download_request(&url, dst.path())).await;
    let (status, created) = agent
        .api
        .post(
            "/uploads",
            json!({"team_id": world.team_id, "paths": [src.path().join("grade.mov")], "chunk_size": "5MiB"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let upload = created["upload_id"].as_str().unwrap().to_owned();
    let link = created["link"].as_str().unwrap().to_owned();
    agent
        .api
        .wait_for_bytes("downloads", &download, 2 * MIB as u64, LONG)
        .await;

    // The service goes away for longer than the old retry window (12 tries, ~2.5 s here).
    let World { hub, client, .. } = world;
    let addr = hub.addr;
    let data = hub.stop().await;
    let outage = Instant::now();
    let mut seen_waiting = (false, false);
    while outage.elapsed() < Duration::from_secs(5) {
        for (kind, id, seen) in [
            ("downloads", &download, &mut seen_waiting.0),
            ("uploads", &upload, &mut seen_waiting.1),
        ] {
            let (_, detail) = agent.api.get(&format!("/{kind}/{id}")).await;
            assert_ne!(detail["state"], "error", "{detail}");
            if detail["waiting"].as_str().is_some() && detail["next_try_at"].as_str().is_some() {
                *seen = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen_waiting,
        (true, true),
        "both transfers said they wait, why and until when"
    );
    let (_, list) = agent.api.get("/downloads").await;
    assert!(
        list[0]["waiting"].as_str().is_some(),
        "ls shows it too: {list}"
    );

    // Back: both complete by themselves.
    let hub = TestHub::start_with(
        data,
        HubOptions {
            addr: Some(addr),
            faults: slow,
            ..HubOptions::default()
        },
    )
    .await;
    for (kind, id) in [("downloads", &download), ("uploads", &upload)] {
        let done = agent
            .api
            .wait_for(kind, id, &["complete", "error"], LONG)
            .await;
        assert_eq!(done["state"], "complete", "{done}");
        assert!(done["waiting"].is_null(), "{done}");
    }
    assert!(std::fs::read(dst.path().join("dailies day 1/reel.mov")).unwrap() == down_bytes);
    let delivered = shared_contents(&client, &link).await;
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].1 == up_bytes);
    drop(hub);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_the_service_down_exits_within_two_seconds() {
    let world = World::new().await;
    let (_, url) = world
        .shared(vec![FileSpec::file(
            "reel.mov",
            pseudo_random_bytes(9, 8 * MIB),
        )])
        .await;
    let data = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    // Storage refuses everything: every chunk waits for a retry.
    let refusing = TestHub::refusing(world.hub.data.clone()).await;
    let agent = ProcessAgent::start(data.path(), &refusing.base_url, &[], None).await;
    let id = agent.api.download(download_request(&url, dst.path())).await;
    let start = Instant::now();
    loop {
        let (_, detail) = agent.api.get(&format!("/downloads/{id}")).await;
        if detail["waiting"].as_str().is_some() {
            break;
        }
        assert!(
            start.elapsed() < LONG,
            "the download never waited: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.sigterm();
    let stopping = Instant::now();
    let status = agent.exit_status(Duration::from_secs(10)).await;
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "SIGTERM took {:?} with the service down",
        stopping.elapsed()
    );
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_that_gave_up_on_an_outage_resumes_by_itself_once_the_service_is_back() {
    let world = World::new().await;
    let bytes = pseudo_random_bytes(12, 3 * MIB);
    let (_, url) = world
        .shared(vec![FileSpec::file("take.mov", bytes.clone())])
        .await;
    // Storage down; the agent gives up after 1.5 s of failures (configured so).
    let refusing = TestHub::refusing(world.hub.data.clone()).await;
    let agent = TestAgent::start(engine_config(&refusing.base_url)).await;
    let dst = tempfile::tempdir().unwrap();
    let id = agent.api.download(download_request(&url, dst.path())).await;
    let failed = agent
        .api
        .wait_for("downloads", &id, &["error", "complete"], LONG)
        .await;
    assert_eq!(failed["state"], "error", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("transient: ")),
        "{failed}"
    );
    // Storage is back on the same address: no one resumes it by hand.
    let _healed = refusing.heal().await;
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    assert!(std::fs::read(dst.path().join("dailies day 1/take.mov")).unwrap() == bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_link_rule_fetches_a_package_with_a_refused_file_once() {
    let hub = TestHub::start_with(
        DataDir::new(),
        HubOptions {
            accept_hostile_names: true,
            ..HubOptions::default()
        },
    )
    .await;
    let world = World::on(hub);
    let (_, url) = world
        .shared(vec![
            FileSpec::file("../../escaped.txt", b"x".to_vec()),
            FileSpec::file("cut.mov", pseudo_random_bytes(3, 3 * MIB)),
        ])
        .await;
    let site = tempfile::tempdir().unwrap();
    let config = site.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[download]]
name = "vendor"
link = "{url}"
schedule = "* * * * *"
destination = "incoming"
"#
        ),
    )
    .unwrap();
    let mut engine = engine_config(&world.hub.base_url);
    engine.api_key = Some(world.api_key.clone());
    let agent = TestAgent::start_configured(site.path(), engine, Some(&config)).await;
    let start = Instant::now();
    let first = loop {
        let (_, list) = agent.api.get("/downloads").await;
        if let Some(d) = list.as_array().and_then(|l| l.first())
            && (d["state"] == "complete" || d["state"] == "error")
        {
            break d.clone();
        }
        assert!(start.elapsed() < LONG, "{list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The file that can never arrive does not make the package unfetched.
    assert_eq!(first["state"], "complete", "{first}");
    assert!(
        std::fs::read(site.path().join("incoming/dailies day 1/cut.mov")).unwrap()
            == pseudo_random_bytes(3, 3 * MIB)
    );
    let sent = crate::agent::hub_bytes_sent(world.hub.addr).await;
    for _ in 0..3 {
        let (status, _) = agent.api.post("/automations/vendor/run", json!({})).await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (_, list) = agent.api.get("/downloads").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "fetched once: {list}");
    assert_eq!(
        crate::agent::hub_bytes_sent(world.hub.addr).await,
        sent,
        "no byte fetched again"
    );
}
