//! Talking to a running agent over its local REST API (docs/agent-api.md), for every `masv`
//! command that drives one (`masv download …`, later `masv upload …`).
//!
//! Owns the options those commands share ([`AgentArgs`]), the JSON client ([`AgentClient`])
//! and what its failures read like ([`AgentError`]), following a transfer live ([`follow`]),
//! and the human formatting of sizes, speeds, durations and tables.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::header::AUTHORIZATION;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use url::Url;

use crate::cloud::dto::Secret;

/// `512 B`, `1.5 KiB`, `2.6 GiB`.
pub use crate::config::human_size as human_bytes;

/// Where `masv server start` listens unless told otherwise.
pub const DEFAULT_AGENT_URL: &str = "http://127.0.0.1:8080";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deleting a download with its files walks its folder, which can take a while on big Packages.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a followed transfer is asked for its progress.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How often a plain progress line is printed when stdout is not a terminal.
const PLAIN_LINE_INTERVAL: Duration = Duration::from_secs(5);

/// The options of every command that talks to an agent. `global`, so they can be written after
/// the subcommand too (`masv download ls --json`).
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The agent to talk to.
    #[arg(long, env = "MASV_AGENT_URL", default_value = DEFAULT_AGENT_URL, global = true)]
    pub agent_url: String,
    /// The agent's API token, sent as `Authorization: Bearer …` (only needed when the agent asks).
    #[arg(
        long,
        env = "MASV_API_TOKEN",
        global = true,
        hide_env_values = true,
        value_parser = parse_secret
    )]
    pub api_token: Option<Secret>,
    /// The agent's configuration file, to read its [server] api_token from when no token is
    /// given.
    #[arg(long, env = "MASV_CONFIG", global = true)]
    pub config: Option<std::path::PathBuf>,
    /// Print the agent's JSON answer (pretty) instead of text, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The token an agent made in its data folder (`api-token`), from the first of: `data_dir`
/// (a configuration's), `MASV_DATA_DIR`, the default data folder, `/var/lib/masv-agent` (the
/// packaged service's) that this user may read. None when none is readable: the agent then
/// answers 401 and says how to give a token.
fn local_token(data_dir: Option<&std::path::Path>) -> Option<Secret> {
    let candidates = data_dir
        .map(std::path::Path::to_path_buf)
        .into_iter()
        .chain(std::env::var_os("MASV_DATA_DIR").map(std::path::PathBuf::from))
        .chain([
            crate::daemon::default_data_dir(),
            std::path::PathBuf::from("/var/lib/masv-agent"),
        ]);
    candidates
        .filter_map(|dir| std::fs::read_to_string(crate::daemon::token_file(&dir)).ok())
        .map(|text| text.trim().to_owned())
        .find(|token| !token.is_empty())
        .map(Secret::new)
}

/// A clap value parser for values that must not show in `Debug` output (passwords, tokens).
pub fn parse_secret(value: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(value))
}

/// Why a call to the agent failed. Every variant's text is one line meant for the terminal:
/// none carries a `source`, so `{:#}` does not append reqwest's chain to it.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Connection refused, DNS failure, unreachable host: there is no agent to talk to.
    #[error("no agent is answering at {url}; start one with 'masv server start'")]
    Unreachable { url: String },
    #[error(
        "the agent at {url} did not answer {method} {path} in time; is it overloaded or stuck?"
    )]
    TimedOut {
        url: String,
        method: Method,
        path: String,
    },
    /// The agent's own `{"code", "message"}` error: its message already says what to do.
    #[error("{message}")]
    Api { status: StatusCode, message: String },
    /// An answer that is not the agent's API (another server on that port, a proxy, a version
    /// of the agent this `masv` does not know).
    #[error(
        "the agent at {url} answered {method} {path} with {what}; is a MASV agent listening there?"
    )]
    Unexpected {
        url: String,
        method: Method,
        path: String,
        what: String,
    },
    /// A well-formed answer in a shape this `masv` does not know: the agent is another version.
    #[error(
        "the agent at {url} answered {what} with JSON this masv does not understand ({reason}); are masv and the agent the same version?"
    )]
    Misunderstood {
        url: String,
        what: String,
        reason: String,
    },
    #[error("talking to the agent at {url} failed: {reason}")]
    Transport { url: String, reason: String },
}

/// A client of one agent's REST API. JSON in, JSON out: commands print the answer as-is for
/// `--json` and read it into their own types for text.
#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    /// The agent's URL as the user wrote it, without a trailing `/`: what messages show.
    shown: String,
    /// `…/api/v1/`, to which route segments are appended.
    api: Url,
    token: Option<Secret>,
}

impl AgentClient {
    /// A client of the agent `args` name, with the token given, else the one in `--config`,
    /// else the one the agent made in its data folder (when this user may read it).
    pub fn new(args: &AgentArgs) -> anyhow::Result<AgentClient> {
        let token = match (&args.api_token, &args.config) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(path)) => {
                let configured = crate::config::load_api_token(path).map_err(|e| {
                    anyhow::anyhow!("reading the agent's API token from its configuration:\n{e}")
                })?;
                match configured {
                    Some(token) => Some(token),
                    None => {
                        let data = crate::config::load_data_dir(path).ok().flatten();
                        local_token(data.as_deref())
                    }
                }
            }
            (None, None) => local_token(None),
        };
        AgentClient::with_url(&args.agent_url, token)
    }

    pub fn with_url(agent_url: &str, token: Option<Secret>) -> anyhow::Result<AgentClient> {
        let shown = agent_url.trim().trim_end_matches('/');
        // Accept the API's own URL too (`…/api/v1`), as printed in the docs' curl examples.
        let shown = shown.strip_suffix("/api/v1").unwrap_or(shown).to_owned();
        let mut api = Url::parse(&shown).map_err(|e| {
            anyhow::anyhow!(
                "--agent-url {shown:?} is not a URL ({e}); write it like {DEFAULT_AGENT_URL}"
            )
        })?;
        anyhow::ensure!(
            matches!(api.scheme(), "http" | "https") && api.host().is_some(),
            "--agent-url {shown:?} must be an http:// or https:// URL, like {DEFAULT_AGENT_URL}"
        );
        api.set_query(None);
        api.set_fragment(None);
        api.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("--agent-url {shown:?} cannot have routes under it"))?
            .pop_if_empty()
            .extend(["api", "v1", ""]);
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // The agent is local: a proxy from the environment would answer for it (502) and
            // hide that no agent is running.
            .no_proxy()
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up an HTTP client: {e}"))?;
        let token = token.filter(|t| !t.is_empty());
        Ok(AgentClient {
            http,
            shown,
            api,
            token,
        })
    }

    /// The agent's URL as messages show it (`http://127.0.0.1:8080`).
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// The URL of a route: `segments` are appended one by one, percent-encoded, so an id typed
    /// by the user can never reach another route.
    pub fn route_url(&self, segments: &[&str]) -> Url {
        let mut url = self.api.clone();
        url.path_segments_mut()
            .expect("the base was checked to take path segments in AgentClient::with_url")
            .pop_if_empty()
            .extend(segments);
        url
    }

    pub async fn get(&self, segments: &[&str]) -> Result<Value, AgentError> {
        self.call(Method::GET, segments, &[], None).await
    }

    /// A GET with query parameters.
    pub async fn get_query(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Value, AgentError> {
        self.call(Method::GET, segments, query, None).await
    }

    /// A POST with a JSON body.
    pub async fn post<B: Serialize + ?Sized>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<Value, AgentError> {
        let body = serde_json::to_value(body).map_err(|e| AgentError::Transport {
            url: self.shown.clone(),
            reason: format!("cannot encode the request: {e}"),
        })?;
        self.call(Method::POST, segments, &[], Some(&body)).await
    }

    /// A PATCH with a JSON body (`/bandwidth`).
    pub async fn patch(&self, segments: &[&str], body: &Value) -> Result<Value, AgentError> {
        self.call(Method::PATCH, segments, &[], Some(body)).await
    }

    /// A POST without a body (`/pause`, `/resume`).
    pub async fn post_empty(&self, segments: &[&str]) -> Result<Value, AgentError> {
        self.call(Method::POST, segments, &[], None).await
    }

    pub async fn delete(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Value, AgentError> {
        self.call(Method::DELETE, segments, query, None).await
    }

    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, AgentError> {
        let mut url = self.route_url(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let path = url.path().to_owned();
        let mut request = self.http.request(method.clone(), url);
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(e, &method, &path))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(e, &method, &path))?;
        let unexpected = |what: String| AgentError::Unexpected {
            url: self.shown.clone(),
            method: method.clone(),
            path: path.clone(),
            what,
        };
        if status.is_success() {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes)
                .map_err(|e| unexpected(format!("{status} but no JSON ({e})")));
        }
        #[derive(Deserialize)]
        struct ApiError {
            message: String,
        }
        match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(answer) => Err(AgentError::Api {
                status,
                message: answer.message,
            }),
            Err(_) => Err(unexpected(status.to_string())),
        }
    }

    fn transport_error(&self, error: reqwest::Error, method: &Method, path: &str) -> AgentError {
        tracing::debug!(error = %error, agent_url = %self.shown, "call to the agent failed");
        if error.is_connect() {
            AgentError::Unreachable {
                url: self.shown.clone(),
            }
        } else if error.is_timeout() {
            AgentError::TimedOut {
                url: self.shown.clone(),
                method: method.clone(),
                path: path.to_owned(),
            }
        } else {
            AgentError::Transport {
                url: self.shown.clone(),
                reason: error_chain(&error),
            }
        }
    }

    /// Reads an answer into a command's own type. `what` names the call, for the message.
    pub fn decode<T: DeserializeOwned>(&self, value: &Value, what: &str) -> Result<T, AgentError> {
        T::deserialize(value).map_err(|e| AgentError::Misunderstood {
            url: self.shown.clone(),
            what: what.to_owned(),
            reason: e.to_string(),
        })
    }
}

/// reqwest's `Display` says only "error sending request"; the cause is down the chain.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// Prints an answer as-is, pretty, for `--json`.
pub fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("a serde_json::Value always serializes")
    );
}

/// Reads JSON `null` as the type's default: counters the agent has not filled in yet.
pub fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The progress fields shared by downloads and uploads (their summaries in the agent's API).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Progress {
    #[serde(deserialize_with = "null_as_default")]
    pub state: String,
    #[serde(deserialize_with = "null_as_default")]
    pub bytes_done: u64,
    #[serde(deserialize_with = "null_as_default")]
    pub bytes_total: u64,
    #[serde(deserialize_with = "null_as_default")]
    pub bytes_per_second: u64,
    #[serde(deserialize_with = "null_as_default")]
    pub files_done: u64,
    #[serde(deserialize_with = "null_as_default")]
    pub files_total: u64,
    pub error: Option<String>,
    /// FIFO mode: the place of a `transferring` transfer still waiting for its turn.
    pub queue_position: Option<u64>,
    /// Why a transfer is not moving (a retry, its window), and when it tries next.
    pub waiting: Option<String>,
    pub next_try_at: Option<String>,
}

impl Progress {
    /// The state as tables show it: a transfer waiting in FIFO mode reads `queued (N)`.
    pub fn shown_state(&self) -> String {
        match (self.queue_position, &self.waiting) {
            (Some(n), _) if self.state == "transferring" => format!("queued ({n})"),
            (_, Some(_)) if self.state == "transferring" => "waiting".into(),
            (_, Some(_)) if self.state == "paused" => "held".into(),
            _ => self.state.clone(),
        }
    }

    /// Whole percent done, when the total is known.
    pub fn percent(&self) -> Option<u64> {
        percent(self.bytes_done, self.bytes_total)
    }

    /// The time left at the current speed, while transferring.
    pub fn eta(&self) -> Option<Duration> {
        if self.state != "transferring" || self.bytes_per_second == 0 || self.bytes_total == 0 {
            return None;
        }
        let left = self.bytes_total.saturating_sub(self.bytes_done);
        Some(Duration::from_secs(left.div_ceil(self.bytes_per_second)))
    }

    /// `transferring 45% 1.2 GiB of 2.6 GiB, 12.3 MiB/s, ETA 2m 05s, 1 of 3 files`.
    pub fn text(&self) -> String {
        let mut text = self.shown_state();
        if let Some(percent) = self.percent() {
            let _ = write!(text, " {percent}%");
        }
        let _ = write!(text, " {}", human_bytes(self.bytes_done));
        if self.bytes_total > 0 {
            let _ = write!(text, " of {}", human_bytes(self.bytes_total));
        }
        if self.state == "transferring" {
            let _ = write!(text, ", {}", human_speed(self.bytes_per_second));
            if let Some(eta) = self.eta() {
                let _ = write!(text, ", ETA {}", human_duration(eta));
            }
        }
        if self.files_total > 0 {
            let _ = write!(text, ", {} of {} files", self.files_done, self.files_total);
        }
        text
    }
}

/// Whole percent of `done` in `total`, rounded down so 100% means really done.
pub fn percent(done: u64, total: u64) -> Option<u64> {
    (total > 0).then(|| (u128::from(done.min(total)) * 100 / u128::from(total)) as u64)
}

/// How a followed transfer stopped being followed.
#[derive(Debug)]
pub enum Followed {
    /// It reached one of the end states; the last detail answer.
    Ended(Value),
    /// The user pressed Ctrl-C; the transfer goes on in the agent.
    Interrupted,
}

/// Polls the route at `segments` (a transfer's detail) every 500 ms until its `state` is one of
/// `end_states`, showing its progress on stdout unless `quiet`: a live bar on a terminal, a plain
/// line every few seconds otherwise. `label` names the transfer on plain lines.
pub async fn follow(
    client: &AgentClient,
    segments: &[&str],
    label: &str,
    end_states: &[&str],
    quiet: bool,
) -> Result<Followed, AgentError> {
    let mut view = ProgressView::new(label, quiet);
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let poll = async {
            tick.tick().await;
            client.get(segments).await
        };
        let value = tokio::select! {
            _ = &mut ctrl_c => {
                view.abandon();
                return Ok(Followed::Interrupted);
            }
            answer = poll => match answer {
                Ok(value) => value,
                Err(e) => {
                    view.abandon();
                    return Err(e);
                }
            },
        };
        let what = format!("GET {}", client.route_url(segments).path());
        let progress: Progress = match client.decode(&value, &what) {
            Ok(progress) => progress,
            Err(e) => {
                view.abandon();
                return Err(e);
            }
        };
        if end_states.contains(&progress.state.as_str()) {
            view.finish(&progress);
            return Ok(Followed::Ended(value));
        }
        view.update(&progress);
    }
}

/// Where progress goes: an indicatif bar, plain lines, or nowhere (`--json`).
enum ProgressView {
    Bar {
        bar: ProgressBar,
        ticking: bool,
    },
    Plain {
        label: String,
        last_line: Option<Instant>,
        last_state: String,
    },
    Quiet,
}

impl ProgressView {
    fn new(label: &str, quiet: bool) -> ProgressView {
        if quiet {
            return ProgressView::Quiet;
        }
        if !std::io::stdout().is_terminal() {
            return ProgressView::Plain {
                label: label.to_owned(),
                last_line: None,
                last_state: String::new(),
            };
        }
        // No length and no ticking until the first answer: an empty bar would draw as full.
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
        let style = ProgressStyle::with_template("{spinner} [{wide_bar}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        ProgressView::Bar {
            bar,
            ticking: false,
        }
    }

    fn update(&mut self, progress: &Progress) {
        match self {
            ProgressView::Bar { bar, ticking } => {
                set_bar(bar, progress);
                if !*ticking {
                    bar.enable_steady_tick(Duration::from_millis(120));
                    *ticking = true;
                }
            }
            ProgressView::Plain {
                label,
                last_line,
                last_state,
            } => {
                let due = last_line.is_none_or(|at| at.elapsed() >= PLAIN_LINE_INTERVAL);
                if due || *last_state != progress.state {
                    println!("{label}: {}", progress.text());
                    *last_line = Some(Instant::now());
                    last_state.clone_from(&progress.state);
                }
            }
            ProgressView::Quiet => {}
        }
    }

    fn finish(&mut self, progress: &Progress) {
        match self {
            ProgressView::Bar { bar, .. } => {
                set_bar(bar, progress);
                // `finish` would fill the bar; a failed transfer keeps showing how far it got.
                if progress.state == "complete" {
                    bar.finish_with_message(progress.text());
                } else {
                    bar.abandon_with_message(progress.text());
                }
            }
            ProgressView::Plain { label, .. } => println!("{label}: {}", progress.text()),
            ProgressView::Quiet => {}
        }
    }

    fn abandon(&mut self) {
        if let ProgressView::Bar { bar, .. } = self {
            bar.abandon();
        }
    }
}

fn set_bar(bar: &ProgressBar, progress: &Progress) {
    bar.set_message(progress.text());
    // Until the Package's size is known the bar stays empty rather than full.
    if progress.bytes_total > 0 {
        bar.set_length(progress.bytes_total);
        bar.set_position(progress.bytes_done.min(progress.bytes_total));
    }
}

/// `12.3 MiB/s`.
pub fn human_speed(bytes_per_second: u64) -> String {
    format!("{}/s", human_bytes(bytes_per_second))
}

/// `42s`, `3m 05s`, `1h 02m`, `2d 03h`.
pub fn human_duration(duration: Duration) -> String {
    let s = duration.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m {:02}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h {:02}m", s / 3_600, s % 3_600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3_600),
    }
}

/// One column of a [`table`].
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub title: &'static str,
    /// Numbers read better aligned right.
    pub right: bool,
}

impl Column {
    pub const fn left(title: &'static str) -> Column {
        Column {
            title,
            right: false,
        }
    }

    pub const fn right(title: &'static str) -> Column {
        Column { title, right: true }
    }
}

/// Renders rows under a header line, columns two spaces apart, no trailing spaces.
pub fn table(columns: &[Column], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.title.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let titles: Vec<String> = columns.iter().map(|c| c.title.to_owned()).collect();
    for row in std::iter::once(&titles).chain(rows) {
        let mut line = String::new();
        for ((column, width), cell) in columns.iter().zip(&widths).zip(row) {
            if !line.is_empty() {
                line.push_str("  ");
            }
            let pad = width - cell.chars().count();
            if column.right {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes((1 << 20) - 1), "1.0 MiB");
        assert_eq!(human_bytes(8 << 20), "8.0 MiB");
        assert_eq!(human_bytes(2_791_728_742), "2.6 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
        assert_eq!(human_speed(12_897_485), "12.3 MiB/s");
    }

    #[test]
    fn durations_show_their_two_largest_units() {
        assert_eq!(human_duration(Duration::from_secs(0)), "0s");
        assert_eq!(human_duration(Duration::from_secs(42)), "42s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2m 05s");
        assert_eq!(human_duration(Duration::from_secs(3_720)), "1h 02m");
        assert_eq!(
            human_duration(Duration::from_secs(2 * 86_400 + 3 * 3_600)),
            "2d 03h"
        );
    }

    #[test]
    fn progress_reads_as_one_line() {
        let progress = Progress {
            state: "transferring".into(),
            bytes_done: 1 << 30,
            bytes_total: 4 << 30,
            bytes_per_second: 10 << 20,
            files_done: 1,
            files_total: 3,
            error: None,
            queue_position: None,
            waiting: None,
            next_try_at: None,
        };
        assert_eq!(
            progress.text(),
            "transferring 25% 1.0 GiB of 4.0 GiB, 10.0 MiB/s, ETA 5m 08s, 1 of 3 files"
        );
        let paused = Progress {
            state: "paused".into(),
            ..progress
        };
        assert_eq!(paused.eta(), None);
        assert_eq!(paused.text(), "paused 25% 1.0 GiB of 4.0 GiB, 1 of 3 files");
        // Before the Package's size is known.
        let starting = Progress {
            state: "transferring".into(),
            ..Progress::default()
        };
        assert_eq!(starting.text(), "transferring 0 B, 0 B/s");
    }

    #[test]
    fn percent_is_only_100_when_all_is_done() {
        assert_eq!(percent(0, 0), None);
        assert_eq!(percent(999, 1000), Some(99));
        assert_eq!(percent(1000, 1000), Some(100));
        assert_eq!(percent(2000, 1000), Some(100));
        assert_eq!(percent(u64::MAX - 1, u64::MAX), Some(99));
    }

    #[test]
    fn progress_reads_nulls_and_missing_counters_as_zero() {
        let value = serde_json::json!({"state": "transferring", "bytes_total": null, "extra": 1});
        let progress: Progress = serde_json::from_value(value).unwrap();
        assert_eq!(progress.bytes_total, 0);
        assert_eq!(progress.bytes_done, 0);
        assert_eq!(progress.state, "transferring");
    }

    #[test]
    fn tables_align_columns() {
        let text = table(
            &[
                Column::left("ID"),
                Column::right("SIZE"),
                Column::left("NAME"),
            ],
            &[
                vec!["a".into(), "1.0 KiB".into(), "Dailies".into()],
                vec!["bbb".into(), "12 B".into(), "".into()],
            ],
        );
        assert_eq!(
            text,
            "ID      SIZE  NAME\na    1.0 KiB  Dailies\nbbb     12 B\n"
        );
    }

    #[test]
    fn routes_are_built_under_api_v1_with_ids_encoded() {
        let client = AgentClient::with_url("http://127.0.0.1:8080/", None).unwrap();
        assert_eq!(client.url(), "http://127.0.0.1:8080");
        assert_eq!(
            client.route_url(&["downloads", "a/../b", "pause"]).as_str(),
            "http://127.0.0.1:8080/api/v1/downloads/a%2F..%2Fb/pause"
        );
        let client = AgentClient::with_url("http://agent.local:9000/api/v1", None).unwrap();
        assert_eq!(client.url(), "http://agent.local:9000");
        assert_eq!(
            client.route_url(&["downloads"]).as_str(),
            "http://agent.local:9000/api/v1/downloads"
        );
        let client = AgentClient::with_url("http://host/prefix", None).unwrap();
        assert_eq!(
            client.route_url(&["downloads"]).as_str(),
            "http://host/prefix/api/v1/downloads"
        );
        assert!(AgentClient::with_url("127.0.0.1:8080", None).is_err());
        assert!(AgentClient::with_url("ftp://host", None).is_err());
    }

    #[tokio::test]
    async fn a_closed_port_reads_as_no_agent_with_the_way_to_start_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("http://127.0.0.1:{port}");
        let client = AgentClient::with_url(&url, None).unwrap();
        let error = client.get(&["downloads"]).await.unwrap_err();
        assert!(matches!(error, AgentError::Unreachable { .. }), "{error:?}");
        // What `masv` prints: one line, nothing of reqwest's chain appended.
        let printed = format!("error: {:#}", anyhow::Error::from(error));
        assert_eq!(
            printed,
            format!("error: no agent is answering at {url}; start one with 'masv server start'")
        );
    }

    #[test]
    fn the_api_token_stays_out_of_debug_output() {
        let client =
            AgentClient::with_url(DEFAULT_AGENT_URL, Some(Secret::new("tok-123"))).unwrap();
        assert!(!format!("{client:?}").contains("tok-123"));
    }
}
