//! The sample org: Northwind Outfitters' Salesforce, with enough variety for the QuickBooks flows.
//!
//! Layout: [`new_org`] builds a fresh org (users, the Standard Price Book and the QuickBooks custom fields always,
//! sample data when asked), [`reset`] replaces the data while keeping credentials. Sample records go through the
//! same write rules as API calls, so their derived fields (Amount, TotalPrice, IsWon) are computed, not typed in.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use super::admin::add_custom_field;
use super::objects::CustomField;
use super::records::{self, Ctx};
use super::state::{Org, Record};
use super::value::{FieldValue, format_datetime, parse_body};

/// A fresh org with new credentials.
pub fn new_org(now: DateTime<Utc>, sample_data: bool) -> Org {
    let mut org = Org::empty();
    populate(&mut org, now, sample_data);
    org
}

/// Replaces all records and custom fields; credentials, refresh tokens and sessions are kept.
pub fn reset(org: &mut Org, now: DateTime<Utc>, sample_data: bool) {
    org.records.clear();
    org.custom_fields.clear();
    org.cursors.clear();
    org.next_seq = 1;
    populate(org, now, sample_data);
}

fn insert_user(
    org: &mut Org,
    now: DateTime<Utc>,
    first: &str,
    last: &str,
    username: &str,
    alias: &str,
) -> String {
    let id = org.new_id("005");
    let stamp = FieldValue::text(format_datetime(now));
    let def = org.def("User").expect("User is a standard object");
    let mut rec: Record = def
        .fields
        .iter()
        .map(|f| (f.name.clone(), FieldValue::Null))
        .collect();
    let creator = if org.api_user_id.is_empty() {
        id.clone()
    } else {
        org.api_user_id.clone()
    };
    for (k, v) in [
        ("Id", FieldValue::text(id.clone())),
        ("IsDeleted", FieldValue::Bool(false)),
        ("Username", FieldValue::text(username)),
        ("FirstName", FieldValue::text(first)),
        ("LastName", FieldValue::text(last)),
        ("Name", FieldValue::text(format!("{first} {last}"))),
        ("Alias", FieldValue::text(alias)),
        ("Email", FieldValue::text(username)),
        ("IsActive", FieldValue::Bool(true)),
        ("TimeZoneSidKey", FieldValue::text("America/Chicago")),
        ("CreatedDate", stamp.clone()),
        ("LastModifiedDate", stamp.clone()),
        ("SystemModstamp", stamp),
        ("CreatedById", FieldValue::text(creator.clone())),
        ("LastModifiedById", FieldValue::text(creator)),
    ] {
        rec.insert(k.to_string(), v);
    }
    org.records.put("User", &id, rec);
    id
}

fn make(org: &mut Org, ctx: &Ctx, object: &str, fields: Value) -> String {
    let input = parse_body(&serde_json::to_vec(&fields).expect("seed JSON serialises"))
        .expect("seed JSON is an object");
    records::create(org, ctx, object, input)
        .unwrap_or_else(|e| panic!("seed {object} {fields}: {e}"))
}

/// (account index, name, stage, close date in days from now, lines as (entry index, quantity, discount %)).
type SampleOpportunity = (
    usize,
    &'static str,
    &'static str,
    i64,
    &'static [(usize, &'static str, Option<&'static str>)],
);

fn populate(org: &mut Org, now: DateTime<Utc>, sample_data: bool) {
    let username = org.username.clone();
    let integration = insert_user(org, now, "Dana", "Whitfield", &username, "dwhit");
    org.api_user_id = integration.clone();
    let ctx = Ctx {
        now,
        user_id: integration.clone(),
    };
    for (object, name, external_id) in [
        ("Opportunity", "QuickBooks_Invoice_Id__c", false),
        ("Opportunity", "QuickBooks_Invoice_Number__c", false),
        ("Account", "QuickBooks_Customer_Id__c", true),
    ] {
        let field = CustomField {
            object: object.into(),
            name: name.into(),
            ty: "Text".into(),
            external_id,
            required: false,
        };
        add_custom_field(org, field).expect("seed custom fields are valid");
    }
    let standard = make(
        org,
        &ctx,
        "Pricebook2",
        json!({"Name": "Standard Price Book", "IsActive": true}),
    );
    org.records.edit("Pricebook2", &standard, |pb| {
        pb.insert("IsStandard".into(), FieldValue::Bool(true));
    });
    if !sample_data {
        return;
    }
    let maria = insert_user(
        org,
        now,
        "Maria",
        "Chen",
        "maria.chen@northwind-sandbox.example",
        "mchen",
    );
    let james = insert_user(
        org,
        now,
        "James",
        "Okafor",
        "james.okafor@northwind-sandbox.example",
        "jokaf",
    );

    let products = [
        ("Annual Support Plan", "SUP-ANNUAL", "Services", "1200.00"),
        ("Onboarding Workshop", "SVC-ONBOARD", "Services", "2500.00"),
        ("Ledger Sync Connector", "LIC-SYNC", "Software", "450.00"),
        ("Analytics Add-on", "LIC-ANALYTICS", "Software", "99.50"),
        ("Barcode Scanner X2", "HW-SCAN-X2", "Hardware", "189.99"),
        ("Receipt Printer R1", "HW-PRINT-R1", "Hardware", "249.00"),
        ("Custom Integration Hour", "SVC-HOUR", "Services", "165.00"),
        (
            "Data Migration Package",
            "SVC-MIGRATE",
            "Services",
            "3200.00",
        ),
    ];
    let mut entries = Vec::new();
    for (name, code, family, price) in products {
        let product = make(
            org,
            &ctx,
            "Product2",
            json!({"Name": name, "ProductCode": code, "Family": family, "IsActive": true}),
        );
        let entry = make(
            org,
            &ctx,
            "PricebookEntry",
            json!({"Pricebook2Id": standard, "Product2Id": product, "UnitPrice": price, "IsActive": true}),
        );
        entries.push((product, entry));
    }
    let partner = make(
        org,
        &ctx,
        "Pricebook2",
        json!({"Name": "Partner Price Book", "IsActive": true, "Description": "Reseller pricing"}),
    );
    let partner_sync = make(
        org,
        &ctx,
        "PricebookEntry",
        json!({"Pricebook2Id": partner, "Product2Id": entries[2].0, "UnitPrice": "382.50", "IsActive": true}),
    );
    make(
        org,
        &ctx,
        "PricebookEntry",
        json!({"Pricebook2Id": partner, "Product2Id": entries[0].0, "UseStandardPrice": true, "UnitPrice": "1200.00", "IsActive": true}),
    );

    let accounts = [
        (
            "Acme Corporation",
            "Manufacturing",
            "Customer - Direct",
            "200 W Adams St",
            "Chicago",
            "IL",
            "60606",
            "United States",
            "(312) 555-0142",
            &maria,
        ),
        (
            "O'Brien Logistics",
            "Transportation",
            "Customer - Direct",
            "41 Seaport Blvd",
            "Boston",
            "MA",
            "02210",
            "United States",
            "(617) 555-0199",
            &maria,
        ),
        (
            "Bluewater Dental Group",
            "Healthcare",
            "Customer - Direct",
            "1800 Harbor Dr",
            "San Diego",
            "CA",
            "92101",
            "United States",
            "(619) 555-0110",
            &james,
        ),
        (
            "Cedar & Pine Furniture",
            "Retail",
            "Customer - Channel",
            "77 Mill St",
            "Portland",
            "OR",
            "97205",
            "United States",
            "(503) 555-0175",
            &james,
        ),
        (
            "Globex Health",
            "Healthcare",
            "Prospect",
            "9 Innovation Way",
            "Austin",
            "TX",
            "78701",
            "United States",
            "(512) 555-0123",
            &maria,
        ),
        (
            "Harborview Marine Supply",
            "Retail",
            "Customer - Direct",
            "300 Pier Ave",
            "Seattle",
            "WA",
            "98121",
            "United States",
            "(206) 555-0188",
            &integration,
        ),
        (
            "Initech Software",
            "Technology",
            "Prospect",
            "4120 Freidrich Ln",
            "Austin",
            "TX",
            "78744",
            "United States",
            "(512) 555-0166",
            &james,
        ),
        (
            "Lumen Solar Cooperative",
            "Energy",
            "Customer - Direct",
            "12 Sunrise Rd",
            "Denver",
            "CO",
            "80202",
            "United States",
            "(303) 555-0131",
            &maria,
        ),
        (
            "Müller Feinmechanik GmbH",
            "Manufacturing",
            "Customer - Channel",
            "Industriestraße 5",
            "Stuttgart",
            "BW",
            "70565",
            "Germany",
            "+49 711 5550 120",
            &james,
        ),
        (
            "Summit Outdoor Gear",
            "Retail",
            "Customer - Direct",
            "55 Trailhead Ct",
            "Boulder",
            "CO",
            "80302",
            "United States",
            "(720) 555-0104",
            &integration,
        ),
    ];
    let mut account_ids = Vec::new();
    for (name, industry, kind, street, city, state, zip, country, phone, owner) in accounts {
        let website = format!(
            "https://www.{}.example",
            name.to_lowercase()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
        );
        let id = make(
            org,
            &ctx,
            "Account",
            json!({
                "Name": name, "Industry": industry, "Type": kind, "BillingStreet": street, "BillingCity": city,
                "BillingState": state, "BillingPostalCode": zip, "BillingCountry": country, "Phone": phone,
                "Website": website, "OwnerId": owner,
            }),
        );
        account_ids.push(id);
    }
    org.records.edit("Account", &account_ids[0], |acme| {
        acme.insert("QuickBooks_Customer_Id__c".into(), FieldValue::text("58"));
    });

    let contacts = [
        (0, "Wile", "Coyote", "Purchasing Manager"),
        (0, "Roberta", "Flint", "Controller"),
        (1, "Siobhan", "O'Brien", "Owner"),
        (1, "Declan", "Murphy", "Operations Lead"),
        (2, "Priya", "Raman", "Practice Manager"),
        (3, "Tomás", "Alvarez", "Buyer"),
        (4, "Hank", "Scorpio", "CEO"),
        (5, "Grace", "Lindqvist", "Accounts Payable"),
        (6, "Peter", "Gibbons", "Engineer"),
        (7, "Amara", "Nwosu", "Finance Director"),
        (8, "Jürgen", "Müller", "Geschäftsführer"),
        (9, "Kit", "Carson", "Store Manager"),
    ];
    for (account, first, last, title) in contacts {
        let email = format!(
            "{}.{}@{}",
            first.to_lowercase(),
            last.to_lowercase().replace('\'', ""),
            org.get("Account", &account_ids[account])
                .and_then(|a| a.get("Website"))
                .and_then(FieldValue::as_str)
                .unwrap_or("https://www.example.example")
                .trim_start_matches("https://www.")
        );
        let email: String = email.chars().filter(char::is_ascii).collect();
        make(
            org,
            &ctx,
            "Contact",
            json!({"AccountId": account_ids[account], "FirstName": first, "LastName": last, "Title": title, "Email": email}),
        );
    }

    let day = |k: i64| (now + Duration::days(k)).format("%Y-%m-%d").to_string();
    let opportunities: [SampleOpportunity; 8] = [
        (
            0,
            "Acme - Warehouse Rollout",
            "Closed Won",
            -20,
            &[(2, "10", None), (4, "25", Some("5")), (1, "1", None)],
        ),
        (
            1,
            "O'Brien Logistics - Fleet Scanners",
            "Closed Won",
            -6,
            &[(4, "40", Some("10")), (5, "4", None)],
        ),
        (
            2,
            "Bluewater - Annual Support",
            "Negotiation/Review",
            14,
            &[(0, "3", None)],
        ),
        (
            3,
            "Cedar & Pine - Analytics Pilot",
            "Proposal/Price Quote",
            30,
            &[(3, "12", None), (6, "8", None)],
        ),
        (4, "Globex - Discovery", "Qualification", 45, &[]),
        (
            5,
            "Harborview - Data Migration",
            "Closed Lost",
            -40,
            &[(7, "1", None)],
        ),
        (
            7,
            "Lumen Solar - Connector Renewal",
            "Closed Won",
            -2,
            &[(2, "3", None), (0, "1", Some("15"))],
        ),
        (9, "Summit Outdoor - Point of Sale", "Prospecting", 60, &[]),
    ];
    for (account, name, stage, close, lines) in opportunities {
        let mut fields = json!({"AccountId": account_ids[account], "Name": name, "StageName": stage, "CloseDate": day(close)});
        if lines.is_empty() {
            fields["Amount"] = json!("15000.00");
        }
        let opp = make(org, &ctx, "Opportunity", fields);
        for (entry, quantity, discount) in lines.iter() {
            let mut line = json!({"OpportunityId": opp, "PricebookEntryId": entries[*entry].1, "Quantity": quantity});
            if let Some(d) = discount {
                line["Discount"] = json!(d);
            }
            make(org, &ctx, "OpportunityLineItem", line);
        }
    }
    // A reseller deal priced from the partner book.
    let opp = make(
        org,
        &ctx,
        "Opportunity",
        json!({"AccountId": account_ids[8], "Name": "Müller - Channel Licences", "StageName": "Value Proposition", "CloseDate": day(21), "Pricebook2Id": partner}),
    );
    make(
        org,
        &ctx,
        "OpportunityLineItem",
        json!({"OpportunityId": opp, "PricebookEntryId": partner_sync, "Quantity": "6"}),
    );
}
