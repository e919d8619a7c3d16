//! Failure classes the retry engine acts on. Every connector maps its system's errors into these.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ConnectorError {
    /// Credentials rejected. The engine refreshes once, then stops the connection and says so.
    #[error("not authorised: {message}")]
    Unauthorized { message: String },
    /// Throttled. Retry after the given delay (from Retry-After or the system's rules).
    #[error("rate limited{}: {message}", retry_after.map(|d| format!(" (retry after {} ms)", d.as_millis())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration>, message: String },
    /// Network failure, timeout or 5xx. `outcome_unknown` is true when the request may have been applied
    /// (sent but no answer): the engine must look before re-creating.
    #[error("temporary failure: {message}")]
    Transient { message: String, outcome_unknown: bool },
    /// The record changed under us (stale version). Re-read and retry.
    #[error("conflict: {message}")]
    Conflict { message: String },
    /// The system refused the data. Not retried: goes to review with the reason.
    #[error("rejected ({code}): {message}")]
    Validation { code: String, message: String, field: Option<String> },
    #[error("not found: {message}")]
    NotFound { message: String },
    /// The daily or contractual budget is spent: checkpoint and stop until it resets.
    #[error("API budget exhausted: {message}")]
    BudgetExhausted { message: String },
}

impl ConnectorError {
    /// Whether trying the same call again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ConnectorError::RateLimited { .. }
                | ConnectorError::Transient { .. }
                | ConnectorError::Conflict { .. }
                | ConnectorError::Unauthorized { .. }
                | ConnectorError::BudgetExhausted { .. }
        )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ConnectorError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short, stable class name for metrics and the audit log.
    pub fn class(&self) -> &'static str {
        match self {
            ConnectorError::Unauthorized { .. } => "unauthorized",
            ConnectorError::RateLimited { .. } => "rate_limited",
            ConnectorError::Transient { .. } => "transient",
            ConnectorError::Conflict { .. } => "conflict",
            ConnectorError::Validation { .. } => "validation",
            ConnectorError::NotFound { .. } => "not_found",
            ConnectorError::BudgetExhausted { .. } => "budget_exhausted",
        }
    }
}
