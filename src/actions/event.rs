//! The events and their JSON payload: one stable shape for every event type, versioned by
//! `schema_version`, described by `schema/masv-agent-event.schema.json`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cloud::dto::format_time;
use crate::config::human_size;
use crate::store::NewEvent;

/// The version of [`Payload`]: raised when a field changes meaning or goes away (a new field
/// does not raise it).
pub const SCHEMA_VERSION: u32 = 1;

pub const UPLOAD_DELIVERED: &str = "upload.delivered";
pub const DOWNLOAD_ARRIVED: &str = "download.arrived";
pub const TRANSFER_FAILED: &str = "transfer.failed";
pub const RULE_FAILED: &str = "rule.failed";
pub const RULE_RECOVERED: &str = "rule.recovered";

/// What a webhook posts, a command reads on stdin, and an email summarises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Payload {
    /// The version of this shape (now 1).
    pub schema_version: u32,
    /// The event's id (a ULID): the same on every delivery of it, retries included, so that a
    /// receiver can drop a duplicate.
    pub id: String,
    /// `upload.delivered`, `download.arrived`, `transfer.failed`, `rule.failed` or
    /// `rule.recovered`.
    pub event: String,
    /// When it happened (RFC 3339, UTC).
    pub occurred_at: String,
    /// The automation it concerns; `null` for a transfer started by hand.
    pub rule: Option<String>,
    /// The transfer it concerns; `null` for rule events.
    pub transfer: Option<TransferInfo>,
    /// The package; `null` for rule events (and a transfer that failed before it had one).
    pub package: Option<PackageInfo>,
    /// The share link of a link upload.
    pub link: Option<String>,
    /// The files: where they are on this machine, their sizes and states.
    pub files: Vec<FileInfo>,
    pub counts: Counts,
    pub bytes: ByteCounts,
    /// Why it failed (`transfer.failed`, `rule.failed`), or what is missing from a delivery that
    /// left some files out.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TransferInfo {
    pub id: String,
    /// `upload` or `download`.
    pub kind: String,
    /// The transfer's state: `complete` or `error`.
    pub state: String,
    pub created_at: String,
    pub ended_at: String,
    /// From its creation to its end, in seconds (waits and retries included).
    pub duration_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PackageInfo {
    pub id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FileInfo {
    /// The file on this machine (the source of an upload, the arrived file of a download).
    pub local_path: String,
    /// Its folder inside the package.
    pub package_path: String,
    pub name: String,
    pub size: u64,
    /// `complete`, `skipped` or `error`.
    pub state: String,
    /// The hash of its bytes, computed as they moved (`[server] hash`): `{"xxh64": "…"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Counts {
    /// Files of the transfer (skipped ones not counted).
    pub files: u64,
    pub files_done: u64,
    pub files_failed: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ByteCounts {
    pub total: u64,
    pub done: u64,
}

impl Payload {
    /// A new event of `kind` at `at`, with a fresh id and nothing else.
    pub fn new(kind: &str, at: DateTime<Utc>) -> Payload {
        Payload {
            schema_version: SCHEMA_VERSION,
            id: ulid::Ulid::new().to_string(),
            event: kind.to_owned(),
            occurred_at: format_time(&at),
            rule: None,
            transfer: None,
            package: None,
            link: None,
            files: Vec::new(),
            counts: Counts::default(),
            bytes: ByteCounts::default(),
            error: None,
        }
    }

    /// A rule's event (`rule.failed` with its error, `rule.recovered`).
    pub fn rule(kind: &str, rule: &str, error: Option<String>) -> Payload {
        Payload {
            rule: Some(rule.to_owned()),
            error,
            ..Payload::new(kind, Utc::now())
        }
    }

    /// The row the store records.
    pub fn into_event(self) -> NewEvent {
        let created_at = DateTime::parse_from_rfc3339(&self.occurred_at)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|_| Utc::now());
        NewEvent {
            id: self.id.clone(),
            kind: self.event.clone(),
            transfer_id: self.transfer.as_ref().map(|t| t.id.clone()),
            rule: self.rule.clone(),
            payload: serde_json::to_string(&self).expect("a payload serializes"),
            created_at,
        }
    }

    /// One line saying what happened, for chat webhooks and email subjects.
    pub fn headline(&self) -> String {
        let package = self
            .package
            .as_ref()
            .and_then(|p| p.name.clone().or_else(|| p.id.clone()))
            .map(|n| format!("package {n:?}"));
        let rule = self
            .rule
            .as_ref()
            .map(|r| format!(" (rule {r})"))
            .unwrap_or_default();
        let what = package.unwrap_or_else(|| {
            self.transfer
                .as_ref()
                .map(|t| format!("{} {}", t.kind, t.id))
                .unwrap_or_default()
        });
        let size = human_size(self.bytes.total);
        match self.event.as_str() {
            UPLOAD_DELIVERED => format!(
                "Delivered {what}{rule}: {} files, {size}",
                self.counts.files_done
            ),
            DOWNLOAD_ARRIVED => format!(
                "Arrived {what}{rule}: {} files, {size}",
                self.counts.files_done
            ),
            TRANSFER_FAILED => format!(
                "Failed {what}{rule}: {}",
                self.error.as_deref().unwrap_or("see the agent's log")
            ),
            RULE_FAILED => format!(
                "Automation {} stopped on an error: {}",
                self.rule.as_deref().unwrap_or_default(),
                self.error.as_deref().unwrap_or("see the agent's log")
            ),
            RULE_RECOVERED => format!(
                "Automation {} works again",
                self.rule.as_deref().unwrap_or_default()
            ),
            other => format!("{other}{rule}"),
        }
    }

    /// A plain-text summary: the headline, then the facts, one a line.
    pub fn summary(&self) -> String {
        let mut text = self.headline();
        text.push_str("\n\n");
        let mut line = |k: &str, v: String| text.push_str(&format!("{k:<10} {v}\n"));
        line("Event", format!("{} ({})", self.event, self.id));
        line("At", self.occurred_at.clone());
        if let Some(rule) = &self.rule {
            line("Rule", rule.clone());
        }
        if let Some(t) = &self.transfer {
            line("Transfer", format!("{} {} ({})", t.kind, t.id, t.state));
            line("Duration", format!("{:.1}s", t.duration_seconds));
        }
        if let Some(p) = &self.package {
            line(
                "Package",
                format!(
                    "{} ({})",
                    p.name.as_deref().unwrap_or("-"),
                    p.id.as_deref().unwrap_or("-")
                ),
            );
        }
        if let Some(link) = &self.link {
            line("Link", link.clone());
        }
        if self.transfer.is_some() {
            line(
                "Files",
                format!(
                    "{} of {} ({} failed)",
                    self.counts.files_done, self.counts.files, self.counts.files_failed
                ),
            );
            line(
                "Bytes",
                format!(
                    "{} of {}",
                    human_size(self.bytes.done),
                    human_size(self.bytes.total)
                ),
            );
        }
        if let Some(e) = &self.error {
            line("Error", e.clone());
        }
        if !self.files.is_empty() {
            text.push('\n');
            for f in self.files.iter().take(100) {
                text.push_str(&format!(
                    "  {} ({}, {})\n",
                    f.local_path,
                    human_size(f.size),
                    f.state
                ));
            }
            if self.files.len() > 100 {
                text.push_str(&format!("  … and {} more\n", self.files.len() - 100));
            }
        }
        text
    }
}

/// The JSON Schema of [`Payload`], as `schema/masv-agent-event.schema.json` holds it.
pub fn schema() -> String {
    let schema = schemars::schema_for!(Payload);
    serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_event_schema_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("schema/masv-agent-event.schema.json");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == schema(),
            "schema/masv-agent-event.schema.json is out of date: run `cargo run -- config schema --event > schema/masv-agent-event.schema.json`"
        );
    }

    #[test]
    fn a_payload_names_its_version_and_reads_back() {
        let mut p = Payload::rule(RULE_FAILED, "outbox", Some("folder missing".into()));
        p.bytes.total = 3 * 1024 * 1024;
        let event = p.clone().into_event();
        assert_eq!(event.kind, "rule.failed");
        assert_eq!(event.rule.as_deref(), Some("outbox"));
        let json: serde_json::Value = serde_json::from_str(&event.payload).unwrap();
        assert_eq!(json["schema_version"], 1);
        assert_eq!(json["id"], event.id.as_str());
        assert_eq!(serde_json::from_value::<Payload>(json).unwrap(), p);
        assert_eq!(
            p.headline(),
            "Automation outbox stopped on an error: folder missing"
        );
        assert_eq!(human_size(3 * 1024 * 1024), "3.0 MiB");
    }
}
