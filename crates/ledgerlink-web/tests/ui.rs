//! The web UI over real HTTP on loopback: sign-in, session expiry, CSRF, and the QuickBooks connect flow against
//! the QuickBooks sandbox's consent pages, on a real SQLite store.
//!
//! Layout: [`spawn_app`] starts the sandbox, a store in a temp dir with one admin, and the UI on port 0;
//! [`Browser`] is a minimal cookie-keeping client that does not follow redirects, so each hop can be checked.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Duration;
use ledgerlink_engine::{Engine, EngineSettings};
use ledgerlink_sandbox::quickbooks;
use ledgerlink_store::{SecretCipher, Store};
use ledgerlink_web::{QuickbooksApp, UiClock, Web, WebConfig};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

const EMAIL: &str = "dana@example.com";
const PASSWORD: &str = "correct horse battery";

struct App {
    base: String,
    clock: UiClock,
    store: Arc<dyn Store>,
    platform: ledgerlink_platform::Platform,
    workspace: String,
    qbo: ledgerlink_sandbox::RunningSandbox,
    _dir: tempfile::TempDir,
}

async fn spawn_app() -> App {
    spawn_app_with(|_| {}).await
}

async fn spawn_app_with(tweak: impl FnOnce(&mut WebConfig)) -> App {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}", dir.path().join("ui.sqlite").display()), SecretCipher::for_tests()).await.unwrap();
    let platform = ledgerlink_platform::Platform::new(store.clone(), Default::default());
    let workspace = platform.create_workspace("Juniper Finch Design").await.unwrap().id;
    ledgerlink_web::create_admin(store.as_ref(), &workspace, EMAIL, "Dana", PASSWORD).await.unwrap();
    let qbo = quickbooks::start(quickbooks::QuickbooksOptions::default()).await.unwrap();
    let engine = Engine::new(store.clone(), BTreeMap::new(), vec![], EngineSettings::default()).unwrap();
    let clock = UiClock::default();
    let mut config = WebConfig { quickbooks: Some(QuickbooksApp::from_sandbox_info(&qbo.info).unwrap()), clock: clock.clone(), ..WebConfig::default() };
    tweak(&mut config);
    let app = ledgerlink_web::router(Web::new(engine, platform.clone(), config).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    App { base, clock, store, platform, workspace, qbo, _dir: dir }
}

/// Keeps cookies per host:port (enough for loopback) and never follows redirects.
struct Browser {
    http: reqwest::Client,
    jar: BTreeMap<(String, String), String>,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

impl Browser {
    fn new() -> Browser {
        Browser { http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(), jar: BTreeMap::new() }
    }

    fn origin(url: &str) -> String {
        let u = url::Url::parse(url).unwrap();
        format!("{}:{}", u.host_str().unwrap(), u.port().unwrap_or(80))
    }

    async fn send(&mut self, req: reqwest::RequestBuilder, url: &str) -> Page {
        let origin = Self::origin(url);
        let cookies: Vec<String> = self.jar.iter().filter(|((o, _), _)| *o == origin).map(|((_, k), v)| format!("{k}={v}")).collect();
        let req = if cookies.is_empty() { req } else { req.header(COOKIE, cookies.join("; ")) };
        let resp = req.send().await.unwrap();
        for sc in resp.headers().get_all(SET_COOKIE) {
            let sc = sc.to_str().unwrap();
            let (kv, attrs) = sc.split_once(';').unwrap_or((sc, ""));
            let (k, v) = kv.split_once('=').unwrap();
            assert!(attrs.contains("HttpOnly") && attrs.contains("SameSite=Lax"), "cookie {k} must be HttpOnly and SameSite=Lax: {sc}");
            if attrs.contains("Max-Age=0") {
                self.jar.remove(&(origin.clone(), k.to_string()));
            } else {
                self.jar.insert((origin.clone(), k.to_string()), v.to_string());
            }
        }
        let status = resp.status();
        let location = resp.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_string());
        Page { status, location, body: resp.text().await.unwrap() }
    }

    async fn get(&mut self, url: &str) -> Page {
        let req = self.http.get(url);
        self.send(req, url).await
    }

    async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let req = self.http.post(url).form(form);
        self.send(req, url).await
    }
}

/// The value of the first `<input name="NAME" value="…">` in a page.
fn field(html: &str, name: &str) -> String {
    let at = html.find(&format!("name=\"{name}\" value=\"")).unwrap_or_else(|| panic!("no field {name} in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].replace("&amp;", "&").replace("&#39;", "'").replace("&quot;", "\"")
}

async fn sign_in(b: &mut Browser, app: &App, password: &str) -> Page {
    let form = b.get(&format!("{}/login", app.base)).await;
    assert_eq!(form.status, StatusCode::OK);
    let csrf = field(&form.body, "csrf");
    b.post(&format!("{}/login", app.base), &[("email", EMAIL), ("password", password), ("csrf", &csrf), ("next", "/settings/integrations")]).await
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer() {
    let app = spawn_app().await;
    let mut b = Browser::new();
    let wrong = sign_in(&mut b, &app, "not the password").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("The email or password is not right."));
    let form = b.get(&format!("{}/login", app.base)).await;
    let csrf = field(&form.body, "csrf");
    let unknown = b.post(&format!("{}/login", app.base), &[("email", "nobody@example.com"), ("password", PASSWORD), ("csrf", &csrf)]).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(unknown.body.contains("The email or password is not right."));
    // A sign-in form posted without its own token (from another site) does not sign in either.
    let forged = Browser::new().post(&format!("{}/login", app.base), &[("email", EMAIL), ("password", PASSWORD), ("csrf", "x")]).await;
    assert!(forged.body.contains("The sign-in form had expired"), "{}", forged.body);
    assert_eq!(forged.location, None);
}

#[tokio::test]
async fn sessions_end_after_idle_time_and_after_their_absolute_lifetime() {
    let app = spawn_app().await;
    let mut b = Browser::new();
    let page = b.get(&format!("{}/settings/integrations", app.base)).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location.as_deref(), Some("/login?next=%2Fsettings%2Fintegrations"));

    let signed = sign_in(&mut b, &app, PASSWORD).await;
    assert_eq!(signed.location.as_deref(), Some("/settings/integrations"));
    let page = b.get(&format!("{}/settings/integrations", app.base)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("QuickBooks") && page.body.contains("Not connected"));

    // Used every 25 minutes, the session lives on…
    for _ in 0..4 {
        app.clock.advance(Duration::minutes(25));
        assert_eq!(b.get(&format!("{}/jobs", app.base)).await.status, StatusCode::OK);
    }
    // …but 31 minutes of silence end it, and the sign-in page says so.
    app.clock.advance(Duration::minutes(31));
    let page = b.get(&format!("{}/jobs", app.base)).await;
    assert_eq!(page.location.as_deref(), Some("/login?next=%2Fjobs&expired=1"));
    let login = b.get(&format!("{}{}", app.base, page.location.unwrap())).await;
    assert!(login.body.contains("Your session has ended."));

    // A busy session still ends 12 hours after sign-in.
    sign_in(&mut b, &app, PASSWORD).await;
    for _ in 0..(12 * 60 / 25) {
        app.clock.advance(Duration::minutes(25));
        assert_eq!(b.get(&format!("{}/runs", app.base)).await.status, StatusCode::OK);
    }
    app.clock.advance(Duration::minutes(25));
    assert_eq!(b.get(&format!("{}/runs", app.base)).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn forms_without_the_sessions_csrf_token_change_nothing() {
    let app = spawn_app().await;
    let mut b = Browser::new();
    sign_in(&mut b, &app, PASSWORD).await;
    let page = b.get(&format!("{}/settings/integrations", app.base)).await;
    let csrf = field(&page.body, "csrf");
    let connect = format!("{}/settings/integrations/quickbooks/connect", app.base);
    for form in [vec![], vec![("csrf", "guess")], vec![("csrf", &csrf[..csrf.len() - 1])]] {
        let refused = b.post(&connect, &form).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(refused.body.contains("This form has expired"));
    }
    let accepted = b.post(&connect, &[("csrf", &csrf)]).await;
    assert_eq!(accepted.status, StatusCode::SEE_OTHER);
    assert!(accepted.location.unwrap().starts_with(&format!("{}/connect/oauth2?", app.qbo.base_url)));
    // Signing out is a form too.
    assert_eq!(b.post(&format!("{}/logout", app.base), &[]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(b.post(&format!("{}/logout", app.base), &[("csrf", &csrf)]).await.location.as_deref(), Some("/login"));
    assert_eq!(b.get(&format!("{}/settings/integrations", app.base)).await.status, StatusCode::SEE_OTHER);
}

/// Connect → the sandbox's pages (sign in, pick the second company, approve) → back; returns the callback URL
/// and the company's name.
async fn consent(b: &mut Browser, app: &App, approve: bool) -> (String, String) {
    let page = b.get(&format!("{}/settings/integrations", app.base)).await;
    let csrf = field(&page.body, "csrf");
    let to_intuit = b.post(&format!("{}/settings/integrations/quickbooks/connect", app.base), &[("csrf", &csrf)]).await.location.unwrap();
    let authorize = url::Url::parse(&to_intuit).unwrap();
    let q: BTreeMap<String, String> = authorize.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["scope"], "com.intuit.quickbooks.accounting");
    assert_eq!(q["redirect_uri"], format!("{}/oauth/quickbooks/callback", app.base));
    assert!(q["state"].len() >= 32, "the state is unguessable");
    let signin = b.get(&to_intuit).await;
    assert_eq!(signin.status, StatusCode::OK);
    let hidden = ["client_id", "scope", "redirect_uri", "state"].map(|k| (k, field(&signin.body, k)));
    let mut form: Vec<(&str, &str)> = hidden.iter().map(|(k, v)| (*k, v.as_str())).collect();
    form.extend([("email", quickbooks::authorize::SANDBOX_USER), ("password", quickbooks::authorize::SANDBOX_PASSWORD)]);
    let companies = b.post(&format!("{}/connect/oauth2/signin", app.qbo.base_url), &form).await;
    assert_eq!(companies.status, StatusCode::OK, "{}", companies.body);
    // The second company offered, with its name from the label.
    let second = companies.body.match_indices("name=\"realmId\" value=\"").nth(1).unwrap().0;
    let rest = &companies.body[second + 22..];
    let realm = rest[..rest.find('"').unwrap()].to_string();
    let label = &rest[rest.find('>').unwrap() + 1..];
    let company = label[..label.find(" (realm").unwrap()].trim().replace("&amp;", "&").replace("&#39;", "'");
    let ticket = field(&companies.body, "ticket");
    let mut form: Vec<(&str, &str)> = hidden.iter().map(|(k, v)| (*k, v.as_str())).collect();
    form.extend([("ticket", ticket.as_str()), ("realmId", realm.as_str())]);
    let approve_page = b.post(&format!("{}/connect/oauth2/company", app.qbo.base_url), &form).await;
    assert_eq!(approve_page.status, StatusCode::OK);
    form.push(("decision", if approve { "approve" } else { "deny" }));
    let back = b.post(&format!("{}/connect/oauth2/decision", app.qbo.base_url), &form).await;
    assert_eq!(back.status, StatusCode::FOUND);
    (back.location.unwrap(), company)
}

#[tokio::test]
async fn connecting_checks_state_once_and_stores_a_working_sealed_connection() {
    let app = spawn_app().await;
    let mut b = Browser::new();
    sign_in(&mut b, &app, PASSWORD).await;

    // Cancelled on the QuickBooks page: said in words, nothing stored.
    let (denied, _) = consent(&mut b, &app, false).await;
    let page = b.get(&denied).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("You cancelled on the QuickBooks page"), "{}", page.body);
    assert!(app.store.get_connection(&format!("quickbooks.{}", app.workspace)).await.unwrap().is_none());

    // Approved, but the answer is tampered with: the state does not match.
    let (callback, company) = consent(&mut b, &app, true).await;
    let mut forged = url::Url::parse(&callback).unwrap();
    let pairs: Vec<(String, String)> = forged.query_pairs().into_owned().map(|(k, v)| if k == "state" { (k, "forged".into()) } else { (k, v) }).collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    let page = b.get(forged.as_str()).await;
    assert!(page.body.contains("does not belong to the sign-in you started"), "{}", page.body);
    // The state was used up by that attempt: the genuine answer now fails too, and nothing is stored.
    let page = b.get(&callback).await;
    assert!(page.body.contains("was not started from this browser session"), "{}", page.body);
    assert!(app.store.get_connection(&format!("quickbooks.{}", app.workspace)).await.unwrap().is_none());

    // A clean round: connected to the company picked.
    let (callback, company2) = consent(&mut b, &app, true).await;
    assert_eq!(company, company2);
    let page = b.get(&callback).await;
    assert_eq!(page.location.as_deref(), Some("/settings/integrations?connected=1"), "{}", page.body);
    let page = b.get(&format!("{}/settings/integrations?connected=1", app.base)).await;
    assert!(page.body.contains("<strong>Connected</strong>"));
    assert!(page.body.contains(&format!("QuickBooks is connected to {}.", company.replace('&', "&amp;").replace('\'', "&#39;"))), "{}", page.body);
    let conn = app.store.get_connection(&format!("quickbooks.{}", app.workspace)).await.unwrap().unwrap();
    assert_eq!(conn.system, "quickbooks");
    assert_eq!(conn.config["company_name"], company.as_str());
    assert!(conn.credentials["refresh_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(conn.config.get("refresh_token").is_none() && conn.config.get("client_secret").is_none(), "secrets only in the sealed part");
    // Replaying the used callback changes nothing.
    let page = b.get(&callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);

    // Test Connection reads the company with the stored tokens.
    let manage = b.get(&format!("{}/settings/integrations/quickbooks", app.base)).await;
    let csrf = field(&manage.body, "csrf");
    let tested = b.post(&format!("{}/settings/integrations/quickbooks/test", app.base), &[("csrf", &csrf)]).await;
    assert!(tested.body.contains("The connection works"), "{}", tested.body);

    // Disconnect: syncing stops, the grant is revoked at QuickBooks and the tokens deleted here; the company's
    // name and everything else stay; the card offers Connect again.
    let refresh = conn.credentials["refresh_token"].as_str().unwrap().to_string();
    let done = b.post(&format!("{}/settings/integrations/quickbooks/disconnect", app.base), &[("csrf", &csrf)]).await;
    assert_eq!(done.location.as_deref(), Some("/settings/integrations?disconnected=1"));
    let status = app.platform.status(&app.workspace).await.unwrap();
    assert_eq!(status.state, ledgerlink_platform::ConnectionState::Disconnected);
    assert_eq!(status.company_name.as_deref(), Some(company.as_str()));
    let kept = app.store.get_connection(&format!("quickbooks.{}", app.workspace)).await.unwrap().unwrap();
    assert!(kept.credentials.get("refresh_token").is_none(), "the tokens are deleted");
    let revoked: Vec<serde_json::Value> = reqwest::get(format!("{}/sandbox/admin/revocations", app.qbo.base_url)).await.unwrap().json().await.unwrap();
    assert_eq!(revoked.len(), 1);
    assert!(revoked[0]["refresh_tokens_sha256"].as_array().unwrap().contains(&serde_json::json!(quickbooks::oauth::fingerprint(&refresh))));
    let page = b.get(&format!("{}/settings/integrations?disconnected=1", app.base)).await;
    assert!(page.body.contains("Not connected"));
    assert!(page.body.contains("QuickBooks is disconnected and its access revoked."), "{}", page.body);
}

#[tokio::test]
async fn a_failed_revocation_still_disconnects_and_the_page_says_so() {
    // QuickBooks' revocation endpoint cannot be reached: a port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let app = spawn_app_with(|c| {
        if let Some(q) = c.quickbooks.as_mut() {
            q.revoke_url = format!("http://{closed}/v2/oauth2/tokens/revoke");
        }
    })
    .await;
    let mut b = Browser::new();
    sign_in(&mut b, &app, PASSWORD).await;
    let (callback, _) = consent(&mut b, &app, true).await;
    b.get(&callback).await;
    let manage = b.get(&format!("{}/settings/integrations/quickbooks", app.base)).await;
    let csrf = field(&manage.body, "csrf");
    let page = b.post(&format!("{}/settings/integrations/quickbooks/disconnect", app.base), &[("csrf", &csrf)]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("QuickBooks is disconnected here"), "{}", page.body);
    assert!(page.body.contains("could not be told to revoke"), "{}", page.body);
    assert!(page.body.contains("QuickBooks could not be reached"), "{}", page.body);
    assert!(page.body.contains("Not connected"));
    let status = app.platform.status(&app.workspace).await.unwrap();
    assert_eq!(status.state, ledgerlink_platform::ConnectionState::Disconnected);
    let kept = app.store.get_connection(&format!("quickbooks.{}", app.workspace)).await.unwrap().unwrap();
    assert!(kept.credentials.get("refresh_token").is_none(), "the tokens are deleted all the same");
}

#[tokio::test]
async fn a_demo_link_signs_in_once_and_only_in_demo_mode() {
    // Not in demo mode: there is no such page, whatever the token.
    let plain = spawn_app().await;
    let mut b = Browser::new();
    let page = b.get(&format!("{}/demo-sign-in?token=anything", plain.base)).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(!b.jar.keys().any(|(_, k)| k == "ledgerlink_session"));

    let demo = ledgerlink_web::demo::DemoSignIn::new(EMAIL);
    let app = spawn_app_with(|c| {
        c.demo = Some(demo.clone());
        c.banner = Some("Demo: you are the demo admin.".into());
    })
    .await;
    let link = demo.issue(app.clock.now());
    let mut b = Browser::new();
    // A made-up token is refused and opens no session.
    let page = b.get(&format!("{}/demo-sign-in?token=made-up", app.base)).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("This sign-in link does not work any more"));
    let page = b.get(&format!("{}/demo-sign-in", app.base)).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(!b.jar.keys().any(|(_, k)| k == "ledgerlink_session"));

    // The printed link: signed in as the demo admin, on Integrations, with the banner.
    let page = b.get(&format!("{}/demo-sign-in?token={link}", app.base)).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location.as_deref(), Some("/settings/integrations"));
    let page = b.get(&format!("{}/settings/integrations", app.base)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Demo: you are the demo admin."));
    assert!(page.body.contains("Dana"), "signed in as the demo admin");

    // Used once: another browser cannot use it again.
    let mut other = Browser::new();
    let page = other.get(&format!("{}/demo-sign-in?token={link}", app.base)).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(other.get(&format!("{}/settings/integrations", app.base)).await.status, StatusCode::SEE_OTHER);

    // A link left unused for longer than its lifetime no longer works.
    let late = demo.issue(app.clock.now());
    app.clock.advance(Duration::minutes(16));
    let page = other.get(&format!("{}/demo-sign-in?token={late}", app.base)).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn manage_saves_the_help_pages_settings_from_the_companys_own_lists() {
    let app = spawn_app().await;
    let mut b = Browser::new();
    sign_in(&mut b, &app, PASSWORD).await;
    let (callback, _) = consent(&mut b, &app, true).await;
    b.get(&callback).await;
    let manage = b.get(&format!("{}/settings/integrations/quickbooks", app.base)).await;
    assert_eq!(manage.status, StatusCode::OK);
    for words in ["Customer sync", "Invoice sync", "Expense sync", "Tax rate mapping", "Sync frequency", "Test Connection", "Disconnect"] {
        assert!(manage.body.contains(words), "the Manage page offers {words}");
    }
    let csrf = field(&manage.body, "csrf");
    let lists = app.platform.company_lists(&app.workspace).await.unwrap();
    let income = &lists.income_accounts[0];
    let expense = &lists.expense_accounts[0];
    assert!(manage.body.contains(&format!("<option value=\"{}\">", income.id)), "income accounts come from the company");
    let saved = b
        .post(
            &format!("{}/settings/integrations/quickbooks", app.base),
            &[
                ("csrf", &csrf),
                ("customer_matching", "by_email"),
                ("create_unmatched", "on"),
                ("income_account", &income.id),
                ("expenses_enabled", "on"),
                ("expense_post_as", "expense"),
                ("expense_account", &expense.id),
                ("real_time", "on"),
                ("reconciliation_minutes", "30"),
            ],
        )
        .await;
    assert_eq!(saved.location.as_deref(), Some("/settings/integrations/quickbooks?saved=1"), "{}", saved.body);
    let s = app.platform.load_settings(&app.workspace).await.unwrap();
    assert_eq!(s.customers.matching, ledgerlink_platform::CustomerMatching::ByEmail);
    assert!(!s.invoices.auto_push, "an unticked box is off");
    assert_eq!(s.invoices.income_account.as_ref().map(|r| r.name.as_str()), Some(income.name.as_str()));
    assert_eq!(s.expenses.post_as, ledgerlink_platform::ExpensePostAs::Expense);
    assert_eq!(s.frequency.reconciliation_minutes, 30);

    // An account that is not the company's is refused, naming the setting; nothing changes.
    let refused = b.post(&format!("{}/settings/integrations/quickbooks", app.base), &[("csrf", &csrf), ("income_account", "99999"), ("reconciliation_minutes", "30")]).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("Income account"), "{}", refused.body);
    assert_eq!(app.platform.load_settings(&app.workspace).await.unwrap(), s);
    let refused = b.post(&format!("{}/settings/integrations/quickbooks", app.base), &[("csrf", &csrf), ("reconciliation_minutes", "0")]).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("reconciliation"), "{}", refused.body);
}

#[tokio::test]
async fn every_operating_page_renders_for_a_signed_in_admin_and_none_without() {
    let app = spawn_app().await;
    let mut b = Browser::new();
    let pages = [
        ("/", "Sync activity"),
        ("/?range=7d", "<strong>Last 7 days</strong>"),
        ("/invoices", "No invoices have been pushed yet."),
        ("/flows", "No flows are configured."),
        ("/runs", "No runs yet."),
        ("/jobs", "No jobs."),
        ("/jobs?status=dead", "No jobs."),
        ("/reviews", "Nothing is waiting for a decision."),
        ("/audit", "Nothing has been written yet."),
        ("/webhooks", "No webhook has been sent yet."),
        ("/reports", "No report has been kept yet."),
    ];
    for (path, _) in pages {
        assert_eq!(b.get(&format!("{}{path}", app.base)).await.status, StatusCode::SEE_OTHER, "{path} needs a session");
    }
    sign_in(&mut b, &app, PASSWORD).await;
    for (path, text) in pages {
        let page = b.get(&format!("{}{path}", app.base)).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(page.body.contains(text), "{path} says “{text}”");
    }
    let bad = b.get(&format!("{}/jobs?status=lost", app.base)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("“lost” is not a job status"));
    // Acting on a job that does not exist says so in words.
    let csrf = field(&b.get(&format!("{}/jobs", app.base)).await.body, "csrf");
    let missing = b.post(&format!("{}/jobs/999/retry", app.base), &[("csrf", &csrf)]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("Job 999 does not exist"));
}

#[tokio::test]
async fn salesforce_connects_through_its_sign_in_tests_and_disconnects_with_revocation() {
    use ledgerlink_sandbox::salesforce;
    let sfdc = salesforce::start(salesforce::SalesforceOptions::default()).await.unwrap();
    let sf_app = ledgerlink_web::salesforce::SalesforceApp::from_sandbox_info(&sfdc.info).unwrap();
    let app = spawn_app_with(|c| c.salesforce = Some(sf_app)).await;
    let mut b = Browser::new();
    sign_in(&mut b, &app, PASSWORD).await;
    let page = b.get(&format!("{}/settings/integrations", app.base)).await;
    let csrf = field(&page.body, "csrf");
    let connect_url = format!("{}/settings/integrations/salesforce/connect", app.base);

    // To Salesforce's authorize page with an unguessable state; signing in and allowing comes back with a code.
    let to_sf = b.post(&connect_url, &[("csrf", &csrf)]).await.location.unwrap();
    let q: BTreeMap<String, String> = url::Url::parse(&to_sf).unwrap().query_pairs().into_owned().collect();
    assert!(to_sf.starts_with(sfdc.info_str("authorize_url")));
    assert_eq!(q["redirect_uri"], format!("{}/oauth/salesforce/callback", app.base));
    assert!(q["state"].len() >= 32);
    let signin = b.get(&to_sf).await;
    assert_eq!(signin.status, StatusCode::OK);
    let decide = |decision: &'static str| {
        let mut form: Vec<(String, String)> = q.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        form.extend([("username".into(), sfdc.info_str("username").into()), ("password".into(), sfdc.info_str("password").into()), ("decision".into(), decision.into())]);
        form
    };
    let authorize = format!("{}/services/oauth2/authorize", sfdc.base_url);
    let form = decide("allow");
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let back = b.post(&authorize, &pairs).await;
    let callback = back.location.expect("redirected back with a code");

    // A forged state is refused and uses the sign-in up: nothing is stored.
    let forged = callback.replace(&format!("state={}", q["state"]), "state=forged");
    let page = b.get(&forged).await;
    assert!(page.body.contains("does not belong to the sign-in you started"), "{}", page.body);
    assert!(b.get(&callback).await.body.contains("was not started from this browser session"));
    assert!(app.store.get_connection(&format!("salesforce.{}", app.workspace)).await.unwrap().is_none());

    // Denied on the Salesforce page: said in words.
    let to_sf = b.post(&connect_url, &[("csrf", &csrf)]).await.location.unwrap();
    let q2: BTreeMap<String, String> = url::Url::parse(&to_sf).unwrap().query_pairs().into_owned().collect();
    let mut form: Vec<(String, String)> = q2.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    form.push(("decision".into(), "deny".into()));
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let denied = b.post(&authorize, &pairs).await.location.unwrap();
    assert!(b.get(&denied).await.body.contains("You denied access on the Salesforce page"));

    // A clean round: Connected to the org, its tokens sealed in the store.
    let to_sf = b.post(&connect_url, &[("csrf", &csrf)]).await.location.unwrap();
    let q3: BTreeMap<String, String> = url::Url::parse(&to_sf).unwrap().query_pairs().into_owned().collect();
    let mut form: Vec<(String, String)> = q3.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    form.extend([("username".into(), sfdc.info_str("username").into()), ("password".into(), sfdc.info_str("password").into()), ("decision".into(), "allow".into())]);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let callback = b.post(&authorize, &pairs).await.location.unwrap();
    let page = b.get(&callback).await;
    assert_eq!(page.location.as_deref(), Some("/settings/integrations?salesforce=connected"), "{}", page.body);
    let page = b.get(&format!("{}/settings/integrations?salesforce=connected", app.base)).await;
    let conn = app.store.get_connection(&format!("salesforce.{}", app.workspace)).await.unwrap().unwrap();
    let org = conn.config["org_name"].as_str().unwrap().to_string();
    assert!(page.body.contains(&format!("Salesforce is connected to {}.", org.replace('&', "&amp;"))), "{}", page.body);
    assert!(conn.config.get("refresh_token").is_none());
    let refresh = conn.credentials["refresh_token"].as_str().unwrap().to_string();

    // Test Connection: one read-only call with the stored sign-in.
    let tested = b.post(&format!("{}/settings/integrations/salesforce/test", app.base), &[("csrf", &csrf)]).await;
    assert!(tested.body.contains("The Salesforce connection works"), "{}", tested.body);

    // Disconnect (after a confirmation page): revoked at Salesforce, tokens deleted here.
    let confirm = b.get(&format!("{}/settings/integrations/salesforce/disconnect", app.base)).await;
    assert!(confirm.body.contains("Disconnect Salesforce?"));
    let done = b.post(&format!("{}/settings/integrations/salesforce/disconnect", app.base), &[("csrf", &csrf)]).await;
    assert!(done.body.contains("Salesforce is disconnected and its access revoked."), "{}", done.body);
    assert!(done.body.contains("Not connected"));
    let kept = app.store.get_connection(&format!("salesforce.{}", app.workspace)).await.unwrap().unwrap();
    assert!(kept.credentials.get("refresh_token").is_none());
    let refreshed = reqwest::Client::new()
        .post(sfdc.info_str("token_url"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh.as_str()), ("client_id", sfdc.info_str("client_id")), ("client_secret", sfdc.info_str("client_secret"))])
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::BAD_REQUEST, "the revoked refresh token no longer works");
    let tested = b.post(&format!("{}/settings/integrations/salesforce/test", app.base), &[("csrf", &csrf)]).await;
    assert!(tested.body.contains("Salesforce is not connected"), "{}", tested.body);
}
