//! `ledgerlink flows validate` and `ledgerlink templates`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use ledgerlink_engine::templates;

/// Parses `key=value` pairs given with `--set`.
pub fn parse_sets(sets: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for s in sets {
        let (k, v) = s.split_once('=').ok_or_else(|| anyhow::anyhow!("--set `{s}`: expected KEY=VALUE"))?;
        out.insert(k.trim().to_string(), v.to_string());
    }
    Ok(out)
}

pub fn validate(file: &Path, sets: &[String]) -> anyhow::Result<ExitCode> {
    let params = parse_sets(sets)?;
    let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    match ledgerlink_flow::parse_flow(&text, &file.display().to_string(), &params) {
        Ok(flow) => {
            println!("{}: valid flow `{}` ({} steps)", file.display(), flow.name, flow.steps.len());
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!("{errors}");
            Ok(ExitCode::from(1))
        }
    }
}

pub fn list_templates() -> anyhow::Result<ExitCode> {
    for name in templates::names() {
        let flow = templates::load(name, &BTreeMap::new())?;
        println!("{name}\n    {}", flow.description);
        for (k, p) in &flow.params {
            println!("    --set {k}=…   {} (default: {})", p.description, p.value);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn show_template(name: &str) -> anyhow::Result<ExitCode> {
    let text = templates::get(name)
        .ok_or_else(|| anyhow::anyhow!("no template named `{name}` (available: {})", templates::names().join(", ")))?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// `ledgerlink flows dry-run`: plans a configured flow against live data and prints the writes it would make.
pub async fn dry_run(config: &Path, flow_name: Option<&str>, record: Option<&str>, since_hours: i64, limit: usize, json: bool) -> anyhow::Result<ExitCode> {
    let cfg = ledgerlink_engine::Config::load(config)?;
    let engine = ledgerlink_engine::load_for_inspection(&cfg).await?;
    let flow = match flow_name {
        Some(n) => engine.flows.get(n).cloned().ok_or_else(|| {
            anyhow::anyhow!("no flow `{n}` in {} (configured: {})", config.display(), engine.flows.keys().cloned().collect::<Vec<_>>().join(", "))
        })?,
        None => {
            let mut all = engine.flows.values();
            match (all.next(), all.next()) {
                (Some(only), None) => only.clone(),
                (None, _) => anyhow::bail!("{} configures no flows", config.display()),
                _ => anyhow::bail!("{} configures several flows; name one with --flow", config.display()),
            }
        }
    };
    let Some((connection, object, fields)) = flow.trigger.source() else {
        // A scheduled flow: plan one firing now.
        let record = ledgerlink_engine::triggers::firing_record(&flow, chrono::Utc::now());
        let plan = ledgerlink_engine::executor::plan_flow(&engine, &flow, record).await?;
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(ExitCode::SUCCESS);
    };
    let conn = engine.connector(connection)?.clone();
    let records = match record {
        Some(id) => vec![conn.get(object, id, fields).await?.ok_or_else(|| anyhow::anyhow!("{object} {id} does not exist in {connection}"))?],
        None => conn.changes_since(object, chrono::Utc::now() - chrono::Duration::hours(since_hours), fields).await?.records,
    };
    let mut plans = Vec::new();
    for rec in records.into_iter().rev() {
        let id = conn.record_id(&rec).unwrap_or_default();
        let plan = ledgerlink_engine::executor::plan_flow(&engine, &flow, serde_json::Value::Object(rec)).await?;
        if plan.writes.is_empty() && record.is_none() {
            continue;
        }
        plans.push((id, plan));
        if plans.len() >= limit {
            break;
        }
    }
    if json {
        let out: Vec<_> = plans.iter().map(|(id, p)| serde_json::json!({"record": id, "plan": p})).collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    if plans.is_empty() {
        println!("nothing to do: no {object} changed in the last {since_hours} h would cause a write");
    }
    for (id, plan) in &plans {
        println!("{object} {id}: {}", plan.outcome);
        for w in &plan.writes {
            match w {
                ledgerlink_engine::executor::PlannedWrite::Create { connection, object, fields } => {
                    println!("  + create {object} in {connection}");
                    for (k, v) in fields.as_object().into_iter().flatten() {
                        println!("      {k}: {v}");
                    }
                }
                ledgerlink_engine::executor::PlannedWrite::Update { connection, object, id, before, after } => {
                    println!("  ~ update {object} {id} in {connection}");
                    for (k, v) in after.as_object().into_iter().flatten() {
                        println!("      {k}: {} → {v}", before.get(k).cloned().unwrap_or(serde_json::Value::Null));
                    }
                }
                ledgerlink_engine::executor::PlannedWrite::Delete { connection, object, id, .. } => {
                    println!("  - delete {object} {id} in {connection}");
                }
                ledgerlink_engine::executor::PlannedWrite::Review { kind, reason } => println!("  ? review ({kind}): {reason}"),
                ledgerlink_engine::executor::PlannedWrite::Notify { connection, title, text, fields } => {
                    println!("  > notify through {connection}: {title}");
                    for line in text.lines() {
                        println!("      {line}");
                    }
                    for pair in fields.as_array().into_iter().flatten() {
                        println!("      {}: {}", pair[0].as_str().unwrap_or(""), pair[1].as_str().unwrap_or(""));
                    }
                }
                ledgerlink_engine::executor::PlannedWrite::Report { period, title, mismatches, .. } => {
                    println!("  + keep report for {period}: {title} ({mismatches} mismatches)");
                }
            }
        }
    }
    println!("(dry run: nothing was written)");
    Ok(ExitCode::SUCCESS)
}

/// `ledgerlink flows run`: queues one run now.
pub async fn run_now(config: &Path, flow_name: &str, record: Option<&str>) -> anyhow::Result<ExitCode> {
    let cfg = ledgerlink_engine::Config::load(config)?;
    let engine = ledgerlink_engine::load_for_inspection(&cfg).await?;
    let flow = engine.flows.get(flow_name).cloned().ok_or_else(|| {
        anyhow::anyhow!("no flow `{flow_name}` in {} (configured: {})", config.display(), engine.flows.keys().cloned().collect::<Vec<_>>().join(", "))
    })?;
    let job = ledgerlink_engine::triggers::run_now(&engine, &flow, record).await?;
    println!("queued job {job} for flow `{flow_name}`; `ledgerlink jobs show {job}` follows it");
    Ok(ExitCode::SUCCESS)
}
