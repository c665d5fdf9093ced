//! Rows of transfers, their files and their committed chunks.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;

use super::{LedgerEntry, Store, StoreError};
use crate::cloud::dto::format_time;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    Download,
    Upload,
}

impl TransferKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::Download => "download",
            TransferKind::Upload => "upload",
        }
    }
}

/// A transfer as stored. `spec` is what was asked (kind-specific JSON); `remote` what the cloud
/// answered (package id, token…), kept so that a restart does not ask again.
#[derive(Clone)]
pub struct TransferRecord {
    pub id: String,
    pub kind: TransferKind,
    pub state: String,
    pub priority: i64,
    pub spec: Value,
    pub remote: Option<Value>,
    pub error: Option<String>,
    pub rule: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for TransferRecord {
    // spec and remote hold passwords and tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferRecord")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("state", &self.state)
            .field("priority", &self.priority)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct FileRecord {
    pub idx: u32,
    pub remote_id: Option<String>,
    pub kind: String,
    pub name: String,
    /// The folder inside the package.
    pub path: String,
    pub local_path: String,
    pub size: u64,
    pub chunk_size: u64,
    pub last_modified: Option<DateTime<Utc>>,
    pub state: String,
    pub error: Option<String>,
    /// Kind-specific JSON text (an upload's ids on the cloud side, say), kept as text: a
    /// transfer may hold 100,000 files, and a parsed map costs ten times its text.
    pub extra: Option<String>,
    /// The hash of its bytes, computed as they moved: `FORMAT:DIGEST` (`xxh64:e4c1…`).
    pub hash: Option<String>,
}

/// What a job needs of every file to plan its parts: no names or paths (read when the file
/// starts), so that a 100,000-file job stays small.
#[derive(Debug, Clone)]
pub struct FileOutline {
    pub idx: u32,
    pub directory: bool,
    pub size: u64,
    pub chunk_size: u64,
    pub state: String,
}

/// The files of a transfer that failed: how many of how many, and the first (its local path
/// and error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFailures {
    pub total: u64,
    pub failed: u64,
    /// Failed files that gave up on a transient fault.
    pub transient: u64,
    /// Failed files that can never arrive (refused names).
    pub refused: u64,
    pub first: Option<(String, Option<String>)>,
}

/// A file's state, size and committed bytes: what a listing needs of it, without its names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProgress {
    pub state: String,
    pub size: u64,
    /// The bytes of its committed chunks.
    pub committed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRecord {
    pub file_idx: u32,
    pub chunk_idx: u32,
    pub size: u64,
    pub etag: Option<String>,
}

fn parse_time(text: Option<String>) -> Option<DateTime<Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn json_text(v: &Value) -> String {
    v.to_string()
}

const TRANSFER_COLUMNS: &str =
    "id, kind, state, priority, spec, remote, error, rule, created_at, updated_at";

fn transfer_row(r: &Row<'_>) -> rusqlite::Result<(TransferRecord, String, Option<String>)> {
    let kind: String = r.get(1)?;
    Ok((
        TransferRecord {
            id: r.get(0)?,
            kind: if kind == "upload" {
                TransferKind::Upload
            } else {
                TransferKind::Download
            },
            state: r.get(2)?,
            priority: r.get(3)?,
            spec: Value::Null,
            remote: None,
            error: r.get(6)?,
            rule: r.get(7)?,
            created_at: parse_time(r.get(8)?).unwrap_or_default(),
            updated_at: parse_time(r.get(9)?).unwrap_or_default(),
        },
        r.get(4)?,
        r.get(5)?,
    ))
}

fn finish_transfer(
    (mut t, spec, remote): (TransferRecord, String, Option<String>),
) -> Result<TransferRecord, StoreError> {
    let json = |text: &str| {
        serde_json::from_str(text).map_err(|source| StoreError::Json {
            id: t.id.clone(),
            source,
        })
    };
    t.spec = json(&spec)?;
    t.remote = remote.as_deref().map(json).transpose()?;
    Ok(t)
}

const FILE_COLUMNS: &str = "idx, remote_id, kind, name, path, local_path, size, chunk_size, last_modified, state, error, extra, hash";

fn file_row(r: &Row<'_>) -> rusqlite::Result<FileRecord> {
    Ok(FileRecord {
        idx: r.get(0)?,
        remote_id: r.get(1)?,
        kind: r.get(2)?,
        name: r.get(3)?,
        path: r.get(4)?,
        local_path: r.get(5)?,
        size: r.get(6)?,
        chunk_size: r.get(7)?,
        last_modified: parse_time(r.get(8)?),
        state: r.get(9)?,
        error: r.get(10)?,
        extra: r.get(11)?,
        hash: r.get(12)?,
    })
}

fn chunk_row(r: &Row<'_>) -> rusqlite::Result<ChunkRecord> {
    Ok(ChunkRecord {
        file_idx: r.get(0)?,
        chunk_idx: r.get(1)?,
        size: r.get(2)?,
        etag: r.get(3)?,
    })
}

fn insert_transfer_row(conn: &Connection, t: &TransferRecord) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO transfers ({TRANSFER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))?
    .execute(params![
        t.id,
        t.kind.as_str(),
        t.state,
        t.priority,
        json_text(&t.spec),
        t.remote.as_ref().map(json_text),
        t.error,
        t.rule,
        format_time(&t.created_at),
        format_time(&t.updated_at),
    ])?;
    Ok(())
}

fn insert_file_rows(conn: &Connection, id: &str, files: &[FileRecord]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO transfer_files (transfer_id, {FILE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
    ))?;
    for f in files {
        stmt.execute(params![
            id,
            f.idx,
            f.remote_id,
            f.kind,
            f.name,
            f.path,
            f.local_path,
            f.size,
            f.chunk_size,
            f.last_modified.as_ref().map(format_time),
            f.state,
            f.error,
            f.extra,
            f.hash,
        ])?;
    }
    Ok(())
}

fn now() -> String {
    format_time(&Utc::now())
}

fn touch(conn: &Connection, id: &str) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE transfers SET updated_at = ?2 WHERE id = ?1")?
        .execute(params![id, now()])?;
    Ok(())
}

impl Store {
    pub async fn insert_transfer(&self, t: TransferRecord) -> Result<(), StoreError> {
        self.call(move |conn| insert_transfer_row(conn, &t)).await
    }

    /// Records new transfers with their files, and the ledger entries naming them, all in one
    /// transaction: a crash leaves either all of it or none.
    pub async fn insert_transfers(
        &self,
        transfers: Vec<(TransferRecord, Vec<FileRecord>)>,
        ledger: Vec<LedgerEntry>,
    ) -> Result<(), StoreError> {
        self.call(move |conn| {
            let tx = conn.savepoint()?;
            for (t, files) in &transfers {
                insert_transfer_row(&tx, t)?;
                insert_file_rows(&tx, &t.id, files)?;
            }
            super::ledger::put_rows(&tx, &ledger)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn transfer(&self, id: &str) -> Result<Option<TransferRecord>, StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = ?1"
            ))?
            .query_row([&id], transfer_row)
            .optional()?
            .map(finish_transfer)
            .transpose()
        })
        .await
    }

    /// All transfers of a kind, oldest first.
    pub async fn transfers(&self, kind: TransferKind) -> Result<Vec<TransferRecord>, StoreError> {
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE kind = ?1 ORDER BY created_at, id"
            ))?;
            let rows = stmt
                .query_map([kind.as_str()], transfer_row)?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(finish_transfer).collect()
        })
        .await
    }

    /// How many transfers there are of each kind in each state.
    pub async fn count_by_state(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT kind, state, COUNT(*) FROM transfers GROUP BY kind, state ORDER BY kind, state",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn set_state(
        &self,
        id: &str,
        state: &str,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let (id, state) = (id.to_owned(), state.to_owned());
        self.call(move |conn| {
            conn.prepare_cached(
                "UPDATE transfers SET state = ?2, error = ?3, updated_at = ?4 WHERE id = ?1",
            )?
            .execute(params![id, state, error, now()])?;
            Ok(())
        })
        .await
    }

    /// Sets (or clears) why a transfer is held up, leaving its state as it is.
    pub async fn set_error(&self, id: &str, error: Option<String>) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            conn.prepare_cached("UPDATE transfers SET error = ?2, updated_at = ?3 WHERE id = ?1")?
                .execute(params![id, error, now()])?;
            Ok(())
        })
        .await
    }

    pub async fn set_remote(&self, id: &str, remote: Value) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            conn.prepare_cached("UPDATE transfers SET remote = ?2 WHERE id = ?1")?
                .execute(params![id, json_text(&remote)])?;
            touch(conn, &id)
        })
        .await
    }

    /// Rewrites a transfer's request and what the cloud told about it, in one statement (the
    /// secrets of a complete transfer are scrubbed so).
    pub async fn set_spec_and_remote(
        &self,
        id: &str,
        spec: Value,
        remote: Option<Value>,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            conn.prepare_cached("UPDATE transfers SET spec = ?2, remote = ?3 WHERE id = ?1")?
                .execute(params![
                    id,
                    json_text(&spec),
                    remote.as_ref().map(json_text)
                ])?;
            Ok(())
        })
        .await
    }

    pub async fn delete_transfer(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            let tx = conn.savepoint()?;
            tx.prepare_cached("DELETE FROM chunks WHERE transfer_id = ?1")?
                .execute([&id])?;
            tx.prepare_cached("DELETE FROM transfer_files WHERE transfer_id = ?1")?
                .execute([&id])?;
            tx.prepare_cached("DELETE FROM transfers WHERE id = ?1")?
                .execute([&id])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Records the planned files of a transfer, all at once.
    pub async fn insert_files(&self, id: &str, files: Vec<FileRecord>) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            let tx = conn.savepoint()?;
            insert_file_rows(&tx, &id, &files)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn files(&self, id: &str) -> Result<Vec<FileRecord>, StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {FILE_COLUMNS} FROM transfer_files WHERE transfer_id = ?1 ORDER BY idx"
            ))?;
            let rows = stmt
                .query_map([&id], file_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// One file of a transfer.
    pub async fn file(&self, id: &str, idx: u32) -> Result<Option<FileRecord>, StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {FILE_COLUMNS} FROM transfer_files WHERE transfer_id = ?1 AND idx = ?2"
                ))?
                .query_row(params![id, idx], file_row)
                .optional()?)
        })
        .await
    }

    /// [`FileOutline`] of every file of a transfer, in order.
    pub async fn file_outlines(&self, id: &str) -> Result<Vec<FileOutline>, StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT idx, kind, size, chunk_size, state FROM transfer_files \
                 WHERE transfer_id = ?1 ORDER BY idx",
            )?;
            let rows = stmt
                .query_map([&id], |r| {
                    Ok(FileOutline {
                        idx: r.get(0)?,
                        directory: r.get::<_, String>(1)? == "directory",
                        size: r.get(2)?,
                        chunk_size: r.get(3)?,
                        state: r.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// How many files of a transfer failed, counted here rather than by reading them all.
    /// How the files of a transfer failed; `transient` counts those whose error starts with
    /// `transient_prefix` (they gave up on a transient fault), `refused` those whose error
    /// starts with `refused_prefix` (they can never arrive).
    pub async fn file_failures(
        &self,
        id: &str,
        transient_prefix: &'static str,
        refused_prefix: &'static str,
    ) -> Result<FileFailures, StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            let (total, failed, transient, refused) = conn.prepare_cached(
                // Skipped files (quarantined, bypassed) are not part of the count, as in listings.
                "SELECT COALESCE(SUM(state != 'skipped'), 0), COALESCE(SUM(state = 'error'), 0), \
                 COALESCE(SUM(state = 'error' AND error LIKE ?2 || '%'), 0), \
                 COALESCE(SUM(state = 'error' AND error LIKE ?3 || '%'), 0) \
                 FROM transfer_files WHERE transfer_id = ?1")?
.query_row(rusqlite::params![&id, transient_prefix, refused_prefix],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                        r.get::<_, i64>(3)? as u64,
                    ))
                },
            )?;
            let first = conn
                .prepare_cached(
                    "SELECT local_path, error FROM transfer_files \
                     WHERE transfer_id = ?1 AND state = 'error' ORDER BY idx LIMIT 1",
                )?
                .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            Ok(FileFailures {
                total,
                failed,
                transient,
                refused,
                first,
            })
        })
        .await
    }

    /// Puts the failed files of a transfer back to pending, but those whose error starts with
    /// `permanent`; returns how many.
    pub async fn retry_failed_files(&self, id: &str, permanent: &str) -> Result<u64, StoreError> {
        let (id, pattern) = (id.to_owned(), format!("{permanent}%"));
        self.call(move |conn| {
            let n = conn.prepare_cached(
                "UPDATE transfer_files SET state = 'pending', error = NULL \
                 WHERE transfer_id = ?1 AND state = 'error' AND (error IS NULL OR error NOT LIKE ?2)")?
.execute(params![id, pattern],
            )?;
            Ok(n as u64)
        })
        .await
    }

    pub async fn set_file_state(
        &self,
        id: &str,
        idx: u32,
        state: &str,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let (id, state) = (id.to_owned(), state.to_owned());
        self.call(move |conn| {
            conn.prepare_cached(
                "UPDATE transfer_files SET state = ?3, error = ?4 WHERE transfer_id = ?1 AND idx = ?2")?
.execute(params![id, idx, state, error],
            )?;
            touch(conn, &id)
        })
        .await
    }

    /// Records files of a transfer complete, all in one transaction: the one place where a
    /// file becomes complete (what must happen with that, in the same transaction, goes here).
    pub async fn complete_files(
        &self,
        id: &str,
        files: Vec<(u32, Option<String>)>,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            // Each with the hash of its bytes when one was computed (`FORMAT:DIGEST`).
            let mut update = conn.prepare_cached(
                "UPDATE transfer_files SET state = 'complete', error = NULL, hash = COALESCE(?3, hash)
                 WHERE transfer_id = ?1 AND idx = ?2",
            )?;
            for (idx, hash) in files {
                update.execute(params![id, idx, hash])?;
            }
            touch(conn, &id)
        })
        .await
    }

    /// A file found another size when it was about to be sent again (it changed before its
    /// declaration): its size, part size and extra, at once.
    pub async fn set_file_size(
        &self,
        id: &str,
        idx: u32,
        size: u64,
        chunk_size: u64,
        extra: String,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            conn.prepare_cached(
                "UPDATE transfer_files SET size = ?3, chunk_size = ?4, extra = ?5 \
                 WHERE transfer_id = ?1 AND idx = ?2",
            )?
            .execute(params![id, idx, size, chunk_size, extra])?;
            Ok(())
        })
        .await
    }

    pub async fn set_file_extra(
        &self,
        id: &str,
        idx: u32,
        extra: String,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            conn.prepare_cached(
                "UPDATE transfer_files SET extra = ?3 WHERE transfer_id = ?1 AND idx = ?2",
            )?
            .execute(params![id, idx, extra])?;
            Ok(())
        })
        .await
    }

    /// Commits one finished chunk (a download range written, or an uploaded part's ETag).
    pub async fn add_chunk(&self, id: &str, chunk: ChunkRecord) -> Result<(), StoreError> {
        self.add_chunks(id, vec![chunk]).await
    }

    /// Commits finished chunks, all in one transaction.
    pub async fn add_chunks(&self, id: &str, chunks: Vec<ChunkRecord>) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            let mut insert = conn.prepare_cached(
                "INSERT INTO chunks (transfer_id, file_idx, chunk_idx, size, etag) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(transfer_id, file_idx, chunk_idx) DO UPDATE SET size = ?4, etag = ?5",
            )?;
            for chunk in chunks {
                insert.execute(params![id, chunk.file_idx, chunk.chunk_idx, chunk.size, chunk.etag])?;
            }
            Ok(())
        })
        .await
    }

    /// Forgets the chunks of one file (its upload restarts from scratch, say).
    pub async fn clear_chunks(&self, id: &str, file_idx: u32) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            conn.prepare_cached("DELETE FROM chunks WHERE transfer_id = ?1 AND file_idx = ?2")?
                .execute(params![id, file_idx])?;
            Ok(())
        })
        .await
    }

    /// [`FileProgress`] of every file of a transfer, in order: one row a file, summed here so
    /// that a listing of a 100,000-file transfer does not read every file and chunk.
    pub async fn file_progress(&self, id: &str) -> Result<Vec<FileProgress>, StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT f.state, f.size, COALESCE(SUM(c.size), 0) FROM transfer_files f \
                 LEFT JOIN chunks c ON c.transfer_id = f.transfer_id AND c.file_idx = f.idx \
                 WHERE f.transfer_id = ?1 GROUP BY f.idx ORDER BY f.idx",
            )?;
            let rows = stmt
                .query_map([&id], |r| {
                    Ok(FileProgress {
                        state: r.get(0)?,
                        size: r.get(1)?,
                        committed: r.get(2)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// The committed chunks of one file.
    pub async fn file_chunks(&self, id: &str, idx: u32) -> Result<Vec<ChunkRecord>, StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT file_idx, chunk_idx, size, etag FROM chunks WHERE transfer_id = ?1 AND file_idx = ?2 ORDER BY chunk_idx",
            )?;
            let rows = stmt
                .query_map(params![id, idx], chunk_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Which chunks of a transfer are committed, as (file, chunk): no sizes or ETags.
    pub async fn committed_chunks(&self, id: &str) -> Result<Vec<(u32, u32)>, StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT file_idx, chunk_idx FROM chunks WHERE transfer_id = ?1 ORDER BY file_idx, chunk_idx",
            )?;
            let rows = stmt
                .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn chunks(&self, id: &str) -> Result<Vec<ChunkRecord>, StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT file_idx, chunk_idx, size, etag FROM chunks WHERE transfer_id = ?1 ORDER BY file_idx, chunk_idx",
            )?;
            let rows = stmt
                .query_map([&id], chunk_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> TransferRecord {
        TransferRecord {
            id: id.into(),
            kind: TransferKind::Download,
            state: "transferring".into(),
            priority: 3,
            spec: serde_json::json!({"url": "x", "password": "secret"}),
            remote: None,
            error: None,
            rule: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn transfers_files_and_chunks_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        {
            let store = Store::open(&path).unwrap();
            store.insert_transfer(record("t1")).await.unwrap();
            store
                .insert_files(
                    "t1",
                    vec![FileRecord {
                        idx: 0,
                        remote_id: Some("f".into()),
                        kind: "file".into(),
                        name: "a".into(),
                        path: "".into(),
                        local_path: "/x/a".into(),
                        size: 10,
                        chunk_size: 5,
                        last_modified: None,
                        state: "pending".into(),
                        error: None,
                        extra: None,
                        hash: None,
                    }],
                )
                .await
                .unwrap();
            store
                .add_chunk(
                    "t1",
                    ChunkRecord {
                        file_idx: 0,
                        chunk_idx: 1,
                        size: 5,
                        etag: None,
                    },
                )
                .await
                .unwrap();
            store.set_state("t1", "paused", None).await.unwrap();
        }
        let store = Store::open(&path).unwrap();
        let t = store.transfer("t1").await.unwrap().unwrap();
        assert_eq!(t.state, "paused");
        assert_eq!(t.spec["url"], "x");
        assert!(!format!("{t:?}").contains("secret"));
        assert_eq!(store.files("t1").await.unwrap()[0].local_path, "/x/a");
        assert_eq!(store.chunks("t1").await.unwrap().len(), 1);
        let second = FileRecord {
            idx: 1,
            name: "b".into(),
            size: 7,
            ..store.files("t1").await.unwrap()[0].clone()
        };
        store.insert_files("t1", vec![second]).await.unwrap();
        for chunk_idx in [0, 1] {
            let chunk = ChunkRecord {
                file_idx: 1,
                chunk_idx,
                size: 3,
                etag: None,
            };
            store.add_chunk("t1", chunk).await.unwrap();
        }
        assert_eq!(
            store.file_progress("t1").await.unwrap(),
            [(10, 5), (7, 6)].map(|(size, committed)| FileProgress {
                state: "pending".into(),
                size,
                committed
            })
        );
        store.delete_transfer("t1").await.unwrap();
        assert!(store.transfer("t1").await.unwrap().is_none());
        assert!(store.chunks("t1").await.unwrap().is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
