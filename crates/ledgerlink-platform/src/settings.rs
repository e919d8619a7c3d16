//! The integration settings of one workspace: exactly the options of the help page's "Configure what syncs".
//!
//! QuickBooks references ([`QbRef`]) keep the name next to the id so the settings page can show a choice even
//! while QuickBooks is unreachable. Settings are validated on save; a workspace that never saved gets
//! [`IntegrationSettings::default`] (create missing customers after matching by email then name, push invoices
//! automatically, expenses as bills, real-time sync with an hourly reconciliation).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Platform, PlatformError, Result, now};

pub(crate) const KIND: &str = "settings";
const ID: &str = "quickbooks";

/// A record in the connected QuickBooks company: its id and, for display, its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QbRef {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

/// How a platform client finds its QuickBooks customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomerMatching {
    /// Never look: every new client becomes a new QuickBooks customer.
    AutoCreate,
    /// An existing customer with the client's email address.
    ByEmail,
    /// An existing customer with the client's name (normalised: case, punctuation and legal forms ignored).
    ByName,
    /// By email first, then by name.
    #[default]
    ByEmailThenName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerSync {
    pub matching: CustomerMatching,
    /// When matching finds no customer: create one (true) or hold the client for review (false).
    pub create_unmatched: bool,
}

impl Default for CustomerSync {
    fn default() -> Self {
        CustomerSync { matching: CustomerMatching::default(), create_unmatched: true }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceSync {
    /// Push invoices to QuickBooks as they are saved. Off: they are kept, marked as held, until switched on.
    pub auto_push: bool,
    /// The income account of QuickBooks products/services created for services not mapped below.
    pub income_account: Option<QbRef>,
    /// Platform service id → QuickBooks product/service, so each line posts to the right income account.
    #[serde(default)]
    pub service_items: BTreeMap<String, QbRef>,
}

impl Default for InvoiceSync {
    fn default() -> Self {
        InvoiceSync { auto_push: true, income_account: None, service_items: BTreeMap::new() }
    }
}

/// What a platform expense becomes in QuickBooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpensePostAs {
    /// A vendor bill (accounts payable), to be paid later.
    #[default]
    Bill,
    /// An expense already paid (QuickBooks `Purchase`) from `payment_account`.
    Expense,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpenseSync {
    pub enabled: bool,
    pub post_as: ExpensePostAs,
    /// The chart-of-accounts expense account the expense lines post to.
    pub expense_account: Option<QbRef>,
    /// For `expense`: the bank or credit-card account it was paid from.
    pub payment_account: Option<QbRef>,
}

impl Default for ExpenseSync {
    fn default() -> Self {
        ExpenseSync { enabled: true, post_as: ExpensePostAs::Bill, expense_account: None, payment_account: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncFrequency {
    /// Push each record when it is saved.
    pub real_time: bool,
    /// Minutes between background reconciliation passes (records not yet synced are retried, payments re-read).
    pub reconciliation_minutes: u32,
}

impl Default for SyncFrequency {
    fn default() -> Self {
        SyncFrequency { real_time: true, reconciliation_minutes: 60 }
    }
}

/// Everything the Manage form sets.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IntegrationSettings {
    #[serde(default)]
    pub customers: CustomerSync,
    #[serde(default)]
    pub invoices: InvoiceSync,
    #[serde(default)]
    pub expenses: ExpenseSync,
    /// Platform tax rate id → QuickBooks tax code.
    #[serde(default)]
    pub tax_codes: BTreeMap<String, QbRef>,
    #[serde(default)]
    pub frequency: SyncFrequency,
}

impl IntegrationSettings {
    /// Checks what can be checked without QuickBooks; the error names the setting.
    pub fn validate(&self) -> Result<()> {
        let blank = |r: &Option<QbRef>| r.as_ref().is_some_and(|r| r.id.trim().is_empty());
        if blank(&self.invoices.income_account) {
            return Err(PlatformError::invalid("invoices.income_account", "choose an income account or none"));
        }
        for (service, item) in &self.invoices.service_items {
            if service.trim().is_empty() || item.id.trim().is_empty() {
                return Err(PlatformError::invalid(
                    format!("invoices.service_items[{service}]"),
                    "each service needs a QuickBooks product/service",
                ));
            }
        }
        if blank(&self.expenses.expense_account) || blank(&self.expenses.payment_account) {
            return Err(PlatformError::invalid("expenses", "choose an account or none"));
        }
        for (rate, code) in &self.tax_codes {
            if rate.trim().is_empty() || code.id.trim().is_empty() {
                return Err(PlatformError::invalid(format!("tax_codes[{rate}]"), "each tax rate needs a QuickBooks tax code"));
            }
        }
        if !(1..=10_080).contains(&self.frequency.reconciliation_minutes) {
            return Err(PlatformError::invalid(
                "frequency.reconciliation_minutes",
                "the reconciliation interval must be between 1 minute and 7 days (10080 minutes)",
            ));
        }
        Ok(())
    }
}

impl Platform {
    /// The workspace's settings, or the defaults when it never saved any.
    pub async fn load_settings(&self, workspace_id: &str) -> Result<IntegrationSettings> {
        match self.store.get_doc(workspace_id, KIND, ID).await? {
            Some(doc) => serde_json::from_value(doc.body)
                .map_err(|e| PlatformError::Internal(format!("stored settings of {workspace_id} are unreadable: {e}"))),
            None => Ok(IntegrationSettings::default()),
        }
    }

    /// Validates and saves the settings. Switching automatic invoice push (or real-time sync) on releases the
    /// invoices held while it was off.
    pub async fn save_settings(&self, workspace_id: &str, settings: &IntegrationSettings) -> Result<()> {
        self.get_workspace(workspace_id).await?;
        settings.validate()?;
        let body = serde_json::to_value(settings).map_err(|e| PlatformError::Internal(e.to_string()))?;
        self.store.put_doc(workspace_id, KIND, ID, &body, now()).await?;
        self.release_held(workspace_id).await?;
        Ok(())
    }
}
