//! The records a platform pushes, and what became of them.
//!
//! Each record is stored under the platform's own id (a re-push with the same id is an update), with its
//! validated data, its sync state (pending → synced with the QuickBooks id, failed with the reason, needs review,
//! or held while automatic push is off) and, for invoices, the payment state read back from QuickBooks. A push is
//! answered only after the record and its sync task are stored, so an accepted push is never lost.
//!
//! Money: every amount is a `Decimal` next to its currency; a line's amount is `quantity × unit price` rounded
//! to the currency's minor units, half away from zero (as QuickBooks rounds).

use chrono::{DateTime, NaiveDate, Utc};
use ledgerlink_model::Currency;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Platform, PlatformError, Result, now};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Client,
    Service,
    Invoice,
    Expense,
    TaxRate,
}

impl RecordKind {
    pub const ALL: [RecordKind; 5] = [RecordKind::Client, RecordKind::Service, RecordKind::Invoice, RecordKind::Expense, RecordKind::TaxRate];

    /// The document kind and the `object` of links on the platform side.
    pub fn as_str(&self) -> &'static str {
        match self {
            RecordKind::Client => "client",
            RecordKind::Service => "service",
            RecordKind::Invoice => "invoice",
            RecordKind::Expense => "expense",
            RecordKind::TaxRate => "tax_rate",
        }
    }

    /// The API path segment (`/api/v1/platform/clients`).
    pub fn path(&self) -> &'static str {
        match self {
            RecordKind::Client => "clients",
            RecordKind::Service => "services",
            RecordKind::Invoice => "invoices",
            RecordKind::Expense => "expenses",
            RecordKind::TaxRate => "tax-rates",
        }
    }

    pub fn from_path(path: &str) -> Option<RecordKind> {
        RecordKind::ALL.into_iter().find(|k| k.path() == path)
    }

    pub fn parse(kind: &str) -> Option<RecordKind> {
        RecordKind::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    fn noun(&self) -> &'static str {
        match self {
            RecordKind::Client => "client",
            RecordKind::Service => "service",
            RecordKind::Invoice => "invoice",
            RecordKind::Expense => "expense",
            RecordKind::TaxRate => "tax rate",
        }
    }
}

/// A platform client (QuickBooks customer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
}

/// A service the platform sells (QuickBooks product/service).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub unit_price: Option<Decimal>,
}

/// A tax rate of the platform, mapped to a QuickBooks tax code in the settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaxRate {
    pub id: String,
    pub name: String,
    /// Percent (`20` for 20 %).
    #[serde(with = "rust_decimal::serde::str")]
    pub rate_percent: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoiceLine {
    pub service_id: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(with = "rust_decimal::serde::str")]
    pub quantity: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub unit_price: Decimal,
    #[serde(default)]
    pub tax_rate_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invoice {
    pub id: String,
    /// The platform's invoice number (QuickBooks DocNumber, at most 21 characters).
    #[serde(default)]
    pub number: Option<String>,
    pub client_id: String,
    pub currency: String,
    pub issue_date: NaiveDate,
    #[serde(default)]
    pub due_date: Option<NaiveDate>,
    pub lines: Vec<InvoiceLine>,
    #[serde(default)]
    pub memo: Option<String>,
}

impl Invoice {
    pub fn currency(&self) -> Result<Currency> {
        Currency::parse(&self.currency).map_err(|e| PlatformError::invalid("currency", e.to_string()))
    }

    /// A line's amount: quantity × unit price, rounded to the currency's minor units half away from zero.
    pub fn line_amount(&self, line: &InvoiceLine) -> Result<Decimal> {
        let cur = self.currency()?;
        Ok(line.quantity.checked_mul(line.unit_price).ok_or_else(|| PlatformError::invalid("lines", "amount too large"))?
            .round_dp_with_strategy(cur.minor_units(), RoundingStrategy::MidpointAwayFromZero))
    }

    /// The sum of the line amounts (before tax).
    pub fn subtotal(&self) -> Result<Decimal> {
        self.lines.iter().try_fold(Decimal::ZERO, |sum, l| Ok(sum + self.line_amount(l)?))
    }
}

/// An expense logged against a workflow (QuickBooks bill or expense).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expense {
    pub id: String,
    pub workflow_id: String,
    /// Who was paid (QuickBooks vendor, found by name or created).
    pub vendor: String,
    pub date: NaiveDate,
    pub currency: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tax_rate_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    /// Stored; on its way to QuickBooks.
    Pending,
    Synced,
    /// Could not be written; `error` says why. Retried by the reconciliation pass after a fix.
    Failed,
    /// Needs a decision from an admin (an unmapped tax rate, an ambiguous customer match).
    NeedsReview,
    /// Automatic invoice push is off: kept here until it is switched on.
    Held,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    pub status: SyncStatus,
    /// The QuickBooks entity and id, once synced.
    pub quickbooks_type: Option<String>,
    pub quickbooks_id: Option<String>,
    /// Why it failed or needs review, in words.
    pub error: Option<String>,
    pub synced_at: Option<DateTime<Utc>>,
    /// For invoices: QuickBooks' total including tax, as it computed it.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub quickbooks_total: Option<Decimal>,
}

impl SyncState {
    pub(crate) fn with(status: SyncStatus, error: Option<String>) -> SyncState {
        SyncState { status, quickbooks_type: None, quickbooks_id: None, error, synced_at: None, quickbooks_total: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Unpaid,
    PartiallyPaid,
    Paid,
}

/// An invoice's payment state as QuickBooks has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentState {
    pub status: PaymentStatus,
    pub currency: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub total: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount_paid: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub balance: Decimal,
    /// The date of the latest payment applied to it.
    pub last_payment_date: Option<NaiveDate>,
    pub updated_at: DateTime<Utc>,
}

/// A record as stored and as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub kind: RecordKind,
    pub id: String,
    /// The record as last pushed (validated).
    pub data: Value,
    /// Bumped on every push that changes `data`.
    pub version: i64,
    pub sync: SyncState,
    #[serde(default)]
    pub payment: Option<PaymentState>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn check_id(field: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(PlatformError::invalid(field, format!("`{id}` is not a valid id: use 1-128 letters, digits, '-', '_', '.' or ':'")))
    }
}

fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(PlatformError::invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(PlatformError::invalid(field, format!("is longer than {max} characters")));
    }
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned>(kind: RecordKind, body: Value) -> Result<T> {
    serde_json::from_value(body).map_err(|e| PlatformError::invalid(kind.as_str(), format!("the {} is not valid: {e}", kind.noun())))
}

/// Validates a pushed body of `kind`; returns it in canonical form and its id.
pub fn validate(kind: RecordKind, body: Value) -> Result<(String, Value)> {
    let canonical = match kind {
        RecordKind::Client => {
            let c: Client = parse(kind, body)?;
            check_id("id", &c.id)?;
            check_text("name", &c.name, 100)?;
            if let Some(e) = &c.email
                && (!e.contains('@') || e.len() > 100)
            {
                return Err(PlatformError::invalid("email", format!("`{e}` is not an email address")));
            }
            serde_json::to_value(c)
        }
        RecordKind::Service => {
            let s: Service = parse(kind, body)?;
            check_id("id", &s.id)?;
            check_text("name", &s.name, 100)?;
            if s.name.contains(':') || s.name.contains('"') {
                return Err(PlatformError::invalid("name", "QuickBooks product names may not contain ':' or '\"'"));
            }
            if s.unit_price.is_some_and(|p| p.is_sign_negative()) {
                return Err(PlatformError::invalid("unit_price", "must not be negative"));
            }
            serde_json::to_value(s)
        }
        RecordKind::TaxRate => {
            let t: TaxRate = parse(kind, body)?;
            check_id("id", &t.id)?;
            check_text("name", &t.name, 100)?;
            if t.rate_percent.is_sign_negative() || t.rate_percent > Decimal::ONE_HUNDRED {
                return Err(PlatformError::invalid("rate_percent", "must be between 0 and 100"));
            }
            serde_json::to_value(t)
        }
        RecordKind::Invoice => {
            let i: Invoice = parse(kind, body)?;
            check_id("id", &i.id)?;
            check_id("client_id", &i.client_id)?;
            i.currency()?;
            if let Some(n) = &i.number {
                check_text("number", n, 21)?;
            }
            if i.lines.is_empty() {
                return Err(PlatformError::invalid("lines", "an invoice needs at least one line"));
            }
            for (n, l) in i.lines.iter().enumerate() {
                check_id(&format!("lines[{n}].service_id"), &l.service_id)?;
                if l.quantity <= Decimal::ZERO {
                    return Err(PlatformError::invalid(format!("lines[{n}].quantity"), "must be more than zero"));
                }
                if l.unit_price.is_sign_negative() {
                    return Err(PlatformError::invalid(format!("lines[{n}].unit_price"), "must not be negative"));
                }
                if let Some(t) = &l.tax_rate_id {
                    check_id(&format!("lines[{n}].tax_rate_id"), t)?;
                }
                i.line_amount(l).map_err(|_| PlatformError::invalid(format!("lines[{n}]"), "the amount is too large"))?;
            }
            if i.due_date.is_some_and(|d| d < i.issue_date) {
                return Err(PlatformError::invalid("due_date", "is before the issue date"));
            }
            serde_json::to_value(i)
        }
        RecordKind::Expense => {
            let e: Expense = parse(kind, body)?;
            check_id("id", &e.id)?;
            check_id("workflow_id", &e.workflow_id)?;
            check_text("vendor", &e.vendor, 100)?;
            Currency::parse(&e.currency).map_err(|err| PlatformError::invalid("currency", err.to_string()))?;
            if e.amount <= Decimal::ZERO {
                return Err(PlatformError::invalid("amount", "must be more than zero"));
            }
            serde_json::to_value(e)
        }
    }
    .map_err(|e| PlatformError::Internal(e.to_string()))?;
    let id = canonical.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
    Ok((id, canonical))
}

pub(crate) fn decode(kind: RecordKind, doc: &ledgerlink_store::PlatformDoc) -> Result<StoredRecord> {
    let rec: StoredRecord = serde_json::from_value(doc.body.clone())
        .map_err(|e| PlatformError::Internal(format!("stored {} {} is unreadable: {e}", kind.as_str(), doc.id)))?;
    Ok(rec)
}

pub(crate) fn encode(rec: &StoredRecord) -> Result<Value> {
    serde_json::to_value(rec).map_err(|e| PlatformError::Internal(e.to_string()))
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Created,
    Updated,
    /// Same data as stored: nothing to do.
    Unchanged,
}

impl Platform {
    /// Stores a pushed record (create or update by its id) and queues its sync. Returns once both are durable.
    pub async fn push_record(&self, workspace_id: &str, kind: RecordKind, body: Value) -> Result<(StoredRecord, Pushed)> {
        let (id, data) = validate(kind, body)?;
        let settings = self.load_settings(workspace_id).await?;
        loop {
            let existing = self.store.get_doc(workspace_id, kind.as_str(), &id).await?;
            let t = now();
            let (rec, pushed, rev) = match &existing {
                Some(doc) => {
                    let old = decode(kind, doc)?;
                    if old.data == data {
                        return Ok((old, Pushed::Unchanged));
                    }
                    let sync = SyncState { status: SyncStatus::Pending, error: None, ..old.sync.clone() };
                    let rec = StoredRecord { data: data.clone(), version: old.version + 1, sync, updated_at: t, ..old };
                    (rec, Pushed::Updated, Some(doc.rev))
                }
                None => {
                    let sync = SyncState::with(SyncStatus::Pending, None);
                    let rec = StoredRecord { kind, id: id.clone(), data: data.clone(), version: 1, sync, payment: None, created_at: t, updated_at: t };
                    (rec, Pushed::Created, None)
                }
            };
            let rec = self.initial_state(workspace_id, rec, &settings).await?;
            let body = encode(&rec)?;
            let stored = match rev {
                Some(rev) => match self.store.update_doc(workspace_id, kind.as_str(), &id, rev, &body, t).await {
                    Ok(_) => true,
                    Err(ledgerlink_store::StoreError::Conflict(_)) => false,
                    Err(e) => return Err(e.into()),
                },
                None => self.store.insert_doc(workspace_id, kind.as_str(), &id, &body, t).await?.1,
            };
            if !stored {
                // Someone else wrote it in between (a concurrent push or the worker): read again and redo.
                continue;
            }
            if rec.sync.status == SyncStatus::Pending && settings.frequency.real_time {
                self.queue_sync(workspace_id, kind, &id, rec.version).await?;
            }
            return Ok((rec, pushed));
        }
    }

    /// The status a record starts with: tax rates need no QuickBooks write, only a mapping; invoices wait while
    /// automatic push is off.
    async fn initial_state(&self, _workspace_id: &str, mut rec: StoredRecord, settings: &crate::IntegrationSettings) -> Result<StoredRecord> {
        match rec.kind {
            RecordKind::TaxRate => {
                rec.sync = match settings.tax_codes.get(&rec.id) {
                    Some(code) => SyncState {
                        status: SyncStatus::Synced,
                        quickbooks_type: Some("TaxCode".into()),
                        quickbooks_id: Some(code.id.clone()),
                        error: None,
                        synced_at: Some(now()),
                        quickbooks_total: None,
                    },
                    None => SyncState::with(
                        SyncStatus::NeedsReview,
                        Some("Map this tax rate to a QuickBooks tax code in the integration settings.".into()),
                    ),
                };
            }
            RecordKind::Invoice if !settings.invoices.auto_push => {
                rec.sync.status = SyncStatus::Held;
                rec.sync.error = Some("Automatic invoice push is off in the integration settings.".into());
            }
            RecordKind::Expense if !settings.expenses.enabled => {
                rec.sync.status = SyncStatus::Held;
                rec.sync.error = Some("Expense sync is off in the integration settings.".into());
            }
            _ => {}
        }
        Ok(rec)
    }

    /// Queues the sync of one version of one record (a no-op if that version is queued already).
    pub(crate) async fn queue_sync(&self, workspace_id: &str, kind: RecordKind, id: &str, version: i64) -> Result<()> {
        self.enqueue_sync(workspace_id, kind, id, version, format!("sync:{workspace_id}:{}:{id}:{version}", kind.as_str())).await
    }

    /// Queues another sync of a version whose first task has ended (after an admin's decision or a settings fix);
    /// `attempt` tells the new task apart from the old one.
    pub(crate) async fn queue_sync_again(&self, workspace_id: &str, kind: RecordKind, id: &str, version: i64, attempt: i64) -> Result<()> {
        let key = format!("sync:{workspace_id}:{}:{id}:{version}:again:{attempt}", kind.as_str());
        self.enqueue_sync(workspace_id, kind, id, version, key).await
    }

    async fn enqueue_sync(&self, workspace_id: &str, kind: RecordKind, id: &str, version: i64, dedupe_key: String) -> Result<()> {
        let task = ledgerlink_store::NewPlatformTask {
            workspace_id: workspace_id.to_string(),
            kind: crate::sync::TASK_SYNC.to_string(),
            dedupe_key,
            payload: serde_json::json!({"kind": kind.as_str(), "id": id, "version": version}),
            run_at: now(),
            max_attempts: self.options.max_attempts,
        };
        self.store.enqueue_task(&task).await?;
        self.wake_worker();
        Ok(())
    }

    pub async fn get_record(&self, workspace_id: &str, kind: RecordKind, id: &str) -> Result<StoredRecord> {
        let doc = self.store.get_doc(workspace_id, kind.as_str(), id).await?;
        let doc = doc.ok_or_else(|| PlatformError::NotFound { what: kind.noun(), id: id.to_string() })?;
        decode(kind, &doc)
    }

    pub async fn list_records(&self, workspace_id: &str, kind: RecordKind) -> Result<Vec<StoredRecord>> {
        self.store.list_docs(workspace_id, kind.as_str()).await?.iter().map(|d| decode(kind, d)).collect()
    }

    /// Changes a stored record with `f` (compare-and-swap, retried on a concurrent write). Returns the result.
    pub(crate) async fn modify_record<F>(&self, workspace_id: &str, kind: RecordKind, id: &str, mut f: F) -> Result<StoredRecord>
    where
        F: FnMut(&mut StoredRecord) + Send,
    {
        loop {
            let doc = self.store.get_doc(workspace_id, kind.as_str(), id).await?;
            let doc = doc.ok_or_else(|| PlatformError::NotFound { what: kind.noun(), id: id.to_string() })?;
            let mut rec = decode(kind, &doc)?;
            f(&mut rec);
            rec.updated_at = now();
            match self.store.update_doc(workspace_id, kind.as_str(), id, doc.rev, &encode(&rec)?, rec.updated_at).await {
                Ok(_) => return Ok(rec),
                Err(ledgerlink_store::StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// After a settings save: releases held records (automatic push switched on), retries records that waited
    /// for a setting (an income account, a tax mapping), and re-checks tax-rate mappings.
    pub(crate) async fn release_held(&self, workspace_id: &str) -> Result<()> {
        let settings = self.load_settings(workspace_id).await?;
        let pass = now().timestamp_millis();
        for kind in RecordKind::ALL {
            for rec in self.list_records(workspace_id, kind).await? {
                if kind == RecordKind::TaxRate {
                    let fresh = self.initial_state(workspace_id, rec.clone(), &settings).await?;
                    if fresh.sync.status != rec.sync.status || fresh.sync.quickbooks_id != rec.sync.quickbooks_id {
                        self.modify_record(workspace_id, kind, &rec.id, |r| r.sync = fresh.sync.clone()).await?;
                    }
                    continue;
                }
                let held_released = rec.sync.status == SyncStatus::Held
                    && match kind {
                        RecordKind::Invoice => settings.invoices.auto_push,
                        RecordKind::Expense => settings.expenses.enabled,
                        _ => true,
                    };
                let waiting = rec.sync.status == SyncStatus::NeedsReview;
                if !held_released && !waiting {
                    continue;
                }
                let version = rec.version;
                self.modify_record(workspace_id, kind, &rec.id, |r| r.sync = SyncState { status: SyncStatus::Pending, error: None, ..r.sync.clone() })
                    .await?;
                if held_released {
                    self.queue_sync(workspace_id, kind, &rec.id, version).await?;
                } else {
                    self.queue_sync_again(workspace_id, kind, &rec.id, version, pass).await?;
                }
            }
        }
        Ok(())
    }
}
