//! Downloads end to end: a hub in-process, an agent (in-process, or the real binary where a
//! SIGKILL is needed), real bytes on disk.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use masv_agent::cloud::dto::CreateLink;
use masv_agent::hub::Faults;
use serde_json::json;

use crate::agent::{ProcessAgent, TestAgent, download_request, engine_config, hub_bytes_sent};
use crate::support::{DataDir, FileSpec, HubOptions, MIB, TestHub, World, pseudo_random_bytes};

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn a_package_tree_is_rebuilt_with_empty_folders_mtimes_and_selected_files() {
    let world = World::new().await;
    let big = pseudo_random_bytes(7, 3 * MIB + 17);
    let files = vec![
        FileSpec::file("a.mov", big.clone()).at("footage/day1"),
        FileSpec::file("notes.txt", b"take 3".to_vec()),
        FileSpec::file("empty.bin", Vec::new()).at("footage"),
        FileSpec::directory("renders").at("footage"),
    ];
    let (package, url) = world.shared(files).await;
    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;
    let dst = tempfile::tempdir().unwrap();

    let id = agent.api.download(download_request(&url, dst.path())).await;
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(done["bytes_done"], done["bytes_total"]);
    assert_eq!(done["files_done"], 4);
    let root = dst.path().join("dailies day 1");
    assert_eq!(std::fs::read(root.join("footage/day1/a.mov")).unwrap(), big);
    assert_eq!(std::fs::read(root.join("notes.txt")).unwrap(), b"take 3");
    assert_eq!(
        std::fs::metadata(root.join("footage/empty.bin"))
            .unwrap()
            .len(),
        0
    );
    assert!(
        root.join("footage/renders").is_dir(),
        "empty folders are recreated"
    );
    let sent = package.file("a.mov").spec.last_modified.unwrap();
    let mtime = std::fs::metadata(root.join("footage/day1/a.mov"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(
        mtime,
        SystemTime::from(sent),
        "mtime comes from the package"
    );
    assert!(!root.join("footage/day1/a.mov.part").exists());

    // Only the chosen file, straight into the destination.
    let only = tempfile::tempdir().unwrap();
    let mut req = download_request(&url, only.path());
    req["file_ids"] = json!([package.file("notes.txt").id]);
    req["create_package_folder"] = json!(false);
    let id = agent.api.download(req).await;
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    let names: Vec<_> = std::fs::read_dir(only.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["notes.txt"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_names_and_planted_symlinks_never_lead_outside_the_destination() {
    let hub = TestHub::start_with(
        DataDir::new(),
        HubOptions {
            accept_hostile_names: true,
            ..HubOptions::default()
        },
    )
    .await;
    let world = World::on(hub);
    let files = vec![
        FileSpec::file("../../escaped.txt", b"x".to_vec()),
        FileSpec::file("passwd", b"x".to_vec()).at("../../../../etc"),
        FileSpec::file("C:\\evil.txt", b"x".to_vec()),
        FileSpec::file("through-link.txt", b"x".to_vec()).at("planted"),
        FileSpec::file("fine.txt", b"fine".to_vec()).at("/abs/olute"),
        FileSpec::file("bad\u{1}name?.txt", b"cleaned".to_vec()),
    ];
    let (_, url) = world.shared(files).await;
    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;
    let area = tempfile::tempdir().unwrap();
    let dst = area.path().join("dst");
    let outside = area.path().join("outside");
    std::fs::create_dir_all(dst.join("dailies day 1")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, dst.join("dailies day 1/planted")).unwrap();

    let id = agent.api.download(download_request(&url, &dst)).await;
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(
        done["state"], "error",
        "hostile entries fail the download: {done}"
    );
    let by_name = |name: &str| {
        done["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap()
            .clone()
    };
    for hostile in ["../../escaped.txt", "passwd", "through-link.txt"] {
        let f = by_name(hostile);
        assert_eq!(f["state"], "error", "{f}");
    }
    assert!(
        by_name("through-link.txt")["error"]
            .as_str()
            .unwrap()
            .contains("symlink")
    );
    assert_eq!(
        std::fs::read(dst.join("dailies day 1/abs/olute/fine.txt")).unwrap(),
        b"fine"
    );
    // On Unix `C:` is a folder name like any other, inside the destination.
    assert_eq!(
        std::fs::read(dst.join("dailies day 1/C:/evil.txt")).unwrap(),
        b"x"
    );
    assert_eq!(
        std::fs::read(dst.join("dailies day 1/badname?.txt")).unwrap(),
        b"cleaned"
    );
    // Nothing anywhere but inside dst.
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    let beside: Vec<_> = std::fs::read_dir(area.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside.len(), 2, "only dst and outside: {beside:?}");
    assert!(!Path::new("/etc/passwd.part").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn quarantined_files_are_skipped_when_bypassing_and_fail_the_download_otherwise() {
    let world = World::new().await;
    let (package, url) = world
        .shared(vec![
            FileSpec::file("clean.txt", b"clean".to_vec()),
            FileSpec::file("infected.exe", b"evil".to_vec()),
        ])
        .await;
    world
        .hub
        .operator
        .set_virus_detected(&package.file("infected.exe").id, true)
        .unwrap();
    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;

    let dst = tempfile::tempdir().unwrap();
    let id = agent.api.download(download_request(&url, dst.path())).await;
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    let infected = done["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "infected.exe")
        .unwrap();
    assert_eq!(infected["state"], "skipped");
    assert!(dst.path().join("dailies day 1/clean.txt").exists());
    assert!(!dst.path().join("dailies day 1/infected.exe").exists());

    let strict = tempfile::tempdir().unwrap();
    let mut req = download_request(&url, strict.path());
    req["bypass_package_quarantine"] = json!(false);
    let id = agent.api.download(req).await;
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "error");
    assert!(
        done["error"].as_str().unwrap().contains("infected.exe"),
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_file_and_folder_created_belongs_to_the_requested_owner() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test gives files away with chown: run the tests as root (CI does)"
    );
    let world = World::new().await;
    let (_, url) = world
        .shared(vec![
            FileSpec::file("a.txt", b"a".to_vec()).at("x/y"),
            FileSpec::directory("empty").at("x"),
        ])
        .await;
    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;
    let area = tempfile::tempdir().unwrap();
    let dst = area.path().join("new-dst");
    let mut req = download_request(&url, &dst);
    req["user_id"] = json!(12345);
    req["group_id"] = json!(23456);
    let id = agent.api.download(req).await;
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    for rel in [
        "",
        "dailies day 1",
        "dailies day 1/x",
        "dailies day 1/x/y",
        "dailies day 1/x/y/a.txt",
        "dailies day 1/x/empty",
    ] {
        let meta = std::fs::symlink_metadata(dst.join(rel)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (12345, 23456), "{rel}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_failures_and_cut_bodies_are_retried_into_byte_identical_files() {
    let world = World::new().await;
    let bytes = pseudo_random_bytes(11, 9 * MIB + 3);
    let package = world
        .upload(vec![FileSpec::file("take.mov", bytes.clone())])
        .await;
    let link = world.share(&package, CreateLink::default()).await;
    // The same data served by a hub whose storage fails or cuts a third of its answers.
    let flaky = TestHub::start_with(
        world.hub.data.clone(),
        HubOptions::faults(Faults {
            fail_ratio: 0.3,
            cut_ratio: 0.3,
            ..Faults::default()
        }),
    )
    .await;
    let url = flaky.link_url(&link);
    let agent = TestAgent::start(engine_config(&flaky.base_url)).await;
    let dst = tempfile::tempdir().unwrap();
    let id = agent.api.download(download_request(&url, dst.path())).await;
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(
        std::fs::read(dst.path().join("dailies day 1/take.mov")).unwrap(),
        bytes
    );
    // Ranges cut short were hashed as far as they came and are fetched again from their start:
    // the hash takes each byte once.
    let hash = masv_agent::mhl::hash_data(masv_agent::mhl::HashFormat::Xxh64, &bytes);
    assert_eq!(done["files"][0]["hash"]["xxh64"], hash, "{done}");
}

/// Storage down longer than the retries last: the download ends in error; once storage is
/// back, resuming it tries the failed file again, to an identical file.
#[tokio::test(flavor = "multi_thread")]
async fn resuming_a_failed_download_tries_its_failed_files_again() {
    let world = World::new().await;
    let bytes = pseudo_random_bytes(13, 3 * MIB + 5);
    let package = world
        .upload(vec![FileSpec::file("take.mov", bytes.clone())])
        .await;
    let link = world.share(&package, CreateLink::default()).await;
    let refusing = TestHub::refusing(world.hub.data.clone()).await;
    let url = refusing.link_url(&link);
    let agent = TestAgent::start(engine_config(&refusing.base_url)).await;
    let dst = tempfile::tempdir().unwrap();
    let id = agent.api.download(download_request(&url, dst.path())).await;
    let failed = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(failed["state"], "error", "{failed}");

    let _healthy = refusing.heal().await;
    let (status, resumed) = agent
        .api
        .post(&format!("/downloads/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, 200, "{resumed}");
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(
        std::fs::read(dst.path().join("dailies day 1/take.mov")).unwrap(),
        bytes
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_storage_urls_are_asked_for_again() {
    let world = World::new().await;
    let bytes = pseudo_random_bytes(5, 8 * MIB);
    let package = world
        .upload(vec![FileSpec::file("long.mov", bytes.clone())])
        .await;
    let link = world.share(&package, CreateLink::default()).await;
    // A second hub on the same data hands out URLs that live 1 s, and takes 300 ms per storage
    // request: one connection fetching 8 chunks outlives the file's first URL.
    let slow = TestHub::start_with(
        world.hub.data.clone(),
        HubOptions {
            faults: Faults {
                delay: Duration::from_millis(300),
                ..Faults::default()
            },
            url_ttl: Some(Duration::from_secs(1)),
            ..HubOptions::default()
        },
    )
    .await;
    let url = slow.link_url(&link);
    let mut config = engine_config(&slow.base_url);
    config.max_connections = 1;
    let agent = TestAgent::start(config).await;
    let dst = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let id = agent.api.download(download_request(&url, dst.path())).await;
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "the download outlived its first URL"
    );
    assert_eq!(
        std::fs::read(dst.path().join("dailies day 1/long.mov")).unwrap(),
        bytes
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_resume_and_delete_with_or_without_files() {
    let hub = TestHub::start_with(
        DataDir::new(),
        HubOptions::faults(Faults {
            delay: Duration::from_millis(100),
            ..Faults::default()
        }),
    )
    .await;
    let world = World::on(hub);
    let bytes = pseudo_random_bytes(3, 12 * MIB);
    let (_, url) = world
        .shared(vec![FileSpec::file("slow.mov", bytes.clone())])
        .await;
    let mut config = engine_config(&world.hub.base_url);
    config.max_connections = 1;
    let agent = TestAgent::start(config).await;
    let dst = tempfile::tempdir().unwrap();
    let id = agent.api.download(download_request(&url, dst.path())).await;
    agent
        .api
        .wait_for_bytes("downloads", &id, MIB as u64, LONG)
        .await;

    let (status, paused) = agent
        .api
        .post(&format!("/downloads/{id}/pause"), json!({}))
        .await;
    assert_eq!(
        (status, paused["state"].as_str()),
        (200, Some("paused")),
        "{paused}"
    );
    let (_, before) = agent.api.get(&format!("/downloads/{id}")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, after) = agent.api.get(&format!("/downloads/{id}")).await;
    assert_eq!(
        before["bytes_done"], after["bytes_done"],
        "nothing moves while paused"
    );
    assert_eq!(after["state"], "paused");

    let (status, all) = agent.api.post("/downloads/resume", json!({})).await;
    assert_eq!((status, all["download_ids"].clone()), (200, json!([id])));
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    let file = dst.path().join("dailies day 1/slow.mov");
    assert_eq!(std::fs::read(&file).unwrap(), bytes);

    // Delete by state leaves others alone; remove_files deletes what the download wrote.
    let (status, kept) = agent.api.delete("/downloads?states=error").await;
    assert_eq!((status, kept["download_ids"].clone()), (200, json!([])));
    let (status, _) = agent
        .api
        .delete(&format!("/downloads/{id}?remove_files=true"))
        .await;
    assert_eq!(status, 200);
    assert!(!file.exists());
    assert!(
        !dst.path().join("dailies day 1").exists(),
        "its emptied folders go too"
    );
    let (status, gone) = agent.api.get(&format!("/downloads/{id}")).await;
    assert_eq!(status, 404, "{gone}");
    let (status, bad) = agent.api.delete("/downloads?states=finished").await;
    assert_eq!(status, 400, "{bad}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_download_stays_paused_across_a_restart() {
    let hub = TestHub::start_with(
        DataDir::new(),
        HubOptions::faults(Faults {
            delay: Duration::from_millis(100),
            ..Faults::default()
        }),
    )
    .await;
    let world = World::on(hub);
    let bytes = pseudo_random_bytes(9, 6 * MIB);
    let (_, url) = world
        .shared(vec![FileSpec::file("clip.mov", bytes.clone())])
        .await;
    let data = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let mut config = engine_config(&world.hub.base_url);
    config.max_connections = 1;

    let agent = TestAgent::start_on(data.path(), config.clone()).await;
    let id = agent.api.download(download_request(&url, dst.path())).await;
    agent
        .api
        .wait_for_bytes("downloads", &id, MIB as u64, LONG)
        .await;
    let (status, _) = agent
        .api
        .post(&format!("/downloads/{id}/pause"), json!({}))
        .await;
    assert_eq!(status, 200);
    agent.stop().await;

    let agent = TestAgent::start_on(data.path(), config).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, detail) = agent.api.get(&format!("/downloads/{id}")).await;
    assert_eq!(detail["state"], "paused", "{detail}");
    let (status, _) = agent
        .api
        .post(&format!("/downloads/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, 200);
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(
        std::fs::read(dst.path().join("dailies day 1/clip.mov")).unwrap(),
        bytes
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_download_resumes_from_committed_chunks_to_an_identical_file() {
    let hub = TestHub::start_with(
        DataDir::new(),
        HubOptions::faults(Faults {
            delay: Duration::from_millis(50),
            ..Faults::default()
        }),
    )
    .await;
    let world = World::on(hub);
    let size = 40 * MIB;
    let bytes = pseudo_random_bytes(21, size);
    let (_, url) = world
        .shared(vec![FileSpec::file("master.mxf", bytes.clone())])
        .await;
    let data = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let (connections, chunk) = (4u64, MIB as u64);
    let flags = ["--max-connections", "4", "--chunk-size", "1MiB"];

    let agent = ProcessAgent::start(data.path(), &world.hub.base_url, &flags, None).await;
    let id = agent.api.download(download_request(&url, dst.path())).await;
    agent
        .api
        .wait_for_bytes("downloads", &id, (size / 2) as u64, LONG)
        .await;
    agent.kill_9();
    let sent_before_restart = hub_bytes_sent(world.hub.addr).await;
    assert!(sent_before_restart < size as u64, "killed before the end");

    let agent = ProcessAgent::start(data.path(), &world.hub.base_url, &flags, None).await;
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "it resumed by itself: {done}");
    assert_eq!(
        std::fs::read(dst.path().join("dailies day 1/master.mxf")).unwrap(),
        bytes
    );
    // Its hash, computed behind the ranges across the crash, is the file's.
    assert_eq!(
        done["files"][0]["hash"],
        serde_json::json!({"xxh64": masv_agent::mhl::hash_data(masv_agent::mhl::HashFormat::Xxh64, &bytes)}),
        "{done}"
    );
    let sent = hub_bytes_sent(world.hub.addr).await;
    assert!(
        sent <= size as u64 + connections * chunk,
        "re-fetched {} bytes beyond the file; at most the {connections} chunks in flight",
        sent - size as u64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_ends_in_error_not_in_a_corrupt_file() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test mounts a small tmpfs: run the tests as root (CI does)"
    );
    let world = World::new().await;
    let (_, url) = world
        .shared(vec![
            FileSpec::file("small.txt", b"fits".to_vec()),
            FileSpec::file("huge.mov", pseudo_random_bytes(1, 3 * MIB)),
        ])
        .await;
    let mount = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(mount.path())
        .status()
        .expect("mount runs");
    assert!(status.success(), "mounting a 1 MiB tmpfs");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(mount.path());

    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;
    let id = agent
        .api
        .download(download_request(&url, mount.path()))
        .await;
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "error", "{done}");
    let huge = done["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "huge.mov")
        .unwrap();
    assert!(
        huge["error"].as_str().unwrap().contains("no space"),
        "{huge}"
    );
    assert!(
        !mount.path().join("dailies day 1/huge.mov").exists(),
        "no torn file under the final name"
    );
    assert_eq!(
        std::fs::read(mount.path().join("dailies day 1/small.txt")).unwrap(),
        b"fits"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_refused_with_a_clear_message() {
    let agent = TestAgent::start(engine_config("http://127.0.0.1:9/v1")).await;
    for (body, expected) in [
        (
            json!({"url": "not a url", "dst_folder": "/tmp"}),
            "not a URL",
        ),
        (
            json!({"url": "https://get.massive.io/X", "dst_folder": "/tmp"}),
            "secret",
        ),
        (
            json!({"url": "https://get.massive.io/X?secret=s", "dst_folder": "relative"}),
            "absolute",
        ),
        (
            json!({"url": "https://get.massive.io/X?secret=s", "dst_folder": "/tmp", "chunk_size": "lots"}),
            "chunk_size",
        ),
        (
            json!({"url": "https://get.massive.io/X?secret=s", "dst_folder": "/tmp", "colour": "red"}),
            "unknown field",
        ),
    ] {
        let (status, answer) = agent.api.post("/downloads", body).await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(expected),
            "{answer}"
        );
    }
    let (status, _) = agent.api.get("/downloads/nope").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_package_of_more_files_than_the_descriptor_limit_downloads_whole() {
    // Many systems start services with a soft limit of 1024 descriptors; here 256 against 400
    // files: each file must give its descriptors back once it is finished.
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(256),
            maximum: limit.maximum,
        },
    )
    .unwrap();
    let world = World::new().await;
    let files: Vec<FileSpec> = (0..400u64)
        .map(|i| {
            FileSpec::file(
                &format!("f{i:03}.bin"),
                pseudo_random_bytes(i, 1000 + i as usize),
            )
            .at(&format!("d{}", i % 4))
        })
        .collect();
    let (_, url) = world.shared(files).await;
    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;
    let dst = tempfile::tempdir().unwrap();
    let mut req = download_request(&url, dst.path());
    req["create_package_folder"] = json!(false);
    let id = agent.api.download(req).await;
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{}", done["error"]);
    for i in 0..400u64 {
        let path = dst.path().join(format!("d{}/f{i:03}.bin", i % 4));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            pseudo_random_bytes(i, 1000 + i as usize),
            "{}",
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn colliding_and_long_names_each_arrive_under_their_documented_name() {
    let world = World::new().await;
    // Names of 251 to 255 bytes (a part file's suffix would once overflow them), two of 300
    // bytes that are the same once cut to 255, the same name twice, and two names the same
    // once cleaned (a control character goes).
    let mut specs = Vec::new();
    let mut expected = Vec::new();
    for len in 251..=255usize {
        let name = format!("{}.mov", "n".repeat(len - 4));
        let bytes = pseudo_random_bytes(len as u64, 1000 + len);
        specs.push(FileSpec::file(&name, bytes.clone()));
        expected.push((name, bytes));
    }
    let stem = "映".repeat(98); // 294 bytes
    for (seed, last) in [(1u64, "a"), (2, "b")] {
        let name = format!("{stem}{last}.mov");
        specs.push(FileSpec::file(&name, pseudo_random_bytes(seed, 3000)));
    }
    // Cut to 255 bytes on a character boundary, extension kept: 249 bytes of stem.
    let cut = format!("{}.mov", "映".repeat(83));
    let numbered = format!("{} (2).mov", "映".repeat(82));
    expected.push((cut, pseudo_random_bytes(1, 3000)));
    expected.push((numbered, pseudo_random_bytes(2, 3000)));
    for (seed, name) in [(3u64, "take.wav"), (4, "take.wav"), (5, "ta\u{7}ke.wav")] {
        specs.push(FileSpec::file(name, pseudo_random_bytes(seed, 5000)));
    }
    expected.push(("take.wav".into(), pseudo_random_bytes(3, 5000)));
    expected.push(("take (2).wav".into(), pseudo_random_bytes(4, 5000)));
    expected.push(("take (3).wav".into(), pseudo_random_bytes(5, 5000)));
    let (_, url) = world.shared(specs).await;
    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;
    let dst = tempfile::tempdir().unwrap();
    let id = agent.api.download(download_request(&url, dst.path())).await;
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    let root = dst.path().join("dailies day 1");
    let mut found: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    found.sort();
    let mut names: Vec<String> = expected.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(found, names);
    // Every entry arrived whole, each under one of the names; which of the colliding entries
    // keeps the plain name follows the service's listing order.
    let mut arrived: Vec<Vec<u8>> = found
        .iter()
        .map(|name| std::fs::read(root.join(name)).unwrap())
        .collect();
    arrived.sort();
    let mut sent: Vec<Vec<u8>> = expected.into_iter().map(|(_, b)| b).collect();
    sent.sort();
    assert!(
        arrived == sent,
        "the files' contents differ from the package's"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_downloads_into_one_folder_never_share_a_part_file() {
    let world = World::new().await;
    let bytes = pseudo_random_bytes(8, 6 * MIB + 5);
    let (_, url) = world
        .shared(vec![FileSpec::file("same.mov", bytes.clone())])
        .await;
    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;
    let dst = tempfile::tempdir().unwrap();
    let first = agent.api.download(download_request(&url, dst.path())).await;
    let second = agent.api.download(download_request(&url, dst.path())).await;
    for id in [first, second] {
        let done = agent
            .api
            .wait_for("downloads", &id, &["complete", "error"], LONG)
            .await;
        assert_eq!(done["state"], "complete", "{done}");
    }
    let folder = dst.path().join("dailies day 1");
    let left: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("same.mov")]);
    assert_eq!(std::fs::read(folder.join("same.mov")).unwrap(), bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_that_cannot_write_is_seen_and_the_download_goes_on_once_it_can() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test mounts a small tmpfs: run the tests as root (CI does)"
    );
    let hub = TestHub::start_with(
        DataDir::new(),
        HubOptions::faults(Faults {
            delay: Duration::from_millis(50),
            ..Faults::default()
        }),
    )
    .await;
    let world = World::on(hub);
    let bytes = pseudo_random_bytes(21, 40 * MIB);
    let (_, url) = world
        .shared(vec![FileSpec::file("reel.mov", bytes.clone())])
        .await;
    // The agent's data folder on a disk of its own, 2 MiB: the database fills it up.
    let data = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(data.path())
        .status()
        .expect("mount runs");
    assert!(status.success(), "mounting a 2 MiB tmpfs");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0)
                .status();
        }
    }
    let _unmount = Unmount(data.path());
    let mut config = engine_config(&world.hub.base_url);
    config.max_connections = 2;
    let agent = TestAgent::start_on(data.path(), config).await;
    let dst = tempfile::tempdir().unwrap();
    let id = agent.api.download(download_request(&url, dst.path())).await;
    agent
        .api
        .wait_for_bytes("downloads", &id, 4 * MIB as u64, LONG)
        .await;

    // The disk fills up: the database cannot write.
    let filler = data.path().join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let _ = file.write_all(&[0u8; 1]);
        while file.write_all(&[0u8; 512]).is_ok() {}
    }
    let start = std::time::Instant::now();
    let (health, detail) = loop {
        let (health, answer) = healthz(&agent.api).await;
        let (_, detail) = agent.api.get(&format!("/downloads/{id}")).await;
        let waiting = detail["waiting"]
            .as_str()
            .is_some_and(|e| e.contains("database cannot write"));
        if health == 503 && waiting {
            break (answer, detail);
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "5 s after the disk filled: /healthz {health} {answer}, download {detail}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        health["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot write")),
        "{health}"
    );
    assert_eq!(detail["state"], "transferring", "{detail}");

    // Space is freed: the download goes on by itself and arrives whole.
    std::fs::remove_file(&filler).unwrap();
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(done["error"], serde_json::Value::Null, "{done}");
    assert_eq!(done["waiting"], serde_json::Value::Null, "{done}");
    assert!(std::fs::read(dst.path().join("dailies day 1/reel.mov")).unwrap() == bytes);
    let (health, _) = healthz(&agent.api).await;
    assert_eq!(health, 200);
    drop(agent);
}

/// The agent's `GET /healthz` (beside the API, not under it).
async fn healthz(api: &crate::agent::Api) -> (u16, serde_json::Value) {
    let url = api.base.replace("/api/v1", "/healthz");
    let response = reqwest::get(url).await.expect("the agent answers /healthz");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn files_that_can_never_arrive_do_not_hold_back_the_others() {
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
            FileSpec::file("take 1.mov", pseudo_random_bytes(1, 3000)),
            FileSpec::file("take 2.mov", pseudo_random_bytes(2, 3000)),
        ])
        .await;
    let agent = TestAgent::start(engine_config(&world.hub.base_url)).await;
    let dst = tempfile::tempdir().unwrap();
    let id = agent.api.download(download_request(&url, dst.path())).await;
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    // The others arrived: complete, saying which file could never arrive and why.
    assert_eq!(done["state"], "complete", "{done}");
    let note = done["error"].as_str().unwrap_or_default();
    assert!(
        note.contains("1 of 3 files could never arrive") && note.contains("escaped.txt"),
        "{done}"
    );
    for (name, seed) in [("take 1.mov", 1), ("take 2.mov", 2)] {
        assert!(
            std::fs::read(dst.path().join("dailies day 1").join(name)).unwrap()
                == pseudo_random_bytes(seed, 3000)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_complete_download_leaves_no_secret_in_the_agents_database() {
    let world = World::new().await;
    let package = world
        .upload(vec![FileSpec::file("cut.mov", b"the cut".to_vec())])
        .await;
    let link = world
        .share(
            &package,
            CreateLink {
                password: Some(masv_agent::cloud::dto::Secret::new("open-sesame-42")),
                ..CreateLink::default()
            },
        )
        .await;
    let url = world.hub.link_url(&link);
    let data = tempfile::tempdir().unwrap();
    let agent = TestAgent::start_on(data.path(), engine_config(&world.hub.base_url)).await;
    let dst = tempfile::tempdir().unwrap();
    let mut request = download_request(&url, dst.path());
    request["password"] = json!("open-sesame-42");
    let id = agent.api.download(request).await;
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    let db = rusqlite::Connection::open(data.path().join("agent/agent.db")).unwrap();
    let (spec, remote): (String, Option<String>) = db
        .query_row(
            "SELECT spec, remote FROM transfers WHERE id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let remote = remote.unwrap_or_default();
    let stored = format!("{spec} {remote}");
    let secret = link.download_secret.expose();
    assert!(
        !stored.contains(secret),
        "the link's secret stays: {stored}"
    );
    assert!(
        !stored.contains("open-sesame-42"),
        "the password stays: {stored}"
    );
    let remote: serde_json::Value = serde_json::from_str(&remote).unwrap();
    assert_eq!(
        remote["package_token"], "",
        "the package token stays: {remote}"
    );
    assert!(stored.contains(&link.id), "the link's id is kept: {stored}");
}

/// Every file downloaded gets the hash of its bytes (xxh64 by default), computed behind the
/// ranges as they are written, in the file detail; a many-range file and small ones alike.
#[tokio::test(flavor = "multi_thread")]
async fn each_file_downloaded_has_its_hash_in_the_transfer_detail() {
    use masv_agent::mhl::{HashFormat, hash_data};
    let world = World::new().await;
    let big = pseudo_random_bytes(31, 9 * MIB + 7);
    let (_, url) = world
        .shared(vec![
            FileSpec::file("big.mov", big.clone()),
            FileSpec::file("small.txt", b"hello\n".to_vec()),
            FileSpec::file("empty.txt", Vec::new()),
        ])
        .await;
    // Ranges of 1 MiB (the tests' default: most of the big file is read back behind its
    // ranges), of a size that is no multiple of a disk block, and of the whole file (each file
    // hashed from the bytes as they were written).
    for (format, name, chunk_size) in [
        (Some(HashFormat::Xxh64), "xxh64", None),
        (Some(HashFormat::Xxh64), "xxh64", Some(MIB + 3)),
        (Some(HashFormat::Xxh64), "xxh64", Some(16 * MIB)),
        (Some(HashFormat::Md5), "md5", None),
        (None, "", None),
    ] {
        let mut config = engine_config(&world.hub.base_url);
        config.hash = format;
        let agent = TestAgent::start(config).await;
        let dst = tempfile::tempdir().unwrap();
        let mut request = download_request(&url, dst.path());
        if let Some(size) = chunk_size {
            request["chunk_size"] = size.into();
        }
        let id = agent.api.download(request).await;
        let done = agent
            .api
            .wait_for("downloads", &id, &["complete", "error"], LONG)
            .await;
        assert_eq!(done["state"], "complete", "{done}");
        for file in done["files"].as_array().unwrap() {
            let bytes: &[u8] = match file["name"].as_str().unwrap() {
                "big.mov" => &big,
                "small.txt" => b"hello\n",
                _ => b"",
            };
            match format {
                Some(f) => assert_eq!(
                    file["hash"],
                    serde_json::json!({ name: hash_data(f, bytes) }),
                    "{file}"
                ),
                None => assert!(file.get("hash").is_none(), "{file}"),
            }
        }
    }
}

/// A package sent with an ASC MHL manifest whose copy on the service is altered afterwards (a
/// byte of the hub's stored part flipped): the download checks each file against the manifest,
/// fetches the altered one again once, then fails it naming the expected and the actual hash;
/// the other files arrive. A download that requires a manifest fails on a package without one.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_altered_on_the_service_is_caught_by_the_packages_manifest() {
    let world = World::on_disk().await;
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("card")).unwrap();
    let clip = pseudo_random_bytes(41, 6 * MIB + 1);
    std::fs::write(src.path().join("card/clip.mov"), &clip).unwrap();
    std::fs::write(src.path().join("card/notes.txt"), b"take 3").unwrap();
    let mut config = engine_config(&world.hub.base_url);
    config.api_key = Some(world.api_key.clone());
    let agent = TestAgent::start(config).await;
    let (created, up) = agent
        .api
        .upload_to_end(
            json!({"team_id": world.team_id, "paths": [src.path().join("card")],
                              "package_name": "sealed", "manifest": "ascmhl"}),
        )
        .await;
    assert_eq!(up["state"], "complete", "{up}");

    // The clip's stored bytes (its one part, the largest file the hub keeps) altered.
    let mut stored: Vec<std::path::PathBuf> = Vec::new();
    let mut dirs = vec![world.hub.data.path().join("parts")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            } else {
                stored.push(e.path());
            }
        }
    }
    let part = stored
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(part).unwrap();
    bytes[1000] ^= 0x20;
    std::fs::write(part, bytes).unwrap();

    let dst = tempfile::tempdir().unwrap();
    let link = created["link"].as_str().unwrap();
    let down = agent.api.download(download_request(link, dst.path())).await;
    let got = agent
        .api
        .wait_for("downloads", &down, &["complete", "error"], LONG)
        .await;
    assert_eq!(got["state"], "error", "{got}");
    let files = got["files"].as_array().unwrap();
    let clip_file = files.iter().find(|f| f["name"] == "clip.mov").unwrap();
    let expected = masv_agent::mhl::hash_data(masv_agent::mhl::HashFormat::Xxh64, &clip);
    let error = clip_file["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("xxh64 expected {expected}, got "))
            && error.contains("also when fetched again"),
        "{error}"
    );
    let notes = files.iter().find(|f| f["name"] == "notes.txt").unwrap();
    assert_eq!(notes["state"], "complete", "{notes}");
    assert_eq!(
        std::fs::read(dst.path().join("sealed/card/notes.txt")).unwrap(),
        b"take 3"
    );

    // No manifest, and one required: refused, named.
    let (_, plain) = world
        .shared(vec![FileSpec::file("plain.txt", b"x".to_vec())])
        .await;
    let mut request = download_request(&plain, dst.path());
    request["require_manifest"] = json!(true);
    let down = agent.api.download(request).await;
    let got = agent
        .api
        .wait_for("downloads", &down, &["complete", "error"], LONG)
        .await;
    assert_eq!(got["state"], "error", "{got}");
    assert!(
        got["error"]
            .as_str()
            .unwrap()
            .contains("no ASC MHL manifest"),
        "{got}"
    );
}
