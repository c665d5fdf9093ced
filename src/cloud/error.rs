//! [`CloudError`]: what went wrong talking to a MASV cloud, sorted by what the caller must do
//! about it, and the mapping from an HTTP answer (route, status, headers, body) or a transport
//! failure to it. Also the small S3 XML reader the client shares with this mapping.
//!
//! Messages say what failed and why (`link lookup: 401 wrong password`) and never carry a
//! secret: no token, password, link secret, or signed URL query ever reaches them.

use std::error::Error as _;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use thiserror::Error;

/// A failed call to the MASV cloud or to its storage URLs. Each variant asks for a different
/// reaction from the caller; the `Display` text is meant for users and logs.
#[derive(Debug, Error)]
pub enum CloudError {
    /// Wrong or missing password, access code, API key or token (401; 403 on API-key routes).
    #[error("{message}")]
    Auth { message: String },
    /// The link, package, file, portal or team does not exist (404).
    #[error("{message}")]
    NotFound { message: String },
    /// The link expired, was disabled or reached its download limit; or a pre-signed storage
    /// URL expired, and the caller should ask for a new one.
    #[error("{message}")]
    Expired { message: String },
    /// The file was flagged by the virus scan: its download URL is refused.
    #[error("{message}")]
    Quarantined { message: String },
    /// Any other 4xx: the request is wrong and sending it again will not help.
    #[error("{message}")]
    Rejected { status: u16, message: String },
    /// Worth retrying with backoff: connect errors, timeouts, broken bodies, 5xx, 408, 429.
    #[error("{message}")]
    Transient {
        status: Option<u16>,
        message: String,
        retry_after: Option<Duration>,
    },
    /// A 2xx whose body is not what the spec says (bad JSON, no `UploadId`, no `ETag`).
    #[error("{message}")]
    Protocol { message: String },
    /// A base URL or a storage URL that does not parse or cannot be used.
    #[error("{message}")]
    InvalidUrl { message: String },
}

impl CloudError {
    /// Whether sending the same request again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, CloudError::Transient { .. })
    }

    /// How long the service asked us to wait (`Retry-After`), when it said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CloudError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status the service answered with, when the failure came from one.
    pub fn status(&self) -> Option<u16> {
        match self {
            CloudError::Rejected { status, .. } => Some(*status),
            CloudError::Transient { status, .. } => *status,
            _ => None,
        }
    }

    /// Maps a transport failure of `what` (for instance a body read failing while the caller
    /// streams a [`reqwest::Response`] from `Client::get_range`). The URL reqwest attaches to
    /// its errors is dropped: it may be a signed URL or carry a link secret.
    pub fn transport(what: &str, err: reqwest::Error) -> CloudError {
        let err = err.without_url();
        let kind = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "could not connect"
        } else if err.is_body() || err.is_decode() {
            "connection broken while transferring the body"
        } else if err.is_redirect() {
            "redirect refused"
        } else if err.is_builder() {
            "request could not be built"
        } else {
            "request failed"
        };
        // reqwest's own text is generic ("error sending request"); the cause is in the chain.
        let mut causes: Vec<String> = Vec::new();
        let mut source = err.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !causes.contains(&text) {
                causes.push(text);
            }
            source = cause.source();
        }
        let message = if causes.is_empty() {
            format!("{what}: {kind}")
        } else {
            format!("{what}: {kind}: {}", clean(&causes.join(": "), 400))
        };
        if err.is_builder() {
            CloudError::InvalidUrl { message }
        } else if err.is_redirect() {
            CloudError::Protocol { message }
        } else {
            CloudError::Transient {
                status: None,
                message,
                retry_after: None,
            }
        }
    }
}

/// Which family of route answered: the same status means different things on each (a 403 is a
/// disabled link on a link lookup, a quarantined file on a download URL, an expired signature
/// on storage, a bad API key on team routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// `GET /links/{id}`.
    Link,
    /// `GET /packages/{p}/files/{f}/download`.
    FileDownload,
    /// Pre-signed storage URLs (S3 or the hub's own).
    Storage,
    /// Routes authenticated with `X-API-KEY`.
    Team,
    /// Package-token routes, portal routes and the unauthenticated spec route.
    Package,
}

/// Error bodies are short; anything longer is an HTML page or garbage and only its start matters.
pub(super) const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Reads at most `limit` bytes of a body; a read failure just ends it (the status already says
/// the call failed, the body only adds detail).
pub(super) async fn read_limited(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// Turns a non-2xx answer into the error the caller acts on, reading (a bounded part of) its body.
pub(super) async fn from_response(
    route: Route,
    what: &str,
    response: reqwest::Response,
) -> CloudError {
    let status = response.status();
    let headers = response.headers().clone();
    let body = read_limited(response, ERROR_BODY_LIMIT).await;
    from_status(route, what, status, &headers, &body, SystemTime::now())
}

/// The mapping itself, kept free of I/O so every route × status pair is unit-tested.
pub(super) fn from_status(
    route: Route,
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> CloudError {
    let detail = body_detail(status, body);
    let text = detail
        .as_ref()
        .map(|d| d.text.clone())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned());
    let message = format!("{what}: {} {text}", status.as_u16())
        .trim_end()
        .to_owned();
    let s3_code = detail.as_ref().and_then(|d| d.s3_code.as_deref());
    let code = status.as_u16();

    let transient = |message: String| CloudError::Transient {
        status: Some(code),
        message,
        retry_after: headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now)),
    };

    match code {
        408 | 429 | 500..=599 => transient(message),
        410 => CloudError::Expired { message },
        // Storage has no passwords: a refused signature means "ask for a fresh URL".
        401 if route == Route::Storage => CloudError::Expired { message },
        401 => CloudError::Auth { message },
        403 => match route {
            Route::Link | Route::Storage => CloudError::Expired { message },
            Route::FileDownload => CloudError::Quarantined { message },
            Route::Team => CloudError::Auth { message },
            Route::Package => CloudError::Rejected {
                status: code,
                message,
            },
        },
        404 => CloudError::NotFound { message },
        // S3 answers 400 for these three: an idle socket it closed (retry), bytes that did not
        // match the part's Content-MD5, corrupted on the way (the agent hashed them from the
        // file: send them again), and an expired temporary credential inside the signed URL
        // (ask for a new URL).
        400 if route == Route::Storage
            && matches!(s3_code, Some("RequestTimeout" | "BadDigest")) =>
        {
            transient(message)
        }
        400 if route == Route::Storage && s3_code == Some("ExpiredToken") => {
            CloudError::Expired { message }
        }
        400..=499 => CloudError::Rejected {
            status: code,
            message,
        },
        300..=399 => CloudError::Protocol {
            message: format!(
                "{message} (a redirect this client does not follow: to another host, or from https to http)"
            ),
        },
        _ => CloudError::Protocol {
            message: format!("{message} (unexpected status)"),
        },
    }
}

/// What an error body says: `{"code","message"}` JSON (MASV), `<Error><Code/><Message/>` XML
/// (S3 and the hub's storage), or short plain text.
struct Detail {
    text: String,
    s3_code: Option<String>,
}

const MESSAGE_CHARS: usize = 300;

fn body_detail(status: StatusCode, body: &[u8]) -> Option<Detail> {
    let text = std::str::from_utf8(body).ok()?.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(serde_json::Value::Object(object)) = serde_json::from_str(text) {
        let message = object
            .get("message")
            .and_then(|m| m.as_str())
            .or_else(|| {
                // Tolerated: `{"error": "…"}` and `{"error": {"message": "…"}}` from proxies.
                let error = object.get("error")?;
                error
                    .as_str()
                    .or_else(|| error.get("message").and_then(|m| m.as_str()))
            })
            .map(|m| clean(m, MESSAGE_CHARS))
            .filter(|m| !m.is_empty());
        let code = object.get("code").and_then(|c| match c {
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::String(s) => Some(clean(s, 40)),
            _ => None,
        });
        // The spec's `code` often repeats the HTTP status; only show it when it adds something.
        let code = code.filter(|c| !c.is_empty() && c != "0" && c != status.as_str());
        let text = match (message, code) {
            (Some(m), Some(c)) => format!("{m} (code {c})"),
            (Some(m), None) => m,
            (None, Some(c)) => format!("code {c}"),
            (None, None) => return None,
        };
        return Some(Detail {
            text,
            s3_code: None,
        });
    }
    if text.starts_with('<') {
        // HTML error pages also start with '<' but hold no <Code>/<Message>: they fall through
        // to the status text.
        let code = xml_text(text, "Code")
            .map(|c| clean(&c, 60))
            .filter(|c| !c.is_empty());
        let message = xml_text(text, "Message")
            .map(|m| clean(&m, MESSAGE_CHARS))
            .filter(|m| !m.is_empty());
        let text = match (&code, message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.clone(),
            (None, Some(m)) => m,
            (None, None) => return None,
        };
        return Some(Detail {
            text,
            s3_code: code,
        });
    }
    if text.starts_with('{') || text.starts_with('[') {
        return None;
    }
    Some(Detail {
        text: clean(text, MESSAGE_CHARS),
        s3_code: None,
    })
}

/// `Retry-After` is either delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub(super) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // IMF-fixdate ("Wed, 21 Oct 2015 07:28:00 GMT") is a subset of RFC 2822.
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(u64::try_from(at.timestamp()).ok()?))?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// One line of at most `max_chars` characters: control characters and runs of whitespace
/// become one space, so a server cannot forge log lines or flood a message.
pub(super) fn clean(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut chars = 0;
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            pending_space = !out.is_empty();
            continue;
        }
        if chars + usize::from(pending_space) >= max_chars {
            out.push('…');
            return out;
        }
        if pending_space {
            out.push(' ');
            chars += 1;
            pending_space = false;
        }
        out.push(c);
        chars += 1;
    }
    out
}

/// Removes the double-quoted parts of a serde message (`invalid type: string "…"`): they are
/// values from the body, which may be tokens. Field names (in backticks) stay.
pub(super) fn without_quoted_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_quotes = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
                out.push_str("…\"");
            }
        } else {
            if c == '"' {
                in_quotes = true;
            }
            out.push(c);
        }
    }
    if in_quotes {
        out.push_str("…\"");
    }
    out
}

/// The text of the first element whose local name (namespace prefix ignored) is `name`, with
/// surrounding whitespace trimmed and entities and CDATA resolved. Enough for the flat answers
/// of S3 (`InitiateMultipartUploadResult`, `Error`); not a general XML parser.
pub(super) fn xml_text(xml: &str, name: &str) -> Option<String> {
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        if let Some(comment) = rest.strip_prefix("!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        if rest.starts_with(['/', '?', '!']) {
            continue;
        }
        let tag_end = rest.find('>')?;
        let tag = &rest[..tag_end];
        let qualified = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("");
        let local = qualified.rsplit(':').next().unwrap_or(qualified);
        if local != name {
            continue;
        }
        if tag.ends_with('/') {
            return Some(String::new());
        }
        let content = &rest[tag_end + 1..];
        let end = content.find(&format!("</{qualified}"))?;
        let raw = content[..end].trim();
        if let Some(cdata) = raw
            .strip_prefix("<![CDATA[")
            .and_then(|r| r.strip_suffix("]]>"))
        {
            return Some(cdata.trim().to_owned());
        }
        return Some(unescape_xml(raw));
    }
    None
}

fn unescape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest[..rest.len().min(12)].find(';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse::<u32>))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn map(route: Route, status: u16, body: &str) -> CloudError {
        from_status(
            route,
            "test call",
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
            SystemTime::now(),
        )
    }

    fn variant(e: &CloudError) -> &'static str {
        match e {
            CloudError::Auth { .. } => "auth",
            CloudError::NotFound { .. } => "not_found",
            CloudError::Expired { .. } => "expired",
            CloudError::Quarantined { .. } => "quarantined",
            CloudError::Rejected { .. } => "rejected",
            CloudError::Transient { .. } => "transient",
            CloudError::Protocol { .. } => "protocol",
            CloudError::InvalidUrl { .. } => "invalid_url",
        }
    }

    #[test]
    fn statuses_map_per_route() {
        use Route::*;
        let table: &[(Route, u16, &str)] = &[
            (Link, 401, "auth"),
            (Link, 403, "expired"),
            (Link, 404, "not_found"),
            (Link, 410, "expired"),
            (FileDownload, 401, "auth"),
            (FileDownload, 403, "quarantined"),
            (FileDownload, 404, "not_found"),
            (Storage, 401, "expired"),
            (Storage, 403, "expired"),
            (Storage, 404, "not_found"),
            (Storage, 416, "rejected"),
            (Team, 401, "auth"),
            (Team, 403, "auth"),
            (Team, 404, "not_found"),
            (Package, 401, "auth"),
            (Package, 403, "rejected"),
            (Package, 400, "rejected"),
            (Package, 409, "rejected"),
            (Package, 413, "rejected"),
            (Package, 410, "expired"),
            (Team, 410, "expired"),
            (Package, 408, "transient"),
            (Package, 429, "transient"),
            (Link, 500, "transient"),
            (Storage, 503, "transient"),
            (Team, 504, "transient"),
            (Package, 302, "protocol"),
            (Package, 101, "protocol"),
        ];
        for &(route, status, expected) in table {
            let error = map(route, status, "");
            assert_eq!(variant(&error), expected, "{route:?} {status}: {error}");
            assert_eq!(
                error.is_transient(),
                expected == "transient",
                "{route:?} {status}"
            );
        }
    }

    #[test]
    fn messages_name_the_call_and_use_the_json_body() {
        let error = map(
            Route::Link,
            401,
            r#"{"code": 401, "message": "wrong password"}"#,
        );
        assert_eq!(error.to_string(), "test call: 401 wrong password");
        let error = map(
            Route::Package,
            400,
            r#"{"code": 4001, "message": "package must have at least 1 file", "extra": 1}"#,
        );
        assert_eq!(
            error.to_string(),
            "test call: 400 package must have at least 1 file (code 4001)"
        );
        assert_eq!(error.status(), Some(400));
        let error = map(Route::Package, 400, r#"{"error": {"message": "nope"}}"#);
        assert_eq!(error.to_string(), "test call: 400 nope");
    }

    #[test]
    fn messages_fall_back_to_the_status_text() {
        assert_eq!(
            map(Route::Package, 404, "").to_string(),
            "test call: 404 Not Found"
        );
        let html = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
        assert_eq!(
            map(Route::Package, 502, html).to_string(),
            "test call: 502 Bad Gateway"
        );
        assert_eq!(
            map(Route::Package, 500, r#"{"unrelated": true}"#).to_string(),
            "test call: 500 Internal Server Error"
        );
        assert_eq!(
            map(Route::Package, 503, "upstream\r\nconnect error").to_string(),
            "test call: 503 upstream connect error"
        );
    }

    #[test]
    fn storage_messages_come_from_s3_xml() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error>
  <Code>AccessDenied</Code>
  <Message>Request has expired</Message>
  <X-Amz-Expires>3600</X-Amz-Expires>
  <RequestId>ABC</RequestId>
</Error>"#;
        let error = map(Route::Storage, 403, xml);
        assert_eq!(variant(&error), "expired");
        assert_eq!(
            error.to_string(),
            "test call: 403 AccessDenied: Request has expired"
        );
        let timeout = "<Error><Code>RequestTimeout</Code><Message>idle</Message></Error>";
        assert!(map(Route::Storage, 400, timeout).is_transient());
        assert_eq!(
            variant(&map(Route::Package, 400, timeout)),
            "rejected",
            "only storage speaks S3"
        );
        let expired = "<Error><Code>ExpiredToken</Code></Error>";
        assert_eq!(variant(&map(Route::Storage, 400, expired)), "expired");
        let bad_digest = "<Error><Code>BadDigest</Code></Error>";
        assert!(map(Route::Storage, 400, bad_digest).is_transient());
    }

    #[test]
    fn long_or_hostile_messages_are_one_bounded_line() {
        let long = format!(r#"{{"message": "{}\nforged log line"}}"#, "x".repeat(1000));
        let text = map(Route::Package, 400, &long).to_string();
        assert!(!text.contains('\n'));
        assert!(text.chars().count() < 350, "{}", text.len());
        assert!(text.ends_with('…'));
        assert_eq!(clean("  a \t\n b  ", 10), "a b");
        assert_eq!(clean("abcdef", 3), "abc…");
        assert_eq!(clean("abc", 3), "abc");
    }

    #[test]
    fn retry_after_is_read_from_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 07:28:00
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("soon", now), None);

        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
        let error = from_status(
            Route::Package,
            "file listing",
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            b"",
            now,
        );
        assert!(error.is_transient());
        assert_eq!(error.retry_after(), Some(Duration::from_secs(5)));
        assert_eq!(error.status(), Some(429));
        assert_eq!(map(Route::Package, 429, "").retry_after(), None);
        assert_eq!(map(Route::Link, 401, "").retry_after(), None);
    }

    #[test]
    fn xml_text_handles_namespaces_prefixes_and_whitespace() {
        let plain = r#"<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><Key>k</Key>
  <UploadId>
     VXBsb2FkIElE
  </UploadId>
</InitiateMultipartUploadResult>"#;
        assert_eq!(xml_text(plain, "UploadId").as_deref(), Some("VXBsb2FkIElE"));
        assert_eq!(xml_text(plain, "Bucket").as_deref(), Some("b"));

        let prefixed = r#"<s3:InitiateMultipartUploadResult xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/"><s3:UploadId attr="1">a&amp;b&#x2F;c&#61;</s3:UploadId></s3:InitiateMultipartUploadResult>"#;
        assert_eq!(xml_text(prefixed, "UploadId").as_deref(), Some("a&b/c="));

        let cdata = "<R><UploadId><![CDATA[x<y]]></UploadId></R>";
        assert_eq!(xml_text(cdata, "UploadId").as_deref(), Some("x<y"));

        let tricky = "<!-- <UploadId>fake</UploadId> --><R><UploadIdMarker>m</UploadIdMarker><UploadId>real</UploadId></R>";
        assert_eq!(xml_text(tricky, "UploadId").as_deref(), Some("real"));

        assert_eq!(
            xml_text("<R><UploadId/></R>", "UploadId").as_deref(),
            Some("")
        );
        assert_eq!(xml_text("<R><Other>x</Other></R>", "UploadId"), None);
        assert_eq!(xml_text("<R><UploadId>unterminated", "UploadId"), None);
        assert_eq!(xml_text("not xml at all", "UploadId"), None);
        assert_eq!(
            unescape_xml("a & b &bogus; &#99999999;"),
            "a & b &bogus; &#99999999;"
        );
    }

    #[test]
    fn quoted_values_are_dropped_from_serde_messages() {
        assert_eq!(
            without_quoted_values(r#"invalid type: string "tok\"en", expected u64 at line 1"#),
            r#"invalid type: string "…", expected u64 at line 1"#
        );
        assert_eq!(
            without_quoted_values("missing field `url` at line 1 column 2"),
            "missing field `url` at line 1 column 2"
        );
        assert_eq!(without_quoted_values(r#"open "secret"#), r#"open "…""#);
    }
}
