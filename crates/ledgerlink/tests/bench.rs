//! `ledgerlink bench` at tiny sizes, so the command cannot rot: each benchmark runs end to end and its last
//! stdout line is one JSON object whose counts say the work was really done. Timings are printed, never asserted.

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ledgerlink")).arg("bench").args(args).arg("--json").output().expect("run ledgerlink bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench {args:?} failed: {}\n{stderr}", out.status);
    let last = stdout.lines().last().unwrap_or_else(|| panic!("bench {args:?} printed nothing on stdout\n{stderr}"));
    let json: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("the last line is not JSON ({e}): {last}"));
    assert_eq!(stdout.lines().count(), 1, "with --json only the JSON line is on stdout: {stdout}");
    assert!(stderr.contains("bar"), "the readable table goes to stderr with --json: {stderr}");
    json
}

#[test]
fn throughput_invoices_every_prepared_opportunity() {
    let j = bench(&["throughput", "--n", "50"]);
    assert_eq!(j["bench"], "throughput", "{j}");
    assert_eq!(j["store"], "sqlite", "{j}");
    assert_eq!(j["linked"], 50, "every closed opportunity has its invoice linked: {j}");
    assert_eq!(j["jobs"]["dead"], 0, "{j}");
    assert!(j["per_second"].as_f64().unwrap() > 0.0, "{j}");
    assert!(j["quickbooks_calls_per_record"].as_f64().unwrap() >= 1.0, "at least the invoice create per deal: {j}");
    let ops = j["where_time_goes"]["operations"].as_array().unwrap();
    assert!(ops.iter().any(|o| o["op"] == "quickbooks create Invoice" && o["calls"] == 50), "one invoice create per deal is timed: {j}");
    assert!(ops.iter().any(|o| o["op"].as_str().unwrap().starts_with("store ")), "store calls are timed: {j}");
}

#[test]
fn throughput_on_postgres_when_a_server_is_configured() {
    if std::env::var("LEDGERLINK_TEST_POSTGRES_URL").is_err() {
        eprintln!("skipped: set LEDGERLINK_TEST_POSTGRES_URL to run the PostgreSQL variant");
        return;
    }
    let j = bench(&["throughput", "--store", "postgres", "--n", "20"]);
    assert_eq!(j["store"], "postgres", "{j}");
    assert_eq!(j["linked"], 20, "{j}");
}

#[test]
fn limits_run_without_a_single_429() {
    let j = bench(&["limits", "--n", "40", "--time-scale", "60"]);
    assert_eq!(j["bench"], "limits", "{j}");
    assert_eq!(j["linked"], 40, "{j}");
    assert_eq!(j["throttled_429"], 0, "the limiter keeps the connector under the sandbox's limits: {j}");
    assert_eq!(j["sandbox_429"], 0, "{j}");
}

#[test]
fn latency_times_every_webhook_event_to_its_write() {
    let j = bench(&["latency", "--rate", "20", "--seconds", "1"]);
    assert_eq!(j["bench"], "latency", "{j}");
    assert_eq!(j["events"], 20, "{j}");
    assert_eq!(j["refused"], 0, "{j}");
    assert_eq!(j["done"], 20, "every event's job ran: {j}");
    assert!(j["p99_ms"].as_f64().unwrap() >= j["p50_ms"].as_f64().unwrap(), "{j}");
}

#[test]
fn backfill_reports_peak_memory() {
    let j = bench(&["backfill", "--n", "300"]);
    assert_eq!(j["bench"], "backfill", "{j}");
    assert_eq!(j["records_updated"], 300, "every changed account was read and stamped: {j}");
    assert_eq!(j["jobs"]["dead"], 0, "{j}");
    assert!(j["peak_rss_bytes"].as_u64().unwrap() > 0, "{j}");
}
