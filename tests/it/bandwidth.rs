//! Bandwidth end to end: rate limits felt by real downloads and uploads over loopback, changed
//! through the API while bytes move, FIFO caps that queue transfers, and `[bandwidth]` from the
//! configuration file (reloaded when it changes).

use std::path::Path;
use std::time::{Duration, Instant};

use masv_agent::config::BandwidthSettings;
use masv_agent::transfer::EngineConfig;
use serde_json::{Value, json};

use crate::agent::{Api, TestAgent, download_request, engine_config};
use crate::support::{FileSpec, MIB, World, pseudo_random_bytes, timed};

const LONG: Duration = Duration::from_secs(60);

/// `[bandwidth]` settings written as JSON, checked.
fn settings(raw: Value) -> BandwidthSettings {
    BandwidthSettings::check(serde_json::from_value(raw).expect("bandwidth settings parse"))
        .expect("bandwidth settings check")
}

/// A finalized package holding `bytes` as `name`, and a share link to it.
async fn shared(world: &World, name: &str, bytes: &[u8]) -> String {
    let (_, url) = world
        .shared(vec![FileSpec::file(name, bytes.to_vec())])
        .await;
    url
}

/// Downloads `url` into `dst` and waits until it is complete.
async fn download(api: &Api, url: &str, dst: &Path) -> Value {
    let id = api.download(download_request(url, dst)).await;
    let done = api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    done
}

fn uploading(world: &World) -> EngineConfig {
    let mut config = engine_config(&world.hub.base_url);
    config.api_key = Some(world.api_key.clone());
    config
}

/// Sends `path` as a link upload and waits until it is complete; returns the share link.
async fn upload(api: &Api, world: &World, path: &Path) -> String {
    let (status, created) = api
        .post(
            "/uploads",
            json!({ "team_id": world.team_id, "paths": [path], "chunk_size": "5MiB" }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["upload_id"].as_str().unwrap();
    let done = api
        .wait_for("uploads", id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    created["link"].as_str().expect("a link upload").to_owned()
}

/// 6 MiB moved at about 2 MiB/s (`slow`) and without a limit (`unlimited`).
fn assert_paced(unlimited: Duration, slow: Duration) {
    eprintln!("6 MiB: unlimited {unlimited:?}, limited {slow:?}");
    assert!(
        slow >= Duration::from_millis(2500),
        "6 MiB at 2 MiB/s took only {slow:?}"
    );
    assert!(
        slow < Duration::from_secs(6),
        "the limit is a ceiling, not a crawl: {slow:?}"
    );
    assert!(
        unlimited * 2 < slow,
        "unlimited ({unlimited:?}) is much faster than limited ({slow:?})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_limited_to_2_mib_per_second_moves_6_mib_in_no_less_than_2_5_s() {
    let world = World::new().await;
    let bytes = pseudo_random_bytes(61, 6 * MIB);
    let url = shared(&world, "reel.mov", &bytes).await;
    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;
    let (free, limited) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    let (_, unlimited) = timed(download(&agent.api, &url, free.path())).await;
    let (status, view) = agent
        .api
        .put("/bandwidth", json!({"download": "2MiB"}))
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["now"]["download"], 2 * MIB as u64, "{view}");
    assert_eq!(view["now"]["upload"], Value::Null, "{view}");
    let (_, slow) = timed(download(&agent.api, &url, limited.path())).await;

    assert_paced(unlimited, slow);
    for dst in [&free, &limited] {
        let got = std::fs::read(dst.path().join("dailies day 1/reel.mov")).unwrap();
        assert!(got == bytes, "the bytes arrive intact");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_limit_is_shared_fairly_by_downloads_running_at_once() {
    let world = World::new().await;
    let bytes = pseudo_random_bytes(65, 3 * MIB);
    let url = shared(&world, "half.mov", &bytes).await;
    let mut config = engine_config(&world.hub.base_url);
    config.bandwidth = settings(json!({"download": "2MiB"}));
    let agent = TestAgent::start(config).await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let started = Instant::now();
    let mut ids = Vec::new();
    for dir in &dirs {
        // Chunks of 256 KiB: each download keeps asking for connections, and gets its turn.
        let mut request = download_request(&url, dir.path());
        request["chunk_size"] = json!("256KiB");
        ids.push(agent.api.download(request).await);
    }
    let (first_done, other_at_that_time) = loop {
        let mut done = Vec::new();
        for id in &ids {
            let (_, d) = agent.api.get(&format!("/downloads/{id}")).await;
            assert_ne!(d["state"], "error", "{d}");
            done.push(d);
        }
        if let Some(i) = done.iter().position(|d| d["state"] == "complete") {
            break (
                started.elapsed(),
                done[1 - i]["bytes_done"].as_u64().unwrap(),
            );
        }
        assert!(started.elapsed() < LONG, "stuck: {done:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for id in &ids {
        agent
            .api
            .wait_for("downloads", id, &["complete"], LONG)
            .await;
    }
    let all_done = started.elapsed();
    eprintln!(
        "2 x 3 MiB at 2 MiB/s together: first done at {first_done:?}, the other then at {other_at_that_time} bytes, both at {all_done:?}"
    );
    // Together they are held to the one limit: 6 MiB at 2 MiB/s.
    assert!(all_done >= Duration::from_millis(2500), "{all_done:?}");
    // And they share it: when one is done the other is past half way, though it started a
    // round of chunks later (unshared, it would barely have begun).
    assert!(
        other_at_that_time >= (3 * MIB as u64) / 2,
        "{other_at_that_time} of {} bytes",
        3 * MIB
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_limited_to_2_mib_per_second_moves_6_mib_in_no_less_than_2_5_s() {
    let world = World::new().await;
    let src = tempfile::tempdir().unwrap();
    let bytes = pseudo_random_bytes(62, 6 * MIB);
    std::fs::write(src.path().join("limited.mov"), &bytes).unwrap();
    std::fs::write(src.path().join("free.mov"), &bytes).unwrap();
    let mut config = uploading(&world);
    config.bandwidth = settings(json!({"upload": "16Mbit"}));
    let agent = TestAgent::start(config).await;
    let (_, view) = agent.api.get("/bandwidth").await;
    assert_eq!(view["now"]["upload"], 2_000_000, "16 Mbit is 2 MB: {view}");
    assert_eq!(view["settings"]["upload"], "16Mbit", "{view}");

    // 16 Mbit/s is a little under 2 MiB/s.
    let (link, slow) = timed(upload(&agent.api, &world, &src.path().join("limited.mov"))).await;
    let (status, view) = agent.api.patch("/bandwidth", json!({"upload": null})).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["now"]["upload"], Value::Null, "{view}");
    let (_, unlimited) = timed(upload(&agent.api, &world, &src.path().join("free.mov"))).await;

    assert_paced(unlimited, slow);
    let back = tempfile::tempdir().unwrap();
    let done = download(&agent.api, &link, back.path()).await;
    let name = done["package_name"].as_str().unwrap();
    let got = std::fs::read(back.path().join(name).join("limited.mov")).unwrap();
    assert!(got == bytes, "the throttled upload arrived intact");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limit_changed_through_the_api_takes_effect_mid_transfer() {
    let world = World::new().await;
    let bytes = pseudo_random_bytes(63, 8 * MIB);
    let url = shared(&world, "long.mov", &bytes).await;
    let mut config = engine_config(&world.hub.base_url);
    config.bandwidth = settings(json!({"download": "1MiB"}));
    let agent = TestAgent::start(config).await;
    let dst = tempfile::tempdir().unwrap();
    let id = agent.api.download(download_request(&url, dst.path())).await;
    let bytes_done = |v: &Value| v["bytes_done"].as_u64().unwrap();

    agent
        .api
        .wait_for_bytes("downloads", &id, MIB as u64, Duration::from_secs(10))
        .await;
    // Lowered to 256 KiB/s: in the next three seconds far less than the 3 MiB that 1 MiB/s
    // would bring. (Bytes count once taken from the bucket, and HTTP hands them over in reads
    // of up to ~400 KiB per connection: at low rates progress moves in steps, the average
    // holds.)
    let (status, view) = agent
        .api
        .patch("/bandwidth", json!({"download": "256KiB"}))
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["now"]["download"], 256 * 1024, "{view}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, before) = agent.api.get(&format!("/downloads/{id}")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, after) = agent.api.get(&format!("/downloads/{id}")).await;
    let gained = bytes_done(&after) - bytes_done(&before);
    eprintln!("3 s at 256 KiB/s after 1 MiB/s: {gained} bytes");
    assert!(
        gained < 3 * MIB as u64 / 2,
        "{gained} bytes in 3 s at 256 KiB/s: {after}"
    );
    assert!(gained > 0, "a lower limit is not a pause: {after}");
    assert_eq!(after["state"], "transferring", "{after}");

    // Lifted: the rest (more than 5 MiB, 20 s at 256 KiB/s) comes at once.
    let (status, view) = agent
        .api
        .patch("/bandwidth", json!({"download": null}))
        .await;
    assert_eq!(status, 200, "{view}");
    let started = Instant::now();
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the lifted limit let the rest through: {:?}",
        started.elapsed()
    );
    let got = std::fs::read(dst.path().join("dailies day 1/long.mov")).unwrap();
    assert!(got == bytes, "the bytes arrive intact across limit changes");
}

#[tokio::test(flavor = "multi_thread")]
async fn fifo_mode_with_a_cap_of_1_runs_downloads_one_after_the_other_by_priority() {
    let world = World::new().await;
    let bytes = pseudo_random_bytes(64, 3 * MIB);
    let url = shared(&world, "clip.mov", &bytes).await;
    let mut config = engine_config(&world.hub.base_url);
    // Slow enough to watch: each download takes about a second.
    config.bandwidth = settings(json!({"max_active_downloads": 1, "download": "3MiB"}));
    let agent = TestAgent::start(config).await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();

    let first = agent
        .api
        .download(download_request(&url, dirs[0].path()))
        .await;
    agent
        .api
        .wait_for_bytes("downloads", &first, 1, Duration::from_secs(10))
        .await;
    let later = agent
        .api
        .download(download_request(&url, dirs[1].path()))
        .await;
    let mut urgent_request = download_request(&url, dirs[2].path());
    urgent_request["priority"] = json!(5);
    let urgent = agent.api.download(urgent_request).await;

    // Queued: still `transferring` (the spec's states), with a place in line and no bytes.
    let (_, waiting) = agent.api.get(&format!("/downloads/{later}")).await;
    assert_eq!(waiting["state"], "transferring", "{waiting}");
    assert_eq!(waiting["queue_position"], 2, "{waiting}");
    assert_eq!(waiting["bytes_done"], 0, "{waiting}");
    assert_eq!(waiting["bytes_per_second"], 0, "{waiting}");
    let (_, next) = agent.api.get(&format!("/downloads/{urgent}")).await;
    assert_eq!(
        next["queue_position"], 1,
        "higher priority goes first: {next}"
    );
    let (_, view) = agent.api.get("/bandwidth").await;
    assert_eq!(
        view["downloads"],
        json!({"active": 1, "queued": 2}),
        "{view}"
    );

    // Never two moving at once; they finish first, urgent, later.
    let mut finished: Vec<String> = Vec::new();
    let started = Instant::now();
    while finished.len() < 3 {
        let (_, list) = agent.api.get("/downloads").await;
        let list = list.as_array().unwrap();
        let moving = list
            .iter()
            .filter(|d| d["state"] == "transferring" && d["bytes_done"].as_u64() > Some(0))
            .count();
        assert!(moving <= 1, "two downloads moved at once: {list:?}");
        for d in list {
            let id = d["download_id"].as_str().unwrap().to_owned();
            assert_ne!(d["state"], "error", "{d}");
            if d["state"] == "complete" && !finished.contains(&id) {
                finished.push(id);
            }
        }
        assert!(started.elapsed() < LONG, "stuck: {list:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(finished, [first, urgent, later]);
    let (_, view) = agent.api.get("/bandwidth").await;
    assert_eq!(
        view["downloads"],
        json!({"active": 0, "queued": 0}),
        "{view}"
    );
    for dir in &dirs {
        let got = std::fs::read(dir.path().join("dailies day 1/clip.mov")).unwrap();
        assert!(got == bytes);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bandwidth_comes_from_the_config_file_and_a_changed_section_replaces_api_changes() {
    let site = tempfile::tempdir().unwrap();
    let path = site.path().join("agent.toml");
    let write = |text: &str| {
        // Editors replace files: write beside, then rename over.
        let tmp = site.path().join(".agent.toml.swp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    let section = "[bandwidth]\ndownload = \"1MiB\"\nmax_active_downloads = 2\ntimezone = \"UTC\"\nschedule = [{ days = [\"daily\"], start = \"00:00\", end = \"00:00\", upload = \"100Mbit\" }]\n";
    write(section);
    let agent = TestAgent::start_configured(
        site.path(),
        engine_config("http://127.0.0.1:9/v1"),
        Some(&path),
    )
    .await;
    let (status, view) = agent.api.get("/bandwidth").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["settings"]["download"], "1MiB", "{view}");
    assert_eq!(view["settings"]["max_active_downloads"], 2, "{view}");
    // The all-day rule holds now: its upload limit, and the default download limit.
    assert_eq!(view["now"]["rule"], 1, "{view}");
    assert_eq!(view["now"]["upload"], 12_500_000, "{view}");
    assert_eq!(view["now"]["download"], MIB as u64, "{view}");

    let (status, view) = agent
        .api
        .patch("/bandwidth", json!({"max_active_uploads": 3}))
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["settings"]["max_active_uploads"], 3, "{view}");
    assert_eq!(
        view["settings"]["download"], "1MiB",
        "a patch keeps the rest"
    );

    // A reload that leaves [bandwidth] as it was keeps what the API set.
    write(&format!(
        "{section}\n[[download]]\nname = \"dropped links\"\nlinks_folder = \"links\"\ndestination = \"in\"\n"
    ));
    let started = Instant::now();
    loop {
        let (_, rules) = agent.api.get("/automations").await;
        if rules.to_string().contains("dropped links") {
            break;
        }
        assert!(
            started.elapsed() < LONG,
            "the reload did not happen: {rules}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, view) = agent.api.get("/bandwidth").await;
    assert_eq!(view["settings"]["max_active_uploads"], 3, "{view}");

    // A changed section replaces everything, the API's changes included.
    write("[bandwidth]\ndownload = \"3MiB\"\n");
    let started = Instant::now();
    let view = loop {
        let (_, view) = agent.api.get("/bandwidth").await;
        if view["now"]["download"] == 3 * MIB as u64 {
            break view;
        }
        assert!(
            started.elapsed() < LONG,
            "the new section was not applied: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(view["settings"], json!({"download": "3MiB"}), "{view}");
    assert_eq!(view["now"]["upload"], Value::Null, "{view}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bandwidth_settings_are_refused_with_what_to_write_and_change_nothing() {
    let agent = TestAgent::start(engine_config("http://127.0.0.1:9/v1")).await;
    let (status, answer) = agent
        .api
        .put(
            "/bandwidth",
            json!({"download": "fast", "schedule": [{"days": ["someday"], "start": "09:00", "end": "17:00"}], "max_active_uploads": 0}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    let message = answer["message"].as_str().unwrap();
    for expected in [
        "download: \"fast\" is not a rate",
        "200Mbit",
        "schedule rule 1: \"someday\" is not a day",
        "max_active_uploads: must be at least 1",
    ] {
        assert!(message.contains(expected), "{expected:?} in {message}");
    }
    let (status, answer) = agent
        .api
        .patch("/bandwidth", json!({"uplaod": "1MiB"}))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `uplaod`"),
        "{answer}"
    );
    let (_, view) = agent.api.get("/bandwidth").await;
    assert_eq!(view["settings"], json!({}), "nothing changed: {view}");
    assert_eq!(
        view["now"],
        json!({"upload": null, "download": null, "rule": null, "next_change": null})
    );
}

/// `masv ARGS` (the real binary) against `agent`: exit code, stdout, stderr.
async fn masv(agent: &TestAgent, args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_masv"));
    command.args(args).args(["--agent-url", &agent.api.base]);
    let out = tokio::task::spawn_blocking(move || command.output().expect("masv runs"))
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn masv_bandwidth_set_changes_only_what_it_names_and_show_tells_it() {
    let mut config = engine_config("http://127.0.0.1:9/v1");
    config.bandwidth = settings(json!({"upload": "200Mbit", "max_active_uploads": 2}));
    let agent = TestAgent::start(config).await;

    let (code, out, err) = masv(
        &agent,
        &[
            "bandwidth",
            "set",
            "--download",
            "5MiB",
            "--max-active-uploads",
            "none",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("download    5.0 MiB/s  5MiB"), "{out}");
    let (_, view) = agent.api.get("/bandwidth").await;
    assert_eq!(
        view["settings"],
        json!({"upload": "200Mbit", "download": "5MiB"}),
        "{view}"
    );

    let (code, out, _) = masv(&agent, &["bandwidth", "show"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("upload     23.8 MiB/s  200Mbit"), "{out}");
    assert!(out.contains("In force: the default limits"), "{out}");

    let (code, _, err) = masv(&agent, &["bandwidth", "set", "--upload", "fast"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("upload: \"fast\" is not a rate"), "{err}");
    let (code, _, err) = masv(&agent, &["bandwidth", "set"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("nothing to set"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uploads_progress_moves_while_its_part_streams() {
    let world = World::new().await;
    let src = tempfile::tempdir().unwrap();
    // One part of 6 MiB at 2 MiB/s: three seconds for the part.
    std::fs::write(
        src.path().join("one part.mov"),
        pseudo_random_bytes(64, 6 * MIB),
    )
    .unwrap();
    let mut config = uploading(&world);
    config.bandwidth = settings(json!({"upload": "2MiB"}));
    let agent = TestAgent::start(config).await;
    let (status, created) = agent
        .api
        .post(
            "/uploads",
            json!({"team_id": world.team_id, "paths": [src.path().join("one part.mov")]}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["upload_id"].as_str().unwrap();
    let start = std::time::Instant::now();
    let mut midway = None;
    loop {
        let (_, detail) = agent.api.get(&format!("/uploads/{id}")).await;
        let done = detail["bytes_done"].as_u64().unwrap_or(0);
        if detail["state"] == "transferring" && done > 0 && done < 6 * MIB as u64 {
            midway = Some((done, detail["bytes_per_second"].as_u64().unwrap_or(0)));
        }
        // `idle` shows a moment while the package is finalized, after the last file.
        if detail["state"] == "complete" {
            break;
        }
        assert!(
            detail["state"] == "transferring" || detail["state"] == "idle",
            "{detail}"
        );
        assert!(start.elapsed() < Duration::from_secs(30), "{detail}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (done, speed) = midway.expect("bytes_done moved before the part was accepted");
    assert!(
        speed > 0,
        "a speed while the part streams ({done} bytes done)"
    );
}
