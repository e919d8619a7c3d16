//! QuickBooks Online sandbox: a stateful local stand-in for Intuit's OAuth server and Accounting API v3.
//!
//! Layout: this module holds [`QuickbooksOptions`], [`start`], the router and the `/v3/company/{realmId}/…`
//! handlers (read, write, void, query, batch, change data capture, `requestid` replay), plus the [`guard`]
//! middleware that applies the request limits ([`limits`]) and injected faults ([`crate::faults`]) to API calls.
//! The pieces it wires together: [`oauth`] (discovery, token, revoke, bearer checks), [`authorize`] (the HTML
//! consent flow: sign in, pick a company, approve), [`entities`] and [`txn`] (per-entity validation, derived
//! fields, balances), [`query`] (the query language), [`fault`] (error envelopes), [`state`] (the store and its
//! state file), [`seed`] (the sample companies), [`webhooks`] (signed, aggregated, retried notifications),
//! [`admin`] (`/sandbox/admin/…` for tests and demos), [`money`] and [`time`] (wire formats of amounts and
//! timestamps). All state sits behind one `tokio::sync::Mutex`: a write validates, mutates and persists under the
//! lock, so concurrent calls see each other's results in order, as a single QBO company does.
//!
//! Dropped connections are real: the server accepts through [`KillableListener`], whose streams carry a kill
//! switch that the request's handler can reach (as connect info). Setting it makes every later write on that
//! TCP stream fail, so hyper closes the connection without having sent a byte of the answer and the client sees a
//! connection error, never an HTTP response.

pub mod admin;
pub mod authorize;
pub mod entities;
pub mod fault;
pub mod limits;
pub mod money;
pub mod oauth;
pub mod query;
pub mod seed;
pub mod state;
pub mod time;
pub mod txn;
pub mod webhooks;

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Bytes;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Mutex, oneshot};

use crate::RunningSandbox;
use crate::clock::Clock;
use crate::faults::{Fault as Injected, Faults};
use entities::{ChangeEvent, EntityKind, WriteCtx};
use fault::Fault;
pub use limits::QuickbooksLimits;
use state::{CallRecord, Company, Credentials, SandboxState, StoredReply};
use time::api_time;

/// Longest `requestid` QBO accepts on a single (non-batch) call.
pub const MAX_REQUEST_ID_CHARS: usize = 50;
/// Longest `requestid` on a batch call.
pub const MAX_BATCH_REQUEST_ID_CHARS: usize = 36;
/// Longest `bId` in a batch that carries a `requestid`.
pub const MAX_BATCH_ITEM_ID_CHARS: usize = 10;
/// Most items in one batch.
pub const MAX_BATCH_ITEMS: usize = 30;
/// Most objects per entity in one change-data-capture answer.
pub const MAX_CDC_ROWS: usize = 1000;
/// How far back change data capture reaches.
pub const CDC_LOOKBACK_DAYS: i64 = 30;
/// Calls kept in the in-memory log.
const MAX_CALL_LOG: usize = 10_000;

/// How to run the QuickBooks sandbox.
#[derive(Debug, Clone)]
pub struct QuickbooksOptions {
    /// 0 = any free port; always bound on 127.0.0.1.
    pub port: u16,
    /// Loaded at start if it exists, rewritten (atomically) on every write.
    pub state_file: Option<PathBuf>,
    /// Seed the sample company when starting without a state file.
    pub seed: bool,
    /// Lifetime of access tokens (Intuit: one hour).
    pub access_token_ttl: chrono::Duration,
    pub clock: Clock,
    /// Request limits (on by default at Intuit's numbers).
    pub limits: QuickbooksLimits,
}

impl Default for QuickbooksOptions {
    fn default() -> Self {
        QuickbooksOptions {
            port: 0,
            state_file: None,
            seed: true,
            access_token_ttl: chrono::Duration::seconds(3600),
            clock: Clock::new(),
            limits: QuickbooksLimits::default(),
        }
    }
}

/// What every handler shares.
pub struct Shared {
    pub(crate) state: Mutex<SandboxState>,
    pub(crate) clock: Clock,
    pub(crate) base_url: String,
    pub(crate) state_file: Option<PathBuf>,
    pub(crate) access_token_ttl: chrono::Duration,
    pub(crate) seed: bool,
    pub(crate) faults: Faults,
    pub(crate) limits: limits::Limiter,
    pub(crate) webhooks: Arc<webhooks::Webhooks>,
}

impl Shared {
    /// Saves the state file (if any). A failed save is logged rather than failing the call: the change has
    /// already happened in memory and the next write retries the save.
    pub(crate) async fn persist(&self, st: &mut SandboxState) {
        let Some(path) = &self.state_file else { return };
        st.clock_offset_ms = self.clock.offset().num_milliseconds();
        if let Err(e) = state::save(path, st).await {
            tracing::error!(error = %e, "QuickBooks sandbox state was not saved");
        }
    }
}

/// A new realm id in Intuit's style (16 digits starting 9341).
fn new_realm_id() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let mut realm = String::from("9341");
    for _ in 0..12 {
        realm.push(char::from(b'0' + rng.random_range(0..10u8)));
    }
    realm
}

/// Makes sure every sample company exists: the first realm is the credentials', the others are minted once.
fn ensure_companies(st: &mut SandboxState, seed: bool, now: chrono::DateTime<chrono::Utc>) {
    let first = st.credentials.realm_id.clone();
    if !st.companies.contains_key(&first) {
        let mut co = Company::default();
        if seed {
            seed::seed(&mut co, &first, now, 0);
        }
        st.companies.insert(first, co);
    }
    while st.companies.len() < seed::PROFILES.len() {
        let realm = new_realm_id();
        let mut co = Company::default();
        if seed {
            seed::seed(&mut co, &realm, now, st.companies.len());
        }
        st.companies.insert(realm, co);
    }
}

/// Starts the sandbox on 127.0.0.1 and returns once it accepts connections.
pub async fn start(opts: QuickbooksOptions) -> anyhow::Result<RunningSandbox> {
    opts.limits
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid QuickBooks sandbox limits: {e}"))?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port)).await?;
    let port = listener.local_addr()?.port();
    let base_url = format!("http://127.0.0.1:{port}");

    let loaded = match &opts.state_file {
        Some(path) => state::load(path).await?,
        None => None,
    };
    let mut st = match loaded {
        Some(st) => {
            let behind = st.clock_offset_ms - opts.clock.offset().num_milliseconds();
            if behind > 0 {
                opts.clock.advance(chrono::Duration::milliseconds(behind));
            }
            st
        }
        None => SandboxState::new(Credentials::generate()),
    };
    ensure_companies(&mut st, opts.seed, opts.clock.now());
    oauth::ensure_initial_tokens(&mut st, opts.clock.now(), opts.access_token_ttl);

    let info = json!({
        "system": "quickbooks",
        "base_url": base_url,
        "api_base": format!("{base_url}/v3"),
        "discovery_url": format!("{base_url}/.well-known/openid_configuration"),
        "token_url": format!("{base_url}/oauth2/v1/tokens/bearer"),
        "client_id": st.credentials.client_id,
        "client_secret": st.credentials.client_secret,
        "realm_id": st.credentials.realm_id,
        "access_token": st.tokens.initial_access,
        "refresh_token": st.tokens.initial_refresh,
        "verifier_token": st.credentials.verifier_token,
    });

    let verifier = st.credentials.verifier_token.clone();
    let shared = Arc::new(Shared {
        state: Mutex::new(st),
        clock: opts.clock.clone(),
        base_url: base_url.clone(),
        state_file: opts.state_file.clone(),
        access_token_ttl: opts.access_token_ttl,
        seed: opts.seed,
        faults: Faults::default(),
        limits: limits::Limiter::new(opts.limits.clone()),
        webhooks: Arc::new(webhooks::Webhooks::default()),
    });
    {
        let mut st = shared.state.lock().await;
        shared.persist(&mut st).await;
    }
    let sender = shared.webhooks.spawn(verifier, opts.clock.clone());

    let app = router(shared.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(
            KillableListener { inner: listener },
            app.into_make_service_with_connect_info::<ConnKill>(),
        )
        .with_graceful_shutdown(async {
            let _ = rx.await;
        })
        .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "QuickBooks sandbox server stopped with an error");
        }
        sender.abort();
        let mut st = shared.state.lock().await;
        shared.persist(&mut st).await;
    });
    Ok(RunningSandbox {
        base_url,
        info,
        shutdown: Some(tx),
        task: Some(task),
    })
}

/// Accepts TCP connections whose streams can be killed from a handler (see the module docs).
pub struct KillableListener {
    inner: tokio::net::TcpListener,
}

/// A TCP stream with a kill switch: once set, reads see end-of-stream and writes fail.
pub struct KillableStream {
    inner: tokio::net::TcpStream,
    killed: Arc<AtomicBool>,
}

/// The kill switch of the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnKill(Arc<AtomicBool>);

impl ConnKill {
    fn kill(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl axum::serve::Listener for KillableListener {
    type Io = KillableStream;
    type Addr = (std::net::SocketAddr, Arc<AtomicBool>);

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((inner, addr)) => {
                    let _ = inner.set_nodelay(true);
                    let killed = Arc::new(AtomicBool::new(false));
                    return (
                        KillableStream {
                            inner,
                            killed: killed.clone(),
                        },
                        (addr, killed),
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok((self.inner.local_addr()?, Arc::new(AtomicBool::new(false))))
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for ConnKill {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        ConnKill(stream.remote_addr().1.clone())
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "connection dropped by fault injection",
            )));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/.well-known/openid_configuration", get(oauth::discovery))
        .route("/.well-known/openid_configuration/", get(oauth::discovery))
        .route(
            "/.well-known/openid_sandbox_configuration",
            get(oauth::discovery),
        )
        .route(
            "/.well-known/openid_sandbox_configuration/",
            get(oauth::discovery),
        )
        .route("/oauth2/v1/tokens/bearer", post(oauth::token))
        .route("/oauth2/v1/tokens/revoke", post(oauth::revoke))
        .route("/v2/oauth2/tokens/revoke", post(oauth::revoke))
        .route("/oauth2/v1/jwks", get(oauth::jwks))
        .route("/v1/openid_connect/userinfo", get(oauth::userinfo))
        .route(
            "/v3/company/{realm}/{*rest}",
            get(api_get)
                .post(api_post)
                .layer(middleware::from_fn_with_state(shared.clone(), guard)),
        )
        .merge(authorize::routes())
        .merge(admin::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), observe))
        .with_state(shared)
}

async fn not_found(State(app): State<Arc<Shared>>, uri: Uri) -> Response {
    Fault::unsupported(format!(
        "Operation Could not find resource for relative path {} is not supported.",
        uri.path()
    ))
    .into_response(app.clock.now())
    .into_response()
}

/// Adds the `intuit_tid` header to every response and records API calls for the admin log.
async fn observe(State(app): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let requestid = query_params(request.uri()).remove("requestid");
    let mut response = next.run(request).await;
    let tid = format!(
        "1-{:08x}-{}",
        app.clock.now().timestamp(),
        state::random_alnum(24).to_ascii_lowercase()
    );
    if let Ok(v) = HeaderValue::from_str(&tid) {
        response.headers_mut().insert("intuit_tid", v);
    }
    if !path.starts_with("/sandbox/admin") {
        let record = CallRecord {
            time: api_time(app.clock.now()),
            method: method.to_string(),
            path,
            status: response.status().as_u16(),
            requestid,
        };
        let mut st = app.state.lock().await;
        if st.calls.len() >= MAX_CALL_LOG {
            st.calls.remove(0);
        }
        st.calls.push(record);
    }
    response
}

/// Request limits and injected faults for `/v3/…` calls (never for OAuth or admin routes).
async fn guard(State(app): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let now = app.clock.now();
    let path = request.uri().path().to_string();
    let mut parts = path.split('/').filter(|s| !s.is_empty()).skip(2);
    let realm = parts.next().unwrap_or_default().to_string();
    let batch = parts
        .next()
        .is_some_and(|s| s.eq_ignore_ascii_case("batch"));
    let _permit = match app.limits.acquire(&realm, batch) {
        Ok(p) => p,
        Err(_) => return Fault::throttled("").into_response(now),
    };
    let kill = request
        .extensions()
        .get::<ConnectInfo<ConnKill>>()
        .map(|c| c.0.clone());
    match app.faults.draw() {
        Injected::None => next.run(request).await,
        Injected::Throttle => Fault::throttled("").into_response(now),
        Injected::ExpireToken => fault::authentication_failed(
            "Token expired: the access token has expired (injected by the sandbox)",
            now,
        ),
        Injected::Slow(delay) => {
            tokio::time::sleep(delay).await;
            next.run(request).await
        }
        Injected::ServerError {
            status,
            after_write,
        } => {
            if after_write {
                let _ = next.run(request).await;
            }
            Fault::system(status).into_response(app.clock.now())
        }
        Injected::Drop { after_write } => {
            if after_write {
                let _ = next.run(request).await;
            }
            match kill {
                Some(k) => {
                    k.kill();
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
                None => Fault::system(503).into_response(app.clock.now()),
            }
        }
    }
}

fn query_params(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    r
}

fn envelope(key: &str, object: Value, now: chrono::DateTime<chrono::Utc>) -> Value {
    let mut map = serde_json::Map::new();
    map.insert(key.to_string(), object);
    map.insert("time".into(), Value::String(api_time(now)));
    Value::Object(map)
}

fn segments(rest: &str) -> Vec<&str> {
    rest.split('/').filter(|s| !s.is_empty()).collect()
}

async fn api_get(
    State(app): State<Arc<Shared>>,
    Path((realm, rest)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let now = app.clock.now();
    let st = app.state.lock().await;
    if let Err(r) = oauth::authenticate(&st, &headers, &realm, now) {
        return *r;
    }
    let Some(co) = st.company(&realm) else {
        return Fault::authorization(format!("Company {realm} does not exist")).into_response(now);
    };
    let params = query_params(&uri);
    let result = match segments(&rest).as_slice() {
        ["query"] => match params.get("query") {
            Some(q) => run_query(co, q, now, &WriteCtx::new(now)),
            None => Err(Fault::query_parse(
                "QueryParserError: Encountered \"<EOF>\" at line 1, column 1. The query parameter is missing.",
            )),
        },
        ["cdc"] => cdc(co, &params, now),
        [entity, id] if entity.eq_ignore_ascii_case("companyinfo") => {
            if *id == realm {
                read(co, EntityKind::CompanyInfo, &realm, now)
            } else {
                Err(Fault::not_found("CompanyInfo", id))
            }
        }
        [entity] if entity.eq_ignore_ascii_case("preferences") => {
            read(co, EntityKind::Preferences, "1", now)
        }
        [entity, id] => match EntityKind::parse(entity) {
            Some(kind) if !matches!(kind, EntityKind::CompanyInfo | EntityKind::Preferences) => {
                read(co, kind, id, now)
            }
            _ => Err(unknown_path(&rest)),
        },
        _ => Err(unknown_path(&rest)),
    };
    match result {
        Ok(body) => json_response(StatusCode::OK, body.to_string()),
        Err(f) => f.into_response(now),
    }
}

fn unknown_path(rest: &str) -> Fault {
    let served: Vec<String> = EntityKind::ALL
        .iter()
        .map(|k| k.name().to_lowercase())
        .collect();
    Fault::unsupported(format!(
        "Operation Could not find resource for relative : /{rest} is not supported. \
         Served: {}, query, batch, cdc.",
        served.join(", ")
    ))
}

fn read(
    co: &Company,
    kind: EntityKind,
    id: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Value, Fault> {
    let row = co
        .get(kind.name(), id)
        .ok_or_else(|| Fault::not_found(kind.name(), id))?;
    Ok(envelope(kind.name(), row.clone(), now))
}

/// Runs a query; rows hidden from the current batch item are left out.
fn run_query(
    co: &Company,
    text: &str,
    now: chrono::DateTime<chrono::Utc>,
    ctx: &WriteCtx,
) -> Result<Value, Fault> {
    let parsed = query::parse(text).map_err(|e| Fault::query_parse(e.detail))?;
    let kind = EntityKind::parse(&parsed.entity).ok_or_else(|| {
        Fault::query_invalid(format!(
            "QueryValidationError: Invalid context declaration : {}",
            parsed.entity
        ))
    })?;
    let rows = co
        .rows(kind.name())
        .filter(|r| !ctx.is_hidden(kind.name(), state::row_id(r).unwrap_or_default()));
    let response = query::execute(&parsed, kind.name(), rows, kind.is_name_list());
    Ok(json!({"QueryResponse": response, "time": api_time(now)}))
}

/// `GET /cdc?entities=A,B&changedSince=…`: what changed (deleted rows as stubs), oldest first, capped per entity.
fn cdc(
    co: &Company,
    params: &HashMap<String, String>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Value, Fault> {
    let entities = params
        .get("entities")
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| Fault::required("entities"))?;
    let since_text = params
        .get("changedSince")
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| Fault::required("changedSince"))?;
    let since = time::parse_instant(since_text.trim()).ok_or_else(|| {
        Fault::invalid_property(format!(
            "changedSince \"{since_text}\" is not a date or an ISO 8601 timestamp such as 2024-05-01T10:00:00-07:00"
        ))
        .at("changedSince")
    })?;
    if since.with_timezone(&chrono::Utc) < now - chrono::Duration::days(CDC_LOOKBACK_DAYS) {
        return Err(Fault::business(format!(
            "changedSince {since_text} is more than {CDC_LOOKBACK_DAYS} days ago: change data capture only looks back {CDC_LOOKBACK_DAYS} days"
        ))
        .at("changedSince"));
    }
    let mut responses = Vec::new();
    for name in entities.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let kind = EntityKind::parse(name).ok_or_else(|| {
            Fault::invalid_property(format!("entities: {name} is not an entity")).at("entities")
        })?;
        if !kind.in_cdc() {
            return Err(Fault::unsupported(format!(
                "Change data capture is not supported for {}",
                kind.name()
            ))
            .at("entities"));
        }
        let stamp = |r: &Value| {
            let inner = if kind == EntityKind::RecurringTransaction {
                r.as_object()
                    .and_then(|o| o.values().next())
                    .cloned()
                    .unwrap_or(Value::Null)
            } else {
                r.clone()
            };
            inner
                .pointer("/MetaData/LastUpdatedTime")
                .and_then(Value::as_str)
                .and_then(time::parse_instant)
        };
        let mut rows: Vec<(chrono::DateTime<chrono::FixedOffset>, Value)> = co
            .rows(kind.name())
            .filter_map(|r| stamp(r).map(|t| (t, r.clone())))
            .filter(|(t, _)| *t >= since)
            .collect();
        for t in co.deleted.iter().filter(|t| t.entity == kind.name()) {
            if let Some(at) = time::parse_instant(&t.deleted_at)
                && at >= since
            {
                rows.push((
                    at,
                    json!({"domain": "QBO", "status": "Deleted", "Id": t.id, "MetaData": {"LastUpdatedTime": t.deleted_at}}),
                ));
            }
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows.truncate(MAX_CDC_ROWS);
        let mut r = serde_json::Map::new();
        if !rows.is_empty() {
            r.insert(
                kind.name().into(),
                Value::Array(rows.into_iter().map(|(_, v)| v).collect()),
            );
        }
        let n = r
            .get(kind.name())
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        r.insert("startPosition".into(), json!(1));
        r.insert("maxResults".into(), json!(n));
        responses.push(Value::Object(r));
    }
    Ok(json!({"CDCResponse": [{"QueryResponse": responses}], "time": api_time(now)}))
}

fn include_flags(params: &HashMap<String, String>) -> (bool, bool) {
    let flags: Vec<String> = params
        .get("include")
        .map(|i| {
            i.split(',')
                .map(|f| f.trim().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default();
    (
        flags.iter().any(|f| f == "allowduplicatedocnum"),
        flags.iter().any(|f| f == "void"),
    )
}

async fn api_post(
    State(app): State<Arc<Shared>>,
    Path((realm, rest)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let now = app.clock.now();
    let mut guard = app.state.lock().await;
    let st = &mut *guard;
    if let Err(r) = oauth::authenticate(st, &headers, &realm, now) {
        return *r;
    }
    if st.company(&realm).is_none() {
        return Fault::authorization(format!("Company {realm} does not exist")).into_response(now);
    }
    let params = query_params(&uri);
    let segs = segments(&rest);
    if let ["query"] = segs.as_slice() {
        let text = String::from_utf8_lossy(&body).to_string();
        let text = if text.trim().is_empty() {
            params.get("query").cloned().unwrap_or_default()
        } else {
            text
        };
        let co = st.company(&realm).expect("checked above");
        return match run_query(co, &text, now, &WriteCtx::new(now)) {
            Ok(body) => json_response(StatusCode::OK, body.to_string()),
            Err(f) => f.into_response(now),
        };
    }
    let is_batch = matches!(segs.as_slice(), [s] if s.eq_ignore_ascii_case("batch"));
    let kind = match segs.as_slice() {
        [entity] => EntityKind::parse(entity),
        _ => None,
    };
    if kind.is_none() && !is_batch {
        return unknown_path(&rest).into_response(now);
    }

    let requestid = params.get("requestid").cloned();
    if let Some(rid) = &requestid {
        let max = if is_batch {
            MAX_BATCH_REQUEST_ID_CHARS
        } else {
            MAX_REQUEST_ID_CHARS
        };
        if rid.chars().count() > max {
            return Fault::business(format!(
                "cannot enter more than {max} characters in the request_id field"
            ))
            .at("requestid")
            .into_response(now);
        }
        if let Some(stored) = st.replies.get(&realm).and_then(|r| r.get(rid)) {
            let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
            return json_response(status, stored.body.clone());
        }
    }

    let (allow_dup, include_void) = include_flags(&params);
    let mut ctx = WriteCtx::new(now);
    ctx.allow_duplicate_doc_number = allow_dup;
    ctx.include_void = include_void;
    let co = st.company_mut(&realm).expect("checked above");
    let parsed = serde_json::from_slice::<Value>(&body).map_err(|e| {
        Fault::invalid_property(format!(
            "Request body is not valid JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    });
    let outcome = match (parsed, kind) {
        (Err(f), _) => Err(f),
        (Ok(value), _) if is_batch => batch(co, value, requestid.is_some(), &mut ctx),
        (Ok(value), Some(kind)) => entities::write(
            co,
            kind,
            params.get("operation").map(String::as_str),
            value,
            &mut ctx,
        )
        .map(|object| envelope(kind.name(), object, now)),
        (Ok(_), None) => Err(unknown_path(&rest)),
    };
    let (status, body) = match outcome {
        Ok(body) => (StatusCode::OK, body),
        Err(f) => (f.status, f.envelope(now)),
    };
    let body = body.to_string();
    let remembered = requestid.is_some();
    if let Some(rid) = requestid {
        st.replies.entry(realm.clone()).or_default().insert(
            rid,
            StoredReply {
                status: status.as_u16(),
                body: body.clone(),
            },
        );
    }
    if !ctx.events.is_empty() || remembered {
        app.persist(st).await;
    }
    app.webhooks.record(&realm, &ctx.events);
    json_response(status, body)
}

/// `POST /batch`: up to 30 items, run in order; each answers on its own (`Fault` per item), and an item cannot see
/// objects created by earlier items of the same batch.
fn batch(
    co: &mut Company,
    body: Value,
    with_request_id: bool,
    ctx: &mut WriteCtx,
) -> Result<Value, Fault> {
    let items = match body.get("BatchItemRequest") {
        Some(Value::Array(items)) => items.clone(),
        None | Some(Value::Null) => return Err(Fault::required("BatchItemRequest")),
        Some(other) => {
            return Err(entities::wrong_type(
                "BatchItemRequest",
                "an array of batch items",
                other,
            ));
        }
    };
    if items.is_empty() {
        return Err(Fault::required("BatchItemRequest"));
    }
    if items.len() > MAX_BATCH_ITEMS {
        return Err(Fault::business(format!(
            "The batch has {} items; at most {MAX_BATCH_ITEMS} are allowed in one request",
            items.len()
        ))
        .at("BatchItemRequest"));
    }
    let now = ctx.now;
    let mut answers = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let Value::Object(mut item) = item else {
            return Err(entities::wrong_type(
                &format!("BatchItemRequest[{index}]"),
                "an object",
                &item,
            ));
        };
        let bid = match item.remove("bId") {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(Fault::required(&format!("BatchItemRequest[{index}].bId"))),
        };
        let mut answer = serde_json::Map::new();
        answer.insert("bId".into(), Value::String(bid.clone()));
        let result: Result<(String, Value), Fault> = (|| {
            if with_request_id && bid.chars().count() > MAX_BATCH_ITEM_ID_CHARS {
                return Err(Fault::business(format!(
                    "bId \"{bid}\" is longer than {MAX_BATCH_ITEM_ID_CHARS} characters (the limit when the batch carries a requestid)"
                ))
                .at("bId"));
            }
            if let Some(q) = item.remove("Query") {
                let text = q
                    .as_str()
                    .ok_or_else(|| entities::wrong_type("Query", "a string", &q))?;
                let r = run_query(co, text, now, ctx)?;
                return Ok(("QueryResponse".into(), r["QueryResponse"].clone()));
            }
            let operation = item
                .remove("operation")
                .and_then(|o| o.as_str().map(str::to_ascii_lowercase))
                .unwrap_or_else(|| "create".into());
            let options = item
                .remove("optionsData")
                .and_then(|o| o.as_str().map(str::to_ascii_lowercase));
            let mut entries = item.into_iter();
            let (name, value) = entries
                .next()
                .ok_or_else(|| Fault::required("the entity object (e.g. \"Customer\": {…})"))?;
            if entries.next().is_some() {
                return Err(Fault::invalid_property(
                    "A batch item holds exactly one entity object",
                ));
            }
            let kind = EntityKind::parse(&name).ok_or_else(|| {
                Fault::invalid_property(format!("{name} is not an entity this service serves"))
                    .at(&name)
            })?;
            let op = if options.as_deref() == Some("void") {
                "void"
            } else {
                operation.as_str()
            };
            let object = entities::write(co, kind, Some(op), value, ctx)?;
            if op == "create"
                && let Some(id) = state::row_id(&object)
            {
                ctx.hidden.insert((kind.name().to_string(), id.to_string()));
            }
            Ok((kind.name().to_string(), object))
        })();
        match result {
            Ok((key, value)) => {
                answer.insert(key, value);
            }
            Err(f) => {
                answer.insert("Fault".into(), f.body());
            }
        }
        answers.push(Value::Object(answer));
    }
    Ok(json!({"BatchItemResponse": answers, "time": api_time(now)}))
}

/// Records the change events of an admin-side write for webhooks.
pub(crate) fn notify(app: &Shared, realm: &str, events: &[ChangeEvent]) {
    app.webhooks.record(realm, events);
}
