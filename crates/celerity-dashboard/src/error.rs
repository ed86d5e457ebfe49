//! The JSON API's errors: `{"error": {"code": "...", "message": "..."}}` with a status that fits,
//! never a bare 500 or a stack trace.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// An error the API answers with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }

    pub(crate) fn invalid_filter(parameter: &str, problem: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_filter",
            format!("filter {parameter}: {problem}"),
        )
    }

    pub(crate) fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "log in first: give a username and password (basic auth), a bearer token, or sign in at /login",
        )
    }

    pub(crate) fn read_only() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "read_only",
            "this dashboard runs with --read-only: controls are off",
        )
    }

    pub(crate) fn csrf(problem: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "csrf",
            format!(
                "{problem}: send the X-Celerity-Csrf header with the token from GET /api/session"
            ),
        )
    }

    /// NATS cannot be reached (or refused the request).
    pub(crate) fn nats(error: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "nats_unavailable",
            format!("NATS did not answer: {error}; the dashboard reconnects by itself, try again"),
        )
    }

    pub(crate) fn nats_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "nats_unavailable",
            "the NATS server cannot be reached; the dashboard keeps trying and shows data again once it is back",
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(json!({
            "error": { "code": self.code, "message": self.message }
        }))
    }
}

/// The JSON error of a request the extractors refused (a malformed body or path).
pub(crate) fn json_body_error(
    error: actix_web::error::JsonPayloadError,
    _request: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::bad_request(format!(
        "the request body is not the JSON expected: {error}"
    ))
    .into()
}

/// The JSON error of a malformed query string.
pub(crate) fn query_error(
    error: actix_web::error::QueryPayloadError,
    _request: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::bad_request(format!("the query string is malformed: {error}")).into()
}
