//! Shared by the process-level tests: sandboxes on loopback with Intuit's limits on a faster clock, the sales
//! team's own connectors, engine processes started from a config file and killed with SIGKILL.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgerlink::demo::{Scenario, invoice_id};
use ledgerlink_connectors::Connector;
use ledgerlink_engine::connections;
use ledgerlink_sandbox::{RunningSandbox, quickbooks, salesforce};
use ledgerlink_store::{MasterKey, SecretCipher};

/// QuickBooks' per-minute limits run this much faster in these tests, on both sides.
pub const LIMIT_SPEEDUP: f64 = 60.0;

pub struct World {
    pub qbo: RunningSandbox,
    pub sfdc: RunningSandbox,
    pub sf: Arc<dyn Connector>,
    pub qb: Arc<dyn Connector>,
    pub dir: tempfile::TempDir,
}

pub async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let limits = quickbooks::QuickbooksLimits { time_scale: LIMIT_SPEEDUP, ..Default::default() };
    let qbo = quickbooks::start(quickbooks::QuickbooksOptions { limits, ..Default::default() }).await.unwrap();
    let sfdc = salesforce::start(salesforce::SalesforceOptions::default()).await.unwrap();
    let side = dir.path().join("side");
    std::fs::create_dir_all(&side).unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}/side.sqlite", side.display()), SecretCipher::new(MasterKey::load(&side, None).unwrap()))
        .await
        .unwrap();
    let mut qb_conn = connections::from_sandbox_info("quickbooks", &qbo.info).unwrap();
    qb_conn.config["rate_limit_speedup"] = serde_json::json!(LIMIT_SPEEDUP);
    store.put_connection(&connections::from_sandbox_info("salesforce", &sfdc.info).unwrap()).await.unwrap();
    store.put_connection(&qb_conn).await.unwrap();
    let conns = connections::build_all(store).await.unwrap();
    World { sf: conns["salesforce"].clone(), qb: conns["quickbooks"].clone(), qbo, sfdc, dir }
}

fn toml_connection(name: &str, info: &serde_json::Value) -> String {
    let mut c = connections::from_sandbox_info(name, info).unwrap();
    if c.system == "quickbooks" {
        c.config["rate_limit_speedup"] = serde_json::json!(LIMIT_SPEEDUP);
    }
    let mut out = format!("[[connections]]\nname = \"{name}\"\nsystem = \"{}\"\n", c.system);
    for (k, v) in c.config.as_object().unwrap().iter().chain(c.credentials.as_object().unwrap()) {
        out.push_str(&format!("{k} = {v}\n"));
    }
    out
}

impl World {
    /// A config for one engine process: the two sandboxes and the closed-won template, polling every second.
    pub fn config(&self, name: &str, store_url: Option<&str>, worker_id: &str, concurrency: usize) -> std::path::PathBuf {
        let path = self.dir.path().join(format!("{name}.toml"));
        let store = store_url.map(|u| format!("store_url = \"{u}\"\n")).unwrap_or_default();
        std::fs::write(
            &path,
            format!(
                "data_dir = \"{}\"\n{store}listen = \"127.0.0.1:0\"\n\n[engine]\nconcurrency = {concurrency}\nworker_id = \"{worker_id}\"\n\n{}\n{}\n[[flows]]\ntemplate = \"salesforce-closed-won-to-quickbooks-invoice\"\nparams = {{ poll_interval_seconds = \"1\" }}\n",
                self.dir.path().join("engine").display(),
                toml_connection("salesforce", &self.sfdc.info),
                toml_connection("quickbooks", &self.qbo.info)
            ),
        )
        .unwrap();
        path
    }

    /// How many of the scenario's opportunities QuickBooks has invoices for, and the count per opportunity.
    pub async fn invoiced(&self, scenario: &Scenario) -> BTreeMap<String, usize> {
        scenario.invoices_by_opportunity(&self.qb).await.unwrap().into_iter().map(|(k, v)| (k, v.len())).collect()
    }

    /// Polls QuickBooks until at least `n` opportunities are invoiced (or the time is up); returns how many are.
    pub async fn wait_for_invoices(&self, scenario: &Scenario, n: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.invoiced(scenario).await.len();
            if got >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every opportunity has exactly one invoice, and the invoice id written back to it is that invoice.
    pub async fn assert_exactly_one_invoice_each(&self, scenario: &Scenario) {
        let by_opp = scenario.invoices_by_opportunity(&self.qb).await.unwrap();
        let wrong: Vec<_> = scenario
            .opportunities
            .iter()
            .filter_map(|o| {
                let n = by_opp.get(&o.id).map_or(0, Vec::len);
                (n != 1).then(|| format!("{}: {n} invoices", o.id))
            })
            .collect();
        assert!(wrong.is_empty(), "opportunities without exactly one invoice: {wrong:?}");
        for opp in &scenario.opportunities {
            let deadline = Instant::now() + Duration::from_secs(30);
            let id = loop {
                if let Some(id) = invoice_id(&self.sf, &opp.id).await.unwrap() {
                    break id;
                }
                assert!(Instant::now() < deadline, "{} never got its invoice id written back", opp.id);
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert_eq!(by_opp[&opp.id][0]["Id"].as_str().unwrap(), id);
        }
    }

    pub async fn close_all(&self, scenario: &Scenario) {
        let won = serde_json::json!({"StageName": "Closed Won"}).as_object().unwrap().clone();
        for opp in &scenario.opportunities {
            self.sf.update("Opportunity", &opp.id, &won).await.unwrap();
        }
    }
}

/// Starts `ledgerlink serve` and waits for its "listening" line (its first poll, the baseline, is done by then).
pub fn start_engine(config: &Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledgerlink"))
        .args(["serve", "--config"])
        .arg(config)
        .env("LEDGERLINK_LOG", "error")
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

/// SIGKILL, and reap.
pub fn kill(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}
