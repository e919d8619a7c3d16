//! One error type for the platform connector, worded for the person who will read it (a platform developer
//! calling the API, or a finance admin on the settings page). [`PlatformError::status`] is its HTTP status.

use ledgerlink_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// Missing, or belonging to another workspace (which is deliberately indistinguishable).
    #[error("{what} `{id}` not found")]
    NotFound { what: &'static str, id: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("the API token is missing, unknown or revoked")]
    Unauthorized,
    #[error("{0}")]
    Conflict(String),
    #[error("QuickBooks is not connected for this workspace: connect it in Settings > Integrations")]
    NotConnected,
    #[error("QuickBooks: {0}")]
    QuickBooks(String),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl PlatformError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        PlatformError::Invalid { field: field.into(), message: message.into() }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            PlatformError::NotFound { .. } => 404,
            PlatformError::Invalid { .. } => 422,
            PlatformError::Unauthorized => 401,
            PlatformError::Conflict(_) => 409,
            PlatformError::NotConnected => 409,
            PlatformError::QuickBooks(_) => 502,
            PlatformError::Store(StoreError::NotFound { .. }) => 404,
            PlatformError::Store(StoreError::Conflict(_)) => 409,
            PlatformError::Store(_) | PlatformError::Internal(_) => 500,
        }
    }

    /// A stable machine-readable code for the API's error body.
    pub fn code(&self) -> &'static str {
        match self {
            PlatformError::NotFound { .. } => "not_found",
            PlatformError::Invalid { .. } => "invalid",
            PlatformError::Unauthorized => "unauthorized",
            PlatformError::Conflict(_) => "conflict",
            PlatformError::NotConnected => "not_connected",
            PlatformError::QuickBooks(_) => "quickbooks_error",
            PlatformError::Store(_) | PlatformError::Internal(_) => "internal",
        }
    }
}

impl From<ledgerlink_connectors::ConnectorError> for PlatformError {
    fn from(e: ledgerlink_connectors::ConnectorError) -> Self {
        PlatformError::QuickBooks(e.to_string())
    }
}
