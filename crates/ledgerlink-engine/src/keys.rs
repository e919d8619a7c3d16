//! Deterministic keys. The same logical action always yields the same key, so a retry after a crash carries the
//! key of the first attempt and the target system (QuickBooks `requestid`) or our intent table recognises it.

use sha2::{Digest, Sha256};

/// The idempotency key of one external create: derived from (flow, source record, action).
/// 40 hex characters of SHA-256, prefixed `ll-`: fits QuickBooks' 50-character `requestid`.
pub fn action_key(flow: &str, source: &ledgerlink_model::RecordRef, action: &str) -> String {
    let mut h = Sha256::new();
    for part in [flow, &source.connection, &source.object, &source.id, action] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
    format!("ll-{hex}")
}

/// The request key an attempt at an intent's create carries: the intent's own key, or after an outright refusal
/// the fresh one [`ledgerlink_store::Store::refuse_intent`] noted, so a retry after an unknown outcome is still
/// recognised by the target system and a retry after a refusal is not answered with that refusal again.
pub fn request_key(intent: &ledgerlink_store::WriteIntent) -> &str {
    intent.response.as_ref().and_then(|r| r.get("request_key")).and_then(serde_json::Value::as_str).unwrap_or(&intent.key)
}

/// The request key of the next attempt at a create the target system refused outright: a fresh key in the form
/// of [`action_key`], derived from the intent's key and its attempt number (so it is the same in every process
/// that looks at the same attempt).
pub fn retry_request_key(intent_key: &str, attempt: i32) -> String {
    let mut h = Sha256::new();
    h.update(intent_key.as_bytes());
    h.update([0u8]);
    h.update(attempt.to_be_bytes());
    let hex: String = h.finalize().iter().take(20).map(|b| format!("{b:02x}")).collect();
    format!("ll-{hex}")
}

/// The idempotency key of the job handling one version of one source record in one flow.
pub fn change_job_key(flow: &str, connection: &str, object: &str, id: &str, version: &str) -> String {
    format!("change:{flow}:{connection}:{object}:{id}:{version}")
}

/// The version of a record: its change timestamp in one fixed text form, then `#` and the system's own change
/// counter when it has one (job keys and seen-sets compare it; [`version_time`] reads the time back).
pub fn version_of(ts: chrono::DateTime<chrono::Utc>, counter: Option<&str>) -> String {
    let t = ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    match counter {
        Some(c) => format!("{t}#{c}"),
        None => t,
    }
}

/// The time part of a [`version_of`] string.
pub fn version_time(version: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = version.split('#').next().unwrap_or(version);
    chrono::DateTime::parse_from_rfc3339(t).ok().map(|d| d.with_timezone(&chrono::Utc))
}

/// A stable hash of a JSON value (object keys sorted), used to recognise our own writes coming back.
pub fn value_hash(value: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    hash_into(&mut h, value);
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn hash_into(h: &mut Sha256, v: &serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            h.update(b"{");
            for k in keys {
                h.update(k.as_bytes());
                h.update(b":");
                hash_into(h, &map[k]);
                h.update(b",");
            }
            h.update(b"}");
        }
        serde_json::Value::Array(items) => {
            h.update(b"[");
            for i in items {
                hash_into(h, i);
                h.update(b",");
            }
            h.update(b"]");
        }
        other => h.update(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerlink_model::RecordRef;

    #[test]
    fn action_keys_are_stable_short_and_distinct() {
        let r = RecordRef::new("salesforce", "Opportunity", "006000000000001AAA");
        let a = action_key("f", &r, "invoice");
        assert_eq!(a, action_key("f", &r, "invoice"));
        assert!(a.len() <= 50);
        assert_ne!(a, action_key("f", &r, "customer"));
        assert_ne!(a, action_key("g", &r, "invoice"));
    }

    #[test]
    fn versions_carry_the_counter_and_give_back_their_time() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z").unwrap().with_timezone(&chrono::Utc);
        assert_ne!(version_of(t, Some("3")), version_of(t, Some("4")), "same second, different change");
        assert_eq!(version_time(&version_of(t, Some("3"))), Some(t));
        assert_eq!(version_time(&version_of(t, None)), Some(t));
    }

    #[test]
    fn value_hash_ignores_key_order() {
        let a = serde_json::json!({"a": 1, "b": {"c": [1, 2]}});
        let b = serde_json::json!({"b": {"c": [1, 2]}, "a": 1});
        assert_eq!(value_hash(&a), value_hash(&b));
        assert_ne!(value_hash(&a), value_hash(&serde_json::json!({"a": 2, "b": {"c": [1, 2]}})));
    }
}
