//! One token refresh at a time per connection, across processes: two handles on one database (each with its own
//! `StoreTokenStore` and `TokenManager`, as two ledgerlink processes would have) race to refresh an expired
//! QuickBooks token against the sandbox. Exactly one refresh reaches the token endpoint (counted from the
//! sandbox's own call log), both end with the same working access token, and the stored refresh token is the one
//! the sandbox issued last. Then the same race after the sandbox refuses the access token (the 401 path). Runs on
//! SQLite (two pools on one file) and on PostgreSQL (two pools on one database).

use std::sync::Arc;

use ledgerlink_connectors::auth::{ClientAuth, RefreshConfig, TokenManager};
use ledgerlink_connectors::http;
use ledgerlink_engine::connections::{self, StoreTokenStore};
use ledgerlink_sandbox::{RunningSandbox, quickbooks};
use ledgerlink_store::testing::TestDatabase;
use ledgerlink_store::{SecretCipher, Store};
use serde_json::Value;
use tokio::sync::Barrier;

struct Setup {
    qbo: RunningSandbox,
    state_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn sandbox() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("qbo-state.json");
    let qbo =
        quickbooks::start(quickbooks::QuickbooksOptions { state_file: Some(state_file.clone()), ..Default::default() })
            .await
            .unwrap();
    Setup { qbo, state_file, _dir: dir }
}

fn info(qbo: &RunningSandbox, key: &str) -> String {
    qbo.info[key].as_str().unwrap_or_else(|| panic!("sandbox info lacks {key}")).to_string()
}

/// One process's worth: its own store handle, token store and token manager.
fn manager(store: Arc<dyn Store>, qbo: &RunningSandbox) -> Arc<TokenManager> {
    let refresh = RefreshConfig {
        token_url: info(qbo, "token_url"),
        client_id: info(qbo, "client_id"),
        client_secret: info(qbo, "client_secret").into(),
        client_auth: ClientAuth::Basic,
    };
    Arc::new(TokenManager::new(Arc::new(StoreTokenStore::new(store, "quickbooks")), refresh, http::client()))
}

/// How many token requests the sandbox has served.
async fn token_calls(qbo: &RunningSandbox) -> usize {
    let calls: Value =
        reqwest::get(format!("{}/sandbox/admin/calls", qbo.base_url)).await.unwrap().json().await.unwrap();
    let path = "/oauth2/v1/tokens/bearer";
    calls.as_array().unwrap().iter().filter(|c| c["path"] == path && c["method"] == "POST").count()
}

/// The request both managers make: the company's own info, which needs a valid access token.
fn company_info(qbo: &RunningSandbox, token: &str) -> reqwest::RequestBuilder {
    let realm = info(qbo, "realm_id");
    http::client()
        .get(format!("{}/company/{realm}/companyinfo/{realm}", info(qbo, "api_base")))
        .bearer_auth(token)
        .header("accept", "application/json")
}

/// The refresh tokens the sandbox considers current (not superseded by a newer one), from its state file.
fn current_refresh_tokens(setup: &Setup) -> Vec<String> {
    let state: Value = serde_json::from_str(&std::fs::read_to_string(&setup.state_file).unwrap()).unwrap();
    state["tokens"]["refresh"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, t)| t["superseded_at"].is_null())
        .map(|(k, _)| k.clone())
        .collect()
}

async fn stored_refresh_token(store: &Arc<dyn Store>) -> String {
    let conn = store.get_connection("quickbooks").await.unwrap().unwrap();
    conn.credentials["refresh_token"].as_str().unwrap().to_string()
}

async fn two_processes_refresh_once(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let setup = sandbox().await;
    let qbo = &setup.qbo;
    // Imported without an expiry: both processes see an access token that must be refreshed before use.
    a.put_connection(&connections::from_sandbox_info("quickbooks", &qbo.info).unwrap()).await.unwrap();
    let initial_refresh = info(qbo, "refresh_token");
    let (ma, mb) = (manager(a.clone(), qbo), manager(b.clone(), qbo));
    let before = token_calls(qbo).await;

    // Race 1: both find the token expired at the same moment.
    let barrier = Arc::new(Barrier::new(2));
    let race = |m: Arc<TokenManager>, barrier: Arc<Barrier>| {
        tokio::spawn(async move {
            barrier.wait().await;
            m.access_token().await.unwrap()
        })
    };
    let (ta, tb) = (race(ma.clone(), barrier.clone()), race(mb.clone(), barrier.clone()));
    let (ta, tb) = (ta.await.unwrap(), tb.await.unwrap());
    assert_eq!(token_calls(qbo).await - before, 1, "exactly one refresh may reach the token endpoint");
    assert_eq!(ma.refresh_count() + mb.refresh_count(), 1);
    assert_eq!(ta, tb, "the waiting process uses the tokens the other one saved");
    for token in [&ta, &tb] {
        assert_eq!(company_info(qbo, token).send().await.unwrap().status(), 200);
    }
    let stored = stored_refresh_token(&a).await;
    assert_ne!(stored, initial_refresh, "the rotated refresh token is stored");
    assert_eq!(stored_refresh_token(&b).await, stored);
    assert_eq!(current_refresh_tokens(&setup), std::slice::from_ref(&stored), "the stored refresh token is the newest one");

    // Race 2: the sandbox ends every access token; both processes are refused and refresh after the 401.
    let expired: Value = reqwest::Client::new()
        .post(format!("{}/sandbox/admin/expire-tokens", qbo.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(expired["expired"].as_u64().unwrap() >= 1, "{expired}");
    let before = token_calls(qbo).await;
    let barrier = Arc::new(Barrier::new(2));
    let call = |m: Arc<TokenManager>, barrier: Arc<Barrier>| {
        let (api_base, realm) = (info(qbo, "api_base"), info(qbo, "realm_id"));
        tokio::spawn(async move {
            barrier.wait().await;
            let url = format!("{api_base}/company/{realm}/companyinfo/{realm}");
            let reply = m
                .send_with_refresh(
                    |t| http::client().get(&url).bearer_auth(t).header("accept", "application/json"),
                    |r| r.status.as_u16() == 401,
                )
                .await
                .unwrap();
            assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
            m.access_token().await.unwrap()
        })
    };
    let (ta2, tb2) = (call(ma.clone(), barrier.clone()), call(mb.clone(), barrier.clone()));
    let (ta2, tb2) = (ta2.await.unwrap(), tb2.await.unwrap());
    assert_eq!(token_calls(qbo).await - before, 1, "one refresh after both were refused");
    assert_eq!(ma.refresh_count() + mb.refresh_count(), 2);
    assert_eq!(ta2, tb2);
    assert_ne!(ta2, ta);
    let newest = stored_refresh_token(&a).await;
    assert_ne!(newest, stored);
    assert_eq!(current_refresh_tokens(&setup), [newest]);
    // Nobody is left holding the refresh turn.
    assert!(a.lease_holder("refresh:quickbooks", ledgerlink_engine::now()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_sqlite_file_refresh_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.sqlite").display());
    let cipher = SecretCipher::for_tests();
    let a = ledgerlink_store::open(&url, cipher.clone()).await.unwrap();
    let b = ledgerlink_store::open(&url, cipher).await.unwrap();
    two_processes_refresh_once(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_database_refresh_once() {
    let Some(db) = TestDatabase::create().await else { return };
    let cipher = SecretCipher::for_tests();
    let a = ledgerlink_store::open(&db.url, cipher.clone()).await.unwrap();
    let b = ledgerlink_store::open(&db.url, cipher).await.unwrap();
    two_processes_refresh_once(a, b).await;
    drop(db);
}
