//! Time values at the HTTP boundary: parsing the `from`/`to` query parameters (RFC 3339, a date
//! alone, or Unix seconds) and rendering stored Unix-microsecond times as RFC 3339 text.
//!
//! Written by hand rather than with a date crate because the rules are small and exact: any
//! RFC 3339 offset is accepted (trackers and their operators are rarely on UTC), sub-microsecond
//! fractions round up so half-open ranges stay exact, and rendering always shows microseconds.

/// Microseconds per second.
const US_PER_S: i128 = 1_000_000;

/// Seconds per day.
const S_PER_DAY: i64 = 86_400;

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
/// `2026-11-25T12:00:00.5+03:00`; `t`, `z` and a space for `T` accepted, and a space for `+`
/// in the offset, which is what an unencoded `+` in a query string becomes).
pub(crate) fn parse(s: &str) -> Option<Instant> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = s.parse().ok()?;
        return Some(Instant(i128::from(secs) * US_PER_S));
    }
    parse_rfc3339(s.as_bytes()).map(Instant)
}

/// A fixed-width decimal field of `bytes` at `at..at + len`.
fn number(bytes: &[u8], at: usize, len: usize) -> Option<i64> {
    let field = bytes.get(at..at + len)?;
    field.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

/// RFC 3339 (or a date alone) to Unix microseconds.
fn parse_rfc3339(b: &[u8]) -> Option<i128> {
    let year = number(b, 0, 4)?;
    let month = number(b, 5, 2)?;
    let day = number(b, 8, 2)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if b.len() == 10 {
        return Some(i128::from(days * S_PER_DAY) * US_PER_S);
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let hour = number(b, 11, 2)?;
    let minute = number(b, 14, 2)?;
    let second = number(b, 17, 2)?;
    if b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return None;
    }
    // 60 is a leap second; it counts as the first second of the next minute.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut micros: i128 = 0;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        let frac = b.get(start..at)?;
        if frac.is_empty() {
            return None;
        }
        // Nanoseconds and below round up to the next microsecond (see `ceil_seconds`).
        let mut scale = US_PER_S;
        let mut rest_nonzero = false;
        for &d in frac {
            let d = i128::from(d - b'0');
            if scale > 1 {
                scale /= 10;
                micros += d * scale;
            } else if d != 0 {
                rest_nonzero = true;
            }
        }
        micros += i128::from(rest_nonzero);
    }
    let offset_s = match b.get(at..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-' | b' '), h1, h2, b':', m1, m2] => {
            let hh = number(&[*h1, *h2], 0, 2)?;
            let mm = number(&[*m1, *m2], 0, 2)?;
            if hh > 23 || mm > 59 {
                return None;
            }
            let off = hh * 3600 + mm * 60;
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let secs = days * S_PER_DAY + hour * 3600 + minute * 60 + second - offset_s;
    Some(i128::from(secs) * US_PER_S + micros)
}

/// Whether `year` is a Gregorian leap year.
fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Days in `month` (1..=12) of `year`.
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (inverse of
/// [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// 0000-01-01T00:00:00Z in Unix microseconds: the earliest time RFC 3339 can write.
const MIN_RFC3339_US: i64 = -62_167_219_200_000_000;
/// 9999-12-31T23:59:59.999999Z in Unix microseconds: the latest.
const MAX_RFC3339_US: i64 = 253_402_300_799_999_999;

/// Unix microseconds as RFC 3339 UTC with six fractional digits
/// (`2023-11-14T22:13:20.000123Z`). Times outside the years 0000..=9999 are clamped to them:
/// the text must stay a valid RFC 3339 date-time, and no stored time is that far off.
pub(crate) fn format_us(us: i64) -> String {
    let us = us.clamp(MIN_RFC3339_US, MAX_RFC3339_US);
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(S_PER_DAY);
    let sod = secs.rem_euclid(S_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
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
            "2023-11-14T22:13Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:60:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20+3:00",
            "2023-11-14T22:13:20+24:00",
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
        assert_eq!(format_us(i64::MAX), "9999-12-31T23:59:59.999999Z");
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
