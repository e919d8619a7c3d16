//! Per-entity rules: what a create, update or delete must carry, what the server fills in, and the side effects.
//!
//! Layout: [`EntityKind`] names the entities the sandbox serves and how they appear in paths and queries;
//! [`write`] dispatches one write (create, full or sparse update, delete) to the shared flow (`create`, `update`,
//! `delete`), which strips read-only fields, runs the entity's `prepare_*` validation/derivation, stamps `Id`,
//! `SyncToken` and `MetaData`, and applies side effects (an invoice moves its customer's `Balance`). Rows are plain
//! JSON objects in the wire shape, so a read returns exactly what was stored. All money goes through
//! [`super::money`] and `rust_decimal`.

use chrono::{DateTime, Days, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use super::fault::Fault;
use super::money::{cents, decimal_of, number};
use super::state::{Company, Tombstone};
use super::time::{company_today, meta_time};

/// The company's home currency.
pub fn home_currency() -> Value {
    json!({"value": "USD", "name": "United States Dollar"})
}

/// An entity served by the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    Customer,
    Item,
    Invoice,
    Account,
    TaxCode,
    CompanyInfo,
    Preferences,
}

impl EntityKind {
    pub const ALL: [EntityKind; 7] = [
        EntityKind::Customer,
        EntityKind::Item,
        EntityKind::Invoice,
        EntityKind::Account,
        EntityKind::TaxCode,
        EntityKind::CompanyInfo,
        EntityKind::Preferences,
    ];

    /// The name used as JSON key, table name and in queries.
    pub fn name(self) -> &'static str {
        match self {
            EntityKind::Customer => "Customer",
            EntityKind::Item => "Item",
            EntityKind::Invoice => "Invoice",
            EntityKind::Account => "Account",
            EntityKind::TaxCode => "TaxCode",
            EntityKind::CompanyInfo => "CompanyInfo",
            EntityKind::Preferences => "Preferences",
        }
    }

    /// The entity named by a path segment (`customer`) or a query's FROM (`Customer`); case does not matter.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name))
    }

    /// Name-list entities are deactivated, never deleted, and queries hide their inactive rows by default.
    pub fn is_name_list(self) -> bool {
        matches!(
            self,
            EntityKind::Customer | EntityKind::Item | EntityKind::Account
        )
    }

    /// Entities this sandbox accepts writes for.
    pub fn writable(self) -> bool {
        matches!(
            self,
            EntityKind::Customer | EntityKind::Item | EntityKind::Invoice
        )
    }

    fn read_only_fields(self) -> &'static [&'static str] {
        match self {
            EntityKind::Customer => &["Balance", "BalanceWithJobs", "FullyQualifiedName"],
            EntityKind::Item => &["FullyQualifiedName"],
            EntityKind::Invoice => &["TotalAmt", "Balance", "HomeTotalAmt", "HomeBalance"],
            _ => &[],
        }
    }
}

const COMMON_READ_ONLY: [&str; 6] = ["Id", "SyncToken", "MetaData", "domain", "sparse", "status"];

/// Per-request switches that change validation.
#[derive(Debug, Clone)]
pub struct WriteCtx {
    pub now: DateTime<Utc>,
    /// `include=allowduplicatedocnum`.
    pub allow_duplicate_doc_number: bool,
}

/// Runs one write. `operation` is the `operation` query parameter. Returns the object for the response envelope.
pub fn write(
    co: &mut Company,
    kind: EntityKind,
    operation: Option<&str>,
    body: Value,
    ctx: &WriteCtx,
) -> Result<Value, Fault> {
    let Value::Object(body) = body else {
        return Err(Fault::invalid_property(format!(
            "The request body must be a JSON object holding the {} fields",
            kind.name()
        )));
    };
    if !kind.writable() {
        return Err(Fault::unsupported(format!(
            "Operation {} on {} is not supported by this service",
            operation.unwrap_or("create/update"),
            kind.name()
        )));
    }
    match operation.map(str::to_ascii_lowercase).as_deref() {
        Some("delete") => {
            if kind.is_name_list() {
                return Err(Fault::business(format!(
                    "{} objects cannot be deleted. Make it inactive instead with a sparse update setting \"Active\": false.",
                    kind.name()
                )));
            }
            delete(co, kind, &body, ctx)
        }
        None | Some("update") | Some("create") => {
            if has_id(&body) {
                update(co, kind, body, ctx)
            } else if operation.is_some_and(|o| o.eq_ignore_ascii_case("update")) {
                Err(Fault::required("Id"))
            } else {
                create(co, kind, body, ctx)
            }
        }
        Some(other) => Err(Fault::unsupported(format!(
            "Operation {other} is not supported for {} (use create, update or delete)",
            kind.name()
        ))),
    }
}

fn has_id(body: &Map<String, Value>) -> bool {
    matches!(body.get("Id"), Some(Value::String(s)) if !s.trim().is_empty())
        || matches!(body.get("Id"), Some(Value::Number(_)))
}

fn id_of(body: &Map<String, Value>) -> Option<String> {
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

fn stamp(
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

fn create(
    co: &mut Company,
    kind: EntityKind,
    body: Map<String, Value>,
    ctx: &WriteCtx,
) -> Result<Value, Fault> {
    let candidate = strip(kind, body);
    let prepared = prepare(co, kind, candidate, None, ctx)?;
    let id = co.allocate_id(kind.name());
    let row = stamp(prepared, &id.to_string(), 0, meta_time(ctx.now), ctx.now);
    apply_effects(co, kind, None, Some(&row));
    co.put(kind.name(), id, row.clone());
    Ok(row)
}

fn check_sync_token(
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

fn update(
    co: &mut Company,
    kind: EntityKind,
    body: Map<String, Value>,
    ctx: &WriteCtx,
) -> Result<Value, Fault> {
    let id = id_of(&body).ok_or_else(|| Fault::required("Id"))?;
    let existing = co
        .get(kind.name(), &id)
        .cloned()
        .ok_or_else(|| Fault::not_found(kind.name(), &id))?;
    let current = check_sync_token(kind, &body, &id, &existing)?;
    let sparse = body.get("sparse").and_then(Value::as_bool).unwrap_or(false);
    let candidate = if sparse {
        let mut merged = strip(kind, existing.as_object().cloned().unwrap_or_default());
        merged.extend(strip(kind, body));
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
    apply_effects(co, kind, Some(&existing), Some(&row));
    let key: u64 = id.parse().unwrap_or_default();
    co.put(kind.name(), key, row.clone());
    Ok(row)
}

fn delete(
    co: &mut Company,
    kind: EntityKind,
    body: &Map<String, Value>,
    ctx: &WriteCtx,
) -> Result<Value, Fault> {
    let id = id_of(body).ok_or_else(|| Fault::required("Id"))?;
    let existing = co
        .get(kind.name(), &id)
        .cloned()
        .ok_or_else(|| Fault::not_found(kind.name(), &id))?;
    check_sync_token(kind, body, &id, &existing)?;
    co.remove(kind.name(), &id);
    apply_effects(co, kind, Some(&existing), None);
    co.deleted.push(Tombstone {
        entity: kind.name().to_string(),
        id: id.clone(),
        deleted_at: meta_time(ctx.now),
    });
    Ok(json!({"domain": "QBO", "status": "Deleted", "Id": id}))
}

/// Validates a candidate row and fills in everything the server derives. `previous` is the stored row on update.
fn prepare(
    co: &Company,
    kind: EntityKind,
    candidate: Map<String, Value>,
    previous: Option<&Value>,
    ctx: &WriteCtx,
) -> Result<Map<String, Value>, Fault> {
    match kind {
        EntityKind::Customer => prepare_customer(co, candidate, previous),
        EntityKind::Item => prepare_item(co, candidate, previous),
        EntityKind::Invoice => prepare_invoice(co, candidate, previous, ctx),
        _ => Err(Fault::unsupported(format!(
            "{} cannot be written",
            kind.name()
        ))),
    }
}

// ----- field helpers ---------------------------------------------------------------------------------------------

fn wrong_type(field: &str, expected: &str, got: &Value) -> Fault {
    Fault::invalid_property(format!(
        "Property Name:{field} must be {expected}, got {got}"
    ))
    .at(field)
}

fn opt_str(map: &Map<String, Value>, field: &str) -> Result<Option<String>, Fault> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(other) => Err(wrong_type(field, "a string", other)),
    }
}

fn opt_bool(map: &Map<String, Value>, field: &str) -> Result<Option<bool>, Fault> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(other) => Err(wrong_type(field, "true or false", other)),
    }
}

fn opt_decimal(
    map: &Map<String, Value>,
    field: &str,
    element: &str,
) -> Result<Option<Decimal>, Fault> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => decimal_of(v)
            .map(Some)
            .ok_or_else(|| wrong_type(element, "a number", v)),
    }
}

/// The `value` of a reference object (`{"value":"1","name":"…"}`); a bare string or number is accepted too.
fn opt_ref(map: &Map<String, Value>, field: &str) -> Result<Option<String>, Fault> {
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
        Some(other) => Err(wrong_type(
            field,
            "a reference object {\"value\": \"…\"}",
            other,
        )),
    }
}

fn opt_date(map: &Map<String, Value>, field: &str) -> Result<Option<NaiveDate>, Fault> {
    match opt_str(map, field)? {
        None => Ok(None),
        Some(s) => NaiveDate::parse_from_str(&s, "%Y-%m-%d")
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
fn referenced<'a>(
    co: &'a Company,
    field: &str,
    entity: EntityKind,
    id: &str,
) -> Result<&'a Value, Fault> {
    let row = co
        .get(entity.name(), id)
        .ok_or_else(|| Fault::invalid_reference(field, entity.name(), id))?;
    if row.get("Active") == Some(&Value::Bool(false)) {
        return Err(Fault::not_found(entity.name(), id).at(field));
    }
    Ok(row)
}

fn name_of(row: &Value, key: &str) -> Value {
    row.get(key).cloned().unwrap_or(Value::Null)
}

fn same_id(row: &Value, previous: Option<&Value>) -> bool {
    previous.is_some_and(|p| p.get("Id") == row.get("Id"))
}

// ----- Customer --------------------------------------------------------------------------------------------------

fn prepare_customer(
    co: &Company,
    mut c: Map<String, Value>,
    previous: Option<&Value>,
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
                opt_str(&c, "CompanyName")?.ok_or_else(|| Fault::required("DisplayName"))?
            } else {
                parts.join(" ")
            }
        }
    };
    if display.chars().count() > 500 {
        return Err(Fault::business("DisplayName is longer than 500 characters").at("DisplayName"));
    }
    let lowered = display.to_lowercase();
    if let Some(other) = co.rows("Customer").find(|row| {
        !same_id(row, previous)
            && row
                .get("DisplayName")
                .and_then(Value::as_str)
                .is_some_and(|d| d.to_lowercase() == lowered)
    }) {
        let other_id = other.get("Id").and_then(Value::as_str).unwrap_or_default();
        return Err(
            Fault::duplicate_name(&display, &format!("customer (Id {other_id})")).at("DisplayName"),
        );
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
    for flag in ["Job", "BillWithParent", "Taxable"] {
        opt_bool(&c, flag)?;
    }
    c.insert("DisplayName".into(), Value::String(display.clone()));
    c.insert("FullyQualifiedName".into(), Value::String(display.clone()));
    if opt_str(&c, "PrintOnCheckName")?.is_none() {
        c.insert("PrintOnCheckName".into(), Value::String(display));
    }
    c.insert("Active".into(), Value::Bool(active));
    c.entry("Job").or_insert(Value::Bool(false));
    c.entry("BillWithParent").or_insert(Value::Bool(false));
    c.entry("PreferredDeliveryMethod")
        .or_insert(Value::String("Print".into()));
    if c.get("CurrencyRef").is_none_or(Value::is_null) {
        c.insert("CurrencyRef".into(), home_currency());
    }
    let balance = previous
        .and_then(|p| p.get("Balance"))
        .and_then(decimal_of)
        .unwrap_or_default();
    c.insert("Balance".into(), number(balance));
    c.insert("BalanceWithJobs".into(), number(balance));
    Ok(c)
}

// ----- Item ------------------------------------------------------------------------------------------------------

const ITEM_TYPES: [&str; 5] = ["Service", "NonInventory", "Inventory", "Category", "Group"];

fn prepare_item(
    co: &Company,
    mut c: Map<String, Value>,
    previous: Option<&Value>,
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
        if let Some(id) = opt_ref(&c, field)? {
            let account = referenced(co, field, EntityKind::Account, &id)?;
            c.insert(
                field.into(),
                json!({"value": id, "name": name_of(account, "Name")}),
            );
        }
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

// ----- Invoice ---------------------------------------------------------------------------------------------------

const LINE_TYPES: [&str; 4] = [
    "SalesItemLineDetail",
    "DescriptionOnly",
    "DiscountLineDetail",
    "SubTotalLineDetail",
];

fn line_fault(n: usize, detail: String) -> Fault {
    Fault::business(format!("Line {n}: {detail}")).at(format!("Line[{}]", n - 1))
}

fn prepare_invoice(
    co: &Company,
    mut c: Map<String, Value>,
    previous: Option<&Value>,
    ctx: &WriteCtx,
) -> Result<Map<String, Value>, Fault> {
    let customer_id = opt_ref(&c, "CustomerRef")?.ok_or_else(|| Fault::required("CustomerRef"))?;
    let customer = referenced(co, "CustomerRef", EntityKind::Customer, &customer_id)?;
    c.insert(
        "CustomerRef".into(),
        json!({"value": customer_id, "name": name_of(customer, "DisplayName")}),
    );

    if let Some(currency) = opt_ref(&c, "CurrencyRef")?
        && currency != "USD"
    {
        return Err(Fault::business(format!(
            "CurrencyRef {currency} is not allowed: multicurrency is off for this company, whose home currency is USD"
        ))
        .at("CurrencyRef"));
    }
    c.insert("CurrencyRef".into(), home_currency());

    let lines = match c.remove("Line") {
        Some(Value::Array(lines)) if !lines.is_empty() => lines,
        Some(Value::Array(_)) | None | Some(Value::Null) => return Err(Fault::required("Line")),
        Some(other) => return Err(wrong_type("Line", "an array of lines", &other)),
    };

    let mut item_lines: Vec<Map<String, Value>> = Vec::new();
    let mut discount_lines: Vec<(usize, Map<String, Value>)> = Vec::new();
    let mut subtotal = Decimal::ZERO;
    for (index, line) in lines.into_iter().enumerate() {
        let n = index + 1;
        let Value::Object(mut line) = line else {
            return Err(wrong_type(&format!("Line[{index}]"), "an object", &line));
        };
        let detail_type =
            opt_str(&line, "DetailType")?.ok_or_else(|| Fault::required("Line.DetailType"))?;
        let Some(detail_type) = LINE_TYPES
            .iter()
            .find(|t| t.eq_ignore_ascii_case(&detail_type))
        else {
            return Err(Fault::invalid_enumeration(
                "Line.DetailType",
                &detail_type,
                &LINE_TYPES.join(", "),
            ));
        };
        match *detail_type {
            "SubTotalLineDetail" => continue,
            "DiscountLineDetail" => {
                discount_lines.push((n, line));
                continue;
            }
            "DescriptionOnly" => {
                line.insert("DetailType".into(), Value::String("DescriptionOnly".into()));
                line.entry("DescriptionLineDetail").or_insert(json!({}));
                item_lines.push(line);
                continue;
            }
            _ => {}
        }
        let mut detail = match line.remove("SalesItemLineDetail") {
            Some(Value::Object(d)) => d,
            None | Some(Value::Null) => Map::new(),
            Some(other) => {
                return Err(wrong_type(
                    &format!("Line[{index}].SalesItemLineDetail"),
                    "an object",
                    &other,
                ));
            }
        };
        let item = match opt_ref(&detail, "ItemRef")? {
            Some(id) => referenced(co, "ItemRef", EntityKind::Item, &id)?,
            // QBO puts lines without an item on the default "Services" item.
            None => co
                .rows("Item")
                .find(|i| i.get("Name").and_then(Value::as_str) == Some("Services"))
                .ok_or_else(|| Fault::required("Line.SalesItemLineDetail.ItemRef"))?,
        };
        detail.insert(
            "ItemRef".into(),
            json!({"value": name_of(item, "Id"), "name": name_of(item, "Name")}),
        );
        let qty = opt_decimal(&detail, "Qty", "SalesItemLineDetail.Qty")?;
        let price = opt_decimal(&detail, "UnitPrice", "SalesItemLineDetail.UnitPrice")?;
        let amount = opt_decimal(&line, "Amount", "Line.Amount")?;
        let (qty, price, amount) = match (amount, qty, price) {
            (Some(a), Some(q), Some(p)) => {
                let expected = cents(q * p);
                if a != expected {
                    return Err(line_fault(
                        n,
                        format!(
                            "Amount {a} is not equal to UnitPrice {p} * Qty {q} (= {expected} rounded to cents). \
                             Send a matching Amount or leave it out and the server computes it."
                        ),
                    ));
                }
                (Some(q), Some(p), a)
            }
            (Some(a), Some(q), None) => {
                let p = if q.is_zero() {
                    None
                } else {
                    Some((a / q).round_dp(7))
                };
                (Some(q), p, a)
            }
            (Some(a), None, Some(p)) => {
                let q = if p.is_zero() {
                    None
                } else {
                    Some((a / p).round_dp(7))
                };
                (q, Some(p), a)
            }
            (Some(a), None, None) => (None, None, a),
            (None, q, p) => {
                let q = q.unwrap_or(Decimal::ONE);
                let p = p
                    .or_else(|| item.get("UnitPrice").and_then(decimal_of))
                    .unwrap_or_default();
                (Some(q), Some(p), cents(q * p))
            }
        };
        if amount.normalize().scale() > 2 {
            return Err(line_fault(
                n,
                format!("Amount {amount} has more than two decimal places"),
            ));
        }
        if let Some(q) = qty {
            detail.insert("Qty".into(), number(q));
        }
        if let Some(p) = price {
            detail.insert("UnitPrice".into(), number(p));
        }
        match opt_ref(&detail, "TaxCodeRef")? {
            Some(code) => {
                referenced(co, "TaxCodeRef", EntityKind::TaxCode, &code)?;
                detail.insert("TaxCodeRef".into(), json!({"value": code}));
            }
            None => {
                let taxable = item
                    .get("Taxable")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                detail.insert(
                    "TaxCodeRef".into(),
                    json!({"value": if taxable { "TAX" } else { "NON" }}),
                );
            }
        }
        if let Some(date) = opt_date(&detail, "ServiceDate")? {
            detail.insert("ServiceDate".into(), Value::String(date.to_string()));
        }
        subtotal += amount;
        line.insert("Amount".into(), number(amount));
        line.insert(
            "DetailType".into(),
            Value::String("SalesItemLineDetail".into()),
        );
        line.insert("SalesItemLineDetail".into(), Value::Object(detail));
        item_lines.push(line);
    }

    let mut discount = Decimal::ZERO;
    let discount_account = co
        .rows("Account")
        .find(|a| a.get("AccountSubType").and_then(Value::as_str) == Some("DiscountsRefundsGiven"));
    let mut prepared_discounts = Vec::new();
    for (n, mut line) in discount_lines {
        let mut detail = match line.remove("DiscountLineDetail") {
            Some(Value::Object(d)) => d,
            None | Some(Value::Null) => Map::new(),
            Some(other) => {
                return Err(wrong_type(
                    &format!("Line[{}].DiscountLineDetail", n - 1),
                    "an object",
                    &other,
                ));
            }
        };
        let percent_based = opt_bool(&detail, "PercentBased")?.unwrap_or(false);
        let amount = if percent_based {
            let pct = opt_decimal(
                &detail,
                "DiscountPercent",
                "DiscountLineDetail.DiscountPercent",
            )?
            .ok_or_else(|| Fault::required("Line.DiscountLineDetail.DiscountPercent"))?;
            if pct < Decimal::ZERO || pct > Decimal::ONE_HUNDRED {
                return Err(line_fault(
                    n,
                    format!("DiscountPercent {pct} must be between 0 and 100"),
                ));
            }
            detail.insert("DiscountPercent".into(), number(pct));
            cents(subtotal * pct / Decimal::ONE_HUNDRED)
        } else {
            let a = opt_decimal(&line, "Amount", "Line.Amount")?
                .ok_or_else(|| Fault::required("Line.Amount"))?;
            if a < Decimal::ZERO || a.normalize().scale() > 2 {
                return Err(line_fault(
                    n,
                    format!(
                        "discount Amount {a} must be zero or positive with at most two decimals"
                    ),
                ));
            }
            a
        };
        detail.insert("PercentBased".into(), Value::Bool(percent_based));
        match opt_ref(&detail, "DiscountAccountRef")? {
            Some(id) => {
                let account = referenced(co, "DiscountAccountRef", EntityKind::Account, &id)?;
                detail.insert(
                    "DiscountAccountRef".into(),
                    json!({"value": id, "name": name_of(account, "Name")}),
                );
            }
            None => {
                if let Some(account) = discount_account {
                    detail.insert(
                        "DiscountAccountRef".into(),
                        json!({"value": name_of(account, "Id"), "name": name_of(account, "Name")}),
                    );
                }
            }
        }
        discount += amount;
        line.insert("Amount".into(), number(amount));
        line.insert(
            "DetailType".into(),
            Value::String("DiscountLineDetail".into()),
        );
        line.insert("DiscountLineDetail".into(), Value::Object(detail));
        prepared_discounts.push(line);
    }
    if discount > subtotal {
        return Err(Fault::business(format!(
            "The discount total {discount} is larger than the subtotal {subtotal}"
        ))
        .at("Line"));
    }

    // Line ids: keep the ones a client echoes back (unique, numeric), number the rest after them.
    let mut all_lines: Vec<Map<String, Value>> = item_lines;
    let discount_start = all_lines.len();
    all_lines.extend(prepared_discounts);
    let mut used = std::collections::BTreeSet::new();
    for line in &mut all_lines {
        let keep = match line.get("Id") {
            Some(Value::String(s)) => s.parse::<u64>().ok(),
            Some(Value::Number(n)) => n.as_u64(),
            _ => None,
        }
        .filter(|id| *id > 0 && used.insert(*id));
        if keep.is_none() {
            line.remove("Id");
        }
    }
    let mut next = used.iter().max().copied().unwrap_or(0) + 1;
    let mut out = Vec::new();
    for (i, mut line) in all_lines.into_iter().enumerate() {
        if i == discount_start {
            out.push(json!({"Amount": number(subtotal), "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}));
        }
        if !line.contains_key("Id") {
            line.insert("Id".into(), Value::String(next.to_string()));
            next += 1;
        } else if let Some(Value::Number(n)) = line.get("Id").cloned() {
            line.insert("Id".into(), Value::String(n.to_string()));
        }
        line.insert("LineNum".into(), Value::from(i + 1));
        out.push(Value::Object(line));
    }
    if discount_start == out.len() {
        out.push(json!({"Amount": number(subtotal), "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}));
    }
    c.insert("Line".into(), Value::Array(out));

    // Document number: automatic when absent, unique unless the caller allows duplicates.
    let previous_doc = previous
        .and_then(|p| p.get("DocNumber"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let doc = match opt_str(&c, "DocNumber")? {
        Some(doc) => {
            if doc.chars().count() > 21 {
                return Err(Fault::business(format!(
                    "DocNumber \"{doc}\" is longer than 21 characters"
                ))
                .at("DocNumber"));
            }
            if !ctx.allow_duplicate_doc_number
                && previous_doc.as_deref() != Some(doc.as_str())
                && let Some(other) = co.rows("Invoice").find(|row| {
                    !same_id(row, previous)
                        && row.get("DocNumber").and_then(Value::as_str) == Some(doc.as_str())
                })
            {
                let other_id = other.get("Id").and_then(Value::as_str).unwrap_or_default();
                return Err(Fault::duplicate_doc_number(&doc, "Invoice", other_id).at("DocNumber"));
            }
            doc
        }
        None => {
            let highest = co
                .rows("Invoice")
                .filter_map(|r| {
                    r.get("DocNumber")
                        .and_then(Value::as_str)
                        .and_then(|d| d.parse::<u64>().ok())
                })
                .max()
                .unwrap_or(1000);
            (highest + 1).to_string()
        }
    };
    c.insert("DocNumber".into(), Value::String(doc));

    let txn_date = opt_date(&c, "TxnDate")?.unwrap_or_else(|| company_today(ctx.now));
    let due_date = match opt_date(&c, "DueDate")? {
        Some(d) => d,
        None => txn_date.checked_add_days(Days::new(30)).unwrap_or(txn_date),
    };
    c.insert("TxnDate".into(), Value::String(txn_date.to_string()));
    c.insert("DueDate".into(), Value::String(due_date.to_string()));

    let total = subtotal - discount;
    let paid = previous
        .map(|p| {
            let t = p.get("TotalAmt").and_then(decimal_of).unwrap_or_default();
            let b = p.get("Balance").and_then(decimal_of).unwrap_or_default();
            t - b
        })
        .unwrap_or_default();
    if total < paid {
        return Err(Fault::business(format!(
            "The new total {total} is less than the {paid} already paid on this invoice"
        )));
    }
    c.insert("TxnTaxDetail".into(), json!({"TotalTax": 0}));
    c.insert("TotalAmt".into(), number(total));
    c.insert("Balance".into(), number(total - paid));
    c.entry("Deposit").or_insert(json!(0));
    c.entry("LinkedTxn").or_insert(json!([]));
    c.entry("CustomField").or_insert(json!([]));
    c.entry("ApplyTaxAfterDiscount")
        .or_insert(Value::Bool(false));
    c.entry("PrintStatus")
        .or_insert(Value::String("NotSet".into()));
    c.entry("EmailStatus")
        .or_insert(Value::String("NotSet".into()));
    Ok(c)
}

/// Keeps derived totals elsewhere in step with a write: an invoice's open balance is part of its customer's.
fn apply_effects(
    co: &mut Company,
    kind: EntityKind,
    before: Option<&Value>,
    after: Option<&Value>,
) {
    if kind != EntityKind::Invoice {
        return;
    }
    let part = |row: Option<&Value>| {
        row.and_then(|r| {
            let customer = r.pointer("/CustomerRef/value")?.as_str()?.to_string();
            Some((
                customer,
                r.get("Balance").and_then(decimal_of).unwrap_or_default(),
            ))
        })
    };
    if let Some((customer, balance)) = part(before) {
        adjust_customer_balance(co, &customer, -balance);
    }
    if let Some((customer, balance)) = part(after) {
        adjust_customer_balance(co, &customer, balance);
    }
}

fn adjust_customer_balance(co: &mut Company, customer: &str, delta: Decimal) {
    if let Some(Value::Object(row)) = co.get_mut("Customer", customer) {
        let balance = row.get("Balance").and_then(decimal_of).unwrap_or_default() + delta;
        row.insert("Balance".into(), number(balance));
        row.insert("BalanceWithJobs".into(), number(balance));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> WriteCtx {
        WriteCtx {
            now: Utc::now(),
            allow_duplicate_doc_number: false,
        }
    }

    fn company() -> Company {
        let mut co = Company::default();
        co.put(
            "Account",
            1,
            json!({"Id":"1","Name":"Services","Active":true}),
        );
        co.put("Account", 2, json!({"Id":"2","Name":"Discounts given","AccountSubType":"DiscountsRefundsGiven","Active":true}));
        co.put("TaxCode", 1, json!({"Id":"TAX","Name":"TAX"}));
        co.put("TaxCode", 2, json!({"Id":"NON","Name":"NON"}));
        write(
            &mut co,
            EntityKind::Customer,
            None,
            json!({"DisplayName":"Amy's"}),
            &ctx(),
        )
        .unwrap();
        write(
            &mut co,
            EntityKind::Item,
            None,
            json!({"Name":"Design","Type":"Service","UnitPrice":33.333,"IncomeAccountRef":{"value":"1"}}),
            &ctx(),
        )
        .unwrap();
        co
    }

    #[test]
    fn invoice_math_with_rounding_and_discounts() {
        let mut co = company();
        let inv = write(
            &mut co,
            EntityKind::Invoice,
            None,
            json!({"CustomerRef":{"value":"1"},"Line":[
                {"DetailType":"SalesItemLineDetail","SalesItemLineDetail":{"ItemRef":{"value":"1"},"Qty":3}},
                {"DetailType":"SalesItemLineDetail","Amount":10.01,"SalesItemLineDetail":{"ItemRef":{"value":"1"},"Qty":1,"UnitPrice":10.005}},
                {"DetailType":"DiscountLineDetail","DiscountLineDetail":{"PercentBased":true,"DiscountPercent":10}},
                {"DetailType":"DiscountLineDetail","Amount":1.5,"DiscountLineDetail":{"PercentBased":false}}
            ]}),
            &ctx(),
        )
        .unwrap();
        // 3 × 33.333 = 99.999 → 100.00; + 10.01 = 110.01; 10 % = 11.001 → 11.00; − 1.50 → 97.51
        assert_eq!(inv["Line"][0]["Amount"], json!(100.0));
        assert_eq!(inv["Line"][2]["DetailType"], "SubTotalLineDetail");
        assert_eq!(inv["Line"][2]["Amount"], json!(110.01));
        assert_eq!(inv["Line"][3]["Amount"], json!(11.0));
        assert_eq!(inv["TotalAmt"], json!(97.51));
        assert_eq!(inv["Balance"], json!(97.51));
        assert_eq!(inv["DocNumber"], "1001");
        assert_eq!(co.get("Customer", "1").unwrap()["Balance"], json!(97.51));
    }

    #[test]
    fn mismatched_amount_is_refused() {
        let mut co = company();
        let f = write(
            &mut co,
            EntityKind::Invoice,
            None,
            json!({"CustomerRef":{"value":"1"},"Line":[{"DetailType":"SalesItemLineDetail","Amount":10,"SalesItemLineDetail":{"ItemRef":{"value":"1"},"Qty":2,"UnitPrice":4}}]}),
            &ctx(),
        )
        .unwrap_err();
        assert_eq!(f.code, "6000");
        assert!(f.detail.contains("Line 1"), "{}", f.detail);
    }

    #[test]
    fn name_lists_refuse_delete_and_check_references() {
        let mut co = company();
        let f = write(
            &mut co,
            EntityKind::Customer,
            Some("delete"),
            json!({"Id":"1","SyncToken":"0"}),
            &ctx(),
        )
        .unwrap_err();
        assert_eq!(f.code, "6000");
        let f = write(
            &mut co,
            EntityKind::Invoice,
            None,
            json!({"CustomerRef":{"value":"77"},"Line":[{"DetailType":"SalesItemLineDetail","Amount":1}]}),
            &ctx(),
        )
        .unwrap_err();
        assert_eq!(f.code, "2500");
    }
}
