//! Query-string parsing: timestamps (unix ms or RFC 3339), verdicts, buckets, cursors, limits.
//! Every failure is a 400 that names the parameter, the value and what is expected.

use super::error::ApiError;

/// A timestamp parameter: an integer is unix milliseconds, anything else must be RFC 3339
/// (`2024-05-01T06:00:00Z`, `2024-05-01T08:00:00+02:00`).
pub fn time(name: &str, value: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(value).map(|t| t.timestamp_millis()).map_err(|_| {
        ApiError::BadRequest(format!(
            "{name} = {value:?}: expected unix milliseconds or an RFC 3339 time such as 2024-05-01T06:00:00Z"
        ))
    })
}

/// `from` must not be after `to`.
pub fn range(from: i64, to: i64) -> Result<(), ApiError> {
    if from > to {
        return Err(ApiError::BadRequest(format!("from ({from}) is after to ({to})")));
    }
    Ok(())
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
        assert_eq!(decode_cursor(&encode_cursor(42)).unwrap(), 42);
        assert!(decode_cursor("zz").is_err() && decode_cursor(&hex::encode("c1:-3")).is_err());
        assert!(limit(Some("0")).is_err() && limit(Some("1001")).is_err());
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
    }
}
