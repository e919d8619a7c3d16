//! Timestamps as QBO writes them.
//!
//! Layout: the sample company lives in a fixed Pacific offset ([`company_offset`]); [`api_time`] is the envelope
//! `time` (milliseconds), [`meta_time`] the `MetaData` stamps (seconds), [`company_today`] the default `TxnDate`.
//! [`parse_instant`] reads a full timestamp (RFC 3339, a basic `-0700` offset, or none: company zone) or a bare
//! date so queries and change feeds can compare all of them.

use chrono::{DateTime, FixedOffset, NaiveDate, SecondsFormat, TimeZone, Utc};

/// QBO reports times in the company's zone; the sandbox company is on Pacific daylight time all year, so that
/// timestamps are stable and comparisons never hit a DST gap.
pub fn company_offset() -> FixedOffset {
    FixedOffset::west_opt(7 * 3600).expect("valid offset")
}

/// `2015-07-23T11:04:15.496-07:00`.
pub fn api_time(now: DateTime<Utc>) -> String {
    now.with_timezone(&company_offset())
        .to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// `2015-07-23T11:04:15-07:00`.
pub fn meta_time(now: DateTime<Utc>) -> String {
    now.with_timezone(&company_offset())
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// The company's calendar date at `now`.
pub fn company_today(now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&company_offset()).date_naive()
}

/// Reads `YYYY-MM-DD` (midnight in the company zone) or an RFC 3339 timestamp.
pub fn parse_instant(text: &str) -> Option<DateTime<FixedOffset>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t);
    }
    // ISO 8601 with a basic offset (`-0700`), as Python's `%z` writes it.
    for format in ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t);
        }
    }
    // No offset: the company's zone.
    for format in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return company_offset().from_local_datetime(&t).single();
        }
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    company_offset()
        .from_local_datetime(&date.and_hms_opt(0, 0, 0)?)
        .single()
}
