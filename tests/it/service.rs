//! The agent as a service: the systemd notify messages of the real binary, SIGTERM mid-download
//! (chunks in flight finish, exit 0, the next start resumes), JSON logs carrying the transfer
//! and its rule, `/metrics` moved by real transfers, and the API token off loopback.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use masv_agent::cloud::dto::{CreateLink, Secret};
use masv_agent::daemon::{self, AgentConfig};
use masv_agent::hub::Faults;
use serde_json::{Value, json};
use tokio::net::{TcpListener, UnixDatagram};

use crate::agent::{Api, ProcessAgent, TestAgent, download_request, engine_config, hub_bytes_sent};
use crate::support::{FileSpec, HubOptions, MIB, TestHub, World, pseudo_random_bytes};

const LONG: Duration = Duration::from_secs(90);

/// The next notify datagram that contains `wanted`, skipping others; panics after 20 s.
async fn notified(socket: &UnixDatagram, wanted: &str, seen: &mut Vec<String>) {
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {wanted} from the agent; it sent {seen:?}"))
            .expect("the notify socket reads");
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(message.clone());
        if message.lines().any(|l| l == wanted) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn under_systemd_the_agent_says_ready_pings_the_watchdog_and_says_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let agent = ProcessAgent::start_with(dir.path(), "http://127.0.0.1:9/v1", &[], |c| {
        c.env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "400000");
    })
    .await;
    let mut seen = Vec::new();
    notified(&socket, "READY=1", &mut seen).await;
    // Half of WATCHDOG_USEC: several pings within a second.
    let started = Instant::now();
    for _ in 0..3 {
        notified(&socket, "WATCHDOG=1", &mut seen).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "pings every 200 ms: {seen:?}"
    );
    agent.sigterm();
    notified(&socket, "STOPPING=1", &mut seen).await;
    let status = agent.exit_status(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{seen:?}");
}

/// Bytes of the chunks the stopped agent over `data` committed for `id`, read from its database.
async fn committed_bytes(data: &Path, id: &str) -> u64 {
    let store = masv_agent::store::Store::open(&data.join("agent/agent.db")).unwrap();
    store.chunks(id).await.unwrap().iter().map(|c| c.size).sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_download_lets_chunks_in_flight_finish_exits_0_and_the_next_start_resumes() {
    // Every storage request waits 1.5 s before its bytes come: at any moment the 4 chunks in
    // flight are almost surely all waiting, and finishing them takes a visible while.
    let delay = Duration::from_millis(1500);
    let world = World::slow(delay).await;
    let (size, chunk) = (16 * MIB, MIB as u64);
    let bytes = pseudo_random_bytes(61, size);
    let (_, url) = world
        .shared(vec![FileSpec::file("master.mxf", bytes.clone())])
        .await;
    let data = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let flags = |timeout: &'static str| {
        [
            "--max-connections",
            "4",
            "--chunk-size",
            "1MiB",
            "--shutdown-timeout",
            timeout,
        ]
    };

    // SIGTERM with a 10 s deadline: the 4 chunks in flight finish and are committed.
    let agent = ProcessAgent::start(data.path(), &world.hub.base_url, &flags("10s"), None).await;
    let id = agent.api.download(download_request(&url, dst.path())).await;
    agent
        .api
        .wait_for_bytes("downloads", &id, 4 * chunk, LONG)
        .await;
    // The workers have taken the next 4 chunks, whose requests now wait out the delay (the
    // wave after them cannot start before 1.5 s).
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_, detail) = agent.api.get(&format!("/downloads/{id}")).await;
    let done_at_sigterm = detail["bytes_done"].as_u64().unwrap();
    let api = agent.api.clone();
    let asked = Instant::now();
    agent.sigterm();
    let status = agent.exit_status(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "a clean stop exits 0");
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "the chunks in flight took about one delay to finish: {:?}",
        asked.elapsed()
    );
    assert!(
        reqwest::get(format!("{}/downloads", api.base))
            .await
            .is_err(),
        "nothing listens any more"
    );
    let drained = committed_bytes(data.path(), &id).await;
    assert!(
        drained >= done_at_sigterm + 4 * chunk,
        "the 4 chunks in flight at SIGTERM were finished and committed: {drained} bytes committed, {done_at_sigterm} done at SIGTERM"
    );
    assert!(drained < size as u64, "no new chunk started after SIGTERM");

    // A deadline shorter than the delay: the chunks in flight are cut off, still exit 0.
    let agent = ProcessAgent::start(data.path(), &world.hub.base_url, &flags("200ms"), None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    agent.sigterm();
    let status = agent.exit_status(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0));
    assert!(
        asked.elapsed() < delay,
        "cut off at the deadline: {:?}",
        asked.elapsed()
    );
    assert_eq!(committed_bytes(data.path(), &id).await, drained);

    // The next start resumes by itself, fetching only what was not committed.
    let agent = ProcessAgent::start(data.path(), &world.hub.base_url, &flags("10s"), None).await;
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "it resumed by itself: {done}");
    assert_eq!(
        std::fs::read(dst.path().join("dailies day 1/master.mxf")).unwrap(),
        bytes
    );
    assert_eq!(
        hub_bytes_sent(world.hub.addr).await,
        size as u64,
        "no byte was fetched twice"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_at_the_configured_level_carry_the_transfer_id_and_rule_name_and_sighup_reloads()
{
    let world = World::new().await;
    let (_, url) = world
        .shared(vec![FileSpec::file("cut.mov", b"the cut".to_vec())])
        .await;
    let site = tempfile::tempdir().unwrap();
    let config = site.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
log_format = "json"
log_level = "warn,masv_agent::transfer=info,masv_agent::daemon=info"

[[download]]
name = "vendor-link"
link = "{url}"
destination = "incoming"
"#
        ),
    )
    .unwrap();
    let log = site.path().join("agent.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let config_arg = config.display().to_string();
    let agent = ProcessAgent::start_with(
        site.path(),
        &world.hub.base_url,
        &["--config", &config_arg],
        |c| {
            c.env_remove("RUST_LOG").stderr(Stdio::from(log_file));
        },
    )
    .await;
    let file = site.path().join("incoming/dailies day 1/cut.mov");
    let start = Instant::now();
    while !file.exists() {
        assert!(start.elapsed() < LONG, "the rule's download did not arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, downloads) = agent.api.get("/downloads").await;
    let id = downloads[0]["download_id"].as_str().unwrap().to_owned();
    agent
        .api
        .wait_for("downloads", &id, &["complete"], LONG)
        .await;
    // SIGHUP reloads the rules; the agent goes on.
    agent.signal(rustix::process::Signal::HUP);
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("configuration reloaded")
    {
        assert!(start.elapsed() < LONG, "SIGHUP did not reload the rules");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = agent.api.get("/downloads").await;
    assert_eq!(status, 200, "the agent survives SIGHUP");
    agent.sigterm();
    assert_eq!(agent.exit_status(LONG).await.code(), Some(0));

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let with = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} event in:\n{text}"))
    };
    let created = with("download created");
    assert_eq!(created["transfer_id"], id.as_str(), "{created}");
    assert_eq!(created["rule"], "vendor-link", "{created}");
    let ended = with("transfer ended");
    assert_eq!(ended["span"]["transfer_id"], id.as_str(), "{ended}");
    assert_eq!(ended["span"]["rule"], "vendor-link", "{ended}");
    assert_eq!(ended["level"], "INFO");
    assert!(with("SIGHUP: reloading the configuration")["level"] == "INFO");
    assert!(
        !lines.iter().any(|l| l["message"] == "automation started"),
        "log_level keeps the rules' info events out:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn real_transfers_move_the_metrics_and_healthz_answers() {
    let world = World::new().await;
    let size = 9 * MIB + 3;
    let bytes = pseudo_random_bytes(62, size);
    let package = world
        .upload(vec![FileSpec::file("take.mov", bytes.clone())])
        .await;
    let link = world.share(&package, CreateLink::default()).await;
    // The same data from a hub whose storage fails 30% of its requests (5xx, no bytes sent).
    let flaky = TestHub::start_with(
        world.hub.data.clone(),
        HubOptions::faults(Faults {
            fail_ratio: 0.3,
            ..Faults::default()
        }),
    )
    .await;
    let site = tempfile::tempdir().unwrap();
    let drop = site.path().join("drop");
    std::fs::create_dir_all(&drop).unwrap();
    let config = site.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[[watch]]\nname = \"drop\"\nfolder = \"drop\"\nsettle = \"200ms\"\n[watch.portal]\nsubdomain = \"{}\"\nsender = \"editor@example.com\"\n",
            world.open_portal.subdomain
        ),
    )
    .unwrap();
    let mut engine = engine_config(&flaky.base_url);
    engine.api_key = Some(world.api_key.clone());
    let agent = TestAgent::start_configured(site.path(), engine, Some(&config)).await;

    let metrics = |api: Api| async move {
        let url = api.base.replace("/api/v1", "/metrics");
        let response = reqwest::get(url).await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        let text = response.text().await.unwrap();
        move |series: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
                .parse()
                .unwrap()
        }
    };
    let before = metrics(agent.api.clone()).await;
    assert_eq!(before("masv_agent_bytes_downloaded_total"), 0);
    assert_eq!(before("masv_agent_queue_depth"), 0);

    // Small chunks: 37 storage requests, so some of them fail.
    let mut request = download_request(&flaky.link_url(&link), &site.path().join("in"));
    request["chunk_size"] = json!(256 * 1024);
    let id = agent.api.download(request).await;
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    let upload = pseudo_random_bytes(63, 2 * MIB + 1);
    std::fs::write(drop.join("report.mov"), &upload).unwrap();
    let start = Instant::now();
    loop {
        let (_, uploads) = agent.api.get("/uploads").await;
        if uploads[0]["state"] == "complete" {
            break;
        }
        assert!(
            start.elapsed() < LONG,
            "the watch folder's upload: {uploads}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let after = metrics(agent.api.clone()).await;
    let retries = after("masv_agent_retries_total");
    assert!(retries > 0, "30% of storage requests failed");
    // The byte counters count what crossed the network: every byte once, and a request sent
    // again (a part whose 500 came after its body, a range of a pass started again) at most
    // once more.
    let downloaded = after("masv_agent_bytes_downloaded_total");
    assert!(
        (size as u64..=size as u64 + retries * 256 * 1024).contains(&downloaded),
        "{downloaded} bytes downloaded for {size}, {retries} retries"
    );
    let uploaded = after("masv_agent_bytes_uploaded_total");
    assert!(
        (upload.len() as u64..=upload.len() as u64 + retries * MIB as u64).contains(&uploaded),
        "{uploaded} bytes uploaded for {}, {retries} retries",
        upload.len()
    );
    assert_eq!(
        after("masv_agent_errors_total{kind=\"transient\"}"),
        retries,
        "every transient error was retried"
    );
    assert_eq!(after("masv_agent_errors_total{kind=\"auth\"}"), 0);
    assert_eq!(after("masv_agent_watch_events_total"), 1);
    assert_eq!(
        after("masv_agent_transfers{kind=\"download\",state=\"complete\"}"),
        1
    );
    assert_eq!(
        after("masv_agent_transfers{kind=\"upload\",state=\"complete\"}"),
        1
    );
    assert_eq!(
        after("masv_agent_transfers{kind=\"download\",state=\"transferring\"}"),
        0
    );
    assert_eq!(after("masv_agent_queue_depth"), 0);

    let health = reqwest::get(agent.api.base.replace("/api/v1", "/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_depth_counts_requests_waiting_for_a_connection() {
    let world = World::slow(Duration::from_millis(100)).await;
    let (_, url) = world
        .shared(vec![FileSpec::file(
            "a.mov",
            pseudo_random_bytes(64, 8 * MIB),
        )])
        .await;
    let mut engine = engine_config(&world.hub.base_url);
    engine.max_connections = 1;
    let agent = TestAgent::start(engine).await;
    let dst = tempfile::tempdir().unwrap();
    // Two downloads, one connection: one worker of each asks, one of them waits.
    let mut ids = Vec::new();
    for folder in ["one", "two"] {
        let mut request = download_request(&url, &dst.path().join(folder));
        request["chunk_size"] = json!(MIB);
        ids.push(agent.api.download(request).await);
    }
    let metrics = agent.api.base.replace("/api/v1", "/metrics");
    let depth = || async {
        let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("masv_agent_queue_depth "))
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let start = Instant::now();
    let mut most = 0;
    while most == 0 && start.elapsed() < Duration::from_secs(20) {
        most = most.max(depth().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(most >= 1, "a request waited for the one connection");
    for id in &ids {
        let done = agent
            .api
            .wait_for("downloads", id, &["complete", "error"], LONG)
            .await;
        assert_eq!(done["state"], "complete", "{done}");
    }
    assert_eq!(depth().await, 0);
}

/// Starts an agent on all addresses with `token` in its configuration.
async fn agent_on_all_addresses(
    data: &Path,
    token: Option<&str>,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<(), daemon::DaemonError>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut config = masv_agent::config::Config::default();
    config.server.api_token = token.map(Secret::new);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(daemon::run(
        AgentConfig {
            data_dir: data.join("agent"),
            engine: engine_config("http://127.0.0.1:9/v1"),
            config_path: None,
            config,
            insecure_no_token: true,
        },
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    (([127, 0, 0, 1], port).into(), task, stop)
}

async fn masv(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_masv"));
    command
        .args(args)
        .env_remove("MASV_API_TOKEN")
        .env_remove("MASV_CONFIG");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().await.expect("masv runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn off_loopback_the_api_needs_a_token_and_every_request_must_carry_it() {
    let data = tempfile::tempdir().unwrap();
    let (_, refused, _stop) = agent_on_all_addresses(data.path(), None).await;
    let error = refused.await.unwrap().unwrap_err().to_string();
    assert!(
        error.contains("without an API token") && error.contains("api_token"),
        "{error}"
    );

    let token = "s3cret-token-for-tests";
    let (addr, task, stop) = agent_on_all_addresses(data.path(), Some(token)).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let start = Instant::now();
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the agent listens"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for path in ["/api/v1/downloads", "/metrics", "/healthz"] {
        let bare = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(bare.status(), 401, "{path} without a token");
        assert_eq!(bare.headers()["www-authenticate"], "Bearer");
        let body: Value = bare.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().contains("MASV_API_TOKEN"),
            "{body}"
        );
        let wrong = http
            .get(format!("{base}{path}"))
            .bearer_auth("not-it")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
        let right = http
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .header("Origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), 200, "{path} with the token");
        assert!(
            right.headers().get("access-control-allow-origin").is_none(),
            "no CORS: pages of other sites cannot read the answers"
        );
    }
    let huge = http
        .post(format!("{base}/api/v1/downloads"))
        .bearer_auth(token)
        .body(vec![b' '; 2 * MIB])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413, "request bodies are capped");

    // The CLI: the token from the environment or from the agent's configuration file.
    let agent_url = format!("--agent-url={base}");
    let without = masv(&["download", "ls", &agent_url], &[]).await;
    assert_eq!(without.status.code(), Some(4), "refused: exit status 4");
    assert!(
        String::from_utf8_lossy(&without.stderr).contains("API token"),
        "{}",
        String::from_utf8_lossy(&without.stderr)
    );
    let from_env = masv(
        &["download", "ls", &agent_url],
        &[("MASV_API_TOKEN", token)],
    )
    .await;
    assert_eq!(
        from_env.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&from_env.stderr)
    );
    let config = data.path().join("agent.toml");
    std::fs::write(&config, "[server]\napi_token = { env = \"AGENT_TOKEN\" }\n").unwrap();
    let config_arg = config.display().to_string();
    let from_config = masv(
        &["download", "ls", &agent_url, "--config", &config_arg],
        &[("AGENT_TOKEN", token)],
    )
    .await;
    assert_eq!(
        from_config.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&from_config.stderr)
    );

    // The database holds secrets: owner-only.
    use std::os::unix::fs::PermissionsExt;
    for name in ["agent.db", "agent.db-wal"] {
        let path = data.path().join("agent").join(name);
        if let Ok(meta) = std::fs::metadata(&path) {
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        } else {
            assert_ne!(name, "agent.db", "the database exists");
        }
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unprivileged_agent_gives_files_an_owner_with_the_capabilities_of_the_chown_drop_in() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert!(
        rustix::process::geteuid().is_root(),
        "this test runs the agent as nobody with capabilities (setpriv): run the tests as root (CI does)"
    );
    // What examples/systemd/chown.conf grants, as setpriv spells it.
    let dropin = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/systemd/chown.conf"
    ))
    .unwrap();
    let caps: Vec<String> = dropin
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("the drop-in grants ambient capabilities")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let caps = caps.join(",");
    let world = World::new().await;
    let (_, url) = world
        .shared(vec![
            FileSpec::file("a.mov", pseudo_random_bytes(65, 3 * MIB)).at("day1"),
            FileSpec::directory("empty"),
        ])
        .await;
    let area = tempfile::tempdir().unwrap();
    std::fs::set_permissions(area.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];

    // As nobody with (inheritable, ambient, bounding) capabilities `caps`, or none.
    let run = |caps: String, dst: &'static str| {
        let area = area.path().to_path_buf();
        let url = url.clone();
        let hub = world.hub.base_url.clone();
        async move {
            let mut wrapper = vec!["setpriv"];
            wrapper.extend(nobody);
            let (inh, ambient, bounding) = if caps.is_empty() {
                (
                    "--inh-caps=-all".to_owned(),
                    None,
                    "--bounding-set=-all".to_owned(),
                )
            } else {
                (
                    format!("--inh-caps=-all,{caps}"),
                    Some(format!("--ambient-caps={caps}")),
                    format!("--bounding-set=-all,{caps}"),
                )
            };
            wrapper.push(&inh);
            if let Some(ambient) = &ambient {
                wrapper.push(ambient);
            }
            wrapper.push(&bounding);
            let data = area.join(format!("state-{dst}"));
            std::fs::create_dir(&data).unwrap();
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
            let agent = ProcessAgent::start_wrapped(&wrapper, &data, &hub, &[], |_| {}).await;
            let mut req = download_request(&url, &area.join(dst));
            req["user_id"] = json!(12345);
            req["group_id"] = json!(23456);
            req["file_mode"] = json!(0o640);
            req["folder_mode"] = json!(0o750);
            let id = agent.api.download(req).await;
            agent
                .api
                .wait_for("downloads", &id, &["complete", "error"], LONG)
                .await
        }
    };

    let refused = run(String::new(), "without").await;
    assert_eq!(refused["state"], "error", "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("CAP_CHOWN"),
        "the error says what to grant: {refused}"
    );

    let done = run(caps.clone(), "with").await;
    assert_eq!(done["state"], "complete", "with {caps}: {done}");
    let dst = area.path().join("with");
    for (rel, mode) in [
        ("dailies day 1", 0o750),
        ("dailies day 1/day1", 0o750),
        ("dailies day 1/empty", 0o750),
        ("dailies day 1/day1/a.mov", 0o640),
    ] {
        let meta = std::fs::symlink_metadata(dst.join(rel)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (12345, 23456), "{rel}");
        assert_eq!(meta.mode() & 0o777, mode, "{rel}");
    }
    assert_eq!(
        std::fs::read(dst.join("dailies day 1/day1/a.mov")).unwrap(),
        pseudo_random_bytes(65, 3 * MIB)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn by_default_only_who_can_read_the_agents_data_folder_can_use_its_api() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test runs a command as another user: run the tests as root (CI does)"
    );
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let agent_dir = data.path().join("agent");
    // No token configured, no --insecure-no-token: the default.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_masv"))
        .args(["server", "start", "--listen", &format!("localhost:{port}")])
        .arg("--data-dir")
        .arg(&agent_dir)
        .args(["--cloud-url", "http://127.0.0.1:9/v1"])
        .env_remove("MASV_API_TOKEN")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    let bare = loop {
        if let Ok(answer) = reqwest::get(format!("{base}/api/v1/downloads")).await {
            break answer;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the agent listens"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(bare.status(), 401, "loopback too needs the token");
    // The token the agent made: owner-only, in an owner-only folder.
    use std::os::unix::fs::PermissionsExt;
    let token_file = agent_dir.join("api-token");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(mode(&agent_dir), 0o700);
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(token.trim().len() >= 32);

    // masv commands read it themselves.
    let cli = |user: Option<&str>| {
        let mut command = match user {
            Some(user) => {
                let mut c = std::process::Command::new("setpriv");
                c.args([
                    &format!("--reuid={user}"),
                    "--regid=nogroup",
                    "--clear-groups",
                    env!("CARGO_BIN_EXE_masv"),
                ]);
                c
            }
            None => std::process::Command::new(env!("CARGO_BIN_EXE_masv")),
        };
        command
            .args(["download", "ls", "--agent-url", &base])
            .env("MASV_DATA_DIR", &agent_dir)
            .env("HOME", "/nonexistent")
            .env_remove("MASV_API_TOKEN")
            .env_remove("MASV_CONFIG")
            .output()
            .unwrap()
    };
    let owner = cli(None);
    assert!(
        owner.status.success(),
        "{}",
        String::from_utf8_lossy(&owner.stderr)
    );
    // Another local user cannot read the token, even with every folder above the data folder
    // open to them (only the agent's own 0700/0600 stand in the way), and the agent refuses
    // them: exit status 4, a message about the token.
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let read = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat"])
        .arg(&token_file)
        .output()
        .unwrap();
    assert!(!read.status.success(), "nobody read the token file");
    assert!(read.stdout.is_empty());
    let other = cli(Some("nobody"));
    assert_eq!(other.status.code(), Some(4), "refused");
    let said = String::from_utf8_lossy(&other.stderr);
    assert!(said.contains("token"), "{said}");
    // Nor does a guessed token get in.
    let guessed = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_masv"))
        .args([
            "download",
            "ls",
            "--agent-url",
            &base,
            "--api-token",
            "0123456789abcdef",
        ])
        .output()
        .unwrap();
    assert_eq!(guessed.status.code(), Some(4));
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_api_token_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_masv"))
        .args([
            "server",
            "start",
            "--listen",
            "127.0.0.1:0",
            "--api-token",
            "  ",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("empty API token"), "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn text_logs_written_to_a_file_carry_no_colour_codes() {
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = data.path().join("agent.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_masv"))
        .args(["server", "start", "--insecure-no-token", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data.path().join("agent"))
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("JOURNAL_STREAM")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the agent listens"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("agent serving"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file: {text:?}"
    );
}
