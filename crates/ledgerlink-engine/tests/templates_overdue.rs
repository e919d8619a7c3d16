//! `quickbooks-overdue-invoice-follow-up`, end to end against the sandboxes: an invoice that becomes overdue by
//! the passage of time alone gets one Task for its Account's owner, the Account's overdue flag and one Slack
//! message; later runs add nothing; a payment, announced by QuickBooks's signed webhook through ledgerlink's real
//! HTTP endpoint, clears the flag at once, but only once no other invoice of the account is overdue. An invoice
//! whose account cannot be found goes to review alone while the others are followed up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, Utc};
use ledgerlink_connectors::{Connector, FindQuery, Record};
use ledgerlink_engine::executor::{self, PlannedWrite};
use ledgerlink_engine::{Engine, EngineSettings, connections, notifications, templates, triggers, worker};
use ledgerlink_sandbox::{RunningSandbox, quickbooks, salesforce, slack};
use ledgerlink_store::{AuditFilter, JobFilter, JobStatus, MasterKey, NewConnection, SecretCipher, Store};
use serde_json::{Value, json};

const FLOW: &str = "quickbooks-overdue-invoice-follow-up";
const FLAG: &str = "QuickBooks_Overdue__c";

fn rec(v: Value) -> Record {
    v.as_object().unwrap().clone()
}

async fn admin(base: &str, path: &str, body: Value) {
    let r = ledgerlink_connectors::http::client().post(format!("{base}/sandbox/admin/{path}")).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.text().await.unwrap());
}

async fn slack_messages(base: &str) -> Vec<Value> {
    let r = ledgerlink_connectors::http::client().get(format!("{base}/sandbox/admin/messages")).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    v.as_array().cloned().or_else(|| v["messages"].as_array().cloned()).unwrap_or_default()
}

async fn tasks_on(sf: &Arc<dyn Connector>, account: &str) -> Vec<Record> {
    let fields = ["Id", "Subject", "OwnerId", "WhatId", "Status", "Priority", "Description"].map(String::from).to_vec();
    sf.find(&FindQuery { object: "Task".into(), equals: vec![("WhatId".into(), json!(account))], fields, limit: None }).await.unwrap()
}

async fn flag_of(sf: &Arc<dyn Connector>, account: &str) -> Value {
    sf.get("Account", account, &[FLAG.to_string()]).await.unwrap().unwrap()[FLAG].clone()
}

/// The sandboxes, the engine with the template, and ledgerlink's HTTP endpoint registered as the QuickBooks
/// company's webhook receiver for payment events.
struct World {
    store: Arc<dyn Store>,
    engine: Engine,
    sf: Arc<dyn Connector>,
    qb: Arc<dyn Connector>,
    qbo: RunningSandbox,
    hook: RunningSandbox,
    customer: Record,
    item: Record,
    _sfdc: RunningSandbox,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(customer_name: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = ledgerlink_store::open(&format!("sqlite://{}/s.sqlite", dir.path().display()), SecretCipher::new(MasterKey::load(dir.path(), None).unwrap()))
            .await
            .unwrap();
        let qbo = quickbooks::start(quickbooks::QuickbooksOptions::default()).await.unwrap();
        let sfdc = salesforce::start(salesforce::SalesforceOptions::default()).await.unwrap();
        let hook = slack::start(slack::SlackOptions::default()).await.unwrap();
        admin(&sfdc.base_url, "fields", json!({"object": "Account", "name": FLAG, "type": "Checkbox"})).await;
        store.put_connection(&connections::from_sandbox_info("quickbooks", &qbo.info).unwrap()).await.unwrap();
        store.put_connection(&connections::from_sandbox_info("salesforce", &sfdc.info).unwrap()).await.unwrap();
        store
            .put_connection(&NewConnection {
                name: "slack".into(),
                system: "slack".into(),
                config: json!({}),
                credentials: json!({"webhook_url": hook.info["webhook_url"]}),
            })
            .await
            .unwrap();
        let flow = templates::load(FLOW, &BTreeMap::new()).unwrap();
        let engine = Engine::with_notifiers(
            store.clone(),
            connections::build_all(store.clone()).await.unwrap(),
            notifications::build_all(store.clone()).await.unwrap(),
            vec![flow],
            EngineSettings::default(),
        )
        .unwrap();
        let (sf, qb) = (engine.connector("salesforce").unwrap().clone(), engine.connector("quickbooks").unwrap().clone());
        engine.prime().await.unwrap();
        let (addr, _server) = ledgerlink_server::serve(engine.clone(), SocketAddr::from(([127, 0, 0, 1], 0)), std::future::pending()).await.unwrap();
        admin(&qbo.base_url, "webhooks", json!({"url": format!("http://{addr}/webhooks/quickbooks/quickbooks"), "entities": ["Payment"]})).await;
        let customer = qb.create("Customer", &rec(json!({"DisplayName": customer_name})), &format!("overdue-test-customer-{customer_name}")).await.unwrap();
        let item = qb.find(&FindQuery { object: "Item".into(), equals: vec![("Type".into(), json!("Service"))], limit: Some(1), ..Default::default() }).await.unwrap().remove(0);
        World { store, engine, sf, qb, qbo, hook, customer, item, _sfdc: sfdc, _dir: dir }
    }

    /// An opportunity of `account` (none: an opportunity without an account) and its invoice, due on `due`.
    async fn invoiced_deal(&self, account: Option<&str>, name: &str, amount: f64, due: chrono::NaiveDate) -> (String, Record) {
        let mut opp = json!({"Name": name, "StageName": "Closed Won", "CloseDate": "2026-11-01"});
        if let Some(a) = account {
            opp["AccountId"] = json!(a);
        }
        let opp_id = self.sf.create("Opportunity", &rec(opp), "k").await.unwrap()["Id"].as_str().unwrap().to_string();
        let invoice = self
            .qb
            .create(
                "Invoice",
                &rec(json!({
                    "CustomerRef": {"value": self.customer["Id"]}, "DocNumber": format!("SF-{opp_id}"),
                    "TxnDate": (due - Duration::days(30)).to_string(), "DueDate": due.to_string(),
                    "Line": [{"DetailType": "SalesItemLineDetail", "Amount": amount,
                              "SalesItemLineDetail": {"ItemRef": {"value": self.item["Id"]}, "Qty": 1, "UnitPrice": amount, "TaxCodeRef": {"value": "NON"}}}]
                })),
                &format!("overdue-test-invoice-{name}"),
            )
            .await
            .unwrap();
        (opp_id, invoice)
    }

    /// Fires the schedule as it would at `at` and runs every job it leads to.
    async fn fire_at(&self, at: chrono::DateTime<Utc>) {
        let flow = self.engine.flows[FLOW].clone();
        triggers::tick(&self.engine, &flow, at).await.unwrap();
        worker::drain(&self.engine).await.unwrap();
    }

    async fn jobs(&self, status: JobStatus) -> Vec<ledgerlink_store::Job> {
        self.store.list_jobs(&JobFilter { status: Some(status), ..Default::default() }).await.unwrap()
    }

    /// [`World::fire_at`], and every job must finish (none dead, none parked).
    async fn sweep_at(&self, at: chrono::DateTime<Utc>) {
        self.fire_at(at).await;
        for status in [JobStatus::Dead, JobStatus::Parked] {
            let stuck = self.jobs(status).await;
            assert!(stuck.is_empty(), "jobs {status:?}: {stuck:#?}\nreviews: {:#?}", self.store.list_reviews(None).await.unwrap());
        }
    }

    /// Pays `invoice` in full in QuickBooks, then waits for QuickBooks's webhook about the payment to reach
    /// ledgerlink's endpoint and runs what it queued. Neither the schedule nor the backup sweep runs.
    async fn pay_and_take_the_webhook(&self, invoice: &Record, key: &str) {
        let amount = invoice["TotalAmt"].clone();
        let payment = self
            .qb
            .create(
                "Payment",
                &rec(json!({"CustomerRef": {"value": self.customer["Id"]}, "TotalAmt": amount,
                            "Line": [{"Amount": amount, "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}]})),
                key,
            )
            .await
            .unwrap();
        let marker = format!(":Payment:{}:", payment["Id"].as_str().unwrap());
        let deadline = Instant::now() + StdDuration::from_secs(20);
        loop {
            let jobs = self.store.list_jobs(&JobFilter { kind: Some("flow.event".into()), ..Default::default() }).await.unwrap();
            if jobs.iter().any(|j| j.idempotency_key.contains(&marker)) {
                break;
            }
            assert!(Instant::now() < deadline, "QuickBooks's webhook for payment {} never became a job: {:#?}", payment["Id"], jobs);
            tokio::time::sleep(StdDuration::from_millis(50)).await;
        }
        worker::drain(&self.engine).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_falling_overdue_gets_one_task_one_flag_one_message_and_the_payment_webhook_clears_the_flag() {
    let w = World::start("Late Payers Ltd").await;
    let (sf, qb) = (&w.sf, &w.qb);

    // An account owned by a sales rep (not the integration user), a won deal, and its invoice due in three days.
    let users = sf.find(&FindQuery { object: "User".into(), fields: vec!["Id".into(), "Name".into()], ..Default::default() }).await.unwrap();
    let owner = users.iter().find(|u| u["Name"].as_str().is_some_and(|n| n.starts_with("Maria"))).expect("the seeded rep Maria").clone();
    let owner_id = owner["Id"].as_str().unwrap().to_string();
    let account = sf.create("Account", &rec(json!({"Name": "Late Payers Ltd", "OwnerId": owner_id})), "k").await.unwrap();
    let account_id = account["Id"].as_str().unwrap().to_string();
    let today = Utc::now().date_naive();
    let (_, invoice) = w.invoiced_deal(Some(&account_id), "Late Payers renewal", 480.25, today + Duration::days(3)).await;
    let doc = invoice["DocNumber"].as_str().unwrap().to_string();

    // Today: not yet due. The schedule finds nothing of ours (the sandbox's own seeded overdue invoice has no SF-
    // number, so its run ends at the flow's condition).
    w.sweep_at(Utc::now() + Duration::hours(1)).await;
    assert!(tasks_on(sf, &account_id).await.is_empty());
    assert_ne!(flag_of(sf, &account_id).await, json!(true));
    assert!(slack_messages(&w.hook.base_url).await.is_empty(), "nothing to say yet");

    // Five days later, with no edit to the invoice, it is overdue. A dry run of the invoice as of that day plans
    // the Task, the flag and the message, and does none of them.
    admin(&w.qbo.base_url, "clock/advance", json!({"seconds": 5 * 86_400})).await;
    let flow = w.engine.flows[FLOW].clone();
    let fields: Vec<String> = ["Id", "DocNumber", "TotalAmt", "Balance", "DueDate", "CurrencyRef", "CustomerRef"].map(String::from).to_vec();
    let snapshot = Value::Object(qb.get("Invoice", invoice["Id"].as_str().unwrap(), &fields).await.unwrap().unwrap());
    let plan = executor::plan_flow_at(&w.engine, &flow, snapshot.clone(), Utc::now() + Duration::days(5)).await.unwrap();
    let planned_notice = |plan: &executor::Plan| {
        plan.writes.iter().any(|p| matches!(p, PlannedWrite::Notify { connection, title, .. } if connection == "slack" && *title == format!("Invoice {doc} is overdue")))
    };
    assert!(planned_notice(&plan), "{plan:#?}");
    assert!(plan.writes.iter().any(|p| matches!(p, PlannedWrite::Create { object, .. } if object == "Task")), "{plan:#?}");
    assert!(plan.writes.iter().any(|p| matches!(p, PlannedWrite::Update { object, id, .. } if object == "Account" && *id == account_id)), "{plan:#?}");
    assert!(tasks_on(sf, &account_id).await.is_empty() && slack_messages(&w.hook.base_url).await.is_empty(), "a dry run does nothing");
    w.sweep_at(Utc::now() + Duration::days(5)).await;
    let tasks = tasks_on(sf, &account_id).await;
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    let task = &tasks[0];
    assert_eq!(task["OwnerId"], json!(owner_id), "the Task is for the Account's owner");
    assert_eq!(task["Subject"], json!(format!("Overdue invoice {doc} — follow up with Late Payers Ltd")));
    assert_eq!(task["Status"], "Not Started");
    assert_eq!(task["Priority"], "High");
    assert!(task["Description"].as_str().unwrap().contains("480.25"), "{task:?}");
    assert_eq!(flag_of(sf, &account_id).await, json!(true));
    let messages = slack_messages(&w.hook.base_url).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let text = messages[0]["text"].as_str().unwrap();
    assert!(text.contains(&format!("Invoice {doc} is overdue")) && text.contains("Late Payers Ltd") && text.contains("480.25"), "{text}");

    // The next runs change nothing: no second Task, no second message, no write (and a dry run plans none).
    let plan = executor::plan_flow_at(&w.engine, &flow, snapshot, Utc::now() + Duration::days(6)).await.unwrap();
    assert!(plan.writes.is_empty(), "{plan:#?}");
    let writes = w.store.list_audit(&AuditFilter::default()).await.unwrap().len();
    w.sweep_at(Utc::now() + Duration::days(6)).await;
    w.sweep_at(Utc::now() + Duration::days(6) + Duration::hours(2)).await;
    assert_eq!(tasks_on(sf, &account_id).await.len(), 1);
    assert_eq!(slack_messages(&w.hook.base_url).await.len(), 1);
    assert_eq!(w.store.list_audit(&AuditFilter::default()).await.unwrap().len(), writes, "a re-run writes nothing");

    // A second deal of the account, invoiced and already ten days past due: its own Task and message.
    let (_, second) = w.invoiced_deal(Some(&account_id), "Late Payers extension", 99.99, today - Duration::days(10)).await;
    w.sweep_at(Utc::now() + Duration::days(6) + Duration::hours(3)).await;
    assert_eq!(tasks_on(sf, &account_id).await.len(), 2);
    assert_eq!(slack_messages(&w.hook.base_url).await.len(), 2);

    // The first invoice is paid: QuickBooks's webhook runs the flow for it at once, but the account keeps its
    // flag, because the second invoice is still overdue.
    w.pay_and_take_the_webhook(&invoice, "overdue-test-payment-1").await;
    let balance = &qb.get("Invoice", invoice["Id"].as_str().unwrap(), &fields).await.unwrap().unwrap()["Balance"];
    assert_eq!(executor::to_decimal(balance).unwrap(), rust_decimal::Decimal::ZERO);
    assert_eq!(flag_of(sf, &account_id).await, json!(true), "another invoice of the account is still overdue");

    // The second one is paid too: the flag comes off, with no sweep and no message.
    w.pay_and_take_the_webhook(&second, "overdue-test-payment-2").await;
    assert_eq!(flag_of(sf, &account_id).await, json!(false), "paying the last overdue invoice clears the flag at once");
    assert_eq!(tasks_on(sf, &account_id).await.len(), 2, "the Tasks stay (closing them is the owner's call)");
    assert_eq!(slack_messages(&w.hook.base_url).await.len(), 2, "no message when a flag clears");
    for status in [JobStatus::Dead, JobStatus::Parked, JobStatus::Queued] {
        let left = w.jobs(status).await;
        assert!(left.is_empty(), "jobs {status:?}: {left:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_whose_account_cannot_be_found_goes_to_review_alone() {
    let w = World::start("Three Deals Co").await;
    let sf = &w.sf;
    let today = Utc::now().date_naive();
    let first = sf.create("Account", &rec(json!({"Name": "North Branch"})), "k").await.unwrap()["Id"].as_str().unwrap().to_string();
    let third = sf.create("Account", &rec(json!({"Name": "South Branch"})), "k").await.unwrap()["Id"].as_str().unwrap().to_string();
    w.invoiced_deal(Some(&first), "North deal", 100.0, today - Duration::days(9)).await;
    let (_, orphan) = w.invoiced_deal(None, "Deal without an account", 200.0, today - Duration::days(8)).await;
    w.invoiced_deal(Some(&third), "South deal", 300.0, today - Duration::days(7)).await;

    w.fire_at(Utc::now() + Duration::hours(1)).await;

    // The two invoices with an account are followed up.
    for account in [&first, &third] {
        assert_eq!(tasks_on(sf, account).await.len(), 1);
        assert_eq!(flag_of(sf, account).await, json!(true));
    }
    assert_eq!(slack_messages(&w.hook.base_url).await.len(), 2);
    // The third waits for a person, alone, saying what is missing.
    let parked = w.jobs(JobStatus::Parked).await;
    assert_eq!(parked.len(), 1, "{parked:#?}");
    assert_eq!(parked[0].payload["record"]["Id"], orphan["Id"], "the parked run is the orphan invoice's");
    let reviews = w.store.list_reviews(None).await.unwrap();
    assert_eq!(reviews.len(), 1, "{reviews:#?}");
    let review = &reviews[0].item;
    assert_eq!(review.subject.as_ref().map(|s| s.id.clone()), orphan["Id"].as_str().map(String::from));
    assert!(review.reason.contains("step `account`") && review.reason.contains("no Account"), "{}", review.reason);
    assert!(w.jobs(JobStatus::Dead).await.is_empty());
}
