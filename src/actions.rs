//! Post-transfer actions: what connects the agent to the rest of a facility. Events
//! (`upload.delivered`, `download.arrived`, `transfer.failed`, `rule.failed`,
//! `rule.recovered`) are recorded in the store's outbox in the same transaction as the state
//! change that causes them; the delivery worker here hands each to the `[[action]]`s it
//! concerns (a webhook, a command, an email) at least once, across restarts, retrying with
//! the transfer core's backoff until the action's `give_up_after`.
//!
//! The worker's loop, and why it delivers at least once:
//! 1. dispatch: an event not yet dispatched gets one delivery row per action that wants it
//!    (the actions in force then), in one transaction with marking it dispatched;
//! 2. deliver: pending deliveries that are due are attempted, a few at once, off the transfers'
//!    path (own tasks, own HTTP client, no connection of the transfer budget);
//! 3. record: each attempt's outcome is written after it ends. A crash before that leaves the
//!    delivery pending, and it is attempted again at the next start: a receiver may see an
//!    event twice (the `id` in the payload and the `X-Masv-Event-Id` header tell), never zero
//!    times.

mod command;
mod email;
pub mod event;
pub mod webhook;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Action, ActionTarget};
use crate::store::{Attempt, DeliveryRecord, Store};
use crate::transfer::RetryPolicy;
pub use event::Payload;

/// Deliveries attempted at once.
const CONCURRENCY: usize = 4;

/// How often the outbox is looked at when nothing wakes the worker (an event recorded by a
/// rule, a retry asked through the API).
const POLL: Duration = Duration::from_millis(500);

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; what the receiver answered.
    Delivered(String),
    /// Failed, and may work later (connect error, timeout, 5xx, a command's failure).
    Retry(String),
    /// Failed, and will not work without a change (a 4xx, a refused recipient): given up now.
    Failed(String),
}

/// The delivery worker's handle: cheap to clone.
#[derive(Clone)]
pub struct Actions {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    actions: RwLock<Arc<Vec<Action>>>,
    /// Where commands run unless their action says.
    data_dir: PathBuf,
    http: reqwest::Client,
    wake: Notify,
    /// `(event, action)` being attempted now.
    in_flight: Mutex<HashSet<(String, String)>>,
    slots: Semaphore,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Actions {
    /// Starts the worker over `store` with the `actions` in force.
    pub fn start(store: Store, actions: Vec<Action>, data_dir: PathBuf) -> Actions {
        let http = reqwest::Client::builder()
            .user_agent(concat!("masv-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("the HTTP client builds (rustls, no system configuration read)");
        let this = Actions {
            inner: Arc::new(Inner {
                store,
                actions: RwLock::new(Arc::new(actions)),
                data_dir,
                http,
                wake: Notify::new(),
                in_flight: Mutex::new(HashSet::new()),
                slots: Semaphore::new(CONCURRENCY),
                cancel: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        };
        let worker = this.clone();
        this.inner.tasks.spawn(async move { worker.run().await });
        this
    }

    /// Puts new actions in force (a reloaded configuration): events dispatched from now on
    /// follow them, and pending deliveries of an action still configured use its new settings.
    pub fn apply(&self, actions: Vec<Action>) {
        *self
            .inner
            .actions
            .write()
            .expect("actions lock is never poisoned") = Arc::new(actions);
        self.wake();
    }

    /// Looks at the outbox now (an event was just recorded).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Stops taking deliveries; those in flight are cut off (left pending, attempted again at
    /// the next start). Waits until every task has ended.
    pub async fn stop(&self) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    fn actions(&self) -> Arc<Vec<Action>> {
        self.inner
            .actions
            .read()
            .expect("actions lock is never poisoned")
            .clone()
    }

    async fn run(&self) {
        loop {
            if let Err(e) = self.dispatch().await {
                tracing::error!(error = %e, "cannot read the events to deliver; trying again");
            }
            let now = chrono::Utc::now().timestamp_millis();
            match self.inner.store.due_deliveries(now, 64).await {
                Ok(due) => {
                    for (delivery, _kind, payload) in due {
                        self.attempt(delivery, payload);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read the deliveries due"),
            }
            let next = self.inner.store.next_delivery_ms().await.ok().flatten();
            let now = chrono::Utc::now().timestamp_millis();
            let wait = match next {
                Some(t) if t > now => Duration::from_millis((t - now) as u64).min(POLL),
                _ => POLL,
            };
            tokio::select! {
                _ = self.inner.cancel.cancelled() => return,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Makes the deliveries of every event not dispatched yet.
    async fn dispatch(&self) -> Result<(), crate::store::StoreError> {
        let events = self.inner.store.undispatched_events().await?;
        if events.is_empty() {
            return Ok(());
        }
        let actions = self.actions();
        for (id, kind, rule) in events {
            let wanted: Vec<(String, String)> = actions
                .iter()
                .filter(|a| a.wants(&kind, rule.as_deref()))
                .map(|a| (a.name.clone(), a.kind().to_owned()))
                .collect();
            tracing::debug!(event_id = %id, event = %kind, actions = wanted.len(), "event dispatched");
            self.inner.store.dispatch_event(&id, wanted).await?;
        }
        Ok(())
    }

    /// Attempts one delivery in a task of its own, unless it is being attempted already.
    fn attempt(&self, delivery: DeliveryRecord, payload: String) {
        let key = (delivery.event_id.clone(), delivery.action.clone());
        if !self
            .inner
            .in_flight
            .lock()
            .expect("in-flight lock is never poisoned")
            .insert(key.clone())
        {
            return;
        }
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let cancel = this.inner.cancel.clone();
            if let Ok(_slot) = this.inner.slots.acquire().await
                && !cancel.is_cancelled()
            {
                this.deliver(&delivery, &payload).await;
            }
            this.inner
                .in_flight
                .lock()
                .expect("in-flight lock is never poisoned")
                .remove(&key);
            this.wake();
        });
    }

    async fn deliver(&self, delivery: &DeliveryRecord, payload: &str) {
        let store = &self.inner.store;
        let (event_id, name) = (&delivery.event_id, &delivery.action);
        let Some(action) = self.actions().iter().find(|a| &a.name == name).cloned() else {
            let error = format!(
                "action {name:?} is no longer configured; add it back and `masv events retry {event_id}`"
            );
            tracing::warn!(event_id = %event_id, action = %name, "{error}");
            if let Err(e) = store.give_up_delivery(event_id, name, error).await {
                tracing::error!(error = %e, "cannot record a delivery given up");
            }
            return;
        };
        let payload: Payload = match serde_json::from_str(payload) {
            Ok(p) => p,
            Err(e) => {
                let error = format!("the stored payload is damaged: {e}");
                let _ = store.give_up_delivery(event_id, name, error).await;
                return;
            }
        };
        let outcome = self.run_action(&action, &payload).await;
        if self.inner.cancel.is_cancelled() && matches!(outcome, Outcome::Retry(_)) {
            // Cut off by the shutdown: left as it was, attempted again at the next start.
            return;
        }
        crate::crash_point!("actions.delivery.sent");
        let now = chrono::Utc::now().timestamp_millis();
        let attempts = delivery.attempts + 1;
        let attempt = match outcome {
            Outcome::Delivered(output) => {
                tracing::info!(event_id = %event_id, event = %payload.event, action = %name, kind = action.kind(), attempts, output = %output, "event delivered");
                Attempt {
                    state: "delivered",
                    error: None,
                    output: Some(output),
                    next_attempt_ms: now,
                }
            }
            Outcome::Failed(error) => {
                tracing::error!(event_id = %event_id, event = %payload.event, action = %name, kind = action.kind(), attempts, error = %error, "event not delivered: given up");
                Attempt {
                    state: "failed",
                    error: Some(error),
                    output: None,
                    next_attempt_ms: now,
                }
            }
            Outcome::Retry(error) => {
                let policy = RetryPolicy {
                    first_delay: Duration::from_millis(500),
                    max_delay: action.max_delay,
                    give_up_after: action.give_up_after,
                };
                let failing_for =
                    Duration::from_millis(now.saturating_sub(delivery.since_ms) as u64);
                let gives_up = policy.give_up_after.is_some_and(|d| failing_for >= d);
                if gives_up {
                    tracing::error!(event_id = %event_id, event = %payload.event, action = %name, kind = action.kind(), attempts, error = %error, "event not delivered: given up after {failing_for:?} of failures");
                } else {
                    tracing::warn!(event_id = %event_id, event = %payload.event, action = %name, kind = action.kind(), attempts, error = %error, "event not delivered yet; trying again");
                }
                let delay = policy.delay(attempts, None);
                Attempt {
                    state: if gives_up { "failed" } else { "pending" },
                    error: Some(error),
                    output: None,
                    next_attempt_ms: now + delay.as_millis() as i64,
                }
            }
        };
        if let Err(e) = store.record_attempt(event_id, name, attempt).await {
            tracing::error!(event_id = %event_id, action = %name, error = %e, "cannot record a delivery attempt; it will be made again");
        }
    }

    async fn run_action(&self, action: &Action, payload: &Payload) -> Outcome {
        match &action.target {
            ActionTarget::Webhook {
                url,
                secret,
                format,
            } => {
                let post = webhook::post(
                    &self.inner.http,
                    url,
                    secret.as_ref(),
                    *format,
                    payload,
                    action.timeout,
                );
                tokio::select! {
                    outcome = post => outcome,
                    _ = self.inner.cancel.cancelled() => Outcome::Retry("the agent stopped while it posted".into()),
                }
            }
            ActionTarget::Command {
                program,
                args,
                working_dir,
            } => {
                let dir = working_dir.as_deref().unwrap_or(&self.inner.data_dir);
                command::run(
                    program,
                    args,
                    dir,
                    payload,
                    action.timeout,
                    &self.inner.cancel,
                )
                .await
            }
            ActionTarget::Email {
                host,
                port,
                tls,
                username,
                password,
                ca_file,
                from,
                to,
            } => {
                let smtp = email::Smtp {
                    host,
                    port: *port,
                    tls: *tls,
                    username: username.as_deref(),
                    password: password.as_ref(),
                    ca_file: ca_file.as_deref(),
                    from,
                    to,
                };
                tokio::select! {
                    outcome = email::send(&smtp, payload, action.timeout) => outcome,
                    _ = self.inner.cancel.cancelled() => Outcome::Retry("the agent stopped while it sent".into()),
                }
            }
        }
    }
}
