//! The QuickBooks query language: lexer, recursive-descent parser and evaluator.
//!
//! Layout: [`lex`] turns the text into [`Token`]s with 1-based line/column positions; [`parse`] builds a
//! [`Query`] (`SELECT * | count(*) FROM Entity [WHERE c AND …] [ORDER BY …] [STARTPOSITION n] [MAXRESULTS n]`);
//! [`execute`] filters, sorts and pages rows and builds the `QueryResponse` object. Errors are [`QueryError`]s
//! whose text mimics QBO's JavaCC parser (`QueryParserError: Encountered … at line 1, column N.`), because
//! connectors and people debug against that wording.
//!
//! The language is deliberately as small as QBO's: conditions joined by AND only (OR is refused so code that
//! works here works against Intuit), `%` as the only LIKE wildcard, single-quoted strings with backslash escapes.

use std::cmp::Ordering;
use std::fmt;

use rust_decimal::Decimal;
use serde_json::{Map, Value};

use super::money::decimal_of;
use super::time::parse_instant;

/// Rows returned when the query names no MAXRESULTS.
pub const DEFAULT_MAX_RESULTS: usize = 100;
/// The most rows one query may return.
pub const MAX_MAX_RESULTS: usize = 1000;

/// A query the service cannot accept; `detail` is the fault Detail text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct QueryError {
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Star,
    Comma,
    LParen,
    RParen,
    Dot,
    Cmp(CmpOp),
    Eof,
}

/// A lexical token and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    tok: Tok,
    image: String,
    line: usize,
    column: usize,
}

impl Token {
    /// The JavaCC-style description used in error messages: `" <ID> "foo ""`, `" "from" "FROM ""`, `"<EOF>"`.
    fn describe(&self) -> String {
        match &self.tok {
            Tok::Eof => "\"<EOF>\"".to_string(),
            Tok::Ident(s) if KEYWORDS.contains(&s.to_ascii_lowercase().as_str()) => {
                format!("\" \"{}\" \"{} \"\"", s.to_ascii_lowercase(), self.image)
            }
            Tok::Ident(_) => format!("\" <ID> \"{} \"\"", self.image),
            Tok::Str(_) => format!("\" <STRING> \"{} \"\"", self.image),
            Tok::Num(_) => format!("\" <NUMBER> \"{} \"\"", self.image),
            _ => format!("\" \"{}\" \"{} \"\"", self.image, self.image),
        }
    }
}

const KEYWORDS: &[&str] = &[
    "select",
    "from",
    "where",
    "and",
    "or",
    "orderby",
    "order",
    "by",
    "asc",
    "desc",
    "startposition",
    "maxresults",
    "in",
    "like",
    "count",
    "true",
    "false",
];

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Lt,
    Gt,
    Le,
    Ge,
}

/// Splits `text` into tokens; the last one is always `Eof`.
pub fn lex(text: &str) -> Result<Vec<Token>, QueryError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line, mut column) = (0usize, 1usize, 1usize);
    while i < chars.len() {
        let c = chars[i];
        let (start_line, start_col, start) = (line, column, i);
        let advance = |n: usize, i: &mut usize, column: &mut usize| {
            *i += n;
            *column += n;
        };
        match c {
            '\n' => {
                i += 1;
                line += 1;
                column = 1;
                continue;
            }
            ' ' | '\t' | '\r' => {
                advance(1, &mut i, &mut column);
                continue;
            }
            '*' | ',' | '(' | ')' | '.' | '=' => {
                let tok = match c {
                    '*' => Tok::Star,
                    ',' => Tok::Comma,
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    '.' => Tok::Dot,
                    _ => Tok::Cmp(CmpOp::Eq),
                };
                advance(1, &mut i, &mut column);
                tokens.push(Token {
                    tok,
                    image: c.to_string(),
                    line: start_line,
                    column: start_col,
                });
            }
            '<' | '>' => {
                let with_eq = chars.get(i + 1) == Some(&'=');
                let op = match (c, with_eq) {
                    ('<', false) => CmpOp::Lt,
                    ('<', true) => CmpOp::Le,
                    ('>', false) => CmpOp::Gt,
                    _ => CmpOp::Ge,
                };
                let n = if with_eq { 2 } else { 1 };
                advance(n, &mut i, &mut column);
                let image: String = chars[start..i].iter().collect();
                tokens.push(Token {
                    tok: Tok::Cmp(op),
                    image,
                    line: start_line,
                    column: start_col,
                });
            }
            '\'' => {
                let mut value = String::new();
                let mut j = i + 1;
                let mut col = column + 1;
                let mut lin = line;
                let mut closed = false;
                while j < chars.len() {
                    match chars[j] {
                        '\\' if j + 1 < chars.len() => {
                            value.push(chars[j + 1]);
                            j += 2;
                            col += 2;
                        }
                        '\'' => {
                            closed = true;
                            j += 1;
                            col += 1;
                            break;
                        }
                        '\n' => {
                            value.push('\n');
                            j += 1;
                            lin += 1;
                            col = 1;
                        }
                        other => {
                            value.push(other);
                            j += 1;
                            col += 1;
                        }
                    }
                }
                if !closed {
                    return Err(QueryError {
                        detail: format!(
                            "QueryParserError: Encountered <EOF> inside the string literal that starts at line {start_line}, \
                             column {start_col}. Close it with ' (write \\' for an apostrophe inside it)."
                        ),
                    });
                }
                let image: String = chars[start..j].iter().collect();
                i = j;
                line = lin;
                column = col;
                tokens.push(Token {
                    tok: Tok::Str(value),
                    image,
                    line: start_line,
                    column: start_col,
                });
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let mut j = i + 1;
                while j < chars.len() && chars[j].is_ascii_digit() {
                    j += 1;
                }
                if j + 1 < chars.len() && chars[j] == '.' && chars[j + 1].is_ascii_digit() {
                    j += 1;
                    while j < chars.len() && chars[j].is_ascii_digit() {
                        j += 1;
                    }
                }
                let image: String = chars[start..j].iter().collect();
                advance(j - i, &mut i, &mut column);
                tokens.push(Token {
                    tok: Tok::Num(image.clone()),
                    image,
                    line: start_line,
                    column: start_col,
                });
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                let image: String = chars[start..j].iter().collect();
                advance(j - i, &mut i, &mut column);
                tokens.push(Token {
                    tok: Tok::Ident(image.clone()),
                    image,
                    line: start_line,
                    column: start_col,
                });
            }
            other => {
                let hint = if matches!(other, '\u{2018}' | '\u{2019}' | '\u{201C}' | '\u{201D}') {
                    " Typographic quotes are not string delimiters: use a straight ' and write \\' for an apostrophe."
                } else {
                    ""
                };
                return Err(QueryError {
                    detail: format!(
                        "QueryParserError: Encountered lexical error: illegal character \"{other}\" ({}) at line {line}, column {column}.{hint}",
                        other as u32
                    ),
                });
            }
        }
    }
    tokens.push(Token {
        tok: Tok::Eof,
        image: String::new(),
        line,
        column,
    });
    Ok(tokens)
}

/// What the query selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select {
    /// `*` (optionally followed by extra field names, which QBO ignores as well).
    All,
    /// `count(*)`.
    Count,
}

/// A literal on the right of a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(Decimal),
    Bool(bool),
}

/// The test a condition applies.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Cmp(CmpOp, Literal),
    In(Vec<Literal>),
    Like(String),
}

/// `path op value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub path: Vec<String>,
    pub test: Test,
}

/// One ORDER BY key.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderKey {
    pub path: Vec<String>,
    pub descending: bool,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub select: Select,
    pub entity: String,
    pub conditions: Vec<Condition>,
    pub order: Vec<OrderKey>,
    pub start_position: Option<i64>,
    pub max_results: Option<i64>,
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn error(&self, expecting: &[&str], note: &str) -> QueryError {
        let t = self.peek();
        let mut detail = format!(
            "QueryParserError: Encountered {} at line {}, column {}.\nWas expecting one of:\n",
            t.describe(),
            t.line,
            t.column
        );
        for e in expecting {
            detail.push_str("    ");
            detail.push_str(e);
            detail.push_str(" ...\n");
        }
        detail.push_str(note);
        QueryError {
            detail: detail.trim_end().to_string(),
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), QueryError> {
        if self.is_kw(kw) {
            self.next();
            Ok(())
        } else {
            Err(self.error(&[&format!("\"{}\"", kw.to_ascii_lowercase())], ""))
        }
    }

    fn expect(&mut self, tok: Tok, shown: &str) -> Result<(), QueryError> {
        if self.peek().tok == tok {
            self.next();
            Ok(())
        } else {
            Err(self.error(&[shown], ""))
        }
    }

    fn ident(&mut self) -> Result<String, QueryError> {
        match &self.peek().tok {
            Tok::Ident(s) => {
                let s = s.clone();
                self.next();
                Ok(s)
            }
            _ => Err(self.error(&["<ID>"], "")),
        }
    }

    fn path(&mut self) -> Result<Vec<String>, QueryError> {
        let mut path = vec![self.ident()?];
        while self.peek().tok == Tok::Dot {
            self.next();
            path.push(self.ident()?);
        }
        Ok(path)
    }

    fn literal(&mut self) -> Result<Literal, QueryError> {
        let lit = match &self.peek().tok {
            Tok::Str(s) => Literal::Str(s.clone()),
            Tok::Num(n) => Literal::Num(
                n.parse()
                    .map_err(|_| self.error(&["<NUMBER>"], "The number is out of range."))?,
            ),
            Tok::Ident(s) if s.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Tok::Ident(s) if s.eq_ignore_ascii_case("false") => Literal::Bool(false),
            _ => return Err(self.error(&["<STRING>", "<NUMBER>", "\"true\"", "\"false\""], "")),
        };
        self.next();
        Ok(lit)
    }

    fn integer(&mut self) -> Result<i64, QueryError> {
        match &self.peek().tok {
            Tok::Num(n) if !n.contains('.') => {
                let v = n
                    .parse()
                    .map_err(|_| self.error(&["<INTEGER>"], "The number is out of range."))?;
                self.next();
                Ok(v)
            }
            _ => Err(self.error(&["<INTEGER>"], "")),
        }
    }

    fn condition(&mut self) -> Result<Condition, QueryError> {
        let path = self.path()?;
        let test = match self.peek().tok.clone() {
            Tok::Cmp(op) => {
                self.next();
                Test::Cmp(op, self.literal()?)
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("in") => {
                self.next();
                self.expect(Tok::LParen, "\"(\"")?;
                let mut values = vec![self.literal()?];
                while self.peek().tok == Tok::Comma {
                    self.next();
                    values.push(self.literal()?);
                }
                self.expect(Tok::RParen, "\")\"")?;
                Test::In(values)
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("like") => {
                self.next();
                match self.literal()? {
                    Literal::Str(p) => Test::Like(p),
                    _ => {
                        self.pos -= 1;
                        return Err(self.error(&["<STRING>"], "LIKE takes a quoted pattern."));
                    }
                }
            }
            _ => {
                return Err(self.error(
                    &[
                        "\"=\"", "\"<\"", "\">\"", "\"<=\"", "\">=\"", "\"in\"", "\"like\"",
                        "\".\"",
                    ],
                    "",
                ));
            }
        };
        Ok(Condition { path, test })
    }

    fn query(&mut self) -> Result<Query, QueryError> {
        self.expect_kw("select")?;
        let select = if self.peek().tok == Tok::Star {
            self.next();
            while self.peek().tok == Tok::Comma {
                self.next();
                self.path()?;
            }
            Select::All
        } else if self.is_kw("count") {
            self.next();
            self.expect(Tok::LParen, "\"(\"")?;
            self.expect(Tok::Star, "\"*\"")?;
            self.expect(Tok::RParen, "\")\"")?;
            Select::Count
        } else if matches!(self.peek().tok, Tok::Ident(_)) && !self.is_kw("from") {
            self.path()?;
            while self.peek().tok == Tok::Comma {
                self.next();
                self.path()?;
            }
            Select::All
        } else {
            return Err(self.error(&["\"*\"", "\"count\"", "<ID>"], ""));
        };
        self.expect_kw("from")?;
        let entity = self.ident()?;
        let mut conditions = Vec::new();
        if self.is_kw("where") {
            self.next();
            conditions.push(self.condition()?);
            loop {
                if self.is_kw("and") {
                    self.next();
                    conditions.push(self.condition()?);
                } else if self.is_kw("or") {
                    return Err(self.error(
                        &["\"and\"", "\"orderby\"", "\"startposition\"", "\"maxresults\"", "<EOF>"],
                        "OR is not supported by the QuickBooks query language: use IN (…) or run separate queries.",
                    ));
                } else {
                    break;
                }
            }
        }
        let mut order = Vec::new();
        if self.is_kw("orderby") || self.is_kw("order") {
            if self.is_kw("order") {
                self.next();
                self.expect_kw("by")?;
            } else {
                self.next();
            }
            loop {
                let path = self.path()?;
                let descending = if self.is_kw("desc") {
                    self.next();
                    true
                } else {
                    if self.is_kw("asc") {
                        self.next();
                    }
                    false
                };
                order.push(OrderKey { path, descending });
                if self.peek().tok == Tok::Comma {
                    self.next();
                } else {
                    break;
                }
            }
        }
        let (mut start_position, mut max_results) = (None, None);
        loop {
            if start_position.is_none() && self.is_kw("startposition") {
                self.next();
                start_position = Some(self.integer()?);
            } else if max_results.is_none() && self.is_kw("maxresults") {
                self.next();
                max_results = Some(self.integer()?);
            } else {
                break;
            }
        }
        if self.peek().tok != Tok::Eof {
            let mut expecting = Vec::new();
            if order.is_empty() {
                expecting.push("\"orderby\"");
            }
            if start_position.is_none() {
                expecting.push("\"startposition\"");
            }
            if max_results.is_none() {
                expecting.push("\"maxresults\"");
            }
            expecting.push("<EOF>");
            let note = if self.is_kw("or") {
                "OR is not supported by the QuickBooks query language: use IN (…) or run separate queries."
            } else {
                ""
            };
            return Err(self.error(&expecting, note));
        }
        Ok(Query {
            select,
            entity,
            conditions,
            order,
            start_position,
            max_results,
        })
    }
}

/// Parses one query.
pub fn parse(text: &str) -> Result<Query, QueryError> {
    let tokens = lex(text)?;
    Parser { tokens, pos: 0 }.query()
}

/// The comparable value at `path` in `row`: key lookup ignores case; a reference object compares by its
/// `value`, an e-mail by its `Address`, a phone by its `FreeFormNumber`.
fn resolve<'a>(row: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut current = row;
    for segment in path {
        let obj = current.as_object()?;
        current = lookup(obj, segment)?;
    }
    if let Value::Object(obj) = current {
        for key in ["value", "Address", "FreeFormNumber"] {
            if let Some(v) = obj.get(key) {
                return Some(v);
            }
        }
        return None;
    }
    Some(current)
}

fn lookup<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn literal_value(lit: &Literal) -> Value {
    match lit {
        Literal::Str(s) => Value::String(s.clone()),
        Literal::Num(n) => Value::String(n.to_string()),
        Literal::Bool(b) => Value::Bool(*b),
    }
}

/// Orders two scalar values the way QBO compares them: numbers numerically (numeric strings such as Ids too),
/// dates and timestamps as instants, booleans, then text without regard to case.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    if let (Value::Bool(x), Value::Bool(y)) = (a, b) {
        return Some(x.cmp(y));
    }
    if let (Some(x), Some(y)) = (decimal_of(a), decimal_of(b)) {
        return Some(x.cmp(&y));
    }
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let (x, y) = (text(a)?, text(b)?);
    if let (Some(p), Some(q)) = (parse_instant(&x), parse_instant(&y)) {
        return Some(p.cmp(&q));
    }
    Some(x.to_lowercase().cmp(&y.to_lowercase()))
}

fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    // Classic wildcard matching with backtracking to the last `%`.
    let (mut ti, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '%' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '%' {
        pi += 1;
    }
    pi == p.len()
}

fn matches(row: &Value, cond: &Condition) -> bool {
    let Some(value) = resolve(row, &cond.path) else {
        return false;
    };
    if value.is_null() {
        return false;
    }
    match &cond.test {
        Test::Cmp(op, lit) => {
            let Some(ord) = compare(value, &literal_value(lit)) else {
                return false;
            };
            match op {
                CmpOp::Eq => ord == Ordering::Equal,
                CmpOp::Lt => ord == Ordering::Less,
                CmpOp::Gt => ord == Ordering::Greater,
                CmpOp::Le => ord != Ordering::Greater,
                CmpOp::Ge => ord != Ordering::Less,
            }
        }
        Test::In(lits) => lits
            .iter()
            .any(|l| compare(value, &literal_value(l)) == Some(Ordering::Equal)),
        Test::Like(pattern) => match value {
            Value::String(s) => like(s, pattern),
            Value::Number(n) => like(&n.to_string(), pattern),
            _ => false,
        },
    }
}

/// Runs `query` over `rows` (in id order) and returns the `QueryResponse` object. `entity` is the canonical
/// entity name used as the result key. `name_list` entities hide inactive rows unless the query filters on
/// `Active` itself, as QBO does.
pub fn execute<'a>(
    query: &Query,
    entity: &str,
    rows: impl Iterator<Item = &'a Value>,
    name_list: bool,
) -> Value {
    let mentions_active = query
        .conditions
        .iter()
        .any(|c| c.path.len() == 1 && c.path[0].eq_ignore_ascii_case("active"));
    let mut selected: Vec<&Value> = rows
        .filter(|row| {
            !name_list || mentions_active || row.get("Active") != Some(&Value::Bool(false))
        })
        .filter(|row| query.conditions.iter().all(|c| matches(row, c)))
        .collect();
    let mut response = Map::new();
    if query.select == Select::Count {
        response.insert("totalCount".into(), Value::from(selected.len()));
        return Value::Object(response);
    }
    if !query.order.is_empty() {
        selected.sort_by(|a, b| {
            for key in &query.order {
                let ord = match (resolve(a, &key.path), resolve(b, &key.path)) {
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) => Ordering::Less,
                    (Some(_), None) => Ordering::Greater,
                    (Some(x), Some(y)) => compare(x, y).unwrap_or(Ordering::Equal),
                };
                let ord = if key.descending { ord.reverse() } else { ord };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            Ordering::Equal
        });
    }
    let start = query.start_position.unwrap_or(1).max(1);
    let max = query
        .max_results
        .map(|m| m.clamp(1, MAX_MAX_RESULTS as i64) as usize)
        .unwrap_or(DEFAULT_MAX_RESULTS);
    let page: Vec<Value> = selected
        .into_iter()
        .skip((start - 1) as usize)
        .take(max)
        .cloned()
        .collect();
    if !page.is_empty() {
        let n = page.len();
        response.insert(entity.to_string(), Value::Array(page));
        response.insert("startPosition".into(), Value::from(start));
        response.insert("maxResults".into(), Value::from(n));
    }
    Value::Object(response)
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CmpOp::Eq => "=",
            CmpOp::Lt => "<",
            CmpOp::Gt => ">",
            CmpOp::Le => "<=",
            CmpOp::Ge => ">=",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(q: &str) -> String {
        parse(q).unwrap_err().detail
    }

    #[test]
    fn parses_the_full_grammar() {
        let q = parse(
            "select * from Customer where DisplayName = 'Adam\\'s' and Balance >= 10.5 and Active IN (true, false) \
             and CompanyName LIKE '%Bird%' ORDER BY MetaData.LastUpdatedTime DESC, Id StartPosition 11 MAXRESULTS 5",
        )
        .unwrap();
        assert_eq!(q.select, Select::All);
        assert_eq!(q.entity, "Customer");
        assert_eq!(q.conditions.len(), 4);
        assert_eq!(
            q.conditions[0].test,
            Test::Cmp(CmpOp::Eq, Literal::Str("Adam's".into()))
        );
        assert_eq!(
            q.conditions[1].test,
            Test::Cmp(CmpOp::Ge, Literal::Num("10.5".parse().unwrap()))
        );
        assert_eq!(
            q.conditions[2].test,
            Test::In(vec![Literal::Bool(true), Literal::Bool(false)])
        );
        assert_eq!(q.conditions[3].test, Test::Like("%Bird%".into()));
        assert_eq!(
            q.order[0].path,
            vec!["MetaData".to_string(), "LastUpdatedTime".to_string()]
        );
        assert!(q.order[0].descending);
        assert!(!q.order[1].descending);
        assert_eq!(q.start_position, Some(11));
        assert_eq!(q.max_results, Some(5));
    }

    #[test]
    fn accepts_count_orderby_and_projection_after_star() {
        assert_eq!(
            parse("SELECT COUNT(*) FROM Invoice").unwrap().select,
            Select::Count
        );
        let q = parse("select *, Sku from Item orderby Name maxresults 3 startposition 2").unwrap();
        assert_eq!(q.order.len(), 1);
        assert_eq!((q.start_position, q.max_results), (Some(2), Some(3)));
    }

    #[test]
    fn reports_position_of_unexpected_token() {
        let d = err("select * frm Customer");
        assert!(
            d.starts_with("QueryParserError: Encountered \" <ID> \"frm \"\" at line 1, column 10."),
            "{d}"
        );
        assert!(d.contains("\"from\""), "{d}");
        let d = err("select * from Customer\nwhere Id = ");
        assert!(d.contains("\"<EOF>\" at line 2, column 12"), "{d}");
    }

    #[test]
    fn refuses_or() {
        let d = err("select * from Customer where Id = '1' or Id = '2'");
        assert!(d.contains("\"or\" \"or \"\" at line 1, column 39"), "{d}");
        assert!(d.contains("OR is not supported"), "{d}");
    }

    #[test]
    fn typographic_apostrophe_is_a_lexical_error() {
        let d = err("select * from Customer where DisplayName = \u{2019}Amy\u{2019}");
        assert!(
            d.starts_with("QueryParserError: Encountered lexical error"),
            "{d}"
        );
        assert!(d.contains("line 1, column 44"), "{d}");
        // Inside a proper string it is just a character.
        assert!(parse("select * from Customer where DisplayName = 'Amy\u{2019}s'").is_ok());
    }

    #[test]
    fn unterminated_string_and_trailing_garbage_fail() {
        assert!(err("select * from Customer where DisplayName = 'Amy").contains("string literal"));
        assert!(
            err("select * from Customer maxresults 5 junk")
                .contains("\" <ID> \"junk \"\" at line 1, column 37")
        );
        assert!(err("select * from Customer maxresults 1.5").contains("<INTEGER>"));
        assert!(err("select from Customer").contains("column 8"));
    }

    fn rows() -> Vec<Value> {
        vec![
            json!({"Id":"1","DisplayName":"Amy's Bird","Balance":10.0,"Active":true,"PrimaryEmailAddr":{"Address":"a@x.com"},"MetaData":{"LastUpdatedTime":"2024-01-02T10:00:00-07:00"}}),
            json!({"Id":"2","DisplayName":"bill's","Balance":250.5,"Active":true,"MetaData":{"LastUpdatedTime":"2024-03-02T10:00:00-07:00"}}),
            json!({"Id":"10","DisplayName":"Cool Cars","Balance":0,"Active":false,"CustomerRef":{"value":"2"},"MetaData":{"LastUpdatedTime":"2024-02-02T10:00:00-07:00"}}),
        ]
    }

    fn ids(q: &str, name_list: bool) -> Vec<String> {
        let rows = rows();
        let out = execute(&parse(q).unwrap(), "Customer", rows.iter(), name_list);
        out.get("Customer")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|r| r["Id"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn evaluates_conditions() {
        assert_eq!(
            ids(
                "select * from Customer where DisplayName = 'AMY\\'S BIRD'",
                true
            ),
            ["1"]
        );
        assert_eq!(
            ids("select * from Customer where Balance > '5'", false),
            ["1", "2"]
        );
        assert_eq!(ids("select * from Customer where Id > '2'", false), ["10"]);
        assert_eq!(
            ids(
                "select * from Customer where PrimaryEmailAddr = 'a@x.com'",
                false
            ),
            ["1"]
        );
        assert_eq!(
            ids("select * from Customer where CustomerRef = '2'", false),
            ["10"]
        );
        assert_eq!(
            ids(
                "select * from Customer where DisplayName like '%\\'s%'",
                false
            ),
            ["1", "2"]
        );
        assert_eq!(
            ids("select * from Customer where DisplayName like 'c%s'", false),
            ["10"]
        );
        assert_eq!(
            ids("select * from Customer where Id in ('1', '10')", false),
            ["1", "10"]
        );
        assert_eq!(
            ids(
                "select * from Customer where MetaData.LastUpdatedTime >= '2024-02-01'",
                false
            ),
            ["2", "10"]
        );
        assert_eq!(ids("select * from Customer", true), ["1", "2"]);
        assert_eq!(
            ids("select * from Customer where Active = false", true),
            ["10"]
        );
        assert_eq!(
            ids("select * from Customer where Nope = 'x'", false),
            Vec::<String>::new()
        );
    }

    #[test]
    fn orders_and_pages() {
        assert_eq!(
            ids("select * from Customer orderby Balance desc", false),
            ["2", "1", "10"]
        );
        assert_eq!(
            ids("select * from Customer order by DisplayName", false),
            ["1", "2", "10"]
        );
        assert_eq!(
            ids(
                "select * from Customer orderby MetaData.LastUpdatedTime startposition 2 maxresults 1",
                false
            ),
            ["10"]
        );
        let rows = rows();
        let out = execute(
            &parse("select * from Customer startposition 3").unwrap(),
            "Customer",
            rows.iter(),
            false,
        );
        assert_eq!(out["startPosition"], 3);
        assert_eq!(out["maxResults"], 1);
        let none = execute(
            &parse("select * from Customer where Id = '99'").unwrap(),
            "Customer",
            rows.iter(),
            false,
        );
        assert_eq!(none, json!({}));
        let count = execute(
            &parse("select count(*) from Customer maxresults 1").unwrap(),
            "Customer",
            rows.iter(),
            true,
        );
        assert_eq!(count, json!({"totalCount": 2}));
    }

    #[test]
    fn like_matcher() {
        assert!(like("Amy's Bird Sanctuary", "%bird%"));
        assert!(like("abc", "a%c"));
        assert!(like("abc", "%"));
        assert!(!like("abc", "a%d"));
        assert!(like("aXbXc", "a%b%c"));
        assert!(!like("abc", "ab"));
    }
}
