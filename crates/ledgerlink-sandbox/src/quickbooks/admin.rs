//! The sandbox's own control API under `/sandbox/admin/…` (no auth; the server only listens on loopback).
//!
//! Layout: one handler per route — `POST reset` (fresh sample companies, same credentials), `POST seed` (create
//! objects through the API's own write path), `POST clock/advance`, `GET state` (every entity as JSON, `?realm=`),
//! `GET companies`, `GET overdue` (open invoices past their due date on the sandbox clock), `GET calls` (the API
//! call log), `POST expire-tokens`, `POST authorization-codes`, `GET/POST/DELETE faults` (injected faults),
//! `GET/POST limits` (request limits), `GET/POST/DELETE webhooks` (endpoints), `GET/POST webhooks/config` and
//! `GET webhooks/deliveries`. Tests and demos use these to set up situations that would otherwise need waiting or
//! clicking through Intuit's consent page. Bad input is answered 400 with an `error` naming the field.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Query;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

use super::Shared;
use super::entities::{self, EntityKind, WriteCtx};
use super::limits::QuickbooksLimits;
use super::time::{api_time, company_today};
use super::webhooks::WebhookConfig;
use super::{oauth, seed};
use crate::faults::FaultConfig;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/sandbox/admin/reset", post(reset))
        .route("/sandbox/admin/clock/advance", post(advance_clock))
        .route("/sandbox/admin/state", get(dump_state))
        .route("/sandbox/admin/calls", get(calls))
        .route("/sandbox/admin/expire-tokens", post(expire_tokens))
        .route("/sandbox/admin/revocations", get(revocations))
        .route(
            "/sandbox/admin/authorization-codes",
            post(authorization_code),
        )
        .route("/sandbox/admin/companies", get(companies))
        .route("/sandbox/admin/seed", post(seed_objects))
        .route("/sandbox/admin/overdue", get(overdue))
        .route(
            "/sandbox/admin/faults",
            get(get_faults).post(set_faults).delete(clear_faults),
        )
        .route("/sandbox/admin/limits", get(get_limits).post(set_limits))
        .route(
            "/sandbox/admin/webhooks",
            get(get_webhooks).post(add_webhook).delete(clear_webhooks),
        )
        .route(
            "/sandbox/admin/webhooks/config",
            get(get_webhook_config).post(set_webhook_config),
        )
        .route("/sandbox/admin/webhooks/deliveries", get(deliveries))
}

/// The realm named by `?realm=` or a body's `"realm"`, else the first company.
fn realm_of(app_first: &str, given: Option<&str>) -> String {
    given
        .filter(|r| !r.is_empty())
        .unwrap_or(app_first)
        .to_string()
}

/// `GET /sandbox/admin/companies`: every realm and its company name.
async fn companies(State(app): State<Arc<Shared>>) -> Response {
    let st = app.state.lock().await;
    let list: Vec<Value> = st
        .companies
        .iter()
        .map(|(realm, co)| {
            json!({
                "realm_id": realm,
                "name": co.rows("CompanyInfo").next().and_then(|c| c.get("CompanyName")).cloned(),
                "primary": *realm == st.credentials.realm_id,
            })
        })
        .collect();
    axum::Json(json!(list)).into_response()
}

/// `POST /sandbox/admin/seed` `{"realm": "…", "objects": [{"Customer": {…}}, …]}`: creates each object through the
/// API's write path (same validation, same derived fields, webhooks fire) and returns them.
async fn seed_objects(State(app): State<Arc<Shared>>, body: Bytes) -> Response {
    let body = match object_body(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(Value::Array(objects)) = body.get("objects") else {
        return bad_request(
            "\"objects\" (an array of {\"Entity\": {…}} objects) is required".to_string(),
        );
    };
    let now = app.clock.now();
    let mut st = app.state.lock().await;
    let first = st.credentials.realm_id.clone();
    let realm = realm_of(&first, body.get("realm").and_then(Value::as_str));
    let Some(co) = st.company_mut(&realm) else {
        return bad_request(format!(
            "\"realm\": {realm} is not a company of this sandbox"
        ));
    };
    let mut ctx = WriteCtx::new(now);
    let mut created = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        let Some((name, value)) = object.as_object().and_then(|o| o.iter().next()) else {
            return bad_request(format!(
                "objects[{i}] must be an object like {{\"Customer\": {{…}}}}"
            ));
        };
        let Some(kind) = EntityKind::parse(name) else {
            return bad_request(format!("objects[{i}]: {name} is not an entity"));
        };
        match entities::write(co, kind, None, value.clone(), &mut ctx) {
            Ok(row) => created.push(json!({kind.name(): row})),
            Err(f) => {
                return bad_request(format!(
                    "objects[{i}] ({name}) was refused: {} ({}: {})",
                    f.message, f.code, f.detail
                ));
            }
        }
    }
    app.persist(&mut st).await;
    super::notify(&app, &realm, &ctx.events);
    axum::Json(json!({"created": created})).into_response()
}

/// `GET /sandbox/admin/overdue?realm=…`: open invoices whose DueDate is before today on the sandbox clock.
async fn overdue(
    State(app): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let st = app.state.lock().await;
    let realm = realm_of(&st.credentials.realm_id, q.get("realm").map(String::as_str));
    let Some(co) = st.company(&realm) else {
        return bad_request(format!("realm {realm} is not a company of this sandbox"));
    };
    let today = company_today(app.clock.now()).to_string();
    let list: Vec<Value> = co
        .rows("Invoice")
        .filter(|i| {
            i.get("Balance")
                .and_then(super::money::decimal_of)
                .is_some_and(|b| b > rust_decimal::Decimal::ZERO)
                && i.get("DueDate")
                    .and_then(Value::as_str)
                    .is_some_and(|d| *d < *today.as_str())
        })
        .cloned()
        .collect();
    axum::Json(json!({"today": today, "Invoice": list})).into_response()
}

async fn get_faults(State(app): State<Arc<Shared>>) -> Response {
    axum::Json(app.faults.config()).into_response()
}

/// `POST /sandbox/admin/faults` with a `FaultConfig`; a rate outside 0–1 or an unknown field → 400 naming it.
async fn set_faults(State(app): State<Arc<Shared>>, body: Bytes) -> Response {
    let config: FaultConfig =
        match serde_json::from_slice(if body.is_empty() { b"{}" } else { &body }) {
            Ok(c) => c,
            Err(e) => return bad_request(format!("the fault configuration is not valid: {e}")),
        };
    match app.faults.set(config) {
        Ok(()) => axum::Json(app.faults.config()).into_response(),
        Err(e) => bad_request(e),
    }
}

async fn clear_faults(State(app): State<Arc<Shared>>) -> Response {
    app.faults.clear();
    axum::Json(app.faults.config()).into_response()
}

async fn get_limits(State(app): State<Arc<Shared>>) -> Response {
    axum::Json(app.limits.config()).into_response()
}

/// `POST /sandbox/admin/limits` `{"enabled", "per_minute", "concurrent", "batch_per_minute", "time_scale"}`: the
/// fields given replace the current ones.
async fn set_limits(State(app): State<Arc<Shared>>, body: Bytes) -> Response {
    let config: QuickbooksLimits = match patched(&app.limits.config(), &body, "limits") {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match app.limits.set(config) {
        Ok(()) => axum::Json(app.limits.config()).into_response(),
        Err(e) => bad_request(e),
    }
}

async fn get_webhooks(State(app): State<Arc<Shared>>) -> Response {
    axum::Json(json!(app.webhooks.endpoints())).into_response()
}

/// `POST /sandbox/admin/webhooks` `{"url", "format": "legacy"|"cloudevents", "entities": […]}`.
async fn add_webhook(State(app): State<Arc<Shared>>, body: Bytes) -> Response {
    let body = match object_body(&body) {
        Ok(b) => Value::Object(b),
        Err(r) => return *r,
    };
    match app.webhooks.register(&body) {
        Ok(e) => axum::Json(json!(e)).into_response(),
        Err(e) => bad_request(e),
    }
}

async fn clear_webhooks(State(app): State<Arc<Shared>>) -> Response {
    app.webhooks.clear();
    axum::Json(json!([])).into_response()
}

async fn get_webhook_config(State(app): State<Arc<Shared>>) -> Response {
    axum::Json(app.webhooks.config()).into_response()
}

/// `POST /sandbox/admin/webhooks/config` `{"window_ms", "retry_time_scale", "timeout_ms"}` (fields given replace).
async fn set_webhook_config(State(app): State<Arc<Shared>>, body: Bytes) -> Response {
    let config: WebhookConfig = match patched(&app.webhooks.config(), &body, "webhook configuration") {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match app.webhooks.set_config(config) {
        Ok(()) => axum::Json(app.webhooks.config()).into_response(),
        Err(e) => bad_request(e),
    }
}

/// `GET /sandbox/admin/webhooks/deliveries`: every POST, its body, signature and attempts.
async fn deliveries(State(app): State<Arc<Shared>>) -> Response {
    axum::Json(json!(app.webhooks.deliveries())).into_response()
}

/// `current` with the fields of the JSON object `body` replacing its own (the admin routes' partial updates).
fn patched<T: serde::Serialize + serde::de::DeserializeOwned>(current: &T, body: &Bytes, what: &str) -> Result<T, Box<Response>> {
    let patch = object_body(body)?;
    let mut merged = match serde_json::to_value(current) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    merged.extend(patch);
    serde_json::from_value(Value::Object(merged)).map_err(|e| Box::new(bad_request(format!("invalid {what}: {e}"))))
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": message})),
    )
        .into_response()
}

/// An optional JSON object body; an empty body counts as `{}`.
fn object_body(body: &[u8]) -> Result<Map<String, Value>, Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Box::new(bad_request(format!(
            "the body must be a JSON object, got {other}"
        )))),
        Err(e) => Err(Box::new(bad_request(format!(
            "the body is not valid JSON: {e}"
        )))),
    }
}

/// `POST /sandbox/admin/reset` `{"seed": true, "realm": "…"}`: wipes company data (of one realm, or all) and
/// stored `requestid` replies and re-seeds. Credentials and tokens survive so connected clients keep working.
async fn reset(State(app): State<Arc<Shared>>, body: Bytes) -> Response {
    let body = match object_body(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let do_seed = match body.get("seed") {
        None => app.seed,
        Some(Value::Bool(b)) => *b,
        Some(other) => return bad_request(format!("\"seed\" must be true or false, got {other}")),
    };
    let only = match body.get("realm") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) => Some(r.clone()),
        Some(other) => {
            return bad_request(format!("\"realm\" must be a realm id string, got {other}"));
        }
    };
    let now = app.clock.now();
    let mut st = app.state.lock().await;
    if let Some(r) = &only
        && !st.companies.contains_key(r)
    {
        return bad_request(format!("\"realm\": {r} is not a company of this sandbox"));
    }
    let first = st.credentials.realm_id.clone();
    let mut realms: Vec<String> = st.companies.keys().cloned().collect();
    realms.sort_by_key(|r| (*r != first, r.clone()));
    for (i, realm) in realms.into_iter().enumerate() {
        if only.as_ref().is_some_and(|o| *o != realm) {
            continue;
        }
        let co = st.companies.entry(realm.clone()).or_default();
        *co = Default::default();
        if do_seed {
            seed::seed(co, &realm, now, i);
        }
        st.replies.remove(&realm);
    }
    app.persist(&mut st).await;
    axum::Json(json!({"reset": true, "seeded": do_seed})).into_response()
}

/// `POST /sandbox/admin/clock/advance` `{"seconds": n}`.
async fn advance_clock(State(app): State<Arc<Shared>>, body: Bytes) -> Response {
    let body = match object_body(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(seconds) = body.get("seconds").and_then(Value::as_i64) else {
        return bad_request("\"seconds\" (a whole number of seconds) is required".to_string());
    };
    if seconds < 0 {
        return bad_request(format!(
            "\"seconds\" must not be negative (got {seconds}): the clock only moves forward"
        ));
    }
    app.clock.advance(chrono::Duration::seconds(seconds));
    let mut st = app.state.lock().await;
    app.persist(&mut st).await;
    axum::Json(json!({"now": api_time(app.clock.now()), "offset_seconds": app.clock.offset().num_seconds()}))
        .into_response()
}

/// `GET /sandbox/admin/state?realm=…`: every entity's rows (no secrets).
async fn dump_state(
    State(app): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let st = app.state.lock().await;
    let realm = realm_of(&st.credentials.realm_id, q.get("realm").map(String::as_str));
    let Some(co) = st.company(&realm) else {
        return bad_request(format!("realm {realm} is not a company of this sandbox"));
    };
    let mut entities = Map::new();
    for kind in EntityKind::ALL {
        let rows: Vec<Value> = co.rows(kind.name()).cloned().collect();
        entities.insert(kind.name().to_string(), Value::Array(rows));
    }
    axum::Json(json!({
        "realm_id": realm,
        "now": api_time(app.clock.now()),
        "entities": entities,
        "deleted": co.deleted,
        "request_ids": st.replies.values().map(|m| m.len()).sum::<usize>(),
    }))
    .into_response()
}

/// `GET /sandbox/admin/calls`: the API calls served so far, oldest first.
async fn calls(State(app): State<Arc<Shared>>) -> Response {
    let st = app.state.lock().await;
    axum::Json(json!(st.calls)).into_response()
}

/// `GET /sandbox/admin/revocations`: every grant revoked so far, oldest first (tokens as SHA-256 fingerprints).
async fn revocations(State(app): State<Arc<Shared>>) -> Response {
    let st = app.state.lock().await;
    axum::Json(json!(st.tokens.revocations)).into_response()
}

/// `POST /sandbox/admin/expire-tokens`: every access token expires now (refresh tokens are untouched).
async fn expire_tokens(State(app): State<Arc<Shared>>) -> Response {
    let now = app.clock.now();
    let mut st = app.state.lock().await;
    let mut expired = 0usize;
    for token in st.tokens.access.values_mut() {
        if token.expires_at > now {
            token.expires_at = now;
            expired += 1;
        }
    }
    app.persist(&mut st).await;
    axum::Json(json!({"expired": expired})).into_response()
}

/// `POST /sandbox/admin/authorization-codes` `{"redirect_uri": "…"}` (optional): a code as the consent page would
/// hand it to the redirect URI.
async fn authorization_code(State(app): State<Arc<Shared>>, body: Bytes) -> Response {
    let body = match object_body(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let redirect_uri = match body.get("redirect_uri") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return bad_request(format!("\"redirect_uri\" must be a string, got {other}"));
        }
    };
    let realm = match body.get("realm_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return bad_request(format!("\"realm_id\" must be a string, got {other}")),
    };
    let now = app.clock.now();
    let mut st = app.state.lock().await;
    if let Some(r) = &realm
        && !st.companies.contains_key(r)
    {
        return bad_request(format!(
            "\"realm_id\": {r} is not a company of this sandbox"
        ));
    }
    let (code, realm_id) = oauth::mint_code(&mut st, realm, redirect_uri, now);
    app.persist(&mut st).await;
    axum::Json(json!({"code": code, "realmId": realm_id, "expires_in": oauth::AUTHORIZATION_CODE_TTL_SECONDS}))
        .into_response()
}
