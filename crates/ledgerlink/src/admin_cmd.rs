//! `ledgerlink jobs …` and `ledgerlink review …`: look at and act on the queue and the review items of the store a
//! config file names. Tables for people; `--json` for scripts.

use std::path::Path;
use std::process::ExitCode;

use ledgerlink_engine::job_control;
use ledgerlink_engine::review::{self, Decision};
use ledgerlink_store::{Job, JobFilter, JobStatus, ReviewItem, ReviewStatus, Store};

async fn store(config: &Path) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    let cfg = ledgerlink_engine::Config::load(config)?;
    ledgerlink_engine::open_store(&cfg).await
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn job_line(j: &Job) -> String {
    format!(
        "{:>6}  {:<7}  {:>2}/{:<2}  {:<40}  {}",
        j.id,
        j.status.as_str(),
        j.attempts,
        j.max_attempts,
        j.flow.as_deref().unwrap_or("-"),
        j.last_error.as_deref().map(|e| e.chars().take(80).collect::<String>()).unwrap_or_default()
    )
}

pub async fn jobs_list(config: &Path, status: Option<String>, flow: Option<String>, limit: u32, json: bool) -> anyhow::Result<ExitCode> {
    let status = match status.as_deref() {
        None => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| anyhow::anyhow!("unknown status `{s}` (queued, running, done, dead, parked)"))?),
    };
    let jobs = store(config).await?.list_jobs(&JobFilter { status, flow, kind: None, limit: Some(limit) }).await?;
    if json {
        print_json(&jobs)?;
    } else {
        println!("{:>6}  {:<7}  {:<5}  {:<40}  last error", "id", "status", "tries", "flow");
        for j in &jobs {
            println!("{}", job_line(j));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn jobs_show(config: &Path, id: i64) -> anyhow::Result<ExitCode> {
    let job = store(config).await?.get_job(id).await?.ok_or_else(|| anyhow::anyhow!("job {id} does not exist"))?;
    print_json(&job)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn jobs_retry(config: &Path, id: i64, replay: bool) -> anyhow::Result<ExitCode> {
    let s = store(config).await?;
    let now = chrono::Utc::now();
    let job = if replay { job_control::replay(s.as_ref(), id, now).await? } else { job_control::retry(s.as_ref(), id, now).await? };
    println!("job {} queued again ({})", job.id, if replay { "replay" } else { "retry" });
    Ok(ExitCode::SUCCESS)
}

fn review_line(r: &ReviewItem) -> String {
    format!(
        "{:>6}  {:<8}  {:<16}  {}",
        r.id,
        match r.status {
            ReviewStatus::Open => "open",
            ReviewStatus::Resolved => "resolved",
        },
        r.item.kind,
        r.item.reason
    )
}

pub async fn review_list(config: &Path, status: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let status = match status.as_deref() {
        None => None,
        Some("open") => Some(ReviewStatus::Open),
        Some("resolved") => Some(ReviewStatus::Resolved),
        Some(s) => anyhow::bail!("unknown status `{s}` (open, resolved)"),
    };
    let items = store(config).await?.list_reviews(status).await?;
    if json {
        print_json(&items)?;
    } else {
        for r in &items {
            println!("{}", review_line(r));
        }
        if items.is_empty() {
            println!("nothing to review");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn review_show(config: &Path, id: i64) -> anyhow::Result<ExitCode> {
    let r = store(config).await?.get_review(id).await?.ok_or_else(|| anyhow::anyhow!("review item {id} does not exist"))?;
    println!("{}", review_line(&r));
    if let Some(subject) = &r.item.subject {
        println!("  record: {subject}");
    }
    if let Some(candidates) = r.item.details["candidates"].as_array() {
        println!("  candidates (choose one with --link ID, or --create):");
        for c in candidates {
            let name = c["record"]["DisplayName"].as_str().or_else(|| c["record"]["Name"].as_str()).unwrap_or("");
            println!("    {:<8} score {:<6} {name}", c["id"].as_str().unwrap_or("?"), c["score"]);
        }
    }
    println!("  details: {}", serde_json::to_string_pretty(&r.item.details)?);
    if let Some(res) = &r.resolution {
        println!("  decision: {res}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn review_resolve(config: &Path, id: i64, decision: Decision) -> anyhow::Result<ExitCode> {
    let s = store(config).await?;
    let item = review::resolve(s.as_ref(), id, &decision, chrono::Utc::now()).await?;
    println!(
        "review item {id} resolved ({}); {}",
        serde_json::to_string(&decision)?,
        item.item.job_id.map(|j| format!("job {j} will run again")).unwrap_or_else(|| "no job was waiting".into())
    );
    Ok(ExitCode::SUCCESS)
}
