//! The `/services/data/vXX.X/…` resources: sObject CRUD, describe, external-id upsert, the `updated/` and `deleted/`
//! change feeds, limits, query and query paging.
//!
//! Layout: each handler takes the [`Session`] the guard attached, locks the org once, delegates to [`records`] or
//! [`soql`], saves the state file after a write, and answers in Salesforce's shapes (`{id, success, errors}`,
//! 204 for updates and deletes, 300 for ambiguous external ids, `{totalSize, done, nextRecordsUrl?, records}`).
//! [`describe_json`] derives the describe document (labels, SOAP types, lengths, child relationships) from the
//! schema tables so it can never disagree with what writes and queries accept.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, DurationRound, Utc};
use ledgerlink_model::SalesforceId;
use serde::Serialize;
use serde_json::json;

use super::error::SfError;
use super::objects::{self, FieldDef, FieldType, OBJECT_NAMES};
use super::records::{self, Ctx, OutRecord, UpsertOutcome, record_url};
use super::state::{Cursor, Org, base62};
use super::value::{FieldValue, format_datetime, parse_body, parse_datetime};
use super::{App, Session, no_content, soql};

type ApiResult = Result<Response, SfError>;

/// How long a query cursor stays valid (Salesforce: 15 minutes of inactivity).
const CURSOR_TTL_MINUTES: i64 = 15;

fn ctx(app: &App, session: &Session) -> Ctx {
    Ctx {
        now: app.clock.now(),
        user_id: session.user_id.clone(),
    }
}

fn body_fields(body: &[u8]) -> Result<Vec<(String, super::value::JsonIn)>, SfError> {
    parse_body(body).map_err(SfError::json_parse)
}

fn canonical_object(org: &Org, name: &str) -> Result<&'static str, SfError> {
    org.def(name).map(|d| d.name).ok_or_else(SfError::not_found)
}

pub async fn resources(Extension(s): Extension<Session>) -> Response {
    let v = &s.version;
    axum::Json(json!({
        "sobjects": format!("/services/data/{v}/sobjects"),
        "query": format!("/services/data/{v}/query"),
        "queryAll": format!("/services/data/{v}/queryAll"),
        "limits": format!("/services/data/{v}/limits"),
    }))
    .into_response()
}

pub async fn limits(State(app): State<Arc<App>>) -> Response {
    let used = app.lock().usage_today(app.clock.now());
    let max = app.daily_limit();
    axum::Json(json!({
        "DailyApiRequests": {"Max": max, "Remaining": max.saturating_sub(used)},
        "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
        "DailyAsyncApexExecutions": {"Max": 250000, "Remaining": 250000},
        "DataStorageMB": {"Max": 5, "Remaining": 5},
        "FileStorageMB": {"Max": 20, "Remaining": 20},
    }))
    .into_response()
}

fn object_summary(org: &Org, name: &str, version: &str) -> serde_json::Value {
    let def = org.def(name).expect("listed objects exist");
    let (label, plural) = objects::object_labels(def.name);
    json!({
        "name": def.name,
        "label": label,
        "labelPlural": plural,
        "keyPrefix": def.prefix,
        "createable": def.createable,
        "updateable": def.createable,
        "deletable": def.createable,
        "queryable": true,
        "retrieveable": true,
        "searchable": def.name != "User",
        "replicateable": true,
        "triggerable": true,
        "layoutable": true,
        "custom": false,
        "customSetting": false,
        "urls": {
            "sobject": format!("/services/data/{version}/sobjects/{}", def.name),
            "describe": format!("/services/data/{version}/sobjects/{}/describe", def.name),
            "rowTemplate": format!("/services/data/{version}/sobjects/{}/{{ID}}", def.name),
        },
    })
}

pub async fn sobjects(State(app): State<Arc<App>>, Extension(s): Extension<Session>) -> Response {
    let org = app.lock();
    let list: Vec<_> = OBJECT_NAMES
        .iter()
        .map(|n| object_summary(&org, n, &s.version))
        .collect();
    axum::Json(json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": list})).into_response()
}

pub async fn sobject_info(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    Path((_, object)): Path<(String, String)>,
) -> ApiResult {
    let org = app.lock();
    let name = canonical_object(&org, &object)?;
    Ok(axum::Json(
        json!({"objectDescribe": object_summary(&org, name, &s.version), "recentItems": []}),
    )
    .into_response())
}

/// The SOAP type describe reports for a field type.
fn soap_type(ty: &FieldType) -> &'static str {
    match ty {
        FieldType::Id | FieldType::Reference(_) => "tns:ID",
        FieldType::Boolean => "xsd:boolean",
        FieldType::Currency | FieldType::Double | FieldType::Percent => "xsd:double",
        FieldType::Int => "xsd:int",
        FieldType::Date => "xsd:date",
        FieldType::DateTime => "xsd:dateTime",
        _ => "xsd:string",
    }
}

/// The per-object describe document (`GET /sobjects/{S}/describe`).
pub fn describe_json(org: &Org, name: &str, version: &str) -> serde_json::Value {
    let def = org.def(name).expect("checked by the caller");
    let fields: Vec<_> = def
        .fields
        .iter()
        .map(|f| {
            let (length, precision, scale, digits) = match &f.ty {
                FieldType::Id | FieldType::Reference(_) => (18, 0, 0, 0),
                FieldType::Text | FieldType::Email | FieldType::Url | FieldType::Picklist(_) => (255, 0, 0, 0),
                FieldType::Phone => (40, 0, 0, 0),
                FieldType::TextArea => (32_768, 0, 0, 0),
                FieldType::Currency | FieldType::Double => (0, 18, 2, 0),
                FieldType::Percent => (0, 3, 0, 0),
                FieldType::Int => (0, 0, 0, 9),
                _ => (0, 0, 0, 0),
            };
            let system = matches!(
                f.name.as_str(),
                "Id" | "IsDeleted" | "CreatedDate" | "CreatedById" | "LastModifiedDate" | "LastModifiedById" | "SystemModstamp"
            );
            let sortable = f.ty != FieldType::TextArea;
            let mut v = json!({
                "name": f.name,
                "label": objects::field_label(&f.name, matches!(f.ty, FieldType::Reference(_))),
                "type": f.ty.name(),
                "soapType": soap_type(&f.ty),
                "length": length,
                "byteLength": length * 3,
                "precision": precision,
                "scale": scale,
                "digits": digits,
                "createable": f.createable,
                "updateable": f.updateable,
                "nillable": !f.required && !system && f.ty != FieldType::Boolean,
                "defaultedOnCreate": system || f.ty == FieldType::Boolean || f.name == "OwnerId",
                "calculated": false,
                "unique": false,
                "caseSensitive": false,
                "filterable": sortable,
                "sortable": sortable,
                "groupable": sortable && !f.ty.is_numeric(),
                "nameField": f.name == "Name",
                "externalId": f.external_id,
                "idLookup": f.external_id || f.name == "Id",
                "custom": f.custom,
                "restrictedPicklist": matches!(&f.ty, FieldType::Picklist(v) if !v.is_empty()),
                "relationshipName": f.relationship_name(),
                "referenceTo": [],
                "picklistValues": [],
            });
            match &f.ty {
                FieldType::Reference(t) => v["referenceTo"] = json!(t),
                FieldType::Picklist(values) => {
                    v["picklistValues"] = json!(
                        values
                            .iter()
                            .enumerate()
                            .map(|(i, p)| json!({"value": p, "label": p, "active": true, "defaultValue": i == 0 && def.name == "Task"}))
                            .collect::<Vec<_>>()
                    )
                }
                _ => {}
            }
            v
        })
        .collect();
    let children: Vec<_> = objects::child_relationships(def.name)
        .map(|(child, field, rel)| {
            json!({
                "childSObject": child,
                "field": field,
                "relationshipName": rel,
                "cascadeDelete": matches!((def.name, child), ("Account", "Contact" | "Opportunity") | ("Opportunity", "OpportunityLineItem") | (_, "PricebookEntry")),
                "deprecatedAndHidden": false,
                "restrictedDelete": false,
            })
        })
        .collect();
    let mut summary = object_summary(org, name, version);
    summary["fields"] = json!(fields);
    summary["childRelationships"] = json!(children);
    summary["recordTypeInfos"] = json!([]);
    summary["supportedScopes"] = json!([{"label": "All", "name": "everything"}]);
    summary["urls"]["uiDetailTemplate"] = json!(null);
    summary
}

fn describe(org: &Org, name: &str, version: &str) -> Response {
    axum::Json(describe_json(org, name, version)).into_response()
}

/// The `start`/`end` window of a change feed, rounded down to the minute as Salesforce does.
fn change_window(
    params: &HashMap<String, String>,
    now: DateTime<Utc>,
    max_days: i64,
) -> Result<(DateTime<Utc>, DateTime<Utc>), SfError> {
    let bad = |m: String| SfError::bad_request("INVALID_REPLICATION_DATE", m);
    let get = |key: &str| -> Result<DateTime<Utc>, SfError> {
        let raw = params.get(key).ok_or_else(|| {
            SfError::bad_request("MISSING_ARGUMENT", format!("{key} was not specified"))
        })?;
        // A `+` left unencoded in a query string arrives as a space.
        parse_datetime(raw)
            .or_else(|| parse_datetime(&raw.replace(' ', "+")))
            .ok_or_else(|| bad(format!("{key}: '{raw}' is not a valid dateTime (expected e.g. 2024-01-15T10:30:00+00:00)")))
    };
    let minute = Duration::minutes(1);
    let start = get("start")?.duration_trunc(minute).unwrap_or(now);
    let end = get("end")?.duration_trunc(minute).unwrap_or(now);
    if start > end {
        return Err(bad("start must be before end".into()));
    }
    if start < now - Duration::days(max_days) {
        return Err(bad(format!(
            "start must be within the last {max_days} days"
        )));
    }
    Ok((start, end.min(now.duration_trunc(minute).unwrap_or(now))))
}

fn stamp_of(rec: &super::state::Record) -> Option<DateTime<Utc>> {
    rec.get("SystemModstamp")
        .and_then(FieldValue::as_str)
        .and_then(parse_datetime)
}

fn id_of(rec: &super::state::Record) -> String {
    rec.get("Id")
        .and_then(FieldValue::as_str)
        .unwrap_or_default()
        .to_string()
}

/// `GET /sobjects/{S}/updated/?start=&end=`: ids of live records changed in the window.
fn updated_feed(app: &App, object: &str, params: &HashMap<String, String>) -> ApiResult {
    let org = app.lock();
    let name = canonical_object(&org, object)?;
    let (start, end) = change_window(params, app.clock.now(), 30)?;
    let ids: Vec<String> = org
        .all(name)
        .filter(|r| !Org::is_deleted(r))
        .filter(|r| stamp_of(r).is_some_and(|t| t >= start && t < end))
        .map(id_of)
        .collect();
    Ok(axum::Json(json!({"ids": ids, "latestDateCovered": format_datetime(end)})).into_response())
}

/// `GET /sobjects/{S}/deleted/?start=&end=`: records deleted in the window (15 days kept).
fn deleted_feed(app: &App, object: &str, params: &HashMap<String, String>) -> ApiResult {
    let org = app.lock();
    let name = canonical_object(&org, object)?;
    let now = app.clock.now();
    let (start, end) = change_window(params, now, 15)?;
    let earliest = (now - Duration::days(15))
        .duration_trunc(Duration::minutes(1))
        .unwrap_or(now);
    let records: Vec<_> = org
        .all(name)
        .filter(|r| Org::is_deleted(r))
        .filter_map(|r| stamp_of(r).map(|t| (r, t)))
        .filter(|(_, t)| *t >= start && *t < end)
        .map(|(r, t)| json!({"id": id_of(r), "deletedDate": format_datetime(t)}))
        .collect();
    Ok(axum::Json(json!({
        "deletedRecords": records,
        "earliestDateAvailable": format_datetime(earliest),
        "latestDateCovered": format_datetime(end),
    }))
    .into_response())
}

pub async fn create(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    Path((_, object)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let input = body_fields(&body)?;
    let mut org = app.lock();
    let id = records::create(&mut org, &ctx(&app, &s), &object, input)?;
    app.persist(&org);
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"id": id, "success": true, "errors": []})),
    )
        .into_response())
}

/// Resolves `?fields=A,B` against the object (unknown names → 400 INVALID_FIELD).
fn chosen_fields<'a>(
    def: &'a super::objects::ObjectDef,
    fields: Option<&String>,
) -> Result<Option<Vec<&'a FieldDef>>, SfError> {
    let Some(list) = fields else { return Ok(None) };
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        out.push(
            def.field(name)
                .ok_or_else(|| SfError::no_such_column(name, def.name))?,
        );
    }
    Ok(Some(out))
}

/// An id in a URL that isn't one: Salesforce reads the segment as an external-id field name.
fn not_an_id(segment: &str) -> SfError {
    SfError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("Provided external ID field does not exist or is not accessible: {segment}"),
    )
}

pub async fn read(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    Path((_, object, id)): Path<(String, String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    if id == "updated" {
        return updated_feed(&app, &object, &params);
    }
    if id == "deleted" {
        return deleted_feed(&app, &object, &params);
    }
    let org = app.lock();
    let name = canonical_object(&org, &object)?;
    if id == "describe" {
        return Ok(describe(&org, name, &s.version));
    }
    let def = org.def(name).ok_or_else(SfError::not_found)?;
    let sid = SalesforceId::parse(&id).map_err(|_| not_an_id(&id))?;
    let rec = org.get(name, sid.as_str()).ok_or_else(SfError::not_found)?;
    if Org::is_deleted(rec) {
        return Err(SfError::entity_deleted());
    }
    let fields = chosen_fields(&def, params.get("fields"))?;
    Ok(axum::Json(records::render(&def, rec, fields.as_deref(), &s.version)).into_response())
}

pub async fn update(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    Path((_, object, id)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let input = body_fields(&body)?;
    let mut org = app.lock();
    canonical_object(&org, &object)?;
    SalesforceId::parse(&id).map_err(|_| not_an_id(&id))?;
    records::update(&mut org, &ctx(&app, &s), &object, &id, input)?;
    app.persist(&org);
    Ok(no_content())
}

pub async fn delete(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    Path((_, object, id)): Path<(String, String, String)>,
) -> ApiResult {
    let mut org = app.lock();
    canonical_object(&org, &object)?;
    SalesforceId::parse(&id).map_err(|_| not_an_id(&id))?;
    records::delete(&mut org, &ctx(&app, &s), &object, &id)?;
    app.persist(&org);
    Ok(no_content())
}

fn multiple_choices(version: &str, object: &str, ids: &[String]) -> Response {
    let urls: Vec<String> = ids
        .iter()
        .map(|id| record_url(version, object, id))
        .collect();
    (StatusCode::MULTIPLE_CHOICES, axum::Json(urls)).into_response()
}

pub async fn read_by_external_id(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    Path((_, object, field, value)): Path<(String, String, String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let org = app.lock();
    let name = canonical_object(&org, &object)?;
    let def = org.def(name).ok_or_else(SfError::not_found)?;
    let f = records::external_id_field(&def, &field)?;
    let ids = records::find_by_external_id(&org, &def, &f, &value);
    match ids.as_slice() {
        [] => Err(SfError::not_found()),
        [id] => {
            let rec = org.get(name, id).ok_or_else(SfError::not_found)?;
            let fields = chosen_fields(&def, params.get("fields"))?;
            Ok(
                axum::Json(records::render(&def, rec, fields.as_deref(), &s.version))
                    .into_response(),
            )
        }
        many => Ok(multiple_choices(&s.version, name, many)),
    }
}

pub async fn upsert(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    Path((_, object, field, value)): Path<(String, String, String, String)>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult {
    let input = body_fields(&body)?;
    let update_only = params
        .get("updateOnly")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let mut org = app.lock();
    let name = canonical_object(&org, &object)?;
    let outcome = records::upsert(
        &mut org,
        &ctx(&app, &s),
        name,
        &field,
        &value,
        input,
        update_only,
    )?;
    let resp = match outcome {
        UpsertOutcome::Created(id) => (
            StatusCode::CREATED,
            axum::Json(json!({"id": id, "success": true, "errors": [], "created": true})),
        )
            .into_response(),
        UpsertOutcome::Updated(id) => (
            StatusCode::OK,
            axum::Json(json!({"id": id, "success": true, "errors": [], "created": false})),
        )
            .into_response(),
        UpsertOutcome::Multiple(ids) => return Ok(multiple_choices(&s.version, name, &ids)),
    };
    app.persist(&org);
    Ok(resp)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueryPage<'a> {
    total_size: usize,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_records_url: Option<String>,
    records: &'a [OutRecord],
}

fn run_query(
    app: &App,
    s: &Session,
    params: &HashMap<String, String>,
    all_rows: bool,
) -> ApiResult {
    let q = params
        .get("q")
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| {
            SfError::bad_request("MALFORMED_QUERY", "A query string has to be specified")
        })?;
    let now = app.clock.now();
    let mut org = app.lock();
    let result = soql::run(&org, q, all_rows, now, &s.version)?;
    let page = app.page_size();
    if result.rows.len() <= page {
        let body = QueryPage {
            total_size: result.total_size,
            done: true,
            next_records_url: None,
            records: &result.rows,
        };
        return Ok(axum::Json(body).into_response());
    }
    org.cursors
        .retain(|_, c| c.created + Duration::minutes(CURSOR_TTL_MINUTES) > now);
    let seq: u64 = rand::random::<u64>() % 62u64.pow(9);
    let cursor_id = SalesforceId::parse(&format!("01gHs0{}", base62(seq, 9)))
        .map(|i| i.to_string())
        .unwrap_or_default();
    let body = QueryPage {
        total_size: result.total_size,
        done: false,
        next_records_url: Some(format!(
            "/services/data/{}/query/{cursor_id}-{page}",
            s.version
        )),
        records: &result.rows[..page],
    };
    let resp = axum::Json(body).into_response();
    org.cursors.insert(
        cursor_id,
        Cursor {
            created: now,
            total: result.total_size,
            rows: result.rows,
            version: s.version.clone(),
        },
    );
    Ok(resp)
}

pub async fn query(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    run_query(&app, &s, &params, false)
}

pub async fn query_all(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    run_query(&app, &s, &params, true)
}

/// `GET {nextRecordsUrl}`: the next batch of a cursor.
pub async fn query_more(
    State(app): State<Arc<App>>,
    Path((_, locator)): Path<(String, String)>,
) -> ApiResult {
    let invalid = || SfError::bad_request("INVALID_QUERY_LOCATOR", "invalid query locator");
    let (cursor_id, offset) = locator.rsplit_once('-').ok_or_else(invalid)?;
    let offset: usize = offset.parse().map_err(|_| invalid())?;
    let org = app.lock();
    let cursor = org.cursors.get(cursor_id).ok_or_else(invalid)?;
    if offset >= cursor.rows.len() {
        return Err(invalid());
    }
    let end = (offset + app.page_size()).min(cursor.rows.len());
    let next = (end < cursor.rows.len())
        .then(|| format!("/services/data/{}/query/{cursor_id}-{end}", cursor.version));
    let body = QueryPage {
        total_size: cursor.total,
        done: next.is_none(),
        next_records_url: next,
        records: &cursor.rows[offset..end],
    };
    Ok(axum::Json(body).into_response())
}
