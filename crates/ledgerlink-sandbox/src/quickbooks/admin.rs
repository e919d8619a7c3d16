//! The sandbox's own control API under `/sandbox/admin/…` (no auth; the server only listens on loopback).
//!
//! Layout: one handler per route — `POST reset` (fresh sample company, same credentials), `POST clock/advance`,
//! `GET state` (every entity as JSON), `GET calls` (the API call log), `POST expire-tokens` and
//! `POST authorization-codes`. Tests and demos use these to set up situations that would otherwise need waiting or
//! clicking through Intuit's consent page.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::Shared;
use super::entities::EntityKind;
use super::time::api_time;
use super::{oauth, seed};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/sandbox/admin/reset", post(reset))
        .route("/sandbox/admin/clock/advance", post(advance_clock))
        .route("/sandbox/admin/state", get(dump_state))
        .route("/sandbox/admin/calls", get(calls))
        .route("/sandbox/admin/expire-tokens", post(expire_tokens))
        .route(
            "/sandbox/admin/authorization-codes",
            post(authorization_code),
        )
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

/// `POST /sandbox/admin/reset` `{"seed": true}`: wipes company data and stored `requestid` replies and re-seeds.
/// Credentials and tokens survive so connected clients keep working.
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
    let now = app.clock.now();
    let mut st = app.state.lock().await;
    st.company = Default::default();
    if do_seed {
        let realm = st.credentials.realm_id.clone();
        seed::seed(&mut st.company, &realm, now);
    }
    st.replies.clear();
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

/// `GET /sandbox/admin/state`: every entity's rows (no secrets).
async fn dump_state(State(app): State<Arc<Shared>>) -> Response {
    let st = app.state.lock().await;
    let mut entities = Map::new();
    for kind in EntityKind::ALL {
        let rows: Vec<Value> = st.company.rows(kind.name()).cloned().collect();
        entities.insert(kind.name().to_string(), Value::Array(rows));
    }
    axum::Json(json!({
        "realm_id": st.credentials.realm_id,
        "now": api_time(app.clock.now()),
        "entities": entities,
        "deleted": st.company.deleted,
        "request_ids": st.replies.values().map(|m| m.len()).sum::<usize>(),
    }))
    .into_response()
}

/// `GET /sandbox/admin/calls`: the API calls served so far, oldest first.
async fn calls(State(app): State<Arc<Shared>>) -> Response {
    let st = app.state.lock().await;
    axum::Json(json!(st.calls)).into_response()
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
    let now = app.clock.now();
    let mut st = app.state.lock().await;
    let (code, realm_id) = oauth::mint_code(&mut st, redirect_uri, now);
    app.persist(&mut st).await;
    axum::Json(json!({"code": code, "realmId": realm_id, "expires_in": oauth::AUTHORIZATION_CODE_TTL_SECONDS}))
        .into_response()
}
