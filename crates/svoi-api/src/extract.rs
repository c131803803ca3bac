//! Query and path extractors whose rejections are the API's JSON errors: axum's own reject
//! with plain text, which would break the one error shape clients rely on.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};

/// [`Query`] with a JSON `bad_request` rejection.
#[derive(Debug)]
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::client(
                ErrorCode::BadRequest,
                lowercase_first(&rejection.body_text()),
            )),
        }
    }
}

/// [`Path`] with a JSON rejection: `bad_request` for what the client sent, `internal` for a
/// route wired without the parameter.
#[derive(Debug)]
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) if rejection.status().is_server_error() => {
                Err(ApiError::Internal(rejection.body_text()))
            }
            Err(rejection) => Err(ApiError::client(
                ErrorCode::BadRequest,
                lowercase_first(&rejection.body_text()),
            )),
        }
    }
}

/// axum's messages start with a capital; ours do not.
fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_start_lowercase() {
        assert_eq!(
            lowercase_first("Failed to deserialize query string"),
            "failed to deserialize query string"
        );
        assert_eq!(lowercase_first(""), "");
    }
}
