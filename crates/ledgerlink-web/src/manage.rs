//! The Manage page of the QuickBooks card: the help page's "Configure what syncs" as one form, Test Connection,
//! the reconciliation pass, and the link to Disconnect.
//!
//! Every choice of a QuickBooks account, product/service or tax code comes from the connected company's own
//! lists (`Platform::company_lists`), so a setting can only name something that exists there. The settings model
//! and its validation are the platform's ([`ledgerlink_platform::IntegrationSettings`]); this module only turns
//! the form into it and back. The form is flat (`service:<id>`, `tax:<id>` for the two maps), so it needs no
//! JavaScript.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use ledgerlink_platform::{
    CompanyLists, CustomerMatching, ExpensePostAs, IntegrationSettings, MatchDecision, QbChoice, QbRef, RecordKind,
};
use serde::Deserialize;

use crate::Web;
use crate::integrations::{QuickbooksCard, platform_error, quickbooks_card};
use crate::pages::{Layout, UiError, UiResult, render};
use crate::session::{Admin, Posted};

/// The result of Test Connection, as shown.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub ok: bool,
    pub headline: String,
    /// (what was checked, passed)
    pub checks: Vec<(String, bool)>,
    pub advice: Option<String>,
}

/// One `<option>`.
#[derive(Debug, Clone)]
pub struct Opt {
    pub id: String,
    pub name: String,
    pub selected: bool,
}

fn options(list: &[QbChoice], current: Option<&str>) -> Vec<Opt> {
    list.iter()
        .map(|c| Opt { id: c.id.clone(), name: if c.detail.is_empty() { c.name.clone() } else { format!("{} ({})", c.name, c.detail) }, selected: current == Some(c.id.as_str()) })
        .collect()
}

/// A platform record (service, tax rate) with the QuickBooks choice mapped to it.
#[derive(Debug, Clone)]
pub struct MapRow {
    pub id: String,
    pub name: String,
    pub options: Vec<Opt>,
    pub mapped: bool,
}

#[derive(Template)]
#[template(path = "manage.html")]
struct ManagePage {
    l: Layout,
    qb: QuickbooksCard,
    test: Option<TestOutcome>,
    flash: Option<String>,
    /// Why the company's lists could not be read (the form then cannot be saved).
    lists_error: Option<String>,
    s: IntegrationSettings,
    matching: &'static str,
    income_accounts: Vec<Opt>,
    expense_accounts: Vec<Opt>,
    payment_accounts: Vec<Opt>,
    services: Vec<MapRow>,
    tax_rates: Vec<MapRow>,
}

fn matching_str(m: CustomerMatching) -> &'static str {
    match m {
        CustomerMatching::AutoCreate => "auto_create",
        CustomerMatching::ByEmail => "by_email",
        CustomerMatching::ByName => "by_name",
        CustomerMatching::ByEmailThenName => "by_email_then_name",
    }
}

/// (id, name) of the workspace's platform records of `kind`.
async fn names(web: &Web, workspace: &str, kind: RecordKind) -> Result<Vec<(String, String)>, UiError> {
    let records = web.platform.list_records(workspace, kind).await.map_err(platform_error)?;
    Ok(records.into_iter().map(|r| (r.id.clone(), r.data["name"].as_str().unwrap_or(&r.id).to_string())).collect())
}

/// Renders the Manage page (after a GET, a test, or a refused save).
pub async fn manage_page(web: &Web, admin: &Admin, test: Option<TestOutcome>, flash: Option<String>) -> UiResult {
    let ws = admin.workspace();
    let qb = quickbooks_card(web, ws).await?;
    if !qb.connected {
        return Ok(Redirect::to("/settings/integrations").into_response());
    }
    let s = web.platform.load_settings(ws).await.map_err(platform_error)?;
    let (lists, lists_error) = match web.platform.company_lists(ws).await {
        Ok(l) => (l, None),
        Err(e) => {
            tracing::warn!(error = %e, "QuickBooks lists for the settings form could not be read");
            (CompanyLists::default(), Some(format!("The company's accounts, products and tax codes could not be read from QuickBooks ({e}). Test the connection below.")))
        }
    };
    let services = names(web, ws, RecordKind::Service).await?;
    let services = services
        .into_iter()
        .map(|(id, name)| {
            let current = s.invoices.service_items.get(&id).map(|r| r.id.clone());
            MapRow { options: options(&lists.items, current.as_deref()), mapped: current.is_some(), id, name }
        })
        .collect();
    let tax_rates = names(web, ws, RecordKind::TaxRate).await?;
    let tax_rates = tax_rates
        .into_iter()
        .map(|(id, name)| {
            let current = s.tax_codes.get(&id).map(|r| r.id.clone());
            MapRow { options: options(&lists.tax_codes, current.as_deref()), mapped: current.is_some(), id, name }
        })
        .collect();
    let page = ManagePage {
        l: Layout::new(admin, web.config.banner.as_ref(), "QuickBooks settings", "integrations"),
        income_accounts: options(&lists.income_accounts, s.invoices.income_account.as_ref().map(|r| r.id.as_str())),
        expense_accounts: options(&lists.expense_accounts, s.expenses.expense_account.as_ref().map(|r| r.id.as_str())),
        payment_accounts: options(&lists.payment_accounts, s.expenses.payment_account.as_ref().map(|r| r.id.as_str())),
        matching: matching_str(s.customers.matching),
        services,
        tax_rates,
        qb,
        test,
        flash,
        lists_error,
        s,
    };
    Ok(render(StatusCode::OK, &page))
}

#[derive(Debug, Deserialize)]
pub struct ManageQuery {
    saved: Option<String>,
    confirmed: Option<String>,
}

/// `GET /settings/integrations/quickbooks`.
pub async fn manage(State(web): State<Web>, admin: Admin, Query(q): Query<ManageQuery>) -> UiResult {
    let flash = if q.saved.is_some() {
        Some("Settings saved.".to_string())
    } else {
        q.confirmed.map(|n| format!("{n} match(es) confirmed and linked."))
    };
    manage_page(&web, &admin, None, flash).await
}

/// Reads the posted form into the settings, resolving each chosen id against the company's lists (an id that
/// is not there is refused, naming the setting).
fn settings_from_form(form: &[(String, String)], lists: &CompanyLists, before: &IntegrationSettings) -> Result<IntegrationSettings, UiError> {
    let one = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.trim().to_string()).filter(|v| !v.is_empty());
    let on = |k: &str| one(k).is_some_and(|v| v == "on" || v == "true");
    let pick = |k: &str, label: &str, list: &[QbChoice]| -> Result<Option<QbRef>, UiError> {
        match one(k) {
            None => Ok(None),
            Some(id) => list.iter().find(|c| c.id == id).map(|c| Some(QbRef { id: c.id.clone(), name: c.name.clone() })).ok_or_else(|| refused(format!("{label}: the chosen QuickBooks record ({id}) is not in the company's list any more; reload the page."))),
        }
    };
    let mut s = before.clone();
    s.customers.matching = match one("customer_matching").as_deref() {
        Some("auto_create") => CustomerMatching::AutoCreate,
        Some("by_email") => CustomerMatching::ByEmail,
        Some("by_name") => CustomerMatching::ByName,
        Some("by_email_then_name") | None => CustomerMatching::ByEmailThenName,
        Some(other) => return Err(refused(format!("Customer sync: “{other}” is not a way to match customers."))),
    };
    s.customers.create_unmatched = on("create_unmatched");
    s.invoices.auto_push = on("auto_push");
    s.invoices.income_account = pick("income_account", "Income account", &lists.income_accounts)?;
    let mut items = BTreeMap::new();
    for (k, _) in form.iter().filter(|(k, _)| k.starts_with("service:")) {
        if let Some(r) = pick(k, &format!("Product/service for {}", &k[8..]), &lists.items)? {
            items.insert(k[8..].to_string(), r);
        }
    }
    s.invoices.service_items = items;
    s.expenses.enabled = on("expenses_enabled");
    s.expenses.post_as = match one("expense_post_as").as_deref() {
        Some("expense") => ExpensePostAs::Expense,
        _ => ExpensePostAs::Bill,
    };
    s.expenses.expense_account = pick("expense_account", "Expense account", &lists.expense_accounts)?;
    s.expenses.payment_account = pick("payment_account", "Paid from account", &lists.payment_accounts)?;
    let mut taxes = BTreeMap::new();
    for (k, _) in form.iter().filter(|(k, _)| k.starts_with("tax:")) {
        if let Some(r) = pick(k, &format!("Tax code for {}", &k[4..]), &lists.tax_codes)? {
            taxes.insert(k[4..].to_string(), r);
        }
    }
    s.tax_codes = taxes;
    s.frequency.real_time = on("real_time");
    s.frequency.reconciliation_minutes = match one("reconciliation_minutes") {
        None => s.frequency.reconciliation_minutes,
        Some(m) => m.parse().map_err(|_| refused(format!("Reconciliation interval: “{m}” is not a whole number of minutes.")))?,
    };
    Ok(s)
}

fn refused(message: String) -> UiError {
    UiError::new(StatusCode::UNPROCESSABLE_ENTITY, "The settings were not saved", message).back_to("/settings/integrations/quickbooks")
}

/// `POST /settings/integrations/quickbooks`: saves the settings.
pub async fn save(State(web): State<Web>, posted: Posted<Vec<(String, String)>>) -> UiResult {
    let ws = posted.admin.workspace();
    let lists = web.platform.company_lists(ws).await.map_err(platform_error)?;
    let before = web.platform.load_settings(ws).await.map_err(platform_error)?;
    let settings = settings_from_form(&posted.form, &lists, &before)?;
    web.platform.save_settings(ws, &settings).await.map_err(|e| match e {
        ledgerlink_platform::PlatformError::Invalid { field, message } => refused(format!("{field}: {message}")),
        other => platform_error(other),
    })?;
    tracing::info!(workspace = %ws, user = %posted.admin.email(), "QuickBooks settings saved");
    Ok(Redirect::to("/settings/integrations/quickbooks?saved=1").into_response())
}

/// One platform record in the reconciliation pass, as shown.
#[derive(Debug, Clone)]
pub struct RecRow {
    pub field: String,
    pub name: String,
    /// `linked`, `matched`, `near`, `missing`.
    pub state: &'static str,
    pub state_text: &'static str,
    /// (QuickBooks id, "name · email · score")
    pub candidates: Vec<(String, String)>,
}

fn rec_rows(kind: &str, rows: &[ledgerlink_platform::reconcile::MatchRow]) -> Vec<RecRow> {
    use ledgerlink_platform::reconcile::MatchState;
    rows.iter()
        .map(|r| {
            let (state, state_text) = match r.state {
                MatchState::Linked => ("linked", "Linked"),
                MatchState::Matched => ("matched", "Match found"),
                MatchState::NearMatch => ("near", "Near match: please confirm"),
                MatchState::Missing => ("missing", "Not in QuickBooks: will be created"),
            };
            let candidates = r
                .candidates
                .iter()
                .map(|c| {
                    let mut label = c.name.clone();
                    if let Some(e) = &c.email {
                        label.push_str(&format!(" · {e}"));
                    }
                    let pct = rust_decimal::Decimal::from_f64_retain(c.score).map(|d| (d * rust_decimal::Decimal::ONE_HUNDRED).round()).unwrap_or_default();
                    label.push_str(&format!(" · {pct}% alike"));
                    (c.quickbooks_id.clone(), label)
                })
                .collect();
            RecRow { field: format!("{kind}:{}", r.platform_id), name: r.platform_name.clone(), state, state_text, candidates }
        })
        .collect()
}

#[derive(Template)]
#[template(path = "reconcile.html")]
struct ReconcilePage {
    l: Layout,
    qb: QuickbooksCard,
    /// ("Clients", rows), ("Services", rows)
    sections: Vec<(&'static str, Vec<RecRow>)>,
    unmatched_customers: Vec<String>,
}

/// `GET /settings/integrations/quickbooks/reconcile`: the reconciliation pass.
pub async fn reconcile(State(web): State<Web>, admin: Admin) -> UiResult {
    let qb = quickbooks_card(&web, admin.workspace()).await?;
    if !qb.connected {
        return Ok(Redirect::to("/settings/integrations").into_response());
    }
    let r = web.platform.reconciliation(admin.workspace()).await.map_err(platform_error)?;
    let l = Layout::new(&admin, web.config.banner.as_ref(), "Reconciliation pass", "integrations");
    let page = ReconcilePage {
        l,
        qb,
        sections: vec![("Clients", rec_rows("client", &r.clients)), ("Services", rec_rows("service", &r.services))],
        unmatched_customers: r.unmatched_customers.iter().map(|c| c.name.clone()).collect(),
    };
    Ok(render(StatusCode::OK, &page))
}

/// `POST /settings/integrations/quickbooks/reconcile`: the admin's confirmed matches, as `client:<id>` and
/// `service:<id>` fields naming the QuickBooks record (empty: leave it).
pub async fn confirm(State(web): State<Web>, posted: Posted<Vec<(String, String)>>) -> UiResult {
    let decisions: Vec<MatchDecision> = posted
        .form
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .filter_map(|(k, v)| {
            let (kind, id) = k.split_once(':')?;
            let kind = match kind {
                "client" => RecordKind::Client,
                "service" => RecordKind::Service,
                _ => return None,
            };
            Some(MatchDecision { kind, platform_id: id.to_string(), quickbooks_id: v.trim().to_string() })
        })
        .collect();
    let n = web.platform.confirm(posted.admin.workspace(), &decisions).await.map_err(|e| platform_error(e).back_to("/settings/integrations/quickbooks/reconcile"))?;
    Ok(Redirect::to(&format!("/settings/integrations/quickbooks?confirmed={n}")).into_response())
}
