//! [`Client`]: the typed client of the MASV cloud API (spec §1–4), one method per route.
//!
//! Owns URL building (every id goes in as one percent-encoded path segment), the HTTP clients
//! and their timeouts and redirect rules, the waits on `429` for idempotent GETs, executing the
//! storage blueprints the service hands out, and reading answers into the types of
//! [`super::dto`]. What a failure means is decided in [`super::error`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use reqwest::header::{
    CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, HeaderMap, HeaderName, HeaderValue, RANGE,
};
use reqwest::redirect::Policy;
use reqwest::{Body, Method, Request, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use url::Url;

use super::dto::{
    AddFile, AddedFile, Blueprint, CreateLink, CreatePortalPackage, CreateTeamPackage,
    CreatedPackage, DownloadUrl, FinalizeFile, Inbox, InboxQuery, Link, LinkInfo, PackageFile,
    PackageSpec, PartUrlsRequest, Portal, Secret, Team, format_time,
};
use super::error::{self, CloudError, Route};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// reqwest's read timeout: per read on response bodies, but a fixed deadline from sending until
/// the response headers. Fine for API calls and ranged GETs; fatal for part uploads, which use
/// [`STALL_TIMEOUT`] instead.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// A part upload fails when no body chunk was taken (or, once sent, no answer came) for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Finalizing assembles up to 10,000 parts on the service side, which can take minutes.
const FINALIZE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const MAX_REDIRECTS: usize = 10;

/// Idempotent GETs answered `429` are retried this many times before the caller sees it.
const RATE_LIMIT_RETRIES: u32 = 3;
/// The wait when a `429` has no `Retry-After`: the spec's one listing every 5 s.
const RATE_LIMIT_DEFAULT_WAIT: Duration = Duration::from_secs(5);
const RATE_LIMIT_MAX_WAIT: Duration = Duration::from_secs(60);

/// Largest answer read whole (file listings of big packages are megabytes; more is abuse).
const JSON_BODY_LIMIT: usize = 256 * 1024 * 1024;
const XML_BODY_LIMIT: usize = 1024 * 1024;

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const X_PACKAGE_TOKEN: HeaderName = HeaderName::from_static("x-package-token");
const X_LINK_PASSWORD: HeaderName = HeaderName::from_static("x-link-password");

/// A client of one MASV-compatible cloud (the real service or a hub). Cheap to clone: the
/// connection pools are shared.
#[derive(Clone)]
pub struct Client {
    /// API routes: they carry credentials in headers, so redirects are followed only within
    /// the same origin (reqwest strips only `Authorization`-like headers on cross-host hops).
    api: reqwest::Client,
    /// Ranged GETs and multipart creation on signed URLs: redirects followed, never to http.
    storage: reqwest::Client,
    /// Part uploads and finalizes: no read timeout (see [`READ_TIMEOUT`]), no redirects.
    slow: reqwest::Client,
    base: Url,
    inbox_base: Url,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &shown(&self.base))
            .field("inbox_base", &shown(&self.inbox_base))
            .finish_non_exhaustive()
    }
}

/// What a request is, for the error mapping and the messages.
struct Call {
    route: Route,
    what: String,
    /// Whether a `429` is waited out here (idempotent GETs only, spec §1).
    wait_on_rate_limit: bool,
}

impl Call {
    fn new(route: Route, what: impl Into<String>) -> Call {
        Call {
            route,
            what: what.into(),
            wait_on_rate_limit: false,
        }
    }

    fn idempotent(mut self) -> Call {
        self.wait_on_rate_limit = true;
        self
    }
}

impl Client {
    /// A client of the cloud at `base` (for example `https://api.massive.app/v1`). The inbox is
    /// served from [`default_inbox_base`] unless [`Client::with_inbox_base`] says otherwise.
    pub fn new(base: &str) -> Result<Client, CloudError> {
        let base = parse_base(base, "cloud base URL")?;
        let inbox_base = default_inbox_base(&base);
        let user_agent = concat!("masv-agent/", env!("CARGO_PKG_VERSION"));
        let build = |builder: reqwest::ClientBuilder| {
            builder
                .user_agent(user_agent)
                .connect_timeout(CONNECT_TIMEOUT)
                .build()
                .map_err(|e| CloudError::Protocol {
                    message: format!("could not set up the HTTP client: {e}"),
                })
        };
        Ok(Client {
            api: build(
                reqwest::Client::builder()
                    .read_timeout(READ_TIMEOUT)
                    .redirect(same_origin_redirects()),
            )?,
            storage: build(
                reqwest::Client::builder()
                    .read_timeout(READ_TIMEOUT)
                    .redirect(no_downgrade_redirects()),
            )?,
            slow: build(reqwest::Client::builder().redirect(Policy::none()))?,
            base,
            inbox_base,
        })
    }

    /// Serves the team inbox from `base` instead (real MASV: `https://api.massive.app/v1.1`).
    pub fn with_inbox_base(mut self, base: &str) -> Result<Client, CloudError> {
        self.inbox_base = parse_base(base, "inbox base URL")?;
        Ok(self)
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    pub fn inbox_base_url(&self) -> &Url {
        &self.inbox_base
    }

    /// `GET /links/{id}?secret=` (+ `X-Link-Password`): the package behind a download link.
    pub async fn link(
        &self,
        link_id: &str,
        secret: &Secret,
        password: Option<&Secret>,
    ) -> Result<LinkInfo, CloudError> {
        let what = "link lookup";
        let url = self.link_url(link_id, secret)?;
        let mut headers = HeaderMap::new();
        if let Some(password) = password {
            headers.insert(
                X_LINK_PASSWORD,
                secret_header(password, what, "the link password")?,
            );
        }
        self.get_json(Call::new(Route::Link, what), url, headers)
            .await
    }

    /// `GET /packages/{id}/files`: every entry of a package.
    pub async fn package_files(
        &self,
        package_id: &str,
        token: &Secret,
    ) -> Result<Vec<PackageFile>, CloudError> {
        let what = "file listing";
        let url = self.api_url(&["packages", package_id, "files"])?;
        let headers = token_headers(token, what)?;
        self.get_json(Call::new(Route::Package, what), url, headers)
            .await
    }

    /// `GET /packages/{p}/files/{f}/download`: a pre-signed URL for one file's bytes.
    pub async fn download_url(
        &self,
        package_id: &str,
        file_id: &str,
        token: &Secret,
    ) -> Result<DownloadUrl, CloudError> {
        let what = "download URL request";
        let url = self.api_url(&["packages", package_id, "files", file_id, "download"])?;
        let headers = token_headers(token, what)?;
        self.get_json(Call::new(Route::FileDownload, what), url, headers)
            .await
    }

    /// `GET /subdomains/portals/{subdomain}` (no auth).
    pub async fn portal(&self, subdomain: &str) -> Result<Portal, CloudError> {
        let url = self.api_url(&["subdomains", "portals", subdomain])?;
        self.get_json(
            Call::new(Route::Package, "portal lookup"),
            url,
            HeaderMap::new(),
        )
        .await
    }

    /// `GET /subdomains/teams/{subdomain}` with `X-API-KEY`: the team a subdomain names.
    pub async fn team_by_subdomain(
        &self,
        subdomain: &str,
        api_key: &Secret,
    ) -> Result<Team, CloudError> {
        let what = "team lookup by subdomain";
        let url = self.api_url(&["subdomains", "teams", subdomain])?;
        let headers = api_key_headers(api_key, what)?;
        self.get_json(Call::new(Route::Team, what), url, headers)
            .await
    }

    /// `POST /portals/{portal_id}/packages`: a package sent through a portal (no account).
    pub async fn create_portal_package(
        &self,
        portal_id: &str,
        req: &CreatePortalPackage,
    ) -> Result<CreatedPackage, CloudError> {
        let url = self.api_url(&["portals", portal_id, "packages"])?;
        let call = Call::new(Route::Package, "portal package creation");
        let response = self
            .send_json(&call, Method::POST, url, HeaderMap::new(), Some(req))
            .await?;
        read_json(&call, response).await
    }

    /// `POST /teams/{team_id}/packages` with `X-API-KEY`.
    pub async fn create_team_package(
        &self,
        team_id: &str,
        api_key: &Secret,
        req: &CreateTeamPackage,
    ) -> Result<CreatedPackage, CloudError> {
        let what = "team package creation";
        let url = self.api_url(&["teams", team_id, "packages"])?;
        let headers = api_key_headers(api_key, what)?;
        let call = Call::new(Route::Team, what);
        let response = self
            .send_json(&call, Method::POST, url, headers, Some(req))
            .await?;
        read_json(&call, response).await
    }

    /// `POST /packages/{id}/files`: registers a file and returns the blueprint that creates its
    /// multipart upload.
    pub async fn add_file(
        &self,
        package_id: &str,
        token: &Secret,
        req: &AddFile,
    ) -> Result<AddedFile, CloudError> {
        let what = "adding a file to the package";
        let url = self.api_url(&["packages", package_id, "files"])?;
        let headers = token_headers(token, what)?;
        let call = Call::new(Route::Package, what);
        let response = self
            .send_json(&call, Method::POST, url, headers, Some(req))
            .await?;
        read_json(&call, response).await
    }

    /// Executes a create blueprint verbatim (an S3 CreateMultipartUpload) and returns the
    /// `UploadId` of its XML answer.
    pub async fn create_multipart(&self, blueprint: &Blueprint) -> Result<String, CloudError> {
        let target = StorageRequest::parse(blueprint, Method::POST, "multipart upload creation")?;
        let call = Call::new(Route::Storage, target.what.clone());
        let mut request = Request::new(target.method, target.url);
        *request.headers_mut() = target.headers;
        // Explicit even when 0: hyper omits it for an empty body, and `?uploads` has none.
        request
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(blueprint.body.len()));
        *request.body_mut() = Some(Body::from(blueprint.body.clone()));
        let response = self.execute(&self.storage, &call, request).await?;
        let body = read_body(&call, response, XML_BODY_LIMIT).await?;
        parse_upload_id(&call.what, &body)
    }

    /// `POST /packages/{p}/files/{f}?start=&count=`: blueprints for parts `start+1 ..=
    /// start+count`, in order. The service may answer fewer than asked; the caller checks.
    pub async fn part_urls(
        &self,
        package_id: &str,
        file_id: &str,
        token: &Secret,
        upload_id: &str,
        start: u64,
        count: u64,
    ) -> Result<Vec<Blueprint>, CloudError> {
        let what = "part URL request";
        let url = self.part_urls_url(package_id, file_id, start, count)?;
        let headers = token_headers(token, what)?;
        let call = Call::new(Route::Package, what);
        let body = PartUrlsRequest {
            upload_id: upload_id.to_owned(),
        };
        let response = self
            .send_json(&call, Method::POST, url, headers, Some(&body))
            .await?;
        read_json(&call, response).await
    }

    /// Uploads one part: `body` must yield exactly `len` bytes. Returns the `ETag` header exactly
    /// as storage sent it (quoted), for the file finalize.
    ///
    /// There is no overall deadline (a 5 GiB part takes as long as it takes); the upload fails
    /// as `Transient` when the body made no progress, or no answer came, for 60 s.
    /// Sends one part; `content_md5`, when known, lets the storage refuse bytes corrupted on
    /// the way (`400 BadDigest`, retried). Returns the ETag as the storage wrote it.
    pub async fn put_part(
        &self,
        blueprint: &Blueprint,
        body: Body,
        len: u64,
        content_md5: Option<[u8; 16]>,
    ) -> Result<String, CloudError> {
        let target = StorageRequest::parse(blueprint, Method::PUT, "part upload")?;
        let call = Call::new(Route::Storage, target.what.clone());
        let progress = Progress::new();
        let mut request = Request::new(target.method, target.url);
        *request.headers_mut() = target.headers;
        // S3 refuses chunked part uploads (411): the length must be announced.
        request
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(len));
        if let Some(md5) = content_md5 {
            use base64::Engine as _;
            let value = base64::engine::general_purpose::STANDARD.encode(md5);
            request.headers_mut().insert(
                "content-md5",
                HeaderValue::from_str(&value).expect("base64 is a valid header value"),
            );
        }
        *request.body_mut() = Some(Body::wrap(ProgressBody {
            inner: body,
            progress: progress.clone(),
            len,
        }));
        let response = stall_guard(
            &call.what,
            &progress,
            STALL_TIMEOUT,
            self.execute(&self.slow, &call, request),
        )
        .await?;
        let etag = response
            .headers()
            .get(ETAG)
            .ok_or_else(|| CloudError::Protocol {
                message: format!("{}: storage answered without an ETag header", call.what),
            })?
            .to_str()
            .map_err(|_| CloudError::Protocol {
                message: format!("{}: the ETag header is not text", call.what),
            })?
            .to_owned();
        // The part is stored; reading the (empty) answer only lets the connection be reused.
        let _ = tokio::time::timeout(STALL_TIMEOUT, error::read_limited(response, 64 * 1024)).await;
        Ok(etag)
    }

    /// Starts fetching a file's bytes, `range` being inclusive (`Range: bytes=a-b`). Succeeds
    /// only when the answer holds what was asked: a `206` starting at `a` (ending at `b`, or
    /// earlier at the end of the file), or a `200` when no range was asked or the range is the
    /// whole body. The caller streams the body ([`CloudError::transport`] maps its errors).
    pub async fn get_range(
        &self,
        url: &DownloadUrl,
        range: Option<(u64, u64)>,
    ) -> Result<Response, CloudError> {
        let target =
            StorageRequest::from_parts(url.url.expose(), &url.method, Method::GET, "download")?;
        let call = Call::new(Route::Storage, target.what);
        let mut request = Request::new(target.method, target.url);
        if let Some((start, end)) = range {
            let value = HeaderValue::try_from(format!("bytes={start}-{end}"))
                .expect("digits, '-' and '=' are a valid header value");
            request.headers_mut().insert(RANGE, value);
        }
        let response = self.execute(&self.storage, &call, request).await?;
        check_range(range, response.status(), response.headers()).map_err(|why| {
            CloudError::Protocol {
                message: format!("{}: {why}", call.what),
            }
        })?;
        Ok(response)
    }

    /// `POST /packages/{p}/files/{f}/finalize`: assembles the parts into the file.
    pub async fn finalize_file(
        &self,
        package_id: &str,
        file_id: &str,
        token: &Secret,
        req: &FinalizeFile,
    ) -> Result<(), CloudError> {
        let what = "file finalize";
        let url = self.api_url(&["packages", package_id, "files", file_id, "finalize"])?;
        let headers = token_headers(token, what)?;
        let call = Call::new(Route::Package, what);
        let mut request = json_request(&call, Method::POST, url, headers, Some(req))?;
        *request.timeout_mut() = Some(FINALIZE_TIMEOUT);
        let response = self.execute(&self.slow, &call, request).await?;
        drain(response).await;
        Ok(())
    }

    /// `POST /packages/{id}/finalize` (no body): locks the package and activates its links.
    pub async fn finalize_package(
        &self,
        package_id: &str,
        token: &Secret,
    ) -> Result<(), CloudError> {
        let what = "package finalize";
        let url = self.api_url(&["packages", package_id, "finalize"])?;
        let headers = token_headers(token, what)?;
        let call = Call::new(Route::Package, what);
        let mut request = json_request::<()>(&call, Method::POST, url, headers, None)?;
        *request.timeout_mut() = Some(FINALIZE_TIMEOUT);
        let response = self.execute(&self.slow, &call, request).await?;
        drain(response).await;
        Ok(())
    }

    /// `POST /packages/{id}/links` → `201` with the link and its download secret.
    pub async fn create_link(
        &self,
        package_id: &str,
        token: &Secret,
        req: &CreateLink,
    ) -> Result<Link, CloudError> {
        let what = "link creation";
        let url = self.api_url(&["packages", package_id, "links"])?;
        let headers = token_headers(token, what)?;
        let call = Call::new(Route::Package, what);
        let response = self
            .send_json(&call, Method::POST, url, headers, Some(req))
            .await?;
        read_json(&call, response).await
    }

    /// `DELETE /packages/{p}/links/{l}` → `204`.
    pub async fn disable_link(
        &self,
        package_id: &str,
        link_id: &str,
        token: &Secret,
    ) -> Result<(), CloudError> {
        let what = "link disable";
        let url = self.api_url(&["packages", package_id, "links", link_id])?;
        let headers = token_headers(token, what)?;
        let call = Call::new(Route::Package, what);
        let response = self
            .send_json::<()>(&call, Method::DELETE, url, headers, None)
            .await?;
        drain(response).await;
        Ok(())
    }

    /// `GET {inbox_base}/teams/{t}/inbox?…` with `X-API-KEY`: finalized packages received.
    pub async fn team_inbox(
        &self,
        team_id: &str,
        api_key: &Secret,
        query: &InboxQuery,
    ) -> Result<Inbox, CloudError> {
        let what = "team inbox";
        let url = self.inbox_url(team_id, query)?;
        let headers = api_key_headers(api_key, what)?;
        self.get_json(Call::new(Route::Team, what), url, headers)
            .await
    }

    /// `GET {inbox_base}/portals/{portal_id}` with `X-API-KEY`: one of the team's portals, by
    /// id (its subdomain names inbox folders).
    pub async fn team_portal(
        &self,
        portal_id: &str,
        api_key: &Secret,
    ) -> Result<Portal, CloudError> {
        let what = "portal lookup by id";
        let url = join(&self.inbox_base, &["portals", portal_id])?;
        let headers = api_key_headers(api_key, what)?;
        self.get_json(Call::new(Route::Team, what), url, headers)
            .await
    }

    /// `GET /system/packages/spec`: the part limits the service enforces.
    pub async fn package_spec(&self) -> Result<PackageSpec, CloudError> {
        let url = self.api_url(&["system", "packages", "spec"])?;
        self.get_json(
            Call::new(Route::Package, "package spec"),
            url,
            HeaderMap::new(),
        )
        .await
    }

    // ----- URLs -----

    fn api_url(&self, segments: &[&str]) -> Result<Url, CloudError> {
        join(&self.base, segments)
    }

    fn link_url(&self, link_id: &str, secret: &Secret) -> Result<Url, CloudError> {
        let mut url = self.api_url(&["links", link_id])?;
        url.query_pairs_mut().append_pair("secret", secret.expose());
        Ok(url)
    }

    fn part_urls_url(
        &self,
        package_id: &str,
        file_id: &str,
        start: u64,
        count: u64,
    ) -> Result<Url, CloudError> {
        let mut url = self.api_url(&["packages", package_id, "files", file_id])?;
        url.query_pairs_mut()
            .append_pair("start", &start.to_string())
            .append_pair("count", &count.to_string());
        Ok(url)
    }

    fn inbox_url(&self, team_id: &str, query: &InboxQuery) -> Result<Url, CloudError> {
        let mut url = join(&self.inbox_base, &["teams", team_id, "inbox"])?;
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(portal) = &query.portal {
            pairs.push(("portal", portal.clone()));
        }
        if let Some(at) = &query.created_at_start {
            pairs.push(("created_at_start", format_time(at)));
        }
        if let Some(page) = query.page {
            pairs.push(("page", page.to_string()));
        }
        if let Some(limit) = query.limit {
            pairs.push(("limit", limit.to_string()));
        }
        // Only touch the query when there is one: an empty `?` is noise on the wire.
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
        Ok(url)
    }

    // ----- Sending -----

    async fn get_json<T: DeserializeOwned>(
        &self,
        call: Call,
        url: Url,
        headers: HeaderMap,
    ) -> Result<T, CloudError> {
        let call = call.idempotent();
        let response = self
            .send_json::<()>(&call, Method::GET, url, headers, None)
            .await?;
        read_json(&call, response).await
    }

    async fn send_json<B: Serialize>(
        &self,
        call: &Call,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Option<&B>,
    ) -> Result<Response, CloudError> {
        let request = json_request(call, method, url, headers, body)?;
        self.execute(&self.api, call, request).await
    }

    /// Sends `request`; any 2xx is success, anything else becomes the route's [`CloudError`].
    /// Idempotent GETs wait out `429`s here (spec §1), up to [`RATE_LIMIT_RETRIES`] times.
    async fn execute(
        &self,
        http: &reqwest::Client,
        call: &Call,
        mut request: Request,
    ) -> Result<Response, CloudError> {
        let mut retries = 0;
        loop {
            let again = if call.wait_on_rate_limit && retries < RATE_LIMIT_RETRIES {
                request.try_clone()
            } else {
                None
            };
            let response = http
                .execute(request)
                .await
                .map_err(|e| CloudError::transport(&call.what, e))?;
            if response.status().is_success() {
                return Ok(response);
            }
            let failure = error::from_response(call.route, &call.what, response).await;
            match (again, &failure) {
                (
                    Some(next),
                    CloudError::Transient {
                        status: Some(429),
                        retry_after,
                        ..
                    },
                ) => {
                    let wait = rate_limit_wait(*retry_after);
                    tracing::debug!(
                        call = %call.what,
                        wait_seconds = wait.as_secs_f64(),
                        retry = retries + 1,
                        "rate limited by the cloud; waiting before asking again"
                    );
                    tokio::time::sleep(wait).await;
                    retries += 1;
                    request = next;
                }
                _ => return Err(failure),
            }
        }
    }
}

fn rate_limit_wait(retry_after: Option<Duration>) -> Duration {
    retry_after
        .unwrap_or(RATE_LIMIT_DEFAULT_WAIT)
        .min(RATE_LIMIT_MAX_WAIT)
}

fn json_request<B: Serialize>(
    call: &Call,
    method: Method,
    url: Url,
    mut headers: HeaderMap,
    body: Option<&B>,
) -> Result<Request, CloudError> {
    let mut request = Request::new(method, url);
    // A body-less POST still says `Content-Length: 0`: some proxies answer 411 otherwise.
    let bytes = match body {
        Some(body) => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            serde_json::to_vec(body).map_err(|e| CloudError::Protocol {
                message: format!("{}: could not encode the request: {e}", call.what),
            })?
        }
        None => Vec::new(),
    };
    if body.is_some() || request.method() != Method::GET {
        // hyper leaves the length out for an empty body; say it explicitly.
        headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        *request.body_mut() = Some(Body::from(bytes));
    }
    *request.headers_mut() = headers;
    Ok(request)
}

async fn read_body(call: &Call, response: Response, limit: usize) -> Result<Vec<u8>, CloudError> {
    let mut response = response;
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| CloudError::transport(&call.what, e))?
    {
        if body.len() + chunk.len() > limit {
            return Err(CloudError::Protocol {
                message: format!("{}: the answer is larger than {limit} bytes", call.what),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn read_json<T: DeserializeOwned>(call: &Call, response: Response) -> Result<T, CloudError> {
    let body = read_body(call, response, JSON_BODY_LIMIT).await?;
    parse_json(&call.what, &body)
}

fn parse_json<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, CloudError> {
    serde_json::from_slice(body).map_err(|e| CloudError::Protocol {
        message: format!(
            "{what}: the answer is not the expected JSON: {}",
            error::without_quoted_values(&e.to_string())
        ),
    })
}

fn parse_upload_id(what: &str, body: &[u8]) -> Result<String, CloudError> {
    let text = String::from_utf8_lossy(body);
    match error::xml_text(&text, "UploadId") {
        Some(id) if !id.is_empty() => Ok(id),
        _ => Err(CloudError::Protocol {
            message: format!("{what}: the answer holds no UploadId"),
        }),
    }
}

/// Reads a small answer to the end so its connection goes back to the pool; the call already
/// succeeded, so a failure here changes nothing.
async fn drain(response: Response) {
    let _ = error::read_limited(response, 64 * 1024).await;
}

fn secret_header(secret: &Secret, what: &str, name: &str) -> Result<HeaderValue, CloudError> {
    let mut value = HeaderValue::from_str(secret.expose()).map_err(|_| CloudError::Auth {
        message: format!(
            "{what}: {name} contains characters that cannot be sent in an HTTP header"
        ),
    })?;
    // Kept out of HTTP/2 header compression tables and out of `Debug`.
    value.set_sensitive(true);
    Ok(value)
}

fn token_headers(token: &Secret, what: &str) -> Result<HeaderMap, CloudError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        X_PACKAGE_TOKEN,
        secret_header(token, what, "the package token")?,
    );
    Ok(headers)
}

fn api_key_headers(api_key: &Secret, what: &str) -> Result<HeaderMap, CloudError> {
    let mut headers = HeaderMap::new();
    headers.insert(X_API_KEY, secret_header(api_key, what, "the API key")?);
    Ok(headers)
}

// ----- URL helpers -----

/// Parses a configured base URL: http(s), hierarchical, no query or fragment. The input is not
/// echoed when it does not parse (it may hold credentials).
fn parse_base(input: &str, name: &str) -> Result<Url, CloudError> {
    let url = Url::parse(input.trim()).map_err(|e| CloudError::InvalidUrl {
        message: format!(
            "the {name} does not parse ({e}); expected e.g. https://api.massive.app/v1"
        ),
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() || !url.has_host() {
        return Err(CloudError::InvalidUrl {
            message: format!(
                "the {name} {} is not an http(s) URL; expected e.g. https://api.massive.app/v1",
                shown(&url)
            ),
        });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(CloudError::InvalidUrl {
            message: format!(
                "the {name} {} has a query or fragment; give only scheme, host and path",
                shown(&url)
            ),
        });
    }
    Ok(url)
}

/// Real MASV serves the inbox under `/v1.1` while everything else is under `/v1`: a base whose
/// last path segment is `v1` gets it replaced; any other base is used as it is.
pub fn default_inbox_base(base: &Url) -> Url {
    let ends_in_v1 = base
        .path_segments()
        .and_then(|mut segments| segments.rfind(|s| !s.is_empty()))
        == Some("v1");
    let mut inbox = base.clone();
    if ends_in_v1 && let Ok(mut segments) = inbox.path_segments_mut() {
        segments.pop_if_empty().pop().push("v1.1");
    }
    inbox
}

/// `base` + one path segment per entry, each percent-encoded (`/`, `?`, `#`, `%` included), so
/// an id can never leave its segment. `url` silently drops `.` and `..` segments and empty
/// ones would change the route, so those are refused.
fn join(base: &Url, segments: &[&str]) -> Result<Url, CloudError> {
    if let Some(bad) = segments
        .iter()
        .find(|s| s.is_empty() || **s == "." || **s == "..")
    {
        return Err(CloudError::InvalidUrl {
            message: format!(
                "{bad:?} cannot be used as an id in a URL path (empty, \".\" and \"..\" are refused)"
            ),
        });
    }
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| CloudError::InvalidUrl {
            message: format!("the base URL {} cannot take a path", shown(base)),
        })?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// A URL fit for messages: no credentials, no query (signatures live there), no fragment.
fn shown(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// `label (host[:port])`: names the storage without its signed path and query.
fn storage_what(label: &str, url: &Url) -> String {
    let host = url.host_str().unwrap_or("unknown host");
    match url.port() {
        Some(port) => format!("{label} ({host}:{port})"),
        None => format!("{label} ({host})"),
    }
}

fn same_origin_redirects() -> Policy {
    Policy::custom(|attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error("too many redirects");
        }
        let same_origin = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if same_origin {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

fn no_downgrade_redirects() -> Policy {
    Policy::custom(|attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error("too many redirects");
        }
        let downgrade = attempt.url().scheme() != "https"
            && attempt
                .previous()
                .last()
                .is_some_and(|from| from.scheme() == "https");
        if downgrade {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}

// ----- Storage requests -----

/// A signed storage request taken from a blueprint or a download URL, checked before sending.
struct StorageRequest {
    method: Method,
    url: Url,
    headers: HeaderMap,
    what: String,
}

impl StorageRequest {
    fn parse(
        blueprint: &Blueprint,
        default_method: Method,
        label: &str,
    ) -> Result<Self, CloudError> {
        let mut target = Self::from_parts(
            blueprint.url.expose(),
            &blueprint.method,
            default_method,
            label,
        )?;
        for (name, value) in &blueprint.headers {
            // Framing headers are the HTTP stack's business: a stale Host or Content-Length from
            // the blueprint would corrupt the request rather than sign it.
            if ["host", "content-length", "transfer-encoding", "connection"]
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h))
            {
                continue;
            }
            let header = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                CloudError::Protocol {
                    message: format!(
                        "{}: the blueprint header name {:?} is not valid",
                        target.what,
                        error::clean(name, 60)
                    ),
                }
            })?;
            // Values are not shown: signed headers may carry session tokens.
            let value = HeaderValue::from_str(value).map_err(|_| CloudError::Protocol {
                message: format!(
                    "{}: the blueprint header {header} has a value that cannot be sent",
                    target.what
                ),
            })?;
            target.headers.append(header, value);
        }
        Ok(target)
    }

    fn from_parts(
        url: &str,
        method: &str,
        default_method: Method,
        label: &str,
    ) -> Result<Self, CloudError> {
        // The URL is signed: neither it nor the parse error's input is ever shown.
        let url = Url::parse(url.trim()).map_err(|e| CloudError::InvalidUrl {
            message: format!("{label}: the storage URL from the service does not parse ({e})"),
        })?;
        let what = storage_what(label, &url);
        if !matches!(url.scheme(), "http" | "https") {
            return Err(CloudError::InvalidUrl {
                message: format!("{what}: the storage URL is not http(s)"),
            });
        }
        let method = method.trim();
        let method = if method.is_empty() {
            default_method
        } else {
            Method::from_bytes(method.to_ascii_uppercase().as_bytes()).map_err(|_| {
                CloudError::Protocol {
                    message: format!(
                        "{what}: {:?} is not an HTTP method",
                        error::clean(method, 20)
                    ),
                }
            })?
        };
        Ok(StorageRequest {
            method,
            url,
            headers: HeaderMap::new(),
            what,
        })
    }
}

/// Whether a ranged answer holds the bytes asked for, so a misbehaving server can never have a
/// chunk written at the wrong place.
fn check_range(
    range: Option<(u64, u64)>,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<(), String> {
    let Some((start, end)) = range else {
        return Ok(());
    };
    match status {
        StatusCode::PARTIAL_CONTENT => {
            let Some(content_range) = headers.get(CONTENT_RANGE) else {
                // Tolerated: nothing to check against, and the byte count is the caller's check.
                return Ok(());
            };
            let (got_start, got_end) = content_range
                .to_str()
                .ok()
                .and_then(parse_content_range)
                .ok_or("206 with an unreadable Content-Range")?;
            if got_start != start || got_end > end || got_end < got_start {
                return Err(format!(
                    "asked for bytes {start}-{end}, storage sent {got_start}-{got_end}"
                ));
            }
            Ok(())
        }
        _ => {
            // A 200 is the whole file: right only if that is exactly the range asked for.
            let length = headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if start == 0 && length == end.checked_add(1) {
                Ok(())
            } else {
                Err(format!(
                    "asked for bytes {start}-{end}, storage ignored the range and sent the whole file"
                ))
            }
        }
    }
}

/// `bytes a-b/total` or `bytes a-b/*` → `(a, b)`.
fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let range = value.trim().strip_prefix("bytes")?.trim_start();
    let (span, _total) = range.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

// ----- Upload progress -----

/// When a part upload last moved, shared between its body and its watchdog. Tokio's clock, so
/// tests can run it paused.
#[derive(Clone)]
struct Progress {
    origin: Instant,
    last_millis: Arc<AtomicU64>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            origin: Instant::now(),
            last_millis: Arc::new(AtomicU64::new(0)),
        }
    }

    fn mark(&self) {
        let millis = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_millis.store(millis, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_millis.load(Ordering::Relaxed))
    }
}

/// The caller's body, marking progress each time the HTTP stack takes a chunk (which it does
/// only once the previous one is written out, so this follows the network).
struct ProgressBody {
    inner: Body,
    progress: Progress,
    len: u64,
}

impl http_body::Body for ProgressBody {
    type Data = Bytes;
    type Error = reqwest::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, reqwest::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_ready() {
            self.progress.mark();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

/// Runs `work` until it ends or `progress` stands still for `limit`.
async fn stall_guard<T>(
    what: &str,
    progress: &Progress,
    limit: Duration,
    work: impl Future<Output = Result<T, CloudError>>,
) -> Result<T, CloudError> {
    tokio::pin!(work);
    loop {
        let deadline = progress.last() + limit;
        tokio::select! {
            result = &mut work => return result,
            () = tokio::time::sleep_until(deadline) => {
                if progress.last() + limit <= Instant::now() {
                    return Err(CloudError::Transient {
                        status: None,
                        message: format!("{what}: stalled, no progress for {limit:?}"),
                        retry_after: None,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn client() -> Client {
        Client::new("http://127.0.0.1:9/v1").unwrap()
    }

    #[test]
    fn ids_are_one_encoded_path_segment() {
        let c = client();
        let url = c.api_url(&["packages", "../x", "files"]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9/v1/packages/..%2Fx/files");
        let url = c.api_url(&["packages", "a/b?c#d e%2F", "files"]).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/v1/packages/a%2Fb%3Fc%23d%20e%252F/files"
        );
        assert_eq!(url.query(), None);
        assert_eq!(url.path_segments().unwrap().count(), 4);
        let url = c.api_url(&["subdomains", "portals", "my\\portal"]).unwrap();
        assert_eq!(url.path_segments().unwrap().count(), 4, "{url}");
        for bad in ["..", ".", ""] {
            let error = c.api_url(&["packages", bad, "files"]).unwrap_err();
            assert!(matches!(error, CloudError::InvalidUrl { .. }), "{bad:?}");
        }
    }

    #[test]
    fn base_urls_with_or_without_trailing_slash_join_the_same() {
        for base in ["http://h:1/v1", "http://h:1/v1/", " http://h:1/v1 "] {
            let c = Client::new(base).unwrap();
            assert_eq!(
                c.api_url(&["system", "packages", "spec"]).unwrap().as_str(),
                "http://h:1/v1/system/packages/spec",
                "{base}"
            );
        }
        let c = Client::new("https://hub.example").unwrap();
        assert_eq!(
            c.api_url(&["links", "L"]).unwrap().as_str(),
            "https://hub.example/links/L"
        );
    }

    #[test]
    fn bad_base_urls_are_refused_without_echoing_credentials() {
        for base in [
            "not a url",
            "ftp://h/v1",
            "mailto:x@y",
            "http://h/v1?x=1",
            "http://h/v1#f",
        ] {
            let error = Client::new(base).unwrap_err();
            assert!(matches!(error, CloudError::InvalidUrl { .. }), "{base}");
        }
        let error = Client::new("ftp://user:hunter2@h/v1").unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
        let c = Client::new("https://user:hunter2@h/v1").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn inbox_base_replaces_a_trailing_v1() {
        let derive = |base: &str| default_inbox_base(&Url::parse(base).unwrap()).to_string();
        assert_eq!(
            derive("https://api.massive.app/v1"),
            "https://api.massive.app/v1.1"
        );
        assert_eq!(
            derive("https://api.massive.app/v1/"),
            "https://api.massive.app/v1.1"
        );
        assert_eq!(derive("http://h:8/api/v1"), "http://h:8/api/v1.1");
        assert_eq!(derive("http://h:8/v2"), "http://h:8/v2");
        assert_eq!(derive("http://h:8/v10"), "http://h:8/v10");
        assert_eq!(derive("http://h:8/"), "http://h:8/");

        let c = client();
        assert_eq!(c.inbox_base_url().as_str(), "http://127.0.0.1:9/v1.1");
        let c = c.with_inbox_base("http://127.0.0.1:9/inbox-api").unwrap();
        assert_eq!(c.base_url().as_str(), "http://127.0.0.1:9/v1");
        let url = c.inbox_url("T/1", &InboxQuery::default()).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/inbox-api/teams/T%2F1/inbox"
        );
    }

    #[test]
    fn query_strings_are_encoded() {
        let c = client();
        let url = c.link_url("L1", &Secret::new("a&b=c d")).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/v1/links/L1?secret=a%26b%3Dc+d"
        );
        let url = c.part_urls_url("P", "F", 10, 20).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/v1/packages/P/files/F?start=10&count=20"
        );
        let query = InboxQuery {
            portal: Some("p&x".into()),
            created_at_start: chrono::DateTime::parse_from_rfc3339("2024-01-02T03:04:05.678Z")
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc)),
            page: Some(2),
            limit: Some(50),
        };
        let url = c.inbox_url("T", &query).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/v1.1/teams/T/inbox?portal=p%26x&created_at_start=2024-01-02T03%3A04%3A05.678Z&page=2&limit=50"
        );
    }

    #[test]
    fn rate_limit_waits_are_capped_and_default_to_five_seconds() {
        assert_eq!(rate_limit_wait(None), Duration::from_secs(5));
        assert_eq!(
            rate_limit_wait(Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            rate_limit_wait(Some(Duration::from_secs(3600))),
            Duration::from_secs(60)
        );
    }

    fn blueprint(url: &str, method: &str, headers: &[(&str, &str)]) -> Blueprint {
        Blueprint {
            url: Secret::new(url),
            method: method.to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            body: String::new(),
        }
    }

    #[test]
    fn blueprints_keep_their_headers_but_not_framing_ones() {
        let bp = blueprint(
            "https://s3.example:8443/bucket/key?uploads&X-Amz-Signature=SIG",
            "post",
            &[
                ("Content-Type", "application/octet-stream"),
                ("x-amz-acl", "private"),
                ("Host", "elsewhere"),
                ("Content-Length", "99"),
            ],
        );
        let target = StorageRequest::parse(&bp, Method::PUT, "multipart upload creation").unwrap();
        assert_eq!(target.method, Method::POST);
        assert_eq!(target.what, "multipart upload creation (s3.example:8443)");
        assert_eq!(target.headers.len(), 2);
        assert!(target.headers.get("host").is_none());
        assert!(target.headers.get("content-length").is_none());
        assert_eq!(target.headers["x-amz-acl"], "private");

        let target =
            StorageRequest::parse(&blueprint("https://s/k", "", &[]), Method::PUT, "p").unwrap();
        assert_eq!(target.method, Method::PUT);
    }

    #[test]
    fn bad_blueprints_fail_without_showing_the_signed_url() {
        let signed = "https://s.example/k?X-Amz-Signature=TOPSECRET";
        let cases = [
            (blueprint("//TOPSECRET", "PUT", &[]), "invalid_url"),
            (blueprint("file:///TOPSECRET", "PUT", &[]), "invalid_url"),
            (blueprint(signed, "P UT", &[]), "protocol"),
            (blueprint(signed, "PUT", &[("bad name", "v")]), "protocol"),
            (
                blueprint(signed, "PUT", &[("x-token", "TOPSECRET\n")]),
                "protocol",
            ),
        ];
        for (bp, kind) in cases {
            let error = match StorageRequest::parse(&bp, Method::PUT, "part upload") {
                Ok(_) => panic!("{kind}: accepted"),
                Err(error) => error,
            };
            let matches_kind = match kind {
                "invalid_url" => matches!(error, CloudError::InvalidUrl { .. }),
                _ => matches!(error, CloudError::Protocol { .. }),
            };
            assert!(matches_kind, "{error:?}");
            assert!(!error.to_string().contains("TOPSECRET"), "{error}");
            assert!(!format!("{error:?}").contains("TOPSECRET"), "{error:?}");
        }
    }

    #[test]
    fn upload_ids_come_from_the_xml_answer() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>b</Bucket><Key>k</Key><UploadId>abc.DEF-123</UploadId></InitiateMultipartUploadResult>"#;
        assert_eq!(parse_upload_id("x", xml).unwrap(), "abc.DEF-123");
        for bad in [&b"<R><UploadId></UploadId></R>"[..], b"{}", b""] {
            let error = parse_upload_id("multipart upload creation (s)", bad).unwrap_err();
            assert!(matches!(error, CloudError::Protocol { .. }), "{error:?}");
            assert!(error.to_string().contains("UploadId"));
        }
    }

    #[test]
    fn json_errors_do_not_echo_body_values() {
        let error =
            parse_json::<DownloadUrl>("download URL request", br#"{"url": 5}"#).unwrap_err();
        assert!(matches!(error, CloudError::Protocol { .. }));
        let error =
            parse_json::<PackageSpec>("package spec", br#"{"max_chunks_count": "SECRETISH"}"#)
                .unwrap_err();
        assert!(!error.to_string().contains("SECRETISH"), "{error}");
        assert!(error.to_string().starts_with("package spec: "), "{error}");
    }

    fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn ranged_answers_must_hold_the_bytes_asked_for() {
        let ok = StatusCode::OK;
        let partial = StatusCode::PARTIAL_CONTENT;
        let none = HeaderMap::new();
        assert!(check_range(None, ok, &none).is_ok());
        assert!(
            check_range(
                Some((0, 9)),
                partial,
                &headers(&[(CONTENT_RANGE, "bytes 0-9/100")])
            )
            .is_ok()
        );
        assert!(
            check_range(
                Some((90, 199)),
                partial,
                &headers(&[(CONTENT_RANGE, "bytes 90-99/100")])
            )
            .is_ok(),
            "clamped at the end of the file"
        );
        assert!(
            check_range(
                Some((5, 9)),
                partial,
                &headers(&[(CONTENT_RANGE, "bytes 5-9/*")])
            )
            .is_ok()
        );
        assert!(check_range(Some((5, 9)), partial, &none).is_ok());
        assert!(
            check_range(
                Some((5, 9)),
                partial,
                &headers(&[(CONTENT_RANGE, "bytes 0-9/100")])
            )
            .is_err()
        );
        assert!(
            check_range(
                Some((5, 9)),
                partial,
                &headers(&[(CONTENT_RANGE, "bytes 5-19/100")])
            )
            .is_err()
        );
        assert!(
            check_range(
                Some((5, 9)),
                partial,
                &headers(&[(CONTENT_RANGE, "items 5-9")])
            )
            .is_err()
        );
        assert!(
            check_range(Some((0, 9)), ok, &headers(&[(CONTENT_LENGTH, "10")])).is_ok(),
            "whole file"
        );
        assert!(check_range(Some((0, 9)), ok, &headers(&[(CONTENT_LENGTH, "100")])).is_err());
        assert!(check_range(Some((5, 9)), ok, &headers(&[(CONTENT_LENGTH, "5")])).is_err());
        assert!(
            check_range(Some((0, 9)), ok, &none).is_err(),
            "unknown length"
        );
        assert_eq!(parse_content_range("bytes 1-2/3"), Some((1, 2)));
    }

    /// A port that was just free: connecting to it is refused, without any server.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn transport_errors_are_transient_and_never_show_secrets() {
        let port = closed_port();
        let c = Client::new(&format!("http://127.0.0.1:{port}/v1")).unwrap();
        let error = c
            .link(
                "L1",
                &Secret::new("LINKSECRET"),
                Some(&Secret::new("PASSWORD")),
            )
            .await
            .unwrap_err();
        assert!(error.is_transient(), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with("link lookup: could not connect"),
            "{error}"
        );
        for shown in [error.to_string(), format!("{error:?}")] {
            assert!(
                !shown.contains("LINKSECRET") && !shown.contains("PASSWORD"),
                "{shown}"
            );
        }

        let url = DownloadUrl {
            method: "GET".into(),
            url: Secret::new(format!(
                "http://127.0.0.1:{port}/blob/f?X-Amz-Signature=SIGNATURE"
            )),
        };
        let error = c.get_range(&url, Some((0, 9))).await.unwrap_err();
        assert!(error.is_transient(), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("download (127.0.0.1:{port})")),
            "{error}"
        );
        for shown in [error.to_string(), format!("{error:?}")] {
            assert!(
                !shown.contains("SIGNATURE") && !shown.contains("/blob/"),
                "{shown}"
            );
        }

        let bp = blueprint(
            &format!("http://127.0.0.1:{port}/blob/f?partNumber=1&X-Amz-Signature=SIGNATURE"),
            "PUT",
            &[],
        );
        let error = c
            .put_part(&bp, Body::from("abc"), 3, None)
            .await
            .unwrap_err();
        assert!(error.is_transient(), "{error:?}");
        assert!(!format!("{error} {error:?}").contains("SIGNATURE"));
    }

    #[tokio::test]
    async fn stalled_work_fails_and_moving_work_does_not() {
        let limit = Duration::from_millis(200);
        let progress = Progress::new();
        let stuck = std::future::pending::<Result<(), CloudError>>();
        let error = stall_guard("part upload (s)", &progress, limit, stuck)
            .await
            .unwrap_err();
        assert!(error.is_transient());
        assert_eq!(
            error.to_string(),
            "part upload (s): stalled, no progress for 200ms"
        );

        // Moves every 50 ms for 600 ms: three times the limit, never the limit without progress.
        let progress = Progress::new();
        let moving = {
            let progress = progress.clone();
            async move {
                for _ in 0..12 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    progress.mark();
                }
                Ok::<_, CloudError>(7)
            }
        };
        assert_eq!(stall_guard("x", &progress, limit, moving).await.unwrap(), 7);
    }
}
