//! Time arguments on the command line: RFC 3339 (`2026-11-25T09:00:00Z`, a date alone means
//! its midnight UTC) or Unix seconds.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};

/// Parses a time argument into Unix microseconds.
pub fn parse_us(s: &str) -> Result<i64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = s.parse()?;
        return Ok(secs.saturating_mul(1_000_000));
    }
    let text = if s.len() == 10 && s.as_bytes().get(4) == Some(&b'-') {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    let t = match humantime::parse_rfc3339_weak(&text) {
        Ok(t) => t,
        Err(_) => {
            bail!("{s:?} is neither an RFC 3339 time (2026-11-25T09:00:00Z) nor Unix seconds")
        }
    };
    Ok(match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    })
}

/// Unix microseconds as RFC 3339 UTC.
pub fn format_us(us: i64) -> String {
    let t = if us >= 0 {
        UNIX_EPOCH + std::time::Duration::from_micros(us as u64)
    } else {
        SystemTime::UNIX_EPOCH
    };
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_rfc3339_dates_and_unix_seconds() {
        assert_eq!(parse_us("1700000000").ok(), Some(1_700_000_000_000_000));
        assert_eq!(
            parse_us("2023-11-14T22:13:20Z").ok(),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(parse_us("1970-01-02").ok(), Some(86_400_000_000));
        assert!(parse_us("yesterday").is_err());
        assert!(parse_us("").is_err());
        assert_eq!(format_us(1_700_000_000_000_000), "2023-11-14T22:13:20Z");
    }
}
