//! `webhook`: an HTTP POST of the payload (or `{"text": …}` for chat webhooks), signed with
//! HMAC-SHA256 over the body when a secret is set.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Outcome, Payload};
use crate::cloud::dto::Secret;
use crate::config::WebhookFormat;

/// The header carrying `sha256=<hex HMAC-SHA256 of the body, keyed with the secret>`.
pub const SIGNATURE_HEADER: &str = "X-Masv-Signature";

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub(super) async fn post(
    http: &reqwest::Client,
    url: &url::Url,
    secret: Option<&Secret>,
    format: WebhookFormat,
    payload: &Payload,
    timeout: Duration,
) -> Outcome {
    let body = match format {
        WebhookFormat::Json => serde_json::to_vec(payload),
        WebhookFormat::Slack => {
            serde_json::to_vec(&serde_json::json!({ "text": payload.headline() }))
        }
    }
    .expect("a payload serializes");
    let mut request = http
        .post(url.clone())
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Masv-Event", &payload.event)
        .header("X-Masv-Event-Id", &payload.id);
    if let Some(secret) = secret {
        request = request.header(
            SIGNATURE_HEADER,
            signature(secret.expose().as_bytes(), &body),
        );
    }
    let response = match request.body(body).send().await {
        Ok(r) => r,
        // Connect errors and timeouts: the receiver may be back soon.
        Err(e) => return Outcome::Retry(format!("POST {}: {}", redacted(url), error_chain(&e))),
    };
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let output = format!("HTTP {status}{}", tail_of(&text));
    if status.is_success() {
        Outcome::Delivered(output)
    } else if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        Outcome::Retry(format!("POST {} answered {output}", redacted(url)))
    } else {
        Outcome::Failed(format!(
            "POST {} answered {output}; fix the webhook's url or secret, then `masv events retry`",
            redacted(url)
        ))
    }
}

/// The URL without its query (chat webhooks carry their token in the path, which is kept
/// out of logs too).
fn redacted(url: &url::Url) -> String {
    match url.host_str() {
        Some(host) => format!(
            "{}://{host}{}",
            url.scheme(),
            if url.path().len() > 1 { "/…" } else { "/" }
        ),
        None => "the webhook".into(),
    }
}

fn tail_of(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let start = text.len().saturating_sub(200);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    format!(": {}", &text[start..])
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
