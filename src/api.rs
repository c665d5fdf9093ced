//! The agent's local REST API under `/api/v1` (spec §5, docs/agent-api.md): an axum `Router`
//! over the transfer engine, testable without a socket. Also `GET /metrics` (Prometheus text)
//! and `GET /healthz`. With an API token every request must carry `Authorization: Bearer …`.
//! No CORS headers are ever sent, so browsers keep other sites' pages away from it.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::cloud::CloudError;
use crate::cloud::dto::Secret;
use crate::dashboard::access::Access;
use crate::dashboard::stream::Sources;
use crate::metrics::throughput::Throughput;
use crate::rules::{AutomationError, Automations};
use crate::store::TransferKind;
use crate::transfer::{
    DownloadRequest, Engine, PortalUploadRequest, TeamUploadRequest, TransferError, UploadRequest,
};
use crate::web::{ErrorAnswer, JsonBody, parse_json, small_body};

impl IntoResponse for TransferError {
    fn into_response(self) -> Response {
        let status = match &self {
            TransferError::Invalid(_) => StatusCode::BAD_REQUEST,
            TransferError::NotFound { .. } => StatusCode::NOT_FOUND,
            TransferError::Conflict(_) => StatusCode::CONFLICT,
            // What the cloud said keeps its meaning: a wrong access code is still a 401.
            TransferError::Cloud(e) => match e {
                CloudError::Auth { .. } => StatusCode::UNAUTHORIZED,
                CloudError::NotFound { .. } => StatusCode::NOT_FOUND,
                CloudError::Expired { .. } => StatusCode::GONE,
                CloudError::Quarantined { .. } => StatusCode::FORBIDDEN,
                CloudError::Rejected { status, .. } => {
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST)
                }
                CloudError::Transient { .. } => StatusCode::SERVICE_UNAVAILABLE,
                CloudError::Protocol { .. } | CloudError::InvalidUrl { .. } => {
                    StatusCode::BAD_GATEWAY
                }
            },
            TransferError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "API request failed");
        }
        ErrorAnswer::new(status, self.to_string()).into_response()
    }
}

#[derive(Clone)]
struct ApiState {
    engine: Engine,
    automations: Automations,
}

impl axum::extract::FromRef<ApiState> for Engine {
    fn from_ref(state: &ApiState) -> Engine {
        state.engine.clone()
    }
}

impl axum::extract::FromRef<ApiState> for Automations {
    fn from_ref(state: &ApiState) -> Automations {
        state.automations.clone()
    }
}

impl IntoResponse for AutomationError {
    fn into_response(self) -> Response {
        let status = match &self {
            AutomationError::Unknown(_) => StatusCode::NOT_FOUND,
            AutomationError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ErrorAnswer::new(status, self.to_string()).into_response()
    }
}

/// The routes, over the engine, the automations and the throughput history, with the dashboard
/// at `/` (its live streams end when `closing` is cancelled); with `token`, every request must carry it as `Authorization: Bearer TOKEN`, or a
/// dashboard session (see [`crate::dashboard::access`]).
pub fn router(
    engine: Engine,
    automations: Automations,
    (throughput, closing): (Throughput, CancellationToken),
    token: Option<Secret>,
) -> Router {
    let live = Router::new()
        .route("/stream", get(crate::dashboard::stream::stream))
        .route("/throughput", get(crate::dashboard::stream::throughput))
        .with_state(Sources {
            engine: engine.clone(),
            automations: automations.clone(),
            throughput,
            closing,
        });
    let v1 = Router::new()
        .route("/automations", get(list_automations))
        .route("/automations/{name}", get(automation))
        .route("/automations/{name}/run", post(run_automation))
        .route("/automations/{name}/enable", post(enable_automation))
        .route("/automations/{name}/disable", post(disable_automation))
        .route(
            "/bandwidth",
            get(bandwidth).put(put_bandwidth).patch(patch_bandwidth),
        )
        .route(
            "/downloads",
            post(create_download)
                .get(list_downloads)
                .delete(delete_downloads),
        )
        .route("/downloads/pause", post(pause_downloads))
        .route("/downloads/resume", post(resume_downloads))
        .route("/downloads/{id}", get(download).delete(delete_download))
        .route("/downloads/{id}/pause", post(pause_download))
        .route("/downloads/{id}/resume", post(resume_download))
        .route(
            "/uploads",
            post(create_team_upload)
                .get(list_uploads)
                .delete(delete_uploads),
        )
        .route("/portals/uploads", post(create_portal_upload))
        .route("/uploads/pause", post(pause_uploads))
        .route("/uploads/resume", post(resume_uploads))
        .route("/uploads/{id}", get(upload).delete(delete_upload))
        .route("/uploads/{id}/pause", post(pause_upload))
        .route("/uploads/{id}/resume", post(resume_upload))
        .route("/uploads/{id}/finalize", post(finalize_upload))
        .route("/uploads/{id}/link", post(link_upload))
        .route("/uploads/{id}/files", post(add_upload_files))
        .route("/events", get(list_events))
        .route("/events/{id}", get(event))
        .route("/events/{id}/retry", post(retry_event))
        .fallback(unknown_route)
        .with_state(ApiState {
            engine: engine.clone(),
            automations: automations.clone(),
        })
        .merge(live);
    let access = Access::new(token.as_ref());
    let router = Router::new()
        .nest("/api/v1", v1)
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(unknown_route)
        .with_state(ApiState {
            engine,
            automations,
        })
        .merge(crate::dashboard::router(access.clone()));
    router.layer(axum::middleware::from_fn(move |req, next| {
        access.clone().check(req, next)
    }))
}

/// `GET /metrics`: the engine's counters and gauges, and each rule's health, in the Prometheus
/// text format.
async fn metrics(
    State(engine): State<Engine>,
    State(automations): State<Automations>,
) -> Result<Response, TransferError> {
    let gauges = engine.gauges().await?;
    let rules: Vec<crate::metrics::RuleSample> = automations
        .status()
        .await
        .automations
        .into_iter()
        .map(|r| crate::metrics::RuleSample {
            up: r.state != "error",
            last_success: r.last_success.as_deref().and_then(|t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .ok()
                    .map(|t| t.timestamp_millis() as f64 / 1000.0)
            }),
            failures: r.failures,
            name: r.name,
        })
        .collect();
    let mut text = engine.metrics().render(&gauges);
    text.push_str(&crate::metrics::render_rules(&rules));
    let deliveries = engine.store().delivery_counts().await?;
    text.push_str(&crate::metrics::render_actions(&deliveries));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// `GET /readyz`: 200 when everything the agent does unattended works, else 503 naming each
/// problem: a database that cannot write, every rule in error (with its last error). Liveness
/// (`/healthz`) does not fail for a rule: a restart would not mount a share.
async fn readyz(State(engine): State<Engine>, State(automations): State<Automations>) -> Response {
    let mut problems = Vec::new();
    if let Err(e) = engine.store().probe_write().await {
        problems.push(format!("the agent's database cannot write: {e}"));
    }
    for rule in automations.status().await.automations {
        if rule.state == "error" {
            problems.push(format!(
                "rule {:?} is in error: {}",
                rule.name,
                rule.last_error.as_deref().unwrap_or("see the agent's log")
            ));
        }
    }
    if problems.is_empty() {
        return Json(json!({ "status": "ready" })).into_response();
    }
    // The `{code, message}` of every error, and the problems one by one.
    let body = json!({ "code": 503, "message": problems.join("; "), "problems": problems });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// `GET /healthz`: 200 once the agent serves and its database takes writes, else 503 with the
/// cause (a full disk under the data folder, say: transfers wait meanwhile, and go on by
/// themselves once it can write again).
async fn healthz(State(engine): State<Engine>) -> Response {
    match engine.store().probe_write().await {
        Ok(()) => Json(json!({ "status": "ok" })).into_response(),
        Err(e) => ErrorAnswer::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the agent's database cannot write: {e}; free space under the data folder"),
        )
        .into_response(),
    }
}

/// An event as the API shows it: its payload (as the actions get it) and each delivery's
/// state, attempts and last error.
fn event_view(e: crate::store::EventRecord) -> serde_json::Value {
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| crate::cloud::dto::format_time(&t))
            .unwrap_or_default()
    };
    let deliveries: Vec<serde_json::Value> = e
        .deliveries
        .into_iter()
        .map(|d| {
            json!({
                "action": d.action,
                "kind": d.kind,
                "state": d.state,
                "attempts": d.attempts,
                "last_error": d.last_error,
                "output": d.output,
                "next_attempt_at": (d.state == "pending").then(|| time(d.next_attempt_ms)),
                "updated_at": d.updated_at,
            })
        })
        .collect();
    json!({
        "id": e.id,
        "event": e.kind,
        "rule": e.rule,
        "transfer_id": e.transfer_id,
        "created_at": e.created_at,
        "payload": serde_json::from_str::<serde_json::Value>(&e.payload).unwrap_or_default(),
        "deliveries": deliveries,
    })
}

/// `GET /api/v1/events[?failed=true][&limit=N]`: the latest events, newest first (100 unless
/// `limit` says, at most 10,000); `failed`: only those with a delivery given up or failing.
async fn list_events(
    State(engine): State<Engine>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Response> {
    let query = crate::web::query_pairs(&raw);
    let mut failed = false;
    let mut limit = 100u32;
    for (key, value) in &query {
        match key.as_str() {
            "failed" => {
                failed = match value.as_str() {
                    "" | "true" | "1" => true,
                    "false" | "0" => false,
                    other => {
                        return Err(ErrorAnswer::new(
                            StatusCode::BAD_REQUEST,
                            format!("failed={other:?}: use true or false"),
                        )
                        .into_response());
                    }
                }
            }
            "limit" => {
                limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| {
                        ErrorAnswer::new(
                            StatusCode::BAD_REQUEST,
                            format!("limit={value:?}: use a number from 1 to 10000"),
                        )
                        .into_response()
                    })?
            }
            other => {
                return Err(ErrorAnswer::new(
                    StatusCode::BAD_REQUEST,
                    format!("unknown query parameter {other:?}; use failed or limit"),
                )
                .into_response());
            }
        }
    }
    let events = engine
        .store()
        .events(failed, limit)
        .await
        .map_err(|e| TransferError::from(e).into_response())?;
    let events: Vec<serde_json::Value> = events.into_iter().map(event_view).collect();
    Ok(Json(json!({ "events": events })).into_response())
}

async fn event(State(engine): State<Engine>, Path(id): Path<String>) -> Result<Response, Response> {
    match engine.store().event(&id).await {
        Ok(Some(e)) => Ok(Json(event_view(e)).into_response()),
        Ok(None) => Err(no_event(&id)),
        Err(e) => Err(TransferError::from(e).into_response()),
    }
}

fn no_event(id: &str) -> Response {
    ErrorAnswer::new(
        StatusCode::NOT_FOUND,
        format!("no event {id}; list them with `masv events ls`"),
    )
    .into_response()
}

/// `POST /api/v1/events/{id}/retry`: the deliveries of the event that were given up are
/// attempted again now (those delivered or still pending are left as they are).
async fn retry_event(
    State(engine): State<Engine>,
    Path(id): Path<String>,
) -> Result<Response, Response> {
    let store = engine.store();
    let internal = |e: crate::store::StoreError| TransferError::from(e).into_response();
    if store.event(&id).await.map_err(internal)?.is_none() {
        return Err(no_event(&id));
    }
    let retried = store.retry_event(&id).await.map_err(internal)?;
    let event = store
        .event(&id)
        .await
        .map_err(internal)?
        .ok_or_else(|| no_event(&id))?;
    Ok(Json(json!({ "retried": retried, "event": event_view(event) })).into_response())
}

async fn unknown_route() -> ErrorAnswer {
    ErrorAnswer::new(
        StatusCode::NOT_FOUND,
        "no such route; the API lives under /api/v1",
    )
}

fn query_flag(query: &BTreeMap<String, String>, key: &str) -> Result<bool, ErrorAnswer> {
    match query.get(key).map(String::as_str) {
        None => Ok(false),
        Some("" | "true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(ErrorAnswer::new(
            StatusCode::BAD_REQUEST,
            format!("{key}={other:?}: use true or false"),
        )),
    }
}

/// The states a download can be in (spec §5: downloads have no `idle`).
const DOWNLOAD_STATES: [&str; 4] = ["transferring", "paused", "complete", "error"];
/// The states an upload can be in.
const UPLOAD_STATES: [&str; 5] = ["transferring", "paused", "idle", "complete", "error"];

/// `?states=complete,error`: the states to act on, checked against `known`.
fn query_states(
    query: &BTreeMap<String, String>,
    kind: &str,
    known: &[&str],
) -> Result<Option<Vec<String>>, ErrorAnswer> {
    let Some(states) = query.get("states") else {
        return Ok(None);
    };
    let states: Vec<String> = states
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(bad) = states.iter().find(|s| !known.contains(&s.as_str())) {
        return Err(ErrorAnswer::new(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown state {bad:?}; {kind} states are {}",
                known.join(", ")
            ),
        ));
    }
    Ok(Some(states))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveFiles {
    #[serde(default)]
    remove_files: bool,
}

/// `remove_files` from the query or from an optional JSON body (seed 001 uses the body).
async fn remove_files_flag(
    query: &BTreeMap<String, String>,
    req: Request,
) -> Result<bool, ErrorAnswer> {
    let in_query = query_flag(query, "remove_files")?;
    let body = small_body(req, &()).await?;
    let in_body = if body.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        parse_json::<RemoveFiles>(&body)?.remove_files
    };
    Ok(in_query || in_body)
}

/// A JSON request body whose `chunk_size` may be written `"100MiB"` as well as in bytes.
struct SizedJson<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S>
    for SizedJson<T>
{
    type Rejection = ErrorAnswer;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = small_body(req, state).await?;
        let mut value: serde_json::Value = parse_json(&bytes)?;
        if let Some(size) = value.get_mut("chunk_size")
            && let Some(text) = size.as_str()
        {
            let bytes = crate::config::parse_size(text).map_err(|e| {
                ErrorAnswer::new(StatusCode::BAD_REQUEST, format!("chunk_size: {e}"))
            })?;
            *size = json!(bytes);
        }
        serde_json::from_value(value).map(SizedJson).map_err(|e| {
            ErrorAnswer::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"))
        })
    }
}

async fn create_download(
    State(engine): State<Engine>,
    SizedJson(req): SizedJson<DownloadRequest>,
) -> Result<Json<serde_json::Value>, TransferError> {
    let id = engine.create_download(req).await?;
    Ok(Json(json!({ "download_id": id })))
}

async fn list_downloads(State(engine): State<Engine>) -> Result<Response, TransferError> {
    Ok(Json(engine.list(TransferKind::Download).await?).into_response())
}

async fn download(
    State(engine): State<Engine>,
    Path(id): Path<String>,
) -> Result<Response, TransferError> {
    Ok(Json(engine.detail(TransferKind::Download, &id).await?).into_response())
}

async fn pause_download(
    State(engine): State<Engine>,
    Path(id): Path<String>,
) -> Result<Response, TransferError> {
    Ok(Json(engine.pause(TransferKind::Download, &id).await?).into_response())
}

async fn resume_download(
    State(engine): State<Engine>,
    Path(id): Path<String>,
) -> Result<Response, TransferError> {
    Ok(Json(engine.resume(TransferKind::Download, &id).await?).into_response())
}

async fn pause_downloads(State(engine): State<Engine>) -> Result<Response, TransferError> {
    let ids = engine.pause_all(TransferKind::Download, true).await?;
    Ok(Json(json!({ "download_ids": ids })).into_response())
}

async fn resume_downloads(State(engine): State<Engine>) -> Result<Response, TransferError> {
    let ids = engine.pause_all(TransferKind::Download, false).await?;
    Ok(Json(json!({ "download_ids": ids })).into_response())
}

async fn delete_download(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    req: Request,
) -> Result<Response, Response> {
    let remove = remove_files_flag(&crate::web::query_pairs(&raw), req)
        .await
        .map_err(IntoResponse::into_response)?;
    engine
        .delete(TransferKind::Download, &id, remove)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(Json(json!({ "download_ids": [id] })).into_response())
}

async fn delete_downloads(
    State(engine): State<Engine>,
    RawQuery(raw): RawQuery,
    req: Request,
) -> Result<Response, Response> {
    let query = crate::web::query_pairs(&raw);
    let states =
        query_states(&query, "download", &DOWNLOAD_STATES).map_err(IntoResponse::into_response)?;
    let remove = remove_files_flag(&query, req)
        .await
        .map_err(IntoResponse::into_response)?;
    let ids = engine
        .delete_all(TransferKind::Download, states.as_deref(), remove)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(Json(json!({ "download_ids": ids })).into_response())
}

async fn created_upload(
    engine: &Engine,
    req: UploadRequest,
) -> Result<Json<serde_json::Value>, TransferError> {
    let (id, link) = engine.create_upload(req).await?;
    Ok(Json(match link {
        Some(link) => json!({ "upload_id": id, "link": link }),
        None => json!({ "upload_id": id }),
    }))
}

async fn create_team_upload(
    State(engine): State<Engine>,
    SizedJson(req): SizedJson<TeamUploadRequest>,
) -> Result<Json<serde_json::Value>, TransferError> {
    created_upload(&engine, UploadRequest::Team(req)).await
}

async fn create_portal_upload(
    State(engine): State<Engine>,
    SizedJson(req): SizedJson<PortalUploadRequest>,
) -> Result<Json<serde_json::Value>, TransferError> {
    created_upload(&engine, UploadRequest::Portal(req)).await
}

async fn list_uploads(State(engine): State<Engine>) -> Result<Response, TransferError> {
    Ok(Json(engine.list(TransferKind::Upload).await?).into_response())
}

async fn upload(
    State(engine): State<Engine>,
    Path(id): Path<String>,
) -> Result<Response, TransferError> {
    Ok(Json(engine.detail(TransferKind::Upload, &id).await?).into_response())
}

async fn pause_upload(
    State(engine): State<Engine>,
    Path(id): Path<String>,
) -> Result<Response, TransferError> {
    Ok(Json(engine.pause(TransferKind::Upload, &id).await?).into_response())
}

async fn resume_upload(
    State(engine): State<Engine>,
    Path(id): Path<String>,
) -> Result<Response, TransferError> {
    Ok(Json(engine.resume(TransferKind::Upload, &id).await?).into_response())
}

async fn pause_uploads(State(engine): State<Engine>) -> Result<Response, TransferError> {
    let ids = engine.pause_all(TransferKind::Upload, true).await?;
    Ok(Json(json!({ "upload_ids": ids })).into_response())
}

async fn resume_uploads(State(engine): State<Engine>) -> Result<Response, TransferError> {
    let ids = engine.pause_all(TransferKind::Upload, false).await?;
    Ok(Json(json!({ "upload_ids": ids })).into_response())
}

async fn finalize_upload(
    State(engine): State<Engine>,
    Path(id): Path<String>,
) -> Result<Response, TransferError> {
    Ok(Json(engine.finalize(&id).await?).into_response())
}

async fn link_upload(
    State(engine): State<Engine>,
    Path(id): Path<String>,
) -> Result<Response, TransferError> {
    Ok(Json(engine.link(&id).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddPaths {
    paths: Vec<std::path::PathBuf>,
}

async fn add_upload_files(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    SizedJson(req): SizedJson<AddPaths>,
) -> Result<Response, TransferError> {
    Ok(Json(engine.add_files(&id, req.paths).await?).into_response())
}

async fn delete_upload(
    State(engine): State<Engine>,
    Path(id): Path<String>,
) -> Result<Response, TransferError> {
    engine.delete(TransferKind::Upload, &id, false).await?;
    Ok(Json(json!({ "upload_ids": [id] })).into_response())
}

async fn delete_uploads(
    State(engine): State<Engine>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Response> {
    let states = query_states(&crate::web::query_pairs(&raw), "upload", &UPLOAD_STATES)
        .map_err(IntoResponse::into_response)?;
    let ids = engine
        .delete_all(TransferKind::Upload, states.as_deref(), false)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(Json(json!({ "upload_ids": ids })).into_response())
}

async fn list_automations(State(automations): State<Automations>) -> Response {
    Json(automations.status().await).into_response()
}

async fn automation(
    State(automations): State<Automations>,
    Path(name): Path<String>,
) -> Result<Response, AutomationError> {
    let status = automations.status().await;
    let rule = status
        .automations
        .into_iter()
        .find(|a| a.name == name)
        .ok_or(AutomationError::Unknown(name))?;
    Ok(Json(rule).into_response())
}

async fn run_automation(
    State(automations): State<Automations>,
    Path(name): Path<String>,
) -> Result<Response, AutomationError> {
    automations.run_now(&name)?;
    Ok(Json(json!({ "name": name, "run": true })).into_response())
}

async fn enable_automation(
    State(automations): State<Automations>,
    Path(name): Path<String>,
) -> Result<Response, AutomationError> {
    automations.set_enabled(&name, true).await?;
    Ok(Json(json!({ "name": name, "enabled": true })).into_response())
}

async fn disable_automation(
    State(automations): State<Automations>,
    Path(name): Path<String>,
) -> Result<Response, AutomationError> {
    automations.set_enabled(&name, false).await?;
    Ok(Json(json!({ "name": name, "enabled": false })).into_response())
}

async fn bandwidth(State(engine): State<Engine>) -> Response {
    Json(engine.bandwidth()).into_response()
}

/// Checks new bandwidth settings (the `[bandwidth]` section as JSON) and puts them in force.
fn set_bandwidth(engine: &Engine, settings: serde_json::Value) -> Result<Response, ErrorAnswer> {
    let bad = |message: String| ErrorAnswer::new(StatusCode::BAD_REQUEST, message);
    let raw: crate::config::RawBandwidth =
        serde_json::from_value(settings).map_err(|e| bad(format!("bandwidth settings: {e}")))?;
    let settings = crate::config::BandwidthSettings::check(raw).map_err(|problems| {
        let all: Vec<String> = problems.into_iter().map(|p| p.message).collect();
        bad(all.join("; "))
    })?;
    Ok(Json(engine.set_bandwidth(settings)).into_response())
}

/// `PUT /bandwidth`: replaces every setting (what the body leaves out is unlimited or uncapped).
async fn put_bandwidth(
    State(engine): State<Engine>,
    JsonBody(settings): JsonBody<serde_json::Value>,
) -> Result<Response, ErrorAnswer> {
    set_bandwidth(&engine, settings)
}

/// `PATCH /bandwidth`: a JSON merge patch (RFC 7396) over the settings in force: the keys given
/// change, `null` removes a key (no limit, no cap), the others stay.
async fn patch_bandwidth(
    State(engine): State<Engine>,
    JsonBody(patch): JsonBody<serde_json::Value>,
) -> Result<Response, ErrorAnswer> {
    let mut settings = serde_json::to_value(engine.bandwidth_settings().raw())
        .expect("bandwidth settings serialize");
    merge_patch(&mut settings, patch);
    set_bandwidth(&engine, settings)
}

/// RFC 7396.
fn merge_patch(target: &mut serde_json::Value, patch: serde_json::Value) {
    let serde_json::Value::Object(patch) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            map.remove(&key);
        } else {
            merge_patch(map.entry(key).or_insert(serde_json::Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_patch_changes_what_it_names_and_removes_nulls() {
        let mut settings = json!({"upload": "10MiB", "download": "1Gbit", "schedule": [{"start": "09:00", "end": "17:00"}]});
        merge_patch(
            &mut settings,
            json!({"upload": null, "max_active_downloads": 1, "schedule": []}),
        );
        assert_eq!(
            settings,
            json!({"download": "1Gbit", "max_active_downloads": 1, "schedule": []})
        );
    }
}
