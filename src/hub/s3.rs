//! The hub's files on S3-compatible object storage (`masv hub serve --storage s3://BUCKET`):
//! every storage URL the hub hands out is a SigV4 pre-signed URL of the object store itself
//! (CreateMultipartUpload, UploadPart, GetObject), so no byte passes through the hub. The hub
//! signs with `rusty-s3` and talks to the store itself only to check a file's parts (ListParts),
//! complete its multipart upload (CompleteMultipartUpload) and abort abandoned ones.
//!
//! A file's object key is `PREFIX/PACKAGE_ID/FILE_ID`. Metadata (packages, links, quarantine,
//! limits) stays in the hub's database, exactly as with disk storage.

use std::time::Duration;

use rusty_s3::actions::{CompleteMultipartUpload, ListParts, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};

use super::error::HubError;
use crate::cloud::dto::Secret;

/// Where the objects go and how to sign for them.
#[derive(Clone)]
pub struct S3Config {
    /// The store's endpoint, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:9000`.
    pub endpoint: url::Url,
    pub bucket: String,
    /// Prepended to every key (`media/` puts the hub's objects under `media/`).
    pub prefix: String,
    pub region: String,
    /// `https://ENDPOINT/BUCKET/KEY` rather than `https://BUCKET.ENDPOINT/KEY` (MinIO, Garage,
    /// most self-hosted stores).
    pub path_style: bool,
    pub access_key: Secret,
    pub secret_key: Secret,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint.as_str())
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// Reads `s3://BUCKET[/PREFIX]`.
    pub fn parse_location(location: &str) -> Result<(String, String), String> {
        let rest = location.strip_prefix("s3://").ok_or_else(|| {
            format!("--storage {location:?}: expected s3://BUCKET[/PREFIX] (or leave it out for the hub's disk)")
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("--storage {location:?} names no bucket"));
        }
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Ok((bucket.to_owned(), prefix))
    }
}

/// One part the store holds.
pub struct StoredPart {
    pub number: u32,
    /// `None` when the store leaves it out of its listing (s3s-fs does): the store checks the
    /// ETags itself when the upload is completed.
    pub etag: Option<String>,
    pub size: u64,
}

/// A ListParts answer: its parts, and where the next page starts when it is truncated. Read
/// leniently (stores differ in what they leave out: s3s omits MaxParts and IsTruncated).
fn parse_parts(xml: &str) -> Result<(Vec<StoredPart>, Option<u16>), String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| e.to_string())?;
    let root = doc.root_element();
    let field = |node: roxmltree::Node<'_, '_>, name: &str| {
        node.children()
            .find(|c| c.tag_name().name() == name)
            .and_then(|c| c.text())
            .map(str::trim)
            .map(str::to_owned)
    };
    let mut parts = Vec::new();
    for part in root.children().filter(|c| c.tag_name().name() == "Part") {
        let number = field(part, "PartNumber")
            .and_then(|n| n.parse().ok())
            .ok_or("a Part without PartNumber")?;
        parts.push(StoredPart {
            number,
            etag: field(part, "ETag").map(|e| e.trim_matches('"').to_ascii_lowercase()),
            size: field(part, "Size")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        });
    }
    let truncated = field(root, "IsTruncated").is_some_and(|t| t == "true");
    let next = field(root, "NextPartNumberMarker").and_then(|n| n.parse().ok());
    Ok((parts, if truncated { next } else { None }))
}

pub struct S3 {
    bucket: Bucket,
    credentials: Credentials,
    prefix: String,
    http: reqwest::Client,
}

fn store_error(what: &str, e: impl std::fmt::Display) -> HubError {
    HubError::Internal(format!("object storage: {what}: {e}"))
}

impl S3 {
    pub fn new(config: &S3Config) -> Result<S3, HubError> {
        let style = if config.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            config.endpoint.clone(),
            style,
            config.bucket.clone(),
            config.region.clone(),
        )
        .map_err(|e| HubError::Internal(format!("the S3 bucket {}: {e}", config.bucket)))?;
        Ok(S3 {
            bucket,
            credentials: Credentials::new(config.access_key.expose(), config.secret_key.expose()),
            prefix: config.prefix.clone(),
            http: reqwest::Client::new(),
        })
    }

    fn key(&self, package_id: &str, file_id: &str) -> String {
        format!("{}{package_id}/{file_id}", self.prefix)
    }

    /// CreateMultipartUpload, pre-signed: the create blueprint.
    pub fn create_url(&self, package_id: &str, file_id: &str, ttl: Duration) -> Secret {
        let key = self.key(package_id, file_id);
        let url = self
            .bucket
            .create_multipart_upload(Some(&self.credentials), &key)
            .sign(ttl);
        Secret::new(url.to_string())
    }

    /// UploadPart of part `number` (1-based), pre-signed.
    pub fn part_url(
        &self,
        package_id: &str,
        file_id: &str,
        number: u16,
        upload_id: &str,
        ttl: Duration,
    ) -> Secret {
        let key = self.key(package_id, file_id);
        let url = self
            .bucket
            .upload_part(Some(&self.credentials), &key, number, upload_id)
            .sign(ttl);
        Secret::new(url.to_string())
    }

    /// GetObject, pre-signed (ranges are the client's `Range` header).
    pub fn get_url(&self, package_id: &str, file_id: &str, ttl: Duration) -> Secret {
        let key = self.key(package_id, file_id);
        let url = self
            .bucket
            .get_object(Some(&self.credentials), &key)
            .sign(ttl);
        Secret::new(url.to_string())
    }

    /// The parts the store holds for an upload; `None` when it knows no such upload.
    pub async fn parts(
        &self,
        package_id: &str,
        file_id: &str,
        upload_id: &str,
    ) -> Result<Option<Vec<StoredPart>>, HubError> {
        let key = self.key(package_id, file_id);
        let mut parts = Vec::new();
        let mut marker = None;
        loop {
            let mut action = ListParts::new(&self.bucket, Some(&self.credentials), &key, upload_id);
            if let Some(m) = marker {
                action.set_part_number_marker(m);
            }
            let url = action.sign(Duration::from_secs(60));
            let response = self
                .http
                .get(url)
                .send()
                .await
                .map_err(|e| store_error("listing parts", e))?;
            let status = response.status();
            let body = response
                .text()
                .await
                .map_err(|e| store_error("listing parts", e))?;
            if status == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(store_error("listing parts", format!("{status}: {body}")));
            }
            let (page, next) = parse_parts(&body).map_err(|e| store_error("listing parts", e))?;
            parts.extend(page);
            match next {
                Some(next) => marker = Some(next),
                None => return Ok(Some(parts)),
            }
        }
    }

    /// The size of the file's object, when the store has it (a multipart upload completed).
    pub async fn object_size(
        &self,
        package_id: &str,
        file_id: &str,
    ) -> Result<Option<u64>, HubError> {
        let key = self.key(package_id, file_id);
        let url = self
            .bucket
            .head_object(Some(&self.credentials), &key)
            .sign(Duration::from_secs(60));
        let response = self
            .http
            .head(url)
            .send()
            .await
            .map_err(|e| store_error("looking an object up", e))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(store_error("looking an object up", response.status()));
        }
        // The header itself: a HEAD answer's body is empty whatever the object's size.
        Ok(response
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    /// CompleteMultipartUpload with `etags` as parts 1..=n.
    pub async fn complete(
        &self,
        package_id: &str,
        file_id: &str,
        upload_id: &str,
        etags: &[String],
    ) -> Result<(), HubError> {
        let key = self.key(package_id, file_id);
        let action = CompleteMultipartUpload::new(
            &self.bucket,
            Some(&self.credentials),
            &key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(Duration::from_secs(60));
        let body = action.body();
        let response = self
            .http
            .post(url)
            .body(body)
            .send()
            .await
            .map_err(|e| store_error("completing a multipart upload", e))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        // S3 may answer 200 with an <Error> body when it fails late.
        if !status.is_success() || text.contains("<Error>") {
            return Err(store_error(
                "completing a multipart upload",
                format!("{status}: {text}"),
            ));
        }
        Ok(())
    }

    /// AbortMultipartUpload; an upload the store no longer knows is fine.
    pub async fn abort(&self, package_id: &str, file_id: &str, upload_id: &str) {
        let key = self.key(package_id, file_id);
        let url = self
            .bucket
            .abort_multipart_upload(Some(&self.credentials), &key, upload_id)
            .sign(Duration::from_secs(60));
        if let Err(e) = self.http.delete(url).send().await {
            tracing::warn!(error = %e, "object storage: aborting an abandoned multipart upload");
        }
    }
}
