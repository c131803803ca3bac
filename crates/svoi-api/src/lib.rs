//! SVOI HTTP API: the axum router over the store's read handle and the live ingest view.
//!
//! Unauthenticated: `/health`, `/ready`, `/metrics`, and the Swagger UI at `/docs` (its
//! assets compiled in, so it works offline). Everything under `/api/v1` needs
//! `Authorization: Bearer <token>` (see [`token`]): devices, their records (JSON, CSV or
//! GeoJSON) and alarm events, the raw frame archive, decode errors, a status summary and the
//! OpenAPI document. Every error, axum's own rejections included, is
//! `{"error":{"code":"...","message":"..."}}` with a stable code.
//!
//! The crate reads no configuration, installs no recorder or subscriber: it emits through
//! the `metrics` and `tracing` facades and the binary decides where they go. Store calls run
//! in `spawn_blocking`; no lock is held across an `.await`.

mod archive;
mod auth;
mod devices;
mod docs;
mod error;
mod extract;
mod model;
pub mod names;
mod observe;
mod params;
mod records;
mod state;
mod system;
mod time;
pub mod token;

use axum::Router;
use axum::middleware;
use axum::routing::{any, get};
use tokio_util::sync::CancellationToken;

pub use docs::openapi;
pub use state::{ApiState, Live, LiveStatus, Maintenance, MaintenanceWindow, MetricsRender};

/// The whole API: `/health`, `/ready`, `/metrics`, `/docs` and the authenticated `/api/v1`
/// routes, with request spans, request metrics and JSON errors on all of them.
pub fn app(state: ApiState) -> Router {
    let spec = docs::Spec::new();
    let api = Router::new()
        .route("/api/v1/devices", get(devices::list))
        .route("/api/v1/devices/{imei}", get(devices::detail))
        .route("/api/v1/devices/{imei}/records", get(records::records))
        .route("/api/v1/devices/{imei}/events", get(records::events))
        .route("/api/v1/raw-frames", get(archive::raw_frames))
        .route("/api/v1/decode-errors", get(archive::decode_errors))
        .route("/api/v1/status", get(system::status))
        .route("/api/v1/openapi.json", docs::spec_route(spec.clone()))
        // Unknown paths under the prefix are authenticated too: without a token nobody learns
        // which routes exist there.
        .route("/api/v1", any(observe::not_found))
        .route(observe::CATCH_ALL, any(observe::not_found))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    let router = Router::new()
        .route("/health", get(system::health))
        .route("/ready", get(system::ready))
        .route("/metrics", get(system::metrics))
        .merge(docs::router(spec))
        .merge(api)
        .fallback(observe::not_found);
    observe::layers(router).with_state(state)
}

/// Only `/metrics` (and JSON 404s), for an optional separate metrics listener.
pub fn metrics_app(state: ApiState) -> Router {
    let router = Router::new()
        .route("/metrics", get(system::metrics))
        .fallback(observe::not_found);
    observe::layers(router).with_state(state)
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then stops accepting and lets the
/// requests in flight finish (axum's graceful shutdown).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
