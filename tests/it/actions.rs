//! Post-transfer actions against real receivers on loopback: a webhook receiver (axum, here),
//! a real SMTP server (Python's aiosmtpd, writing a maildir), and a real command (a script that
//! writes what it got). Events delivered once, after a crash too, and through an outage of
//! the receiver while transfers go on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::agent::{Api, ProcessAgent, TestAgent, download_request, engine_config};
use crate::cli::{masv, ok};
use crate::support::{FileSpec, MIB, World, pseudo_random_bytes};

const LONG: Duration = Duration::from_secs(60);
const SECRET: &str = "hook secret 1";

/// One POST the receiver took.
#[derive(Clone, Debug)]
struct Hit {
    headers: HeaderMap,
    body: Bytes,
    answered: u16,
}

impl Hit {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a webhook body is JSON")
    }
}

/// A webhook receiver: answers 500 until `healthy_at`, then 200; keeps every request.
struct Receiver {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    async fn start(failing_for: Duration) -> Receiver {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let healthy_at = Instant::now() + failing_for;
        let kept = hits.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let kept = kept.clone();
                async move {
                    let status = if Instant::now() < healthy_at {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    };
                    kept.lock().unwrap().push(Hit {
                        headers,
                        body,
                        answered: status.as_u16(),
                    });
                    (status, "ok")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, hits }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The events accepted (answered 200) of type `event`.
    fn delivered(&self, event: &str) -> Vec<Hit> {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.answered == 200 && h.json()["event"] == event)
            .cloned()
            .collect()
    }

    fn refused(&self) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.answered == 500)
            .count()
    }
}

/// A real SMTP server (aiosmtpd, run by [`SMTP_SERVER`]) storing what it takes in a maildir.
struct SmtpServer {
    port: u16,
    maildir: PathBuf,
    child: Child,
}

/// How the test SMTP server takes connections.
enum SmtpMode<'a> {
    /// No TLS, no login.
    Plain,
    /// STARTTLS required, then a login (agent / s3cret); with this certificate and key.
    Starttls(&'a Path, &'a Path),
    /// TLS from the first byte, then a login.
    Tls(&'a Path, &'a Path),
}

/// aiosmtpd as a program: `PORT MAILDIR plain|starttls|tls [CERT KEY]`.
const SMTP_SERVER: &str = r#"
import ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword

port, maildir, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
options = {}
if mode != "plain":
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[4], sys.argv[5])

    def authenticate(server, session, envelope, mechanism, data):
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"agent", b"s3cret")
        # handled=False: aiosmtpd answers 535 itself (with True it answers nothing).
        return AuthResult(success=ok, handled=False)

    options.update(authenticator=authenticate, auth_required=True)
    if mode == "starttls":
        options.update(tls_context=context, require_starttls=True)
    else:
        # The whole connection is TLS; aiosmtpd only counts STARTTLS as such.
        options.update(ssl_context=context, auth_require_tls=False)
Controller(Mailbox(maildir), hostname="127.0.0.1", port=port, **options).start()
while True:
    time.sleep(3600)
"#;

impl SmtpServer {
    fn start(dir: &Path, mode: SmtpMode<'_>) -> SmtpServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let maildir = dir.join(format!("maildir-{port}"));
        let script = dir.join("smtp_server.py");
        std::fs::write(&script, SMTP_SERVER).unwrap();
        let mut command = Command::new("python3");
        command.arg(&script).arg(port.to_string()).arg(&maildir);
        match mode {
            SmtpMode::Plain => command.arg("plain"),
            SmtpMode::Starttls(cert, key) => command.arg("starttls").arg(cert).arg(key),
            SmtpMode::Tls(cert, key) => command.arg("tls").arg(cert).arg(key),
        };
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs (CI installs aiosmtpd: pip install aiosmtpd)");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "aiosmtpd did not listen on {port}: is it installed (pip install aiosmtpd)?"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        SmtpServer {
            port,
            maildir,
            child,
        }
    }

    /// The messages received, as text (quoted-printable bodies decoded).
    fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.maildir.join("new"))
            .into_iter()
            .flatten()
        {
            let raw = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            out.push(quoted_printable(&raw));
        }
        out
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Undoes quoted-printable: soft line breaks joined, `=XX` decoded.
fn quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every delivery of every event is delivered; returns the events.
async fn all_delivered(api: &Api, events: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let (status, answer) = api.get("/events").await;
        assert_eq!(status, 200, "{answer}");
        let list = answer["events"].as_array().cloned().unwrap_or_default();
        let done = list.len() >= events
            && list.iter().all(|e| {
                e["deliveries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|d| d["state"] == "delivered")
            });
        if done {
            return list;
        }
        assert!(
            start.elapsed() < LONG,
            "waiting for {events} events delivered: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An agent on `world`'s hub, with its team's key, running the configuration `text` (written
/// in `site`).
async fn agent_running(world: &World, site: &Path, text: &str) -> TestAgent {
    let config = site.join("agent.toml");
    std::fs::write(&config, text).unwrap();
    let mut engine = engine_config(&world.hub.base_url);
    engine.api_key = Some(world.api_key.clone());
    TestAgent::start_configured(site, engine, Some(&config)).await
}

/// The secret file and a webhook action posting to `receiver`.
fn webhook_action(dir: &Path, receiver: &Receiver, extra: &str) -> String {
    let secret = dir.join("hook-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    format!(
        r#"
[[action]]
name = "ingest-hook"
kind = "webhook"
url = "{}"
secret = {{ file = "{}" }}
{extra}
"#,
        receiver.url(),
        secret.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_folder_upload_is_announced_once_by_signed_webhook_and_email_and_the_download_runs_its_command()
 {
    let site = tempfile::tempdir().unwrap();
    let dir = site.path();
    for folder in ["outbox", "links", "inbox", "work"] {
        std::fs::create_dir_all(dir.join(folder)).unwrap();
    }
    let receiver = Receiver::start(Duration::ZERO).await;
    let smtp = SmtpServer::start(dir, SmtpMode::Plain);
    let script = dir.join("record.sh");
    // Writes its arguments, environment and stdin where it runs.
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"ran-$MASV_EVENT_ID.args\"\n\
         printf '%s\\n' \"$MASV_EVENT\" \"$MASV_TRANSFER_ID\" \"$MASV_RULE\" > \"ran-$MASV_EVENT_ID.env\"\n\
         printf '%s\\n' \"$MASV_PATHS\" > \"ran-$MASV_EVENT_ID.paths\"\n\
         cat > \"ran-$MASV_EVENT_ID.json\"\necho ingested\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = format!(
        r#"{chain}{hook}
[[action]]
name = "producers"
kind = "email"
events = ["upload.delivered"]
smtp_host = "127.0.0.1"
smtp_port = {port}
tls = "none"
from = "MASV Agent <agent@example.com>"
to = ["ops@example.com", "Producer <producer@example.com>"]

[[action]]
name = "ingest"
kind = "command"
events = ["download.arrived"]
rules = ["links"]
program = "{script}"
args = ["--from", "masv agent"]
working_dir = "work"
timeout = "20s"
"#,
        chain = crate::automations::chain(""),
        hook = webhook_action(dir, &receiver, ""),
        port = smtp.port,
        script = script.display(),
    );
    let config_path = dir.join("agent.toml");
    std::fs::write(&config_path, config).unwrap();
    let agent = TestAgent::start_configured(
        dir,
        engine_config("http://127.0.0.1:9/v1"),
        Some(&config_path),
    )
    .await;
    std::fs::create_dir_all(dir.join("outbox/reel 1")).unwrap();
    std::fs::write(
        dir.join("outbox/reel 1/take1.mov"),
        pseudo_random_bytes(1, 70_000),
    )
    .unwrap();
    std::fs::write(dir.join("outbox/notes.txt"), b"use take 1").unwrap();

    // The upload, then the download of its link: two events, five deliveries.
    let events = all_delivered(&agent.api, 2).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let uploaded = receiver.delivered("upload.delivered");
    assert_eq!(uploaded.len(), 1, "exactly one upload.delivered webhook");
    let hit = &uploaded[0];
    assert_eq!(hit.headers["content-type"], "application/json");
    assert_eq!(
        hit.headers["x-masv-signature"].to_str().unwrap(),
        signature(&hit.body),
        "the signature is the HMAC-SHA256 of the body under the secret"
    );
    let payload = hit.json();
    assert_eq!(payload["schema_version"], 1);
    assert_eq!(payload["rule"], "outbox");
    assert_eq!(payload["package"]["name"], "outbox 2 files");
    assert_eq!(payload["counts"]["files_done"], 2);
    assert_eq!(payload["bytes"]["done"], 70_000 + 10);
    assert_eq!(payload["transfer"]["kind"], "upload");
    let notes = payload["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "notes.txt")
        .unwrap();
    assert_eq!(
        notes["hash"]["xxh64"],
        masv_agent::mhl::hash_data(masv_agent::mhl::HashFormat::Xxh64, b"use take 1"),
        "each file sent with the hash computed as it went: {notes}"
    );
    assert_eq!(
        hit.headers["x-masv-event-id"],
        payload["id"].as_str().unwrap()
    );
    let link_file = std::fs::read_dir(dir.join("links"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let link = payload["link"].as_str().unwrap().to_owned();
    assert!(
        std::fs::read_to_string(link_file)
            .unwrap()
            .contains(&format!("URL={link}")),
        "the share link, as the rule's link folder has it"
    );
    let mut sources: Vec<&str> = payload["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["local_path"].as_str().unwrap())
        .collect();
    sources.sort();
    assert!(sources[0].ends_with("outbox/notes.txt"), "{sources:?}");
    assert!(
        sources[1].ends_with("outbox/reel 1/take1.mov"),
        "{sources:?}"
    );

    let arrived = receiver.delivered("download.arrived");
    assert_eq!(arrived.len(), 1);
    let arrived = arrived[0].json();
    assert_eq!(arrived["rule"], "links");

    // One email, to both recipients, saying what was delivered.
    wait_until("the email", LONG, || smtp.messages().len() == 1).await;
    let mail = &smtp.messages()[0];
    assert!(
        mail.contains("Subject: [masv] Delivered package \"outbox 2 files\""),
        "{mail}"
    );
    assert!(
        mail.contains("ops@example.com") && mail.contains("producer@example.com"),
        "{mail}"
    );
    assert!(mail.contains(&link), "the link is in the mail: {mail}");

    // The command ran once, in its folder, with its arguments, the arrived paths and the payload.
    let ran: Vec<PathBuf> = std::fs::read_dir(dir.join("work"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(ran.len(), 4, "one run: {ran:?}");
    let id = arrived["id"].as_str().unwrap();
    let read =
        |ext: &str| std::fs::read_to_string(dir.join(format!("work/ran-{id}.{ext}"))).unwrap();
    assert_eq!(read("args"), "--from\nmasv agent\n");
    assert_eq!(
        read("env"),
        format!(
            "download.arrived\n{}\nlinks\n",
            arrived["transfer"]["id"].as_str().unwrap()
        )
    );
    let mut paths: Vec<String> = read("paths").lines().map(str::to_owned).collect();
    paths.sort();
    let inbox = dir.join("inbox/outbox 2 files");
    assert_eq!(
        paths,
        [
            inbox.join("notes.txt").display().to_string(),
            inbox.join("reel 1/take1.mov").display().to_string()
        ]
    );
    for p in &paths {
        assert!(Path::new(p).is_file(), "{p} arrived");
    }
    let stdin: Value = serde_json::from_str(&read("json")).unwrap();
    assert_eq!(
        stdin, arrived,
        "the command read the payload the webhook got"
    );
    let (_, detail) = agent.api.get(&format!("/events/{id}")).await;
    let command = detail["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["action"] == "ingest")
        .unwrap();
    assert_eq!(command["attempts"], 1);
    assert!(
        command["output"]
            .as_str()
            .unwrap()
            .contains("stdout: ingested"),
        "the output's tail is recorded: {command}"
    );
    // Counted per action kind and outcome.
    let metrics = reqwest::get(format!(
        "{}/metrics",
        agent.api.base.trim_end_matches("/api/v1")
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    for line in [
        "masv_agent_action_deliveries_total{kind=\"webhook\",outcome=\"delivered\"} 2",
        "masv_agent_action_deliveries_total{kind=\"email\",outcome=\"delivered\"} 1",
        "masv_agent_action_deliveries_total{kind=\"command\",outcome=\"delivered\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_transfer_is_announced_with_its_reason() {
    let world = World::new().await;
    let (_, url) = world
        .shared(vec![FileSpec::file("a.txt", b"a".to_vec())])
        .await;
    let site = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(Duration::ZERO).await;
    let chat = format!(
        "\n[[action]]\nname = \"ops-chat\"\nkind = \"webhook\"\nformat = \"slack\"\nurl = \"{}\"\nevents = [\"transfer.failed\"]\n",
        receiver.url()
    );
    let hook = webhook_action(site.path(), &receiver, "events = [\"transfer.failed\"]");
    let agent = agent_running(&world, site.path(), &(hook + &chat)).await;
    let wrong = url.replace("secret=", "secret=wrong");
    let dst = tempfile::tempdir().unwrap();
    let id = agent
        .api
        .download(download_request(&wrong, dst.path()))
        .await;
    let done = agent
        .api
        .wait_for("downloads", &id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "error", "{done}");
    wait_until("transfer.failed", LONG, || {
        !receiver.delivered("transfer.failed").is_empty()
    })
    .await;
    let failed = receiver.delivered("transfer.failed");
    assert_eq!(failed.len(), 1);
    let payload = failed[0].json();
    assert_eq!(payload["transfer"]["id"], id.as_str());
    assert_eq!(payload["transfer"]["state"], "error");
    assert_eq!(payload["error"], done["error"], "the reason");
    assert!(payload["transfer"]["duration_seconds"].as_f64().unwrap() >= 0.0);
    // The chat variant: one line of text, unsigned (no secret configured).
    wait_until("the chat message", LONG, || {
        receiver
            .hits
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.json().get("text").is_some())
    })
    .await;
    let hits = receiver.hits.lock().unwrap().clone();
    let chat: Vec<&Hit> = hits
        .iter()
        .filter(|h| h.json().get("text").is_some())
        .collect();
    assert_eq!(chat.len(), 1);
    let text = chat[0].json()["text"].as_str().unwrap().to_owned();
    assert!(
        text.starts_with("Failed download ") && text.contains(done["error"].as_str().unwrap()),
        "{text}"
    );
    assert_eq!(chat[0].headers["x-masv-event"], "transfer.failed");
    assert!(chat[0].headers.get("x-masv-signature").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_down_for_a_while_gets_the_event_once_it_recovers_while_transfers_go_on() {
    let world = World::new().await;
    let big = pseudo_random_bytes(5, 4 * MIB);
    let (_, first) = world
        .shared(vec![FileSpec::file("first.txt", b"first".to_vec())])
        .await;
    let (_, second) = world
        .shared(vec![FileSpec::file("second.mov", big.clone())])
        .await;
    let site = tempfile::tempdir().unwrap();
    // "500 for a minute", shortened: long enough for several attempts with backoff.
    let outage = Duration::from_secs(6);
    let receiver = Receiver::start(outage).await;
    let started = Instant::now();
    let hook = webhook_action(site.path(), &receiver, "max_delay = \"1s\"");
    let agent = agent_running(&world, site.path(), &hook).await;
    let dst = tempfile::tempdir().unwrap();
    let id = agent
        .api
        .download(download_request(&first, dst.path()))
        .await;
    agent
        .api
        .wait_for("downloads", &id, &["complete"], LONG)
        .await;
    wait_until("the webhook refused twice", LONG, || {
        receiver.refused() >= 2
    })
    .await;
    // A transfer while deliveries fail: it completes before the receiver is back.
    let big_id = agent
        .api
        .download(download_request(&second, dst.path()))
        .await;
    let done = agent
        .api
        .wait_for("downloads", &big_id, &["complete", "error"], LONG)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    let took = started.elapsed();
    assert!(
        took < outage && receiver.delivered("download.arrived").is_empty(),
        "the download finished while deliveries failed ({took:?} into a {outage:?} outage): actions do not hold transfers up"
    );
    let (_, failing) = agent.api.get("/events?failed=true").await;
    let failing = failing["events"].as_array().unwrap();
    assert!(
        !failing.is_empty(),
        "a failing delivery is listed as failed"
    );
    assert!(
        failing[failing.len() - 1]["deliveries"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("500"),
        "{failing:?}"
    );

    let events = all_delivered(&agent.api, 2).await;
    assert!(started.elapsed() >= outage);
    assert_eq!(
        receiver.delivered("download.arrived").len(),
        2,
        "each event once"
    );
    let first_event = events
        .iter()
        .find(|e| e["transfer_id"] == id.as_str())
        .unwrap();
    let attempts = first_event["deliveries"][0]["attempts"].as_u64().unwrap();
    assert!(attempts >= 3, "tried again with backoff: {first_event}");
    // Backoff: far fewer attempts than a retry every 100 ms would make (60 an event).
    assert!(receiver.refused() < 40, "{} refusals", receiver.refused());
}

/// A real agent on a new world's hub, running a webhook action to a new receiver, that
/// downloads one file and aborts at crash point `point`. Returns the world, the agent's folder
/// and configuration file (to start it again), and the receiver.
async fn crashed_after_a_download(point: &str) -> (World, tempfile::TempDir, String, Receiver) {
    let world = World::new().await;
    let (_, url) = world
        .shared(vec![FileSpec::file("a.txt", b"arrived".to_vec())])
        .await;
    let site = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(Duration::ZERO).await;
    let config = site.path().join("agent.toml");
    std::fs::write(&config, webhook_action(site.path(), &receiver, "")).unwrap();
    let config = config.display().to_string();
    let agent = ProcessAgent::start_with(
        site.path(),
        &world.hub.base_url,
        &["--config", &config],
        |c| {
            c.env("MASV_CRASH_AT", point);
        },
    )
    .await;
    let dst = tempfile::tempdir().unwrap();
    let download = download_request(&url, dst.path());
    crate::crash::post_racing_the_crash(&agent.api, "/downloads", download).await;
    crate::crash::crashed(agent, point).await;
    (world, site, config, receiver)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_killed_after_a_transfer_ends_delivers_its_webhook_once_after_restart() {
    let (world, site, config, receiver) = crashed_after_a_download("transfer.ended").await;
    assert!(
        receiver.hits.lock().unwrap().is_empty(),
        "nothing was sent before the crash"
    );

    let flags = ["--config", config.as_str()];
    let agent = ProcessAgent::start(site.path(), &world.hub.base_url, &flags, None).await;
    all_delivered(&agent.api, 1).await;
    // Settled: nothing more comes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let arrived = receiver.delivered("download.arrived");
    assert_eq!(arrived.len(), 1, "delivered exactly once after the restart");
    assert_eq!(receiver.hits.lock().unwrap().len(), 1);
    assert_eq!(arrived[0].json()["files"][0]["name"], "a.txt");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_in_error_is_announced_once_and_again_when_it_recovers() {
    let world = World::new().await;
    let site = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(Duration::ZERO).await;
    let _agent = agent_running(
        &world,
        site.path(),
        &format!(
            r#"
[[watch]]
name = "late"
folder = "nas/outbox"
settle = "200ms"
portal = {{ subdomain = "{}", sender = "dit@example.com" }}
{}"#,
            world.open_portal.subdomain,
            webhook_action(
                site.path(),
                &receiver,
                "events = [\"rule.failed\", \"rule.recovered\"]\nrules = [\"late\"]"
            )
        ),
    )
    .await;
    wait_until("rule.failed", LONG, || {
        !receiver.delivered("rule.failed").is_empty()
    })
    .await;
    // It keeps failing while the share is missing (tried again every half second): still one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.delivered("rule.failed").len(), 1);
    let failed = receiver.delivered("rule.failed")[0].json();
    assert_eq!(failed["rule"], "late");
    assert!(
        failed["error"].as_str().unwrap().contains("nas/outbox"),
        "{failed}"
    );
    std::fs::create_dir_all(site.path().join("nas/outbox")).unwrap();
    wait_until("rule.recovered", LONG, || {
        !receiver.delivered("rule.recovered").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(receiver.delivered("rule.recovered").len(), 1);
    assert_eq!(receiver.delivered("rule.failed").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_failing_past_give_up_after_is_counted_and_masv_events_retry_sends_it() {
    let world = World::new().await;
    let (_, url) = world
        .shared(vec![FileSpec::file("a.txt", b"a".to_vec())])
        .await;
    let site = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(Duration::from_millis(2500)).await;
    let hook = webhook_action(
        site.path(),
        &receiver,
        "give_up_after = \"1s\"\nmax_delay = \"300ms\"",
    );
    let agent = agent_running(&world, site.path(), &hook).await;
    let dst = tempfile::tempdir().unwrap();
    agent.api.download(download_request(&url, dst.path())).await;
    let base = agent.api.base.clone();
    let start = Instant::now();
    let listed = loop {
        let out = masv(&base, &["events", "ls", "--failed", "--json"]).await;
        let answer: Value = serde_json::from_str(&ok(&out)).unwrap();
        let given_up = answer["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["deliveries"][0]["state"] == "failed")
            .cloned();
        if let Some(e) = given_up {
            break e;
        }
        assert!(start.elapsed() < LONG, "{answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let refusals = receiver.refused();
    assert!(refusals >= 2, "tried until it gave up: {refusals}");
    let metrics = reqwest::get(format!("{}/metrics", base.trim_end_matches("/api/v1")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l
                == "masv_agent_action_deliveries_total{kind=\"webhook\",outcome=\"failed\"} 1"),
        "{metrics}"
    );
    let table = ok(&masv(&base, &["events", "ls", "--failed"]).await);
    let id = listed["id"].as_str().unwrap();
    assert!(
        table.contains(id) && table.contains("failed") && table.contains("ingest-hook"),
        "{table}"
    );
    // Given up: no more attempts on its own.
    tokio::time::sleep(Duration::from_millis(2600).saturating_sub(start.elapsed())).await;
    assert_eq!(receiver.refused(), refusals);
    assert!(receiver.delivered("download.arrived").is_empty());

    let said = ok(&masv(&base, &["events", "retry", id]).await);
    assert!(
        said.contains("1 deliveries will be attempted again"),
        "{said}"
    );
    wait_until("the retried delivery", LONG, || {
        receiver.delivered("download.arrived").len() == 1
    })
    .await;
    let (_, event) = agent.api.get(&format!("/events/{id}")).await;
    assert_eq!(event["deliveries"][0]["state"], "delivered", "{event}");
    let (status, missing) = agent.api.post("/events/NOPE/retry", Value::Null).await;
    assert_eq!(status, 404, "{missing}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_finalized_by_hand_is_announced_once_when_finalized() {
    let world = World::new().await;
    let site = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(Duration::ZERO).await;
    let config = site.path().join("agent.toml");
    std::fs::write(&config, webhook_action(site.path(), &receiver, "")).unwrap();
    let mut engine = engine_config(&world.hub.base_url);
    engine.api_key = Some(world.api_key.clone());
    engine.auto_finalize = false;
    let agent = TestAgent::start_configured(site.path(), engine, Some(&config)).await;
    let file = site.path().join("one.txt");
    std::fs::write(&file, b"one").unwrap();
    let (_, created) = agent
        .api
        .post(
            "/uploads",
            serde_json::json!({"team_id": world.team_id, "paths": [file]}),
        )
        .await;
    let id = created["upload_id"].as_str().unwrap().to_owned();
    agent.api.wait_for("uploads", &id, &["idle"], LONG).await;
    // Idle is not delivered: nothing yet.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(receiver.hits.lock().unwrap().is_empty());
    let (status, done) = agent
        .api
        .post(&format!("/uploads/{id}/finalize"), Value::Null)
        .await;
    assert_eq!(status, 200, "{done}");
    wait_until("upload.delivered", LONG, || {
        receiver.delivered("upload.delivered").len() == 1
    })
    .await;
    let payload = receiver.delivered("upload.delivered")[0].json();
    assert_eq!(payload["transfer"]["id"], id.as_str());
    assert_eq!(payload["rule"], Value::Null, "started by hand");
    assert_eq!(
        payload["files"][0]["local_path"],
        file.display().to_string()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn edited_actions_are_in_force_for_the_next_events_without_a_restart() {
    let world = World::new().await;
    let (_, url) = world
        .shared(vec![FileSpec::file("a.txt", b"a".to_vec())])
        .await;
    let site = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(Duration::ZERO).await;
    let only_failures = webhook_action(site.path(), &receiver, "events = [\"transfer.failed\"]");
    let agent = agent_running(&world, site.path(), &only_failures).await;
    let dst = tempfile::tempdir().unwrap();
    let first = agent.api.download(download_request(&url, dst.path())).await;
    agent
        .api
        .wait_for("downloads", &first, &["complete"], LONG)
        .await;
    all_delivered(&agent.api, 1).await;
    assert!(
        receiver.hits.lock().unwrap().is_empty(),
        "not an event it wants"
    );

    // Editors replace files: write beside, rename over.
    let arrivals = webhook_action(site.path(), &receiver, "events = [\"download.arrived\"]");
    let beside = site.path().join(".agent.toml.swp");
    std::fs::write(&beside, arrivals).unwrap();
    std::fs::rename(&beside, site.path().join("agent.toml")).unwrap();
    let dst = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let mut ids = Vec::new();
    loop {
        // Until the reload is in force, a download's event is not wanted: download again.
        let id = agent.api.download(download_request(&url, dst.path())).await;
        ids.push(id.clone());
        agent
            .api
            .wait_for("downloads", &id, &["complete"], LONG)
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some(hit) = receiver.delivered("download.arrived").first() {
            let delivered = hit.json()["transfer"]["id"].as_str().unwrap().to_owned();
            assert!(ids.contains(&delivered), "an event after the edit");
            break;
        }
        assert!(
            start.elapsed() < LONG,
            "the edited actions never came in force"
        );
    }
    assert_eq!(receiver.delivered("download.arrived").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_killed_between_a_delivery_and_its_record_delivers_it_again_with_the_same_id() {
    let (world, site, config, receiver) = crashed_after_a_download("actions.delivery.sent").await;
    assert_eq!(receiver.delivered("download.arrived").len(), 1);

    // At least once: the delivery not recorded is made again, under the same event id.
    let flags = ["--config", config.as_str()];
    let agent = ProcessAgent::start(site.path(), &world.hub.base_url, &flags, None).await;
    all_delivered(&agent.api, 1).await;
    let hits = receiver.delivered("download.arrived");
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].body, hits[1].body, "the same payload, id included");
    assert_eq!(
        hits[0].headers["x-masv-event-id"],
        hits[1].headers["x-masv-event-id"]
    );
}

/// A CA, and a certificate for 127.0.0.1 signed by it: `(ca.pem, cert.pem, key.pem)`.
fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "masv-agent test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[tokio::test(flavor = "multi_thread")]
async fn email_goes_by_starttls_and_by_tls_with_a_login_and_a_refused_login_gives_up_at_once() {
    let world = World::new().await;
    let (_, url) = world
        .shared(vec![FileSpec::file("a.txt", b"a".to_vec())])
        .await;
    let site = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(site.path());
    let starttls = SmtpServer::start(site.path(), SmtpMode::Starttls(&cert, &key));
    let tls = SmtpServer::start(site.path(), SmtpMode::Tls(&cert, &key));
    std::fs::write(site.path().join("smtp-password"), "s3cret\n").unwrap();
    std::fs::write(site.path().join("wrong-password"), "guess\n").unwrap();
    let action = |name: &str, mode: &str, port: u16, password: &str| {
        format!(
            r#"
[[action]]
name = "{name}"
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {port}
tls = "{mode}"
ca_file = "{ca}"
username = "agent"
password = {{ file = "{password}" }}
from = "agent@example.com"
to = ["ops@example.com"]
max_delay = "300ms"
"#,
            ca = ca.display(),
            password = site.path().join(password).display(),
        )
    };
    let config = action("by-starttls", "starttls", starttls.port, "smtp-password")
        + &action("by-tls", "tls", tls.port, "smtp-password")
        + &action("refused", "starttls", starttls.port, "wrong-password");
    let agent = agent_running(&world, site.path(), &config).await;
    let dst = tempfile::tempdir().unwrap();
    agent.api.download(download_request(&url, dst.path())).await;
    wait_until("both emails", LONG, || {
        starttls.messages().len() == 1 && tls.messages().len() == 1
    })
    .await;
    for server in [&starttls, &tls] {
        let mail = &server.messages()[0];
        assert!(mail.contains("Subject: [masv] Arrived package"), "{mail}");
    }
    let start = Instant::now();
    let refused = loop {
        let (_, answer) = agent.api.get("/events").await;
        let refused = answer["events"][0]["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["action"] == "refused")
            .cloned()
            .unwrap();
        if refused["state"] != "pending" {
            break refused;
        }
        assert!(start.elapsed() < LONG, "{answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        refused["state"], "failed",
        "a refused login is final: {refused}"
    );
    assert_eq!(refused["attempts"], 1, "{refused}");
    assert!(
        refused["last_error"].as_str().unwrap().contains("refused"),
        "{refused}"
    );
    assert_eq!(
        starttls.messages().len(),
        1,
        "nothing sent without the login"
    );
}
