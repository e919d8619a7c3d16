//! QuickBooks faults and the JSON envelopes they travel in.
//!
//! Layout: [`Fault`] is the error every API operation returns; [`Fault::into_response`] renders the upper-case
//! `{"Fault":{"Error":[…],"type":…},"time":…}` envelope. The 401 body is a different, lower-case document
//! ([`authentication_failed`]) because QBO's gateway produces it, not the accounting service. The constructors
//! carry QBO's own codes and messages so connectors can branch on them exactly as they do against Intuit.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::time::api_time;

/// The `type` of a fault envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultType {
    Validation,
    Authorization,
    System,
    /// The throttle answer's type.
    Service,
}

impl FaultType {
    fn as_str(self) -> &'static str {
        match self {
            FaultType::Validation => "ValidationFault",
            FaultType::Authorization => "AuthorizationFault",
            FaultType::System => "SystemFault",
            FaultType::Service => "SERVICE",
        }
    }
}

/// One QBO fault: HTTP status, fault type and a single error entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub status: StatusCode,
    pub kind: FaultType,
    pub code: &'static str,
    pub message: String,
    pub detail: String,
    pub element: String,
}

impl Fault {
    fn validation(code: &'static str, message: &str, detail: impl Into<String>) -> Self {
        Fault {
            status: StatusCode::BAD_REQUEST,
            kind: FaultType::Validation,
            code,
            message: message.to_string(),
            detail: detail.into(),
            element: String::new(),
        }
    }

    /// Names the offending element (QBO fills `element` for some validation errors).
    pub fn at(mut self, element: impl Into<String>) -> Self {
        self.element = element.into();
        self
    }

    /// 2010: the body is not valid JSON or a property has the wrong type.
    pub fn invalid_property(detail: impl Into<String>) -> Self {
        Self::validation(
            "2010",
            "Request has invalid or unsupported property",
            detail,
        )
    }

    /// 2020: a required field is missing.
    pub fn required(field: &str) -> Self {
        Self::validation(
            "2020",
            "Required param missing, need to supply the required value for the API",
            format!("Required parameter {field} is missing in the request"),
        )
        .at(field)
    }

    /// 2170: a value outside an enumeration.
    pub fn invalid_enumeration(field: &str, value: &str, allowed: &str) -> Self {
        Self::validation(
            "2170",
            "Invalid Enumeration",
            format!(
                "Invalid Enumeration : {value} is not valid for {field}; expected one of {allowed}"
            ),
        )
        .at(field)
    }

    /// 2500: a reference (CustomerRef, ItemRef, …) points at nothing.
    pub fn invalid_reference(field: &str, entity: &str, id: &str) -> Self {
        Self::validation(
            "2500",
            "Invalid Reference Id",
            format!(
                "Invalid Reference Id : {entity} with Id {id} referenced by {field} does not exist"
            ),
        )
        .at(field)
    }

    /// 610: the object does not exist, or a reference points at an inactive name-list object.
    pub fn not_found(entity: &str, id: &str) -> Self {
        Self::validation(
            "610",
            "Object Not Found",
            format!(
                "Object Not Found : Something you're trying to use has been made inactive or does not exist: {entity} Id {id}"
            ),
        )
    }

    /// 5010: the SyncToken is not the current one.
    pub fn stale(entity: &str, id: &str, given: &str, current: &str) -> Self {
        Self::validation(
            "5010",
            "Stale Object Error",
            format!(
                "Stale Object Error : You and another user were working on {entity} {id} at the same time. \
                 The SyncToken you sent is {given} but the current one is {current}; read it again and retry."
            ),
        )
    }

    /// 6000: a business rule failed.
    pub fn business(detail: impl Into<String>) -> Self {
        Self::validation(
            "6000",
            "A business validation error has occurred while processing your request",
            detail,
        )
    }

    /// 6140: the DocNumber is already used by another transaction of the same type.
    pub fn duplicate_doc_number(doc: &str, txn_type: &str, txn_id: &str) -> Self {
        Self::validation(
            "6140",
            "Duplicate Document Number Error",
            format!(
                "Duplicate Document Number Error : You must specify a different number. This number has already been used. \
                 DocNumber={doc} is assigned to TxnType={txn_type} with TxnId={txn_id}"
            ),
        )
    }

    /// 6240: a name-list name is already taken.
    pub fn duplicate_name(name: &str, other: &str) -> Self {
        Self::validation(
            "6240",
            "Duplicate Name Exists Error",
            format!(
                "The name supplied already exists. : Another {other} is already using this name ({name}). Please use a different name."
            ),
        )
    }

    /// 4000: the query does not parse.
    pub fn query_parse(detail: impl Into<String>) -> Self {
        Self::validation("4000", "Error parsing query", detail)
    }

    /// 4001: the query parses but cannot be run (unknown entity).
    pub fn query_invalid(detail: impl Into<String>) -> Self {
        Self::validation("4001", "Invalid query", detail)
    }

    /// 500 (in the code field, status 400): a path or operation the service does not offer.
    pub fn unsupported(detail: impl Into<String>) -> Self {
        Self::validation("500", "Unsupported Operation", detail)
    }

    /// 403: the token belongs to another company.
    pub fn authorization(detail: impl Into<String>) -> Self {
        Fault {
            status: StatusCode::FORBIDDEN,
            kind: FaultType::Authorization,
            code: "003100",
            message: "ApplicationAuthorizationFailed".to_string(),
            detail: detail.into(),
            element: String::new(),
        }
    }

    /// 429 / 3001: a request limit was reached (Intuit sends no Retry-After).
    pub fn throttled(detail_suffix: &str) -> Self {
        Fault {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: FaultType::Service,
            code: "3001",
            message: "message=ThrottleExceeded; errorCode=003001; statusCode=429".to_string(),
            detail: format!("The request limit was reached.  Try again later{detail_suffix}"),
            element: String::new(),
        }
    }

    /// 5xx / 10000: the service failed.
    pub fn system(status: u16) -> Self {
        Fault {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            kind: FaultType::System,
            code: "10000",
            message: "An application error has occurred while processing your request".to_string(),
            detail: "System Failure Error: An unexpected error occurred while accessing or saving your data. Please wait a few minutes and try again.".to_string(),
            element: String::new(),
        }
    }

    /// The `{"Fault":…}` object alone (batch items and stored replies embed it).
    pub fn body(&self) -> Value {
        json!({
            "Error": [{
                "Message": self.message,
                "Detail": self.detail,
                "code": self.code,
                "element": self.element,
            }],
            "type": self.kind.as_str(),
        })
    }

    /// The full envelope with the `time` stamp.
    pub fn envelope(&self, now: DateTime<Utc>) -> Value {
        json!({ "Fault": self.body(), "time": api_time(now) })
    }

    pub fn into_response(self, now: DateTime<Utc>) -> Response {
        (self.status, axum::Json(self.envelope(now))).into_response()
    }
}

/// The 401 document of the QBO gateway (lower-case keys, epoch-millisecond `time`).
pub fn authentication_failed(detail: &str, now: DateTime<Utc>) -> Response {
    let body = json!({
        "warnings": null,
        "intuitObject": null,
        "fault": {
            "error": [{
                "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                "detail": detail,
                "code": "3200",
                "element": null,
            }],
            "type": "AUTHENTICATION",
        },
        "report": null,
        "queryResponse": null,
        "batchItemResponse": [],
        "attachableResponse": [],
        "syncErrorResponse": null,
        "requestId": null,
        "time": now.timestamp_millis(),
        "status": null,
        "cdcresponse": [],
    });
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    response.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer realm=\"Intuit\", error=\"invalid_token\""),
    );
    response
}
