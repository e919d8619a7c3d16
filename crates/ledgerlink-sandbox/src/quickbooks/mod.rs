//! QuickBooks Online sandbox: a stateful local stand-in for Intuit's OAuth server and Accounting API v3.
//!
//! Layout: this module holds [`QuickbooksOptions`], [`start`], the router and the `/v3/company/{realmId}/…`
//! handlers (read, write, query, `requestid` replay). The pieces it wires together: [`oauth`] (discovery, token,
//! revoke, bearer checks), [`entities`] (per-entity validation, derived fields and side effects), [`query`] (the
//! query language), [`fault`] (error envelopes), [`state`] (the store and its state file), [`seed`] (the sample
//! company), [`admin`] (`/sandbox/admin/…` for tests and demos), [`money`] and [`time`] (wire formats of amounts
//! and timestamps). All state sits behind one `tokio::sync::Mutex`: a write validates, mutates and persists under
//! the lock, so concurrent calls see each other's results in order, as a single QBO company does.

pub mod admin;
pub mod entities;
pub mod fault;
pub mod money;
pub mod oauth;
pub mod query;
pub mod seed;
pub mod state;
pub mod time;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{Mutex, oneshot};

use crate::RunningSandbox;
use crate::clock::Clock;
use entities::{EntityKind, WriteCtx};
use fault::Fault;
use state::{CallRecord, Credentials, SandboxState, StoredReply};
use time::api_time;

/// Longest `requestid` QBO accepts on a single (non-batch) call.
pub const MAX_REQUEST_ID_CHARS: usize = 50;
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
}

impl Default for QuickbooksOptions {
    fn default() -> Self {
        QuickbooksOptions {
            port: 0,
            state_file: None,
            seed: true,
            access_token_ttl: chrono::Duration::seconds(3600),
            clock: Clock::new(),
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

/// Starts the sandbox on 127.0.0.1 and returns once it accepts connections.
pub async fn start(opts: QuickbooksOptions) -> anyhow::Result<RunningSandbox> {
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
        None => {
            let mut st = SandboxState::new(Credentials::generate());
            if opts.seed {
                let realm = st.credentials.realm_id.clone();
                seed::seed(&mut st.company, &realm, opts.clock.now());
            }
            st
        }
    };
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

    let shared = Arc::new(Shared {
        state: Mutex::new(st),
        clock: opts.clock.clone(),
        base_url: base_url.clone(),
        state_file: opts.state_file.clone(),
        access_token_ttl: opts.access_token_ttl,
        seed: opts.seed,
    });
    {
        let mut st = shared.state.lock().await;
        shared.persist(&mut st).await;
    }

    let app = router(shared.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "QuickBooks sandbox server stopped with an error");
        }
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
        .route("/v3/company/{realm}/{*rest}", get(api_get).post(api_post))
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
    let params = query_params(&uri);
    let result = match segments(&rest).as_slice() {
        ["query"] => match params.get("query") {
            Some(q) => run_query(&st, q, now),
            None => Err(Fault::query_parse(
                "QueryParserError: Encountered \"<EOF>\" at line 1, column 1. The query parameter is missing.",
            )),
        },
        [entity, id] if entity.eq_ignore_ascii_case("companyinfo") => {
            if *id == st.credentials.realm_id {
                read(&st, EntityKind::CompanyInfo, &st.credentials.realm_id, now)
            } else {
                Err(Fault::not_found("CompanyInfo", id))
            }
        }
        [entity] if entity.eq_ignore_ascii_case("preferences") => {
            read(&st, EntityKind::Preferences, "1", now)
        }
        [entity, id] => match EntityKind::parse(entity) {
            Some(kind) if !matches!(kind, EntityKind::CompanyInfo | EntityKind::Preferences) => {
                read(&st, kind, id, now)
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
    Fault::unsupported(format!(
        "Operation Could not find resource for relative : /{rest} is not supported. \
         Entities served: customer, item, invoice, account, taxcode, companyinfo, preferences, query."
    ))
}

fn read(
    st: &SandboxState,
    kind: EntityKind,
    id: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Value, Fault> {
    let row = st
        .company
        .get(kind.name(), id)
        .ok_or_else(|| Fault::not_found(kind.name(), id))?;
    Ok(envelope(kind.name(), row.clone(), now))
}

fn run_query(
    st: &SandboxState,
    text: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Value, Fault> {
    let parsed = query::parse(text).map_err(|e| Fault::query_parse(e.detail))?;
    let kind = EntityKind::parse(&parsed.entity).ok_or_else(|| {
        Fault::query_invalid(format!(
            "QueryValidationError: Invalid context declaration : {}",
            parsed.entity
        ))
    })?;
    let rows = st.company.rows(kind.name());
    let response = query::execute(&parsed, kind.name(), rows, kind.is_name_list());
    Ok(json!({"QueryResponse": response, "time": api_time(now)}))
}

async fn api_post(
    State(app): State<Arc<Shared>>,
    Path((realm, rest)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let now = app.clock.now();
    let mut st = app.state.lock().await;
    if let Err(r) = oauth::authenticate(&st, &headers, &realm, now) {
        return *r;
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
        return match run_query(&st, &text, now) {
            Ok(body) => json_response(StatusCode::OK, body.to_string()),
            Err(f) => f.into_response(now),
        };
    }
    let kind = match segs.as_slice() {
        [entity] => EntityKind::parse(entity),
        _ => None,
    };
    let Some(kind) = kind else {
        return unknown_path(&rest).into_response(now);
    };

    let requestid = params.get("requestid").cloned();
    if let Some(rid) = &requestid {
        if rid.chars().count() > MAX_REQUEST_ID_CHARS {
            return Fault::business("cannot enter more than 50 characters in the request_id field")
                .at("requestid")
                .into_response(now);
        }
        if let Some(stored) = st.replies.get(&realm).and_then(|r| r.get(rid)) {
            let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
            return json_response(status, stored.body.clone());
        }
    }

    let ctx = WriteCtx {
        now,
        allow_duplicate_doc_number: params.get("include").is_some_and(|i| {
            i.split(',')
                .any(|f| f.trim().eq_ignore_ascii_case("allowduplicatedocnum"))
        }),
    };
    let outcome = match serde_json::from_slice::<Value>(&body) {
        Ok(value) => entities::write(
            &mut st.company,
            kind,
            params.get("operation").map(String::as_str),
            value,
            &ctx,
        ),
        Err(e) => Err(Fault::invalid_property(format!(
            "Request body is not valid JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))),
    };
    let (status, body) = match outcome {
        Ok(object) => (StatusCode::OK, envelope(kind.name(), object, now)),
        Err(f) => (f.status, f.envelope(now)),
    };
    let body = body.to_string();
    let remembered = requestid.is_some();
    if let Some(rid) = requestid {
        st.replies.entry(realm).or_default().insert(
            rid,
            StoredReply {
                status: status.as_u16(),
                body: body.clone(),
            },
        );
    }
    if status.is_success() || remembered {
        app.persist(&mut st).await;
    }
    json_response(status, body)
}
