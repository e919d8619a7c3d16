//! Loopback-only controls under `/sandbox/admin/…` (no session needed): reset, clock, state dump, call log,
//! custom fields, session expiry and authorization codes.
//!
//! Layout: one handler per route; admin errors are a flat `{"error": "…"}` with 400, since no Salesforce client
//! ever parses them.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Duration;
use serde::Deserialize;
use serde_json::json;

use super::objects::CustomField;
use super::state::{AuthCode, Org, random_token};
use super::value::format_datetime;
use super::{App, seed};

fn bad(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": message.into()})),
    )
        .into_response()
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8], what: &str) -> Result<T, String> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| format!("{what}: {e}"))
}

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/sandbox/admin/reset", post(reset))
        .route("/sandbox/admin/clock/advance", post(advance_clock))
        .route("/sandbox/admin/state", get(state))
        .route("/sandbox/admin/calls", get(calls))
        .route("/sandbox/admin/fields", post(define_field))
        .route("/sandbox/admin/expire-sessions", post(expire_sessions))
        .route(
            "/sandbox/admin/authorization-codes",
            post(authorization_code),
        )
}

/// Fresh sample data; credentials and sessions survive so running clients carry on.
async fn reset(State(app): State<Arc<App>>) -> Response {
    let mut org = app.lock();
    seed::reset(&mut org, app.clock.now(), app.seed);
    app.persist(&org);
    axum::Json(json!({"reset": true})).into_response()
}

#[derive(Deserialize)]
struct Advance {
    seconds: i64,
}

async fn advance_clock(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let advance: Advance = match json_body(&body, "expected {\"seconds\": n}") {
        Ok(a) => a,
        Err(e) => return bad(e),
    };
    if advance.seconds < 0 {
        return bad(format!(
            "seconds must not be negative (got {}): the clock only moves forward",
            advance.seconds
        ));
    }
    app.clock.advance(Duration::seconds(advance.seconds));
    axum::Json(json!({"now": format_datetime(app.clock.now())})).into_response()
}

async fn state(State(app): State<Arc<App>>) -> Response {
    let org = app.lock();
    let records: BTreeMap<&String, Vec<&super::state::Record>> = org
        .records
        .iter()
        .map(|(k, v)| (k, v.values().collect()))
        .collect();
    let now = app.clock.now();
    axum::Json(json!({
        "orgId": org.org_id,
        "username": org.username,
        "now": format_datetime(now),
        "apiUsage": org.usage_today(now),
        "activeSessions": org.access_tokens.values().filter(|t| t.expires_at > now).count(),
        "customFields": org.custom_fields,
        "records": records,
    }))
    .into_response()
}

async fn calls(State(app): State<Arc<App>>) -> Response {
    let org = app.lock();
    axum::Json(json!(org.calls.iter().collect::<Vec<_>>())).into_response()
}

/// Adds a custom field, e.g. `{"object":"Opportunity","name":"QuickBooks_Invoice_Id__c","type":"Text","externalId":true}`.
async fn define_field(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let field: CustomField = match json_body(
        &body,
        "expected {\"object\", \"name\", \"type\", \"externalId\"?}",
    ) {
        Ok(f) => f,
        Err(e) => return bad(e),
    };
    let mut org = app.lock();
    match add_custom_field(&mut org, field) {
        Ok(field) => {
            app.persist(&org);
            (StatusCode::CREATED, axum::Json(json!(field))).into_response()
        }
        Err(e) => bad(e),
    }
}

/// Validates and records a custom field; existing records get it as null.
pub fn add_custom_field(org: &mut Org, mut field: CustomField) -> Result<CustomField, String> {
    let def = org
        .def(&field.object)
        .ok_or_else(|| format!("object `{}` does not exist in this org", field.object))?;
    field.object = def.name.to_string();
    field.to_field_def()?;
    if def.field(&field.name).is_some() {
        return Err(format!(
            "field `{}` already exists on {}",
            field.name, def.name
        ));
    }
    for rec in org
        .records
        .get_mut(def.name)
        .into_iter()
        .flat_map(|m| m.values_mut())
    {
        rec.insert(field.name.clone(), super::value::FieldValue::Null);
    }
    org.custom_fields.push(field.clone());
    Ok(field)
}

async fn expire_sessions(State(app): State<Arc<App>>) -> Response {
    let mut org = app.lock();
    let n = org.access_tokens.len();
    org.access_tokens.clear();
    app.persist(&org);
    axum::Json(json!({"expired": n})).into_response()
}

#[derive(Deserialize)]
struct CodeRequest {
    redirect_uri: Option<String>,
}

/// Stands in for the browser consent step of the web-server flow: a one-time code for the API user.
async fn authorization_code(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let req: CodeRequest = match json_body(&body, "expected {\"redirect_uri\"?}") {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    let mut org = app.lock();
    let code = format!("aPrx{}", random_token(60));
    let user_id = org.api_user_id.clone();
    org.auth_codes.insert(
        code.clone(),
        AuthCode {
            user_id,
            redirect_uri: req.redirect_uri.clone(),
            expires_at: app.clock.now() + Duration::minutes(15),
        },
    );
    app.persist(&org);
    (
        StatusCode::CREATED,
        axum::Json(json!({"code": code, "redirect_uri": req.redirect_uri, "expires_in": 900})),
    )
        .into_response()
}
