//! The admin web UI: server-rendered HTML (askama templates), a little CSS, no JavaScript framework.
//!
//! Layout:
//! - [`session`]: sign-in with argon2 password hashes, server-side sessions in the store (idle and absolute
//!   expiry), the session cookie, and the [`session::Admin`] / [`session::Posted`] extractors. Every POST goes
//!   through `Posted`, which checks the session's CSRF token in constant time before the handler runs.
//! - [`integrations`]: Settings > Integrations, the QuickBooks OAuth connect flow, Test Connection, Disconnect;
//!   [`manage`]: the Manage page (what syncs, from the company's own lists) and the reconciliation pass;
//!   [`records`]: the platform's invoices with their sync and payment status.
//! - [`salesforce`]: the Salesforce card's Connect (OAuth web-server flow), Test Connection and Disconnect.
//! - [`ops`]: flows, runs, jobs, the review queue, the audit log, and the activity chart ([`chart`]).
//! - [`pages`]: the shared layout and the error page, worded for a finance admin.
//! - [`demo`]: one-time sign-in links for `ledgerlink demo` (the route exists only in demo mode).
//!
//! [`router`] returns an axum `Router` the HTTP server merges next to its API. Pages live at the root
//! (`/settings/integrations`, `/jobs`, …); the stylesheet at `/static/app.css`.

pub mod chart;
pub mod demo;
pub mod integrations;
pub mod manage;
pub mod records;
pub mod salesforce;
pub mod ops;
pub mod pages;
pub mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Router;
use axum::routing::{get, post};
use chrono::{DateTime, Duration, Utc};
use ledgerlink_engine::Engine;
use secrecy::SecretString;

/// The QuickBooks app (Intuit developer app) users connect through: where its consent page is, and its client
/// credentials. The redirect URI is this server's `/oauth/quickbooks/callback`.
#[derive(Clone)]
pub struct QuickbooksApp {
    /// Intuit's `https://appcenter.intuit.com/connect/oauth2`, or the sandbox's `/connect/oauth2`.
    pub authorize_url: String,
    pub token_url: String,
    /// `…/v3` of the API the connected company is reached at.
    pub api_base: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Where Disconnect revokes the grant (Intuit: `https://developer.api.intuit.com/v2/oauth2/tokens/revoke`).
    pub revoke_url: String,
    /// The app's webhook verifier token, when the app's webhooks point at this server
    /// (`/webhooks/platform/quickbooks`): payments then come back within seconds instead of at the next poll.
    pub verifier_token: Option<SecretString>,
}

impl std::fmt::Debug for QuickbooksApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuickbooksApp")
            .field("authorize_url", &self.authorize_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl QuickbooksApp {
    /// The app as a QuickBooks sandbox's startup line describes it (`ledgerlink sandbox quickbooks`, the demo).
    pub fn from_sandbox_info(info: &serde_json::Value) -> anyhow::Result<QuickbooksApp> {
        let s = |k: &str| {
            info.get(k)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| anyhow::anyhow!("the QuickBooks sandbox's startup line has no `{k}`"))
        };
        Ok(QuickbooksApp {
            authorize_url: format!("{}/connect/oauth2", s("base_url")?),
            token_url: s("token_url")?,
            api_base: s("api_base")?,
            client_id: s("client_id")?,
            client_secret: SecretString::from(s("client_secret")?),
            revoke_url: format!("{}/v2/oauth2/tokens/revoke", s("base_url")?),
            verifier_token: s("verifier_token").ok().map(SecretString::from),
        })
    }

    /// What the stored connection keeps of the app.
    pub fn keys(&self) -> ledgerlink_platform::integration::QuickbooksAppKeys {
        use secrecy::ExposeSecret;
        ledgerlink_platform::integration::QuickbooksAppKeys {
            api_base: self.api_base.clone(),
            token_url: self.token_url.clone(),
            revoke_url: self.revoke_url.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.expose_secret().to_string(),
            verifier_token: self.verifier_token.as_ref().map(|v| v.expose_secret().to_string()),
        }
    }
}

/// How the UI runs.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The QuickBooks app behind the Connect button; without one the card explains that none is configured.
    pub quickbooks: Option<QuickbooksApp>,
    /// The Salesforce connected app behind the Salesforce card's Connect button.
    pub salesforce: Option<salesforce::SalesforceApp>,
    /// This server as browsers reach it (`https://ledgerlink.example.com`), for the OAuth redirect URI. When
    /// unset, the request's `Host` is used (fine on loopback and behind a proxy that keeps the host).
    pub public_url: Option<String>,
    /// A session ends after this long without a request…
    pub idle_timeout: Duration,
    /// …and after this long in any case.
    pub absolute_timeout: Duration,
    /// Marks the session cookie `Secure` (send only over https). On whenever `public_url` is https.
    pub secure_cookie: bool,
    /// A banner across every page (the demo says it is signed in as a demo admin).
    pub banner: Option<String>,
    /// Shifts the UI's clock (session expiry) forward; tests use it to pass an expiry without waiting.
    pub clock: UiClock,
    /// Demo mode: `/demo-sign-in?token=…` signs in as the demo admin with a one-time link. `None` (every real
    /// deployment) leaves the route out entirely.
    pub demo: Option<demo::DemoSignIn>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            quickbooks: None,
            salesforce: None,
            public_url: None,
            idle_timeout: Duration::minutes(30),
            absolute_timeout: Duration::hours(12),
            secure_cookie: false,
            banner: None,
            clock: UiClock::default(),
            demo: None,
        }
    }
}

/// The UI's time source: the engine's clock plus an offset that only tests move.
#[derive(Debug, Clone, Default)]
pub struct UiClock(Arc<AtomicI64>);

impl UiClock {
    pub fn now(&self) -> DateTime<Utc> {
        ledgerlink_engine::now() + Duration::milliseconds(self.0.load(Ordering::Relaxed))
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.num_milliseconds(), Ordering::Relaxed);
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct Web {
    pub engine: Engine,
    /// The platform connector: workspaces, settings, the QuickBooks connection's state, pushed records.
    pub platform: ledgerlink_platform::Platform,
    pub config: Arc<WebConfig>,
    pub http: reqwest::Client,
}

impl Web {
    pub fn new(engine: Engine, platform: ledgerlink_platform::Platform, config: WebConfig) -> anyhow::Result<Web> {
        if engine.store.web().is_none() {
            anyhow::bail!("this store has no place for web sessions; the web UI needs the SQLite or PostgreSQL store");
        }
        Ok(Web { engine, platform, config: Arc::new(config), http: ledgerlink_connectors::http::client() })
    }

    /// The store's web part ([`Web::new`] made sure there is one).
    pub fn web_store(&self) -> &dyn ledgerlink_store::WebStore {
        self.engine.store.web().expect("checked in Web::new")
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.config.clock.now()
    }
}

const APP_CSS: &str = include_str!("../static/app.css");

/// The UI's routes, ready to merge into the server's router.
pub fn router(web: Web) -> Router {
    let demo_mode = web.config.demo.is_some();
    let router = Router::new()
        .route("/", get(ops::dashboard))
        .route("/static/app.css", get(|| async { ([(axum::http::header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS) }))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/settings/integrations", get(integrations::index))
        .route("/settings/integrations/quickbooks/connect", post(integrations::connect))
        .route("/oauth/quickbooks/callback", get(integrations::callback))
        .route("/settings/integrations/quickbooks", get(manage::manage).post(manage::save))
        .route("/settings/integrations/quickbooks/reconcile", get(manage::reconcile).post(manage::confirm))
        .route("/invoices", get(records::invoices))
        .route("/settings/integrations/quickbooks/test", post(integrations::test_connection))
        .route("/settings/integrations/quickbooks/disconnect", get(integrations::disconnect_confirm).post(integrations::disconnect))
        .route("/settings/integrations/salesforce/connect", post(salesforce::connect))
        .route("/oauth/salesforce/callback", get(salesforce::callback))
        .route("/settings/integrations/salesforce/test", post(salesforce::test_connection))
        .route("/settings/integrations/salesforce/disconnect", get(salesforce::disconnect_confirm).post(salesforce::disconnect))
        .route("/flows", get(ops::flows))
        .route("/flows/{name}/switch", post(ops::flow_switch))
        .route("/flows/{name}/run", post(ops::flow_run))
        .route("/runs", get(ops::runs))
        .route("/jobs", get(ops::jobs))
        .route("/jobs/{id}/retry", post(ops::job_retry))
        .route("/jobs/{id}/replay", post(ops::job_replay))
        .route("/reviews", get(ops::reviews))
        .route("/reviews/{id}/resolve", post(ops::review_resolve))
        .route("/audit", get(ops::audit))
        .route("/webhooks", get(ops::webhooks))
        .route("/reports", get(ops::reports));
    let router = if demo_mode { router.route("/demo-sign-in", get(demo::sign_in)) } else { router };
    router.with_state(web)
}

/// Adds an administrator of `workspace` (the CLI and the demo use this). The password is stored as an argon2
/// hash only.
pub async fn create_admin(
    store: &dyn ledgerlink_store::Store,
    workspace: &str,
    email: &str,
    display_name: &str,
    password: &str,
) -> anyhow::Result<ledgerlink_store::WebUser> {
    let web = store.web().ok_or_else(|| anyhow::anyhow!("this store has no place for web users"))?;
    let email = session::normalize_email(email)?;
    if password.chars().count() < 8 {
        anyhow::bail!("the password must have at least 8 characters");
    }
    let hash = session::hash_password(password)?;
    let user = web
        .create_web_user(
            &ledgerlink_store::NewWebUser {
                workspace: workspace.to_string(),
                email,
                display_name: display_name.to_string(),
                password_hash: hash,
            },
            ledgerlink_engine::now(),
        )
        .await?;
    Ok(user)
}
