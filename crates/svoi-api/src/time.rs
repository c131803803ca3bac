//! Time values at the HTTP boundary: parsing the `from`/`to` query parameters (RFC 3339 with
//! any offset, a date alone, or Unix seconds) and rendering stored Unix-microsecond times as
//! RFC 3339 text, both through `jiff`.
//!
//! Sub-microsecond fractions round up so half-open ranges stay exact, and rendering always
//! shows microseconds.

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;

/// Microseconds per second.
const US_PER_S: i128 = 1_000_000;

/// A parsed time parameter, Unix microseconds. Kept wide so that Unix seconds beyond what
/// `i64` microseconds hold still order and convert to seconds exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Instant(i128);

impl Instant {
    /// The smallest whole Unix second not before this instant. Both ends of a half-open
    /// range round up: `t >= 10.5` and `t < 10.5` hold for whole seconds exactly when `t >= 11`
    /// and `t < 11` do.
    pub(crate) fn ceil_seconds(self) -> i64 {
        let s = self.0.div_euclid(US_PER_S) + i128::from(self.0.rem_euclid(US_PER_S) != 0);
        clamp_i64(s)
    }

    /// The instant as Unix microseconds, clamped to what `i64` holds.
    pub(crate) fn micros(self) -> i64 {
        clamp_i64(self.0)
    }
}

/// Narrows to `i64`, saturating.
fn clamp_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// Parses a time parameter: Unix seconds (ASCII digits with an optional leading `-`), a date
/// alone (`2026-11-25`, midnight UTC), or an RFC 3339 date-time (`2026-11-25T09:00:00Z`,
/// `2026-11-25T12:00:00.5+03:00`). A space before the offset's hours is read as `+`: that is
/// what an unencoded `+` in a query string becomes.
pub(crate) fn parse(s: &str) -> Option<Instant> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = s.parse().ok()?;
        return Some(Instant(i128::from(secs) * US_PER_S));
    }
    // Dates and times are ASCII; anything else is not one (and byte offsets below stay valid).
    if !s.is_ascii() {
        return None;
    }
    let ts = if s.len() == 10 {
        let date: Date = s.parse().ok()?;
        TimeZone::UTC
            .to_timestamp(date.to_datetime(Time::midnight()))
            .ok()?
    } else {
        let text = match s.len().checked_sub(6) {
            Some(at) if s.as_bytes()[at] == b' ' && s.as_bytes()[at + 3] == b':' => {
                format!("{}+{}", &s[..at], &s[at + 1..])
            }
            _ => s.to_string(),
        };
        text.parse::<Timestamp>().ok()?
    };
    let nanos = ts.as_nanosecond();
    // Nanoseconds round up to the next microsecond (see `ceil_seconds`).
    Some(Instant(
        nanos.div_euclid(1000) + i128::from(nanos.rem_euclid(1000) != 0),
    ))
}

/// 0000-01-01T00:00:00Z in Unix microseconds: the earliest time RFC 3339 can write.
const MIN_RFC3339_US: i64 = -62_167_219_200_000_000;

/// 9999-12-30T22:00:00Z in Unix microseconds: the latest whole microsecond `jiff` builds a
/// timestamp from (so that every offset can still render it in year 9999).
const MAX_US: i64 = 253_402_207_200_000_000;

/// Unix microseconds as RFC 3339 UTC with six fractional digits
/// (`2023-11-14T22:13:20.000123Z`). Times outside 0000-01-01 .. 9999-12-30 are clamped to
/// them: the text must stay a valid RFC 3339 date-time, and no stored time is that far off.
pub(crate) fn format_us(us: i64) -> String {
    let us = us.clamp(MIN_RFC3339_US, MAX_US);
    match Timestamp::from_microsecond(us) {
        Ok(ts) => format!("{ts:.6}"),
        // Unreachable after the clamp: jiff covers the years -9999..=9999.
        Err(_) => "1970-01-01T00:00:00.000000Z".to_string(),
    }
}

/// Unix milliseconds as RFC 3339 UTC (see [`format_us`]).
pub(crate) fn format_ms(ms: u64) -> String {
    format_us(i64::try_from(ms).unwrap_or(i64::MAX).saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(s: &str) -> Option<i128> {
        parse(s).map(|i| i.0)
    }

    #[test]
    fn parses_unix_seconds_dates_and_rfc3339() {
        assert_eq!(us("1700000000"), Some(1_700_000_000_000_000));
        assert_eq!(us("-1"), Some(-1_000_000));
        assert_eq!(us("0"), Some(0));
        assert_eq!(us("2023-11-14T22:13:20Z"), Some(1_700_000_000_000_000));
        assert_eq!(us("2023-11-14t22:13:20z"), Some(1_700_000_000_000_000));
        assert_eq!(us("2023-11-14 22:13:20Z"), Some(1_700_000_000_000_000));
        assert_eq!(us("2023-11-15T01:13:20+03:00"), Some(1_700_000_000_000_000));
        assert_eq!(us("2023-11-15T01:13:20 03:00"), Some(1_700_000_000_000_000));
        assert_eq!(us("2023-11-14T20:13:20-02:00"), Some(1_700_000_000_000_000));
        assert_eq!(us("2023-11-14T22:13:20.5Z"), Some(1_700_000_000_500_000));
        assert_eq!(us("2023-11-14T22:13Z"), Some(1_699_999_980_000_000));
        assert_eq!(
            us("2023-11-14T22:13:20.000123Z"),
            Some(1_700_000_000_000_123)
        );
        assert_eq!(
            us("2023-11-14T22:13:20.0000001Z"),
            Some(1_700_000_000_000_001),
            "sub-microsecond fractions round up"
        );
        assert_eq!(us("1970-01-02"), Some(86_400_000_000));
        assert_eq!(us("1969-12-31"), Some(-86_400_000_000));
        assert_eq!(us("2024-02-29"), Some(1_709_164_800_000_000));
        assert_eq!(us("0000-01-01T00:00:00Z"), Some(i128::from(MIN_RFC3339_US)));
        // Beyond i64 microseconds but not beyond i64 seconds.
        assert_eq!(
            us("9223372036854775807"),
            Some(i128::from(i64::MAX) * 1_000_000)
        );
    }

    #[test]
    fn rejects_what_is_not_a_time() {
        for bad in [
            "",
            "-",
            "yesterday",
            "1.5",
            "+5",
            " 5",
            "99999999999999999999",
            "2023-13-01",
            "2023-02-29",
            "2023-11-14T",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:60:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20+3:00",
            "2023-11-14T22:13:20Zjunk",
            "2023-1-14",
            "２０２３-11-14",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn seconds_round_up_and_micros_saturate() {
        assert_eq!(Instant(10_500_000).ceil_seconds(), 11);
        assert_eq!(Instant(10_000_000).ceil_seconds(), 10);
        assert_eq!(Instant(-10_500_000).ceil_seconds(), -10);
        assert_eq!(Instant(i128::MAX).ceil_seconds(), i64::MAX);
        assert_eq!(Instant(i128::MIN).micros(), i64::MIN);
        assert_eq!(Instant(42).micros(), 42);
    }

    #[test]
    fn formats_rfc3339_with_microseconds() {
        assert_eq!(
            format_us(1_700_000_000_000_123),
            "2023-11-14T22:13:20.000123Z"
        );
        assert_eq!(format_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_us(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(format_us(i64::MIN), "0000-01-01T00:00:00.000000Z");
        assert_eq!(format_us(i64::MAX), "9999-12-30T22:00:00.000000Z");
        assert_eq!(format_ms(1_700_000_000_001), "2023-11-14T22:13:20.001000Z");
        for t in [
            0,
            1_709_164_800_123_456,
            -86_400_000_000,
            951_782_400_000_000,
        ] {
            assert_eq!(us(&format_us(t)), Some(i128::from(t)), "{t}");
        }
    }
}
