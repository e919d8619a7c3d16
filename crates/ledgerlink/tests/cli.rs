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

#[test]
fn templates_install_adds_a_flow_to_the_config_and_keeps_the_rest_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ledgerlink.toml");
    let original = "# Our books.\ndata_dir = \"./data\"   # the key file lives here\n\n[engine]\nconcurrency = 2\n";
    std::fs::write(&config, original).unwrap();
    let install = |args: &[&str], config: &std::path::Path| {
        let mut cmd = bin();
        cmd.args(["templates", "install"]).args(args).arg("--config").arg(config);
        cmd.output().unwrap()
    };

    let out = install(&["quickbooks-estimate-to-salesforce-opportunity", "--set", "stage=Prospecting", "--set", "close_after_days=45"], &config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.starts_with(original), "the file is kept as it was, comments included:\n{text}");
    let cfg = ledgerlink_engine::Config::load(&config).unwrap();
    assert_eq!(cfg.flows.len(), 1);
    assert_eq!(cfg.flows[0].template.as_deref(), Some("quickbooks-estimate-to-salesforce-opportunity"));
    assert_eq!(cfg.flows[0].params.get("stage").map(String::as_str), Some("Prospecting"));
    assert_eq!(cfg.flows[0].params.get("close_after_days").map(String::as_str), Some("45"));
    let flow = ledgerlink_engine::templates::load("quickbooks-estimate-to-salesforce-opportunity", &cfg.flows[0].params).unwrap();
    assert_eq!(flow.params["stage"].value, "Prospecting");
    assert_eq!(flow.params["accepted_stage"].value, "Closed Won", "parameters not given keep the template's default");

    // Installing it again is refused, and the file is untouched.
    let out = install(&["quickbooks-estimate-to-salesforce-opportunity"], &config);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already installed") && err.contains("line 9"), "{err}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);

    // An unknown parameter is named with the known ones.
    let out = install(&["salesforce-products-to-quickbooks-items", "--set", "colour=blue"], &config);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown parameter `colour`"), "{err}");
    assert!(err.contains("known parameters: salesforce, quickbooks, income_account, price_policy, poll_interval_seconds"), "{err}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);

    // A value that breaks the flow is reported where it lands in the template, file:line:column.
    let template = ledgerlink_engine::templates::get("quickbooks-customer-to-salesforce-account").unwrap();
    let line = template.lines().position(|l| l.starts_with("policy = ")).unwrap() + 1;
    let out = install(&["quickbooks-customer-to-salesforce-account", "--set", "policy=sometimes"], &config);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let at = format!("templates/quickbooks-customer-to-salesforce-account.toml:{line}:10: unknown sync policy `sometimes`");
    assert!(err.contains(&at), "expected `{at}` in: {err}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);

    // An unknown template lists the shipped ones; a missing config file is created.
    let out = install(&["no-such-template"], &config);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("available: salesforce-closed-won-to-quickbooks-invoice"));
    let fresh = dir.path().join("new.toml");
    let out = install(&["salesforce-products-to-quickbooks-items"], &fresh);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = ledgerlink_engine::Config::load(&fresh).unwrap();
    assert_eq!(cfg.flows[0].template.as_deref(), Some("salesforce-products-to-quickbooks-items"));
    assert!(cfg.flows[0].params.is_empty());
}
