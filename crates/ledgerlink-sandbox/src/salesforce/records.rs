//! Record writes with Salesforce's rules, and records rendered for the wire.
//!
//! Layout: [`create`], [`update`], [`delete`] and [`upsert`] turn request bodies into stored records: body values are
//! checked against the schema ([`convert`]), system fields stamped, derived fields recomputed ([`apply_rules`]:
//! stage → IsClosed/IsWon, line item prices, price book entry rules) and dependants refreshed afterwards
//! (an opportunity's Amount after its lines change). [`render`] builds the JSON a read or a query returns.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use ledgerlink_model::SalesforceId;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::error::SfError;
use super::objects::{FieldDef, FieldType, ObjectDef, STAGES};
use super::state::{Org, Record};
use super::value::{
    FieldValue, JsonIn, format_datetime, parse_date, parse_datetime, parse_decimal,
};

/// Who writes and when.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub now: DateTime<Utc>,
    pub user_id: String,
}

/// A rendered record or sub-record, serialised as a JSON object in field order.
#[derive(Debug, Clone, PartialEq)]
pub struct OutRecord(pub Vec<(String, Out)>);

#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Value(FieldValue),
    /// A parent reached through a relationship (`Account` in `SELECT Account.Name …`); `None` when the lookup is empty.
    Parent(Option<OutRecord>),
    Attributes {
        object: String,
        url: String,
    },
    /// A child subquery's rows (`None`: the parent has none, rendered as null like Salesforce does).
    Children(Option<Vec<OutRecord>>),
}

impl Serialize for OutRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl Serialize for Out {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Out::Value(v) => v.serialize(serializer),
            Out::Parent(p) => p.serialize(serializer),
            Out::Attributes { object, url } => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("type", object)?;
                map.serialize_entry("url", url)?;
                map.end()
            }
            Out::Children(None) => serializer.serialize_none(),
            Out::Children(Some(rows)) => {
                let mut map = serializer.serialize_map(Some(3))?;
                map.serialize_entry("totalSize", &rows.len())?;
                map.serialize_entry("done", &true)?;
                map.serialize_entry("records", rows)?;
                map.end()
            }
        }
    }
}

pub fn record_url(version: &str, object: &str, id: &str) -> String {
    format!("/services/data/{version}/sobjects/{object}/{id}")
}

pub fn attributes(version: &str, object: &str, id: &str) -> (String, Out) {
    (
        "attributes".to_string(),
        Out::Attributes {
            object: object.to_string(),
            url: record_url(version, object, id),
        },
    )
}

/// A record with `attributes` and the chosen fields (all fields, in schema order, when `fields` is `None`).
pub fn render(
    def: &ObjectDef,
    rec: &Record,
    fields: Option<&[&FieldDef]>,
    version: &str,
) -> OutRecord {
    let id = rec
        .get("Id")
        .and_then(FieldValue::as_str)
        .unwrap_or_default();
    let mut out = vec![attributes(version, def.name, id)];
    let chosen: Vec<&FieldDef> = match fields {
        Some(f) => f.to_vec(),
        None => def.fields.iter().collect(),
    };
    for f in chosen {
        out.push((
            f.name.clone(),
            Out::Value(rec.get(&f.name).cloned().unwrap_or_default()),
        ));
    }
    OutRecord(out)
}

fn round_money(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

fn integrity(field: &str, detail: &str) -> SfError {
    SfError::with_fields(
        "FIELD_INTEGRITY_EXCEPTION",
        format!("field integrity exception: {field} ({detail})"),
        vec![field.to_string()],
    )
}

fn type_error(field: &FieldDef, value: &JsonIn, shown: &str) -> SfError {
    SfError::with_fields(
        "JSON_PARSER_ERROR",
        format!(
            "Cannot deserialize instance of {} from {} value {shown} for field {}",
            field.ty.name(),
            value.token_name(),
            field.name
        ),
        vec![field.name.clone()],
    )
}

/// Checks a body against the object's schema and converts every value to its stored form.
pub fn convert(
    org: &Org,
    def: &ObjectDef,
    input: Vec<(String, JsonIn)>,
    creating: bool,
) -> Result<Vec<(String, FieldValue)>, SfError> {
    let mut resolved = Vec::new();
    let mut not_writable = Vec::new();
    for (key, value) in input {
        if key == "attributes" {
            continue;
        }
        let field = def
            .field(&key)
            .ok_or_else(|| SfError::no_such_column(&key, def.name))?;
        let writable = if creating {
            field.createable
        } else {
            field.updateable
        };
        if !writable {
            not_writable.push(field.name.clone());
            continue;
        }
        resolved.push((field, value));
    }
    if !not_writable.is_empty() {
        return Err(SfError::with_fields(
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            format!(
                "Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                not_writable.join(", ")
            ),
            not_writable,
        ));
    }
    resolved
        .into_iter()
        .map(|(field, value)| Ok((field.name.clone(), convert_value(org, field, value)?)))
        .collect()
}

fn convert_value(org: &Org, field: &FieldDef, value: JsonIn) -> Result<FieldValue, SfError> {
    let shown = match &value {
        JsonIn::Str(s) => s.clone(),
        JsonIn::Num(d) => d.to_string(),
        JsonIn::Bool(b) => b.to_string(),
        JsonIn::Null => "null".into(),
        JsonIn::Other(v) => v.to_string(),
    };
    if value == JsonIn::Null {
        return Ok(FieldValue::Null);
    }
    let err = || type_error(field, &value, &shown);
    match &field.ty {
        FieldType::Text
        | FieldType::TextArea
        | FieldType::Phone
        | FieldType::Url
        | FieldType::Email => {
            let JsonIn::Str(s) = &value else {
                return Err(err());
            };
            let max = if field.ty == FieldType::TextArea {
                32_768
            } else {
                255
            };
            if s.chars().count() > max {
                return Err(SfError::with_fields(
                    "STRING_TOO_LONG",
                    format!(
                        "{}: data value too large: {}… (max length={max})",
                        field.name,
                        s.chars().take(20).collect::<String>()
                    ),
                    vec![field.name.clone()],
                ));
            }
            if field.ty == FieldType::Email && !s.is_empty() && !is_plausible_email(s) {
                return Err(SfError::with_fields(
                    "INVALID_EMAIL_ADDRESS",
                    format!("{}: invalid email address: {s}", field.name),
                    vec![field.name.clone()],
                ));
            }
            Ok(if s.is_empty() {
                FieldValue::Null
            } else {
                FieldValue::text(s.clone())
            })
        }
        FieldType::Picklist(allowed) => {
            let JsonIn::Str(s) = &value else {
                return Err(err());
            };
            if allowed.is_empty() {
                return Ok(FieldValue::text(s.clone()));
            }
            match allowed.iter().find(|a| a.eq_ignore_ascii_case(s)) {
                Some(a) => Ok(FieldValue::text(a.clone())),
                None => Err(SfError::with_fields(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    format!(
                        "{}: bad value for restricted picklist field: {s}",
                        field.name
                    ),
                    vec![field.name.clone()],
                )),
            }
        }
        FieldType::Boolean => match &value {
            JsonIn::Bool(b) => Ok(FieldValue::Bool(*b)),
            JsonIn::Str(s) if s.eq_ignore_ascii_case("true") => Ok(FieldValue::Bool(true)),
            JsonIn::Str(s) if s.eq_ignore_ascii_case("false") => Ok(FieldValue::Bool(false)),
            _ => Err(err()),
        },
        FieldType::Currency | FieldType::Double | FieldType::Percent | FieldType::Int => {
            let d = match &value {
                JsonIn::Num(d) => *d,
                JsonIn::Str(s) => parse_decimal(s.trim()).map_err(|_| err())?,
                _ => return Err(err()),
            };
            if field.ty == FieldType::Int && !d.fract().is_zero() {
                return Err(err());
            }
            Ok(FieldValue::Num(d))
        }
        FieldType::Date => {
            let JsonIn::Str(s) = &value else {
                return Err(err());
            };
            // A datetime is accepted for a date field and truncated, as the API does.
            let date = parse_date(s)
                .or_else(|| parse_datetime(s).map(|t| t.date_naive()))
                .ok_or_else(err)?;
            Ok(FieldValue::text(date.format("%Y-%m-%d").to_string()))
        }
        FieldType::DateTime => {
            let JsonIn::Str(s) = &value else {
                return Err(err());
            };
            let t = parse_datetime(s)
                .or_else(|| {
                    parse_date(s)
                        .and_then(|d| d.and_hms_opt(0, 0, 0))
                        .map(|t| t.and_utc())
                })
                .ok_or_else(err)?;
            Ok(FieldValue::text(format_datetime(t)))
        }
        FieldType::Id | FieldType::Reference(_) => {
            let JsonIn::Str(s) = &value else {
                return Err(err());
            };
            if s.is_empty() {
                return Ok(FieldValue::Null);
            }
            let id = SalesforceId::parse(s).map_err(|_| {
                SfError::with_fields(
                    "MALFORMED_ID",
                    format!("{}: id value of incorrect type: {s}", field.name),
                    vec![field.name.clone()],
                )
            })?;
            if let FieldType::Reference(targets) = &field.ty {
                let target = super::objects::object_for_prefix(id.as_str());
                if !target.is_some_and(|t| targets.iter().any(|x| x == t)) {
                    return Err(SfError::with_fields(
                        "FIELD_INTEGRITY_EXCEPTION",
                        format!("{}: id value of incorrect type: {s}", field.name),
                        vec![field.name.clone()],
                    ));
                }
                match target.and_then(|t| org.get(t, id.as_str())) {
                    None => {
                        return Err(SfError::with_fields(
                            "INVALID_CROSS_REFERENCE_KEY",
                            format!("invalid cross reference id: {}", field.name),
                            vec![field.name.clone()],
                        ));
                    }
                    Some(r) if Org::is_deleted(r) => {
                        return Err(SfError::with_fields(
                            "ENTITY_IS_DELETED",
                            format!("entity is deleted: {}", field.name),
                            vec![field.name.clone()],
                        ));
                    }
                    Some(_) => {}
                }
            }
            Ok(FieldValue::text(id.to_string()))
        }
    }
}

fn is_plausible_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.contains(char::is_whitespace)
}

fn check_required(def: &ObjectDef, rec: &Record) -> Result<(), SfError> {
    let missing: Vec<String> = def
        .fields
        .iter()
        .filter(|f| f.required && rec.get(&f.name).is_none_or(FieldValue::is_null))
        .map(|f| f.name.clone())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SfError::with_fields(
            "REQUIRED_FIELD_MISSING",
            format!("Required fields are missing: [{}]", missing.join(", ")),
            missing,
        ))
    }
}

fn str_of<'a>(rec: &'a Record, field: &str) -> Option<&'a str> {
    rec.get(field).and_then(FieldValue::as_str)
}

fn num_of(rec: &Record, field: &str) -> Option<Decimal> {
    rec.get(field).and_then(FieldValue::as_decimal)
}

fn not_createable(def: &ObjectDef, verb: &str) -> SfError {
    SfError::bad_request(
        "INVALID_TYPE_FOR_OPERATION",
        format!("entity type {} does not support {verb}", def.name),
    )
}

/// Inserts a record and returns its id.
pub fn create(
    org: &mut Org,
    ctx: &Ctx,
    object: &str,
    input: Vec<(String, JsonIn)>,
) -> Result<String, SfError> {
    let def = org.def(object).ok_or_else(SfError::not_found)?;
    if !def.createable {
        return Err(not_createable(&def, "insert"));
    }
    let values = convert(org, &def, input, true)?;
    let explicit: BTreeSet<String> = values.iter().map(|(k, _)| k.clone()).collect();
    let mut rec: Record = def
        .fields
        .iter()
        .map(|f| (f.name.clone(), FieldValue::Null))
        .collect();
    let stamp = FieldValue::text(format_datetime(ctx.now));
    rec.insert("IsDeleted".into(), FieldValue::Bool(false));
    for f in ["CreatedDate", "LastModifiedDate", "SystemModstamp"] {
        rec.insert(f.into(), stamp.clone());
    }
    for f in ["CreatedById", "LastModifiedById"] {
        rec.insert(f.into(), FieldValue::text(ctx.user_id.clone()));
    }
    if def.has_field("OwnerId") {
        rec.insert("OwnerId".into(), FieldValue::text(ctx.user_id.clone()));
    }
    for f in [
        "IsActive",
        "IsStandard",
        "UseStandardPrice",
        "HasOpportunityLineItem",
        "IsClosed",
        "IsWon",
    ] {
        if def.has_field(f) {
            rec.insert(f.into(), FieldValue::Bool(false));
        }
    }
    for (k, v) in values {
        if k == "OwnerId" && v.is_null() {
            continue;
        }
        rec.insert(k, v);
    }
    check_required(&def, &rec)?;
    apply_rules(org, &def, &mut rec, &explicit, None)?;
    let id = org.new_id(def.prefix);
    rec.insert("Id".into(), FieldValue::text(id.clone()));
    org.records.put(def.name, &id, rec);
    after_write(org, ctx, def.name, &id);
    Ok(id)
}

/// Looks a record up for a write: unknown → 404 NOT_FOUND, deleted → 404 ENTITY_IS_DELETED.
pub fn live_record<'a>(org: &'a Org, def: &ObjectDef, id: &str) -> Result<&'a Record, SfError> {
    let id = SalesforceId::parse(id).map_err(|_| SfError::not_found())?;
    let rec = org
        .get(def.name, id.as_str())
        .ok_or_else(SfError::not_found)?;
    if Org::is_deleted(rec) {
        Err(SfError::entity_deleted())
    } else {
        Ok(rec)
    }
}

/// Updates the given fields of a live record.
pub fn update(
    org: &mut Org,
    ctx: &Ctx,
    object: &str,
    id: &str,
    input: Vec<(String, JsonIn)>,
) -> Result<(), SfError> {
    let def = org.def(object).ok_or_else(SfError::not_found)?;
    if !def.createable {
        return Err(not_createable(&def, "update"));
    }
    let old = live_record(org, &def, id)?.clone();
    let id = str_of(&old, "Id").unwrap_or_default().to_string();
    let values = convert(org, &def, input, false)?;
    let explicit: BTreeSet<String> = values.iter().map(|(k, _)| k.clone()).collect();
    let mut rec = old.clone();
    for (k, v) in values {
        rec.insert(k, v);
    }
    check_required(&def, &rec)?;
    if def.has_field("OwnerId") && rec.get("OwnerId").is_none_or(FieldValue::is_null) {
        return Err(SfError::with_fields(
            "REQUIRED_FIELD_MISSING",
            "Required fields are missing: [OwnerId]",
            vec!["OwnerId".into()],
        ));
    }
    apply_rules(org, &def, &mut rec, &explicit, Some(&old))?;
    let stamp = FieldValue::text(format_datetime(ctx.now));
    rec.insert("LastModifiedDate".into(), stamp.clone());
    rec.insert("SystemModstamp".into(), stamp);
    rec.insert(
        "LastModifiedById".into(),
        FieldValue::text(ctx.user_id.clone()),
    );
    org.records.put(def.name, &id, rec);
    after_write(org, ctx, def.name, &id);
    Ok(())
}

/// Marks a record deleted (it stays visible to `queryAll`), cascading as Salesforce does.
pub fn delete(org: &mut Org, ctx: &Ctx, object: &str, id: &str) -> Result<(), SfError> {
    let def = org.def(object).ok_or_else(SfError::not_found)?;
    if !def.createable {
        return Err(not_createable(&def, "delete"));
    }
    let rec = live_record(org, &def, id)?;
    if def.name == "Pricebook2" && rec.get("IsStandard").and_then(FieldValue::as_bool) == Some(true)
    {
        return Err(SfError::bad_request(
            "DELETE_FAILED",
            "The standard price book cannot be deleted",
        ));
    }
    let id = str_of(rec, "Id").unwrap_or_default().to_string();
    mark_deleted(org, ctx, def.name, &id);
    after_write(org, ctx, def.name, &id);
    Ok(())
}

fn children(org: &Org, object: &str, field: &str, parent: &str) -> Vec<String> {
    org.records
        .referencing(object, field, parent)
        .into_iter()
        .filter(|r| !Org::is_deleted(r))
        .filter_map(|r| str_of(r, "Id").map(str::to_string))
        .collect()
}

fn mark_deleted(org: &mut Org, ctx: &Ctx, object: &str, id: &str) {
    let cascade: Vec<(&str, Vec<String>)> = match object {
        "Account" => vec![
            ("Contact", children(org, "Contact", "AccountId", id)),
            ("Opportunity", children(org, "Opportunity", "AccountId", id)),
        ],
        "Opportunity" => vec![(
            "OpportunityLineItem",
            children(org, "OpportunityLineItem", "OpportunityId", id),
        )],
        "Product2" => vec![(
            "PricebookEntry",
            children(org, "PricebookEntry", "Product2Id", id),
        )],
        "Pricebook2" => vec![(
            "PricebookEntry",
            children(org, "PricebookEntry", "Pricebook2Id", id),
        )],
        _ => vec![],
    };
    let stamp = FieldValue::text(format_datetime(ctx.now));
    org.records.edit(object, id, |rec| {
        rec.insert("IsDeleted".into(), FieldValue::Bool(true));
        rec.insert("LastModifiedDate".into(), stamp.clone());
        rec.insert("SystemModstamp".into(), stamp);
    });
    for (child_object, ids) in cascade {
        for child in ids {
            mark_deleted(org, ctx, child_object, &child);
        }
    }
}

/// Derived fields and cross-record rules, checked before anything is stored.
fn apply_rules(
    org: &Org,
    def: &ObjectDef,
    rec: &mut Record,
    explicit: &BTreeSet<String>,
    old: Option<&Record>,
) -> Result<(), SfError> {
    match def.name {
        "Contact" => {
            let name = [str_of(rec, "FirstName"), str_of(rec, "LastName")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            rec.insert("Name".into(), FieldValue::text(name));
        }
        "Opportunity" => {
            let stage = str_of(rec, "StageName").unwrap_or_default().to_string();
            if let Some((_, probability, closed, won)) = STAGES.iter().find(|s| s.0 == stage) {
                rec.insert("IsClosed".into(), FieldValue::Bool(*closed));
                rec.insert("IsWon".into(), FieldValue::Bool(*won));
                let stage_changed =
                    old.is_none_or(|o| str_of(o, "StageName") != Some(stage.as_str()));
                if stage_changed && !explicit.contains("Probability") {
                    rec.insert(
                        "Probability".into(),
                        FieldValue::Num(Decimal::from(*probability)),
                    );
                }
            }
            let has_lines = old
                .and_then(|o| o.get("HasOpportunityLineItem"))
                .and_then(FieldValue::as_bool)
                .unwrap_or(false);
            if has_lines
                && explicit.contains("Amount")
                && old.is_some_and(|o| o.get("Amount") != rec.get("Amount"))
            {
                return Err(integrity(
                    "Amount",
                    "Amount is the sum of the opportunity's products and can't be set directly",
                ));
            }
            if has_lines
                && explicit.contains("Pricebook2Id")
                && old.is_some_and(|o| o.get("Pricebook2Id") != rec.get("Pricebook2Id"))
            {
                return Err(integrity(
                    "Pricebook2Id",
                    "the price book of an opportunity with products can't be changed",
                ));
            }
        }
        "Task" => {
            // Status and Priority have defaults, so a task needs only what it is about.
            if rec.get("Status").is_none_or(FieldValue::is_null) {
                rec.insert("Status".into(), FieldValue::text("Not Started"));
            }
            if rec.get("Priority").is_none_or(FieldValue::is_null) {
                rec.insert("Priority".into(), FieldValue::text("Normal"));
            }
            let closed = str_of(rec, "Status") == Some("Completed");
            rec.insert("IsClosed".into(), FieldValue::Bool(closed));
        }
        "OpportunityLineItem" => line_item_rules(org, rec, explicit, old)?,
        "PricebookEntry" if old.is_none() => price_book_entry_rules(org, rec)?,
        _ => {}
    }
    Ok(())
}

fn line_item_rules(
    org: &Org,
    rec: &mut Record,
    explicit: &BTreeSet<String>,
    old: Option<&Record>,
) -> Result<(), SfError> {
    let entry_id = str_of(rec, "PricebookEntryId")
        .unwrap_or_default()
        .to_string();
    let entry = org
        .get("PricebookEntry", &entry_id)
        .cloned()
        .unwrap_or_default();
    if old.is_none() {
        if entry.get("IsActive").and_then(FieldValue::as_bool) != Some(true) {
            return Err(integrity("PricebookEntryId", "pricebook entry is inactive"));
        }
        let opp_id = str_of(rec, "OpportunityId").unwrap_or_default();
        let opp = org.get("Opportunity", opp_id).cloned().unwrap_or_default();
        if let Some(pb) = str_of(&opp, "Pricebook2Id")
            && Some(pb) != str_of(&entry, "Pricebook2Id")
        {
            return Err(integrity(
                "PricebookEntryId",
                "pricebook entry is in a different pricebook than the one assigned to the opportunity",
            ));
        }
        let product_id = str_of(&entry, "Product2Id").unwrap_or_default().to_string();
        if explicit.contains("Product2Id")
            && str_of(rec, "Product2Id").is_some_and(|p| p != product_id)
        {
            return Err(integrity(
                "Product2Id",
                "the product does not match the price book entry",
            ));
        }
        let product = org
            .get("Product2", &product_id)
            .cloned()
            .unwrap_or_default();
        rec.insert("Product2Id".into(), FieldValue::text(product_id));
        rec.insert(
            "ListPrice".into(),
            entry.get("UnitPrice").cloned().unwrap_or_default(),
        );
        rec.insert(
            "ProductCode".into(),
            product.get("ProductCode").cloned().unwrap_or_default(),
        );
        let name = [str_of(&opp, "Name"), str_of(&product, "Name")]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        rec.insert("Name".into(), FieldValue::text(name));
    }
    let unit_given =
        explicit.contains("UnitPrice") && rec.get("UnitPrice").is_some_and(|v| !v.is_null());
    let total_given =
        explicit.contains("TotalPrice") && rec.get("TotalPrice").is_some_and(|v| !v.is_null());
    if unit_given && total_given {
        return Err(integrity(
            "TotalPrice",
            "TotalPrice and UnitPrice can't both be specified",
        ));
    }
    let quantity = num_of(rec, "Quantity").unwrap_or_default();
    if quantity.is_zero() {
        return Err(integrity("Quantity", "quantity must be nonzero"));
    }
    let discount = num_of(rec, "Discount").unwrap_or_default();
    if discount < Decimal::ZERO || discount > Decimal::ONE_HUNDRED {
        return Err(integrity(
            "Discount",
            "discount must be between 0 and 100 percent",
        ));
    }
    let factor = Decimal::ONE - discount / Decimal::ONE_HUNDRED;
    let unit = if total_given {
        let total = round_money(num_of(rec, "TotalPrice").unwrap_or_default());
        let per = quantity * factor;
        if per.is_zero() {
            return Err(integrity(
                "TotalPrice",
                "a total price can't be spread over a 100 percent discount",
            ));
        }
        rec.insert("TotalPrice".into(), FieldValue::Num(total));
        round_money(total / per)
    } else {
        let unit = match num_of(rec, "UnitPrice") {
            Some(u) => u,
            None if old.is_none() => num_of(&entry, "UnitPrice").unwrap_or_default(),
            None => {
                return Err(SfError::with_fields(
                    "REQUIRED_FIELD_MISSING",
                    "Required fields are missing: [UnitPrice]",
                    vec!["UnitPrice".into()],
                ));
            }
        };
        rec.insert(
            "TotalPrice".into(),
            FieldValue::Num(round_money(quantity * unit * factor)),
        );
        unit
    };
    rec.insert("UnitPrice".into(), FieldValue::Num(unit));
    rec.insert(
        "Subtotal".into(),
        FieldValue::Num(round_money(quantity * unit)),
    );
    Ok(())
}

fn price_book_entry_rules(org: &Org, rec: &mut Record) -> Result<(), SfError> {
    let pricebook_id = str_of(rec, "Pricebook2Id").unwrap_or_default().to_string();
    let product_id = str_of(rec, "Product2Id").unwrap_or_default().to_string();
    let is_standard = org
        .get("Pricebook2", &pricebook_id)
        .and_then(|p| p.get("IsStandard"))
        .and_then(FieldValue::as_bool)
        == Some(true);
    let live_entries: Vec<&Record> = org
        .records
        .referencing("PricebookEntry", "Product2Id", &product_id)
        .into_iter()
        .filter(|e| !Org::is_deleted(e))
        .collect();
    if live_entries
        .iter()
        .any(|e| str_of(e, "Pricebook2Id") == Some(pricebook_id.as_str()))
    {
        return Err(SfError::with_fields(
            "DUPLICATE_VALUE",
            "This price definition already exists in this price book",
            vec!["Pricebook2Id".into(), "Product2Id".into()],
        ));
    }
    if !is_standard {
        let standard = live_entries.iter().find(|e| {
            let pb = str_of(e, "Pricebook2Id").unwrap_or_default();
            org.get("Pricebook2", pb)
                .and_then(|p| p.get("IsStandard"))
                .and_then(FieldValue::as_bool)
                == Some(true)
        });
        let Some(standard) = standard else {
            return Err(SfError::bad_request(
                "STANDARD_PRICE_NOT_DEFINED",
                "No standard price defined for this product: add it to the standard price book before a custom one",
            ));
        };
        if rec.get("UseStandardPrice").and_then(FieldValue::as_bool) == Some(true) {
            rec.insert(
                "UnitPrice".into(),
                standard.get("UnitPrice").cloned().unwrap_or_default(),
            );
        }
    } else if rec.get("UseStandardPrice").and_then(FieldValue::as_bool) == Some(true) {
        return Err(integrity(
            "UseStandardPrice",
            "an entry in the standard price book can't use the standard price",
        ));
    }
    let product = org
        .get("Product2", &product_id)
        .cloned()
        .unwrap_or_default();
    rec.insert(
        "Name".into(),
        product.get("Name").cloned().unwrap_or_default(),
    );
    rec.insert(
        "ProductCode".into(),
        product.get("ProductCode").cloned().unwrap_or_default(),
    );
    Ok(())
}

/// Refreshes what depends on a record that just changed.
fn after_write(org: &mut Org, ctx: &Ctx, object: &str, id: &str) {
    if object != "OpportunityLineItem" {
        return;
    }
    let Some(line) = org.get(object, id).cloned() else {
        return;
    };
    let opp_id = str_of(&line, "OpportunityId")
        .unwrap_or_default()
        .to_string();
    let lines: Vec<Decimal> = org
        .records
        .referencing("OpportunityLineItem", "OpportunityId", &opp_id)
        .into_iter()
        .filter(|l| !Org::is_deleted(l))
        .map(|l| num_of(l, "TotalPrice").unwrap_or_default())
        .collect();
    let entry_pricebook = str_of(&line, "PricebookEntryId")
        .and_then(|e| org.get("PricebookEntry", e))
        .and_then(|e| e.get("Pricebook2Id"))
        .cloned()
        .unwrap_or_default();
    let amount: Decimal = lines.iter().copied().sum();
    org.records.edit("Opportunity", &opp_id, |opp| {
        if Org::is_deleted(opp) {
            return;
        }
        opp.insert("Amount".into(), FieldValue::Num(amount));
        opp.insert(
            "HasOpportunityLineItem".into(),
            FieldValue::Bool(!lines.is_empty()),
        );
        if opp.get("Pricebook2Id").is_none_or(FieldValue::is_null) {
            opp.insert("Pricebook2Id".into(), entry_pricebook);
        }
        opp.insert(
            "SystemModstamp".into(),
            FieldValue::text(format_datetime(ctx.now)),
        );
    });
}

/// What an external-id upsert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpsertOutcome {
    Created(String),
    Updated(String),
    /// Several records carry the value; nothing changed.
    Multiple(Vec<String>),
}

/// Live records whose external-id field equals `value` (text compared case-insensitively, like Salesforce's
/// default external ids).
pub fn find_by_external_id(
    org: &Org,
    def: &ObjectDef,
    field: &FieldDef,
    value: &str,
) -> Vec<String> {
    let wanted_num = if field.ty.is_numeric() {
        parse_decimal(value).ok()
    } else {
        None
    };
    let wanted_id = if field.name == "Id" {
        SalesforceId::parse(value).ok().map(|i| i.to_string())
    } else {
        None
    };
    org.all(def.name)
        .filter(|r| !Org::is_deleted(r))
        .filter(|r| match r.get(&field.name) {
            Some(FieldValue::Text(t)) if field.name == "Id" => {
                wanted_id.as_deref() == Some(t.as_str())
            }
            Some(FieldValue::Text(t)) => t.eq_ignore_ascii_case(value),
            Some(FieldValue::Num(n)) => wanted_num == Some(*n),
            _ => false,
        })
        .filter_map(|r| str_of(r, "Id").map(str::to_string))
        .collect()
}

/// Resolves the external-id field of an upsert path segment.
pub fn external_id_field(def: &ObjectDef, name: &str) -> Result<FieldDef, SfError> {
    match def.field(name) {
        Some(f) if f.external_id || f.name == "Id" => Ok(f.clone()),
        Some(f) => Err(SfError::with_fields(
            "INVALID_FIELD",
            format!(
                "Field {} is not an external id field on {}; upsert needs an External ID field or Id",
                f.name, def.name
            ),
            vec![f.name.clone()],
        )),
        None => Err(SfError::new(
            axum::http::StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("Provided external ID field does not exist or is not accessible: {name}"),
        )),
    }
}

/// `PATCH /sobjects/{Type}/{Field}/{value}`.
pub fn upsert(
    org: &mut Org,
    ctx: &Ctx,
    object: &str,
    field_name: &str,
    value: &str,
    mut input: Vec<(String, JsonIn)>,
    update_only: bool,
) -> Result<UpsertOutcome, SfError> {
    let def = org.def(object).ok_or_else(SfError::not_found)?;
    let field = external_id_field(&def, field_name)?;
    // The key travels in the URL; a body copy is allowed only if it says the same thing.
    if let Some((key, v)) = input
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(&field.name))
    {
        let same = match v {
            JsonIn::Str(s) => s.eq_ignore_ascii_case(value),
            JsonIn::Num(n) => parse_decimal(value).ok() == Some(*n),
            _ => false,
        };
        if !same {
            return Err(SfError::with_fields(
                "INVALID_FIELD",
                format!("The value of {key} in the body does not match the external id in the URL"),
                vec![field.name.clone()],
            ));
        }
        input.retain(|(k, _)| !k.eq_ignore_ascii_case(&field.name));
    }
    let matches = find_by_external_id(org, &def, &field, value);
    match matches.len() {
        0 if update_only || field.name == "Id" => Err(SfError::not_found()),
        0 => {
            let key = if field.ty.is_numeric() {
                JsonIn::Num(parse_decimal(value).map_err(|e| {
                    SfError::with_fields("INVALID_FIELD", e, vec![field.name.clone()])
                })?)
            } else {
                JsonIn::Str(value.to_string())
            };
            input.push((field.name.clone(), key));
            create(org, ctx, def.name, input).map(UpsertOutcome::Created)
        }
        1 => {
            let id = matches[0].clone();
            update(org, ctx, def.name, &id, input)?;
            Ok(UpsertOutcome::Updated(id))
        }
        _ => Ok(UpsertOutcome::Multiple(matches)),
    }
}
