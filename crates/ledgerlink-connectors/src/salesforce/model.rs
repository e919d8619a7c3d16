//! Typed Salesforce records.
//!
//! Layout: one struct per object the flows use ([`Account`], [`Contact`], [`Opportunity`],
//! [`OpportunityLineItem`], [`Product2`], [`Pricebook2`], [`PricebookEntry`], [`Task`], [`User`]), with the
//! API's own field names (serde `PascalCase`), every field optional (a query selects some, an update sends some),
//! and custom `__c` fields — or any field not modelled — kept in a flattened `extra` map so nothing read is
//! lost and a custom field can be written. [`SObject`] ties a struct to its object name, its default query
//! fields and its read-only fields (never sent on writes: Salesforce refuses them). Money and quantities are
//! `Decimal`, converted to and from JSON numbers through their text ([`decimal`]), never through float
//! arithmetic; date-times use Salesforce's `+0000` format ([`datetime`]).

use chrono::{DateTime, NaiveDate, Utc};
use ledgerlink_model::money::{Currency, Money};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{ConnectorError, Record};

/// A Salesforce object type with a typed record.
pub trait SObject: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The API name (`Account`).
    const OBJECT: &'static str;
    /// Fields selected by typed queries (always including `Id` and `SystemModstamp`).
    const FIELDS: &'static [&'static str];
    /// Fields Salesforce computes: dropped from create and update payloads.
    const READ_ONLY: &'static [&'static str];

    fn id(&self) -> Option<&str>;

    /// Fields the struct does not model (custom `__c` fields among them).
    fn extra(&self) -> &Record;
}

/// Fields every object computes.
const SYSTEM_FIELDS: [&str; 8] = [
    "Id",
    "SystemModstamp",
    "CreatedDate",
    "CreatedById",
    "LastModifiedDate",
    "LastModifiedById",
    "IsDeleted",
    "attributes",
];

/// The writable fields of `record` as a payload: the read-only ones of `T` and the system fields removed, and
/// fields left `None` already absent.
pub fn to_payload<T: SObject>(record: &T) -> Result<Record, ConnectorError> {
    let value = serde_json::to_value(record).map_err(|e| ConnectorError::Validation {
        code: "invalid_record".into(),
        message: format!("the {} cannot be encoded: {e}", T::OBJECT),
        field: None,
    })?;
    let serde_json::Value::Object(mut map) = value else {
        return Err(ConnectorError::Validation {
            code: "invalid_record".into(),
            message: format!("the {} does not encode to a JSON object", T::OBJECT),
            field: None,
        });
    };
    for f in SYSTEM_FIELDS.iter().chain(T::READ_ONLY) {
        map.remove(*f);
    }
    Ok(map)
}

/// Reads a record as `T`, naming the object in the error.
pub fn from_record<T: SObject>(record: Record) -> Result<T, ConnectorError> {
    serde_json::from_value(serde_json::Value::Object(record)).map_err(|e| ConnectorError::Transient {
        message: format!("a {} from Salesforce does not fit its typed model: {e}", T::OBJECT),
        outcome_unknown: false,
    })
}

/// `Option<Decimal>` as a JSON number written from, and read into, its decimal text.
///
/// JSON numbers arrive from serde_json as `f64`; Rust prints an `f64` as the shortest text that reads back to
/// it, which is exactly the decimal Salesforce sent for every currency amount (at most 18 digits with 15 or
/// fewer significant), so the text is parsed as a `Decimal`. Writing goes the other way and refuses an amount
/// whose number would not read back identically, rather than send a different amount.
pub mod decimal {
    use std::str::FromStr;

    use rust_decimal::Decimal;
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Decimal>, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(d) = value else {
            return serializer.serialize_none();
        };
        let text = d.normalize().to_string();
        if let Ok(n) = text.parse::<i64>() {
            return serializer.serialize_i64(n);
        }
        let float: f64 = text.parse().map_err(serde::ser::Error::custom)?;
        match Decimal::from_str(&float.to_string()) {
            Ok(back) if back == *d => serializer.serialize_f64(float),
            _ => Err(serde::ser::Error::custom(format!(
                "the amount {d} cannot be sent as a JSON number without changing it"
            ))),
        }
    }

    struct DecimalVisitor;

    impl<'de> Visitor<'de> for DecimalVisitor {
        type Value = Option<Decimal>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a decimal number, a decimal string or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(DecimalVisitor)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(Decimal::from(v)))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(Decimal::from(v)))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            let text = v.to_string();
            Decimal::from_str(&text).map(Some).map_err(|_| E::custom(format!("`{text}` is not a decimal amount")))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            ledgerlink_model::money::parse_decimal(v).map(Some).map_err(E::custom)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Decimal>, D::Error> {
        deserializer.deserialize_option(DecimalVisitor)
    }
}

/// `Option<DateTime<Utc>>` in Salesforce's format (`2024-01-15T10:30:00.000+0000`; RFC 3339 is read too).
pub mod datetime {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(t) => serializer.serialize_str(&t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let text: Option<String> = Option::deserialize(deserializer)?;
        match text {
            None => Ok(None),
            Some(t) => super::super::parse_timestamp(&t)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("`{t}` is not a Salesforce date-time"))),
        }
    }
}

/// An amount with the record's currency, or the org's when the org is single-currency (no `CurrencyIsoCode`).
fn money(amount: Option<Decimal>, iso: Option<&str>, org_currency: Currency) -> Result<Option<Money>, ConnectorError> {
    let Some(amount) = amount else {
        return Ok(None);
    };
    let currency = match iso {
        Some(code) => Currency::parse(code).map_err(|e| ConnectorError::Validation {
            code: "invalid_currency".into(),
            message: e.to_string(),
            field: Some("CurrencyIsoCode".into()),
        })?,
        None => org_currency,
    };
    Ok(Some(Money::new(amount, currency)))
}

macro_rules! sobject {
    ($ty:ident, $name:literal, fields: [$($f:literal),* $(,)?], read_only: [$($ro:literal),* $(,)?]) => {
        impl SObject for $ty {
            const OBJECT: &'static str = $name;
            const FIELDS: &'static [&'static str] = &[$($f),*];
            const READ_ONLY: &'static [&'static str] = &[$($ro),*];

            fn id(&self) -> Option<&str> {
                self.id.as_deref()
            }

            fn extra(&self) -> &Record {
                &self.extra
            }
        }
    };
}

/// An account (a customer company).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Account {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_street: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_postal_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "datetime")]
    pub system_modstamp: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Record,
}
sobject!(Account, "Account",
    fields: ["Id", "Name", "BillingStreet", "BillingCity", "BillingState", "BillingPostalCode", "BillingCountry",
             "Phone", "Website", "OwnerId", "SystemModstamp"],
    read_only: []);

/// A person at an account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Contact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "datetime")]
    pub system_modstamp: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Record,
}
sobject!(Contact, "Contact",
    fields: ["Id", "AccountId", "FirstName", "LastName", "Email", "SystemModstamp"],
    read_only: []);

/// A deal. `IsClosed`/`IsWon` follow the stage and are read-only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Opportunity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_closed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_won: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "decimal")]
    pub amount: Option<Decimal>,
    /// Present in multi-currency orgs only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency_iso_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_date: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricebook2_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_opportunity_line_item: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "datetime")]
    pub system_modstamp: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Record,
}
sobject!(Opportunity, "Opportunity",
    fields: ["Id", "AccountId", "Name", "StageName", "IsClosed", "IsWon", "Amount", "CloseDate", "Pricebook2Id",
             "OwnerId", "HasOpportunityLineItem", "SystemModstamp"],
    read_only: ["IsClosed", "IsWon", "HasOpportunityLineItem"]);

impl Opportunity {
    /// The amount with its currency (`org_currency` when the org has a single currency).
    pub fn amount_money(&self, org_currency: Currency) -> Result<Option<Money>, ConnectorError> {
        money(self.amount, self.currency_iso_code.as_deref(), org_currency)
    }
}

/// A product line of an opportunity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OpportunityLineItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opportunity_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricebook_entry_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product2_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "decimal")]
    pub quantity: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "decimal")]
    pub unit_price: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "decimal")]
    pub list_price: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "decimal")]
    pub total_price: Option<Decimal>,
    /// Percent.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "decimal")]
    pub discount: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency_iso_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_date: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "datetime")]
    pub system_modstamp: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Record,
}
sobject!(OpportunityLineItem, "OpportunityLineItem",
    fields: ["Id", "OpportunityId", "PricebookEntryId", "Product2Id", "Quantity", "UnitPrice", "ListPrice",
             "TotalPrice", "Discount", "ServiceDate", "Description", "SystemModstamp"],
    read_only: ["ListPrice"]);

impl OpportunityLineItem {
    pub fn unit_price_money(&self, org_currency: Currency) -> Result<Option<Money>, ConnectorError> {
        money(self.unit_price, self.currency_iso_code.as_deref(), org_currency)
    }

    pub fn total_price_money(&self, org_currency: Currency) -> Result<Option<Money>, ConnectorError> {
        money(self.total_price, self.currency_iso_code.as_deref(), org_currency)
    }
}

/// A product.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Product2 {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "datetime")]
    pub system_modstamp: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Record,
}
sobject!(Product2, "Product2",
    fields: ["Id", "Name", "ProductCode", "IsActive", "Description", "SystemModstamp"],
    read_only: []);

/// A price book. The standard one is created by Salesforce.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Pricebook2 {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_standard: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "datetime")]
    pub system_modstamp: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Record,
}
sobject!(Pricebook2, "Pricebook2",
    fields: ["Id", "Name", "IsActive", "IsStandard", "SystemModstamp"],
    read_only: ["IsStandard"]);

/// A product's price in one price book.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PricebookEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricebook2_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product2_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "decimal")]
    pub unit_price: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency_iso_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "datetime")]
    pub system_modstamp: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Record,
}
sobject!(PricebookEntry, "PricebookEntry",
    fields: ["Id", "Pricebook2Id", "Product2Id", "UnitPrice", "IsActive", "SystemModstamp"],
    read_only: []);

impl PricebookEntry {
    pub fn unit_price_money(&self, org_currency: Currency) -> Result<Option<Money>, ConnectorError> {
        money(self.unit_price, self.currency_iso_code.as_deref(), org_currency)
    }
}

/// A to-do on a record (`WhatId`) for a person (`WhoId`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub what_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub who_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_date: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "datetime")]
    pub system_modstamp: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Record,
}
sobject!(Task, "Task",
    fields: ["Id", "WhatId", "WhoId", "OwnerId", "Subject", "ActivityDate", "Status", "Priority", "SystemModstamp"],
    read_only: []);

/// A user of the org (owners of records).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct User {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "datetime")]
    pub system_modstamp: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Record,
}
sobject!(User, "User",
    fields: ["Id", "Username", "Name", "FirstName", "LastName", "Email", "IsActive", "SystemModstamp"],
    read_only: ["Name"]);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::str::FromStr;

    #[test]
    fn amounts_are_exact_both_ways() {
        let line: OpportunityLineItem = from_record(
            json!({"attributes": {"type": "OpportunityLineItem"}, "Id": "00k", "Quantity": 3, "UnitPrice": 1500.1,
                   "TotalPrice": 4500.3, "Discount": null, "Custom__c": "x"})
            .as_object()
            .unwrap()
            .clone(),
        )
        .unwrap();
        assert_eq!(line.unit_price, Some(Decimal::from_str("1500.1").unwrap()));
        assert_eq!(line.total_price, Some(Decimal::from_str("4500.3").unwrap()));
        assert_eq!(line.quantity, Some(Decimal::from(3)));
        assert_eq!(line.discount, None);
        assert_eq!(line.extra.get("Custom__c"), Some(&json!("x")));
        let money = line.total_price_money(Currency::USD).unwrap().unwrap();
        assert_eq!(money.to_string(), "4500.3 USD");

        let payload = to_payload(&line).unwrap();
        assert_eq!(payload["UnitPrice"].to_string(), "1500.1");
        assert_eq!(payload["Quantity"].to_string(), "3");
        assert!(
            !payload.contains_key("Id") && !payload.contains_key("attributes") && !payload.contains_key("Discount")
        );
        assert_eq!(payload["Custom__c"], json!("x"));
    }

    #[test]
    fn an_amount_a_number_cannot_carry_is_refused() {
        let opp =
            Opportunity { amount: Some(Decimal::from_str("12345678901234567.891").unwrap()), ..Default::default() };
        let err = to_payload(&opp).unwrap_err();
        assert!(err.to_string().contains("12345678901234567.891"), "{err}");
    }

    #[test]
    fn read_only_fields_are_not_written_and_dates_round_trip() {
        let opp: Opportunity = from_record(
            json!({"Id": "006", "Name": "Deal", "IsClosed": true, "IsWon": true, "Amount": "99.95",
                   "CurrencyIsoCode": "EUR", "CloseDate": "2024-03-31", "SystemModstamp": "2024-01-15T10:30:00.000+0000"})
            .as_object()
            .unwrap()
            .clone(),
        )
        .unwrap();
        assert_eq!(opp.close_date, NaiveDate::from_ymd_opt(2024, 3, 31));
        assert_eq!(opp.amount_money(Currency::USD).unwrap().unwrap().to_string(), "99.95 EUR");
        let payload = to_payload(&opp).unwrap();
        assert!(!payload.contains_key("IsClosed") && !payload.contains_key("IsWon"));
        assert!(!payload.contains_key("SystemModstamp"));
        assert_eq!(payload["CloseDate"], json!("2024-03-31"));
        let full = serde_json::to_value(&opp).unwrap();
        assert_eq!(full["SystemModstamp"], json!("2024-01-15T10:30:00.000+0000"));
    }

    #[test]
    fn a_bad_amount_names_the_object() {
        let err = from_record::<Opportunity>(json!({"Amount": "lots"}).as_object().unwrap().clone()).unwrap_err();
        assert!(err.to_string().contains("Opportunity") && err.to_string().contains("lots"), "{err}");
    }
}
