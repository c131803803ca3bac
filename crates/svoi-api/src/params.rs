//! Query and path parameters: their documented shapes (`IntoParams`) and their validation into
//! store queries. Every parameter arrives as text and is checked here, so each mistake gets its
//! own stable error code instead of a generic deserialisation failure.

use serde::Deserialize;
use svoi_store::{Cursor, PageQuery};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorCode};
use crate::time::{self, Instant};

/// Default page size of the record list.
pub(crate) const RECORDS_DEFAULT_LIMIT: u32 = 1000;
/// Largest page of the record list.
pub(crate) const RECORDS_MAX_LIMIT: u32 = 10_000;
/// Default page size of the other lists.
pub(crate) const DEFAULT_LIMIT: u32 = 100;
/// Largest page of the other lists.
pub(crate) const MAX_LIMIT: u32 = 1000;

/// Query of `GET /api/v1/devices`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DevicesQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub(crate) limit: Option<String>,
    /// The `next` value of the previous page.
    pub(crate) cursor: Option<String>,
}

/// Query of `GET /api/v1/devices/{imei}/records`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RecordsQuery {
    /// Earliest event time, inclusive: RFC 3339 (a date alone is midnight UTC) or Unix seconds.
    pub(crate) from: Option<String>,
    /// Latest event time, exclusive: RFC 3339 (a date alone is midnight UTC) or Unix seconds.
    pub(crate) to: Option<String>,
    /// Page size, 1 to 10000 (default 1000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    pub(crate) limit: Option<String>,
    /// The `next` value of the previous page (the `X-Next-Cursor` header for CSV).
    pub(crate) cursor: Option<String>,
    /// Response format (default json).
    #[param(value_type = Option<RecordFormat>, inline)]
    pub(crate) format: Option<String>,
}

/// Query of `GET /api/v1/devices/{imei}/events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Earliest event time, inclusive: RFC 3339 (a date alone is midnight UTC) or Unix seconds.
    pub(crate) from: Option<String>,
    /// Latest event time, exclusive: RFC 3339 (a date alone is midnight UTC) or Unix seconds.
    pub(crate) to: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub(crate) limit: Option<String>,
    /// The `next` value of the previous page.
    pub(crate) cursor: Option<String>,
}

/// Query of `GET /api/v1/raw-frames` and `GET /api/v1/decode-errors`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ArchiveQuery {
    /// Only frames of this device (1 to 20 digits).
    #[param(pattern = "^[0-9]{1,20}$")]
    pub(crate) imei: Option<String>,
    /// Earliest receive time, inclusive: RFC 3339 (a date alone is midnight UTC) or Unix
    /// seconds.
    pub(crate) from: Option<String>,
    /// Latest receive time, exclusive: RFC 3339 (a date alone is midnight UTC) or Unix seconds.
    pub(crate) to: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub(crate) limit: Option<String>,
    /// The `next` value of the previous page.
    pub(crate) cursor: Option<String>,
}

/// The record list's response formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RecordFormat {
    /// `{"items":[...],"next":...}`.
    #[default]
    Json,
    /// `text/csv`, the next cursor in `X-Next-Cursor`.
    Csv,
    /// `application/geo+json` FeatureCollection.
    Geojson,
}

/// Parses the `format` parameter.
pub(crate) fn format(s: Option<&str>) -> Result<RecordFormat, ApiError> {
    match s {
        None | Some("json") => Ok(RecordFormat::Json),
        Some("csv") => Ok(RecordFormat::Csv),
        Some("geojson") => Ok(RecordFormat::Geojson),
        Some(other) => Err(ApiError::client(
            ErrorCode::InvalidFormat,
            format!("format {other:?} is not one of json, csv, geojson"),
        )),
    }
}

/// Checks an IMEI: 1 to 20 ASCII digits.
pub(crate) fn imei(s: &str) -> Result<&str, ApiError> {
    if (1..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s)
    } else {
        Err(ApiError::client(
            ErrorCode::InvalidImei,
            format!("imei {s:?} is not 1 to 20 digits"),
        ))
    }
}

/// Parses `limit` (absent: `default`; else 1..=`max`).
pub(crate) fn limit(s: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    let Some(s) = s else {
        return Ok(default);
    };
    match s.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(ApiError::client(
            ErrorCode::InvalidLimit,
            format!("limit {s:?} is not a whole number from 1 to {max}"),
        )),
    }
}

/// The text of a keyset cursor: `{key}_{id}`. Clients treat it as opaque.
pub(crate) fn encode_cursor(c: Cursor) -> String {
    format!("{}_{}", c.key, c.id)
}

/// Parses a cursor made by [`encode_cursor`]; only its exact output is accepted.
pub(crate) fn cursor(s: Option<&str>) -> Result<Option<Cursor>, ApiError> {
    let Some(s) = s else {
        return Ok(None);
    };
    let parsed = s.split_once('_').and_then(|(key, id)| {
        Some(Cursor {
            key: key.parse().ok()?,
            id: id.parse().ok()?,
        })
    });
    match parsed {
        Some(c) if encode_cursor(c) == s => Ok(Some(c)),
        _ => Err(bad_cursor(s)),
    }
}

/// Parses the device list's cursor: the last IMEI of the previous page.
pub(crate) fn imei_cursor(s: Option<&str>) -> Result<Option<&str>, ApiError> {
    match s {
        None => Ok(None),
        Some(s) => imei(s).map(Some).map_err(|_| bad_cursor(s)),
    }
}

/// The error for a cursor this server did not make.
fn bad_cursor(s: &str) -> ApiError {
    ApiError::client(
        ErrorCode::InvalidCursor,
        format!("cursor {s:?} is not one this server returned"),
    )
}

/// Parses `from` and `to`, checking `from <= to`.
fn window(
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(Option<Instant>, Option<Instant>), ApiError> {
    let one = |name: &str, s: Option<&str>| -> Result<Option<Instant>, ApiError> {
        match s {
            None => Ok(None),
            Some(s) => time::parse(s).map(Some).ok_or_else(|| {
                ApiError::client(
                    ErrorCode::InvalidTime,
                    format!(
                        "{name} {s:?} is neither an RFC 3339 time (2026-11-25T09:00:00Z) \
                         nor Unix seconds"
                    ),
                )
            }),
        }
    };
    let from = one("from", from)?;
    let to = one("to", to)?;
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return Err(ApiError::client(
            ErrorCode::InvalidRange,
            "from is after to",
        ));
    }
    Ok((from, to))
}

/// A page over a key in Unix seconds (records and events by event time). The store is asked
/// for one row more than the page so that the handler knows whether another page follows.
pub(crate) fn seconds_page(
    from: Option<&str>,
    to: Option<&str>,
    cursor_text: Option<&str>,
    limit: u32,
) -> Result<PageQuery, ApiError> {
    let (f, t) = window(from, to)?;
    Ok(PageQuery {
        from: f.map_or(i64::MIN, Instant::ceil_seconds),
        to: t.map_or(i64::MAX, Instant::ceil_seconds),
        after: cursor(cursor_text)?,
        limit: limit + 1,
    })
}

/// A page over a key in Unix microseconds (raw frames and decode errors by receive time);
/// one row more than the page, as [`seconds_page`].
pub(crate) fn micros_page(
    from: Option<&str>,
    to: Option<&str>,
    cursor_text: Option<&str>,
    limit: u32,
) -> Result<PageQuery, ApiError> {
    let (f, t) = window(from, to)?;
    Ok(PageQuery {
        from: f.map_or(i64::MIN, Instant::micros),
        to: t.map_or(i64::MAX, Instant::micros),
        after: cursor(cursor_text)?,
        limit: limit + 1,
    })
}

/// Cuts the extra row fetched beyond `limit` and returns the cursor after the page's last row
/// when that row existed: `next` is `None` exactly on the last page.
pub(crate) fn paginate<T>(
    mut rows: Vec<T>,
    limit: u32,
    cursor_of: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(cursor_of);
        (rows, next)
    } else {
        (rows, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(e: ApiError) -> ErrorCode {
        e.code()
    }

    #[test]
    fn cursors_round_trip_and_reject_anything_else() {
        for c in [
            Cursor { key: 0, id: 0 },
            Cursor {
                key: 1_700_000_000,
                id: 42,
            },
            Cursor { key: -5, id: 3 },
            Cursor {
                key: i64::MIN,
                id: i64::MAX,
            },
        ] {
            let text = encode_cursor(c);
            assert_eq!(cursor(Some(&text)).unwrap(), Some(c), "{text}");
        }
        assert_eq!(cursor(None).unwrap(), None);
        for bad in [
            "", "_", "5", "5_", "_5", "a_b", "+5_3", "05_3", "5_3_1", "5 _3", "1e3_1",
        ] {
            assert_eq!(
                code(cursor(Some(bad)).unwrap_err()),
                ErrorCode::InvalidCursor,
                "{bad:?}"
            );
        }
        assert_eq!(
            imei_cursor(Some("352093081234567")).unwrap(),
            Some("352093081234567")
        );
        assert_eq!(
            code(imei_cursor(Some("x")).unwrap_err()),
            ErrorCode::InvalidCursor
        );
    }

    #[test]
    fn limits_have_defaults_and_bounds() {
        assert_eq!(limit(None, 100, 1000).unwrap(), 100);
        assert_eq!(limit(Some("1"), 100, 1000).unwrap(), 1);
        assert_eq!(limit(Some("1000"), 100, 1000).unwrap(), 1000);
        for bad in ["0", "1001", "-1", "+5", "", "x", "4294967296", "1.0"] {
            assert_eq!(
                code(limit(Some(bad), 100, 1000).unwrap_err()),
                ErrorCode::InvalidLimit,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn imeis_are_one_to_twenty_digits() {
        assert!(imei("1").is_ok());
        assert!(imei("12345678901234567890").is_ok());
        for bad in ["", "123456789012345678901", "35209308123456a", "-1", "١٢٣"] {
            assert_eq!(
                code(imei(bad).unwrap_err()),
                ErrorCode::InvalidImei,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn windows_convert_to_the_key_unit() {
        let q = seconds_page(None, None, None, 10).unwrap();
        assert_eq!(
            (q.from, q.to, q.after, q.limit),
            (i64::MIN, i64::MAX, None, 11)
        );
        let q = seconds_page(
            Some("2023-11-14T22:13:20.5Z"),
            Some("1700000100"),
            Some("7_3"),
            5,
        )
        .unwrap();
        assert_eq!((q.from, q.to), (1_700_000_001, 1_700_000_100));
        assert_eq!(q.after, Some(Cursor { key: 7, id: 3 }));
        let q = micros_page(Some("1970-01-02"), Some("-1"), None, 1);
        assert_eq!(code(q.unwrap_err()), ErrorCode::InvalidRange);
        let q = micros_page(Some("1970-01-02"), Some("1970-01-02"), None, 1).unwrap();
        assert_eq!((q.from, q.to), (86_400_000_000, 86_400_000_000));
        let q = micros_page(Some("9223372036854775807"), None, None, 1).unwrap();
        assert_eq!(q.from, i64::MAX);
        assert_eq!(
            code(micros_page(Some("soon"), None, None, 1).unwrap_err()),
            ErrorCode::InvalidTime
        );
        assert_eq!(
            code(seconds_page(None, None, Some("x"), 1).unwrap_err()),
            ErrorCode::InvalidCursor
        );
    }

    #[test]
    fn formats_are_json_csv_geojson() {
        assert_eq!(format(None).unwrap(), RecordFormat::Json);
        assert_eq!(format(Some("csv")).unwrap(), RecordFormat::Csv);
        assert_eq!(format(Some("geojson")).unwrap(), RecordFormat::Geojson);
        assert_eq!(
            code(format(Some("JSON")).unwrap_err()),
            ErrorCode::InvalidFormat
        );
    }

    #[test]
    fn paginate_reports_next_only_when_more_rows_exist() {
        let (rows, next) = paginate(vec![1, 2, 3], 2, |r| r.to_string());
        assert_eq!((rows, next), (vec![1, 2], Some("2".to_owned())));
        let (rows, next) = paginate(vec![1, 2], 2, |r| r.to_string());
        assert_eq!((rows, next), (vec![1, 2], None));
        let (rows, next) = paginate(Vec::<i32>::new(), 2, |r| r.to_string());
        assert_eq!((rows, next), (vec![], None));
    }
}
