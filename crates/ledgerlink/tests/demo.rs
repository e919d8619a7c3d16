//! `ledgerlink demo --once` as a newcomer runs it: the scenario ends with one invoice per closed opportunity,
//! totals equal to the deals, and a last stdout line that is one JSON summary.

use std::process::Command;

#[test]
fn demo_once_invoices_every_closed_opportunity_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ledgerlink"))
        .args(["demo", "--once", "--port", "0", "--opportunities", "25", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run ledgerlink demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {}\n{stderr}", out.status);
    let last = stdout.lines().last().expect("a summary line");
    let s: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"));
    assert_eq!(s["opportunities_closed"], 25, "{s}");
    assert_eq!(s["invoices_created"], 25, "{s}");
    assert_eq!(s["duplicate_invoices"], 0, "{s}");
    assert_eq!(s["amount_mismatches"], 0, "{s}");
    assert_eq!(s["missing_invoices"], 0, "{s}");
    assert_eq!(s["errors"], 0, "{s}\n{stderr}");
    // Three accounts by name and one by its contact's email are already QuickBooks customers.
    assert_eq!(s["customers_matched"], 4, "{s}");
    assert_eq!(s["customers_created"], 7, "{s}");
    assert!(s["duplicates_prevented"].as_u64().unwrap() >= 1, "the re-closed deal was not billed twice: {s}");
    assert!(stderr.contains("summary"), "a readable summary is printed");
    assert_eq!(s["template_checks_failed"], 0, "{s}");
    let mut exercised: std::collections::BTreeSet<&str> =
        s["template_checks"].as_array().unwrap().iter().filter(|c| c["ok"] == true).filter_map(|c| c["template"].as_str()).collect();
    // The closed-won template is the invoices counted above.
    exercised.insert("salesforce-closed-won-to-quickbooks-invoice");
    let shipped: std::collections::BTreeSet<&str> = ledgerlink_engine::templates::names().into_iter().collect();
    assert_eq!(exercised, shipped, "every shipped template's act is seen in the other system: {s}");
    assert!(stderr.contains("admin UI on http://"), "the demo serves the admin UI and says where");
}
