//! A world for the platform API tests: a QuickBooks sandbox on loopback, a SQLite store in a temp dir, the
//! platform API served over real HTTP, and its worker running in the background.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use ledgerlink_connectors::auth::{ClientAuth, OAuthTokens, RefreshConfig};
use ledgerlink_platform::integration::{QuickbooksAppKeys, new_connection};
use ledgerlink_platform::{Platform, PlatformOptions};
use ledgerlink_sandbox::quickbooks;
use ledgerlink_store::{MasterKey, SecretCipher, Store};
use serde_json::{Value, json};

pub struct World {
    pub _dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    pub platform: Platform,
    pub base: String,
    pub http: reqwest::Client,
    pub qbo: ledgerlink_sandbox::RunningSandbox,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub fn options() -> PlatformOptions {
    PlatformOptions {
        worker_id: "test-worker".into(),
        retry_base: chrono::Duration::milliseconds(100),
        retry_max: chrono::Duration::seconds(2),
        idle_wait: Duration::from_millis(50),
        payment_poll: Duration::from_millis(200),
        webhook_timeout: Duration::from_secs(5),
        ..PlatformOptions::default()
    }
}

pub async fn world() -> World {
    world_with(options()).await
}

pub async fn world_with(options: PlatformOptions) -> World {
    let dir = tempfile::tempdir().unwrap();
    let cipher = SecretCipher::new(MasterKey::load(dir.path(), None).unwrap());
    let store = ledgerlink_store::open(&format!("sqlite://{}/platform.sqlite", dir.path().display()), cipher).await.unwrap();
    let platform = Platform::new(store.clone(), options);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = ledgerlink_platform::api::router(platform.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (stop, rx) = tokio::sync::watch::channel(false);
    {
        let p = platform.clone();
        tokio::spawn(async move { p.run(rx).await });
    }
    let qbo = quickbooks::start(quickbooks::QuickbooksOptions::default()).await.unwrap();
    World { _dir: dir, store, platform, base: format!("http://{addr}"), http: reqwest::Client::new(), qbo, stop }
}

impl World {
    /// A workspace and a token for it.
    pub async fn workspace(&self, name: &str) -> (String, String) {
        let ws = self.platform.create_workspace(name).await.unwrap();
        let token = self.platform.issue_token(&ws.id, "tests").await.unwrap();
        (ws.id, token.token)
    }

    /// The sandbox's app as the UI is configured with it.
    pub fn app(&self) -> QuickbooksAppKeys {
        let s = |k: &str| self.qbo.info_str(k).to_string();
        QuickbooksAppKeys {
            api_base: s("api_base"),
            token_url: s("token_url"),
            revoke_url: format!("{}/v2/oauth2/tokens/revoke", s("base_url")),
            client_id: s("client_id"),
            client_secret: s("client_secret"),
            verifier_token: Some(s("verifier_token")),
        }
    }

    /// A fresh grant of the sandbox company, as the consent page's redirect would hand the UI a code: the code is
    /// exchanged at the token endpoint. Each call is a grant of its own (revoking one leaves the others working).
    pub async fn sign_in(&self) -> OAuthTokens {
        let minted: Value = self
            .http
            .post(format!("{}/sandbox/admin/authorization-codes", self.qbo.base_url))
            .json(&json!({"redirect_uri": "http://127.0.0.1/callback"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let app = self.app();
        let refresh = RefreshConfig {
            token_url: app.token_url.clone(),
            client_id: app.client_id.clone(),
            client_secret: app.client_secret.clone().into(),
            client_auth: ClientAuth::Basic,
        };
        refresh.exchange_code(&self.http, minted["code"].as_str().unwrap(), "http://127.0.0.1/callback").await.unwrap()
    }

    /// Signs in anew and stores the tokens the way the UI's OAuth callback does, then connects.
    pub async fn connect(&self, ws: &str) {
        let realm = self.qbo.info_str("realm_id").to_string();
        let tokens = self.sign_in().await;
        let conn = new_connection(ws, &realm, "Juniper & Finch Landscape Design", &self.app(), &tokens);
        let conn = ledgerlink_store::NewConnection { config: with_batching_off(conn.config), ..conn };
        self.store.put_connection(&conn).await.unwrap();
        self.platform.connect(ws, &conn.name, "Juniper & Finch Landscape Design", &realm).await.unwrap();
    }

    /// A direct QuickBooks client, as the finance team using QuickBooks itself: a sign-in of its own, so it keeps
    /// working whatever happens to the workspace's.
    pub async fn quickbooks(&self, _ws: &str) -> Arc<dyn ledgerlink_connectors::Connector> {
        let conn = ledgerlink_engine::connections::from_sandbox_info("finance-team", &self.qbo.info).unwrap();
        let conn = ledgerlink_store::NewConnection { config: with_batching_off(conn.config), ..conn };
        let conn = self.store.put_connection(&conn).await.unwrap();
        ledgerlink_engine::connections::build_connector(self.store.clone(), &conn, reqwest::Client::new()).unwrap()
    }

    pub async fn post(&self, token: &str, path: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).bearer_auth(token).json(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let resp = self.http.get(format!("{}{path}", self.base)).bearer_auth(token).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn with_batching_off(mut config: Value) -> Value {
    // One create per call keeps the tests' QuickBooks call log simple to read; batching is the engine's concern.
    config["batch_writes"] = json!(false);
    config
}

/// Waits until `check` returns Some, polling every 50 ms, failing after `secs` seconds with `what`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {secs}s waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a webhook receiver saw: each request's headers and raw body.
#[derive(Clone, Default)]
pub struct Received(pub Arc<Mutex<Vec<(HeaderMap, Bytes)>>>);

/// A tiny receiving platform on loopback. It answers with the statuses in `answers` in turn (then 200).
pub async fn receiver(answers: Vec<u16>) -> (String, Received) {
    let received = Received::default();
    let answers = Arc::new(Mutex::new(answers.into_iter()));
    let r = received.clone();
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let r = r.clone();
            let answers = answers.clone();
            async move {
                r.0.lock().unwrap().push((headers, body));
                let code = answers.lock().unwrap().next().unwrap_or(200);
                StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hooks"), received)
}
