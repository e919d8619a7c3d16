//! Snapshots of what the QuickBooks connector sends for every entity: the create payload and the sparse update
//! payload, built from typed values through the same functions the typed calls use. The snapshots are committed
//! under `tests/snapshots/`; a change in the wire format shows up as a diff there.

use chrono::NaiveDate;
use ledgerlink_connectors::quickbooks::model::*;
use ledgerlink_connectors::quickbooks::typed::{create_payload, sparse_update_payload};
use rust_decimal::Decimal;
use serde_json::{Value, json};

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn date(y: i32, m: u32, day: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(y, m, day)
}

/// Both payloads of one entity: `create` from the full value, `sparse_update` from a change set carrying `Id` and
/// `SyncToken`. Entities QuickBooks does not let clients create have no `create` entry.
fn payloads<T: QboEntity>(create: Option<&T>, mut changes: T, set_header: impl FnOnce(&mut T)) -> Value {
    set_header(&mut changes);
    let mut out = serde_json::Map::new();
    if let Some(c) = create {
        out.insert("create".into(), create_payload(c).unwrap());
    }
    out.insert("sparse_update".into(), sparse_update_payload(&changes).unwrap());
    Value::Object(out)
}

macro_rules! header {
    () => {
        |e| {
            e.id = Some("42".into());
            e.sync_token = Some("3".into());
        }
    };
}

#[test]
fn customer() {
    let c = Customer {
        display_name: Some("O'Brien & Sons".into()),
        given_name: Some("Aoife".into()),
        family_name: Some("O'Brien".into()),
        company_name: Some("O'Brien & Sons Ltd".into()),
        primary_email_addr: Some(EmailAddress { address: "aoife@obrien.example".into() }),
        primary_phone: Some(TelephoneNumber { free_form_number: "(650) 555-0101".into() }),
        bill_addr: Some(PhysicalAddress {
            line1: Some("1 Harbour Rd".into()),
            city: Some("Bayshore".into()),
            country_sub_division_code: Some("CA".into()),
            postal_code: Some("94326".into()),
            ..Default::default()
        }),
        taxable: Some(true),
        currency_ref: Some(Ref::to("USD")),
        ..Default::default()
    };
    let changes = Customer { notes: Some("VIP".into()), active: Some(false), ..Default::default() };
    insta::assert_json_snapshot!(payloads(Some(&c), changes, header!()));
}

#[test]
fn vendor() {
    let v = Vendor {
        display_name: Some("Greenleaf Nursery".into()),
        company_name: Some("Greenleaf Nursery Inc.".into()),
        acct_num: Some("GL-001".into()),
        vendor_1099: Some(true),
        term_ref: Some(Ref::named("3", "Net 30")),
        ..Default::default()
    };
    let changes = Vendor { print_on_check_name: Some("Greenleaf".into()), ..Default::default() };
    insta::assert_json_snapshot!(payloads(Some(&v), changes, header!()));
}

#[test]
fn employee() {
    let e = Employee {
        given_name: Some("Rosa".into()),
        family_name: Some("Marin".into()),
        display_name: Some("Rosa Marin".into()),
        employee_number: Some("E-7".into()),
        billable_time: Some(true),
        bill_rate: Some(d("85.50")),
        ..Default::default()
    };
    let changes = Employee { bill_rate: Some(d("90")), ..Default::default() };
    insta::assert_json_snapshot!(payloads(Some(&e), changes, header!()));
}

#[test]
fn item() {
    let i = Item {
        name: Some("Garden Design".into()),
        item_type: Some("Service".into()),
        description: Some("Design hours".into()),
        unit_price: Some(d("125.00")),
        income_account_ref: Some(Ref::named("79", "Sales of Product Income")),
        taxable: Some(false),
        ..Default::default()
    };
    let changes = Item { unit_price: Some(d("129.995")), ..Default::default() };
    insta::assert_json_snapshot!(payloads(Some(&i), changes, header!()));
}

#[test]
fn account() {
    let a = Account {
        name: Some("Equipment Rental".into()),
        account_type: Some("Expense".into()),
        account_sub_type: Some("EquipmentRental".into()),
        acct_num: Some("6150".into()),
        ..Default::default()
    };
    let changes = Account { description: Some("Mowers and tillers".into()), ..Default::default() };
    insta::assert_json_snapshot!(payloads(Some(&a), changes, header!()));
}

#[test]
fn term() {
    let t = Term {
        name: Some("2% 10 Net 30".into()),
        due_days: Some(30),
        discount_days: Some(10),
        discount_percent: Some(d("2")),
        ..Default::default()
    };
    let changes = Term { active: Some(false), ..Default::default() };
    insta::assert_json_snapshot!(payloads(Some(&t), changes, header!()));
}

#[test]
fn tax_code() {
    // Read-only through the API: only a change set is ever built, and QuickBooks refuses it.
    let changes = TaxCode { description: Some("Exempt".into()), ..Default::default() };
    insta::assert_json_snapshot!(payloads::<TaxCode>(None, changes, header!()));
}

#[test]
fn tax_rate() {
    let changes = TaxRate { rate_value: Some(d("8.875")), ..Default::default() };
    insta::assert_json_snapshot!(payloads::<TaxRate>(None, changes, header!()));
}

#[test]
fn class() {
    let c = Class {
        name: Some("Residential".into()),
        sub_class: Some(true),
        parent_ref: Some(Ref::to("5")),
        ..Default::default()
    };
    let changes = Class { name: Some("Residential Projects".into()), ..Default::default() };
    insta::assert_json_snapshot!(payloads(Some(&c), changes, header!()));
}

#[test]
fn department() {
    let dep = Department { name: Some("North Yard".into()), ..Default::default() };
    let changes = Department { active: Some(false), ..Default::default() };
    insta::assert_json_snapshot!(payloads(Some(&dep), changes, header!()));
}

#[test]
fn invoice() {
    let inv = Invoice {
        doc_number: Some("LL-1001".into()),
        txn_date: date(2024, 3, 1),
        due_date: date(2024, 3, 31),
        customer_ref: Some(Ref::named("58", "Bayview Dental Group")),
        currency_ref: Some(Ref::to("USD")),
        private_note: Some("Source: salesforce/Opportunity/006000000000001AAA".into()),
        line: Some(vec![
            Line {
                description: Some("Design hours (10% discount)".into()),
                ..Line::sales_item(Ref::named("1", "Garden Design"), d("3"), d("17.991"), d("53.97"))
            },
            Line::sales_item(Ref::to("2"), d("2"), d("1275"), d("2550.00")),
        ]),
        custom_field: Some(vec![CustomField {
            definition_id: "1".into(),
            name: Some("Crew #".into()),
            r#type: Some("StringType".into()),
            string_value: Some("7".into()),
        }]),
        ..Default::default()
    };
    let changes = Invoice {
        due_date: date(2024, 4, 15),
        bill_email: Some(EmailAddress { address: "ap@bayview.example".into() }),
        ..Default::default()
    };
    insta::assert_json_snapshot!(payloads(Some(&inv), changes, header!()));
}

#[test]
fn estimate() {
    let e = Estimate {
        txn_date: date(2024, 2, 1),
        expiration_date: date(2024, 3, 1),
        customer_ref: Some(Ref::to("58")),
        line: Some(vec![Line::sales_item(Ref::to("1"), d("10"), d("0.10"), d("1.00"))]),
        ..Default::default()
    };
    let changes = Estimate { txn_status: Some("Accepted".into()), ..Default::default() };
    insta::assert_json_snapshot!(payloads(Some(&e), changes, header!()));
}

#[test]
fn sales_receipt() {
    let s = SalesReceipt {
        txn_date: date(2024, 5, 2),
        customer_ref: Some(Ref::to("60")),
        deposit_to_account_ref: Some(Ref::named("35", "Checking")),
        payment_ref_num: Some("CHK-1001".into()),
        line: Some(vec![Line::sales_item(Ref::to("3"), d("1"), d("49.99"), d("49.99"))]),
        ..Default::default()
    };
    let changes = SalesReceipt { private_note: Some("Paid at counter".into()), ..Default::default() };
    insta::assert_json_snapshot!(payloads(Some(&s), changes, header!()));
}

#[test]
fn credit_memo() {
    let c = CreditMemo {
        txn_date: date(2024, 5, 3),
        customer_ref: Some(Ref::to("58")),
        line: Some(vec![Line::sales_item(Ref::to("1"), d("1"), d("25"), d("25.00"))]),
        ..Default::default()
    };
    let changes = CreditMemo { private_note: Some("Goodwill credit".into()), ..Default::default() };
    insta::assert_json_snapshot!(payloads(Some(&c), changes, header!()));
}

#[test]
fn payment() {
    let p = Payment {
        txn_date: date(2024, 3, 20),
        customer_ref: Some(Ref::named("20", "Red Rock Diner")),
        total_amt: Some(d("65.00")),
        deposit_to_account_ref: Some(Ref::to("4")),
        line: Some(vec![Line::applied_to("70", "Invoice", d("55.00"))]),
        ..Default::default()
    };
    let changes = Payment { payment_ref_num: Some("EFT-889".into()), ..Default::default() };
    insta::assert_json_snapshot!(payloads(Some(&p), changes, header!()));
}

#[test]
fn bill() {
    let b = Bill {
        txn_date: date(2024, 4, 1),
        due_date: date(2024, 5, 1),
        vendor_ref: Some(Ref::named("30", "Greenleaf Nursery")),
        ap_account_ref: Some(Ref::to("33")),
        line: Some(vec![Line {
            description: Some("Shrubs".into()),
            ..Line::account_expense(Ref::named("7", "Job Materials"), d("1234.56"))
        }]),
        ..Default::default()
    };
    let changes = Bill { due_date: date(2024, 5, 15), ..Default::default() };
    insta::assert_json_snapshot!(payloads(Some(&b), changes, header!()));
}

#[test]
fn bill_payment() {
    let bp = BillPayment {
        txn_date: date(2024, 4, 20),
        vendor_ref: Some(Ref::to("30")),
        pay_type: Some("Check".into()),
        check_payment: Some(CheckPayment {
            bank_account_ref: Ref::named("35", "Checking"),
            print_status: Some("NeedToPrint".into()),
            ..Default::default()
        }),
        total_amt: Some(d("1234.56")),
        line: Some(vec![Line::applied_to("101", "Bill", d("1234.56"))]),
        ..Default::default()
    };
    let changes = BillPayment { private_note: Some("Cheque 1045".into()), ..Default::default() };
    insta::assert_json_snapshot!(payloads(Some(&bp), changes, header!()));
}

#[test]
fn purchase() {
    let p = Purchase {
        txn_date: date(2024, 4, 5),
        payment_type: Some("CreditCard".into()),
        account_ref: Some(Ref::named("42", "Visa")),
        entity_ref: Some(Ref::to("30")),
        line: Some(vec![Line::account_expense(Ref::to("13"), d("89.10"))]),
        ..Default::default()
    };
    let changes = Purchase { doc_number: Some("R-77".into()), ..Default::default() };
    insta::assert_json_snapshot!(payloads(Some(&p), changes, header!()));
}

#[test]
fn purchase_order() {
    let po = PurchaseOrder {
        txn_date: date(2024, 4, 6),
        vendor_ref: Some(Ref::to("30")),
        ap_account_ref: Some(Ref::to("33")),
        po_status: Some("Open".into()),
        line: Some(vec![Line {
            amount: Some(d("300")),
            detail_type: Some("ItemBasedExpenseLineDetail".into()),
            item_based_expense_line_detail: Some(ItemBasedExpenseLineDetail {
                item_ref: Ref::to("11"),
                qty: Some(d("12")),
                unit_price: Some(d("25")),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let changes = PurchaseOrder { po_status: Some("Closed".into()), ..Default::default() };
    insta::assert_json_snapshot!(payloads(Some(&po), changes, header!()));
}

#[test]
fn journal_entry() {
    let je = JournalEntry {
        txn_date: date(2024, 6, 30),
        private_note: Some("Accrual".into()),
        line: Some(vec![
            Line::journal("Debit", Ref::named("60", "Rent"), d("1500.00")),
            Line::journal("Credit", Ref::named("90", "Accrued Liabilities"), d("1500.00")),
        ]),
        ..Default::default()
    };
    assert_eq!(je.totals(), (d("1500"), d("1500")));
    let changes = JournalEntry { adjustment: Some(true), ..Default::default() };
    insta::assert_json_snapshot!(payloads(Some(&je), changes, header!()));
}

#[test]
fn time_activity() {
    let t = TimeActivity {
        txn_date: date(2024, 6, 3),
        name_of: Some("Employee".into()),
        employee_ref: Some(Ref::named("55", "Rosa Marin")),
        customer_ref: Some(Ref::to("58")),
        item_ref: Some(Ref::to("1")),
        billable_status: Some("Billable".into()),
        hourly_rate: Some(d("85.5")),
        hours: Some(3),
        minutes: Some(15),
        description: Some("Site survey".into()),
        ..Default::default()
    };
    let changes = TimeActivity { minutes: Some(30), ..Default::default() };
    insta::assert_json_snapshot!(payloads(Some(&t), changes, header!()));
}

#[test]
fn recurring_transaction() {
    let mut r = RecurringTransaction::default();
    r.extra.insert(
        "Invoice".into(),
        json!({"CustomerRef": {"value": "58"}, "Line": [{"Amount": 100, "DetailType": "SalesItemLineDetail",
            "SalesItemLineDetail": {"ItemRef": {"value": "1"}}}],
            "RecurringInfo": {"Name": "Monthly upkeep", "RecurType": "Automated", "Active": true,
            "ScheduleInfo": {"IntervalType": "Monthly", "NumInterval": 1, "DayOfMonth": 1}}}),
    );
    assert_eq!(r.template().map(|(k, _)| k), Some("Invoice"));
    let mut changes = RecurringTransaction::default();
    changes.extra.insert("Invoice".into(), json!({"RecurringInfo": {"Active": false}}));
    insta::assert_json_snapshot!(payloads(Some(&r), changes, header!()));
}

#[test]
fn company_info() {
    let changes = CompanyInfo {
        company_addr: Some(PhysicalAddress {
            line1: Some("12 Juniper Way".into()),
            city: Some("Bayshore".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    insta::assert_json_snapshot!(payloads::<CompanyInfo>(None, changes, header!()));
}

#[test]
fn preferences() {
    let changes = Preferences {
        sales_forms_prefs: Some(json!({"CustomTxnNumbers": true, "DefaultTerms": {"value": "3"}})),
        ..Default::default()
    };
    insta::assert_json_snapshot!(payloads::<Preferences>(None, changes, header!()));
}

#[test]
fn a_sparse_update_without_sync_token_is_refused() {
    let e = sparse_update_payload(&Customer { id: Some("1".into()), ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("SyncToken"), "{e}");
}
