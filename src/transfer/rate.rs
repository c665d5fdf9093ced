//! Bandwidth: the global upload and download rate limits, shared by every transfer and every
//! connection (one token bucket per direction that every byte loop takes from), the weekly
//! schedule that changes them at its boundaries without touching the transfers, and FIFO mode
//! (at most N uploads and M downloads active; the others wait queued by priority, then age).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use super::Inner;
use crate::config::{BandwidthSettings, Limits, RawBandwidth};
use crate::store::TransferKind;

/// The download hook: every buffer received, before it is written.
pub(super) async fn take_download(inner: &Inner, bytes: usize, cancel: &CancellationToken) {
    inner.bandwidth.download.take(bytes, cancel).await;
}

/// The upload hook: a part's body, every buffer taken before it is sent.
pub(super) fn throttle_upload<E: Send + 'static>(
    inner: &Inner,
    body: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
    cancel: &CancellationToken,
) -> impl Stream<Item = Result<Bytes, E>> + Send + 'static {
    inner.bandwidth.upload.throttle(body, cancel.clone())
}

/// What a bucket may hold when nobody takes: a tenth of a second of its rate (at least
/// [`MIN_BURST`]), so a pause in demand does not turn into a burst far above the limit.
const BURST: f64 = 0.1;
const MIN_BURST: f64 = 64.0 * 1024.0;
/// Debts shorter than this are carried to the next take instead of slept (timer resolution).
const MIN_SLEEP: Duration = Duration::from_millis(2);
/// The schedule is looked at again at least this often (clock changes, suspended machines).
const RECHECK: Duration = Duration::from_secs(60);

/// A token bucket of one direction. Takers that overdraw it sleep off their debt, in the order
/// they came: with each connection taking one buffer at a time, connections take turns.
struct Bucket {
    /// Bytes per second; 0 is no limit (the fast path: one atomic load, nothing else).
    limit: AtomicU64,
    tokens: Mutex<Tokens>,
    /// Wakes sleeping takers when the limit changes.
    changed: Notify,
}

struct Tokens {
    /// Bytes that may pass now; below zero, the debt takers sleep off.
    balance: f64,
    at: Instant,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            limit: AtomicU64::new(0),
            tokens: Mutex::new(Tokens {
                balance: 0.0,
                at: Instant::now(),
            }),
            changed: Notify::new(),
        }
    }

    /// Takes `bytes` from the bucket, sleeping as long as the limit asks; returns at once when
    /// there is no limit, when the limit changes (the new one counts from then on), or when
    /// `cancel` fires.
    async fn take(&self, bytes: usize, cancel: &CancellationToken) {
        if self.limit.load(Ordering::Relaxed) == 0 {
            return;
        }
        let (wait, changed) = {
            let mut t = self.tokens.lock().expect("bucket lock is never poisoned");
            // Read again under the lock, which `set` holds: either this take sees the new limit,
            // or its `changed` below exists before `set` notifies.
            let rate = match self.limit.load(Ordering::Relaxed) {
                0 => return,
                limit => limit as f64,
            };
            let now = Instant::now();
            let burst = (rate * BURST).max(MIN_BURST);
            t.balance = (t.balance + now.duration_since(t.at).as_secs_f64() * rate).min(burst);
            t.at = now;
            t.balance -= bytes as f64;
            if t.balance >= 0.0 {
                return;
            }
            // Created under the lock: a change made after this point wakes it.
            (
                Duration::from_secs_f64(-t.balance / rate),
                self.changed.notified(),
            )
        };
        if wait < MIN_SLEEP {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = changed => {}
            _ = cancel.cancelled() => {}
        }
    }

    /// `stream` (an upload's body), each buffer taken from the bucket before it goes out.
    fn throttle<E: Send + 'static>(
        self: &Arc<Self>,
        stream: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
        cancel: CancellationToken,
    ) -> impl Stream<Item = Result<Bytes, E>> + Send + 'static {
        let bucket = self.clone();
        stream.then(move |item| {
            let (bucket, cancel) = (bucket.clone(), cancel.clone());
            async move {
                if let Ok(bytes) = &item {
                    bucket.take(bytes.len(), &cancel).await;
                }
                item
            }
        })
    }

    /// Bytes per second, `None` for no limit.
    fn limit(&self) -> Option<u64> {
        Some(self.limit.load(Ordering::Relaxed)).filter(|l| *l > 0)
    }

    fn set(&self, limit: Option<u64>) {
        let new = limit.unwrap_or(0);
        let mut t = self.tokens.lock().expect("bucket lock is never poisoned");
        if self.limit.swap(new, Ordering::Relaxed) != new {
            // A fresh start at the new rate: no debt owed to the old one, no burst either.
            t.balance = 0.0;
            t.at = Instant::now();
            self.changed.notify_waiters();
        }
    }
}

/// FIFO mode of one direction: at most `cap` transfers past the gate; the others wait in order
/// of priority (highest first), then creation, then id.
struct Gate {
    inner: Mutex<GateInner>,
}

type QueueKey = (std::cmp::Reverse<i64>, DateTime<Utc>, String);

struct GateInner {
    cap: Option<usize>,
    active: usize,
    queue: BTreeMap<QueueKey, oneshot::Sender<Slot>>,
}

/// A transfer's place past the gate; dropping it lets the next one in.
pub(super) struct Slot {
    gate: Option<Arc<Gate>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            let mut inner = gate.inner.lock().expect("gate lock is never poisoned");
            inner.active -= 1;
            Gate::fill(&gate, &mut inner);
        }
    }
}

/// A transfer's place at its gate, taken when its job is spawned (so transfers spawned one after
/// the other line up in that order), awaited when the job starts.
pub(super) enum Ticket {
    In(Slot),
    Queued {
        wait: oneshot::Receiver<Slot>,
        queued: Queued,
    },
}

/// Takes a transfer out of the queue when it stops waiting (paused, deleted, shut down).
pub(super) struct Queued {
    gate: Arc<Gate>,
    key: Option<QueueKey>,
}

impl Drop for Queued {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut inner = self.gate.inner.lock().expect("gate lock is never poisoned");
            inner.queue.remove(&key);
        }
    }
}

impl Ticket {
    /// Waits for the place; `None` when `cancel` fires first.
    pub(super) async fn admitted(self, cancel: &CancellationToken) -> Option<Slot> {
        let (wait, mut queued) = match self {
            Ticket::In(slot) => return Some(slot),
            Ticket::Queued { wait, queued } => (wait, queued),
        };
        let slot = tokio::select! {
            slot = wait => slot.ok(),
            _ = cancel.cancelled() => None,
        };
        if slot.is_some() {
            // Taken off the queue by `fill`: nothing to remove.
            queued.key = None;
        }
        slot
    }
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate {
            inner: Mutex::new(GateInner {
                cap: None,
                active: 0,
                queue: BTreeMap::new(),
            }),
        })
    }

    /// Takes a place: in at once when the cap allows and nobody waits, else in the queue.
    fn enqueue(self: &Arc<Self>, id: &str, priority: i64, created: DateTime<Utc>) -> Ticket {
        let key = (std::cmp::Reverse(priority), created, id.to_owned());
        let mut inner = self.inner.lock().expect("gate lock is never poisoned");
        if inner.queue.is_empty() && inner.cap.is_none_or(|cap| inner.active < cap) {
            inner.active += 1;
            return Ticket::In(Slot {
                gate: Some(self.clone()),
            });
        }
        let (wake, wait) = oneshot::channel();
        inner.queue.insert(key.clone(), wake);
        Gate::fill(self, &mut inner);
        tracing::info!(transfer_id = %id, "queued: FIFO mode caps the transfers active at once");
        Ticket::Queued {
            wait,
            queued: Queued {
                gate: self.clone(),
                key: Some(key),
            },
        }
    }

    /// Lets waiters in while the cap allows.
    fn fill(gate: &Arc<Gate>, inner: &mut GateInner) {
        while inner.cap.is_none_or(|cap| inner.active < cap) {
            let Some((_, wake)) = inner.queue.pop_first() else {
                return;
            };
            inner.active += 1;
            let slot = Slot {
                gate: Some(gate.clone()),
            };
            if let Err(mut slot) = wake.send(slot) {
                // That waiter is gone: its place goes to the next one.
                slot.gate = None;
                inner.active -= 1;
            }
        }
    }

    fn set_cap(self: &Arc<Self>, cap: Option<usize>) {
        let mut inner = self.inner.lock().expect("gate lock is never poisoned");
        inner.cap = cap;
        Gate::fill(self, &mut inner);
    }

    /// 1-based place of `id` in the queue.
    fn position(&self, id: &str) -> Option<usize> {
        let inner = self.inner.lock().expect("gate lock is never poisoned");
        inner.queue.keys().position(|k| k.2 == id).map(|p| p + 1)
    }

    fn counts(&self) -> Flow {
        let inner = self.inner.lock().expect("gate lock is never poisoned");
        Flow {
            active: inner.active,
            queued: inner.queue.len(),
        }
    }
}

/// The engine's bandwidth: both buckets, both gates, the settings they follow.
pub(super) struct Bandwidth {
    upload: Arc<Bucket>,
    download: Arc<Bucket>,
    uploads: Arc<Gate>,
    downloads: Arc<Gate>,
    settings: Mutex<BandwidthSettings>,
    /// Wakes the schedule follower when the settings change.
    replaced: Notify,
    stop: CancellationToken,
}

/// `GET /api/v1/bandwidth`.
#[derive(Debug, Clone, Serialize)]
pub struct BandwidthView {
    pub now: InForce,
    /// As set in the configuration file or through the API.
    pub settings: RawBandwidth,
    pub uploads: Flow,
    pub downloads: Flow,
}

/// The limits in force now, in bytes per second (`null`: no limit).
#[derive(Debug, Clone, Serialize)]
pub struct InForce {
    pub upload: Option<u64>,
    pub download: Option<u64>,
    /// The schedule rule they come from (1-based), or `null` for the default limits.
    pub rule: Option<usize>,
    /// When the schedule next starts or ends a rule (within eight days).
    pub next_change: Option<String>,
}

/// Transfers past the FIFO gate, and waiting at it.
#[derive(Debug, Clone, Serialize)]
pub struct Flow {
    pub active: usize,
    pub queued: usize,
}

impl Bandwidth {
    /// Applies `settings` now and follows their schedule until [`Bandwidth::stop`].
    pub(super) fn start(settings: BandwidthSettings) -> Arc<Bandwidth> {
        let bandwidth = Arc::new(Bandwidth {
            upload: Arc::new(Bucket::new()),
            download: Arc::new(Bucket::new()),
            uploads: Gate::new(),
            downloads: Gate::new(),
            settings: Mutex::new(BandwidthSettings::default()),
            replaced: Notify::new(),
            stop: CancellationToken::new(),
        });
        bandwidth.replace(settings);
        let follower = bandwidth.clone();
        tokio::spawn(async move { follower.follow().await });
        bandwidth
    }

    pub(super) fn stop(&self) {
        self.stop.cancel();
    }

    /// New settings, in force at once: limits and caps change under running transfers.
    pub(super) fn replace(&self, settings: BandwidthSettings) {
        {
            let mut current = self
                .settings
                .lock()
                .expect("settings lock is never poisoned");
            self.uploads.set_cap(settings.max_active_uploads());
            self.downloads.set_cap(settings.max_active_downloads());
            *current = settings;
        }
        self.apply(Utc::now());
        self.replaced.notify_waiters();
    }

    pub(super) fn settings(&self) -> BandwidthSettings {
        self.settings
            .lock()
            .expect("settings lock is never poisoned")
            .clone()
    }

    /// Sets the buckets to the limits in force at `now`; returns the next boundary.
    fn apply(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let settings = self
            .settings
            .lock()
            .expect("settings lock is never poisoned");
        let (limits, rule) = settings.limits_at(now);
        if limits.upload != self.upload.limit() || limits.download != self.download.limit() {
            tracing::info!(
                upload = ?limits.upload,
                download = ?limits.download,
                rule = ?rule.map(|r| r + 1),
                "bandwidth limits (bytes per second) in force"
            );
        }
        self.upload.set(limits.upload);
        self.download.set(limits.download);
        settings.next_change(now)
    }

    /// Changes the limits at the schedule's boundaries.
    async fn follow(&self) {
        loop {
            let now = Utc::now();
            let changed = self.replaced.notified();
            let wait = self
                .apply(now)
                .and_then(|next| (next - now).to_std().ok())
                // Woken a little after the boundary, the new minute is surely in force.
                .map_or(RECHECK, |d| (d + Duration::from_millis(20)).min(RECHECK));
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = changed => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn gate(&self, kind: TransferKind) -> &Arc<Gate> {
        match kind {
            TransferKind::Upload => &self.uploads,
            TransferKind::Download => &self.downloads,
        }
    }

    /// A place at the FIFO gate of `kind` (in at once without a cap), to await with
    /// [`Ticket::admitted`].
    pub(super) fn enqueue(
        &self,
        kind: TransferKind,
        id: &str,
        priority: i64,
        created: DateTime<Utc>,
    ) -> Ticket {
        self.gate(kind).enqueue(id, priority, created)
    }

    /// The 1-based place of a transfer waiting at its gate.
    pub(super) fn queue_position(&self, kind: TransferKind, id: &str) -> Option<usize> {
        self.gate(kind).position(id)
    }

    pub(super) fn view(&self) -> BandwidthView {
        let now = Utc::now();
        let settings = self.settings();
        let (Limits { upload, download }, rule) = settings.limits_at(now);
        BandwidthView {
            now: InForce {
                upload,
                download,
                rule: rule.map(|r| r + 1),
                next_change: settings
                    .next_change(now)
                    .map(|t| crate::cloud::dto::format_time(&t)),
            },
            settings: settings.raw().clone(),
            uploads: self.uploads.counts(),
            downloads: self.downloads.counts(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_limited_bucket_paces_its_takers_and_an_unlimited_one_does_not() {
        let bucket = Bucket::new();
        let cancel = CancellationToken::new();
        let started = Instant::now();
        for _ in 0..64 {
            bucket.take(1 << 20, &cancel).await;
        }
        assert!(started.elapsed() < Duration::from_millis(50), "no limit");

        bucket.set(Some(4 << 20));
        let started = Instant::now();
        // 2 MiB at 4 MiB/s from an empty bucket: half a second, whatever the buffer sizes.
        for _ in 0..32 {
            bucket.take(64 << 10, &cancel).await;
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_millis(900),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_new_limit_wakes_the_sleepers_and_cancelling_stops_a_wait() {
        let bucket = Arc::new(Bucket::new());
        bucket.set(Some(1024));
        let cancel = CancellationToken::new();
        let sleeper = {
            let (bucket, cancel) = (bucket.clone(), cancel.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                // 1 MiB at 1 KiB/s: about 17 minutes, unless the limit changes.
                bucket.take(1 << 20, &cancel).await;
                started.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        bucket.set(None);
        let slept = tokio::time::timeout(Duration::from_secs(2), sleeper)
            .await
            .expect("the sleeper woke")
            .unwrap();
        assert!(slept < Duration::from_secs(1), "{slept:?}");

        bucket.set(Some(1024));
        let waiting = {
            let (bucket, cancel) = (bucket.clone(), cancel.clone());
            tokio::spawn(async move { bucket.take(1 << 20, &cancel).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("cancelling ends the wait")
            .unwrap();
    }

    #[tokio::test]
    async fn crossing_a_schedule_boundary_changes_the_buckets_under_their_takers() {
        let raw: RawBandwidth = serde_json::from_value(serde_json::json!({
            "download": "4MiB",
            "timezone": "UTC",
            "schedule": [{"days": ["weekdays"], "start": "09:00", "end": "18:00", "upload": "1MiB"}],
        }))
        .unwrap();
        let bandwidth = Bandwidth::start(BandwidthSettings::check(raw).unwrap());
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let next = bandwidth.apply(at("2026-11-23T17:59:00Z"));
        assert_eq!(
            bandwidth.upload.limit(),
            Some(1 << 20),
            "monday, office hours"
        );
        assert_eq!(
            bandwidth.download.limit(),
            Some(4 << 20),
            "the default download"
        );
        assert_eq!(next, Some(at("2026-11-23T18:00:00Z")));
        let next = bandwidth.apply(at("2026-11-23T18:00:00Z"));
        assert_eq!(bandwidth.upload.limit(), None, "evening: no upload limit");
        assert_eq!(bandwidth.download.limit(), Some(4 << 20));
        assert_eq!(next, Some(at("2026-11-24T09:00:00Z")));
        bandwidth.stop();
    }

    #[tokio::test]
    async fn the_gate_lets_in_by_priority_then_age_and_a_leaver_frees_its_place() {
        let gate = Gate::new();
        gate.set_cap(Some(1));
        let cancel = CancellationToken::new();
        let t0 = Utc::now();
        let first = gate
            .enqueue("first", 0, t0)
            .admitted(&cancel)
            .await
            .unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (id, priority, age) in [("old", 0, 1), ("young", 0, 2), ("urgent", 5, 3)] {
            let (gate, cancel, order) = (gate.clone(), cancel.clone(), order.clone());
            let created = t0 + chrono::Duration::seconds(age);
            tasks.push(tokio::spawn(async move {
                let ticket = gate.enqueue(id, priority, created);
                let _slot = ticket.admitted(&cancel).await.unwrap();
                order.lock().unwrap().push(id);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(gate.position("urgent"), Some(1));
        assert_eq!(gate.position("old"), Some(2));
        assert_eq!(gate.position("young"), Some(3));
        // One that gives up (paused while queued) leaves no trace.
        let quitter = CancellationToken::new();
        let gave_up = gate.enqueue("quitter", 9, t0);
        assert_eq!(gate.position("quitter"), Some(1));
        quitter.cancel();
        assert!(gave_up.admitted(&quitter).await.is_none());
        assert_eq!(gate.counts().queued, 3);
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["urgent", "old", "young"]);
        let counts = gate.counts();
        assert_eq!((counts.active, counts.queued), (0, 0));
        // Raising the cap lets the waiting in at once.
        let a = gate.enqueue("a", 0, t0).admitted(&cancel).await.unwrap();
        let b = {
            let (gate, cancel) = (gate.clone(), cancel.clone());
            let ticket = gate.enqueue("b", 0, t0);
            tokio::spawn(async move { ticket.admitted(&cancel).await.is_some() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.set_cap(None);
        assert!(b.await.unwrap());
        drop(a);
    }
}
