//! The command line as a user meets it: `sandbox` prints its URL and credentials first, `flows validate` says
//! where a flow file is wrong and exits non-zero, and the config example in the README is one `serve` accepts.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ledgerlink"))
}

#[test]
fn sandbox_prints_a_json_line_with_url_and_ready_credentials() {
    for (system, keys) in [
        ("quickbooks", &["base_url", "client_id", "client_secret", "realm_id", "access_token", "refresh_token", "verifier_token"][..]),
        ("salesforce", &["base_url", "client_id", "client_secret", "org_id", "access_token", "refresh_token", "instance_url"][..]),
    ] {
        let mut child = bin().args(["sandbox", system, "--port", "0"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let info: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{system}: first line is not JSON ({e}): {line}"));
        for key in keys {
            let v = info[key].as_str().unwrap_or_default();
            assert!(!v.is_empty(), "{system}: `{key}` missing in {info}");
        }
        assert!(info["base_url"].as_str().unwrap().starts_with("http://127.0.0.1:"));
    }
}

#[test]
fn flows_validate_accepts_the_template_and_rejects_a_bad_file_with_positions() {
    let template = concat!(env!("CARGO_MANIFEST_DIR"), "/../../templates/salesforce-closed-won-to-quickbooks-invoice.toml");
    let ok = bin().args(["flows", "validate", template]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("valid flow"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[flow]\nname = \"x\"\ndescription = \"d\"\n\n[trigger]\ntype = \"poll\"\nconnection = \"sf\"\nobject = \"Opportunity\"\nfields = [\"Id\"]\n\n[when]\ncondition = 'record.IsWon =='\n\n[[steps]]\nid = \"a\"\ntype = \"teleport\"\n",
    )
    .unwrap();
    let out = bin().args(["flows", "validate"]).arg(&bad).output().unwrap();
    assert!(!out.status.success(), "an invalid flow must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    let name = bad.display().to_string();
    // Both errors are reported, each with file:line:column.
    assert!(err.lines().any(|l| l.starts_with(&format!("{name}:12:"))), "condition error positioned: {err}");
    assert!(err.lines().any(|l| l.starts_with(&format!("{name}:16:")) && l.contains("teleport")), "step type error positioned: {err}");

    // An unknown template parameter is named.
    let out = bin().args(["flows", "validate", template, "--set", "colour=blue"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));
}

#[test]
fn the_readme_config_example_is_a_valid_config() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme.find("```toml\n").expect("a toml block in the README") + "```toml\n".len();
    let block = &readme[start..start + readme[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledgerlink.toml");
    std::fs::write(&path, block).unwrap();
    let cfg = ledgerlink_engine::Config::load(&path).unwrap();
    assert_eq!(cfg.connections.len(), 2);
    assert_eq!(cfg.flows[0].template.as_deref(), Some("salesforce-closed-won-to-quickbooks-invoice"));
    let flow = ledgerlink_engine::templates::load("salesforce-closed-won-to-quickbooks-invoice", &cfg.flows[0].params).unwrap();
    assert_eq!(ledgerlink_engine::flow_connections(&flow), vec!["quickbooks".to_string(), "salesforce".to_string()]);
}
