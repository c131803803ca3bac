//! Time arguments on the command line: RFC 3339 with any offset (`2026-11-25T09:00:00Z`,
//! `2026-11-25T12:00:00+03:00`), a date alone (its midnight UTC), or Unix seconds — the same
//! forms the HTTP API's `from` and `to` take.

use anyhow::{Result, bail};
use jiff::Timestamp;
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;

/// Parses a time argument into Unix microseconds.
pub fn parse_us(s: &str) -> Result<i64> {
    let s = s.trim();
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = s.parse()?;
        return Ok(secs.saturating_mul(1_000_000));
    }
    let ts = if s.len() == 10 {
        s.parse::<Date>().ok().and_then(|d| {
            TimeZone::UTC
                .to_timestamp(d.to_datetime(Time::midnight()))
                .ok()
        })
    } else {
        s.parse::<Timestamp>().ok()
    };
    match ts {
        Some(ts) => Ok(ts.as_microsecond()),
        None => bail!(
            "{s:?} is neither an RFC 3339 time (2026-11-25T09:00:00Z, \
             2026-11-25T12:00:00+03:00), a date (2026-11-25) nor Unix seconds"
        ),
    }
}

/// Unix microseconds as RFC 3339 UTC, whole seconds.
pub fn format_us(us: i64) -> String {
    match Timestamp::from_second(us.div_euclid(1_000_000)) {
        Ok(ts) => ts.to_string(),
        Err(_) => format!("@{}", us.div_euclid(1_000_000)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_rfc3339_dates_and_unix_seconds() {
        assert_eq!(parse_us("1700000000").ok(), Some(1_700_000_000_000_000));
        assert_eq!(parse_us("-1").ok(), Some(-1_000_000));
        assert_eq!(
            parse_us("2023-11-14T22:13:20Z").ok(),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(
            parse_us("2023-11-15T01:13:20+03:00").ok(),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(parse_us("1970-01-02").ok(), Some(86_400_000_000));
        assert!(parse_us("yesterday").is_err());
        assert!(parse_us("2023-11-14T22:13:20").is_err(), "no offset");
        assert!(parse_us("2023-02-29").is_err());
        assert!(parse_us("").is_err());
        assert_eq!(format_us(1_700_000_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_us(-1_000_000), "1969-12-31T23:59:59Z");
    }
}
