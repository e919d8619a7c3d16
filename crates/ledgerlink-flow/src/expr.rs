//! CEL expressions as flow files use them.
//!
//! Layout: [`Expr`] is one compiled expression that remembers its source text and where it starts in the flow
//! file; [`Expr::eval`] runs it against [`Vars`] (JSON values by name) and returns JSON. [`CompileError`] and
//! [`EvalError`] carry positions so the parser and the engine can point at the file. The helper functions
//! available to every expression are registered in one place ([`HELPERS`] documents them) and the conversions
//! between JSON and CEL values live at the bottom of the module.
//!
//! # Why CEL
//! CEL always terminates (no loops, no recursion), so a flow file cannot hang a worker, and reading a missing
//! key is an error rather than a silent null: a mapping that names a field the source record does not have
//! fails loudly instead of writing an empty value into the books. Guard optional data with `has(record.Phone)`
//! or by requesting the field (so it is present, possibly `null`) and using `coalesce(record.Phone, "")`.
//!
//! # Numbers and money
//! JSON integers become CEL `int` (or `uint` above `i64::MAX`), every other JSON number becomes `double`, and
//! the conversion back keeps that distinction. CEL has no decimal type, so expressions only *move* amounts
//! (`line.UnitPrice`), they never compute them: the engine converts the numbers an expression yields into
//! `rust_decimal::Decimal` at the boundary of the canonical model and does every sum, discount and rounding
//! there. That is also why no arithmetic helper for money exists here; `a * b` on doubles is available in CEL
//! but must not be used for amounts.
//!
//! # Helper functions
//! Besides CEL's standard library (`size`, `has`, `map`, `filter`, `exists`, `string`, `int`, `double`,
//! `startsWith`, `endsWith`, `contains`, `in`, `?:`, …; no regular expressions, the `regex` feature is off):
//!
//! | function | result |
//! |---|---|
//! | `coalesce(a, b, …)` | the first argument that is not `null` (`null` when all are) |
//! | `date(s)` | the `YYYY-MM-DD` part of a date or datetime string; `null` stays `null` |
//! | `trim(s)` | `s` without leading and trailing whitespace; `null` stays `null` |
//! | `lower(s)` / `upper(s)` | `s` in lower / upper case (Unicode); `null` stays `null` |
//! | `add_days(d, n)` | the `YYYY-MM-DD` date `n` days after the date `d` (a default close or due date); `null` stays `null` |
//! | `max(list)` / `min(list)` | the largest / smallest element (dates as `YYYY-MM-DD` text compare as dates); `null` for an empty list |
//! | `sum(amounts)` | the exact decimal sum of a list of amounts (numbers or decimal text; nulls skipped), as decimal text |
//!
//! `sum` is the one money helper, because totals (an account's amount due over its invoices) cannot be had
//! otherwise: it reads each number through its shortest text form (as the engine does at the canonical model's
//! boundary), adds with `rust_decimal`, and returns text (`"1280.75"`) so no binary fraction is introduced on
//! the way back; the engine and both systems take decimal text for amount fields.
//!
//! `coalesce` takes values, not field paths: `coalesce(line.Discount, 0)` still fails when the record has no
//! `Discount` key at all, because reading the key is the error. The string helpers let `null` through so that
//! optional fields can be cleaned without a guard (`trim(account.Phone)`). Every helper can also be called as a
//! method: `account.Name.trim()`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};

use cel::common::ast::{EntryExpr, Expr as Ast, IdedExpr};
use cel::extractors::{Arguments, This};
use cel::common::types::{CelBool, CelDouble, CelInt, CelList, CelMap as DefaultMap, CelMapKey, CelNull, CelString, CelUInt};
use cel::common::value::Val;
use cel::objects::Key;
use cel::{Context, Env, ExecutionError, Program, Value};

use crate::def::Pos;

/// Variables an expression is evaluated against, by name (`record`, `params`, step ids, …).
pub type Vars = serde_json::Map<String, serde_json::Value>;

/// The helper functions registered on top of CEL's standard library, with a one-line description each (also
/// used by documentation and by tooling that lists what a flow may call).
pub const HELPERS: &[(&str, &str)] = &[
    (
        "coalesce",
        "coalesce(a, b, …): the first argument that is not null",
    ),
    (
        "date",
        "date(s): the YYYY-MM-DD part of a date or datetime string (null stays null)",
    ),
    (
        "trim",
        "trim(s): s without leading and trailing whitespace (null stays null)",
    ),
    (
        "add_days",
        "add_days(d, n): the YYYY-MM-DD date n days after date d (before it when n < 0; null stays null)",
    ),
    (
        "sum",
        "sum(amounts): the exact decimal sum of a list of numbers or decimal texts (nulls skipped), as decimal text",
    ),
    ("max", "max(list): the largest element (ISO dates compare as dates); null for an empty list"),
    ("min", "min(list): the smallest element; null for an empty list"),
    ("lower", "lower(s): s in lower case (null stays null)"),
    ("upper", "upper(s): s in upper case (null stays null)"),
];

/// Identifiers CEL resolves by itself (type names), which are therefore never flow variables.
const BUILTIN_IDENTS: &[&str] = &[
    "bool",
    "bytes",
    "double",
    "int",
    "uint",
    "string",
    "list",
    "map",
    "null_type",
    "type",
    "dyn",
];

/// The standard environment, built once: building it registers every standard overload.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// The root context holding the flow helpers, built once; every evaluation binds its variables in a child scope
/// of it, so the helpers are not registered again for each of the dozens of expressions a sync job evaluates.
static HELPER_CONTEXT: LazyLock<Result<Context<'static, 'static>, String>> = LazyLock::new(|| {
    let mut ctx = Context::with_env(Arc::clone(&ENV));
    register_helpers(&mut ctx).map(|()| ctx).map_err(|e| e.to_string())
});

/// The variables of a run, kept as JSON (what steps read and write) and as CEL values converted at most once
/// each, when an expression first reads them. Why: converting a variable is a deep copy. A run's `record`,
/// `params` and most step outputs are read by many of its expressions, and converting them at every evaluation
/// cost more than evaluating; but some outputs are never read at all in a given run (a customer found through
/// its link needs none of the account fields its `create` mapping reads), and converting those when bound was
/// wasted.
///
/// Variables bound with [`Scope::set`] stay for the run. Loop variables ([`Scope::push`], [`Scope::pop`]) live in
/// the JSON only and are converted at each evaluation that reads them: they are small and change every iteration.
pub struct Scope {
    vars: Vars,
    /// The `set` variables' CEL values, in a child scope of [`HELPER_CONTEXT`], with the names set since they
    /// were last converted. A lock because evaluation takes `&Scope` (a run is shared across `.await`s), and
    /// converting on first read changes it; only the run's own task ever takes it.
    cel: Option<Mutex<Bound>>,
    /// Names bound by `push`, shadowing a `set` variable of the same name while bound.
    pushed: Vec<String>,
}

struct Bound {
    ctx: Context<'static, 'static>,
    /// Set variables whose CEL value in `ctx` is missing or older than their JSON.
    stale: HashSet<String>,
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope").field("vars", &self.vars).field("pushed", &self.pushed).finish_non_exhaustive()
    }
}

impl Default for Scope {
    fn default() -> Self {
        Scope::new()
    }
}

impl Scope {
    pub fn new() -> Scope {
        let cel = HELPER_CONTEXT.as_ref().ok().map(|root| Mutex::new(Bound { ctx: root.new_inner_scope(), stale: HashSet::new() }));
        Scope { vars: Vars::new(), cel, pushed: Vec::new() }
    }

    /// Binds `name` for the rest of the run (replacing an earlier value).
    pub fn set(&mut self, name: &str, value: serde_json::Value) {
        if let Some(cel) = &mut self.cel {
            cel.get_mut().unwrap_or_else(|p| p.into_inner()).stale.insert(name.to_string());
        }
        self.vars.insert(name.to_string(), value);
    }

    /// Binds a loop variable until [`Scope::pop`]; returns what it shadows, to be restored by `pop`.
    pub fn push(&mut self, name: &str, value: serde_json::Value) -> Option<serde_json::Value> {
        self.pushed.push(name.to_string());
        self.vars.insert(name.to_string(), value)
    }

    /// Unbinds the loop variable `name`, restoring what it shadowed.
    pub fn pop(&mut self, name: &str, shadowed: Option<serde_json::Value>) {
        if let Some(i) = self.pushed.iter().rposition(|n| n == name) {
            self.pushed.remove(i);
        }
        match shadowed {
            Some(v) => {
                self.vars.insert(name.to_string(), v);
            }
            None => {
                self.vars.remove(name);
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&serde_json::Value> {
        self.vars.get(name)
    }

    /// Every variable as JSON.
    pub fn vars(&self) -> &Vars {
        &self.vars
    }
}

/// A compiled CEL expression together with its source and position.
///
/// Cloning is cheap (the program is shared). The position is where the expression's text starts in the flow
/// file, so a runtime failure can name the line and column the author has to look at.
#[derive(Clone)]
pub struct Expr {
    source: String,
    pos: Pos,
    program: Arc<Program>,
    /// Free identifiers with the character offset (within `source`) of their first use.
    refs: Arc<[(String, usize)]>,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expr")
            .field("source", &self.source)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

/// One syntax error inside an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Character offset of the error within the expression's source (0-based).
    pub offset: usize,
    /// Position of the error in the file, assuming the expression's text appears verbatim from [`Expr::pos`]
    /// on (true for TOML literal strings; the flow parser maps escaped strings itself using `offset`).
    pub pos: Pos,
    pub message: String,
}

/// An expression that does not compile: every syntax error CEL reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub source: String,
    pub errors: Vec<SyntaxError>,
}

// Written by hand: `thiserror` would take the field named `source` for the error's cause.
impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "line {}, column {}: {} (in `{}`)",
                e.pos.line, e.pos.column, e.message, self.source
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for CompileError {}

/// An expression failed while running (a missing key, a type mismatch, a helper rejecting its input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError {
    /// Where the expression starts in the flow file.
    pub pos: Pos,
    /// The expression's text.
    pub source: String,
    pub message: String,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {} (in `{}`)",
            self.pos.line, self.pos.column, self.message, self.source
        )
    }
}

impl std::error::Error for EvalError {}

impl Expr {
    /// Compiles `source`; `pos` is where its text starts in the flow file.
    pub fn compile(source: &str, pos: Pos) -> Result<Expr, CompileError> {
        let program = ENV.compile(source).map_err(|errors| CompileError {
            source: source.to_owned(),
            errors: errors
                .errors
                .iter()
                .map(|e| {
                    let offset = offset_of_line_column(source, e.pos.0, e.pos.1);
                    SyntaxError {
                        offset,
                        pos: pos_after(pos, source, offset),
                        message: clean_message(&e.msg),
                    }
                })
                .collect(),
        })?;
        let mut refs = Vec::new();
        collect_free_idents(program.expression(), &mut Vec::new(), &mut refs);
        let mut first: Vec<(String, usize)> = Vec::new();
        for (name, id) in refs {
            // Node offsets are bytes; positions elsewhere count characters.
            let byte = program
                .source_info()
                .offset_for(id)
                .map_or(0, |(start, _)| start as usize);
            let offset = source.get(..byte).map_or(0, |s| s.chars().count());
            match first.iter_mut().find(|(n, _)| *n == name) {
                Some(entry) => entry.1 = entry.1.min(offset),
                None => first.push((name, offset)),
            }
        }
        first.sort_by_key(|(_, offset)| *offset);
        Ok(Expr {
            source: source.to_owned(),
            pos,
            program: Arc::new(program),
            refs: first.into(),
        })
    }

    /// The expression's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where the expression's text starts in the flow file.
    pub fn pos(&self) -> Pos {
        self.pos
    }

    /// The top-level identifiers the expression reads (`record`, `params`, step ids, …), in order of first use.
    /// Variables bound inside the expression by macros (`lines.map(l, l.Id)`) are not included.
    pub fn variables(&self) -> Vec<String> {
        self.refs.iter().map(|(name, _)| name.clone()).collect()
    }

    /// Like [`Expr::variables`], with the character offset of each identifier's first use in the source, so a
    /// validator can point at the exact spot.
    pub fn variable_offsets(&self) -> &[(String, usize)] {
        &self.refs
    }

    /// Evaluates the expression. Only the variables it references are converted, so passing the whole run
    /// state is cheap.
    pub fn eval(&self, vars: &Vars) -> Result<serde_json::Value, EvalError> {
        let root = HELPER_CONTEXT.as_ref().map_err(|e| self.error(e.clone()))?;
        let mut ctx = root.new_inner_scope();
        for (name, _) in self.refs.iter() {
            if let Some(value) = vars.get(name) {
                ctx.add_variable_as_val(name.as_str(), json_to_val(value));
            }
        }
        self.run(&ctx)
    }

    /// Evaluates the expression against a run's [`Scope`]: the `set` variables it reads are converted if this
    /// is their first read since they were set, its loop variables each time.
    pub fn eval_in(&self, scope: &Scope) -> Result<serde_json::Value, EvalError> {
        let Some(cel) = &scope.cel else { return self.eval(&scope.vars) };
        let mut bound = cel.lock().unwrap_or_else(|p| p.into_inner());
        let Bound { ctx: base, stale } = &mut *bound;
        let mut pushed = Vec::new();
        for (name, _) in self.refs.iter() {
            if scope.pushed.contains(name) {
                pushed.push(name);
            } else if stale.remove(name.as_str())
                && let Some(value) = scope.vars.get(name)
            {
                base.add_variable_as_val(name.as_str(), json_to_val(value));
            }
        }
        if pushed.is_empty() {
            return self.run(base);
        }
        let mut ctx = base.new_inner_scope();
        for name in pushed {
            if let Some(value) = scope.vars.get(name) {
                ctx.add_variable_as_val(name.as_str(), json_to_val(value));
            }
        }
        self.run(&ctx)
    }

    fn run(&self, ctx: &Context<'_, '_>) -> Result<serde_json::Value, EvalError> {
        let value = self.program.execute(ctx).map_err(|e| self.error(describe_execution_error(&e)))?;
        cel_to_json(&value).map_err(|message| self.error(message))
    }

    fn error(&self, message: String) -> EvalError {
        EvalError {
            pos: self.pos,
            source: self.source.clone(),
            message,
        }
    }
}

/// The position `offset` characters into `text`, which starts at `start`.
fn pos_after(start: Pos, text: &str, offset: usize) -> Pos {
    let mut pos = start;
    for c in text.chars().take(offset) {
        if c == '\n' {
            pos.line += 1;
            pos.column = 1;
        } else {
            pos.column += 1;
        }
    }
    pos
}

/// Converts CEL's 1-based (line, column) into a character offset in `source`; out-of-range values clamp to
/// the end (CEL reports "end of input" errors one past the last character).
fn offset_of_line_column(source: &str, line: isize, column: isize) -> usize {
    let line = usize::try_from(line.max(1)).unwrap_or(1);
    let column = usize::try_from(column.max(1)).unwrap_or(1);
    let mut offset = 0;
    for (i, text) in source.split_inclusive('\n').enumerate() {
        let len = text.chars().count();
        if i + 1 == line {
            return offset + (column - 1).min(len);
        }
        offset += len;
    }
    offset
}

/// Rewrites CEL's parser messages (ANTLR's `mismatched input 'x' expecting {…every token…}`) into short ones
/// a flow author can act on; messages of an unknown shape are kept as they are.
fn clean_message(message: &str) -> String {
    let message = message.strip_prefix("Syntax error: ").unwrap_or(message);
    let token = |t: &str| {
        if t == "<EOF>" {
            "the end of the expression".to_owned()
        } else {
            format!("`{t}`")
        }
    };
    for prefix in ["mismatched input '", "extraneous input '"] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expecting)) = rest.split_once("' expecting ")
        {
            if found == "<EOF>" {
                return format!(
                    "the expression ends too early; expected {}",
                    describe_expected(expecting)
                );
            }
            return format!(
                "unexpected {}; expected {}",
                token(found),
                describe_expected(expecting)
            );
        }
    }
    if let Some(rest) = message.strip_prefix("missing ")
        && let Some((missing, at)) = rest.split_once(" at '")
    {
        return format!(
            "missing {} before {}",
            describe_expected(missing),
            token(at.trim_end_matches('\''))
        );
    }
    if let Some(rest) = message.strip_prefix("token recognition error at: '") {
        return format!("unexpected character `{}`", rest.trim_end_matches('\''));
    }
    if let Some(rest) = message.strip_prefix("no viable alternative at input '") {
        return format!("cannot make sense of `{}`", rest.trim_end_matches('\''));
    }
    message.replace("<EOF>", "the end of the expression")
}

/// An ANTLR expected-token set (`{')', ','}` or a single `')'`) in words.
fn describe_expected(set: &str) -> String {
    let items: Vec<&str> = set
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(", ")
        .map(str::trim)
        .collect();
    if items.contains(&"IDENTIFIER") {
        return "a value".to_owned();
    }
    let items: Vec<String> = items
        .iter()
        .map(|t| format!("`{}`", t.trim_matches('\'')))
        .collect();
    match items.as_slice() {
        [] => "something else".to_owned(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn describe_execution_error(error: &ExecutionError) -> String {
    match error {
        ExecutionError::NoSuchKey(key) => {
            format!(
                "no such key: {key} (guard optional fields with has(…) or request them so they are present)"
            )
        }
        ExecutionError::UndeclaredReference(name) => {
            format!("unknown variable or function `{name}`")
        }
        other => other.to_string(),
    }
}

/// Collects identifiers not bound by an enclosing comprehension, with their node ids.
fn collect_free_idents(expr: &IdedExpr, bound: &mut Vec<String>, out: &mut Vec<(String, u64)>) {
    match &expr.expr {
        Ast::Unspecified | Ast::Literal(_) => {}
        Ast::Ident(name) => {
            if !name.starts_with('@')
                && !bound.iter().any(|b| b == name)
                && !BUILTIN_IDENTS.contains(&name.as_str())
            {
                out.push((name.clone(), expr.id));
            }
        }
        Ast::Call(call) => {
            if let Some(target) = &call.target {
                collect_free_idents(target, bound, out);
            }
            for arg in &call.args {
                collect_free_idents(arg, bound, out);
            }
        }
        Ast::Comprehension(comp) => {
            collect_free_idents(&comp.iter_range, bound, out);
            collect_free_idents(&comp.accu_init, bound, out);
            let before = bound.len();
            bound.push(comp.iter_var.clone());
            if let Some(second) = &comp.iter_var2 {
                bound.push(second.clone());
            }
            bound.push(comp.accu_var.clone());
            collect_free_idents(&comp.loop_cond, bound, out);
            collect_free_idents(&comp.loop_step, bound, out);
            collect_free_idents(&comp.result, bound, out);
            bound.truncate(before);
        }
        Ast::List(list) => {
            for element in &list.elements {
                collect_free_idents(element, bound, out);
            }
        }
        Ast::Map(map) => {
            for entry in &map.entries {
                collect_entry(&entry.expr, bound, out);
            }
        }
        Ast::Struct(s) => {
            for entry in &s.entries {
                collect_entry(&entry.expr, bound, out);
            }
        }
        Ast::Select(select) => collect_free_idents(&select.operand, bound, out),
    }
}

fn collect_entry(entry: &EntryExpr, bound: &mut Vec<String>, out: &mut Vec<(String, u64)>) {
    match entry {
        EntryExpr::StructField(field) => collect_free_idents(&field.value, bound, out),
        EntryExpr::MapEntry(entry) => {
            collect_free_idents(&entry.key, bound, out);
            collect_free_idents(&entry.value, bound, out);
        }
    }
}

fn register_helpers(ctx: &mut Context<'_, '_>) -> Result<(), cel::DeclarationError> {
    ctx.add_function("coalesce", coalesce)?;
    ctx.add_function("date", date)?;
    ctx.add_function("trim", trim)?;
    ctx.add_function("lower", lower)?;
    ctx.add_function("upper", upper)?;
    ctx.add_function("add_days", add_days)?;
    ctx.add_function("substring", substring)?;
    ctx.add_function("sum", sum)?;
    ctx.add_function("max", cel::functions::max)?;
    ctx.add_function("min", cel::functions::min)?;
    Ok(())
}

/// `sum(amounts)`: see the module documentation (exact decimals, text out).
fn sum(This(value): This<Value>) -> Result<Value, ExecutionError> {
    let fail = |m: String| ExecutionError::function_error("sum", m);
    let Value::List(items) = value else {
        return Err(fail(format!("expected a list of amounts, got {}", value.type_of())));
    };
    let mut total = rust_decimal::Decimal::ZERO;
    for item in items.iter() {
        let text = match item {
            Value::Null => continue,
            Value::Int(i) => i.to_string(),
            Value::UInt(u) => u.to_string(),
            Value::Float(f) if f.is_finite() => f.to_string(),
            Value::String(s) => s.trim().to_owned(),
            other => return Err(fail(format!("expected amounts (numbers or decimal text), got {}", other.type_of()))),
        };
        let amount: rust_decimal::Decimal = text.parse().map_err(|_| fail(format!("'{text}' is not an amount")))?;
        total = total.checked_add(amount).ok_or_else(|| fail("the total is out of range".into()))?;
    }
    Ok(Value::from(total.normalize().to_string()))
}

/// `s.substring(n)`: `s` from its `n`-th character (0-based) on — `"SF-006…".substring(3)` is the opportunity id
/// an invoice number names. Past the end gives ""; null stays null.
fn substring(This(value): This<Value>, start: i64) -> Result<Value, ExecutionError> {
    let start = usize::try_from(start)
        .map_err(|_| ExecutionError::function_error("substring", format!("the start must not be negative, got {start}")))?;
    string_helper("substring", &value, |s| Ok(s.chars().skip(start).collect()))
}

fn coalesce(Arguments(args): Arguments) -> Result<Value, ExecutionError> {
    if args.is_empty() {
        return Err(ExecutionError::function_error(
            "coalesce",
            "needs at least one argument",
        ));
    }
    Ok(args
        .iter()
        .find(|v| !matches!(v, Value::Null))
        .cloned()
        .unwrap_or(Value::Null))
}

/// Applies a string function, letting `null` through and rejecting anything else by name.
fn string_helper(
    name: &str,
    value: &Value,
    f: impl Fn(&str) -> Result<String, String>,
) -> Result<Value, ExecutionError> {
    match value {
        Value::Null => Ok(Value::Null),
        Value::String(s) => f(s)
            .map(Value::from)
            .map_err(|m| ExecutionError::function_error(name, m)),
        other => Err(ExecutionError::function_error(
            name,
            format!("expected a string, got {}", other.type_of()),
        )),
    }
}

// `This` is the receiver of a method call (`s.trim()`) or else the first argument (`trim(s)`).

fn date(This(value): This<Value>) -> Result<Value, ExecutionError> {
    string_helper("date", &value, |s| {
        let head = s.get(..10).unwrap_or(s);
        let rest = s.get(10..).unwrap_or("");
        let well_formed = head.len() == 10
            && chrono::NaiveDate::parse_from_str(head, "%Y-%m-%d").is_ok()
            && (rest.is_empty() || rest.starts_with('T') || rest.starts_with(' '));
        if well_formed {
            Ok(head.to_owned())
        } else {
            Err(format!(
                "expected a date (YYYY-MM-DD) or a datetime starting with one, got '{s}'"
            ))
        }
    })
}

/// Calendar arithmetic on dates only (no times, no zones): enough for a default date "n days after" another.
fn add_days(This(value): This<Value>, days: i64) -> Result<Value, ExecutionError> {
    string_helper("add_days", &value, |s| {
        let day = chrono::NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), "%Y-%m-%d")
            .map_err(|_| format!("expected a date (YYYY-MM-DD), got '{s}'"))?;
        day.checked_add_signed(chrono::Duration::days(days))
            .map(|d| d.format("%Y-%m-%d").to_string())
            .ok_or_else(|| format!("{days} days from {s} is out of range"))
    })
}

fn trim(This(value): This<Value>) -> Result<Value, ExecutionError> {
    string_helper("trim", &value, |s| Ok(s.trim().to_owned()))
}

fn lower(This(value): This<Value>) -> Result<Value, ExecutionError> {
    string_helper("lower", &value, |s| Ok(s.to_lowercase()))
}

fn upper(This(value): This<Value>) -> Result<Value, ExecutionError> {
    string_helper("upper", &value, |s| Ok(s.to_uppercase()))
}

/// JSON → CEL: objects become maps with string keys, arrays lists, integers `int` (`uint` when they do not fit
/// an `i64`), other numbers `double`.
///
/// Built directly in the form the interpreter holds a bound variable in. Why: binding a [`Value`] makes CEL copy
/// it again, map by map, into this form, so a run's records were converted twice on their way in.
pub fn json_to_val(value: &serde_json::Value) -> Box<dyn Val> {
    match value {
        serde_json::Value::Null => Box::new(CelNull),
        serde_json::Value::Bool(b) => Box::new(CelBool::from(*b)),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Box::new(CelInt::from(i))
            } else if let Some(u) = n.as_u64() {
                Box::new(CelUInt::from(u))
            } else {
                Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN)))
            }
        }
        serde_json::Value::String(s) => Box::new(CelString::from(s.clone())),
        serde_json::Value::Array(items) => Box::new(CelList::from(items.iter().map(json_to_val).collect::<Vec<_>>())),
        serde_json::Value::Object(map) => {
            let map: HashMap<CelMapKey, Box<dyn Val>> = map.iter().map(|(k, v)| (CelMapKey::from(k.clone()), json_to_val(v))).collect();
            Box::new(DefaultMap::from(map))
        }
    }
}

/// CEL → JSON: `int`/`uint` become integers, `double` numbers (non-finite ones are an error, JSON cannot hold
/// them), maps objects (non-string keys are written as their text), lists arrays; a timestamp becomes its
/// RFC 3339 text.
pub fn cel_to_json(value: &Value) -> Result<serde_json::Value, String> {
    Ok(match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::UInt(u) => serde_json::Value::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .ok_or_else(|| format!("the result {f} is not a finite number"))?,
        Value::String(s) => serde_json::Value::String(s.as_str().to_owned()),
        Value::List(items) => {
            serde_json::Value::Array(items.iter().map(cel_to_json).collect::<Result<_, _>>()?)
        }
        Value::Map(map) => {
            let mut object = serde_json::Map::new();
            let mut entries: Vec<_> = map.map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            for (key, v) in entries {
                let key = match key {
                    Key::String(s) => s.as_str().to_owned(),
                    other => other.to_string(),
                };
                object.insert(key, cel_to_json(v)?);
            }
            serde_json::Value::Object(object)
        }
        // Timestamps (when CEL's chrono support is on) and bytes have a JSON form in CEL itself; functions, types
        // and opaque values have none.
        other => other.json().map_err(|_| {
            format!(
                "the result has type {}, which has no JSON form",
                other.type_of()
            )
        })?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + Clone + fmt::Debug>() {}

    #[test]
    fn expr_is_shareable() {
        assert_send_sync::<Expr>();
    }

    #[test]
    fn free_variables_exclude_macro_bindings() {
        let e = Expr::compile(
            "lines.map(l, l.Id + record.x).filter(x, has(x.y)) + [params.a]",
            Pos::default(),
        )
        .unwrap();
        assert_eq!(e.variables(), vec!["lines", "record", "params"]);
    }

    fn eval(scope: &Scope, source: &str) -> serde_json::Value {
        Expr::compile(source, Pos::default()).unwrap().eval_in(scope).unwrap()
    }

    fn stale(scope: &Scope) -> Vec<String> {
        let mut names: Vec<String> = scope.cel.as_ref().unwrap().lock().unwrap().stale.iter().cloned().collect();
        names.sort();
        names
    }

    #[test]
    fn set_variables_are_converted_when_first_read_and_again_after_being_set_again() {
        let mut scope = Scope::new();
        scope.set("record", serde_json::json!({"Name": "Acme", "Amount": 1200}));
        scope.set("invoice", serde_json::json!({"Id": "7"}));
        assert_eq!(eval(&scope, "record.Name"), serde_json::json!("Acme"));
        // `invoice` was not read, so it was not converted.
        assert_eq!(stale(&scope), ["invoice"]);
        scope.set("record", serde_json::json!({"Name": "Beta", "Amount": 5}));
        assert_eq!(eval(&scope, "record.Name + '/' + invoice.Id"), serde_json::json!("Beta/7"));
        assert!(stale(&scope).is_empty());
        // A loop variable shadows a set one of the same name while pushed, and is read afresh each time.
        let shadowed = scope.push("record", serde_json::json!({"Name": "Loop"}));
        assert_eq!(eval(&scope, "record.Name"), serde_json::json!("Loop"));
        scope.pop("record", shadowed);
        assert_eq!(eval(&scope, "record.Name"), serde_json::json!("Beta"));
    }

    #[test]
    fn json_values_keep_their_types_through_cel() {
        let value = serde_json::json!({
            "int": -3, "big": 18446744073709551615u64, "double": 1.5, "text": "é", "null": null, "yes": true,
            "list": [1, "two", [3.25], {"four": 4}], "empty": {}
        });
        let mut scope = Scope::new();
        scope.set("v", value.clone());
        assert_eq!(eval(&scope, "v"), value);
        assert_eq!(eval(&scope, "type(v.int) == int && type(v.big) == uint && type(v.double) == double"), serde_json::json!(true));
        assert_eq!(Expr::compile("v.list[3].four", Pos::default()).unwrap().eval(scope.vars()).unwrap(), serde_json::json!(4));
    }
}
