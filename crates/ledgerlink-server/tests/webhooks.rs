//! QuickBooks webhook intake over real HTTP: a bad signature is refused with 401 and nothing is queued; a good
//! one is answered 200 only after its events are jobs in the store; a re-delivery queues nothing new.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use ledgerlink_engine::{Engine, EngineSettings, connections};
use ledgerlink_store::{JobFilter, MasterKey, NewConnection, SecretCipher};
use serde_json::json;

const FLOW: &str = r#"
[flow]
name = "invoice-events"
description = "Reads each changed invoice."

[trigger]
type = "webhook"
connection = "qb"
object = "Invoice"
fields = ["Id"]

[[steps]]
id = "customer"
type = "get"
connection = "qb"
object = "Customer"
record_id = 'record.CustomerRef.value'
fields = ["Id"]
"#;

fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_events_are_queued_before_200_and_bad_ones_get_401() {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}/w.sqlite", dir.path().display()), SecretCipher::new(MasterKey::load(dir.path(), None).unwrap()))
        .await
        .unwrap();
    store
        .put_connection(&NewConnection {
            name: "qb".into(),
            system: "quickbooks".into(),
            config: json!({"api_base": "http://127.0.0.1:9/v3", "token_url": "http://127.0.0.1:9/t", "realm_id": "4620816365", "client_id": "c"}),
            credentials: json!({"client_secret": "s", "refresh_token": "r", "verifier_token": "verifier-123"}),
        })
        .await
        .unwrap();
    let flow = ledgerlink_flow::parse_flow(FLOW, "events.toml", &BTreeMap::new()).unwrap();
    let engine = Engine::new(store.clone(), connections::build_all(store.clone()).await.unwrap(), vec![flow], EngineSettings::default()).unwrap();
    let (addr, _server) = ledgerlink_server::serve(engine, SocketAddr::from(([127, 0, 0, 1], 0)), std::future::pending()).await.unwrap();
    let url = format!("http://{addr}/webhooks/quickbooks/qb");
    let http = ledgerlink_connectors::http::client();
    let body = serde_json::to_vec(&json!({"eventNotifications": [{"realmId": "4620816365", "dataChangeEvent": {"entities": [
        {"name": "Invoice", "id": "130", "operation": "Update", "lastUpdated": "2026-11-20T10:00:00.000-08:00"},
        {"name": "Invoice", "id": "131", "operation": "Create", "lastUpdated": "2026-11-20T10:00:01.000-08:00"},
        {"name": "Customer", "id": "58", "operation": "Update", "lastUpdated": "2026-11-20T10:00:02.000-08:00"}
    ]}}]}))
    .unwrap();
    let jobs = || async { store.list_jobs(&JobFilter::default()).await.unwrap() };

    // Wrong signature, missing signature: 401, nothing queued.
    for sig in [Some(sign("another-key", &body)), None] {
        let mut req = http.post(&url).body(body.clone());
        if let Some(s) = sig {
            req = req.header("intuit-signature", s);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert!(jobs().await.is_empty(), "nothing is queued for a refused delivery");
    }
    // A tampered body with the original signature is refused too.
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    let resp = http.post(&url).header("intuit-signature", sign("verifier-123", &body)).body(tampered).send().await.unwrap();
    assert_eq!(resp.status(), 401);

    // Correctly signed: 200, and by then the two invoice events are jobs (the customer event has no flow).
    let resp = http.post(&url).header("intuit-signature", sign("verifier-123", &body)).body(body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(answer, json!({"events": 3, "queued": 2}));
    let queued = jobs().await;
    assert_eq!(queued.len(), 2);
    assert!(queued.iter().all(|j| j.kind == "flow.event" && j.flow.as_deref() == Some("invoice-events")));

    // Intuit delivers again (it may): nothing new.
    let resp = http.post(&url).header("intuit-signature", sign("verifier-123", &body)).body(body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(jobs().await.len(), 2);

    // A body that is not a webhook: 400 naming the problem; an unknown connection: 404.
    let junk = b"{\"hello\":1}".to_vec();
    let resp = http.post(&url).header("intuit-signature", sign("verifier-123", &junk)).body(junk).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = http.post(format!("http://{addr}/webhooks/quickbooks/nope")).header("intuit-signature", "x").body("{}").send().await.unwrap();
    assert_eq!(resp.status(), 404);

    // A manual run of one invoice, through the API.
    let resp = http.post(format!("http://{addr}/api/v1/flows/invoice-events/run")).json(&json!({"record_id": "130"})).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let resp = http.post(format!("http://{addr}/api/v1/flows/invoice-events/run")).body("").send().await.unwrap();
    assert_eq!(resp.status(), 422, "a flow that watches records needs the record");
    assert_eq!(jobs().await.len(), 3);
    // Undo it so the figures below count the webhook jobs only.
    let manual = jobs().await.into_iter().find(|j| j.idempotency_key.starts_with("manual:")).unwrap();
    assert_eq!(manual.payload["event"]["id"], "130");
    let job = store.claim_jobs("t", chrono::Utc::now(), chrono::Duration::seconds(60), 10).await.unwrap();
    for j in job {
        store.complete_job(j.id, "t", chrono::Utc::now()).await.unwrap();
    }

    // The queue shows in the metrics, with bounded labels.
    let metrics = http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("ledgerlink_jobs{status=\"done\"} 3"), "{metrics}");
    assert!(metrics.contains("ledgerlink_jobs_enqueued_total 2"), "{metrics}");
    assert!(metrics.contains("ledgerlink_changes_already_handled_total 2"), "{metrics}");
}
