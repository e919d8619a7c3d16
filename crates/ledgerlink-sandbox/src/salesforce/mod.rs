//! Salesforce sandbox: a stateful org speaking the REST API's wire format.
//!
//! Layout: this module holds the options, [`start`], the router and the request guard (API version check, Bearer
//! session, daily API budget and `Sforce-Limit-Info`, injected faults, call log). [`serve`] is the HTTP(S) accept
//! loop (TLS with a certificate generated at start, dropped connections). [`oauth`] serves the token, authorize and
//! revoke endpoints (web-server, refresh, password and JWT bearer grants), [`api`] the `/services/data/vXX.X/…`
//! resources, [`composite`] sObject Collections and Composite, [`admin`] the loopback-only `/sandbox/admin/…`
//! controls. Behind them, [`state`] is the persisted org, [`objects`] the schema, [`records`] the write rules and
//! rendering, [`soql`] the query language, [`seed`] the sample org, [`value`] and [`error`] the wire-level values and
//! error shapes.
//!
//! Faults (`/sandbox/admin/faults`, shared model in [`crate::faults`]) strike only `/services/data/…` requests, after
//! the session check: a throttle is Salesforce's 403 `REQUEST_LIMIT_EXCEEDED` with the concurrent-request message
//! (Salesforce has no 429 on REST; the daily budget says `TotalRequests Limit exceeded.` instead, so a client can tell
//! a passing throttle from a spent day), server errors are 500/502/503 `UNKNOWN_EXCEPTION`, an expired token is 401
//! `INVALID_SESSION_ID` (the session is really ended, so the client must refresh), slow answers sleep first, and
//! dropped connections close the socket with no answer at all — before or, with `after_write`, after the request
//! was applied.

pub mod admin;
pub mod api;
pub mod composite;
pub mod error;
pub mod oauth;
pub mod objects;
pub mod records;
pub mod seed;
pub mod serve;
pub mod soql;
pub mod state;
pub mod value;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Duration;
use serde_json::json;
use tokio::sync::oneshot;

use crate::RunningSandbox;
use crate::clock::Clock;
use crate::faults::{Fault, Faults};
use error::SfError;
use state::{CallLog, Org};

/// The API version the startup line advertises.
pub const API_VERSION: &str = "59.0";
/// The oldest API version served.
pub const MIN_API_VERSION: u32 = 50;
/// The newest version listed by `GET /services/data/` (newer ones are still accepted).
pub const MAX_LISTED_VERSION: u32 = 62;
/// The default daily allowance reported in `Sforce-Limit-Info` and enforced with `REQUEST_LIMIT_EXCEEDED`.
pub const DAILY_API_LIMIT: u64 = 100_000;

/// How to run the Salesforce sandbox.
#[derive(Debug, Clone)]
pub struct SalesforceOptions {
    /// 0 = any free port; always bound to 127.0.0.1.
    pub port: u16,
    /// Loaded at start if it exists; rewritten (temporary file + rename) after every write.
    pub state_file: Option<PathBuf>,
    /// Seed the sample org (users, accounts, products, opportunities).
    pub seed: bool,
    pub access_token_ttl: Duration,
    pub clock: Clock,
    /// Rows per query batch before `nextRecordsUrl` (Salesforce: 2000); small values exercise paging in tests.
    pub query_page_size: usize,
    /// Serve https with a self-signed certificate generated at start (its PEM path is in the startup line).
    pub tls: bool,
    /// API calls allowed per sandbox-clock UTC day before 403 `REQUEST_LIMIT_EXCEEDED`.
    pub daily_api_limit: u64,
}

impl Default for SalesforceOptions {
    fn default() -> Self {
        SalesforceOptions {
            port: 0,
            state_file: None,
            seed: true,
            access_token_ttl: Duration::hours(2),
            clock: Clock::new(),
            query_page_size: 2000,
            tls: false,
            daily_api_limit: DAILY_API_LIMIT,
        }
    }
}

/// Shared by every handler.
pub struct App {
    org: Mutex<Org>,
    pub clock: Clock,
    pub base_url: String,
    pub state_file: Option<PathBuf>,
    pub access_token_ttl: Duration,
    query_page_size: AtomicUsize,
    daily_api_limit: AtomicU64,
    pub seed: bool,
    pub faults: Faults,
}

impl App {
    pub fn page_size(&self) -> usize {
        self.query_page_size.load(Ordering::SeqCst)
    }

    pub fn set_page_size(&self, n: usize) {
        self.query_page_size.store(n, Ordering::SeqCst);
    }

    pub fn daily_limit(&self) -> u64 {
        self.daily_api_limit.load(Ordering::SeqCst)
    }

    pub fn set_daily_limit(&self, n: u64) {
        self.daily_api_limit.store(n, Ordering::SeqCst);
    }

    /// The data routes without the guard, for Composite subrequests: the composite call was counted and drew its
    /// fault once, its subrequests are not counted again.
    pub fn inner_router(self: &Arc<Self>) -> Router {
        data_routes().with_state(self.clone())
    }

    /// The org, locked. A panic in another handler must not brick the sandbox, so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, Org> {
        self.org.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Saves the org if a state file was configured; a failure is logged, not fatal to the request.
    pub fn persist(&self, org: &Org) {
        if let Some(path) = &self.state_file
            && let Err(e) = org.save(path)
        {
            tracing::error!(error = %e, "salesforce sandbox: saving the state file failed");
        }
    }
}

/// The authenticated caller of an API request.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    /// As written in the path, e.g. `v59.0`.
    pub version: String,
}

/// Parses `v59.0` → 59 when the version is one Salesforce would serve.
fn api_version_number(segment: &str) -> Option<u32> {
    let (major, minor) = segment.strip_prefix('v')?.split_once('.')?;
    let major: u32 = major.parse().ok()?;
    (minor == "0" && (MIN_API_VERSION..1000).contains(&major)).then_some(major)
}

fn limit_header(org: &Org, app: &App) -> HeaderValue {
    let used = org.usage_today(app.clock.now());
    HeaderValue::from_str(&format!("api-usage={used}/{}", app.daily_limit()))
        .unwrap_or(HeaderValue::from_static("api-usage=0/100000"))
}

/// The answer when the day's API budget is spent.
fn total_requests_exceeded() -> SfError {
    SfError::new(
        StatusCode::FORBIDDEN,
        "REQUEST_LIMIT_EXCEEDED",
        "TotalRequests Limit exceeded.",
    )
}

/// A 5xx as Salesforce's servers send it.
fn server_error(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let error_id = state::random_token(9);
    SfError::new(
        status,
        "UNKNOWN_EXCEPTION",
        format!("An unexpected error occurred. Please include this ErrorId if you contact support: {error_id}"),
    )
    .into_response()
}

/// Version check, Bearer session and call counting for `/services/data/vXX.X/…`.
async fn api_guard(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let version = req
        .uri()
        .path()
        .strip_prefix("/services/data/")
        .and_then(|r| r.split('/').next())
        .unwrap_or_default()
        .to_string();
    let session = {
        let mut org = app.lock();
        if api_version_number(&version).is_none() {
            Err(SfError::not_found())
        } else {
            let token = req
                .headers()
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("OAuth "))
                })
                .map(str::trim)
                .unwrap_or_default();
            let now = app.clock.now();
            match org.access_tokens.get(token) {
                Some(t) if t.expires_at > now => {
                    let user_id = t.user_id.clone();
                    if org.usage_today(now) >= app.daily_limit() {
                        Err(total_requests_exceeded())
                    } else {
                        org.count_call(now);
                        match app.faults.draw() {
                            Fault::ExpireToken => {
                                // The session really ends: a retry with the same token fails too.
                                org.access_tokens.remove(token);
                                Err(SfError::invalid_session())
                            }
                            fault => Ok((
                                Session {
                                    user_id,
                                    version: version.clone(),
                                },
                                fault,
                            )),
                        }
                    }
                }
                _ => Err(SfError::invalid_session()),
            }
        }
    };
    let mut resp = match session {
        Ok((s, fault)) => {
            req.extensions_mut().insert(s);
            let dropper = req.extensions().get::<serve::DropConnection>().cloned();
            match fault {
                Fault::Throttle => SfError::new(
                    StatusCode::FORBIDDEN,
                    "REQUEST_LIMIT_EXCEEDED",
                    "ConcurrentPerOrgLongTxn Limit exceeded.",
                )
                .into_response(),
                Fault::ServerError {
                    status,
                    after_write,
                } => {
                    if after_write {
                        let _applied = next.run(req).await;
                    }
                    server_error(status)
                }
                Fault::Drop { after_write } => {
                    if after_write {
                        let _applied = next.run(req).await;
                    }
                    match dropper {
                        Some(d) => d.drop_now().await,
                        // Served outside the sandbox's own loop (no handle): the nearest thing is a 503.
                        None => server_error(503),
                    }
                }
                Fault::Slow(delay) => {
                    tokio::time::sleep(delay).await;
                    next.run(req).await
                }
                Fault::None | Fault::ExpireToken => next.run(req).await,
            }
        }
        Err(e) => e.into_response(),
    };
    let header = limit_header(&app.lock(), &app);
    resp.headers_mut().insert("Sforce-Limit-Info", header);
    resp
}

/// Remembers every non-admin request for `GET /sandbox/admin/calls`.
async fn call_log(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    if !path.starts_with("/sandbox/admin") {
        let at = value::format_datetime(app.clock.now());
        app.lock().log_call(CallLog {
            at,
            method,
            path,
            status: resp.status().as_u16(),
        });
    }
    resp
}

async fn fallback(State(app): State<Arc<App>>, req: Request) -> Response {
    let mut resp = SfError::not_found().into_response();
    if req.uri().path().starts_with("/services/data") {
        let header = limit_header(&app.lock(), &app);
        resp.headers_mut().insert("Sforce-Limit-Info", header);
    }
    resp
}

/// `GET /services/data/`: the versions served (no session needed, as in Salesforce).
async fn versions() -> Response {
    let seasons = ["Winter", "Spring", "Summer"];
    let list: Vec<serde_json::Value> = (MIN_API_VERSION..=MAX_LISTED_VERSION)
        .map(|v| {
            let n = v - MIN_API_VERSION;
            json!({
                "label": format!("{} '{}", seasons[(n % 3) as usize], 21 + n / 3),
                "url": format!("/services/data/v{v}.0"),
                "version": format!("{v}.0"),
            })
        })
        .collect();
    axum::Json(list).into_response()
}

/// The `/services/data/vXX.X/…` routes, unguarded.
fn data_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/services/data/{version}", get(api::resources))
        .route("/services/data/{version}/", get(api::resources))
        .route("/services/data/{version}/limits", get(api::limits))
        .route("/services/data/{version}/sobjects", get(api::sobjects))
        .route(
            "/services/data/{version}/sobjects/{object}",
            get(api::sobject_info).post(api::create),
        )
        .route(
            "/services/data/{version}/sobjects/{object}/{id}",
            get(api::read).patch(api::update).delete(api::delete),
        )
        .route(
            "/services/data/{version}/composite/sobjects",
            post(composite::collection_create)
                .patch(composite::collection_update)
                .delete(composite::collection_delete),
        )
        .route(
            "/services/data/{version}/composite/sobjects/{object}",
            get(composite::collection_retrieve),
        )
        .route(
            "/services/data/{version}/composite/sobjects/{object}/{field}",
            axum::routing::patch(composite::collection_upsert),
        )
        .route(
            "/services/data/{version}/composite",
            post(composite::composite),
        )
        .route(
            "/services/data/{version}/sobjects/{object}/{field}/{value}",
            get(api::read_by_external_id).patch(api::upsert),
        )
        .route("/services/data/{version}/query", get(api::query))
        .route(
            "/services/data/{version}/query/{locator}",
            get(api::query_more),
        )
        .route("/services/data/{version}/queryAll", get(api::query_all))
        .route(
            "/services/data/{version}/queryAll/{locator}",
            get(api::query_more),
        )
}

fn router(app: Arc<App>) -> Router {
    let data = data_routes().route_layer(middleware::from_fn_with_state(app.clone(), api_guard));
    Router::new()
        .route("/services/data", get(versions))
        .route("/services/oauth2/token", post(oauth::token))
        .route(
            "/services/oauth2/authorize",
            get(oauth::authorize_page).post(oauth::authorize_decision),
        )
        .route(
            "/services/oauth2/revoke",
            post(oauth::revoke).get(oauth::revoke),
        )
        .merge(data)
        .merge(admin::routes())
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(app.clone(), call_log))
        .with_state(app)
}

/// The startup line: base URL and ready-to-use credentials (plus the certificate's PEM path with TLS).
fn info(
    app: &App,
    org: &Org,
    access_token: &str,
    cert_pem_path: Option<&std::path::Path>,
) -> serde_json::Value {
    let mut v = json!({
        "system": "salesforce",
        "base_url": app.base_url,
        "instance_url": app.base_url,
        "token_url": format!("{}/services/oauth2/token", app.base_url),
        "api_version": API_VERSION,
        "client_id": org.client_id,
        "client_secret": org.client_secret,
        "org_id": org.org_id,
        "username": org.username,
        "password": org.password,
        "access_token": access_token,
        "refresh_token": org.startup_refresh_token,
        "authorize_url": format!("{}/services/oauth2/authorize", app.base_url),
        "admin_url": format!("{}/sandbox/admin", app.base_url),
    });
    if let Some(path) = cert_pem_path {
        v["cert_pem_path"] = json!(path.display().to_string());
    }
    v
}

/// Where the certificate's PEM goes: next to the state file, or in the temporary directory (named by port, so two
/// sandboxes never share one).
fn cert_pem_path(opts: &SalesforceOptions, port: u16) -> PathBuf {
    match &opts.state_file {
        Some(state) => {
            let mut p = state.as_os_str().to_owned();
            p.push(".cert.pem");
            PathBuf::from(p)
        }
        None => std::env::temp_dir().join(format!("ledgerlink-salesforce-sandbox-{port}.pem")),
    }
}

/// Starts the sandbox on 127.0.0.1 and returns once it accepts connections.
pub async fn start(opts: SalesforceOptions) -> anyhow::Result<RunningSandbox> {
    if opts.query_page_size == 0 {
        anyhow::bail!("salesforce sandbox: query_page_size must be at least 1");
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "salesforce sandbox: cannot bind 127.0.0.1:{}: {e}",
                opts.port
            )
        })?;
    let port = listener.local_addr()?.port();
    let tls = if opts.tls {
        Some(serve::Tls::generate(&cert_pem_path(&opts, port))?)
    } else {
        None
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base_url = format!("{scheme}://127.0.0.1:{port}");
    let loaded = match &opts.state_file {
        Some(path) => Org::load(path)?,
        None => None,
    };
    let now = opts.clock.now();
    let mut org = match loaded {
        Some(org) => org,
        None => seed::new_org(now, opts.seed),
    };
    if org.startup_refresh_token.is_empty()
        || !org.refresh_tokens.contains_key(&org.startup_refresh_token)
    {
        let user = org.api_user_id.clone();
        org.startup_refresh_token = oauth::mint_refresh_token(&mut org, &user);
    }
    let user = org.api_user_id.clone();
    let startup_refresh = org.startup_refresh_token.clone();
    let access_token = oauth::mint_access_token(
        &mut org,
        &user,
        Some(&startup_refresh),
        now + opts.access_token_ttl,
    );
    let app = Arc::new(App {
        org: Mutex::new(org),
        clock: opts.clock.clone(),
        base_url: base_url.clone(),
        state_file: opts.state_file.clone(),
        access_token_ttl: opts.access_token_ttl,
        query_page_size: AtomicUsize::new(opts.query_page_size),
        daily_api_limit: AtomicU64::new(opts.daily_api_limit),
        seed: opts.seed,
        faults: Faults::default(),
    });
    let info = {
        let org = app.lock();
        app.persist(&org);
        info(
            &app,
            &org,
            &access_token,
            tls.as_ref().map(|t| t.cert_pem_path.as_path()),
        )
    };
    let (tx, rx) = oneshot::channel::<()>();
    let service = router(app.clone());
    let acceptor = tls.map(|t| t.acceptor);
    let task = tokio::spawn(async move {
        serve::serve(listener, acceptor, service, rx).await;
        let org = app.lock();
        app.persist(&org);
    });
    Ok(RunningSandbox {
        base_url,
        info,
        shutdown: Some(tx),
        task: Some(task),
    })
}

/// Used by handlers that answer with a status and nothing else.
pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
