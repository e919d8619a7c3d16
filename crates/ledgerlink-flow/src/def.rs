//! The validated form of a flow file. The parser (`parse`) builds these; the engine's executor runs them.
//! Every expression keeps its position in the file so a runtime error can still point at the source.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::expr::Expr;

/// A position in a flow file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

/// A flow: trigger → condition → steps. Template parameters are already substituted.
#[derive(Debug, Clone)]
pub struct Flow {
    pub name: String,
    pub description: String,
    /// The file it came from (for error messages).
    pub file: String,
    /// Declared parameters with the values in force (defaults or `--set`). Also visible to expressions as `params`.
    pub params: BTreeMap<String, ParamValue>,
    pub trigger: Trigger,
    /// Evaluated against `record`; the flow runs only when it is true.
    pub condition: Option<Expr>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParamDef {
    pub name: String,
    pub description: String,
    pub default: Option<String>,
    /// The values the parameter may take (empty: any); another value is refused when the flow is loaded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParamValue {
    pub description: String,
    pub value: String,
}

#[derive(Debug, Clone)]
pub enum Trigger {
    /// Poll `object` in `connection` for records whose change timestamp moved, re-reading `overlap_seconds`
    /// behind the cursor and skipping (id, version) pairs already seen.
    Poll {
        connection: String,
        object: String,
        /// Fields to read from each changed record (bound as `record`).
        fields: Vec<String>,
        interval_seconds: u64,
        overlap_seconds: u64,
        /// Also take the system's change notifications (QuickBooks webhooks) for `object`: each event becomes a
        /// job at once, and the poll becomes the backup sweep that catches any event that was lost.
        webhooks: bool,
        /// Also deliver records deleted since the last poll, each as a change of its own carrying the system's
        /// deletion marker (Salesforce: the recycle bin through `queryAll`, `IsDeleted: true`; QuickBooks: the
        /// change feed's `Deleted` rows, `status: "Deleted"`). Off by default: it costs a call per poll, and a
        /// flow that does not handle deletions should not run for them. Deactivations (QuickBooks name-list
        /// entities, `Active: false`) are ordinary changes and always delivered.
        deletions: bool,
        /// Other objects whose change notifications name records of `object` (a QuickBooks payment names the
        /// invoices it pays): each such event runs the flow once for every record the related one names. Only
        /// with webhooks; see [`Related`].
        related: Vec<Related>,
        /// Also run on a schedule, once for every record of `object` that meets the schedule's conditions then:
        /// what no change announces, such as an invoice falling overdue by the passage of time alone.
        schedule: Option<RecordSchedule>,
    },
    /// Run on a 5-field cron schedule in a time zone (reports, reconciliations, sweeps). `record` is
    /// `{"scheduled_for": <RFC 3339 time of the firing>, "date": <its day, YYYY-MM-DD, in `timezone`>}`.
    Schedule {
        /// Checked at load: minute hour day-of-month month day-of-week.
        cron: String,
        /// An IANA zone name (`America/New_York`); the schedule follows its daylight-saving changes.
        timezone: String,
    },
}

/// A related object of a webhook trigger: an event for one of its records is read (with `fields`) and `ids`,
/// evaluated with that record bound as `record`, names the records of the watched object to run the flow for
/// (a list of ids or one id; nested lists are flattened, nulls and empty ids skipped).
#[derive(Debug, Clone)]
pub struct Related {
    pub object: String,
    pub fields: Vec<String>,
    pub ids: Expr,
}

/// The schedule of a record trigger. Each firing finds the watched object's records that meet every comparison
/// (values evaluated with `today` the firing's day in `timezone`) and runs the flow once per record, each run
/// seeing that same `today`.
#[derive(Debug, Clone)]
pub struct RecordSchedule {
    /// 5 fields, checked at load.
    pub cron: String,
    /// An IANA zone name; also the zone of `today` in every run of the flow.
    pub timezone: String,
    pub compare: Vec<Comparison>,
}

impl Trigger {
    /// The cron expression and time zone the trigger fires on, if it has a schedule.
    pub fn schedule(&self) -> Option<(&str, &str)> {
        match self {
            Trigger::Schedule { cron, timezone } => Some((cron, timezone)),
            Trigger::Poll { schedule: Some(s), .. } => Some((&s.cron, &s.timezone)),
            Trigger::Poll { schedule: None, .. } => None,
        }
    }

    /// The connection, object and fields a poll or webhook trigger watches; `None` for a schedule.
    pub fn source(&self) -> Option<(&str, &str, &[String])> {
        match self {
            Trigger::Poll { connection, object, fields, .. } => Some((connection, object, fields)),
            Trigger::Schedule { .. } => None,
        }
    }
}

/// One step. Its result is bound under `id` for later steps. With `for_each`, the step runs once per element
/// (bound as `as_name`, default `item`, with its 0-based position bound as `index`) and its result is the list
/// of per-element results, in element order — so a later step can pair `steps_a[index]` with `steps_b[index]`.
#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub pos: Pos,
    pub for_each: Option<Expr>,
    pub as_name: String,
    pub kind: StepKind,
}

/// A record in a connection, named by expressions (used to look up and store links).
#[derive(Debug, Clone)]
pub struct SourceRef {
    pub connection: String,
    pub object: String,
    pub id: Expr,
}

/// One rule of a match cascade: records of the target whose `field` matches `value`, in the way `how` says.
#[derive(Debug, Clone)]
pub struct MatchRule {
    pub field: String,
    pub value: Expr,
    pub how: MatchHow,
    pub pos: Pos,
}

/// How a match rule compares. Exact rules are asked of the target system; the others compare names locally.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MatchHow {
    /// Equal values (emails, tax ids, reference numbers, names as written).
    Exact,
    /// Equal after normalising case, punctuation, whitespace and legal suffixes (Inc, LLC, Ltd, GmbH, …).
    Normalized,
    /// Jaro-Winkler similarity of the normalised names at or above `threshold` (0–1). A fuzzy match is never
    /// taken on its own: its candidates go to review with their scores.
    Fuzzy { threshold: f64 },
}

/// Field name → expression. Dotted names (`PrimaryEmailAddr.Address`) build nested objects. Order is kept.
/// A field whose expression yields null is left out of the record written (templates guard optional source
/// fields with `has(x.F) ? x.F : null`).
pub type Mapping = Vec<(String, Expr)>;

#[derive(Debug, Clone)]
pub enum StepKind {
    /// Read one record by id. Result: the record, or null when it does not exist (or the id is null or empty).
    /// With `required`, a missing record (or id) is not an answer but a problem: the run goes to review, naming
    /// the record, so one record whose counterpart is gone stops alone instead of failing later on a null.
    Get { connection: String, object: String, id: Expr, fields: Vec<String>, required: bool },
    /// Records whose fields equal the given values and meet every comparison (`TxnDate >= …`, a date range, an
    /// amount above zero). Result: a list.
    Find { connection: String, object: String, equals: Vec<(String, Expr)>, compare: Vec<Comparison>, fields: Vec<String> },
    /// The target record for `source`: first the link table, then each match rule in order (a rule whose value
    /// is null or empty is skipped); exactly one candidate links it, several go to review; none creates it from
    /// `create`. The link is stored. Result: the target record.
    FindOrCreate {
        connection: String,
        object: String,
        source: SourceRef,
        match_rules: Vec<MatchRule>,
        create: Mapping,
    },
    /// Create a canonical invoice in `connection`, exactly once per `source` (the idempotency key is derived
    /// from flow, source record and step id). `header` maps canonical invoice fields (customer_id, doc_number,
    /// txn_date, due_date, currency, memo, customer_name); `lines` is evaluated to a list and each element is
    /// mapped with `line` (item_id, item_name, description, quantity, unit_price, discount_percent,
    /// service_date), the element bound as `line` and its 0-based position as `index` (so `items[index]` reaches
    /// the result of a `for_each` step over the same list). Header fields beyond those: `discount_percent` or
    /// `discount_amount` (a discount on the whole invoice, after the lines), `term_id` / `term_name` (a term
    /// name without an id is a term the target does not know: review), `class_id` / `class_name` (put on every
    /// line), `custom_fields` (a map of custom field definition id → text) and `estimate_id` (the estimate it
    /// bills). `expected_total`, when given, must equal the sum of the lines before the whole-invoice discount.
    /// `merge_lines`, when true, merges lines of the same item, price, discount and service date.
    /// `existing`, when it gives an id, names an invoice that already bills this source (made from an estimate
    /// in the target, say): it is linked instead of creating one.
    ///
    /// A source already linked to an invoice never gets a second one: when what it is worth now differs from
    /// the linked invoice's total before tax, the run stops for review naming both amounts, and nothing is
    /// written. Result: the created (or linked) record.
    CreateInvoice {
        connection: String,
        source: SourceRef,
        header: Mapping,
        lines: Expr,
        line: Mapping,
        expected_total: Option<Expr>,
        merge_lines: Option<Expr>,
        existing: Option<Expr>,
    },
    /// Sparse update of one record. Result: the updated record.
    Update { connection: String, object: String, id: Expr, fields: Mapping },
    /// Delete one record (a record of the other system that no longer has a source, such as an opportunity
    /// product whose estimate line was removed). A null or empty id, or a record already gone, deletes nothing:
    /// running it twice is the same as once. Result: the id deleted, or null.
    Delete { connection: String, object: String, id: Expr },
    /// A message to people through a notification connection (Slack or email): `title`, `text` and labelled
    /// `fields` are evaluated and rendered by the connectors' one message renderer. Sent at most once per
    /// (flow, trigger record, step) — or, with `once_key`, once per (flow, step, key value) whatever the trigger, so
    /// a daily sweep names each overdue invoice once and a weekly report goes out once per week. Inside `for_each`
    /// without `once_key`, the element's position is part of the key. Result: `{"sent": bool, "key": …}`.
    Notify { connection: String, title: Expr, text: Expr, fields: Mapping, once_key: Option<Expr> },
    /// Compares two lists of records by key and amount (exact decimals, per currency) and keeps the result as a
    /// report in the store, one per (flow, `period`): items only on the left, only on the right, and pairs whose
    /// amounts or currencies differ are each named. Result: the stored report (`id`, `title`, `text`, `summary`
    /// — the text cut to fit a notification — and `counts`).
    Reconcile { title: Expr, period: Expr, left: Box<ReconcileSide>, right: Box<ReconcileSide> },
    /// Two-way sync of field pairs between `source` (this side, usually the trigger record) and the linked record
    /// `id` of `object` in `connection` (the other side). Per pair, compared with what was last synced (kept on the
    /// link as hashes): a field changed on one side is copied to the other; changed on both sides to different
    /// values is a conflict settled by the pair's policy. Nothing is written when both sides agree, so a change
    /// coming back from our own write stops there. Result: `{"to_source": [...], "to_target": [...]}`.
    Sync {
        connection: String,
        object: String,
        id: Expr,
        source: SourceRef,
        /// (source field, target field), dotted paths; values are copied as they are.
        pairs: Vec<(String, String)>,
        /// Policy per source field; fields not listed use `default_policy`.
        policies: Vec<(String, SyncPolicy)>,
        default_policy: SyncPolicy,
        /// What a delete or a deactivation on one side does to the other.
        removal: Removal,
    },
}

/// How a two-way sync follows deletes and deactivations. Whether each record is active, inactive or deleted is
/// remembered on the link like the fields' values, so only a change of that state acts, once, and our own
/// deactivation coming back finds nothing new. The other record's fields are not synced while either is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// When the source record (this flow's side) is deleted or deactivated: what happens to the target.
    pub on_source: RemovalPolicy,
    /// When the target record is deleted or deactivated: what happens to the source.
    pub on_target: RemovalPolicy,
    /// The boolean field that says the source record is active (`false` = inactive). Default: the system's own
    /// for the object (QuickBooks name-list entities: `Active`); Salesforce accounts have none, so a checkbox
    /// such as `Active__c` is named here.
    pub source_active_field: Option<String>,
    /// The same for the target record.
    pub target_active_field: Option<String>,
}

impl Default for Removal {
    fn default() -> Self {
        Removal {
            on_source: RemovalPolicy::Review,
            on_target: RemovalPolicy::Review,
            source_active_field: None,
            target_active_field: None,
        }
    }
}

/// What a delete or deactivation of one record does to the record linked to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalPolicy {
    /// Make the other record inactive (and active again when this one comes back).
    Deactivate,
    /// Delete the other record; where its system deactivates instead of deleting (QuickBooks customers), it is
    /// deactivated.
    Delete,
    /// Leave the other record as it is.
    Ignore,
    /// File a review item naming both records; nothing is written to the other one.
    Review,
}

impl RemovalPolicy {
    pub fn parse(s: &str) -> Option<RemovalPolicy> {
        Some(match s {
            "deactivate" => RemovalPolicy::Deactivate,
            "delete" => RemovalPolicy::Delete,
            "ignore" => RemovalPolicy::Ignore,
            "review" => RemovalPolicy::Review,
            _ => return None,
        })
    }
}

/// One comparison of a `find` step: `field op value`.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub field: String,
    pub op: CompareOp,
    pub value: Expr,
}

/// The comparisons a `find` step may ask of a system (dates compare as dates, amounts as numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Lt,
    Le,
    Gt,
    Ge,
}

impl CompareOp {
    pub const ALL: &'static [&'static str] = &["<", "<=", ">", ">="];

    pub fn parse(s: &str) -> Option<CompareOp> {
        Some(match s.trim() {
            "<" => CompareOp::Lt,
            "<=" => CompareOp::Le,
            ">" => CompareOp::Gt,
            ">=" => CompareOp::Ge,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }
}

/// One side of a `reconcile` step. `items` is a list; `key`, `amount`, `currency` and `label` are evaluated per
/// element, bound as `item`.
#[derive(Debug, Clone)]
pub struct ReconcileSide {
    /// What one element is, in the report's words ("deal", "invoice").
    pub name: String,
    pub items: Expr,
    /// Pairs an element with the other side's element of the same key.
    pub key: Expr,
    /// An amount (JSON number or decimal text), compared exactly.
    pub amount: Expr,
    /// ISO code; null means the report's default currency (USD).
    pub currency: Option<Expr>,
    /// How the element is named in the report; default its key.
    pub label: Option<Expr>,
}

/// How a field changed on both sides since the last sync is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncPolicy {
    /// The source side (this flow's trigger side) is the system of record for the field.
    SourceWins,
    /// The other side is.
    TargetWins,
    /// The record changed last wins.
    NewestWins,
    /// A person decides; nothing is written for the record until then.
    Review,
}

impl SyncPolicy {
    pub fn parse(s: &str) -> Option<SyncPolicy> {
        Some(match s {
            "source_wins" => SyncPolicy::SourceWins,
            "target_wins" => SyncPolicy::TargetWins,
            "newest_wins" => SyncPolicy::NewestWins,
            "review" => SyncPolicy::Review,
            _ => return None,
        })
    }
}

impl StepKind {
    /// The connection the step reads or writes; `None` for a step that only works on data already read.
    pub fn connection(&self) -> Option<&str> {
        match self {
            StepKind::Get { connection, .. }
            | StepKind::Find { connection, .. }
            | StepKind::FindOrCreate { connection, .. }
            | StepKind::CreateInvoice { connection, .. }
            | StepKind::Update { connection, .. }
            | StepKind::Delete { connection, .. }
            | StepKind::Notify { connection, .. }
            | StepKind::Sync { connection, .. } => Some(connection),
            StepKind::Reconcile { .. } => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Get { .. } => "get",
            StepKind::Find { .. } => "find",
            StepKind::FindOrCreate { .. } => "find_or_create",
            StepKind::CreateInvoice { .. } => "create_invoice",
            StepKind::Update { .. } => "update",
            StepKind::Delete { .. } => "delete",
            StepKind::Sync { .. } => "sync",
            StepKind::Notify { .. } => "notify",
            StepKind::Reconcile { .. } => "reconcile",
        }
    }
}
