//! The reports flows keep (weekly reconciliations) over real HTTP: `GET /api/v1/reports` lists them newest
//! first (optionally one flow's), `GET /api/v1/reports/{id}` shows one in full, an unknown id is a 404.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use ledgerlink_engine::{Engine, EngineSettings};
use ledgerlink_store::{MasterKey, NewReport, SecretCipher};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_listed_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}/r.sqlite", dir.path().display()), SecretCipher::new(MasterKey::load(dir.path(), None).unwrap()))
        .await
        .unwrap();
    let report = |flow: &str, period: &str, seconds: i64| NewReport {
        flow: flow.into(),
        kind: "reconciliation".into(),
        period: period.into(),
        title: format!("Closed-won vs invoiced, {period}"),
        text: format!("Closed-won vs invoiced, {period}\n\n- deal without invoice: Forgotten deal (006A) — 2500.50 USD"),
        body: json!({"counts": {"mismatches": 1}}),
        created_at: chrono::DateTime::from_timestamp(1_790_000_000 + seconds, 0).unwrap(),
    };
    let (first, _) = store.put_report(&report("weekly", "2026-11-09..2026-11-15", 0)).await.unwrap();
    let (second, _) = store.put_report(&report("weekly", "2026-11-16..2026-11-22", 60)).await.unwrap();
    let (other, _) = store.put_report(&report("monthly", "2026-10", 120)).await.unwrap();
    let engine = Engine::new(store.clone(), BTreeMap::new(), Vec::new(), EngineSettings::default()).unwrap();
    let (addr, _server) = ledgerlink_server::serve(engine, SocketAddr::from(([127, 0, 0, 1], 0)), std::future::pending()).await.unwrap();
    let http = ledgerlink_connectors::http::client();
    let get = |path: String| {
        let http = http.clone();
        async move {
            let r = http.get(format!("http://{addr}{path}")).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };

    let (status, all) = get("/api/v1/reports".into()).await;
    assert_eq!(status, 200);
    let ids: Vec<i64> = all.as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [other.id, second.id, first.id], "newest first");
    let (_, weekly) = get("/api/v1/reports?flow=weekly&limit=1".into()).await;
    assert_eq!(weekly.as_array().unwrap().len(), 1);
    assert_eq!(weekly[0]["id"], second.id);

    let (status, one) = get(format!("/api/v1/reports/{}", first.id)).await;
    assert_eq!(status, 200);
    assert_eq!(one["period"], "2026-11-09..2026-11-15");
    assert!(one["text"].as_str().unwrap().contains("deal without invoice: Forgotten deal (006A) — 2500.50 USD"));
    assert_eq!(one["body"]["counts"]["mismatches"], 1);

    let (status, missing) = get(format!("/api/v1/reports/{}", other.id + 100)).await;
    assert_eq!(status, 404);
    assert!(missing.to_string().contains("not found"), "{missing}");
}
