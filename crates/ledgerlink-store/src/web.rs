//! The web UI's state: administrators, their server-side sessions, and the flows they switched off.
//!
//! Layout: the rows ([`WebUser`], [`WebSession`], [`FlowSwitch`]), the [`WebStore`] trait (reached through
//! [`crate::Store::web`]), then its SQLite and PostgreSQL implementations side by side.
//!
//! Why sessions live here rather than in signed cookies: a session must be revocable (sign-out, an expired idle
//! timer) and must carry per-session secrets (the CSRF token, the OAuth `state` of a sign-in in progress) that the
//! browser should never be able to alter. Only a SHA-256 of the session token is stored; hashing is the caller's
//! job, so this module never sees the token a browser holds. Passwords arrive already hashed (argon2) for the
//! same reason.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::postgres::PgStore;
use crate::sqlite::{SqliteStore, opt_text_json, text_ts, ts};
use crate::{Result, StoreError};

/// An administrator of one workspace.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WebUser {
    pub id: i64,
    /// The workspace (platform tenant) whose integrations this user manages.
    pub workspace: String,
    /// Lower-case, trimmed: the sign-in name.
    pub email: String,
    pub display_name: String,
    /// An argon2 PHC string. Never shown.
    #[serde(skip_serializing)]
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for WebUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebUser")
            .field("id", &self.id)
            .field("workspace", &self.workspace)
            .field("email", &self.email)
            .field("password_hash", &"[redacted]")
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct NewWebUser {
    pub workspace: String,
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
}

/// A session being opened: the token's hash and both expiries are fixed by the caller.
#[derive(Clone)]
pub struct NewWebSession {
    pub token_hash: String,
    pub user_id: i64,
    pub csrf_token: String,
    pub now: DateTime<Utc>,
    pub idle_expires_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
}

/// A live session with its user.
#[derive(Clone)]
pub struct WebSession {
    pub token_hash: String,
    pub user: WebUser,
    pub csrf_token: String,
    /// Short-lived per-session state, e.g. `{"oauth_state": "…", "system": "quickbooks"}`.
    pub pending: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub idle_expires_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for WebSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSession")
            .field("user", &self.user)
            .field("idle_expires_at", &self.idle_expires_at)
            .field("absolute_expires_at", &self.absolute_expires_at)
            .finish_non_exhaustive()
    }
}

/// An admin's on/off choice for one configured flow.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlowSwitch {
    pub flow: String,
    pub enabled: bool,
    pub changed_by: String,
    pub changed_at: DateTime<Utc>,
}

/// The web UI's part of the store. Both backends pass the same tests (`tests/web_store.rs`).
#[async_trait]
pub trait WebStore: Send + Sync {
    /// Adds an administrator; [`StoreError::Conflict`] when the email is taken.
    async fn create_web_user(&self, user: &NewWebUser, now: DateTime<Utc>) -> Result<WebUser>;
    async fn web_user_by_email(&self, email: &str) -> Result<Option<WebUser>>;
    async fn list_web_users(&self, workspace: &str) -> Result<Vec<WebUser>>;

    async fn create_web_session(&self, session: &NewWebSession) -> Result<()>;
    /// The session if it is live at `now` (both expiries in the future), with its idle expiry moved to
    /// `now + idle` (never past the absolute expiry) in the same statement. An expired session is `None`.
    async fn touch_web_session(&self, token_hash: &str, now: DateTime<Utc>, idle: Duration) -> Result<Option<WebSession>>;
    /// Replaces the session's pending state (None clears it).
    async fn set_web_session_pending(&self, token_hash: &str, pending: Option<&serde_json::Value>) -> Result<()>;
    /// Ends a session (sign-out); returns whether it existed.
    async fn delete_web_session(&self, token_hash: &str) -> Result<bool>;
    /// Deletes sessions expired at `now`; returns how many.
    async fn purge_web_sessions(&self, now: DateTime<Utc>) -> Result<u64>;

    async fn set_flow_enabled(&self, flow: &str, enabled: bool, changed_by: &str, now: DateTime<Utc>) -> Result<()>;
    /// Every flow an admin has switched, sorted by name. A flow without a row is enabled.
    async fn flow_switches(&self) -> Result<Vec<FlowSwitch>>;
}

fn email_conflict(e: sqlx::Error, email: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict(format!("a user with the email {email} already exists"))
        }
        _ => StoreError::Database(e),
    }
}

// ----- SQLite -----

fn sqlite_user(row: &sqlx::sqlite::SqliteRow) -> Result<WebUser> {
    Ok(WebUser {
        id: row.try_get("id")?,
        workspace: row.try_get("workspace")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        password_hash: row.try_get("password_hash")?,
        created_at: text_ts(row, "created_at")?,
    })
}

#[async_trait]
impl WebStore for SqliteStore {
    async fn create_web_user(&self, user: &NewWebUser, now: DateTime<Utc>) -> Result<WebUser> {
        let row = sqlx::query(
            "INSERT INTO web_users (workspace, email, display_name, password_hash, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING *",
        )
        .bind(&user.workspace)
        .bind(&user.email)
        .bind(&user.display_name)
        .bind(&user.password_hash)
        .bind(ts(now))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| email_conflict(e, &user.email))?;
        sqlite_user(&row)
    }

    async fn web_user_by_email(&self, email: &str) -> Result<Option<WebUser>> {
        let row = sqlx::query("SELECT * FROM web_users WHERE email = ?1").bind(email).fetch_optional(&self.pool).await?;
        row.as_ref().map(sqlite_user).transpose()
    }

    async fn list_web_users(&self, workspace: &str) -> Result<Vec<WebUser>> {
        let rows = sqlx::query("SELECT * FROM web_users WHERE workspace = ?1 ORDER BY email")
            .bind(workspace)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(sqlite_user).collect()
    }

    async fn create_web_session(&self, s: &NewWebSession) -> Result<()> {
        sqlx::query(
            "INSERT INTO web_sessions (token_hash, user_id, csrf_token, pending, created_at, last_seen_at,
                                       idle_expires_at, absolute_expires_at)
             VALUES (?1, ?2, ?3, NULL, ?4, ?4, ?5, ?6)",
        )
        .bind(&s.token_hash)
        .bind(s.user_id)
        .bind(&s.csrf_token)
        .bind(ts(s.now))
        .bind(ts(s.idle_expires_at.min(s.absolute_expires_at)))
        .bind(ts(s.absolute_expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn touch_web_session(&self, token_hash: &str, now: DateTime<Utc>, idle: Duration) -> Result<Option<WebSession>> {
        let row = sqlx::query(
            "UPDATE web_sessions SET last_seen_at = ?2, idle_expires_at = MIN(?3, absolute_expires_at)
             WHERE token_hash = ?1 AND idle_expires_at > ?2 AND absolute_expires_at > ?2
             RETURNING *",
        )
        .bind(token_hash)
        .bind(ts(now))
        .bind(ts(now + idle))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let user_id: i64 = row.try_get("user_id")?;
        let user = sqlx::query("SELECT * FROM web_users WHERE id = ?1").bind(user_id).fetch_optional(&self.pool).await?;
        let Some(user) = user else { return Ok(None) };
        Ok(Some(WebSession {
            token_hash: row.try_get("token_hash")?,
            user: sqlite_user(&user)?,
            csrf_token: row.try_get("csrf_token")?,
            pending: opt_text_json(&row, "pending")?,
            created_at: text_ts(&row, "created_at")?,
            last_seen_at: text_ts(&row, "last_seen_at")?,
            idle_expires_at: text_ts(&row, "idle_expires_at")?,
            absolute_expires_at: text_ts(&row, "absolute_expires_at")?,
        }))
    }

    async fn set_web_session_pending(&self, token_hash: &str, pending: Option<&serde_json::Value>) -> Result<()> {
        let done = sqlx::query("UPDATE web_sessions SET pending = ?2 WHERE token_hash = ?1")
            .bind(token_hash)
            .bind(pending.map(|v| v.to_string()))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: "web session", id: "(hidden)".into() });
        }
        Ok(())
    }

    async fn delete_web_session(&self, token_hash: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE token_hash = ?1").bind(token_hash).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn purge_web_sessions(&self, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE idle_expires_at <= ?1 OR absolute_expires_at <= ?1")
            .bind(ts(now))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn set_flow_enabled(&self, flow: &str, enabled: bool, changed_by: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO flow_switches (flow, enabled, changed_by, changed_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (flow) DO UPDATE SET enabled = excluded.enabled, changed_by = excluded.changed_by,
                 changed_at = excluded.changed_at",
        )
        .bind(flow)
        .bind(enabled)
        .bind(changed_by)
        .bind(ts(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn flow_switches(&self) -> Result<Vec<FlowSwitch>> {
        let rows = sqlx::query("SELECT * FROM flow_switches ORDER BY flow").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(FlowSwitch {
                    flow: r.try_get("flow")?,
                    enabled: r.try_get("enabled")?,
                    changed_by: r.try_get("changed_by")?,
                    changed_at: text_ts(r, "changed_at")?,
                })
            })
            .collect()
    }
}

// ----- PostgreSQL -----

fn pg_user(row: &sqlx::postgres::PgRow) -> Result<WebUser> {
    Ok(WebUser {
        id: row.try_get("id")?,
        workspace: row.try_get("workspace")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        password_hash: row.try_get("password_hash")?,
        created_at: row.try_get("created_at")?,
    })
}

#[async_trait]
impl WebStore for PgStore {
    async fn create_web_user(&self, user: &NewWebUser, now: DateTime<Utc>) -> Result<WebUser> {
        let row = sqlx::query(
            "INSERT INTO web_users (workspace, email, display_name, password_hash, created_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING *",
        )
        .bind(&user.workspace)
        .bind(&user.email)
        .bind(&user.display_name)
        .bind(&user.password_hash)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| email_conflict(e, &user.email))?;
        pg_user(&row)
    }

    async fn web_user_by_email(&self, email: &str) -> Result<Option<WebUser>> {
        let row = sqlx::query("SELECT * FROM web_users WHERE email = $1").bind(email).fetch_optional(&self.pool).await?;
        row.as_ref().map(pg_user).transpose()
    }

    async fn list_web_users(&self, workspace: &str) -> Result<Vec<WebUser>> {
        let rows = sqlx::query("SELECT * FROM web_users WHERE workspace = $1 ORDER BY email")
            .bind(workspace)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(pg_user).collect()
    }

    async fn create_web_session(&self, s: &NewWebSession) -> Result<()> {
        sqlx::query(
            "INSERT INTO web_sessions (token_hash, user_id, csrf_token, pending, created_at, last_seen_at,
                                       idle_expires_at, absolute_expires_at)
             VALUES ($1, $2, $3, NULL, $4, $4, $5, $6)",
        )
        .bind(&s.token_hash)
        .bind(s.user_id)
        .bind(&s.csrf_token)
        .bind(s.now)
        .bind(s.idle_expires_at.min(s.absolute_expires_at))
        .bind(s.absolute_expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn touch_web_session(&self, token_hash: &str, now: DateTime<Utc>, idle: Duration) -> Result<Option<WebSession>> {
        let row = sqlx::query(
            "UPDATE web_sessions SET last_seen_at = $2, idle_expires_at = LEAST($3, absolute_expires_at)
             WHERE token_hash = $1 AND idle_expires_at > $2 AND absolute_expires_at > $2
             RETURNING *",
        )
        .bind(token_hash)
        .bind(now)
        .bind(now + idle)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let user_id: i64 = row.try_get("user_id")?;
        let user = sqlx::query("SELECT * FROM web_users WHERE id = $1").bind(user_id).fetch_optional(&self.pool).await?;
        let Some(user) = user else { return Ok(None) };
        let pending: Option<sqlx::types::Json<serde_json::Value>> = row.try_get("pending")?;
        Ok(Some(WebSession {
            token_hash: row.try_get("token_hash")?,
            user: pg_user(&user)?,
            csrf_token: row.try_get("csrf_token")?,
            pending: pending.map(|j| j.0),
            created_at: row.try_get("created_at")?,
            last_seen_at: row.try_get("last_seen_at")?,
            idle_expires_at: row.try_get("idle_expires_at")?,
            absolute_expires_at: row.try_get("absolute_expires_at")?,
        }))
    }

    async fn set_web_session_pending(&self, token_hash: &str, pending: Option<&serde_json::Value>) -> Result<()> {
        let done = sqlx::query("UPDATE web_sessions SET pending = $2 WHERE token_hash = $1")
            .bind(token_hash)
            .bind(pending.map(sqlx::types::Json))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: "web session", id: "(hidden)".into() });
        }
        Ok(())
    }

    async fn delete_web_session(&self, token_hash: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE token_hash = $1").bind(token_hash).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn purge_web_sessions(&self, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE idle_expires_at <= $1 OR absolute_expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn set_flow_enabled(&self, flow: &str, enabled: bool, changed_by: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO flow_switches (flow, enabled, changed_by, changed_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (flow) DO UPDATE SET enabled = excluded.enabled, changed_by = excluded.changed_by,
                 changed_at = excluded.changed_at",
        )
        .bind(flow)
        .bind(enabled)
        .bind(changed_by)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn flow_switches(&self) -> Result<Vec<FlowSwitch>> {
        let rows = sqlx::query("SELECT * FROM flow_switches ORDER BY flow").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(FlowSwitch {
                    flow: r.try_get("flow")?,
                    enabled: r.try_get("enabled")?,
                    changed_by: r.try_get("changed_by")?,
                    changed_at: r.try_get("changed_at")?,
                })
            })
            .collect()
    }
}
