//! Cross-cutting HTTP concerns applied to every route: a tracing span per request, the
//! request metrics, the JSON 404 fallback, and turning any bare error response some layer
//! produced (axum's 405, an unknown Swagger UI asset) into the API's JSON error.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::error::{ApiError, ErrorCode, error_response};
use crate::names;
use crate::state::ApiState;

/// The route label of requests no route matched.
const UNMATCHED: &str = "unmatched";

/// Route templates that only exist to answer 404 inside an authenticated prefix: counted as
/// unmatched, like the fallback.
pub(crate) const CATCH_ALL: &str = "/api/v1/{*rest}";

/// The matched route template of a request, or `unmatched`. Never the raw path: label values
/// must form a small fixed set (no IMEIs, no scanner junk).
fn route(req: &Request) -> &str {
    match req.extensions().get::<MatchedPath>() {
        Some(p) if p.as_str() != CATCH_ALL => p.as_str(),
        _ => UNMATCHED,
    }
}

/// The method label: the standard methods by name, anything else as `other` (methods are
/// open-ended tokens, labels must not be).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Counts the request in `svoi_http_requests_total{route, method, status}` and times it in
/// `svoi_http_request_duration_seconds{route}`.
async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = route(&req).to_owned();
    let method = method_label(req.method());
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!(
        names::HTTP_REQUESTS,
        "route" => route.clone(),
        "method" => method,
        "status" => status
    )
    .increment(1);
    metrics::histogram!(names::HTTP_REQUEST_DURATION, "route" => route)
        .record(start.elapsed().as_secs_f64());
    res
}

/// Replaces the body of an error response that is not already JSON with the API's error
/// document, keeping its status and headers (`Allow` on a 405, for one).
async fn json_errors(res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        return res;
    }
    let (mut parts, _) = res.into_parts();
    let code = ErrorCode::for_status(status);
    let message = match code {
        ErrorCode::NotFound => "no such route".to_owned(),
        ErrorCode::MethodNotAllowed => "method not allowed on this route".to_owned(),
        ErrorCode::Internal => "internal error".to_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("bad request")
            .to_ascii_lowercase(),
    };
    let (fresh, body) = error_response(code, message).into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.extend(fresh.headers);
    Response::from_parts(parts, body)
}

/// The fallback: a JSON 404.
pub(crate) async fn not_found() -> Response {
    ApiError::NotFound("no such route".to_owned()).into_response()
}

/// Wraps every route of `router` (and its fallback) in the request span, the metrics and
/// the JSON error normalisation. Route layers see the matched path, so labels and span
/// fields carry the template.
pub(crate) fn layers(router: Router<ApiState>) -> Router<ApiState> {
    let trace = TraceLayer::new_for_http()
        .make_span_with(|req: &Request<Body>| {
            tracing::info_span!(
                "http_request",
                method = %req.method(),
                route = route(req),
                status = tracing::field::Empty,
                latency_ms = tracing::field::Empty,
            )
        })
        .on_request(())
        .on_response(|res: &Response, latency: Duration, span: &Span| {
            span.record("status", res.status().as_u16());
            span.record("latency_ms", latency.as_secs_f64() * 1000.0);
            tracing::debug!("request finished");
        })
        // Failures are logged where they happen, with their cause; a 503 from /ready is an
        // answer, not a failure.
        .on_failure(());
    router
        .layer(middleware::map_response(json_errors))
        .layer(middleware::from_fn(track))
        .layer(trace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn bare_errors_become_json_and_keep_their_headers() {
        let res = Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, "GET,HEAD")
            .body(Body::empty())
            .unwrap();
        let res = json_errors(res).await;
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(res.headers()[header::ALLOW], "GET,HEAD");
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");

        let ok = json_errors(Response::new(Body::from("fine"))).await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert!(ok.headers().get(header::CONTENT_TYPE).is_none());
    }

    #[test]
    fn unusual_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
