//! The automations in force: each rule of the configuration runs as one task that turns what it
//! sees (settled files, schedule ticks, inbox packages) into transfers of the shared engine, and
//! a ledger that keeps anything from being sent or fetched twice. A reload restarts only the
//! rules whose text changed; a broken file keeps the last good rules running.

mod fetching;
mod naming;
mod watching;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::actions::event::{RULE_FAILED, RULE_RECOVERED};
use crate::config::{Rule, RuleKind};
use crate::store::{LedgerCounts, Store, TransferKind};
use crate::transfer::{Engine, TransferEvent, state};

/// What the rules need from the rest of the agent.
#[derive(Clone)]
pub struct Context {
    pub engine: Engine,
    pub store: Store,
    /// The team of the embedded hub, used by team rules that name none.
    pub default_team: Option<String>,
}

/// The running automations; cheap to clone.
#[derive(Clone)]
pub struct Automations {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Context,
    slots: Mutex<BTreeMap<String, Slot>>,
    config_error: Mutex<Option<String>>,
    cancel: CancellationToken,
}

struct Slot {
    rule: Rule,
    live: Arc<Live>,
    cancel: Option<CancellationToken>,
}

/// A rule's live state, shared between its task and the status API.
#[derive(Default)]
pub(crate) struct Live {
    status: Mutex<LiveStatus>,
    /// `masv automation run NAME`: do now what the schedule would do at its next tick.
    run_now: Notify,
    /// Set while the rule is stopped on an error (`rule.failed` recorded): the store and the
    /// rule's name, to record `rule.recovered` once it works again.
    alarm: Mutex<Option<(Store, String)>>,
}

#[derive(Default, Clone)]
struct LiveStatus {
    state: &'static str,
    last_run: Option<DateTime<Utc>>,
    next_run: Option<DateTime<Utc>>,
    last_error: Option<String>,
    /// When a transfer of the rule last completed.
    last_success: Option<DateTime<Utc>>,
    /// Transfers of the rule that failed, and times the rule itself stopped on an error.
    failures: u64,
}

impl Live {
    fn set(&self, f: impl FnOnce(&mut LiveStatus)) {
        f(&mut self
            .status
            .lock()
            .expect("rule status lock is never poisoned"));
    }

    pub(crate) fn ran(&self) {
        self.set(|s| s.last_run = Some(Utc::now()));
    }

    pub(crate) fn next(&self, at: Option<DateTime<Utc>>) {
        self.set(|s| s.next_run = at);
    }

    pub(crate) fn failed(&self, error: impl Into<String>) {
        let error = error.into();
        self.set(|s| {
            s.last_error = Some(error);
            s.failures += 1;
        });
    }

    fn succeeded(&self) {
        self.set(|s| s.last_success = Some(Utc::now()));
    }

    pub(crate) fn state(&self, state: &'static str) {
        self.set(|s| s.state = state);
        if matches!(state, "watching" | "waiting" | "done")
            && let Some((store, rule)) = self
                .alarm
                .lock()
                .expect("alarm lock is never poisoned")
                .take()
        {
            tracing::info!(rule = %rule, "automation works again");
            record_rule_event(&store, RULE_RECOVERED, &rule, None);
        }
    }

    /// The rule stopped on `error`: `rule.failed` is recorded the first time (not again while
    /// it keeps failing as it heals).
    fn alarm(&self, store: &Store, rule: &str, error: &str) {
        let mut alarm = self.alarm.lock().expect("alarm lock is never poisoned");
        if alarm.is_none() {
            *alarm = Some((store.clone(), rule.to_owned()));
            record_rule_event(store, RULE_FAILED, rule, Some(error.to_owned()));
        }
    }
}

/// Records a rule's event for the post-transfer actions (the worker finds it in the store).
fn record_rule_event(store: &Store, kind: &str, rule: &str, error: Option<String>) {
    let event = crate::actions::Payload::rule(kind, rule, error).into_event();
    let store = store.clone();
    tokio::spawn(async move {
        if let Err(e) = store.insert_event(event).await {
            tracing::error!(error = %e, "cannot record an automation's event");
        }
    });
}

/// What `GET /api/v1/automations` shows of one rule.
#[derive(Debug, Clone, Serialize)]
pub struct RuleStatus {
    pub name: String,
    pub kind: &'static str,
    pub enabled: bool,
    pub state: &'static str,
    pub last_run: Option<String>,
    pub next_run: Option<String>,
    pub counts: LedgerCounts,
    pub last_error: Option<String>,
    /// When a transfer of the rule last completed.
    pub last_success: Option<String>,
    /// Transfers of the rule that failed, and times the rule stopped on an error (since the
    /// agent started or the rule changed).
    pub failures: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AutomationsStatus {
    /// Why the configuration on disk is not the one in force, if it is not.
    pub config_error: Option<String>,
    pub automations: Vec<RuleStatus>,
}

#[derive(Debug, thiserror::Error)]
pub enum AutomationError {
    #[error("no automation named {0:?}; list them with `masv automation ls`")]
    Unknown(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl Automations {
    /// Starts `rules` and the listener that completes what rules queued.
    pub fn start(ctx: Context, rules: Vec<Rule>) -> Automations {
        let automations = Automations {
            inner: Arc::new(Inner {
                ctx,
                slots: Mutex::new(BTreeMap::new()),
                config_error: Mutex::new(None),
                cancel: CancellationToken::new(),
            }),
        };
        let listener = automations.clone();
        let events = automations.inner.ctx.engine.subscribe();
        tokio::spawn(async move { listener.follow_transfers(events).await });
        automations.apply(rules);
        automations
    }

    /// Stops every rule.
    pub fn stop(&self) {
        self.inner.cancel.cancel();
    }

    /// Puts `rules` in force: rules whose text did not change keep running undisturbed.
    pub fn apply(&self, rules: Vec<Rule>) {
        let mut slots = self
            .inner
            .slots
            .lock()
            .expect("slots lock is never poisoned");
        let wanted: BTreeMap<String, Rule> =
            rules.into_iter().map(|r| (r.name.clone(), r)).collect();
        slots.retain(|name, slot| {
            let keep = wanted
                .get(name)
                .is_some_and(|r| r.fingerprint == slot.rule.fingerprint);
            if !keep {
                if let Some(cancel) = slot.cancel.take() {
                    cancel.cancel();
                }
                tracing::info!(rule = %name, "automation stopped");
            }
            keep
        });
        for (name, rule) in wanted {
            if slots.contains_key(&name) {
                continue;
            }
            let live = Arc::new(Live::default());
            let mut slot = Slot {
                rule,
                live,
                cancel: None,
            };
            self.launch(&mut slot);
            slots.insert(name, slot);
        }
        *self
            .inner
            .config_error
            .lock()
            .expect("config error lock is never poisoned") = None;
    }

    /// Keeps the rules in force and says why the file on disk was not taken.
    pub fn reload_failed(&self, error: String) {
        *self
            .inner
            .config_error
            .lock()
            .expect("config error lock is never poisoned") = Some(error);
    }

    fn launch(&self, slot: &mut Slot) {
        let ctx = self.inner.ctx.clone();
        let rule = slot.rule.clone();
        let live = slot.live.clone();
        let cancel = self.inner.cancel.child_token();
        slot.cancel = Some(cancel.clone());
        tokio::spawn(async move {
            let overridden = ctx
                .store
                .automation(&rule.name)
                .await
                .ok()
                .and_then(|a| a.enabled);
            if !overridden.unwrap_or(rule.enabled) {
                live.state("disabled");
                return;
            }
            tracing::info!(rule = %rule.name, kind = rule.kind_name(), "automation started");
            live.state("running");
            if let Some(window) = rule.window.clone() {
                let (ctx, name, cancel) = (ctx.clone(), rule.name.clone(), cancel.clone());
                tokio::spawn(async move { hold_to_window(ctx, name, window, cancel).await });
            }
            // A rule that stops on an error (its folder not mounted yet, the service down)
            // heals: it starts again by itself, at once when `masv automation run` asks.
            let mut attempt = 0u32;
            loop {
                let result = match &rule.kind {
                    RuleKind::Watch(w) => watching::run(&ctx, &rule, w, &live, &cancel).await,
                    RuleKind::Download(d) => fetching::run(&ctx, &rule, d, &live, &cancel).await,
                };
                let error = match result {
                    Ok(()) => {
                        live.state(if cancel.is_cancelled() {
                            "stopped"
                        } else {
                            "done"
                        });
                        return;
                    }
                    Err(e) => e,
                };
                if cancel.is_cancelled() {
                    live.state("stopped");
                    return;
                }
                attempt += 1;
                tracing::warn!(rule = %rule.name, error = %error, attempt, "automation stopped on an error; it starts again by itself");
                live.alarm(&ctx.store, &rule.name, &error);
                live.failed(error);
                live.state("error");
                if !wait_to_heal(&rule, &live, &cancel, attempt).await {
                    live.state("stopped");
                    return;
                }
                tracing::info!(rule = %rule.name, "automation starting again");
                live.state("running");
            }
        });
    }

    pub async fn status(&self) -> AutomationsStatus {
        let rules: Vec<(Rule, Arc<Live>)> = self
            .inner
            .slots
            .lock()
            .expect("slots lock is never poisoned")
            .values()
            .map(|s| (s.rule.clone(), s.live.clone()))
            .collect();
        let mut automations = Vec::with_capacity(rules.len());
        for (rule, live) in rules {
            let status = live
                .status
                .lock()
                .expect("rule status lock is never poisoned")
                .clone();
            let stored = self
                .inner
                .ctx
                .store
                .automation(&rule.name)
                .await
                .unwrap_or_default();
            let time = |t: Option<DateTime<Utc>>| t.as_ref().map(crate::cloud::dto::format_time);
            let last_success = time(status.last_success);
            let failures = status.failures;
            automations.push(RuleStatus {
                enabled: stored.enabled.unwrap_or(rule.enabled),
                kind: rule.kind_name(),
                state: if status.state.is_empty() {
                    "starting"
                } else {
                    status.state
                },
                last_run: time(status.last_run),
                next_run: time(status.next_run),
                counts: self
                    .inner
                    .ctx
                    .store
                    .ledger_counts(&rule.name)
                    .await
                    .unwrap_or_default(),
                last_error: status.last_error,
                last_success,
                failures,
                name: rule.name,
            });
        }
        AutomationsStatus {
            config_error: self
                .inner
                .config_error
                .lock()
                .expect("config error lock is never poisoned")
                .clone(),
            automations,
        }
    }

    /// Runs a rule now, as its schedule (or a new file) would.
    pub fn run_now(&self, name: &str) -> Result<(), AutomationError> {
        let slots = self
            .inner
            .slots
            .lock()
            .expect("slots lock is never poisoned");
        let slot = slots
            .get(name)
            .ok_or_else(|| AutomationError::Unknown(name.to_owned()))?;
        slot.live.run_now.notify_one();
        Ok(())
    }

    /// Switches a rule on or off until told otherwise (kept across restarts).
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), AutomationError> {
        if !self
            .inner
            .slots
            .lock()
            .expect("slots lock is never poisoned")
            .contains_key(name)
        {
            return Err(AutomationError::Unknown(name.to_owned()));
        }
        let mut record = self.inner.ctx.store.automation(name).await?;
        record.enabled = Some(enabled);
        self.inner.ctx.store.set_automation(record).await?;
        let mut slots = self
            .inner
            .slots
            .lock()
            .expect("slots lock is never poisoned");
        if let Some(slot) = slots.get_mut(name) {
            if let Some(cancel) = slot.cancel.take() {
                cancel.cancel();
            }
            slot.live = Arc::new(Live::default());
            self.launch(slot);
        }
        tracing::info!(rule = %name, enabled, "automation switched");
        Ok(())
    }

    /// Settles the ledger as transfers end, and does what a rule wants after a send.
    async fn follow_transfers(&self, mut events: tokio::sync::broadcast::Receiver<TransferEvent>) {
        loop {
            let event = tokio::select! {
                _ = self.inner.cancel.cancelled() => return,
                e = events.recv() => e,
            };
            let event = match event {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "automations missed transfer events; ledger states may lag"
                    );
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let ledger_state = match event.state {
                state::COMPLETE | state::IDLE => "sent",
                state::ERROR => "failed",
                _ => continue,
            };
            let entries = match self
                .inner
                .ctx
                .store
                .ledger_settle(&event.id, ledger_state)
                .await
            {
                Ok(entries) if !entries.is_empty() => entries,
                _ => continue,
            };
            let slot = {
                let slots = self
                    .inner
                    .slots
                    .lock()
                    .expect("slots lock is never poisoned");
                slots
                    .get(&entries[0].rule)
                    .map(|s| (s.rule.clone(), s.live.clone()))
            };
            let Some((rule, live)) = slot else { continue };
            if let (RuleKind::Watch(w), TransferKind::Upload, "sent") =
                (&rule.kind, event.kind, ledger_state)
            {
                watching::after_send(&self.inner.ctx, &rule, w, &event.id, &entries).await;
            }
            if ledger_state == "sent" {
                live.succeeded();
            }
            if ledger_state == "failed" {
                tracing::warn!(rule = %rule.name, transfer_id = %event.id, "a transfer of the automation failed");
                // The rule's last error says why (a wrong access code or portal shows up only
                // when the job creates its package).
                let why = self
                    .inner
                    .ctx
                    .store
                    .transfer(&event.id)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|t| t.error)
                    .unwrap_or_else(|| "see the agent's log".into());
                live.failed(format!(
                    "{} {} failed: {why}",
                    event.kind.as_str(),
                    event.id
                ));
            }
        }
    }
}

/// The longest a rule in error waits before it starts again by itself.
const HEAL_CAP: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits until a rule that stopped on an error may start again: a watch folder that is missing
/// (a share not mounted yet) is looked for every half second; otherwise the rule waits 1 s,
/// 2 s, 4 s… up to 30 s. `masv automation run` ends the wait at once. `false` when the rule
/// is stopped meanwhile.
async fn wait_to_heal(rule: &Rule, live: &Live, cancel: &CancellationToken, attempt: u32) -> bool {
    let missing_folder = match &rule.kind {
        RuleKind::Watch(w) if !w.folder.is_dir() => Some(w.folder.clone()),
        _ => None,
    };
    let backoff = std::time::Duration::from_secs(1)
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(5))
        .min(HEAL_CAP);
    let until = tokio::time::Instant::now() + backoff;
    loop {
        let step = match &missing_folder {
            Some(_) => std::time::Duration::from_millis(500),
            None => until.saturating_duration_since(tokio::time::Instant::now()),
        };
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = live.run_now.notified() => return true,
            _ = tokio::time::sleep(step) => {}
        }
        match &missing_folder {
            Some(folder) if !folder.is_dir() => continue,
            _ => return true,
        }
    }
}

/// Pauses a rule's transfers outside its window and resumes them inside it.
async fn hold_to_window(
    ctx: Context,
    rule: String,
    window: crate::schedule::Window,
    cancel: CancellationToken,
) {
    loop {
        let now = Utc::now();
        let open = window.contains(now);
        if let Ok(transfers) = ctx.engine.transfers_of(&rule).await {
            let reason = format!("waiting for window ({})", window.opening(now));
            for (kind, id, st) in transfers {
                let result = match (open, st.as_str()) {
                    (false, state::TRANSFERRING | state::PAUSED) => {
                        ctx.engine.hold(kind, &id, reason.clone()).await
                    }
                    (true, state::PAUSED) => ctx.engine.release(kind, &id).await,
                    _ => Ok(()),
                };
                if let Err(e) = result {
                    tracing::warn!(rule = %rule, transfer_id = %id, error = %e, "cannot hold a transfer to its window");
                }
            }
        }
        // Also wake now and then: transfers queued meanwhile must be held too.
        let until = window
            .next_change(now)
            .map(|t| (t - now).to_std().unwrap_or_default())
            .unwrap_or(std::time::Duration::from_secs(60))
            .min(std::time::Duration::from_secs(30));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(until) => {}
        }
    }
}

/// Why a new transfer of a rule with a window must wait, if it must: `waiting for window
/// (opens 19:00 America/Toronto)`.
pub(crate) fn outside_window(rule: &Rule) -> Option<String> {
    let now = Utc::now();
    rule.window
        .as_ref()
        .filter(|w| !w.contains(now))
        .map(|w| format!("waiting for window ({})", w.opening(now)))
}
