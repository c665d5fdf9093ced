//! Rules as the program uses them: paths resolved against the config file's folder, globs
//! compiled, schedules and windows parsed, secrets read. Checking a raw rule reports every
//! problem it has, each at its key's line and column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Located;
use super::raw::RawOwner;
use super::raw::{
    AfterName, DurationValue, GroupName, RawDownload, RawWatch, RawWindow, SizeValue, WatchModeName,
};
use super::units::{parse_duration, parse_size};
use crate::cloud::dto::{Secret, SecretSource};
use crate::schedule::{Schedule, Window};

/// A compiled automation.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub enabled: bool,
    pub priority: i64,
    pub chunk_size: Option<u64>,
    pub window: Option<Window>,
    /// Changes when the rule's text changes: a reload restarts only rules whose text changed.
    pub fingerprint: u64,
    pub kind: RuleKind,
}

#[derive(Debug, Clone)]
pub enum RuleKind {
    Watch(WatchRule),
    Download(DownloadRule),
}

impl Rule {
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            RuleKind::Watch(_) => "watch",
            RuleKind::Download(d) => match d.source {
                DownloadSource::Link(_) => "link download",
                DownloadSource::LinksFolder(_) => "links folder download",
                DownloadSource::Inbox { .. } => "inbox download",
            },
        }
    }
}

/// A glob: without `/` it matches a file name at any depth, with `/` the path in the folder.
#[derive(Debug, Clone)]
pub struct Glob {
    pattern: glob::Pattern,
    by_name: bool,
}

impl Glob {
    pub fn matches(&self, rel: &Path) -> bool {
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        if self.by_name {
            rel.file_name()
                .is_some_and(|n| self.pattern.matches_with(&n.to_string_lossy(), options))
        } else {
            self.pattern.matches_path_with(rel, options)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    Events,
    Poll(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    Keep,
    Delete,
    Move(PathBuf),
}

#[derive(Clone)]
pub enum UploadTarget {
    Portal {
        subdomain: String,
        sender: String,
        access_code: Option<Secret>,
        metadata: BTreeMap<String, String>,
    },
    Team {
        /// `None`: the embedded hub's team.
        team_id: Option<String>,
        recipients: Vec<String>,
        password: Option<Secret>,
        download_limit: Option<u32>,
    },
}

impl std::fmt::Debug for UploadTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadTarget::Portal { subdomain, .. } => write!(f, "Portal({subdomain})"),
            UploadTarget::Team {
                team_id,
                recipients,
                ..
            } => write!(f, "Team({team_id:?}, {recipients:?})"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct WatchRule {
    pub folder: PathBuf,
    pub recursive: bool,
    pub include: Vec<Glob>,
    pub exclude: Vec<Glob>,
    pub scan: Scan,
    pub settle: Duration,
    pub group: GroupName,
    pub package_name: String,
    pub description: String,
    pub after: After,
    pub sweep: Option<Schedule>,
    pub target: UploadTarget,
    pub link_folder: Option<PathBuf>,
    pub manifest: Option<super::Manifest>,
}

impl WatchRule {
    /// Whether a file (path relative to the folder) is one the rule takes.
    pub fn wants(&self, rel: &Path) -> bool {
        (self.include.is_empty() || self.include.iter().any(|g| g.matches(rel)))
            && !self.exclude.iter().any(|g| g.matches(rel))
    }
}

#[derive(Clone)]
pub enum DownloadSource {
    Link(Secret),
    LinksFolder(PathBuf),
    Inbox {
        team_id: Option<String>,
        portal: Option<String>,
        since: Option<DateTime<Utc>>,
        subfolder_per_portal: bool,
    },
}

impl std::fmt::Debug for DownloadSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownloadSource::Link(_) => f.write_str("Link(<redacted>)"),
            DownloadSource::LinksFolder(p) => write!(f, "LinksFolder({})", p.display()),
            DownloadSource::Inbox {
                team_id, portal, ..
            } => write!(f, "Inbox({team_id:?}, {portal:?})"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DownloadRule {
    pub source: DownloadSource,
    pub schedule: Option<Schedule>,
    pub destination: PathBuf,
    pub create_package_folder: bool,
    pub password: Option<Secret>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub file_mode: Option<u32>,
    pub folder_mode: Option<u32>,
    pub require_manifest: bool,
}

/// The placeholders a package name may hold.
const NAME_PLACEHOLDERS: [&str; 6] = ["rule", "date", "time", "folder", "file", "count"];

/// Checks a rule's keys one by one; `span` is the rule's table in the file.
pub(super) struct RuleChecker<'a, 'b> {
    pub at: &'a mut Located<'b>,
    pub span: std::ops::Range<usize>,
    pub base: &'a Path,
    pub has_api_key: bool,
}

impl RuleChecker<'_, '_> {
    /// Reports `message` at `key` of the rule (or at the rule itself).
    pub(super) fn error(&mut self, key: &str, message: impl Into<String>) {
        let offset = self.at.key_offset(self.span.clone(), key);
        self.at.error(offset, message);
    }

    pub(super) fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    pub(super) fn duration(
        &mut self,
        key: &str,
        value: Option<&DurationValue>,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(DurationValue::Seconds(s)) => Duration::from_secs(*s),
            Some(DurationValue::Text(t)) => parse_duration(t).unwrap_or_else(|e| {
                self.error(key, format!("{key}: {e}"));
                default
            }),
        }
    }

    fn size(&mut self, key: &str, value: Option<&SizeValue>) -> Option<u64> {
        let bytes = match value? {
            SizeValue::Bytes(b) => Ok(*b),
            SizeValue::Text(t) => parse_size(t),
        };
        match bytes {
            Ok(0) => {
                self.error(key, format!("{key} must be more than 0 bytes"));
                None
            }
            Ok(b) => Some(b),
            Err(e) => {
                self.error(key, format!("{key}: {e}"));
                None
            }
        }
    }

    pub(super) fn secret(&mut self, key: &str, source: Option<&SecretSource>) -> Option<Secret> {
        match (self.at.secrets)(source?) {
            Ok(secret) => Some(secret),
            Err(e) => {
                self.error(key, format!("{key}: {e}"));
                None
            }
        }
    }

    fn globs(&mut self, key: &str, patterns: &[String]) -> Vec<Glob> {
        let mut out = Vec::new();
        for p in patterns {
            match glob::Pattern::new(p) {
                Ok(pattern) => out.push(Glob {
                    pattern,
                    by_name: !p.contains('/'),
                }),
                Err(e) => self.error(key, format!("{key}: {p:?} is not a glob: {e}")),
            }
        }
        out
    }

    fn window(&mut self, raw: Option<&RawWindow>, tz: Option<&str>) -> Option<Window> {
        let raw = raw?;
        match Window::parse(&raw.days, &raw.start, &raw.end, tz) {
            Ok(w) => Some(w),
            Err(e) => {
                self.error("window", format!("window: {e}"));
                None
            }
        }
    }

    fn schedule(&mut self, key: &str, expr: Option<&str>, tz: Option<&str>) -> Option<Schedule> {
        match Schedule::parse(expr?, tz) {
            Ok(s) => Some(s),
            Err(e) => {
                self.error(key, format!("{key}: {e}"));
                None
            }
        }
    }

    /// `owner`'s uid and gid, names resolved through the system's user database (NSS: LDAP
    /// users too) now, so that an unknown name is a configuration error, not a failed download.
    fn owner(&mut self, raw: Option<&RawOwner>) -> (Option<u32>, Option<u32>) {
        let Some(owner) = raw else {
            return (None, None);
        };
        let mut one = |number: Option<u32>, name: &Option<String>, kinds: [&str; 3]| {
            let [number_key, name_key, what] = kinds;
            match (number, name) {
                (Some(_), Some(_)) => {
                    self.error(
                        "owner",
                        format!("owner gives both {number_key} and {name_key}: keep one"),
                    );
                    None
                }
                (Some(id), None) => Some(id),
                (None, Some(name)) => {
                    let found = if what == "user" {
                        user_id(name)
                    } else {
                        group_id(name)
                    };
                    match found {
                        Ok(Some(id)) => Some(id),
                        Ok(None) => {
                            self.error(
                                "owner",
                                format!(
                                    "owner {name_key} = {name:?}: there is no such {what} on this machine; create it, or give its number as {number_key}"
                                ),
                            );
                            None
                        }
                        Err(e) => {
                            self.error(
                                "owner",
                                format!("owner {name_key} = {name:?} cannot be looked up: {e}"),
                            );
                            None
                        }
                    }
                }
                (None, None) => None,
            }
        };
        let uid = one(owner.uid, &owner.user, ["uid", "user", "user"]);
        let gid = one(owner.gid, &owner.group, ["gid", "group", "group"]);
        (uid, gid)
    }

    fn mode(&mut self, key: &str, text: Option<&str>) -> Option<u32> {
        let text = text?;
        match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
            Ok(m) if m <= 0o7777 => Some(m),
            _ => {
                self.error(
                    key,
                    format!("{key} = {text:?} is not an octal mode like \"0644\""),
                );
                None
            }
        }
    }

    pub fn watch(&mut self, raw: &RawWatch, fingerprint: u64) -> Rule {
        let tz = raw.timezone.as_deref();
        let target = match (&raw.portal, &raw.team) {
            (Some(p), None) => UploadTarget::Portal {
                subdomain: p.subdomain.clone(),
                sender: p.sender.clone(),
                access_code: self.secret("access_code", p.access_code.as_ref()),
                metadata: p.metadata.clone(),
            },
            (None, Some(t)) => {
                if !self.has_api_key {
                    self.error("team", "team uploads need an API key: set [server] api_key, or run an embedded [hub]");
                }
                UploadTarget::Team {
                    team_id: t.team_id.clone(),
                    recipients: t.recipients.clone(),
                    password: self.secret("password", t.password.as_ref()),
                    download_limit: t.download_limit,
                }
            }
            _ => {
                self.error("name", format!(
                    "watch rule {:?} needs exactly one destination: a [watch.portal] or a [watch.team] table",
                    raw.name
                ));
                UploadTarget::Team {
                    team_id: None,
                    recipients: Vec::new(),
                    password: None,
                    download_limit: None,
                }
            }
        };
        let after = match raw.after {
            AfterName::Keep => After::Keep,
            AfterName::Delete => After::Delete,
            AfterName::Move => match &raw.move_to {
                Some(to) => After::Move(self.path(to)),
                None => {
                    self.error("after", "after = \"move\" needs move_to = \"folder\"");
                    After::Keep
                }
            },
        };
        if raw.move_to.is_some() && raw.after != AfterName::Move {
            self.error("move_to", "move_to applies only with after = \"move\"");
        }
        let package_name = raw
            .package_name
            .clone()
            .unwrap_or_else(|| "{rule} {date} {time}".into());
        self.check_template(&package_name);
        if raw.link_folder.is_some()
            && !matches!(&target, UploadTarget::Team { recipients, .. } if recipients.is_empty())
        {
            self.error(
                "link_folder",
                "link_folder applies to link uploads: a [watch.team] without recipients",
            );
        }
        let scan = match raw.mode {
            WatchModeName::Events => {
                if raw.poll_interval.is_some() {
                    self.error(
                        "poll_interval",
                        "poll_interval applies only with mode = \"poll\"",
                    );
                }
                Scan::Events
            }
            WatchModeName::Poll => Scan::Poll(self.duration(
                "poll_interval",
                raw.poll_interval.as_ref(),
                Duration::from_secs(10),
            )),
        };
        let folder = self.path(&raw.folder);
        let watch = WatchRule {
            recursive: raw.recursive.unwrap_or(true),
            include: self.globs("include", &raw.include),
            exclude: self.globs("exclude", &raw.exclude),
            scan,
            settle: self.duration("settle", raw.settle.as_ref(), Duration::from_secs(5)),
            group: raw.group,
            package_name,
            description: raw.description.clone().unwrap_or_default(),
            after,
            sweep: self.schedule("sweep", raw.sweep.as_deref(), tz),
            target,
            link_folder: raw.link_folder.as_deref().map(|p| self.path(p)),
            manifest: raw.manifest,
            folder,
        };
        Rule {
            name: raw.name.clone(),
            enabled: raw.enabled.unwrap_or(true),
            priority: raw.priority,
            chunk_size: self.size("chunk_size", raw.chunk_size.as_ref()),
            window: self.window(raw.window.as_ref(), tz),
            fingerprint,
            kind: RuleKind::Watch(watch),
        }
    }

    fn check_template(&mut self, template: &str) {
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                self.error("package_name", "package_name has a { without its }");
                return;
            };
            let name = &rest[open + 1..open + close];
            if !NAME_PLACEHOLDERS.contains(&name) {
                self.error(
                    "package_name",
                    format!(
                        "package_name: unknown placeholder {{{name}}}; use {}",
                        NAME_PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                    ),
                );
            }
            rest = &rest[open + close + 1..];
        }
    }

    pub fn download(&mut self, raw: &RawDownload, fingerprint: u64) -> Rule {
        let tz = raw.timezone.as_deref();
        let source = match (&raw.link, &raw.links_folder, &raw.inbox) {
            (Some(link), None, None) => {
                let secret = self.secret("link", Some(link)).unwrap_or_default();
                if !secret.is_empty()
                    && let Err(e) = crate::cloud::dto::LinkUrl::parse(secret.expose())
                {
                    self.error("link", format!("link: {e}"));
                }
                DownloadSource::Link(secret)
            }
            (None, Some(folder), None) => DownloadSource::LinksFolder(self.path(folder)),
            (None, None, Some(inbox)) => {
                if !self.has_api_key {
                    self.error("inbox", "inbox downloads need an API key: set [server] api_key, or run an embedded [hub]");
                }
                let since = inbox.since.as_deref().and_then(|s| match DateTime::parse_from_rfc3339(s) {
                    Ok(t) => Some(t.with_timezone(&Utc)),
                    Err(e) => {
                        self.error("since", format!("since = {s:?} is not an RFC 3339 time like \"2026-01-31T00:00:00Z\" ({e})"));
                        None
                    }
                });
                DownloadSource::Inbox {
                    team_id: inbox.team_id.clone(),
                    portal: inbox.portal.clone(),
                    since,
                    subfolder_per_portal: inbox.subfolder_per_portal,
                }
            }
            _ => {
                self.error("name", format!(
                    "download rule {:?} needs exactly one source: link, links_folder or [download.inbox]",
                    raw.name
                ));
                DownloadSource::LinksFolder(PathBuf::new())
            }
        };
        let schedule = match (&source, raw.schedule.as_deref()) {
            (DownloadSource::Inbox { .. }, None) => {
                self.schedule("schedule", Some("* * * * *"), tz)
            }
            (DownloadSource::LinksFolder(_), Some(_)) => {
                self.error(
                    "schedule",
                    "a links_folder is watched; it takes no schedule",
                );
                None
            }
            (_, expr) => self.schedule("schedule", expr, tz),
        };
        let (uid, gid) = self.owner(raw.owner.as_ref());
        let download = DownloadRule {
            source,
            schedule,
            destination: self.path(&raw.destination),
            create_package_folder: raw.create_package_folder.unwrap_or(true),
            password: self.secret("password", raw.password.as_ref()),
            uid,
            gid,
            file_mode: self.mode("file_mode", raw.file_mode.as_deref()),
            folder_mode: self.mode("folder_mode", raw.folder_mode.as_deref()),
            require_manifest: raw.require_manifest.unwrap_or(false),
        };
        Rule {
            name: raw.name.clone(),
            enabled: raw.enabled.unwrap_or(true),
            priority: raw.priority,
            chunk_size: self.size("chunk_size", raw.chunk_size.as_ref()),
            window: self.window(raw.window.as_ref(), tz),
            fingerprint,
            kind: RuleKind::Download(download),
        }
    }
}

/// The uid of a user name (from the system's user database, LDAP included); None when there
/// is no such user.
fn user_id(name: &str) -> std::io::Result<Option<u32>> {
    nix::unistd::User::from_name(name)
        .map(|user| user.map(|u| u.uid.as_raw()))
        .map_err(std::io::Error::from)
}

/// The gid of a group name; None when there is no such group.
fn group_id(name: &str) -> std::io::Result<Option<u32>> {
    nix::unistd::Group::from_name(name)
        .map(|group| group.map(|g| g.gid.as_raw()))
        .map_err(std::io::Error::from)
}
