//! The workspace's QuickBooks connection, as the Settings > Integrations card shows it.
//!
//! The OAuth dance is the web UI's: it stores the tokens with `Store::put_connection` under
//! [`connection_name`] and then calls [`Platform::connect`]. Disconnecting keeps every record on both sides and
//! the links between them; it stops syncing (tasks that come due while disconnected are paused, their attempts
//! given back, and payment polling skips the workspace), asks QuickBooks to revoke the grant, and wipes the tokens
//! from the store, so nothing here can reach the company any more. Reconnecting (a new sign-in) resumes the
//! paused tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use ledgerlink_connectors::{Connector, ConnectorError, FindQuery, Record};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Platform, PlatformError, Result, now};

pub(crate) const KIND: &str = "integration";
const ID: &str = "quickbooks";

/// Intuit's revocation endpoint, used when a connection names Intuit's own token endpoint but no revoke URL.
pub const INTUIT_REVOKE_URL: &str = "https://developer.api.intuit.com/v2/oauth2/tokens/revoke";
const INTUIT_TOKEN_URL: &str = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer";

/// The store connection name the UI saves a workspace's QuickBooks tokens under.
pub fn connection_name(workspace_id: &str) -> String {
    format!("quickbooks.{workspace_id}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    NotConnected,
    Connected,
    /// Was connected; syncing is stopped, data kept. Reconnect to resume.
    Disconnected,
}

/// What the QuickBooks card shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntegrationStatus {
    pub state: ConnectionState,
    pub connection_name: Option<String>,
    pub company_name: Option<String>,
    pub realm_id: Option<String>,
    pub connected_at: Option<DateTime<Utc>>,
    pub disconnected_at: Option<DateTime<Utc>>,
    /// Where payment polling has read up to (QuickBooks change time).
    #[serde(default)]
    pub payments_read_to: Option<DateTime<Utc>>,
}

impl IntegrationStatus {
    fn not_connected() -> Self {
        IntegrationStatus {
            state: ConnectionState::NotConnected,
            connection_name: None,
            company_name: None,
            realm_id: None,
            connected_at: None,
            disconnected_at: None,
            payments_read_to: None,
        }
    }
}

/// The QuickBooks (Intuit) app a workspace connects through: what its stored connection needs besides tokens.
#[derive(Clone)]
pub struct QuickbooksAppKeys {
    pub api_base: String,
    pub token_url: String,
    /// Where Disconnect revokes the grant (Intuit: [`INTUIT_REVOKE_URL`]).
    pub revoke_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// The app's webhook verifier token, when its webhooks point at this server.
    pub verifier_token: Option<String>,
}

/// The connection a workspace's sign-in is stored as ([`connection_name`]): settings in `config`, secrets in
/// `credentials` (sealed by the store), in the shape `ledgerlink_engine::connections::build_connector` reads.
pub fn new_connection(
    workspace_id: &str,
    realm_id: &str,
    company_name: &str,
    app: &QuickbooksAppKeys,
    tokens: &ledgerlink_connectors::auth::OAuthTokens,
) -> ledgerlink_store::NewConnection {
    ledgerlink_store::NewConnection {
        name: connection_name(workspace_id),
        system: "quickbooks".into(),
        config: serde_json::json!({
            "api_base": app.api_base,
            "token_url": app.token_url,
            "revoke_url": app.revoke_url,
            "realm_id": realm_id,
            "client_id": app.client_id,
            "minor_version": 75,
            "workspace": workspace_id,
            "company_name": company_name,
        }),
        credentials: serde_json::json!({
            "client_secret": app.client_secret,
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token,
            "access_expires_at": tokens.access_expires_at.to_rfc3339(),
            "refresh_expires_at": tokens.refresh_expires_at.map(|t| t.to_rfc3339()),
            "verifier_token": app.verifier_token,
        }),
    }
}

/// What Disconnect did: syncing is stopped and the tokens are gone from the store in every case; `revoke_error`
/// says, in words, why QuickBooks could not be told to revoke the grant (the admin may then remove the app from
/// their Intuit account by hand).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disconnected {
    pub status: IntegrationStatus,
    /// QuickBooks confirmed the revocation.
    pub revoked: bool,
    pub revoke_error: Option<String>,
}

/// One check of a connection test, in words a finance admin understands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestCheck {
    /// `credentials`, `permissions`, `company`.
    pub name: String,
    pub ok: bool,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    pub ok: bool,
    pub company_name: Option<String>,
    pub checks: Vec<TestCheck>,
    /// One sentence: all good, or what to do.
    pub message: String,
}

/// One choice for a select on the Manage form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QbChoice {
    pub id: String,
    pub name: String,
    /// Account type, item type, or whether a tax code is taxable.
    pub detail: String,
}

/// The connected company's own lists, for the Manage form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyLists {
    pub income_accounts: Vec<QbChoice>,
    pub expense_accounts: Vec<QbChoice>,
    /// Bank and credit-card accounts (what an expense is paid from).
    pub payment_accounts: Vec<QbChoice>,
    pub items: Vec<QbChoice>,
    pub tax_codes: Vec<QbChoice>,
}

/// Connectors built from stored connections, kept per connection name until it is connected again.
#[derive(Default)]
pub(crate) struct ConnectorCache(Mutex<HashMap<String, Arc<dyn Connector>>>);

impl ConnectorCache {
    fn get(&self, name: &str) -> Option<Arc<dyn Connector>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }
    fn put(&self, name: &str, c: Arc<dyn Connector>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), c);
    }
    fn forget(&self, name: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    }
}

fn text(record: &Record, field: &str) -> String {
    record.get(field).and_then(Value::as_str).unwrap_or_default().to_string()
}

impl Platform {
    /// Marks the workspace connected to the QuickBooks company whose tokens are stored as `connection`
    /// (see [`connection_name`]), and resumes whatever was paused while it was disconnected.
    pub async fn connect(&self, workspace_id: &str, connection: &str, company_name: &str, realm_id: &str) -> Result<IntegrationStatus> {
        self.get_workspace(workspace_id).await?;
        let conn = self
            .store
            .get_connection(connection)
            .await?
            .ok_or_else(|| PlatformError::NotFound { what: "connection", id: connection.to_string() })?;
        if conn.system != "quickbooks" {
            return Err(PlatformError::invalid("connection", format!("`{connection}` is a {} connection, not QuickBooks", conn.system)));
        }
        let previous = self.status(workspace_id).await?;
        // Reconnecting to the same company keeps the payment cursor; another company starts afresh.
        let same_company = previous.realm_id.as_deref() == Some(realm_id);
        let status = IntegrationStatus {
            state: ConnectionState::Connected,
            connection_name: Some(connection.to_string()),
            company_name: Some(company_name.to_string()),
            realm_id: Some(realm_id.to_string()),
            connected_at: Some(now()),
            disconnected_at: None,
            // A change made while disconnected is read on reconnect: the cursor never moved past it.
            payments_read_to: if same_company { previous.payments_read_to.or(previous.connected_at) } else { None },
        };
        self.put_status(workspace_id, &status).await?;
        self.connectors.forget(connection);
        self.store.resume_tasks(workspace_id, now()).await?;
        self.wake_worker();
        Ok(status)
    }

    /// Stops syncing in both directions and keeps all data on both sides; revokes the grant at QuickBooks and
    /// deletes the tokens here. Syncing stops first, so a revocation that fails (QuickBooks down, the grant
    /// already gone) still leaves the workspace disconnected; the answer says so. Idempotent.
    pub async fn disconnect(&self, workspace_id: &str) -> Result<Disconnected> {
        // Not while a payment read is between reading and writing the status (it would write `Connected` back).
        let guard = self.payments_lock.lock().await;
        let mut status = self.status(workspace_id).await?;
        if status.state != ConnectionState::Connected {
            return Ok(Disconnected { status, revoked: false, revoke_error: None });
        }
        status.state = ConnectionState::Disconnected;
        status.disconnected_at = Some(now());
        self.put_status(workspace_id, &status).await?;
        drop(guard);
        let Some(name) = status.connection_name.clone() else {
            return Ok(Disconnected { status, revoked: false, revoke_error: None });
        };
        self.connectors.forget(&name);
        let Some(conn) = self.store.get_connection(&name).await? else {
            return Ok(Disconnected { status, revoked: false, revoke_error: Some("no stored sign-in was left to revoke".into()) });
        };
        let revoked = self.revoke_at_quickbooks(&conn).await;
        // The tokens go whatever QuickBooks answered: the settings (company, app) stay for the card and a reconnect.
        self.store
            .put_connection(&ledgerlink_store::NewConnection {
                name: conn.name.clone(),
                system: conn.system.clone(),
                config: conn.config.clone(),
                credentials: serde_json::json!({}),
            })
            .await?;
        self.connectors.forget(&name);
        match revoked {
            Ok(()) => {
                tracing::info!(workspace = workspace_id, "QuickBooks grant revoked and tokens deleted");
                Ok(Disconnected { status, revoked: true, revoke_error: None })
            }
            Err(why) => {
                tracing::warn!(workspace = workspace_id, reason = %why, "QuickBooks grant not revoked; tokens deleted locally");
                Ok(Disconnected { status, revoked: false, revoke_error: Some(why) })
            }
        }
    }

    /// `POST {"token": refresh token}` to the revocation endpoint with the app's Basic auth (Intuit ends the
    /// whole grant, access token included). The error is a sentence for the admin.
    async fn revoke_at_quickbooks(&self, conn: &ledgerlink_store::Connection) -> std::result::Result<(), String> {
        let config_str = |k: &str| conn.config.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
        let cred_str = |k: &str| conn.credentials.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
        let url = match (config_str("revoke_url"), config_str("token_url")) {
            (Some(u), _) => u.to_string(),
            (None, Some(INTUIT_TOKEN_URL)) => INTUIT_REVOKE_URL.to_string(),
            _ => return Err("this connection does not say where QuickBooks revokes access".into()),
        };
        let Some(token) = cred_str("refresh_token").or_else(|| cred_str("access_token")) else {
            return Err("no sign-in was stored to revoke".into());
        };
        let (Some(client_id), Some(secret)) = (config_str("client_id"), cred_str("client_secret")) else {
            return Err("the app's client credentials are missing, so QuickBooks cannot be asked".into());
        };
        let reply = self
            .http
            .post(&url)
            .basic_auth(client_id, Some(secret))
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&serde_json::json!({"token": token}))
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| format!("QuickBooks could not be reached ({})", if e.is_timeout() { "no answer in time".to_string() } else { "connection failed".to_string() }))?;
        match reply.status().as_u16() {
            200..=299 => Ok(()),
            401 => Err("QuickBooks did not accept the app's credentials for the revocation".into()),
            code => Err(format!("QuickBooks answered the revocation with HTTP {code}")),
        }
    }

    pub async fn status(&self, workspace_id: &str) -> Result<IntegrationStatus> {
        match self.store.get_doc(workspace_id, KIND, ID).await? {
            Some(doc) => serde_json::from_value(doc.body).map_err(|e| PlatformError::Internal(e.to_string())),
            None => Ok(IntegrationStatus::not_connected()),
        }
    }

    pub(crate) async fn put_status(&self, workspace_id: &str, status: &IntegrationStatus) -> Result<()> {
        let body = serde_json::to_value(status).map_err(|e| PlatformError::Internal(e.to_string()))?;
        self.store.put_doc(workspace_id, KIND, ID, &body, now()).await?;
        Ok(())
    }

    /// The connected company's connector; `NotConnected` unless the workspace is connected.
    pub(crate) async fn connector(&self, workspace_id: &str) -> Result<(Arc<dyn Connector>, String)> {
        let status = self.status(workspace_id).await?;
        let (ConnectionState::Connected, Some(name)) = (status.state, status.connection_name) else {
            return Err(PlatformError::NotConnected);
        };
        if let Some(c) = self.connectors.get(&name) {
            return Ok((c, name));
        }
        let conn = self.store.get_connection(&name).await?.ok_or(PlatformError::NotConnected)?;
        let c = ledgerlink_engine::connections::build_connector(self.store.clone(), &conn, self.http.clone())
            .map_err(|e| PlatformError::QuickBooks(e.to_string()))?;
        self.connectors.put(&name, c.clone());
        Ok((c, name))
    }

    /// One read-only call (the company's CompanyInfo) that proves the credentials, the permissions and the
    /// company file; on failure, says which and what to do.
    pub async fn test_connection(&self, workspace_id: &str) -> Result<TestResult> {
        let check = |name: &str, ok: bool, message: &str| TestCheck { name: name.into(), ok, message: message.into() };
        let (connector, _) = match self.connector(workspace_id).await {
            Ok(c) => c,
            Err(PlatformError::NotConnected) => {
                return Ok(TestResult {
                    ok: false,
                    company_name: None,
                    checks: vec![check("credentials", false, "QuickBooks is not connected for this workspace.")],
                    message: "Connect QuickBooks first (Settings > Integrations > Connect).".into(),
                });
            }
            Err(e) => return Err(e),
        };
        match connector.test_connection().await {
            Ok(company) => Ok(TestResult {
                ok: true,
                company_name: Some(company.clone()),
                checks: vec![
                    check("credentials", true, "QuickBooks accepted the sign-in."),
                    check("permissions", true, "ledgerlink may read the company's accounting data."),
                    check("company", true, &format!("The company file \"{company}\" is valid.")),
                ],
                message: format!("Connected to {company}. Everything is ready to sync."),
            }),
            Err(e) => {
                let (checks, message) = match &e {
                    ConnectorError::Unauthorized { .. } => (
                        vec![check("credentials", false, "QuickBooks refused the sign-in: the authorisation has expired or was revoked.")],
                        "Disconnect and connect QuickBooks again to sign in anew.".to_string(),
                    ),
                    ConnectorError::NotFound { .. } => (
                        vec![
                            check("credentials", true, "QuickBooks accepted the sign-in."),
                            check("company", false, "The company file was not found: it may have been deleted or access removed."),
                        ],
                        "Reconnect and pick the company you want to sync.".to_string(),
                    ),
                    ConnectorError::Validation { message, .. } => (
                        vec![
                            check("credentials", true, "QuickBooks accepted the sign-in."),
                            check("permissions", false, &format!("QuickBooks refused to show the company: {message}")),
                        ],
                        "Sign in with a QuickBooks user who has access to this company's accounting data.".to_string(),
                    ),
                    other => (
                        vec![check("credentials", false, &format!("QuickBooks could not be reached: {other}"))],
                        "QuickBooks did not answer. Try again in a few minutes.".to_string(),
                    ),
                };
                Ok(TestResult { ok: false, company_name: None, checks, message })
            }
        }
    }

    /// Accounts, products/services and tax codes of the connected company, for the Manage form's selects.
    pub async fn company_lists(&self, workspace_id: &str) -> Result<CompanyLists> {
        let (qb, _) = self.connector(workspace_id).await?;
        let all = |object: &str| FindQuery { object: object.into(), ..Default::default() };
        let mut lists = CompanyLists::default();
        for a in qb.find(&all("Account")).await? {
            if a.get("Active").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let kind = text(&a, "AccountType");
            let choice = QbChoice { id: text(&a, "Id"), name: text(&a, "Name"), detail: kind.clone() };
            match kind.as_str() {
                "Income" | "Other Income" => lists.income_accounts.push(choice),
                "Expense" | "Other Expense" | "Cost of Goods Sold" => lists.expense_accounts.push(choice),
                "Bank" | "Credit Card" => lists.payment_accounts.push(choice),
                _ => {}
            }
        }
        for i in qb.find(&all("Item")).await? {
            let kind = text(&i, "Type");
            if i.get("Active").and_then(Value::as_bool) == Some(false) || kind == "Category" {
                continue;
            }
            lists.items.push(QbChoice { id: text(&i, "Id"), name: text(&i, "Name"), detail: kind });
        }
        for t in qb.find(&all("TaxCode")).await? {
            if t.get("Active").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let taxable = t.get("Taxable").and_then(Value::as_bool).unwrap_or(false);
            lists.tax_codes.push(QbChoice {
                id: text(&t, "Id"),
                name: text(&t, "Name"),
                detail: if taxable { "taxable".into() } else { "non-taxable".into() },
            });
        }
        for l in [&mut lists.income_accounts, &mut lists.expense_accounts, &mut lists.payment_accounts, &mut lists.items, &mut lists.tax_codes] {
            l.sort_by_key(|a| a.name.to_lowercase());
        }
        Ok(lists)
    }
}
