//! The agent's configuration file (TOML): raw serde structs that refuse unknown keys (`raw`),
//! checked into validated settings and rules (`rules`). Every error reads
//! `file:line:col: what is wrong and what to do`, and a file's errors are reported all at once.
//! `examples/configs/` shows the format; `schema/masv-agent.schema.json` is its JSON Schema.

mod actions;
mod bandwidth;
mod raw;
mod rules;
mod units;

use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::IntoDeserializer;
use toml::de::{DeTable, DeValue};

pub use actions::{Action, ActionTarget, DEFAULT_GIVE_UP_AFTER, EVENT_TYPES};
pub use bandwidth::{BandwidthProblem, BandwidthSettings, Limits};
pub use raw::{
    AfterName, GroupName, LogFormat, Manifest, RateValue, RawBandwidth, RawLimitRule, SmtpTls,
    WebhookFormat,
};
pub use rules::{
    After, DownloadRule, DownloadSource, Glob, Rule, RuleKind, Scan, UploadTarget, WatchRule,
};
pub use units::{human_size, parse_duration, parse_rate, parse_size};

use crate::cloud::dto::{Secret, SecretSource};
use raw::{DurationValue, RawAction, RawDownload, RawFile, RawHub, RawServer, RawWatch, SizeValue};

/// A validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub server: ServerConfig,
    pub hub: Option<HubConfig>,
    pub rules: Vec<Rule>,
    /// `[bandwidth]`: rate limits, their schedule, FIFO caps (the default limits nothing).
    pub bandwidth: BandwidthSettings,
    /// `[[action]]`: what to do when a transfer ends or a rule fails.
    pub actions: Vec<Action>,
}

/// `[server]`: what `masv server start` flags also set (flags win over the file).
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub cloud_url: Option<String>,
    /// Where share links point (checked: an http(s) URL that can take a path).
    pub share_link_base: Option<String>,
    pub api_key: Option<Secret>,
    pub auto_resume: Option<bool>,
    pub auto_finalize: Option<bool>,
    pub chunk_size: Option<u64>,
    pub max_connections: Option<usize>,
    pub rules_dir: Option<PathBuf>,
    /// `retry.max_delay`.
    pub retry_max_delay: Option<std::time::Duration>,
    /// `retry.give_up_after`: `Some(None)` is "never".
    pub retry_give_up_after: Option<Option<std::time::Duration>>,
    /// `hash`: `Some(None)` is "off".
    pub hash: Option<Option<crate::mhl::HashFormat>>,
    pub api_token: Option<Secret>,
    pub log_format: Option<LogFormat>,
    /// An `EnvFilter` directive, checked.
    pub log_level: Option<String>,
    pub shutdown_timeout: Option<std::time::Duration>,
}

/// `[hub]`: a hub embedded in the agent.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub listen: SocketAddr,
    pub data_dir: Option<PathBuf>,
    pub team: String,
    pub public_url: Option<url::Url>,
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Every problem found, in file order.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Turns byte offsets of one file into `file:line:col` errors.
struct Located<'a> {
    path: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
    /// Reads a secret: from the environment and files, or a stand-in in tests.
    secrets: &'a SecretReader,
}

/// How secrets are read while checking a file.
pub type SecretReader = dyn Fn(&SecretSource) -> Result<Secret, String> + Sync;

fn real_secrets(source: &SecretSource) -> Result<Secret, String> {
    source.resolve()
}

impl Located<'_> {
    fn error(&mut self, offset: usize, message: impl Into<String>) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.chars().rev().take_while(|c| *c != '\n').count() + 1;
        self.errors.push(ConfigError {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
        });
    }

    /// Where `key = …` starts in the rule whose header is at `span` (up to the next `[[`
    /// header, sub-tables included), or the header itself.
    fn key_offset(&self, span: Range<usize>, key: &str) -> usize {
        let start = span.start.min(self.text.len());
        let body = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i + 1);
        let end = self.text[body..]
            .find("\n[[")
            .map_or(self.text.len(), |i| body + i + 1);
        let mut offset = start;
        for line in self.text[offset..end].split_inclusive('\n') {
            let trimmed = line.trim_start();
            if let Some(rest) = trimmed.strip_prefix(key)
                && rest.trim_start().starts_with('=')
            {
                return offset + (line.len() - trimmed.len());
            }
            offset += line.len();
        }
        span.start
    }

    /// Deserializes one table of the file; a failure is reported at its place.
    fn table<T: for<'de> Deserialize<'de>>(
        &mut self,
        value: &toml::Spanned<DeValue<'_>>,
    ) -> Option<T> {
        match T::deserialize(value.clone().into_deserializer()) {
            Ok(v) => Some(v),
            Err(e) => {
                let offset = e.span().map(|s| s.start).unwrap_or(value.span().start);
                self.error(offset, did_you_mean(e.message().trim()));
                None
            }
        }
    }
}

/// serde's "unknown field `setle`, expected one of `name`, `settle`, …" with the closest key
/// suggested: "…; did you mean `settle`?" (when one is within a third of the key's length).
fn did_you_mean(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_owned();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message.to_owned();
    };
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|candidate| (edit_distance(unknown, candidate), candidate))
        .min();
    match best {
        Some((distance, candidate)) if distance > 0 && distance <= unknown.len().max(3) / 3 => {
            format!("{message}; did you mean `{candidate}`?")
        }
        _ => message.to_owned(),
    }
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The JSON Schema of the file format, as `masv config schema` prints it.
pub fn schema() -> String {
    let schema = schemars::schema_for!(RawFile);
    serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n"
}

/// Reads and validates a configuration file, and the rule files of its `rules_dir`.
/// The folder relative paths start from: the config file's, made absolute so that nothing
/// depends on the agent's working folder (file events name absolute paths).
fn base_of(path: &Path) -> PathBuf {
    let parent = path.parent().unwrap_or(Path::new(""));
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}

pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, &real_secrets)
}

/// [`load`] with secrets read by `secrets`.
pub fn load_with(path: &Path, secrets: &SecretReader) -> Result<Config, ConfigErrors> {
    let text = read(path)?;
    let mut errors = Vec::new();
    let mut config = parse_with(path, &text, secrets)?;
    if let Some(dir) = config.server.rules_dir.clone() {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect(),
            Err(e) => {
                return Err(ConfigErrors(vec![ConfigError {
                    path: path.to_path_buf(),
                    line: 1,
                    column: 1,
                    message: format!("rules_dir {}: {e}", dir.display()),
                }]));
            }
        };
        files.sort();
        for file in files {
            let has_key = config.server.api_key.is_some() || config.hub.is_some();
            match read(&file).and_then(|text| parse_rules_file(&file, &text, has_key, secrets)) {
                Ok(rules) => config.rules.extend(rules),
                Err(e) => errors.extend(e.0),
            }
        }
    }
    let mut seen = HashSet::new();
    for rule in &config.rules {
        if !seen.insert(rule.name.clone()) {
            errors.push(ConfigError {
                path: path.to_path_buf(),
                line: 1,
                column: 1,
                message: format!(
                    "two rules are named {:?}; rule names must be unique",
                    rule.name
                ),
            });
        }
    }
    if config.server.rules_dir.is_some() {
        for action in &config.actions {
            for rule in action.rules.iter().flatten() {
                if !config.rules.iter().any(|r| &r.name == rule) {
                    errors.push(ConfigError {
                        path: path.to_path_buf(),
                        line: 1,
                        column: 1,
                        message: format!(
                            "action {:?}: no rule is named {rule:?} in this file or its rules_dir",
                            action.name
                        ),
                    });
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
            message: format!("cannot read the file: {e}"),
        }])
    })
}

/// The text of the rule whose `[[…]]` header starts `span`: up to the next header (a line
/// starting with `[`) or the end. The parser's span of an array-of-tables item covers its
/// header only; a rule's fingerprint must cover every key, inline tables included.
fn rule_text<'a>(text: &'a str, span: &Range<usize>) -> &'a str {
    let start = span.start.min(text.len());
    let body = span.end.min(text.len()).max(start);
    let end = text[body..]
        .match_indices('\n')
        .map(|(i, _)| body + i + 1)
        .find(|&line| {
            text[line..]
                .trim_start_matches([' ', '\t'])
                .starts_with('[')
        })
        .unwrap_or(text.len());
    &text[start..end]
}

fn fingerprint(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// The sections of a file, each deserialized on its own so that all errors are found.
struct Sections {
    server: Option<RawServer>,
    hub: Option<RawHub>,
    bandwidth: Option<BandwidthSettings>,
    watch: Vec<(RawWatch, Range<usize>)>,
    download: Vec<(RawDownload, Range<usize>)>,
    action: Vec<(RawAction, Range<usize>)>,
}

fn sections(at: &mut Located<'_>, text: &str) -> Option<Sections> {
    let table = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => {
            at.error(
                e.span().map(|s| s.start).unwrap_or(0),
                e.message().trim().to_owned(),
            );
            return None;
        }
    };
    let mut out = Sections {
        server: None,
        hub: None,
        bandwidth: None,
        watch: Vec::new(),
        download: Vec::new(),
        action: Vec::new(),
    };
    for (key, value) in table.get_ref() {
        match key.get_ref().as_ref() {
            "server" => out.server = at.table(value),
            "hub" => out.hub = at.table(value),
            "bandwidth" => out.bandwidth = bandwidth(at, value),
            name @ ("watch" | "download" | "action") => {
                let DeValue::Array(items) = value.get_ref() else {
                    at.error(
                        key.span().start,
                        format!("{name} is a list of rules: write [[{name}]]"),
                    );
                    continue;
                };
                for item in items.iter() {
                    let span = item.span();
                    if name == "action" {
                        if let Some(action) = at.table::<RawAction>(item) {
                            out.action.push((action, span));
                        }
                    } else if name == "watch" {
                        if let Some(rule) = at.table::<RawWatch>(item) {
                            out.watch.push((rule, span));
                        }
                    } else if let Some(rule) = at.table::<RawDownload>(item) {
                        out.download.push((rule, span));
                    }
                }
            }
            other => at.error(
                key.span().start,
                format!(
                    "unknown section `{other}`; expected server, hub, bandwidth, watch, download or action"
                ),
            ),
        }
    }
    Some(out)
}

/// `[server] data_dir` of a configuration file (resolved against the file's folder), where the
/// agent keeps the API token it made when none is configured; the rest is not read.
pub fn load_data_dir(path: &Path) -> Result<Option<PathBuf>, ConfigErrors> {
    let text = read(path)?;
    let mut at = Located {
        path,
        text: &text,
        errors: Vec::new(),
        secrets: &real_secrets,
    };
    let Some(sections) = sections(&mut at, &text) else {
        return Err(ConfigErrors(at.errors));
    };
    let base = base_of(path);
    Ok(sections
        .server
        .and_then(|s| s.data_dir)
        .map(|d| if d.is_absolute() { d } else { base.join(d) }))
}

/// Only `[server] api_token` of a configuration file, what `masv` commands need to talk to the
/// agent: the rest of the file and its other secrets are not read.
pub fn load_api_token(path: &Path) -> Result<Option<Secret>, ConfigErrors> {
    let text = read(path)?;
    let mut at = Located {
        path,
        text: &text,
        errors: Vec::new(),
        secrets: &real_secrets,
    };
    let Some(sections) = sections(&mut at, &text) else {
        return Err(ConfigErrors(at.errors));
    };
    let source = sections.server.and_then(|s| s.api_token);
    let token = source.and_then(|source| match source.resolve() {
        Ok(token) => Some(token),
        Err(e) => {
            key_error(&mut at, &text, "api_token", format!("api_token: {e}"));
            None
        }
    });
    if at.errors.is_empty() {
        Ok(token)
    } else {
        Err(ConfigErrors(at.errors))
    }
}

/// Validates the configuration `text` read from `path` (named in errors).
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    parse_with(path, text, &real_secrets)
}

/// [`parse`] with secrets read by `secrets`.
pub fn parse_with(path: &Path, text: &str, secrets: &SecretReader) -> Result<Config, ConfigErrors> {
    let mut at = Located {
        path,
        text,
        errors: Vec::new(),
        secrets,
    };
    let Some(sections) = sections(&mut at, text) else {
        return Err(ConfigErrors(at.errors));
    };
    let base = base_of(path);
    // A key that is configured but cannot be read is reported once, at api_key: the rules
    // that need it are not told they have none.
    let key_configured = sections
        .server
        .as_ref()
        .is_some_and(|s| s.api_key.is_some());
    let server = server(sections.server.unwrap_or_default(), &base, &mut at, text);
    let hub = sections.hub.and_then(|h| hub(h, &base, &mut at, text));
    let has_key = key_configured || hub.is_some();
    let rules = check_rules(&mut at, &base, has_key, sections.watch, sections.download);
    let bandwidth = sections.bandwidth.unwrap_or_default();
    // With a rules_dir, rules named by actions may be in its files: checked by `load_with`.
    let known_rules = server
        .rules_dir
        .is_none()
        .then(|| rules.iter().map(|r| r.name.clone()).collect::<Vec<_>>());
    let actions = check_actions(&mut at, &base, sections.action, known_rules.as_deref());
    if at.errors.is_empty() {
        Ok(Config {
            server,
            hub,
            rules,
            bandwidth,
            actions,
        })
    } else {
        at.errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(at.errors))
    }
}

/// A file of `rules_dir`: rules only.
fn parse_rules_file(
    path: &Path,
    text: &str,
    has_key: bool,
    secrets: &SecretReader,
) -> Result<Vec<Rule>, ConfigErrors> {
    let mut at = Located {
        path,
        text,
        errors: Vec::new(),
        secrets,
    };
    let Some(sections) = sections(&mut at, text) else {
        return Err(ConfigErrors(at.errors));
    };
    if sections.server.is_some()
        || sections.hub.is_some()
        || sections.bandwidth.is_some()
        || !sections.action.is_empty()
    {
        at.error(0, "a rules_dir file holds only [[watch]] and [[download]] rules; [server], [hub], [bandwidth] and [[action]] belong in the main file");
    }
    let base = base_of(path);
    let rules = check_rules(&mut at, &base, has_key, sections.watch, sections.download);
    if at.errors.is_empty() {
        Ok(rules)
    } else {
        at.errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(at.errors))
    }
}

fn check_rules(
    at: &mut Located<'_>,
    base: &Path,
    has_api_key: bool,
    watch: Vec<(RawWatch, Range<usize>)>,
    download: Vec<(RawDownload, Range<usize>)>,
) -> Vec<Rule> {
    let text = at.text;
    let mut rules = Vec::new();
    for (raw, span) in watch {
        let print = fingerprint(rule_text(text, &span));
        let mut check = rules::RuleChecker {
            at,
            span,
            base,
            has_api_key,
        };
        rules.push(check.watch(&raw, print));
    }
    for (raw, span) in download {
        let print = fingerprint(rule_text(text, &span));
        let mut check = rules::RuleChecker {
            at,
            span,
            base,
            has_api_key,
        };
        rules.push(check.download(&raw, print));
    }
    rules
}

/// Checks the `[[action]]` tables: each on its own, names unique, the rules they name known
/// (`known_rules`, when the file holds every rule).
fn check_actions(
    at: &mut Located<'_>,
    base: &Path,
    raw: Vec<(RawAction, Range<usize>)>,
    known_rules: Option<&[String]>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut names = HashSet::new();
    for (raw, span) in raw {
        let mut check = rules::RuleChecker {
            at,
            span,
            base,
            has_api_key: true,
        };
        if !names.insert(raw.name.clone()) {
            check.error(
                "name",
                format!(
                    "two actions are named {:?}; action names must be unique",
                    raw.name
                ),
            );
        }
        if let (Some(known), Some(wanted)) = (known_rules, &raw.rules) {
            for rule in wanted {
                if !known.contains(rule) {
                    check.error(
                        "rules",
                        format!(
                            "rules: no rule is named {rule:?}; name a [[watch]] or [[download]] rule of this file"
                        ),
                    );
                }
            }
        }
        actions.extend(check.action(&raw));
    }
    actions
}

/// Checks `[bandwidth]`; each problem is reported at its key (in its schedule rule).
fn bandwidth(
    at: &mut Located<'_>,
    value: &toml::Spanned<DeValue<'_>>,
) -> Option<BandwidthSettings> {
    let raw: RawBandwidth = at.table(value)?;
    let problems = match BandwidthSettings::check(raw) {
        Ok(settings) => return Some(settings),
        Err(problems) => problems,
    };
    let key_in = |table: &toml::Spanned<DeValue<'_>>, key: &str| match table.get_ref() {
        DeValue::Table(t) => t
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(k, _)| k.span().start),
        _ => None,
    };
    let rule_of = |i: usize| match value.get_ref() {
        DeValue::Table(t) => t
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == "schedule")
            .and_then(|(_, v)| match v.get_ref() {
                DeValue::Array(items) => items.get(i).cloned(),
                _ => None,
            }),
        _ => None,
    };
    for p in problems {
        let offset = match p.rule.and_then(rule_of) {
            Some(rule) => key_in(&rule, p.key).unwrap_or(rule.span().start),
            None => key_in(value, p.key).unwrap_or(value.span().start),
        };
        at.error(offset, p.message);
    }
    None
}

/// An address to listen on: `IP:PORT`, or `localhost:PORT` (the IPv4 loopback).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    match text.rsplit_once(':') {
        Some((host, port)) if host.eq_ignore_ascii_case("localhost") => port
            .parse::<u16>()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .map_err(|_| format!("{port:?} is not a port")),
        _ => Err(format!(
            "{text:?} is not an address like 127.0.0.1:8080 or localhost:8080"
        )),
    }
}

fn key_error(at: &mut Located<'_>, text: &str, key: &str, message: String) {
    let offset = at.key_offset(0..text.len(), key);
    at.error(offset, message);
}

fn server(raw: RawServer, base: &Path, at: &mut Located<'_>, text: &str) -> ServerConfig {
    let listen = raw.listen.and_then(|l| match parse_listen(&l) {
        Ok(addr) => Some(addr),
        Err(_) => {
            key_error(
                at,
                text,
                "listen",
                format!("listen = {l:?} is not an address like 127.0.0.1:8080 or localhost:8080"),
            );
            None
        }
    });
    let cloud_url = raw.cloud_url.and_then(|u| match url::Url::parse(&u) {
        Ok(_) => Some(u),
        Err(e) => {
            key_error(
                at,
                text,
                "cloud_url",
                format!("cloud_url = {u:?} is not a URL ({e})"),
            );
            None
        }
    });
    let share_link_base = raw
        .share_link_base
        .and_then(|u| match crate::transfer::check_link_base(&u) {
            Ok(()) => Some(u),
            Err(e) => {
                key_error(at, text, "share_link_base", e);
                None
            }
        });
    let api_key = raw.api_key.and_then(|k| match (at.secrets)(&k) {
        Ok(secret) => Some(secret),
        Err(e) => {
            key_error(at, text, "api_key", format!("api_key: {e}"));
            None
        }
    });
    let chunk_size = raw.chunk_size.and_then(|c| {
        let bytes = match &c {
            SizeValue::Bytes(b) => Ok(*b),
            SizeValue::Text(t) => parse_size(t),
        };
        match bytes {
            Ok(0) => {
                key_error(
                    at,
                    text,
                    "chunk_size",
                    "chunk_size must be more than 0 bytes".into(),
                );
                None
            }
            Ok(b) => Some(b),
            Err(e) => {
                key_error(at, text, "chunk_size", format!("chunk_size: {e}"));
                None
            }
        }
    });
    let max_connections = raw.max_connections.and_then(|m| {
        if m == 0 {
            key_error(
                at,
                text,
                "max_connections",
                "max_connections must be at least 1".into(),
            );
            None
        } else {
            Some(m)
        }
    });
    let api_token = raw.api_token.and_then(|k| match (at.secrets)(&k) {
        Ok(secret) => Some(secret),
        Err(e) => {
            key_error(at, text, "api_token", format!("api_token: {e}"));
            None
        }
    });
    let log_level = raw.log_level.and_then(|l| {
        match tracing_subscriber::EnvFilter::builder().parse(&l) {
            Ok(_) => Some(l),
            Err(e) => {
                key_error(
                    at,
                    text,
                    "log_level",
                    format!(
                        "log_level = {l:?}: {e}; write e.g. \"info\" or \"warn,masv_agent=debug\""
                    ),
                );
                None
            }
        }
    });
    let shutdown_timeout = raw.shutdown_timeout.and_then(|d| match d {
        DurationValue::Seconds(s) => Some(std::time::Duration::from_secs(s)),
        DurationValue::Text(t) => match parse_duration(&t) {
            Ok(d) => Some(d),
            Err(e) => {
                key_error(
                    at,
                    text,
                    "shutdown_timeout",
                    format!("shutdown_timeout: {e}"),
                );
                None
            }
        },
    });
    let retry = raw.retry.unwrap_or_default();
    let mut duration = |key: &str, value: DurationValue| match value {
        DurationValue::Seconds(s) => Some(std::time::Duration::from_secs(s)),
        DurationValue::Text(t) => match parse_duration(&t) {
            Ok(d) => Some(d),
            Err(e) => {
                key_error(at, text, key, format!("retry.{key}: {e}"));
                None
            }
        },
    };
    let retry_max_delay = retry.max_delay.and_then(|d| duration("max_delay", d));
    let retry_give_up_after = retry.give_up_after.and_then(|d| match d {
        DurationValue::Text(t) if t.trim().eq_ignore_ascii_case("never") => Some(None),
        d => duration("give_up_after", d).map(Some),
    });
    let hash = raw.hash.and_then(|name| match name.trim() {
        "off" => Some(None),
        n => match crate::mhl::HashFormat::parse_any(n) {
            Some(f) => Some(Some(f)),
            None => {
                key_error(
                    at,
                    text,
                    "hash",
                    format!(
                        "hash = {name:?} is not a hash format; use xxh64 (the default), xxh3, \
                         xxh128, md5, sha1, c4, sha256 or off"
                    ),
                );
                None
            }
        },
    });
    let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
    ServerConfig {
        hash,
        api_token,
        log_format: raw.log_format,
        log_level,
        shutdown_timeout,
        listen,
        data_dir: raw.data_dir.map(resolve),
        cloud_url,
        share_link_base,
        api_key,
        auto_resume: raw.auto_resume,
        auto_finalize: raw.auto_finalize,
        chunk_size,
        max_connections,
        rules_dir: raw.rules_dir.map(resolve),
        retry_max_delay,
        retry_give_up_after,
    }
}

fn hub(raw: RawHub, base: &Path, at: &mut Located<'_>, text: &str) -> Option<HubConfig> {
    let listen = match raw
        .listen
        .as_deref()
        .unwrap_or("127.0.0.1:9000")
        .parse::<SocketAddr>()
    {
        Ok(addr) => Some(addr),
        Err(_) => {
            key_error(
                at,
                text,
                "listen",
                "[hub] listen is not an address like 127.0.0.1:9000".into(),
            );
            None
        }
    };
    let public_url = raw.public_url.and_then(|u| match url::Url::parse(&u) {
        Ok(url) => Some(url),
        Err(e) => {
            key_error(
                at,
                text,
                "public_url",
                format!("public_url = {u:?} is not a URL ({e})"),
            );
            None
        }
    });
    Some(HubConfig {
        listen: listen?,
        data_dir: raw
            .data_dir
            .map(|p| if p.is_absolute() { p } else { base.join(p) }),
        team: raw.team.unwrap_or_else(|| "Local".into()),
        public_url,
    })
}

#[cfg(test)]
mod tests;
