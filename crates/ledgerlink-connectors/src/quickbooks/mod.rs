//! QuickBooks Online connector (Accounting API v3).
//!
//! Layout: [`QuickbooksConnector`] implements [`Connector`] over the REST API under
//! `{api_base}/company/{realm}/…` and offers typed calls of its own ([`QuickbooksConnector::query`],
//! [`QuickbooksConnector::company_name`]); [`query`] builds QBO SQL with escaping; [`classify`] turns every error
//! shape QBO uses into a [`ConnectorError`]; [`invoice`] encodes canonical invoices. Tokens come from a
//! [`TokenManager`] with Basic client authentication; any 401 triggers one refresh and one retry.

pub mod batch;
pub mod batching;
pub mod cdc;
pub mod classify;
pub mod invoice;
pub mod model;
pub mod query;
pub mod typed;
pub mod webhook;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledgerlink_model::QboRealmId;
use reqwest::Method;
use secrecy::SecretString;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use classify::{classify as classify_error, parse_fault};
pub use query::QueryBuilder;

use crate::auth::{ClientAuth, RefreshConfig, TokenManager, TokenStore};
use crate::http::{self, Reply};
use crate::limiter::Limiter;
use crate::{Changes, Connector, ConnectorError, FindQuery, RateLimitPolicy, Record};

/// The minor version sent with every call: from August 2025 QBO ignores 1–74 and defaults to 75.
pub const DEFAULT_MINOR_VERSION: u32 = 75;

/// The longest `requestid` QBO accepts.
pub const MAX_REQUEST_ID: usize = 50;

/// Where and how to reach one QuickBooks company.
#[derive(Debug, Clone)]
pub struct QuickbooksConfig {
    /// `https://quickbooks.api.intuit.com/v3` (or the sandbox's `…/v3`).
    pub api_base: String,
    pub token_url: String,
    pub realm_id: QboRealmId,
    pub client_id: String,
    pub client_secret: SecretString,
    pub minor_version: u32,
}

/// One QuickBooks company's client.
pub struct QuickbooksConnector {
    config: QuickbooksConfig,
    api_base: String,
    tokens: TokenManager,
    http: reqwest::Client,
    limiter: Limiter,
}

impl std::fmt::Debug for QuickbooksConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuickbooksConnector")
            .field("api_base", &self.api_base)
            .field("realm_id", &self.config.realm_id)
            .finish_non_exhaustive()
    }
}

/// QuickBooks' published limits per realm (facts §6): 500 requests a minute (batch calls included), 10 in
/// flight, 120 batch calls a minute of at most 30 items.
pub fn quickbooks_policy() -> RateLimitPolicy {
    RateLimitPolicy {
        requests_per_minute: Some(500),
        max_concurrent: Some(10),
        batch_requests_per_minute: Some(120),
        max_batch_items: Some(MAX_BATCH_ITEMS as u32),
        daily_budget: None,
    }
}

/// The most items one `POST /batch` may carry.
pub const MAX_BATCH_ITEMS: usize = 30;

/// Name-list entities: QuickBooks never deletes them, it deactivates them (`Active: false`), and its queries hide
/// inactive ones unless the query filters on `Active` itself.
pub const NAME_LIST_ENTITIES: &[&str] =
    &["Customer", "Vendor", "Employee", "Item", "Account", "Class", "Department", "Term", "PaymentMethod"];

/// Whether `entity` is a name-list entity (see [`NAME_LIST_ENTITIES`]).
pub fn is_name_list(entity: &str) -> bool {
    NAME_LIST_ENTITIES.iter().any(|e| e.eq_ignore_ascii_case(entity))
}

/// The `requestid` for an idempotency key: the key itself when QBO accepts its length, else a SHA-256 hex
/// prefix of it, so the same logical key always maps to the same request id.
pub fn request_id(key: &str) -> String {
    if key.len() <= MAX_REQUEST_ID {
        return key.to_string();
    }
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..MAX_REQUEST_ID].to_string()
}

/// The entity object inside a response envelope (`{"Customer":{…},"time":…}`), found by name, case-insensitively.
fn unwrap_entity(body: Value, entity: &str) -> Result<Record, ConnectorError> {
    let Value::Object(mut map) = body else {
        return Err(unexpected(&format!("the {entity} answer is not a JSON object")));
    };
    let key = map.keys().find(|k| k.eq_ignore_ascii_case(entity)).cloned();
    match key.and_then(|k| map.remove(&k)) {
        Some(Value::Object(record)) => Ok(record),
        _ => Err(unexpected(&format!("the answer holds no {entity} object"))),
    }
}

/// The rows of a query answer: the one array inside `QueryResponse` (absent when nothing matched).
fn query_rows(body: &Value) -> Result<Vec<Record>, ConnectorError> {
    let response = body.get("QueryResponse").ok_or_else(|| unexpected("the query answer has no QueryResponse"))?;
    let Some(obj) = response.as_object() else {
        return Err(unexpected("QueryResponse is not an object"));
    };
    Ok(obj
        .values()
        .find_map(|v| v.as_array())
        .map(|rows| rows.iter().filter_map(|r| r.as_object().cloned()).collect())
        .unwrap_or_default())
}

fn unexpected(message: &str) -> ConnectorError {
    ConnectorError::Transient { message: format!("unexpected QuickBooks answer: {message}"), outcome_unknown: true }
}

/// Parses a QBO timestamp (`2015-07-24T10:35:08-07:00`).
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A timestamp as QBO query text: whole seconds (rounded down, so `>=` never skips a change) and an offset.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// Where the next page of a QuickBooks change poll starts: at a time, not at a row number.
///
/// Paging by `STARTPOSITION` alone loses changes: a record of an earlier page that is edited while the poll reads
/// on moves to the end of the `LastUpdatedTime` order, every later row shifts back by one, and the row that
/// crosses the page boundary is never read. So each page after the first starts again from the last timestamp it
/// saw (`>=`, the rows of that second are read again and the poller drops the versions it has seen) and only skips
/// rows when one second holds more than a page: then it moves on through that second by position, stepping back
/// [`Self::REREAD`] rows so that up to that many edits between two pages still cannot make it skip one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChangesPage {
    from: DateTime<Utc>,
    /// Rows of the `>= from` order to pass over.
    skip: u32,
}

impl ChangesPage {
    const REREAD: u32 = 100;

    /// The page after one whose rows had these timestamps.
    fn next(self, stamps: impl Iterator<Item = Option<DateTime<Utc>>>) -> Self {
        let stamps: Vec<DateTime<Utc>> = stamps.flatten().collect();
        let Some(last) = stamps.last().copied() else { return ChangesPage { from: self.from, skip: self.skip + query::MAX_PAGE } };
        if last > self.from {
            return ChangesPage { from: last, skip: 0 };
        }
        // The whole page was one second: go on by position within it.
        let read = self.skip + u32::try_from(stamps.len()).unwrap_or(query::MAX_PAGE);
        ChangesPage { from: self.from, skip: read.saturating_sub(Self::REREAD).max(self.skip + 1) }
    }

    fn token(self) -> String {
        format!("{}|{}", self.from.to_rfc3339(), self.skip)
    }

    fn parse(token: &str) -> Result<Self, ConnectorError> {
        let bad = || unexpected(&format!("page token `{token}` is not a QuickBooks change position"));
        let (from, skip) = token.split_once('|').ok_or_else(bad)?;
        Ok(ChangesPage {
            from: DateTime::parse_from_rfc3339(from).map_err(|_| bad())?.with_timezone(&Utc),
            skip: skip.parse().map_err(|_| bad())?,
        })
    }
}

impl QuickbooksConnector {
    pub fn new(config: QuickbooksConfig, tokens: Arc<dyn TokenStore>, http: reqwest::Client) -> Self {
        let refresh = RefreshConfig {
            token_url: config.token_url.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            client_auth: ClientAuth::Basic,
        };
        QuickbooksConnector {
            api_base: config.api_base.trim_end_matches('/').to_string(),
            tokens: TokenManager::new(tokens, refresh, http.clone()),
            config,
            http,
            limiter: Limiter::new(&quickbooks_policy()),
        }
    }

    /// The same connector drawing from `limiter` (shared with other clients of the same company, or a
    /// time-scaled one in tests).
    pub fn with_limiter(mut self, limiter: Limiter) -> Self {
        self.limiter = limiter;
        self
    }

    /// The connection's proactive limiter (its counters show how often QuickBooks still throttled).
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The realm this connector talks to.
    pub fn realm_id(&self) -> &str {
        self.config.realm_id.as_str()
    }

    /// The connection's token manager (shared refresh state).
    pub fn token_manager(&self) -> &TokenManager {
        &self.tokens
    }

    fn url(&self, path: &str) -> String {
        format!("{}/company/{}/{path}", self.api_base, self.config.realm_id.as_str())
    }

    /// Sends one call with the access token, refreshing and retrying once on 401, and returns the JSON body of
    /// a success or the classified error.
    async fn call(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, ConnectorError> {
        let reply = self.send(method, path, params, body, false).await?;
        if !reply.is_success() {
            return Err(self.failure(&reply));
        }
        reply.json()
    }

    /// Classifies a failed answer, counting throttles on the limiter.
    ///
    /// Intuit sends no Retry-After with a throttle; the default wait (a minute) runs on the limiter's clock, so a
    /// sandbox running its limits faster is waited out at the same speed.
    fn failure(&self, reply: &Reply) -> ConnectorError {
        match classify::classify(reply) {
            ConnectorError::RateLimited { retry_after, message } => {
                self.limiter.record_throttle();
                let retry_after = match crate::http::retry_after(&reply.headers) {
                    Some(given) => Some(given),
                    None => retry_after.map(|d| d.div_f64(self.limiter.speedup())),
                };
                ConnectorError::RateLimited { retry_after, message }
            }
            other => other,
        }
    }

    /// Sends one request under the limiter (a batch call takes a batch permit), with the current access token;
    /// when QBO refuses the token (401) it is refreshed once (one refresh per connection at a time) and the
    /// request is sent again under a new permit. The answer is returned as it is.
    async fn send(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, String)],
        body: Option<&Value>,
        batch: bool,
    ) -> Result<Reply, ConnectorError> {
        let url = self.url(path);
        let minor = self.config.minor_version.to_string();
        let build = |token: &str| {
            let mut req = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(token)
                .header(reqwest::header::ACCEPT, "application/json")
                .query(params)
                .query(&[("minorversion", minor.as_str())]);
            if let Some(b) = body {
                req = req.json(b);
            }
            req
        };
        let token = self.tokens.access_token().await?;
        let reply = {
            let _permit = if batch { self.limiter.acquire_batch().await } else { self.limiter.acquire().await };
            http::send(build(&token)).await?
        };
        if reply.status.as_u16() != 401 {
            return Ok(reply);
        }
        tracing::debug!("QuickBooks refused the access token; refreshing once");
        let token = self.tokens.refresh_after_401(&token).await?;
        let _permit = if batch { self.limiter.acquire_batch().await } else { self.limiter.acquire().await };
        http::send(build(&token)).await
    }

    /// Reads one entity; `None` when QBO says it does not exist.
    pub async fn read(&self, entity: &str, id: &str) -> Result<Option<Record>, ConnectorError> {
        query::check_entity(entity)?;
        // The company's one Preferences document is read at `/preferences`, without an id (its Id is "1").
        let path = if entity.eq_ignore_ascii_case("Preferences") {
            "preferences".to_string()
        } else {
            format!("{}/{}", entity.to_ascii_lowercase(), http::path_segment(id))
        };
        match self.call(Method::GET, &path, &[], None).await {
            Ok(body) => unwrap_entity(body, entity).map(Some),
            Err(ConnectorError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs one query statement as written and returns its rows.
    pub async fn query_once(&self, sql: &str) -> Result<Vec<Record>, ConnectorError> {
        let body = self.call(Method::GET, "query", &[("query", sql.to_string())], None).await?;
        query_rows(&body)
    }

    /// Runs a query and returns every row: a statement without STARTPOSITION/MAXRESULTS is paged 1,000 rows at
    /// a time until a short page; one that chooses its own page runs once.
    pub async fn query(&self, sql: &str) -> Result<Vec<Record>, ConnectorError> {
        if query::has_paging_clause(sql) || query::is_count(sql) {
            return self.query_once(sql).await;
        }
        let mut all = Vec::new();
        let mut start = 1u32;
        loop {
            let page = format!("{} STARTPOSITION {start} MAXRESULTS {}", sql.trim_end(), query::MAX_PAGE);
            let rows = self.query_once(&page).await?;
            let n = rows.len() as u32;
            all.extend(rows);
            if n < query::MAX_PAGE {
                return Ok(all);
            }
            start += n;
        }
    }

    /// Runs a built query page by page until `limit` rows (or all rows) are read.
    pub async fn query_paged(&self, builder: &QueryBuilder, limit: Option<u32>) -> Result<Vec<Record>, ConnectorError> {
        let mut all = Vec::new();
        let mut start = 1u32;
        loop {
            let want = match limit {
                Some(l) => l.saturating_sub(all.len() as u32).min(query::MAX_PAGE),
                None => query::MAX_PAGE,
            };
            if want == 0 {
                return Ok(all);
            }
            let sql = builder.clone().start_position(start).max_results(want).build();
            let rows = self.query_once(&sql).await?;
            let n = rows.len() as u32;
            all.extend(rows);
            if n < want {
                return Ok(all);
            }
            start += n;
        }
    }

    /// The company's name, from `companyinfo`.
    pub async fn company_name(&self) -> Result<String, ConnectorError> {
        let realm = self.config.realm_id.as_str().to_string();
        let body = self.call(Method::GET, &format!("companyinfo/{realm}"), &[], None).await?;
        let info = unwrap_entity(body, "CompanyInfo")?;
        info.get("CompanyName")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| unexpected("CompanyInfo has no CompanyName"))
    }

    /// Posts an entity body (create, or update when it carries `Id` and `SyncToken`).
    async fn post_entity(
        &self,
        entity: &str,
        body: &Value,
        request_id: Option<&str>,
    ) -> Result<Record, ConnectorError> {
        let params: Vec<(&str, String)> = request_id.map(|r| vec![("requestid", r.to_string())]).unwrap_or_default();
        let answer = self.call(Method::POST, &entity.to_ascii_lowercase(), &params, Some(body)).await?;
        unwrap_entity(answer, entity)
    }

    fn sparse_body(id: &str, sync_token: &Value, fields: &Record) -> Value {
        let mut body = fields.clone();
        for k in ["Id", "SyncToken", "sparse"] {
            body.remove(k);
        }
        body.insert("Id".into(), Value::String(id.to_string()));
        body.insert("SyncToken".into(), sync_token.clone());
        body.insert("sparse".into(), Value::Bool(true));
        Value::Object(body)
    }
}

#[async_trait]
impl Connector for QuickbooksConnector {
    fn system(&self) -> &'static str {
        "quickbooks"
    }

    fn record_version(&self, record: &Record) -> Option<String> {
        record.get("SyncToken").and_then(|v| v.as_str()).map(str::to_string)
    }

    /// 6240: the DisplayName (or an item's Name) is taken; 6140: a document with this DocNumber exists.
    fn is_duplicate_error(&self, err: &ConnectorError) -> bool {
        matches!(err, ConnectorError::Validation { code, .. } if code == "6240" || code == "6140")
    }

    fn rate_limit_policy(&self) -> RateLimitPolicy {
        quickbooks_policy()
    }

    #[tracing::instrument(skip_all, fields(system = "quickbooks"), err)]
    async fn test_connection(&self) -> Result<String, ConnectorError> {
        self.company_name().await
    }

    #[tracing::instrument(skip_all, fields(system = "quickbooks", object, id), err)]
    async fn get(&self, object: &str, id: &str, _fields: &[String]) -> Result<Option<Record>, ConnectorError> {
        // QBO has no projections: the whole entity is always returned.
        self.read(object, id).await
    }

    #[tracing::instrument(skip_all, fields(system = "quickbooks", object = %query.object), err)]
    async fn find(&self, query: &FindQuery) -> Result<Vec<Record>, ConnectorError> {
        let mut builder = QueryBuilder::new(&query.object)?;
        for (field, value) in &query.equals {
            let (field, op) = crate::split_comparison(field);
            builder = match value {
                Value::Array(values) if op == "=" => builder.in_list(field, values)?,
                v => builder.compare(field, op, v)?,
            };
        }
        self.query_paged(&builder, query.limit).await
    }

    /// Creates with `requestid` derived from `idempotency_key`: QBO answers a repeat with the first result.
    #[tracing::instrument(skip_all, fields(system = "quickbooks", object), err)]
    async fn create(&self, object: &str, record: &Record, idempotency_key: &str) -> Result<Record, ConnectorError> {
        query::check_entity(object)?;
        if idempotency_key.is_empty() {
            return Err(ConnectorError::Validation {
                code: "missing_idempotency_key".into(),
                message: format!("creating a QuickBooks {object} needs an idempotency key"),
                field: None,
            });
        }
        let rid = request_id(idempotency_key);
        self.post_entity(object, &Value::Object(record.clone()), Some(&rid)).await
    }

    /// Sparse update from the current SyncToken; a stale token (another writer got there first) is re-read and
    /// retried once before it is reported as a conflict.
    #[tracing::instrument(skip_all, fields(system = "quickbooks", object, id), err)]
    async fn update(&self, object: &str, id: &str, fields: &Record) -> Result<Record, ConnectorError> {
        query::check_entity(object)?;
        let mut attempt = 0;
        loop {
            let current = self.read(object, id).await?.ok_or_else(|| ConnectorError::NotFound {
                message: format!("QuickBooks {object} {id} does not exist"),
            })?;
            let sync_token = current
                .get("SyncToken")
                .cloned()
                .ok_or_else(|| unexpected(&format!("{object} {id} has no SyncToken")))?;
            let body = Self::sparse_body(id, &sync_token, fields);
            match self.post_entity(object, &body, None).await {
                Err(ConnectorError::Conflict { .. }) if attempt == 0 => attempt += 1,
                other => return other,
            }
        }
    }

    /// Pages are 1,000 rows (QuickBooks' most); the page token is the next page's `STARTPOSITION`.
    #[tracing::instrument(skip_all, fields(system = "quickbooks", object, %since), err)]
    async fn changes_page(
        &self,
        object: &str,
        since: DateTime<Utc>,
        _fields: &[String],
        page: Option<&str>,
    ) -> Result<Changes, ConnectorError> {
        let page = match page {
            None => ChangesPage { from: since, skip: 0 },
            Some(token) => ChangesPage::parse(token)?,
        };
        let mut builder = QueryBuilder::new(object)?
            .compare("MetaData.LastUpdatedTime", ">=", &Value::String(format_timestamp(page.from)))?;
        // A deactivation is a change too: without this filter QuickBooks leaves inactive rows out.
        if is_name_list(object) {
            builder = builder.in_list("Active", &[Value::Bool(true), Value::Bool(false)])?;
        }
        let sql =
            builder.order_by("MetaData.LastUpdatedTime", true)?.start_position(page.skip + 1).max_results(query::MAX_PAGE).build();
        let records = self.query_once(&sql).await?;
        let full = u32::try_from(records.len()).unwrap_or(u32::MAX) >= query::MAX_PAGE;
        let next_page = if full { Some(page.next(records.iter().map(|r| self.change_timestamp(r))).token()) } else { None };
        Ok(Changes { records, next_page })
    }

    /// The change feed's `Deleted` rows (`{"Id", "status": "Deleted", "MetaData": {"LastUpdatedTime"}}`) of
    /// `object`. Name-list entities are never deleted: their deactivations come through [`Connector::changes_page`].
    #[tracing::instrument(skip_all, fields(system = "quickbooks", object, %since), err)]
    async fn deletions_since(
        &self,
        object: &str,
        since: DateTime<Utc>,
        _fields: &[String],
    ) -> Result<Changes, ConnectorError> {
        if is_name_list(object) {
            return Ok(Changes::default());
        }
        let feed = self.cdc(&[object], since).await?;
        let mut deleted = feed.of(object).deleted;
        deleted.sort_by_key(|d| d.last_updated);
        let records = deleted
            .into_iter()
            .map(|d| {
                let mut rec = Record::new();
                rec.insert("Id".into(), Value::String(d.id));
                rec.insert("status".into(), Value::String("Deleted".into()));
                if let Some(t) = d.last_updated {
                    rec.insert("MetaData".into(), serde_json::json!({"LastUpdatedTime": format_timestamp(t)}));
                }
                rec
            })
            .collect();
        Ok(Changes { records, next_page: None })
    }

    fn is_deleted(&self, record: &Record) -> bool {
        record.get("status").and_then(Value::as_str) == Some("Deleted")
    }

    fn active_field(&self, object: &str) -> Option<&'static str> {
        is_name_list(object).then_some("Active")
    }

    /// `POST /{entity}?operation=delete` with the current SyncToken; `false` when the record was already gone.
    /// Name-list entities are refused: QuickBooks does not delete them (deactivate them with `Active: false`).
    #[tracing::instrument(skip_all, fields(system = "quickbooks", object, id), err)]
    async fn delete(&self, object: &str, id: &str) -> Result<bool, ConnectorError> {
        query::check_entity(object)?;
        if is_name_list(object) {
            return Err(ConnectorError::Validation {
                code: "unsupported".into(),
                message: format!("QuickBooks does not delete {object} records; make them inactive (Active = false)"),
                field: Some("Active".into()),
            });
        }
        let Some(current) = self.read(object, id).await? else { return Ok(false) };
        let sync_token = current.get("SyncToken").cloned().ok_or_else(|| unexpected(&format!("{object} {id} has no SyncToken")))?;
        let body = serde_json::json!({"Id": id, "SyncToken": sync_token});
        let params = [("operation", "delete".to_string())];
        self.call(Method::POST, &object.to_ascii_lowercase(), &params, Some(&body)).await?;
        Ok(true)
    }

    fn change_timestamp(&self, record: &Record) -> Option<DateTime<Utc>> {
        record.get("MetaData").and_then(|m| m.get("LastUpdatedTime")).and_then(|v| v.as_str()).and_then(parse_timestamp)
    }

    fn encode_invoice(&self, invoice: &ledgerlink_model::Invoice) -> Result<Record, ConnectorError> {
        invoice::encode_invoice(invoice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_change_poll_pages_by_time_and_only_by_position_inside_a_crowded_second() {
        let t = |s: i64| DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap();
        let first = ChangesPage { from: t(0), skip: 0 };
        // The page ended at a later second: the next one starts at that second, from its first row.
        let stamps = (0..1000).map(|i| Some(t(i / 30)));
        assert_eq!(first.next(stamps), ChangesPage { from: t(33), skip: 0 });
        // A whole page inside one second: on by position, a hundred rows back.
        let crowded = first.next((0..1000).map(|_| Some(t(0))));
        assert_eq!(crowded, ChangesPage { from: t(0), skip: 900 });
        assert_eq!(crowded.next((0..1000).map(|_| Some(t(0)))), ChangesPage { from: t(0), skip: 1800 });
        // Tokens survive the round trip.
        assert_eq!(ChangesPage::parse(&crowded.token()).unwrap(), crowded);
        assert!(ChangesPage::parse("1001").is_err());
    }

    #[test]
    fn request_ids_are_kept_or_hashed_deterministically() {
        assert_eq!(request_id("inv-42"), "inv-42");
        let long = "flow:opportunity-to-invoice:006000000000001AAA:create-invoice:v1";
        let a = request_id(long);
        assert_eq!(a.len(), MAX_REQUEST_ID);
        assert_eq!(a, request_id(long));
        assert_ne!(a, request_id(&format!("{long}x")));
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        let fifty = "x".repeat(50);
        assert_eq!(request_id(&fifty), fifty);
    }

    #[test]
    fn envelopes_and_query_rows_are_unwrapped() {
        let r = unwrap_entity(json!({"Customer": {"Id": "1"}, "time": "t"}), "customer").unwrap();
        assert_eq!(r["Id"], json!("1"));
        assert!(unwrap_entity(json!({"time": "t"}), "Customer").is_err());
        let rows = query_rows(
            &json!({"QueryResponse": {"Customer": [{"Id": "1"}, {"Id": "2"}], "startPosition": 1, "maxResults": 2}}),
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        let none = query_rows(&json!({"QueryResponse": {}, "time": "t"})).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn timestamps_parse_and_format() {
        let t = parse_timestamp("2015-07-24T10:35:08-07:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2015-07-24T17:35:08+00:00");
        assert_eq!(format_timestamp(t + chrono::TimeDelta::milliseconds(900)), "2015-07-24T17:35:08+00:00");
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn sparse_bodies_carry_id_and_current_sync_token_only() {
        let mut fields = Record::new();
        fields.insert("SyncToken".into(), json!("0"));
        fields.insert("Id".into(), json!("999"));
        fields.insert("DisplayName".into(), json!("New"));
        let b = QuickbooksConnector::sparse_body("7", &json!("3"), &fields);
        assert_eq!(b, json!({"Id": "7", "SyncToken": "3", "sparse": true, "DisplayName": "New"}));
    }
}
