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

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

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
                for job in queue {
                    job(&mut conn);
                }
            })
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(Store { jobs })
    }

    /// Runs `f` on the database thread and waits for its answer.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = reply.send(f(conn));
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
            conn.execute(
                "INSERT INTO health (id, checked_at) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                [chrono::Utc::now().to_rfc3339()],
            )?;
            Ok(())
        })
        .await
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
