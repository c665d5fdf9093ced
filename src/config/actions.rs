//! `[[action]]` as the program uses it: the kind's keys checked (and no other kind's), the URL
//! and addresses parsed, durations read, secrets resolved; each problem at its key.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::{ActionKindName, DurationValue, RawAction, SmtpTls, WebhookFormat};
use super::rules::RuleChecker;
use crate::cloud::dto::Secret;

/// The events an action can act on.
pub const EVENT_TYPES: [&str; 5] = [
    "upload.delivered",
    "download.arrived",
    "transfer.failed",
    "rule.failed",
    "rule.recovered",
];

/// A checked action.
#[derive(Debug, Clone)]
pub struct Action {
    pub name: String,
    /// The event types it acts on (all of [`EVENT_TYPES`] unless the file says).
    pub events: Vec<String>,
    /// Only these rules' events; `None`: every event.
    pub rules: Option<Vec<String>>,
    pub timeout: Duration,
    /// `None`: never give up.
    pub give_up_after: Option<Duration>,
    pub max_delay: Duration,
    pub target: ActionTarget,
}

impl Action {
    /// `webhook`, `command` or `email`.
    pub fn kind(&self) -> &'static str {
        match self.target {
            ActionTarget::Webhook { .. } => "webhook",
            ActionTarget::Command { .. } => "command",
            ActionTarget::Email { .. } => "email",
        }
    }

    /// Whether the action acts on an event of `kind` from `rule`.
    pub fn wants(&self, kind: &str, rule: Option<&str>) -> bool {
        self.events.iter().any(|e| e == kind)
            && self
                .rules
                .as_ref()
                .is_none_or(|rules| rule.is_some_and(|r| rules.iter().any(|x| x == r)))
    }
}

#[derive(Debug, Clone)]
pub enum ActionTarget {
    Webhook {
        url: url::Url,
        secret: Option<Secret>,
        format: WebhookFormat,
    },
    Command {
        program: PathBuf,
        args: Vec<String>,
        /// `None`: the agent's data folder.
        working_dir: Option<PathBuf>,
    },
    Email {
        host: String,
        port: u16,
        tls: SmtpTls,
        username: Option<String>,
        password: Option<Secret>,
        /// PEM certificates trusted besides the public roots.
        ca_file: Option<PathBuf>,
        from: String,
        to: Vec<String>,
    },
}

/// The default of `give_up_after`.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

impl RuleChecker<'_, '_> {
    /// Checks one `[[action]]`; `None` when it has errors (all reported).
    pub(super) fn action(&mut self, raw: &RawAction) -> Option<Action> {
        let errors_before = self.at.errors.len();
        let mut events = Vec::new();
        for e in &raw.events {
            if EVENT_TYPES.contains(&e.as_str()) {
                events.push(e.clone());
            } else {
                self.error(
                    "events",
                    format!(
                        "events: {e:?} is not an event; use {}",
                        EVENT_TYPES.join(", ")
                    ),
                );
            }
        }
        if raw.events.is_empty() {
            events = EVENT_TYPES.iter().map(|e| e.to_string()).collect();
        }
        let default_timeout = match raw.kind {
            ActionKindName::Command => Duration::from_secs(600),
            _ => Duration::from_secs(30),
        };
        let timeout = self.duration("timeout", raw.timeout.as_ref(), default_timeout);
        if timeout.is_zero() {
            self.error("timeout", "timeout must be more than 0s");
        }
        let give_up_after = match &raw.give_up_after {
            Some(DurationValue::Text(t)) if t.trim().eq_ignore_ascii_case("never") => None,
            other => Some(self.duration("give_up_after", other.as_ref(), DEFAULT_GIVE_UP_AFTER)),
        };
        let max_delay = self.duration(
            "max_delay",
            raw.max_delay.as_ref(),
            Duration::from_secs(300),
        );
        // Keys of another kind are mistakes (a `url` on a command does nothing): say so.
        let keys: [(&str, bool, ActionKindName); 13] = [
            ("url", raw.url.is_some(), ActionKindName::Webhook),
            ("secret", raw.secret.is_some(), ActionKindName::Webhook),
            ("format", raw.format.is_some(), ActionKindName::Webhook),
            ("program", raw.program.is_some(), ActionKindName::Command),
            ("args", !raw.args.is_empty(), ActionKindName::Command),
            (
                "working_dir",
                raw.working_dir.is_some(),
                ActionKindName::Command,
            ),
            ("smtp_host", raw.smtp_host.is_some(), ActionKindName::Email),
            ("smtp_port", raw.smtp_port.is_some(), ActionKindName::Email),
            ("tls", raw.tls.is_some(), ActionKindName::Email),
            ("username", raw.username.is_some(), ActionKindName::Email),
            ("password", raw.password.is_some(), ActionKindName::Email),
            ("from", raw.from.is_some(), ActionKindName::Email),
            ("ca_file", raw.ca_file.is_some(), ActionKindName::Email),
        ];
        let kind_name = |k: ActionKindName| match k {
            ActionKindName::Webhook => "webhook",
            ActionKindName::Command => "command",
            ActionKindName::Email => "email",
        };
        for (key, set, owner) in keys {
            if set && owner != raw.kind {
                self.error(
                    key,
                    format!(
                        "{key} is for {} actions; action {:?} is a {}",
                        kind_name(owner),
                        raw.name,
                        kind_name(raw.kind)
                    ),
                );
            }
        }
        if !raw.to.is_empty() && raw.kind != ActionKindName::Email {
            self.error(
                "to",
                format!(
                    "to is for email actions; action {:?} is a {}",
                    raw.name,
                    kind_name(raw.kind)
                ),
            );
        }
        let target = match raw.kind {
            ActionKindName::Webhook => self.webhook(raw),
            ActionKindName::Command => self.command(raw),
            ActionKindName::Email => self.email(raw),
        };
        if self.at.errors.len() > errors_before {
            return None;
        }
        Some(Action {
            name: raw.name.clone(),
            events,
            rules: raw.rules.clone(),
            timeout,
            give_up_after,
            max_delay,
            target: target?,
        })
    }

    fn webhook(&mut self, raw: &RawAction) -> Option<ActionTarget> {
        let Some(text) = &raw.url else {
            self.error(
                "name",
                format!("webhook action {:?} needs url = \"https://…\"", raw.name),
            );
            return None;
        };
        let url = match url::Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            Ok(_) => {
                self.error("url", format!("url = {text:?} is not an http(s) URL"));
                None
            }
            Err(e) => {
                self.error("url", format!("url = {text:?} is not a URL ({e})"));
                None
            }
        };
        let secret = self.secret("secret", raw.secret.as_ref());
        Some(ActionTarget::Webhook {
            url: url?,
            secret,
            format: raw.format.unwrap_or_default(),
        })
    }

    fn command(&mut self, raw: &RawAction) -> Option<ActionTarget> {
        let Some(program) = &raw.program else {
            self.error(
                "name",
                format!(
                    "command action {:?} needs program = \"/path/to/script\"",
                    raw.name
                ),
            );
            return None;
        };
        // A bare name is looked up on PATH when run; a path is taken from the file's folder.
        let program = if program.components().count() > 1 {
            self.path(program)
        } else {
            program.clone()
        };
        let working_dir = raw.working_dir.as_ref().map(|d| self.path(d));
        if let Some(dir) = &working_dir
            && !dir.is_dir()
        {
            self.error(
                "working_dir",
                format!(
                    "working_dir {} is not a folder; create it or fix the path",
                    dir.display()
                ),
            );
        }
        Some(ActionTarget::Command {
            program,
            args: raw.args.clone(),
            working_dir,
        })
    }

    fn email(&mut self, raw: &RawAction) -> Option<ActionTarget> {
        let mut missing = |key: &str, example: &str| {
            self.error(
                "name",
                format!("email action {:?} needs {key} = {example}", raw.name),
            );
        };
        if raw.smtp_host.is_none() {
            missing("smtp_host", "\"smtp.example.com\"");
        }
        if raw.from.is_none() {
            missing("from", "\"MASV Agent <agent@example.com>\"");
        }
        if raw.to.is_empty() {
            missing("to", "[\"ops@example.com\"]");
        }
        let mailbox = |text: &str| {
            text.parse::<lettre::message::Mailbox>()
                .map_err(|e| e.to_string())
        };
        if let Some(from) = &raw.from
            && let Err(e) = mailbox(from)
        {
            self.error(
                "from",
                format!("from = {from:?} is not an email address ({e})"),
            );
        }
        for to in &raw.to {
            if let Err(e) = mailbox(to) {
                self.error("to", format!("to: {to:?} is not an email address ({e})"));
            }
        }
        if raw.username.is_some() != raw.password.is_some() {
            self.error(
                "username",
                "username and password go together: set both for SMTP login, or neither",
            );
        }
        let password = self.secret("password", raw.password.as_ref());
        let tls = raw.tls.unwrap_or_default();
        let ca_file = raw.ca_file.as_ref().map(|f| self.path(f));
        if let Some(file) = &ca_file {
            let problem = match std::fs::read(file) {
                Ok(pem) => lettre::transport::smtp::client::Certificate::from_pem(&pem)
                    .err()
                    .map(|e| format!("holds no PEM certificate ({e})")),
                Err(e) => Some(format!("cannot be read ({e})")),
            };
            if let Some(problem) = problem {
                self.error("ca_file", format!("ca_file {} {problem}", file.display()));
            }
        }
        Some(ActionTarget::Email {
            host: raw.smtp_host.clone()?,
            port: raw.smtp_port.unwrap_or(match tls {
                SmtpTls::Starttls => 587,
                SmtpTls::Tls => 465,
                SmtpTls::None => 25,
            }),
            tls,
            username: raw.username.clone(),
            password,
            ca_file,
            from: raw.from.clone()?,
            to: raw.to.clone(),
        })
    }
}
