//! Pieces shared by the two HTTP servers (the hub and the agent's local API): the JSON body
//! extractor, whose rejections are `{"code", "message"}` answers like every other error.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::cloud::dto::ApiError;

/// Request bodies of the control routes are small; anything larger is refused with 413.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// An error answer: status and `{"code": status, "message": …}`.
#[derive(Debug)]
pub struct ErrorAnswer {
    pub status: StatusCode,
    pub message: String,
}

impl ErrorAnswer {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ErrorAnswer {
        ErrorAnswer {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ErrorAnswer {
    fn into_response(self) -> Response {
        let body = ApiError {
            code: i64::from(self.status.as_u16()),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

/// A JSON body: malformed JSON, wrong types and oversized bodies are a clear 4xx.
pub struct JsonBody<T>(pub T);

/// The bytes of a request body, at most [`MAX_JSON_BODY`] of them.
pub async fn small_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ErrorAnswer> {
    let (parts, body) = req.into_parts();
    let limited = axum::body::Body::new(http_body_util::Limited::new(body, MAX_JSON_BODY));
    Bytes::from_request(Request::from_parts(parts, limited), state)
        .await
        .map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ErrorAnswer::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than {MAX_JSON_BODY} bytes"),
                )
            } else {
                ErrorAnswer::new(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                )
            }
        })
}

/// The pairs of a raw query string, decoded.
pub fn query_pairs(raw: &Option<String>) -> std::collections::BTreeMap<String, String> {
    raw.as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ErrorAnswer> {
    serde_json::from_slice(bytes)
        .map_err(|e| ErrorAnswer::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ErrorAnswer;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = small_body(req, state).await?;
        if bytes.is_empty() {
            return Err(ErrorAnswer::new(
                StatusCode::BAD_REQUEST,
                "a JSON body is required",
            ));
        }
        parse_json(&bytes).map(JsonBody)
    }
}
