//! Field values as stored and sent on the wire.
//!
//! Layout: [`FieldValue`] is a stored value (money and quantities are `Decimal`, written as exact JSON numbers);
//! [`JsonIn`] is one value of a request body read from its raw JSON text so that numbers are never routed through
//! `f64`; the `*_datetime` functions speak Salesforce's `2024-01-15T10:30:00.000+0000` format.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// A stored field value. Dates and datetimes are kept as their canonical wire strings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FieldValue {
    #[default]
    Null,
    Bool(bool),
    Text(String),
    Num(Decimal),
}

impl FieldValue {
    pub fn is_null(&self) -> bool {
        matches!(self, FieldValue::Null)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_decimal(&self) -> Option<Decimal> {
        match self {
            FieldValue::Num(d) => Some(*d),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            FieldValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn text(s: impl Into<String>) -> Self {
        FieldValue::Text(s.into())
    }
}

impl Serialize for FieldValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldValue::Null => serializer.serialize_none(),
            FieldValue::Bool(b) => serializer.serialize_bool(*b),
            FieldValue::Text(s) => serializer.serialize_str(s),
            // The decimal's own text goes out verbatim: a JSON number with no binary floating point on the way.
            FieldValue::Num(d) => {
                let raw =
                    RawValue::from_string(d.to_string()).map_err(serde::ser::Error::custom)?;
                raw.serialize(serializer)
            }
        }
    }
}

impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        match JsonIn::from_raw(&raw).map_err(D::Error::custom)? {
            JsonIn::Null => Ok(FieldValue::Null),
            JsonIn::Bool(b) => Ok(FieldValue::Bool(b)),
            JsonIn::Str(s) => Ok(FieldValue::Text(s)),
            JsonIn::Num(d) => Ok(FieldValue::Num(d)),
            JsonIn::Other(_) => Err(D::Error::custom(
                "a field value must be null, a boolean, a string or a number",
            )),
        }
    }
}

/// One value of a request body, read from its raw text.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonIn {
    Null,
    Bool(bool),
    Str(String),
    Num(Decimal),
    /// An object or array (only `attributes` may legitimately be one).
    Other(serde_json::Value),
}

impl JsonIn {
    pub fn from_raw(raw: &RawValue) -> Result<JsonIn, String> {
        let text = raw.get().trim();
        match text.as_bytes().first() {
            Some(b'n') => Ok(JsonIn::Null),
            Some(b't') => Ok(JsonIn::Bool(true)),
            Some(b'f') => Ok(JsonIn::Bool(false)),
            Some(b'"') => serde_json::from_str::<String>(text)
                .map(JsonIn::Str)
                .map_err(|e| e.to_string()),
            Some(b'-' | b'0'..=b'9') => parse_decimal(text).map(JsonIn::Num),
            Some(b'{' | b'[') => serde_json::from_str(text)
                .map(JsonIn::Other)
                .map_err(|e| e.to_string()),
            _ => Err(format!("unexpected JSON value `{text}`")),
        }
    }

    /// The JSON type name Salesforce's parser reports (`VALUE_STRING`, …) for error messages.
    pub fn token_name(&self) -> &'static str {
        match self {
            JsonIn::Null => "VALUE_NULL",
            JsonIn::Bool(true) => "VALUE_TRUE",
            JsonIn::Bool(false) => "VALUE_FALSE",
            JsonIn::Str(_) => "VALUE_STRING",
            JsonIn::Num(_) => "VALUE_NUMBER",
            JsonIn::Other(v) if v.is_array() => "START_ARRAY",
            JsonIn::Other(_) => "START_OBJECT",
        }
    }
}

/// Parses a JSON number exactly (plain or scientific notation).
pub fn parse_decimal(text: &str) -> Result<Decimal, String> {
    let parsed = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text)
    } else {
        Decimal::from_str(text)
    };
    parsed.map_err(|e| format!("`{text}` is not a number this sandbox can hold exactly: {e}"))
}

/// Reads a request body that must be a JSON object, keeping every value's raw text.
pub fn parse_body(body: &[u8]) -> Result<Vec<(String, JsonIn)>, String> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Vec::new());
    }
    let map: serde_json::Map<String, serde_json::Value> =
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(_) => return Err("the request body must be a JSON object".into()),
            Err(e) => return Err(format!("malformed JSON: {e}")),
        };
    // Parsed twice: once to validate the shape and once raw, so the numbers keep their exact text.
    let raw: Vec<(String, Box<RawValue>)> =
        serde_json::from_slice::<std::collections::BTreeMap<String, Box<RawValue>>>(body)
            .map_err(|e| format!("malformed JSON: {e}"))?
            .into_iter()
            .collect();
    debug_assert_eq!(map.len(), raw.len());
    raw.into_iter()
        .map(|(k, v)| JsonIn::from_raw(&v).map(|j| (k, j)))
        .collect()
}

/// Salesforce's datetime wire format, always UTC with millisecond precision.
pub fn format_datetime(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string()
}

/// Accepts `2024-01-15T10:30:00Z`, `…+0000`, `….000Z`, `…+00:00` and offsets.
pub fn parse_datetime(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z"] {
        if let Ok(t) = DateTime::parse_from_str(text, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    None
}

pub fn parse_date(text: &str) -> Option<NaiveDate> {
    if text.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_exact_text() {
        let body = br#"{"Amount": 0.1, "Quantity": 3, "Big": 12345678901234567.89, "E": 1.5e2}"#;
        let fields = parse_body(body).unwrap();
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!(
            get("Amount"),
            JsonIn::Num(Decimal::from_str("0.1").unwrap())
        );
        assert_eq!(
            get("Big"),
            JsonIn::Num(Decimal::from_str("12345678901234567.89").unwrap())
        );
        assert_eq!(get("E"), JsonIn::Num(Decimal::from(150)));
        let out = serde_json::to_string(&FieldValue::Num(
            Decimal::from_str("12345678901234567.89").unwrap(),
        ))
        .unwrap();
        assert_eq!(out, "12345678901234567.89");
    }

    #[test]
    fn body_must_be_an_object() {
        assert!(parse_body(b"[1]").unwrap_err().contains("JSON object"));
        assert!(
            parse_body(b"{\"a\":")
                .unwrap_err()
                .contains("malformed JSON")
        );
    }

    #[test]
    fn datetimes_in_every_accepted_spelling() {
        let a = parse_datetime("2024-01-15T10:30:00Z").unwrap();
        assert_eq!(parse_datetime("2024-01-15T10:30:00.000+0000"), Some(a));
        assert_eq!(parse_datetime("2024-01-15T10:30:00.000Z"), Some(a));
        assert_eq!(parse_datetime("2024-01-15T11:30:00+0100"), Some(a));
        assert_eq!(format_datetime(a), "2024-01-15T10:30:00.000+0000");
        assert!(parse_datetime("2024-01-15").is_none());
    }
}
