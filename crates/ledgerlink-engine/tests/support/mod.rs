//! Shared by the template tests: both sandboxes over loopback HTTP, the engine on SQLite with the given shipped
//! templates, and the moves a test makes (settle every flow, replay records as fresh jobs, count writes).
#![allow(dead_code)] // each test file uses its own part

use std::collections::BTreeMap;
use std::sync::Arc;

use ledgerlink_connectors::{Connector, FindQuery, Record};
use ledgerlink_engine::{Engine, EngineSettings, connections, notifications, poller, templates, worker};
use ledgerlink_sandbox::{RunningSandbox, quickbooks, salesforce, slack};
use ledgerlink_store::{AuditFilter, MasterKey, NewJob, SecretCipher, Store};
use serde_json::{Value, json};

pub struct H {
    pub engine: Engine,
    pub store: Arc<dyn Store>,
    pub sf: Arc<dyn Connector>,
    pub qb: Arc<dyn Connector>,
    pub qbo: Arc<RunningSandbox>,
    pub sfdc: Arc<RunningSandbox>,
    pub names: Vec<String>,
    /// The Slack sandbox behind the `slack` connection, started when a template posts to Slack.
    pub slack: Option<RunningSandbox>,
    _dir: tempfile::TempDir,
}

pub fn rec(v: Value) -> Record {
    v.as_object().unwrap().clone()
}

/// Fresh sandboxes and an engine running the templates `names` (with the `params` each declares).
pub async fn harness(names: &[&str], params: &[(&str, &str)]) -> H {
    let qbo = Arc::new(quickbooks::start(quickbooks::QuickbooksOptions::default()).await.unwrap());
    let sfdc = Arc::new(salesforce::start(salesforce::SalesforceOptions::default()).await.unwrap());
    harness_on(qbo, sfdc, names, params).await
}

/// An engine with a store of its own over sandboxes that already exist (another engine's, say).
pub async fn harness_on(qbo: Arc<RunningSandbox>, sfdc: Arc<RunningSandbox>, names: &[&str], params: &[(&str, &str)]) -> H {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}/t.sqlite", dir.path().display()), SecretCipher::new(MasterKey::load(dir.path(), None).unwrap()))
        .await
        .unwrap();
    store.put_connection(&connections::from_sandbox_info("quickbooks", &qbo.info).unwrap()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("salesforce", &sfdc.info).unwrap()).await.unwrap();
    let params: BTreeMap<String, String> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let flows: Vec<ledgerlink_flow::Flow> = names
        .iter()
        .map(|n| {
            let declared = ledgerlink_flow::parse::declared_params(templates::get(n).unwrap(), n).unwrap();
            let mine = params.iter().filter(|(k, _)| declared.iter().any(|d| &d.name == *k)).map(|(k, v)| (k.clone(), v.clone())).collect();
            templates::load(n, &mine).unwrap()
        })
        .collect();
    let posts = |f: &ledgerlink_flow::Flow| f.steps.iter().any(|s| matches!(&s.kind, ledgerlink_flow::StepKind::Notify { connection, .. } if connection == "slack"));
    let slack = if flows.iter().any(posts) {
        let hook = slack::start(slack::SlackOptions::default()).await.unwrap();
        let conn = ledgerlink_store::NewConnection {
            name: "slack".into(),
            system: "slack".into(),
            config: json!({}),
            credentials: json!({"webhook_url": hook.info["webhook_url"]}),
        };
        store.put_connection(&conn).await.unwrap();
        Some(hook)
    } else {
        None
    };
    let notifiers = notifications::build_all(store.clone()).await.unwrap();
    let engine = Engine::with_notifiers(store.clone(), connections::build_all(store.clone()).await.unwrap(), notifiers, flows, EngineSettings::default()).unwrap();
    let (sf, qb) = (engine.connector("salesforce").unwrap().clone(), engine.connector("quickbooks").unwrap().clone());
    H { engine, store, sf, qb, qbo, sfdc, names: names.iter().map(|n| n.to_string()).collect(), slack, _dir: dir }
}

impl H {
    /// Successful external writes so far (the audit log).
    pub async fn writes(&self) -> usize {
        self.store.list_audit(&AuditFilter::default()).await.unwrap().iter().filter(|a| a.entry.outcome == "ok").count()
    }

    /// Polls every flow and runs every job until a whole round finds nothing new; returns the writes made.
    pub async fn settle(&self) -> usize {
        let before = self.writes().await;
        for _ in 0..12 {
            let mut new = 0;
            // Scheduled flows run when a test fires them (`triggers::run_now`); the rest are polled here.
            for flow in self.engine.flows.values().filter(|f| matches!(f.trigger, ledgerlink_flow::Trigger::Poll { .. })) {
                new += poller::poll_once(&self.engine, flow).await.unwrap().enqueued;
            }
            let ran = worker::drain(&self.engine).await.unwrap();
            if new == 0 && ran == 0 {
                return self.writes().await - before;
            }
        }
        panic!("the flows did not settle within 12 rounds: a loop");
    }

    /// The same data once more: every record `ids` of `object`, read as it is now, delivered to `flow` again as
    /// a fresh job, then polls until quiet. Returns the writes this made.
    pub async fn rerun(&self, flow: &str, conn_name: &str, object: &str, ids: &[String]) -> usize {
        let conn = self.engine.connector(conn_name).unwrap().clone();
        let before = self.writes().await;
        for id in ids {
            let record = conn.get(object, id, &[]).await.unwrap().unwrap_or_else(|| panic!("{object} {id} is gone"));
            self.store
                .enqueue(&NewJob {
                    kind: poller::JOB_FLOW_RECORD.into(),
                    idempotency_key: format!("replay-{flow}-{object}-{id}-{}", chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()),
                    flow: Some(flow.into()),
                    connection: Some(conn_name.to_string()),
                    payload: json!({"record": record}),
                    run_at: chrono::Utc::now(),
                    max_attempts: 1,
                })
                .await
                .unwrap();
        }
        self.settle().await;
        self.writes().await - before
    }

    /// The record linked to (conn, object, id) in other_conn/other, by the link table.
    pub async fn linked(&self, conn: &str, object: &str, id: &str, other_conn: &str, other: &str) -> Option<String> {
        let link = self.store.find_link(&ledgerlink_model::RecordRef::new(conn, object, id), other_conn, other).await.unwrap()?;
        Some(if link.a.connection == conn && link.a.object == object && link.a.id == id { link.b.id } else { link.a.id })
    }

    pub async fn sf_create(&self, object: &str, v: Value) -> String {
        self.sf.create(object, &rec(v), "k").await.unwrap()["Id"].as_str().unwrap().to_string()
    }

    /// Each create carries its own idempotency key (QuickBooks replays a repeated `requestid`).
    pub async fn qb_create(&self, object: &str, v: Value) -> Record {
        let key = format!("test-{object}-{v}");
        self.qb.create(object, &rec(v), &key).await.unwrap()
    }

    pub async fn find(&self, conn: &Arc<dyn Connector>, object: &str, equals: Vec<(&str, Value)>) -> Vec<Record> {
        let q = FindQuery { object: object.into(), equals: equals.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), fields: vec![], limit: None };
        conn.find(&q).await.unwrap()
    }

    /// A POST to a sandbox's admin API (`/sandbox/admin/...`).
    pub async fn admin(&self, sandbox: &RunningSandbox, path: &str, body: Value) {
        let r = ledgerlink_connectors::http::client().post(format!("{}{path}", sandbox.base_url)).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.text().await.unwrap());
    }

    /// A Text custom field on a Salesforce object.
    pub async fn sf_field(&self, object: &str, name: &str) {
        self.admin(&self.sfdc, "/sandbox/admin/fields", json!({"object": object, "name": name, "type": "Text"})).await;
    }
}
