//! Loopback-only controls under `/sandbox/admin/…` (no session needed): reset or seed, clock, state dump, call log,
//! custom fields, session expiry, authorization codes, faults, the daily API budget, the query page size and the
//! connected app's JWT certificate.
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
use crate::faults::FaultConfig;

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
        .route(
            "/sandbox/admin/faults",
            get(get_faults).post(set_faults).delete(clear_faults),
        )
        .route("/sandbox/admin/limits", get(get_limits).post(set_limits))
        .route(
            "/sandbox/admin/settings",
            get(get_settings).post(set_settings),
        )
        .route(
            "/sandbox/admin/connected-app/certificate",
            post(register_certificate).delete(clear_certificates),
        )
}

async fn get_faults(State(app): State<Arc<App>>) -> Response {
    axum::Json(json!(app.faults.config())).into_response()
}

/// Sets the fault rates (see [`crate::faults::FaultConfig`]); unknown keys and rates outside 0–1 are refused.
async fn set_faults(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let config: FaultConfig = match json_body(
        &body,
        "expected {\"rate_429\", \"rate_5xx\", \"slow_rate\", \"slow_ms\", \"drop_rate\", \"token_expiry_rate\", \"after_write_share\", \"seed\"}",
    ) {
        Ok(c) => c,
        Err(e) => return bad(e),
    };
    match app.faults.set(config) {
        Ok(()) => axum::Json(json!(app.faults.config())).into_response(),
        Err(e) => bad(e),
    }
}

async fn clear_faults(State(app): State<Arc<App>>) -> Response {
    app.faults.clear();
    axum::Json(json!(app.faults.config())).into_response()
}

fn limits_json(app: &App) -> serde_json::Value {
    let used = app.lock().usage_today(app.clock.now());
    json!({"daily": app.daily_limit(), "used": used, "remaining": app.daily_limit().saturating_sub(used)})
}

async fn get_limits(State(app): State<Arc<App>>) -> Response {
    axum::Json(limits_json(&app)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    daily: Option<u64>,
    /// Calls already used today (to reach the end of the budget without making them).
    used: Option<u64>,
}

/// `{"daily": n, "used"?: n}`: the day's allowance, and optionally how much of it is spent.
async fn set_limits(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let limits: Limits = match json_body(&body, "expected {\"daily\": n, \"used\"?: n}") {
        Ok(l) => l,
        Err(e) => return bad(e),
    };
    if let Some(daily) = limits.daily {
        app.set_daily_limit(daily);
    }
    if let Some(used) = limits.used {
        let mut org = app.lock();
        let today = app.clock.now().date_naive();
        org.api_usage = super::state::ApiUsage {
            day: Some(today),
            count: used,
        };
        app.persist(&org);
    }
    axum::Json(limits_json(&app)).into_response()
}

async fn get_settings(State(app): State<Arc<App>>) -> Response {
    axum::Json(json!({"query_page_size": app.page_size()})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    query_page_size: Option<usize>,
}

/// `{"query_page_size": n}`: rows per query batch (Salesforce: 2000), for exercising `nextRecordsUrl`.
async fn set_settings(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let settings: Settings = match json_body(&body, "expected {\"query_page_size\": n}") {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    if let Some(n) = settings.query_page_size {
        if !(1..=2000).contains(&n) {
            return bad(format!(
                "query_page_size must be between 1 and 2000, got {n}"
            ));
        }
        app.set_page_size(n);
    }
    axum::Json(json!({"query_page_size": app.page_size()})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateBody {
    pem: String,
}

/// Registers the connected app's certificate for the JWT bearer flow: `{"pem": "-----BEGIN CERTIFICATE-----…"}` or
/// the PEM itself as the body. An X.509 certificate or a public key (`BEGIN PUBLIC KEY`) is accepted.
async fn register_certificate(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body).trim().to_string();
    let pem = if text.starts_with("-----BEGIN") {
        text
    } else {
        match json_body::<CertificateBody>(
            &body,
            "expected {\"pem\": \"-----BEGIN CERTIFICATE-----…\"} or a PEM body",
        ) {
            Ok(c) => c.pem,
            Err(e) => return bad(e),
        }
    };
    if let Err(e) = check_pem(&pem) {
        return bad(e);
    }
    let mut org = app.lock();
    if !org.connected_app_certificates.contains(&pem) {
        org.connected_app_certificates.push(pem);
    }
    app.persist(&org);
    (
        StatusCode::CREATED,
        axum::Json(json!({"registered": org.connected_app_certificates.len()})),
    )
        .into_response()
}

/// Checks a PEM is a certificate or a public key webpki can use.
fn check_pem(pem: &str) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
    if let Ok(cert) = CertificateDer::from_pem_slice(pem.as_bytes()) {
        return webpki::EndEntityCert::try_from(&cert)
            .map(|_| ())
            .map_err(|e| format!("the certificate does not parse as X.509: {e}"));
    }
    if let Ok(spki) = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()) {
        return webpki::RawPublicKeyEntity::try_from(&spki)
            .map(|_| ())
            .map_err(|e| format!("the public key does not parse: {e}"));
    }
    Err("expected a PEM `CERTIFICATE` or `PUBLIC KEY`".into())
}

async fn clear_certificates(State(app): State<Arc<App>>) -> Response {
    let mut org = app.lock();
    org.connected_app_certificates.clear();
    app.persist(&org);
    axum::Json(json!({"registered": 0})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    /// Sample data or only the essentials (users, standard price book, custom fields); default: as started.
    seed: Option<bool>,
}

/// Fresh sample data; credentials and sessions survive so running clients carry on.
async fn reset(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let req: ResetBody = match json_body(&body, "expected {\"seed\"?: bool}") {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    let mut org = app.lock();
    seed::reset(&mut org, app.clock.now(), req.seed.unwrap_or(app.seed));
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
    org.records.edit_all(def.name, |rec| {
        rec.insert(field.name.clone(), super::value::FieldValue::Null);
    });
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
