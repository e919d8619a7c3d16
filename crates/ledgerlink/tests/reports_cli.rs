//! `ledgerlink reports list|show` read the reports a flow kept in the store the config names.

use std::process::Command;

use ledgerlink_store::NewReport;
use serde_json::json;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ledgerlink"))
}

#[test]
fn reports_are_listed_and_shown_from_the_configured_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ledgerlink.toml");
    std::fs::write(&config, format!("data_dir = {:?}\n", dir.path().join("data").display().to_string())).unwrap();
    let id = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = ledgerlink_engine::open_store(&ledgerlink_engine::Config::load(&config).unwrap()).await.unwrap();
        let (report, _) = store
            .put_report(&NewReport {
                flow: "salesforce-quickbooks-weekly-reconciliation".into(),
                kind: "reconciliation".into(),
                period: "2026-11-09..2026-11-15".into(),
                title: "Closed-won vs invoiced, 2026-11-09 to 2026-11-15".into(),
                text: "Closed-won vs invoiced, 2026-11-09 to 2026-11-15\n\nDeals: 1 totalling 2500.50 USD.\n- deal without invoice: Forgotten deal (006A) — 2500.50 USD".into(),
                body: json!({"counts": {"mismatches": 1}}),
                created_at: chrono::Utc::now(),
            })
            .await
            .unwrap();
        report.id
    });

    let list = bin().args(["reports", "list", "--config"]).arg(&config).output().unwrap();
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    let out = String::from_utf8_lossy(&list.stdout);
    assert!(out.contains("salesforce-quickbooks-weekly-reconciliation") && out.contains("2026-11-09..2026-11-15") && out.contains("1 mismatch"), "{out}");

    let show = bin().args(["reports", "show", &id.to_string(), "--config"]).arg(&config).output().unwrap();
    assert!(show.status.success(), "{}", String::from_utf8_lossy(&show.stderr));
    let out = String::from_utf8_lossy(&show.stdout);
    assert!(out.contains("deal without invoice: Forgotten deal (006A) — 2500.50 USD"), "{out}");

    let missing = bin().args(["reports", "show", "999", "--config"]).arg(&config).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("report 999 does not exist"));
}
