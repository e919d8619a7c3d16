//! The platform's invoices as the finance admin sees them: where each one is in QuickBooks (sync status, the
//! QuickBooks invoice, or why it is not there) and whether it is paid, as payment status flows back.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use ledgerlink_model::Currency;
use ledgerlink_platform::{PaymentStatus, RecordKind, SyncStatus};
use rust_decimal::Decimal;

use crate::Web;
use crate::integrations::platform_error;
use crate::pages::{Layout, UiResult, render};
use crate::session::Admin;

/// An amount with its currency, to the currency's minor units (`285.00 USD`, `1200 JPY`).
fn money(amount: Decimal, currency: &str) -> String {
    let mut d = amount;
    if let Ok(c) = Currency::parse(currency) {
        d = d.round_dp_with_strategy(c.minor_units(), rust_decimal::RoundingStrategy::MidpointAwayFromZero);
        d.rescale(c.minor_units());
    }
    format!("{d} {currency}")
}

/// One invoice row, with money already formatted from its decimals.
#[derive(Debug)]
struct InvoiceRow {
    id: String,
    number: String,
    client: String,
    total: String,
    sync: &'static str,
    sync_text: String,
    quickbooks_id: String,
    payment: &'static str,
    payment_text: String,
}

#[derive(Template)]
#[template(path = "invoices.html")]
struct InvoicesPage {
    l: Layout,
    rows: Vec<InvoiceRow>,
}

/// `GET /invoices`.
pub async fn invoices(State(web): State<Web>, admin: Admin) -> UiResult {
    let mut records = web.platform.list_records(admin.workspace(), RecordKind::Invoice).await.map_err(platform_error)?;
    records.sort_by_key(|r| std::cmp::Reverse(r.updated_at));
    let rows = records
        .into_iter()
        .map(|r| {
            let s = |k: &str| r.data[k].as_str().unwrap_or_default().to_string();
            let (sync, sync_text) = match r.sync.status {
                SyncStatus::Pending => ("queued", "On its way to QuickBooks".to_string()),
                SyncStatus::Synced => ("done", "In QuickBooks".to_string()),
                SyncStatus::Failed => ("dead", format!("Not sent: {}", r.sync.error.clone().unwrap_or_default())),
                SyncStatus::NeedsReview => ("parked", format!("Needs a decision: {}", r.sync.error.clone().unwrap_or_default())),
                SyncStatus::Held => ("parked", "Held: automatic invoice push is off".to_string()),
            };
            let (payment, payment_text) = match &r.payment {
                None => ("", String::new()),
                Some(p) => {
                    let when = p.last_payment_date.map(|d| format!(" on {d}")).unwrap_or_default();
                    match p.status {
                        PaymentStatus::Paid => ("done", format!("Paid {}{when}", money(p.amount_paid, &p.currency))),
                        PaymentStatus::PartiallyPaid => {
                            ("parked", format!("Partially paid: {} of {}{when}", money(p.amount_paid, &p.currency), money(p.total, &p.currency)))
                        }
                        PaymentStatus::Unpaid => ("queued", format!("Unpaid: {} due", money(p.balance, &p.currency))),
                    }
                }
            };
            InvoiceRow {
                number: s("number"),
                client: s("client_id"),
                total: r.sync.quickbooks_total.map(|t| money(t, &s("currency"))).unwrap_or_default(),
                quickbooks_id: r.sync.quickbooks_id.clone().unwrap_or_default(),
                id: r.id,
                sync,
                sync_text,
                payment,
                payment_text,
            }
        })
        .collect();
    let l = Layout::new(&admin, web.config.banner.as_ref(), "Invoices", "invoices");
    Ok(render(StatusCode::OK, &InvoicesPage { l, rows }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn money_shows_the_currencys_minor_units() {
        assert_eq!(super::money(rust_decimal::Decimal::new(2850, 1), "USD"), "285.00 USD");
        assert_eq!(super::money(rust_decimal::Decimal::new(86425, 3), "USD"), "86.43 USD");
    }
}
