//! `ledgerlink templates install NAME [--set key=value …] [--config FILE]`: adds a shipped template to a config
//! file as a `[[flows]]` entry.
//!
//! Everything is checked before the file is touched: the parameter names against the template's declared ones
//! (an unknown name lists the known ones), the values by loading the flow with them (a value that breaks the
//! flow is reported as `file:line:column`), the config as it is now, and the config as it would be. The entry is
//! appended as text, so the rest of the file — comments, order, formatting — stays exactly as it was; no
//! format-preserving TOML editor is needed for an append. Only the parameters given are written: the others keep
//! following the template's defaults.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use ledgerlink_engine::templates;

use crate::flows_cmd::parse_sets;

pub fn install(name: &str, sets: &[String], config: &Path) -> anyhow::Result<ExitCode> {
    let params = parse_sets(sets)?;
    let text = templates::get(name)
        .ok_or_else(|| anyhow::anyhow!("no template named `{name}` (available: {})", templates::names().join(", ")))?;
    check_param_names(name, text, &params)?;
    if let Err(e) = templates::load(name, &params) {
        bail!("the template `{name}` does not load with these parameters:\n{e}");
    }

    let existing = match std::fs::read_to_string(config) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => bail!("cannot read config {}: {e}", config.display()),
    };
    parse_config(&existing, config).context("the config file is not valid as it is; fix it first, nothing was changed")?;
    if let Some(line) = installed_at(&existing, name) {
        bail!(
            "the template `{name}` is already installed in {} (the [[flows]] entry at line {line}); a template runs once per config: change that entry's params instead",
            config.display()
        );
    }

    let updated = append_entry(&existing, name, &params);
    parse_config(&updated, config).context("the config would not be valid with the new entry; nothing was changed")?;
    write_replacing(config, &updated)?;
    println!("installed `{name}` in {}", config.display());
    for p in ledgerlink_flow::parse::declared_params(text, name).map_err(|e| anyhow::anyhow!("{e}"))? {
        let (value, origin) = match params.get(&p.name) {
            Some(v) => (v.clone(), "set"),
            None => (p.default.clone().unwrap_or_default(), "default"),
        };
        println!("    {} = {value:?} ({origin})", p.name);
    }
    println!("restart `ledgerlink serve` to run it");
    Ok(ExitCode::SUCCESS)
}

/// An unknown parameter is a clear error listing the known ones (before the flow is even loaded).
fn check_param_names(name: &str, text: &str, params: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let declared = ledgerlink_flow::parse::declared_params(text, name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let unknown: Vec<&str> = params.keys().map(String::as_str).filter(|k| !declared.iter().any(|d| d.name == *k)).collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let known: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
    bail!(
        "unknown parameter{} {} for template `{name}`; known parameters: {}",
        if unknown.len() > 1 { "s" } else { "" },
        unknown.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "),
        known.join(", ")
    )
}

/// Parses config text the way `serve` does (unknown keys refused), naming the file, line and column.
fn parse_config(text: &str, path: &Path) -> anyhow::Result<ledgerlink_engine::Config> {
    toml::from_str(text).map_err(|e| {
        let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        anyhow::anyhow!("{}:{line}:{col}: {}", path.display(), e.message())
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The line of the `[[flows]]` entry that installs template `name`, if any.
fn installed_at(text: &str, name: &str) -> Option<usize> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let flows = doc.get_ref().get("flows")?;
    let toml::de::DeValue::Array(entries) = flows.get_ref() else { return None };
    entries.iter().find_map(|entry| {
        let toml::de::DeValue::Table(t) = entry.get_ref() else { return None };
        let template = t.get("template")?;
        match template.get_ref() {
            toml::de::DeValue::String(s) if s == name => Some(line_col(text, template.span().start).0),
            _ => None,
        }
    })
}

/// The config text with one `[[flows]]` entry appended; values are written as TOML strings (quoted, escaped).
fn append_entry(existing: &str, name: &str, params: &BTreeMap<String, String>) -> String {
    let mut out = existing.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&format!("# Installed with `ledgerlink templates install {name}`.\n[[flows]]\n"));
    out.push_str(&format!("template = {}\n", toml_string(name)));
    if !params.is_empty() {
        let pairs: Vec<String> = params.iter().map(|(k, v)| format!("{k} = {}", toml_string(v))).collect();
        out.push_str(&format!("params = {{ {} }}\n", pairs.join(", ")));
    }
    out
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Writes through a temporary file in the same directory and renames it over the config, so a crash leaves the
/// old file or the new one, never half of one. The file's permissions are kept (it may hold secrets).
fn write_replacing(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "ledgerlink.toml".into());
    let tmp = dir.join(format!(".{file_name}.install-{}", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(&tmp, meta.permissions()).with_context(|| format!("cannot set the permissions of {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_appended_entry_keeps_the_file_and_quotes_values() {
        let existing = "# my config\ndata_dir = \"./d\" # where\n";
        let params = BTreeMap::from([("stage".to_string(), "Say \"hi\"".to_string())]);
        let out = append_entry(existing, "t", &params);
        assert!(out.starts_with(existing));
        let cfg: ledgerlink_engine::Config = toml::from_str(&out).unwrap();
        assert_eq!(cfg.flows[0].template.as_deref(), Some("t"));
        assert_eq!(cfg.flows[0].params["stage"], "Say \"hi\"");
        assert_eq!(installed_at(&out, "t"), Some(6), "the line of its `template` key");
        assert_eq!(installed_at(&out, "other"), None);
    }
}
