//! The hub with its files on a real S3 server (`s3s-fs`, which checks SigV4 signatures): every
//! storage URL is a pre-signed URL of the store, no byte passes through the hub, and the store
//! refuses a tampered or expired URL. `MASV_TEST_HUB_STORAGE=s3` runs the download and upload
//! suites against such hubs too (`.ci/run` does).

use std::time::Duration;

use masv_agent::cloud::CloudError;
use serde_json::json;

use crate::agent::{TestAgent, download_request, engine_config};
use crate::support::*;

const LONG: Duration = Duration::from_secs(60);

async fn hub_on_s3(url_ttl: Option<Duration>) -> TestHub {
    TestHub::start_with(
        DataDir::new(),
        HubOptions {
            s3: true,
            url_ttl,
            ..HubOptions::default()
        },
    )
    .await
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_moves_files_through_a_hub_on_s3_and_no_byte_passes_through_the_hub() {
    let world = World::on(hub_on_s3(None).await);
    let src = tempfile::tempdir().unwrap();
    let big = pseudo_random_bytes(91, 16 * MIB + 3);
    std::fs::create_dir(src.path().join("reel")).unwrap();
    std::fs::write(src.path().join("reel/a.mov"), &big).unwrap();
    std::fs::write(src.path().join("reel/b.txt"), b"notes").unwrap();
    let mut config = engine_config(&world.hub.base_url);
    config.api_key = Some(world.api_key.clone());
    let agent = TestAgent::start(config).await;
    let (created, up) = agent
        .api
        .upload_to_end(
            json!({"team_id": world.team_id, "paths": [src.path().join("reel")],
                              "package_name": "S3", "chunk_size": "5MiB"}),
        )
        .await;
    assert_eq!(up["state"], "complete", "{up}");

    let dst = tempfile::tempdir().unwrap();
    let down = agent
        .api
        .download(download_request(
            created["link"].as_str().unwrap(),
            dst.path(),
        ))
        .await;
    let got = agent
        .api
        .wait_for("downloads", &down, &["complete", "error"], LONG)
        .await;
    assert_eq!(got["state"], "complete", "{got}");
    assert!(std::fs::read(dst.path().join("S3/reel/a.mov")).unwrap() == big);
    assert_eq!(
        std::fs::read(dst.path().join("S3/reel/b.txt")).unwrap(),
        b"notes"
    );

    // The objects are in the store's bucket, under the hub's prefix; the hub served none.
    let objects: Vec<_> = walk(&world.hub.data.s3().root.path().join("masv/hub"));
    assert_eq!(objects.len(), 2, "{objects:?}");
    let text = reqwest::get(format!("http://{}/metrics", world.hub.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric(&text, "masv_hub_storage_bytes_sent_total"), 0);
    assert_eq!(metric(&text, "masv_hub_storage_bytes_received_total"), 0);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_refuses_a_tampered_or_expired_url_and_a_fresh_one_works() {
    let world = World::on(hub_on_s3(Some(Duration::from_secs(1))).await);
    let bytes = pseudo_random_bytes(92, MIB);
    let package = world
        .upload(vec![FileSpec::file("clip.bin", bytes.clone())])
        .await;
    let client = &world.client;
    let file = &package.files[0];
    let url = client
        .download_url(&package.id, &file.id, &package.token)
        .await
        .unwrap();
    assert!(
        url.url.expose().contains("X-Amz-Signature="),
        "a SigV4 URL of the store"
    );
    assert!(
        url.url
            .expose()
            .starts_with(world.hub.data.s3().endpoint.as_str())
    );

    // One character of the signature changed: the store refuses it.
    let tampered = {
        let u = url.url.expose();
        let at = u.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
        let flipped = if &u[at..at + 1] == "a" { "b" } else { "a" };
        format!("{}{flipped}{}", &u[..at], &u[at + 1..])
    };
    let response = reqwest::get(&tampered).await.unwrap();
    assert_eq!(response.status(), 403);

    // Past its expiry: refused too, as an expired URL the agent asks again for.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let error = client.get_range(&url, None).await.unwrap_err();
    assert!(matches!(error, CloudError::Expired { .. }), "{error:?}");

    let fresh = client
        .download_url(&package.id, &file.id, &package.token)
        .await
        .unwrap();
    let response = client.get_range(&fresh, None).await.unwrap();
    assert!(read_body(response).await.unwrap() == bytes);
}

/// URLs of the store that expire while a download is under way (they live 1 s; the download,
/// held to 4 MiB/s, takes 2): the store refuses them with 403, the agent asks the hub for fresh
/// ones and the file arrives whole.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_asks_again_for_store_urls_that_expire_mid_download() {
    let world = World::on(hub_on_s3(Some(Duration::from_secs(1))).await);
    let bytes = pseudo_random_bytes(93, 8 * MIB);
    let (_, link) = world
        .shared(vec![FileSpec::file("long.mov", bytes.clone())])
        .await;
    let mut config = engine_config(&world.hub.base_url);
    config.bandwidth = masv_agent::config::BandwidthSettings::check(
        serde_json::from_value(json!({"download": "4MiB"})).unwrap(),
    )
    .unwrap();
    let agent = TestAgent::start(config).await;
    let dst = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let id = agent
        .api
        .download(download_request(&link, dst.path()))
        .await;
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    assert!(
        started.elapsed() > Duration::from_millis(1500),
        "outlived its first URLs"
    );
    let metrics = agent.api.base.replace("/api/v1", "/metrics");
    let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    assert!(
        metric(&text, "masv_agent_errors_total{kind=\"expired\"}") > 0,
        "the store refused an expired URL: {text}"
    );
    let file = walk(dst.path()).pop().unwrap();
    assert!(std::fs::read(file).unwrap() == bytes);
}

/// Two hubs over one data folder and one bucket serve one agent: a package sent through the
/// first is downloaded through the second (SQLite in WAL mode is safe for processes on one
/// machine; the store is shared by its nature).
#[tokio::test(flavor = "multi_thread")]
async fn two_hubs_on_one_bucket_serve_one_agent() {
    let first = hub_on_s3(None).await;
    let data = first.data.clone();
    let world = World::on(first);
    let second = TestHub::start_with(
        data,
        HubOptions {
            s3: true,
            ..HubOptions::default()
        },
    )
    .await;
    let src = tempfile::tempdir().unwrap();
    let bytes = pseudo_random_bytes(94, 6 * MIB);
    std::fs::write(src.path().join("shared.mov"), &bytes).unwrap();
    let mut config = engine_config(&world.hub.base_url);
    config.api_key = Some(world.api_key.clone());
    let sender = TestAgent::start(config).await;
    let (created, up) = sender
        .api
        .upload_to_end(json!({"team_id": world.team_id, "paths": [src.path().join("shared.mov")]}))
        .await;
    assert_eq!(up["state"], "complete", "{up}");

    let receiver = TestAgent::start(engine_config(&second.base_url)).await;
    let dst = tempfile::tempdir().unwrap();
    let link = created["link"].as_str().unwrap();
    let down = receiver
        .api
        .download(download_request(link, dst.path()))
        .await;
    let got = receiver
        .api
        .wait_for("downloads", &down, &["complete", "error"], LONG)
        .await;
    assert_eq!(got["state"], "complete", "{got}");
    assert!(std::fs::read(walk(dst.path()).pop().unwrap()).unwrap() == bytes);
}

/// `masv hub serve --storage s3://…` takes the store's credentials from its seed file's `[s3]`
/// (an environment variable and a file here): the store accepts what the hub signs with them,
/// and refuses what it signs with a wrong secret.
#[tokio::test(flavor = "multi_thread")]
async fn a_hub_process_signs_with_the_credentials_of_its_seed_file() {
    let data = DataDir::new();
    let store = data.s3();
    for (secret, accepted) in [(S3_SECRET, true), ("not-the-secret", false)] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s3-secret"), format!("{secret}\n")).unwrap();
        let team = "01JAAAAAAAAAAAAAAAAAAAAAAA";
        let key = format!("seeded-{}", "k".repeat(40));
        std::fs::write(
            dir.path().join("seed.toml"),
            format!(
                "[[team]]\nname = \"Seeded\"\nid = \"{team}\"\napi_keys = [\"{key}\"]\n\n[s3]\naccess_key = {{ env = \"SEEDED_S3_KEY\" }}\nsecret_key = {{ file = \"{}\" }}\n",
                dir.path().join("s3-secret").display()
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut hub = std::process::Command::new(env!("CARGO_BIN_EXE_masv"))
            .args([
                "hub",
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data",
            ])
            .arg(dir.path().join("data"))
            .arg("--seed")
            .arg(dir.path().join("seed.toml"))
            .args([
                "--storage",
                "s3://masv/seeded",
                "--s3-path-style",
                "--s3-endpoint",
            ])
            .arg(store.endpoint.as_str())
            .env("SEEDED_S3_KEY", S3_KEY)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}/v1");
        let client = masv_agent::cloud::Client::new(&base).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the hub did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let package = client
            .create_team_package(
                team,
                &masv_agent::cloud::dto::Secret::new(key),
                &named("seeded"),
            )
            .await
            .unwrap();
        let added = client
            .add_file(
                &package.id,
                &package.access_token,
                &FileSpec::file("a.bin", vec![7; 10]).request(),
            )
            .await
            .unwrap();
        let opened = client
            .create_multipart(added.create_blueprint.as_ref().unwrap())
            .await;
        let _ = hub.kill();
        let _ = hub.wait();
        assert_eq!(opened.is_ok(), accepted, "secret {secret}: {opened:?}");
    }
}

/// A finalize whose multipart upload the store completed but the hub never recorded (the hub
/// stopped, or its answer was lost, between the two): sent again, it finds the object complete
/// with the size it states and records it, instead of refusing an upload the store no longer
/// lists. The state is made by completing the upload on the store directly.
#[tokio::test(flavor = "multi_thread")]
async fn a_finalize_repeated_after_the_store_completed_the_upload_is_recorded() {
    use masv_agent::cloud::dto::{ChunkExtra, FileExtras, FinalizeFile};
    use rusty_s3::S3Action as _;
    let world = World::on(hub_on_s3(None).await);
    let client = &world.client;
    let package = world.team_package(named("completed")).await;
    let token = &package.access_token;
    let bytes = pseudo_random_bytes(95, MIB);
    let added = client
        .add_file(
            &package.id,
            token,
            &FileSpec::file("a.bin", bytes.clone()).request(),
        )
        .await
        .unwrap();
    let upload_id = client
        .create_multipart(added.create_blueprint.as_ref().unwrap())
        .await
        .unwrap();
    let part = client
        .part_urls(&package.id, &added.file.id, token, &upload_id, 0, 1)
        .await
        .unwrap()
        .remove(0);
    let etag = client
        .put_part(
            &part,
            reqwest::Body::from(bytes.clone()),
            bytes.len() as u64,
            None,
        )
        .await
        .unwrap();

    // What the hub does at finalize, done on the store alone.
    let store = world.hub.data.s3();
    let bucket = rusty_s3::Bucket::new(
        store.endpoint.clone(),
        rusty_s3::UrlStyle::Path,
        store.bucket.clone(),
        "us-east-1",
    )
    .unwrap();
    let credentials = rusty_s3::Credentials::new(S3_KEY, S3_SECRET);
    let key = format!("hub/{}/{}", package.id, added.file.id);
    let complete = rusty_s3::actions::CompleteMultipartUpload::new(
        &bucket,
        Some(&credentials),
        &key,
        &upload_id,
        std::iter::once(etag.as_str()),
    );
    let url = complete.sign(Duration::from_secs(60));
    let answer = reqwest::Client::new()
        .post(url)
        .body(complete.body())
        .send()
        .await
        .unwrap();
    assert!(
        answer.status().is_success(),
        "{}",
        answer.text().await.unwrap()
    );

    let finalize = FinalizeFile {
        size: bytes.len() as u64,
        chunk_size: bytes.len() as u64,
        file_extras: FileExtras { upload_id },
        chunk_extras: vec![ChunkExtra {
            part_number: 1,
            etag,
        }],
    };
    client
        .finalize_file(&package.id, &added.file.id, token, &finalize)
        .await
        .unwrap();
    client.finalize_package(&package.id, token).await.unwrap();
    let url = client
        .download_url(&package.id, &added.file.id, token)
        .await
        .unwrap();
    let response = client.get_range(&url, None).await.unwrap();
    assert!(read_body(response).await.unwrap() == bytes);
}
