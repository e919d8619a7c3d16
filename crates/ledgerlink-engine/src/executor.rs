//! Runs one flow for one source record.
//!
//! Steps run in order; each result is bound under the step id for later expressions. The guarantees live here:
//! - a create is preceded by the link lookup and the match cascade, so an existing record is found, not doubled;
//! - every create carries [`crate::keys::action_key`] (flow, source record, step) as its idempotency key, and its
//!   intent is stored before the call and completed after, so a crash in between is healed by the same key;
//! - an update that would change nothing is not sent (our own write-back coming back as a change stays quiet);
//! - anything the engine must not guess (several candidates, data that fails validation) becomes a review item
//!   with the reason in words, and nothing is written for that record.

use std::sync::atomic::AtomicU64;

use chrono::NaiveDate;
use ledgerlink_connectors::{ConnectorError, FindQuery, Record};
use ledgerlink_flow::{Expr, Flow, Mapping, MatchHow, SourceRef, Step, StepKind, Scope};
use ledgerlink_model::{Currency, CustomFieldValue, Invoice, InvoiceDiscount, InvoiceLine, Money, RecordRef, parse_decimal};
use ledgerlink_store::{IntentStatus, Link, NewAuditEntry, NewReviewItem, NewWriteIntent, ReviewId, StoreError};
use rust_decimal::Decimal;
use serde_json::{Value, json};

mod notify;
mod report;

use crate::review::{Decision, Decisions};
use crate::{Engine, Stats, keys, matching};

mod sync;

/// How a record's run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every step ran; `writes` external writes were made.
    Done { writes: u32 },
    /// The condition was false for this record.
    Skipped,
    /// A decision is needed; the job waits on this review item.
    Review(ReviewId),
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("step `{step}`: {source}")]
    Connector { step: String, source: ConnectorError },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}

impl ExecError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ExecError::Connector { source, .. } => source.is_retryable(),
            ExecError::Store(_) => true,
            ExecError::Other(_) => false,
        }
    }

    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ExecError::Connector { source, .. } => source.retry_after(),
            _ => None,
        }
    }
}

/// A problem with the data or the mapping of one record: it goes to review, it is not retried.
struct Invalid {
    step: String,
    kind: &'static str,
    reason: String,
    details: Value,
}

enum StepError {
    Exec(ExecError),
    Invalid(Invalid),
    Review(ReviewId),
    /// A create refused because an equal record exists (another writer was faster); carries the refusal.
    Duplicate(Invalid),
    /// Nothing to do for this record (said why): the run ends as skipped.
    Skip(String),
}

impl From<ExecError> for StepError {
    fn from(e: ExecError) -> Self {
        StepError::Exec(e)
    }
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        StepError::Exec(ExecError::Store(e))
    }
}

/// The context of one run: which job, which flow, the variables so far.
struct Run<'a> {
    engine: &'a Engine,
    flow: &'a Flow,
    job_id: Option<i64>,
    /// The variables so far (`record`, `params`, each step's output), as expressions read them.
    scope: Scope,
    writes: u32,
    /// What people decided on this job's earlier review items.
    decisions: Decisions,
    /// Every record of (connection, object), read once per run for name matching.
    all_records: std::collections::HashMap<(String, String), Vec<Record>>,
    /// In a dry run, the writes that would have been made (and nothing is written, linked or counted).
    plan: Option<Vec<PlannedWrite>>,
    /// Change time of each record this run updated, as it was before the run's first write to it. "Newest wins"
    /// compares people's edits: a write of this same run (an earlier step) must not make a record look newer.
    changed_before_run: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>>,
}

/// One write a dry run would have made.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum PlannedWrite {
    Create { connection: String, object: String, fields: Value },
    Update { connection: String, object: String, id: String, before: Value, after: Value },
    Delete { connection: String, object: String, id: String, before: Value },
    Review { kind: String, reason: String },
    /// A message a `notify` step would send (not yet sent under its key).
    Notify { connection: String, title: String, text: String, fields: Value },
    /// A report a `reconcile` step would keep (none kept yet for its period).
    Report { flow: String, period: String, title: String, mismatches: usize },
}

/// What a dry run of one record found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub outcome: String,
    pub writes: Vec<PlannedWrite>,
}

/// Runs `flow` for `record` against live data, reading everything and writing nothing: the creates, updates
/// and review items it would make are returned instead.
pub async fn plan_flow(engine: &Engine, flow: &Flow, record: Value) -> Result<Plan, ExecError> {
    plan_flow_at(engine, flow, record, crate::now()).await
}

/// [`plan_flow`] as a run at `at` would go (`today` is `at`'s day): a dry run of a scheduled firing's record.
pub async fn plan_flow_at(engine: &Engine, flow: &Flow, record: Value, at: chrono::DateTime<chrono::Utc>) -> Result<Plan, ExecError> {
    let mut run = Run::new(engine, flow, record, None, Decisions::default(), at);
    run.plan = Some(Vec::new());
    let outcome = run.execute().await?;
    Ok(Plan {
        outcome: match outcome {
            Outcome::Done { .. } => "done".into(),
            Outcome::Skipped => "skipped (the flow's condition is false for this record)".into(),
            Outcome::Review(_) => "stops for review".into(),
        },
        writes: run.plan.take().unwrap_or_default(),
    })
}

/// Runs `flow` for `record` (a snapshot of the trigger's source record).
pub async fn run_flow(engine: &Engine, flow: &Flow, record: Value, job_id: Option<i64>) -> Result<Outcome, ExecError> {
    run_flow_at(engine, flow, record, job_id, crate::now()).await
}

/// [`run_flow`] for the moment `at`: a run a scheduled firing started sees the firing's day as `today`, however
/// late the job runs.
pub async fn run_flow_at(engine: &Engine, flow: &Flow, record: Value, job_id: Option<i64>, at: chrono::DateTime<chrono::Utc>) -> Result<Outcome, ExecError> {
    let decisions = Decisions::load(engine.store.as_ref(), job_id).await?;
    if decisions.dismissed() {
        return Ok(Outcome::Skipped);
    }
    Run::new(engine, flow, record, job_id, decisions, at).execute().await
}

impl<'a> Run<'a> {
    fn new(engine: &'a Engine, flow: &'a Flow, record: Value, job_id: Option<i64>, decisions: Decisions, at: chrono::DateTime<chrono::Utc>) -> Run<'a> {
        let mut scope = Scope::new();
        scope.set("record", record);
        scope.set(
            "params",
            Value::Object(flow.params.iter().map(|(k, v)| (k.clone(), Value::String(v.value.clone()))).collect()),
        );
        scope.set("now", Value::String(crate::now().to_rfc3339()));
        scope.set("today", Value::String(crate::triggers::local_date(flow, at)));
        Run { engine, flow, job_id, scope, writes: 0, decisions, all_records: Default::default(), plan: None, changed_before_run: Default::default() }
    }

    async fn execute(&mut self) -> Result<Outcome, ExecError> {
        let flow = self.flow;
        if let Some(cond) = &flow.condition {
            let invalid = |reason: String| Invalid {
                step: "when".into(),
                kind: "mapping_error",
                reason,
                details: json!({"expression": cond.source()}),
            };
            match cond.eval_in(&self.scope) {
                Ok(Value::Bool(true)) => {}
                Ok(Value::Bool(false)) => return Ok(Outcome::Skipped),
                Ok(other) => return self.send_to_review(invalid(format!("the flow's condition must be true or false, but it gave {other}"))).await,
                Err(e) => return self.send_to_review(invalid(format!("the flow's condition could not be evaluated: {e}"))).await,
            }
        }
        for step in &flow.steps {
            let result = match &step.for_each {
                None => self.step(step).await,
                Some(over) => self.for_each(step, over).await,
            };
            match result {
                Ok(value) => {
                    self.scope.set(&step.id, value);
                }
                Err(StepError::Exec(e)) => return Err(e),
                Err(StepError::Review(id)) => return Ok(Outcome::Review(id)),
                Err(StepError::Skip(why)) => {
                    tracing::info!(flow = %flow.name, step = %step.id, "{why}");
                    return Ok(Outcome::Skipped);
                }
                Err(StepError::Invalid(inv) | StepError::Duplicate(inv)) => return self.send_to_review(inv).await,
            }
        }
        Ok(Outcome::Done { writes: self.writes })
    }
}

impl Run<'_> {
    fn stats(&self) -> &Stats {
        &self.engine.stats
    }

    fn count(&self, pick: impl Fn(&Stats) -> &AtomicU64) {
        if self.plan.is_none() {
            Stats::inc(pick(self.stats()));
        }
    }

    /// Files a review item (in a dry run: notes that one would be filed).
    async fn raise_review(&mut self, item: NewReviewItem) -> Result<ReviewId, StoreError> {
        if let Some(plan) = &mut self.plan {
            plan.push(PlannedWrite::Review { kind: item.kind, reason: item.reason });
            return Ok(0);
        }
        self.engine.store.create_review(&item).await
    }

    async fn send_to_review(&mut self, inv: Invalid) -> Result<Outcome, ExecError> {
        let subject = self.trigger_ref();
        let id = self
            .raise_review(NewReviewItem {
                flow: Some(self.flow.name.clone()),
                job_id: self.job_id,
                kind: inv.kind.to_string(),
                reason: format!("step `{}`: {}", inv.step, inv.reason),
                subject,
                details: inv.details,
                created_at: crate::now(),
            })
            .await?;
        Ok(Outcome::Review(id))
    }

    fn trigger_ref(&self) -> Option<RecordRef> {
        let (connection, object, _) = self.flow.trigger.source()?;
        let id = self.scope.get("record")?.get("Id")?.as_str()?;
        Some(RecordRef::new(connection, object, id))
    }

    fn eval(&self, step: &Step, expr: &Expr) -> Result<Value, StepError> {
        expr.eval_in(&self.scope).map_err(|e| {
            StepError::Invalid(Invalid {
                step: step.id.clone(),
                kind: "mapping_error",
                reason: format!("{}: {e}", self.flow.file),
                details: json!({"expression": expr.source()}),
            })
        })
    }

    /// An expression that must give a list; null is the empty list.
    fn eval_list(&self, step: &Step, expr: &Expr, what: &str) -> Result<Vec<Value>, StepError> {
        match self.eval(step, expr)? {
            Value::Array(items) => Ok(items),
            Value::Null => Ok(Vec::new()),
            other => Err(invalid(step, format!("{what} `{}` must be a list, but it gave {other}", expr.source()))),
        }
    }

    fn eval_string(&self, step: &Step, expr: &Expr, what: &str) -> Result<Option<String>, StepError> {
        match self.eval(step, expr)? {
            Value::Null => Ok(None),
            Value::String(s) if s.is_empty() => Ok(None),
            Value::String(s) => Ok(Some(s)),
            Value::Number(n) => Ok(Some(n.to_string())),
            other => Err(invalid(step, format!("{what} must be text, but `{}` gave {other}", expr.source()))),
        }
    }

    async fn for_each(&mut self, step: &Step, over: &Expr) -> Result<Value, StepError> {
        let items = self.eval_list(step, over, "for_each")?;
        let mut results = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let shadowed_item = self.scope.push(&step.as_name, item);
            let shadowed_index = self.scope.push("index", json!(i));
            let r = self.step(step).await;
            self.scope.pop("index", shadowed_index);
            self.scope.pop(&step.as_name, shadowed_item);
            results.push(r?);
        }
        Ok(Value::Array(results))
    }

    fn connector(&self, step: &Step, name: &str) -> Result<std::sync::Arc<dyn ledgerlink_connectors::Connector>, StepError> {
        self.engine
            .connectors
            .get(name)
            .cloned()
            .ok_or_else(|| StepError::Exec(ExecError::Other(format!("step `{}`: connection `{name}` is not configured", step.id))))
    }

    async fn step(&mut self, step: &Step) -> Result<Value, StepError> {
        match &step.kind {
            StepKind::Get { connection, object, id: id_expr, fields, required } => {
                let Some(id) = self.eval_string(step, id_expr, "record_id")? else {
                    if *required {
                        return Err(not_found(step, format!("there is no {object} to read: `{}` is empty", id_expr.source())));
                    }
                    return Ok(Value::Null);
                };
                let conn = self.connector(step, connection)?;
                match conn.get(object, &id, fields).await.map_err(|e| conn_err(step, e))? {
                    Some(rec) => Ok(Value::Object(rec)),
                    None if *required => Err(not_found(step, format!("{object} {id} does not exist in {connection}"))),
                    None => Ok(Value::Null),
                }
            }
            StepKind::Find { connection, object, equals, compare, fields } => {
                let mut pairs = Vec::new();
                for (field, expr) in equals {
                    match self.eval(step, expr)? {
                        Value::Null => return Ok(Value::Array(Vec::new())),
                        v => pairs.push((field.clone(), v)),
                    }
                }
                // A comparison travels as `"field op"` (see `FindQuery::equals`); null compares with nothing.
                for c in compare {
                    match self.eval(step, &c.value)? {
                        Value::Null => return Ok(Value::Array(Vec::new())),
                        v => pairs.push((format!("{} {}", c.field, c.op.as_str()), v)),
                    }
                }
                let conn = self.connector(step, connection)?;
                let q = FindQuery { object: object.clone(), equals: pairs, fields: fields.clone(), limit: None };
                let recs = conn.find(&q).await.map_err(|e| conn_err(step, e))?;
                Ok(Value::Array(recs.into_iter().map(Value::Object).collect()))
            }
            StepKind::FindOrCreate { connection, object, source, match_rules, create } => {
                self.find_or_create(step, connection, object, source, match_rules, create).await
            }
            StepKind::CreateInvoice { connection, source, header, lines, line, expected_total, merge_lines, existing } => {
                let options = InvoiceOptions { expected_total: expected_total.as_ref(), merge_lines: merge_lines.as_ref(), existing: existing.as_ref() };
                self.create_invoice(step, connection, source, header, lines, line, options).await
            }
            StepKind::Update { connection, object, id, fields } => self.update(step, connection, object, id, fields).await,
            StepKind::Delete { connection, object, id } => self.delete(step, connection, object, id).await,
            StepKind::Sync { connection, object, id, source, pairs, policies, default_policy, removal } => {
                self.sync(step, connection, object, id, source, pairs, policies, *default_policy, removal).await
            }
            StepKind::Notify { connection, title, text, fields, once_key } => {
                self.notify(step, connection, title, text, fields, once_key.as_ref()).await
            }
            StepKind::Reconcile { title, period, left, right } => self.reconcile(step, title, period, left, right).await,
        }
    }

    fn source_ref(&self, step: &Step, source: &SourceRef) -> Result<RecordRef, StepError> {
        let id = self
            .eval_string(step, &source.id, "source id")?
            .ok_or_else(|| invalid(step, format!("the source {} has no id (`{}` is empty)", source.object, source.id.source())))?;
        Ok(RecordRef::new(source.connection.clone(), source.object.clone(), id))
    }

    async fn find_or_create(
        &mut self,
        step: &Step,
        connection: &str,
        object: &str,
        source: &SourceRef,
        match_rules: &[ledgerlink_flow::MatchRule],
        create: &Mapping,
    ) -> Result<Value, StepError> {
        let src = self.source_ref(step, source)?;
        let conn = self.connector(step, connection)?;
        let store = self.engine.store.clone();
        let locks = self.engine.locks.clone();
        let _turn = locks.lock(&keys::action_key(&self.flow.name, &src, &step.id)).await;
        let is_customer = object.eq_ignore_ascii_case("Customer");

        // 1. The link table: we have seen this source before. The linked record is read, unless this process
        //    read it a moment ago (see `recent`).
        if let Some(link) = store.find_link(&src, connection, object).await? {
            let target = other_side(&link, &src);
            let recent = &self.engine.recent;
            if let Some(rec) = recent.get(connection, object, &target.id) {
                return Ok(Value::Object(rec));
            }
            if let Some(rec) = conn.get(object, &target.id, &[]).await.map_err(|e| conn_err(step, e))? {
                recent.put(connection, object, &target.id, &rec);
                return Ok(Value::Object(rec));
            }
            if self.trigger_removed(&src) {
                return Err(StepError::Skip(format!("{src} is deleted or inactive and its linked {target} is gone: nothing to do")));
            }
            // A deleted record a sync saw go is not brought back by a change on the other side.
            if sync::remembers_deleted(&link, &target) {
                return Err(StepError::Skip(format!("{target}, linked to {src}, was deleted; it is not re-created")));
            }
            tracing::warn!(flow = %self.flow.name, %src, target = %target, "linked record no longer exists; matching again");
        }
        // A deleted or inactive record that was never linked: nothing to match, nothing to create.
        if self.trigger_removed(&src) {
            return Err(StepError::Skip(format!("{src} is deleted or inactive and not linked to any {object}: nothing to match or create")));
        }

        // 2. The match cascade.
        if let Some(found) = self.match_cascade(step, &conn, connection, object, &src, match_rules, is_customer).await? {
            return Ok(found);
        }

        // 3. Nothing found: create it, exactly once.
        let record = self.build_record(step, create)?;
        let key = keys::action_key(&self.flow.name, &src, &step.id);
        let created = match self.create_once(step, &conn, connection, object, &record, &key).await {
            // Another writer created an equal record between our look and our create (two accounts of the same
            // name, two workers): look again, now with the fresh record in view, and link it.
            Err(StepError::Duplicate(refusal)) => {
                self.all_records.remove(&(connection.to_string(), object.to_string()));
                return match self.match_cascade(step, &conn, connection, object, &src, match_rules, is_customer).await? {
                    Some(found) => Ok(found),
                    None => Err(StepError::Invalid(refusal)),
                };
            }
            other => other?,
        };
        let id = conn.record_id(&created).unwrap_or_default();
        if self.plan.is_none() {
            self.engine.recent.put(connection, object, &id, &created);
        }
        self.link(&src, RecordRef::new(connection, object, id), Some(keys::value_hash(&Value::Object(record)))).await?;
        if is_customer {
            self.count(|s| &s.customers_created);
        }
        Ok(Value::Object(created))
    }

    /// Tries each match rule in order. Exact and normalised rules take a single candidate; several candidates, or
    /// any fuzzy ones, go to a person, unless a person already decided. `None`: nothing matched, create.
    #[allow(clippy::too_many_arguments)]
    async fn match_cascade(
        &mut self,
        step: &Step,
        conn: &std::sync::Arc<dyn ledgerlink_connectors::Connector>,
        connection: &str,
        object: &str,
        src: &RecordRef,
        match_rules: &[ledgerlink_flow::MatchRule],
        is_customer: bool,
    ) -> Result<Option<Value>, StepError> {
        let src = src.clone();
        for rule in match_rules {
            let value = match self.eval(step, &rule.value)? {
                Value::Null => continue,
                Value::String(s) if s.trim().is_empty() => continue,
                v => v,
            };
            let candidates = self.candidates(step, conn, connection, object, rule, &value).await?;
            if candidates.is_empty() {
                continue;
            }
            if candidates.len() == 1 && !matches!(rule.how, MatchHow::Fuzzy { .. }) {
                let rec = candidates.into_iter().next().map(|(r, _)| r).unwrap_or_default();
                let id = conn.record_id(&rec).unwrap_or_default();
                self.link(&src, RecordRef::new(connection, object, id), None).await?;
                self.matched(is_customer);
                return Ok(Some(Value::Object(rec)));
            }
            match self.decisions.for_match(&src, &step.id).cloned() {
                Some(Decision::Link { target_id }) => {
                    let rec = conn.get(object, &target_id, &[]).await.map_err(|e| conn_err(step, e))?.ok_or_else(|| {
                        invalid(step, format!("the {object} {target_id} chosen in review no longer exists in {connection}"))
                    })?;
                    self.link(&src, RecordRef::new(connection, object, target_id), None).await?;
                    self.matched(is_customer);
                    return Ok(Some(Value::Object(rec)));
                }
                // A person chose a new record over these candidates.
                Some(Decision::Create) => return Ok(None),
                _ => {}
            }
            let how = match rule.how {
                MatchHow::Exact => "exactly".to_string(),
                MatchHow::Normalized => "after normalising names".to_string(),
                MatchHow::Fuzzy { threshold } => format!("by similar name (score ≥ {threshold})"),
            };
            let listed: Vec<Value> = candidates
                .iter()
                .map(|(c, score)| json!({"id": conn.record_id(c), "score": score, "record": Value::Object(c.clone())}))
                .collect();
            let reason = if candidates.len() == 1 {
                format!("step `{}`: one {object} in {connection} matches {} = {value} only {how}; confirm it or create a new one", step.id, rule.field)
            } else {
                format!("step `{}`: {} {object} records in {connection} match {} = {value} {how}; choose the right one or create a new one", step.id, candidates.len(), rule.field)
            };
            let id = self
                .raise_review(NewReviewItem {
                    flow: Some(self.flow.name.clone()),
                    job_id: self.job_id,
                    kind: "ambiguous_match".into(),
                    reason,
                    subject: Some(src.clone()),
                    details: json!({"step": step.id, "field": rule.field, "value": value, "how": how, "candidates": listed}),
                    created_at: crate::now(),
                })
                .await?;
            return Err(StepError::Review(id));
        }

        Ok(None)
    }

    fn matched(&self, is_customer: bool) {
        self.count(|s| &s.records_matched);
        if is_customer {
            self.count(|s| &s.customers_matched);
        }
    }

    /// The records of `object` that `rule` matches for `value`, with a score (1.0 unless fuzzy), best first.
    async fn candidates(
        &mut self,
        step: &Step,
        conn: &std::sync::Arc<dyn ledgerlink_connectors::Connector>,
        connection: &str,
        object: &str,
        rule: &ledgerlink_flow::MatchRule,
        value: &Value,
    ) -> Result<Vec<(Record, f64)>, StepError> {
        if rule.how == MatchHow::Exact {
            let q = FindQuery { object: object.to_string(), equals: vec![(rule.field.clone(), value.clone())], fields: vec![], limit: Some(10) };
            let found = conn.find(&q).await.map_err(|e| conn_err(step, e))?;
            return Ok(found.into_iter().map(|r| (r, 1.0)).collect());
        }
        let wanted = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let key = (connection.to_string(), object.to_string());
        if !self.all_records.contains_key(&key) {
            let q = FindQuery { object: object.to_string(), equals: vec![], fields: vec![], limit: None };
            let all = conn.find(&q).await.map_err(|e| conn_err(step, e))?;
            self.all_records.insert(key.clone(), all);
        }
        let all = self.all_records.get(&key).map(Vec::as_slice).unwrap_or_default();
        let wanted_norm = matching::normalize_name(&wanted);
        let mut out: Vec<(Record, f64)> = all
            .iter()
            .filter_map(|r| {
                let text = field_text(r, &rule.field)?;
                match rule.how {
                    MatchHow::Normalized => (matching::normalize_name(&text) == wanted_norm).then_some((r.clone(), 1.0)),
                    // A similarity score, not an amount: rounded to 3 places for the reviewer.
                    #[allow(clippy::float_arithmetic)]
                    MatchHow::Fuzzy { threshold } => {
                        let score = matching::similarity(&text, &wanted);
                        (score >= threshold).then(|| (r.clone(), (score * 1000.0).round() / 1000.0))
                    }
                    MatchHow::Exact => None,
                }
            })
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out.truncate(10);
        Ok(out)
    }

    /// Creates `record` under `key`: the intent is stored first; a completed intent returns the record it made.
    async fn create_once(
        &mut self,
        step: &Step,
        conn: &std::sync::Arc<dyn ledgerlink_connectors::Connector>,
        connection: &str,
        object: &str,
        record: &Record,
        key: &str,
    ) -> Result<Record, StepError> {
        if let Some(plan) = &mut self.plan {
            plan.push(PlannedWrite::Create { connection: connection.into(), object: object.into(), fields: Value::Object(record.clone()) });
            let mut planned = record.clone();
            planned.insert("Id".into(), json!(format!("(new {object})")));
            return Ok(planned);
        }
        let store = self.engine.store.clone();
        let intent = store
            .begin_intent(&NewWriteIntent {
                key: key.to_string(),
                flow: self.flow.name.clone(),
                job_id: self.job_id,
                connection: connection.to_string(),
                object: object.to_string(),
                action: step.id.clone(),
                payload: Value::Object(record.clone()),
                created_at: crate::now(),
            })
            .await?;
        if intent.status == IntentStatus::Done
            && let Some(id) = &intent.result_id
            && let Some(rec) = conn.get(object, id, &[]).await.map_err(|e| conn_err(step, e))?
        {
            self.count(|s| &s.duplicates_prevented);
            return Ok(rec);
        }
        match conn.create(object, record, keys::request_key(&intent)).await {
            Ok(created) => {
                let id = conn.record_id(&created).unwrap_or_default();
                let now = crate::now();
                let audit = self.audit_entry(connection, object, Some(id.clone()), "create", "ok", None, Some(Value::Object(created.clone())), None);
                store.complete_intent(key, &id, &Value::Object(created.clone()), now, &audit).await?;
                self.writes += 1;
                self.count(|s| &s.records_created);
                Ok(created)
            }
            Err(e) => {
                self.record_audit(self.audit_entry(connection, object, None, "create", "error", None, Some(Value::Object(record.clone())), Some(e.to_string())))
                    .await?;
                if let ConnectorError::Validation { code, message, field } = &e {
                    // Nothing was created: the next attempt (after the cause is fixed) must not be answered with
                    // this refusal again.
                    store.refuse_intent(key, &keys::retry_request_key(key, intent.attempts), message).await?;
                    let refusal = Invalid {
                        step: step.id.clone(),
                        kind: "rejected",
                        reason: format!("{connection} refused to create the {object}: {message}"),
                        details: json!({"code": code, "field": field, "payload": Value::Object(record.clone())}),
                    };
                    return Err(if conn.is_duplicate_error(&e) { StepError::Duplicate(refusal) } else { StepError::Invalid(refusal) });
                }
                Err(conn_err(step, e))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_invoice(
        &mut self,
        step: &Step,
        connection: &str,
        source: &SourceRef,
        header: &Mapping,
        lines: &Expr,
        line: &Mapping,
        options: InvoiceOptions<'_>,
    ) -> Result<Value, StepError> {
        let src = self.source_ref(step, source)?;
        let conn = self.connector(step, connection)?;
        let store = self.engine.store.clone();
        let locks = self.engine.locks.clone();
        let _turn = locks.lock(&keys::action_key(&self.flow.name, &src, &step.id)).await;

        let mut invoice = self.build_invoice(step, header, lines, line)?;
        if let Some(expr) = options.merge_lines {
            match self.eval(step, expr)? {
                Value::Bool(true) => invoice.merge_lines(),
                Value::Bool(false) | Value::Null => {}
                other => return Err(invalid(step, format!("merge_lines must be true or false, but `{}` gave {other}", expr.source()))),
            }
        }
        let expected = match options.expected_total {
            None => None,
            Some(expr) => match self.eval(step, expr)? {
                Value::Null => None,
                v => Some(to_decimal(&v).map_err(|m| invalid(step, format!("expected_total: {m}")))?),
            },
        };

        // Already invoiced: the link says so. Never a second invoice for the same source; a source now worth
        // something else than its invoice goes to a person.
        if let Some(link) = store.find_link(&src, connection, "Invoice").await? {
            let target = other_side(&link, &src);
            self.count(|s| &s.duplicates_prevented);
            return match conn.get("Invoice", &target.id, &[]).await.map_err(|e| conn_err(step, e))? {
                Some(rec) => self.same_amount_or_review(step, connection, &src, &invoice, expected, rec),
                None => Err(StepError::Invalid(Invalid {
                    step: step.id.clone(),
                    kind: "linked_record_missing",
                    reason: format!(
                        "{src} was invoiced as {target}, which no longer exists in {connection}; it is not re-created automatically (it may have been deleted on purpose)"
                    ),
                    details: json!({"invoice": target}),
                })),
            };
        }

        // An invoice that already bills this source by another way (an estimate converted in the target
        // system): linked, not made again.
        if let Some(expr) = options.existing
            && let Some(id) = self.eval_string(step, expr, "existing")?
            && let Some(rec) = conn.get("Invoice", &id, &[]).await.map_err(|e| conn_err(step, e))?
        {
            self.link(&src, RecordRef::new(connection, "Invoice", id), None).await?;
            self.count(|s| &s.duplicates_prevented);
            return self.same_amount_or_review(step, connection, &src, &invoice, expected, rec);
        }

        if let Err(e) = invoice.validate() {
            return Err(StepError::Invalid(Invalid {
                step: step.id.clone(),
                kind: "validation",
                reason: format!("the invoice for {src} is not valid: {e}"),
                details: serde_json::to_value(&invoice).unwrap_or(Value::Null),
            }));
        }
        if let (Some(term), None) = (&invoice.term_name, &invoice.term_id) {
            return Err(StepError::Invalid(Invalid {
                step: step.id.clone(),
                kind: "unknown_term",
                reason: format!(
                    "the payment term `{term}` of {src} is not a term in {connection}; add it there (or correct the term at the source), then retry"
                ),
                details: json!({"term": term}),
            }));
        }
        if let Some(expected) = expected
            && let Err(e) = invoice.check_total(Money::new(expected, invoice.currency))
        {
            return Err(StepError::Invalid(Invalid {
                step: step.id.clone(),
                kind: "validation",
                reason: format!("the invoice for {src} does not add up: {e}"),
                details: serde_json::to_value(&invoice).unwrap_or(Value::Null),
            }));
        }
        let payload = conn.encode_invoice(&invoice).map_err(|e| conn_err(step, e))?;
        let key = keys::action_key(&self.flow.name, &src, &step.id);
        let created = match self.create_once(step, &conn, connection, "Invoice", &payload, &key).await {
            // The system already holds a document with this number: an earlier attempt of ours whose answer was
            // lost, or someone else's. Ours only if it is for the same customer and the same total.
            Err(StepError::Duplicate(refusal)) => self.adopt_invoice(step, &conn, connection, &invoice, &key, refusal).await?,
            other => other?,
        };
        let id = conn.record_id(&created).unwrap_or_default();
        self.link(&src, RecordRef::new(connection, "Invoice", id), Some(keys::value_hash(&Value::Object(payload)))).await?;
        self.count(|s| &s.invoices_created);
        Ok(Value::Object(created))
    }

    /// The invoice `rec` that already bills `src`, if `src` is still worth what it was invoiced for (compared
    /// before tax, which the target adds); otherwise a review item naming both amounts, and nothing is written.
    /// What `src` is worth now: `expected` (its stated amount) less the whole-invoice discount, else the lines.
    fn same_amount_or_review(
        &self,
        step: &Step,
        connection: &str,
        src: &RecordRef,
        now: &Invoice,
        expected: Option<Decimal>,
        rec: Record,
    ) -> Result<Value, StepError> {
        let now_total = match expected {
            Some(e) => now.total_for(e),
            None => now.total(),
        };
        let field = |k: &str| rec.get(k).map(to_decimal).and_then(Result::ok);
        let tax = rec.get("TxnTaxDetail").and_then(|t| t.get("TotalTax")).map(to_decimal).and_then(Result::ok).unwrap_or_default();
        let currency = rec
            .get("CurrencyRef")
            .and_then(|c| c.get("value"))
            .and_then(Value::as_str)
            .and_then(|c| Currency::parse(c).ok())
            .unwrap_or(now.currency);
        let Some(total) = field("TotalAmt") else {
            return Ok(Value::Object(rec));
        };
        let invoiced = Money::new(total - tax, currency).rounded();
        if invoiced == now_total.rounded() {
            return Ok(Value::Object(rec));
        }
        let id = rec.get("Id").and_then(Value::as_str).unwrap_or_default().to_string();
        let number = rec.get("DocNumber").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| id.clone());
        let what = src.object.to_lowercase();
        Err(StepError::Invalid(Invalid {
            step: step.id.clone(),
            kind: "amount_changed",
            reason: format!(
                "invoiced {} on invoice {number}; {what} now {}. {src} is not invoiced twice: correct the invoice in {connection} or the {what}, then retry (or dismiss to keep the invoice as it is)",
                money_text(invoiced),
                money_text(now_total.rounded()),
            ),
            details: json!({
                "invoice": {"id": id, "doc_number": number, "amount": invoiced.amount.to_string(), "currency": invoiced.currency.as_str()},
                "now": {"amount": now_total.amount.to_string(), "currency": now_total.currency.as_str()},
            }),
        }))
    }

    /// After a duplicate-number refusal: the invoice with this DocNumber, if it is provably the one we meant to
    /// create (same customer, same total); otherwise the refusal goes to review.
    async fn adopt_invoice(
        &mut self,
        step: &Step,
        conn: &std::sync::Arc<dyn ledgerlink_connectors::Connector>,
        connection: &str,
        invoice: &Invoice,
        key: &str,
        refusal: Invalid,
    ) -> Result<Record, StepError> {
        let Some(number) = invoice.doc_number.clone() else { return Err(StepError::Invalid(refusal)) };
        let q = FindQuery { object: "Invoice".into(), equals: vec![("DocNumber".into(), json!(number))], fields: vec![], limit: Some(5) };
        let found = conn.find(&q).await.map_err(|e| conn_err(step, e))?;
        let total = invoice.total().amount;
        let ours: Vec<Record> = found
            .into_iter()
            .filter(|r| {
                r.get("CustomerRef").and_then(|c| c.get("value")).and_then(Value::as_str) == Some(invoice.customer_id.as_str())
                    && r.get("TotalAmt").map(to_decimal).and_then(Result::ok) == Some(total)
            })
            .collect();
        let [record] = ours.as_slice() else { return Err(StepError::Invalid(refusal)) };
        let id = conn.record_id(record).unwrap_or_default();
        if self.plan.is_none() {
            let audit = self.audit_entry(connection, "Invoice", Some(id.clone()), "create", "adopted", None, Some(Value::Object(record.clone())), None);
            self.engine.store.complete_intent(key, &id, &Value::Object(record.clone()), crate::now(), &audit).await?;
        }
        self.count(|s| &s.duplicates_prevented);
        Ok(record.clone())
    }

    fn build_invoice(&mut self, step: &Step, header: &Mapping, lines: &Expr, line: &Mapping) -> Result<Invoice, StepError> {
        let mut h = serde_json::Map::new();
        for (k, e) in header {
            h.insert(k.clone(), self.eval(step, e)?);
        }
        let currency = match h.get("currency") {
            Some(Value::String(c)) => Currency::parse(c).map_err(|e| invalid(step, e.to_string()))?,
            Some(Value::Null) | None => Currency::USD,
            Some(other) => return Err(invalid(step, format!("currency must be an ISO code, got {other}"))),
        };
        let source_lines = self.eval_list(step, lines, "lines")?;
        let mut out_lines = Vec::with_capacity(source_lines.len());
        for (i, l) in source_lines.into_iter().enumerate() {
            let shadowed_line = self.scope.push("line", l);
            let shadowed_index = self.scope.push("index", json!(i));
            let mut m = serde_json::Map::new();
            let mut failed = None;
            for (k, e) in line {
                match self.eval(step, e) {
                    Ok(v) => {
                        m.insert(k.clone(), v);
                    }
                    Err(err) => {
                        failed = Some(err);
                        break;
                    }
                }
            }
            self.scope.pop("index", shadowed_index);
            self.scope.pop("line", shadowed_line);
            if let Some(err) = failed {
                return Err(err);
            }
            let n = i + 1;
            let dec = |key: &str, default: Option<Decimal>| -> Result<Decimal, StepError> {
                match m.get(key) {
                    None | Some(Value::Null) => {
                        default.ok_or_else(|| invalid(step, format!("line {n}: `{key}` is missing")))
                    }
                    Some(v) => to_decimal(v).map_err(|msg| invalid(step, format!("line {n}: `{key}`: {msg}"))),
                }
            };
            out_lines.push(InvoiceLine {
                item_id: opt_string(m.get("item_id")).unwrap_or_default(),
                item_name: opt_string(m.get("item_name")),
                description: opt_string(m.get("description")),
                quantity: dec("quantity", None)?,
                unit_price: dec("unit_price", None)?,
                discount_percent: dec("discount_percent", Some(Decimal::ZERO))?,
                service_date: opt_date(m.get("service_date")).map_err(|msg| invalid(step, format!("line {n}: {msg}")))?,
            });
        }
        let discount = match (h.get("discount_percent"), h.get("discount_amount")) {
            (p, a) if nonzero(p).is_some() && nonzero(a).is_some() => {
                return Err(invalid(step, "give discount_percent or discount_amount, not both".into()));
            }
            (p, a) => match (nonzero(p), nonzero(a)) {
                (Some(p), _) => Some(InvoiceDiscount::Percent(to_decimal(p).map_err(|m| invalid(step, format!("discount_percent: {m}")))?)),
                (_, Some(a)) => Some(InvoiceDiscount::Amount(to_decimal(a).map_err(|m| invalid(step, format!("discount_amount: {m}")))?)),
                _ => None,
            },
        };
        let custom_fields = match h.get("custom_fields") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(m)) => m
                .iter()
                .filter_map(|(id, v)| opt_string(Some(v)).map(|value| CustomFieldValue { definition_id: id.clone(), name: None, value }))
                .collect(),
            Some(other) => {
                return Err(invalid(step, format!("custom_fields must be a map of definition id to text, got {other}")));
            }
        };
        Ok(Invoice {
            discount,
            term_id: opt_string(h.get("term_id")),
            term_name: opt_string(h.get("term_name")),
            class_id: opt_string(h.get("class_id")),
            class_name: opt_string(h.get("class_name")),
            custom_fields,
            estimate_id: opt_string(h.get("estimate_id")),
            customer_id: opt_string(h.get("customer_id")).unwrap_or_default(),
            customer_name: opt_string(h.get("customer_name")),
            doc_number: opt_string(h.get("doc_number")),
            txn_date: opt_date(h.get("txn_date")).map_err(|m| invalid(step, m))?,
            due_date: opt_date(h.get("due_date")).map_err(|m| invalid(step, m))?,
            currency,
            lines: out_lines,
            memo: opt_string(h.get("memo")),
            source_reference: self.trigger_ref().map(|r| r.to_string()),
        })
    }

    async fn update(&mut self, step: &Step, connection: &str, object: &str, id: &Expr, fields: &Mapping) -> Result<Value, StepError> {
        let Some(id) = self.eval_string(step, id, "record_id")? else {
            return Err(invalid(step, format!("no {object} id to update (`{}` is empty)", id.source())));
        };
        let record = self.build_record(step, fields)?;
        let conn = self.connector(step, connection)?;
        let names: Vec<String> = record.keys().cloned().collect();
        let read: Vec<String> = names.iter().cloned().chain(conn.change_timestamp_fields().iter().map(|f| f.to_string())).collect();
        let current = conn.get(object, &id, &read).await.map_err(|e| conn_err(step, e))?;
        let Some(current) = current else {
            return Err(invalid(step, format!("{object} {id} does not exist in {connection}")));
        };
        let unchanged = record.iter().all(|(k, v)| current.get(k).is_some_and(|c| same_value(c, v)));
        if unchanged {
            self.count(|s| &s.writes_skipped_unchanged);
            return Ok(Value::Object(current));
        }
        let before: Record = names.iter().filter_map(|k| current.get(k).map(|v| (k.clone(), v.clone()))).collect();
        if let Some(plan) = &mut self.plan {
            plan.push(PlannedWrite::Update {
                connection: connection.into(),
                object: object.into(),
                id: id.clone(),
                before: Value::Object(before),
                after: Value::Object(record.clone()),
            });
            let mut merged = current;
            merged.extend(record);
            return Ok(Value::Object(merged));
        }
        match conn.update(object, &id, &record).await {
            Ok(updated) => {
                if let Some(ts) = conn.change_timestamp(&current) {
                    self.changed_before_run.entry(RecordRef::new(connection, object, id.clone()).to_string()).or_insert(ts);
                }
                self.mark_own_write(connection, object, &id, &conn, &updated).await?;
                self.record_audit(self.audit_entry(connection, object, Some(id), "update", "ok", Some(Value::Object(before)), Some(Value::Object(record)), None))
                    .await?;
                self.writes += 1;
                self.count(|s| &s.records_updated);
                Ok(Value::Object(updated))
            }
            Err(e) => {
                self.record_audit(self.audit_entry(connection, object, Some(id), "update", "error", Some(Value::Object(before)), Some(Value::Object(record.clone())), Some(e.to_string())))
                    .await?;
                if let ConnectorError::Validation { message, code, field } = &e {
                    return Err(StepError::Invalid(Invalid {
                        step: step.id.clone(),
                        kind: "rejected",
                        reason: format!("{connection} refused to update the {object}: {message}"),
                        details: json!({"code": code, "field": field, "payload": Value::Object(record)}),
                    }));
                }
                Err(conn_err(step, e))
            }
        }
    }

    /// Deletes one record; see [`StepKind::Delete`]. The record is read first so the audit entry keeps what was
    /// deleted, and so a record already gone (deleted by hand, or by an earlier attempt of this job) costs no write.
    async fn delete(&mut self, step: &Step, connection: &str, object: &str, id: &Expr) -> Result<Value, StepError> {
        let Some(id) = self.eval_string(step, id, "record_id")? else { return Ok(Value::Null) };
        let conn = self.connector(step, connection)?;
        let Some(current) = conn.get(object, &id, &[]).await.map_err(|e| conn_err(step, e))? else {
            return Ok(Value::Null);
        };
        if let Some(plan) = &mut self.plan {
            plan.push(PlannedWrite::Delete { connection: connection.into(), object: object.into(), id: id.clone(), before: Value::Object(current) });
            return Ok(Value::String(id));
        }
        match conn.delete(object, &id).await {
            Ok(deleted) => {
                if deleted {
                    self.record_audit(self.audit_entry(connection, object, Some(id.clone()), "delete", "ok", Some(Value::Object(current)), None, None)).await?;
                    self.writes += 1;
                    self.count(|s| &s.records_deleted);
                }
                Ok(if deleted { Value::String(id) } else { Value::Null })
            }
            Err(e) => {
                self.record_audit(self.audit_entry(connection, object, Some(id.clone()), "delete", "error", Some(Value::Object(current)), None, Some(e.to_string()))).await?;
                if let ConnectorError::Validation { message, code, field } = &e {
                    return Err(StepError::Invalid(Invalid {
                        step: step.id.clone(),
                        kind: "rejected",
                        reason: format!("{connection} refused to delete the {object} {id}: {message}"),
                        details: json!({"code": code, "field": field}),
                    }));
                }
                Err(conn_err(step, e))
            }
        }
    }

    /// When we just wrote to the very record that triggered this run, the new version will come back through the
    /// poll. Occupying that version's change key now makes the poll recognise it as handled: no loop, no wasted run.
    /// Every write passes here, so it is also where a recently read copy of the record (see `recent`) is dropped.
    async fn mark_own_write(
        &self,
        connection: &str,
        object: &str,
        id: &str,
        conn: &std::sync::Arc<dyn ledgerlink_connectors::Connector>,
        updated: &Record,
    ) -> Result<(), StoreError> {
        // A copy of the record kept from before this write is stale now.
        self.engine.recent.forget(connection, object, id);
        let Some(trigger) = self.trigger_ref() else { return Ok(()) };
        if trigger.connection != connection || trigger.object != object || trigger.id != id {
            return Ok(());
        }
        let Some(ts) = conn.change_timestamp(updated) else { return Ok(()) };
        let version = keys::version_of(ts, conn.record_version(updated).as_deref());
        let now = crate::now();
        let key = keys::change_job_key(&self.flow.name, connection, object, id, &version);
        self.engine
            .store
            .enqueue_done(&ledgerlink_store::NewJob {
                kind: crate::poller::JOB_OWN_WRITE.into(),
                idempotency_key: key.clone(),
                flow: Some(self.flow.name.clone()),
                connection: Some(connection.to_string()),
                payload: json!({"own_write": {"object": object, "id": id, "version": version}}),
                run_at: now,
                max_attempts: 1,
            })
            .await?;
        self.engine.own_writes.remember(&key);
        Ok(())
    }

    /// Evaluates a mapping into a record; dotted names build nested objects; null values are left out.
    fn build_record(&self, step: &Step, mapping: &Mapping) -> Result<Record, StepError> {
        let mut out = Record::new();
        for (name, expr) in mapping {
            let v = self.eval(step, expr)?;
            if v.is_null() {
                continue;
            }
            insert_path(&mut out, name, v);
        }
        Ok(out)
    }

    async fn link(&mut self, src: &RecordRef, target: RecordRef, hash: Option<String>) -> Result<(), StoreError> {
        if self.plan.is_some() {
            return Ok(());
        }
        self.engine
            .store
            .put_link(&Link {
                a: src.clone(),
                b: target,
                a_version: None,
                b_version: None,
                a_hash: None,
                b_hash: hash,
                flow: Some(self.flow.name.clone()),
                updated_at: crate::now(),
            })
            .await
    }

    /// The audit entry of one external write by this run.
    #[allow(clippy::too_many_arguments)]
    fn audit_entry(
        &self,
        connection: &str,
        object: &str,
        record_id: Option<String>,
        action: &str,
        outcome: &str,
        before: Option<Value>,
        after: Option<Value>,
        error: Option<String>,
    ) -> NewAuditEntry {
        NewAuditEntry {
            at: crate::now(),
            flow: Some(self.flow.name.clone()),
            job_id: self.job_id,
            connection: connection.to_string(),
            object: object.to_string(),
            record_id,
            action: action.to_string(),
            outcome: outcome.to_string(),
            before,
            after,
            error,
        }
    }

    /// Appends `entry` to the audit log, counting a failed write as an error of this run.
    async fn record_audit(&self, entry: NewAuditEntry) -> Result<(), StoreError> {
        if entry.outcome == "error" {
            self.count(|s| &s.errors);
        }
        self.engine.store.append_audit(&entry).await.map(|_| ())
    }
}

/// The optional keys of a `create_invoice` step.
struct InvoiceOptions<'e> {
    expected_total: Option<&'e Expr>,
    merge_lines: Option<&'e Expr>,
    existing: Option<&'e Expr>,
}

/// A value that is there and not zero (a discount of 0 is no discount).
fn nonzero(v: Option<&Value>) -> Option<&Value> {
    let v = v?;
    match v {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        other if to_decimal(other).is_ok_and(|d| d.is_zero()) => None,
        other => Some(other),
    }
}

/// An amount as people read it on an invoice: thousands grouped, the currency's decimals, then the code
/// ("1,350.00 USD").
fn money_text(m: Money) -> String {
    let places = m.currency.minor_units();
    let text = format!("{:.*}", places as usize, m.amount.abs());
    let (int, frac) = text.split_once('.').map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if m.amount.is_sign_negative() && !m.amount.is_zero() { "-" } else { "" };
    match frac {
        Some(f) => format!("{sign}{grouped}.{f} {}", m.currency),
        None => format!("{sign}{grouped} {}", m.currency),
    }
}

fn invalid(step: &Step, reason: String) -> StepError {
    StepError::Invalid(Invalid { step: step.id.clone(), kind: "mapping_error", reason, details: Value::Null })
}

/// A record a `required` get step needs is missing: the run goes to review with what is missing.
fn not_found(step: &Step, reason: String) -> StepError {
    StepError::Invalid(Invalid { step: step.id.clone(), kind: "not_found", reason, details: Value::Null })
}

fn conn_err(step: &Step, e: ConnectorError) -> StepError {
    StepError::Exec(ExecError::Connector { step: step.id.clone(), source: e })
}

/// The value at a dotted path of a record (null when absent).
fn value_at(rec: &Record, path: &str) -> Value {
    let mut parts = path.split('.');
    let mut v = parts.next().and_then(|p| rec.get(p));
    for p in parts {
        v = v.and_then(|x| x.get(p));
    }
    v.cloned().unwrap_or(Value::Null)
}

/// A field's text for name matching; reference-like objects give their address / value.
fn field_text(rec: &Record, field: &str) -> Option<String> {
    let mut v = rec.get(field.split('.').next().unwrap_or(field))?;
    for part in field.split('.').skip(1) {
        v = v.get(part)?;
    }
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => ["Address", "URI", "FreeFormNumber", "value"].iter().find_map(|k| m.get(*k)?.as_str().map(str::to_string)),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn other_side(link: &Link, from: &RecordRef) -> RecordRef {
    if &link.a == from { link.b.clone() } else { link.a.clone() }
}

fn insert_path(out: &mut Record, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            out.insert(path.to_string(), value);
        }
        Some((head, rest)) => {
            let entry = out.entry(head.to_string()).or_insert_with(|| Value::Object(Record::new()));
            if !entry.is_object() {
                *entry = Value::Object(Record::new());
            }
            if let Value::Object(inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// Whether a stored value already equals what we would write (numbers compared exactly as decimals).
fn same_value(current: &Value, wanted: &Value) -> bool {
    match (current, wanted) {
        (Value::Number(_), _) | (_, Value::Number(_)) => match (to_decimal(current), to_decimal(wanted)) {
            (Ok(a), Ok(b)) => a == b,
            _ => current == wanted,
        },
        _ => current == wanted,
    }
}

/// A JSON value as an exact decimal. JSON numbers are read through their shortest text form, so `1500.1` is
/// exactly 1500.1 (no binary fraction leaks in); text is parsed as written.
pub fn to_decimal(v: &Value) -> Result<Decimal, String> {
    match v {
        Value::Number(n) => parse_decimal(&n.to_string()).map_err(|e| e.to_string()),
        Value::String(s) => parse_decimal(s).map_err(|e| e.to_string()),
        other => Err(format!("expected an amount, got {other}")),
    }
}

fn opt_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn opt_date(v: Option<&Value>) -> Result<Option<NaiveDate>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => {
            let day = s.get(..10).unwrap_or(s);
            NaiveDate::parse_from_str(day, "%Y-%m-%d").map(Some).map_err(|_| format!("`{s}` is not a date (YYYY-MM-DD)"))
        }
        Some(other) => Err(format!("expected a date, got {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_paths_build_nested_records() {
        let mut r = Record::new();
        insert_path(&mut r, "PrimaryEmailAddr.Address", json!("a@b.c"));
        insert_path(&mut r, "BillAddr.City", json!("Austin"));
        insert_path(&mut r, "BillAddr.Line1", json!("1 Main"));
        assert_eq!(Value::Object(r), json!({"PrimaryEmailAddr": {"Address": "a@b.c"}, "BillAddr": {"City": "Austin", "Line1": "1 Main"}}));
    }

    #[test]
    fn decimals_from_json_are_exact() {
        assert_eq!(to_decimal(&json!(1500.1)).unwrap().to_string(), "1500.1");
        assert_eq!(to_decimal(&json!(0.1)).unwrap().to_string(), "0.1");
        assert_eq!(to_decimal(&json!("19.99")).unwrap().to_string(), "19.99");
        assert!(to_decimal(&json!(true)).is_err());
    }

    #[test]
    fn amounts_read_as_on_an_invoice() {
        let m = |s: &str, c: &str| Money::new(s.parse().unwrap(), Currency::parse(c).unwrap());
        assert_eq!(money_text(m("1350", "USD")), "1,350.00 USD");
        assert_eq!(money_text(m("1200.5", "EUR")), "1,200.50 EUR");
        assert_eq!(money_text(m("999.99", "USD")), "999.99 USD");
        assert_eq!(money_text(m("1234567", "JPY")), "1,234,567 JPY");
        assert_eq!(money_text(m("-12000", "USD")), "-12,000.00 USD");
    }

    #[test]
    fn equal_numbers_in_different_forms_are_the_same_value() {
        assert!(same_value(&json!(10), &json!(10.0)));
        assert!(same_value(&json!("123"), &json!("123")));
        assert!(!same_value(&json!("123"), &json!("124")));
    }
}
