//! Registry timestamps: milliseconds since the Unix epoch in the store, RFC 3339 UTC when shown.

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// RFC 3339 with exactly three fractional digits and the `Z` offset, e.g. `2024-02-29T12:34:56.789Z`.
const RFC3339_MILLIS: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// RFC 3339 UTC timestamp with milliseconds, from Unix milliseconds (proleptic Gregorian calendar), always in the
/// form `YYYY-MM-DDTHH:MM:SS.mmmZ`. Instants outside the years -9999..=9999 are clamped to the nearest end of
/// that range.
pub fn rfc3339_utc(unix_ms: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000).unwrap_or_else(|_| {
        if unix_ms < 0 { PrimitiveDateTime::MIN.assume_utc() } else { PrimitiveDateTime::MAX.assume_utc() }
    });
    at.format(RFC3339_MILLIS).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_utc(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59.999Z");
    }
}
