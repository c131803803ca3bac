//! Bearer-token authentication for everything under `/api/v1`.
//!
//! Each request looks its token up in the database (in the blocking pool), so a token created
//! or revoked by `svoi token create/revoke` in another process counts from the next request.
//! Every failure answers the same 401 (no oracle telling a malformed token from a revoked
//! one); the reason goes to a metric and a warning, never the token text. The comparison is
//! constant-time, and an unknown id still costs a hash and a comparison.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use svoi_store::TokenScope;

use crate::error::ApiError;
use crate::names;
use crate::state::ApiState;
use crate::token;

/// Why a request was refused; the `reason` label of `svoi_api_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denied {
    /// No `Authorization` header.
    Missing,
    /// Not `Bearer svoi_<id>_<secret>`.
    Malformed,
    /// No token with that id.
    Unknown,
    /// The token was revoked.
    Revoked,
    /// The secret does not match.
    Mismatch,
}

impl Denied {
    /// The metric label value.
    fn as_str(self) -> &'static str {
        match self {
            Denied::Missing => "missing",
            Denied::Malformed => "malformed",
            Denied::Unknown => "unknown",
            Denied::Revoked => "revoked",
            Denied::Mismatch => "mismatch",
        }
    }
}

/// The outcome of checking a request's credentials.
enum Outcome {
    /// A valid token with this scope.
    Granted(TokenScope),
    /// Refused.
    Denied(Denied),
}

/// What the routes behind this middleware need: they are all reads.
const REQUIRED: TokenScope = TokenScope::Read;

/// Whether a token with scope `have` may do what needs `need` (admin includes read).
fn grants(have: TokenScope, need: TokenScope) -> bool {
    match need {
        TokenScope::Read => matches!(have, TokenScope::Read | TokenScope::Admin),
        TokenScope::Admin => have == TokenScope::Admin,
    }
}

/// The middleware: on success the token's [`TokenScope`] is a request extension for the
/// handlers (and future admin routes) to consult.
pub(crate) async fn require_token(
    State(state): State<ApiState>,
    mut req: Request,
    next: Next,
) -> Response {
    let outcome = match check(&state, req.headers()).await {
        Ok(outcome) => outcome,
        Err(e) => return e.into_response(),
    };
    match outcome {
        Outcome::Granted(scope) if grants(scope, REQUIRED) => {
            req.extensions_mut().insert(scope);
            next.run(req).await
        }
        Outcome::Granted(scope) => {
            tracing::warn!(
                scope = scope.as_str(),
                route = route(&req),
                "api request forbidden"
            );
            ApiError::Forbidden.into_response()
        }
        Outcome::Denied(reason) => {
            metrics::counter!(names::AUTH_FAILURES, "reason" => reason.as_str()).increment(1);
            tracing::warn!(
                reason = reason.as_str(),
                route = route(&req),
                "api authentication failed"
            );
            ApiError::Unauthorized.into_response()
        }
    }
}

/// The matched route template for logs (never the raw path).
fn route(req: &Request) -> &str {
    req.extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
}

/// A stand-in stored hash for unknown ids, so that they cost the same hash and comparison.
const DUMMY_HASH: [u8; 32] = [0x5a; 32];

/// Checks the `Authorization` header against the token table.
async fn check(state: &ApiState, headers: &HeaderMap) -> Result<Outcome, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Outcome::Denied(Denied::Missing));
    };
    let Some(text) = value.to_str().ok().and_then(bearer) else {
        return Ok(Outcome::Denied(Denied::Malformed));
    };
    let Some((id, secret)) = token::parse(text) else {
        return Ok(Outcome::Denied(Denied::Malformed));
    };
    let id = id.to_owned();
    let stored = state.store(move |r| r.token(&id)).await?;
    let presented = token::hash(&secret);
    Ok(match stored {
        None => {
            // Same work as a known id; the result is discarded.
            std::hint::black_box(bool::from(presented.ct_eq(&DUMMY_HASH)));
            Outcome::Denied(Denied::Unknown)
        }
        Some(t) => {
            let matches = bool::from(presented.as_slice().ct_eq(t.secret_sha256.as_slice()));
            if !matches {
                Outcome::Denied(Denied::Mismatch)
            } else if t.revoked_at_us.is_some() {
                Outcome::Denied(Denied::Revoked)
            } else {
                Outcome::Granted(t.scope)
            }
        }
    })
}

/// The credentials of a `Bearer` authorization value (scheme matched ignoring case).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let credentials = rest.trim_matches(' ');
    (!credentials.is_empty()).then_some(credentials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_credentials_are_split_from_the_scheme() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearerabc"), None);
    }

    #[test]
    fn admin_includes_read() {
        assert!(grants(TokenScope::Read, TokenScope::Read));
        assert!(grants(TokenScope::Admin, TokenScope::Read));
        assert!(grants(TokenScope::Admin, TokenScope::Admin));
        assert!(!grants(TokenScope::Read, TokenScope::Admin));
    }
}
