//! Scheduled flows: 5-field cron in a time zone (daylight saving included), a firing is one job even when ticked
//! twice, missed firings collapse into one, a new schedule starts from now; manual runs; load-time errors.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use ledgerlink_engine::{Engine, EngineSettings, connections, triggers};
use ledgerlink_store::{ChangeCursor, JobFilter, MasterKey, NewConnection, SecretCipher};
use serde_json::json;

const FLOW: &str = r#"
[flow]
name = "morning-report"
description = "Every day at 07:00 New York time."

[trigger]
type = "schedule"
cron = "0 7 * * *"
timezone = "America/New_York"

[[steps]]
id = "open_invoices"
type = "find"
connection = "qb"
object = "Invoice"
fields = ["Id"]
[steps.equals]
Balance = '1'
"#;

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_fire_once_per_slot_in_their_time_zone() {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}/s.sqlite", dir.path().display()), SecretCipher::new(MasterKey::load(dir.path(), None).unwrap()))
        .await
        .unwrap();
    store
        .put_connection(&NewConnection {
            name: "qb".into(),
            system: "quickbooks".into(),
            config: json!({"api_base": "http://127.0.0.1:9/v3", "token_url": "http://127.0.0.1:9/t", "realm_id": "1", "client_id": "c"}),
            credentials: json!({"client_secret": "s", "refresh_token": "r"}),
        })
        .await
        .unwrap();
    let flow = ledgerlink_flow::parse_flow(FLOW, "report.toml", &BTreeMap::new()).unwrap();
    let engine = Engine::new(store.clone(), connections::build_all(store.clone()).await.unwrap(), vec![flow], EngineSettings::default()).unwrap();
    let flow = engine.flows["morning-report"].clone();
    let jobs = || async { store.list_jobs(&JobFilter::default()).await.unwrap() };

    // A new schedule starts from now: nothing fires for the past; next is 07:00 EST = 12:00 UTC.
    assert_eq!(triggers::tick(&engine, &flow, at(2026, 3, 7, 10, 0)).await.unwrap(), at(2026, 3, 7, 12, 0));
    assert!(jobs().await.is_empty());

    // The slot passes: one job; the next slot is after the switch to daylight time, 07:00 EDT = 11:00 UTC.
    assert_eq!(triggers::tick(&engine, &flow, at(2026, 3, 7, 12, 0) + chrono::Duration::seconds(30)).await.unwrap(), at(2026, 3, 8, 11, 0));
    let fired = jobs().await;
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].payload["record"]["scheduled_for"], "2026-03-07T12:00:00.000Z");
    // Ticking again (or another worker ticking with the same view) fires nothing more.
    triggers::tick(&engine, &flow, at(2026, 3, 7, 12, 1)).await.unwrap();
    store
        .put_cursor(&ChangeCursor { connection: String::new(), object: "schedule".into(), flow: "morning-report".into(), position: at(2026, 3, 7, 10, 0), seen: json!({}), updated_at: Utc::now() })
        .await
        .unwrap();
    triggers::tick(&engine, &flow, at(2026, 3, 7, 12, 1)).await.unwrap();
    assert_eq!(jobs().await.len(), 1, "the same firing is one job, however often it is ticked");

    // Down for four days: one catch-up firing (the latest), not four.
    triggers::tick(&engine, &flow, at(2026, 3, 12, 13, 0)).await.unwrap();
    let all = jobs().await;
    assert_eq!(all.len(), 2);
    assert!(all.iter().any(|j| j.payload["record"]["scheduled_for"] == "2026-03-12T11:00:00.000Z"), "{all:?}");

    // A manual run is one more firing now.
    triggers::run_now(&engine, &flow, None).await.unwrap();
    assert_eq!(jobs().await.len(), 3);
}

#[test]
fn bad_schedules_are_rejected_with_their_position() {
    for (cron, tz, expect) in [
        ("0 7 * *", "UTC", "must have 5 fields"),
        ("0 25 * * *", "UTC", "is not a valid schedule"),
        ("0 7 * * *", "Mars/Olympus", "is not a time zone name"),
    ] {
        let text = FLOW.replace("cron = \"0 7 * * *\"", &format!("cron = \"{cron}\"")).replace("America/New_York", tz);
        let err = ledgerlink_flow::parse_flow(&text, "report.toml", &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains(expect), "{cron} {tz}: {err}");
        let line = if expect.contains("zone") { 9 } else { 8 };
        assert!(err.starts_with(&format!("report.toml:{line}:")), "{err}");
    }
}
