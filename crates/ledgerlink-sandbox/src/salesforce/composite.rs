//! sObject Collections and Composite: many records or many requests in one API call.
//!
//! Layout: the `collection_*` handlers serve `/composite/sobjects` (create, update, delete, retrieve) and
//! `/composite/sobjects/{S}/{ExtIdField}` (upsert): at most 200 records, one result per record in request order,
//! errors in the collection shape `{statusCode, message, fields}`. With `allOrNone` the org is snapshotted first
//! and restored if any record fails, and every record that had succeeded reports `ALL_OR_NONE_OPERATION_ROLLED_BACK`.
//! [`composite`] serves `POST /composite`: up to 25 subrequests run in order through the unguarded data routes (the
//! whole call counts once against the API budget), `@{ref.path}` references are filled from earlier answers, and
//! `allOrNone` rolls back at the first failure and halts the rest with `PROCESSING_HALTED`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use ledgerlink_model::SalesforceId;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::error::SfError;
use super::records::{self, Ctx, UpsertOutcome};
use super::state::Org;
use super::value::{JsonIn, parse_body};
use super::{App, Session};

/// The most records one collection call takes.
pub const MAX_COLLECTION: usize = 200;
/// The most subrequests one composite call takes.
pub const MAX_SUBREQUESTS: usize = 25;

type ApiResult = Result<Response, SfError>;

#[derive(Deserialize)]
struct CollectionBody {
    #[serde(default, rename = "allOrNone")]
    all_or_none: bool,
    records: Vec<Box<RawValue>>,
}

fn collection_body(body: &[u8]) -> Result<CollectionBody, SfError> {
    let parsed: CollectionBody = serde_json::from_slice(body).map_err(|e| {
        SfError::json_parse(format!(
            "expected {{\"allOrNone\": bool, \"records\": [ … ]}}: {e}"
        ))
    })?;
    if parsed.records.len() > MAX_COLLECTION {
        return Err(SfError::bad_request(
            "EXCEEDED_ID_LIMIT",
            format!(
                "record limit reached. cannot submit more than {MAX_COLLECTION} records into this call"
            ),
        ));
    }
    Ok(parsed)
}

/// One record of a collection: its fields, its `attributes.type` and its id if given.
struct InRecord {
    object: Option<String>,
    id: Option<String>,
    fields: Vec<(String, JsonIn)>,
}

fn in_record(raw: &RawValue) -> Result<InRecord, SfError> {
    let fields = parse_body(raw.get().as_bytes()).map_err(SfError::json_parse)?;
    let object = fields
        .iter()
        .find(|(k, _)| k == "attributes")
        .and_then(|(_, v)| match v {
            JsonIn::Other(a) => a.get("type").and_then(Value::as_str).map(str::to_string),
            _ => None,
        });
    let id = fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("id"))
        .and_then(|(_, v)| match v {
            JsonIn::Str(s) => Some(s.clone()),
            _ => None,
        });
    let fields = fields
        .into_iter()
        .filter(|(k, _)| k != "attributes" && !k.eq_ignore_ascii_case("id"))
        .collect();
    Ok(InRecord { object, id, fields })
}

fn error_json(e: &SfError) -> Vec<Value> {
    e.errors
        .iter()
        .map(|i| json!({"statusCode": i.error_code, "message": i.message, "fields": i.fields.clone().unwrap_or_default()}))
        .collect()
}

/// One record's outcome.
enum Outcome {
    Ok { id: String, created: Option<bool> },
    Failed { id: Option<String>, error: SfError },
}

fn render(outcomes: Vec<Outcome>, rolled_back: bool) -> Response {
    let out: Vec<Value> = outcomes
        .into_iter()
        .map(|o| match o {
            Outcome::Ok { id, created } if rolled_back => {
                let mut v = json!({"id": null, "success": false, "errors": [{
                    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
                    "fields": [],
                }]});
                if created.is_none() {
                    v["id"] = json!(id);
                }
                v
            }
            Outcome::Ok { id, created } => {
                let mut v = json!({"id": id, "success": true, "errors": []});
                if let Some(c) = created {
                    v["created"] = json!(c);
                }
                v
            }
            Outcome::Failed { id, error } => json!({"id": id, "success": false, "errors": error_json(&error)}),
        })
        .collect();
    axum::Json(out).into_response()
}

/// Runs `each` over the records under one lock, with all-or-none rollback.
fn run_collection(
    app: &App,
    all_or_none: bool,
    items: Vec<InRecord>,
    mut each: impl FnMut(&mut Org, InRecord) -> Outcome,
) -> Response {
    let mut org = app.lock();
    let undo = all_or_none.then(|| org.begin_undo());
    let outcomes: Vec<Outcome> = items.into_iter().map(|r| each(&mut org, r)).collect();
    let failed = outcomes.iter().any(|o| matches!(o, Outcome::Failed { .. }));
    let rolled_back = all_or_none && failed;
    match undo {
        Some(undo) if rolled_back => org.roll_back(undo),
        Some(undo) => org.keep(undo),
        None => {}
    }
    if !rolled_back && outcomes.iter().any(|o| matches!(o, Outcome::Ok { .. })) {
        app.persist(&org);
    }
    render(outcomes, rolled_back)
}

fn ctx(app: &App, s: &Session) -> Ctx {
    Ctx {
        now: app.clock.now(),
        user_id: s.user_id.clone(),
    }
}

fn missing_type() -> SfError {
    SfError::bad_request(
        "INVALID_TYPE",
        "Must specify a type in the attributes of each record (attributes.type)",
    )
}

/// `POST /composite/sobjects`: create up to 200 records (types may differ).
pub async fn collection_create(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    body: Bytes,
) -> ApiResult {
    let parsed = collection_body(&body)?;
    let items = parsed
        .records
        .iter()
        .map(|r| in_record(r))
        .collect::<Result<Vec<_>, _>>()?;
    let ctx = ctx(&app, &s);
    Ok(run_collection(&app, parsed.all_or_none, items, |org, r| {
        let Some(object) = r.object else {
            return Outcome::Failed {
                id: None,
                error: missing_type(),
            };
        };
        if r.id.is_some() {
            return Outcome::Failed {
                id: None,
                error: SfError::with_fields(
                    "INVALID_FIELD",
                    "cannot specify Id in an insert call",
                    vec!["Id".into()],
                ),
            };
        }
        match records::create(org, &ctx, &object, r.fields) {
            Ok(id) => Outcome::Ok { id, created: None },
            Err(error) => Outcome::Failed { id: None, error },
        }
    }))
}

/// `PATCH /composite/sobjects`: update up to 200 records by id.
pub async fn collection_update(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    body: Bytes,
) -> ApiResult {
    let parsed = collection_body(&body)?;
    let items = parsed
        .records
        .iter()
        .map(|r| in_record(r))
        .collect::<Result<Vec<_>, _>>()?;
    let ctx = ctx(&app, &s);
    Ok(run_collection(&app, parsed.all_or_none, items, |org, r| {
        let Some(id) = r.id else {
            return Outcome::Failed {
                id: None,
                error: SfError::bad_request(
                    "MISSING_ARGUMENT",
                    "Id not specified in an update call",
                ),
            };
        };
        let object = match r.object {
            Some(o) => o,
            None => {
                return Outcome::Failed {
                    id: Some(id),
                    error: missing_type(),
                };
            }
        };
        match records::update(org, &ctx, &object, &id, r.fields) {
            Ok(()) => Outcome::Ok {
                id: canonical_id(&id),
                created: None,
            },
            Err(error) => Outcome::Failed {
                id: Some(id),
                error,
            },
        }
    }))
}

fn canonical_id(id: &str) -> String {
    SalesforceId::parse(id)
        .map(|i| i.to_string())
        .unwrap_or_else(|_| id.to_string())
}

/// `PATCH /composite/sobjects/{S}/{ExtIdField}`: upsert up to 200 records of one type by external id.
pub async fn collection_upsert(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    Path((_, object, field)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let parsed = collection_body(&body)?;
    let (name, ext_field) = {
        let org = app.lock();
        let def = org.def(&object).ok_or_else(SfError::not_found)?;
        (def.name, records::external_id_field(&def, &field)?.name)
    };
    let items = parsed
        .records
        .iter()
        .map(|r| in_record(r))
        .collect::<Result<Vec<_>, _>>()?;
    let ctx = ctx(&app, &s);
    Ok(run_collection(
        &app,
        parsed.all_or_none,
        items,
        |org, mut r| {
            if r.object
                .as_deref()
                .is_some_and(|o| !o.eq_ignore_ascii_case(name))
            {
                return Outcome::Failed {
                    id: None,
                    error: SfError::bad_request(
                        "INVALID_TYPE",
                        format!("every record must be a {name} in this call"),
                    ),
                };
            }
            let key = if ext_field == "Id" {
                r.id.take()
            } else {
                r.fields
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&ext_field))
                    .and_then(|(_, v)| match v {
                        JsonIn::Str(s) => Some(s.clone()),
                        JsonIn::Num(n) => Some(n.to_string()),
                        _ => None,
                    })
            };
            let Some(key) = key.filter(|k| !k.is_empty()) else {
                return Outcome::Failed {
                    id: None,
                    error: SfError::with_fields(
                        "MISSING_ARGUMENT",
                        format!("{ext_field} not specified"),
                        vec![ext_field.clone()],
                    ),
                };
            };
            match records::upsert(org, &ctx, name, &ext_field, &key, r.fields, false) {
                Ok(UpsertOutcome::Created(id)) => Outcome::Ok {
                    id,
                    created: Some(true),
                },
                Ok(UpsertOutcome::Updated(id)) => Outcome::Ok {
                    id,
                    created: Some(false),
                },
                Ok(UpsertOutcome::Multiple(ids)) => Outcome::Failed {
                    id: None,
                    error: SfError::with_fields(
                        "DUPLICATE_EXTERNAL_ID",
                        format!(
                            "{ext_field}: more than one record found for external id field: {}",
                            ids.join(", ")
                        ),
                        vec![ext_field.clone()],
                    ),
                },
                Err(error) => Outcome::Failed { id: None, error },
            }
        },
    ))
}

fn ids_param(params: &HashMap<String, String>) -> Result<Vec<String>, SfError> {
    let ids: Vec<String> = params
        .get("ids")
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() {
        return Err(SfError::bad_request(
            "MISSING_ARGUMENT",
            "ids: at least one record id is required (?ids=…)",
        ));
    }
    if ids.len() > MAX_COLLECTION {
        return Err(SfError::bad_request(
            "EXCEEDED_ID_LIMIT",
            format!(
                "record limit reached. cannot submit more than {MAX_COLLECTION} records into this call"
            ),
        ));
    }
    Ok(ids)
}

/// `DELETE /composite/sobjects?ids=…&allOrNone=…`.
pub async fn collection_delete(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let ids = ids_param(&params)?;
    let all_or_none = params
        .get("allOrNone")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let items = ids
        .into_iter()
        .map(|id| InRecord {
            object: None,
            id: Some(id),
            fields: Vec::new(),
        })
        .collect();
    let ctx = ctx(&app, &s);
    Ok(run_collection(&app, all_or_none, items, |org, r| {
        let id = r.id.unwrap_or_default();
        let object = SalesforceId::parse(&id)
            .ok()
            .and_then(|i| super::objects::object_for_prefix(i.as_str()));
        let Some(object) = object else {
            return Outcome::Failed {
                id: Some(id.clone()),
                error: SfError::bad_request("MALFORMED_ID", format!("malformed id {id}")),
            };
        };
        match records::delete(org, &ctx, object, &id) {
            Ok(()) => Outcome::Ok {
                id: canonical_id(&id),
                created: None,
            },
            Err(error) => Outcome::Failed {
                id: Some(id),
                error,
            },
        }
    }))
}

/// `GET /composite/sobjects/{S}?ids=…&fields=…`: records in the order asked, `null` for ids not found.
pub async fn collection_retrieve(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    Path((_, object)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let ids = ids_param(&params)?;
    let org = app.lock();
    let def = org.def(&object).ok_or_else(SfError::not_found)?;
    let names = params
        .get("fields")
        .filter(|f| !f.trim().is_empty())
        .ok_or_else(|| {
            SfError::bad_request(
                "MISSING_ARGUMENT",
                "fields: the fields to return are required (?fields=…)",
            )
        })?;
    let mut fields = Vec::new();
    for n in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        fields.push(
            def.field(n)
                .ok_or_else(|| SfError::no_such_column(n, def.name))?,
        );
    }
    let out: Vec<Value> = ids
        .iter()
        .map(|id| {
            SalesforceId::parse(id)
                .ok()
                .and_then(|i| org.get(def.name, i.as_str()))
                .filter(|r| !Org::is_deleted(r))
                .map(|r| json!(records::render(&def, r, Some(&fields), &s.version)))
                .unwrap_or(Value::Null)
        })
        .collect();
    Ok(axum::Json(out).into_response())
}

#[derive(Deserialize)]
struct CompositeBody {
    #[serde(default, rename = "allOrNone")]
    all_or_none: bool,
    #[serde(rename = "compositeRequest")]
    requests: Vec<SubRequest>,
}

#[derive(Deserialize)]
struct SubRequest {
    method: String,
    url: String,
    #[serde(rename = "referenceId")]
    reference_id: String,
    #[serde(default)]
    body: Option<Value>,
}

/// Looks up `records[0].Id`-style paths in an earlier answer.
fn lookup<'a>(mut v: &'a Value, path: &str) -> Option<&'a Value> {
    for part in path.split('.') {
        let (name, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            v = v.get(name)?;
        }
        for idx in indexes.split('[').filter(|s| !s.is_empty()) {
            let n: usize = idx.strip_suffix(']')?.parse().ok()?;
            v = v.get(n)?;
        }
    }
    Some(v)
}

/// Replaces every `@{ref.path}` in `text`; `json_string` escapes the values for use inside a JSON string.
fn substitute(
    text: &str,
    answers: &HashMap<String, Value>,
    json_string: bool,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("@{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated reference in `{text}`"))?;
        let expr = &after[..end];
        let (reference, path) = expr.split_once('.').unwrap_or((expr, ""));
        let value = answers
            .get(reference)
            .and_then(|a| if path.is_empty() { Some(a) } else { lookup(a, path) })
            .ok_or_else(|| {
                format!("Invalid reference specified. No value for {expr} found in {reference}. Provided referenceId ({reference}) must be the referenceId of an earlier subrequest that succeeded")
            })?;
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if json_string {
            let quoted = Value::String(text).to_string();
            out.push_str(&quoted[1..quoted.len() - 1]);
        } else {
            out.push_str(&text);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn halted(reference_id: &str, message: &str) -> Value {
    json!({
        "body": [{"errorCode": "PROCESSING_HALTED", "message": message}],
        "httpHeaders": {},
        "httpStatusCode": 400,
        "referenceId": reference_id,
    })
}

const ROLLED_BACK: &str =
    "The transaction was rolled back since another operation in the same transaction failed.";

/// `POST /composite`.
pub async fn composite(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    body: Bytes,
) -> ApiResult {
    let parsed: CompositeBody = serde_json::from_slice(&body).map_err(|e| {
        SfError::json_parse(format!(
            "expected {{\"allOrNone\": bool, \"compositeRequest\": [{{\"method\", \"url\", \"referenceId\", \"body\"?}}]}}: {e}"
        ))
    })?;
    if parsed.requests.is_empty() || parsed.requests.len() > MAX_SUBREQUESTS {
        return Err(SfError::bad_request(
            "INVALID_INPUT",
            format!(
                "compositeRequest must hold 1 to {MAX_SUBREQUESTS} subrequests, got {}",
                parsed.requests.len()
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for r in &parsed.requests {
        if r.reference_id.is_empty()
            || !r
                .reference_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(SfError::bad_request(
                "INVALID_INPUT",
                format!(
                    "referenceId `{}` must be letters, digits and underscores",
                    r.reference_id
                ),
            ));
        }
        if !seen.insert(r.reference_id.clone()) {
            return Err(SfError::bad_request(
                "INVALID_INPUT",
                format!("duplicate referenceId `{}`", r.reference_id),
            ));
        }
    }
    let snap = parsed.all_or_none.then(|| app.lock().snapshot());
    let router = app.inner_router();
    let mut answers: HashMap<String, Value> = HashMap::new();
    let mut out: Vec<Value> = Vec::new();
    let mut failed_at: Option<usize> = None;
    for (i, r) in parsed.requests.iter().enumerate() {
        let subst = substitute(&r.url, &answers, false).and_then(|url| {
            let body = match &r.body {
                Some(b) => Some(substitute(&b.to_string(), &answers, true)?),
                None => None,
            };
            Ok((url, body))
        });
        let (url, body) = match subst {
            Ok(x) => x,
            Err(message) => {
                out.push(halted(&r.reference_id, &message));
                if parsed.all_or_none {
                    failed_at = Some(i);
                    break;
                }
                continue;
            }
        };
        let method =
            Method::from_bytes(r.method.to_ascii_uppercase().as_bytes()).unwrap_or(Method::GET);
        let answer = if !url.starts_with("/services/data/") || url.contains("/composite") {
            let e = SfError::bad_request(
                "INVALID_INPUT",
                format!(
                    "subrequest url `{url}` must be a /services/data/vXX.X/ resource other than composite"
                ),
            );
            json!({"body": e.errors, "httpHeaders": {}, "httpStatusCode": 400, "referenceId": r.reference_id})
        } else {
            let mut req = Request::builder()
                .method(method.clone())
                .uri(&url)
                .header("content-type", "application/json")
                .body(Body::from(body.unwrap_or_default()))
                .map_err(|e| {
                    SfError::bad_request(
                        "INVALID_INPUT",
                        format!("subrequest `{}`: {e}", r.reference_id),
                    )
                })?;
            req.extensions_mut().insert(s.clone());
            super::serve::trim_trailing_slash(&mut req);
            let resp = router
                .clone()
                .oneshot(req)
                .await
                .unwrap_or_else(|never| match never {});
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let mut headers = json!({});
            if status == StatusCode::CREATED
                && method == Method::POST
                && let Some(id) = body.get("id").and_then(Value::as_str)
            {
                headers["Location"] = json!(format!(
                    "{}/{id}",
                    url.split('?').next().unwrap_or_default()
                ));
            }
            json!({"body": body, "httpHeaders": headers, "httpStatusCode": status.as_u16(), "referenceId": r.reference_id})
        };
        let ok = answer["httpStatusCode"].as_u64().is_some_and(|c| c < 400);
        if ok {
            answers.insert(r.reference_id.clone(), answer["body"].clone());
        }
        out.push(answer);
        if !ok && parsed.all_or_none {
            failed_at = Some(i);
            break;
        }
    }
    if let (Some(failed), Some(snap)) = (failed_at, snap) {
        {
            let mut org = app.lock();
            org.restore(snap);
            app.persist(&org);
        }
        for (i, answer) in out.iter_mut().enumerate() {
            if i != failed {
                let reference = answer["referenceId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                *answer = halted(&reference, ROLLED_BACK);
            }
        }
        for r in &parsed.requests[failed + 1..] {
            out.push(halted(&r.reference_id, ROLLED_BACK));
        }
    }
    Ok(axum::Json(json!({"compositeResponse": out})).into_response())
}
