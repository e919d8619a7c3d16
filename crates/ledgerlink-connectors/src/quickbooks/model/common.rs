//! Shapes shared by many entities: references, metadata, addresses, contact details and transaction lines.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::money;

/// A reference to another entity: `{"value": "12", "name": "Amy's Bird Sanctuary"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Ref {
    pub fn to(value: impl Into<String>) -> Self {
        Ref { value: value.into(), name: None }
    }

    pub fn named(value: impl Into<String>, name: impl Into<String>) -> Self {
        Ref { value: value.into(), name: Some(name.into()) }
    }
}

/// Created and last-updated times as QuickBooks writes them (`2015-07-24T10:35:08-07:00`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MetaData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_time: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EmailAddress {
    pub address: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TelephoneNumber {
    pub free_form_number: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WebAddress {
    #[serde(rename = "URI")]
    pub uri: String,
}

/// A postal address (`BillAddr`, `ShipAddr`, `CompanyAddr`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PhysicalAddress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country_sub_division_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A link from one transaction to another (a payment line to the invoice it pays).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LinkedTxn {
    pub txn_id: String,
    pub txn_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn_line_id: Option<String>,
}

/// A custom field value on a sales form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomField {
    pub definition_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
}

/// `SalesItemLineDetail` of a sales line (Invoice, Estimate, SalesReceipt, CreditMemo).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SalesItemLineDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_ref: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "money")]
    pub qty: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "money")]
    pub unit_price: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_code_ref: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_date: Option<chrono::NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_ref: Option<Ref>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `AccountBasedExpenseLineDetail` of a purchase line (Bill, Purchase, PurchaseOrder).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccountBasedExpenseLineDetail {
    pub account_ref: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_code_ref: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billable_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_ref: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_ref: Option<Ref>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `ItemBasedExpenseLineDetail` of a purchase line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ItemBasedExpenseLineDetail {
    pub item_ref: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "money")]
    pub qty: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "money")]
    pub unit_price: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billable_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_ref: Option<Ref>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `JournalEntryLineDetail`: which side and which account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JournalEntryLineDetail {
    /// `Debit` or `Credit`.
    pub posting_type: String,
    pub account_ref: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_ref: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department_ref: Option<Ref>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One line of a transaction. `DetailType` names which detail object is present; details this type does not
/// model (`SubTotalLineDetail`, `DiscountLineDetail`, …) stay in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_num: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "money")]
    pub amount: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sales_item_line_detail: Option<SalesItemLineDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_based_expense_line_detail: Option<AccountBasedExpenseLineDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_based_expense_line_detail: Option<ItemBasedExpenseLineDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_entry_line_detail: Option<JournalEntryLineDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_txn: Option<Vec<LinkedTxn>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Line {
    /// A sales line for `qty × unit_price` of an item; `amount` is what QBO totals (round it to the currency).
    pub fn sales_item(item: Ref, qty: Decimal, unit_price: Decimal, amount: Decimal) -> Self {
        Line {
            amount: Some(amount),
            detail_type: Some("SalesItemLineDetail".into()),
            sales_item_line_detail: Some(SalesItemLineDetail {
                item_ref: Some(item),
                qty: Some(qty),
                unit_price: Some(unit_price),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// An expense line booked to an account.
    pub fn account_expense(account: Ref, amount: Decimal) -> Self {
        Line {
            amount: Some(amount),
            detail_type: Some("AccountBasedExpenseLineDetail".into()),
            account_based_expense_line_detail: Some(AccountBasedExpenseLineDetail {
                account_ref: account,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A journal line: `Debit` or `Credit` of `amount` on an account.
    pub fn journal(posting_type: &str, account: Ref, amount: Decimal) -> Self {
        Line {
            amount: Some(amount),
            detail_type: Some("JournalEntryLineDetail".into()),
            journal_entry_line_detail: Some(JournalEntryLineDetail {
                posting_type: posting_type.into(),
                account_ref: account,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A payment line applying `amount` to a transaction (`TxnType` `Invoice`, `Bill`, …).
    pub fn applied_to(txn_id: &str, txn_type: &str, amount: Decimal) -> Self {
        Line {
            amount: Some(amount),
            linked_txn: Some(vec![LinkedTxn { txn_id: txn_id.into(), txn_type: txn_type.into(), txn_line_id: None }]),
            ..Default::default()
        }
    }
}
