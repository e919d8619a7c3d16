//! Mapping Salesforce failures to [`ConnectorError`].
//!
//! Salesforce answers errors with an array `[{"message","errorCode","fields"}]`. API-limit exhaustion comes as
//! 403 `REQUEST_LIMIT_EXCEEDED` (not 429) and means the daily budget is spent, so it is
//! [`ConnectorError::BudgetExhausted`], not a short throttle.

use std::time::Duration;

use crate::ConnectorError;
use crate::http::{self, Reply};

/// How long to wait after the concurrent-request limit refused a call. Salesforce sends no `Retry-After`; the
/// limit counts requests running for 20 s or more, so a few seconds frees a slot.
pub const CONCURRENCY_THROTTLE_DELAY: Duration = Duration::from_secs(5);

/// The first error of a Salesforce error array.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiError {
    pub error_code: String,
    pub message: String,
    pub fields: Vec<String>,
}

/// Reads the first error of an error array (or a single error object).
pub fn parse_errors(body: &str) -> Option<ApiError> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let first = match &value {
        serde_json::Value::Array(a) => a.first()?.clone(),
        serde_json::Value::Object(_) => value.clone(),
        _ => return None,
    };
    let error_code = first.get("errorCode").and_then(|v| v.as_str())?.to_string();
    Some(ApiError {
        error_code,
        message: first.get("message").and_then(|v| v.as_str()).unwrap_or_default().to_string(),
        fields: first
            .get("fields")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
    })
}

/// Whether a 401 is the expired/invalid session Salesforce clients refresh on.
pub fn is_invalid_session(reply: &Reply) -> bool {
    reply.status.as_u16() == 401 && parse_errors(&reply.body).is_none_or(|e| e.error_code == "INVALID_SESSION_ID")
}

/// Classifies a non-success Salesforce answer.
///
/// `REQUEST_LIMIT_EXCEEDED` also reports the concurrent long-request limit, which clears in seconds: it is the
/// daily budget only when the answer's own `Sforce-Limit-Info` shows the budget spent (or is absent and the
/// message does not name a concurrency limit); otherwise it is a throttle.
pub fn classify(reply: &Reply) -> ConnectorError {
    let status = reply.status.as_u16();
    let retry_after = http::retry_after(&reply.headers);
    if status == 403
        && let Some(err) = parse_errors(&reply.body)
        && err.error_code == "REQUEST_LIMIT_EXCEEDED"
    {
        let usage = reply.header("sforce-limit-info").and_then(super::parse_limit_info);
        let budget_spent = match usage {
            Some((used, max)) => used >= max,
            None => !err.message.contains("Concurrent"),
        };
        if !budget_spent {
            return ConnectorError::RateLimited {
                retry_after: retry_after.or(Some(CONCURRENCY_THROTTLE_DELAY)),
                message: format!("{}: {} (the daily budget is not spent)", err.error_code, err.message),
            };
        }
    }
    classify_parts(status, retry_after, &reply.body)
}

fn describe(err: &Option<ApiError>, status: u16, body: &str) -> String {
    match err {
        Some(e) if !e.message.is_empty() => format!("{}: {}", e.error_code, e.message),
        Some(e) => e.error_code.clone(),
        None => format!("status {status}: {}", http::snippet(body)),
    }
}

/// [`classify`] over the parts of an answer (status, parsed `Retry-After`, body).
pub fn classify_parts(status: u16, retry_after: Option<Duration>, body: &str) -> ConnectorError {
    let err = parse_errors(body);
    let code = err.as_ref().map(|e| e.error_code.as_str()).unwrap_or_default();
    match status {
        401 => ConnectorError::Unauthorized { message: describe(&err, status, body) },
        403 if code == "REQUEST_LIMIT_EXCEEDED" => {
            ConnectorError::BudgetExhausted { message: describe(&err, status, body) }
        }
        403 => ConnectorError::Unauthorized {
            message: format!("Salesforce refused access: {}", describe(&err, status, body)),
        },
        404 => ConnectorError::NotFound { message: describe(&err, status, body) },
        300 => ConnectorError::Validation {
            code: "MULTIPLE_CHOICES".into(),
            message: "several records match the external id; nothing was changed".into(),
            field: None,
        },
        429 => ConnectorError::RateLimited { retry_after, message: describe(&err, status, body) },
        503 if retry_after.is_some() => {
            ConnectorError::RateLimited { retry_after, message: describe(&err, status, body) }
        }
        // Any server error may come after the write was applied (a 503 from a proxy in front of a busy
        // instance included), so a create that gets one must be looked up before it is repeated.
        s if s >= 500 => ConnectorError::Transient {
            message: format!("Salesforce failed: {}", describe(&err, status, body)),
            outcome_unknown: true,
        },
        s => match err {
            Some(e) if e.error_code == "UNABLE_TO_LOCK_ROW" => {
                ConnectorError::Conflict { message: format!("{}: {}", e.error_code, e.message) }
            }
            Some(e) => ConnectorError::Validation {
                message: if e.message.is_empty() { e.error_code.clone() } else { e.message },
                field: e.fields.into_iter().next(),
                code: e.error_code,
            },
            None => ConnectorError::Validation {
                code: format!("http_{s}"),
                message: format!("Salesforce answered {s}: {}", http::snippet(body)),
                field: None,
            },
        },
    }
}

/// Classifies one record's error inside a successful Collections answer (`statusCode`, `message`, `fields`).
pub fn record_error(code: &str, message: &str, field: Option<String>) -> ConnectorError {
    let text = if message.is_empty() { code.to_string() } else { format!("{code}: {message}") };
    match code {
        // Another transaction holds the row: trying again shortly succeeds.
        "UNABLE_TO_LOCK_ROW" => ConnectorError::Conflict { message: text },
        "ENTITY_IS_DELETED" | "NOT_FOUND" => ConnectorError::NotFound { message: text },
        "REQUEST_LIMIT_EXCEEDED" => ConnectorError::BudgetExhausted { message: text },
        "SERVER_UNAVAILABLE" | "UNKNOWN_EXCEPTION" => {
            ConnectorError::Transient { message: text, outcome_unknown: false }
        }
        _ => ConnectorError::Validation {
            code: code.to_string(),
            message: if message.is_empty() { code.to_string() } else { message.to_string() },
            field,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_code_message_and_field() {
        let body = r#"[{"message":"Required fields are missing: [Name]","errorCode":"REQUIRED_FIELD_MISSING","fields":["Name"]}]"#;
        assert_eq!(
            classify_parts(400, None, body),
            ConnectorError::Validation {
                code: "REQUIRED_FIELD_MISSING".into(),
                message: "Required fields are missing: [Name]".into(),
                field: Some("Name".into()),
            }
        );
        let body = r#"[{"message":"unexpected token: FROM","errorCode":"MALFORMED_QUERY"}]"#;
        assert!(matches!(
            classify_parts(400, None, body),
            ConnectorError::Validation { ref code, field: None, .. } if code == "MALFORMED_QUERY"
        ));
    }

    #[test]
    fn session_limit_and_missing_records() {
        let body = r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#;
        assert!(matches!(classify_parts(401, None, body), ConnectorError::Unauthorized { .. }));
        let body = r#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#;
        assert!(matches!(classify_parts(403, None, body), ConnectorError::BudgetExhausted { .. }));
        let body = r#"[{"errorCode":"INSUFFICIENT_ACCESS","message":"no"}]"#;
        assert!(matches!(classify_parts(403, None, body), ConnectorError::Unauthorized { .. }));
        let body = r#"[{"errorCode":"NOT_FOUND","message":"The requested resource does not exist"}]"#;
        assert!(matches!(classify_parts(404, None, body), ConnectorError::NotFound { .. }));
        let body = r#"[{"errorCode":"ENTITY_IS_DELETED","message":"entity is deleted","fields":[]}]"#;
        assert!(matches!(classify_parts(404, None, body), ConnectorError::NotFound { .. }));
    }

    #[test]
    fn throttles_and_server_errors() {
        let d = Some(Duration::from_secs(3));
        assert_eq!(classify_parts(429, d, "").retry_after(), d);
        assert_eq!(classify_parts(503, d, "").retry_after(), d);
        assert!(matches!(classify_parts(503, None, ""), ConnectorError::Transient { outcome_unknown: true, .. }));
        assert!(matches!(classify_parts(500, None, "[]"), ConnectorError::Transient { outcome_unknown: true, .. }));
    }

    fn reply(status: u16, limit: Option<&str>, body: &str) -> Reply {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(l) = limit {
            headers.insert("sforce-limit-info", reqwest::header::HeaderValue::from_str(l).unwrap());
        }
        Reply { status: reqwest::StatusCode::from_u16(status).unwrap(), headers, body: body.to_string() }
    }

    #[test]
    fn request_limit_is_the_budget_only_when_the_budget_is_spent() {
        let concurrent =
            r#"[{"message":"ConcurrentPerOrgLongTxn Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#;
        let total = r#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#;
        match classify(&reply(403, Some("api-usage=10/100000"), concurrent)) {
            ConnectorError::RateLimited { retry_after, .. } => {
                assert_eq!(retry_after, Some(CONCURRENCY_THROTTLE_DELAY))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(classify(&reply(403, None, concurrent)), ConnectorError::RateLimited { .. }));
        assert!(matches!(
            classify(&reply(403, Some("api-usage=100/100"), total)),
            ConnectorError::BudgetExhausted { .. }
        ));
        assert!(matches!(classify(&reply(403, None, total)), ConnectorError::BudgetExhausted { .. }));
        let locked =
            r#"[{"message":"unable to obtain exclusive access to this record","errorCode":"UNABLE_TO_LOCK_ROW"}]"#;
        assert!(matches!(classify(&reply(400, None, locked)), ConnectorError::Conflict { .. }));
    }

    #[test]
    fn multiple_external_id_matches_are_validation() {
        let body = r#"["/services/data/v59.0/sobjects/Account/001000000000001AAA","/services/data/v59.0/sobjects/Account/001000000000002AAA"]"#;
        assert!(matches!(classify_parts(300, None, body), ConnectorError::Validation { .. }));
    }
}
