//! The API's error type and its one JSON shape, `{"error":{"code":"...","message":"..."}}`.
//!
//! Codes are stable snake_case names clients can match on; messages are for people. Internal
//! failures are logged in full (inside the request span) and shown to the client only as
//! `internal`: store paths, SQL and panics never leave the server.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use svoi_store::StoreError;
use utoipa::ToSchema;

/// The stable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorCode {
    /// A request the server could not understand (bad query string, bad path encoding).
    BadRequest,
    /// A `from` or `to` that is neither RFC 3339 nor Unix seconds.
    InvalidTime,
    /// `from` after `to`.
    InvalidRange,
    /// A `limit` that is not a number in the allowed range.
    InvalidLimit,
    /// A `cursor` this server did not hand out.
    InvalidCursor,
    /// An IMEI that is not 1 to 20 ASCII digits.
    InvalidImei,
    /// A `format` other than the ones offered.
    InvalidFormat,
    /// Missing or invalid bearer token.
    Unauthorized,
    /// The token's scope does not allow the request.
    Forbidden,
    /// No such route or resource.
    NotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// Something failed on the server; details are in its log.
    Internal,
    /// The database is busy; try again shortly.
    Unavailable,
}

impl ErrorCode {
    /// The status code each error code answers with.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::InvalidTime
            | ErrorCode::InvalidRange
            | ErrorCode::InvalidLimit
            | ErrorCode::InvalidCursor
            | ErrorCode::InvalidImei
            | ErrorCode::InvalidFormat => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The code for a bare status some layer produced without a body of ours.
    pub(crate) fn for_status(status: StatusCode) -> ErrorCode {
        match status {
            StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
            StatusCode::FORBIDDEN => ErrorCode::Forbidden,
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
            s if s.is_server_error() => ErrorCode::Internal,
            _ => ErrorCode::BadRequest,
        }
    }
}

/// The error document every failing response carries.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong.
    pub(crate) error: ErrorDetail,
}

/// The error itself.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable machine-readable code.
    pub(crate) code: ErrorCode,
    /// Human-readable explanation.
    pub(crate) message: String,
}

/// What a handler or middleware can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The client sent something unusable; the message says what.
    #[error("{message}")]
    Client {
        /// The code to report.
        code: ErrorCode,
        /// What was wrong, lowercase.
        message: String,
    },
    /// Missing or invalid credentials; one message for every cause (no oracle).
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The token's scope is not enough.
    #[error("this token's scope does not allow this request")]
    Forbidden,
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// A store failure.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A blocking task panicked or was cancelled.
    #[error("blocking task: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// Anything else the server got wrong.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A client error with `code`.
    pub(crate) fn client(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::Client {
            code,
            message: message.into(),
        }
    }

    /// The code this error reports.
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            ApiError::Client { code, .. } => *code,
            ApiError::Unauthorized => ErrorCode::Unauthorized,
            ApiError::Forbidden => ErrorCode::Forbidden,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            // A busy or locked database, or a transient I/O failure, clears up by itself:
            // 503 tells the client to retry where 500 would not.
            ApiError::Store(e) if e.is_retryable() => ErrorCode::Unavailable,
            ApiError::Store(_) | ApiError::Join(_) | ApiError::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// The JSON error response for `code` with `message`.
pub(crate) fn error_response(code: ErrorCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code,
            message: message.into(),
        },
    };
    (code.status(), Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        match code {
            ErrorCode::Internal => {
                tracing::error!(error = %self, "request failed");
                error_response(code, "internal error")
            }
            ErrorCode::Unavailable => {
                tracing::error!(error = %self, "request failed, database unavailable");
                let mut res = error_response(code, "database busy, retry later");
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                res
            }
            ErrorCode::Unauthorized => {
                let mut res = error_response(code, self.to_string());
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                res
            }
            _ => error_response(code, self.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_back_from_its_status() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::Internal,
            ErrorCode::Unavailable,
        ] {
            assert_eq!(ErrorCode::for_status(code.status()), code);
        }
        assert_eq!(
            ErrorCode::for_status(StatusCode::PAYLOAD_TOO_LARGE),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn internal_errors_hide_their_detail() {
        let res = ApiError::Internal("secret path /var/lib/svoi".into()).into_response();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let res = ApiError::Store(StoreError::Corrupt("x".into())).into_response();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
