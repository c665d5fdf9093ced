//! The hub's errors, and how they go on the wire: `{"code": <status>, "message": "…"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::cloud::dto::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Internal(String),
}

impl HubError {
    pub fn status(&self) -> StatusCode {
        match self {
            HubError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HubError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HubError::Forbidden(_) => StatusCode::FORBIDDEN,
            HubError::NotFound(_) => StatusCode::NOT_FOUND,
            HubError::Gone(_) => StatusCode::GONE,
            HubError::Conflict(_) => StatusCode::CONFLICT,
            HubError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HubError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            HubError::Database(_) | HubError::Io(_) | HubError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl IntoResponse for HubError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if status.is_server_error() {
            // Details of internal failures go to the log, not to the caller.
            tracing::error!(error = %self, "hub request failed");
            "internal error; see the hub's log".to_owned()
        } else {
            self.to_string()
        };
        let body = ApiError {
            code: i64::from(status.as_u16()),
            message,
        };
        (status, Json(body)).into_response()
    }
}
