//! Rows of transfers, their files and their committed chunks.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;

use super::{Store, StoreError};
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
    pub extra: Option<Value>,
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

const FILE_COLUMNS: &str = "idx, remote_id, kind, name, path, local_path, size, chunk_size, last_modified, state, error, extra";

fn file_row(r: &Row<'_>) -> rusqlite::Result<FileRecord> {
    let extra: Option<String> = r.get(11)?;
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
        extra: extra.and_then(|e| serde_json::from_str(&e).ok()),
    })
}

fn now() -> String {
    format_time(&Utc::now())
}

fn touch(conn: &Connection, id: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE transfers SET updated_at = ?2 WHERE id = ?1",
        params![id, now()],
    )?;
    Ok(())
}

impl Store {
    pub async fn insert_transfer(&self, t: TransferRecord) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.execute(
                &format!("INSERT INTO transfers ({TRANSFER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                params![
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
                ],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn transfer(&self, id: &str) -> Result<Option<TransferRecord>, StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = ?1"),
                [&id],
                transfer_row,
            )
            .optional()?
            .map(finish_transfer)
            .transpose()
        })
        .await
    }

    /// All transfers of a kind, oldest first.
    pub async fn transfers(&self, kind: TransferKind) -> Result<Vec<TransferRecord>, StoreError> {
        self.call(move |conn| {
            let mut stmt = conn.prepare(&format!(
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
            let mut stmt = conn.prepare(
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
            conn.execute(
                "UPDATE transfers SET state = ?2, error = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, state, error, now()],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn set_remote(&self, id: &str, remote: Value) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            conn.execute(
                "UPDATE transfers SET remote = ?2 WHERE id = ?1",
                params![id, json_text(&remote)],
            )?;
            touch(conn, &id)
        })
        .await
    }

    pub async fn delete_transfer(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM chunks WHERE transfer_id = ?1", [&id])?;
            tx.execute("DELETE FROM transfer_files WHERE transfer_id = ?1", [&id])?;
            tx.execute("DELETE FROM transfers WHERE id = ?1", [&id])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Records the planned files of a transfer, all at once.
    pub async fn insert_files(&self, id: &str, files: Vec<FileRecord>) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare(&format!(
                    "INSERT INTO transfer_files (transfer_id, {FILE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
                ))?;
                for f in &files {
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
                        f.extra.as_ref().map(json_text),
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn files(&self, id: &str) -> Result<Vec<FileRecord>, StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {FILE_COLUMNS} FROM transfer_files WHERE transfer_id = ?1 ORDER BY idx"
            ))?;
            let rows = stmt
                .query_map([&id], file_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
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
            conn.execute(
                "UPDATE transfer_files SET state = ?3, error = ?4 WHERE transfer_id = ?1 AND idx = ?2",
                params![id, idx, state, error],
            )?;
            touch(conn, &id)
        })
        .await
    }

    pub async fn set_file_extra(&self, id: &str, idx: u32, extra: Value) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            conn.execute(
                "UPDATE transfer_files SET extra = ?3 WHERE transfer_id = ?1 AND idx = ?2",
                params![id, idx, json_text(&extra)],
            )?;
            Ok(())
        })
        .await
    }

    /// Commits one finished chunk (a download range written, or an uploaded part's ETag).
    pub async fn add_chunk(&self, id: &str, chunk: ChunkRecord) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO chunks (transfer_id, file_idx, chunk_idx, size, etag) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(transfer_id, file_idx, chunk_idx) DO UPDATE SET size = ?4, etag = ?5",
                params![id, chunk.file_idx, chunk.chunk_idx, chunk.size, chunk.etag],
            )?;
            Ok(())
        })
        .await
    }

    /// Forgets the chunks of one file (its upload restarts from scratch, say).
    pub async fn clear_chunks(&self, id: &str, file_idx: u32) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            conn.execute(
                "DELETE FROM chunks WHERE transfer_id = ?1 AND file_idx = ?2",
                params![id, file_idx],
            )?;
            Ok(())
        })
        .await
    }

    /// [`FileProgress`] of every file of a transfer, in order: one row a file, summed here so
    /// that a listing of a 100,000-file transfer does not read every file and chunk.
    pub async fn file_progress(&self, id: &str) -> Result<Vec<FileProgress>, StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            let mut stmt = conn.prepare(
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

    pub async fn chunks(&self, id: &str) -> Result<Vec<ChunkRecord>, StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT file_idx, chunk_idx, size, etag FROM chunks WHERE transfer_id = ?1 ORDER BY file_idx, chunk_idx",
            )?;
            let rows = stmt
                .query_map([&id], |r| {
                    Ok(ChunkRecord {
                        file_idx: r.get(0)?,
                        chunk_idx: r.get(1)?,
                        size: r.get(2)?,
                        etag: r.get(3)?,
                    })
                })?
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
