//! The platform API is mounted on the server next to the existing `/api/v1` routes: the OpenAPI document is
//! public, platform routes need a workspace token, and the engine's routes still answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use ledgerlink_engine::{Engine, EngineSettings};
use ledgerlink_store::{MasterKey, SecretCipher};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_routes_are_mounted_beside_the_engine_api() {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}/s.sqlite", dir.path().display()), SecretCipher::new(MasterKey::load(dir.path(), None).unwrap()))
        .await
        .unwrap();
    let engine = Engine::new(store.clone(), BTreeMap::new(), vec![], EngineSettings::default()).unwrap();
    let (addr, _server) = ledgerlink_server::serve(engine, SocketAddr::from(([127, 0, 0, 1], 0)), std::future::pending()).await.unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");

    let doc: Value = http.get(format!("{base}/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(http.get(format!("{base}/api/v1/platform/clients")).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(http.get(format!("{base}/api/v1/status")).send().await.unwrap().status().as_u16(), 200);

    // A token issued through the platform crate works against the server's mount.
    let platform = ledgerlink_platform::Platform::new(store.clone(), Default::default());
    let ws = platform.create_workspace("Mounted").await.unwrap();
    let token = platform.issue_token(&ws.id, "server test").await.unwrap().token;
    let resp = http.post(format!("{base}/api/v1/platform/clients")).bearer_auth(&token).json(&json!({"id": "c1", "name": "Mounted Client"})).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let rec: Value = http.get(format!("{base}/api/v1/platform/clients/c1")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(rec["data"]["name"], "Mounted Client");
    assert_eq!(rec["sync"]["status"], "pending", "QuickBooks is not connected, so it waits");
}
