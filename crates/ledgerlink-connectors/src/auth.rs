//! OAuth 2.0 tokens for a connection.
//!
//! The [`TokenStore`] is where a connection's tokens live (the engine backs it with the encrypted store). The
//! token manager in this module refreshes an access token when it expires or is refused, saves the rotated
//! refresh token through the store BEFORE using the new access token (losing a rotated QuickBooks refresh token
//! kills the connection), and lets only one refresh run at a time per connection: within a process by its own
//! lock, across processes by the store's refresh turn ([`TokenStore::begin_refresh`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::ConnectorError;
use crate::http::{self, Reply};

/// A connection's current tokens. Debug output is redacted.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct OAuthTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for OAuthTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthTokens")
            .field("access_token", &"[redacted]")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "[redacted]"))
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .finish()
    }
}

/// Durable home of one connection's tokens.
///
/// A store shared by several processes also serialises their refreshes through [`TokenStore::begin_refresh`] and
/// [`TokenStore::end_refresh`]: with rotating refresh tokens, two processes refreshing at once would each retire
/// the token the other is about to use. A store only one process uses keeps the defaults, under which the
/// [`TokenManager`]'s own lock is the whole story.
#[async_trait]
pub trait TokenStore: Send + Sync {
    async fn load(&self) -> Result<OAuthTokens, ConnectorError>;
    /// Persists `tokens` durably; must return only once they are safe from a crash.
    async fn save(&self, tokens: &OAuthTokens) -> Result<(), ConnectorError>;

    /// Asks for the connection's refresh turn, waiting (with a deadline) while another refresher holds it.
    /// [`RefreshTurn::Held`] obliges the caller to call [`TokenStore::end_refresh`] once it has saved (or given
    /// up); [`RefreshTurn::OtherFinished`] means someone else refreshed meanwhile, so the caller re-loads.
    async fn begin_refresh(&self) -> Result<RefreshTurn, ConnectorError> {
        Ok(RefreshTurn::Held)
    }

    /// Gives the refresh turn back. Failing to do so only delays the next refresher until the turn expires, so
    /// this reports nothing.
    async fn end_refresh(&self) {}
}

/// The answer to [`TokenStore::begin_refresh`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshTurn {
    /// The caller holds the turn: nobody else refreshes this connection until it calls `end_refresh`.
    Held,
    /// Another refresher held the turn and has let go of it; what it saved is in the store.
    OtherFinished,
}

/// Why a refresh is wanted; checked again against the stored tokens once the refresh turn is ours, because the
/// previous holder of the turn may have made it needless.
enum Need<'a> {
    /// The access token is expired or about to be.
    Expired,
    /// The server refused this access token.
    Refused(&'a str),
}

impl Need<'_> {
    fn still(&self, stored: &OAuthTokens) -> bool {
        match self {
            // The margin is added to now, not subtracted from the expiry, which cannot overflow for an unknown
            // (minimum) expiry.
            Need::Expired => stored.access_expires_at <= Utc::now() + EXPIRY_MARGIN,
            Need::Refused(stale) => stored.access_token == *stale,
        }
    }
}

/// How many times one refresh goes back to the store after another refresher finished without curing the need
/// (it failed, say), before giving up with a retryable error.
const MAX_REFRESH_ROUNDS: usize = 8;

/// How long before its expiry an access token is treated as expired, so a call never starts with a token that
/// dies in flight.
pub const EXPIRY_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// The lifetime assumed for an access token when the token response does not say (Salesforce omits
/// `expires_in`; its sessions are ended by the org's timeout and reported with a 401, which triggers a refresh).
pub const DEFAULT_ACCESS_LIFETIME_SECS: i64 = 3600;

/// Where the client credentials go in a token request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic base64(client_id:client_secret)` (QuickBooks).
    Basic,
    /// `client_id` and `client_secret` as form fields (Salesforce).
    Form,
}

/// What is needed to exchange a refresh token for a new access token at an OAuth 2.0 token endpoint.
#[derive(Clone)]
pub struct RefreshConfig {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub client_auth: ClientAuth,
}

impl std::fmt::Debug for RefreshConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshConfig")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("client_auth", &self.client_auth)
            .finish()
    }
}

/// The fields of a token response ledgerlink uses.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    x_refresh_token_expires_in: Option<serde_json::Value>,
}

/// A number of seconds that some servers send as a JSON number and others as a string.
fn seconds(value: &Option<serde_json::Value>) -> Option<i64> {
    match value.as_ref()? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl RefreshConfig {
    /// Exchanges `refresh_token` for new tokens. The returned tokens carry the rotated refresh token, or the
    /// old one when the server did not send a new one.
    pub async fn refresh(&self, http: &reqwest::Client, refresh_token: &str) -> Result<OAuthTokens, ConnectorError> {
        self.token_request(http, &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)], Some(refresh_token)).await
    }

    /// Exchanges an authorization code (the end of the consent flow a person went through) for the connection's
    /// first tokens. `redirect_uri` must be the one the authorization request carried. An `invalid_grant` here
    /// means the code was used already, expired (QuickBooks: after 5 minutes) or belongs to another redirect.
    pub async fn exchange_code(&self, http: &reqwest::Client, code: &str, redirect_uri: &str) -> Result<OAuthTokens, ConnectorError> {
        self.token_request(http, &[("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect_uri)], None).await
    }

    /// One token request: the grant's fields plus the client credentials, parsed into tokens. A reply without a
    /// refresh token keeps `keep_refresh` (a refresh that did not rotate).
    async fn token_request(
        &self,
        http: &reqwest::Client,
        grant: &[(&str, &str)],
        keep_refresh: Option<&str>,
    ) -> Result<OAuthTokens, ConnectorError> {
        let mut form: Vec<(&str, &str)> = grant.to_vec();
        let mut request = http.post(&self.token_url).header(reqwest::header::ACCEPT, "application/json");
        match self.client_auth {
            ClientAuth::Basic => {
                request = request.basic_auth(&self.client_id, Some(self.client_secret.expose_secret()));
            }
            ClientAuth::Form => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", self.client_secret.expose_secret()));
            }
        }
        let reply = http::send(request.form(&form)).await?;
        if !reply.is_success() {
            return Err(classify_token_error(&reply));
        }
        let parsed: TokenResponse = serde_json::from_str(&reply.body).map_err(|e| ConnectorError::Transient {
            message: format!("the token endpoint answered {} with an unreadable body: {e}", reply.status),
            outcome_unknown: true,
        })?;
        let now = Utc::now();
        let lifetime = seconds(&parsed.expires_in).unwrap_or(DEFAULT_ACCESS_LIFETIME_SECS);
        Ok(OAuthTokens {
            access_token: parsed.access_token,
            refresh_token: parsed.refresh_token.or_else(|| keep_refresh.map(str::to_string)),
            access_expires_at: now + chrono::TimeDelta::seconds(lifetime),
            refresh_expires_at: seconds(&parsed.x_refresh_token_expires_in)
                .map(|s| now + chrono::TimeDelta::seconds(s)),
        })
    }
}

/// Classifies a failed token request. `invalid_grant` means the refresh token is dead (revoked, expired, or an
/// old one after rotation): only a person re-authorising the connection can fix that, so it says so.
pub fn classify_token_error(reply: &Reply) -> ConnectorError {
    let status = reply.status.as_u16();
    let parsed: Option<serde_json::Value> = serde_json::from_str(&reply.body).ok();
    let field = |k: &str| parsed.as_ref().and_then(|v| v.get(k)).and_then(|v| v.as_str()).map(str::to_string);
    let error = field("error");
    let description = field("error_description").unwrap_or_default();
    match (status, error.as_deref()) {
        (_, Some("invalid_grant")) => ConnectorError::Unauthorized {
            message: format!(
                "the refresh token was rejected (invalid_grant{}): the connection must be re-authorised",
                if description.is_empty() { String::new() } else { format!(": {description}") }
            ),
        },
        (_, Some(code @ ("invalid_client" | "unauthorized_client"))) => ConnectorError::Unauthorized {
            message: format!(
                "the token endpoint refused the client credentials ({code}{}): check the client id and secret",
                if description.is_empty() { String::new() } else { format!(": {description}") }
            ),
        },
        (429, _) => ConnectorError::RateLimited {
            retry_after: http::retry_after(&reply.headers),
            message: "the token endpoint is throttling".into(),
        },
        (s, _) if s >= 500 => ConnectorError::Transient {
            message: format!("the token endpoint failed with status {s}: {}", http::snippet(&reply.body)),
            outcome_unknown: true,
        },
        (s, _) => ConnectorError::Unauthorized {
            message: format!(
                "the token refresh failed with status {s} ({}): the connection may need to be re-authorised",
                error.unwrap_or_else(|| http::snippet(&reply.body))
            ),
        },
    }
}

/// A way to obtain a new access token without a refresh token, such as a signed JWT bearer assertion: whoever
/// holds the signing key can always mint a fresh one, so there is nothing to rotate or lose.
#[async_trait]
pub trait TokenGrant: Send + Sync + std::fmt::Debug {
    /// The token endpoint the grant is presented to (named in logs).
    fn token_url(&self) -> &str;
    /// Presents the grant and returns the new tokens (`refresh_token` is `None`).
    async fn obtain(&self, http: &reqwest::Client) -> Result<OAuthTokens, ConnectorError>;
}

/// Keeps one connection's access token valid.
///
/// The lock is held across the whole refresh (request and save), so a connection never runs two refreshes at
/// once: with rotating refresh tokens, a second concurrent refresh would use a token the first just retired.
/// Across processes the [`TokenStore`]'s refresh turn does the same, and a process that waited for another's
/// refresh re-loads the tokens it saved instead of refreshing again.
pub struct TokenManager {
    store: Arc<dyn TokenStore>,
    refresh: RefreshConfig,
    /// When set, new tokens come from this grant instead of a refresh token (the refresh configuration is then
    /// only named in logs).
    grant: Option<Arc<dyn TokenGrant>>,
    http: reqwest::Client,
    /// The tokens last loaded or saved; `None` until first use.
    current: tokio::sync::Mutex<Option<OAuthTokens>>,
    refreshes: AtomicU64,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("refresh", &self.refresh)
            .field("grant", &self.grant)
            .field("refreshes", &self.refreshes.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl TokenManager {
    pub fn new(store: Arc<dyn TokenStore>, refresh: RefreshConfig, http: reqwest::Client) -> Self {
        TokenManager {
            store,
            refresh,
            grant: None,
            http,
            current: tokio::sync::Mutex::new(None),
            refreshes: AtomicU64::new(0),
        }
    }

    /// A manager whose tokens come from `grant` (no refresh token): it obtains a new access token when the
    /// current one expires or is refused, with the same one-at-a-time locking and save-before-use as a refresh.
    pub fn with_grant(store: Arc<dyn TokenStore>, grant: Arc<dyn TokenGrant>, http: reqwest::Client) -> Self {
        let refresh = RefreshConfig {
            token_url: grant.token_url().to_string(),
            client_id: String::new(),
            client_secret: SecretString::from(String::new()),
            client_auth: ClientAuth::Form,
        };
        TokenManager {
            store,
            refresh,
            grant: Some(grant),
            http,
            current: tokio::sync::Mutex::new(None),
            refreshes: AtomicU64::new(0),
        }
    }

    /// How many refreshes this manager has performed (for metrics and tests).
    pub fn refresh_count(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// A valid access token, refreshed first when it expires within [`EXPIRY_MARGIN`].
    pub async fn access_token(&self) -> Result<String, ConnectorError> {
        let mut guard = self.current.lock().await;
        let tokens = match guard.as_ref() {
            Some(t) => t.clone(),
            None => match self.store.load().await {
                Ok(t) => {
                    *guard = Some(t.clone());
                    t
                }
                // A grant needs nothing stored: the first call obtains the first token.
                Err(_) if self.grant.is_some() => return self.refresh_locked(&mut guard, Need::Expired).await,
                Err(e) => return Err(e),
            },
        };
        if !Need::Expired.still(&tokens) {
            return Ok(tokens.access_token);
        }
        if tokens.refresh_token.is_none() && self.grant.is_none() {
            if tokens.access_expires_at > Utc::now() {
                // Nothing to refresh with; the token still has a few seconds.
                return Ok(tokens.access_token);
            }
            return Err(no_refresh_token());
        }
        self.refresh_locked(&mut guard, Need::Expired).await
    }

    /// Called after the server refused `stale`. Refreshes only if the stored token is still `stale`: when several
    /// calls are refused at once (in this process or in others sharing the store), the first refreshes and the
    /// others get its result.
    pub async fn refresh_after_401(&self, stale: &str) -> Result<String, ConnectorError> {
        let mut guard = self.current.lock().await;
        self.refresh_locked(&mut guard, Need::Refused(stale)).await
    }

    /// Refreshes with the in-process lock held and the store's refresh turn taken, saves the new tokens, and only
    /// then hands out the new access token.
    ///
    /// The stored tokens are read again once the turn is ours: whoever holds the tokens durably is the authority
    /// on what is current, and another process may have refreshed while we waited. If that cured the need, its
    /// tokens are used and no refresh is made; otherwise the refresh uses the newest stored refresh token.
    async fn refresh_locked(
        &self,
        guard: &mut tokio::sync::MutexGuard<'_, Option<OAuthTokens>>,
        need: Need<'_>,
    ) -> Result<String, ConnectorError> {
        for _ in 0..MAX_REFRESH_ROUNDS {
            let turn = self.store.begin_refresh().await?;
            let stored = match self.store.load().await {
                Ok(t) => Some(t),
                // A grant needs nothing stored: the first call obtains the first token.
                Err(_) if self.grant.is_some() => None,
                Err(e) => {
                    if turn == RefreshTurn::Held {
                        self.store.end_refresh().await;
                    }
                    return Err(e);
                }
            };
            if let Some(tokens) = stored.as_ref().filter(|t| !need.still(t)) {
                if turn == RefreshTurn::Held {
                    self.store.end_refresh().await;
                }
                tracing::debug!(token_url = %self.refresh.token_url, "tokens were refreshed by another refresher; using them");
                let token = tokens.access_token.clone();
                **guard = stored;
                return Ok(token);
            }
            if turn == RefreshTurn::OtherFinished {
                // The other refresher did not cure it (it failed, or refreshed before our token was refused): take
                // the turn ourselves.
                continue;
            }
            let refreshed = self.refresh_and_save(stored.as_ref()).await;
            self.store.end_refresh().await;
            let fresh = refreshed?;
            let token = fresh.access_token.clone();
            **guard = Some(fresh);
            return Ok(token);
        }
        Err(ConnectorError::Transient {
            message: format!(
                "the tokens of {} kept going stale while other refreshers held the refresh turn; will try again",
                self.refresh.token_url
            ),
            outcome_unknown: false,
        })
    }

    /// Obtains new tokens (refresh token or grant) and saves them before anyone may use them.
    async fn refresh_and_save(&self, stored: Option<&OAuthTokens>) -> Result<OAuthTokens, ConnectorError> {
        let fresh = match &self.grant {
            Some(grant) => grant.obtain(&self.http).await?,
            None => {
                let refresh_token = stored.and_then(|t| t.refresh_token.as_deref()).ok_or_else(no_refresh_token)?;
                self.refresh.refresh(&self.http, refresh_token).await?
            }
        };
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        self.store.save(&fresh).await?;
        tracing::info!(token_url = %self.refresh.token_url, "access token refreshed and saved");
        Ok(fresh)
    }

    /// Sends a request built by `build` with the current access token; when the answer says the token was
    /// refused (`refused` decides, per system), refreshes once and sends it again. The second answer is returned
    /// as it is, for the caller to classify.
    pub async fn send_with_refresh<B, R>(&self, build: B, refused: R) -> Result<Reply, ConnectorError>
    where
        B: Fn(&str) -> reqwest::RequestBuilder,
        R: Fn(&Reply) -> bool,
    {
        let token = self.access_token().await?;
        let reply = http::send(build(&token)).await?;
        if !refused(&reply) {
            return Ok(reply);
        }
        tracing::debug!(status = %reply.status, "access token refused; refreshing once");
        let token = self.refresh_after_401(&token).await?;
        http::send(build(&token)).await
    }
}

fn no_refresh_token() -> ConnectorError {
    ConnectorError::Unauthorized {
        message: "the access token expired and there is no refresh token: the connection must be re-authorised".into(),
    }
}

/// Tokens held in memory, for tests and the demo. Counts saves so tests can prove how many refreshes happened.
#[derive(Default)]
pub struct MemoryTokenStore {
    tokens: std::sync::Mutex<Option<OAuthTokens>>,
    saves: AtomicU64,
}

impl std::fmt::Debug for MemoryTokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTokenStore")
            .field("tokens", &*self.tokens.lock().unwrap_or_else(|e| e.into_inner()))
            .field("saves", &self.save_count())
            .finish()
    }
}

impl MemoryTokenStore {
    pub fn new(tokens: OAuthTokens) -> Self {
        MemoryTokenStore { tokens: std::sync::Mutex::new(Some(tokens)), saves: AtomicU64::new(0) }
    }

    /// Tokens for a freshly authorised connection whose access token is valid for `valid_for`.
    pub fn with_tokens(access_token: &str, refresh_token: &str, valid_for: chrono::TimeDelta) -> Self {
        Self::new(OAuthTokens {
            access_token: access_token.to_string(),
            refresh_token: Some(refresh_token.to_string()),
            access_expires_at: Utc::now() + valid_for,
            refresh_expires_at: None,
        })
    }

    /// How many times [`TokenStore::save`] was called.
    pub fn save_count(&self) -> u64 {
        self.saves.load(Ordering::SeqCst)
    }

    /// The tokens currently held.
    pub fn current(&self) -> Option<OAuthTokens> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait]
impl TokenStore for MemoryTokenStore {
    async fn load(&self) -> Result<OAuthTokens, ConnectorError> {
        self.current().ok_or_else(|| ConnectorError::Unauthorized {
            message: "no tokens are stored for this connection: it must be authorised first".into(),
        })
    }

    async fn save(&self, tokens: &OAuthTokens) -> Result<(), ConnectorError> {
        *self.tokens.lock().unwrap_or_else(|e| e.into_inner()) = Some(tokens.clone());
        self.saves.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use serde_json::json;
    use std::collections::HashMap;

    /// What the fake token endpoint saw: the Authorization header and the form.
    type Seen = Arc<std::sync::Mutex<Vec<(Option<String>, HashMap<String, String>)>>>;

    async fn token_endpoint(
        State(seen): State<Seen>,
        headers: HeaderMap,
        axum::Form(form): axum::Form<HashMap<String, String>>,
    ) -> axum::response::Response {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
        seen.lock().unwrap().push((auth, form.clone()));
        match form.get("refresh_token").map(String::as_str) {
            Some("good") => axum::Json(json!({
                "access_token": "new-access", "refresh_token": "rotated", "token_type": "bearer",
                "expires_in": 3600, "x_refresh_token_expires_in": 8726400
            }))
            .into_response(),
            Some("keep") => axum::Json(json!({"access_token": "new-access", "token_type": "Bearer"})).into_response(),
            Some("boom") => (StatusCode::BAD_GATEWAY, "upstream down").into_response(),
            _ => (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "invalid_grant", "error_description": "Token invalid"})),
            )
                .into_response(),
        }
    }

    async fn serve() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let app = axum::Router::new().route("/token", axum::routing::post(token_endpoint)).with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/token"), seen)
    }

    fn config(url: &str, client_auth: ClientAuth) -> RefreshConfig {
        RefreshConfig { token_url: url.into(), client_id: "cid".into(), client_secret: "csecret".into(), client_auth }
    }

    fn expiring(refresh: &str) -> Arc<MemoryTokenStore> {
        Arc::new(MemoryTokenStore::with_tokens("old-access", refresh, chrono::TimeDelta::seconds(30)))
    }

    #[tokio::test]
    async fn refresh_with_basic_auth_saves_the_rotated_token_first() {
        let (url, seen) = serve().await;
        let store = expiring("good");
        let tm = TokenManager::new(store.clone(), config(&url, ClientAuth::Basic), http::client());
        assert_eq!(tm.access_token().await.unwrap(), "new-access");
        let saved = store.current().unwrap();
        assert_eq!(saved.refresh_token.as_deref(), Some("rotated"));
        assert!(saved.refresh_expires_at.is_some());
        assert_eq!(store.save_count(), 1);
        // Cached now: no second refresh.
        assert_eq!(tm.access_token().await.unwrap(), "new-access");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        // base64("cid:csecret")
        assert_eq!(seen[0].0.as_deref(), Some("Basic Y2lkOmNzZWNyZXQ="));
        assert_eq!(seen[0].1.get("grant_type").map(String::as_str), Some("refresh_token"));
        assert!(!seen[0].1.contains_key("client_secret"));
    }

    #[tokio::test]
    async fn form_client_auth_and_missing_refresh_token_keeps_the_old_one() {
        let (url, seen) = serve().await;
        let store = expiring("keep");
        let tm = TokenManager::new(store.clone(), config(&url, ClientAuth::Form), http::client());
        assert_eq!(tm.access_token().await.unwrap(), "new-access");
        assert_eq!(store.current().unwrap().refresh_token.as_deref(), Some("keep"));
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].0, None);
        assert_eq!(seen[0].1.get("client_id").map(String::as_str), Some("cid"));
        assert_eq!(seen[0].1.get("client_secret").map(String::as_str), Some("csecret"));
    }

    #[tokio::test]
    async fn refresh_after_401_only_refreshes_a_stale_token() {
        let (url, seen) = serve().await;
        let store = Arc::new(MemoryTokenStore::with_tokens("current", "good", chrono::TimeDelta::hours(1)));
        let tm = TokenManager::new(store.clone(), config(&url, ClientAuth::Basic), http::client());
        // Someone else already replaced "older": hand out the stored token, no refresh.
        assert_eq!(tm.refresh_after_401("older").await.unwrap(), "current");
        assert!(seen.lock().unwrap().is_empty());
        // Concurrent refusals of the same token: one refresh.
        let (a, b, c) = tokio::join!(
            tm.refresh_after_401("current"),
            tm.refresh_after_401("current"),
            tm.refresh_after_401("current")
        );
        assert_eq!(
            (a.unwrap(), b.unwrap(), c.unwrap()),
            ("new-access".into(), "new-access".into(), "new-access".into())
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert_eq!(store.save_count(), 1);
    }

    #[tokio::test]
    async fn invalid_grant_and_server_errors_are_classified() {
        let (url, _) = serve().await;
        let tm = TokenManager::new(expiring("revoked"), config(&url, ClientAuth::Basic), http::client());
        match tm.access_token().await.unwrap_err() {
            ConnectorError::Unauthorized { message } => {
                assert!(message.contains("invalid_grant: Token invalid"), "{message}");
                assert!(message.contains("must be re-authorised"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let tm = TokenManager::new(expiring("boom"), config(&url, ClientAuth::Basic), http::client());
        assert!(matches!(tm.access_token().await.unwrap_err(), ConnectorError::Transient { .. }));
    }

    /// A store that refuses to save: the new access token must not be handed out.
    struct FailingStore(MemoryTokenStore);

    #[async_trait]
    impl TokenStore for FailingStore {
        async fn load(&self) -> Result<OAuthTokens, ConnectorError> {
            self.0.load().await
        }
        async fn save(&self, _tokens: &OAuthTokens) -> Result<(), ConnectorError> {
            Err(ConnectorError::Transient { message: "disk full".into(), outcome_unknown: false })
        }
    }

    #[tokio::test]
    async fn a_failed_save_withholds_the_new_access_token() {
        let (url, _) = serve().await;
        let store = Arc::new(FailingStore(MemoryTokenStore::with_tokens("old", "good", chrono::TimeDelta::seconds(5))));
        let tm = TokenManager::new(store, config(&url, ClientAuth::Basic), http::client());
        let err = tm.access_token().await.unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
    }

    /// A store shared with another (simulated) process that refreshes while this one waits for the turn: on the
    /// first `begin_refresh` it saves the other process's tokens and reports that it finished.
    struct SharedWithAnother {
        inner: MemoryTokenStore,
        other_refreshes: std::sync::Mutex<Option<OAuthTokens>>,
        turns: AtomicU64,
        ended: AtomicU64,
    }

    #[async_trait]
    impl TokenStore for SharedWithAnother {
        async fn load(&self) -> Result<OAuthTokens, ConnectorError> {
            self.inner.load().await
        }
        async fn save(&self, tokens: &OAuthTokens) -> Result<(), ConnectorError> {
            self.inner.save(tokens).await
        }
        async fn begin_refresh(&self) -> Result<RefreshTurn, ConnectorError> {
            let theirs = self.other_refreshes.lock().unwrap().take();
            if let Some(theirs) = theirs {
                self.inner.save(&theirs).await?;
                return Ok(RefreshTurn::OtherFinished);
            }
            self.turns.fetch_add(1, Ordering::SeqCst);
            Ok(RefreshTurn::Held)
        }
        async fn end_refresh(&self) {
            self.ended.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn shared(theirs: Option<OAuthTokens>) -> Arc<SharedWithAnother> {
        Arc::new(SharedWithAnother {
            inner: MemoryTokenStore::with_tokens("old-access", "good", chrono::TimeDelta::seconds(5)),
            other_refreshes: std::sync::Mutex::new(theirs),
            turns: AtomicU64::new(0),
            ended: AtomicU64::new(0),
        })
    }

    #[tokio::test]
    async fn a_refresh_another_process_made_while_we_waited_is_used_not_repeated() {
        let (url, seen) = serve().await;
        let theirs = OAuthTokens {
            access_token: "their-access".into(),
            refresh_token: Some("their-rotated".into()),
            access_expires_at: Utc::now() + chrono::TimeDelta::hours(1),
            refresh_expires_at: None,
        };
        let store = shared(Some(theirs));
        let tm = TokenManager::new(store.clone(), config(&url, ClientAuth::Basic), http::client());
        assert_eq!(tm.access_token().await.unwrap(), "their-access");
        assert!(seen.lock().unwrap().is_empty(), "no second refresh");
        assert_eq!((tm.refresh_count(), store.turns.load(Ordering::SeqCst)), (0, 0));
        // Cached from then on.
        assert_eq!(tm.access_token().await.unwrap(), "their-access");
    }

    #[tokio::test]
    async fn a_refresh_that_did_not_cure_the_need_is_followed_by_ours_under_the_turn() {
        let (url, seen) = serve().await;
        // The other process saved tokens that are already about to expire (its refresh did not help us).
        let stale = OAuthTokens {
            access_token: "their-short".into(),
            refresh_token: Some("good".into()),
            access_expires_at: Utc::now() + chrono::TimeDelta::seconds(1),
            refresh_expires_at: None,
        };
        let store = shared(Some(stale));
        let tm = TokenManager::new(store.clone(), config(&url, ClientAuth::Basic), http::client());
        assert_eq!(tm.access_token().await.unwrap(), "new-access");
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert_eq!(store.turns.load(Ordering::SeqCst), 1);
        assert_eq!(store.ended.load(Ordering::SeqCst), 1, "the turn is given back");
        assert_eq!(store.inner.current().unwrap().refresh_token.as_deref(), Some("rotated"));

        // A failed refresh gives the turn back too.
        let store = shared(None);
        let tm = TokenManager::new(store.clone(), config(&format!("{url}-missing"), ClientAuth::Basic), http::client());
        assert!(tm.access_token().await.is_err());
        assert_eq!((store.turns.load(Ordering::SeqCst), store.ended.load(Ordering::SeqCst)), (1, 1));
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let t = OAuthTokens {
            access_token: "sekrit-access".into(),
            refresh_token: Some("sekrit-refresh".into()),
            access_expires_at: Utc::now(),
            refresh_expires_at: None,
        };
        let store = MemoryTokenStore::new(t.clone());
        let cfg = config("http://x", ClientAuth::Basic);
        for text in [format!("{t:?}"), format!("{store:?}"), format!("{cfg:?}")] {
            assert!(!text.contains("sekrit") && !text.contains("csecret"), "{text}");
        }
    }
}
