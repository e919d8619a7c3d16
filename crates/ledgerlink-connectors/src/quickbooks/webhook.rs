//! QuickBooks webhooks: verifying the `intuit-signature` header and reading both payload formats.
//!
//! Layout: [`verify`] checks base64(HMAC-SHA256(verifier token, raw body)) in constant time; [`parse`] turns a
//! legacy `eventNotifications` payload or a CloudEvents array into [`WebhookEvent`]s. Verify before parsing, on
//! the raw bytes as received: re-serialised JSON would not match the signature.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "intuit-signature";

/// One change QuickBooks reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    pub realm_id: String,
    /// Entity name as QuickBooks writes it (`Customer`, `Invoice`).
    pub entity: String,
    pub id: String,
    /// `Create`, `Update`, `Delete`, `Merge`, `Void`, `Emailed`.
    pub operation: String,
    /// When the change happened, as sent (timestamps with and without a colon in the offset both occur).
    pub last_updated: Option<String>,
}

/// Why a webhook body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the webhook body is not JSON: {0}")]
    NotJson(String),
    #[error("the webhook body is neither an eventNotifications object nor a CloudEvents array")]
    UnknownFormat,
    #[error("webhook event {index}: {message}")]
    BadEvent { index: usize, message: String },
}

/// Whether `signature_header` is the signature of `raw_body` under `verifier_token`. Compared in constant time;
/// an absent or malformed header is simply not valid.
pub fn verify(verifier_token: &str, raw_body: &[u8], signature_header: &str) -> bool {
    let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(signature_header.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(verifier_token.as_bytes()) else {
        return false;
    };
    mac.update(raw_body);
    mac.verify_slice(&expected).is_ok()
}

/// The signature QuickBooks would send for `raw_body` (for tests and the sandbox side of the demo).
pub fn sign(verifier_token: &str, raw_body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(verifier_token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(raw_body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn text(v: &Value, key: &str, index: usize) -> Result<String, WebhookError> {
    match v.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(WebhookError::BadEvent { index, message: format!("`{key}` is missing or not text") }),
    }
}

/// The events of a webhook body, in the order sent, from either format.
pub fn parse(raw_body: &[u8]) -> Result<Vec<WebhookEvent>, WebhookError> {
    let body: Value = serde_json::from_slice(raw_body).map_err(|e| WebhookError::NotJson(e.to_string()))?;
    match &body {
        Value::Object(map) if map.contains_key("eventNotifications") => parse_legacy(&body),
        Value::Array(events) => events.iter().enumerate().map(|(i, e)| parse_cloud_event(i, e)).collect(),
        _ => Err(WebhookError::UnknownFormat),
    }
}

fn parse_legacy(body: &Value) -> Result<Vec<WebhookEvent>, WebhookError> {
    let notifications = body["eventNotifications"]
        .as_array()
        .ok_or(WebhookError::BadEvent { index: 0, message: "`eventNotifications` is not a list".into() })?;
    let mut out = Vec::new();
    for (i, n) in notifications.iter().enumerate() {
        let realm_id = text(n, "realmId", i)?;
        let entities =
            n.get("dataChangeEvent").and_then(|d| d.get("entities")).and_then(Value::as_array).ok_or_else(|| {
                WebhookError::BadEvent { index: i, message: "`dataChangeEvent.entities` is missing".into() }
            })?;
        for e in entities {
            out.push(WebhookEvent {
                realm_id: realm_id.clone(),
                entity: text(e, "name", i)?,
                id: text(e, "id", i)?,
                operation: text(e, "operation", i)?,
                last_updated: e.get("lastUpdated").and_then(Value::as_str).map(str::to_string),
            });
        }
    }
    Ok(out)
}

/// A CloudEvent's `type` is `qbo.<entity>.<verb>.v<n>`: the verb in past tense is mapped to the legacy
/// operation name so consumers see one vocabulary.
fn parse_cloud_event(index: usize, e: &Value) -> Result<WebhookEvent, WebhookError> {
    let kind = text(e, "type", index)?;
    let parts: Vec<&str> = kind.split('.').collect();
    let (entity, verb) = match parts.as_slice() {
        ["qbo", entity, verb, ..] => (*entity, *verb),
        _ => {
            return Err(WebhookError::BadEvent {
                index,
                message: format!("type `{kind}` is not of the form qbo.<entity>.<operation>.v<n>"),
            });
        }
    };
    let operation = match verb.to_ascii_lowercase().as_str() {
        "created" | "create" => "Create",
        "updated" | "update" => "Update",
        "deleted" | "delete" => "Delete",
        "merged" | "merge" => "Merge",
        "voided" | "void" => "Void",
        "emailed" => "Emailed",
        other => {
            return Err(WebhookError::BadEvent { index, message: format!("unknown operation `{other}` in `{kind}`") });
        }
    };
    let mut chars = entity.chars();
    let entity = match chars.next() {
        Some(c) => c.to_ascii_uppercase().to_string() + chars.as_str(),
        None => {
            return Err(WebhookError::BadEvent { index, message: format!("type `{kind}` names no entity") });
        }
    };
    Ok(WebhookEvent {
        realm_id: text(e, "intuitaccountid", index)?,
        entity: canonical_entity(&entity),
        id: text(e, "intuitentityid", index)?,
        operation: operation.into(),
        last_updated: e.get("time").and_then(Value::as_str).map(str::to_string),
    })
}

/// CloudEvents types are lower-case (`qbo.salesreceipt.created.v1`): give multi-word names their QBO casing.
fn canonical_entity(name: &str) -> String {
    const NAMES: &[&str] = &[
        "SalesReceipt",
        "CreditMemo",
        "BillPayment",
        "PurchaseOrder",
        "JournalEntry",
        "TimeActivity",
        "RecurringTransaction",
        "CompanyInfo",
        "TaxCode",
        "TaxRate",
        "RefundReceipt",
        "VendorCredit",
        "JournalCode",
        "TaxAgency",
        "PaymentMethod",
        "CompanyCurrency",
        "Deposit",
        "Transfer",
    ];
    NAMES.iter().find(|n| n.eq_ignore_ascii_case(name)).map(|n| n.to_string()).unwrap_or_else(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEGACY: &str = r#"{"eventNotifications":[{"realmId":"1185883450","dataChangeEvent":{"entities":[{"name":"Customer","id":"1","operation":"Create","lastUpdated":"2015-10-05T14:42:19-0700"},{"name":"Invoice","id":"239","operation":"Void","lastUpdated":"2015-10-05T14:42:19-0700"}]}}]}"#;
    const CLOUD: &str = r#"[{"specversion":"1.0","id":"ev-1","source":"intuit.dsnBgbseACLLRZNxo2dfc4evmEJdxde58xeeYcZliOU=","type":"qbo.invoice.created.v1","datacontenttype":"application/json","time":"2025-09-10T21:31:25.179Z","intuitentityid":"1234","intuitaccountid":"310687","data":{}},{"specversion":"1.0","id":"ev-2","source":"intuit.x","type":"qbo.salesreceipt.deleted.v1","time":"2025-09-10T21:31:26Z","intuitentityid":"77","intuitaccountid":"310687","data":{}}]"#;

    #[test]
    fn signatures_verify_only_for_the_exact_body_and_token() {
        let sig = sign("verifier", LEGACY.as_bytes());
        assert!(verify("verifier", LEGACY.as_bytes(), &sig));
        assert!(verify("verifier", LEGACY.as_bytes(), &format!(" {sig} ")));
        assert!(!verify("other", LEGACY.as_bytes(), &sig));
        let mut tampered = LEGACY.as_bytes().to_vec();
        tampered[30] ^= 1;
        assert!(!verify("verifier", &tampered, &sig));
        assert!(!verify("verifier", LEGACY.as_bytes(), "not base64!"));
        assert!(!verify("verifier", LEGACY.as_bytes(), ""));
        // A known vector: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
        assert_eq!(
            sign("key", b"The quick brown fox jumps over the lazy dog"),
            "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg="
        );
    }

    #[test]
    fn legacy_payloads_parse() {
        let events = parse(LEGACY.as_bytes()).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0],
            WebhookEvent {
                realm_id: "1185883450".into(),
                entity: "Customer".into(),
                id: "1".into(),
                operation: "Create".into(),
                last_updated: Some("2015-10-05T14:42:19-0700".into()),
            }
        );
        assert_eq!(events[1].operation, "Void");
    }

    #[test]
    fn cloud_events_parse_with_legacy_vocabulary() {
        let events = parse(CLOUD.as_bytes()).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].entity, "Invoice");
        assert_eq!(events[0].operation, "Create");
        assert_eq!(events[0].id, "1234");
        assert_eq!(events[0].realm_id, "310687");
        assert_eq!(events[0].last_updated.as_deref(), Some("2025-09-10T21:31:25.179Z"));
        assert_eq!(events[1].entity, "SalesReceipt");
        assert_eq!(events[1].operation, "Delete");
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        assert!(matches!(parse(b"nope"), Err(WebhookError::NotJson(_))));
        assert_eq!(parse(b"{\"x\":1}"), Err(WebhookError::UnknownFormat));
        let e = parse(br#"[{"type":"qbo.invoice.created.v1","intuitaccountid":"1"}]"#).unwrap_err();
        assert!(e.to_string().contains("intuitentityid"), "{e}");
        let e = parse(br#"[{"type":"invoice","intuitaccountid":"1","intuitentityid":"2"}]"#).unwrap_err();
        assert!(e.to_string().contains("qbo.<entity>"), "{e}");
        let e = parse(br#"{"eventNotifications":[{"realmId":"1"}]}"#).unwrap_err();
        assert!(e.to_string().contains("dataChangeEvent"), "{e}");
        assert_eq!(parse(b"[]").unwrap(), vec![]);
    }
}
