//! The agent's state in SQLite (WAL), owned by one thread that runs queued closures in order:
//! transfers, their files, committed chunks, and the outbox of post-transfer actions (events
//! and their deliveries). Numbered migrations in `store/migrations/`.

mod events;
mod ledger;
mod transfers;

use std::path::Path;
use std::sync::mpsc;

use rusqlite::Connection;

pub use events::{Attempt, DeliveryRecord, EventRecord, NewEvent};
pub use ledger::{AutomationRecord, LedgerCounts, LedgerEntry};
pub use transfers::{
    ChunkRecord, FileFailures, FileOutline, FileProgress, FileRecord, TransferKind, TransferRecord,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("stored JSON of transfer {id} is damaged: {source}")]
    Json {
        id: String,
        source: serde_json::Error,
    },
    #[error("database: the commit failed: {0}")]
    Commit(String),
    #[error("the database thread has stopped")]
    Closed,
}

/// Numbered migrations, applied in order; never edit one once it has landed.
const MIGRATIONS: &[&str] = &[
    include_str!("store/migrations/0001_transfers.sql"),
    include_str!("store/migrations/0002_automations.sql"),
    include_str!("store/migrations/0003_health.sql"),
    include_str!("store/migrations/0004_events.sql"),
    include_str!("store/migrations/0005_file_hashes.sql"),
];

/// Work for the database thread: runs, says whether it succeeded, and hands back what
/// delivers its answer once the batch it ran in is committed (or why that failed).
type Job = Box<dyn FnOnce(&mut Connection) -> (bool, Deliver) + Send>;
type Deliver = Box<dyn FnOnce(Result<(), &rusqlite::Error>) + Send>;

/// Most jobs committed together (group commit): enough to take a burst of file completions in
/// a few commits, few enough that no caller waits long behind the others.
const BATCH: usize = 256;

/// A handle on the database thread; cheap to clone.
#[derive(Clone)]
pub struct Store {
    jobs: mpsc::Sender<Job>,
}

impl Store {
    /// Opens (creating, readable by its owner only) the database and starts its thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            // The database holds link passwords and package tokens: it is created owner-only
            // before SQLite opens it (its -wal and -shm files take its mode), and a database
            // left by an older agent is made so.
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path);
            if created.is_ok() {
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
            }
        }
        let mut conn = Connection::open(path).map_err(open_error)?;
        // Every statement is prepared once and kept (`prepare_cached`): parsing SQL again on
        // each call was a visible share of the CPU for many small files.
        conn.set_prepared_statement_cache_capacity(128);
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        migrate(&mut conn)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("masv-store".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut batch = vec![first];
                    batch.extend(queue.try_iter().take(BATCH - 1));
                    run_batch(&mut conn, batch);
                }
            })
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(Store { jobs })
    }

    /// Runs `f` on the database thread and waits for its answer, which comes once what `f`
    /// wrote is committed. Calls queued together are committed together (group commit): one
    /// transaction and one WAL write for a burst of them, each call in a savepoint of its own
    /// so that one that fails leaves the others' writes alone.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let result = f(conn);
                let ok = result.is_ok();
                let deliver: Deliver = Box::new(move |committed| {
                    let _ = reply.send(match committed {
                        Ok(()) => result,
                        Err(e) => Err(StoreError::Commit(e.to_string())),
                    });
                });
                (ok, deliver)
            }))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Whether the database thread answers and SQLite can run a query (the watchdog: a full
    /// disk is no reason to restart the agent).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(|conn| Ok(conn.execute_batch("SELECT 1")?)).await
    }

    /// Whether SQLite can commit a write (health checks, and jobs waiting for a database that
    /// could not write, its disk full say, to take writes again).
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        self.call(|conn| {
            conn.prepare_cached(
                "INSERT INTO health (id, checked_at) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
            )?
            .execute([chrono::Utc::now().to_rfc3339()])?;
            Ok(())
        })
        .await
    }
}

/// Runs jobs in one transaction, each in its own savepoint, then commits and delivers their
/// answers; an answer never comes before its writes are committed.
fn run_batch(conn: &mut Connection, batch: Vec<Job>) {
    let savepoint = |conn: &Connection, sql: &str| conn.execute_batch(sql);
    let mut delivers = Vec::with_capacity(batch.len());
    if let Err(e) = savepoint(conn, "BEGIN") {
        for job in batch {
            let (_, deliver) = job(conn);
            deliver(Err(&e));
        }
        return;
    }
    for job in batch {
        let opened = savepoint(conn, "SAVEPOINT job");
        let (ok, deliver) = job(conn);
        if opened.is_ok() {
            let closed = if ok {
                savepoint(conn, "RELEASE job")
            } else {
                savepoint(conn, "ROLLBACK TO job; RELEASE job")
            };
            if let Err(e) = closed {
                tracing::error!(error = %e, "closing a savepoint failed");
            }
        }
        delivers.push(deliver);
    }
    let committed = savepoint(conn, "COMMIT");
    if committed.is_err() && !conn.is_autocommit() {
        let _ = savepoint(conn, "ROLLBACK");
    }
    for deliver in delivers {
        deliver(committed.as_ref().map(|_| ()));
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls queued while the database thread is busy are committed together, and one that
    /// fails undoes its own writes only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_calls_commit_together_and_a_failing_one_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        let store = Store::open(&path).unwrap();
        store
            .call(|conn| Ok(conn.execute_batch("CREATE TABLE t (x INTEGER)")?))
            .await
            .unwrap();
        // Keeps the thread busy while the others queue up behind it.
        let busy = store.call(|_| {
            std::thread::sleep(std::time::Duration::from_millis(300));
            Ok(())
        });
        let calls: Vec<_> = (0..10)
            .map(|i| {
                let (store, path) = (store.clone(), path.clone());
                tokio::spawn(async move {
                    store
                        .call(move |conn| {
                            conn.prepare_cached("INSERT INTO t (x) VALUES (?1)")?
                                .execute([i])?;
                            // What this call sees, and what another connection sees: the
                            // same unless earlier calls' writes are not committed yet.
                            let count = |c: &Connection| {
                                c.prepare_cached("SELECT count(*) FROM t")?
                                    .query_row([], |r| r.get::<_, i64>(0))
                            };
                            let seen = count(conn)?;
                            let committed = count(&Connection::open(&path)?)?;
                            if i == 5 {
                                return Err(StoreError::Closed);
                            }
                            Ok((seen, committed))
                        })
                        .await
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        busy.await.unwrap();
        let mut grouped = false;
        for (i, call) in calls.into_iter().enumerate() {
            match call.await.unwrap() {
                Ok((seen, committed)) => grouped |= seen > committed + 1,
                Err(e) => assert_eq!(i, 5, "only the failing call fails: {e}"),
            }
        }
        assert!(grouped, "the queued calls ran in one transaction");
        drop(store);
        let conn = Connection::open(&path).unwrap();
        let rows: Vec<i64> = conn
            .prepare("SELECT x FROM t ORDER BY x")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, [0, 1, 2, 3, 4, 6, 7, 8, 9]);
    }
}
