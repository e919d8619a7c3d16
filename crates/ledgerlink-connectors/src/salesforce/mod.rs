//! Salesforce connector (REST API).
//!
//! Layout: [`SalesforceConnector`] implements [`Connector`] over `{instance_url}/services/data/v{version}/…` and
//! offers calls of its own ([`SalesforceConnector::query`], [`SalesforceConnector::upsert_by_external_id`],
//! [`SalesforceConnector::deleted_since`], [`SalesforceConnector::updated_since`], and typed access through
//! [`SalesforceConnector::typed`] with the records of [`model`]); [`soql`] builds escaped SOQL; [`classify`] maps
//! error arrays to [`ConnectorError`]; [`collections`] batches single writes into sObject Collections calls, and
//! [`batching`] is the connector whose creates and updates go through it;
//! [`changes`] combines `SystemModstamp` polling with the `deleted/` feed; [`budget`] watches
//! `Sforce-Limit-Info` on every answer and fails fast before the daily budget runs out; [`jwt`] is the JWT
//! bearer grant. Tokens come from a [`TokenManager`], either refreshed with the refresh token (client
//! credentials in the form) or re-minted from a JWT assertion ([`SalesforceAuth`]); a 401 `INVALID_SESSION_ID`
//! triggers one renewal and one retry.
//!
//! Creates and retries: Salesforce has no request id. A create of an object with a configured idempotency field
//! (an External ID custom field, [`SalesforceConnector::with_idempotency_field`]) is an upsert by that field,
//! with the record's own value or else the idempotency key, so repeating it cannot make a second record. Other
//! creates, after an answer that leaves the outcome unknown, look for the record (same field values, created from
//! a few minutes before the attempt on) before reporting: found, it is returned as created; not found, the error
//! says the create did not happen (`outcome_unknown: false`), so the caller's retry may create it again.

pub mod batching;
pub mod budget;
pub mod changes;
pub mod classify;
pub mod collections;
pub mod jwt;
pub mod reads;
pub mod model;
pub mod soql;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

pub use budget::{BudgetGuard, BudgetReserve};
pub use changes::{ChangeBatch, ChangeFeed, FeedState};
pub use collections::{CollectionsWriter, WriteOutcome};
pub use jwt::JwtBearerGrant;
pub use model::SObject;
pub use soql::Soql;

use crate::auth::{ClientAuth, RefreshConfig, TokenGrant, TokenManager, TokenStore};
use crate::http::{self, Reply};
use crate::{Changes, Connector, ConnectorError, FindQuery, RateLimitPolicy, Record};

/// The API version used when none is configured.
pub const DEFAULT_API_VERSION: &str = "59.0";

/// The daily budget assumed until a `Sforce-Limit-Info` header says otherwise.
pub const DEFAULT_DAILY_BUDGET: u64 = 100_000;

/// Where and how to reach one Salesforce org.
#[derive(Debug, Clone)]
pub struct SalesforceConfig {
    /// `https://yourorg.my.salesforce.com` (no trailing path).
    pub instance_url: String,
    pub token_url: String,
    /// `59.0` (without the `v`).
    pub api_version: String,
    pub client_id: String,
    pub client_secret: SecretString,
}

/// How a connection obtains its access tokens.
#[derive(Clone)]
pub enum SalesforceAuth {
    /// The web-server flow's refresh token, exchanged with the configuration's client id and secret.
    RefreshToken,
    /// The JWT bearer flow: an RS256 assertion signed with the key whose certificate the connected app holds.
    /// `audience` is the login URL (`https://login.salesforce.com` or `https://test.salesforce.com`).
    JwtBearer { client_id: String, username: String, private_key_pem: SecretString, audience: String },
}

impl std::fmt::Debug for SalesforceAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SalesforceAuth::RefreshToken => f.write_str("RefreshToken"),
            SalesforceAuth::JwtBearer { client_id, username, audience, .. } => f
                .debug_struct("JwtBearer")
                .field("client_id", client_id)
                .field("username", username)
                .field("private_key_pem", &"[redacted]")
                .field("audience", audience)
                .finish(),
        }
    }
}

/// Deleted records reported by `GET /sobjects/{Object}/deleted/`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeletedRecords {
    pub records: Vec<DeletedRecord>,
    /// Deletions before this are no longer available (the recycle bin keeps about 15 days).
    pub earliest_date_available: Option<DateTime<Utc>>,
    /// The answer covers deletions up to this time.
    pub latest_date_covered: Option<DateTime<Utc>>,
}

/// One deleted record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeletedRecord {
    pub id: String,
    pub deleted_date: DateTime<Utc>,
}

/// Ids changed in a window, from `GET /sobjects/{Object}/updated/`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpdatedIds {
    pub ids: Vec<String>,
    pub latest_date_covered: Option<DateTime<Utc>>,
}

/// One Salesforce org's client.
pub struct SalesforceConnector {
    config: SalesforceConfig,
    instance_url: String,
    tokens: TokenManager,
    http: reqwest::Client,
    budget: BudgetGuard,
    /// Object → External ID field that makes its creates idempotent upserts.
    idempotency_fields: HashMap<String, String>,
}

impl std::fmt::Debug for SalesforceConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceConnector")
            .field("instance_url", &self.instance_url)
            .field("api_version", &self.config.api_version)
            .finish_non_exhaustive()
    }
}

/// Parses `api-usage=10018/100000` (possibly among other comma-separated entries).
pub fn parse_limit_info(header: &str) -> Option<(u64, u64)> {
    header.split(',').find_map(|part| {
        let rest = part.trim().strip_prefix("api-usage=")?;
        let (used, max) = rest.split_once('/')?;
        Some((used.trim().parse().ok()?, max.trim().parse().ok()?))
    })
}

/// Parses a Salesforce timestamp (`2024-01-15T10:30:00.000+0000`, or RFC 3339).
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Removes the `attributes` metadata from a record and from nested relationship records.
fn strip_attributes(record: &mut Record) {
    record.remove("attributes");
    for value in record.values_mut() {
        match value {
            Value::Object(inner) => strip_attributes(inner),
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(inner) = item {
                        strip_attributes(inner);
                    }
                }
            }
            _ => {}
        }
    }
}

/// `2024-01-15`: a date, which SOQL writes without quotes.
fn looks_like_date(text: &str) -> bool {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok()
}

fn unexpected(message: &str) -> ConnectorError {
    ConnectorError::Transient { message: format!("unexpected Salesforce answer: {message}"), outcome_unknown: true }
}

impl SalesforceConnector {
    /// A connection authorised with a refresh token.
    pub fn new(config: SalesforceConfig, tokens: Arc<dyn TokenStore>, http: reqwest::Client) -> Self {
        let refresh = RefreshConfig {
            token_url: config.token_url.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            client_auth: ClientAuth::Form,
        };
        let tokens = TokenManager::new(tokens, refresh, http.clone());
        Self::with_token_manager(config, tokens, http)
    }

    /// A connection authorised as `auth` says. Fails when the JWT settings or key are unusable.
    pub fn with_auth(
        config: SalesforceConfig,
        auth: SalesforceAuth,
        tokens: Arc<dyn TokenStore>,
        http: reqwest::Client,
    ) -> Result<Self, ConnectorError> {
        match auth {
            SalesforceAuth::RefreshToken => Ok(Self::new(config, tokens, http)),
            SalesforceAuth::JwtBearer { client_id, username, private_key_pem, audience } => {
                let grant = JwtBearerGrant::new(
                    &config.token_url,
                    &client_id,
                    &username,
                    &audience,
                    private_key_pem.expose_secret(),
                )?;
                let grant: Arc<dyn TokenGrant> = Arc::new(grant);
                let tokens = TokenManager::with_grant(tokens, grant, http.clone());
                Ok(Self::with_token_manager(config, tokens, http))
            }
        }
    }

    fn with_token_manager(config: SalesforceConfig, tokens: TokenManager, http: reqwest::Client) -> Self {
        SalesforceConnector {
            instance_url: config.instance_url.trim_end_matches('/').to_string(),
            tokens,
            config,
            http,
            budget: BudgetGuard::default(),
            idempotency_fields: HashMap::new(),
        }
    }

    /// Keeps `reserve` of the daily API budget back; once fewer calls remain, calls fail with
    /// [`ConnectorError::BudgetExhausted`] until a probe after `recheck_after` finds the budget recovered.
    pub fn with_budget(mut self, reserve: BudgetReserve, recheck_after: Duration) -> Self {
        self.budget = BudgetGuard::new(reserve, recheck_after);
        self
    }

    /// Makes creates of `object` idempotent upserts by its External ID field `field`.
    pub fn with_idempotency_field(mut self, object: &str, field: &str) -> Result<Self, ConnectorError> {
        soql::check_object(object)?;
        soql::check_field(field)?;
        self.idempotency_fields.insert(object.to_string(), field.to_string());
        Ok(self)
    }

    /// The External ID field that makes creates of `object` idempotent, if one is configured.
    fn idempotency_field(&self, object: &str) -> Option<&str> {
        self.idempotency_fields.get(object).map(String::as_str)
    }

    /// The value a create of `object` upserts by: the record's own value of `field`, else the idempotency key.
    fn idempotency_value(&self, object: &str, field: &str, body: &Record, idempotency_key: &str) -> Result<String, ConnectorError> {
        match body.get(field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ if !idempotency_key.is_empty() => Ok(idempotency_key.to_string()),
            _ => Err(ConnectorError::Validation {
                code: "invalid_external_id".into(),
                message: format!("a {object} create needs a value for its idempotency field `{field}` or an idempotency key"),
                field: Some(field.to_string()),
            }),
        }
    }

    /// The connection's token manager (shared refresh state).
    pub fn token_manager(&self) -> &TokenManager {
        &self.tokens
    }

    /// The daily budget guard.
    pub fn budget(&self) -> &BudgetGuard {
        &self.budget
    }

    /// The last `Sforce-Limit-Info` usage seen: (calls used today, daily maximum).
    pub fn api_usage(&self) -> Option<(u64, u64)> {
        self.budget.usage()
    }

    /// Typed create, read, update, upsert and query of the objects in [`model`].
    pub fn typed(&self) -> Typed<'_> {
        Typed { sf: self }
    }

    pub(crate) fn data_path(&self, rest: &str) -> String {
        format!("{}/services/data/v{}/{rest}", self.instance_url, self.config.api_version.trim_start_matches('v'))
    }

    fn record_limits(&self, reply: &Reply) {
        if let Some((used, max)) = reply.header("sforce-limit-info").and_then(parse_limit_info) {
            self.budget.observe(used, max);
        }
    }

    /// Sends one call to an absolute URL with the access token, renewing it and retrying once on an invalid
    /// session, and returns the raw answer (success or not) after recording the limit header. Refused before
    /// sending when the daily budget is down to its reserve.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &str,
        params: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Reply, ConnectorError> {
        let build = |token: &str| {
            let mut req = self
                .http
                .request(method.clone(), url)
                .bearer_auth(token)
                .header(reqwest::header::ACCEPT, "application/json");
            if !params.is_empty() {
                req = req.query(params);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            req
        };
        self.budget.check()?;
        let reply = self.tokens.send_with_refresh(build, classify::is_invalid_session).await?;
        self.record_limits(&reply);
        Ok(reply)
    }

    /// [`Self::send`], with a non-success answer classified.
    async fn call(
        &self,
        method: Method,
        url: &str,
        params: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, ConnectorError> {
        let reply = self.send(method, url, params, body).await?;
        if !reply.is_success() {
            return Err(classify::classify(&reply));
        }
        reply.json()
    }

    /// Runs a SOQL query and returns every row, following `nextRecordsUrl` until `done`.
    #[tracing::instrument(skip_all, fields(system = "salesforce"), err)]
    pub async fn query(&self, soql: &str) -> Result<Vec<Record>, ConnectorError> {
        self.query_from("query", soql).await
    }

    /// [`Self::query`] through `queryAll`: deleted (recycle bin) and archived rows are included, with
    /// `IsDeleted` telling them apart.
    #[tracing::instrument(skip_all, fields(system = "salesforce"), err)]
    pub async fn query_all(&self, soql: &str) -> Result<Vec<Record>, ConnectorError> {
        self.query_from("queryAll", soql).await
    }

    async fn query_from(&self, resource: &str, soql: &str) -> Result<Vec<Record>, ConnectorError> {
        let mut all = self.query_page(resource, soql, None).await?;
        while let Some(next) = all.next_page.take() {
            let page = self.query_page(resource, soql, Some(&next)).await?;
            all.records.extend(page.records);
            all.next_page = page.next_page;
        }
        Ok(all.records)
    }

    /// One batch of a query: the first (`next` is `None`) or the one a previous batch's `nextRecordsUrl` names.
    async fn query_page(&self, resource: &str, soql: &str, next: Option<&str>) -> Result<Changes, ConnectorError> {
        let page = match next {
            None => self.call(Method::GET, &self.data_path(resource), &[("q", soql.to_string())], None).await?,
            Some(next) => self.call(Method::GET, &self.next_url(next)?, &[], None).await?,
        };
        let Value::Object(mut page) = page else { return Err(unexpected("the query answer is not an object")) };
        let Some(Value::Array(rows)) = page.remove("records") else {
            return Err(unexpected("the query answer has no records"));
        };
        let mut records = Vec::with_capacity(rows.len());
        for r in rows {
            if let Value::Object(mut rec) = r {
                strip_attributes(&mut rec);
                records.push(rec);
            }
        }
        let done = page.get("done").and_then(|d| d.as_bool()).unwrap_or(true);
        let next_page = match page.remove("nextRecordsUrl") {
            Some(Value::String(n)) if !done => Some(n),
            _ => None,
        };
        Ok(Changes { records, next_page })
    }

    /// The absolute URL of a `nextRecordsUrl`. Salesforce sends a bare path; an absolute URL is accepted only on
    /// the instance itself, so the access token is never sent anywhere else.
    fn next_url(&self, next: &str) -> Result<String, ConnectorError> {
        if next.starts_with('/') {
            Ok(format!("{}{next}", self.instance_url))
        } else if next.starts_with(&format!("{}/", self.instance_url)) {
            Ok(next.to_string())
        } else {
            Err(unexpected(&format!("nextRecordsUrl `{next}` does not point at the instance")))
        }
    }

    /// Reads one record (`fields` empty = all fields); `None` when it does not exist.
    pub async fn read(&self, object: &str, id: &str, fields: &[String]) -> Result<Option<Record>, ConnectorError> {
        soql::check_object(object)?;
        for f in fields {
            soql::check_field(f)?;
        }
        let url = self.data_path(&format!("sobjects/{object}/{}", http::path_segment(id)));
        let params: Vec<(&str, String)> =
            if fields.is_empty() { Vec::new() } else { vec![("fields", fields.join(","))] };
        match self.call(Method::GET, &url, &params, None).await {
            Ok(Value::Object(mut rec)) => {
                strip_attributes(&mut rec);
                Ok(Some(rec))
            }
            Ok(_) => Err(unexpected(&format!("the {object} answer is not an object"))),
            Err(ConnectorError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads back a record just written; if that read fails, the written fields with the id stand in for it,
    /// because the write itself succeeded and must not be reported as failed.
    async fn read_back(&self, object: &str, id: &str, written: &Record) -> Record {
        match self.read(object, id, &[]).await {
            Ok(Some(rec)) => rec,
            other => {
                if let Err(e) = other {
                    tracing::warn!(object, error = %e, "reading back a written record failed; using the written fields");
                }
                let mut rec = written.clone();
                rec.insert("Id".into(), Value::String(id.to_string()));
                rec
            }
        }
    }

    /// After a create whose outcome is unknown, looks for the record: the same filterable field values, created
    /// since shortly before the attempt. One match is the record the create made; no match means the create did
    /// not happen, said with `outcome_unknown: false` so a retry may create it; anything else (several matches,
    /// or a failed look-up) keeps the outcome unknown.
    async fn settle_unknown_create(
        &self,
        object: &str,
        body: &Record,
        started: DateTime<Utc>,
        message: String,
    ) -> Result<Record, ConnectorError> {
        let unknown = |why: &str| ConnectorError::Transient {
            message: format!("{message} (the {object} may have been created; {why})"),
            outcome_unknown: true,
        };
        let mut q = match Soql::new(object).and_then(|q| q.fields(&["Id"])) {
            Ok(q) => q,
            Err(_) => return Err(unknown("it could not be looked up")),
        };
        let mut matched_on = 0;
        for (field, value) in body {
            // Text is compared without regard to case, but whether surrounding spaces were kept is not something
            // to bet a duplicate on, so such text is left out; dates and date-times are literals of their own in
            // SOQL, not strings; long text cannot be filtered: those are left out of the match too.
            let value = match value {
                Value::String(s) => {
                    if s.is_empty()
                        || s.trim() != s
                        || s.len() > 255
                        || parse_timestamp(s).is_some()
                        || looks_like_date(s)
                    {
                        continue;
                    }
                    value.clone()
                }
                Value::Number(_) | Value::Bool(_) => value.clone(),
                _ => continue,
            };
            if soql::check_field(field).is_ok() {
                q = match q.eq(field, &value) {
                    Ok(q) => q,
                    Err(_) => return Err(unknown("it could not be looked up")),
                };
                matched_on += 1;
            }
        }
        if matched_on == 0 {
            return Err(unknown("it has no field to look it up by"));
        }
        // Clocks differ: look back a little further than the attempt.
        let since = started - chrono::TimeDelta::minutes(5);
        let q = match q.compare_datetime("CreatedDate", ">=", since) {
            Ok(q) => q.limit(2),
            Err(_) => return Err(unknown("it could not be looked up")),
        };
        match self.query(&q.build()).await {
            Ok(rows) if rows.len() == 1 => {
                let id = self.record_id(&rows[0]).ok_or_else(|| unknown("the look-up answer has no id"))?;
                tracing::info!(object, "a create with an unknown outcome had been applied; using the record found");
                Ok(self.read_back(object, &id, body).await)
            }
            Ok(rows) if rows.is_empty() => Err(ConnectorError::Transient {
                message: format!("{message} (looked up: the {object} was not created, so it is safe to create again)"),
                outcome_unknown: false,
            }),
            Ok(_) => Err(unknown("several matching records exist, so which one it made cannot be told")),
            Err(e) => Err(unknown(&format!("looking it up failed: {e}"))),
        }
    }

    /// Deletes record `id` (it goes to the recycle bin and shows in [`Self::deleted_since`]).
    #[tracing::instrument(skip_all, fields(system = "salesforce", object, id), err)]
    pub async fn delete(&self, object: &str, id: &str) -> Result<(), ConnectorError> {
        soql::check_object(object)?;
        let url = self.data_path(&format!("sobjects/{object}/{}", http::path_segment(id)));
        self.call(Method::DELETE, &url, &[], None).await?;
        Ok(())
    }

    /// Deleted records of `object` between `start` and `end` (`GET /sobjects/{object}/deleted/`).
    #[tracing::instrument(skip_all, fields(system = "salesforce", object), err)]
    pub async fn deleted_since(
        &self,
        object: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<DeletedRecords, ConnectorError> {
        let answer = self.window_call(object, "deleted", start, end).await?;
        let mut records = Vec::new();
        for item in answer.get("deletedRecords").and_then(Value::as_array).into_iter().flatten() {
            let id = item.get("id").and_then(Value::as_str);
            let date = item.get("deletedDate").and_then(Value::as_str).and_then(parse_timestamp);
            match (id, date) {
                (Some(id), Some(deleted_date)) => records.push(DeletedRecord { id: id.to_string(), deleted_date }),
                _ => {
                    return Err(unexpected(&format!("a deleted {object} entry lacks id or deletedDate: {item}")));
                }
            }
        }
        Ok(DeletedRecords {
            records,
            earliest_date_available: answer
                .get("earliestDateAvailable")
                .and_then(Value::as_str)
                .and_then(parse_timestamp),
            latest_date_covered: answer.get("latestDateCovered").and_then(Value::as_str).and_then(parse_timestamp),
        })
    }

    /// Ids of `object` changed between `start` and `end` (`GET /sobjects/{object}/updated/`).
    #[tracing::instrument(skip_all, fields(system = "salesforce", object), err)]
    pub async fn updated_since(
        &self,
        object: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<UpdatedIds, ConnectorError> {
        let answer = self.window_call(object, "updated", start, end).await?;
        let ids = answer
            .get("ids")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        Ok(UpdatedIds {
            ids,
            latest_date_covered: answer.get("latestDateCovered").and_then(Value::as_str).and_then(parse_timestamp),
        })
    }

    async fn window_call(
        &self,
        object: &str,
        feed: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Value, ConnectorError> {
        soql::check_object(object)?;
        if end <= start {
            return Err(ConnectorError::Validation {
                code: "invalid_window".into(),
                message: format!("the {feed} window of {object} must end after it starts ({start} .. {end})"),
                field: None,
            });
        }
        let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string();
        let url = self.data_path(&format!("sobjects/{object}/{feed}/"));
        self.call(Method::GET, &url, &[("start", fmt(start)), ("end", fmt(end))], None).await
    }

    /// Creates or updates the record whose external id `field` equals `value`. Returns its id and whether it was
    /// created. Several matching records are refused (nothing is changed).
    #[tracing::instrument(skip_all, fields(system = "salesforce", object, field), err)]
    pub async fn upsert_by_external_id(
        &self,
        object: &str,
        field: &str,
        value: &str,
        record: &Record,
    ) -> Result<(String, bool), ConnectorError> {
        soql::check_object(object)?;
        soql::check_field(field)?;
        if value.is_empty() {
            return Err(ConnectorError::Validation {
                code: "invalid_external_id".into(),
                message: format!("the external id `{field}` of the {object} to upsert is empty"),
                field: Some(field.to_string()),
            });
        }
        let mut body = record.clone();
        // The external id travels in the URL; Salesforce sets it on create.
        body.remove(field);
        body.remove("Id");
        body.remove("attributes");
        let url = self.data_path(&format!("sobjects/{object}/{field}/{}", http::path_segment(value)));
        let reply = self.send(Method::PATCH, &url, &[], Some(&Value::Object(body))).await?;
        match reply.status.as_u16() {
            300 => Err(ConnectorError::Validation {
                code: "MULTIPLE_CHOICES".into(),
                message: format!("several {object} records match external id {field} = {value}; nothing was changed"),
                field: Some(field.to_string()),
            }),
            200 | 201 => {
                let answer = reply.json()?;
                let id = answer
                    .get("id")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| unexpected("the upsert answer has no id"))?
                    .to_string();
                let created = answer.get("created").and_then(|v| v.as_bool()).unwrap_or(reply.status.as_u16() == 201);
                Ok((id, created))
            }
            204 => {
                // Older API versions answer an update with no body: look the id up.
                let q = Soql::new(object)?.fields(&["Id"])?.eq(field, &Value::String(value.to_string()))?.limit(2);
                let rows = self.query(&q.build()).await?;
                let id =
                    rows.first().and_then(|r| r.get("Id")).and_then(|v| v.as_str()).ok_or_else(|| {
                        unexpected(&format!("the upserted {object} {field} = {value} cannot be found"))
                    })?;
                Ok((id.to_string(), false))
            }
            _ if reply.is_success() => Err(unexpected(&format!("upsert answered {}", reply.status))),
            _ => Err(classify::classify(&reply)),
        }
    }
}

/// Typed calls over the records of [`model`] (see [`SalesforceConnector::typed`]).
#[derive(Debug, Clone, Copy)]
pub struct Typed<'a> {
    sf: &'a SalesforceConnector,
}

impl Typed<'_> {
    /// A query selecting `T`'s fields, to add conditions to.
    pub fn select<T: SObject>(&self) -> Result<Soql, ConnectorError> {
        Soql::new(T::OBJECT)?.fields(T::FIELDS)
    }

    /// Creates `record` (its writable fields) and returns the new id.
    pub async fn create<T: SObject>(&self, record: &T) -> Result<String, ConnectorError> {
        let body = model::to_payload(record)?;
        let url = self.sf.data_path(&format!("sobjects/{}", T::OBJECT));
        let answer = self.sf.call(Method::POST, &url, &[], Some(&Value::Object(body))).await?;
        answer
            .get("id")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| unexpected("the create answer has no id"))
    }

    /// Reads record `id` with all its fields (custom ones land in `extra`); `None` when it does not exist.
    pub async fn get<T: SObject>(&self, id: &str) -> Result<Option<T>, ConnectorError> {
        match self.sf.read(T::OBJECT, id, &[]).await? {
            Some(rec) => Ok(Some(model::from_record(rec)?)),
            None => Ok(None),
        }
    }

    /// Writes the fields set in `changes` to record `id` (fields left `None` are untouched).
    pub async fn update<T: SObject>(&self, id: &str, changes: &T) -> Result<(), ConnectorError> {
        let body = model::to_payload(changes)?;
        let url = self.sf.data_path(&format!("sobjects/{}/{}", T::OBJECT, http::path_segment(id)));
        self.sf.call(Method::PATCH, &url, &[], Some(&Value::Object(body))).await?;
        Ok(())
    }

    /// Creates or updates the record whose External ID `field` is `value`: (id, created).
    pub async fn upsert<T: SObject>(
        &self,
        field: &str,
        value: &str,
        record: &T,
    ) -> Result<(String, bool), ConnectorError> {
        let body = model::to_payload(record)?;
        self.sf.upsert_by_external_id(T::OBJECT, field, value, &body).await
    }

    /// Runs `soql` (every page) and reads each row as `T`.
    pub async fn query<T: SObject>(&self, soql: &str) -> Result<Vec<T>, ConnectorError> {
        self.sf.query(soql).await?.into_iter().map(model::from_record).collect()
    }
}

#[async_trait]
impl Connector for SalesforceConnector {
    fn system(&self) -> &'static str {
        "salesforce"
    }

    fn change_timestamp_fields(&self) -> &'static [&'static str] {
        &["SystemModstamp"]
    }

    /// DUPLICATE_VALUE: a unique or external-id field already holds this value.
    fn is_duplicate_error(&self, err: &ConnectorError) -> bool {
        matches!(err, ConnectorError::Validation { code, .. } if code == "DUPLICATE_VALUE")
    }

    fn rate_limit_policy(&self) -> RateLimitPolicy {
        RateLimitPolicy {
            requests_per_minute: None,
            max_concurrent: None,
            batch_requests_per_minute: None,
            max_batch_items: Some(collections::MAX_BATCH as u32),
            daily_budget: Some(self.api_usage().map(|(_, max)| max).unwrap_or(DEFAULT_DAILY_BUDGET)),
        }
    }

    /// Calls `/limits` (proves the token, the API version and the instance; records the daily allowance), then
    /// reads the org's name from `Organization`. Orgs or emulators that do not expose `Organization` to the API
    /// user are named by their instance host instead: the connection itself is proven by the first call.
    #[tracing::instrument(skip_all, fields(system = "salesforce"), err)]
    async fn test_connection(&self) -> Result<String, ConnectorError> {
        let limits = self.call(Method::GET, &self.data_path("limits"), &[], None).await?;
        if let Some(daily) = limits.get("DailyApiRequests") {
            let max = daily.get("Max").and_then(|v| v.as_u64());
            let remaining = daily.get("Remaining").and_then(|v| v.as_u64());
            if let (Some(max), Some(remaining), None) = (max, remaining, self.api_usage()) {
                self.budget.observe(max.saturating_sub(remaining), max);
            }
        }
        match self.query("SELECT Id, Name FROM Organization LIMIT 1").await {
            Ok(rows) => {
                if let Some(name) = rows.first().and_then(|r| r.get("Name")).and_then(|v| v.as_str()) {
                    return Ok(name.to_string());
                }
            }
            Err(ConnectorError::Validation { .. } | ConnectorError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let host = url::Url::parse(&self.instance_url)
            .ok()
            .and_then(|u| {
                u.host_str().map(|h| match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                })
            })
            .unwrap_or_else(|| self.instance_url.clone());
        Ok(format!("Salesforce org at {host}"))
    }

    #[tracing::instrument(skip_all, fields(system = "salesforce", object, id), err)]
    async fn get(&self, object: &str, id: &str, fields: &[String]) -> Result<Option<Record>, ConnectorError> {
        self.read(object, id, fields).await
    }

    #[tracing::instrument(skip_all, fields(system = "salesforce", object = %query.object), err)]
    async fn find(&self, query: &FindQuery) -> Result<Vec<Record>, ConnectorError> {
        let mut q = Soql::new(&query.object)?.fields(&query.fields)?;
        for (field, value) in &query.equals {
            let (field, op) = crate::split_comparison(field);
            q = match value {
                Value::Array(values) if op == "=" => q.in_list(field, values)?,
                v if op == "=" => q.eq(field, v)?,
                // SOQL compares date and date-time fields with unquoted literals: a value written as a date
                // (`2026-11-16`) or an RFC 3339 time is sent as one; anything else as an ordinary literal.
                Value::String(text) => match (NaiveDate::parse_from_str(text, "%Y-%m-%d"), DateTime::parse_from_rfc3339(text)) {
                    (Ok(day), _) => q.compare_date(field, op, day)?,
                    (_, Ok(at)) => q.compare_datetime(field, op, at.with_timezone(&Utc))?,
                    _ => q.compare(field, op, value)?,
                },
                v => q.compare(field, op, v)?,
            };
        }
        if let Some(n) = query.limit {
            q = q.limit(n);
        }
        self.query(&q.build()).await
    }

    /// Creates the record and returns it as stored. Salesforce has no request id: see the module documentation
    /// for how a repeat is kept from creating a second record (idempotency field upsert, or a look-up after an
    /// unknown outcome).
    #[tracing::instrument(skip_all, fields(system = "salesforce", object), err)]
    async fn create(&self, object: &str, record: &Record, idempotency_key: &str) -> Result<Record, ConnectorError> {
        soql::check_object(object)?;
        let mut body = record.clone();
        body.remove("Id");
        body.remove("attributes");
        if let Some(field) = self.idempotency_field(object) {
            let value = self.idempotency_value(object, field, &body, idempotency_key)?;
            body.insert(field.to_string(), Value::String(value.clone()));
            let (id, _created) = self.upsert_by_external_id(object, field, &value, &body).await?;
            return Ok(self.read_back(object, &id, &body).await);
        }
        let started = Utc::now();
        let url = self.data_path(&format!("sobjects/{object}"));
        let answer = match self.call(Method::POST, &url, &[], Some(&Value::Object(body.clone()))).await {
            Ok(answer) => answer,
            Err(ConnectorError::Transient { message, outcome_unknown: true }) => {
                return self.settle_unknown_create(object, &body, started, message).await;
            }
            Err(e) => return Err(e),
        };
        let id = answer
            .get("id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| unexpected("the create answer has no id"))?
            .to_string();
        Ok(self.read_back(object, &id, &body).await)
    }

    #[tracing::instrument(skip_all, fields(system = "salesforce", object, id), err)]
    async fn update(&self, object: &str, id: &str, fields: &Record) -> Result<Record, ConnectorError> {
        soql::check_object(object)?;
        let mut body = fields.clone();
        body.remove("Id");
        body.remove("attributes");
        let url = self.data_path(&format!("sobjects/{object}/{}", http::path_segment(id)));
        self.call(Method::PATCH, &url, &[], Some(&Value::Object(body.clone()))).await?;
        Ok(self.read_back(object, id, &body).await)
    }

    async fn delete(&self, object: &str, id: &str) -> Result<bool, ConnectorError> {
        match SalesforceConnector::delete(self, object, id).await {
            Ok(()) => Ok(true),
            // Already deleted (404 / ENTITY_IS_DELETED): the outcome asked for holds.
            Err(ConnectorError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    #[tracing::instrument(skip_all, fields(system = "salesforce", object, %since), err)]
    async fn changes_page(
        &self,
        object: &str,
        since: DateTime<Utc>,
        fields: &[String],
        page: Option<&str>,
    ) -> Result<Changes, ConnectorError> {
        let q = Soql::new(object)?
            .fields(fields)?
            .with_field("SystemModstamp")?
            .compare_datetime("SystemModstamp", ">=", since)?
            .order_by("SystemModstamp")?
            .order_by("Id")?;
        self.query_page("query", &q.build(), page).await
    }

    /// Rows of the recycle bin, through `queryAll` (`IsDeleted = true`): a deleted record keeps its fields, and
    /// its `SystemModstamp` is the time of the delete. One call per poll; only flows that ask for deletions pay it.
    #[tracing::instrument(skip_all, fields(system = "salesforce", object, %since), err)]
    async fn deletions_since(
        &self,
        object: &str,
        since: DateTime<Utc>,
        fields: &[String],
    ) -> Result<Changes, ConnectorError> {
        let q = Soql::new(object)?
            .fields(fields)?
            .with_field("SystemModstamp")?
            .with_field("IsDeleted")?
            .eq("IsDeleted", &Value::Bool(true))?
            .compare_datetime("SystemModstamp", ">=", since)?
            .order_by("SystemModstamp")?
            .order_by("Id")?;
        Ok(Changes { records: self.query_all(&q.build()).await?, next_page: None })
    }

    fn is_deleted(&self, record: &Record) -> bool {
        record.get("IsDeleted").and_then(Value::as_bool) == Some(true)
    }

    fn change_timestamp(&self, record: &Record) -> Option<DateTime<Utc>> {
        record.get("SystemModstamp").and_then(|v| v.as_str()).and_then(parse_timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limit_info_is_parsed() {
        assert_eq!(parse_limit_info("api-usage=10018/100000"), Some((10018, 100000)));
        assert_eq!(parse_limit_info("per-app-api-usage=1/10(appName=x), api-usage=5/15000"), Some((5, 15000)));
        assert_eq!(parse_limit_info("garbage"), None);
    }

    #[test]
    fn timestamps_parse_in_salesforce_format() {
        let t = parse_timestamp("2024-01-15T10:30:00.000+0000").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-01-15T10:30:00+00:00");
        assert_eq!(parse_timestamp("2024-01-15T10:30:00Z"), Some(t));
        assert!(parse_timestamp("2024-01-15").is_none());
    }

    #[test]
    fn attributes_are_stripped_recursively() {
        let mut rec = json!({
            "attributes": {"type": "Opportunity"},
            "Id": "006",
            "Account": {"attributes": {"type": "Account"}, "Name": "A"},
            "OpportunityLineItems": [{"attributes": {}, "Quantity": 1}]
        })
        .as_object()
        .unwrap()
        .clone();
        strip_attributes(&mut rec);
        assert_eq!(
            Value::Object(rec),
            json!({"Id": "006", "Account": {"Name": "A"}, "OpportunityLineItems": [{"Quantity": 1}]})
        );
    }
}
