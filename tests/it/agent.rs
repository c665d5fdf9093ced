//! Agents for the tests: `TestAgent` runs one in-process on `127.0.0.1:0` over a temporary data
//! folder (restartable on the same folder), `ProcessAgent` runs the real `masv` binary so that
//! it can be killed with SIGKILL; both are driven through the REST API with plain HTTP.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use masv_agent::cloud::dto::Secret;
use masv_agent::daemon::{self, AgentConfig};
use masv_agent::transfer::{EngineConfig, RetryPolicy};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Retries fast enough for tests, giving up after 1.5 s of failures (production: never), so
/// that tests of what follows a failure do not wait.
pub fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        first_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        give_up_after: Some(Duration::from_millis(1500)),
    }
}

/// An engine configuration talking to `cloud_url`, with small chunks and fast retries.
pub fn engine_config(cloud_url: &str) -> EngineConfig {
    EngineConfig {
        cloud_url: cloud_url.to_owned(),
        max_connections: 4,
        download_chunk_size: 1024 * 1024,
        retry: quick_retries(),
        ..EngineConfig::default()
    }
}

/// An agent's REST API.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api {
            base: format!("http://{addr}/api/v1"),
            http: reqwest::Client::new(),
        }
    }

    /// An API client sending `token` as its bearer token.
    pub fn with_token(addr: SocketAddr, token: &str) -> Api {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("a header value"),
        );
        Api {
            base: format!("http://{addr}/api/v1"),
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .expect("an HTTP client"),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let response = req.send().await.expect("the agent answers");
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .expect("the agent's answer has a body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.http.put(format!("{}{path}", self.base)).json(&body))
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.http.patch(format!("{}{path}", self.base)).json(&body))
            .await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }

    /// Starts a download and returns its id.
    pub async fn download(&self, body: Value) -> String {
        let (status, answer) = self.post("/downloads", body).await;
        assert_eq!(status, 200, "download refused: {answer}");
        answer["download_id"]
            .as_str()
            .expect("a download id")
            .to_owned()
    }

    /// Starts an upload (`POST /uploads` with `body`) and waits up to a minute for its end:
    /// the answer to the POST (`upload_id`, `link`) and the upload's last summary.
    pub async fn upload_to_end(&self, body: Value) -> (Value, Value) {
        let (status, created) = self.post("/uploads", body).await;
        assert_eq!(status, 200, "upload refused: {created}");
        let id = created["upload_id"].as_str().expect("an upload id");
        let done = self
            .wait_for(
                "uploads",
                id,
                &["complete", "error"],
                Duration::from_secs(60),
            )
            .await;
        (created, done)
    }

    /// Waits until `kind`s/`id` is in one of `states`; panics after `limit`.
    pub async fn wait_for(&self, kind: &str, id: &str, states: &[&str], limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let (status, detail) = self.get(&format!("/{kind}/{id}")).await;
            assert_eq!(status, 200, "{kind}/{id}: {detail}");
            let state = detail["state"].as_str().unwrap_or_default();
            if states.contains(&state) {
                return detail;
            }
            assert!(
                start.elapsed() < limit,
                "{kind}/{id} still {state} after {limit:?}, waiting for {states:?}: {detail}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `bytes_done` of `kind`s/`id` reaches `bytes`.
    pub async fn wait_for_bytes(&self, kind: &str, id: &str, bytes: u64, limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let (_, detail) = self.get(&format!("/{kind}/{id}")).await;
            if detail["bytes_done"].as_u64().unwrap_or(0) >= bytes {
                return detail;
            }
            assert!(
                start.elapsed() < limit,
                "{kind}/{id} did not reach {bytes} bytes: {detail}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An agent in-process.
pub struct TestAgent {
    pub api: Api,
    _owned: Option<TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), daemon::DaemonError>>>,
}

impl TestAgent {
    pub async fn start(config: EngineConfig) -> TestAgent {
        let dir = tempfile::tempdir().expect("a temporary folder for the agent");
        let mut agent = TestAgent::start_on(dir.path(), config).await;
        agent._owned = Some(dir);
        agent
    }

    /// An agent over `data` (fresh, or left by an earlier agent).
    pub async fn start_on(data: &Path, config: EngineConfig) -> TestAgent {
        TestAgent::start_configured(data, config, None).await
    }

    /// An agent running the configuration file `file` (its rules, its hub), watching it.
    pub async fn start_configured(
        data: &Path,
        engine: EngineConfig,
        file: Option<&Path>,
    ) -> TestAgent {
        TestAgent::start_secured(data, engine, file, None).await
    }

    /// [`TestAgent::start_configured`], its API behind `token` when given (`api` then sends it).
    pub async fn start_secured(
        data: &Path,
        engine: EngineConfig,
        file: Option<&Path>,
        token: Option<&str>,
    ) -> TestAgent {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("a bound address");
        let (shutdown, stop) = oneshot::channel::<()>();
        let mut config: masv_agent::config::Config = match file {
            Some(f) => masv_agent::config::load(f)
                .unwrap_or_else(|e| panic!("the test's configuration checks:\n{e}")),
            None => Default::default(),
        };
        config.server.api_token = token.map(Secret::new);
        // As `masv server start` does: the file's [bandwidth] is the engine's at start.
        let mut engine = engine;
        if file.is_some() {
            engine.bandwidth = config.bandwidth.clone();
        }
        let agent_config = AgentConfig {
            data_dir: data.join("agent"),
            engine,
            config_path: file.map(Path::to_path_buf),
            config,
            // The tests' API client sends no token unless given one; the token itself is
            // tested in `service`.
            insecure_no_token: token.is_none(),
        };
        let task = tokio::spawn(daemon::run(agent_config, listener, async move {
            let _ = stop.await;
        }));
        TestAgent {
            api: match token {
                Some(token) => Api::with_token(addr, token),
                None => Api::new(addr),
            },
            _owned: None,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// Stops the agent as SIGTERM would, and waits for it.
    pub async fn stop(mut self) -> Option<TempDir> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("the agent does not panic")
                .expect("the agent stops cleanly");
        }
        self._owned.take()
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// The real `masv server start` in a child process.
pub struct ProcessAgent {
    pub api: Api,
    child: Child,
}

impl ProcessAgent {
    /// Starts `masv server start` over `data`, talking to `cloud_url`.
    pub async fn start(
        data: &Path,
        cloud_url: &str,
        extra: &[&str],
        api_key: Option<&Secret>,
    ) -> ProcessAgent {
        ProcessAgent::start_with(data, cloud_url, extra, |command| {
            if let Some(key) = api_key {
                command.env("MASV_API_KEY", key.expose());
            }
        })
        .await
    }

    /// [`ProcessAgent::start`], with the command changed by `configure` (environment, stderr)
    /// before it runs.
    pub async fn start_with(
        data: &Path,
        cloud_url: &str,
        extra: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> ProcessAgent {
        ProcessAgent::start_wrapped(&[], data, cloud_url, extra, configure).await
    }

    /// [`ProcessAgent::start_with`], run by `wrapper` (e.g. `setpriv` with its options), which
    /// is given the masv binary and its arguments.
    pub async fn start_wrapped(
        wrapper: &[&str],
        data: &Path,
        cloud_url: &str,
        extra: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> ProcessAgent {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let masv = env!("CARGO_BIN_EXE_masv");
        let mut command = match wrapper.split_first() {
            Some((program, options)) => {
                let mut c = Command::new(program);
                c.args(options).arg(masv);
                c
            }
            None => Command::new(masv),
        };
        command
            .args(["server", "start", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data.join("agent"))
            .args(["--cloud-url", cloud_url])
            .args(extra)
            // The tests' API client sends no token unless the test gives one.
            .args(
                (!extra.contains(&"--api-token"))
                    .then_some("--insecure-no-token")
                    .as_slice(),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        configure(&mut command);
        let child = command.spawn().expect("the masv binary starts");
        let api = Api::new(([127, 0, 0, 1], port).into());
        let start = Instant::now();
        while reqwest::get(format!("{}/downloads", api.base))
            .await
            .is_err()
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the agent did not start listening"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ProcessAgent { api, child }
    }

    /// The agent's process id, to send it signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no flush, nothing.
    pub fn kill_9(mut self) {
        self.child.kill().expect("the agent can be killed");
        self.child.wait().expect("the killed agent is reaped");
    }

    /// SIGTERM, as systemd stops a service.
    pub fn sigterm(&self) {
        self.signal(rustix::process::Signal::TERM);
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("a child's pid");
        rustix::process::kill_process(pid, signal).expect("the agent takes a signal");
    }

    /// Waits for the agent to exit by itself; panics after `limit`.
    pub async fn exit_status(mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("the agent can be waited for") {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "the agent did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ProcessAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The hub's counter of storage bytes sent, from its `/metrics`.
pub async fn hub_bytes_sent(hub_addr: SocketAddr) -> u64 {
    let text = reqwest::get(format!("http://{hub_addr}/metrics"))
        .await
        .expect("the hub answers /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("masv_hub_storage_bytes_sent_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the hub counts bytes sent")
}

/// A download request for `link` into `dst`.
pub fn download_request(link: &str, dst: &Path) -> Value {
    json!({ "url": link, "dst_folder": dst })
}
