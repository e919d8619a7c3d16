//! Webhooks as Intuit sends them: aggregated change notifications, signed, retried.
//!
//! Layout: [`Webhooks`] holds the registered [`Endpoint`]s, the events written since the last window, the
//! [`Delivery`] log and the [`WebhookConfig`]. API writes call [`Webhooks::record`]; the task started by
//! [`Webhooks::spawn`] wakes once per aggregation window (default 200 ms; production waits 1–5 minutes), collapses
//! repeated events for the same object and operation, and sends one POST per endpoint (CloudEvents: at most 100
//! events per POST) in the endpoint's format — legacy `eventNotifications` or a CloudEvents array — with header
//! `intuit-signature` = base64(HMAC-SHA256(verifier token, raw body)). A non-2xx answer or no answer within 3 s is
//! retried after 10 s, 20 s, 30 s, 5 min, 20 min, 2 h, 4 h and then every 6 h (four more times, then the delivery
//! is abandoned), every delay divided by `retry_time_scale`. The sender speaks plain HTTP/1.1 over TCP (endpoints
//! under test run on loopback); `https://` endpoints are refused at registration.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::entities::{ChangeEvent, EntityKind};
use super::time::{api_time, company_offset};
use crate::clock::Clock;

/// Intuit's retry delays, in seconds, before the every-six-hours tail.
const RETRY_SCHEDULE: [u64; 7] = [10, 20, 30, 300, 1200, 7200, 14400];
const TAIL_RETRY: u64 = 6 * 3600;
const TAIL_RETRIES: usize = 4;
const MAX_CLOUDEVENTS_PER_POST: usize = 100;

/// Payload format of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Legacy,
    Cloudevents,
}

/// A registered receiver. `entities` empty = every entity.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub id: u64,
    pub url: String,
    pub format: Format,
    pub entities: Vec<String>,
}

/// Tunables of the sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Aggregation window in milliseconds.
    pub window_ms: u64,
    /// Retry delays are divided by this (1 = Intuit's real schedule).
    pub retry_time_scale: f64,
    /// How long the receiver has to answer, in milliseconds (Intuit: 3 s).
    pub timeout_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            window_ms: 200,
            retry_time_scale: 1.0,
            timeout_ms: 3000,
        }
    }
}

/// One attempt to deliver a POST.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub at: String,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// One POST and its attempts.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: u64,
    pub endpoint_id: u64,
    pub url: String,
    pub format: Format,
    pub events: usize,
    pub body: String,
    pub signature: String,
    pub attempts: Vec<Attempt>,
    /// "pending", "delivered" or "abandoned".
    pub state: String,
}

#[derive(Debug, Default)]
struct Inner {
    endpoints: Vec<Endpoint>,
    pending: Vec<(String, ChangeEvent)>,
    deliveries: Vec<Delivery>,
    config: WebhookConfig,
    next_id: u64,
}

/// The webhook sender of one sandbox.
#[derive(Debug, Default)]
pub struct Webhooks {
    inner: Mutex<Inner>,
}

impl Webhooks {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an endpoint from the admin body `{"url", "format", "entities"}`; errors name the field.
    pub fn register(&self, body: &Value) -> Result<Endpoint, String> {
        let url = body
            .get("url")
            .and_then(Value::as_str)
            .ok_or("`url` (a string) is required")?;
        let parsed = url::Url::parse(url).map_err(|e| format!("`url` is not a valid URL: {e}"))?;
        if parsed.scheme() != "http" || parsed.host_str().is_none() {
            return Err(format!(
                "`url` must be an http:// URL with a host, got {url}"
            ));
        }
        let format = match body.get("format") {
            None | Some(Value::Null) => Format::Legacy,
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|_| format!("`format` must be \"legacy\" or \"cloudevents\", got {v}"))?,
        };
        let mut entities = Vec::new();
        match body.get("entities") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                for e in list {
                    let name = e.as_str().and_then(EntityKind::parse).ok_or_else(|| {
                        format!(
                            "`entities` must list entity names such as \"Invoice\"; {e} is not one"
                        )
                    })?;
                    entities.push(name.name().to_string());
                }
            }
            Some(other) => {
                return Err(format!(
                    "`entities` must be an array of entity names, got {other}"
                ));
            }
        }
        let mut g = self.lock();
        g.next_id += 1;
        let endpoint = Endpoint {
            id: g.next_id,
            url: url.to_string(),
            format,
            entities,
        };
        g.endpoints.push(endpoint.clone());
        Ok(endpoint)
    }

    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.lock().endpoints.clone()
    }

    pub fn clear(&self) {
        let mut g = self.lock();
        g.endpoints.clear();
        g.pending.clear();
    }

    pub fn config(&self) -> WebhookConfig {
        self.lock().config.clone()
    }

    pub fn set_config(&self, config: WebhookConfig) -> Result<(), String> {
        if !(config.retry_time_scale.is_finite() && config.retry_time_scale > 0.0) {
            return Err(format!(
                "`retry_time_scale` must be a positive number, got {}",
                config.retry_time_scale
            ));
        }
        if config.window_ms == 0 || config.timeout_ms == 0 {
            return Err("`window_ms` and `timeout_ms` must be at least 1".to_string());
        }
        self.lock().config = config;
        Ok(())
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.lock().deliveries.clone()
    }

    /// Queues the events of one write to `realm` (nothing is kept when no endpoint is registered).
    pub fn record(&self, realm: &str, events: &[ChangeEvent]) {
        let mut g = self.lock();
        if g.endpoints.is_empty() {
            return;
        }
        g.pending
            .extend(events.iter().map(|e| (realm.to_string(), e.clone())));
    }

    /// Starts the aggregation loop; it signs with `verifier`.
    pub fn spawn(self: &Arc<Self>, verifier: String, clock: Clock) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let window = Duration::from_millis(me.config().window_ms);
                tokio::time::sleep(window).await;
                me.flush(&verifier, &clock);
            }
        })
    }

    fn flush(self: &Arc<Self>, verifier: &str, clock: &Clock) {
        let (endpoints, pending) = {
            let mut g = self.lock();
            if g.pending.is_empty() {
                return;
            }
            (g.endpoints.clone(), std::mem::take(&mut g.pending))
        };
        // Production aggregates: one entry per object and operation, the latest time wins.
        let mut events: Vec<(String, ChangeEvent)> = Vec::new();
        for (realm, e) in pending {
            if let Some(slot) = events.iter_mut().find(|(r, x)| {
                *r == realm && x.entity == e.entity && x.id == e.id && x.operation == e.operation
            }) {
                slot.1.at = e.at;
            } else {
                events.push((realm, e));
            }
        }
        for endpoint in endpoints {
            let mine: Vec<&(String, ChangeEvent)> = events
                .iter()
                .filter(|(_, e)| {
                    endpoint.entities.is_empty() || endpoint.entities.iter().any(|n| n == e.entity)
                })
                .collect();
            if mine.is_empty() {
                continue;
            }
            let bodies: Vec<(String, usize)> = match endpoint.format {
                Format::Legacy => vec![(legacy_body(&mine), mine.len())],
                Format::Cloudevents => mine
                    .chunks(MAX_CLOUDEVENTS_PER_POST)
                    .map(|c| (cloudevents_body(c), c.len()))
                    .collect(),
            };
            for (body, count) in bodies {
                let signature = sign(verifier, &body);
                let id = {
                    let mut g = self.lock();
                    g.next_id += 1;
                    let id = g.next_id;
                    g.deliveries.push(Delivery {
                        id,
                        endpoint_id: endpoint.id,
                        url: endpoint.url.clone(),
                        format: endpoint.format,
                        events: count,
                        body: body.clone(),
                        signature: signature.clone(),
                        attempts: Vec::new(),
                        state: "pending".into(),
                    });
                    id
                };
                let me = self.clone();
                let clock = clock.clone();
                let url = endpoint.url.clone();
                tokio::spawn(async move { me.deliver(id, url, body, signature, clock).await });
            }
        }
    }

    async fn deliver(
        self: Arc<Self>,
        id: u64,
        url: String,
        body: String,
        signature: String,
        clock: Clock,
    ) {
        let delays = RETRY_SCHEDULE
            .iter()
            .copied()
            .chain(std::iter::repeat_n(TAIL_RETRY, TAIL_RETRIES));
        let mut delays = delays.peekable();
        loop {
            let cfg = self.config();
            let outcome = post(
                &url,
                &body,
                &signature,
                Duration::from_millis(cfg.timeout_ms),
            )
            .await;
            let ok = matches!(outcome, Ok(s) if (200..300).contains(&s));
            let next = if ok { None } else { delays.next() };
            {
                let mut g = self.lock();
                if let Some(d) = g.deliveries.iter_mut().find(|d| d.id == id) {
                    d.attempts.push(Attempt {
                        at: api_time(clock.now()),
                        status: outcome.as_ref().ok().copied(),
                        error: outcome.as_ref().err().cloned(),
                    });
                    d.state = if ok {
                        "delivered".into()
                    } else if next.is_none() {
                        "abandoned".into()
                    } else {
                        "pending".into()
                    };
                }
            }
            let Some(delay) = next else { return };
            let wait = Duration::from_secs(delay).div_f64(cfg.retry_time_scale);
            tokio::time::sleep(wait).await;
        }
    }
}

/// base64(HMAC-SHA256(key = verifier token, message = raw body)).
pub fn sign(verifier: &str, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(verifier.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn legacy_body(events: &[&(String, ChangeEvent)]) -> String {
    let mut realms: Vec<(String, Vec<Value>)> = Vec::new();
    for (realm, e) in events {
        let entry = json!({
            "name": e.entity,
            "id": e.id,
            "operation": e.operation,
            "lastUpdated": e.at.with_timezone(&company_offset()).format("%Y-%m-%dT%H:%M:%S%z").to_string(),
        });
        match realms.iter_mut().find(|(r, _)| r == realm) {
            Some((_, list)) => list.push(entry),
            None => realms.push((realm.clone(), vec![entry])),
        }
    }
    json!({"eventNotifications": realms.into_iter().map(|(realm, entities)| json!({
        "realmId": realm,
        "dataChangeEvent": {"entities": entities},
    })).collect::<Vec<_>>()})
    .to_string()
}

fn cloudevents_body(events: &[&(String, ChangeEvent)]) -> String {
    let list: Vec<Value> = events
        .iter()
        .map(|(realm, e)| {
            let verb = match e.operation {
                "Create" => "created",
                "Update" => "updated",
                "Delete" => "deleted",
                "Void" => "voided",
                "Merge" => "merged",
                _ => "emailed",
            };
            json!({
                "specversion": "1.0",
                "id": uuid::Uuid::new_v4().to_string(),
                "source": "intuit.sandbox.ledgerlink",
                "type": format!("qbo.{}.{verb}.v1", e.entity.to_lowercase()),
                "datacontenttype": "application/json",
                "time": e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "intuitentityid": e.id,
                "intuitaccountid": realm,
                "data": {},
            })
        })
        .collect();
    Value::Array(list).to_string()
}

/// POSTs `body` over plain HTTP/1.1 and returns the status code.
async fn post(url: &str, body: &str, signature: &str, timeout: Duration) -> Result<u16, String> {
    let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    let host = parsed.host_str().ok_or("no host")?.to_string();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let mut path = parsed.path().to_string();
    if let Some(q) = parsed.query() {
        path.push('?');
        path.push_str(q);
    }
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n\
             intuit-signature: {signature}\r\nUser-Agent: Intuit-Webhooks/1.0\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(2).any(|w| w == b"\r\n") {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("receive: {e}"))?;
            if n == 0 {
                return Err("the receiver closed the connection without answering".to_string());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        line.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| {
                format!(
                    "unreadable status line: {}",
                    line.lines().next().unwrap_or_default()
                )
            })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_base64_hmac_sha256_of_the_raw_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = sign("Jefe", "what do ya want for nothing?");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sig)
            .unwrap();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn registration_names_bad_fields() {
        let w = Webhooks::default();
        assert!(w.register(&json!({})).unwrap_err().contains("url"));
        assert!(
            w.register(&json!({"url": "https://x.example/h"}))
                .unwrap_err()
                .contains("http://")
        );
        assert!(
            w.register(&json!({"url": "http://127.0.0.1:1/h", "format": "xml"}))
                .unwrap_err()
                .contains("format")
        );
        assert!(
            w.register(&json!({"url": "http://127.0.0.1:1/h", "entities": ["Nope"]}))
                .unwrap_err()
                .contains("entities")
        );
        assert_eq!(
            w.register(&json!({"url": "http://127.0.0.1:1/h", "entities": ["invoice"]}))
                .unwrap()
                .entities,
            ["Invoice"]
        );
    }
}
