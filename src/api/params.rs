//! Query-string parsing: timestamps (unix ms or RFC 3339), verdicts, buckets, cursors, limits.
//! Every failure is a 400 that names the parameter, the value and what is expected.

use super::error::ApiError;
use std::collections::HashMap;

/// A query with a parameter not in `known` is a 400 that names it and lists the known ones.
pub fn check_known(q: &HashMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    match q.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::BadRequest(format!("unknown parameter {k:?}: expected {}", known.join(", ")))),
        None => Ok(()),
    }
}

/// This machine's UTC offset at `at_ms`, in minutes (day and shift buckets without a configured
/// offset).
pub fn local_offset_minutes(at_ms: i64) -> i32 {
    use chrono::{Local, Offset, TimeZone};
    let at = chrono::DateTime::from_timestamp_millis(at_ms).unwrap_or_default().naive_utc();
    Local.offset_from_utc_datetime(&at).fix().local_minus_utc() / 60
}

/// Earliest time a query may name: 0000-01-01T00:00:00Z, the first instant RFC 3339 can write.
pub const MIN_TIME_MS: i64 = -62_167_219_200_000;
/// Latest: 9999-12-31T23:59:59.999Z. Within these bounds no window or bucket arithmetic on
/// `i64` milliseconds can overflow.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// A timestamp parameter: an integer is unix milliseconds, anything else must be RFC 3339
/// (`2024-05-01T06:00:00Z`, `2024-05-01T08:00:00+02:00`); either way within years 0000..=9999.
pub fn time(name: &str, value: &str) -> Result<i64, ApiError> {
    let ms = match value.parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => chrono::DateTime::parse_from_rfc3339(value).map(|t| t.timestamp_millis()).map_err(|_| {
            ApiError::BadRequest(format!(
                "{name} = {value:?}: expected unix milliseconds or an RFC 3339 time such as 2024-05-01T06:00:00Z"
            ))
        })?,
    };
    if !(MIN_TIME_MS..=MAX_TIME_MS).contains(&ms) {
        return Err(ApiError::BadRequest(format!(
            "{name} = {value:?}: out of range; give a time in years 0000..=9999 \
             (unix milliseconds {MIN_TIME_MS}..={MAX_TIME_MS})"
        )));
    }
    Ok(ms)
}

/// `from` must not be after `to`.
pub fn range(from: i64, to: i64) -> Result<(), ApiError> {
    if from > to {
        return Err(ApiError::BadRequest(format!("from ({from}) is after to ({to})")));
    }
    Ok(())
}

/// The window `[from, to)` of a stats query: `to` defaults to `now`, `from` to `default_ms`
/// before `to`. A window that does not fit (an overflow, `from` after `to`) or spans more than
/// [`MAX_BUCKETS`] buckets is a 400 saying what to change.
pub fn stats_window(
    from: Option<i64>,
    to: Option<i64>,
    now: i64,
    default_ms: i64,
    bucket: Bucket,
) -> Result<(i64, i64), ApiError> {
    let to = to.unwrap_or(now);
    let from = match from {
        Some(from) => from,
        None => to.checked_sub(default_ms).ok_or_else(|| {
            ApiError::BadRequest(format!("to ({to}) is too early for the default window: give from as well"))
        })?,
    };
    range(from, to)?;
    let buckets = to.checked_sub(from).map(|span| span / bucket.width_ms());
    if buckets.is_none_or(|n| n > MAX_BUCKETS) {
        return Err(ApiError::BadRequest(format!(
            "from..to spans more than {MAX_BUCKETS} {} buckets: narrow the range or use a wider bucket",
            bucket.as_str()
        )));
    }
    Ok((from, to))
}

/// The stored verdict for `ok` | `ng` | `failsafe` (any case).
pub fn verdict(value: &str) -> Result<&'static str, ApiError> {
    match value.to_ascii_lowercase().as_str() {
        "ok" => Ok("OK"),
        "ng" => Ok("NG"),
        "failsafe" => Ok("FAILSAFE"),
        _ => Err(ApiError::BadRequest(format!("verdict = {value:?}: expected ok, ng or failsafe"))),
    }
}

/// Statistics bucket: width and the offset of bucket starts from local midnight, in ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bucket {
    Minute,
    Hour,
    Day,
    /// 8-hour shifts starting 06:00, 14:00 and 22:00 local time.
    Shift,
}

impl Bucket {
    pub fn parse(value: &str) -> Result<Self, ApiError> {
        match value {
            "minute" => Ok(Bucket::Minute),
            "hour" => Ok(Bucket::Hour),
            "day" => Ok(Bucket::Day),
            "shift" => Ok(Bucket::Shift),
            _ => Err(ApiError::BadRequest(format!("bucket = {value:?}: expected minute, hour, day or shift"))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Minute => "minute",
            Bucket::Hour => "hour",
            Bucket::Day => "day",
            Bucket::Shift => "shift",
        }
    }
    pub fn width_ms(self) -> i64 {
        match self {
            Bucket::Minute => 60_000,
            Bucket::Hour => 3_600_000,
            Bucket::Day => 86_400_000,
            Bucket::Shift => 8 * 3_600_000,
        }
    }
    /// Where buckets start, counted from local midnight.
    pub fn origin_ms(self) -> i64 {
        if self == Bucket::Shift { 6 * 3_600_000 } else { 0 }
    }
}

/// Most buckets one stats request may span.
pub const MAX_BUCKETS: i64 = 10_000;

/// Page size: 1..=[`MAX_LIMIT`], default [`DEFAULT_LIMIT`].
pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

pub fn limit(value: Option<&str>) -> Result<i64, ApiError> {
    let Some(v) = value else { return Ok(DEFAULT_LIMIT) };
    match v.parse::<i64>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::BadRequest(format!("limit = {v:?}: expected an integer 1..={MAX_LIMIT}"))),
    }
}

/// The opaque cursor of the next page: the last id seen, versioned and hex-encoded.
pub fn encode_cursor(last_id: i64) -> String {
    hex::encode(format!("c1:{last_id}"))
}

pub fn decode_cursor(value: &str) -> Result<i64, ApiError> {
    hex::decode(value)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("c1:").and_then(|n| n.parse::<i64>().ok()))
        .filter(|&id| id > 0)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "cursor = {value:?}: not a cursor from this API (pass next_cursor as it came)"
            ))
        })
}

/// A numeric id from the path.
pub fn id(value: &str) -> Result<i64, ApiError> {
    value.parse::<i64>().map_err(|_| ApiError::BadRequest(format!("id = {value:?}: expected an integer")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_cursors_and_limits() {
        assert_eq!(time("from", "1714543200000").unwrap(), 1_714_543_200_000);
        assert_eq!(time("from", "2024-05-01T06:00:00Z").unwrap(), 1_714_543_200_000);
        assert_eq!(time("from", "2024-05-01T08:00:00+02:00").unwrap(), 1_714_543_200_000);
        assert!(time("from", "yesterday").is_err());
        assert!(time("to", "-9223372036854775808").is_err() && time("to", &MAX_TIME_MS.to_string()).is_ok());
        assert!(time("from", "+10000-01-01T00:00:00Z").is_err());
        assert_eq!(decode_cursor(&encode_cursor(42)).unwrap(), 42);
        assert!(decode_cursor("zz").is_err() && decode_cursor(&hex::encode("c1:-3")).is_err());
        assert!(limit(Some("0")).is_err() && limit(Some("1001")).is_err());
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
    }

    #[test]
    fn stats_windows_are_checked_not_overflowed() {
        let day = 86_400_000;
        assert_eq!(stats_window(None, Some(day), 0, day, Bucket::Hour).unwrap(), (0, day));
        assert_eq!(stats_window(None, None, 5 * day, day, Bucket::Hour).unwrap(), (4 * day, 5 * day));
        assert!(stats_window(None, Some(i64::MIN), 0, day, Bucket::Hour).is_err());
        assert!(stats_window(Some(i64::MIN), Some(i64::MAX), 0, day, Bucket::Day).is_err());
        assert!(stats_window(Some(day), Some(0), 0, day, Bucket::Hour).is_err());
        assert!(stats_window(Some(0), Some(MAX_BUCKETS * 60_000 + 60_000), 0, day, Bucket::Minute).is_err());
    }
}
