//! Connectors built from stored connections. A connection's secrets (client secret, access and refresh tokens)
//! live sealed in the store; [`StoreTokenStore`] is the connectors' token store over it, so a rotated refresh
//! token is durable before the new access token is used.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledgerlink_connectors::auth::{OAuthTokens, TokenStore};
use ledgerlink_connectors::quickbooks::{QuickbooksConfig, QuickbooksConnector};
use ledgerlink_connectors::salesforce::{SalesforceConfig, SalesforceConnector};
use ledgerlink_connectors::{Connector, ConnectorError};
use ledgerlink_model::QboRealmId;
use ledgerlink_store::{Connection, NewConnection, Store, StoreError};
use serde_json::{Value, json};

/// The systems ledgerlink can connect today.
pub const SYSTEMS: &[&str] = &["quickbooks", "salesforce"];

/// Keeps one connection's tokens inside its sealed credentials.
pub struct StoreTokenStore {
    store: Arc<dyn Store>,
    name: String,
}

impl StoreTokenStore {
    pub fn new(store: Arc<dyn Store>, name: impl Into<String>) -> Self {
        StoreTokenStore { store, name: name.into() }
    }

    async fn connection(&self) -> Result<Connection, ConnectorError> {
        self.store
            .get_connection(&self.name)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ConnectorError::Unauthorized { message: format!("connection `{}` is not in the store", self.name) })
    }
}

fn store_err(e: StoreError) -> ConnectorError {
    ConnectorError::Transient { message: format!("token store: {e}"), outcome_unknown: false }
}

#[async_trait]
impl TokenStore for StoreTokenStore {
    async fn load(&self) -> Result<OAuthTokens, ConnectorError> {
        let conn = self.connection().await?;
        tokens_from(&conn.credentials).ok_or_else(|| ConnectorError::Unauthorized {
            message: format!("connection `{}` has no OAuth tokens: connect it again", self.name),
        })
    }

    async fn save(&self, tokens: &OAuthTokens) -> Result<(), ConnectorError> {
        // Compare-and-swap on the credentials version; on a race, merge into the newer row and try again.
        for _ in 0..5 {
            let conn = self.connection().await?;
            let mut creds = conn.credentials.clone();
            merge_tokens(&mut creds, tokens);
            match self.store.update_credentials(&self.name, conn.credentials_version, &creds).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(ConnectorError::Transient { message: "token store: too many concurrent credential updates".into(), outcome_unknown: false })
    }
}

fn tokens_from(creds: &Value) -> Option<OAuthTokens> {
    let s = |k: &str| creds.get(k).and_then(Value::as_str).map(str::to_string);
    let t = |k: &str| creds.get(k).and_then(Value::as_str).and_then(|v| DateTime::parse_from_rfc3339(v).ok()).map(|d| d.with_timezone(&Utc));
    Some(OAuthTokens {
        access_token: s("access_token").unwrap_or_default(),
        refresh_token: s("refresh_token"),
        // Unknown expiry: treat as expired so the first call refreshes.
        access_expires_at: t("access_expires_at").unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
        refresh_expires_at: t("refresh_expires_at"),
    })
    .filter(|tk| !tk.access_token.is_empty() || tk.refresh_token.is_some())
}

fn merge_tokens(creds: &mut Value, tokens: &OAuthTokens) {
    if !creds.is_object() {
        *creds = json!({});
    }
    if let Value::Object(m) = creds {
        m.insert("access_token".into(), json!(tokens.access_token));
        m.insert("refresh_token".into(), json!(tokens.refresh_token));
        m.insert("access_expires_at".into(), json!(tokens.access_expires_at.to_rfc3339()));
        m.insert("refresh_expires_at".into(), json!(tokens.refresh_expires_at.map(|t| t.to_rfc3339())));
    }
}

/// Builds the connector for one stored connection.
pub fn build_connector(store: Arc<dyn Store>, conn: &Connection, http: reqwest::Client) -> anyhow::Result<Arc<dyn Connector>> {
    let cfg = &conn.config;
    let get = |k: &str| -> anyhow::Result<String> {
        cfg.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("connection `{}` ({}): setting `{k}` is missing", conn.name, conn.system))
    };
    let secret = conn
        .credentials
        .get("client_secret")
        .and_then(Value::as_str)
        .map(|s| secrecy::SecretString::from(s.to_string()))
        .ok_or_else(|| anyhow::anyhow!("connection `{}`: the client secret is missing", conn.name))?;
    let tokens: Arc<dyn TokenStore> = Arc::new(StoreTokenStore::new(store, conn.name.clone()));
    match conn.system.as_str() {
        "quickbooks" => {
            let realm = get("realm_id")?;
            let config = QuickbooksConfig {
                api_base: get("api_base")?,
                token_url: get("token_url")?,
                realm_id: QboRealmId::parse(&realm).map_err(|e| anyhow::anyhow!("connection `{}`: {e}", conn.name))?,
                client_id: get("client_id")?,
                client_secret: secret,
                minor_version: cfg.get("minor_version").and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok()).unwrap_or(75),
            };
            let mut connector = QuickbooksConnector::new(config, tokens, http);
            // A sandbox can run Intuit's limits on a faster clock (its `time_scale`); the connector's limiter must
            // run at the same speed-up to stay just under them.
            if let Some(speedup) = cfg.get("rate_limit_speedup").and_then(Value::as_f64).filter(|s| *s > 0.0) {
                let policy = ledgerlink_connectors::quickbooks::quickbooks_policy();
                connector = connector.with_limiter(ledgerlink_connectors::limiter::Limiter::with_speedup(&policy, speedup));
            }
            Ok(Arc::new(connector))
        }
        "salesforce" => {
            let config = SalesforceConfig {
                instance_url: get("instance_url")?,
                token_url: get("token_url")?,
                api_version: get("api_version").unwrap_or_else(|_| "59.0".into()),
                client_id: get("client_id")?,
                client_secret: secret,
            };
            Ok(Arc::new(SalesforceConnector::new(config, tokens, http)))
        }
        other => anyhow::bail!("connection `{}`: unknown system `{other}` (known: {})", conn.name, SYSTEMS.join(", ")),
    }
}

/// Builds connectors for every stored connection.
pub async fn build_all(store: Arc<dyn Store>) -> anyhow::Result<BTreeMap<String, Arc<dyn Connector>>> {
    let http = ledgerlink_connectors::http::client();
    let mut out = BTreeMap::new();
    for conn in store.list_connections().await? {
        let c = build_connector(store.clone(), &conn, http.clone())?;
        out.insert(conn.name.clone(), c);
    }
    Ok(out)
}

/// A connection from a sandbox's startup line (`ledgerlink sandbox …` / the demo).
pub fn from_sandbox_info(name: &str, info: &Value) -> anyhow::Result<NewConnection> {
    let s = |k: &str| info.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let system = s("system");
    let config = match system.as_str() {
        "quickbooks" => json!({
            "api_base": s("api_base"), "token_url": s("token_url"), "realm_id": s("realm_id"),
            "client_id": s("client_id"), "minor_version": 75,
        }),
        "salesforce" => json!({
            "instance_url": s("instance_url"), "token_url": s("token_url"), "api_version": s("api_version"),
            "client_id": s("client_id"),
        }),
        other => anyhow::bail!("unknown sandbox system `{other}`"),
    };
    Ok(NewConnection {
        name: name.to_string(),
        system,
        config,
        credentials: json!({
            "client_secret": s("client_secret"),
            "access_token": s("access_token"),
            "refresh_token": s("refresh_token"),
            "verifier_token": s("verifier_token"),
        }),
    })
}

