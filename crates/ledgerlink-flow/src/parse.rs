//! The flow file format and its parser.
//!
//! Layout: [`parse_flow`] reads a TOML document with the span-keeping [`toml::de::DeTable`], substitutes
//! template parameters, compiles every expression and checks every name, collecting all the problems it finds
//! into [`FlowErrors`] (each a [`FlowError`] with `file:line:column`). [`declared_params`] lists a template's
//! parameters without validating the rest. Positions are exact: byte offsets from the TOML parser become
//! 1-based lines and character columns, and an error inside an expression is mapped through the string's
//! quoting and escapes back to the file.
//!
//! # The format
//! A flow is one TOML file. Plain strings are names (connections, objects, fields); expressions are CEL (see
//! [`crate::expr`]) and are best written as TOML literal strings (`'…'` or `'''…'''`), which need no escaping.
//!
//! ```toml
//! [flow]
//! name = "salesforce-closed-won-to-quickbooks-invoice"
//! description = "Invoice won opportunities in QuickBooks."
//!
//! # Template parameters. `${name}` is replaced in plain strings and in mapping keys; expressions read the
//! # value as `params.name`. A parameter without a default must be given a value when the flow is loaded.
//! [params.salesforce]
//! description = "Connection name of the Salesforce org"
//! default = "salesforce"
//!
//! [params.quickbooks]
//! description = "Connection name of the QuickBooks company"
//! default = "quickbooks"
//!
//! [params.sales_rep]
//! description = "Where the deal owner goes"
//! default = "none"
//! choices = ["none", "class", "custom_field"]   # optional: any other value is refused at load
//!
//! # A field list entry that is only a parameter left empty (`"${terms_field}"`, `terms_field = ""`) is dropped.
//!
//! # What starts a run: here, polling Opportunity for changed records (each bound as `record`).
//! [trigger]
//! type = "poll"
//! connection = "${salesforce}"
//! object = "Opportunity"
//! fields = ["Id", "Name", "AccountId", "IsWon", "Amount", "CloseDate"]
//! interval_seconds = 60      # optional, default 60; may also be a parameter: "${poll_interval_seconds}"
//! overlap_seconds = 120      # optional, default 120
//! deletions = false          # optional: also run for records deleted since the last poll (see below)
//!
//! # Optional: the run goes on only when this is true.
//! [when]
//! condition = 'record.IsWon == true'
//!
//! # Steps run in order; each result is bound under the step's id for the steps after it.
//! [[steps]]
//! id = "account"
//! type = "get"                      # one record by id (null when it does not exist)
//! connection = "${salesforce}"
//! object = "Account"
//! record_id = 'record.AccountId'
//! fields = ["Id", "Name", "Phone"]
//!
//! [[steps]]
//! id = "lines"
//! type = "find"                     # the records whose fields equal these values (a list)
//! connection = "${salesforce}"
//! object = "OpportunityLineItem"
//! fields = ["Id", "Product2Id", "Quantity", "UnitPrice"]
//! [steps.equals]
//! OpportunityId = 'record.Id'
//!
//! [[steps]]
//! id = "customer"
//! type = "find_or_create"           # linked record, else a unique match, else a new record
//! connection = "${quickbooks}"
//! object = "Customer"
//! source = { connection = "${salesforce}", object = "Account", id = 'account.Id' }
//! match = [
//!   { field = "DisplayName", value = 'account.Name' },   # tried in order; null values are skipped
//!   { field = "DisplayName", value = 'account.Name', how = "normalized" },  # case, punctuation, Inc/LLC/GmbH…
//!   { field = "DisplayName", value = 'account.Name', how = "fuzzy", threshold = 0.92 },  # → review, scored
//! ]
//! [steps.create]                    # a mapping: field = expression; dotted keys build nested objects
//! DisplayName = 'account.Name'
//! "PrimaryPhone.FreeFormNumber" = 'has(account.Phone) ? account.Phone : null'
//!
//! [[steps]]
//! id = "items"
//! type = "find_or_create"
//! for_each = 'lines'                # runs once per element; the result is the list of results
//! as = "line"                       # the element's name (default `item`); `index` is its position
//! connection = "${quickbooks}"
//! object = "Item"
//! source = { connection = "${salesforce}", object = "Product2", id = 'line.Product2Id' }
//! match = [{ field = "Name", value = 'line.Product2Id' }]
//! [steps.create]
//! Name = 'line.Product2Id'
//! Type = '"Service"'
//!
//! [[steps]]
//! id = "invoice"
//! type = "create_invoice"           # a canonical invoice, created exactly once per source record
//! connection = "${quickbooks}"
//! source = { connection = "${salesforce}", object = "Opportunity", id = 'record.Id' }
//! lines = 'lines'                   # each element is bound as `line`, its position as `index`
//! expected_total = 'record.Amount'  # optional: must equal the sum of the lines (before discount_*)
//! merge_lines = 'true'              # optional: one line per item, price and discount, quantities summed
//! existing = 'null'                 # optional: an invoice id that already bills this source: linked, not made
//! [steps.header]                    # customer_id and currency are required
//! customer_id = 'customer.Id'
//! currency = '"USD"'
//! txn_date = 'date(record.CloseDate)'
//! [steps.line]                      # item_id, quantity and unit_price are required
//! item_id = 'items[index].Id'
//! quantity = 'line.Quantity'
//! unit_price = 'line.UnitPrice'
//!
//! # Two-way: keep field pairs equal between this record and the linked one, settling conflicts by policy.
//! # [[steps]]
//! # id = "sync"
//! # type = "sync"
//! # connection = "${quickbooks}"
//! # object = "Customer"
//! # record_id = 'customer.Id'
//! # source = { connection = "${salesforce}", object = "Account", id = 'record.Id' }
//! # policy = "newest_wins"          # or source_wins, target_wins, review (the default)
//! # fields = { Name = "DisplayName", Phone = "PrimaryPhone.FreeFormNumber" }
//! # policies = { Name = "source_wins" }
//! # on_source_removed = "review"     # this record deleted or deactivated: deactivate, delete, ignore or review
//! # on_target_removed = "review"     # the linked record deleted or deactivated: the same choices, applied here
//! # source_active_field = "Active__c"  # optional (empty = none): the checkbox saying this record is active
//! # target_active_field = "Active"     # optional: the same for the linked record
//!
//! # Remove what no longer has a source: here the opportunity products of lines no longer on the estimate.
//! # [[steps]]
//! # id = "removed"
//! # type = "delete"                 # one record by id; a null id or a record already gone deletes nothing
//! # for_each = 'existing.filter(l, !(l.Key__c in wanted))'
//! # as = "gone"
//! # connection = "${salesforce}"
//! # object = "OpportunityLineItem"
//! # record_id = 'gone.Id'
//!
//! [[steps]]
//! id = "writeback"
//! type = "update"                   # sparse update of one record
//! connection = "${salesforce}"
//! object = "Opportunity"
//! record_id = 'record.Id'
//! [steps.fields]
//! QuickBooks_Invoice_Id__c = 'invoice.Id'
//! ```
//!
//! # Deletes and deactivations
//! A deactivation is an ordinary change: QuickBooks name-list entities (customers, vendors, items, …) are never
//! deleted, only made inactive (`Active = false`), and the poll sees that like any edit. A delete is not a
//! change a poll can see, so a poll trigger asks for deleted records only with `deletions = true`: each one then
//! runs the flow once, as `record` with the system's own marker (Salesforce `IsDeleted = true`, from the recycle
//! bin; QuickBooks `status = "Deleted"`, from the change feed) and whatever fields the system kept.
//!
//! In a run for a deleted or inactive trigger record, `find_or_create` for that record only follows the link
//! table: a record that was never linked is neither matched nor created, and the run ends as skipped. A `sync`
//! step then reads both records and compares each one's state (active, inactive, deleted) with the state the
//! link remembers: a record that became inactive or deleted applies `on_source_removed` (if it is this flow's
//! record) or `on_target_removed` (if it is the linked one) to the other record. `deactivate` sets the other
//! record's active field to false, and back to true when the removed record is active again (a reactivation, or
//! a Salesforce undelete); `delete` deletes it, except where the system only deactivates (a QuickBooks customer
//! is made inactive); `ignore` leaves it; `review` files a review item and leaves it. The default is `review`.
//! The active field is the system's own (QuickBooks `Active`) unless the step names one; a Salesforce account
//! has none, so a checkbox such as `Active__c` is named (only `false` counts as inactive, so an empty checkbox
//! does not deactivate anything). Both records' states are then remembered, so our own deactivation coming back
//! through the other flow finds nothing new, and nothing loops. While either record is removed its fields are
//! not synced.
//!
//! Find with comparisons (a date range, an open balance), sent to the system as query conditions:
//! ```toml
//! [[steps]]
//! id = "invoices"
//! type = "find"
//! connection = "${quickbooks}"
//! object = "Invoice"
//! fields = ["Id", "DocNumber", "TotalAmt"]
//! compare = [                        # op: < <= > >=; `equals` may then be left out
//!   { field = "TxnDate", op = ">=", value = 'add_days(record.date, -7)' },
//!   { field = "Balance", op = ">", value = '0' },
//! ]
//! ```
//!
//! A webhook trigger may also run for changes it is not told about directly, so one flow per record covers
//! every way the record's state moves:
//! ```toml
//! [trigger]
//! type = "webhook"
//! connection = "${quickbooks}"
//! object = "Invoice"
//! fields = ["Id", "Balance", "DueDate"]
//! # A payment's event runs the flow for each invoice it pays. `ids` sees the payment as `record` and gives ids
//! # of the watched object (a list, nested lists flattened, or one id).
//! related = [{ object = "Payment", fields = ["Id", "Line"],
//!              ids = 'has(record.Line) ? record.Line.map(l, l.LinkedTxn.map(t, t.TxnId)) : []' }]
//! # Each firing runs the flow once for every invoice that meets the comparisons then (one job per invoice, so
//! # one that needs review stops alone): what no change announces, like a due date passing.
//! [trigger.schedule]
//! cron = "0 7 * * *"
//! timezone = "America/New_York"      # also the zone of `today` in every run of this flow
//! compare = [{ field = "Balance", op = ">", value = '0' }, { field = "DueDate", op = "<", value = 'today' }]
//! ```
//! `today` is the run's day (YYYY-MM-DD) in the flow's time zone (UTC without a schedule); in a run a firing
//! started, it is the firing's day.
//!
//! A `get` step with `required = true` sends the run to review, naming the record, when the record (or its id)
//! is missing, instead of giving null to the steps after it.
//!
//! Tell people (a `slack` or `email` connection); sent once per trigger record and step, or once per `once_key`:
//! ```toml
//! [[steps]]
//! id = "notice"
//! type = "notify"
//! connection = "${slack}"
//! once_key = 'record.Id'             # optional
//! title = '"Invoice " + record.DocNumber + " is overdue"'
//! text = '"Due " + record.DueDate'
//! [steps.fields]                     # optional labelled facts, in order
//! "Amount due" = 'string(record.Balance)'
//! ```
//!
//! Compare two lists and keep the report (one per flow and `period`); each side's expressions see `item`:
//! ```toml
//! [[steps]]
//! id = "report"
//! type = "reconcile"                 # no connection: it works on what earlier steps read
//! title = '"Week of " + record.date'
//! period = 'record.date'
//! [steps.left]
//! name = "deal"
//! items = 'deals'
//! key = 'item.Id'
//! amount = 'item.Amount'             # exact decimals; `currency` (ISO code) and `label` are optional
//! [steps.right]
//! name = "invoice"
//! items = 'invoices'
//! key = 'item.DocNumber.substring(3)'
//! amount = 'item.TotalAmt'
//! ```
//!
//! Expressions may read `record`, `params`, `now`, `today`, the ids of earlier steps, and inside a `for_each` step its
//! element name and `index`; `create_invoice`'s line mapping also sees `line` and `index`. Anything else is
//! reported at load time, as are unknown keys, unknown step types, unknown header or line fields, missing
//! required keys and values of the wrong type.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::def::{
    CompareOp, Comparison, Flow, Mapping, MatchHow, MatchRule, ParamDef, ParamValue, Pos, ReconcileSide, Removal, RemovalPolicy,
    SourceRef, Step, StepKind, SyncPolicy, Trigger,
};
use crate::expr::Expr;

/// One problem in a flow file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct FlowError {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// Every problem found in a flow file, in file order. Displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FlowErrors(pub Vec<FlowError>);

impl fmt::Display for FlowErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Variables every expression may read. `today` is the run's day (YYYY-MM-DD) in the flow's time zone: the
/// schedule's zone (UTC for a flow without one); for a run a scheduled firing started, the firing's day.
const BASE_VARS: &[&str] = &["record", "params", "now", "today"];
/// What a record schedule's comparison values may read (there is no record yet).
const SCHEDULE_VARS: &[&str] = &["params", "now", "today"];
/// What a related object's `ids` may read: `record` is the related record.
const RELATED_VARS: &[&str] = &["record", "params", "now", "today"];
/// Bound to an element's position inside `for_each` steps and `create_invoice` line mappings.
pub const INDEX_VAR: &str = "index";
/// Bound to each element of `create_invoice.lines` in the line mapping.
pub const LINE_VAR: &str = "line";
/// The element name of a `for_each` step without `as`.
pub const DEFAULT_AS: &str = "item";

/// Canonical invoice header fields a `create_invoice` step may map, and those it must.
pub const INVOICE_HEADER_FIELDS: &[&str] = &[
    "customer_id",
    "customer_name",
    "doc_number",
    "txn_date",
    "due_date",
    "currency",
    "memo",
    "discount_percent",
    "discount_amount",
    "term_id",
    "term_name",
    "class_id",
    "class_name",
    "custom_fields",
    "estimate_id",
];
const INVOICE_HEADER_REQUIRED: &[&str] = &["customer_id", "currency"];
/// Canonical invoice line fields a `create_invoice` step may map, and those it must.
pub const INVOICE_LINE_FIELDS: &[&str] = &[
    "item_id",
    "item_name",
    "description",
    "quantity",
    "unit_price",
    "discount_percent",
    "service_date",
];
const INVOICE_LINE_REQUIRED: &[&str] = &["item_id", "quantity", "unit_price"];

const STEP_TYPES: &[&str] = &["get", "find", "find_or_create", "create_invoice", "update", "delete", "sync", "notify", "reconcile"];
/// Bound to each element in a `reconcile` side's `key`, `amount`, `currency` and `label`.
pub const ITEM_VAR: &str = "item";
/// `poll`: read changes on an interval. `webhook`: the system's change notifications, backed by a slower poll sweep.
const TRIGGER_TYPES: &[&str] = &["poll", "webhook", "schedule"];
const DEFAULT_INTERVAL_SECONDS: u64 = 60;
/// The backup sweep of a webhook trigger (Intuit recommends a CDC sweep as a backstop for lost events).
const DEFAULT_SWEEP_SECONDS: u64 = 900;
const DEFAULT_OVERLAP_SECONDS: u64 = 120;

/// CEL keywords and reserved words: a step named like one could never be referenced.
const CEL_RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// Parses and validates a flow file. `file` is only used in error messages; `params` are the values given for
/// template parameters (e.g. from `--set name=value`), which override the declared defaults.
pub fn parse_flow(
    source: &str,
    file: &str,
    params: &BTreeMap<String, String>,
) -> Result<Flow, FlowErrors> {
    let mut p = Parser::new(source, file);
    let doc = match DeTable::parse_recoverable(source) {
        (doc, errors) if errors.is_empty() => doc,
        (_, errors) => {
            for e in errors {
                let span = e.span().unwrap_or(0..0);
                let mut message = format!("invalid TOML: {}", e.message());
                if message.ends_with("duplicate key")
                    && let Some(key) = source.get(span.clone())
                {
                    message = format!("invalid TOML: duplicate key `{key}`");
                }
                p.error(span.start, message);
            }
            return Err(p.finish_errors());
        }
    };
    let flow = p.flow(doc.get_ref(), params);
    match flow {
        Some(flow) if p.errors.is_empty() => Ok(flow),
        _ => Err(p.finish_errors()),
    }
}

/// The parameters a flow file declares, for listing a template's options. Only the `[params]` table is
/// checked.
pub fn declared_params(source: &str, file: &str) -> Result<Vec<ParamDef>, FlowErrors> {
    let mut p = Parser::new(source, file);
    let doc = match DeTable::parse(source) {
        Ok(doc) => doc,
        Err(e) => {
            p.error(
                e.span().unwrap_or(0..0).start,
                format!("invalid TOML: {}", e.message()),
            );
            return Err(p.finish_errors());
        }
    };
    let defs = p.param_defs(doc.get_ref());
    if p.errors.is_empty() {
        Ok(defs.into_iter().map(|(def, _)| def).collect())
    } else {
        Err(p.finish_errors())
    }
}

type Value<'i> = Spanned<DeValue<'i>>;

/// A table with a name for messages (`[trigger]`, `step "lines"`) and the span to blame when a key is missing.
#[derive(Clone, Copy)]
struct Table<'d, 'i> {
    table: &'d DeTable<'i>,
    start: usize,
    what: &'d str,
}

impl<'d, 'i> Table<'d, 'i> {
    fn get(&self, key: &str) -> Option<&'d Value<'i>> {
        self.table.get(key)
    }

    /// Entries in the order they appear in the file (the TOML map itself is sorted by key).
    fn entries(&self) -> Vec<(&'d Spanned<std::borrow::Cow<'i, str>>, &'d Value<'i>)> {
        let mut entries: Vec<_> = self.table.iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        entries
    }
}

struct Parser<'s> {
    source: &'s str,
    file: &'s str,
    line_starts: Vec<usize>,
    errors: Vec<FlowError>,
    /// Parameter values in force, for `${name}` substitution.
    values: BTreeMap<String, String>,
}

/// Where each character of a TOML string's value comes from in the file.
struct StringLayout {
    /// Byte offset in the file of each character of the decoded value, plus one for the end.
    offsets: Vec<usize>,
}

impl<'s> Parser<'s> {
    fn new(source: &'s str, file: &'s str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        Parser {
            source,
            file,
            line_starts,
            errors: Vec::new(),
            values: BTreeMap::new(),
        }
    }

    fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.source.len());
        let line = self.line_starts.partition_point(|&start| start <= offset) - 1;
        let start = self.line_starts[line];
        let column = self
            .source
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Pos {
            line: u32::try_from(line + 1).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
        }
    }

    fn error(&mut self, offset: usize, message: impl Into<String>) {
        let pos = self.pos(offset);
        self.errors.push(FlowError {
            file: self.file.to_owned(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
        });
    }

    fn finish_errors(&mut self) -> FlowErrors {
        let mut errors = std::mem::take(&mut self.errors);
        errors.sort_by_key(|e| (e.line, e.column));
        errors.dedup();
        FlowErrors(errors)
    }

    // ----- the document -----

    fn flow(&mut self, doc: &DeTable<'_>, given: &BTreeMap<String, String>) -> Option<Flow> {
        let root = Table {
            table: doc,
            start: 0,
            what: "the file (top level)",
        };
        self.check_keys(root, &["flow", "params", "trigger", "when", "steps"], "");

        let params = self.resolve_params(doc, given);

        let (name, description) = match self.table(root, "flow", true) {
            Some(t) => {
                self.check_keys(t, &["name", "description"], "");
                (
                    self.string(t, "name", true),
                    self.string(t, "description", false),
                )
            }
            None => (None, None),
        };

        let trigger = self
            .table(root, "trigger", true)
            .and_then(|t| self.trigger(t));

        let mut scope: Vec<String> = BASE_VARS.iter().map(|s| (*s).to_owned()).collect();
        let condition = match self.table(root, "when", false) {
            Some(t) => {
                self.check_keys(t, &["condition"], "");
                self.expr(t, "condition", true, &scope)
            }
            None => None,
        };

        let steps = self.steps(root, &mut scope);

        Some(Flow {
            name: name?,
            description: description.unwrap_or_default(),
            file: self.file.to_owned(),
            params,
            trigger: trigger?,
            condition,
            steps: steps?,
        })
    }

    /// Declared parameters with their key offsets.
    fn param_defs(&mut self, doc: &DeTable<'_>) -> Vec<(ParamDef, usize)> {
        let root = Table {
            table: doc,
            start: 0,
            what: "the file (top level)",
        };
        let Some(params) = self.table(root, "params", false) else {
            return Vec::new();
        };
        let mut defs = Vec::new();
        for (key, value) in params.entries() {
            let name = key.get_ref().to_string();
            if !is_identifier(&name) {
                self.error(key.span().start, format!("parameter name `{name}` must be letters, digits and `_`, not starting with a digit"));
                continue;
            }
            let what = format!("[params.{name}]");
            let DeValue::Table(table) = value.get_ref() else {
                self.error(
                    value.span().start,
                    format!("parameter `{name}` must be a table with `description` and optionally `default`, found {}", value.get_ref().type_str()),
                );
                continue;
            };
            let t = Table {
                table,
                start: value.span().start,
                what: &what,
            };
            self.check_keys(t, &["description", "default", "choices"], "");
            // Descriptions and defaults are taken literally: a parameter cannot refer to another.
            let description = self.raw_string(t, "description", false).unwrap_or_default();
            let default = self.raw_string(t, "default", false);
            let choices = match t.get("choices") {
                None => Vec::new(),
                Some(v) => match v.get_ref() {
                    DeValue::Array(items) if items.iter().all(|i| matches!(i.get_ref(), DeValue::String(_))) => items
                        .iter()
                        .filter_map(|i| match i.get_ref() {
                            DeValue::String(s) => Some(s.to_string()),
                            _ => None,
                        })
                        .collect(),
                    _ => {
                        self.wrong_type(t, "choices", v, "an array of strings");
                        Vec::new()
                    }
                },
            };
            defs.push((
                ParamDef {
                    name,
                    description,
                    default,
                    choices,
                },
                key.span().start,
            ));
        }
        defs
    }

    fn resolve_params(
        &mut self,
        doc: &DeTable<'_>,
        given: &BTreeMap<String, String>,
    ) -> BTreeMap<String, ParamValue> {
        let defs = self.param_defs(doc);
        let anchor = doc.get("params").map_or(0, |v| v.span().start);
        let known: BTreeSet<&str> = defs.iter().map(|(d, _)| d.name.as_str()).collect();
        for name in given.keys() {
            if !known.contains(&name.as_str()) {
                let listing = if known.is_empty() {
                    "this flow declares no parameters".to_owned()
                } else {
                    format!(
                        "known parameters: {}",
                        known.iter().copied().collect::<Vec<_>>().join(", ")
                    )
                };
                self.error(
                    anchor,
                    format!("unknown parameter `{name}` given; {listing}"),
                );
            }
        }
        let mut values = BTreeMap::new();
        for (def, offset) in defs {
            let value = match (given.get(&def.name), &def.default) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) => d.clone(),
                (None, None) => {
                    self.error(
                        offset,
                        format!(
                            "parameter `{}` has no default and no value was given for it",
                            def.name
                        ),
                    );
                    String::new()
                }
            };
            if !def.choices.is_empty() && !def.choices.contains(&value) {
                self.error(
                    offset,
                    format!("parameter `{}` is \"{value}\"; it must be one of: {}", def.name, def.choices.join(", ")),
                );
            }
            self.values.insert(def.name.clone(), value.clone());
            values.insert(
                def.name,
                ParamValue {
                    description: def.description,
                    value,
                },
            );
        }
        values
    }

    fn trigger(&mut self, t: Table<'_, '_>) -> Option<Trigger> {
        let kind = self.string(t, "type", true)?;
        if !TRIGGER_TYPES.contains(&kind.as_str()) {
            let at = t.get("type").map_or(t.start, |v| v.span().start);
            self.error(
                at,
                format!(
                    "unknown trigger type `{kind}`; known types: {}",
                    TRIGGER_TYPES.join(", ")
                ),
            );
            return None;
        }
        if kind == "schedule" {
            return self.schedule_trigger(t);
        }
        self.check_keys(
            t,
            &[
                "type",
                "connection",
                "object",
                "fields",
                "interval_seconds",
                "overlap_seconds",
                "deletions",
                "related",
                "schedule",
            ],
            "",
        );
        let connection = self.string(t, "connection", true);
        let object = self.string(t, "object", true);
        let fields = self.string_list(t, "fields", true);
        let webhooks = kind == "webhook";
        let interval = self.seconds(t, "interval_seconds").unwrap_or(if webhooks {
            DEFAULT_SWEEP_SECONDS
        } else {
            DEFAULT_INTERVAL_SECONDS
        });
        let overlap = self
            .seconds(t, "overlap_seconds")
            .unwrap_or(DEFAULT_OVERLAP_SECONDS);
        let deletions = self.boolean(t, "deletions").unwrap_or(false);
        let related = self.related(t, webhooks);
        let schedule = match self.table(t, "schedule", false) {
            Some(s) => self.record_schedule(s).map(Some),
            None => Some(None),
        };
        if interval == 0
            && let Some(v) = t.get("interval_seconds")
        {
            self.error(
                v.span().start,
                "`interval_seconds` in [trigger] must be at least 1",
            );
        }
        Some(Trigger::Poll {
            connection: connection?,
            object: object?,
            fields: fields?,
            interval_seconds: interval,
            overlap_seconds: overlap,
            webhooks,
            deletions,
            related: related?,
            schedule: schedule?,
        })
    }

    /// `related = [{ object = "Payment", fields = ["Id", "Line"], ids = '…' }]` of a webhook trigger.
    fn related(&mut self, t: Table<'_, '_>, webhooks: bool) -> Option<Vec<crate::def::Related>> {
        let Some(value) = t.get("related") else {
            return Some(Vec::new());
        };
        if !webhooks {
            self.error(
                value.span().start,
                "`related` in [trigger] needs `type = \"webhook\"`: it maps the change notifications of other objects",
            );
            return None;
        }
        let DeValue::Array(items) = value.get_ref() else {
            self.error(
                value.span().start,
                format!(
                    "`related` in [trigger] must be an array of `{{ object = \"…\", fields = […], ids = '…' }}` tables, found {}",
                    value.get_ref().type_str()
                ),
            );
            return None;
        };
        let scope: Vec<String> = RELATED_VARS.iter().map(|s| (*s).to_owned()).collect();
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let DeValue::Table(table) = item.get_ref() else {
                self.error(item.span().start, format!("related object {} in [trigger] must be a table, found {}", i + 1, item.get_ref().type_str()));
                ok = false;
                continue;
            };
            let what = format!("related object {} of [trigger]", i + 1);
            let r = Table { table, start: item.span().start, what: &what };
            self.check_keys(r, &["object", "fields", "ids"], "");
            let object = self.string(r, "object", true);
            let fields = self.string_list(r, "fields", true);
            let ids = self.expr(r, "ids", true, &scope);
            match (object, fields, ids) {
                (Some(object), Some(fields), Some(ids)) => out.push(crate::def::Related { object, fields, ids }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// `[trigger.schedule]` of a record trigger: `cron`, `timezone` and the `compare` conditions.
    fn record_schedule(&mut self, t: Table<'_, '_>) -> Option<crate::def::RecordSchedule> {
        self.check_keys(t, &["cron", "timezone", "compare"], " (a record trigger's schedule)");
        let (cron, timezone) = self.cron_and_zone(t);
        let scope: Vec<String> = SCHEDULE_VARS.iter().map(|s| (*s).to_owned()).collect();
        let compare = self.comparisons(t, &scope);
        if t.get("compare").is_none() {
            self.missing(t, "compare");
        }
        let compare = compare?;
        if compare.is_empty() {
            if let Some(v) = t.get("compare") {
                self.error(v.span().start, "`compare` in [trigger.schedule] needs at least one comparison: a firing never runs the flow for every record by accident");
            }
            return None;
        }
        Some(crate::def::RecordSchedule { cron: cron?, timezone: timezone?, compare })
    }

    /// `type = "schedule"`, `cron = "0 7 * * MON"`, `timezone = "America/New_York"` (default UTC).
    fn schedule_trigger(&mut self, t: Table<'_, '_>) -> Option<Trigger> {
        self.check_keys(t, &["type", "cron", "timezone"], " (a schedule trigger)");
        let (cron, timezone) = self.cron_and_zone(t);
        Some(Trigger::Schedule { cron: cron?, timezone: timezone? })
    }

    /// `cron` (5 fields, checked) and `timezone` (an IANA name, default UTC) of a schedule.
    fn cron_and_zone(&mut self, t: Table<'_, '_>) -> (Option<String>, Option<String>) {
        use std::str::FromStr as _;
        let Some(cron) = self.string(t, "cron", true) else { return (None, None) };
        let timezone = match t.get("timezone") {
            None => "UTC".to_string(),
            Some(_) => match self.string(t, "timezone", false) {
                Some(tz) => tz,
                None => return (None, None),
            },
        };
        let mut ok = true;
        let at = |key: &str| t.get(key).map_or(t.start, |v| v.span().start);
        if cron.split_whitespace().count() != 5 {
            self.error(at("cron"), format!("`cron = \"{cron}\"` must have 5 fields: minute hour day-of-month month day-of-week"));
            ok = false;
        } else if let Err(e) = croner::Cron::from_str(&cron) {
            self.error(at("cron"), format!("`cron = \"{cron}\"` is not a valid schedule: {e}"));
            ok = false;
        }
        if timezone.parse::<chrono_tz::Tz>().is_err() {
            self.error(at("timezone"), format!("`timezone = \"{timezone}\"` is not a time zone name (e.g. UTC, America/New_York, Europe/Berlin)"));
            ok = false;
        }
        if ok { (Some(cron), Some(timezone)) } else { (None, None) }
    }

    fn steps(&mut self, root: Table<'_, '_>, scope: &mut Vec<String>) -> Option<Vec<Step>> {
        let Some(value) = root.get("steps") else {
            self.error(
                0,
                "missing required `[[steps]]`: a flow needs at least one step",
            );
            return None;
        };
        let DeValue::Array(items) = value.get_ref() else {
            self.error(
                value.span().start,
                format!(
                    "`steps` must be an array of tables (`[[steps]]`), found {}",
                    value.get_ref().type_str()
                ),
            );
            return None;
        };
        if items.is_empty() {
            self.error(
                value.span().start,
                "`steps` is empty: a flow needs at least one step",
            );
        }
        let mut steps = Vec::new();
        let mut ok = true;
        let mut seen: BTreeMap<String, Pos> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let DeValue::Table(table) = item.get_ref() else {
                self.error(
                    item.span().start,
                    format!(
                        "step {} must be a table, found {}",
                        i + 1,
                        item.get_ref().type_str()
                    ),
                );
                ok = false;
                continue;
            };
            match self.step(i, table, item.span(), scope, &mut seen) {
                Some(step) => steps.push(step),
                None => ok = false,
            }
        }
        ok.then_some(steps)
    }

    fn step(
        &mut self,
        index: usize,
        table: &DeTable<'_>,
        span: Range<usize>,
        scope: &mut Vec<String>,
        seen: &mut BTreeMap<String, Pos>,
    ) -> Option<Step> {
        let numbered = format!("step {}", index + 1);
        let t = Table {
            table,
            start: span.start,
            what: &numbered,
        };
        let id = self.string(t, "id", true);
        let what = match &id {
            Some(id) => format!("step `{id}`"),
            None => numbered.clone(),
        };
        let t = Table { what: &what, ..t };
        let pos = self.pos(span.start);

        if let Some(id) = &id {
            let at = t.get("id").map_or(span.start, |v| v.span().start);
            if !is_identifier(id) {
                self.error(at, format!("step id `{id}` must be letters, digits and `_`, not starting with a digit (expressions refer to it by name)"));
            } else if BASE_VARS.contains(&id.as_str())
                || id == INDEX_VAR
                || id == LINE_VAR
                || CEL_RESERVED.contains(&id.as_str())
            {
                self.error(
                    at,
                    format!("step id `{id}` is a reserved name; choose another"),
                );
            } else if let Some(first) = seen.get(id) {
                self.error(
                    at,
                    format!(
                        "duplicate step id `{id}` (first used at line {})",
                        first.line
                    ),
                );
            } else {
                seen.insert(id.clone(), pos);
            }
        }

        let kind_name = self.string(t, "type", true);
        if let Some(kind) = &kind_name
            && !STEP_TYPES.contains(&kind.as_str())
        {
            let at = t.get("type").map_or(span.start, |v| v.span().start);
            self.error(
                at,
                format!(
                    "unknown step type `{kind}` in {what}; known types: {}",
                    STEP_TYPES.join(", ")
                ),
            );
        }

        // The for_each expression sees the scope before the step; the rest of the step also sees the element.
        let for_each = self.expr(t, "for_each", false, scope);
        let as_name = self.string(t, "as", false);
        let mut inner = scope.clone();
        if let Some(v) = t.get("as") {
            if t.get("for_each").is_none() {
                self.error(
                    v.span().start,
                    format!("`as` in {what} only makes sense with `for_each`"),
                );
            }
            if let Some(name) = &as_name {
                if !is_identifier(name) {
                    self.error(
                        v.span().start,
                        format!("`as` name `{name}` must be letters, digits and `_`"),
                    );
                } else if scope.contains(name)
                    || name == INDEX_VAR
                    || CEL_RESERVED.contains(&name.as_str())
                {
                    self.error(
                        v.span().start,
                        format!("`as` name `{name}` in {what} would hide `{name}`; choose another"),
                    );
                } else if name == LINE_VAR && kind_name.as_deref() == Some("create_invoice") {
                    self.error(v.span().start, format!("`as` name `line` in {what} would hide each invoice line; choose another"));
                }
            }
        }
        let as_name = as_name.unwrap_or_else(|| DEFAULT_AS.to_owned());
        if t.get("for_each").is_some() {
            inner.push(as_name.clone());
            inner.push(INDEX_VAR.to_owned());
        }

        let kind = match kind_name.as_deref() {
            Some(kind) if STEP_TYPES.contains(&kind) => self.step_kind(kind, t, &inner),
            _ => None,
        };
        if let Some(id) = &id {
            scope.push(id.clone());
        }
        Some(Step {
            id: id?,
            pos,
            for_each,
            as_name,
            kind: kind?,
        })
    }

    fn step_kind(&mut self, kind: &str, t: Table<'_, '_>, scope: &[String]) -> Option<StepKind> {
        const COMMON: &[&str] = &["id", "type", "for_each", "as", "connection"];
        let allowed: &[&str] = match kind {
            "get" => &["object", "record_id", "fields", "required"],
            "find" => &["object", "equals", "compare", "fields"],
            "find_or_create" => &["object", "source", "match", "create"],
            "create_invoice" => &["source", "header", "lines", "line", "expected_total", "merge_lines", "existing"],
            "sync" => &[
                "object",
                "record_id",
                "source",
                "fields",
                "policy",
                "policies",
                "on_source_removed",
                "on_target_removed",
                "source_active_field",
                "target_active_field",
            ],
            "delete" => &["object", "record_id"],
            "notify" => &["title", "text", "fields", "once_key"],
            "reconcile" => &["title", "period", "left", "right"],
            _ => &["object", "record_id", "fields"],
        };
        // A reconcile step works on data earlier steps read: it has no connection.
        let all: Vec<&str> =
            COMMON.iter().filter(|k| kind != "reconcile" || **k != "connection").chain(allowed).copied().collect();
        self.check_keys(t, &all, &format!(" (a `{kind}` step)"));
        if kind == "reconcile" {
            return self.reconcile(t, scope);
        }
        let connection = self.string(t, "connection", true);
        match kind {
            "get" => {
                let object = self.string(t, "object", true);
                let id = self.expr(t, "record_id", true, scope);
                let fields = self.string_list(t, "fields", true);
                let required = self.boolean(t, "required").unwrap_or(false);
                Some(StepKind::Get {
                    connection: connection?,
                    object: object?,
                    id: id?,
                    fields: fields?,
                    required,
                })
            }
            "find" => {
                let object = self.string(t, "object", true);
                let compare = self.comparisons(t, scope);
                // At least one condition in all: a find never reads a whole object by accident.
                // (A `compare` with errors of its own still counts: its errors are reported, not a missing `equals`.)
                let has_compare = compare.as_ref().is_none_or(|c| !c.is_empty());
                let equals = if t.get("equals").is_none() && has_compare {
                    Some(Vec::new())
                } else {
                    self.mapping(t, "equals", true, scope, None)
                };
                if let (Some(eq), Some(v)) = (&equals, t.get("equals"))
                    && eq.is_empty()
                    && !has_compare
                {
                    self.error(
                        v.span().start,
                        format!("`equals` in {} needs at least one field", t.what),
                    );
                }
                let fields = self.string_list(t, "fields", true);
                Some(StepKind::Find {
                    connection: connection?,
                    object: object?,
                    equals: equals?,
                    compare: compare?,
                    fields: fields?,
                })
            }
            "notify" => {
                let title = self.expr(t, "title", true, scope);
                let text = self.expr(t, "text", true, scope);
                let fields = match t.get("fields") {
                    None => Some(Vec::new()),
                    Some(_) => self.mapping(t, "fields", false, scope, None),
                };
                let once_key = self.expr(t, "once_key", false, scope);
                let once_ok = t.get("once_key").is_none() || once_key.is_some();
                let kind = StepKind::Notify {
                    connection: connection?,
                    title: title?,
                    text: text?,
                    fields: fields?,
                    once_key,
                };
                once_ok.then_some(kind)
            }
            "find_or_create" => {
                let object = self.string(t, "object", true);
                let source = self.source_ref(t, scope);
                let match_rules = self.match_rules(t, scope);
                let create = self.mapping(t, "create", true, scope, None);
                Some(StepKind::FindOrCreate {
                    connection: connection?,
                    object: object?,
                    source: source?,
                    match_rules: match_rules?,
                    create: create?,
                })
            }
            "create_invoice" => {
                let source = self.source_ref(t, scope);
                let header = self.mapping(
                    t,
                    "header",
                    true,
                    scope,
                    Some((
                        INVOICE_HEADER_FIELDS,
                        INVOICE_HEADER_REQUIRED,
                        "invoice header",
                    )),
                );
                let lines = self.expr(t, "lines", true, scope);
                let mut line_scope = scope.to_vec();
                line_scope.push(LINE_VAR.to_owned());
                if !line_scope.iter().any(|s| s == INDEX_VAR) {
                    line_scope.push(INDEX_VAR.to_owned());
                }
                let line = self.mapping(
                    t,
                    "line",
                    true,
                    &line_scope,
                    Some((INVOICE_LINE_FIELDS, INVOICE_LINE_REQUIRED, "invoice line")),
                );
                let expected_total = self.expr(t, "expected_total", false, scope);
                let merge_lines = self.expr(t, "merge_lines", false, scope);
                let existing = self.expr(t, "existing", false, scope);
                let optional_ok = t.get("expected_total").is_none() || expected_total.is_some();
                let optional_ok = optional_ok
                    && (t.get("merge_lines").is_none() || merge_lines.is_some())
                    && (t.get("existing").is_none() || existing.is_some());
                let kind = StepKind::CreateInvoice {
                    connection: connection?,
                    source: source?,
                    header: header?,
                    lines: lines?,
                    line: line?,
                    expected_total,
                    merge_lines,
                    existing,
                };
                optional_ok.then_some(kind)
            }
            "delete" => {
                let object = self.string(t, "object", true);
                let id = self.expr(t, "record_id", true, scope);
                Some(StepKind::Delete {
                    connection: connection?,
                    object: object?,
                    id: id?,
                })
            }
            "sync" => {
                let object = self.string(t, "object", true);
                let id = self.expr(t, "record_id", true, scope);
                let source = self.source_ref(t, scope);
                let pairs = self.string_pairs(t, "fields", true);
                let default_policy = match t.get("policy") {
                    None => Some(SyncPolicy::Review),
                    Some(v) => {
                        let at = v.span().start;
                        self.string(t, "policy", false).and_then(|p| self.sync_policy(&p, at))
                    }
                };
                let mut policies = Vec::new();
                let mut policies_ok = true;
                if t.get("policies").is_some() {
                    for (field, policy, at) in self.string_pairs_at(t, "policies").unwrap_or_default() {
                        match self.sync_policy(&policy, at) {
                            Some(p) => policies.push((field, p)),
                            None => policies_ok = false,
                        }
                    }
                }
                if let (Some(pairs), Some(v)) = (&pairs, t.get("fields")) {
                    if pairs.is_empty() {
                        self.error(v.span().start, format!("`fields` in {} needs at least one field pair", t.what));
                    }
                    for (field, _) in &policies {
                        if !pairs.iter().any(|(s, _)| s == field) {
                            self.error(v.span().start, format!("`policies` in {} names `{field}`, which is not one of its `fields`", t.what));
                        }
                    }
                }
                let mut removal = Removal::default();
                let mut removal_ok = true;
                for (key, slot) in [("on_source_removed", &mut removal.on_source), ("on_target_removed", &mut removal.on_target)] {
                    if let Some(v) = t.get(key) {
                        let at = v.span().start;
                        match self.string(t, key, false).map(|p| (RemovalPolicy::parse(&p), p)) {
                            Some((Some(p), _)) => *slot = p,
                            Some((None, text)) => {
                                self.error(at, format!("unknown removal policy `{text}` for `{key}`; use deactivate, delete, ignore or review"));
                                removal_ok = false;
                            }
                            None => removal_ok = false,
                        }
                    }
                }
                for (key, slot) in [("source_active_field", &mut removal.source_active_field), ("target_active_field", &mut removal.target_active_field)] {
                    if t.get(key).is_some() {
                        // Empty means none (so a template parameter can leave it out).
                        match self.string(t, key, false) {
                            Some(f) if !f.trim().is_empty() => *slot = Some(f.trim().to_string()),
                            Some(_) => {}
                            None => removal_ok = false,
                        }
                    }
                }
                let kind = StepKind::Sync {
                    connection: connection?,
                    object: object?,
                    id: id?,
                    source: source?,
                    pairs: pairs?,
                    policies,
                    default_policy: default_policy?,
                    removal,
                };
                (policies_ok && removal_ok).then_some(kind)
            }
            _ => {
                let object = self.string(t, "object", true);
                let id = self.expr(t, "record_id", true, scope);
                let fields = self.mapping(t, "fields", true, scope, None);
                if let (Some(f), Some(v)) = (&fields, t.get("fields"))
                    && f.is_empty()
                {
                    self.error(
                        v.span().start,
                        format!("`fields` in {} needs at least one field to update", t.what),
                    );
                }
                Some(StepKind::Update {
                    connection: connection?,
                    object: object?,
                    id: id?,
                    fields: fields?,
                })
            }
        }
    }

    /// `compare = [{ field = "TxnDate", op = ">=", value = '…' }, …]` of a `find` step (optional).
    fn comparisons(&mut self, t: Table<'_, '_>, scope: &[String]) -> Option<Vec<Comparison>> {
        let Some(value) = t.get("compare") else {
            return Some(Vec::new());
        };
        let DeValue::Array(items) = value.get_ref() else {
            self.error(
                value.span().start,
                format!(
                    "`compare` in {} must be an array of `{{ field = \"…\", op = \">=\", value = '…' }}` tables, found {}",
                    t.what,
                    value.get_ref().type_str()
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let DeValue::Table(table) = item.get_ref() else {
                self.error(item.span().start, format!("comparison {} in {} must be a table `{{ field = \"…\", op = \">=\", value = '…' }}`, found {}", i + 1, t.what, item.get_ref().type_str()));
                ok = false;
                continue;
            };
            let what = format!("comparison {} of {}", i + 1, t.what);
            let c = Table { table, start: item.span().start, what: &what };
            self.check_keys(c, &["field", "op", "value"], "");
            let field = self.string(c, "field", true);
            let op = self.string(c, "op", true).and_then(|op| {
                let parsed = CompareOp::parse(&op);
                if parsed.is_none() {
                    let at = c.get("op").map_or(c.start, |v| v.span().start);
                    self.error(at, format!("unknown comparison `{op}` in {what}; use one of {}", CompareOp::ALL.join(" ")));
                }
                parsed
            });
            let value = self.expr(c, "value", true, scope);
            match (field, op, value) {
                (Some(field), Some(op), Some(value)) => out.push(Comparison { field, op, value }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A `reconcile` step: `title`, `period` and the two sides `[steps.left]` / `[steps.right]`.
    fn reconcile(&mut self, t: Table<'_, '_>, scope: &[String]) -> Option<StepKind> {
        let title = self.expr(t, "title", true, scope);
        let period = self.expr(t, "period", true, scope);
        let left = self.reconcile_side(t, "left", scope);
        let right = self.reconcile_side(t, "right", scope);
        Some(StepKind::Reconcile { title: title?, period: period?, left: Box::new(left?), right: Box::new(right?) })
    }

    fn reconcile_side(&mut self, t: Table<'_, '_>, key: &str, scope: &[String]) -> Option<ReconcileSide> {
        let what = format!("`{key}` of {}", t.what);
        let s = self.table(t, key, true)?;
        let s = Table { what: &what, ..s };
        self.check_keys(s, &["name", "items", "key", "amount", "currency", "label"], "");
        let name = self.string(s, "name", true);
        let items = self.expr(s, "items", true, scope);
        let mut inner = scope.to_vec();
        if !inner.iter().any(|v| v == ITEM_VAR) {
            inner.push(ITEM_VAR.to_owned());
        }
        let id = self.expr(s, "key", true, &inner);
        let amount = self.expr(s, "amount", true, &inner);
        let currency = self.expr(s, "currency", false, &inner);
        let label = self.expr(s, "label", false, &inner);
        let optional_ok = (s.get("currency").is_none() || currency.is_some()) && (s.get("label").is_none() || label.is_some());
        let side = ReconcileSide { name: name?, items: items?, key: id?, amount: amount?, currency, label };
        optional_ok.then_some(side)
    }

    fn sync_policy(&mut self, text: &str, at: usize) -> Option<SyncPolicy> {
        let p = SyncPolicy::parse(text);
        if p.is_none() {
            self.error(at, format!("unknown sync policy `{text}`; use source_wins, target_wins, newest_wins or review"));
        }
        p
    }

    /// A table of plain strings (`this_field = "other_field"`), with parameters substituted.
    fn string_pairs(&mut self, t: Table<'_, '_>, key: &str, required: bool) -> Option<Vec<(String, String)>> {
        if t.get(key).is_none() {
            if required {
                self.missing(t, key);
            }
            return None;
        }
        self.string_pairs_at(t, key).map(|v| v.into_iter().map(|(k, v, _)| (k, v)).collect())
    }

    fn string_pairs_at(&mut self, t: Table<'_, '_>, key: &str) -> Option<Vec<(String, String, usize)>> {
        let what = format!("`{key}` of {}", t.what);
        let m = self.table(t, key, true)?;
        let mut out = Vec::new();
        let mut ok = true;
        for (k, v) in m.entries() {
            match v.get_ref() {
                DeValue::String(text) => {
                    let name = self.substitute(k.get_ref(), k.span().start);
                    let value = self.substitute(text, v.span().start);
                    out.push((name, value, v.span().start));
                }
                other => {
                    self.error(v.span().start, format!("`{}` in {what} must be a field name in quotes, found {}", k.get_ref(), other.type_str()));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn source_ref(&mut self, t: Table<'_, '_>, scope: &[String]) -> Option<SourceRef> {
        let what = format!("`source` of {}", t.what);
        let s = self.table(t, "source", true)?;
        let s = Table { what: &what, ..s };
        self.check_keys(s, &["connection", "object", "id"], "");
        let connection = self.string(s, "connection", true);
        let object = self.string(s, "object", true);
        let id = self.expr(s, "id", true, scope);
        Some(SourceRef {
            connection: connection?,
            object: object?,
            id: id?,
        })
    }

    fn match_rules(&mut self, t: Table<'_, '_>, scope: &[String]) -> Option<Vec<MatchRule>> {
        let Some(value) = t.get("match") else {
            return Some(Vec::new());
        };
        let DeValue::Array(items) = value.get_ref() else {
            self.error(
                value.span().start,
                format!(
                    "`match` in {} must be an array of `{{ field = \"…\", value = '…' }}` tables, found {}",
                    t.what,
                    value.get_ref().type_str()
                ),
            );
            return None;
        };
        let mut rules = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let DeValue::Table(table) = item.get_ref() else {
                self.error(item.span().start, format!("match rule {} in {} must be a table `{{ field = \"…\", value = '…' }}`, found {}", i + 1, t.what, item.get_ref().type_str()));
                ok = false;
                continue;
            };
            let what = format!("match rule {} of {}", i + 1, t.what);
            let r = Table {
                table,
                start: item.span().start,
                what: &what,
            };
            self.check_keys(r, &["field", "value", "how", "threshold"], "");
            let field = self.string(r, "field", true);
            let value = self.expr(r, "value", true, scope);
            let how = self.match_how(r);
            match (field, value, how) {
                (Some(field), Some(value), Some(how)) => rules.push(MatchRule {
                    field,
                    value,
                    how,
                    pos: self.pos(item.span().start),
                }),
                _ => ok = false,
            }
        }
        ok.then_some(rules)
    }

    /// `how = "exact" | "normalized" | "fuzzy"` (default exact) and, for fuzzy, `threshold` in (0, 1].
    fn match_how(&mut self, r: Table<'_, '_>) -> Option<MatchHow> {
        let how = match r.get("how") {
            None => "exact".to_string(),
            Some(_) => self.string(r, "how", false)?,
        };
        let threshold = match r.get("threshold") {
            None => None,
            Some(v) => match v.get_ref() {
                DeValue::Float(f) => f.to_string().parse::<f64>().ok(),
                DeValue::Integer(i) => i.to_string().parse::<f64>().ok(),
                other => {
                    self.error(v.span().start, format!("`threshold` in {} must be a number between 0 and 1, found {}", r.what, other.type_str()));
                    return None;
                }
            }
            .map(|t| (t, v.span().start)),
        };
        match (how.as_str(), threshold) {
            ("exact", None) => Some(MatchHow::Exact),
            ("normalized", None) => Some(MatchHow::Normalized),
            ("fuzzy", None) => Some(MatchHow::Fuzzy { threshold: 0.9 }),
            ("fuzzy", Some((t, at))) => {
                if t > 0.0 && t <= 1.0 {
                    Some(MatchHow::Fuzzy { threshold: t })
                } else {
                    self.error(at, format!("`threshold` in {} must be above 0 and at most 1, got {t}", r.what));
                    None
                }
            }
            ("exact" | "normalized", Some((_, at))) => {
                self.error(at, format!("`threshold` in {} only applies to `how = \"fuzzy\"`", r.what));
                None
            }
            (other, _) => {
                let at = r.get("how").map(|v| v.span().start).unwrap_or(r.start);
                self.error(at, format!("unknown `how = \"{other}\"` in {}; use exact, normalized or fuzzy", r.what));
                None
            }
        }
    }

    // ----- typed access -----

    /// Reports every key of `t` not in `allowed`.
    fn check_keys(&mut self, t: Table<'_, '_>, allowed: &[&str], note: &str) {
        for (key, _) in t.entries() {
            if !allowed.contains(&key.get_ref().as_ref()) {
                self.error(
                    key.span().start,
                    format!(
                        "unknown key `{}` in {}{note}; allowed keys: {}",
                        key.get_ref(),
                        t.what,
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    fn missing(&mut self, t: Table<'_, '_>, key: &str) {
        self.error(
            t.start,
            format!("missing required key `{key}` in {}", t.what),
        );
    }

    fn wrong_type(&mut self, t: Table<'_, '_>, key: &str, value: &Value<'_>, expected: &str) {
        self.error(
            value.span().start,
            format!(
                "`{key}` in {} must be {expected}, found {}",
                t.what,
                value.get_ref().type_str()
            ),
        );
    }

    fn table<'d, 'i>(
        &mut self,
        t: Table<'d, 'i>,
        key: &str,
        required: bool,
    ) -> Option<Table<'d, 'i>>
    where
        'i: 'd,
    {
        let Some(value) = t.get(key) else {
            if required {
                if t.start == 0 && t.what == "the file (top level)" {
                    self.error(0, format!("missing required table `[{key}]`"));
                } else {
                    self.missing(t, key);
                }
            }
            return None;
        };
        match value.get_ref() {
            DeValue::Table(table) => {
                let what: &'d str = match key {
                    "flow" => "[flow]",
                    "trigger" => "[trigger]",
                    "schedule" => "[trigger.schedule]",
                    "when" => "[when]",
                    "params" => "[params]",
                    _ => t.what,
                };
                Some(Table {
                    table,
                    start: value.span().start,
                    what,
                })
            }
            _ => {
                self.wrong_type(t, key, value, "a table");
                None
            }
        }
    }

    /// A plain string with `${param}` substituted.
    fn string(&mut self, t: Table<'_, '_>, key: &str, required: bool) -> Option<String> {
        let value = t.get(key);
        let raw = self.raw_string(t, key, required)?;
        let at = value.map_or(t.start, |v| v.span().start);
        Some(self.substitute(&raw, at))
    }

    fn raw_string(&mut self, t: Table<'_, '_>, key: &str, required: bool) -> Option<String> {
        let Some(value) = t.get(key) else {
            if required {
                self.missing(t, key);
            }
            return None;
        };
        match value.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.wrong_type(t, key, value, "a string");
                None
            }
        }
    }

    fn string_list(&mut self, t: Table<'_, '_>, key: &str, required: bool) -> Option<Vec<String>> {
        let Some(value) = t.get(key) else {
            if required {
                self.missing(t, key);
            }
            return None;
        };
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(t, key, value, "an array of strings");
            return None;
        };
        if items.is_empty() {
            self.error(
                value.span().start,
                format!("`{key}` in {} must list at least one field", t.what),
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for item in items.iter() {
            match item.get_ref() {
                // An entry a parameter left empty (`"${terms_field}"` with `terms_field = ""`) is an optional
                // field not in use: it is dropped rather than asked of the system.
                DeValue::String(s) => {
                    let field = self.substitute(s, item.span().start);
                    if !(field.is_empty() && s.contains("${")) {
                        out.push(field);
                    }
                }
                other => {
                    self.error(
                        item.span().start,
                        format!(
                            "`{key}` in {} must contain only strings, found {}",
                            t.what,
                            other.type_str()
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// A whole number of seconds: an integer, or a string that is one after parameter substitution (so a
    /// template can make it a parameter).
    /// A yes/no key: a TOML boolean, or a string (`"true"`/`"false"`, so a template parameter can set it).
    fn boolean(&mut self, t: Table<'_, '_>, key: &str) -> Option<bool> {
        let value = t.get(key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            DeValue::String(s) => {
                let text = self.substitute(s, value.span().start);
                match text.trim() {
                    "true" => Some(true),
                    "false" => Some(false),
                    other => {
                        self.error(value.span().start, format!("`{key}` in {} must be true or false, got \"{other}\"", t.what));
                        None
                    }
                }
            }
            _ => {
                self.wrong_type(t, key, value, "true or false");
                None
            }
        }
    }

    fn seconds(&mut self, t: Table<'_, '_>, key: &str) -> Option<u64> {
        let value = t.get(key)?;
        let parsed = match value.get_ref() {
            DeValue::Integer(i) => u64::from_str_radix(i.as_str(), i.radix()).ok(),
            DeValue::String(s) => {
                let text = self.substitute(s, value.span().start);
                let parsed = text.trim().parse::<u64>().ok();
                if parsed.is_none() {
                    self.error(
                        value.span().start,
                        format!(
                            "`{key}` in {} must be a whole number of seconds, got \"{text}\"",
                            t.what
                        ),
                    );
                    return None;
                }
                parsed
            }
            _ => {
                self.wrong_type(t, key, value, "a whole number of seconds");
                return None;
            }
        };
        if parsed.is_none() {
            self.error(
                value.span().start,
                format!(
                    "`{key}` in {} must be a whole number of seconds, not negative",
                    t.what
                ),
            );
        }
        parsed
    }

    /// Replaces `${name}` with the parameter's value; `$${` stands for a literal `${`.
    fn substitute(&mut self, text: &str, at: usize) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("${") {
            if rest[..i].ends_with('$') {
                out.push_str(&rest[..i - 1]);
                out.push_str("${");
                rest = &rest[i + 2..];
                continue;
            }
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(end) = after.find('}') else {
                self.error(
                    at,
                    format!("unclosed `${{` in \"{text}\" (write `$${{` for a literal `${{`)"),
                );
                out.push_str(&rest[i..]);
                return out;
            };
            let name = &after[..end];
            match self.values.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    let known: Vec<&str> = self.values.keys().map(String::as_str).collect();
                    let listing = if known.is_empty() {
                        "this flow declares no parameters".to_owned()
                    } else {
                        format!("known parameters: {}", known.join(", "))
                    };
                    self.error(
                        at,
                        format!("unknown parameter `{name}` in \"{text}\"; {listing}"),
                    );
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// An expression: compiled, with syntax errors and unknown variables reported at their exact position.
    fn expr(
        &mut self,
        t: Table<'_, '_>,
        key: &str,
        required: bool,
        scope: &[String],
    ) -> Option<Expr> {
        let Some(value) = t.get(key) else {
            if required {
                self.missing(t, key);
            }
            return None;
        };
        let DeValue::String(text) = value.get_ref() else {
            self.wrong_type(
                t,
                key,
                value,
                "an expression in a string (e.g. 'record.Id')",
            );
            return None;
        };
        let what = format!("`{key}` in {}", t.what);
        self.compile(text, value.span(), scope, &what)
    }

    fn compile(
        &mut self,
        text: &str,
        span: Range<usize>,
        scope: &[String],
        what: &str,
    ) -> Option<Expr> {
        let layout = self.layout(span, text);
        let start = layout.offsets.first().copied().unwrap_or(0);
        if text.trim().is_empty() {
            self.error(start, format!("{what} is an empty expression"));
            return None;
        }
        let expr = match Expr::compile(text, self.pos(start)) {
            Ok(expr) => expr,
            Err(e) => {
                for err in e.errors {
                    let at = layout.offsets.get(err.offset).copied().unwrap_or(start);
                    self.error(at, format!("invalid expression in {what}: {}", err.message));
                }
                return None;
            }
        };
        let mut ok = true;
        for (name, offset) in expr.variable_offsets() {
            if !scope.iter().any(|s| s == name) {
                let at = layout.offsets.get(*offset).copied().unwrap_or(start);
                self.error(
                    at,
                    format!(
                        "unknown variable `{name}` in {what}; available here: {}",
                        scope.join(", ")
                    ),
                );
                ok = false;
            }
        }
        ok.then_some(expr)
    }

    /// A mapping table: `field = 'expression'`, with nested tables (dotted keys, inline tables) flattened into
    /// dotted field names. `canonical` restricts the field names and names the required ones.
    fn mapping(
        &mut self,
        t: Table<'_, '_>,
        key: &str,
        required: bool,
        scope: &[String],
        canonical: Option<(&[&str], &[&str], &str)>,
    ) -> Option<Mapping> {
        let what = format!("`{key}` of {}", t.what);
        let m = self.table(t, key, required)?;
        let m = Table { what: &what, ..m };
        let mut out: Mapping = Vec::new();
        let mut firsts: BTreeMap<String, usize> = BTreeMap::new();
        let mut ok = self.flatten(m, "", None, scope, &mut out, &mut firsts);
        if let Some((allowed, needed, noun)) = canonical {
            for (field, _) in &out {
                if !allowed.contains(&field.as_str()) {
                    let at = firsts.get(field).copied().unwrap_or(m.start);
                    self.error(
                        at,
                        format!(
                            "unknown {noun} field `{field}`; allowed fields: {}",
                            allowed.join(", ")
                        ),
                    );
                    ok = false;
                }
            }
            let present: BTreeSet<&str> = firsts.keys().map(String::as_str).collect();
            for field in needed.iter().filter(|f| !present.contains(**f)) {
                self.error(
                    m.start,
                    format!("missing required {noun} field `{field}` in {what}"),
                );
                ok = false;
            }
        }
        ok.then_some(out)
    }

    fn flatten(
        &mut self,
        m: Table<'_, '_>,
        prefix: &str,
        outer_key: Option<usize>,
        scope: &[String],
        out: &mut Mapping,
        firsts: &mut BTreeMap<String, usize>,
    ) -> bool {
        let mut ok = true;
        for (k, v) in m.entries() {
            let name = self.substitute(k.get_ref(), k.span().start);
            let field = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}.{name}")
            };
            // A nested field is blamed on the start of its outermost key (`BillAddr` in `BillAddr.City = …`).
            let key_at = outer_key.unwrap_or(k.span().start);
            match v.get_ref() {
                DeValue::String(text) => {
                    if let Some(first) = firsts.get(&field) {
                        let line = self.pos(*first).line;
                        self.error(
                            key_at,
                            format!(
                                "field `{field}` is mapped twice in {} (first at line {line})",
                                m.what
                            ),
                        );
                        ok = false;
                        continue;
                    }
                    firsts.insert(field.clone(), key_at);
                    let what = format!("`{field}` in {}", m.what);
                    match self.compile(text, v.span(), scope, &what) {
                        Some(expr) => out.push((field, expr)),
                        None => ok = false,
                    }
                }
                DeValue::Table(table) => {
                    let inner = Table {
                        table,
                        start: v.span().start,
                        what: m.what,
                    };
                    ok &= self.flatten(inner, &field, Some(key_at), scope, out, firsts);
                }
                other => {
                    self.error(
                        v.span().start,
                        format!("`{field}` in {} must be an expression in a string (e.g. 'record.Id'), found {}", m.what, other.type_str()),
                    );
                    ok = false;
                }
            }
        }
        ok
    }

    /// Maps each character of a string value to its byte offset in the file, through quotes and escapes.
    /// When the decoding disagrees with the TOML parser's value, every character maps to the string's start.
    fn layout(&self, span: Range<usize>, value: &str) -> StringLayout {
        let raw = self.source.get(span.clone()).unwrap_or("");
        let decoded = decode_positions(raw);
        match decoded {
            Some(offsets) if offsets.len() == value.chars().count() + 1 => StringLayout {
                offsets: offsets.into_iter().map(|o| span.start + o).collect(),
            },
            _ => {
                let quote = raw
                    .chars()
                    .take_while(|c| *c == '"' || *c == '\'')
                    .count()
                    .min(3);
                StringLayout {
                    offsets: vec![span.start + quote; value.chars().count() + 1],
                }
            }
        }
    }
}

/// For a raw TOML string token (quotes included), the byte offset within it of each decoded character, plus
/// the offset of the closing quote. `None` when the token is not a string.
fn decode_positions(raw: &str) -> Option<Vec<usize>> {
    let (delim, multiline, basic) = if raw.starts_with("'''") {
        ("'''", true, false)
    } else if raw.starts_with("\"\"\"") {
        ("\"\"\"", true, true)
    } else if raw.starts_with('\'') {
        ("'", false, false)
    } else if raw.starts_with('"') {
        ("\"", false, true)
    } else {
        return None;
    };
    let mut start = delim.len();
    let end = raw.len().checked_sub(delim.len())?;
    if multiline {
        // A newline right after the opening delimiter is not part of the value.
        if raw[start..].starts_with("\r\n") {
            start += 2;
        } else if raw[start..].starts_with('\n') {
            start += 1;
        }
    }
    let body = raw.get(start..end)?;
    let mut offsets = Vec::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if !(basic && c == '\\') {
            offsets.push(start + i);
            continue;
        }
        let &(_, next) = chars.peek()?;
        match next {
            'b' | 't' | 'n' | 'f' | 'r' | '"' | '\\' | 'e' => {
                chars.next();
                offsets.push(start + i);
            }
            'x' | 'u' | 'U' => {
                let digits = match next {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                chars.next();
                for _ in 0..digits {
                    chars.next();
                }
                offsets.push(start + i);
            }
            ' ' | '\t' | '\r' | '\n' if multiline => {
                // Line-ending backslash: it and all whitespace up to the next non-blank character vanish.
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_whitespace() {
                        chars.next();
                    } else {
                        break;
                    }
                }
            }
            _ => return None,
        }
    }
    offsets.push(end);
    Some(offsets)
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_to_source_offsets() {
        // "a\tb\u00e9c": a, \t, b, \u00e9, c
        assert_eq!(
            decode_positions(r#""a\tb\u00e9c""#),
            Some(vec![1, 2, 4, 5, 11, 12])
        );
        assert_eq!(decode_positions("'''\nab'''"), Some(vec![4, 5, 6]));
        assert_eq!(
            decode_positions("\"\"\"x\\\n   y\"\"\""),
            Some(vec![3, 9, 10])
        );
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("lines_2"));
        assert!(!is_identifier("2lines"));
        assert!(!is_identifier("a-b"));
    }
}
