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
