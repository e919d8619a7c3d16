//! `salesforce-quickbooks-weekly-reconciliation`, end to end against the sandboxes, a Slack sandbox and a real
//! SMTP server (`aiosmtpd` from the project's Python venv): the week's report names every planted mismatch with
//! its amounts and currency, is kept in the store, reaches Slack and the mailbox once, and a re-run of the same
//! week keeps the first report and sends nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, Utc};
use ledgerlink_connectors::{FindQuery, Record};
use ledgerlink_engine::{Engine, EngineSettings, connections, notifications, templates, triggers, worker};
use ledgerlink_sandbox::{quickbooks, salesforce, slack};
use ledgerlink_store::{JobFilter, JobStatus, MasterKey, NewConnection, SecretCipher, Store};
use serde_json::{Value, json};

const FLOW: &str = "salesforce-quickbooks-weekly-reconciliation";

fn rec(v: Value) -> Record {
    v.as_object().unwrap().clone()
}

fn venv_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(python.exists(), "{} is missing: run ./scripts/test once (it creates the venv with aiosmtpd)", python.display());
    python
}

/// `aiosmtpd` delivering into a Maildir; killed when dropped.
struct Smtp {
    port: u16,
    maildir: tempfile::TempDir,
    _child: tokio::process::Child,
}

async fn start_smtp() -> Smtp {
    let maildir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = tokio::process::Command::new(venv_python())
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir.path().join("mail"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start aiosmtpd");
    let deadline = Instant::now() + StdDuration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(child.try_wait().unwrap().is_none(), "aiosmtpd exited before accepting connections");
        assert!(Instant::now() < deadline, "aiosmtpd did not listen within 30 s");
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    Smtp { port, maildir, _child: child }
}

/// The delivered messages (subject, to, decoded body), once at least `expected` are there or after 10 s.
async fn delivered(maildir: &Path, expected: usize) -> Vec<Value> {
    let new = maildir.join("mail").join("new");
    let deadline = Instant::now() + StdDuration::from_secs(10);
    let files = loop {
        let files: Vec<PathBuf> = std::fs::read_dir(&new).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
        if files.len() >= expected || Instant::now() > deadline {
            break files;
        }
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    };
    let mut out = Vec::new();
    for f in files {
        let parsed = tokio::process::Command::new(venv_python())
            .args([
                "-c",
                "import email, email.policy, json, sys\n\
                 m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.default)\n\
                 print(json.dumps({'subject': m['subject'], 'to': m['to'], 'body': m.get_content()}))",
            ])
            .arg(&f)
            .output()
            .await
            .unwrap();
        assert!(parsed.status.success(), "{}", String::from_utf8_lossy(&parsed.stderr));
        out.push(serde_json::from_slice(&parsed.stdout).unwrap());
    }
    out
}

async fn slack_messages(base: &str) -> Vec<Value> {
    let v: Value = ledgerlink_connectors::http::client().get(format!("{base}/sandbox/admin/messages")).send().await.unwrap().json().await.unwrap();
    v.as_array().cloned().or_else(|| v["messages"].as_array().cloned()).unwrap_or_default()
}

async fn run_week(engine: &Engine, store: &Arc<dyn Store>) {
    triggers::run_now(engine, &engine.flows[FLOW], None).await.unwrap();
    worker::drain(engine).await.unwrap();
    for status in [JobStatus::Dead, JobStatus::Parked] {
        let stuck = store.list_jobs(&JobFilter { status: Some(status), ..Default::default() }).await.unwrap();
        assert!(stuck.is_empty(), "jobs {status:?}: {stuck:#?}\nreviews: {:#?}", store.list_reviews(None).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_weekly_report_names_every_mismatch_is_kept_and_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}/s.sqlite", dir.path().display()), SecretCipher::new(MasterKey::load(dir.path(), None).unwrap()))
        .await
        .unwrap();
    let qbo = quickbooks::start(quickbooks::QuickbooksOptions::default()).await.unwrap();
    let sfdc = salesforce::start(salesforce::SalesforceOptions::default()).await.unwrap();
    let hook = slack::start(slack::SlackOptions::default()).await.unwrap();
    let smtp = start_smtp().await;
    store.put_connection(&connections::from_sandbox_info("quickbooks", &qbo.info).unwrap()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("salesforce", &sfdc.info).unwrap()).await.unwrap();
    for (name, system, config, credentials) in [
        ("slack", "slack", json!({}), json!({"webhook_url": hook.info["webhook_url"]})),
        (
            "email",
            "email",
            json!({"host": "127.0.0.1", "port": smtp.port, "tls": "none", "from": "ledgerlink <ledgerlink@example.com>", "to": ["finance@example.com"]}),
            json!({}),
        ),
    ] {
        store.put_connection(&NewConnection { name: name.into(), system: system.into(), config, credentials }).await.unwrap();
    }
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

    // The week before today: three deals won in it, and invoices dated in it.
    let day = (Utc::now().date_naive() - Duration::days(3)).to_string();
    let account = sf.create("Account", &rec(json!({"Name": "Reconciled Corp"})), "k").await.unwrap();
    let mut deal = BTreeMap::new();
    for (name, amount) in [("Matched deal", 1000.00), ("Forgotten deal", 2500.50), ("Discounted deal", 800.00), ("Deal-discount deal", 1500.00)] {
        let opp = sf
            .create("Opportunity", &rec(json!({"Name": name, "AccountId": account["Id"], "StageName": "Closed Won", "CloseDate": day, "Amount": amount})), "k")
            .await
            .unwrap();
        deal.insert(name, opp["Id"].as_str().unwrap().to_string());
    }
    let customer = qb.find(&FindQuery { object: "Customer".into(), limit: Some(1), ..Default::default() }).await.unwrap().remove(0);
    let item = qb.find(&FindQuery { object: "Item".into(), equals: vec![("Type".into(), json!("Service"))], limit: Some(1), ..Default::default() }).await.unwrap().remove(0);
    let invoice = |doc: String, amount: f64, key: &'static str| {
        let qb = qb.clone();
        let body = rec(json!({
            "CustomerRef": {"value": customer["Id"]}, "DocNumber": doc, "TxnDate": day,
            "Line": [{"DetailType": "SalesItemLineDetail", "Amount": amount,
                      "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}, "Qty": 1, "UnitPrice": amount, "TaxCodeRef": {"value": "NON"}}}]
        }));
        async move { qb.create("Invoice", &body, key).await.unwrap() }
    };
    invoice(format!("SF-{}", deal["Matched deal"]), 1000.00, "recon-1").await;
    invoice(format!("SF-{}", deal["Discounted deal"]), 720.00, "recon-2").await;
    let stray = invoice("MANUAL-77".into(), 95.10, "recon-3").await;
    // Billed in full with 10 % off the whole deal (as the closed-won template's deal discount does): its lines
    // add up to the deal, so it is not a mismatch though its total is 1,350.00.
    let discounted = rec(json!({
        "CustomerRef": {"value": customer["Id"]}, "DocNumber": format!("SF-{}", deal["Deal-discount deal"]), "TxnDate": day,
        "Line": [
            {"DetailType": "SalesItemLineDetail", "Amount": 1500.00,
             "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}, "Qty": 1, "UnitPrice": 1500.00, "TaxCodeRef": {"value": "NON"}}},
            {"DetailType": "DiscountLineDetail", "Amount": 150.00,
             "DiscountLineDetail": {"PercentBased": true, "DiscountPercent": 10}}
        ]
    }));
    let discounted = qb.create("Invoice", &discounted, "recon-4").await.unwrap();
    assert_eq!(ledgerlink_engine::executor::to_decimal(&discounted["TotalAmt"]).unwrap(), "1350".parse().unwrap());

    run_week(&engine, &store).await;

    // The kept report names each planted mismatch with amounts and currency, and not the matched deal.
    let reports = store.list_reports(Some(FLOW), 10).await.unwrap();
    assert_eq!(reports.len(), 1, "{reports:#?}");
    let report = &reports[0];
    let text = &report.report.text;
    let forgotten = format!("deal without invoice: Forgotten deal ({}) — 2500.50 USD", deal["Forgotten deal"]);
    let differs = format!("different amounts for Discounted deal ({}): deal 800.00 USD but invoice SF-{} 720.00 USD (difference -80.00 USD)", deal["Discounted deal"], deal["Discounted deal"]);
    let unbilled = format!("invoice without deal: MANUAL-77 (invoice {}) — 95.10 USD", stray["Id"].as_str().unwrap());
    for line in [&forgotten, &differs, &unbilled] {
        assert!(text.contains(line.as_str()), "the report names `{line}`:\n{text}");
    }
    assert!(!text.contains("Matched deal"), "a deal invoiced in full is not a mismatch:\n{text}");
    assert!(!text.contains("Deal-discount deal"), "a deal invoiced in full less a deal discount is not a mismatch:\n{text}");
    assert!(report.report.body["counts"]["only_left"].as_u64().unwrap() >= 1);
    let findings = report.report.body["findings"].as_array().unwrap();
    let diff = findings.iter().find(|f| f["kind"] == "amount_differs").unwrap();
    assert_eq!((diff["left"]["amount"].as_str(), diff["right"]["amount"].as_str(), diff["left"]["currency"].as_str()), (Some("800.00"), Some("720.00"), Some("USD")));

    // Delivered once to Slack and once by email, each with the title and the mismatches.
    let messages = slack_messages(&hook.base_url).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let slack_text = messages[0]["text"].as_str().unwrap();
    assert!(slack_text.starts_with(&report.report.title), "{slack_text}");
    assert!(slack_text.contains("Forgotten deal") && slack_text.contains("MANUAL-77") && slack_text.contains("-80.00 USD"), "{slack_text}");
    let mail = delivered(smtp.maildir.path(), 1).await;
    assert_eq!(mail.len(), 1, "{mail:#?}");
    assert_eq!(mail[0]["subject"].as_str(), Some(report.report.title.as_str()));
    assert_eq!(mail[0]["to"], "finance@example.com");
    let body = mail[0]["body"].as_str().unwrap();
    for needle in ["Forgotten deal", "2500.50 USD", "MANUAL-77", "720.00 USD", &format!("ledgerlink reports show {}", report.id)] {
        assert!(body.contains(needle), "the email has `{needle}`:\n{body}");
    }

    // The same week again: the first report stays, nothing is sent again.
    run_week(&engine, &store).await;
    assert_eq!(store.list_reports(Some(FLOW), 10).await.unwrap(), reports, "no second report for the same week");
    assert_eq!(slack_messages(&hook.base_url).await.len(), 1);
    // Each send finished (SMTP accepted the message) before the run did: a second message would be there now.
    assert_eq!(delivered(smtp.maildir.path(), 1).await.len(), 1);
}
