//! Typed QuickBooks entities, with QBO's own field names on the wire.
//!
//! Layout: [`QboEntity`] is what every entity type implements (its wire name, id, sync token, and whether it
//! can be deleted or voided); [`common`] holds the shared shapes (references, addresses, lines, metadata);
//! [`names`] the name lists (Customer, Vendor, Employee, Item, Account, Term, TaxCode, TaxRate, Class,
//! Department); [`transactions`] the transactions (Invoice … RecurringTransaction); [`company`] CompanyInfo and
//! Preferences. [`money`] writes every amount as a JSON number from its decimal text (never through f64
//! arithmetic) and reads numbers or strings back into `Decimal`.
//!
//! Every entity keeps the fields it does not model in `extra` (`#[serde(flatten)]`), so a read-modify-write
//! never drops what QuickBooks sent, including fields added by newer minor versions. Every modelled field is an
//! `Option` and left out of the payload when `None`, which is what a sparse update needs.

pub mod common;
pub mod company;
pub mod names;
pub mod transactions;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use common::*;
pub use company::*;
pub use names::*;
pub use transactions::*;

/// How QuickBooks lets an entity be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// `POST /{entity}?operation=delete` with `Id` and `SyncToken`.
    Delete,
    /// Name lists are never deleted: they are made inactive (`Active: false`).
    Deactivate,
    /// Read-only or settings entities cannot be removed at all.
    None,
}

/// How QuickBooks voids an entity, if it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoidStyle {
    /// `POST /invoice?operation=void` with `Id` and `SyncToken`.
    Operation,
    /// `POST /{entity}?operation=update&include=void` with a sparse body (Payment, SalesReceipt, BillPayment).
    IncludeVoid,
    /// Not voidable.
    None,
}

/// A QuickBooks entity type.
pub trait QboEntity: Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The name in JSON envelopes and queries (`Customer`); lower-cased in URLs.
    const NAME: &'static str;
    const REMOVAL: Removal;
    const VOID: VoidStyle = VoidStyle::None;
    /// Whether the change data capture feed carries this entity (facts §7: not TimeActivity, TaxCode, TaxRate).
    const IN_CDC: bool = true;
    fn id(&self) -> Option<&str>;
    fn sync_token(&self) -> Option<&str>;
}

/// Defines an entity struct: the common header (`Id`, `SyncToken`, `MetaData`), the given optional fields, and
/// the `extra` map that keeps everything else.
macro_rules! entity {
    (
        $(#[$meta:meta])*
        $name:ident, removal = $removal:ident $(, void = $void:ident)? $(, cdc = $cdc:literal)?;
        { $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        pub struct $name {
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub id: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub sync_token: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub meta_data: Option<$crate::quickbooks::model::common::MetaData>,
            $(
                $(#[$fmeta])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
            /// Fields not modelled here, kept verbatim for read-modify-write.
            #[serde(flatten)]
            pub extra: serde_json::Map<String, serde_json::Value>,
        }

        impl $crate::quickbooks::model::QboEntity for $name {
            const NAME: &'static str = stringify!($name);
            const REMOVAL: $crate::quickbooks::model::Removal = $crate::quickbooks::model::Removal::$removal;
            $(const VOID: $crate::quickbooks::model::VoidStyle = $crate::quickbooks::model::VoidStyle::$void;)?
            $(const IN_CDC: bool = $cdc;)?
            fn id(&self) -> Option<&str> {
                self.id.as_deref()
            }
            fn sync_token(&self) -> Option<&str> {
                self.sync_token.as_deref()
            }
        }
    };
}
pub(crate) use entity;

/// Amounts as JSON numbers written from their decimal text.
pub mod money {
    use std::str::FromStr;

    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// The JSON number for `d`, from its normalized decimal text (`17.9910` → `17.991`).
    pub fn number(d: &Decimal) -> Result<serde_json::Number, String> {
        let text = d.normalize().to_string();
        serde_json::Number::from_str(&text).map_err(|e| format!("the amount {text} is not a JSON number: {e}"))
    }

    /// Reads a decimal from number text, including exponent forms (`1e-7`).
    pub fn parse(text: &str) -> Result<Decimal, String> {
        let text = text.trim();
        Decimal::from_str(text)
            .or_else(|_| Decimal::from_scientific(text))
            .map_err(|e| format!("`{text}` is not a decimal amount: {e}"))
    }

    pub fn serialize<S: Serializer>(value: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => number(d).map_err(serde::ser::Error::custom)?.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        match Option::<serde_json::Value>::deserialize(d)? {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Number(n)) => parse(&n.to_string()).map(Some).map_err(serde::de::Error::custom),
            Some(serde_json::Value::String(s)) => parse(&s).map(Some).map_err(serde::de::Error::custom),
            Some(other) => Err(serde::de::Error::custom(format!("expected an amount, got {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use serde_json::json;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let wire = json!({
            "Id": "1", "SyncToken": "5", "domain": "QBO", "sparse": false,
            "DisplayName": "Amy's Bird Sanctuary", "Balance": 274.0, "Job": false,
            "BillAddr": {"Id": "2", "Line1": "4581 Finch St.", "City": "Bayshore", "Lat": "37.4"},
            "MetaData": {"CreateTime": "2014-09-11T16:48:43-07:00", "LastUpdatedTime": "2015-07-01T10:14:15-07:00"},
            "FutureField": {"x": [1, 2]}
        });
        let c: Customer = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(c.display_name.as_deref(), Some("Amy's Bird Sanctuary"));
        assert_eq!(c.balance, Some(Decimal::new(274, 0)));
        assert_eq!(c.extra["FutureField"], json!({"x": [1, 2]}));
        assert_eq!(c.bill_addr.as_ref().unwrap().extra["Lat"], json!("37.4"));
        let back = serde_json::to_value(&c).unwrap();
        for key in ["domain", "sparse", "Job", "FutureField", "MetaData", "BillAddr"] {
            assert_eq!(back[key], wire[key], "{key}");
        }
        assert_eq!(back["Balance"].to_string(), "274");
    }

    #[test]
    fn amounts_are_exact_both_ways() {
        let inv: Invoice = serde_json::from_value(json!({"TotalAmt": 2603.97, "Balance": "0.10"})).unwrap();
        assert_eq!(inv.total_amt, Some("2603.97".parse().unwrap()));
        assert_eq!(inv.balance, Some("0.1".parse().unwrap()));
        let out = serde_json::to_value(Invoice { total_amt: Some("17.9910".parse().unwrap()), ..Default::default() })
            .unwrap();
        assert_eq!(out["TotalAmt"].to_string(), "17.991");
        let e = serde_json::from_value::<Invoice>(json!({"TotalAmt": "lots"})).unwrap_err();
        assert!(e.to_string().contains("lots"), "{e}");
        assert_eq!(money::parse("1e-2").unwrap(), "0.01".parse::<Decimal>().unwrap());
    }

    #[test]
    fn removal_and_void_rules_follow_qbo() {
        assert_eq!(Customer::REMOVAL, Removal::Deactivate);
        assert_eq!(Invoice::REMOVAL, Removal::Delete);
        assert_eq!(Invoice::VOID, VoidStyle::Operation);
        assert_eq!(Payment::VOID, VoidStyle::IncludeVoid);
        assert_eq!(Bill::VOID, VoidStyle::None);
        assert_eq!(CompanyInfo::REMOVAL, Removal::None);
        assert_eq!((TimeActivity::IN_CDC, TaxCode::IN_CDC, Invoice::IN_CDC), (false, false, true));
        assert_eq!(RecurringTransaction::NAME, "RecurringTransaction");
    }
}
