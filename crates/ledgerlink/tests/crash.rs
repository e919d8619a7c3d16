//! The engine process is killed with SIGKILL in the middle of a run and started again, twice; at the end every
//! closed opportunity has exactly one invoice in QuickBooks — none missing, none doubled.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgerlink::demo::{Scenario, invoice_id};
use ledgerlink_connectors::Connector;
use ledgerlink_engine::connections;
use ledgerlink_sandbox::{quickbooks, salesforce};
use ledgerlink_store::{MasterKey, SecretCipher};

fn toml_connection(name: &str, info: &serde_json::Value) -> String {
    let c = connections::from_sandbox_info(name, info).unwrap();
    let mut out = format!("[[connections]]\nname = \"{name}\"\nsystem = \"{}\"\n", c.system);
    for (k, v) in c.config.as_object().unwrap().iter().chain(c.credentials.as_object().unwrap()) {
        out.push_str(&format!("{k} = {}\n", v));
    }
    out
}

/// Starts `ledgerlink serve` and waits for its "listening" line (the engine is bootstrapped by then).
fn start_engine(config: &std::path::Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledgerlink"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start ledgerlink serve");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert!(line.contains("listening"), "unexpected first line: {line}");
    child
}

async fn invoiced(qb: &Arc<dyn Connector>, scenario: &Scenario) -> BTreeMap<String, usize> {
    scenario.invoices_by_opportunity(qb).await.unwrap().into_iter().map(|(k, v)| (k, v.len())).collect()
}

/// Waits (polling QuickBooks) until at least `n` of the scenario's opportunities are invoiced.
async fn wait_for_invoices(qb: &Arc<dyn Connector>, scenario: &Scenario, n: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let got = invoiced(qb, scenario).await.len();
        if got >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_leaves_exactly_one_invoice_per_closed_opportunity() {
    let dir = tempfile::tempdir().unwrap();
    let qbo = quickbooks::start(quickbooks::QuickbooksOptions::default()).await.unwrap();
    let sfdc = salesforce::start(salesforce::SalesforceOptions::default()).await.unwrap();

    // The sales team's side, with its own store and connectors.
    let side = dir.path().join("side");
    std::fs::create_dir_all(&side).unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}/side.sqlite", side.display()), SecretCipher::new(MasterKey::load(&side, None).unwrap()))
        .await
        .unwrap();
    store.put_connection(&connections::from_sandbox_info("salesforce", &sfdc.info).unwrap()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("quickbooks", &qbo.info).unwrap()).await.unwrap();
    let side_conns = connections::build_all(store.clone()).await.unwrap();
    let (sf, qb) = (side_conns["salesforce"].clone(), side_conns["quickbooks"].clone());

    let n = 40;
    let scenario = Scenario::prepare(&sf, &qb, n).await.unwrap();

    let engine_dir = dir.path().join("engine");
    let config = dir.path().join("ledgerlink.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\n\n[engine]\nconcurrency = 4\n\n{}\n{}\n[[flows]]\ntemplate = \"salesforce-closed-won-to-quickbooks-invoice\"\nparams = {{ poll_interval_seconds = \"1\" }}\n",
            engine_dir.display(),
            toml_connection("salesforce", &sfdc.info),
            toml_connection("quickbooks", &qbo.info)
        ),
    )
    .unwrap();

    // The engine starts watching (its "listening" line comes after the first poll), then the deals close.
    // It is killed twice while it is invoicing, each time after more invoices exist.
    let mut kills_mid_run = 0;
    let mut first = true;
    for threshold in [n / 4, n / 2] {
        let mut child = start_engine(&config);
        if std::mem::take(&mut first) {
            for opp in &scenario.opportunities {
                let won = serde_json::json!({"StageName": "Closed Won"}).as_object().unwrap().clone();
                sf.update("Opportunity", &opp.id, &won).await.unwrap();
            }
        }
        let got = wait_for_invoices(&qb, &scenario, threshold, Duration::from_secs(60)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(got >= threshold, "the engine made no progress before the kill ({got} invoiced)");
        if got < n {
            kills_mid_run += 1;
        }
    }
    assert!(kills_mid_run >= 1, "no kill landed while the run was in progress");

    // Started again, it finishes the run.
    let mut child = start_engine(&config);
    let got = wait_for_invoices(&qb, &scenario, n, Duration::from_secs(120)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut written_back = 0;
    while Instant::now() < deadline {
        written_back = 0;
        for opp in &scenario.opportunities {
            if invoice_id(&sf, &opp.id).await.unwrap().is_some() {
                written_back += 1;
            }
        }
        if written_back == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    assert_eq!(got, n, "every closed opportunity is invoiced");
    assert_eq!(written_back, n, "every opportunity carries its invoice id");
    let counts = invoiced(&qb, &scenario).await;
    let doubled: Vec<_> = counts.iter().filter(|(_, c)| **c != 1).collect();
    assert!(doubled.is_empty(), "opportunities without exactly one invoice: {doubled:?}");
    // And the invoice each opportunity points at is the one that exists.
    let by_opp = scenario.invoices_by_opportunity(&qb).await.unwrap();
    for opp in &scenario.opportunities {
        let id = invoice_id(&sf, &opp.id).await.unwrap().unwrap();
        assert_eq!(by_opp[&opp.id][0]["Id"].as_str().unwrap(), id);
    }
}
