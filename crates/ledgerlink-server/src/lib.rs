//! The HTTP face of ledgerlink.
//!
//! Layout: [`router`] builds the axum router over a running [`ledgerlink_engine::Engine`]: `/healthz`, and a read-only
//! JSON API under `/api/v1/` (status with job counts and live figures, jobs, review items, audit log, runs). Later
//! work adds webhooks, the admin UI, OAuth callbacks and metrics here; errors use one shape: `{"error":{"code","message"}}`.

use std::net::SocketAddr;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ledgerlink_engine::Engine;
use ledgerlink_store::{AuditFilter, JobFilter, JobStatus, ReviewStatus};
use serde::Deserialize;
use serde_json::json;

/// One error shape for the whole API.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn not_found(what: &str) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, code: "not_found", message: format!("{what} not found") }
    }
    fn bad_request(message: String) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, code: "bad_request", message }
    }
}

impl From<ledgerlink_store::StoreError> for ApiError {
    fn from(e: ledgerlink_store::StoreError) -> Self {
        tracing::error!(error = %e, "store error in API");
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, code: "store_error", message: "the store could not answer; see the server log".into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": {"code": self.code, "message": self.message}}))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/status", get(status))
        .route("/api/v1/jobs", get(jobs))
        .route("/api/v1/jobs/{id}", get(job))
        .route("/api/v1/reviews", get(reviews))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/runs", get(runs))
        .with_state(engine)
}

/// Serves the router on `addr` until `shutdown` resolves; returns the bound address through `on_bound`.
pub async fn serve(
    engine: Engine,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = router(engine);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok((bound, task))
}

async fn status(State(engine): State<Engine>) -> ApiResult {
    let counts = engine.store.count_jobs().await?;
    Ok(Json(json!({
        "store": engine.store.backend(),
        "flows": engine.flows.keys().collect::<Vec<_>>(),
        "connections": engine.connectors.keys().collect::<Vec<_>>(),
        "jobs": counts,
        "stats": engine.stats.snapshot(),
    }))
    .into_response())
}

#[derive(Deserialize)]
struct JobsQuery {
    status: Option<String>,
    flow: Option<String>,
    limit: Option<u32>,
}

async fn jobs(State(engine): State<Engine>, Query(q): Query<JobsQuery>) -> ApiResult {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| ApiError::bad_request(format!("unknown job status `{s}` (queued, running, done, dead, parked)")))?),
    };
    let list = engine.store.list_jobs(&JobFilter { status, flow: q.flow, kind: None, limit: Some(q.limit.unwrap_or(100).min(1000)) }).await?;
    Ok(Json(list).into_response())
}

async fn job(State(engine): State<Engine>, Path(id): Path<i64>) -> ApiResult {
    match engine.store.get_job(id).await? {
        Some(j) => Ok(Json(j).into_response()),
        None => Err(ApiError::not_found(&format!("job {id}"))),
    }
}

#[derive(Deserialize)]
struct ReviewQuery {
    status: Option<String>,
}

async fn reviews(State(engine): State<Engine>, Query(q): Query<ReviewQuery>) -> ApiResult {
    let status = match q.status.as_deref() {
        None => None,
        Some("open") => Some(ReviewStatus::Open),
        Some("resolved") => Some(ReviewStatus::Resolved),
        Some(s) => return Err(ApiError::bad_request(format!("unknown review status `{s}` (open, resolved)"))),
    };
    Ok(Json(engine.store.list_reviews(status).await?).into_response())
}

#[derive(Deserialize)]
struct AuditQuery {
    flow: Option<String>,
    connection: Option<String>,
    object: Option<String>,
    limit: Option<u32>,
}

async fn audit(State(engine): State<Engine>, Query(q): Query<AuditQuery>) -> ApiResult {
    let f = AuditFilter { flow: q.flow, connection: q.connection, object: q.object, record_id: None, limit: Some(q.limit.unwrap_or(100).min(1000)) };
    Ok(Json(engine.store.list_audit(&f).await?).into_response())
}

#[derive(Deserialize)]
struct RunsQuery {
    flow: Option<String>,
    limit: Option<u32>,
}

async fn runs(State(engine): State<Engine>, Query(q): Query<RunsQuery>) -> ApiResult {
    Ok(Json(engine.store.list_runs(q.flow.as_deref(), q.limit.unwrap_or(100).min(1000)).await?).into_response())
}
