//! `GET /api/v1/stream`: what changes in the agent, pushed as Server-Sent Events, so that the
//! dashboard (or a script, or the CLI) never polls. One task per listener compares, once a
//! second and at once when a transfer ends, what it last sent with what is now, and sends only
//! the differences:
//!
//! - `transfer`: a transfer's summary (as `GET /downloads/{id}` without files), when it changed;
//! - `removed`: `{"id", "kind"}` of a transfer gone from the store;
//! - `rate`: the newest throughput sample `[at, download, upload, download_limit, upload_limit]`;
//! - `automations`: the whole `GET /automations` answer, when it changed;
//! - `bandwidth`: the whole `GET /bandwidth` answer, when it changed;
//! - `events`: `{"latest": id}` when the latest events or their deliveries changed (fetch
//!   `GET /events` then);
//! - `synced`: `{"transfers": N}` once, after the first round (everything is known then).
//!
//! Only transfers that are running or whose record changed are summarised again, so an open
//! dashboard costs one read of the transfer table a second, whatever the store holds.
//! Also `GET /api/v1/throughput`: the last hour of samples.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use futures_util::stream::{self, StreamExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::metrics::throughput::{Sample, Throughput};
use crate::rules::Automations;
use crate::store::TransferKind;
use crate::transfer::{Engine, TransferError};

/// How often a listener looks for changes.
const TICK: Duration = Duration::from_secs(1);
/// How many of the latest events the `events` signal watches.
const EVENTS_WATCHED: u32 = 50;

/// What the stream reads from.
#[derive(Clone)]
pub struct Sources {
    pub engine: Engine,
    pub automations: Automations,
    pub throughput: Throughput,
    /// Cancelled when the agent stops serving: every stream ends then, or the server's
    /// graceful shutdown would wait for the browsers to go away.
    pub closing: CancellationToken,
}

/// `GET /api/v1/throughput` → `{"interval_seconds": 1, "samples": [[at, download, upload,
/// download_limit, upload_limit], …]}`, oldest first, rates in bytes per second, a limit
/// `null` when there is none.
pub async fn throughput(State(sources): State<Sources>) -> Response {
    let samples: Vec<serde_json::Value> = sources
        .throughput
        .history()
        .iter()
        .map(sample_row)
        .collect();
    Json(json!({ "interval_seconds": 1, "samples": samples })).into_response()
}

fn sample_row(s: &Sample) -> serde_json::Value {
    json!([s.at, s.download, s.upload, s.download_limit, s.upload_limit])
}

/// `GET /api/v1/stream`.
pub async fn stream(
    State(sources): State<Sources>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let watch = Watch {
        ends: sources.engine.subscribe(),
        sources,
        sent: HashMap::new(),
        automations: String::new(),
        bandwidth: String::new(),
        events: String::new(),
        rate_at: None,
        round: 0,
    };
    let events = stream::unfold(watch, |mut watch| async move {
        if watch.round > 0 {
            tokio::select! {
                _ = watch.sources.closing.cancelled() => return None,
                _ = tokio::time::sleep(TICK) => {}
                // A transfer ended: show it now (lagged or closed: a tick does the same).
                _ = watch.ends.recv() => {}
            }
        }
        let events = watch.changes().await;
        watch.round += 1;
        Some((events, watch))
    })
    .flat_map(|events| stream::iter(events.into_iter().map(Ok)));
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// One listener's view: what it was last sent.
struct Watch {
    sources: Sources,
    ends: tokio::sync::broadcast::Receiver<crate::transfer::TransferEvent>,
    /// Per transfer id: its kind, its record's `updated_at` (ms), the summary sent.
    sent: HashMap<String, (TransferKind, i64, String)>,
    automations: String,
    bandwidth: String,
    events: String,
    rate_at: Option<i64>,
    round: u64,
}

impl Watch {
    async fn changes(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        if let Some(sample) = self.sources.throughput.latest()
            && self.rate_at != Some(sample.at)
        {
            self.rate_at = Some(sample.at);
            out.push(event("rate", sample_row(&sample).to_string()));
        }
        let bandwidth = json!(self.sources.engine.bandwidth()).to_string();
        if bandwidth != self.bandwidth {
            out.push(event("bandwidth", bandwidth.clone()));
            self.bandwidth = bandwidth;
        }
        let automations = json!(self.sources.automations.status().await).to_string();
        if automations != self.automations {
            out.push(event("automations", automations.clone()));
            self.automations = automations;
        }
        match self.events_fingerprint().await {
            Ok((fingerprint, latest)) if fingerprint != self.events => {
                self.events = fingerprint;
                out.push(event("events", json!({ "latest": latest }).to_string()));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "the live stream cannot read the events"),
        }
        for kind in [TransferKind::Download, TransferKind::Upload] {
            if let Err(e) = self.transfers(kind, &mut out).await {
                // Said once a second at most, and the next round tries again.
                tracing::warn!(error = %e, "the live stream cannot read the transfers");
            }
        }
        if self.round == 0 {
            out.push(event(
                "synced",
                json!({ "transfers": self.sent.len() }).to_string(),
            ));
        }
        out
    }

    /// The changed summaries of `kind`, and the transfers of `kind` gone.
    async fn transfers(
        &mut self,
        kind: TransferKind,
        out: &mut Vec<Event>,
    ) -> Result<(), TransferError> {
        let mut present = HashSet::new();
        let sent = &self.sent;
        let changed = self
            .sources
            .engine
            .list_where(kind, |t| {
                present.insert(t.id.clone());
                t.state == "transferring"
                    || sent.get(&t.id).map(|(_, at, _)| *at)
                        != Some(t.updated_at.timestamp_millis())
            })
            .await?;
        for (updated, summary) in changed {
            let Some(id) = summary.download_id.clone().or(summary.upload_id.clone()) else {
                continue;
            };
            let text = json!(summary).to_string();
            let same = self.sent.get(&id).is_some_and(|(_, _, s)| *s == text);
            if !same {
                out.push(event("transfer", text.clone()));
            }
            self.sent.insert(id, (kind, updated, text));
        }
        self.sent.retain(|id, (k, _, _)| {
            let keep = *k != kind || present.contains(id);
            if !keep {
                out.push(event(
                    "removed",
                    json!({ "id": id, "kind": kind.as_str() }).to_string(),
                ));
            }
            keep
        });
        Ok(())
    }

    /// What tells a change among the latest events: their ids and their deliveries' states.
    async fn events_fingerprint(&self) -> Result<(String, Option<String>), TransferError> {
        let events = self
            .sources
            .engine
            .store()
            .events(false, EVENTS_WATCHED)
            .await?;
        let mut fingerprint = String::new();
        for e in &events {
            fingerprint.push_str(&e.id);
            for d in &e.deliveries {
                fingerprint.push_str(&format!("/{}:{}:{}", d.action, d.state, d.attempts));
            }
            fingerprint.push(';');
        }
        Ok((fingerprint, events.first().map(|e| e.id.clone())))
    }
}

fn event(name: &str, data: String) -> Event {
    Event::default().event(name).data(data)
}
