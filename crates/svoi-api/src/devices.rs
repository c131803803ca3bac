//! The device endpoints: the paged device list and one device's detail.

use axum::Json;
use axum::extract::State;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use crate::model::{Device, DeviceInfo, DevicePage};
use crate::params::{self, DEFAULT_LIMIT, DevicesQuery, MAX_LIMIT};
use crate::state::ApiState;

/// Devices ordered by IMEI, with whether each is connected now and its last valid position.
#[utoipa::path(
    get,
    path = "/api/v1/devices",
    tag = "devices",
    params(DevicesQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of devices", body = DevicePage),
        (status = 400, description = "Invalid limit or cursor", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database busy", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<DevicesQuery>,
) -> Result<Json<DevicePage>, ApiError> {
    let limit = params::limit(q.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let after = params::imei_cursor(q.cursor.as_deref())?.map(str::to_owned);
    let rows = state
        .store(move |r| r.devices(after.as_deref(), limit + 1))
        .await?;
    let (rows, next) = params::paginate(rows, limit, |d| d.imei.clone());
    let live = state.live();
    let items = rows
        .iter()
        .map(|d| Device::new(d, live.is_online(&d.imei)))
        .collect();
    Ok(Json(DevicePage { items, next }))
}

/// One device: the list entry plus its negotiated FLEX layout and record count.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{imei}",
    tag = "devices",
    params(("imei" = String, Path, description = "Device IMEI (1 to 20 digits)", pattern = "^[0-9]{1,20}$")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The device", body = DeviceInfo),
        (status = 400, description = "Invalid IMEI", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "Unknown device", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database busy", body = ErrorBody),
    )
)]
pub(crate) async fn detail(
    State(state): State<ApiState>,
    ApiPath(imei): ApiPath<String>,
) -> Result<Json<DeviceInfo>, ApiError> {
    params::imei(&imei)?;
    let key = imei.clone();
    let Some(device) = state.store(move |r| r.device(&key)).await? else {
        return Err(unknown_device(&imei));
    };
    let online = state.live().is_online(&imei);
    Ok(Json(DeviceInfo::new(&device, online)))
}

/// The 404 for an IMEI the database has never seen.
pub(crate) fn unknown_device(imei: &str) -> ApiError {
    ApiError::NotFound(format!("no device with imei {imei}"))
}
