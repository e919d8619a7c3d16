//! Mapping QuickBooks failures to [`ConnectorError`].
//!
//! QBO reports errors in three shapes: the usual `{"Fault":{"Error":[{Message,Detail,code,element}],"type"}}`, a
//! lower-case `{"fault":{"error":[{message,detail,code,element}]}}` on 401, and throttling answers that may be XML
//! and may come with status 403 instead of 429. [`classify`] is the one place that reads all of them.

use std::time::Duration;

use crate::ConnectorError;
use crate::http::{self, Reply};

/// The delay used when QBO throttles without a `Retry-After` header: its limits are per minute.
pub const DEFAULT_THROTTLE_DELAY: Duration = Duration::from_secs(60);

/// One error of a QBO fault.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FaultError {
    pub code: String,
    pub message: String,
    pub detail: String,
    pub element: Option<String>,
}

/// Reads the first error of a fault, whichever casing the body uses.
pub fn parse_fault(body: &str) -> Option<FaultError> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let fault = value.get("Fault").or_else(|| value.get("fault"))?;
    let errors = fault.get("Error").or_else(|| fault.get("error"))?;
    let first = errors.as_array()?.first()?;
    let text = |upper: &str, lower: &str| {
        first
            .get(upper)
            .or_else(|| first.get(lower))
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    let element = text("element", "element");
    Some(FaultError {
        code: text("code", "code"),
        message: text("Message", "message"),
        detail: text("Detail", "detail"),
        element: if element.is_empty() { None } else { Some(element) },
    })
}

/// Whether a body, JSON or XML, is a throttle message (code 3001 / ThrottleExceeded / "request limit").
fn is_throttle_body(body: &str, fault: Option<&FaultError>) -> bool {
    if fault.is_some_and(|f| f.code == "3001" || f.message.contains("ThrottleExceeded")) {
        return true;
    }
    let lower = body.to_ascii_lowercase();
    lower.contains("throttleexceeded")
        || lower.contains("code=\"3001\"")
        || lower.contains("<code>3001</code>")
        || lower.contains("request limit was reached")
        || lower.contains("too many requests")
}

fn fault_text(f: &FaultError) -> String {
    match (f.message.is_empty(), f.detail.is_empty()) {
        (false, false) => format!("{}: {}", f.message, f.detail),
        (false, true) => f.message.clone(),
        (true, false) => f.detail.clone(),
        (true, true) => format!("fault code {}", f.code),
    }
}

/// Classifies a non-success QBO answer.
pub fn classify(reply: &Reply) -> ConnectorError {
    classify_parts(reply.status.as_u16(), http::retry_after(&reply.headers), &reply.body)
}

/// [`classify`] over the parts of an answer (status, parsed `Retry-After`, body).
pub fn classify_parts(status: u16, retry_after: Option<Duration>, body: &str) -> ConnectorError {
    let fault = parse_fault(body);
    if status == 429 || is_throttle_body(body, fault.as_ref()) {
        return ConnectorError::RateLimited {
            retry_after: Some(retry_after.unwrap_or(DEFAULT_THROTTLE_DELAY)),
            message: fault.as_ref().map(fault_text).unwrap_or_else(|| format!("throttled (status {status})")),
        };
    }
    if status == 401 {
        return ConnectorError::Unauthorized {
            message: fault
                .as_ref()
                .map(fault_text)
                .unwrap_or_else(|| "QuickBooks refused the access token".to_string()),
        };
    }
    if status == 403 {
        return ConnectorError::Unauthorized {
            message: format!(
                "QuickBooks refused access (the app lacks permission for this company or call): {}",
                fault.as_ref().map(fault_text).unwrap_or_else(|| http::snippet(body))
            ),
        };
    }
    if status >= 500 {
        return ConnectorError::Transient {
            message: format!(
                "QuickBooks failed with status {status}: {}",
                fault.as_ref().map(fault_text).unwrap_or_else(|| http::snippet(body))
            ),
            // 503 means the request was not taken; any other server error may have left it applied.
            outcome_unknown: status != 503,
        };
    }
    match fault {
        Some(f) if f.code == "5010" => ConnectorError::Conflict { message: fault_text(&f) },
        Some(f) if f.code == "610" => ConnectorError::NotFound { message: fault_text(&f) },
        Some(f) => ConnectorError::Validation { message: fault_text(&f), code: f.code, field: f.element },
        None if status == 404 => {
            ConnectorError::NotFound { message: format!("QuickBooks answered 404: {}", http::snippet(body)) }
        }
        None => ConnectorError::Validation {
            code: format!("http_{status}"),
            message: format!("QuickBooks answered {status}: {}", http::snippet(body)),
            field: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: &str = r#"{"Fault":{"Error":[{"Message":"Stale Object Error","Detail":"Stale Object Error : You and root were working on this at the same time. root finished before you did, so your work was not saved.","code":"5010","element":""}],"type":"ValidationFault"},"time":"2015-07-23T11:04:15.496-07:00"}"#;
    const DUP: &str = r#"{"Fault":{"Error":[{"Message":"Duplicate Name Exists Error","Detail":"The name supplied already exists. : Another customer, vendor or employee is already using this name.","code":"6240","element":"DisplayName"}],"type":"ValidationFault"},"time":"2015-07-23T11:04:15.496-07:00"}"#;
    const NOT_FOUND: &str = r#"{"Fault":{"Error":[{"Message":"Object Not Found","Detail":"Object Not Found : Something you're trying to use has been made inactive. Check the fields with accounts, customers, items, vendors or employees.","code":"610","element":""}],"type":"ValidationFault"},"time":"…"}"#;
    const AUTH: &str = r#"{"warnings":null,"intuitObject":null,"fault":{"error":[{"message":"message=AuthenticationFailed; errorCode=003200; statusCode=401","detail":"Token expired: eyJlbmMiOiJBMTI4Q0JDLUhTMjU2","code":"3200","element":null}],"type":"AUTHENTICATION"},"report":null,"queryResponse":null,"batchItemResponse":[],"attachableResponse":[],"syncErrorResponse":null,"requestId":null,"time":1533811101733,"status":null,"cdcresponse":[]}"#;
    const THROTTLE_JSON: &str = r#"{"Fault":{"Error":[{"Message":"message=ThrottleExceeded; errorCode=003001; statusCode=429","Detail":"The request limit was reached.  Try again later","code":"3001","element":""}],"type":"SERVICE"},"time":"…"}"#;
    const THROTTLE_XML: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><IntuitResponse xmlns="http://schema.intuit.com/finance/v3" time="2015-07-23T11:04:15.496-07:00"><Fault type="SERVICE"><Error code="3001"><Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message><Detail>The request limit was reached.  Try again later</Detail></Error></Fault></IntuitResponse>"#;
    const PARSE: &str = r#"{"Fault":{"Error":[{"Message":"Error parsing query","Detail":"QueryParserError: Encountered \" <ID> \"Adam \"\" at line 1, column 42.","code":"4000"}],"type":"ValidationFault"},"time":"…"}"#;

    #[test]
    fn stale_sync_token_is_a_conflict() {
        assert!(matches!(classify_parts(400, None, STALE), ConnectorError::Conflict { .. }));
    }

    #[test]
    fn validation_carries_code_message_detail_and_element() {
        assert_eq!(
            classify_parts(400, None, DUP),
            ConnectorError::Validation {
                code: "6240".into(),
                message: "Duplicate Name Exists Error: The name supplied already exists. : Another customer, vendor or employee is already using this name.".into(),
                field: Some("DisplayName".into()),
            }
        );
        match classify_parts(400, None, PARSE) {
            ConnectorError::Validation { code, field, message } => {
                assert_eq!(code, "4000");
                assert_eq!(field, None);
                assert!(message.starts_with("Error parsing query: QueryParserError"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn object_not_found_is_not_found() {
        assert!(matches!(classify_parts(400, None, NOT_FOUND), ConnectorError::NotFound { .. }));
        assert!(matches!(classify_parts(404, None, "<html>nope</html>"), ConnectorError::NotFound { .. }));
    }

    #[test]
    fn lower_case_401_body_is_unauthorized() {
        match classify_parts(401, None, AUTH) {
            ConnectorError::Unauthorized { message } => assert!(message.contains("AuthenticationFailed"), "{message}"),
            other => panic!("{other:?}"),
        }
        let f = parse_fault(AUTH).unwrap();
        assert_eq!(f.code, "3200");
        assert_eq!(f.element, None);
    }

    #[test]
    fn throttling_is_recognised_in_every_shape() {
        assert_eq!(
            classify_parts(429, Some(Duration::from_secs(5)), THROTTLE_JSON).retry_after(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(classify_parts(429, None, "").retry_after(), Some(DEFAULT_THROTTLE_DELAY));
        assert!(matches!(classify_parts(403, None, THROTTLE_XML), ConnectorError::RateLimited { .. }));
        assert!(matches!(classify_parts(400, None, THROTTLE_JSON), ConnectorError::RateLimited { .. }));
        assert!(matches!(classify_parts(503, None, THROTTLE_XML), ConnectorError::RateLimited { .. }));
    }

    #[test]
    fn server_errors_are_transient() {
        assert!(matches!(classify_parts(500, None, "oops"), ConnectorError::Transient { outcome_unknown: true, .. }));
        assert!(matches!(classify_parts(503, None, ""), ConnectorError::Transient { outcome_unknown: false, .. }));
    }

    #[test]
    fn plain_403_is_unauthorized_and_unknown_4xx_is_validation() {
        assert!(matches!(classify_parts(403, None, "{}"), ConnectorError::Unauthorized { .. }));
        assert!(matches!(
            classify_parts(400, None, "bad"),
            ConnectorError::Validation { ref code, .. } if code == "http_400"
        ));
    }
}
