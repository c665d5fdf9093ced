//! The hub's state in SQLite (WAL): teams, API keys, portals, packages, files, multipart uploads,
//! parts and links. Blobs live on disk beside it (see `storage`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::error::HubError;
use crate::cloud::dto::format_time;

/// Numbered migrations, applied in order and never edited once landed.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE teams (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams(id),
    key_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE portals (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams(id),
    name TEXT NOT NULL,
    subdomain TEXT NOT NULL UNIQUE,
    access_code_hash TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE packages (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams(id),
    portal_id TEXT REFERENCES portals(id),
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipients TEXT NOT NULL,
    metadata TEXT NOT NULL,
    password_hash TEXT,
    access_limit INTEGER,
    expiry TEXT,
    finalized_at TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX packages_team ON packages(team_id, created_at);
CREATE TABLE files (
    id TEXT PRIMARY KEY,
    package_id TEXT NOT NULL REFERENCES packages(id),
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    last_modified TEXT,
    virus_detected INTEGER NOT NULL DEFAULT 0,
    finalized INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE INDEX files_package ON files(package_id);
CREATE TABLE multipart_uploads (
    upload_id TEXT PRIMARY KEY,
    file_id TEXT NOT NULL REFERENCES files(id),
    created_at TEXT NOT NULL
);
CREATE TABLE parts (
    upload_id TEXT NOT NULL REFERENCES multipart_uploads(upload_id),
    part_number INTEGER NOT NULL,
    etag TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);
CREATE TABLE links (
    id TEXT PRIMARY KEY,
    package_id TEXT NOT NULL REFERENCES packages(id),
    secret_hash TEXT NOT NULL,
    email TEXT,
    password_hash TEXT,
    expiry TEXT,
    access_limit INTEGER,
    access_count INTEGER NOT NULL DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE INDEX links_package ON links(package_id);
"#,
    // A finalized file's bytes stay in the parts of the upload that completed it (no copy at
    // finalize); this names that upload.
    r#"ALTER TABLE files ADD COLUMN blob_upload TEXT;"#,
    // A team's subdomain (MASV teams have one; the agent's `POST /uploads` may name the team by
    // it). NULL for teams made before: theirs is the slug of their name.
    r#"ALTER TABLE teams ADD COLUMN subdomain TEXT;
CREATE UNIQUE INDEX teams_subdomain ON teams(subdomain);"#,
    // A file's finalize looks up its other uploads: without this, a scan of every upload ever
    // made, which made the finalizes of a 1,000-file package quadratic.
    r#"CREATE INDEX multipart_uploads_file ON multipart_uploads(file_id);"#,
];

#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

#[derive(Debug, Clone)]
pub struct TeamRow {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct PortalRow {
    pub id: String,
    pub team_id: String,
    pub name: String,
    pub subdomain: String,
    pub access_code_hash: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PackageRow {
    pub id: String,
    pub team_id: String,
    pub portal_id: Option<String>,
    pub name: String,
    pub description: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub password_hash: Option<String>,
    pub access_limit: Option<u32>,
    pub expiry: Option<DateTime<Utc>>,
    pub finalized_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct FileRow {
    pub id: String,
    pub package_id: String,
    pub kind: String,
    pub name: String,
    pub path: String,
    pub size: u64,
    pub chunk_size: u64,
    pub last_modified: Option<DateTime<Utc>>,
    pub virus_detected: bool,
    pub finalized: bool,
    /// The multipart upload holding the bytes of a finalized file.
    pub blob_upload: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LinkRow {
    pub id: String,
    pub package_id: String,
    pub secret_hash: String,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub expiry: Option<DateTime<Utc>>,
    pub access_limit: Option<u32>,
    pub access_count: u32,
    pub disabled: bool,
}

#[derive(Debug, Clone)]
pub struct PartRow {
    pub part_number: u32,
    pub etag: String,
    pub size: u64,
}

fn time_text(t: &DateTime<Utc>) -> String {
    format_time(t)
}

fn parse_time(text: Option<String>) -> Option<DateTime<Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn json_column<T: serde::de::DeserializeOwned + Default>(text: String) -> T {
    serde_json::from_str(&text).unwrap_or_default()
}

impl Db {
    /// Opens (creating) `dir/hub.db`, readable by its owner only, and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Db, HubError> {
        let conn = Connection::open(path)?;
        restrict_to_owner(path)?;
        // Every statement is prepared once and kept (`prepare_cached`): parsing SQL again on
        // each call was a visible share of the CPU for many small files.
        conn.set_prepared_statement_cache_capacity(128);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let db = Db {
            conn: Arc::new(Mutex::new(conn)),
        };
        db.with(migrate)?;
        Ok(db)
    }

    /// Runs `f` on the connection, on the calling thread (operator commands, start-up).
    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, HubError>,
    ) -> Result<T, HubError> {
        let mut conn = self
            .conn
            .lock()
            .expect("the hub database lock is never poisoned");
        f(&mut conn)
    }

    /// Runs `f` on the connection off the async runtime.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, HubError> + Send + 'static,
    ) -> Result<T, HubError> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.with(f))
            .await
            .map_err(|e| HubError::Internal(format!("database task failed: {e}")))?
    }
}

#[cfg(unix)]
fn restrict_to_owner(path: &Path) -> Result<(), HubError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

#[cfg(not(unix))]
fn restrict_to_owner(_path: &Path) -> Result<(), HubError> {
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), HubError> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

pub fn meta_get(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>, HubError> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

pub fn meta_set(conn: &Connection, key: &str, value: &[u8]) -> Result<(), HubError> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
    )?
    .execute(params![key, value])?;
    Ok(())
}

pub fn insert_team(conn: &Connection, team: &TeamRow) -> Result<(), HubError> {
    conn.prepare_cached("INSERT INTO teams (id, name, created_at) VALUES (?1, ?2, ?3)")?
        .execute(params![team.id, team.name, time_text(&Utc::now())])?;
    Ok(())
}

pub fn team(conn: &Connection, id: &str) -> Result<Option<TeamRow>, HubError> {
    Ok(conn
        .prepare_cached("SELECT id, name FROM teams WHERE id = ?1")?
        .query_row([id], |r| {
            Ok(TeamRow {
                id: r.get(0)?,
                name: r.get(1)?,
            })
        })
        .optional()?)
}

/// Sets a team's subdomain; false when another team has it.
pub fn set_team_subdomain(conn: &Connection, id: &str, subdomain: &str) -> Result<bool, HubError> {
    let taken: Option<String> = conn
        .prepare_cached("SELECT id FROM teams WHERE subdomain = ?1 AND id != ?2")?
        .query_row(params![subdomain, id], |r| r.get(0))
        .optional()?;
    if taken.is_some() {
        return Ok(false);
    }
    conn.prepare_cached("UPDATE teams SET subdomain = ?2 WHERE id = ?1")?
        .execute(params![id, subdomain])?;
    Ok(true)
}

/// The team with `subdomain`: its own, or for a team without one, the slug of its name.
pub fn team_by_subdomain(
    conn: &Connection,
    subdomain: &str,
) -> Result<Option<(TeamRow, String)>, HubError> {
    let mut stmt = conn.prepare_cached("SELECT id, name, subdomain FROM teams")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                TeamRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                },
                r.get::<_, Option<String>>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let exact = rows
        .iter()
        .find(|(_, s)| s.as_deref() == Some(subdomain))
        .cloned();
    Ok(exact
        .or_else(|| {
            rows.into_iter()
                .find(|(t, s)| s.is_none() && slug(&t.name) == subdomain)
        })
        .map(|(t, s)| {
            let s = s.unwrap_or_else(|| slug(&t.name));
            (t, s)
        }))
}

/// A name as a DNS label: lowercase letters and digits, anything else one `-`, at most 63.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.truncate(63);
    out.trim_end_matches('-').to_owned()
}

pub fn team_by_name(conn: &Connection, name: &str) -> Result<Option<TeamRow>, HubError> {
    Ok(conn
        .prepare_cached("SELECT id, name FROM teams WHERE name = ?1")?
        .query_row([name], |r| {
            Ok(TeamRow {
                id: r.get(0)?,
                name: r.get(1)?,
            })
        })
        .optional()?)
}

pub fn insert_api_key(
    conn: &Connection,
    id: &str,
    team_id: &str,
    key_hash: &str,
) -> Result<(), HubError> {
    conn.prepare_cached(
        "INSERT INTO api_keys (id, team_id, key_hash, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(key_hash) DO NOTHING",
    )?
    .execute(params![id, team_id, key_hash, time_text(&Utc::now())])?;
    Ok(())
}

/// The team an API key (by its digest) belongs to.
pub fn api_key_team(conn: &Connection, key_hash: &str) -> Result<Option<String>, HubError> {
    Ok(conn
        .prepare_cached("SELECT team_id FROM api_keys WHERE key_hash = ?1")?
        .query_row([key_hash], |r| r.get(0))
        .optional()?)
}

const PORTAL_COLUMNS: &str = "id, team_id, name, subdomain, access_code_hash";

fn portal_row(r: &Row<'_>) -> rusqlite::Result<PortalRow> {
    Ok(PortalRow {
        id: r.get(0)?,
        team_id: r.get(1)?,
        name: r.get(2)?,
        subdomain: r.get(3)?,
        access_code_hash: r.get(4)?,
    })
}

pub fn insert_portal(conn: &Connection, portal: &PortalRow) -> Result<(), HubError> {
    conn.prepare_cached(
        "INSERT INTO portals (id, team_id, name, subdomain, access_code_hash, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        portal.id,
        portal.team_id,
        portal.name,
        portal.subdomain,
        portal.access_code_hash,
        time_text(&Utc::now())
    ])?;
    Ok(())
}

pub fn portal_by_subdomain(
    conn: &Connection,
    subdomain: &str,
) -> Result<Option<PortalRow>, HubError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {PORTAL_COLUMNS} FROM portals WHERE subdomain = ?1"
        ))?
        .query_row([subdomain], portal_row)
        .optional()?)
}

pub fn portal(conn: &Connection, id: &str) -> Result<Option<PortalRow>, HubError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {PORTAL_COLUMNS} FROM portals WHERE id = ?1"
        ))?
        .query_row([id], portal_row)
        .optional()?)
}

const PACKAGE_COLUMNS: &str = "id, team_id, portal_id, name, description, sender, recipients, \
     metadata, password_hash, access_limit, expiry, finalized_at, created_at";

fn package_row(r: &Row<'_>) -> rusqlite::Result<PackageRow> {
    Ok(PackageRow {
        id: r.get(0)?,
        team_id: r.get(1)?,
        portal_id: r.get(2)?,
        name: r.get(3)?,
        description: r.get(4)?,
        sender: r.get(5)?,
        recipients: json_column(r.get(6)?),
        metadata: json_column(r.get(7)?),
        password_hash: r.get(8)?,
        access_limit: r.get(9)?,
        expiry: parse_time(r.get(10)?),
        finalized_at: parse_time(r.get(11)?),
        created_at: parse_time(r.get(12)?).unwrap_or_default(),
    })
}

pub fn insert_package(conn: &Connection, p: &PackageRow) -> Result<(), HubError> {
    conn.prepare_cached(
        &format!("INSERT INTO packages ({PACKAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"))?
.execute(params![
            p.id,
            p.team_id,
            p.portal_id,
            p.name,
            p.description,
            p.sender,
            serde_json::to_string(&p.recipients).expect("strings serialize"),
            serde_json::to_string(&p.metadata).expect("strings serialize"),
            p.password_hash,
            p.access_limit,
            p.expiry.as_ref().map(time_text),
            p.finalized_at.as_ref().map(time_text),
            time_text(&p.created_at),
        ],
    )?;
    Ok(())
}

pub fn package(conn: &Connection, id: &str) -> Result<Option<PackageRow>, HubError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages WHERE id = ?1"
        ))?
        .query_row([id], package_row)
        .optional()?)
}

pub fn set_package_finalized(
    conn: &Connection,
    id: &str,
    at: &DateTime<Utc>,
) -> Result<(), HubError> {
    conn.prepare_cached(
        "UPDATE packages SET finalized_at = ?2 WHERE id = ?1 AND finalized_at IS NULL",
    )?
    .execute(params![id, time_text(at)])?;
    Ok(())
}

/// Finalized packages of a team, oldest first, optionally from one portal and from a time on.
pub fn inbox(
    conn: &Connection,
    team_id: &str,
    portal_id: Option<&str>,
    since: Option<&DateTime<Utc>>,
    offset: u64,
    limit: u64,
) -> Result<(u64, Vec<PackageRow>), HubError> {
    let since = since.map(time_text).unwrap_or_default();
    let filter = "team_id = ?1 AND finalized_at IS NOT NULL AND (?2 IS NULL OR portal_id = ?2) AND created_at >= ?3";
    let total: u64 = conn
        .prepare_cached(&format!("SELECT COUNT(*) FROM packages WHERE {filter}"))?
        .query_row(params![team_id, portal_id, since], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {PACKAGE_COLUMNS} FROM packages WHERE {filter} ORDER BY created_at, id LIMIT ?4 OFFSET ?5"
    ))?;
    let rows = stmt
        .query_map(
            params![team_id, portal_id, since, limit, offset],
            package_row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((total, rows))
}

const FILE_COLUMNS: &str = "id, package_id, kind, name, path, size, chunk_size, last_modified, virus_detected, finalized, blob_upload";

fn file_row(r: &Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        id: r.get(0)?,
        package_id: r.get(1)?,
        kind: r.get(2)?,
        name: r.get(3)?,
        path: r.get(4)?,
        size: r.get(5)?,
        chunk_size: r.get(6)?,
        last_modified: parse_time(r.get(7)?),
        virus_detected: r.get(8)?,
        finalized: r.get(9)?,
        blob_upload: r.get(10)?,
    })
}

pub fn insert_file(conn: &Connection, f: &FileRow) -> Result<(), HubError> {
    conn.prepare_cached(
        &format!("INSERT INTO files ({FILE_COLUMNS}, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"))?
.execute(params![
            f.id,
            f.package_id,
            f.kind,
            f.name,
            f.path,
            f.size,
            f.chunk_size,
            f.last_modified.as_ref().map(time_text),
            f.virus_detected,
            f.finalized,
            f.blob_upload,
            time_text(&Utc::now()),
        ],
    )?;
    Ok(())
}

pub fn file(conn: &Connection, package_id: &str, id: &str) -> Result<Option<FileRow>, HubError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE id = ?1 AND package_id = ?2"
        ))?
        .query_row([id, package_id], file_row)
        .optional()?)
}

pub fn files(conn: &Connection, package_id: &str) -> Result<Vec<FileRow>, HubError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {FILE_COLUMNS} FROM files WHERE package_id = ?1 ORDER BY path, name, id"
    ))?;
    let rows = stmt
        .query_map([package_id], file_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Marks a file finalized, its bytes being parts `1..=parts` of `upload_id`; forgets the other
/// uploads of the file (returned, for their parts to be deleted) and parts beyond the last.
pub fn finalize_file(
    conn: &mut Connection,
    id: &str,
    upload_id: &str,
    parts: u32,
    size: u64,
) -> Result<Vec<String>, HubError> {
    let tx = conn.transaction()?;
    tx.prepare_cached("UPDATE files SET finalized = 1, blob_upload = ?2, size = ?3 WHERE id = ?1")?
        .execute(params![id, upload_id, size])?;
    tx.prepare_cached("DELETE FROM parts WHERE upload_id = ?1 AND part_number > ?2")?
        .execute(params![upload_id, parts])?;
    let others = {
        let mut stmt = tx.prepare_cached(
            "SELECT upload_id FROM multipart_uploads WHERE file_id = ?1 AND upload_id != ?2",
        )?;
        stmt.query_map([id, upload_id], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?
    };
    for other in &others {
        tx.prepare_cached("DELETE FROM parts WHERE upload_id = ?1")?
            .execute([other])?;
        tx.prepare_cached("DELETE FROM multipart_uploads WHERE upload_id = ?1")?
            .execute([other])?;
    }
    tx.commit()?;
    Ok(others)
}

/// Flags or clears a file as virus-infected; false when there is no such file.
pub fn set_virus_detected(conn: &Connection, id: &str, flagged: bool) -> Result<bool, HubError> {
    Ok(conn
        .prepare_cached("UPDATE files SET virus_detected = ?2 WHERE id = ?1")?
        .execute(params![id, flagged])?
        == 1)
}

pub fn insert_multipart(conn: &Connection, upload_id: &str, file_id: &str) -> Result<(), HubError> {
    conn.prepare_cached(
        "INSERT INTO multipart_uploads (upload_id, file_id, created_at) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![upload_id, file_id, time_text(&Utc::now())])?;
    Ok(())
}

/// The file a multipart upload belongs to.
pub fn multipart_file(conn: &Connection, upload_id: &str) -> Result<Option<String>, HubError> {
    Ok(conn
        .prepare_cached("SELECT file_id FROM multipart_uploads WHERE upload_id = ?1")?
        .query_row([upload_id], |r| r.get(0))
        .optional()?)
}

pub fn put_part(conn: &Connection, upload_id: &str, part: &PartRow) -> Result<(), HubError> {
    conn.prepare_cached(
        "INSERT INTO parts (upload_id, part_number, etag, size) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(upload_id, part_number) DO UPDATE SET etag = ?3, size = ?4",
    )?
    .execute(params![upload_id, part.part_number, part.etag, part.size])?;
    Ok(())
}

pub fn parts(conn: &Connection, upload_id: &str) -> Result<Vec<PartRow>, HubError> {
    let mut stmt = conn.prepare_cached(
        "SELECT part_number, etag, size FROM parts WHERE upload_id = ?1 ORDER BY part_number",
    )?;
    let rows = stmt
        .query_map([upload_id], |r| {
            Ok(PartRow {
                part_number: r.get(0)?,
                etag: r.get(1)?,
                size: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

const LINK_COLUMNS: &str = "id, package_id, secret_hash, email, password_hash, expiry, access_limit, access_count, disabled";

fn link_row(r: &Row<'_>) -> rusqlite::Result<LinkRow> {
    Ok(LinkRow {
        id: r.get(0)?,
        package_id: r.get(1)?,
        secret_hash: r.get(2)?,
        email: r.get(3)?,
        password_hash: r.get(4)?,
        expiry: parse_time(r.get(5)?),
        access_limit: r.get(6)?,
        access_count: r.get(7)?,
        disabled: r.get(8)?,
    })
}

pub fn insert_link(conn: &Connection, l: &LinkRow) -> Result<(), HubError> {
    conn.prepare_cached(
        &format!("INSERT INTO links ({LINK_COLUMNS}, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"))?
.execute(params![
            l.id,
            l.package_id,
            l.secret_hash,
            l.email,
            l.password_hash,
            l.expiry.as_ref().map(time_text),
            l.access_limit,
            l.access_count,
            l.disabled,
            time_text(&Utc::now()),
        ],
    )?;
    Ok(())
}

pub fn link(conn: &Connection, id: &str) -> Result<Option<LinkRow>, HubError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {LINK_COLUMNS} FROM links WHERE id = ?1"))?
        .query_row([id], link_row)
        .optional()?)
}

pub fn count_link_access(conn: &Connection, id: &str) -> Result<(), HubError> {
    conn.prepare_cached("UPDATE links SET access_count = access_count + 1 WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

pub fn disable_link(conn: &Connection, package_id: &str, id: &str) -> Result<bool, HubError> {
    Ok(conn
        .prepare_cached("UPDATE links SET disabled = 1 WHERE id = ?1 AND package_id = ?2")?
        .execute([id, package_id])?
        == 1)
}
