//! Connectors built from stored connections. A connection's secrets (client secret, access and refresh tokens)
//! live sealed in the store; [`StoreTokenStore`] is the connectors' token store over it, so a rotated refresh
//! token is durable before the new access token is used. It also gives out the connection's refresh turn as the
//! store lease `refresh:<connection>`, so that processes sharing one database refresh one at a time and a
//! process that waited re-loads the tokens the other saved instead of refreshing again.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledgerlink_connectors::auth::{OAuthTokens, RefreshTurn, TokenStore};
use ledgerlink_connectors::quickbooks::{QuickbooksConfig, QuickbooksConnector};
use ledgerlink_connectors::salesforce::{SalesforceConfig, SalesforceConnector};
use ledgerlink_connectors::{Connector, ConnectorError};
use ledgerlink_model::QboRealmId;
use ledgerlink_store::{Connection, NewConnection, Store, StoreError};
use serde_json::{Value, json};

/// The systems ledgerlink can connect today.
pub const SYSTEMS: &[&str] = &["quickbooks", "salesforce"];

/// How long a refresh turn is held at most: a refresher that dies mid-refresh blocks the others this long. A
/// token request takes well under a second; the HTTP client gives up long before this.
pub const REFRESH_TURN_TTL: chrono::Duration = chrono::Duration::seconds(30);

/// How often a process waiting for another's refresh looks at the store.
const REFRESH_WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Keeps one connection's tokens inside its sealed credentials.
pub struct StoreTokenStore {
    store: Arc<dyn Store>,
    name: String,
    /// This handle's name in the refresh lease: unique per handle, so two processes (or two handles in one
    /// process) never mistake each other's turn for their own.
    owner: String,
    turn_ttl: chrono::Duration,
}

impl StoreTokenStore {
    pub fn new(store: Arc<dyn Store>, name: impl Into<String>) -> Self {
        let owner = format!("refresher-{}-{:016x}", std::process::id(), rand::random::<u64>());
        StoreTokenStore { store, name: name.into(), owner, turn_ttl: REFRESH_TURN_TTL }
    }

    /// The same with a refresh turn of `ttl` instead of [`REFRESH_TURN_TTL`].
    pub fn with_turn_ttl(mut self, ttl: chrono::Duration) -> Self {
        self.turn_ttl = ttl;
        self
    }

    fn turn_lease(&self) -> String {
        format!("refresh:{}", self.name)
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

    /// Takes the lease `refresh:<connection>`; while another process holds it, waits until it is released (or
    /// has expired, if that process died) and reports [`RefreshTurn::OtherFinished`], so the caller re-loads.
    async fn begin_refresh(&self) -> Result<RefreshTurn, ConnectorError> {
        let lease = self.turn_lease();
        if self.store.try_acquire_lease(&lease, &self.owner, crate::now(), self.turn_ttl).await.map_err(store_err)? {
            return Ok(RefreshTurn::Held);
        }
        tracing::debug!(connection = %self.name, "another process is refreshing the tokens; waiting for it");
        // The holder's turn ends by its TTL at the latest; a little slack covers clocks and the last poll.
        let deadline = tokio::time::Instant::now() + self.turn_ttl.to_std().unwrap_or_default() + std::time::Duration::from_secs(5);
        loop {
            if self.store.lease_holder(&lease, crate::now()).await.map_err(store_err)?.is_none() {
                return Ok(RefreshTurn::OtherFinished);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ConnectorError::Transient {
                    message: format!(
                        "connection `{}`: another process has held the token refresh turn for over {} s",
                        self.name,
                        self.turn_ttl.num_seconds()
                    ),
                    outcome_unknown: false,
                });
            }
            tokio::time::sleep(REFRESH_WAIT_POLL).await;
        }
    }

    async fn end_refresh(&self) {
        if let Err(e) = self.store.release_lease(&self.turn_lease(), &self.owner).await {
            // Harmless beyond a delay: the turn expires by itself.
            tracing::warn!(connection = %self.name, error = %e, "could not give the token refresh turn back");
        }
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
            // A sandbox can run Intuit's limits on a faster clock (its `time_scale`); the connector's limiter must
            // run at the same speed-up to stay just under them.
            let speedup = cfg.get("rate_limit_speedup").and_then(Value::as_f64).filter(|s| *s > 0.0).unwrap_or(1.0);
            let limiter = realm_limiter(&format!("{}|{realm}", config.api_base), speedup);
            let connector = QuickbooksConnector::new(config, tokens, http).with_limiter(limiter);
            // Creates from concurrent jobs leave as batch calls of up to 30 (one request of the 500 a minute instead
            // of thirty). On unless the connection says `batch_writes = false`.
            if batch_writes(cfg) {
                let batching = ledgerlink_connectors::quickbooks::batching::BatchingConnector::new(
                    Arc::new(connector),
                    ledgerlink_connectors::quickbooks::batch::BatchWriter::DEFAULT_LINGER,
                );
                return Ok(Arc::new(batching));
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
            let connector = SalesforceConnector::new(config, tokens, http);
            // Creates and updates from concurrent jobs leave as sObject Collections calls of up to 200 records
            // (one call of the org's daily budget instead of one per record), and concurrent reads by id or by
            // one record-id field share calls too. Each on unless the connection says `batch_writes = false`
            // or `batch_reads = false`.
            let (writes, reads) = (batch_writes(cfg), cfg.get("batch_reads").and_then(Value::as_bool).unwrap_or(true));
            if writes || reads {
                let batching = ledgerlink_connectors::salesforce::batching::CollectionsConnector::new(
                    Arc::new(connector),
                    ledgerlink_connectors::salesforce::collections::DEFAULT_LINGER,
                )
                .with_batched_writes(writes)
                .with_coalesced_reads(reads);
                return Ok(Arc::new(batching));
            }
            Ok(Arc::new(connector))
        }
        other => anyhow::bail!("connection `{}`: unknown system `{other}` (known: {})", conn.name, SYSTEMS.join(", ")),
    }
}

/// The limiter of one QuickBooks company in this process. Intuit's limits (500 requests a minute, 10 at once)
/// hold per company, not per connection: the engine's connection and a platform workspace's own grant to the same
/// company spend one allowance, so every connector built for it here shares one limiter.
fn realm_limiter(company: &str, speedup: f64) -> ledgerlink_connectors::limiter::Limiter {
    use ledgerlink_connectors::limiter::Limiter;
    static LIMITERS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, Limiter>>> =
        std::sync::LazyLock::new(Default::default);
    let mut limiters = LIMITERS.lock().unwrap_or_else(|e| e.into_inner());
    limiters
        .entry(format!("{company}|{speedup}"))
        .or_insert_with(|| Limiter::with_speedup(&ledgerlink_connectors::quickbooks::quickbooks_policy(), speedup))
        .clone()
}

/// Whether a connection's writes are coalesced into batch calls (`batch_writes`, on by default).
fn batch_writes(cfg: &Value) -> bool {
    cfg.get("batch_writes").and_then(Value::as_bool).unwrap_or(true)
}

/// Builds connectors for every stored data connection (notification connections are left to
/// [`crate::notifications::build_all`]).
pub async fn build_all(store: Arc<dyn Store>) -> anyhow::Result<BTreeMap<String, Arc<dyn Connector>>> {
    let http = ledgerlink_connectors::http::client();
    let mut out = BTreeMap::new();
    for conn in store.list_connections().await? {
        // Slack and email connections are notifiers, built by `notifications::build_all`.
        if crate::notifications::is_notification_system(&conn.system) {
            continue;
        }
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

