//! The sync worker: pushed records to QuickBooks, payments back.
//!
//! Each pushed version of a record is one durable task (`sync.record`). The worker claims due tasks under a lease,
//! writes to QuickBooks and records the outcome on the record. Every QuickBooks create goes through the engine's
//! exactly-once machinery: a write intent stored under a deterministic key before the call, the same key as
//! QuickBooks' `requestid` (a repeat returns the first result), the link stored after, and an audit entry either
//! way. Retryable failures (throttling, outages, expired tokens) are retried with exponential backoff; data
//! QuickBooks refuses marks the record failed with QuickBooks' reason. Tasks that come due while the workspace
//! is disconnected are paused and resumed on reconnect.
//!
//! Payments flow back by reading QuickBooks' changes to Payment and Invoice since a cursor kept per workspace
//! ([`Platform::poll_payments`]): each linked platform invoice gets its paid amount, balance and latest payment
//! date, and a change is announced with a signed webhook (`invoice.payment_updated`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{Duration, NaiveDate};
use ledgerlink_connectors::{Connector, ConnectorError, FindQuery, Record};
use ledgerlink_engine::matching::normalize_name;
use ledgerlink_model::RecordRef;
use ledgerlink_store::{NewAuditEntry, NewWriteIntent, PlatformTask, TaskAttempt, TaskOutcome};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::records::{Client, Expense, Invoice, PaymentState, PaymentStatus, RecordKind, Service, StoredRecord, SyncState, SyncStatus};
use crate::settings::{CustomerMatching, ExpensePostAs, IntegrationSettings};
use crate::{ConnectionState, Platform, PlatformError, Result, now};

pub const TASK_SYNC: &str = "sync.record";
pub const TASK_WEBHOOK: &str = "webhook.deliver";

/// The `flow` name intents, links and audit entries of the platform connector carry.
pub const FLOW: &str = "platform";

/// The connection name of a workspace's platform side in links (`platform.<workspace>`).
pub fn platform_connection(workspace_id: &str) -> String {
    format!("platform.{workspace_id}")
}

/// Why one sync attempt did not succeed.
#[derive(Debug)]
pub(crate) enum SyncError {
    /// Worth trying again later (QuickBooks throttled, unreachable, or a token to refresh).
    Retry(String),
    /// QuickBooks refused the data, or it can never work as it is: the record fails with this reason.
    Failed(String),
    /// An admin must decide or configure something first.
    Review(String),
    /// The workspace is not connected: wait for reconnect.
    Paused,
}

impl From<PlatformError> for SyncError {
    fn from(e: PlatformError) -> Self {
        match e {
            PlatformError::NotConnected => SyncError::Paused,
            PlatformError::Invalid { .. } | PlatformError::NotFound { .. } => SyncError::Failed(e.to_string()),
            other => SyncError::Retry(other.to_string()),
        }
    }
}

impl From<ConnectorError> for SyncError {
    fn from(e: ConnectorError) -> Self {
        if e.is_retryable() {
            SyncError::Retry(format!("QuickBooks: {e}"))
        } else {
            SyncError::Failed(format!("QuickBooks refused it: {e}"))
        }
    }
}

impl From<ledgerlink_store::StoreError> for SyncError {
    fn from(e: ledgerlink_store::StoreError) -> Self {
        SyncError::Retry(format!("storage: {e}"))
    }
}

type SyncResult<T> = std::result::Result<T, SyncError>;

/// What one sync wrote: the QuickBooks entity and id, and for invoices the total QuickBooks computed.
struct Synced {
    object: &'static str,
    id: String,
    total: Option<Decimal>,
    balance: Option<Decimal>,
}

/// One workspace's QuickBooks side during one task.
struct Ctx {
    workspace: String,
    qb: Arc<dyn Connector>,
    connection: String,
    settings: IntegrationSettings,
}

impl Ctx {
    fn source(&self, kind: &str, id: &str) -> RecordRef {
        RecordRef::new(platform_connection(&self.workspace), kind, id)
    }
}

fn str_of<'a>(r: &'a Record, field: &str) -> Option<&'a str> {
    r.get(field).and_then(Value::as_str)
}

fn decimal_of(r: &Record, field: &str) -> Option<Decimal> {
    match r.get(field)? {
        Value::Number(n) => n.to_string().parse().ok().or_else(|| Decimal::from_scientific(&n.to_string()).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn num(d: Decimal) -> Value {
    // QuickBooks takes JSON numbers; written from the decimal's text so no binary float is involved.
    serde_json::from_str(&d.normalize().to_string()).unwrap_or(Value::Null)
}

fn record(v: Value) -> Record {
    match v {
        Value::Object(m) => m,
        _ => Record::new(),
    }
}

impl Platform {
    /// Runs the worker and the payment poll until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut next_poll = tokio::time::Instant::now();
        loop {
            if *shutdown.borrow() {
                return;
            }
            if tokio::time::Instant::now() >= next_poll {
                next_poll = tokio::time::Instant::now() + self.options.payment_poll;
                self.background_pass().await;
            }
            let ran = match self.run_due(4).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "platform tasks could not be claimed; will try again");
                    0
                }
            };
            if ran > 0 {
                continue;
            }
            let until_poll = next_poll.saturating_duration_since(tokio::time::Instant::now());
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.options.idle_wait.min(until_poll)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Payment polling for every connected workspace, and the reconciliation pass where it is due.
    async fn background_pass(&self) {
        let workspaces = match self.list_workspaces().await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "workspaces could not be listed");
                return;
            }
        };
        for ws in workspaces {
            if !matches!(self.status(&ws.id).await, Ok(s) if s.state == ConnectionState::Connected) {
                continue;
            }
            if let Err(e) = self.poll_payments(&ws.id).await {
                tracing::warn!(workspace = %ws.id, error = %e, "payments could not be read from QuickBooks");
            }
            if let Err(e) = self.reconciliation_pass_if_due(&ws.id).await {
                tracing::warn!(workspace = %ws.id, error = %e, "reconciliation pass failed");
            }
        }
    }

    /// Re-queues records that are pending without a live task or failed, when the interval set in the settings
    /// has passed since the last pass.
    async fn reconciliation_pass_if_due(&self, workspace_id: &str) -> Result<()> {
        let settings = self.load_settings(workspace_id).await?;
        let last = self.store.get_doc(workspace_id, "sync_pass", "last").await?;
        let due = match &last {
            Some(doc) => now() - doc.updated_at >= Duration::minutes(i64::from(settings.frequency.reconciliation_minutes)),
            None => true,
        };
        if !due {
            return Ok(());
        }
        let pass = now();
        self.store.put_doc(workspace_id, "sync_pass", "last", &json!({"at": pass}), pass).await?;
        for kind in [RecordKind::Client, RecordKind::Service, RecordKind::Invoice, RecordKind::Expense] {
            for rec in self.list_records(workspace_id, kind).await? {
                if matches!(rec.sync.status, SyncStatus::Pending | SyncStatus::Failed) {
                    let task = ledgerlink_store::NewPlatformTask {
                        workspace_id: workspace_id.to_string(),
                        kind: TASK_SYNC.into(),
                        dedupe_key: format!("sync:{workspace_id}:{}:{}:{}:pass:{}", kind.as_str(), rec.id, rec.version, pass.timestamp()),
                        payload: json!({"kind": kind.as_str(), "id": rec.id, "version": rec.version}),
                        run_at: pass,
                        max_attempts: self.options.max_attempts,
                    };
                    self.store.enqueue_task(&task).await?;
                }
            }
        }
        self.wake_worker();
        Ok(())
    }

    /// Claims and runs up to `limit` due tasks at once. Returns how many ran.
    pub async fn run_due(&self, limit: u32) -> Result<usize> {
        let tasks = self.store.claim_tasks(&self.options.worker_id, now(), self.options.task_lease, limit).await?;
        let n = tasks.len();
        let mut set = tokio::task::JoinSet::new();
        for task in tasks {
            let me = self.clone();
            set.spawn(async move { me.handle(task).await });
        }
        while set.join_next().await.is_some() {}
        Ok(n)
    }

    /// Runs due tasks until none is due (tests and the demo use it to wait for the queue to settle).
    pub async fn drain(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let n = self.run_due(8).await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    async fn handle(&self, task: PlatformTask) {
        let started = std::time::Instant::now();
        let (result, status_code) = match task.kind.as_str() {
            TASK_SYNC => (self.sync_task(&task).await, None),
            crate::notifications::TASK_PAYMENTS => match self.poll_payments(&task.workspace_id).await {
                Ok(_) | Err(PlatformError::NotConnected) => (Ok(()), None),
                Err(e) => (Err(SyncError::Retry(e.to_string())), None),
            },
            TASK_WEBHOOK => match self.deliver_webhook(&task).await {
                Ok(code) => (Ok(()), Some(code)),
                Err((code, e)) => (Err(e), code),
            },
            other => (Err(SyncError::Failed(format!("unknown task kind `{other}`"))), None),
        };
        let error = match &result {
            Ok(()) => None,
            Err(SyncError::Retry(m) | SyncError::Failed(m) | SyncError::Review(m)) => Some(m.clone()),
            Err(SyncError::Paused) => Some("paused: QuickBooks is disconnected".into()),
        };
        if !matches!(result, Err(SyncError::Paused)) {
            let attempt = TaskAttempt {
                task_id: task.id,
                attempt: task.attempts,
                at: now(),
                ok: result.is_ok(),
                status_code,
                error: error.clone(),
                duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
            };
            if let Err(e) = self.store.record_attempt(&attempt).await {
                tracing::warn!(task = task.id, error = %e, "task attempt not recorded");
            }
        }
        let outcome = match result {
            Ok(()) => TaskOutcome::Done,
            Err(SyncError::Paused) => TaskOutcome::Paused { reason: "QuickBooks is disconnected for this workspace".into() },
            Err(SyncError::Retry(m)) if task.attempts < task.max_attempts => TaskOutcome::Retry { at: now() + self.backoff(task.attempts), error: m },
            Err(SyncError::Retry(m) | SyncError::Failed(m) | SyncError::Review(m)) => TaskOutcome::Dead { error: m },
        };
        if task.kind == TASK_SYNC
            && let TaskOutcome::Dead { error } = &outcome
        {
            // Out of attempts on a retryable error: the record says so (QuickBooks refusals were recorded already).
            let _ = self.mark_unsynced_if_pending(&task, error).await;
        }
        if let Err(e) = self.store.finish_task(task.id, &self.options.worker_id, &outcome, now()).await {
            tracing::warn!(task = task.id, error = %e, "task outcome not recorded");
        }
    }

    /// Exponential backoff with full jitter: a random delay up to `retry_base × 2^(attempt-1)`, capped.
    pub(crate) fn backoff(&self, attempt: i32) -> Duration {
        use rand::Rng;
        let exp = self.options.retry_base * 2i32.saturating_pow(u32::try_from(attempt.clamp(1, 20) - 1).unwrap_or(0));
        let cap = exp.min(self.options.retry_max).num_milliseconds().max(1);
        Duration::milliseconds(rand::rng().random_range(cap / 2..=cap))
    }

    async fn mark_unsynced_if_pending(&self, task: &PlatformTask, error: &str) -> Result<()> {
        let Some(kind) = task.payload.get("kind").and_then(Value::as_str).and_then(RecordKind::parse) else { return Ok(()) };
        let id = task.payload.get("id").and_then(Value::as_str).unwrap_or_default();
        self.modify_record(&task.workspace_id, kind, id, |r| {
            if r.sync.status == SyncStatus::Pending {
                r.sync.status = SyncStatus::Failed;
                r.sync.error = Some(error.to_string());
            }
        })
        .await?;
        Ok(())
    }

    async fn sync_task(&self, task: &PlatformTask) -> SyncResult<()> {
        let kind = task.payload.get("kind").and_then(Value::as_str).and_then(RecordKind::parse);
        let id = task.payload.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        let version = task.payload.get("version").and_then(Value::as_i64).unwrap_or(0);
        let Some(kind) = kind else { return Err(SyncError::Failed(format!("task {} names no record kind", task.id))) };
        let ws = task.workspace_id.clone();
        // Read under the record's lock: a sync that ran meanwhile has left it synced, and this one stops here.
        let _turn = self.record_locks.lock(&format!("{ws}\u{0}{kind:?}\u{0}{id}")).await;
        let rec = self.get_record(&ws, kind, &id).await?;
        if rec.version > version {
            // A newer push has its own task; this one has nothing left to do.
            return Ok(());
        }
        if rec.sync.status == SyncStatus::Synced && rec.sync.quickbooks_id.is_some() {
            return Ok(());
        }
        if matches!(rec.sync.status, SyncStatus::Held) {
            return Ok(());
        }
        let (qb, connection) = self.connector(&ws).await?;
        let ctx = Ctx { workspace: ws.clone(), qb, connection, settings: self.load_settings(&ws).await? };
        let result = match kind {
            RecordKind::Client => self.sync_client(&ctx, &rec).await,
            RecordKind::Service => self.sync_service(&ctx, &rec).await,
            RecordKind::Invoice => self.sync_invoice(&ctx, &rec).await,
            RecordKind::Expense => self.sync_expense(&ctx, &rec).await,
            RecordKind::TaxRate => return Ok(()),
        };
        match result {
            Ok(done) => {
                let currency = rec.data.get("currency").and_then(Value::as_str).unwrap_or("USD").to_string();
                self.modify_record(&ws, kind, &id, |r| {
                    if r.version != version {
                        return;
                    }
                    r.sync = SyncState {
                        status: SyncStatus::Synced,
                        quickbooks_type: Some(done.object.to_string()),
                        quickbooks_id: Some(done.id.clone()),
                        error: None,
                        synced_at: Some(now()),
                        quickbooks_total: done.total,
                    };
                    if let (Some(total), Some(balance)) = (done.total, done.balance)
                        && r.payment.is_none()
                    {
                        r.payment = Some(payment_state(&currency, total, balance, None));
                    }
                })
                .await?;
                Ok(())
            }
            Err(e) => {
                let (status, message) = match &e {
                    SyncError::Failed(m) => (Some(SyncStatus::Failed), m.clone()),
                    SyncError::Review(m) => (Some(SyncStatus::NeedsReview), m.clone()),
                    SyncError::Retry(m) => (None, m.clone()),
                    SyncError::Paused => return Err(e),
                };
                self.modify_record(&ws, kind, &id, |r| {
                    if r.version == version {
                        if let Some(s) = status {
                            r.sync.status = s;
                        }
                        r.sync.error = Some(message.clone());
                    }
                })
                .await?;
                Err(e)
            }
        }
    }

    /// Creates `payload` as a QuickBooks `object` exactly once for `source` (intent, requestid, link, audit).
    async fn create_once(&self, ctx: &Ctx, source: &RecordRef, object: &'static str, payload: Record) -> SyncResult<Record> {
        let key = ledgerlink_engine::keys::action_key(FLOW, source, &format!("create-{object}"));
        let intent = self
            .store
            .begin_intent(&NewWriteIntent {
                key: key.clone(),
                flow: FLOW.into(),
                job_id: None,
                connection: ctx.connection.clone(),
                object: object.into(),
                action: "create".into(),
                payload: Value::Object(payload.clone()),
                created_at: now(),
            })
            .await?;
        if let (ledgerlink_store::IntentStatus::Done, Some(done_id)) = (intent.status, &intent.result_id)
            && let Some(existing) = ctx.qb.get(object, done_id, &[]).await?
        {
            self.link(ctx, source, object, done_id).await?;
            return Ok(existing);
        }
        let audit = |outcome: &str, record_id: Option<String>, after: Option<Value>, error: Option<String>| NewAuditEntry {
            at: now(),
            flow: Some(FLOW.into()),
            job_id: None,
            connection: ctx.connection.clone(),
            object: object.into(),
            record_id,
            action: "create".into(),
            outcome: outcome.into(),
            before: None,
            after,
            error,
        };
        match ctx.qb.create(object, &payload, ledgerlink_engine::keys::request_key(&intent)).await {
            Ok(created) => {
                let id = ctx.qb.record_id(&created).ok_or_else(|| SyncError::Retry(format!("QuickBooks returned a {object} without an id")))?;
                let entry = audit("ok", Some(id.clone()), Some(Value::Object(payload)), None);
                self.store.complete_intent(&key, &id, &Value::Object(created.clone()), now(), &entry).await?;
                self.link(ctx, source, object, &id).await?;
                Ok(created)
            }
            Err(e) => {
                self.store.append_audit(&audit("error", None, Some(Value::Object(payload)), Some(e.to_string()))).await?;
                if let ConnectorError::Validation { message, .. } = &e {
                    // Nothing was created: once the admin fixes the cause, the next push must not be answered
                    // with this refusal again (QuickBooks replays a repeated requestid's first answer).
                    let next = ledgerlink_engine::keys::retry_request_key(&key, intent.attempts);
                    self.store.refuse_intent(&key, &next, message).await?;
                }
                Err(e.into())
            }
        }
    }

    /// Updates the QuickBooks record (sparse) and audits it.
    async fn update_audited(&self, ctx: &Ctx, object: &'static str, id: &str, fields: Record) -> SyncResult<Record> {
        let result = ctx.qb.update(object, id, &fields).await;
        self.store
            .append_audit(&NewAuditEntry {
                at: now(),
                flow: Some(FLOW.into()),
                job_id: None,
                connection: ctx.connection.clone(),
                object: object.into(),
                record_id: Some(id.to_string()),
                action: "update".into(),
                outcome: if result.is_ok() { "ok".into() } else { "error".into() },
                before: None,
                after: Some(Value::Object(fields)),
                error: result.as_ref().err().map(ToString::to_string),
            })
            .await?;
        Ok(result?)
    }

    async fn link(&self, ctx_ws_conn: &Ctx, source: &RecordRef, object: &str, id: &str) -> Result<()> {
        self.put_link(source, &RecordRef::new(ctx_ws_conn.connection.clone(), object, id)).await
    }

    pub(crate) async fn put_link(&self, source: &RecordRef, target: &RecordRef) -> Result<()> {
        self.store
            .put_link(&ledgerlink_store::Link {
                a: source.clone(),
                b: target.clone(),
                a_version: None,
                b_version: None,
                a_hash: None,
                b_hash: None,
                flow: Some(FLOW.into()),
                updated_at: now(),
            })
            .await?;
        Ok(())
    }

    async fn linked(&self, ctx: &Ctx, source: &RecordRef, object: &str) -> SyncResult<Option<String>> {
        Ok(self.store.find_link(source, &ctx.connection, object).await?.map(|l| if l.a == *source { l.b.id } else { l.a.id }))
    }

    // ----- clients → customers -----

    async fn sync_client(&self, ctx: &Ctx, rec: &StoredRecord) -> SyncResult<Synced> {
        let client: Client = serde_json::from_value(rec.data.clone()).map_err(|e| SyncError::Failed(e.to_string()))?;
        let source = ctx.source("client", &client.id);
        let id = match self.linked(ctx, &source, "Customer").await? {
            // Pushed again after the first sync: the edits reach the customer.
            Some(id) => {
                self.update_edited(ctx, &source, "Customer", &id, customer_fields(&client)).await?;
                id
            }
            None => self.ensure_customer(ctx, &client).await?,
        };
        Ok(Synced { object: "Customer", id, total: None, balance: None })
    }

    /// Sends QuickBooks the fields the platform changed since they were last written or matched: a sparse update
    /// at the record's current `SyncToken` (the connector reads it), leaving every other field, and any edit made
    /// in QuickBooks to a field the platform did not change, as it is. Nothing changed: nothing is written.
    async fn update_edited(&self, ctx: &Ctx, source: &RecordRef, object: &'static str, id: &str, wanted: Record) -> SyncResult<()> {
        let key = written_key(source);
        let before = self.store.get_doc(&ctx.workspace, WRITTEN, &key).await?.map(|d| d.body);
        let changed: Record = wanted
            .iter()
            .filter(|(field, value)| before.as_ref().and_then(|b| b.get(field.as_str())) != Some(*value))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        self.update_audited(ctx, object, id, changed).await?;
        self.remember_written(ctx, source, &wanted).await?;
        Ok(())
    }

    /// Keeps the fields as QuickBooks now has them from the platform, to tell later edits apart.
    async fn remember_written(&self, ctx: &Ctx, source: &RecordRef, fields: &Record) -> SyncResult<()> {
        self.store.put_doc(&ctx.workspace, WRITTEN, &written_key(source), &Value::Object(fields.clone()), now()).await?;
        Ok(())
    }

    /// The client's QuickBooks customer: linked already, matched per the settings, or created.
    async fn ensure_customer(&self, ctx: &Ctx, client: &Client) -> SyncResult<String> {
        let source = ctx.source("client", &client.id);
        if let Some(id) = self.linked(ctx, &source, "Customer").await? {
            return Ok(id);
        }
        // From here on the customer counts as the client as it is now; later edits are sent as updates. Kept
        // before the link exists: a concurrent sync of the same client that finds the link must also find this,
        // or it would take every field for an edit and send them all.
        self.remember_written(ctx, &source, &customer_fields(client)).await?;
        self.match_or_create_customer(ctx, client, &source).await
    }

    async fn match_or_create_customer(&self, ctx: &Ctx, client: &Client, source: &RecordRef) -> SyncResult<String> {
        let source = source.clone();
        let matching = ctx.settings.customers.matching;
        let mut candidates: Vec<Record> = Vec::new();
        if matches!(matching, CustomerMatching::ByEmail | CustomerMatching::ByEmailThenName)
            && let Some(email) = &client.email
        {
            candidates = ctx
                .qb
                .find(&FindQuery { object: "Customer".into(), equals: vec![("PrimaryEmailAddr".into(), json!(email))], ..Default::default() })
                .await?;
        }
        if candidates.is_empty() && matches!(matching, CustomerMatching::ByName | CustomerMatching::ByEmailThenName) {
            let wanted = normalize_name(&client.name);
            candidates = ctx
                .qb
                .find(&FindQuery { object: "Customer".into(), ..Default::default() })
                .await?
                .into_iter()
                .filter(|c| str_of(c, "DisplayName").is_some_and(|n| normalize_name(n) == wanted))
                .collect();
        }
        candidates.retain(|c| c.get("Active").and_then(Value::as_bool) != Some(false));
        match candidates.len() {
            1 => {
                let id = ctx.qb.record_id(&candidates[0]).unwrap_or_default();
                self.link(ctx, &source, "Customer", &id).await?;
                Ok(id)
            }
            0 if matching == CustomerMatching::AutoCreate || ctx.settings.customers.create_unmatched => {
                let mut payload = json!({"DisplayName": client.name});
                if let Some(email) = &client.email {
                    payload["PrimaryEmailAddr"] = json!({"Address": email});
                }
                if let Some(phone) = &client.phone {
                    payload["PrimaryPhone"] = json!({"FreeFormNumber": phone});
                }
                let created = self.create_once(ctx, &source, "Customer", record(payload)).await?;
                Ok(ctx.qb.record_id(&created).unwrap_or_default())
            }
            0 => Err(SyncError::Review(format!(
                "No QuickBooks customer matches client \"{}\", and creating customers is off: confirm a match in the reconciliation pass.",
                client.name
            ))),
            n => Err(SyncError::Review(format!(
                "{n} QuickBooks customers match client \"{}\": confirm which one in the reconciliation pass.",
                client.name
            ))),
        }
    }

    // ----- services → items -----

    async fn sync_service(&self, ctx: &Ctx, rec: &StoredRecord) -> SyncResult<Synced> {
        let service: Service = serde_json::from_value(rec.data.clone()).map_err(|e| SyncError::Failed(e.to_string()))?;
        let source = ctx.source("service", &service.id);
        // A service the admin mapped to a product of their own choosing is not renamed after the platform's.
        let mapped = ctx.settings.invoices.service_items.contains_key(&service.id);
        let id = match self.linked(ctx, &source, "Item").await? {
            Some(id) if !mapped => {
                self.update_edited(ctx, &source, "Item", &id, item_fields(&service)).await?;
                id
            }
            _ => self.ensure_item(ctx, &service).await?,
        };
        Ok(Synced { object: "Item", id, total: None, balance: None })
    }

    /// The service's QuickBooks product/service: mapped in the settings, linked, matched by name, or created
    /// under the settings' income account.
    async fn ensure_item(&self, ctx: &Ctx, service: &Service) -> SyncResult<String> {
        let source = ctx.source("service", &service.id);
        if let Some(mapped) = ctx.settings.invoices.service_items.get(&service.id) {
            return Ok(mapped.id.clone());
        }
        if let Some(id) = self.linked(ctx, &source, "Item").await? {
            return Ok(id);
        }
        let wanted = normalize_name(&service.name);
        let same: Vec<Record> = ctx
            .qb
            .find(&FindQuery { object: "Item".into(), ..Default::default() })
            .await?
            .into_iter()
            .filter(|i| str_of(i, "Type") != Some("Category") && str_of(i, "Name").is_some_and(|n| normalize_name(n) == wanted))
            .collect();
        // Kept before the link exists, as for customers (`ensure_customer`).
        if same.len() == 1 {
            let id = ctx.qb.record_id(&same[0]).unwrap_or_default();
            self.remember_written(ctx, &source, &item_fields(service)).await?;
            self.link(ctx, &source, "Item", &id).await?;
            return Ok(id);
        }
        let Some(income) = &ctx.settings.invoices.income_account else {
            return Err(SyncError::Review(format!(
                "Service \"{}\" has no QuickBooks product/service: map it in the settings, or choose the income account new ones post to.",
                service.name
            )));
        };
        let mut payload = json!({"Name": service.name, "Type": "Service", "IncomeAccountRef": {"value": income.id}});
        if let Some(d) = &service.description {
            payload["Description"] = json!(d);
        }
        if let Some(p) = service.unit_price {
            payload["UnitPrice"] = num(p);
        }
        self.remember_written(ctx, &source, &item_fields(service)).await?;
        let created = self.create_once(ctx, &source, "Item", record(payload)).await?;
        Ok(ctx.qb.record_id(&created).unwrap_or_default())
    }

    // ----- invoices -----

    async fn sync_invoice(&self, ctx: &Ctx, rec: &StoredRecord) -> SyncResult<Synced> {
        let inv: Invoice = serde_json::from_value(rec.data.clone()).map_err(|e| SyncError::Failed(e.to_string()))?;
        let client_rec = self.get_record(&ctx.workspace, RecordKind::Client, &inv.client_id).await.map_err(|_| {
            SyncError::Review(format!("Client `{}` has not been pushed yet: push the client, then the invoice syncs.", inv.client_id))
        })?;
        let client: Client = serde_json::from_value(client_rec.data).map_err(|e| SyncError::Failed(e.to_string()))?;
        let customer = self.ensure_customer(ctx, &client).await?;
        let tax = self.tax_plan(ctx, &inv).await?;
        let mut lines = Vec::new();
        for (n, line) in inv.lines.iter().enumerate() {
            let service_rec = self.get_record(&ctx.workspace, RecordKind::Service, &line.service_id).await.map_err(|_| {
                SyncError::Review(format!("Line {}: service `{}` has not been pushed yet.", n + 1, line.service_id))
            })?;
            let service: Service = serde_json::from_value(service_rec.data).map_err(|e| SyncError::Failed(e.to_string()))?;
            let item = self.ensure_item(ctx, &service).await?;
            let amount = inv.line_amount(line).map_err(|e| SyncError::Failed(e.to_string()))?;
            let mut l = json!({
                "Amount": num(amount),
                "DetailType": "SalesItemLineDetail",
                "SalesItemLineDetail": {
                    "ItemRef": {"value": item},
                    "Qty": num(line.quantity),
                    "UnitPrice": num(line.unit_price),
                    "TaxCodeRef": {"value": tax.line_codes[n]},
                },
            });
            if let Some(d) = line.description.as_ref().or(service.description.as_ref()) {
                l["Description"] = json!(d);
            }
            lines.push(l);
        }
        let mut payload = json!({
            "CustomerRef": {"value": customer},
            "TxnDate": inv.issue_date.to_string(),
            "Line": lines,
            "CurrencyRef": {"value": inv.currency.to_ascii_uppercase()},
        });
        if let Some(n) = &inv.number {
            payload["DocNumber"] = json!(n);
        }
        if let Some(d) = inv.due_date {
            payload["DueDate"] = json!(d.to_string());
        }
        if let Some(m) = &inv.memo {
            payload["PrivateNote"] = json!(m);
        }
        if let Some(code) = &tax.txn_code {
            payload["TxnTaxDetail"] = json!({"TxnTaxCodeRef": {"value": code}});
        }
        let source = ctx.source("invoice", &inv.id);
        let written = match self.linked(ctx, &source, "Invoice").await? {
            // Pushed again after it was synced: QuickBooks gets the new lines and dates.
            Some(id) => self.update_audited(ctx, "Invoice", &id, record(payload)).await?,
            None => self.create_once(ctx, &source, "Invoice", record(payload)).await?,
        };
        Ok(Synced {
            object: "Invoice",
            id: ctx.qb.record_id(&written).unwrap_or_default(),
            total: decimal_of(&written, "TotalAmt"),
            balance: decimal_of(&written, "Balance"),
        })
    }

    /// Each line's QuickBooks tax code, through the settings' tax map. A US company marks lines `TAX`/`NON` and
    /// names the sales tax code once for the whole invoice; a mapped code that is itself `TAX` or `NON` is used as
    /// the line code, any other (a sales tax code with rates) becomes the invoice's code.
    async fn tax_plan(&self, ctx: &Ctx, inv: &Invoice) -> SyncResult<TaxPlan> {
        let mut plan = TaxPlan { line_codes: Vec::new(), txn_code: None };
        let mut codes: BTreeMap<String, Record> = BTreeMap::new();
        for (n, line) in inv.lines.iter().enumerate() {
            let Some(rate) = &line.tax_rate_id else {
                plan.line_codes.push("NON".into());
                continue;
            };
            let Some(mapped) = ctx.settings.tax_codes.get(rate) else {
                return Err(SyncError::Review(format!(
                    "Line {}: tax rate `{rate}` is not mapped to a QuickBooks tax code: map it in the integration settings.",
                    n + 1
                )));
            };
            if !codes.contains_key(&mapped.id) {
                let code = ctx.qb.get("TaxCode", &mapped.id, &[]).await?.ok_or_else(|| {
                    SyncError::Review(format!("Tax rate `{rate}` is mapped to QuickBooks tax code {}, which no longer exists.", mapped.id))
                })?;
                codes.insert(mapped.id.clone(), code);
            }
            let code = &codes[&mapped.id];
            let name = str_of(code, "Name").unwrap_or_default();
            let taxable = code.get("Taxable").and_then(Value::as_bool).unwrap_or(false);
            if name == "TAX" || name == "NON" {
                plan.line_codes.push(name.to_string());
                continue;
            }
            if !taxable {
                plan.line_codes.push("NON".into());
                continue;
            }
            plan.line_codes.push("TAX".into());
            match &plan.txn_code {
                Some(existing) if existing != &mapped.id => {
                    return Err(SyncError::Failed(
                        "QuickBooks takes one sales tax code per invoice, and these lines map to different ones: split the invoice or map the rates to one code.".into(),
                    ));
                }
                _ => plan.txn_code = Some(mapped.id.clone()),
            }
        }
        Ok(plan)
    }

    // ----- expenses -----

    async fn sync_expense(&self, ctx: &Ctx, rec: &StoredRecord) -> SyncResult<Synced> {
        let e: Expense = serde_json::from_value(rec.data.clone()).map_err(|err| SyncError::Failed(err.to_string()))?;
        let Some(account) = &ctx.settings.expenses.expense_account else {
            return Err(SyncError::Review("Choose the chart-of-accounts account expenses post to in the integration settings.".into()));
        };
        let vendor = self.ensure_vendor(ctx, &e.vendor).await?;
        let mut detail = json!({"AccountRef": {"value": account.id}});
        if let Some(rate) = &e.tax_rate_id {
            let Some(code) = ctx.settings.tax_codes.get(rate) else {
                return Err(SyncError::Review(format!("Tax rate `{rate}` is not mapped to a QuickBooks tax code.")));
            };
            detail["TaxCodeRef"] = json!({"value": code.id});
        }
        let description = match &e.description {
            Some(d) => format!("{d} (workflow {})", e.workflow_id),
            None => format!("Workflow {}", e.workflow_id),
        };
        let line = json!({"Amount": num(e.amount), "DetailType": "AccountBasedExpenseLineDetail", "Description": description,
                          "AccountBasedExpenseLineDetail": detail});
        let source = ctx.source("expense", &e.id);
        let (object, payload) = match ctx.settings.expenses.post_as {
            ExpensePostAs::Bill => (
                "Bill",
                json!({"VendorRef": {"value": vendor}, "TxnDate": e.date.to_string(), "Line": [line],
                       "CurrencyRef": {"value": e.currency.to_ascii_uppercase()}, "PrivateNote": description}),
            ),
            ExpensePostAs::Expense => {
                let Some(paid_from) = &ctx.settings.expenses.payment_account else {
                    return Err(SyncError::Review("Choose the bank or credit-card account expenses are paid from in the integration settings.".into()));
                };
                let payment_type = if paid_from.name.to_lowercase().contains("card") { "CreditCard" } else { "Cash" };
                (
                    "Purchase",
                    json!({"PaymentType": payment_type, "AccountRef": {"value": paid_from.id},
                           "EntityRef": {"value": vendor, "type": "Vendor"}, "TxnDate": e.date.to_string(), "Line": [line],
                           "CurrencyRef": {"value": e.currency.to_ascii_uppercase()}, "PrivateNote": description}),
                )
            }
        };
        let written = match self.linked(ctx, &source, object).await? {
            Some(id) => self.update_audited(ctx, object, &id, record(payload)).await?,
            None => self.create_once(ctx, &source, object, record(payload)).await?,
        };
        Ok(Synced { object, id: ctx.qb.record_id(&written).unwrap_or_default(), total: decimal_of(&written, "TotalAmt"), balance: None })
    }

    /// The QuickBooks vendor with this name (normalised), or a new one.
    async fn ensure_vendor(&self, ctx: &Ctx, name: &str) -> SyncResult<String> {
        let wanted = normalize_name(name);
        let source = ctx.source("vendor", &wanted);
        if let Some(id) = self.linked(ctx, &source, "Vendor").await? {
            return Ok(id);
        }
        let found: Vec<Record> = ctx
            .qb
            .find(&FindQuery { object: "Vendor".into(), ..Default::default() })
            .await?
            .into_iter()
            .filter(|v| str_of(v, "DisplayName").is_some_and(|n| normalize_name(n) == wanted))
            .collect();
        if let Some(v) = found.first() {
            let id = ctx.qb.record_id(v).unwrap_or_default();
            self.link(ctx, &source, "Vendor", &id).await?;
            return Ok(id);
        }
        let created = self.create_once(ctx, &source, "Vendor", record(json!({"DisplayName": name}))).await?;
        Ok(ctx.qb.record_id(&created).unwrap_or_default())
    }

    // ----- payments back -----

    /// Reads QuickBooks' Payment and Invoice changes since the workspace's cursor and updates the payment state of
    /// every linked platform invoice; each change is announced as a signed `invoice.payment_updated` webhook.
    /// Returns how many invoices changed.
    pub async fn poll_payments(&self, workspace_id: &str) -> Result<usize> {
        let _one_at_a_time = self.payments_lock.lock().await;
        let status = self.status(workspace_id).await?;
        if status.state != ConnectionState::Connected {
            return Ok(0);
        }
        let (qb, connection) = self.connector(workspace_id).await?;
        // QuickBooks change times have whole seconds: re-read a little overlap; comparing states makes it harmless.
        let since = status.payments_read_to.or(status.connected_at).unwrap_or_else(now) - Duration::seconds(2);
        // Invoices first: a payment changes its invoice's balance in the same write, so a balance read here has its
        // payment in the read below, and no invoice shows paid without its payment date.
        let invoices = qb.changes_since("Invoice", since, &[]).await?.records;
        let payments = qb.changes_since("Payment", since, &[]).await?.records;
        let mut latest = status.payments_read_to;
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut paid_on: BTreeMap<String, NaiveDate> = BTreeMap::new();
        for p in &payments {
            latest = latest.max(qb.change_timestamp(p));
            let date = str_of(p, "TxnDate").and_then(|d| d.parse::<NaiveDate>().ok());
            for line in p.get("Line").and_then(Value::as_array).into_iter().flatten() {
                for linked in line.get("LinkedTxn").and_then(Value::as_array).into_iter().flatten() {
                    if linked.get("TxnType").and_then(Value::as_str) == Some("Invoice")
                        && let Some(id) = linked.get("TxnId").and_then(Value::as_str)
                    {
                        touched.insert(id.to_string());
                        if let Some(d) = date {
                            let e = paid_on.entry(id.to_string()).or_insert(d);
                            *e = (*e).max(d);
                        }
                    }
                }
            }
        }
        let mut current: BTreeMap<String, Record> = BTreeMap::new();
        for i in invoices {
            latest = latest.max(qb.change_timestamp(&i));
            if let Some(id) = qb.record_id(&i) {
                touched.insert(id.clone());
                current.insert(id, i);
            }
        }
        let platform = platform_connection(workspace_id);
        let mut changed = 0;
        for qb_id in touched {
            let target = RecordRef::new(connection.clone(), "Invoice", qb_id.clone());
            let Some(link) = self.store.find_link(&target, &platform, "invoice").await? else { continue };
            let platform_id = if link.a.connection == platform { link.a.id.clone() } else { link.b.id.clone() };
            let inv = match current.remove(&qb_id) {
                Some(i) => i,
                None => match qb.get("Invoice", &qb_id, &[]).await? {
                    Some(i) => i,
                    None => continue,
                },
            };
            let (Some(total), Some(balance)) = (decimal_of(&inv, "TotalAmt"), decimal_of(&inv, "Balance")) else { continue };
            let rec = self.get_record(workspace_id, RecordKind::Invoice, &platform_id).await?;
            let currency = rec.data.get("currency").and_then(Value::as_str).unwrap_or("USD").to_string();
            let last_date = paid_on.get(&qb_id).copied().or(rec.payment.as_ref().and_then(|p| p.last_payment_date));
            let new = payment_state(&currency, total, balance, last_date);
            let same = rec.payment.as_ref().is_some_and(|p| p.total == new.total && p.balance == new.balance && p.last_payment_date == new.last_payment_date);
            if same {
                continue;
            }
            let updated = self
                .modify_record(workspace_id, RecordKind::Invoice, &platform_id, |r| {
                    r.payment = Some(new.clone());
                    if r.sync.quickbooks_total.is_none() {
                        r.sync.quickbooks_total = Some(total);
                    }
                })
                .await?;
            changed += 1;
            let event_key = format!("{platform_id}:{}:{}", new.balance, str_of(&inv, "SyncToken").unwrap_or_default());
            self.emit(
                workspace_id,
                "invoice.payment_updated",
                &event_key,
                json!({"invoice_id": platform_id, "quickbooks_id": qb_id, "payment": updated.payment}),
            )
            .await?;
        }
        if latest != status.payments_read_to {
            let mut s = self.status(workspace_id).await?;
            if s.state == ConnectionState::Connected {
                s.payments_read_to = latest;
                self.put_status(workspace_id, &s).await?;
            }
        }
        Ok(changed)
    }
}

/// The document kind keeping, per platform record, the QuickBooks fields as last written (or matched).
const WRITTEN: &str = "qb_written";

fn written_key(source: &RecordRef) -> String {
    format!("{}:{}", source.object, source.id)
}

/// The customer fields the platform owns. An emptied email or phone is sent as an empty value, which clears it.
fn customer_fields(client: &Client) -> Record {
    record(json!({
        "DisplayName": client.name,
        "PrimaryEmailAddr": {"Address": client.email.clone().unwrap_or_default()},
        "PrimaryPhone": {"FreeFormNumber": client.phone.clone().unwrap_or_default()},
    }))
}

/// The product/service fields the platform owns (the income account stays the admin's choice in QuickBooks).
fn item_fields(service: &Service) -> Record {
    let mut f = record(json!({"Name": service.name, "Description": service.description.clone().unwrap_or_default()}));
    if let Some(p) = service.unit_price {
        f.insert("UnitPrice".into(), num(p));
    }
    f
}

struct TaxPlan {
    line_codes: Vec<String>,
    txn_code: Option<String>,
}

/// The payment state from QuickBooks' total and open balance.
pub(crate) fn payment_state(currency: &str, total: Decimal, balance: Decimal, last_payment_date: Option<NaiveDate>) -> PaymentState {
    let paid = total - balance;
    let status = if balance <= Decimal::ZERO {
        PaymentStatus::Paid
    } else if paid > Decimal::ZERO {
        PaymentStatus::PartiallyPaid
    } else {
        PaymentStatus::Unpaid
    };
    PaymentState { status, currency: currency.to_string(), total, amount_paid: paid, balance, last_payment_date, updated_at: now() }
}
