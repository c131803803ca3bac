//! The raw frame archive and the decode errors, paged by receive time, optionally for one
//! device. An unknown IMEI here is an empty page, not a 404: frames may predate the handshake
//! that names their device.

use axum::Json;
use axum::extract::State;
use svoi_store::Cursor;

use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;
use crate::model::{DecodeError, DecodeErrorPage, RawFrame, RawFramePage};
use crate::params::{self, ArchiveQuery, DEFAULT_LIMIT, MAX_LIMIT};
use crate::state::ApiState;

/// The checked common parameters: device filter, page size and store page.
fn parse(q: &ArchiveQuery) -> Result<(Option<String>, u32, svoi_store::PageQuery), ApiError> {
    let imei = q.imei.as_deref().map(params::imei).transpose()?;
    let limit = params::limit(q.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let page = params::micros_page(
        q.from.as_deref(),
        q.to.as_deref(),
        q.cursor.as_deref(),
        limit,
    )?;
    Ok((imei.map(str::to_owned), limit, page))
}

/// Frames as received (every message, including pings and garbage), with their decode status
/// and bytes in hex; receive times in `[from, to)`.
#[utoipa::path(
    get,
    path = "/api/v1/raw-frames",
    tag = "archive",
    params(ArchiveQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of raw frames", body = RawFramePage),
        (status = 400, description = "Invalid IMEI, time, range, limit or cursor", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database busy", body = ErrorBody),
    )
)]
pub(crate) async fn raw_frames(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<ArchiveQuery>,
) -> Result<Json<RawFramePage>, ApiError> {
    let (imei, limit, page) = parse(&q)?;
    let rows = state
        .store(move |r| r.raw_frames(imei.as_deref(), &page))
        .await?;
    let (rows, next) = params::paginate(rows, limit, |f| {
        params::encode_cursor(Cursor {
            key: f.received_at_us,
            id: f.id,
        })
    });
    let items = rows.iter().map(RawFrame::from).collect();
    Ok(Json(RawFramePage { items, next }))
}

/// Frames that failed to decode, with the reason; receive times in `[from, to)`.
#[utoipa::path(
    get,
    path = "/api/v1/decode-errors",
    tag = "archive",
    params(ArchiveQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of decode errors", body = DecodeErrorPage),
        (status = 400, description = "Invalid IMEI, time, range, limit or cursor", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database busy", body = ErrorBody),
    )
)]
pub(crate) async fn decode_errors(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<ArchiveQuery>,
) -> Result<Json<DecodeErrorPage>, ApiError> {
    let (imei, limit, page) = parse(&q)?;
    let rows = state
        .store(move |r| r.decode_errors(imei.as_deref(), &page))
        .await?;
    let (rows, next) = params::paginate(rows, limit, |e| {
        params::encode_cursor(Cursor {
            key: e.received_at_us,
            id: e.id,
        })
    });
    let items = rows.iter().map(DecodeError::from).collect();
    Ok(Json(DecodeErrorPage { items, next }))
}
