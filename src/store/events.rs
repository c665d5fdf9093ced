//! The outbox of post-transfer actions: events, recorded with the state change that causes
//! them, and their deliveries (one per action concerned), with attempts and the last error.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Store, StoreError};
use crate::cloud::dto::format_time;

/// An event to record.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    /// `upload.delivered`, `download.arrived`, `transfer.failed`, `rule.failed`, `rule.recovered`.
    pub kind: String,
    pub transfer_id: Option<String>,
    pub rule: Option<String>,
    /// The JSON payload, as text.
    pub payload: String,
    pub created_at: DateTime<Utc>,
}

/// An event as stored, with its deliveries.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub id: String,
    pub kind: String,
    pub transfer_id: Option<String>,
    pub rule: Option<String>,
    pub payload: String,
    pub created_at: String,
    pub deliveries: Vec<DeliveryRecord>,
}

/// One action's delivery of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub event_id: String,
    pub action: String,
    /// `webhook`, `command`, `email`.
    pub kind: String,
    /// `pending` (not yet delivered: due, or waiting to be tried again), `delivered`, `failed`
    /// (given up).
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub output: Option<String>,
    /// Unix milliseconds.
    pub next_attempt_ms: i64,
    pub since_ms: i64,
    pub updated_at: String,
}

/// What one attempt at a delivery came to.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub state: &'static str,
    pub error: Option<String>,
    pub output: Option<String>,
    pub next_attempt_ms: i64,
}

const DELIVERY_COLUMNS: &str = "event_id, action, kind, state, attempts, last_error, output, next_attempt_ms, since_ms, updated_at";

fn delivery_row(r: &Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        event_id: r.get(0)?,
        action: r.get(1)?,
        kind: r.get(2)?,
        state: r.get(3)?,
        attempts: r.get(4)?,
        last_error: r.get(5)?,
        output: r.get(6)?,
        next_attempt_ms: r.get(7)?,
        since_ms: r.get(8)?,
        updated_at: r.get(9)?,
    })
}

const EVENT_COLUMNS: &str = "id, type, transfer_id, rule, payload, created_at";

fn event_row(r: &Row<'_>) -> rusqlite::Result<EventRecord> {
    Ok(EventRecord {
        id: r.get(0)?,
        kind: r.get(1)?,
        transfer_id: r.get(2)?,
        rule: r.get(3)?,
        payload: r.get(4)?,
        created_at: r.get(5)?,
        deliveries: Vec::new(),
    })
}

/// Records `event` within the caller's transaction.
pub(super) fn put_event(conn: &Connection, event: &NewEvent) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO events ({EVENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    ))?
    .execute(params![
        event.id,
        event.kind,
        event.transfer_id,
        event.rule,
        event.payload,
        format_time(&event.created_at),
    ])?;
    Ok(())
}

fn deliveries_of(conn: &Connection, event_id: &str) -> Result<Vec<DeliveryRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = ?1 ORDER BY action"
    ))?;
    let rows = stmt
        .query_map([event_id], delivery_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

impl Store {
    /// Records the end of a transfer (its state and error) and the event it causes, in one
    /// transaction: the event is there if and only if the end is.
    pub async fn end_transfer(
        &self,
        id: &str,
        state: &str,
        error: Option<String>,
        event: Option<NewEvent>,
    ) -> Result<(), StoreError> {
        let (id, state) = (id.to_owned(), state.to_owned());
        self.call(move |conn| {
            let tx = conn.savepoint()?;
            tx.prepare_cached(
                "UPDATE transfers SET state = ?2, error = ?3, updated_at = ?4 WHERE id = ?1",
            )?
            .execute(params![id, state, error, format_time(&Utc::now())])?;
            if let Some(event) = &event {
                put_event(&tx, event)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Records an event that goes with no stored state change (a rule in error lives in memory).
    pub async fn insert_event(&self, event: NewEvent) -> Result<(), StoreError> {
        self.call(move |conn| put_event(conn, &event)).await
    }

    /// Events whose deliveries are not made yet: `(id, type, rule)`, oldest first.
    pub async fn undispatched_events(
        &self,
    ) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, type, rule FROM events WHERE dispatched = 0 ORDER BY created_at, id LIMIT 1000",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Makes the deliveries of an event, `(action, kind)` each, due now; in one transaction
    /// with marking the event dispatched.
    pub async fn dispatch_event(
        &self,
        event_id: &str,
        actions: Vec<(String, String)>,
    ) -> Result<(), StoreError> {
        let event_id = event_id.to_owned();
        self.call(move |conn| {
            let tx = conn.savepoint()?;
            let now_ms = Utc::now().timestamp_millis();
            let now = format_time(&Utc::now());
            for (action, kind) in &actions {
                tx.prepare_cached(&format!(
                    "INSERT OR IGNORE INTO deliveries ({DELIVERY_COLUMNS}) \
                         VALUES (?1, ?2, ?3, 'pending', 0, NULL, NULL, ?4, ?4, ?5)"
                ))?
                .execute(params![event_id, action, kind, now_ms, now])?;
            }
            tx.prepare_cached("UPDATE events SET dispatched = 1 WHERE id = ?1")?
                .execute([&event_id])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Pending deliveries due at `now_ms`, with their event's type and payload, oldest first.
    pub async fn due_deliveries(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<(DeliveryRecord, String, String)>, StoreError> {
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT d.event_id, d.action, d.kind, d.state, d.attempts, d.last_error, d.output, \
                 d.next_attempt_ms, d.since_ms, d.updated_at, e.type, e.payload \
                 FROM deliveries d JOIN events e ON e.id = d.event_id \
                 WHERE d.state = 'pending' AND d.next_attempt_ms <= ?1 \
                 ORDER BY d.next_attempt_ms LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![now_ms, limit], |r| {
                    Ok((delivery_row(r)?, r.get(10)?, r.get(11)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// When the next pending delivery is due (Unix milliseconds).
    pub async fn next_delivery_ms(&self) -> Result<Option<i64>, StoreError> {
        self.call(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT MIN(next_attempt_ms) FROM deliveries WHERE state = 'pending'",
                )?
                .query_row([], |r| r.get(0))?)
        })
        .await
    }

    /// Records an attempt at a delivery.
    pub async fn record_attempt(
        &self,
        event_id: &str,
        action: &str,
        attempt: Attempt,
    ) -> Result<(), StoreError> {
        let (event_id, action) = (event_id.to_owned(), action.to_owned());
        self.call(move |conn| {
            conn.prepare_cached(
                "UPDATE deliveries SET state = ?3, attempts = attempts + 1, last_error = ?4, \
                 output = ?5, next_attempt_ms = ?6, updated_at = ?7 \
                 WHERE event_id = ?1 AND action = ?2",
            )?
            .execute(params![
                event_id,
                action,
                attempt.state,
                attempt.error,
                attempt.output,
                attempt.next_attempt_ms,
                format_time(&Utc::now())
            ])?;
            Ok(())
        })
        .await
    }

    /// Gives a delivery up without an attempt (its action is no longer configured, say).
    pub async fn give_up_delivery(
        &self,
        event_id: &str,
        action: &str,
        error: String,
    ) -> Result<(), StoreError> {
        let (event_id, action) = (event_id.to_owned(), action.to_owned());
        self.call(move |conn| {
            conn.prepare_cached(
                "UPDATE deliveries SET state = 'failed', last_error = ?3, updated_at = ?4 \
                 WHERE event_id = ?1 AND action = ?2",
            )?
            .execute(params![event_id, action, error, format_time(&Utc::now())])?;
            Ok(())
        })
        .await
    }

    /// The latest events (newest first, at most `limit`), with their deliveries; `failed`: only
    /// those with a delivery given up or failing.
    pub async fn events(&self, failed: bool, limit: u32) -> Result<Vec<EventRecord>, StoreError> {
        self.call(move |conn| {
            let filter = if failed {
                "WHERE id IN (SELECT event_id FROM deliveries WHERE state = 'failed' \
                 OR (state = 'pending' AND last_error IS NOT NULL))"
            } else {
                ""
            };
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events {filter} ORDER BY created_at DESC, id DESC LIMIT ?1"
            ))?;
            let mut events = stmt
                .query_map([limit], event_row)?
                .collect::<Result<Vec<_>, _>>()?;
            for e in &mut events {
                e.deliveries = deliveries_of(conn, &e.id)?;
            }
            Ok(events)
        })
        .await
    }

    /// One event with its deliveries.
    pub async fn event(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            let event = conn
                .prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1"))?
                .query_row([&id], event_row)
                .optional()?;
            event
                .map(|mut e| {
                    e.deliveries = deliveries_of(conn, &e.id)?;
                    Ok(e)
                })
                .transpose()
        })
        .await
    }

    /// Makes the failed deliveries of an event due again now, their give-up clock started
    /// anew; returns how many.
    pub async fn retry_event(&self, id: &str) -> Result<u64, StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            let now_ms = Utc::now().timestamp_millis();
            let n = conn
                .prepare_cached(
                    "UPDATE deliveries SET state = 'pending', next_attempt_ms = ?2, since_ms = ?2, \
                 updated_at = ?3 WHERE event_id = ?1 AND state = 'failed'",
                )?
                .execute(params![id, now_ms, format_time(&Utc::now())])?;
            Ok(n as u64)
        })
        .await
    }

    /// Deliveries by action kind and state, and the attempts made in each: what `/metrics`
    /// shows (kept in the database, so the counts outlive restarts).
    pub async fn delivery_counts(&self) -> Result<Vec<(String, String, u64, u64)>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT kind, state, COUNT(*), COALESCE(SUM(attempts), 0) FROM deliveries \
                 GROUP BY kind, state ORDER BY kind, state",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get::<_, i64>(2)? as u64,
                        r.get::<_, i64>(3)? as u64,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }
}
