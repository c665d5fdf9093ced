//! The control plane (spec §2–3): links, packages, files, portals, teams, inbox.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};

use super::HubConfig;
use super::auth::{self, Access, Signer, Throttle, TokenClaims};
use super::db::{self, Db, FileRow, LinkRow, PackageRow};
use super::error::HubError;
use super::storage;
use crate::cloud::dto::{
    self, AddFile, AddedFile, Blueprint, Branding, CreateLink, CreatePortalPackage,
    CreateTeamPackage, CreatedPackage, DownloadUrl, FileKind, FileRef, FinalizeFile, Inbox,
    InboxMetadata, InboxRecord, Link, LinkInfo, PackageFile, PartUrlsRequest, Portal, Secret,
};
use crate::web::JsonBody;

/// Above this many files a package may be listed once every [`LISTING_INTERVAL`] (spec §1).
const LISTING_LIMITED_ABOVE: usize = 10_000;
const LISTING_INTERVAL: Duration = Duration::from_secs(5);
/// Most packages on one page of the team inbox (MASV's docs for team package listings).
const MAX_INBOX_LIMIT: u64 = 50;
/// Most part URLs handed out in one batch.
const MAX_PART_BATCH: u64 = 1_000;

pub struct State {
    pub db: Db,
    pub signer: Arc<Signer>,
    pub throttle: Throttle,
    pub listing_limiter: Mutex<HashMap<String, Instant>>,
    pub public_url: url::Url,
    /// Where share links point (`HubConfig::link_base`, else `public_url`).
    pub link_base: url::Url,
    pub config: HubConfig,
    pub metrics: Metrics,
    /// Storage's read and write buffers, reused across requests.
    pub buffers: crate::direct::BufferPool,
    /// Object storage, when the files live there rather than on the hub's disk.
    pub s3: Option<Arc<super::s3::S3>>,
}

/// Counters served at `/metrics` (Prometheus text format).
#[derive(Default)]
pub struct Metrics {
    pub storage_bytes_sent: std::sync::atomic::AtomicU64,
    pub storage_bytes_received: std::sync::atomic::AtomicU64,
    pub storage_requests: std::sync::atomic::AtomicU64,
    /// Team inbox pages asked for (answered or refused).
    pub inbox_requests: std::sync::atomic::AtomicU64,
}

async fn metrics(axum::extract::State(state): axum::extract::State<Shared>) -> impl IntoResponse {
    use std::sync::atomic::Ordering::Relaxed;
    let m = &state.metrics;
    let body = format!(
        "# HELP masv_hub_storage_bytes_sent_total Bytes of blobs sent to clients.\n\
         # TYPE masv_hub_storage_bytes_sent_total counter\n\
         masv_hub_storage_bytes_sent_total {}\n\
         # HELP masv_hub_storage_bytes_received_total Bytes of parts received from clients.\n\
         # TYPE masv_hub_storage_bytes_received_total counter\n\
         masv_hub_storage_bytes_received_total {}\n\
         # HELP masv_hub_storage_requests_total Storage requests answered.\n\
         # TYPE masv_hub_storage_requests_total counter\n\
         masv_hub_storage_requests_total {}\n\
         # HELP masv_hub_inbox_requests_total Team inbox pages asked for.\n\
         # TYPE masv_hub_inbox_requests_total counter\n\
         masv_hub_inbox_requests_total {}\n",
        m.storage_bytes_sent.load(Relaxed),
        m.storage_bytes_received.load(Relaxed),
        m.storage_requests.load(Relaxed),
        m.inbox_requests.load(Relaxed),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

type Shared = Arc<State>;

pub fn router(state: Shared) -> Router {
    let state_for_metrics = state.clone();
    let v1 = Router::new()
        .route("/links/{link_id}", get(link_lookup))
        .route(
            "/packages/{package_id}/files",
            get(list_files).post(add_file),
        )
        .route("/packages/{package_id}/files/{file_id}", post(part_urls))
        .route(
            "/packages/{package_id}/files/{file_id}/download",
            get(download_url),
        )
        .route(
            "/packages/{package_id}/files/{file_id}/finalize",
            post(finalize_file),
        )
        .route("/packages/{package_id}/finalize", post(finalize_package))
        .route("/packages/{package_id}/links", post(create_link))
        .route(
            "/packages/{package_id}/links/{link_id}",
            delete(disable_link),
        )
        .route("/subdomains/portals/{subdomain}", get(portal_lookup))
        .route("/subdomains/teams/{subdomain}", get(team_lookup))
        .route("/portals/{portal_id}/packages", post(create_portal_package))
        .route("/teams/{team_id}/packages", post(create_team_package))
        .route("/teams/{team_id}/inbox", get(team_inbox))
        .route("/portals/{portal_id}", get(team_portal))
        .route("/system/packages/spec", get(package_spec))
        .route("/system/link_base", get(link_base))
        .fallback(unknown_route)
        .with_state(state.clone());
    let v1_1 = Router::new()
        .route("/teams/{team_id}/inbox", get(team_inbox))
        .route("/portals/{portal_id}", get(team_portal))
        .fallback(unknown_route)
        .with_state(state);
    Router::new()
        .nest("/v1", v1)
        .nest("/v1.1", v1_1)
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics).with_state(state_for_metrics))
        .fallback(unknown_route)
}

async fn unknown_route() -> HubError {
    HubError::NotFound("no such route; the API lives under /v1".into())
}

fn query_number(query: &BTreeMap<String, String>, key: &str) -> Result<Option<u64>, HubError> {
    query
        .get(key)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                HubError::BadRequest(format!("query parameter {key}={v:?} is not a whole number"))
            })
        })
        .transpose()
}

fn now_unix() -> i64 {
    Utc::now().timestamp()
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

fn require_id(id: &str, what: &str) -> Result<(), HubError> {
    if auth::is_id(id) {
        Ok(())
    } else {
        Err(HubError::NotFound(format!("unknown {what} {id:?}")))
    }
}

/// Waits out the delay owed by earlier wrong attempts on `key` before checking a password.
async fn throttled(state: &State, key: &str) {
    let owed = state.throttle.delay(key);
    if !owed.is_zero() {
        tokio::time::sleep(owed).await;
    }
}

/// Checks a low-entropy secret against its argon2 hash, slowing down repeated failures.
async fn check_password(
    state: &State,
    key: &str,
    given: Option<String>,
    hash: String,
    missing: &str,
) -> Result<(), HubError> {
    throttled(state, key).await;
    let Some(given) = given else {
        state.throttle.failed(key);
        return Err(HubError::Unauthorized(missing.to_owned()));
    };
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&given, &hash))
        .await
        .map_err(|e| HubError::Internal(e.to_string()))?;
    if ok {
        state.throttle.succeeded(key);
        Ok(())
    } else {
        state.throttle.failed(key);
        Err(HubError::Unauthorized(
            "wrong password or access code".into(),
        ))
    }
}

async fn hash_secret(secret: Option<Secret>) -> Result<Option<String>, HubError> {
    match secret.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(secret) => tokio::task::spawn_blocking(move || auth::hash_password(secret.expose()))
            .await
            .map_err(|e| HubError::Internal(e.to_string()))?
            .map(Some),
    }
}

/// Why a link cannot be used now, if it cannot.
fn link_unusable(link: &LinkRow, package: &PackageRow, now: DateTime<Utc>) -> Option<HubError> {
    if link.disabled {
        return Some(HubError::Forbidden(
            "this link has been disabled by its sender".into(),
        ));
    }
    if package.finalized_at.is_none() {
        return Some(HubError::Forbidden(
            "this link is not active yet: its package has not been finalized".into(),
        ));
    }
    if link.expiry.is_some_and(|e| e <= now) {
        return Some(HubError::Gone("this link has expired".into()));
    }
    if link
        .access_limit
        .is_some_and(|limit| link.access_count >= limit)
    {
        return Some(HubError::Forbidden(
            "this link's download limit has been reached".into(),
        ));
    }
    None
}

/// The package a request's `X-Package-Token` grants, checked for the access it needs.
async fn authorize(
    state: &Shared,
    headers: &HeaderMap,
    package_id: &str,
    need: Access,
) -> Result<(PackageRow, TokenClaims), HubError> {
    let token = header_text(headers, "x-package-token")
        .ok_or_else(|| HubError::Unauthorized("the X-Package-Token header is missing".into()))?;
    let claims = state.signer.check(token, now_unix()).ok_or_else(|| {
        HubError::Unauthorized("the package token is invalid or has expired".into())
    })?;
    if claims.sub != package_id {
        return Err(HubError::Unauthorized(
            "the package token is for another package".into(),
        ));
    }
    if need == Access::Upload && claims.lvl != Access::Upload {
        return Err(HubError::Forbidden(
            "a download token cannot change a package".into(),
        ));
    }
    let id = package_id.to_owned();
    let lid = claims.lid.clone();
    let (package, link) = state
        .db
        .call(move |conn| {
            Ok((
                db::package(conn, &id)?,
                lid.map(|l| db::link(conn, &l)).transpose()?.flatten(),
            ))
        })
        .await?;
    let package =
        package.ok_or_else(|| HubError::NotFound(format!("unknown package {package_id}")))?;
    if let Some(link) = link
        && (link.disabled || link.expiry.is_some_and(|e| e <= Utc::now()))
    {
        return Err(HubError::Forbidden(
            "the link this token came from is no longer active".into(),
        ));
    }
    Ok((package, claims))
}

/// The team an `X-API-KEY` belongs to, which must be `team_id`.
async fn authorize_team(
    state: &Shared,
    headers: &HeaderMap,
    team_id: &str,
) -> Result<(), HubError> {
    let key = header_text(headers, "x-api-key")
        .ok_or_else(|| HubError::Unauthorized("the X-API-KEY header is missing".into()))?;
    let throttle_key = format!("team:{team_id}");
    let hash = auth::digest(key);
    let owner = state
        .db
        .call(move |conn| db::api_key_team(conn, &hash))
        .await?;
    match owner {
        None => {
            // Only wrong keys wait: guessing is slowed down, but the team's own calls never
            // pay for someone else's guesses (API keys are long and random, unlike passwords).
            throttled(state, &throttle_key).await;
            state.throttle.failed(&throttle_key);
            Err(HubError::Unauthorized("unknown API key".into()))
        }
        Some(owner) if owner != team_id => Err(HubError::Forbidden(
            "this API key belongs to another team".into(),
        )),
        Some(_) => Ok(()),
    }
}

fn package_token(
    state: &State,
    package_id: &str,
    lvl: Access,
    lid: Option<String>,
    not_after: Option<DateTime<Utc>>,
) -> Secret {
    let mut exp = now_unix() + state.config.token_ttl.as_secs() as i64;
    if let Some(limit) = not_after {
        exp = exp.min(limit.timestamp());
    }
    Secret::new(state.signer.issue(&TokenClaims {
        sub: package_id.to_owned(),
        lvl,
        lid,
        exp,
    }))
}

fn file_kind_text(kind: FileKind) -> Result<&'static str, HubError> {
    match kind {
        FileKind::File => Ok("file"),
        FileKind::Directory => Ok("directory"),
        _ => Err(HubError::BadRequest(
            "kind must be \"file\" or \"directory\"".into(),
        )),
    }
}

fn package_file(row: &FileRow) -> PackageFile {
    PackageFile {
        id: row.id.clone(),
        kind: if row.kind == "directory" {
            FileKind::Directory
        } else {
            FileKind::File
        },
        name: row.name.clone(),
        path: row.path.clone(),
        size: row.size,
        last_modified: row.last_modified,
        virus_detected: row.virus_detected,
        create_blueprint: None,
    }
}

/// How to open the multipart upload of the file entry `file_id`: an S3 CreateMultipartUpload
/// on the hub's storage.
fn create_blueprint(state: &State, package_id: &str, file_id: &str) -> Blueprint {
    let url = match &state.s3 {
        Some(s3) => s3.create_url(package_id, file_id, state.config.url_ttl),
        None => storage::signed_url(state, "POST", package_id, file_id, &[("uploads", "")]),
    };
    Blueprint {
        url,
        method: "POST".into(),
        headers: BTreeMap::new(),
        body: String::new(),
    }
}

/// A file name as sent: one component, no separators, nothing that climbs.
fn check_name(name: &str) -> Result<(), HubError> {
    if name.is_empty() || name.len() > 1024 {
        return Err(HubError::BadRequest(
            "file name must be 1 to 1024 bytes".into(),
        ));
    }
    if name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(HubError::BadRequest(format!(
            "file name {name:?} is not a plain name; put folders in \"path\""
        )));
    }
    Ok(())
}

/// A folder inside the package, normalised to `a/b` (root: ``); `..`, `.`, NUL and `\` refused.
fn normalize_package_path(path: &str) -> Result<String, HubError> {
    if path.len() > 4096 {
        return Err(HubError::BadRequest(
            "path is longer than 4096 bytes".into(),
        ));
    }
    let mut parts = Vec::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." || part.contains(['\\', '\0']) {
            return Err(HubError::BadRequest(format!(
                "path {path:?} must be a /-separated folder inside the package, without . or .."
            )));
        }
        parts.push(part);
    }
    Ok(parts.join("/"))
}

fn looks_like_email(s: &str) -> bool {
    let Some((user, domain)) = s.split_once('@') else {
        return false;
    };
    !user.is_empty() && !domain.is_empty() && !s.contains(char::is_whitespace) && s.len() <= 320
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), HubError> {
    if value.len() > max || value.contains('\0') {
        return Err(HubError::BadRequest(format!(
            "{field} must be at most {max} bytes of text"
        )));
    }
    Ok(())
}

async fn link_lookup(
    axum::extract::State(state): axum::extract::State<Shared>,
    Path(link_id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Json<LinkInfo>, HubError> {
    require_id(&link_id, "link")?;
    let query = crate::web::query_pairs(&raw);
    let secret = query.get("secret").cloned().unwrap_or_default();
    let id = link_id.clone();
    let found = state
        .db
        .call(move |conn| {
            let Some(link) = db::link(conn, &id)? else {
                return Ok(None);
            };
            let package = db::package(conn, &link.package_id)?;
            let size: u64 = db::files(conn, &link.package_id)?
                .iter()
                .map(|f| f.size)
                .sum();
            Ok(package.map(|p| (link, p, size)))
        })
        .await?;
    // A wrong secret answers exactly like an unknown link.
    let (link, package, size) = found
        .filter(|(link, _, _)| auth::digest(&secret) == link.secret_hash)
        .ok_or_else(|| HubError::NotFound(format!("unknown link {link_id} (or wrong secret)")))?;
    if let Some(unusable) = link_unusable(&link, &package, Utc::now()) {
        return Err(unusable);
    }
    if let Some(hash) = link.password_hash.clone() {
        let given = header_text(&headers, "x-link-password").map(str::to_owned);
        check_password(
            &state,
            &format!("link:{}", link.id),
            given,
            hash,
            "this link needs a password (X-Link-Password)",
        )
        .await?;
    }
    let id = link.id.clone();
    state
        .db
        .call(move |conn| db::count_link_access(conn, &id))
        .await?;
    let expiry = link.expiry.or(package.expiry);
    Ok(Json(LinkInfo {
        branding: Branding {
            primary_color: "#1DD4CA".into(),
        },
        expiry,
        id: link.id.clone(),
        name: package.name.clone(),
        package_id: package.id.clone(),
        package_size: size,
        package_token: package_token(&state, &package.id, Access::Download, Some(link.id), expiry),
        recipient_email: link.email,
        sender_email: Some(package.sender),
    }))
}

async fn list_files(
    axum::extract::State(state): axum::extract::State<Shared>,
    Path(package_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, HubError> {
    require_id(&package_id, "package")?;
    let (package, claims) = authorize(&state, &headers, &package_id, Access::Download).await?;
    let id = package.id.clone();
    let rows = state.db.call(move |conn| db::files(conn, &id)).await?;
    if rows.len() > LISTING_LIMITED_ABOVE {
        let mut last = state
            .listing_limiter
            .lock()
            .expect("listing limiter lock is never poisoned");
        let now = Instant::now();
        if let Some(at) = last.get(&package.id)
            && now.duration_since(*at) < LISTING_INTERVAL
        {
            let wait = LISTING_INTERVAL - now.duration_since(*at);
            let mut response = HubError::TooManyRequests(format!(
                "packages of more than {LISTING_LIMITED_ABOVE} files may be listed once every {} s",
                LISTING_INTERVAL.as_secs()
            ))
            .into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
            return Ok(response);
        }
        last.insert(package.id.clone(), now);
    }
    // Recipients see only what has arrived; the sender also sees files still uploading.
    // The sender may have lost the answer of a declaration: an entry still open carries its
    // create blueprint, so the entry is adopted rather than declared twice.
    let sender = claims.lvl == Access::Upload;
    let files: Vec<PackageFile> = rows
        .iter()
        .filter(|f| f.finalized || sender)
        .map(|row| {
            let mut file = package_file(row);
            if sender && !row.finalized && row.kind == "file" {
                file.create_blueprint = Some(create_blueprint(&state, &package.id, &row.id));
            }
            file
        })
        .collect();
    Ok(Json(files).into_response())
}

async fn download_url(
    axum::extract::State(state): axum::extract::State<Shared>,
    Path((package_id, file_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<DownloadUrl>, HubError> {
    require_id(&package_id, "package")?;
    require_id(&file_id, "file")?;
    authorize(&state, &headers, &package_id, Access::Download).await?;
    let (pid, fid) = (package_id.clone(), file_id.clone());
    let file = state
        .db
        .call(move |conn| db::file(conn, &pid, &fid))
        .await?
        .ok_or_else(|| {
            HubError::NotFound(format!("unknown file {file_id} in package {package_id}"))
        })?;
    if file.kind != "file" {
        return Err(HubError::BadRequest(format!(
            "{file_id} is a directory; it has no bytes to download"
        )));
    }
    if !file.finalized {
        return Err(HubError::Conflict(format!(
            "file {file_id} has not finished uploading"
        )));
    }
    if file.virus_detected {
        return Err(HubError::Forbidden(format!(
            "file {file_id} is quarantined: a virus was detected in it"
        )));
    }
    let url = match &state.s3 {
        Some(s3) => s3.get_url(&package_id, &file_id, state.config.url_ttl),
        None => storage::signed_url(&state, "GET", &package_id, &file_id, &[]),
    };
    Ok(Json(DownloadUrl {
        method: "GET".into(),
        url,
    }))
}

async fn add_file(
    axum::extract::State(state): axum::extract::State<Shared>,
    Path(package_id): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<AddFile>,
) -> Result<(StatusCode, Json<AddedFile>), HubError> {
    require_id(&package_id, "package")?;
    let (package, _) = authorize(&state, &headers, &package_id, Access::Upload).await?;
    if package.finalized_at.is_some() {
        return Err(HubError::Conflict(
            "the package is finalized; no more files can be added".into(),
        ));
    }
    let kind = file_kind_text(req.kind)?;
    let path = if state.config.accept_hostile_names {
        check_text("name", &req.name, 4096)?;
        check_text("path", &req.path, 4096)?;
        req.path.clone()
    } else {
        check_name(&req.name)?;
        normalize_package_path(&req.path)?
    };
    let spec = state.config.spec;
    let max_size = spec.max_chunks_count * spec.max_chunk_size;
    if req.size > max_size {
        return Err(HubError::BadRequest(format!(
            "size {} is larger than the {max_size} bytes a file may have",
            req.size
        )));
    }
    let directory = kind == "directory";
    let chunk_size = spec.chunk_size_for(req.size, req.chunk_size);
    let row = FileRow {
        id: auth::new_id(),
        package_id: package.id.clone(),
        kind: kind.to_owned(),
        name: req.name,
        path,
        size: if directory { 0 } else { req.size },
        chunk_size,
        last_modified: req.last_modified,
        virus_detected: false,
        // A folder has no bytes: it is complete as soon as it is declared.
        finalized: directory,
        blob_upload: None,
    };
    let insert = row.clone();
    state
        .db
        .call(move |conn| db::insert_file(conn, &insert))
        .await?;
    // A folder carries no bytes: no multipart upload to open, so no blueprint (`null`, as a
    // docs-following service answers; clients must accept it, spec §3 step 1).
    let create_blueprint = (!directory).then(|| create_blueprint(&state, &package.id, &row.id));
    Ok((
        StatusCode::CREATED,
        Json(AddedFile {
            file: FileRef { id: row.id },
            create_blueprint,
            max_chunks_count: spec.max_chunks_count,
            max_chunk_size: spec.max_chunk_size,
            min_chunk_size: spec.min_chunk_size,
        }),
    ))
}

async fn part_urls(
    axum::extract::State(state): axum::extract::State<Shared>,
    Path((package_id, file_id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    JsonBody(req): JsonBody<PartUrlsRequest>,
) -> Result<Json<Vec<Blueprint>>, HubError> {
    require_id(&package_id, "package")?;
    require_id(&file_id, "file")?;
    authorize(&state, &headers, &package_id, Access::Upload).await?;
    let query = crate::web::query_pairs(&raw);
    let start = query_number(&query, "start")?.unwrap_or(0);
    let count = query_number(&query, "count")?.unwrap_or(1);
    let max = state.config.spec.max_chunks_count;
    if count == 0 || count > MAX_PART_BATCH || start.saturating_add(count) > max {
        return Err(HubError::BadRequest(format!(
            "start={start}&count={count}: ask for 1 to {MAX_PART_BATCH} parts at a time, within the {max} parts a file may have"
        )));
    }
    let (fid, upload_id) = (file_id.clone(), req.upload_id.clone());
    let owner = state
        .db
        .call(move |conn| db::multipart_file(conn, &upload_id))
        .await?;
    let unknown = || HubError::NotFound(format!("unknown upload_id for file {file_id}"));
    match (&state.s3, owner) {
        (_, Some(owner)) if owner == fid => {}
        (None, _) => return Err(unknown()),
        (Some(_), Some(_)) => return Err(unknown()),
        // Opened by the sender on the store itself: the store says whether it is this file's
        // (the key names the file), and the hub remembers it, to abort it if abandoned.
        (Some(s3), None) => {
            s3.parts(&package_id, &file_id, &req.upload_id)
                .await?
                .ok_or_else(unknown)?;
            let (uid, fid) = (req.upload_id.clone(), file_id.clone());
            state
                .db
                .call(move |conn| db::insert_multipart(conn, &uid, &fid))
                .await?;
        }
    }
    let blueprints = (start + 1..=start + count)
        .map(|part| {
            let url = match &state.s3 {
                Some(s3) => s3.part_url(
                    &package_id,
                    &file_id,
                    part as u16,
                    &req.upload_id,
                    state.config.url_ttl,
                ),
                None => storage::signed_url(
                    &state,
                    "PUT",
                    &package_id,
                    &file_id,
                    &[
                        ("partNumber", &part.to_string()),
                        ("uploadId", &req.upload_id),
                    ],
                ),
            };
            Blueprint {
                url,
                method: "PUT".into(),
                headers: BTreeMap::new(),
                body: String::new(),
            }
        })
        .collect();
    Ok(Json(blueprints))
}

async fn finalize_file(
    axum::extract::State(state): axum::extract::State<Shared>,
    Path((package_id, file_id)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<FinalizeFile>,
) -> Result<Json<serde_json::Value>, HubError> {
    require_id(&package_id, "package")?;
    require_id(&file_id, "file")?;
    authorize(&state, &headers, &package_id, Access::Upload).await?;
    let (pid, fid) = (package_id.clone(), file_id.clone());
    let file = state
        .db
        .call(move |conn| db::file(conn, &pid, &fid))
        .await?
        .ok_or_else(|| {
            HubError::NotFound(format!("unknown file {file_id} in package {package_id}"))
        })?;
    if file.finalized {
        return Ok(Json(
            serde_json::json!({"id": file.id, "state": "finalized"}),
        ));
    }
    storage::assemble(&state, &file, &req).await?;
    Ok(Json(
        serde_json::json!({"id": file.id, "state": "finalized"}),
    ))
}

async fn finalize_package(
    axum::extract::State(state): axum::extract::State<Shared>,
    Path(package_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, HubError> {
    require_id(&package_id, "package")?;
    let (package, _) = authorize(&state, &headers, &package_id, Access::Upload).await?;
    if package.finalized_at.is_some() {
        return Ok(Json(
            serde_json::json!({"id": package.id, "state": "finalized"}),
        ));
    }
    let id = package.id.clone();
    let files = state.db.call(move |conn| db::files(conn, &id)).await?;
    let pending: Vec<&str> = files
        .iter()
        .filter(|f| !f.finalized)
        .map(|f| f.name.as_str())
        .collect();
    if let Some(first) = pending.first() {
        return Err(HubError::BadRequest(format!(
            "{} file(s) of the package are not finalized yet (first: {first:?}); finalize them first",
            pending.len()
        )));
    }
    if !files.iter().any(|f| f.kind == "file") {
        return Err(HubError::BadRequest(
            "package must have at least 1 file".into(),
        ));
    }
    let now = Utc::now();
    let id = package.id.clone();
    state
        .db
        .call(move |conn| db::set_package_finalized(conn, &id, &now))
        .await?;
    notify_recipients(&state, &package).await?;
    tracing::info!(package_id = %package.id, files = files.len(), "package finalized");
    Ok(Json(
        serde_json::json!({"id": package.id, "state": "finalized"}),
    ))
}

/// The hub sends no email: each recipient gets a link, and the message that would have been
/// mailed is written to `outbox/` (owner-readable only) for the operator to deliver.
async fn notify_recipients(state: &Shared, package: &PackageRow) -> Result<(), HubError> {
    for email in &package.recipients {
        let link = new_link(
            state,
            package,
            CreateLink {
                email: Some(email.clone()),
                ..CreateLink::default()
            },
        )
        .await?;
        let url = share_url(state, &link.id, link.download_secret.expose());
        let message = format!(
            "To: {email}\nFrom: {sender}\nSubject: {name}\n\n{sender} sent you {name:?}.\nDownload it: {url}\n",
            sender = package.sender,
            name = package.name,
        );
        let path = state
            .config
            .data_dir
            .join("outbox")
            .join(format!("{}-{}.eml", package.id, link.id));
        write_private(&path, message.as_bytes()).await?;
        tracing::info!(package_id = %package.id, link_id = %link.id, "recipient notification written to the outbox");
    }
    Ok(())
}

async fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), HubError> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).await?;
    tokio::io::AsyncWriteExt::write_all(&mut file, bytes).await?;
    // A tokio file writes in the background: without this the message may still be empty
    // when the finalize answers.
    tokio::io::AsyncWriteExt::flush(&mut file).await?;
    Ok(())
}

/// The share URL of a link: `{link_base}{link_id}?secret=…`.
pub fn share_url(state: &State, link_id: &str, secret: &str) -> String {
    let mut url = state.link_base.clone();
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().push(link_id);
    }
    url.query_pairs_mut().append_pair("secret", secret);
    url.to_string()
}

/// `GET /system/link_base` (ours): where this hub's share links point, so that agents and
/// operators can set `share_link_base` to it.
async fn link_base(
    axum::extract::State(state): axum::extract::State<Shared>,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "link_base": state.link_base.as_str() }))
}

async fn new_link(state: &Shared, package: &PackageRow, req: CreateLink) -> Result<Link, HubError> {
    if let Some(email) = &req.email
        && !looks_like_email(email)
    {
        return Err(HubError::BadRequest(format!(
            "email {email:?} is not an email address"
        )));
    }
    let expiry = req.expiry.or(package.expiry);
    if expiry.is_some_and(|e| e <= Utc::now()) {
        return Err(HubError::BadRequest("expiry is in the past".into()));
    }
    let password_hash = match req.password {
        Some(p) if !p.is_empty() => hash_secret(Some(p)).await?,
        _ => package.password_hash.clone(),
    };
    let secret = auth::random_token(16);
    let row = LinkRow {
        id: auth::new_id(),
        package_id: package.id.clone(),
        secret_hash: auth::digest(&secret),
        email: req.email,
        password_hash,
        expiry,
        access_limit: req.access_limit.or(package.access_limit),
        access_count: 0,
        disabled: false,
    };
    let insert = row.clone();
    state
        .db
        .call(move |conn| db::insert_link(conn, &insert))
        .await?;
    Ok(Link {
        id: row.id,
        download_secret: Secret::new(secret),
        email: row.email,
        expiry: row.expiry,
        access_limit: row.access_limit,
        access_limit_enabled: row.access_limit.is_some(),
        active: package.finalized_at.is_some(),
        password: if row.password_hash.is_some() {
            "****".into()
        } else {
            String::new()
        },
    })
}

async fn create_link(
    axum::extract::State(state): axum::extract::State<Shared>,
    Path(package_id): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<CreateLink>,
) -> Result<(StatusCode, Json<Link>), HubError> {
    require_id(&package_id, "package")?;
    let (package, _) = authorize(&state, &headers, &package_id, Access::Upload).await?;
    let link = new_link(&state, &package, req).await?;
    tracing::info!(package_id = %package.id, link_id = %link.id, "link created");
    Ok((StatusCode::CREATED, Json(link)))
}

async fn disable_link(
    axum::extract::State(state): axum::extract::State<Shared>,
    Path((package_id, link_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, HubError> {
    require_id(&package_id, "package")?;
    require_id(&link_id, "link")?;
    authorize(&state, &headers, &package_id, Access::Upload).await?;
    let (pid, lid) = (package_id.clone(), link_id.clone());
    if state
        .db
        .call(move |conn| db::disable_link(conn, &pid, &lid))
        .await?
    {
        tracing::info!(%package_id, %link_id, "link disabled");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(HubError::NotFound(format!(
            "unknown link {link_id} in package {package_id}"
        )))
    }
}

async fn portal_lookup(
    axum::extract::State(state): axum::extract::State<Shared>,
    Path(subdomain): Path<String>,
) -> Result<Json<Portal>, HubError> {
    let sub = subdomain.to_ascii_lowercase();
    let portal = state
        .db
        .call(move |conn| db::portal_by_subdomain(conn, &sub))
        .await?
        .ok_or_else(|| HubError::NotFound(format!("no portal has the subdomain {subdomain:?}")))?;
    Ok(Json(Portal {
        id: portal.id,
        name: portal.name,
        subdomain: portal.subdomain,
        has_access_code: portal.access_code_hash.is_some(),
    }))
}

/// `GET /portals/{portal_id}` with the `X-API-KEY` of the portal's team: the portal, by id
/// (real MASV serves it under `/v1.1`, as the inbox).
async fn team_portal(
    axum::extract::State(state): axum::extract::State<Shared>,
    Path(portal_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Portal>, HubError> {
    require_id(&portal_id, "portal")?;
    let pid = portal_id.clone();
    let portal = state
        .db
        .call(move |conn| db::portal(conn, &pid))
        .await?
        .ok_or_else(|| HubError::NotFound(format!("unknown portal {portal_id}")))?;
    authorize_team(&state, &headers, &portal.team_id).await?;
    Ok(Json(Portal {
        id: portal.id,
        name: portal.name,
        subdomain: portal.subdomain,
        has_access_code: portal.access_code_hash.is_some(),
    }))
}

/// `GET /subdomains/teams/{subdomain}` (ours) with an `X-API-KEY` of that team: the team a
/// subdomain names, `{id, name, subdomain}`. Another team's key is refused (403), as for every
/// team route; an unknown subdomain is 404.
async fn team_lookup(
    axum::extract::State(state): axum::extract::State<Shared>,
    Path(subdomain): Path<String>,
    headers: HeaderMap,
) -> Result<Json<dto::Team>, HubError> {
    let sub = subdomain.to_ascii_lowercase();
    let found = state
        .db
        .call(move |conn| db::team_by_subdomain(conn, &sub))
        .await?;
    let Some((team, sub)) = found else {
        // Only a valid key learns that a subdomain is unknown.
        let key = header_text(&headers, "x-api-key")
            .ok_or_else(|| HubError::Unauthorized("the X-API-KEY header is missing".into()))?;
        let hash = auth::digest(key);
        if state
            .db
            .call(move |conn| db::api_key_team(conn, &hash))
            .await?
            .is_none()
        {
            return Err(HubError::Unauthorized("unknown API key".into()));
        }
        return Err(HubError::NotFound(format!(
            "no team has the subdomain {subdomain:?}"
        )));
    };
    authorize_team(&state, &headers, &team.id).await?;
    Ok(Json(dto::Team {
        id: team.id,
        name: team.name,
        subdomain: sub,
    }))
}

fn check_package_text(name: &str, description: &str) -> Result<(), HubError> {
    check_text("name", name, 1024)?;
    check_text("description", description, 16 * 1024)
}

async fn create_portal_package(
    axum::extract::State(state): axum::extract::State<Shared>,
    Path(portal_id): Path<String>,
    JsonBody(req): JsonBody<CreatePortalPackage>,
) -> Result<(StatusCode, Json<CreatedPackage>), HubError> {
    require_id(&portal_id, "portal")?;
    let pid = portal_id.clone();
    let portal = state
        .db
        .call(move |conn| db::portal(conn, &pid))
        .await?
        .ok_or_else(|| HubError::NotFound(format!("unknown portal {portal_id}")))?;
    if let Some(hash) = portal.access_code_hash.clone() {
        let given = req.access_code.as_ref().map(|c| c.expose().to_owned());
        check_password(
            &state,
            &format!("portal:{}", portal.id),
            given,
            hash,
            "this portal needs an access code",
        )
        .await?;
    }
    if !looks_like_email(&req.sender) {
        return Err(HubError::BadRequest(format!(
            "sender {:?} is not an email address",
            req.sender
        )));
    }
    check_package_text(&req.name, &req.description)?;
    let metadata = req.metadata.unwrap_or_default();
    if metadata.len() > 100
        || metadata
            .iter()
            .any(|(k, v)| k.len() > 256 || v.len() > 4096)
    {
        return Err(HubError::BadRequest(
            "metadata: at most 100 keys of 256 bytes with values of 4096 bytes".into(),
        ));
    }
    let row = PackageRow {
        id: auth::new_id(),
        team_id: portal.team_id,
        portal_id: Some(portal.id),
        name: req.name,
        description: req.description,
        sender: req.sender,
        recipients: Vec::new(),
        metadata,
        password_hash: None,
        access_limit: None,
        expiry: None,
        finalized_at: None,
        created_at: Utc::now(),
    };
    created_package(&state, row).await
}

async fn created_package(
    state: &Shared,
    row: PackageRow,
) -> Result<(StatusCode, Json<CreatedPackage>), HubError> {
    let insert = row.clone();
    state
        .db
        .call(move |conn| db::insert_package(conn, &insert))
        .await?;
    tracing::info!(package_id = %row.id, team_id = %row.team_id, portal_id = ?row.portal_id, "package created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedPackage {
            access_token: package_token(state, &row.id, Access::Upload, None, None),
            id: row.id,
            name: row.name,
        }),
    ))
}

async fn create_team_package(
    axum::extract::State(state): axum::extract::State<Shared>,
    Path(team_id): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<CreateTeamPackage>,
) -> Result<(StatusCode, Json<CreatedPackage>), HubError> {
    require_id(&team_id, "team")?;
    authorize_team(&state, &headers, &team_id).await?;
    check_package_text(&req.name, &req.description)?;
    if let Some(bad) = req.recipients.iter().find(|r| !looks_like_email(r)) {
        return Err(HubError::BadRequest(format!(
            "recipient {bad:?} is not an email address"
        )));
    }
    if req.recipients.len() > 100 {
        return Err(HubError::BadRequest("at most 100 recipients".into()));
    }
    if req.expiry.is_some_and(|e| e <= Utc::now()) {
        return Err(HubError::BadRequest("expiry is in the past".into()));
    }
    let tid = team_id.clone();
    let team = state
        .db
        .call(move |conn| db::team(conn, &tid))
        .await?
        .ok_or_else(|| HubError::NotFound(format!("unknown team {team_id}")))?;
    let row = PackageRow {
        id: auth::new_id(),
        team_id: team.id,
        portal_id: None,
        name: req.name,
        description: req.description,
        sender: team.name,
        recipients: req.recipients,
        metadata: BTreeMap::new(),
        password_hash: hash_secret(req.password).await?,
        access_limit: req.access_limit,
        expiry: req.expiry,
        finalized_at: None,
        created_at: Utc::now(),
    };
    created_package(&state, row).await
}

async fn team_inbox(
    axum::extract::State(state): axum::extract::State<Shared>,
    Path(team_id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Json<Inbox>, HubError> {
    state
        .metrics
        .inbox_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    require_id(&team_id, "team")?;
    authorize_team(&state, &headers, &team_id).await?;
    let query = crate::web::query_pairs(&raw);
    let since = query
        .get("created_at_start")
        .filter(|v| !v.is_empty())
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    HubError::BadRequest(format!("created_at_start={v:?} is not an RFC 3339 time"))
                })
        })
        .transpose()?;
    let portal = query.get("portal").filter(|v| !v.is_empty()).cloned();
    // MASV's docs for team package listings: pages start at 1, a page holds 1 to 50.
    let page = query_number(&query, "page")?.unwrap_or(1);
    if page < 1 {
        return Err(HubError::BadRequest(format!(
            "page={page}: pages start at 1"
        )));
    }
    let limit = query_number(&query, "limit")?.unwrap_or(MAX_INBOX_LIMIT);
    if !(1..=MAX_INBOX_LIMIT).contains(&limit) {
        return Err(HubError::BadRequest(format!(
            "limit={limit}: a page holds 1 to {MAX_INBOX_LIMIT} packages; ask for more pages instead"
        )));
    }
    // A page past any real one is empty, not an overflow: SQLite offsets are i64.
    let offset = (page - 1).saturating_mul(limit).min(i64::MAX as u64);
    let (total, rows) = state
        .db
        .call(move |conn| {
            let (total, packages) = db::inbox(
                conn,
                &team_id,
                portal.as_deref(),
                since.as_ref(),
                offset,
                limit,
            )?;
            let mut rows = Vec::with_capacity(packages.len());
            for package in packages {
                let files = db::files(conn, &package.id)?;
                rows.push((package, files));
            }
            Ok((total, rows))
        })
        .await?;
    let records = rows
        .into_iter()
        .map(|(package, files)| InboxRecord {
            access_token: package_token(&state, &package.id, Access::Download, None, None),
            id: package.id,
            name: package.name,
            sender: package.sender,
            size: files.iter().map(|f| f.size).sum(),
            state: "finalized".into(),
            portal_id: package.portal_id,
            created_at: Some(package.created_at),
            total_files: files.iter().filter(|f| f.kind == "file").count() as u64,
        })
        .collect();
    Ok(Json(Inbox {
        metadata: InboxMetadata { total },
        records,
    }))
}

async fn package_spec(
    axum::extract::State(state): axum::extract::State<Shared>,
) -> Json<dto::PackageSpec> {
    Json(state.config.spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_paths_are_normalised_and_never_climb() {
        assert_eq!(normalize_package_path("").unwrap(), "");
        assert_eq!(normalize_package_path("/").unwrap(), "");
        assert_eq!(normalize_package_path("/a//b/").unwrap(), "a/b");
        for bad in ["..", "a/../../b", "./a", "a\\..\\b", "a\0b"] {
            assert!(normalize_package_path(bad).is_err(), "{bad:?}");
        }
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("clip 01.mov").unwrap();
    }

    #[test]
    fn emails_are_checked_loosely() {
        assert!(looks_like_email("a@b.c"));
        assert!(!looks_like_email("a b@c"));
        assert!(!looks_like_email("@c"));
        assert!(!looks_like_email("abc"));
    }
}
