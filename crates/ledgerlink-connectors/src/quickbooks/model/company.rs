//! The company's own settings: CompanyInfo and Preferences are read and updated, never created or removed.

use super::common::{EmailAddress, PhysicalAddress, TelephoneNumber, WebAddress};
use super::entity;

entity! {
    /// The company's name, addresses and fiscal year; read at `companyinfo/{realmId}`.
    CompanyInfo, removal = None;
    {
        company_name: String,
        legal_name: String,
        company_addr: PhysicalAddress,
        legal_addr: PhysicalAddress,
        email: EmailAddress,
        primary_phone: TelephoneNumber,
        web_addr: WebAddress,
        country: String,
        fiscal_year_start_month: String,
        company_start_date: String,
        supported_languages: String,
    }
}

entity! {
    /// Company preferences (`GET /preferences`). The groups are kept as JSON: they are large, versioned by minor
    /// version, and ledgerlink only reads a few flags from them.
    Preferences, removal = None;
    {
        accounting_info_prefs: serde_json::Value,
        product_and_services_prefs: serde_json::Value,
        sales_forms_prefs: serde_json::Value,
        vendor_and_purchases_prefs: serde_json::Value,
        time_tracking_prefs: serde_json::Value,
        tax_prefs: serde_json::Value,
        currency_prefs: serde_json::Value,
        other_prefs: serde_json::Value,
    }
}

impl Preferences {
    /// Whether the company uses multiple currencies (`CurrencyPrefs.MultiCurrencyEnabled`).
    pub fn multi_currency(&self) -> bool {
        self.currency_prefs
            .as_ref()
            .and_then(|p| p.get("MultiCurrencyEnabled"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    }
}
