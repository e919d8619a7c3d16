//! Workspaces: one host-platform organisation. Every record, token, setting and connection belongs to exactly one;
//! nothing of one is visible from another.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Platform, PlatformError, Result, new_id, now};

/// Documents of kind `workspace` live in this pseudo-workspace (workspaces are not inside themselves).
pub(crate) const DIRECTORY: &str = "";
pub(crate) const KIND: &str = "workspace";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl Platform {
    /// Creates a workspace with a new id (`ws_…`).
    pub async fn create_workspace(&self, name: &str) -> Result<Workspace> {
        let name = name.trim();
        if name.is_empty() {
            return Err(PlatformError::invalid("name", "a workspace needs a name"));
        }
        let ws = Workspace { id: new_id("ws"), name: name.to_string(), created_at: now() };
        let body = serde_json::to_value(&ws).map_err(|e| PlatformError::Internal(e.to_string()))?;
        self.store.insert_doc(DIRECTORY, KIND, &ws.id, &body, ws.created_at).await?;
        Ok(ws)
    }

    pub async fn get_workspace(&self, id: &str) -> Result<Workspace> {
        let doc = self.store.get_doc(DIRECTORY, KIND, id).await?;
        let doc = doc.ok_or_else(|| PlatformError::NotFound { what: "workspace", id: id.to_string() })?;
        serde_json::from_value(doc.body).map_err(|e| PlatformError::Internal(format!("workspace {id}: {e}")))
    }

    pub async fn list_workspaces(&self) -> Result<Vec<Workspace>> {
        let docs = self.store.list_docs(DIRECTORY, KIND).await?;
        docs.into_iter()
            .map(|d| serde_json::from_value(d.body).map_err(|e| PlatformError::Internal(format!("workspace {}: {e}", d.id))))
            .collect()
    }
}
