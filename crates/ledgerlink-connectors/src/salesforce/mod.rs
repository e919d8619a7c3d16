//! Salesforce connector (REST API).
//!
//! Layout: [`SalesforceConnector`] implements [`Connector`] over `{instance_url}/services/data/v{version}/…` and
//! offers typed calls of its own ([`SalesforceConnector::query`], [`SalesforceConnector::upsert_by_external_id`],
//! [`SalesforceConnector::api_usage`]); [`soql`] builds escaped SOQL; [`classify`] maps error arrays to
//! [`ConnectorError`]. Tokens come from a [`TokenManager`] with client credentials in the form; a 401
//! `INVALID_SESSION_ID` triggers one refresh and one retry. Every answer's `Sforce-Limit-Info` is recorded so the
//! engine can stop before the daily budget runs out.

pub mod classify;
pub mod soql;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::Value;

pub use soql::Soql;

use crate::auth::{ClientAuth, RefreshConfig, TokenManager, TokenStore};
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

/// One Salesforce org's client.
pub struct SalesforceConnector {
    config: SalesforceConfig,
    instance_url: String,
    tokens: TokenManager,
    http: reqwest::Client,
    /// Last seen `api-usage=used/max`; 0 = not seen yet.
    api_used: AtomicU64,
    api_max: AtomicU64,
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

fn unexpected(message: &str) -> ConnectorError {
    ConnectorError::Transient { message: format!("unexpected Salesforce answer: {message}"), outcome_unknown: true }
}

impl SalesforceConnector {
    pub fn new(config: SalesforceConfig, tokens: Arc<dyn TokenStore>, http: reqwest::Client) -> Self {
        let refresh = RefreshConfig {
            token_url: config.token_url.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            client_auth: ClientAuth::Form,
        };
        SalesforceConnector {
            instance_url: config.instance_url.trim_end_matches('/').to_string(),
            tokens: TokenManager::new(tokens, refresh, http.clone()),
            config,
            http,
            api_used: AtomicU64::new(0),
            api_max: AtomicU64::new(0),
        }
    }

    /// The connection's token manager (shared refresh state).
    pub fn token_manager(&self) -> &TokenManager {
        &self.tokens
    }

    /// The last `Sforce-Limit-Info` usage seen: (calls used today, daily maximum).
    pub fn api_usage(&self) -> Option<(u64, u64)> {
        let max = self.api_max.load(Ordering::Relaxed);
        (max > 0).then(|| (self.api_used.load(Ordering::Relaxed), max))
    }

    fn data_path(&self, rest: &str) -> String {
        format!("{}/services/data/v{}/{rest}", self.instance_url, self.config.api_version.trim_start_matches('v'))
    }

    fn record_limits(&self, reply: &Reply) {
        if let Some((used, max)) = reply.header("sforce-limit-info").and_then(parse_limit_info) {
            self.api_used.store(used, Ordering::Relaxed);
            self.api_max.store(max, Ordering::Relaxed);
        }
    }

    /// Sends one call to an absolute URL with the access token, refreshing and retrying once on an invalid
    /// session, and returns the raw answer (success or not) after recording the limit header.
    async fn send(
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
        let mut all = Vec::new();
        let mut page = self.call(Method::GET, &self.data_path("query"), &[("q", soql.to_string())], None).await?;
        loop {
            let records = page
                .get("records")
                .and_then(|r| r.as_array())
                .ok_or_else(|| unexpected("the query answer has no records"))?;
            for r in records {
                if let Value::Object(mut rec) = r.clone() {
                    strip_attributes(&mut rec);
                    all.push(rec);
                }
            }
            let done = page.get("done").and_then(|d| d.as_bool()).unwrap_or(true);
            let next = page.get("nextRecordsUrl").and_then(|n| n.as_str()).map(str::to_string);
            match (done, next) {
                (false, Some(next)) => {
                    let url = self.next_url(&next)?;
                    page = self.call(Method::GET, &url, &[], None).await?;
                }
                _ => return Ok(all),
            }
        }
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

#[async_trait]
impl Connector for SalesforceConnector {
    fn system(&self) -> &'static str {
        "salesforce"
    }

    fn rate_limit_policy(&self) -> RateLimitPolicy {
        RateLimitPolicy {
            requests_per_minute: None,
            max_concurrent: None,
            batch_requests_per_minute: None,
            max_batch_items: None,
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
                self.api_max.store(max, Ordering::Relaxed);
                self.api_used.store(max.saturating_sub(remaining), Ordering::Relaxed);
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
            q = match value {
                Value::Array(values) => q.in_list(field, values)?,
                v => q.eq(field, v)?,
            };
        }
        if let Some(n) = query.limit {
            q = q.limit(n);
        }
        self.query(&q.build()).await
    }

    /// Creates the record and returns it as stored. Salesforce has no request id: `idempotency_key` is not sent,
    /// and after an unknown outcome the engine looks the record up before creating it again.
    #[tracing::instrument(skip_all, fields(system = "salesforce", object), err)]
    async fn create(&self, object: &str, record: &Record, _idempotency_key: &str) -> Result<Record, ConnectorError> {
        soql::check_object(object)?;
        let mut body = record.clone();
        body.remove("Id");
        body.remove("attributes");
        let url = self.data_path(&format!("sobjects/{object}"));
        let answer = self.call(Method::POST, &url, &[], Some(&Value::Object(body.clone()))).await?;
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

    #[tracing::instrument(skip_all, fields(system = "salesforce", object, %since), err)]
    async fn changes_since(
        &self,
        object: &str,
        since: DateTime<Utc>,
        fields: &[String],
    ) -> Result<Changes, ConnectorError> {
        let q = Soql::new(object)?
            .fields(fields)?
            .with_field("SystemModstamp")?
            .compare_datetime("SystemModstamp", ">=", since)?
            .order_by("SystemModstamp")?
            .order_by("Id")?;
        Ok(Changes { records: self.query(&q.build()).await? })
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
