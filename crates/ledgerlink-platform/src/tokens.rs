//! API tokens: bearer tokens scoped to one workspace.
//!
//! A token is `llp_` + 32 random bytes in hex, shown once when issued. Only its SHA-256 is stored, as the id of a
//! `token` document, so the store never holds anything that authenticates. SHA-256 rather than argon2: the token
//! is 256 random bits, so there is nothing to brute-force and a slow hash would only slow every API call; and a
//! plain hash can be looked up directly (argon2's salt would force a scan). Revoking keeps the document (with
//! `revoked_at`) so the UI can still list the token.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Platform, PlatformError, Result, Workspace, hex, new_id, now};

pub(crate) const KIND: &str = "token";
const PREFIX: &str = "llp_";

/// What is known about a token after it was issued (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Public id (`tok_…`), used to revoke it.
    pub id: String,
    pub workspace_id: String,
    pub label: String,
    /// The first characters of the token, so a user can tell tokens apart.
    pub hint: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The answer to issuing a token: the plaintext, shown this once, and its info.
#[derive(Clone, Serialize)]
pub struct IssuedToken {
    pub token: String,
    pub info: TokenInfo,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken").field("token", &"[redacted]").field("info", &self.info).finish()
    }
}

/// The stored form of a token: SHA-256 of the plaintext, hex.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

impl Platform {
    /// Issues a new token for the workspace. The plaintext is in the answer and nowhere else.
    pub async fn issue_token(&self, workspace_id: &str, label: &str) -> Result<IssuedToken> {
        self.get_workspace(workspace_id).await?;
        let label = label.trim();
        if label.is_empty() {
            return Err(PlatformError::invalid("label", "a token needs a label (what will use it)"));
        }
        use rand::RngCore;
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = format!("{PREFIX}{}", hex(&secret));
        let info = TokenInfo {
            id: new_id("tok"),
            workspace_id: workspace_id.to_string(),
            label: label.to_string(),
            hint: token[..PREFIX.len() + 6].to_string(),
            created_at: now(),
            revoked_at: None,
        };
        let body = serde_json::to_value(&info).map_err(|e| PlatformError::Internal(e.to_string()))?;
        self.store.insert_doc(workspace_id, KIND, &token_hash(&token), &body, info.created_at).await?;
        Ok(IssuedToken { token, info })
    }

    /// The workspace a bearer token belongs to; `Unauthorized` when it is unknown or revoked.
    pub async fn authenticate(&self, token: &str) -> Result<Workspace> {
        if !token.starts_with(PREFIX) {
            return Err(PlatformError::Unauthorized);
        }
        let Some(doc) = self.store.find_doc(KIND, &token_hash(token)).await? else {
            return Err(PlatformError::Unauthorized);
        };
        let info: TokenInfo = serde_json::from_value(doc.body).map_err(|e| PlatformError::Internal(e.to_string()))?;
        if info.revoked_at.is_some() || info.workspace_id != doc.workspace_id {
            return Err(PlatformError::Unauthorized);
        }
        self.get_workspace(&doc.workspace_id).await
    }

    /// The workspace's tokens, revoked ones included, oldest first.
    pub async fn list_tokens(&self, workspace_id: &str) -> Result<Vec<TokenInfo>> {
        let mut out: Vec<TokenInfo> = self
            .store
            .list_docs(workspace_id, KIND)
            .await?
            .into_iter()
            .filter_map(|d| serde_json::from_value(d.body).ok())
            .collect();
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Revokes a token by its public id: it stops authenticating at once.
    pub async fn revoke_token(&self, workspace_id: &str, token_id: &str) -> Result<TokenInfo> {
        for doc in self.store.list_docs(workspace_id, KIND).await? {
            let mut info: TokenInfo = serde_json::from_value(doc.body).map_err(|e| PlatformError::Internal(e.to_string()))?;
            if info.id != token_id {
                continue;
            }
            if info.revoked_at.is_none() {
                info.revoked_at = Some(now());
                let body = serde_json::to_value(&info).map_err(|e| PlatformError::Internal(e.to_string()))?;
                self.store.update_doc(workspace_id, KIND, &doc.id, doc.rev, &body, now()).await?;
            }
            return Ok(info);
        }
        Err(PlatformError::NotFound { what: "token", id: token_id.to_string() })
    }
}
