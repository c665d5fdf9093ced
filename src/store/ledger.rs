//! The automations' ledger (what each rule sent or fetched) and their persistent state.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Store, StoreError};
use crate::cloud::dto::format_time;

/// One thing a rule has handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub rule: String,
    /// A file's path in the watched folder, or a link or package id.
    pub key: String,
    pub size: Option<u64>,
    pub mtime_ns: Option<i64>,
    pub transfer_id: Option<String>,
    /// `queued`, `sent`, `failed`.
    pub state: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LedgerCounts {
    pub queued: u64,
    pub sent: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Default)]
pub struct AutomationRecord {
    pub name: String,
    pub enabled: Option<bool>,
    pub first_run: Option<DateTime<Utc>>,
    pub last_run: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

fn time(text: Option<String>) -> Option<DateTime<Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Records (or replaces) entries, within the caller's transaction.
pub(super) fn put_rows(conn: &Connection, entries: &[LedgerEntry]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO ledger (rule, key, size, mtime_ns, transfer_id, state, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(rule, key) DO UPDATE SET size = ?3, mtime_ns = ?4, transfer_id = ?5, state = ?6, updated_at = ?7",
    )?;
    let now = format_time(&Utc::now());
    for e in entries {
        stmt.execute(params![
            e.rule,
            e.key,
            e.size,
            e.mtime_ns,
            e.transfer_id,
            e.state,
            now
        ])?;
    }
    Ok(())
}

impl Store {
    pub async fn ledger_get(
        &self,
        rule: &str,
        key: &str,
    ) -> Result<Option<LedgerEntry>, StoreError> {
        let (rule, key) = (rule.to_owned(), key.to_owned());
        self.call(move |conn| {
            Ok(conn.prepare_cached(
                    "SELECT rule, key, size, mtime_ns, transfer_id, state FROM ledger WHERE rule = ?1 AND key = ?2")?
.query_row([&rule, &key],
                    |r| {
                        Ok(LedgerEntry {
                            rule: r.get(0)?,
                            key: r.get(1)?,
                            size: r.get(2)?,
                            mtime_ns: r.get(3)?,
                            transfer_id: r.get(4)?,
                            state: r.get(5)?,
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    /// Records (or replaces) entries, all in one transaction.
    pub async fn ledger_put(&self, entries: Vec<LedgerEntry>) -> Result<(), StoreError> {
        self.call(move |conn| {
            let tx = conn.savepoint()?;
            put_rows(&tx, &entries)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Sets the state of every entry of a transfer; returns the entries.
    pub async fn ledger_settle(
        &self,
        transfer_id: &str,
        state: &str,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let (id, state) = (transfer_id.to_owned(), state.to_owned());
        self.call(move |conn| {
            conn.prepare_cached(
                "UPDATE ledger SET state = ?2, updated_at = ?3 WHERE transfer_id = ?1")?
.execute(params![id, state, format_time(&Utc::now())],
            )?;
            let mut stmt = conn.prepare_cached("SELECT rule, key, size, mtime_ns, transfer_id, state FROM ledger WHERE transfer_id = ?1")?;
            let rows = stmt
                .query_map([&id], |r| {
                    Ok(LedgerEntry {
                        rule: r.get(0)?,
                        key: r.get(1)?,
                        size: r.get(2)?,
                        mtime_ns: r.get(3)?,
                        transfer_id: r.get(4)?,
                        state: r.get(5)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn ledger_counts(&self, rule: &str) -> Result<LedgerCounts, StoreError> {
        let rule = rule.to_owned();
        self.call(move |conn| {
            let mut counts = LedgerCounts::default();
            let mut stmt = conn.prepare_cached(
                "SELECT state, COUNT(*) FROM ledger WHERE rule = ?1 GROUP BY state",
            )?;
            let rows = stmt.query_map([&rule], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))
            })?;
            for row in rows {
                let (state, n) = row?;
                match state.as_str() {
                    "queued" => counts.queued = n,
                    "sent" => counts.sent = n,
                    _ => counts.failed += n,
                }
            }
            Ok(counts)
        })
        .await
    }

    pub async fn automation(&self, name: &str) -> Result<AutomationRecord, StoreError> {
        let name = name.to_owned();
        self.call(move |conn| {
            Ok(conn.prepare_cached(
                    "SELECT name, enabled, first_run, last_run, last_error FROM automations WHERE name = ?1")?
.query_row([&name],
                    |r| {
                        Ok(AutomationRecord {
                            name: r.get(0)?,
                            enabled: r.get(1)?,
                            first_run: time(r.get(2)?),
                            last_run: time(r.get(3)?),
                            last_error: r.get(4)?,
                        })
                    },
                )
                .optional()?
                .unwrap_or(AutomationRecord {
                    name,
                    ..AutomationRecord::default()
                }))
        })
        .await
    }

    pub async fn set_automation(&self, record: AutomationRecord) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.prepare_cached(
                "INSERT INTO automations (name, enabled, first_run, last_run, last_error) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(name) DO UPDATE SET enabled = ?2, first_run = ?3, last_run = ?4, last_error = ?5")?
.execute(params![
                    record.name,
                    record.enabled,
                    record.first_run.as_ref().map(format_time),
                    record.last_run.as_ref().map(format_time),
                    record.last_error,
                ],
            )?;
            Ok(())
        })
        .await
    }
}
