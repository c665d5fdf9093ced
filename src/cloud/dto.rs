//! The JSON bodies of the MASV cloud API (spec §2–3), shared by the client and the hub.
//!
//! Responses are read tolerantly: unknown fields are ignored and optional fields default, so the
//! agent keeps working when the real service adds fields. Secrets (tokens, passwords, signed URLs)
//! are wrapped in [`Secret`] so they never reach `Debug` output or logs.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value that grants access (token, password, signed URL, API key). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value itself, for putting on the wire. Never log what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

/// Where a secret comes from in a configuration file: an environment variable, a file (trailing
/// newline trimmed), or inline.
#[derive(Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum SecretSource {
    /// The name of an environment variable holding the secret.
    Env { env: String },
    /// A file holding the secret (readable by the agent only, ideally).
    File { file: std::path::PathBuf },
    /// The secret itself (prefer env or file: config files get shared and committed).
    Inline(String),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Inline(_) => f.write_str("Inline(<redacted>)"),
            SecretSource::Env { env } => write!(f, "Env({env})"),
            SecretSource::File { file } => write!(f, "File({})", file.display()),
        }
    }
}

impl SecretSource {
    /// The secret itself; the error names the variable or file and what to do.
    pub fn resolve(&self) -> Result<Secret, String> {
        let value = match self {
            SecretSource::Inline(v) => v.clone(),
            SecretSource::Env { env } => std::env::var(env).map_err(|_| {
                format!(
                    "environment variable {env} is not set; export it or use another secret source"
                )
            })?,
            SecretSource::File { file } => std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read secret file {}: {e}", file.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        };
        if value.is_empty() {
            return Err(format!("the secret from {self:?} is empty"));
        }
        Ok(Secret::new(value))
    }
}

/// `{"code": …, "message": …}`: the body of every non-2xx answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(default)]
    pub code: i64,
    #[serde(default)]
    pub message: String,
}

/// `GET /links/{id}?secret=…` (seed 003).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkInfo {
    #[serde(default)]
    pub branding: Branding,
    #[serde(default, with = "opt_time")]
    pub expiry: Option<DateTime<Utc>>,
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub package_id: String,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub package_size: u64,
    pub package_token: Secret,
    #[serde(default)]
    pub recipient_email: Option<String>,
    #[serde(default)]
    pub sender_email: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Branding {
    #[serde(default)]
    pub primary_color: String,
}

/// What an entry of a package's file listing is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    /// An empty folder to recreate.
    Directory,
    ZipWindows,
    ZipMac,
    /// A kind this client does not know; skipped unless asked for by id.
    #[serde(other)]
    Other,
}

/// One entry of `GET /packages/{id}/files`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackageFile {
    pub id: String,
    pub kind: FileKind,
    pub name: String,
    /// The folder inside the package, `/`-separated; `""` or `"/"` for the root.
    #[serde(default, deserialize_with = "lenient::string")]
    pub path: String,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub size: u64,
    #[serde(default, with = "opt_time")]
    pub last_modified: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub virus_detected: bool,
    /// For the sender (an upload token), how to open the multipart upload of a file entry not
    /// finalized yet: a client that lost the answer of its declaration adopts the entry with
    /// it instead of declaring the file twice. [ours] Absent elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_blueprint: Option<Blueprint>,
}

/// `GET /packages/{id}/files/{file_id}/download`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DownloadUrl {
    #[serde(default = "get_method")]
    pub method: String,
    pub url: Secret,
}

fn get_method() -> String {
    "GET".to_owned()
}

/// `GET /subdomains/portals/{subdomain}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Portal {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub subdomain: String,
    #[serde(default)]
    pub has_access_code: bool,
}

/// `GET /subdomains/teams/{subdomain}` (ours): the team a subdomain names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Team {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub subdomain: String,
}

/// `POST /portals/{portal_id}/packages`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreatePortalPackage {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub sender: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_code: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `POST /teams/{team_id}/packages` (X-API-KEY).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateTeamPackage {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub recipients: Vec<String>,
    /// Default password of the links created for this package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Default access limit of the links created for this package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub expiry: Option<DateTime<Utc>>,
}

/// The answer to both package creations: the package and the token for its package routes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedPackage {
    pub id: String,
    pub access_token: Secret,
    #[serde(default)]
    pub name: String,
}

/// `POST /packages/{id}/files`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddFile {
    #[serde(default = "file_kind")]
    pub kind: FileKind,
    pub name: String,
    #[serde(default)]
    pub path: String,
    #[serde(default, with = "opt_time")]
    pub last_modified: Option<DateTime<Utc>>,
    pub size: u64,
    #[serde(default)]
    pub chunk_size: u64,
}

fn file_kind() -> FileKind {
    FileKind::File
}

/// An HTTP request to execute verbatim: `method` on `url` with `headers` and `body`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Blueprint {
    pub url: Secret,
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRef {
    pub id: String,
}

/// The answer to `POST /packages/{id}/files`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddedFile {
    pub file: FileRef,
    /// How to open the file's multipart upload. An entry that carries no bytes (a directory)
    /// may be answered without one: absent or `null` (spec §3, step 1). Always written, `null`
    /// when there is none.
    #[serde(default)]
    pub create_blueprint: Option<Blueprint>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub max_chunks_count: u64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub max_chunk_size: u64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub min_chunk_size: u64,
}

/// The body of `POST /packages/{id}/files/{file_id}?start=&count=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartUrlsRequest {
    pub upload_id: String,
}

/// `POST /packages/{id}/files/{file_id}/finalize`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinalizeFile {
    pub size: u64,
    #[serde(default)]
    pub chunk_size: u64,
    pub file_extras: FileExtras,
    pub chunk_extras: Vec<ChunkExtra>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileExtras {
    pub upload_id: String,
}

/// One uploaded part. Sent as `{"partNumber": "1", "etag": "\"…\""}`; read from `partNumber`
/// or `part_number`, as a number or a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkExtra {
    #[serde(
        rename = "partNumber",
        alias = "part_number",
        serialize_with = "number_as_string",
        deserialize_with = "number_or_string"
    )]
    pub part_number: u32,
    pub etag: String,
}

fn number_as_string<S: Serializer>(n: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&n.to_string())
}

fn number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(u32),
        String(String),
    }
    match NumberOrString::deserialize(d)? {
        NumberOrString::Number(n) => Ok(n),
        NumberOrString::String(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("partNumber {s:?} is not a number"))),
    }
}

/// `POST /packages/{id}/links`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateLink {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub expiry: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_limit: Option<u32>,
}

/// The answer to `POST /packages/{id}/links`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Link {
    pub id: String,
    pub download_secret: Secret,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default, with = "opt_time")]
    pub expiry: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "lenient::opt_u32")]
    pub access_limit: Option<u32>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub access_limit_enabled: bool,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub active: bool,
    /// Always `"****"` when the link has a password, empty otherwise.
    #[serde(default)]
    pub password: String,
}

/// The query of `GET /teams/{team_id}/inbox`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InboxQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub created_at_start: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inbox {
    #[serde(default)]
    pub metadata: InboxMetadata,
    #[serde(default)]
    pub records: Vec<InboxRecord>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InboxMetadata {
    #[serde(default, deserialize_with = "lenient::u64")]
    pub total: u64,
}

/// A finalized package received by the team.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxRecord {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub sender: String,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub size: u64,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub portal_id: Option<String>,
    #[serde(default, with = "opt_time")]
    pub created_at: Option<DateTime<Utc>>,
    /// A token for the package's download routes.
    pub access_token: Secret,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub total_files: u64,
}

/// `GET /system/packages/spec`: the limits the service enforces on parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageSpec {
    #[serde(deserialize_with = "lenient::u64")]
    pub max_chunks_count: u64,
    #[serde(deserialize_with = "lenient::u64")]
    pub max_chunk_size: u64,
    #[serde(deserialize_with = "lenient::u64")]
    pub min_chunk_size: u64,
    #[serde(deserialize_with = "lenient::u64")]
    pub default_chunk_size: u64,
}

const MIB: u64 = 1024 * 1024;

impl Default for PackageSpec {
    /// The limits of spec §3 (S3's): 100 MiB default, at most 10,000 parts of 5 MiB to 5 GiB.
    fn default() -> Self {
        PackageSpec {
            max_chunks_count: 10_000,
            max_chunk_size: 5 * 1024 * MIB,
            min_chunk_size: 5 * MIB,
            default_chunk_size: 100 * MIB,
        }
    }
}

impl PackageSpec {
    /// The chunk size to use for a file of `size` bytes when `wanted` was asked for (0: the
    /// default): kept within the part limits, and grown (to `ceil(size / max_chunks_count)`
    /// rounded up to a MiB) when the file would otherwise need too many parts.
    pub fn chunk_size_for(&self, size: u64, wanted: u64) -> u64 {
        let mut chunk = if wanted == 0 {
            self.default_chunk_size
        } else {
            wanted
        };
        chunk = chunk.clamp(self.min_chunk_size, self.max_chunk_size);
        if size.div_ceil(chunk) > self.max_chunks_count {
            chunk = size.div_ceil(self.max_chunks_count).div_ceil(MIB) * MIB;
        }
        chunk
    }

    /// How many parts a file of `size` bytes has with `chunk_size`: a zero-byte file is one
    /// empty part.
    pub fn part_count(size: u64, chunk_size: u64) -> u64 {
        size.div_ceil(chunk_size.max(1)).max(1)
    }
}

/// A download link `https://get.massive.io/{link_id}?secret={secret}` taken apart (any host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkUrl {
    pub link_id: String,
    pub secret: Secret,
}

impl LinkUrl {
    pub fn parse(input: &str) -> Result<LinkUrl, String> {
        let url = url::Url::parse(input.trim())
            .map_err(|e| format!("{input:?} is not a URL ({e}); expected https://get.massive.io/LINK_ID?secret=SECRET"))?;
        let link_id = url
            .path_segments()
            .and_then(|mut segments| segments.rfind(|s| !s.is_empty()))
            .map(str::to_owned)
            .ok_or_else(|| {
                format!(
                    "link URL {:?} has no link id in its path",
                    redact_query(&url)
                )
            })?;
        let secret = url
            .query_pairs()
            .find(|(k, _)| k == "secret")
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                format!(
                    "link URL {:?} has no ?secret=…; copy the whole link",
                    redact_query(&url)
                )
            })?;
        Ok(LinkUrl {
            link_id,
            secret: Secret(secret),
        })
    }
}

fn redact_query(url: &url::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.to_string()
}

/// Readers for fields that public clients and servers of the MASV API disagree on (spec §1: the
/// client is tolerant): numbers sent as numbers or as strings (`"42"`), booleans as `true` or
/// `"true"`, and `null` for "not given" (the default).
pub mod lenient {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Number(serde_json::Number),
        Text(String),
        Flag(bool),
    }

    fn number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Scalar>::deserialize(d)? {
            None => Ok(None),
            Some(Scalar::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                serde::de::Error::custom(format!("{n} is not a whole number of 0 or more"))
            }),
            Some(Scalar::Text(s)) if s.trim().is_empty() => Ok(None),
            Some(Scalar::Text(s)) => s.trim().parse().map(Some).map_err(|_| {
                serde::de::Error::custom(format!("{s:?} is not a whole number of 0 or more"))
            }),
            Some(Scalar::Flag(b)) => Err(serde::de::Error::custom(format!("{b} is not a number"))),
        }
    }

    pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        Ok(number(d)?.unwrap_or(0))
    }

    pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        number(d)?
            .map(|n| {
                u32::try_from(n).map_err(|_| serde::de::Error::custom(format!("{n} is too large")))
            })
            .transpose()
    }

    pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match Option::<Scalar>::deserialize(d)? {
            None => Ok(false),
            Some(Scalar::Flag(b)) => Ok(b),
            Some(Scalar::Number(n)) => Ok(n.as_u64().is_some_and(|n| n != 0)),
            Some(Scalar::Text(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" | "" => Ok(false),
                _ => Err(serde::de::Error::custom(format!(
                    "{s:?} is not true or false"
                ))),
            },
        }
    }

    /// A string that may be `null` (read as empty).
    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
    }
}

/// The zero time that means "unknown" on the wire.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00.000Z";

/// Formats a timestamp the way the API does: RFC 3339, UTC, milliseconds.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Optional timestamps: missing, `null`, and the zero time are `None`; `None` is written as
/// the zero time. Anything else must be RFC 3339.
pub mod opt_time {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format_time(t)),
            None => s.serialize_str(ZERO_TIME),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        if text.is_empty() || text.starts_with("0001-01-01") {
            return Ok(None);
        }
        DateTime::parse_from_rfc3339(&text)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_extras_accept_both_spellings_numbers_and_strings() {
        let parsed: Vec<ChunkExtra> = serde_json::from_str(
            r#"[{"partNumber":"1","etag":"\"a\""},{"part_number":2,"etag":"b"}]"#,
        )
        .unwrap();
        assert_eq!(parsed[0].part_number, 1);
        assert_eq!(parsed[1].part_number, 2);
        let written = serde_json::to_string(&parsed[0]).unwrap();
        assert_eq!(written, r#"{"partNumber":"1","etag":"\"a\""}"#);
    }

    #[test]
    fn zero_time_means_unknown_both_ways() {
        let file: PackageFile = serde_json::from_str(
            r#"{"id":"x","kind":"file","name":"a","size":1,"last_modified":"0001-01-01T00:00:00.000Z","virus_detected":false}"#,
        )
        .unwrap();
        assert!(file.last_modified.is_none());
        assert!(serde_json::to_string(&file).unwrap().contains(ZERO_TIME));
    }

    #[test]
    fn unknown_kinds_and_fields_are_tolerated() {
        let file: PackageFile =
            serde_json::from_str(r#"{"id":"x","kind":"hologram","name":"a","colour":"red"}"#)
                .unwrap();
        assert_eq!(file.kind, FileKind::Other);
        assert_eq!(file.path, "");
    }

    #[test]
    fn added_files_accept_absent_or_null_blueprints_and_numbers_as_strings() {
        for body in [
            r#"{"file":{"id":"F"},"create_blueprint":null,"max_chunks_count":"10000"}"#,
            r#"{"file":{"id":"F","extra":1},"surprise":[1,2]}"#,
        ] {
            let added: AddedFile = serde_json::from_str(body).unwrap();
            assert_eq!(added.file.id, "F");
            assert!(added.create_blueprint.is_none(), "{body}");
        }
        let added: AddedFile = serde_json::from_str(
            r#"{"file":{"id":"F"},"create_blueprint":{"url":"https://s/k?uploads","method":"POST"},"max_chunk_size":5368709120}"#,
        )
        .unwrap();
        assert_eq!(added.create_blueprint.unwrap().method, "POST");
        assert_eq!(added.max_chunk_size, 5 * 1024 * MIB);
        let file: PackageFile = serde_json::from_str(
            r#"{"id":"x","kind":"file","name":"a","path":null,"size":"12","virus_detected":"false"}"#,
        )
        .unwrap();
        assert_eq!(
            (file.size, file.path.as_str(), file.virus_detected),
            (12, "", false)
        );
        let inbox: Inbox =
            serde_json::from_str(r#"{"metadata":{"total":"3","page":1},"records":[]}"#).unwrap();
        assert_eq!(inbox.metadata.total, 3);
        let link: Link = serde_json::from_str(
            r#"{"id":"L","download_secret":"s","access_limit":"3","active":"true"}"#,
        )
        .unwrap();
        assert_eq!((link.access_limit, link.active), (Some(3), true));
        assert!(
            serde_json::from_str::<PackageFile>(
                r#"{"id":"x","kind":"file","name":"a","size":"-1"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn chunk_size_grows_for_huge_files_and_stays_in_limits() {
        let spec = PackageSpec::default();
        assert_eq!(spec.chunk_size_for(10, 0), 100 * MIB);
        assert_eq!(spec.chunk_size_for(10, 1), 5 * MIB);
        // 2 TiB at 100 MiB would be 20,972 parts: grown to ceil(2 TiB / 10,000) rounded to a MiB.
        let size = 2 * 1024 * 1024 * MIB;
        let chunk = spec.chunk_size_for(size, 0);
        assert_eq!(chunk, 210 * MIB);
        assert!(size.div_ceil(chunk) <= 10_000);
        assert_eq!(PackageSpec::part_count(0, chunk), 1);
    }

    #[test]
    fn link_urls_parse_on_any_host_and_secrets_stay_hidden() {
        let link = LinkUrl::parse("https://get.massive.app/01ABC?secret=s3cr3t").unwrap();
        assert_eq!(link.link_id, "01ABC");
        assert_eq!(link.secret.expose(), "s3cr3t");
        assert!(!format!("{link:?}").contains("s3cr3t"));
        let err = LinkUrl::parse("https://get.massive.io/01ABC").unwrap_err();
        assert!(err.contains("secret"), "{err}");
    }
}
