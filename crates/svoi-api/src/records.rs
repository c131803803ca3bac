//! A device's records (as JSON, CSV or GeoJSON) and alarm events, paged by event time.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashSet;

use serde_json::Value;
use svoi_store::{Cursor, PageQuery, Reader, StoreError};

use crate::devices::unknown_device;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use crate::model::{
    CORE_KEYS, Event, EventPage, Feature, FeatureCollection, FeatureCollectionType, FeatureType,
    LineString, LineStringType, Point, PointFeature, PointType, RecordItem, RecordPage,
    TrackFeature, TrackProperties,
};
use crate::params::{
    self, DEFAULT_LIMIT, EventsQuery, MAX_LIMIT, RECORDS_DEFAULT_LIMIT, RECORDS_MAX_LIMIT,
    RecordFormat, RecordsQuery,
};
use crate::state::ApiState;

/// The response header carrying the next page's cursor of a CSV page.
pub(crate) const NEXT_CURSOR: HeaderName = HeaderName::from_static("x-next-cursor");

/// CSV's content type.
const CSV: &str = "text/csv; charset=utf-8";
/// GeoJSON's content type (RFC 7946).
const GEOJSON: &str = "application/geo+json";

/// `rows` if the device exists: an empty page is ambiguous (no rows in the range, or no such
/// device), so only then is the device looked up.
fn known<T>(r: &Reader, imei: &str, rows: Vec<T>) -> Result<Option<Vec<T>>, StoreError> {
    if rows.is_empty() && !r.device_exists(imei)? {
        Ok(None)
    } else {
        Ok(Some(rows))
    }
}

/// The time window and paging parameters of a per-device list.
struct Window<'a> {
    from: Option<&'a str>,
    to: Option<&'a str>,
    cursor: Option<&'a str>,
    limit: u32,
}

/// Reads one page of a device's rows keyed by event time: checks the IMEI and the window,
/// fetches `limit + 1` rows through `fetch` (404 for an unknown device), and returns the page
/// with the cursor of the next one (`None` on the last page).
async fn device_page<T: Send + 'static>(
    state: &ApiState,
    imei: &str,
    w: Window<'_>,
    fetch: fn(&Reader, &str, &PageQuery) -> Result<Vec<T>, StoreError>,
    key: fn(&T) -> Cursor,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    params::imei(imei)?;
    let page = params::seconds_page(w.from, w.to, w.cursor, w.limit)?;
    let owned = imei.to_owned();
    let rows = state
        .store(move |r| {
            let rows = fetch(r, &owned, &page)?;
            known(r, &owned, rows)
        })
        .await?
        .ok_or_else(|| unknown_device(imei))?;
    Ok(params::paginate(rows, w.limit, |r| {
        params::encode_cursor(key(r))
    }))
}

/// The device's records with event time in `[from, to)`, ordered by event time.
///
/// JSON items carry the core values present in the record, `source`, `received_at`, then
/// every other decoded field by name. CSV has the core columns then the other fields seen on
/// the page, the next cursor in `X-Next-Cursor`. GeoJSON is a FeatureCollection: the page's
/// track as a LineString of its valid fixes (when there are two or more), then one Point per
/// record with coordinates, its JSON item as properties.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{imei}/records",
    tag = "devices",
    params(
        ("imei" = String, Path, description = "Device IMEI (1 to 20 digits)", pattern = "^[0-9]{1,20}$"),
        RecordsQuery,
    ),
    security(("bearer" = [])),
    responses(
        (
            status = 200,
            description = "A page of records",
            content(
                (RecordPage = "application/json"),
                (String = "text/csv"),
                (FeatureCollection = "application/geo+json"),
            ),
            headers(("X-Next-Cursor" = String, description = "CSV only: cursor of the next page; absent on the last page")),
        ),
        (status = 400, description = "Invalid IMEI, time, range, limit, cursor or format", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "Unknown device", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database busy", body = ErrorBody),
    )
)]
pub(crate) async fn records(
    State(state): State<ApiState>,
    ApiPath(imei): ApiPath<String>,
    ApiQuery(q): ApiQuery<RecordsQuery>,
) -> Result<Response, ApiError> {
    let format = params::format(q.format.as_deref())?;
    let window = Window {
        from: q.from.as_deref(),
        to: q.to.as_deref(),
        cursor: q.cursor.as_deref(),
        limit: params::limit(q.limit.as_deref(), RECORDS_DEFAULT_LIMIT, RECORDS_MAX_LIMIT)?,
    };
    let (rows, next) = device_page(&state, &imei, window, Reader::records, |r| Cursor {
        // The store never returns a record without an event time (it is the page key).
        key: r.row.event_time.unwrap_or(i64::MIN),
        id: r.id,
    })
    .await?;
    let items: Vec<RecordItem> = rows.iter().map(RecordItem::new).collect();
    match format {
        RecordFormat::Json => Ok(Json(RecordPage { items, next }).into_response()),
        RecordFormat::Csv => csv(&items, next),
        RecordFormat::Geojson => Ok(geojson(items, next)),
    }
}

/// The page as CSV: a header of the core columns then every other field name in the order
/// first seen on the page; absent values empty, lists and objects as JSON text.
fn csv(items: &[RecordItem], next: Option<String>) -> Result<Response, ApiError> {
    let mut maps = Vec::with_capacity(items.len());
    for item in items {
        match serde_json::to_value(item) {
            Ok(Value::Object(map)) => maps.push(map),
            Ok(_) => return Err(ApiError::Internal("a record item is not an object".into())),
            Err(e) => return Err(ApiError::Internal(format!("record item to json: {e}"))),
        }
    }
    let mut columns: Vec<&str> = CORE_KEYS.to_vec();
    let mut seen: HashSet<&str> = columns.iter().copied().collect();
    for item in items {
        for key in item.other.keys() {
            if seen.insert(key.as_str()) {
                columns.push(key);
            }
        }
    }
    let out = write_csv(&columns, &maps).map_err(|e| ApiError::Internal(format!("csv: {e}")))?;
    let mut res = ([(header::CONTENT_TYPE, HeaderValue::from_static(CSV))], out).into_response();
    if let Some(next) = next {
        let value = HeaderValue::from_str(&next)
            .map_err(|e| ApiError::Internal(format!("cursor {next:?} as a header: {e}")))?;
        res.headers_mut().insert(NEXT_CURSOR, value);
    }
    Ok(res)
}

/// RFC 4180 text (CRLF line ends): the header, then one line per item.
fn write_csv(
    columns: &[&str],
    maps: &[serde_json::Map<String, Value>],
) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    w.write_record(columns)?;
    for map in maps {
        w.write_record(
            columns
                .iter()
                .map(|c| map.get(*c).map(cell).unwrap_or_default()),
        )?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// One CSV cell's text for a JSON value.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(_) | Value::Number(_) | Value::Array(_) | Value::Object(_) => v.to_string(),
    }
}

/// The page as a GeoJSON FeatureCollection.
fn geojson(items: Vec<RecordItem>, next: Option<String>) -> Response {
    let track: Vec<[f64; 2]> = items
        .iter()
        .filter(|i| i.valid != Some(false))
        .filter_map(lon_lat)
        .collect();
    let mut features = Vec::with_capacity(items.len() + 1);
    if track.len() >= 2 {
        features.push(Feature::Track(TrackFeature {
            kind: FeatureType::Feature,
            geometry: LineString {
                kind: LineStringType::LineString,
                coordinates: track,
            },
            properties: TrackProperties::default(),
        }));
    }
    for item in items {
        if let Some(coordinates) = lon_lat(&item) {
            features.push(Feature::Point(Box::new(PointFeature {
                kind: FeatureType::Feature,
                geometry: Point {
                    kind: PointType::Point,
                    coordinates,
                },
                properties: item,
            })));
        }
    }
    let body = FeatureCollection {
        kind: FeatureCollectionType::FeatureCollection,
        features,
        next,
    };
    let mut res = Json(body).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(GEOJSON));
    res
}

/// `[longitude, latitude]` of an item that has both.
fn lon_lat(item: &RecordItem) -> Option<[f64; 2]> {
    Some([item.longitude?, item.latitude?])
}

/// The device's alarm events with event time in `[from, to)`, ordered by event time.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{imei}/events",
    tag = "devices",
    params(
        ("imei" = String, Path, description = "Device IMEI (1 to 20 digits)", pattern = "^[0-9]{1,20}$"),
        EventsQuery,
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of alarm events", body = EventPage),
        (status = 400, description = "Invalid IMEI, time, range, limit or cursor", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "Unknown device", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database busy", body = ErrorBody),
    )
)]
pub(crate) async fn events(
    State(state): State<ApiState>,
    ApiPath(imei): ApiPath<String>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let window = Window {
        from: q.from.as_deref(),
        to: q.to.as_deref(),
        cursor: q.cursor.as_deref(),
        limit: params::limit(q.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?,
    };
    let (rows, next) = device_page(&state, &imei, window, Reader::events, |e| Cursor {
        // The store never returns an event without an event time (it is the page key).
        key: e.event_time.unwrap_or(i64::MIN),
        id: e.id,
    })
    .await?;
    let items = rows.iter().map(Event::from).collect();
    Ok(Json(EventPage { items, next }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_is_rfc4180_with_a_header_and_quoted_cells() {
        let row = serde_json::json!({"a": "b,c", "b": "say \"hi\"", "c": [1, 2]});
        let Value::Object(map) = row else {
            unreachable!()
        };
        let out = write_csv(&["a", "b", "c", "d"], &[map]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a,b,c,d\r\n\"b,c\",\"say \"\"hi\"\"\",\"[1,2]\",\r\n"
        );
    }

    #[test]
    fn csv_cells_are_json_text_for_non_strings() {
        assert_eq!(cell(&serde_json::json!([1, 2])), "[1,2]");
        assert_eq!(cell(&serde_json::json!(null)), "");
        assert_eq!(cell(&serde_json::json!(1.5)), "1.5");
        assert_eq!(cell(&serde_json::json!(true)), "true");
        assert_eq!(cell(&serde_json::json!("x")), "x");
    }
}
