//! The web UI's part of the store (users, sessions, flow switches): one suite, run against both backends.
//!
//! Layout like `contract.rs`: each contract is an `async fn(&dyn WebStore)`; the `contract!` macro makes a
//! `sqlite` and a `postgres` test of each. PostgreSQL comes from `LEDGERLINK_TEST_POSTGRES_URL` (skipped without
//! it, except under `CI=true`).

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use ledgerlink_store::testing::TestDatabase;
use ledgerlink_store::{NewWebSession, NewWebUser, SecretCipher, Store, StoreError, WebStore};
use serde_json::json;

struct Fixture {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    _database: Option<TestDatabase>,
}

impl Fixture {
    fn web(&self) -> &dyn WebStore {
        self.store.web().expect("both backends keep web sessions")
    }
}

async fn sqlite_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("web.db").display());
    let store = ledgerlink_store::open(&url, SecretCipher::for_tests()).await.unwrap();
    Fixture { store, _dir: Some(dir), _database: None }
}

async fn postgres_fixture() -> Option<Fixture> {
    let database = TestDatabase::create().await?;
    let store = ledgerlink_store::open(&database.url, SecretCipher::for_tests()).await.unwrap();
    Some(Fixture { store, _dir: None, _database: Some(database) })
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

fn admin(email: &str) -> NewWebUser {
    NewWebUser {
        workspace: "ws-1".into(),
        email: email.into(),
        display_name: "Dana O'Neil".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
    }
}

fn session(hash: &str, user_id: i64, idle: Duration, absolute: Duration) -> NewWebSession {
    NewWebSession {
        token_hash: hash.into(),
        user_id,
        csrf_token: format!("csrf-{hash}"),
        now: t0(),
        idle_expires_at: t0() + idle,
        absolute_expires_at: t0() + absolute,
    }
}

async fn users_are_unique_by_email_and_listed_per_workspace(f: &Fixture) {
    let w = f.web();
    let dana = w.create_web_user(&admin("dana@example.com"), t0()).await.unwrap();
    assert_eq!(dana.workspace, "ws-1");
    assert_eq!(dana.display_name, "Dana O'Neil");
    let err = w.create_web_user(&admin("dana@example.com"), t0()).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("dana@example.com")), "{err:?}");
    let mut other = admin("lee@example.com");
    other.workspace = "ws-2".into();
    w.create_web_user(&other, t0()).await.unwrap();
    assert_eq!(w.web_user_by_email("dana@example.com").await.unwrap(), Some(dana.clone()));
    assert_eq!(w.web_user_by_email("nobody@example.com").await.unwrap(), None);
    let listed: Vec<_> = w.list_web_users("ws-1").await.unwrap().into_iter().map(|u| u.email).collect();
    assert_eq!(listed, ["dana@example.com"], "another workspace's users are not listed");
    assert!(!format!("{dana:?}").contains("argon2"), "the hash never appears in debug output");
}

async fn sessions_slide_their_idle_expiry_but_never_pass_the_absolute_one(f: &Fixture) {
    let w = f.web();
    let user = w.create_web_user(&admin("dana@example.com"), t0()).await.unwrap();
    let idle = Duration::minutes(30);
    w.create_web_session(&session("h1", user.id, idle, Duration::hours(1))).await.unwrap();

    // Used after 20 minutes: live, and now idles out at 50 minutes.
    let s = w.touch_web_session("h1", t0() + Duration::minutes(20), idle).await.unwrap().expect("live");
    assert_eq!(s.user, user);
    assert_eq!(s.csrf_token, "csrf-h1");
    assert_eq!(s.idle_expires_at, t0() + Duration::minutes(50));
    assert_eq!(s.last_seen_at, t0() + Duration::minutes(20));
    // Used at 45 minutes (would idle out at 75): capped at the absolute expiry of 60.
    let s = w.touch_web_session("h1", t0() + Duration::minutes(45), idle).await.unwrap().expect("live");
    assert_eq!(s.idle_expires_at, t0() + Duration::hours(1));
    // At the absolute expiry it is gone, however recently it was used.
    assert!(w.touch_web_session("h1", t0() + Duration::hours(1), idle).await.unwrap().is_none());

    // Left alone past its idle expiry: gone too, and a later touch cannot revive it.
    w.create_web_session(&session("h2", user.id, idle, Duration::hours(8))).await.unwrap();
    assert!(w.touch_web_session("h2", t0() + Duration::minutes(31), idle).await.unwrap().is_none());
    assert!(w.touch_web_session("h2", t0() + Duration::minutes(29), idle).await.unwrap().is_some(), "the clock is the caller's");

    assert!(w.touch_web_session("unknown", t0(), idle).await.unwrap().is_none());
}

async fn pending_state_sign_out_and_purge(f: &Fixture) {
    let w = f.web();
    let user = w.create_web_user(&admin("dana@example.com"), t0()).await.unwrap();
    let idle = Duration::minutes(30);
    w.create_web_session(&session("a", user.id, idle, Duration::hours(8))).await.unwrap();
    w.create_web_session(&session("b", user.id, Duration::minutes(1), Duration::hours(8))).await.unwrap();

    let pending = json!({"oauth_state": "s-1", "system": "quickbooks"});
    w.set_web_session_pending("a", Some(&pending)).await.unwrap();
    assert_eq!(w.touch_web_session("a", t0(), idle).await.unwrap().unwrap().pending, Some(pending));
    w.set_web_session_pending("a", None).await.unwrap();
    assert_eq!(w.touch_web_session("a", t0(), idle).await.unwrap().unwrap().pending, None);
    assert!(matches!(w.set_web_session_pending("nope", None).await, Err(StoreError::NotFound { .. })));

    // "b" idled out after a minute; purging at 10 minutes removes it and only it.
    assert_eq!(w.purge_web_sessions(t0() + Duration::minutes(10)).await.unwrap(), 1);
    assert!(w.touch_web_session("a", t0() + Duration::minutes(10), idle).await.unwrap().is_some());

    assert!(w.delete_web_session("a").await.unwrap());
    assert!(!w.delete_web_session("a").await.unwrap());
    assert!(w.touch_web_session("a", t0() + Duration::minutes(11), idle).await.unwrap().is_none());
}

async fn flow_switches_upsert(f: &Fixture) {
    let w = f.web();
    assert!(w.flow_switches().await.unwrap().is_empty());
    w.set_flow_enabled("invoices", false, "dana@example.com", t0()).await.unwrap();
    w.set_flow_enabled("customers", false, "dana@example.com", t0()).await.unwrap();
    w.set_flow_enabled("invoices", true, "lee@example.com", t0() + Duration::minutes(1)).await.unwrap();
    let got = w.flow_switches().await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].flow.as_str(), got[0].enabled), ("customers", false));
    assert_eq!((got[1].flow.as_str(), got[1].enabled, got[1].changed_by.as_str()), ("invoices", true, "lee@example.com"));
    assert_eq!(got[1].changed_at, t0() + Duration::minutes(1));
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let fixture = super::sqlite_fixture().await;
                super::$name(&fixture).await;
            }

            #[tokio::test]
            async fn postgres() {
                let Some(fixture) = super::postgres_fixture().await else { return };
                super::$name(&fixture).await;
            }
        }
    )*};
}

contract!(
    users_are_unique_by_email_and_listed_per_workspace,
    sessions_slide_their_idle_expiry_but_never_pass_the_absolute_one,
    pending_state_sign_out_and_purge,
    flow_switches_upsert,
);
