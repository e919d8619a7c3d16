//! Transactions: sales (Invoice, Estimate, SalesReceipt, CreditMemo, Payment), purchases (Bill, BillPayment,
//! Purchase, PurchaseOrder), JournalEntry, TimeActivity and RecurringTransaction. All amounts are `Decimal`;
//! `TotalAmt` and `Balance` on sales forms are computed by QuickBooks and only read.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::common::{CustomField, EmailAddress, Line, LinkedTxn, PhysicalAddress, Ref};
use super::{entity, money};

entity! {
    /// An invoice. QuickBooks appends a `SubTotalLineDetail` line and computes `TotalAmt` and `Balance`.
    Invoice, removal = Delete, void = Operation;
    {
        doc_number: String,
        txn_date: NaiveDate,
        due_date: NaiveDate,
        customer_ref: Ref,
        line: Vec<Line>,
        currency_ref: Ref,
        #[serde(with = "money")]
        exchange_rate: Decimal,
        private_note: String,
        customer_memo: Value,
        bill_email: EmailAddress,
        bill_addr: PhysicalAddress,
        ship_addr: PhysicalAddress,
        sales_term_ref: Ref,
        class_ref: Ref,
        department_ref: Ref,
        linked_txn: Vec<LinkedTxn>,
        custom_field: Vec<CustomField>,
        email_status: String,
        print_status: String,
        #[serde(with = "money")]
        total_amt: Decimal,
        #[serde(with = "money")]
        balance: Decimal,
        #[serde(with = "money")]
        deposit: Decimal,
    }
}

entity! {
    /// A quote; `TxnStatus` is `Pending`, `Accepted`, `Closed` or `Rejected`.
    Estimate, removal = Delete;
    {
        doc_number: String,
        txn_date: NaiveDate,
        expiration_date: NaiveDate,
        customer_ref: Ref,
        line: Vec<Line>,
        currency_ref: Ref,
        private_note: String,
        txn_status: String,
        bill_email: EmailAddress,
        custom_field: Vec<CustomField>,
        #[serde(with = "money")]
        total_amt: Decimal,
    }
}

entity! {
    /// A sale paid on the spot.
    SalesReceipt, removal = Delete, void = IncludeVoid;
    {
        doc_number: String,
        txn_date: NaiveDate,
        customer_ref: Ref,
        line: Vec<Line>,
        currency_ref: Ref,
        private_note: String,
        deposit_to_account_ref: Ref,
        payment_method_ref: Ref,
        payment_ref_num: String,
        #[serde(with = "money")]
        total_amt: Decimal,
        #[serde(with = "money")]
        balance: Decimal,
    }
}

entity! {
    /// A credit note to a customer.
    CreditMemo, removal = Delete;
    {
        doc_number: String,
        txn_date: NaiveDate,
        customer_ref: Ref,
        line: Vec<Line>,
        currency_ref: Ref,
        private_note: String,
        #[serde(with = "money")]
        total_amt: Decimal,
        #[serde(with = "money")]
        remaining_credit: Decimal,
        #[serde(with = "money")]
        balance: Decimal,
    }
}

entity! {
    /// A customer payment; each line applies part of it to an invoice (`LinkedTxn`). `UnappliedAmt` is
    /// `TotalAmt` less the applied lines.
    Payment, removal = Delete, void = IncludeVoid;
    {
        txn_date: NaiveDate,
        customer_ref: Ref,
        line: Vec<Line>,
        currency_ref: Ref,
        #[serde(with = "money")]
        exchange_rate: Decimal,
        deposit_to_account_ref: Ref,
        payment_method_ref: Ref,
        payment_ref_num: String,
        private_note: String,
        process_payment: bool,
        #[serde(with = "money")]
        total_amt: Decimal,
        #[serde(with = "money")]
        unapplied_amt: Decimal,
    }
}

entity! {
    /// A vendor bill (accounts payable).
    Bill, removal = Delete;
    {
        doc_number: String,
        txn_date: NaiveDate,
        due_date: NaiveDate,
        vendor_ref: Ref,
        line: Vec<Line>,
        currency_ref: Ref,
        #[serde(rename = "APAccountRef")]
        ap_account_ref: Ref,
        sales_term_ref: Ref,
        private_note: String,
        #[serde(with = "money")]
        total_amt: Decimal,
        #[serde(with = "money")]
        balance: Decimal,
    }
}

/// How a bill payment was made by cheque.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckPayment {
    pub bank_account_ref: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub print_status: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// How a bill payment was made by card.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreditCardPayment {
    #[serde(rename = "CCAccountRef")]
    pub cc_account_ref: Ref,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

entity! {
    /// A payment of vendor bills. `PayType` is `Check` (with `CheckPayment`) or `CreditCard` (with
    /// `CreditCardPayment`).
    BillPayment, removal = Delete, void = IncludeVoid;
    {
        doc_number: String,
        txn_date: NaiveDate,
        vendor_ref: Ref,
        line: Vec<Line>,
        pay_type: String,
        check_payment: CheckPayment,
        credit_card_payment: CreditCardPayment,
        currency_ref: Ref,
        private_note: String,
        #[serde(with = "money")]
        total_amt: Decimal,
    }
}

entity! {
    /// An expense paid at once (`PaymentType` `Cash`, `Check` or `CreditCard`) from `AccountRef`.
    Purchase, removal = Delete;
    {
        doc_number: String,
        txn_date: NaiveDate,
        payment_type: String,
        account_ref: Ref,
        entity_ref: Ref,
        line: Vec<Line>,
        currency_ref: Ref,
        private_note: String,
        credit: bool,
        #[serde(with = "money")]
        total_amt: Decimal,
    }
}

entity! {
    /// An order to a vendor (non-posting).
    PurchaseOrder, removal = Delete;
    {
        doc_number: String,
        txn_date: NaiveDate,
        due_date: NaiveDate,
        vendor_ref: Ref,
        line: Vec<Line>,
        #[serde(rename = "APAccountRef")]
        ap_account_ref: Ref,
        #[serde(rename = "POStatus")]
        po_status: String,
        #[serde(rename = "POEmail")]
        po_email: EmailAddress,
        ship_addr: PhysicalAddress,
        currency_ref: Ref,
        private_note: String,
        #[serde(with = "money")]
        total_amt: Decimal,
    }
}

entity! {
    /// A journal entry; its debit lines must equal its credit lines.
    JournalEntry, removal = Delete;
    {
        doc_number: String,
        txn_date: NaiveDate,
        line: Vec<Line>,
        currency_ref: Ref,
        #[serde(with = "money")]
        exchange_rate: Decimal,
        private_note: String,
        adjustment: bool,
        #[serde(with = "money")]
        total_amt: Decimal,
    }
}

impl JournalEntry {
    /// The sums of the debit and credit lines, for checking balance before sending.
    pub fn totals(&self) -> (Decimal, Decimal) {
        let mut debit = Decimal::ZERO;
        let mut credit = Decimal::ZERO;
        for line in self.line.iter().flatten() {
            let amount = line.amount.unwrap_or_default();
            match line.journal_entry_line_detail.as_ref().map(|d| d.posting_type.as_str()) {
                Some("Debit") => debit += amount,
                Some("Credit") => credit += amount,
                _ => {}
            }
        }
        (debit, credit)
    }
}

entity! {
    /// Time worked by an employee or vendor (`NameOf` says which), optionally billable to a customer. Not in
    /// the change data capture feed.
    TimeActivity, removal = Delete, cdc = false;
    {
        txn_date: NaiveDate,
        name_of: String,
        employee_ref: Ref,
        vendor_ref: Ref,
        customer_ref: Ref,
        item_ref: Ref,
        class_ref: Ref,
        billable_status: String,
        taxable: bool,
        #[serde(with = "money")]
        hourly_rate: Decimal,
        hours: i64,
        minutes: i64,
        start_time: String,
        end_time: String,
        description: String,
    }
}

entity! {
    /// A recurring template. On the wire it wraps the templated transaction (`{"Invoice": {…,
    /// "RecurringInfo": {…}}}`), which is kept in `extra` under its own name.
    RecurringTransaction, removal = Delete;
    {
        recurring_info: Value,
    }
}

impl RecurringTransaction {
    /// The templated transaction and its type name (`Invoice`, `Bill`, …), if present.
    pub fn template(&self) -> Option<(&str, &Value)> {
        self.extra.iter().find(|(_, v)| v.is_object()).map(|(k, v)| (k.as_str(), v))
    }
}
