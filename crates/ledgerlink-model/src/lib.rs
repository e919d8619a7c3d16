//! Canonical records for ledgerlink.
//!
//! Layout: [`money`] holds [`Money`] (an exact `rust_decimal` amount that always carries its ISO currency),
//! [`ids`] holds typed identifiers that are parsed once at the edge, and [`document`] holds the canonical
//! sales documents (invoice and its lines) that flows map into and connectors encode for their system.
//!
//! This crate does no I/O and knows no external system: flows and connectors meet here.

pub mod document;
pub mod ids;
pub mod money;

pub use document::{CustomFieldValue, Invoice, InvoiceDiscount, InvoiceLine, ModelError};
pub use ids::{IdError, QboRealmId, RecordRef, SalesforceId};
pub use money::{Currency, Money, MoneyError, parse_decimal};
