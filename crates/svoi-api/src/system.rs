//! The operational endpoints: liveness (`/health`), readiness (`/ready`), Prometheus
//! (`/metrics`) and the authenticated status summary (`/api/v1/status`).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorBody};
use crate::model::{Check, Health, Ready, ReadyChecks, Status};
use crate::state::ApiState;
use crate::time::{format_ms, format_us};

/// How long readiness waits for the database before calling it failed.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The Prometheus text exposition format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/health",
    tag = "system",
    responses((status = 200, description = "The process answers", body = Health))
)]
pub(crate) async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the database answers, the device listener is up and the writer runs. An open
/// maintenance window shows as `maintenance: true` and leaves readiness alone.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "system",
    responses(
        (status = 200, description = "Ready to serve devices and queries", body = Ready),
        (status = 503, description = "A check failed; `checks` says which", body = Ready),
    )
)]
pub(crate) async fn ready(State(state): State<ApiState>) -> Response {
    let ping = state.store(|r| r.ping());
    let database = match tokio::time::timeout(PING_TIMEOUT, ping).await {
        Ok(Ok(())) => Check::Ok,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database check failed");
            Check::Error
        }
        Err(_) => {
            tracing::warn!(timeout = ?PING_TIMEOUT, "readiness: database did not answer");
            Check::Error
        }
    };
    let live = state.live().status();
    let up = |ok: bool| if ok { Check::Ok } else { Check::Down };
    let checks = ReadyChecks {
        database,
        device_listener: up(live.listener_up),
        writer: up(live.writer_alive),
    };
    let ready = [checks.database, checks.device_listener, checks.writer]
        .iter()
        .all(|c| *c == Check::Ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Ready {
        ready,
        checks,
        maintenance: state.maintenance().is_some(),
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics of the whole server, in the text exposition format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    responses((
        status = 200,
        description = "Prometheus text exposition format 0.0.4",
        body = String,
        content_type = "text/plain"
    ))
)]
pub(crate) async fn metrics(State(state): State<ApiState>) -> Response {
    let text = state.render_metrics();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROMETHEUS_TEXT),
        )],
        text,
    )
        .into_response()
}

/// A summary of the server: version, uptime, devices connected, ingest rates, database size,
/// the open maintenance window.
#[utoipa::path(
    get,
    path = "/api/v1/status",
    tag = "system",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The summary", body = Status),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database busy", body = ErrorBody),
    )
)]
pub(crate) async fn status(State(state): State<ApiState>) -> Result<Json<Status>, ApiError> {
    let size = state.store(|r| r.database_size()).await?;
    let live = state.live().status();
    let rates = state.rates(&live);
    let window = state.maintenance();
    Ok(Json(Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: state.uptime().as_secs(),
        connected_devices: live.connections_open,
        frames_per_second: rates.frames_per_second,
        queue_depth: live.queue_depth,
        last_frame_time: live.last_frame_unix_ms.map(format_ms),
        decode_error_rate: rates.decode_error_rate,
        database_size_bytes: size.file_bytes.saturating_add(size.wal_bytes),
        writer_alive: live.writer_alive,
        maintenance: window.is_some(),
        maintenance_reason: window.as_ref().map(|w| w.reason.clone()),
        maintenance_since: window.as_ref().map(|w| format_us(w.since_us)),
        maintenance_until: window.as_ref().map(|w| format_us(w.until_us)),
    }))
}
