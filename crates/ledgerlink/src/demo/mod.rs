//! `ledgerlink demo`: both sandboxes, the engine on embedded SQLite and the HTTP port in one process, and a sales
//! team closing deals. At the end the QuickBooks sandbox is queried to count invoices per opportunity: the summary
//! reports what QuickBooks holds, not what the engine believes it did.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgerlink_connectors::{Connector, FindQuery, Record};
use ledgerlink_engine::executor::to_decimal;
use ledgerlink_engine::{Engine, EngineSettings, connections, templates};
use ledgerlink_sandbox::{quickbooks, salesforce, slack};
use ledgerlink_store::{JobStatus, MasterKey, SecretCipher};
use serde_json::{Value, json};

mod activity;

pub struct DemoOptions {
    pub once: bool,
    pub port: u16,
    pub data_dir: Option<PathBuf>,
    pub opportunities: usize,
}

const FLOW: &str = "salesforce-closed-won-to-quickbooks-invoice";

/// The templates the demo installs (parameters: see `with_params` in [`run`]).
const DEMO_TEMPLATES: &[&str] = &[
    FLOW,
    "salesforce-account-to-quickbooks-customer",
    "quickbooks-customer-to-salesforce-account",
    "quickbooks-invoice-status-to-salesforce",
    "salesforce-products-to-quickbooks-items",
    "quickbooks-estimate-to-salesforce-opportunity",
    "quickbooks-overdue-invoice-follow-up",
    "salesforce-quickbooks-weekly-reconciliation",
];

/// The demo's administrator of the web UI. Nobody types a password: the demo prints one-time sign-in links, and
/// the password is random and never shown.
const DEMO_ADMIN: &str = "admin@demo.example";

/// Custom fields the templates write, which a Salesforce admin adds once: (object, field, type).
const CUSTOM_FIELDS: &[(&str, &str, &str)] = &[
    ("Opportunity", "QuickBooks_Payment_Status__c", "Text"),
    ("Opportunity", "QuickBooks_Amount_Due__c", "Currency"),
    ("Opportunity", "QuickBooks_Due_Date__c", "Date"),
    ("Opportunity", "QuickBooks_Last_Payment_Date__c", "Date"),
    ("Opportunity", "QuickBooks_Estimate_Id__c", "Text"),
    ("OpportunityLineItem", "QuickBooks_Estimate_Line_Id__c", "Text"),
    ("Account", "QuickBooks_Overdue__c", "Checkbox"),
    ("Opportunity", "Payment_Terms__c", "Text"),
    ("Opportunity", "Deal_Discount__c", "Percent"),
    ("Account", "QuickBooks_Payment_Status__c", "Text"),
    ("Account", "QuickBooks_Amount_Due__c", "Currency"),
    ("Account", "QuickBooks_Overdue_Invoices__c", "Number"),
    ("Account", "QuickBooks_Overdue_Amount__c", "Currency"),
    ("Account", "QuickBooks_Last_Payment_Date__c", "Date"),
];

/// The closed-won template's options the demo turns on: payment terms, a deal discount, the rep as a class,
/// lines merged by product, and the estimate link shared with the estimate template.
const CLOSED_WON_PARAMS: &[(&str, &str)] = &[
    ("terms_field", "Payment_Terms__c"),
    ("deal_discount_field", "Deal_Discount__c"),
    ("sales_rep", "class"),
    ("group_lines", "product"),
    ("estimate_id_field", "QuickBooks_Estimate_Id__c"),
];

/// What the first deal carries: its payment term, deal discount (percent) and owner.
const FIRST_DEAL_TERM: &str = "Net 30";
const FIRST_DEAL_DISCOUNT: u32 = 5;
const FIRST_DEAL_OWNER: &str = "Maria Chen";

const INVOICE_FIELD: &str = "QuickBooks_Invoice_Id__c";

/// Accounts the scenario creates that QuickBooks does not know yet.
const NEW_ACCOUNTS: &[(&str, &str, &str, &str)] = &[
    ("O'Brien & Daughters Roofing", "Siobhan", "O'Brien", "siobhan@obrien-roofing.example"),
    ("Harbor Light Dental Group", "Marcus", "Webb", "m.webb@harborlight.example"),
    ("Northwind Cold Storage LLC", "Priya", "Raman", "priya.raman@northwindcold.example"),
    ("Juniper Ridge Vineyards", "Elena", "Sousa", "elena@juniperridge.example"),
    ("Atlas Freight Brokers Inc.", "Dev", "Kapoor", "dkapoor@atlasfreight.example"),
    ("Bluebird Early Learning", "Hannah", "Moss", "hannah@bluebird.example"),
    ("Copperline Electrical", "Tomás", "Ruiz", "tomas@copperline.example"),
];

pub async fn run(opts: DemoOptions) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let data_dir = match &opts.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("ledgerlink-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&data_dir)?;
    let db = data_dir.join("demo.sqlite");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }

    say("starting the QuickBooks and Salesforce sandboxes");
    let qbo = quickbooks::start(quickbooks::QuickbooksOptions::default()).await?;
    let sfdc = salesforce::start(salesforce::SalesforceOptions::default()).await?;
    say(&format!("  QuickBooks sandbox  {}  (company {})", qbo.base_url, qbo.info_str("realm_id")));
    say(&format!("  Salesforce sandbox  {}  (org {})", sfdc.base_url, sfdc.info_str("org_id")));

    let key = MasterKey::load(&data_dir, std::env::var("LEDGERLINK_MASTER_KEY").ok().as_deref())?;
    let store = ledgerlink_store::open(&format!("sqlite://{}", db.display()), SecretCipher::new(key)).await?;
    store.put_connection(&connections::from_sandbox_info("quickbooks", &qbo.info)?).await?;
    store.put_connection(&connections::from_sandbox_info("salesforce", &sfdc.info)?).await?;
    for (object, name, ty) in CUSTOM_FIELDS {
        sandbox_admin(&sfdc.base_url, "fields", json!({"object": object, "name": name, "type": ty})).await?;
    }
    let hook = slack::start(slack::SlackOptions::default()).await?;
    say(&format!("  Slack sandbox       {}", hook.base_url));
    store
        .put_connection(&ledgerlink_store::NewConnection {
            name: "slack".into(),
            system: "slack".into(),
            config: json!({}),
            credentials: json!({"webhook_url": hook.info["webhook_url"]}),
        })
        .await?;
    let connectors = connections::build_all(store.clone()).await?;
    let notifiers = ledgerlink_engine::notifications::build_all(store.clone()).await?;
    // The demo has no mail server: the reconciliation's email copy goes to the Slack sandbox as well.
    let with_params = |name: &str| -> BTreeMap<String, String> {
        match name {
            "salesforce-quickbooks-weekly-reconciliation" => BTreeMap::from([("email".to_string(), "slack".to_string())]),
            FLOW => CLOSED_WON_PARAMS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            _ => BTreeMap::new(),
        }
    };
    let flows = DEMO_TEMPLATES.iter().map(|name| templates::load(name, &with_params(name))).collect::<anyhow::Result<Vec<_>>>()?;
    let settings = EngineSettings {
        worker_id: "demo".into(),
        concurrency: 4,
        poll_interval: Some(Duration::from_millis(250)),
        ..EngineSettings::default()
    };
    let engine = Engine::with_notifiers(store.clone(), connectors, notifiers, flows, settings)?;
    engine.prime().await?;
    say(&format!("engine on embedded SQLite at {}, templates: {}", db.display(), DEMO_TEMPLATES.join(", ")));

    // The platform integration and its admin UI: a demo workspace whose QuickBooks card is connected to the
    // sandbox company with a sign-in of its own (so Disconnect, which revokes it, leaves the engine's connection
    // alone), and a demo administrator the printed link signs in as (the banner on every page says so).
    let platform = ledgerlink_platform::Platform::new(store.clone(), ledgerlink_platform::PlatformOptions::default());
    let workspace = platform.create_workspace("Demo workspace").await?;
    ledgerlink_web::create_admin(store.as_ref(), &workspace.id, DEMO_ADMIN, "Demo admin", &ledgerlink_web::demo::DemoSignIn::unshown_password()).await?;
    let company = find(engine.connector("quickbooks")?, "CompanyInfo", vec![], &[]).await?.first().map(|c| s(c, "CompanyName")).unwrap_or_default();
    let qb_app = ledgerlink_web::QuickbooksApp::from_sandbox_info(&qbo.info)?;
    connect_workspace(&platform, &store, &qbo, &qb_app, &workspace.id, &company).await?;
    let demo_links = ledgerlink_web::demo::DemoSignIn::new(DEMO_ADMIN);
    let ui = ledgerlink_web::WebConfig {
        quickbooks: Some(qb_app),
        salesforce: Some(ledgerlink_web::salesforce::SalesforceApp::from_sandbox_info(&sfdc.info)?),
        banner: Some(format!("Demo: you are the demo admin ({DEMO_ADMIN}) of a workspace connected to the QuickBooks sandbox company “{company}”.")),
        demo: Some(demo_links.clone()),
        ..ledgerlink_web::WebConfig::default()
    };
    let app = ledgerlink_server::router_with_ui(engine.clone(), platform.clone(), ui)?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let (bound, server) = ledgerlink_server::serve_app(app, SocketAddr::from(([127, 0, 0, 1], opts.port)), async move {
        let _ = server_stop.changed().await;
    })
    .await?;
    say(&format!("status API on http://{bound}/api/v1/status"));
    // QuickBooks' change notifications reach the platform at once (the payment poll is the backstop).
    sandbox_admin(&qbo.base_url, "webhooks", json!({"url": format!("http://{bound}{}", ledgerlink_platform::api::QUICKBOOKS_NOTIFICATIONS_PATH), "entities": ["Payment", "Invoice"]})).await?;
    say(&format!("admin UI on http://{bound}/settings/integrations — signed in as the demo admin through {}", sign_in_link(bound, &demo_links)));
    let platform_worker = {
        let stop = stop_rx.clone();
        let platform = platform.clone();
        tokio::spawn(async move { platform.run(stop).await })
    };
    let runner = {
        let engine = engine.clone();
        let rx = stop_rx.clone();
        tokio::spawn(async move { engine.run(rx).await })
    };

    let sf = engine.connector("salesforce")?.clone();
    let qb = engine.connector("quickbooks")?.clone();
    let scenario = Scenario::prepare(&sf, &qb, opts.opportunities).await?;
    say(&format!(
        "the sales team opens {} opportunities for {} accounts ({} already customers in QuickBooks)",
        scenario.opportunities.len(),
        scenario.accounts,
        scenario.known_customers
    ));
    scenario.dress_first_deal(&sf).await?;
    scenario.close_all(&sf, &engine).await?;
    scenario.reopen_and_close_again(&sf, &engine).await?;
    scenario.wait_until_invoiced(&sf, &engine, Duration::from_secs(120)).await?;

    say("the rest of the week, in both systems:");
    let mut checks = activity::closed_won_options(&qb, &scenario).await?;
    checks.extend(activity::customer_edits(&sf, &qb, &scenario).await?);
    checks.extend(activity::payments(&sf, &qb, &scenario).await?);
    checks.extend(activity::price_changes(&sf, &qb).await?);
    checks.extend(activity::estimate(&sf, &qb, &scenario).await?);
    settle(&engine, Duration::from_secs(30)).await?;
    checks.extend(activity::overdue(&engine, &sf, &qb, &scenario, &hook.base_url).await?);
    checks.extend(activity::reconciliation(&engine).await?);
    settle(&engine, Duration::from_secs(30)).await?;

    let summary = scenario.summarise(&sf, &qb, &engine, &checks).await?;
    summary.print(started.elapsed());
    println!("{}", serde_json::to_string(&summary.json)?);

    if !opts.once {
        say(&format!("still serving the admin UI: open {} to sign in as the demo admin — Ctrl-C to stop", sign_in_link(bound, &demo_links)));
        tokio::signal::ctrl_c().await?;
    }
    let _ = stop_tx.send(true);
    runner.await??;
    let _ = platform_worker.await;
    let _ = server.await;
    qbo.stop().await;
    sfdc.stop().await;
    hook.stop().await;
    let ok = summary.json["duplicate_invoices"] == 0 && summary.json["errors"] == 0;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

/// A fresh one-time link that signs the browser in as the demo admin (works once, for 15 minutes).
fn sign_in_link(bound: SocketAddr, links: &ledgerlink_web::demo::DemoSignIn) -> String {
    format!("http://{bound}/demo-sign-in?token={}", links.issue(ledgerlink_engine::now()))
}

/// Connects the demo workspace as the UI's Connect would: an authorization code for the sandbox company (what
/// its consent page hands back), exchanged for a grant of the workspace's own.
async fn connect_workspace(
    platform: &ledgerlink_platform::Platform,
    store: &Arc<dyn ledgerlink_store::Store>,
    qbo: &ledgerlink_sandbox::RunningSandbox,
    app: &ledgerlink_web::QuickbooksApp,
    workspace: &str,
    company: &str,
) -> anyhow::Result<()> {
    let redirect_uri = "http://127.0.0.1/oauth/quickbooks/callback";
    let r = ledgerlink_connectors::http::client()
        .post(format!("{}/sandbox/admin/authorization-codes", qbo.base_url))
        .json(&json!({"redirect_uri": redirect_uri}))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "the QuickBooks sandbox did not mint an authorization code");
    let minted: Value = r.json().await?;
    let code = minted["code"].as_str().ok_or_else(|| anyhow::anyhow!("the QuickBooks sandbox answered without a code"))?;
    let refresh = ledgerlink_connectors::auth::RefreshConfig {
        token_url: app.token_url.clone(),
        client_id: app.client_id.clone(),
        client_secret: app.client_secret.clone(),
        client_auth: ledgerlink_connectors::auth::ClientAuth::Basic,
    };
    let tokens = refresh.exchange_code(&ledgerlink_connectors::http::client(), code, redirect_uri).await?;
    let realm = qbo.info_str("realm_id");
    let conn = ledgerlink_platform::integration::new_connection(workspace, realm, company, &app.keys(), &tokens);
    store.put_connection(&conn).await?;
    platform.connect(workspace, &conn.name, company, realm).await?;
    Ok(())
}

fn say(line: &str) {
    eprintln!("{line}");
}

/// POSTs to a sandbox's admin API (custom fields, clock, …).
async fn sandbox_admin(base: &str, path: &str, body: Value) -> anyhow::Result<()> {
    let r = ledgerlink_connectors::http::client().post(format!("{base}/sandbox/admin/{path}")).json(&body).send().await?;
    anyhow::ensure!(r.status().is_success(), "sandbox admin {path}: {}", r.text().await.unwrap_or_default());
    Ok(())
}

/// Waits until no job is queued or running (the echoes of the last acts have been seen and dropped).
async fn settle(engine: &Engine, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let counts = engine.store.count_jobs().await?;
        if counts.queued == 0 && counts.running == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

pub struct Opportunity {
    pub id: String,
    pub name: String,
    pub lines: usize,
    pub discounted: bool,
}

/// The scripted sales activity: accounts, contacts, opportunities with lines, and closing them.
pub struct Scenario {
    pub opportunities: Vec<Opportunity>,
    pub accounts: usize,
    pub known_customers: usize,
    /// (Salesforce id, name) of the accounts QuickBooks did not know before.
    pub new_accounts: Vec<(String, String)>,
}

fn s(rec: &Record, key: &str) -> String {
    rec.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn rec(v: Value) -> Record {
    match v {
        Value::Object(m) => m,
        _ => Record::new(),
    }
}

async fn find(c: &Arc<dyn Connector>, object: &str, equals: Vec<(&str, Value)>, fields: &[&str]) -> anyhow::Result<Vec<Record>> {
    let q = FindQuery {
        object: object.into(),
        equals: equals.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        fields: fields.iter().map(|f| f.to_string()).collect(),
        limit: None,
    };
    Ok(c.find(&q).await?)
}

impl Scenario {
    /// Creates accounts, contacts and open opportunities with line items in Salesforce.
    pub async fn prepare(sf: &Arc<dyn Connector>, qb: &Arc<dyn Connector>, count: usize) -> anyhow::Result<Scenario> {
        let pricebook = find(sf, "Pricebook2", vec![("IsStandard", json!(true))], &["Id", "Name"]).await?;
        let pricebook_id = pricebook.first().map(|r| s(r, "Id")).ok_or_else(|| anyhow::anyhow!("the Salesforce org has no standard price book"))?;
        let entries = find(sf, "PricebookEntry", vec![("Pricebook2Id", json!(pricebook_id))], &["Id", "Product2Id", "UnitPrice", "IsActive"]).await?;
        anyhow::ensure!(!entries.is_empty(), "the standard price book has no entries");

        // Some deals are for companies QuickBooks already knows: by name, and one by its contact's email.
        let customers = find(qb, "Customer", vec![], &[]).await?;
        let mut accounts: Vec<(String, String, String, String)> = Vec::new();
        let mut known = 0;
        for c in customers.iter().filter(|c| !s(c, "DisplayName").is_empty()).take(3) {
            accounts.push((s(c, "DisplayName"), "Alex".into(), "Morgan".into(), format!("ap{}@customer.example", accounts.len())));
            known += 1;
        }
        if let Some(c) = customers.iter().skip(3).find(|c| c.get("PrimaryEmailAddr").and_then(|e| e.get("Address")).is_some()) {
            let email = c["PrimaryEmailAddr"]["Address"].as_str().unwrap_or_default().to_string();
            accounts.push((format!("{} (Salesforce)", s(c, "DisplayName")), "Jordan".into(), "Lee".into(), email));
            known += 1;
        }
        for (n, f, l, e) in NEW_ACCOUNTS {
            accounts.push((n.to_string(), f.to_string(), l.to_string(), e.to_string()));
        }

        let mut account_ids = Vec::new();
        for (i, (name, first, last, email)) in accounts.iter().enumerate() {
            let acc = sf
                .create(
                    "Account",
                    &rec(json!({"Name": name, "Phone": format!("(555) 010-{:04}", 1000 + i), "BillingCity": "Portland", "BillingState": "OR", "BillingPostalCode": "97201", "BillingCountry": "USA"})),
                    &format!("demo-account-{i}"),
                )
                .await?;
            let id = s(&acc, "Id");
            sf.create("Contact", &rec(json!({"AccountId": id, "FirstName": first, "LastName": last, "Email": email})), &format!("demo-contact-{i}"))
                .await?;
            account_ids.push((id, name.clone()));
        }

        let today = chrono::Utc::now().date_naive().to_string();
        let mut opportunities = Vec::new();
        for i in 0..count {
            let (account_id, account_name) = &account_ids[i % account_ids.len()];
            let name = format!("{account_name} — {} renewal {}", ["Annual", "Q3", "Expansion", "Pilot"][i % 4], i + 1);
            let fields = json!({"Name": name, "AccountId": account_id, "StageName": "Proposal/Price Quote", "CloseDate": today, "Pricebook2Id": pricebook_id});
            let opp = sf.create("Opportunity", &rec(fields), &format!("demo-opp-{i}")).await?;
            let id = s(&opp, "Id");
            // Deal 0 is the multi-line deal with discounts; the rest have one to three lines.
            let lines = if i == 0 { 3 } else { 1 + (i * 7) % 3 };
            let mut discounted = false;
            for l in 0..lines {
                let entry = &entries[(i + l * 3) % entries.len()];
                let quantity = 1 + (i + l) % 5;
                let discount = if i == 0 { [10, 0, 15][l] } else if i % 5 == 0 { 5 } else { 0 };
                discounted |= discount > 0;
                let mut line = json!({"OpportunityId": id, "PricebookEntryId": s(entry, "Id"), "Quantity": quantity});
                if discount > 0 {
                    line["Discount"] = json!(discount);
                }
                sf.create("OpportunityLineItem", &rec(line), &format!("demo-line-{i}-{l}")).await?;
            }
            opportunities.push(Opportunity { id, name, lines, discounted });
        }
        let new_accounts = account_ids[known..].to_vec();
        Ok(Scenario { opportunities, accounts: account_ids.len(), known_customers: known, new_accounts })
    }

    /// The first deal gets payment terms, a discount on the whole deal and its own sales rep (the fields of
    /// [`CUSTOM_FIELDS`], which the demo's org has).
    pub async fn dress_first_deal(&self, sf: &Arc<dyn Connector>) -> anyhow::Result<()> {
        let Some(first) = self.opportunities.first() else { return Ok(()) };
        let mut fields = json!({"Payment_Terms__c": FIRST_DEAL_TERM, "Deal_Discount__c": FIRST_DEAL_DISCOUNT});
        if let Some(owner) = find(sf, "User", vec![("Name", json!(FIRST_DEAL_OWNER))], &["Id"]).await?.first() {
            fields["OwnerId"] = json!(s(owner, "Id"));
        }
        sf.update("Opportunity", &first.id, &rec(fields)).await?;
        Ok(())
    }

    /// Marks every opportunity Closed Won, a few at a time, over a few seconds.
    pub async fn close_all(&self, sf: &Arc<dyn Connector>, engine: &Engine) -> anyhow::Result<()> {
        for (i, opp) in self.opportunities.iter().enumerate() {
            sf.update("Opportunity", &opp.id, &rec(json!({"StageName": "Closed Won"}))).await?;
            if i % 3 == 2 {
                tokio::time::sleep(Duration::from_millis(120)).await;
                progress(engine, i + 1).await;
            }
        }
        Ok(())
    }

    /// One deal is re-opened after it was invoiced and closed again: it must not be billed twice.
    pub async fn reopen_and_close_again(&self, sf: &Arc<dyn Connector>, engine: &Engine) -> anyhow::Result<()> {
        let Some(opp) = self.opportunities.get(1) else { return Ok(()) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while invoice_id(sf, &opp.id).await?.is_none() {
            anyhow::ensure!(Instant::now() < deadline, "opportunity {} was not invoiced within a minute", opp.id);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        say(&format!("re-opening “{}” after it was invoiced, then closing it again", opp.name));
        sf.update("Opportunity", &opp.id, &rec(json!({"StageName": "Negotiation/Review"}))).await?;
        let seen = engine.stats.snapshot().changes_seen;
        let deadline = Instant::now() + Duration::from_secs(30);
        while engine.stats.snapshot().changes_seen == seen && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sf.update("Opportunity", &opp.id, &rec(json!({"StageName": "Closed Won"}))).await?;
        Ok(())
    }

    pub async fn wait_until_invoiced(&self, sf: &Arc<dyn Connector>, engine: &Engine, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let mut done = 0;
            for opp in &self.opportunities {
                if invoice_id(sf, &opp.id).await?.is_some() {
                    done += 1;
                }
            }
            let counts = engine.store.count_jobs().await?;
            let reopened_handled = engine.store.list_jobs(&ledgerlink_store::JobFilter { status: Some(JobStatus::Queued), ..Default::default() }).await?.is_empty();
            if done == self.opportunities.len() && counts.running == 0 && reopened_handled {
                say(&format!("all {done} closed opportunities invoiced; job queue empty"));
                return Ok(());
            }
            if Instant::now() > deadline {
                say(&format!("stopped waiting: {done}/{} invoiced, {} queued, {} running", self.opportunities.len(), counts.queued, counts.running));
                return Ok(());
            }
            say(&format!("  invoiced {done}/{} · jobs queued {} running {} done {}", self.opportunities.len(), counts.queued, counts.running, counts.done));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// QuickBooks' own invoices, grouped by the opportunity named in each invoice's private note.
    pub async fn invoices_by_opportunity(&self, qb: &Arc<dyn Connector>) -> anyhow::Result<BTreeMap<String, Vec<Record>>> {
        let invoices = find(qb, "Invoice", vec![], &[]).await?;
        let mut per_opp: BTreeMap<String, Vec<Record>> = BTreeMap::new();
        for inv in invoices {
            let note = s(&inv, "PrivateNote");
            if let Some(opp) = self.opportunities.iter().find(|o| note.contains(&o.id)) {
                per_opp.entry(opp.id.clone()).or_default().push(inv);
            }
        }
        Ok(per_opp)
    }

    async fn summarise(&self, sf: &Arc<dyn Connector>, qb: &Arc<dyn Connector>, engine: &Engine, checks: &[activity::Check]) -> anyhow::Result<Summary> {
        let per_opp = self.invoices_by_opportunity(qb).await?;
        let invoices_created: usize = per_opp.values().map(Vec::len).sum();
        let duplicate_invoices = per_opp.values().filter(|v| v.len() > 1).count();
        let missing = self.opportunities.iter().filter(|o| !per_opp.contains_key(&o.id)).count();
        let mut mismatched = Vec::new();
        let mut example = None;
        for opp in &self.opportunities {
            let Some(invs) = per_opp.get(&opp.id) else { continue };
            let Some(sf_opp) = sf.get("Opportunity", &opp.id, &["Id".into(), "Amount".into(), "Deal_Discount__c".into()]).await? else { continue };
            let amount = sf_opp.get("Amount").map(to_decimal).transpose().map_err(|e| anyhow::anyhow!(e))?;
            // The deal discount comes off the products' sum, rounded to the cent half away from zero.
            let percent = sf_opp.get("Deal_Discount__c").filter(|v| !v.is_null()).map(to_decimal).transpose().map_err(|e| anyhow::anyhow!(e))?;
            let amount = match (amount, percent) {
                (Some(a), Some(p)) => {
                    let off = (a * p / rust_decimal::Decimal::ONE_HUNDRED).round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
                    Some(a - off)
                }
                (a, _) => a,
            };
            let total = invs[0].get("TotalAmt").map(to_decimal).transpose().map_err(|e| anyhow::anyhow!(e))?;
            if amount != total {
                mismatched.push(format!("{}: opportunity {:?} vs invoice {:?}", opp.name, amount, total));
            }
            if example.is_none() && opp.lines > 1 && opp.discounted {
                example = Some(format!(
                    "“{}”: {} lines with discounts → invoice {} (DocNumber {}) total {} USD",
                    opp.name,
                    opp.lines,
                    s(&invs[0], "Id"),
                    s(&invs[0], "DocNumber"),
                    total.map(|t| t.to_string()).unwrap_or_default()
                ));
            }
        }
        let stats = engine.stats.snapshot();
        let counts = engine.store.count_jobs().await?;
        let open_reviews = engine.store.list_reviews(Some(ledgerlink_store::ReviewStatus::Open)).await?;
        let failed_checks = checks.iter().filter(|c| !c.ok).count();
        let errors = stats.errors as usize + open_reviews.len() + counts.dead as usize + mismatched.len() + missing + failed_checks;
        let json = json!({
            "opportunities_closed": self.opportunities.len(),
            "invoices_created": invoices_created,
            "duplicate_invoices": duplicate_invoices,
            "customers_created": stats.customers_created,
            "customers_matched": stats.customers_matched,
            "duplicates_prevented": stats.duplicates_prevented,
            "own_writes_recognised": stats.changes_already_handled,
            "writes_skipped_unchanged": stats.writes_skipped_unchanged,
            "other_records_created": stats.records_created.saturating_sub(stats.customers_created + stats.invoices_created),
            "invoice_totals_checked": self.opportunities.len() - missing,
            "amount_mismatches": mismatched.len(),
            "missing_invoices": missing,
            "open_reviews": open_reviews.len(),
            "dead_jobs": counts.dead,
            "template_checks": checks.iter().map(activity::Check::json).collect::<Vec<_>>(),
            "template_checks_passed": checks.len() - failed_checks,
            "template_checks_failed": failed_checks,
            "errors": errors,
        });
        Ok(Summary { json, mismatched, example, reviews: open_reviews.iter().map(|r| r.item.reason.clone()).collect(), checks: checks.to_vec() })
    }
}

/// The QuickBooks invoice id written back to an opportunity, if any.
pub async fn invoice_id(sf: &Arc<dyn Connector>, opp: &str) -> anyhow::Result<Option<String>> {
    let r = sf.get("Opportunity", opp, &["Id".into(), INVOICE_FIELD.into()]).await?;
    Ok(r.and_then(|r| r.get(INVOICE_FIELD).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)))
}

async fn progress(engine: &Engine, closed: usize) {
    let st = engine.stats.snapshot();
    say(&format!("  closed {closed} · invoices created {} · customers created {} matched {}", st.invoices_created, st.customers_created, st.customers_matched));
}

struct Summary {
    json: Value,
    mismatched: Vec<String>,
    example: Option<String>,
    reviews: Vec<String>,
    checks: Vec<activity::Check>,
}

impl Summary {
    fn print(&self, took: Duration) {
        let j = &self.json;
        let row = |label: &str, key: &str| eprintln!("  {label:<28}{}", j[key]);
        eprintln!();
        eprintln!("ledgerlink demo — summary ({:.1} s)", took.as_secs_f64());
        row("opportunities closed", "opportunities_closed");
        row("invoices in QuickBooks", "invoices_created");
        row("duplicate invoices", "duplicate_invoices");
        row("customers created", "customers_created");
        row("customers matched", "customers_matched");
        row("other records created", "other_records_created");
        row("duplicates prevented", "duplicates_prevented");
        row("invoice totals checked", "invoice_totals_checked");
        for c in &self.checks {
            eprintln!("  {} {}: {} → {}", if c.ok { "✓" } else { "✗" }, c.template, c.what, c.seen);
        }
        row("errors", "errors");
        if let Some(e) = &self.example {
            eprintln!("  e.g. {e}");
        }
        for m in &self.mismatched {
            eprintln!("  amount mismatch: {m}");
        }
        for r in &self.reviews {
            eprintln!("  waiting for review: {r}");
        }
        eprintln!();
    }
}
