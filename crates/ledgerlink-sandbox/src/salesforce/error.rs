//! Salesforce's error wire shapes.
//!
//! Layout: [`SfError`] is the REST API error (a JSON *array* of `{message, errorCode, fields?}`, which is what
//! simple-salesforce and jsforce parse), [`OAuthError`] is the token endpoint's flat `{error, error_description}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One entry of a REST error array.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorItem {
    pub message: String,
    #[serde(rename = "errorCode")]
    pub error_code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
}

/// A REST API failure: an HTTP status plus Salesforce's error array.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{status} {}", .errors.first().map(|e| format!("{}: {}", e.error_code, e.message)).unwrap_or_default())]
pub struct SfError {
    pub status: StatusCode,
    pub errors: Vec<ErrorItem>,
}

impl SfError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        SfError {
            status,
            errors: vec![ErrorItem {
                message: message.into(),
                error_code: code.to_string(),
                fields: None,
            }],
        }
    }

    /// A 400 naming the offending fields in `fields` as Salesforce does for validation errors.
    pub fn with_fields(code: &str, message: impl Into<String>, fields: Vec<String>) -> Self {
        SfError {
            status: StatusCode::BAD_REQUEST,
            errors: vec![ErrorItem {
                message: message.into(),
                error_code: code.to_string(),
                fields: Some(fields),
            }],
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        )
    }

    pub fn entity_deleted() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ENTITY_IS_DELETED",
            "entity is deleted",
        )
    }

    pub fn invalid_session() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        )
    }

    pub fn json_parse(message: impl Into<String>) -> Self {
        Self::bad_request("JSON_PARSER_ERROR", message)
    }

    pub fn no_such_column(field: &str, object: &str) -> Self {
        Self::with_fields(
            "INVALID_FIELD",
            format!("No such column '{field}' on sobject of type {object}"),
            vec![field.to_string()],
        )
    }

    pub fn code(&self) -> &str {
        self.errors
            .first()
            .map(|e| e.error_code.as_str())
            .unwrap_or_default()
    }
}

impl IntoResponse for SfError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.errors)).into_response()
    }
}

/// A token endpoint failure (always 400 in Salesforce, whatever the cause).
#[derive(Debug, Clone, thiserror::Error, Serialize, PartialEq, Eq)]
#[error("{error}: {error_description}")]
pub struct OAuthError {
    pub error: String,
    pub error_description: String,
}

impl OAuthError {
    pub fn new(error: &str, description: &str) -> Self {
        OAuthError {
            error: error.to_string(),
            error_description: description.to_string(),
        }
    }

    pub fn invalid_grant_token() -> Self {
        Self::new("invalid_grant", "expired access/refresh token")
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, axum::Json(self)).into_response()
    }
}
