//! `ledgerlink reports list|show ID`: the reports flows kept (weekly reconciliations, …), read from the store the
//! config names — the same ones `GET /api/v1/reports` serves.

use std::path::Path;
use std::process::ExitCode;

use ledgerlink_store::Report;

async fn store(config: &Path) -> anyhow::Result<std::sync::Arc<dyn ledgerlink_store::Store>> {
    let cfg = ledgerlink_engine::Config::load(config)?;
    ledgerlink_engine::open_store(&cfg).await
}

fn line(r: &Report) -> String {
    let mismatches = match r.report.body["counts"]["mismatches"].as_u64() {
        Some(0) => "no mismatches".to_string(),
        Some(1) => "1 mismatch".to_string(),
        Some(n) => format!("{n} mismatches"),
        None => String::new(),
    };
    format!(
        "{:<6} {}  {:<44} {:<24} {mismatches}",
        r.id,
        r.report.created_at.format("%Y-%m-%d %H:%M"),
        r.report.flow,
        r.report.period
    )
}

pub async fn list(config: &Path, flow: Option<String>, limit: u32, json: bool) -> anyhow::Result<ExitCode> {
    let reports = store(config).await?.list_reports(flow.as_deref(), limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else if reports.is_empty() {
        println!("no reports yet");
    } else {
        for r in &reports {
            println!("{}", line(r));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn show(config: &Path, id: i64, json: bool) -> anyhow::Result<ExitCode> {
    let r = store(config).await?.get_report(id).await?.ok_or_else(|| anyhow::anyhow!("report {id} does not exist (see `ledgerlink reports list`)"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("report {} of flow {} for {} (made {})", r.id, r.report.flow, r.report.period, r.report.created_at.to_rfc3339());
        println!();
        println!("{}", r.report.text);
    }
    Ok(ExitCode::SUCCESS)
}
