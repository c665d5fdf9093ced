//! The agent's counters, bumped where things happen (transfer byte loops, retries, watch
//! folders) and served with a few gauges read at scrape time as Prometheus text at
//! `GET /metrics`. One [`Metrics`] per engine, so several agents can run in one process.
//! `throughput`: the last hour of upload and download rates, for the dashboard's chart.

pub mod throughput;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::cloud::CloudError;

/// What went wrong, for `masv_agent_errors_total{kind}`: the [`CloudError`] variants, failures
/// of the local disk (or of reading a file to send), and names refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Auth,
    NotFound,
    Expired,
    Quarantined,
    Rejected,
    Transient,
    Protocol,
    InvalidUrl,
    Disk,
    /// A name that would leave the destination (`..`, a drive on Windows, NUL), or a symlink
    /// planted in it: the file is refused for good.
    Refused,
}

impl ErrorKind {
    const ALL: [ErrorKind; 10] = [
        ErrorKind::Auth,
        ErrorKind::NotFound,
        ErrorKind::Expired,
        ErrorKind::Quarantined,
        ErrorKind::Rejected,
        ErrorKind::Transient,
        ErrorKind::Protocol,
        ErrorKind::InvalidUrl,
        ErrorKind::Disk,
        ErrorKind::Refused,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Auth => "auth",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Expired => "expired",
            ErrorKind::Quarantined => "quarantined",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Transient => "transient",
            ErrorKind::Protocol => "protocol",
            ErrorKind::InvalidUrl => "invalid_url",
            ErrorKind::Disk => "disk",
            ErrorKind::Refused => "refused",
        }
    }

    fn of(error: &CloudError) -> ErrorKind {
        match error {
            CloudError::Auth { .. } => ErrorKind::Auth,
            CloudError::NotFound { .. } => ErrorKind::NotFound,
            CloudError::Expired { .. } => ErrorKind::Expired,
            CloudError::Quarantined { .. } => ErrorKind::Quarantined,
            CloudError::Rejected { .. } => ErrorKind::Rejected,
            CloudError::Transient { .. } => ErrorKind::Transient,
            CloudError::Protocol { .. } => ErrorKind::Protocol,
            CloudError::InvalidUrl { .. } => ErrorKind::InvalidUrl,
        }
    }
}

/// Monotonic counters (they only go up while the agent runs; Prometheus handles restarts).
#[derive(Debug, Default)]
pub struct Metrics {
    bytes_downloaded: AtomicU64,
    bytes_uploaded: AtomicU64,
    retries: AtomicU64,
    errors: [AtomicU64; ErrorKind::ALL.len()],
    watch_events: AtomicU64,
}

/// What is read at scrape time rather than counted.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    /// `(kind, state, count)`: transfers in the store.
    pub transfers: Vec<(String, String, u64)>,
    /// Requests waiting for a connection of the shared budget.
    pub queue_depth: u64,
}

impl Metrics {
    /// Bytes received from storage by downloads (every byte that arrived, kept or not).
    pub fn downloaded(&self, bytes: u64) {
        self.bytes_downloaded.fetch_add(bytes, Relaxed);
    }

    /// Bytes of parts sent to storage by uploads (every byte sent, accepted or not: a part sent
    /// again counts again, as a range fetched again does for downloads).
    pub fn uploaded(&self, bytes: u64) {
        self.bytes_uploaded.fetch_add(bytes, Relaxed);
    }

    /// Bytes downloaded and uploaded so far: `(downloaded, uploaded)`.
    pub fn byte_totals(&self) -> (u64, u64) {
        (
            self.bytes_downloaded.load(Relaxed),
            self.bytes_uploaded.load(Relaxed),
        )
    }

    /// A request about to be sent again after a transient failure.
    pub fn retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    /// An error a transfer met (retried or not).
    pub fn error(&self, kind: ErrorKind) {
        let i = ErrorKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("every kind is in ALL");
        self.errors[i].fetch_add(1, Relaxed);
    }

    /// [`Metrics::error`] for an answer of the cloud or its storage.
    /// Counts a local failure: refused names and symlinks as `refused`, anything else as `disk`.
    pub fn files_error(&self, error: &crate::files::FilesError) {
        use crate::files::FilesError;
        self.error(match error {
            FilesError::Refused { .. } | FilesError::Symlink { .. } => ErrorKind::Refused,
            _ => ErrorKind::Disk,
        });
    }

    pub fn cloud_error(&self, error: &CloudError) {
        self.error(ErrorKind::of(error));
    }

    /// A file a watch folder reported settled.
    pub fn watch_event(&self) {
        self.watch_events.fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4) of the counters and `gauges`.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let plain = |v: &AtomicU64| vec![(String::new(), v.load(Relaxed))];
        family(
            "masv_agent_bytes_downloaded_total",
            "counter",
            "Bytes received from storage by downloads (a range fetched again counts again).",
            &plain(&self.bytes_downloaded),
        );
        family(
            "masv_agent_bytes_uploaded_total",
            "counter",
            "Bytes of parts sent to storage by uploads (a part sent again counts again).",
            &plain(&self.bytes_uploaded),
        );
        family(
            "masv_agent_retries_total",
            "counter",
            "Requests sent again after a transient failure.",
            &plain(&self.retries),
        );
        let errors: Vec<_> = ErrorKind::ALL
            .iter()
            .zip(&self.errors)
            .map(|(k, v)| (format!("{{kind=\"{}\"}}", k.label()), v.load(Relaxed)))
            .collect();
        family(
            "masv_agent_errors_total",
            "counter",
            "Errors met by transfers (retried or not), by kind.",
            &errors,
        );
        family(
            "masv_agent_watch_events_total",
            "counter",
            "Files reported settled by watch folders.",
            &plain(&self.watch_events),
        );
        let transfers: Vec<_> = gauges
            .transfers
            .iter()
            .map(|(kind, state, n)| (format!("{{kind=\"{kind}\",state=\"{state}\"}}"), *n))
            .collect();
        family(
            "masv_agent_transfers",
            "gauge",
            "Transfers known to the agent, by kind and state.",
            &transfers,
        );
        family(
            "masv_agent_queue_depth",
            "gauge",
            "Requests waiting for a connection of the shared budget (max_connections).",
            &[(String::new(), gauges.queue_depth)],
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_has_help_type_and_one_sample_per_label_set() {
        let m = Metrics::default();
        m.downloaded(10);
        m.downloaded(5);
        m.retry();
        m.cloud_error(&CloudError::Transient {
            status: Some(500),
            message: "x".into(),
            retry_after: None,
        });
        m.error(ErrorKind::Disk);
        let text = m.render(&Gauges {
            transfers: vec![("download".into(), "complete".into(), 2)],
            queue_depth: 3,
        });
        for line in [
            "# TYPE masv_agent_bytes_downloaded_total counter",
            "masv_agent_bytes_downloaded_total 15",
            "masv_agent_bytes_uploaded_total 0",
            "masv_agent_retries_total 1",
            "masv_agent_errors_total{kind=\"transient\"} 1",
            "masv_agent_errors_total{kind=\"disk\"} 1",
            "masv_agent_errors_total{kind=\"auth\"} 0",
            "masv_agent_transfers{kind=\"download\",state=\"complete\"} 2",
            "# TYPE masv_agent_queue_depth gauge",
            "masv_agent_queue_depth 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }
}

/// One rule's health, for `/metrics`.
#[derive(Debug, Clone)]
pub struct RuleSample {
    pub name: String,
    /// Not in error.
    pub up: bool,
    /// Unix seconds of the last completed transfer.
    pub last_success: Option<f64>,
    pub failures: u64,
}

/// The per-rule series: `masv_agent_rule_up`, `masv_agent_rule_failures_total` and
/// `masv_agent_rule_last_success_timestamp_seconds` (rules that never succeeded have none).
pub fn render_rules(rules: &[RuleSample]) -> String {
    let mut out = String::new();
    let label = |name: &str| {
        name.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let _ = writeln!(
        out,
        "# HELP masv_agent_rule_up 1 while the automation runs, 0 while it is in error.\n# TYPE masv_agent_rule_up gauge"
    );
    for r in rules {
        let _ = writeln!(
            out,
            "masv_agent_rule_up{{rule=\"{}\"}} {}",
            label(&r.name),
            u8::from(r.up)
        );
    }
    let _ = writeln!(
        out,
        "# HELP masv_agent_rule_failures_total Transfers of the automation that failed, and times it stopped on an error.\n# TYPE masv_agent_rule_failures_total counter"
    );
    for r in rules {
        let _ = writeln!(
            out,
            "masv_agent_rule_failures_total{{rule=\"{}\"}} {}",
            label(&r.name),
            r.failures
        );
    }
    let _ = writeln!(
        out,
        "# HELP masv_agent_rule_last_success_timestamp_seconds When a transfer of the automation last completed.\n# TYPE masv_agent_rule_last_success_timestamp_seconds gauge"
    );
    for r in rules {
        if let Some(at) = r.last_success {
            let _ = writeln!(
                out,
                "masv_agent_rule_last_success_timestamp_seconds{{rule=\"{}\"}} {at:.3}",
                label(&r.name)
            );
        }
    }
    out
}

/// The action series, from the deliveries in the store (`(kind, state, deliveries,
/// attempts)`): `masv_agent_action_deliveries_total{kind,outcome}` (delivered, failed: given
/// up), `masv_agent_action_deliveries_pending{kind}` and `masv_agent_action_attempts_total{kind}`.
/// Every kind is shown, zeros included; the counts live in the database, so they outlive a
/// restart.
pub fn render_actions(counts: &[(String, String, u64, u64)]) -> String {
    const KINDS: [&str; 3] = ["webhook", "command", "email"];
    let count = |kind: &str, state: &str| {
        counts
            .iter()
            .filter(|(k, s, _, _)| k == kind && s == state)
            .map(|(_, _, n, _)| n)
            .sum::<u64>()
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP masv_agent_action_deliveries_total Events handed to an action, by action kind and outcome (failed: given up).\n# TYPE masv_agent_action_deliveries_total counter"
    );
    for kind in KINDS {
        for outcome in ["delivered", "failed"] {
            let _ = writeln!(
                out,
                "masv_agent_action_deliveries_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {}",
                count(kind, outcome)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP masv_agent_action_deliveries_pending Deliveries not done yet (due, or waiting to be tried again), by action kind.\n# TYPE masv_agent_action_deliveries_pending gauge"
    );
    for kind in KINDS {
        let _ = writeln!(
            out,
            "masv_agent_action_deliveries_pending{{kind=\"{kind}\"}} {}",
            count(kind, "pending")
        );
    }
    let _ = writeln!(
        out,
        "# HELP masv_agent_action_attempts_total Attempts at deliveries (retries included), by action kind.\n# TYPE masv_agent_action_attempts_total counter"
    );
    for kind in KINDS {
        let attempts: u64 = counts
            .iter()
            .filter(|(k, _, _, _)| k == kind)
            .map(|(_, _, _, a)| a)
            .sum();
        let _ = writeln!(
            out,
            "masv_agent_action_attempts_total{{kind=\"{kind}\"}} {attempts}"
        );
    }
    out
}
