//! The sample company: Juniper & Finch Landscape Design, a small US landscaping business.
//!
//! Layout: [`seed`] fills an empty [`Company`] with company info and preferences, a chart of accounts, the US tax
//! codes and rates (TAX/NON plus the Sonoma County combined code, the company default), payment terms, classes,
//! departments, customers (one with an apostrophe, one inactive), vendors, employees, service and non-inventory
//! items, a few open invoices (one overdue) and an open bill. Everything but the chart of accounts and the tax
//! setup goes through the same [`entities::write`] path as API calls, so seeded rows carry exactly the derived
//! fields (totals, tax, balances, names on references) a client would get. [`PROFILES`] names the several
//! companies the sandbox user owns (the authorize page lets a user pick one); they share the sample data.

use chrono::{DateTime, Days, Utc};
use serde_json::{Value, json};

use super::entities::{self, EntityKind, WriteCtx, home_currency};
use super::fault::Fault;
use super::state::Company;
use super::time::{company_today, meta_time};

fn stamped(mut row: Value, id: &str, now: DateTime<Utc>) -> Value {
    if let Value::Object(map) = &mut row {
        map.insert("Id".into(), Value::String(id.to_string()));
        map.insert("SyncToken".into(), Value::String("0".into()));
        map.insert("domain".into(), Value::String("QBO".into()));
        map.insert("sparse".into(), Value::Bool(false));
        map.insert(
            "MetaData".into(),
            json!({"CreateTime": meta_time(now), "LastUpdatedTime": meta_time(now)}),
        );
    }
    row
}

/// The companies of the sandbox user: (company name, industry). The first is the startup line's realm.
pub const PROFILES: [(&str, &str); 3] = [
    ("Juniper & Finch Landscape Design", "Landscaping Services"),
    ("Harbor Lights Catering Co.", "Catering"),
    ("Copper Kettle Bicycle Works", "Bicycle Repair"),
];

const ACCOUNTS: [(&str, &str, &str, &str); 16] = [
    ("Services", "Revenue", "Income", "ServiceFeeIncome"),
    (
        "Sales of Product Income",
        "Revenue",
        "Income",
        "SalesOfProductIncome",
    ),
    (
        "Accounts Receivable (A/R)",
        "Asset",
        "Accounts Receivable",
        "AccountsReceivable",
    ),
    ("Checking", "Asset", "Bank", "Checking"),
    (
        "Undeposited Funds",
        "Asset",
        "Other Current Asset",
        "UndepositedFunds",
    ),
    (
        "Discounts given",
        "Revenue",
        "Income",
        "DiscountsRefundsGiven",
    ),
    (
        "Cost of Goods Sold",
        "Expense",
        "Cost of Goods Sold",
        "SuppliesMaterialsCogs",
    ),
    (
        "Accounts Payable (A/P)",
        "Liability",
        "Accounts Payable",
        "AccountsPayable",
    ),
    (
        "Inventory Asset",
        "Asset",
        "Other Current Asset",
        "Inventory",
    ),
    (
        "Landscaping Services",
        "Revenue",
        "Income",
        "ServiceFeeIncome",
    ),
    (
        "Visa Business Card",
        "Liability",
        "Credit Card",
        "CreditCard",
    ),
    (
        "Office Supplies",
        "Expense",
        "Expense",
        "OfficeGeneralAdministrativeExpenses",
    ),
    (
        "Advertising",
        "Expense",
        "Expense",
        "AdvertisingPromotional",
    ),
    (
        "Opening Balance Equity",
        "Equity",
        "Equity",
        "OpeningBalanceEquity",
    ),
    (
        "Sales Tax Payable",
        "Liability",
        "Other Current Liability",
        "SalesTaxPayable",
    ),
    ("Savings", "Asset", "Bank", "Savings"),
];

/// Fills `co` with the sample company `profile` (index into [`PROFILES`]) as of `now`. `realm_id` becomes the
/// CompanyInfo Id.
pub fn seed(co: &mut Company, realm_id: &str, now: DateTime<Utc>, profile: usize) {
    if let Err(f) = try_seed(co, realm_id, now, profile) {
        // The sample data is fixed: a refusal here is a defect of the sandbox itself.
        panic!(
            "the sample company does not pass the sandbox's own rules: {} ({})",
            f.detail, f.code
        );
    }
}

fn try_seed(
    co: &mut Company,
    realm_id: &str,
    now: DateTime<Utc>,
    profile: usize,
) -> Result<(), Fault> {
    *co = Company::default();
    let (company_name, industry) = PROFILES[profile % PROFILES.len()];
    co.put(
        "CompanyInfo",
        1,
        stamped(
            json!({
                "CompanyName": company_name,
                "LegalName": format!("{company_name} LLC"),
                "CompanyAddr": {"Id": "1", "Line1": "218 Alder Row", "City": "Santa Rosa", "CountrySubDivisionCode": "CA", "PostalCode": "95404", "Country": "US"},
                "CustomerCommunicationAddr": {"Id": "1", "Line1": "218 Alder Row", "City": "Santa Rosa", "CountrySubDivisionCode": "CA", "PostalCode": "95404"},
                "LegalAddr": {"Id": "1", "Line1": "218 Alder Row", "City": "Santa Rosa", "CountrySubDivisionCode": "CA", "PostalCode": "95404"},
                "PrimaryPhone": {"FreeFormNumber": "(707) 555-0148"},
                "Email": {"Address": "office@juniperfinch.example"},
                "WebAddr": {"URI": "https://juniperfinch.example"},
                "CompanyStartDate": "2019-03-01",
                "FiscalYearStartMonth": "January",
                "Country": "US",
                "SupportedLanguages": "en",
                "DefaultTimeZone": "America/Los_Angeles",
                "NameValue": [
                    {"Name": "NeoEnabled", "Value": "true"},
                    {"Name": "IndustryType", "Value": industry},
                    {"Name": "SubscriptionStatus", "Value": "SUBSCRIBED"},
                    {"Name": "OfferingSku", "Value": "QuickBooks Online Plus"}
                ]
            }),
            realm_id,
            now,
        ),
    );
    co.put(
        "Preferences",
        1,
        stamped(
            json!({
                "AccountingInfoPrefs": {"TrackDepartments": false, "ClassTrackingPerTxn": false, "CustomerTerminology": "Customers"},
                "SalesFormsPrefs": {"CustomTxnNumbers": false, "AllowDiscount": true, "DefaultTerms": {"value": "3"}, "AutoApplyCredit": true},
                "CurrencyPrefs": {"MultiCurrencyEnabled": false, "HomeCurrency": {"value": "USD"}},
                "TaxPrefs": {"UsingSalesTax": true, "PartnerTaxEnabled": true, "TaxGroupCodeRef": {"value": "3"}},
                "VendorAndPurchasesPrefs": {"TrackingByCustomer": true, "BillableExpenseTracking": true},
                "TimeTrackingPrefs": {"UseServices": true, "BillCustomers": true, "WorkWeekStartDate": "Monday"},
                "OtherPrefs": {"NameValue": [{"Name": "SalesFormsPrefs.DefaultCustomerMessage", "Value": "Thank you for your business!"}]}
            }),
            "1",
            now,
        ),
    );
    for (i, (name, classification, account_type, sub_type)) in ACCOUNTS.iter().enumerate() {
        let id = (i + 1) as u64;
        co.put(
            "Account",
            id,
            stamped(
                json!({
                    "Name": name,
                    "SubAccount": false,
                    "FullyQualifiedName": name,
                    "Active": true,
                    "Classification": classification,
                    "AccountType": account_type,
                    "AccountSubType": sub_type,
                    "CurrentBalance": 0,
                    "CurrentBalanceWithSubAccounts": 0,
                    "CurrencyRef": home_currency(),
                }),
                &id.to_string(),
                now,
            ),
        );
    }
    for (key, (code, taxable, description)) in [
        ("TAX", true, "Taxable sales"),
        ("NON", false, "Non-taxable sales"),
    ]
    .iter()
    .enumerate()
    {
        co.put(
            "TaxCode",
            (key + 1) as u64,
            stamped(
                json!({"Name": code, "Description": description, "Taxable": taxable, "TaxGroup": false, "Active": true, "Hidden": false}),
                code,
                now,
            ),
        );
    }
    co.put(
        "TaxRate",
        1,
        stamped(
            json!({"Name": "California", "Description": "California state sales tax", "RateValue": 7.25, "AgencyRef": {"value": "1"}, "SpecialTaxType": "NONE", "DisplayType": "ReadOnly", "Active": true}),
            "1",
            now,
        ),
    );
    co.put(
        "TaxRate",
        2,
        stamped(
            json!({"Name": "Sonoma County District", "Description": "Sonoma County district tax", "RateValue": 1.25, "AgencyRef": {"value": "1"}, "SpecialTaxType": "NONE", "DisplayType": "ReadOnly", "Active": true}),
            "2",
            now,
        ),
    );
    co.put(
        "TaxCode",
        3,
        stamped(
            json!({"Name": "Sonoma County", "Description": "California 7.25 % + Sonoma County 1.25 %", "Taxable": true, "TaxGroup": true, "Active": true, "Hidden": false,
                "SalesTaxRateList": {"TaxRateDetail": [
                    {"TaxRateRef": {"value": "1", "name": "California"}, "TaxTypeApplicable": "TaxOnAmount", "TaxOrder": 0},
                    {"TaxRateRef": {"value": "2", "name": "Sonoma County District"}, "TaxTypeApplicable": "TaxOnAmount", "TaxOrder": 0}
                ]},
                "PurchaseTaxRateList": {"TaxRateDetail": []}}),
            "3",
            now,
        ),
    );

    let mut ctx = WriteCtx::new(now);
    for (name, days) in [
        ("Due on receipt", 0),
        ("Net 15", 15),
        ("Net 30", 30),
        ("Net 60", 60),
    ] {
        entities::write(
            co,
            EntityKind::Term,
            None,
            json!({"Name": name, "DueDays": days}),
            &mut ctx,
        )?;
    }
    for name in ["Residential", "Commercial"] {
        entities::write(co, EntityKind::Class, None, json!({"Name": name}), &mut ctx)?;
    }
    entities::write(
        co,
        EntityKind::Class,
        None,
        json!({"Name": "Municipal", "ParentRef": {"value": "2"}}),
        &mut ctx,
    )?;
    for name in ["North Bay", "East Bay"] {
        entities::write(
            co,
            EntityKind::Department,
            None,
            json!({"Name": name}),
            &mut ctx,
        )?;
    }
    let customers = [
        json!({"DisplayName": "Marigold's Tea Room", "GivenName": "Rosa", "FamilyName": "Delacroix", "CompanyName": "Marigold's Tea Room", "PrimaryEmailAddr": {"Address": "rosa@marigoldstea.example"}, "PrimaryPhone": {"FreeFormNumber": "(707) 555-0111"}, "BillAddr": {"Line1": "14 Vine St.", "City": "Healdsburg", "CountrySubDivisionCode": "CA", "PostalCode": "95448"}, "Taxable": true}),
        json!({"DisplayName": "Bayview Dental Group", "CompanyName": "Bayview Dental Group", "PrimaryEmailAddr": {"Address": "office@bayviewdental.example"}, "PrimaryPhone": {"FreeFormNumber": "(707) 555-0123"}, "BillAddr": {"Line1": "900 Harbor Blvd.", "City": "Petaluma", "CountrySubDivisionCode": "CA", "PostalCode": "94952"}, "Taxable": false}),
        json!({"DisplayName": "Hollis & Vane Architects", "CompanyName": "Hollis & Vane Architects", "PrimaryEmailAddr": {"Address": "ap@hollisvane.example"}, "Taxable": true}),
        json!({"DisplayName": "Ortega Family Vineyards", "GivenName": "Luis", "FamilyName": "Ortega", "CompanyName": "Ortega Family Vineyards", "PrimaryEmailAddr": {"Address": "luis@ortegavines.example"}, "Taxable": true}),
        json!({"DisplayName": "Pinecrest Elementary PTA", "CompanyName": "Pinecrest Elementary PTA", "PrimaryEmailAddr": {"Address": "treasurer@pinecrestpta.example"}, "Taxable": false}),
        json!({"DisplayName": "Quill Street Books", "CompanyName": "Quill Street Books", "PrimaryEmailAddr": {"Address": "hello@quillstreet.example"}, "Taxable": true}),
        json!({"DisplayName": "Redfern Veterinary Clinic", "CompanyName": "Redfern Veterinary Clinic", "PrimaryEmailAddr": {"Address": "frontdesk@redfernvet.example"}, "Taxable": true}),
        json!({"GivenName": "Kenji", "FamilyName": "Sato", "PrimaryEmailAddr": {"Address": "kenji.sato@mail.example"}, "PrimaryPhone": {"FreeFormNumber": "(707) 555-0177"}, "Taxable": true}),
        json!({"DisplayName": "Tidewater Yacht Club", "CompanyName": "Tidewater Yacht Club", "PrimaryEmailAddr": {"Address": "manager@tidewateryc.example"}, "Taxable": true}),
        json!({"DisplayName": "Willow Lane HOA", "CompanyName": "Willow Lane Homeowners Association", "PrimaryEmailAddr": {"Address": "board@willowlanehoa.example"}, "Taxable": false}),
        json!({"DisplayName": "Old Mill Bakery", "CompanyName": "Old Mill Bakery", "Active": false, "Taxable": true}),
    ];
    for c in customers {
        entities::write(co, EntityKind::Customer, None, c, &mut ctx)?;
    }
    let items = [
        json!({"Name": "Services", "Type": "Service", "Description": "General services", "UnitPrice": 0, "IncomeAccountRef": {"value": "1"}}),
        json!({"Name": "Garden Design", "Type": "Service", "Description": "Custom garden design, per hour", "UnitPrice": 95, "IncomeAccountRef": {"value": "10"}}),
        json!({"Name": "Lawn Maintenance", "Type": "Service", "Description": "Weekly mowing and edging", "UnitPrice": 45, "IncomeAccountRef": {"value": "10"}}),
        json!({"Name": "Tree Trimming", "Type": "Service", "Description": "Pruning and trimming, per tree", "UnitPrice": 120, "IncomeAccountRef": {"value": "10"}}),
        json!({"Name": "Irrigation Repair", "Type": "Service", "Description": "Sprinkler and drip repair, per hour", "UnitPrice": 75.5, "IncomeAccountRef": {"value": "10"}}),
        json!({"Name": "Mulch", "Type": "NonInventory", "Sku": "MUL-CY", "Description": "Bark mulch, per cubic yard", "UnitPrice": 42, "Taxable": true, "IncomeAccountRef": {"value": "2"}, "ExpenseAccountRef": {"value": "7"}}),
        json!({"Name": "Flagstone Pavers", "Type": "NonInventory", "Sku": "FLG-01", "Description": "Arizona flagstone, per square foot", "UnitPrice": 6.25, "Taxable": true, "IncomeAccountRef": {"value": "2"}, "ExpenseAccountRef": {"value": "7"}}),
        json!({"Name": "Drip Emitter Kit", "Type": "NonInventory", "Sku": "DRP-KIT", "Description": "25-emitter drip kit", "UnitPrice": 18.99, "Taxable": true, "IncomeAccountRef": {"value": "2"}, "ExpenseAccountRef": {"value": "7"}}),
    ];
    for i in items {
        entities::write(co, EntityKind::Item, None, i, &mut ctx)?;
    }
    let today = company_today(now);
    let days_ago = |n: u64| {
        today
            .checked_sub_days(Days::new(n))
            .unwrap_or(today)
            .to_string()
    };
    let invoices = [
        json!({"CustomerRef": {"value": "1"}, "TxnDate": days_ago(20), "Line": [
            {"DetailType": "SalesItemLineDetail", "Description": "Courtyard planting plan", "SalesItemLineDetail": {"ItemRef": {"value": "2"}, "Qty": 6}},
            {"DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"ItemRef": {"value": "6"}, "Qty": 4}}
        ]}),
        json!({"CustomerRef": {"value": "2"}, "TxnDate": days_ago(45), "Line": [
            {"DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"ItemRef": {"value": "3"}, "Qty": 4}}
        ]}),
        json!({"CustomerRef": {"value": "4"}, "TxnDate": days_ago(10), "Line": [
            {"DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"ItemRef": {"value": "4"}, "Qty": 7}},
            {"DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"ItemRef": {"value": "5"}, "Qty": 2.5}},
            {"DetailType": "DiscountLineDetail", "DiscountLineDetail": {"PercentBased": true, "DiscountPercent": 5}}
        ]}),
        json!({"CustomerRef": {"value": "9"}, "TxnDate": days_ago(3), "PrivateNote": "Spring refresh of the club entrance", "Line": [
            {"DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"ItemRef": {"value": "7"}, "Qty": 180}},
            {"DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"ItemRef": {"value": "8"}, "Qty": 3}}
        ]}),
    ];
    for inv in invoices {
        entities::write(co, EntityKind::Invoice, None, inv, &mut ctx)?;
    }
    let vendors = [
        json!({"DisplayName": "Redwood Nursery Supply", "CompanyName": "Redwood Nursery Supply", "PrimaryEmailAddr": {"Address": "orders@redwoodnursery.example"}, "TermRef": {"value": "3"}}),
        json!({"DisplayName": "Sonoma Stone & Gravel", "CompanyName": "Sonoma Stone & Gravel", "PrimaryEmailAddr": {"Address": "yard@sonomastone.example"}}),
        json!({"DisplayName": "O'Brien Equipment Rental", "CompanyName": "O'Brien Equipment Rental", "Vendor1099": false}),
        json!({"DisplayName": "PG&E", "CompanyName": "Pacific Gas and Electric"}),
    ];
    for v in vendors {
        entities::write(co, EntityKind::Vendor, None, v, &mut ctx)?;
    }
    for e in [
        json!({"GivenName": "Maya", "FamilyName": "Okafor", "PrimaryEmailAddr": {"Address": "maya@juniperfinch.example"}, "HiredDate": "2021-04-12", "BillableTime": true}),
        json!({"GivenName": "Tomás", "FamilyName": "Reyes", "HiredDate": "2022-09-01", "BillableTime": true}),
    ] {
        entities::write(co, EntityKind::Employee, None, e, &mut ctx)?;
    }
    // One overdue invoice (past its Net 30 due date), and an open bill.
    entities::write(
        co,
        EntityKind::Invoice,
        None,
        json!({"CustomerRef": {"value": "3"}, "TxnDate": days_ago(50), "Line": [
            {"DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"ItemRef": {"value": "2"}, "Qty": 10}}
        ]}),
        &mut ctx,
    )?;
    entities::write(
        co,
        EntityKind::Bill,
        None,
        json!({"VendorRef": {"value": "1"}, "TxnDate": days_ago(5), "Line": [
            {"DetailType": "AccountBasedExpenseLineDetail", "Amount": 412.8, "Description": "Shrubs and perennials", "AccountBasedExpenseLineDetail": {"AccountRef": {"value": "7"}}}
        ]}),
        &mut ctx,
    )?;
    Ok(())
}
