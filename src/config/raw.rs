//! What people write: the TOML file as serde structs. Unknown keys are errors. The JSON Schema
//! of these types is what `masv config schema` prints and editors use to complete keys.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cloud::dto::SecretSource;

/// A masv-agent configuration file: the agent's settings and its automations.
// Read only through its schema: the loader takes each section on its own so that all errors of
// a file are found (see `config::sections`).
#[allow(dead_code)]
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// How the agent runs (the `masv server start` flags win over these).
    #[serde(default)]
    pub server: RawServer,
    /// A MASV-compatible hub run inside the agent: the quickstart, or a self-hosted setup.
    #[serde(default)]
    pub hub: Option<RawHub>,
    /// Watch folders: files settled in them are uploaded as packages.
    #[serde(default)]
    pub watch: Vec<RawWatch>,
    /// Download automations: links, folders of dropped links, portal inboxes.
    #[serde(default)]
    pub download: Vec<RawDownload>,
    /// Rate limits (with a weekly schedule) and caps on the transfers active at once.
    #[serde(default)]
    pub bandwidth: Option<RawBandwidth>,
    /// Post-transfer actions: webhooks, commands and emails run when a package is delivered,
    /// arrives, or a transfer or rule fails.
    #[serde(default)]
    pub action: Vec<RawAction>,
}

/// What an action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActionKindName {
    /// HTTP POST of the event's JSON, signed (HMAC-SHA256) when a secret is set.
    Webhook,
    /// Runs a program (no shell) with the event's JSON on stdin and its main fields in the
    /// environment.
    Command,
    /// Sends a plain-text summary by SMTP.
    Email,
}

/// What a webhook posts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The event's JSON payload (the default).
    #[default]
    Json,
    /// `{"text": "…"}`: a one-line summary for Slack/Teams-style incoming webhooks.
    Slack,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, required (the default; port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: a relay on the same machine or network only.
    None,
}

/// `[[action]]`: what to do when an event happens. Without `rules` it acts for every rule (and
/// for transfers started by hand); with `rules` only for those rules' events.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAction {
    /// Unique among the actions; shown in `masv events ls` and the API.
    pub name: String,
    pub kind: ActionKindName,
    /// The events it acts on: "upload.delivered", "download.arrived", "transfer.failed",
    /// "rule.failed", "rule.recovered" (default all).
    #[serde(default)]
    pub events: Vec<String>,
    /// Only the events of these rules (default: every event, whatever started the transfer).
    pub rules: Option<Vec<String>>,
    /// How long one attempt may take (default 30s for webhooks and email, 10m for commands); a
    /// command still running then is killed.
    pub timeout: Option<DurationValue>,
    /// How long a delivery may keep failing before it is given up and counted as failed, e.g.
    /// "24h" (the default) or "never".
    pub give_up_after: Option<DurationValue>,
    /// The longest wait between two attempts, e.g. "5m" (the default).
    pub max_delay: Option<DurationValue>,
    /// Webhook: the URL posted to (http or https).
    pub url: Option<String>,
    /// Webhook: the key of the `X-Masv-Signature: sha256=<hex HMAC-SHA256 of the body>` header.
    pub secret: Option<SecretSource>,
    /// Webhook: "json" (the payload, the default) or "slack" (`{"text": …}`).
    pub format: Option<WebhookFormat>,
    /// Command: the program run (no shell), by path or name on PATH.
    pub program: Option<PathBuf>,
    /// Command: its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Command: the folder it runs in (default the agent's data folder).
    pub working_dir: Option<PathBuf>,
    /// Email: the SMTP server's host name.
    pub smtp_host: Option<String>,
    /// Email: its port (default 587 with starttls, 465 with tls, 25 with none).
    pub smtp_port: Option<u16>,
    /// Email: "starttls" (the default), "tls" or "none".
    pub tls: Option<SmtpTls>,
    /// Email: the SMTP login (with `password`).
    pub username: Option<String>,
    /// Email: the SMTP password.
    pub password: Option<SecretSource>,
    /// Email: a PEM file of certificates to trust besides the public roots (an internal CA, a
    /// server's own certificate).
    pub ca_file: Option<PathBuf>,
    /// Email: the sender, e.g. "MASV Agent <agent@example.com>".
    pub from: Option<String>,
    /// Email: the recipients.
    #[serde(default)]
    pub to: Vec<String>,
}

/// `[bandwidth]`: global rate limits shared by every transfer, a weekly schedule of other limits,
/// and FIFO caps. Also the body of `PUT /api/v1/bandwidth` (as JSON).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBandwidth {
    /// Upload limit outside every schedule rule: "200Mbit", "25MiB" (per second), bytes per
    /// second, or "unlimited" (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<RateValue>,
    /// Download limit outside every schedule rule, written like `upload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<RateValue>,
    /// IANA time zone of the schedule's times (default: the machine's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Limits by day and hour; the first rule that holds the moment applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<RawLimitRule>,
    /// FIFO mode: at most this many uploads move bytes at once; the others wait, queued, in
    /// order of priority then creation (default: no cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active_uploads: Option<usize>,
    /// FIFO mode for downloads, as `max_active_uploads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active_downloads: Option<usize>,
}

/// A rate: bytes per second, or text like "200Mbit", "25MiB", "25MiB/s", "unlimited".
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RateValue {
    BytesPerSecond(u64),
    Text(String),
}

/// Other limits on some days, between two times.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimitRule {
    /// "mon".."sun", "weekdays", "weekends" or "daily" (default every day).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
    /// From "HH:MM" (in the bandwidth timezone).
    pub start: String,
    /// Until "HH:MM"; before `start` means the rule crosses midnight.
    pub end: String,
    /// Upload limit while the rule holds (default: the section's `upload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<RateValue>,
    /// Download limit while the rule holds (default: the section's `download`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<RateValue>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address of the local REST API, e.g. "127.0.0.1:8080". Any address but loopback needs
    /// `api_token`.
    pub listen: Option<String>,
    /// The token every request to the local API must carry (`Authorization: Bearer …`);
    /// required when `listen` is not a loopback address.
    pub api_token: Option<SecretSource>,
    /// How logs are written to stderr: "text" (readable, the default) or "json" (one object a
    /// line, for collectors). `--log-format` wins.
    pub log_format: Option<LogFormat>,
    /// Log levels as RUST_LOG takes them, e.g. "info" or "info,masv_agent::transfer=debug"
    /// (default "info"); RUST_LOG wins.
    pub log_level: Option<String>,
    /// How long chunks and parts in flight may take to finish at shutdown (SIGTERM) before they
    /// are cut off, e.g. "20s" (default 20s).
    pub shutdown_timeout: Option<DurationValue>,
    /// Where the agent keeps its database.
    pub data_dir: Option<PathBuf>,
    /// The MASV API base URL (default https://api.massive.app/v1; a hub's http://HOST:PORT/v1).
    pub cloud_url: Option<String>,
    /// Where share links point: `{share_link_base}{link_id}?secret=…` (default
    /// https://get.massive.io/; with an embedded [hub], the hub's own link base).
    pub share_link_base: Option<String>,
    /// The MASV API key, for team uploads and portal inboxes.
    pub api_key: Option<SecretSource>,
    /// Resume what was running when the agent stopped (default true).
    pub auto_resume: Option<bool>,
    /// Finalize uploads when all their files are sent (default true).
    pub auto_finalize: Option<bool>,
    /// Range size of downloads, e.g. "16MiB".
    pub chunk_size: Option<SizeValue>,
    /// Requests in flight at once across all transfers (default 16).
    pub max_connections: Option<usize>,
    /// A folder of more rule files (`*.toml` holding only [[watch]] and [[download]]).
    pub rules_dir: Option<PathBuf>,
    /// How transient failures (connect errors, timeouts, 5xx, 408, 429) are retried.
    pub retry: Option<RawRetry>,
    /// The hash of every file sent or received, computed as its bytes move and shown with the
    /// file: "xxh64" (the default), "xxh3", "xxh128", "md5", "sha1", "c4", "sha256", or "off".
    pub hash: Option<String>,
}

/// `[server] retry = { max_delay = "5m", give_up_after = "never" }`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// The longest wait between two tries, e.g. "5m" (the default).
    pub max_delay: Option<DurationValue>,
    /// How long a step may keep failing before its file fails: "never" (the default: an
    /// outage costs time, never a delivery) or a duration such as "12h".
    pub give_up_after: Option<DurationValue>,
}

/// An embedded hub.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHub {
    /// Address the hub listens on (default "127.0.0.1:9000").
    pub listen: Option<String>,
    /// The hub's data folder (default: `hub` inside the agent's data folder).
    pub data_dir: Option<PathBuf>,
    /// The team the agent sends as (created when missing; default "Local").
    pub team: Option<String>,
    /// The URL others reach the hub at (default http://LISTEN/).
    pub public_url: Option<String>,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format {other:?}: use text or json")),
        }
    }
}

/// A size: bytes, or text like "100MiB".
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(u64),
    Text(String),
}

/// A duration: seconds, or text like "5s", "500ms", "2m".
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DurationValue {
    Seconds(u64),
    Text(String),
}

/// When transfers of a rule may run; outside it they wait, paused.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    /// "mon".."sun", "weekdays", "weekends" or "daily" (default every day).
    #[serde(default)]
    pub days: Vec<String>,
    /// Opens at "HH:MM" (in the rule's timezone).
    pub start: String,
    /// Closes at "HH:MM"; before `start` means the window crosses midnight.
    pub end: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WatchModeName {
    /// Filesystem events (inotify).
    #[default]
    Events,
    /// Scanning every `poll_interval`, for network shares that send no events.
    Poll,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupName {
    /// One package per file.
    #[default]
    File,
    /// One package per top-level folder dropped in, once all of it has settled.
    Folder,
    /// One package per quiet batch: everything that settled until nothing new came for `settle`.
    Batch,
}

/// A manifest added to each package sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Manifest {
    /// An ASC MHL generation (`ascmhl/` at the package's root) of every file sent, made from the
    /// hashes computed while the files were sent.
    Ascmhl,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AfterName {
    /// Leave sent files where they are (the ledger keeps them from being sent twice).
    #[default]
    Keep,
    /// Delete sent files.
    Delete,
    /// Move sent files to `move_to`, keeping their layout.
    Move,
}

/// Upload to a portal (no account needed).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPortalTarget {
    pub subdomain: String,
    /// The sender's email address.
    pub sender: String,
    pub access_code: Option<SecretSource>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A team upload: to email recipients, or (with none) behind a share link.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTeamTarget {
    /// The team's id (default: the embedded hub's team).
    pub team_id: Option<String>,
    #[serde(default)]
    pub recipients: Vec<String>,
    /// Password of the package's links.
    pub password: Option<SecretSource>,
    /// Downloads allowed per link.
    pub download_limit: Option<u32>,
}

/// A watch folder: settled files become packages.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWatch {
    /// Unique among the rules; shown in logs and the API.
    pub name: String,
    /// The folder watched (relative paths start at the config file's folder).
    pub folder: PathBuf,
    /// Watch subfolders too (default true).
    pub recursive: Option<bool>,
    /// Globs of files to take (default all). A glob without "/" matches the file name at any
    /// depth; with "/" it matches the path inside the folder.
    #[serde(default)]
    pub include: Vec<String>,
    /// Globs of files to leave alone.
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub mode: WatchModeName,
    /// With mode = "poll": how often to scan (default "10s").
    pub poll_interval: Option<DurationValue>,
    /// The quiet period before a file counts as complete (default "5s").
    pub settle: Option<DurationValue>,
    #[serde(default)]
    pub group: GroupName,
    /// Package name template: {rule}, {date}, {time}, {folder}, {file}, {count}.
    pub package_name: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub after: AfterName,
    /// With after = "move": where sent files go.
    pub move_to: Option<PathBuf>,
    /// Sweep the folder on this cron schedule instead of watching it ("*/15 * * * *").
    pub sweep: Option<String>,
    /// IANA time zone of `sweep` and `window` (default: the machine's).
    pub timezone: Option<String>,
    pub window: Option<RawWindow>,
    #[serde(default)]
    pub priority: i64,
    /// Part size of the uploads, e.g. "100MiB".
    pub chunk_size: Option<SizeValue>,
    pub portal: Option<RawPortalTarget>,
    pub team: Option<RawTeamTarget>,
    /// For link uploads: write each package's share link here, as `<package>.url`, once sent.
    pub link_folder: Option<PathBuf>,
    /// "ascmhl": add an ASC MHL manifest of the package's files to each package (off by
    /// default).
    pub manifest: Option<Manifest>,
    /// Off: the rule is loaded but does nothing (default true).
    pub enabled: Option<bool>,
}

/// The team inbox of portal packages.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawInboxSource {
    /// The team (default: the embedded hub's team).
    pub team_id: Option<String>,
    /// Only packages from this portal (its subdomain or id).
    pub portal: Option<String>,
    /// Only packages created from this time on (RFC 3339; default: when the rule first ran).
    pub since: Option<String>,
    /// Put each package under a folder named after its portal.
    #[serde(default)]
    pub subfolder_per_portal: bool,
}

/// Who owns what a download creates: by name (`user`, `group`, looked up when the
/// configuration is loaded) or by number (`uid`, `gid`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOwner {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// A user name, instead of `uid`.
    pub user: Option<String>,
    /// A group name, instead of `gid`.
    pub group: Option<String>,
}

/// A download automation: exactly one of `link`, `links_folder`, `inbox`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDownload {
    pub name: String,
    /// A download link (it holds a secret: prefer { env = "…" } or { file = "…" }).
    pub link: Option<SecretSource>,
    /// A folder where dropped `.txt` / `.url` files holding links are downloaded.
    pub links_folder: Option<PathBuf>,
    /// Packages arriving in the team inbox (portal downloads).
    pub inbox: Option<RawInboxSource>,
    /// Cron schedule to check again (a link: until downloaded once; an inbox: default every
    /// minute).
    pub schedule: Option<String>,
    /// Where packages go.
    pub destination: PathBuf,
    /// Put each package in a folder named after it (default true).
    pub create_package_folder: Option<bool>,
    /// Password of the link.
    pub password: Option<SecretSource>,
    pub owner: Option<RawOwner>,
    /// Mode of created files, octal like "0640".
    pub file_mode: Option<String>,
    /// Mode of created folders, octal like "0750".
    pub folder_mode: Option<String>,
    /// Fail a package that has no ASC MHL manifest (`ascmhl/` at its root) (default false;
    /// a package with one is checked against it either way).
    pub require_manifest: Option<bool>,
    pub timezone: Option<String>,
    pub window: Option<RawWindow>,
    #[serde(default)]
    pub priority: i64,
    pub chunk_size: Option<SizeValue>,
    pub enabled: Option<bool>,
}
