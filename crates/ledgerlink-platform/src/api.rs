//! The platform's HTTP API under `/api/v1/platform/…`, and its OpenAPI document at `/api/v1/openapi.json`.
//!
//! Every route but the document needs `Authorization: Bearer <token>`; the token names the one workspace the
//! request sees. A record of another workspace is answered 404, exactly like one that does not exist, so ids
//! leak nothing. A `POST` with an `Idempotency-Key` header is answered once and replayed afterwards (see
//! [`crate::idempotency`]); replays carry `Idempotent-Replayed: true`. Errors have one shape:
//! `{"error": {"code", "message"}}`.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::idempotency::{Claim, StoredAnswer, request_hash};
use crate::records::{Pushed, RecordKind};
use crate::{Platform, PlatformError, Workspace};

/// The largest request body accepted (a big invoice is a few hundred kB).
pub const MAX_BODY: usize = 2 * 1024 * 1024;
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

impl IntoResponse for PlatformError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match &self {
            // The details of storage failures are for the server log, not the caller.
            PlatformError::Store(e) if status.is_server_error() => {
                tracing::error!(error = %e, "store error in the platform API");
                "the request could not be completed; see the server log".to_string()
            }
            other => other.to_string(),
        };
        let mut error = json!({"code": self.code(), "message": message});
        if let PlatformError::Invalid { field, .. } = &self {
            error["field"] = json!(field);
        }
        (status, Json(json!({ "error": error }))).into_response()
    }
}

type ApiResult = Result<Response, PlatformError>;

/// The router the server mounts (it adds nothing else under `/api/v1/platform` or `/api/v1/openapi.json`).
pub fn router(platform: Platform) -> Router {
    let authed = Router::new()
        .route("/api/v1/platform/workspace", get(workspace))
        .route("/api/v1/platform/webhooks", get(list_webhooks).post(subscribe))
        .route("/api/v1/platform/webhooks/{id}", delete(unsubscribe))
        .route("/api/v1/platform/webhook-deliveries", get(deliveries))
        .route("/api/v1/platform/invoices/{id}/payment", get(payment))
        .route("/api/v1/platform/{kind}", get(list).post(push))
        .route("/api/v1/platform/{kind}/{id}", get(read))
        .layer(middleware::from_fn_with_state(platform.clone(), authenticate_and_replay));
    Router::new()
        .route("/api/v1/openapi.json", get(|| async { Json(crate::openapi::document()) }))
        .route(QUICKBOOKS_NOTIFICATIONS_PATH, axum::routing::post(quickbooks_notification))
        .merge(authed)
        .with_state(platform)
}

/// Where the QuickBooks app's webhook endpoint points (Intuit developer portal > Webhooks). Authenticated by
/// Intuit's signature, not by a platform token.
pub const QUICKBOOKS_NOTIFICATIONS_PATH: &str = "/webhooks/platform/quickbooks";

/// Intuit's change notifications: 200 once the payment reads are queued, 401 for a bad signature (nothing
/// queued), 400 for a body that is not a notification; Intuit retries anything but a 2xx.
async fn quickbooks_notification(State(platform): State<Platform>, headers: axum::http::HeaderMap, body: Bytes) -> Response {
    use crate::notifications::NotificationRejection;
    let sig = headers.get(ledgerlink_connectors::quickbooks::webhook::SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let (status, code, message) = match platform.accept_quickbooks_notification(&body, sig).await {
        Ok(a) => return Json(json!({"events": a.events, "queued": a.queued})).into_response(),
        Err(e @ NotificationRejection::BadSignature) => (StatusCode::UNAUTHORIZED, "bad_signature", e.to_string()),
        Err(e @ NotificationRejection::BadPayload(_)) => (StatusCode::BAD_REQUEST, "bad_payload", e.to_string()),
        Err(NotificationRejection::Store(e)) => {
            tracing::error!(error = %e, "QuickBooks notification not queued");
            (StatusCode::SERVICE_UNAVAILABLE, "internal", "the notification could not be queued; send it again".to_string())
        }
    };
    (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// Authenticates the bearer token (the workspace goes into the request) and handles `Idempotency-Key`.
async fn authenticate_and_replay(State(platform): State<Platform>, mut req: Request, next: Next) -> Response {
    let Some(token) = bearer(&req) else { return PlatformError::Unauthorized.into_response() };
    let ws = match platform.authenticate(token).await {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    req.extensions_mut().insert(ws.clone());
    let key = req.headers().get(IDEMPOTENCY_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let Some(key) = key.filter(|_| req.method() == Method::POST) else { return next.run(req).await };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return PlatformError::invalid("body", format!("larger than {MAX_BODY} bytes")).into_response(),
    };
    let hash = request_hash(parts.method.as_str(), parts.uri.path(), &bytes);
    match platform.idempotency_claim(&ws.id, &key, &hash).await {
        Err(e) => e.into_response(),
        Ok(Claim::Replay(answer)) => answer_response(&answer, true),
        Ok(Claim::Run) => {
            let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
            let (rparts, rbody) = response.into_parts();
            let body = axum::body::to_bytes(rbody, usize::MAX).await.unwrap_or_default();
            let answer = StoredAnswer { status: rparts.status.as_u16(), body: String::from_utf8_lossy(&body).into_owned() };
            if let Err(e) = platform.idempotency_finish(&ws.id, &key, &hash, answer).await {
                tracing::warn!(error = %e, "idempotency answer not stored; a repeat will run again");
            }
            Response::from_parts(rparts, Body::from(body))
        }
    }
}

fn answer_response(answer: &StoredAnswer, replayed: bool) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut resp = (status, Bytes::from(answer.body.clone())).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if replayed {
        resp.headers_mut().insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    resp
}

fn kind_of(path: &str) -> Result<RecordKind, PlatformError> {
    RecordKind::from_path(path).ok_or_else(|| PlatformError::NotFound { what: "resource", id: path.to_string() })
}

async fn workspace(State(p): State<Platform>, Extension(ws): Extension<Workspace>) -> ApiResult {
    let status = p.status(&ws.id).await?;
    Ok(Json(json!({"workspace": ws, "quickbooks": status})).into_response())
}

async fn push(State(p): State<Platform>, Extension(ws): Extension<Workspace>, Path(kind): Path<String>, body: Bytes) -> ApiResult {
    let kind = kind_of(&kind)?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| PlatformError::invalid("body", format!("not valid JSON: {e}")))?;
    let (rec, pushed) = p.push_record(&ws.id, kind, value).await?;
    let status = if pushed == Pushed::Created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(rec)).into_response())
}

async fn list(State(p): State<Platform>, Extension(ws): Extension<Workspace>, Path(kind): Path<String>) -> ApiResult {
    let kind = kind_of(&kind)?;
    Ok(Json(json!({"data": p.list_records(&ws.id, kind).await?})).into_response())
}

async fn read(State(p): State<Platform>, Extension(ws): Extension<Workspace>, Path((kind, id)): Path<(String, String)>) -> ApiResult {
    let kind = kind_of(&kind)?;
    Ok(Json(p.get_record(&ws.id, kind, &id).await?).into_response())
}

async fn payment(State(p): State<Platform>, Extension(ws): Extension<Workspace>, Path(id): Path<String>) -> ApiResult {
    let rec = p.get_record(&ws.id, RecordKind::Invoice, &id).await?;
    Ok(Json(json!({"invoice_id": rec.id, "sync": rec.sync, "payment": rec.payment})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeBody {
    url: String,
    #[serde(default)]
    events: Vec<String>,
}

async fn subscribe(State(p): State<Platform>, Extension(ws): Extension<Workspace>, body: Bytes) -> ApiResult {
    let b: SubscribeBody = serde_json::from_slice(&body).map_err(|e| PlatformError::invalid("body", e.to_string()))?;
    let created = p.subscribe_webhook(&ws.id, &b.url, &b.events).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn list_webhooks(State(p): State<Platform>, Extension(ws): Extension<Workspace>) -> ApiResult {
    Ok(Json(json!({"data": p.list_webhooks(&ws.id).await?})).into_response())
}

async fn unsubscribe(State(p): State<Platform>, Extension(ws): Extension<Workspace>, Path(id): Path<String>) -> ApiResult {
    p.delete_webhook(&ws.id, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<u32>,
}

async fn deliveries(State(p): State<Platform>, Extension(ws): Extension<Workspace>, Query(q): Query<Limit>) -> ApiResult {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    Ok(Json(json!({"data": p.list_deliveries(&ws.id, limit).await?})).into_response())
}
