//! Per-entity rules: what a create, update, delete or void must carry, what the server fills in, and the side
//! effects.
//!
//! Layout: [`EntityKind`] names the entities the sandbox serves and how they appear in paths and queries;
//! [`write`] dispatches one write (create, full or sparse update, delete, void) to the shared flow (`create`,
//! `update`, `delete`, [`super::txn::void`]), which strips read-only fields, runs the entity's `prepare_*`
//! validation/derivation, stamps `Id`, `SyncToken` and `MetaData`, and then lets [`super::txn::Scope`]
//! re-derive the balances that depend on the written transaction (invoice and bill balances, credit left on credit
//! memos, estimates' billed status, customer and vendor balances). This module holds the name lists (Customer,
//! Vendor, Employee, Item, Account, Term, Class, Department) and the company documents (CompanyInfo, Preferences);
//! [`super::txn`] holds the transactions. Rows are plain JSON objects in the wire shape, so a read returns exactly
//! what was stored. All money goes through [`super::money`] and `rust_decimal`. Every write appends
//! [`ChangeEvent`]s to the context so webhooks can report them.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use super::fault::Fault;
use super::money::{decimal_of, number};
use super::state::{Company, Tombstone};
use super::time::meta_time;
use super::txn;

/// The company's home currency when Preferences say nothing.
pub fn home_currency() -> Value {
    json!({"value": "USD", "name": "United States Dollar"})
}

macro_rules! kinds {
    ($($k:ident),* $(,)?) => {
        /// An entity served by the sandbox.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EntityKind { $($k),* }
        impl EntityKind {
            pub const ALL: &'static [EntityKind] = &[$(EntityKind::$k),*];
            /// The name used as JSON key, table name and in queries.
            pub fn name(self) -> &'static str {
                match self { $(EntityKind::$k => stringify!($k)),* }
            }
        }
    };
}

kinds!(
    Customer,
    Vendor,
    Employee,
    Item,
    Account,
    Term,
    TaxCode,
    TaxRate,
    Class,
    Department,
    Invoice,
    Estimate,
    SalesReceipt,
    CreditMemo,
    Payment,
    Bill,
    BillPayment,
    Purchase,
    PurchaseOrder,
    JournalEntry,
    TimeActivity,
    RecurringTransaction,
    CompanyInfo,
    Preferences,
);

impl EntityKind {
    /// The entity named by a path segment (`customer`) or a query's FROM (`Customer`); case does not matter.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|k| k.name().eq_ignore_ascii_case(name))
    }

    /// Name-list entities are deactivated, never deleted, and queries hide their inactive rows by default.
    pub fn is_name_list(self) -> bool {
        use EntityKind::*;
        matches!(
            self,
            Customer | Vendor | Employee | Item | Account | Term | Class | Department
        )
    }

    pub fn is_transaction(self) -> bool {
        use EntityKind::*;
        matches!(
            self,
            Invoice
                | Estimate
                | SalesReceipt
                | CreditMemo
                | Payment
                | Bill
                | BillPayment
                | Purchase
                | PurchaseOrder
                | JournalEntry
                | TimeActivity
                | RecurringTransaction
        )
    }

    /// Entities this sandbox accepts writes for (tax codes and rates are read-only through the API, as with QBO).
    pub fn writable(self) -> bool {
        !matches!(self, EntityKind::TaxCode | EntityKind::TaxRate)
    }

    /// Entities a change-data-capture call may ask for (QBO excludes TimeActivity and the tax entities).
    pub fn in_cdc(self) -> bool {
        !matches!(
            self,
            EntityKind::TimeActivity | EntityKind::TaxCode | EntityKind::TaxRate
        )
    }

    /// Fields the server computes; whatever a client sends for them is ignored.
    fn read_only_fields(self) -> &'static [&'static str] {
        use EntityKind::*;
        match self {
            Customer | Vendor => &["Balance", "BalanceWithJobs", "FullyQualifiedName"],
            Item | Class | Department => &["FullyQualifiedName"],
            Account => &[
                "FullyQualifiedName",
                "CurrentBalance",
                "CurrentBalanceWithSubAccounts",
                "Classification",
            ],
            Invoice | CreditMemo | Estimate | SalesReceipt => &[
                "TotalAmt",
                "Balance",
                "HomeTotalAmt",
                "HomeBalance",
                "RemainingCredit",
            ],
            Bill | Purchase | PurchaseOrder | JournalEntry => {
                &["TotalAmt", "Balance", "HomeTotalAmt", "HomeBalance"]
            }
            Payment => &["UnappliedAmt", "HomeTotalAmt"],
            BillPayment => &["HomeTotalAmt"],
            _ => &[],
        }
    }
}

const COMMON_READ_ONLY: [&str; 6] = ["Id", "SyncToken", "MetaData", "domain", "sparse", "status"];

/// A change a webhook reports: `operation` is Create, Update, Delete or Void.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    pub entity: &'static str,
    pub id: String,
    pub operation: &'static str,
    pub at: DateTime<Utc>,
}

/// Per-request switches that change validation, and what the write did.
#[derive(Debug, Clone)]
pub struct WriteCtx {
    pub now: DateTime<Utc>,
    /// `include=allowduplicatedocnum`.
    pub allow_duplicate_doc_number: bool,
    /// `include=void` (with `operation=update`): the sparse body voids the transaction.
    pub include_void: bool,
    /// Objects created earlier in the same batch: a batch item cannot see them (QBO runs the items against the
    /// company as it was when the batch arrived).
    pub hidden: HashSet<(String, String)>,
    /// Appended by every write, side effects included.
    pub events: Vec<ChangeEvent>,
}

impl WriteCtx {
    pub fn new(now: DateTime<Utc>) -> Self {
        WriteCtx {
            now,
            allow_duplicate_doc_number: false,
            include_void: false,
            hidden: HashSet::new(),
            events: Vec::new(),
        }
    }

    pub(crate) fn is_hidden(&self, entity: &str, id: &str) -> bool {
        !self.hidden.is_empty() && self.hidden.contains(&(entity.to_string(), id.to_string()))
    }

    pub(crate) fn event(&mut self, entity: EntityKind, id: &str, operation: &'static str) {
        self.events.push(ChangeEvent {
            entity: entity.name(),
            id: id.to_string(),
            operation,
            at: self.now,
        });
    }
}

/// Runs one write. `operation` is the `operation` query parameter. Returns the object for the response envelope.
///
/// Only the balances the write can have moved are re-derived: those [`txn::Scope`] finds from the written row as
/// stored before the write and as stored after it.
pub fn write(
    co: &mut Company,
    kind: EntityKind,
    operation: Option<&str>,
    body: Value,
    ctx: &mut WriteCtx,
) -> Result<Value, Fault> {
    let mut scope = txn::Scope::default();
    if let Some(id) = body.as_object().and_then(id_of) {
        scope.add_stored(co, kind, &id);
    }
    let result = apply(co, kind, operation, body, ctx)?;
    if let Some(id) = super::state::row_id(&result) {
        scope.add_stored(co, kind, id);
    }
    scope.rederive(co, ctx);
    Ok(answer(co, kind, result))
}

/// [`write`] with every balance of the company re-derived afterwards: the reference the scoped write must match.
#[cfg(test)]
pub(crate) fn write_rederiving_all(
    co: &mut Company,
    kind: EntityKind,
    operation: Option<&str>,
    body: Value,
    ctx: &mut WriteCtx,
) -> Result<Value, Fault> {
    let result = apply(co, kind, operation, body, ctx)?;
    txn::recompute_all(co, ctx);
    Ok(answer(co, kind, result))
}

/// The answer shows the row as it stands after the balances moved.
fn answer(co: &Company, kind: EntityKind, result: Value) -> Value {
    let stored = super::state::row_id(&result)
        .filter(|_| result.get("status").is_none())
        .and_then(|id| co.get(kind.name(), id));
    match stored {
        Some(row) => row.clone(),
        None => result,
    }
}

/// Dispatches one write to create, update, delete or void; balances other rows derive are left to the caller.
fn apply(
    co: &mut Company,
    kind: EntityKind,
    operation: Option<&str>,
    body: Value,
    ctx: &mut WriteCtx,
) -> Result<Value, Fault> {
    let Value::Object(body) = body else {
        return Err(Fault::invalid_property(format!(
            "The request body must be a JSON object holding the {} fields",
            kind.name()
        )));
    };
    if !kind.writable() {
        return Err(Fault::unsupported(format!(
            "Operation {} on {} is not supported: {} is read-only through the API",
            operation.unwrap_or("create/update"),
            kind.name(),
            kind.name()
        )));
    }
    let op = operation.map(str::to_ascii_lowercase);
    match op.as_deref() {
        Some("delete") => {
            if matches!(kind, EntityKind::CompanyInfo | EntityKind::Preferences) {
                return Err(Fault::unsupported(format!(
                    "Operation delete is not supported for {}",
                    kind.name()
                )));
            }
            if kind.is_name_list() {
                Err(Fault::business(format!(
                    "{} objects cannot be deleted. Make it inactive instead with a sparse update setting \"Active\": false.",
                    kind.name()
                )))
            } else {
                delete(co, kind, &body, ctx)
            }
        }
        Some("void") => txn::void(co, kind, &body, ctx),
        Some("update") if ctx.include_void => txn::void(co, kind, &body, ctx),
        None | Some("update") | Some("create") => {
            if has_id(&body) {
                update(co, kind, body, ctx)
            } else if op.as_deref() == Some("update")
                || matches!(kind, EntityKind::CompanyInfo | EntityKind::Preferences)
            {
                Err(Fault::required("Id"))
            } else {
                create(co, kind, body, ctx)
            }
        }
        Some(other) => Err(Fault::unsupported(format!(
            "Operation {other} is not supported for {} (use create, update, delete or void)",
            kind.name()
        ))),
    }
}

fn has_id(body: &Map<String, Value>) -> bool {
    id_of(body).is_some()
}

pub(crate) fn id_of(body: &Map<String, Value>) -> Option<String> {
    match body.get("Id")? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn sync_token_of(body: &Map<String, Value>) -> Option<String> {
    match body.get("SyncToken")? {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn strip(kind: EntityKind, mut body: Map<String, Value>) -> Map<String, Value> {
    for key in COMMON_READ_ONLY.iter().chain(kind.read_only_fields()) {
        body.remove(*key);
    }
    body
}

pub(crate) fn stamp(
    mut row: Map<String, Value>,
    id: &str,
    sync_token: u64,
    created: String,
    now: DateTime<Utc>,
) -> Value {
    row.insert("Id".into(), Value::String(id.to_string()));
    row.insert("SyncToken".into(), Value::String(sync_token.to_string()));
    row.insert("domain".into(), Value::String("QBO".into()));
    row.insert("sparse".into(), Value::Bool(false));
    row.insert(
        "MetaData".into(),
        json!({"CreateTime": created, "LastUpdatedTime": meta_time(now)}),
    );
    Value::Object(row)
}

/// Marks a stored row as changed by the server (a payment moved its balance): new SyncToken and LastUpdatedTime.
pub(crate) fn touch(row: &mut Map<String, Value>, now: DateTime<Utc>) {
    let token = row
        .get("SyncToken")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    row.insert("SyncToken".into(), Value::String((token + 1).to_string()));
    if let Some(Value::Object(meta)) = row.get_mut("MetaData") {
        meta.insert("LastUpdatedTime".into(), Value::String(meta_time(now)));
    }
}

fn create(
    co: &mut Company,
    kind: EntityKind,
    body: Map<String, Value>,
    ctx: &mut WriteCtx,
) -> Result<Value, Fault> {
    if kind == EntityKind::RecurringTransaction {
        return txn::recurring_create(co, body, ctx);
    }
    let candidate = strip(kind, body);
    let prepared = prepare(co, kind, candidate, None, ctx)?;
    let id = co.allocate_id(kind.name());
    let row = stamp(prepared, &id.to_string(), 0, meta_time(ctx.now), ctx.now);
    co.put(kind.name(), id, row.clone());
    ctx.event(kind, &id.to_string(), "Create");
    Ok(row)
}

pub(crate) fn check_sync_token(
    kind: EntityKind,
    body: &Map<String, Value>,
    id: &str,
    existing: &Value,
) -> Result<u64, Fault> {
    let given = sync_token_of(body).ok_or_else(|| Fault::required("SyncToken"))?;
    let current = existing
        .get("SyncToken")
        .and_then(Value::as_str)
        .unwrap_or("0")
        .to_string();
    if given != current {
        return Err(Fault::stale(kind.name(), id, &given, &current));
    }
    Ok(current.parse::<u64>().unwrap_or(0))
}

/// The stored row `id` of `kind`, unless it is missing or hidden from this batch item.
pub(crate) fn existing(
    co: &Company,
    kind: EntityKind,
    id: &str,
    ctx: &WriteCtx,
) -> Result<Value, Fault> {
    if ctx.is_hidden(kind.name(), id) {
        return Err(Fault::not_found(kind.name(), id));
    }
    co.get(kind.name(), id)
        .cloned()
        .ok_or_else(|| Fault::not_found(kind.name(), id))
}

fn update(
    co: &mut Company,
    kind: EntityKind,
    body: Map<String, Value>,
    ctx: &mut WriteCtx,
) -> Result<Value, Fault> {
    let id = id_of(&body).ok_or_else(|| Fault::required("Id"))?;
    let existing = existing(co, kind, &id, ctx)?;
    let current = check_sync_token(kind, &body, &id, &existing)?;
    if txn::is_voided(&existing) {
        return Err(Fault::business(format!(
            "{} {id} is voided and can no longer be changed",
            kind.name()
        )));
    }
    let sparse = body.get("sparse").and_then(Value::as_bool).unwrap_or(false);
    let candidate = if sparse {
        let mut merged = strip(kind, existing.as_object().cloned().unwrap_or_default());
        merge_sparse(&mut merged, strip(kind, body));
        merged
    } else {
        strip(kind, body)
    };
    let prepared = prepare(co, kind, candidate, Some(&existing), ctx)?;
    let created = existing
        .pointer("/MetaData/CreateTime")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| meta_time(ctx.now));
    let row = stamp(prepared, &id, current + 1, created, ctx.now);
    let key: u64 = co.key(kind.name(), &id).unwrap_or_default();
    co.put(kind.name(), key, row.clone());
    ctx.event(kind, &id, "Update");
    Ok(row)
}

/// Sparse update: the fields sent replace the stored ones; nested objects of the company documents (Preferences
/// sections) merge one level deeper so `{"CurrencyPrefs":{"MultiCurrencyEnabled":true}}` keeps the home currency.
fn merge_sparse(stored: &mut Map<String, Value>, sent: Map<String, Value>) {
    for (k, v) in sent {
        match (stored.get_mut(&k), v) {
            (Some(Value::Object(old)), Value::Object(new)) if k.ends_with("Prefs") => {
                for (nk, nv) in new {
                    old.insert(nk, nv);
                }
            }
            (_, v) => {
                stored.insert(k, v);
            }
        }
    }
}

fn delete(
    co: &mut Company,
    kind: EntityKind,
    body: &Map<String, Value>,
    ctx: &mut WriteCtx,
) -> Result<Value, Fault> {
    let id = id_of(body).ok_or_else(|| Fault::required("Id"))?;
    let existing = existing(co, kind, &id, ctx)?;
    check_sync_token(kind, body, &id, &existing)?;
    txn::check_deletable(co, kind, &id)?;
    co.remove(kind.name(), &id);
    co.deleted.push(Tombstone {
        entity: kind.name().to_string(),
        id: id.clone(),
        deleted_at: meta_time(ctx.now),
    });
    ctx.event(kind, &id, "Delete");
    Ok(json!({"domain": "QBO", "status": "Deleted", "Id": id}))
}

fn check_may_deactivate(kind: EntityKind, row: &Value) -> Result<(), Fault> {
    if matches!(kind, EntityKind::Customer | EntityKind::Vendor) {
        let balance = row.get("Balance").and_then(decimal_of).unwrap_or_default();
        if !balance.is_zero() {
            return Err(Fault::business(format!(
                "{} {} has an open balance of {balance}: settle it before making it inactive",
                kind.name(),
                name_of(row, "DisplayName")
            ))
            .at("Active"));
        }
    }
    Ok(())
}

/// Validates a candidate row and fills in everything the server derives. `previous` is the stored row on update.
fn prepare(
    co: &Company,
    kind: EntityKind,
    candidate: Map<String, Value>,
    previous: Option<&Value>,
    ctx: &WriteCtx,
) -> Result<Map<String, Value>, Fault> {
    use EntityKind::*;
    let prepared = match kind {
        Customer | Vendor | Employee => prepare_party(co, kind, candidate, previous, ctx)?,
        Item => prepare_item(co, candidate, previous, ctx)?,
        Account => prepare_account(co, candidate, previous, ctx)?,
        Term => prepare_term(co, candidate, previous)?,
        Class | Department => prepare_grouping(co, kind, candidate, previous, ctx)?,
        CompanyInfo => prepare_company_info(candidate)?,
        Preferences => prepare_preferences(candidate, previous)?,
        TaxCode | TaxRate => {
            return Err(Fault::unsupported(format!(
                "{} cannot be written",
                kind.name()
            )));
        }
        _ => txn::prepare(co, kind, candidate, previous, ctx)?,
    };
    if let (Some(prev), Some(false)) = (previous, prepared.get("Active").and_then(Value::as_bool))
        && prev.get("Active") != Some(&Value::Bool(false))
    {
        check_may_deactivate(kind, prev)?;
    }
    Ok(prepared)
}

// ----- field helpers ---------------------------------------------------------------------------------------------

pub(crate) fn wrong_type(field: &str, expected: &str, got: &Value) -> Fault {
    Fault::invalid_property(format!(
        "Property Name:{field} must be {expected}, got {got}"
    ))
    .at(field)
}

pub(crate) fn opt_str(map: &Map<String, Value>, field: &str) -> Result<Option<String>, Fault> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(other) => Err(wrong_type(field, "a string", other)),
    }
}

pub(crate) fn opt_bool(map: &Map<String, Value>, field: &str) -> Result<Option<bool>, Fault> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(other) => Err(wrong_type(field, "true or false", other)),
    }
}

pub(crate) fn opt_decimal(
    map: &Map<String, Value>,
    field: &str,
    element: &str,
) -> Result<Option<Decimal>, Fault> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(v) => decimal_of(v)
            .map(Some)
            .ok_or_else(|| wrong_type(element, "a number", v)),
    }
}

/// The `value` of a reference object (`{"value":"1","name":"…"}`); a bare string or number is accepted too.
pub(crate) fn opt_ref(map: &Map<String, Value>, field: &str) -> Result<Option<String>, Fault> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => match o.get("value") {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(_)) => Ok(None),
            Some(other) => Err(wrong_type(&format!("{field}.value"), "a string", other)),
        },
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(wrong_type(
            field,
            "a reference object {\"value\": \"…\"}",
            other,
        )),
    }
}

pub(crate) fn opt_date(map: &Map<String, Value>, field: &str) -> Result<Option<NaiveDate>, Fault> {
    match opt_str(map, field)? {
        None => Ok(None),
        Some(s) => NaiveDate::parse_from_str(&s, "%Y-%m-%d")
            .or_else(|_| chrono::DateTime::parse_from_rfc3339(&s).map(|t| t.date_naive()))
            .map(Some)
            .map_err(|_| {
                Fault::invalid_property(format!(
                    "Property Name:{field} must be a date YYYY-MM-DD, got \"{s}\""
                ))
                .at(field)
            }),
    }
}

/// Looks up a referenced row and checks it is usable: missing → 2500, inactive → 610.
pub(crate) fn referenced<'a>(
    co: &'a Company,
    ctx: &WriteCtx,
    field: &str,
    entity: EntityKind,
    id: &str,
) -> Result<&'a Value, Fault> {
    let row = co
        .get(entity.name(), id)
        .filter(|_| !ctx.is_hidden(entity.name(), id))
        .ok_or_else(|| Fault::invalid_reference(field, entity.name(), id))?;
    if row.get("Active") == Some(&Value::Bool(false)) {
        return Err(Fault::not_found(entity.name(), id).at(field));
    }
    Ok(row)
}

/// Validates the optional reference `field` of `map` and rewrites it as `{"value", "name"}`.
pub(crate) fn fill_ref(
    co: &Company,
    ctx: &WriteCtx,
    map: &mut Map<String, Value>,
    field: &str,
    entity: EntityKind,
    name_key: &str,
) -> Result<Option<Value>, Fault> {
    let Some(id) = opt_ref(map, field)? else {
        map.remove(field);
        return Ok(None);
    };
    let row = referenced(co, ctx, field, entity, &id)?.clone();
    map.insert(
        field.into(),
        json!({"value": id, "name": name_of(&row, name_key)}),
    );
    Ok(Some(row))
}

pub(crate) fn name_of(row: &Value, key: &str) -> Value {
    row.get(key).cloned().unwrap_or(Value::Null)
}

pub(crate) fn same_id(row: &Value, previous: Option<&Value>) -> bool {
    previous.is_some_and(|p| p.get("Id") == row.get("Id"))
}

/// The value at `path` inside the Preferences document, if any.
pub(crate) fn preference<'a>(co: &'a Company, path: &str) -> Option<&'a Value> {
    co.rows("Preferences").next()?.pointer(path)
}

// ----- Customer, Vendor, Employee ------------------------------------------------------------------------------

fn prepare_party(
    co: &Company,
    kind: EntityKind,
    mut c: Map<String, Value>,
    previous: Option<&Value>,
    ctx: &WriteCtx,
) -> Result<Map<String, Value>, Fault> {
    let display = match opt_str(&c, "DisplayName")? {
        Some(d) => d,
        None => {
            let mut parts = Vec::new();
            for f in ["Title", "GivenName", "MiddleName", "FamilyName", "Suffix"] {
                if let Some(p) = opt_str(&c, f)? {
                    parts.push(p);
                }
            }
            if parts.is_empty() {
                match opt_str(&c, "CompanyName")? {
                    Some(n) if kind != EntityKind::Employee => n,
                    _ if kind == EntityKind::Employee => {
                        return Err(Fault::required("GivenName or FamilyName"));
                    }
                    _ => return Err(Fault::required("DisplayName")),
                }
            } else {
                parts.join(" ")
            }
        }
    };
    if display.chars().count() > 500 {
        return Err(Fault::business("DisplayName is longer than 500 characters").at("DisplayName"));
    }
    if display.contains(':') {
        return Err(
            Fault::business(format!("DisplayName \"{display}\" must not contain ':'"))
                .at("DisplayName"),
        );
    }
    // QBO keeps one namespace for the people and companies a business deals with.
    let lowered = display.to_lowercase();
    for other_kind in [
        EntityKind::Customer,
        EntityKind::Vendor,
        EntityKind::Employee,
    ] {
        if let Some(other) = co.rows(other_kind.name()).find(|row| {
            !(other_kind == kind && same_id(row, previous))
                && row
                    .get("DisplayName")
                    .and_then(Value::as_str)
                    .is_some_and(|d| d.to_lowercase() == lowered)
        }) {
            let other_id = other.get("Id").and_then(Value::as_str).unwrap_or_default();
            return Err(Fault::duplicate_name(
                &display,
                &format!("{} (Id {other_id})", other_kind.name().to_lowercase()),
            )
            .at("DisplayName"));
        }
    }
    if let Some(email) = c.get("PrimaryEmailAddr")
        && !email.is_null()
        && !email.get("Address").is_some_and(Value::is_string)
    {
        return Err(wrong_type(
            "PrimaryEmailAddr",
            "an object {\"Address\": \"…\"}",
            email,
        ));
    }
    let active = opt_bool(&c, "Active")?.unwrap_or(true);
    for flag in [
        "Job",
        "BillWithParent",
        "Taxable",
        "Vendor1099",
        "BillableTime",
    ] {
        opt_bool(&c, flag)?;
    }
    let mut fqn = display.clone();
    if kind == EntityKind::Customer {
        if let Some(parent) = fill_ref(
            co,
            ctx,
            &mut c,
            "ParentRef",
            EntityKind::Customer,
            "DisplayName",
        )? {
            fqn = format!(
                "{}:{display}",
                parent
                    .get("FullyQualifiedName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            );
            c.insert("Job".into(), Value::Bool(true));
            c.entry("BillWithParent").or_insert(Value::Bool(false));
            c.insert("Level".into(), json!(1));
        }
        c.entry("Job").or_insert(Value::Bool(false));
        c.entry("BillWithParent").or_insert(Value::Bool(false));
        c.entry("PreferredDeliveryMethod")
            .or_insert(Value::String("Print".into()));
        c.entry("Taxable").or_insert(Value::Bool(true));
    }
    if kind != EntityKind::Employee {
        let tf = "SalesTermRef";
        let field = if kind == EntityKind::Vendor {
            "TermRef"
        } else {
            tf
        };
        fill_ref(co, ctx, &mut c, field, EntityKind::Term, "Name")?;
        c.insert("FullyQualifiedName".into(), Value::String(fqn));
        if opt_str(&c, "PrintOnCheckName")?.is_none() {
            c.insert("PrintOnCheckName".into(), Value::String(display.clone()));
        }
        // The currency of a customer or vendor is fixed once chosen; a foreign one needs multicurrency.
        let currency = txn::party_currency(co, &c, previous)?;
        c.insert("CurrencyRef".into(), currency);
        let balance = previous
            .and_then(|p| p.get("Balance"))
            .and_then(decimal_of)
            .unwrap_or_default();
        c.insert("Balance".into(), number(balance));
        if kind == EntityKind::Customer {
            c.insert("BalanceWithJobs".into(), number(balance));
        }
    } else {
        c.entry("BillableTime").or_insert(Value::Bool(false));
        if let Some(hired) = opt_date(&c, "HiredDate")? {
            c.insert("HiredDate".into(), Value::String(hired.to_string()));
        }
    }
    c.insert("DisplayName".into(), Value::String(display));
    c.insert("Active".into(), Value::Bool(active));
    Ok(c)
}

// ----- Item ------------------------------------------------------------------------------------------------------

const ITEM_TYPES: [&str; 5] = ["Service", "NonInventory", "Inventory", "Category", "Group"];

fn prepare_item(
    co: &Company,
    mut c: Map<String, Value>,
    previous: Option<&Value>,
    ctx: &WriteCtx,
) -> Result<Map<String, Value>, Fault> {
    let name = opt_str(&c, "Name")?.ok_or_else(|| Fault::required("Name"))?;
    if name.contains(':') || name.contains('"') {
        return Err(
            Fault::business(format!("Item Name \"{name}\" must not contain ':' or '\"'"))
                .at("Name"),
        );
    }
    let lowered = name.to_lowercase();
    if let Some(other) = co.rows("Item").find(|row| {
        !same_id(row, previous)
            && row
                .get("Name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.to_lowercase() == lowered)
    }) {
        let other_id = other.get("Id").and_then(Value::as_str).unwrap_or_default();
        return Err(
            Fault::duplicate_name(&name, &format!("product or service (Id {other_id})")).at("Name"),
        );
    }
    let item_type = opt_str(&c, "Type")?.ok_or_else(|| Fault::required("Type"))?;
    let Some(item_type) = ITEM_TYPES
        .iter()
        .find(|t| t.eq_ignore_ascii_case(&item_type))
    else {
        return Err(Fault::invalid_enumeration(
            "Type",
            &item_type,
            &ITEM_TYPES.join(", "),
        ));
    };
    if *item_type == "Inventory" {
        for field in [
            "AssetAccountRef",
            "ExpenseAccountRef",
            "QtyOnHand",
            "InvStartDate",
        ] {
            if c.get(field).is_none_or(Value::is_null) {
                return Err(Fault::required(field));
            }
        }
        c.insert("TrackQtyOnHand".into(), Value::Bool(true));
    }
    if matches!(*item_type, "Service" | "NonInventory" | "Inventory")
        && opt_ref(&c, "IncomeAccountRef")?.is_none()
    {
        return Err(Fault::required("IncomeAccountRef"));
    }
    for field in ["IncomeAccountRef", "ExpenseAccountRef", "AssetAccountRef"] {
        fill_ref(co, ctx, &mut c, field, EntityKind::Account, "Name")?;
    }
    for field in ["UnitPrice", "PurchaseCost", "QtyOnHand"] {
        if let Some(d) = opt_decimal(&c, field, field)? {
            c.insert(field.into(), number(d));
        }
    }
    c.entry("UnitPrice").or_insert(number(Decimal::ZERO));
    let active = opt_bool(&c, "Active")?.unwrap_or(true);
    c.insert("Active".into(), Value::Bool(active));
    c.insert("Type".into(), Value::String((*item_type).to_string()));
    c.insert("Name".into(), Value::String(name.clone()));
    c.insert("FullyQualifiedName".into(), Value::String(name));
    c.entry("Taxable").or_insert(Value::Bool(false));
    c.entry("TrackQtyOnHand").or_insert(Value::Bool(false));
    Ok(c)
}

// ----- Account ---------------------------------------------------------------------------------------------------

/// Account types and the classification each belongs to.
const ACCOUNT_TYPES: [(&str, &str); 15] = [
    ("Bank", "Asset"),
    ("Accounts Receivable", "Asset"),
    ("Other Current Asset", "Asset"),
    ("Fixed Asset", "Asset"),
    ("Other Asset", "Asset"),
    ("Accounts Payable", "Liability"),
    ("Credit Card", "Liability"),
    ("Other Current Liability", "Liability"),
    ("Long Term Liability", "Liability"),
    ("Equity", "Equity"),
    ("Income", "Revenue"),
    ("Other Income", "Revenue"),
    ("Expense", "Expense"),
    ("Other Expense", "Expense"),
    ("Cost of Goods Sold", "Expense"),
];

/// Detail types a client may send without an AccountType, and the type they imply.
const ACCOUNT_SUB_TYPES: [(&str, &str); 14] = [
    ("Checking", "Bank"),
    ("Savings", "Bank"),
    ("AccountsReceivable", "Accounts Receivable"),
    ("UndepositedFunds", "Other Current Asset"),
    ("Inventory", "Other Current Asset"),
    ("AccountsPayable", "Accounts Payable"),
    ("CreditCard", "Credit Card"),
    ("ServiceFeeIncome", "Income"),
    ("SalesOfProductIncome", "Income"),
    ("DiscountsRefundsGiven", "Income"),
    ("SuppliesMaterialsCogs", "Cost of Goods Sold"),
    ("OfficeGeneralAdministrativeExpenses", "Expense"),
    ("AdvertisingPromotional", "Expense"),
    ("OpeningBalanceEquity", "Equity"),
];

fn prepare_account(
    co: &Company,
    mut c: Map<String, Value>,
    previous: Option<&Value>,
    ctx: &WriteCtx,
) -> Result<Map<String, Value>, Fault> {
    let name = opt_str(&c, "Name")?.ok_or_else(|| Fault::required("Name"))?;
    if name.contains(':') || name.contains('"') {
        return Err(Fault::business(format!(
            "Account Name \"{name}\" must not contain ':' or '\"'"
        ))
        .at("Name"));
    }
    let sub_type = opt_str(&c, "AccountSubType")?;
    let account_type = match opt_str(&c, "AccountType")? {
        Some(t) => ACCOUNT_TYPES
            .iter()
            .find(|(n, _)| {
                n.eq_ignore_ascii_case(&t) || n.replace(' ', "").eq_ignore_ascii_case(&t)
            })
            .map(|(n, _)| *n)
            .ok_or_else(|| {
                let all: Vec<&str> = ACCOUNT_TYPES.iter().map(|(n, _)| *n).collect();
                Fault::invalid_enumeration("AccountType", &t, &all.join(", "))
            })?,
        None => {
            let sub = sub_type
                .as_deref()
                .ok_or_else(|| Fault::required("AccountType"))?;
            ACCOUNT_SUB_TYPES
                .iter()
                .find(|(s, _)| s.eq_ignore_ascii_case(sub))
                .map(|(_, t)| *t)
                .ok_or_else(|| Fault::required("AccountType").at("AccountType"))?
        }
    };
    let classification = ACCOUNT_TYPES
        .iter()
        .find(|(n, _)| *n == account_type)
        .map(|(_, c)| *c)
        .unwrap_or("Asset");
    let mut fqn = name.clone();
    if let Some(parent) = fill_ref(co, ctx, &mut c, "ParentRef", EntityKind::Account, "Name")? {
        fqn = format!(
            "{}:{name}",
            parent
                .get("FullyQualifiedName")
                .and_then(Value::as_str)
                .unwrap_or_default()
        );
        c.insert("SubAccount".into(), Value::Bool(true));
    } else {
        c.insert("SubAccount".into(), Value::Bool(false));
    }
    if let Some(other) = co.rows("Account").find(|row| {
        !same_id(row, previous)
            && row
                .get("FullyQualifiedName")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(&fqn))
    }) {
        let other_id = other.get("Id").and_then(Value::as_str).unwrap_or_default();
        return Err(Fault::duplicate_name(&name, &format!("account (Id {other_id})")).at("Name"));
    }
    let balance = previous
        .and_then(|p| p.get("CurrentBalance"))
        .cloned()
        .unwrap_or(json!(0));
    let currency = txn::party_currency(co, &c, previous)?;
    c.insert("CurrencyRef".into(), currency);
    c.insert("Name".into(), Value::String(name));
    c.insert("FullyQualifiedName".into(), Value::String(fqn));
    c.insert("AccountType".into(), Value::String(account_type.into()));
    c.insert(
        "Classification".into(),
        Value::String(classification.into()),
    );
    c.insert("CurrentBalance".into(), balance.clone());
    c.insert("CurrentBalanceWithSubAccounts".into(), balance);
    let active = opt_bool(&c, "Active")?.unwrap_or(true);
    c.insert("Active".into(), Value::Bool(active));
    Ok(c)
}

// ----- Term, Class, Department -----------------------------------------------------------------------------------

fn unique_name(
    co: &Company,
    kind: EntityKind,
    key: &str,
    value: &str,
    previous: Option<&Value>,
) -> Result<(), Fault> {
    if let Some(other) = co.rows(kind.name()).find(|row| {
        !same_id(row, previous)
            && row
                .get(key)
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(value))
    }) {
        let other_id = other.get("Id").and_then(Value::as_str).unwrap_or_default();
        return Err(Fault::duplicate_name(
            value,
            &format!("{} (Id {other_id})", kind.name().to_lowercase()),
        )
        .at("Name"));
    }
    Ok(())
}

fn prepare_term(
    co: &Company,
    mut c: Map<String, Value>,
    previous: Option<&Value>,
) -> Result<Map<String, Value>, Fault> {
    let name = opt_str(&c, "Name")?.ok_or_else(|| Fault::required("Name"))?;
    unique_name(co, EntityKind::Term, "Name", &name, previous)?;
    let due_days = opt_decimal(&c, "DueDays", "DueDays")?;
    let day_of_month = opt_decimal(&c, "DayOfMonthDue", "DayOfMonthDue")?;
    let kind = if day_of_month.is_some() {
        "DATE_DRIVEN"
    } else {
        "STANDARD"
    };
    if let Some(d) = due_days {
        if d < Decimal::ZERO || !d.fract().is_zero() {
            return Err(Fault::business(format!(
                "DueDays must be a whole number of days, got {d}"
            ))
            .at("DueDays"));
        }
        c.insert("DueDays".into(), number(d));
    } else if day_of_month.is_none() {
        c.insert("DueDays".into(), json!(0));
    }
    c.insert("Type".into(), Value::String(kind.into()));
    c.insert("Name".into(), Value::String(name));
    let active = opt_bool(&c, "Active")?.unwrap_or(true);
    c.insert("Active".into(), Value::Bool(active));
    Ok(c)
}

fn prepare_grouping(
    co: &Company,
    kind: EntityKind,
    mut c: Map<String, Value>,
    previous: Option<&Value>,
    ctx: &WriteCtx,
) -> Result<Map<String, Value>, Fault> {
    let name = opt_str(&c, "Name")?.ok_or_else(|| Fault::required("Name"))?;
    if name.contains(':') {
        return Err(Fault::business(format!("Name \"{name}\" must not contain ':'")).at("Name"));
    }
    let sub_flag = if kind == EntityKind::Class {
        "SubClass"
    } else {
        "SubDepartment"
    };
    let fqn = match fill_ref(co, ctx, &mut c, "ParentRef", kind, "Name")? {
        Some(parent) => {
            if previous.is_some_and(|p| p.get("Id") == parent.get("Id")) {
                return Err(
                    Fault::business(format!("{} cannot be its own parent", kind.name()))
                        .at("ParentRef"),
                );
            }
            c.insert(sub_flag.into(), Value::Bool(true));
            format!(
                "{}:{name}",
                parent
                    .get("FullyQualifiedName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            )
        }
        None => {
            c.insert(sub_flag.into(), Value::Bool(false));
            name.clone()
        }
    };
    unique_name(co, kind, "FullyQualifiedName", &fqn, previous)?;
    c.insert("Name".into(), Value::String(name));
    c.insert("FullyQualifiedName".into(), Value::String(fqn));
    let active = opt_bool(&c, "Active")?.unwrap_or(true);
    c.insert("Active".into(), Value::Bool(active));
    Ok(c)
}

// ----- CompanyInfo, Preferences ----------------------------------------------------------------------------------

fn prepare_company_info(mut c: Map<String, Value>) -> Result<Map<String, Value>, Fault> {
    let name = opt_str(&c, "CompanyName")?.ok_or_else(|| Fault::required("CompanyName"))?;
    c.insert("CompanyName".into(), Value::String(name));
    Ok(c)
}

fn prepare_preferences(
    mut c: Map<String, Value>,
    previous: Option<&Value>,
) -> Result<Map<String, Value>, Fault> {
    let was_on = previous
        .and_then(|p| p.pointer("/CurrencyPrefs/MultiCurrencyEnabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let old_home = previous
        .and_then(|p| p.pointer("/CurrencyPrefs/HomeCurrency/value"))
        .cloned()
        .unwrap_or(json!("USD"));
    let prefs = match c.remove("CurrencyPrefs") {
        Some(Value::Object(p)) => p,
        None | Some(Value::Null) => Map::new(),
        Some(other) => return Err(wrong_type("CurrencyPrefs", "an object", &other)),
    };
    let mut prefs = prefs;
    let on = opt_bool(&prefs, "MultiCurrencyEnabled")?.unwrap_or(false);
    if was_on && !on {
        return Err(Fault::business(
            "Multicurrency cannot be turned off once it has been turned on for a company",
        )
        .at("CurrencyPrefs.MultiCurrencyEnabled"));
    }
    let home = opt_ref(&prefs, "HomeCurrency")?
        .map(Value::String)
        .unwrap_or(old_home.clone());
    if home != old_home {
        return Err(Fault::business(format!(
            "The home currency cannot be changed (it is {old_home})"
        ))
        .at("CurrencyPrefs.HomeCurrency"));
    }
    prefs.insert("MultiCurrencyEnabled".into(), Value::Bool(on));
    prefs.insert("HomeCurrency".into(), json!({"value": home}));
    c.insert("CurrencyPrefs".into(), Value::Object(prefs));
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> WriteCtx {
        WriteCtx::new(Utc::now())
    }

    fn company() -> Company {
        let mut co = Company::default();
        super::super::seed::seed(&mut co, "1234", Utc::now(), 0);
        co
    }

    #[test]
    fn display_names_are_unique_across_customers_vendors_and_employees() {
        let mut co = company();
        let name = co.get("Customer", "1").unwrap()["DisplayName"]
            .as_str()
            .unwrap()
            .to_string();
        for kind in [EntityKind::Vendor, EntityKind::Employee] {
            let f = write(
                &mut co,
                kind,
                None,
                json!({"DisplayName": name.to_uppercase(), "GivenName": "A"}),
                &mut ctx(),
            )
            .unwrap_err();
            assert_eq!(f.code, "6240", "{kind:?}");
            assert!(f.detail.contains("customer (Id 1)"), "{}", f.detail);
        }
    }

    #[test]
    fn name_lists_are_deactivated_not_deleted_and_references_are_checked() {
        let mut co = company();
        let row = write(
            &mut co,
            EntityKind::Class,
            None,
            json!({"Name":"Temporary"}),
            &mut ctx(),
        )
        .unwrap();
        let id = row["Id"].as_str().unwrap().to_string();
        let refused = write(
            &mut co,
            EntityKind::Class,
            Some("delete"),
            json!({"Id": id, "SyncToken":"0"}),
            &mut ctx(),
        )
        .unwrap_err();
        assert_eq!(refused.code, "6000");
        assert!(refused.detail.contains("inactive"), "{}", refused.detail);
        let gone = write(
            &mut co,
            EntityKind::Class,
            None,
            json!({"Id": id, "SyncToken":"0", "sparse": true, "Active": false}),
            &mut ctx(),
        )
        .unwrap();
        assert_eq!(gone["Active"], false);
        let f = write(
            &mut co,
            EntityKind::Invoice,
            None,
            json!({"CustomerRef":{"value":"77"},"Line":[{"DetailType":"SalesItemLineDetail","Amount":1}]}),
            &mut ctx(),
        )
        .unwrap_err();
        assert_eq!(f.code, "2500");
        let f = write(
            &mut co,
            EntityKind::Account,
            None,
            json!({"Name":"No type"}),
            &mut ctx(),
        )
        .unwrap_err();
        assert_eq!(f.code, "2020");
    }
}
