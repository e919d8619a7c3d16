//! Change data capture: `GET /cdc?entities=…&changedSince=…`, with deleted rows kept apart from live ones.
//!
//! QuickBooks looks back at most 30 days and returns at most 1,000 objects per entity per call; an entity that
//! hit that cap is flagged `truncated` so the caller asks again from the newest timestamp it saw.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use serde_json::Value;

use super::{QuickbooksConnector, format_timestamp, parse_timestamp, query, unexpected};
use crate::{ConnectorError, Record};

/// How far back the feed reaches.
pub const MAX_LOOKBACK: TimeDelta = TimeDelta::days(30);
/// The most objects per entity in one answer.
pub const MAX_PER_ENTITY: usize = 1000;
/// Entities the feed does not carry (facts §7).
pub const NOT_IN_CDC: &[&str] = &["TimeActivity", "TaxCode", "TaxRate", "JournalCode", "TaxAgency"];

/// A deleted object as the feed reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    pub id: String,
    pub last_updated: Option<DateTime<Utc>>,
}

/// The changes of one entity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityChanges {
    /// Created or updated objects, whole.
    pub live: Vec<Record>,
    pub deleted: Vec<Deleted>,
    /// The answer held the per-entity maximum: there may be more; ask again from the newest change seen.
    pub truncated: bool,
}

/// What changed since a point in time, per entity name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CdcChanges {
    pub entities: BTreeMap<String, EntityChanges>,
}

impl CdcChanges {
    /// The changes of one entity (empty if none).
    pub fn of(&self, entity: &str) -> EntityChanges {
        self.entities.get(entity).cloned().unwrap_or_default()
    }
}

fn invalid(message: String, field: &str) -> ConnectorError {
    ConnectorError::Validation { code: "invalid_cdc_request".into(), message, field: Some(field.into()) }
}

/// Checks a CDC request before it is sent: a known list of entities the feed carries, and a start inside the
/// 30-day look-back (measured against `now`).
pub fn check_request(
    entities: &[&str],
    changed_since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), ConnectorError> {
    if entities.is_empty() {
        return Err(invalid("a change data capture call needs at least one entity".into(), "entities"));
    }
    for e in entities {
        query::check_entity(e)?;
        if let Some(name) = NOT_IN_CDC.iter().find(|n| n.eq_ignore_ascii_case(e)) {
            return Err(invalid(
                format!("QuickBooks change data capture does not cover {name}; query it instead"),
                "entities",
            ));
        }
    }
    if changed_since < now - MAX_LOOKBACK {
        return Err(invalid(
            format!(
                "changedSince {} is more than 30 days ago: QuickBooks change data capture only looks back 30 days; \
                 do a full read instead",
                format_timestamp(changed_since)
            ),
            "changedSince",
        ));
    }
    Ok(())
}

/// Reads a CDC answer: `{"CDCResponse":[{"QueryResponse":[{"Customer":[…]},{"Invoice":[…]}]}]}`.
pub fn parse_response(body: &Value) -> Result<CdcChanges, ConnectorError> {
    let responses = body
        .get("CDCResponse")
        .and_then(Value::as_array)
        .ok_or_else(|| unexpected("the change data capture answer has no CDCResponse list"))?;
    let mut out = CdcChanges::default();
    for response in responses {
        let Some(queries) = response.get("QueryResponse").and_then(Value::as_array) else {
            continue;
        };
        for q in queries {
            let Some(map) = q.as_object() else { continue };
            for (name, rows) in map {
                let Some(rows) = rows.as_array() else {
                    continue;
                };
                let entry = out.entities.entry(name.clone()).or_default();
                for row in rows {
                    let Some(rec) = row.as_object() else { continue };
                    if rec.get("status").and_then(Value::as_str) == Some("Deleted") {
                        let id = rec
                            .get("Id")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                            .ok_or_else(|| unexpected(&format!("a deleted {name} in the change feed has no Id")))?;
                        let last_updated = rec
                            .get("MetaData")
                            .and_then(|m| m.get("LastUpdatedTime"))
                            .and_then(Value::as_str)
                            .and_then(parse_timestamp);
                        entry.deleted.push(Deleted { id, last_updated });
                    } else {
                        entry.live.push(rec.clone());
                    }
                }
                if entry.live.len() + entry.deleted.len() >= MAX_PER_ENTITY {
                    entry.truncated = true;
                }
            }
        }
    }
    Ok(out)
}

impl QuickbooksConnector {
    /// Everything of `entities` changed at or after `changed_since`. Refuses a start older than 30 days and
    /// entities the feed does not carry, naming which.
    pub async fn cdc(&self, entities: &[&str], changed_since: DateTime<Utc>) -> Result<CdcChanges, ConnectorError> {
        check_request(entities, changed_since, Utc::now())?;
        let params = [("entities", entities.join(",")), ("changedSince", format_timestamp(changed_since))];
        let body = self.call(Method::GET, "cdc", &params, None).await?;
        parse_response(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_outside_the_feed_are_refused_with_the_reason() {
        let now = Utc::now();
        assert!(check_request(&["Customer", "Invoice"], now - TimeDelta::days(29), now).is_ok());
        let e = check_request(&["Customer"], now - TimeDelta::days(31), now).unwrap_err();
        assert!(matches!(&e, ConnectorError::Validation { field: Some(f), .. } if f == "changedSince"));
        assert!(e.to_string().contains("30 days"), "{e}");
        let e = check_request(&["TimeActivity"], now, now).unwrap_err();
        assert!(e.to_string().contains("TimeActivity"), "{e}");
        assert!(check_request(&[], now, now).is_err());
        assert!(check_request(&["Customer,Invoice"], now, now).is_err());
    }

    #[test]
    fn deleted_rows_are_kept_apart() {
        let body = json!({"CDCResponse": [{"QueryResponse": [
            {"Customer": [{"Id": "1", "DisplayName": "A", "MetaData": {"LastUpdatedTime": "2024-01-01T00:00:00-08:00"}},
                          {"domain": "QBO", "status": "Deleted", "Id": "65", "MetaData": {"LastUpdatedTime": "2024-01-02T00:00:00-08:00"}}],
             "startPosition": 1, "maxResults": 2},
            {"Invoice": [{"Id": "9", "TotalAmt": 10}]}
        ]}], "time": "t"});
        let c = parse_response(&body).unwrap();
        let cust = c.of("Customer");
        assert_eq!(cust.live.len(), 1);
        assert_eq!(cust.live[0]["DisplayName"], json!("A"));
        assert_eq!(
            cust.deleted,
            vec![Deleted { id: "65".into(), last_updated: parse_timestamp("2024-01-02T08:00:00Z") }]
        );
        assert!(!cust.truncated);
        assert_eq!(c.of("Invoice").live.len(), 1);
        assert!(c.of("Bill").live.is_empty());
        assert!(parse_response(&json!({"time": "t"})).is_err());
    }
}
