//! The HTTP face of ledgerlink.
//!
//! Layout: [`router`] builds the axum router over a running [`ledgerlink_engine::Engine`]: `/healthz`, and a read-only
//! JSON API under `/api/v1/` (status with job counts and live figures, jobs, review items, audit log, runs). Later
//! work adds webhooks, OAuth callbacks and metrics here; [`router_with_ui`] puts the admin web UI beside the API; errors use one shape: `{"error":{"code","message"}}`.

use std::net::SocketAddr;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ledgerlink_engine::Engine;
use ledgerlink_engine::job_control::{self, JobControlError};
use ledgerlink_engine::review::{self, Decision, ResolveError};
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

impl From<JobControlError> for ApiError {
    fn from(e: JobControlError) -> Self {
        match e {
            JobControlError::NotFound(id) => ApiError::not_found(&format!("job {id}")),
            JobControlError::WrongState { .. } => ApiError { status: StatusCode::CONFLICT, code: "job_state", message: e.to_string() },
            JobControlError::Store(s) => s.into(),
        }
    }
}

impl From<ResolveError> for ApiError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::NotFound(id) => ApiError::not_found(&format!("review item {id}")),
            ResolveError::AlreadyResolved(_) => ApiError { status: StatusCode::CONFLICT, code: "already_resolved", message: e.to_string() },
            ResolveError::NotApplicable { .. } | ResolveError::NotACandidate(..) => {
                ApiError { status: StatusCode::UNPROCESSABLE_ENTITY, code: "bad_decision", message: e.to_string() }
            }
            ResolveError::Store(s) => s.into(),
        }
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
    // The platform connector's API (`/api/v1/platform/…`, `/api/v1/openapi.json`) over the same store.
    let platform = ledgerlink_platform::api::router(ledgerlink_platform::Platform::new(engine.store.clone(), Default::default()));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/webhooks/quickbooks/{connection}", post(quickbooks_webhook))
        .route("/api/v1/status", get(status))
        .route("/api/v1/jobs", get(jobs))
        .route("/api/v1/jobs/{id}", get(job))
        .route("/api/v1/jobs/{id}/retry", post(job_retry))
        .route("/api/v1/jobs/{id}/replay", post(job_replay))
        .route("/api/v1/reviews", get(reviews))
        .route("/api/v1/reviews/{id}", get(review))
        .route("/api/v1/reviews/{id}/resolve", post(review_resolve))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/runs", get(runs))
        .route("/api/v1/reports", get(reports))
        .route("/api/v1/reports/{id}", get(report))
        .route("/api/v1/flows/{name}/run", post(flow_run))
        .with_state(engine)
        .merge(platform)
}

/// The API with the admin web UI (`ledgerlink_web`) beside it.
pub fn router_with_ui(engine: Engine, platform: ledgerlink_platform::Platform, ui: ledgerlink_web::WebConfig) -> anyhow::Result<Router> {
    let web = ledgerlink_web::Web::new(engine.clone(), platform, ui)?;
    Ok(router(engine).merge(ledgerlink_web::router(web)))
}

/// Serves the router on `addr` until `shutdown` resolves; returns the bound address through `on_bound`.
pub async fn serve(
    engine: Engine,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_app(router(engine), addr, shutdown).await
}

/// Serves any router built here ([`router`], [`router_with_ui`]) on `addr` until `shutdown` resolves.
pub async fn serve_app(
    app: Router,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok((bound, task))
}

/// Intuit's webhook deliveries. 200 only once every event is durably queued; 401 for a bad signature (nothing is
/// queued); Intuit retries anything else.
async fn quickbooks_webhook(
    State(engine): State<Engine>,
    Path(connection): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    use ledgerlink_engine::webhooks::{WebhookRejection, accept_quickbooks};
    let sig = headers.get("intuit-signature").and_then(|v| v.to_str().ok());
    match accept_quickbooks(&engine, &connection, &body, sig).await {
        Ok(a) => Ok(Json(json!({"events": a.events, "queued": a.enqueued})).into_response()),
        Err(WebhookRejection::BadSignature) => {
            Err(ApiError { status: StatusCode::UNAUTHORIZED, code: "bad_signature", message: WebhookRejection::BadSignature.to_string() })
        }
        Err(e @ (WebhookRejection::UnknownConnection(_) | WebhookRejection::NotQuickbooks(_))) => {
            Err(ApiError { status: StatusCode::NOT_FOUND, code: "unknown_connection", message: e.to_string() })
        }
        Err(e @ WebhookRejection::NoVerifier(_)) => Err(ApiError { status: StatusCode::UNAUTHORIZED, code: "no_verifier", message: e.to_string() }),
        Err(e @ WebhookRejection::BadPayload(_)) => Err(ApiError::bad_request(e.to_string())),
        Err(WebhookRejection::Store(e)) => Err(e.into()),
    }
}

/// Prometheus text exposition. Labels are bounded: job status is a closed set; no record ids, no flow names
/// beyond the configured flows.
async fn metrics(State(engine): State<Engine>) -> ApiResult {
    use std::fmt::Write as _;
    let counts = engine.store.count_jobs().await?;
    let st = engine.stats.snapshot();
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP ledgerlink_{name}_total {help}\n# TYPE ledgerlink_{name}_total counter\nledgerlink_{name}_total {v}");
    };
    counter("changes_seen", "Source changes read by triggers (new id and version).", st.changes_seen);
    counter("jobs_enqueued", "Jobs put in the durable queue.", st.jobs_enqueued);
    counter("jobs_done", "Jobs finished.", st.jobs_done);
    counter("jobs_retried", "Failed attempts rescheduled with backoff.", st.jobs_retried);
    counter("jobs_dead", "Jobs dead-lettered after their last attempt.", st.jobs_dead);
    counter("jobs_parked", "Jobs that stopped for a review decision.", st.jobs_parked);
    counter("records_created", "Records created in external systems.", st.records_created);
    counter("records_updated", "Records updated in external systems.", st.records_updated);
    counter("records_matched", "Records matched to an existing one by the cascade.", st.records_matched);
    counter("duplicates_prevented", "Creates avoided because the record already existed.", st.duplicates_prevented);
    counter("writes_skipped_unchanged", "Updates not sent because nothing would change.", st.writes_skipped_unchanged);
    counter("changes_already_handled", "Changes whose job already existed (own writes, re-deliveries).", st.changes_already_handled);
    counter("errors", "Errors: failed writes, dead jobs, failed polls.", st.errors);
    let _ = writeln!(out, "# HELP ledgerlink_jobs Jobs in the store by status.\n# TYPE ledgerlink_jobs gauge");
    for (status, v) in [("queued", counts.queued), ("running", counts.running), ("done", counts.done), ("dead", counts.dead), ("parked", counts.parked)] {
        let _ = writeln!(out, "ledgerlink_jobs{{status=\"{status}\"}} {v}");
    }
    let _ = writeln!(out, "# HELP ledgerlink_flows Flows loaded.\n# TYPE ledgerlink_flows gauge\nledgerlink_flows {}", engine.flows.len());
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
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

async fn job_retry(State(engine): State<Engine>, Path(id): Path<i64>) -> ApiResult {
    Ok(Json(job_control::retry(engine.store.as_ref(), id, ledgerlink_engine::now()).await?).into_response())
}

async fn job_replay(State(engine): State<Engine>, Path(id): Path<i64>) -> ApiResult {
    Ok(Json(job_control::replay(engine.store.as_ref(), id, ledgerlink_engine::now()).await?).into_response())
}

async fn review(State(engine): State<Engine>, Path(id): Path<i64>) -> ApiResult {
    match engine.store.get_review(id).await? {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(ApiError::not_found(&format!("review item {id}"))),
    }
}

/// Body: `{"action":"link","target_id":"…"}`, `{"action":"create"}`, `{"action":"retry"}` or `{"action":"dismiss"}`.
async fn review_resolve(State(engine): State<Engine>, Path(id): Path<i64>, body: axum::body::Bytes) -> ApiResult {
    let decision: Decision = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("the decision must be JSON like {{\"action\":\"link\",\"target_id\":\"42\"}} or {{\"action\":\"create\"}}: {e}"))
    })?;
    Ok(Json(review::resolve(engine.store.as_ref(), id, &decision, ledgerlink_engine::now()).await?).into_response())
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
struct ReportQuery {
    flow: Option<String>,
    limit: Option<u32>,
}

/// The reports flows kept (weekly reconciliations, …), newest first.
async fn reports(State(engine): State<Engine>, Query(q): Query<ReportQuery>) -> ApiResult {
    let limit = q.limit.unwrap_or(50).min(500);
    Ok(Json(engine.store.list_reports(q.flow.as_deref(), limit).await?).into_response())
}

async fn report(State(engine): State<Engine>, Path(id): Path<i64>) -> ApiResult {
    match engine.store.get_report(id).await? {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(ApiError::not_found(&format!("report {id}"))),
    }
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

#[derive(Deserialize, Default)]
struct RunBody {
    record_id: Option<String>,
}

/// Queues a run now: `{"record_id": "…"}` for a flow that watches records, `{}` for a scheduled one.
async fn flow_run(State(engine): State<Engine>, Path(name): Path<String>, body: axum::body::Bytes) -> ApiResult {
    let body: RunBody = if body.is_empty() {
        RunBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("expected {{\"record_id\": \"…\"}} or an empty body: {e}")))?
    };
    let flow = engine.flows.get(&name).cloned().ok_or_else(|| ApiError::not_found(&format!("flow `{name}`")))?;
    let job = ledgerlink_engine::triggers::run_now(&engine, &flow, body.record_id.as_deref())
        .await
        .map_err(|e| ApiError { status: StatusCode::UNPROCESSABLE_ENTITY, code: "cannot_run", message: e.to_string() })?;
    Ok((StatusCode::ACCEPTED, Json(json!({"job": job}))).into_response())
}

#[derive(Deserialize)]
struct RunsQuery {
    flow: Option<String>,
    limit: Option<u32>,
}

async fn runs(State(engine): State<Engine>, Query(q): Query<RunsQuery>) -> ApiResult {
    Ok(Json(engine.store.list_runs(q.flow.as_deref(), q.limit.unwrap_or(100).min(1000)).await?).into_response())
}
