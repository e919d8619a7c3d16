//! The operating pages: overview with the activity chart, flows (switch on/off, parameters, run now), runs,
//! jobs (retry, replay), the review queue (resolve with the candidates shown) and the audit log.
//!
//! Actions reuse the engine's own functions (`job_control`, `review::resolve`, `triggers::run_now`), the same
//! ones the CLI and the JSON API call, so the three never disagree. After an action the browser is sent back to
//! the list with a sentence saying what happened (post/redirect/get, so a reload does not repeat it).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use chrono::Duration;
use ledgerlink_engine::job_control::{self, JobControlError};
use ledgerlink_engine::review::{self, Decision, ResolveError};
use ledgerlink_flow::Trigger;
use ledgerlink_store::{AuditEntry, AuditFilter, Job, JobFilter, JobStatus, ReviewItem, ReviewStatus, Run};
use serde::Deserialize;

use crate::Web;
use crate::chart;
use crate::pages::{Layout, UiError, UiResult, render};
use crate::session::{Admin, NoFields, Posted};

#[derive(Debug, Default, Deserialize)]
pub struct Flash {
    done: Option<String>,
    status: Option<String>,
    range: Option<String>,
}

fn back_with(path: &str, message: &str) -> axum::response::Response {
    let q = url::form_urlencoded::Serializer::new(String::new()).append_pair("done", message).finish();
    Redirect::to(&format!("{path}?{q}")).into_response()
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    l: Layout,
    chart: String,
    range: &'static str,
    counts: ledgerlink_store::JobCounts,
    open_reviews: usize,
    flows: usize,
}

/// `GET /`: job counts, open reviews, and writes over time (`?range=7d` for a week by day).
pub async fn dashboard(State(web): State<Web>, admin: Admin, Query(q): Query<Flash>) -> UiResult {
    let store = &web.engine.store;
    let counts = store.count_jobs().await?;
    let open_reviews = store.list_reviews(Some(ReviewStatus::Open)).await?.len();
    let audit = store.list_audit(&AuditFilter { limit: Some(10_000), ..Default::default() }).await?;
    let events = audit.iter().map(|a| (a.entry.at, a.entry.outcome != "error"));
    let now = ledgerlink_engine::now();
    let (range, svg) = if q.range.as_deref() == Some("7d") {
        let slots = chart::bucket(events, now, Duration::days(1), 7);
        ("7d", chart::svg(&slots, "Writes to connected systems per day, last 7 days", |t| t.format("%a %d").to_string()))
    } else {
        let slots = chart::bucket(events, now, Duration::hours(1), 24);
        ("24h", chart::svg(&slots, "Writes to connected systems per hour, last 24 hours", |t| t.format("%H:00").to_string()))
    };
    let l = Layout::new(&admin, web.config.banner.as_ref(), "Overview", "overview");
    Ok(render(StatusCode::OK, &DashboardPage { l, chart: svg, range, counts, open_reviews, flows: web.engine.flows.len() }))
}

/// One flow as listed.
#[derive(Debug)]
struct FlowRow {
    name: String,
    description: String,
    trigger: String,
    params: Vec<(String, String)>,
    enabled: bool,
    switched: Option<String>,
}

#[derive(Template)]
#[template(path = "flows.html")]
struct FlowsPage {
    l: Layout,
    flows: Vec<FlowRow>,
    done: Option<String>,
}

/// `GET /flows`.
pub async fn flows(State(web): State<Web>, admin: Admin, Query(q): Query<Flash>) -> UiResult {
    let switches = web.web_store().flow_switches().await?;
    let flows = web
        .engine
        .flows
        .values()
        .map(|f| {
            let sw = switches.iter().find(|s| s.flow == f.name);
            FlowRow {
                name: f.name.clone(),
                description: f.description.clone(),
                trigger: match &f.trigger {
                    Trigger::Poll { connection, object, interval_seconds, webhooks, .. } => format!(
                        "Watches {object} in {connection} every {interval_seconds} s{}",
                        if *webhooks { ", and on change notifications" } else { "" }
                    ),
                    Trigger::Schedule { cron, timezone } => format!("On schedule `{cron}` ({timezone})"),
                },
                params: f.params.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect(),
                enabled: sw.is_none_or(|s| s.enabled),
                switched: sw.map(|s| format!("{} by {} at {}", if s.enabled { "switched on" } else { "switched off" }, s.changed_by, s.changed_at.format("%Y-%m-%d %H:%M UTC"))),
            }
        })
        .collect();
    let l = Layout::new(&admin, web.config.banner.as_ref(), "Flows", "flows");
    Ok(render(StatusCode::OK, &FlowsPage { l, flows, done: q.done }))
}

#[derive(Debug, Deserialize)]
pub struct SwitchForm {
    enabled: String,
}

/// `POST /flows/{name}/switch` with `enabled=true|false`.
pub async fn flow_switch(State(web): State<Web>, Path(name): Path<String>, posted: Posted<SwitchForm>) -> UiResult {
    if !web.engine.flows.contains_key(&name) {
        return Err(UiError::not_found(&format!("The flow “{name}”")).back_to("/flows"));
    }
    let on = posted.form.enabled == "true";
    web.web_store().set_flow_enabled(&name, on, posted.admin.email(), ledgerlink_engine::now()).await?;
    Ok(back_with("/flows", &format!("{name} is switched {}.", if on { "on" } else { "off: it takes no new changes until switched on" })))
}

/// `POST /flows/{name}/run`: one run now (a scheduled flow's extra firing).
pub async fn flow_run(State(web): State<Web>, Path(name): Path<String>, _posted: Posted<NoFields>) -> UiResult {
    let flow = web.engine.flows.get(&name).cloned().ok_or_else(|| UiError::not_found(&format!("The flow “{name}”")).back_to("/flows"))?;
    match ledgerlink_engine::triggers::run_now(&web.engine, &flow, None).await {
        Ok(job) => Ok(back_with("/flows", &format!("{name}: run queued as job {job}."))),
        Err(e) => Err(UiError::new(StatusCode::UNPROCESSABLE_ENTITY, "The flow could not be run now", e.to_string()).back_to("/flows")),
    }
}

#[derive(Template)]
#[template(path = "runs.html")]
struct RunsPage {
    l: Layout,
    runs: Vec<Run>,
}

/// `GET /runs`.
pub async fn runs(State(web): State<Web>, admin: Admin) -> UiResult {
    let runs = web.engine.store.list_runs(None, 200).await?;
    let l = Layout::new(&admin, web.config.banner.as_ref(), "Runs", "runs");
    Ok(render(StatusCode::OK, &RunsPage { l, runs }))
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    l: Layout,
    jobs: Vec<Job>,
    status: String,
    done: Option<String>,
}

/// `GET /jobs?status=dead`.
pub async fn jobs(State(web): State<Web>, admin: Admin, Query(q): Query<Flash>) -> UiResult {
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            UiError::new(StatusCode::BAD_REQUEST, "Unknown job status", format!("“{s}” is not a job status; use queued, running, done, dead or parked.")).back_to("/jobs")
        })?),
    };
    let jobs = web.engine.store.list_jobs(&JobFilter { status, flow: None, kind: None, limit: Some(200) }).await?;
    let l = Layout::new(&admin, web.config.banner.as_ref(), "Jobs", "jobs");
    Ok(render(StatusCode::OK, &JobsPage { l, jobs, status: q.status.unwrap_or_default(), done: q.done }))
}

fn job_error(e: JobControlError) -> UiError {
    match e {
        JobControlError::NotFound(id) => UiError::not_found(&format!("Job {id}")).back_to("/jobs"),
        JobControlError::WrongState { .. } => UiError::new(StatusCode::CONFLICT, "That cannot be done to this job now", e.to_string()).back_to("/jobs"),
        JobControlError::Store(s) => s.into(),
    }
}

/// `POST /jobs/{id}/retry`: a dead-lettered job runs again.
pub async fn job_retry(State(web): State<Web>, Path(id): Path<i64>, _posted: Posted<NoFields>) -> UiResult {
    job_control::retry(web.engine.store.as_ref(), id, ledgerlink_engine::now()).await.map_err(job_error)?;
    web.engine.work_queued.notify_one();
    Ok(back_with("/jobs", &format!("Job {id} is queued to run again.")))
}

/// `POST /jobs/{id}/replay`: a finished job runs again (safe: creates are found by their links and keys).
pub async fn job_replay(State(web): State<Web>, Path(id): Path<i64>, _posted: Posted<NoFields>) -> UiResult {
    job_control::replay(web.engine.store.as_ref(), id, ledgerlink_engine::now()).await.map_err(job_error)?;
    web.engine.work_queued.notify_one();
    Ok(back_with("/jobs", &format!("Job {id} is queued to replay; nothing already written will be written twice.")))
}

/// A candidate of an ambiguous match, as shown.
#[derive(Debug)]
struct Candidate {
    id: String,
    score: String,
    summary: String,
}

#[derive(Debug)]
struct ReviewRow {
    item: ReviewItem,
    candidates: Vec<Candidate>,
    subject: String,
}

#[derive(Template)]
#[template(path = "reviews.html")]
struct ReviewsPage {
    l: Layout,
    open: Vec<ReviewRow>,
    resolved: Vec<ReviewRow>,
    done: Option<String>,
}

fn review_row(item: ReviewItem) -> ReviewRow {
    let candidates = item.item.details["candidates"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let rec = &c["record"];
                    let summary = ["DisplayName", "Name", "CompanyName", "PrimaryEmailAddr", "Email"]
                        .iter()
                        .filter_map(|k| match &rec[*k] {
                            serde_json::Value::String(s) => Some(s.clone()),
                            serde_json::Value::Object(o) => o.get("Address").and_then(|a| a.as_str()).map(str::to_string),
                            _ => None,
                        })
                        .collect::<Vec<_>>()
                        .join(" · ");
                    Candidate {
                        id: c["id"].as_str().unwrap_or_default().to_string(),
                        score: c["score"].as_f64().and_then(rust_decimal::Decimal::from_f64_retain).map(|d| format!("{}%", (d * rust_decimal::Decimal::ONE_HUNDRED).round())).unwrap_or_default(),
                        summary,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let subject = item.item.subject.as_ref().map(|s| format!("{} {} in {}", s.object, s.id, s.connection)).unwrap_or_default();
    ReviewRow { item, candidates, subject }
}

/// `GET /reviews`.
pub async fn reviews(State(web): State<Web>, admin: Admin, Query(q): Query<Flash>) -> UiResult {
    let all = web.engine.store.list_reviews(None).await?;
    let (open, resolved): (Vec<_>, Vec<_>) = all.into_iter().map(review_row).partition(|r| r.item.status == ReviewStatus::Open);
    let l = Layout::new(&admin, web.config.banner.as_ref(), "Review queue", "reviews");
    Ok(render(StatusCode::OK, &ReviewsPage { l, open, resolved: resolved.into_iter().take(50).collect(), done: q.done }))
}

#[derive(Debug, Deserialize)]
pub struct ResolveForm {
    action: String,
    target_id: Option<String>,
}

/// `POST /reviews/{id}/resolve` with `action=link&target_id=…`, `create`, `retry` or `dismiss`.
pub async fn review_resolve(State(web): State<Web>, Path(id): Path<i64>, posted: Posted<ResolveForm>) -> UiResult {
    let f = posted.form;
    let decision = match f.action.as_str() {
        "link" => Decision::Link { target_id: f.target_id.unwrap_or_default() },
        "create" => Decision::Create,
        "retry" => Decision::Retry,
        "dismiss" => Decision::Dismiss,
        other => return Err(UiError::new(StatusCode::BAD_REQUEST, "Unknown decision", format!("“{other}” is not a decision.")).back_to("/reviews")),
    };
    review::resolve(web.engine.store.as_ref(), id, &decision, ledgerlink_engine::now()).await.map_err(|e| match e {
        ResolveError::NotFound(_) => UiError::not_found(&format!("Review item {id}")).back_to("/reviews"),
        ResolveError::Store(s) => s.into(),
        other => UiError::new(StatusCode::CONFLICT, "That decision cannot be taken", other.to_string()).back_to("/reviews"),
    })?;
    web.engine.work_queued.notify_one();
    let what = match decision {
        Decision::Link { target_id } => format!("linked to {target_id}"),
        Decision::Create => "a new record will be created".into(),
        Decision::Retry => "it will run again as it is".into(),
        Decision::Dismiss => "dismissed; nothing will be written for it".into(),
    };
    Ok(back_with("/reviews", &format!("Review item {id}: {what}.")))
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    l: Layout,
    entries: Vec<AuditEntry>,
}

/// `GET /audit`: every write to a connected system, newest first.
pub async fn audit(State(web): State<Web>, admin: Admin) -> UiResult {
    let entries = web.engine.store.list_audit(&AuditFilter { limit: Some(300), ..Default::default() }).await?;
    let l = Layout::new(&admin, web.config.banner.as_ref(), "Audit log", "audit");
    Ok(render(StatusCode::OK, &AuditPage { l, entries }))
}

#[derive(Template)]
#[template(path = "webhooks.html")]
struct WebhooksPage {
    l: Layout,
    deliveries: Vec<ledgerlink_platform::webhooks::Delivery>,
}

/// `GET /webhooks`: the platform's outgoing webhook deliveries with every attempt.
pub async fn webhooks(State(web): State<Web>, admin: Admin) -> UiResult {
    let deliveries = web.platform.list_deliveries(admin.workspace(), 200).await.map_err(crate::integrations::platform_error)?;
    let l = Layout::new(&admin, web.config.banner.as_ref(), "Outgoing webhooks", "webhooks");
    Ok(render(StatusCode::OK, &WebhooksPage { l, deliveries }))
}

#[derive(Template)]
#[template(path = "reports.html")]
struct ReportsPage {
    l: Layout,
    reports: Vec<ledgerlink_store::Report>,
}

/// `GET /reports`: the reconciliation reports flows kept.
pub async fn reports(State(web): State<Web>, admin: Admin) -> UiResult {
    let reports = web.engine.store.list_reports(None, 50).await?;
    let l = Layout::new(&admin, web.config.banner.as_ref(), "Reconciliation reports", "reports");
    Ok(render(StatusCode::OK, &ReportsPage { l, reports }))
}
