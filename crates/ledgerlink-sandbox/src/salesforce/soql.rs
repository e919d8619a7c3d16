//! The SOQL subset the connectors and the usual client libraries send.
//!
//! Layout: a hand-written [`lex`]er (tokens with their character positions), a recursive-descent [`parse`]r that
//! builds a [`Query`] (select list with child subqueries, FROM, WHERE tree, ORDER BY, LIMIT, OFFSET), a resolver
//! which checks every field path against the org's schema and every literal against its field's type (a child
//! subquery's FROM names one of the parent's child relationships, e.g. `OpportunityLineItems`), and [`run`] which
//! filters, orders and renders records, each parent row carrying its children as a nested
//! `{totalSize, done, records}` (or null when it has none). Errors carry Salesforce's `ERROR at Row:r:Column:c` pointer so a bad query is easy to fix.
//!
//! A query costs what it returns rather than the size of its object: a WHERE that pins `Id` or a lookup field to
//! a few values (`OpportunityId IN (…)`) reads its candidates from the id map or the org's lookup index
//! ([`narrowed`]), child subqueries read their rows from the same index, and a text `IN` list is a hash set. The
//! full WHERE still decides every row, so the answers are those of a scan.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use ledgerlink_model::SalesforceId;
use rust_decimal::Decimal;

use super::error::SfError;
use super::objects::{FieldDef, FieldType, ObjectDef};
use super::records::{Out, OutRecord, attributes};
use super::state::{Org, Record, fold_case};
use super::value::{FieldValue, parse_date, parse_datetime, parse_decimal};

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Ident(String),
    Str(String),
    Num(Decimal),
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
    Comma,
    LParen,
    RParen,
    Dot,
    Colon,
    Op(&'static str),
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    /// Character offset in the query.
    pub pos: usize,
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Ident(s) => s.clone(),
        Tok::Str(s) => format!("'{s}'"),
        Tok::Num(n) => n.to_string(),
        Tok::Date(d) => d.to_string(),
        Tok::DateTime(t) => t.to_rfc3339(),
        Tok::Comma => ",".into(),
        Tok::LParen => "(".into(),
        Tok::RParen => ")".into(),
        Tok::Dot => ".".into(),
        Tok::Colon => ":".into(),
        Tok::Op(o) => (*o).into(),
        Tok::Eof => "<EOF>".into(),
    }
}

/// Builds a SOQL error in Salesforce's shape: the query line, a caret, the row and column, then the detail.
pub fn query_error(query: &str, pos: usize, code: &str, detail: &str) -> SfError {
    let mut row = 1;
    let mut col = 1;
    let mut line_start = 0;
    for (i, c) in query.chars().enumerate() {
        if i == pos {
            break;
        }
        if c == '\n' {
            row += 1;
            col = 1;
            line_start = i + 1;
        } else {
            col += 1;
        }
    }
    let line: String = query
        .chars()
        .skip(line_start)
        .take_while(|c| *c != '\n')
        .collect();
    let caret = format!("{}^", " ".repeat(col - 1));
    SfError::bad_request(
        code,
        format!("\n{line}\n{caret}\nERROR at Row:{row}:Column:{col}\n{detail}"),
    )
}

/// Splits a query into tokens.
pub fn lex(query: &str) -> Result<Vec<Token>, SfError> {
    let chars: Vec<char> = query.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let malformed = |pos: usize, detail: &str| query_error(query, pos, "MALFORMED_QUERY", detail);
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let tok = match c {
            ',' => {
                i += 1;
                Tok::Comma
            }
            '(' => {
                i += 1;
                Tok::LParen
            }
            ')' => {
                i += 1;
                Tok::RParen
            }
            '.' => {
                i += 1;
                Tok::Dot
            }
            ':' => {
                i += 1;
                Tok::Colon
            }
            '=' => {
                i += 1;
                Tok::Op("=")
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                i += 2;
                Tok::Op("!=")
            }
            '<' => match chars.get(i + 1) {
                Some('=') => {
                    i += 2;
                    Tok::Op("<=")
                }
                Some('>') => {
                    i += 2;
                    Tok::Op("!=")
                }
                _ => {
                    i += 1;
                    Tok::Op("<")
                }
            },
            '>' => {
                if chars.get(i + 1) == Some(&'=') {
                    i += 2;
                    Tok::Op(">=")
                } else {
                    i += 1;
                    Tok::Op(">")
                }
            }
            '\'' => {
                i += 1;
                let mut s = String::new();
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(malformed(
                                start,
                                "unterminated string literal: expected a closing '",
                            ));
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => {
                            let escaped = chars.get(i + 1).copied();
                            match escaped {
                                Some('\'') => s.push('\''),
                                Some('"') => s.push('"'),
                                Some('\\') => s.push_str("\\\\"),
                                Some('n') => s.push('\n'),
                                Some('r') => s.push('\r'),
                                Some('t') => s.push('\t'),
                                Some('b') => s.push('\u{8}'),
                                Some('f') => s.push('\u{c}'),
                                // Kept escaped: they only mean something to LIKE, which unescapes them itself.
                                Some('%') => s.push_str("\\%"),
                                Some('_') => s.push_str("\\_"),
                                _ => {
                                    return Err(malformed(
                                        i,
                                        "invalid escape sequence: expected one of \\' \\\" \\\\ \\n \\r \\t \\b \\f \\% \\_",
                                    ));
                                }
                            }
                            i += 2;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                Tok::Str(s)
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
                || (c == '+' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || matches!(chars[i], '-' | ':' | '.' | '+'))
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                if text.len() >= 10 && text.as_bytes().get(4) == Some(&b'-') {
                    if let Some(d) = parse_date(&text) {
                        Tok::Date(d)
                    } else if let Some(t) = parse_datetime(&text) {
                        Tok::DateTime(t)
                    } else {
                        return Err(malformed(
                            start,
                            &format!(
                                "invalid date or datetime literal '{text}': expected YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ"
                            ),
                        ));
                    }
                } else if text
                    .chars()
                    .skip(1)
                    .all(|ch| ch.is_ascii_digit() || ch == '.')
                    && text.matches('.').count() <= 1
                    && !text.ends_with('.')
                {
                    Tok::Num(
                        parse_decimal(text.trim_start_matches('+'))
                            .map_err(|e| malformed(start, &e))?,
                    )
                } else {
                    return Err(malformed(start, &format!("invalid number '{text}'")));
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                Tok::Ident(chars[start..i].iter().collect())
            }
            other => return Err(malformed(start, &format!("unexpected character '{other}'"))),
        };
        out.push(Token { tok, pos: start });
    }
    out.push(Token {
        tok: Tok::Eof,
        pos: chars.len(),
    });
    Ok(out)
}

/// A dotted field path as written, with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub segments: Vec<String>,
    pub pos: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(Decimal),
    Bool(bool),
    Null,
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
    /// `TODAY`, `LAST_N_DAYS:30`, …
    DateRange {
        name: String,
        n: Option<i64>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub lit: Literal,
    pub pos: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
    Cmp {
        path: Path,
        op: &'static str,
        value: Value,
    },
    Like {
        path: Path,
        pattern: Value,
    },
    In {
        path: Path,
        values: Vec<Value>,
        negated: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderItem {
    pub path: Path,
    pub descending: bool,
    pub nulls_last: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SelectItem {
    Field(Path),
    Count,
    /// `(SELECT … FROM ChildRelationship …)`; `pos` is where the relationship name stands.
    SubQuery(Box<Query>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub select: Vec<SelectItem>,
    pub object: String,
    pub object_pos: usize,
    pub filter: Option<Cond>,
    pub order: Vec<OrderItem>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

struct Parser<'q> {
    query: &'q str,
    toks: Vec<Token>,
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.toks[self.at.min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.at < self.toks.len() - 1 {
            self.at += 1;
        }
        t
    }

    fn unexpected(&self, expected: &str) -> SfError {
        let t = self.peek();
        query_error(
            self.query,
            t.pos,
            "MALFORMED_QUERY",
            &format!(
                "unexpected token: '{}' (expected {expected})",
                describe(&t.tok)
            ),
        )
    }

    fn is_keyword(&self, kw: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        if self.is_keyword(kw) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, kw: &str) -> Result<(), SfError> {
        if self.eat_keyword(kw) {
            Ok(())
        } else {
            Err(self.unexpected(kw))
        }
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<(), SfError> {
        if self.peek().tok == tok {
            self.next();
            Ok(())
        } else {
            Err(self.unexpected(what))
        }
    }

    fn ident(&mut self, what: &str) -> Result<(String, usize), SfError> {
        match &self.peek().tok {
            Tok::Ident(s) => {
                let s = s.clone();
                let pos = self.next().pos;
                Ok((s, pos))
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn path(&mut self, what: &str) -> Result<Path, SfError> {
        let (first, pos) = self.ident(what)?;
        let mut segments = vec![first];
        while self.peek().tok == Tok::Dot {
            self.next();
            segments.push(self.ident("a field name after '.'")?.0);
        }
        Ok(Path { segments, pos })
    }

    fn query(&mut self, nested: bool) -> Result<Query, SfError> {
        self.expect_keyword("SELECT")?;
        let mut select = Vec::new();
        loop {
            if self.is_keyword("COUNT")
                && self
                    .toks
                    .get(self.at + 1)
                    .is_some_and(|t| t.tok == Tok::LParen)
            {
                self.next();
                self.next();
                self.expect(
                    Tok::RParen,
                    "')' (only COUNT() without a field is supported)",
                )?;
                select.push(SelectItem::Count);
            } else if self.is_keyword("FROM") {
                return Err(self.unexpected("a field name"));
            } else {
                if self.peek().tok == Tok::LParen {
                    if nested {
                        return Err(self.unexpected("a field name (subqueries can't be nested)"));
                    }
                    self.next();
                    let sub = self.query(true)?;
                    self.expect(Tok::RParen, "')' to close the subquery")?;
                    select.push(SelectItem::SubQuery(Box::new(sub)));
                } else {
                    select.push(SelectItem::Field(self.path("a field name")?));
                }
            }
            if self.peek().tok == Tok::Comma {
                self.next();
            } else {
                break;
            }
        }
        if select.contains(&SelectItem::Count) && select.len() > 1 {
            return Err(query_error(
                self.query,
                0,
                "MALFORMED_QUERY",
                "COUNT() must be the only element in the SELECT list",
            ));
        }
        if !self.is_keyword("FROM") {
            return Err(self.unexpected("FROM or ','"));
        }
        self.next();
        let (object, object_pos) = self.ident("an object name after FROM")?;
        let mut filter = None;
        if self.eat_keyword("WHERE") {
            filter = Some(self.or_cond()?);
        }
        let mut order = Vec::new();
        if self.eat_keyword("ORDER") {
            self.expect_keyword("BY")?;
            loop {
                let path = self.path("a field name to order by")?;
                let descending = if self.eat_keyword("DESC") {
                    true
                } else {
                    self.eat_keyword("ASC");
                    false
                };
                let mut nulls_last = descending;
                if self.eat_keyword("NULLS") {
                    if self.eat_keyword("FIRST") {
                        nulls_last = false;
                    } else if self.eat_keyword("LAST") {
                        nulls_last = true;
                    } else {
                        return Err(self.unexpected("FIRST or LAST after NULLS"));
                    }
                }
                order.push(OrderItem {
                    path,
                    descending,
                    nulls_last,
                });
                if self.peek().tok == Tok::Comma {
                    self.next();
                } else {
                    break;
                }
            }
        }
        let mut limit = None;
        if self.eat_keyword("LIMIT") {
            limit = Some(self.count("a number after LIMIT")?);
        }
        let mut offset = None;
        if self.eat_keyword("OFFSET") {
            offset = Some(self.count("a number after OFFSET")?);
        }
        let end = if nested { Tok::RParen } else { Tok::Eof };
        if self.peek().tok != end {
            let expected = match (filter.is_some(), order.is_empty(), limit.is_some()) {
                (false, true, false) => "WHERE, ORDER BY, LIMIT, OFFSET or the end of the query",
                (_, true, false) => "AND, OR, ORDER BY, LIMIT, OFFSET or the end of the query",
                (_, false, false) => "',', LIMIT, OFFSET or the end of the query",
                _ => "OFFSET or the end of the query",
            };
            return Err(self.unexpected(expected));
        }
        Ok(Query {
            select,
            object,
            object_pos,
            filter,
            order,
            limit,
            offset,
        })
    }

    fn count(&mut self, what: &str) -> Result<usize, SfError> {
        match &self.peek().tok {
            Tok::Num(n) if n.fract().is_zero() && !n.is_sign_negative() => {
                let v = usize::try_from(n.mantissa()).map_err(|_| self.unexpected(what))?;
                self.next();
                Ok(v)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    /// `a OR b OR …`; AND and OR can't be mixed at one level without parentheses, as in Salesforce.
    fn or_cond(&mut self) -> Result<Cond, SfError> {
        let first = self.not_cond()?;
        let joiner = if self.is_keyword("AND") {
            "AND"
        } else if self.is_keyword("OR") {
            "OR"
        } else {
            return Ok(first);
        };
        let mut parts = vec![first];
        loop {
            if self.eat_keyword(joiner) {
                parts.push(self.not_cond()?);
            } else if self.is_keyword(if joiner == "AND" { "OR" } else { "AND" }) {
                let t = self.peek();
                return Err(query_error(
                    self.query,
                    t.pos,
                    "MALFORMED_QUERY",
                    &format!(
                        "unexpected token: '{}' (AND and OR can't be mixed without parentheses)",
                        describe(&t.tok)
                    ),
                ));
            } else {
                break;
            }
        }
        Ok(if joiner == "AND" {
            Cond::And(parts)
        } else {
            Cond::Or(parts)
        })
    }

    fn not_cond(&mut self) -> Result<Cond, SfError> {
        if self.eat_keyword("NOT") {
            return Ok(Cond::Not(Box::new(self.not_cond()?)));
        }
        if self.peek().tok == Tok::LParen {
            self.next();
            let inner = self.or_cond()?;
            self.expect(Tok::RParen, "')'")?;
            return Ok(inner);
        }
        let path = self.path("a field name or '(' in the condition")?;
        if self.eat_keyword("LIKE") {
            let pattern = self.value()?;
            return Ok(Cond::Like { path, pattern });
        }
        let negated = if self.is_keyword("NOT")
            && self
                .toks
                .get(self.at + 1)
                .is_some_and(|t| matches!(&t.tok, Tok::Ident(s) if s.eq_ignore_ascii_case("IN")))
        {
            self.next();
            true
        } else {
            false
        };
        if self.eat_keyword("IN") {
            self.expect(Tok::LParen, "'(' after IN")?;
            let mut values = vec![self.value()?];
            while self.peek().tok == Tok::Comma {
                self.next();
                values.push(self.value()?);
            }
            self.expect(Tok::RParen, "',' or ')' in the IN list")?;
            return Ok(Cond::In {
                path,
                values,
                negated,
            });
        }
        let op = match self.peek().tok {
            Tok::Op(op) => op,
            _ => {
                return Err(self
                    .unexpected("a comparison operator (=, !=, <, <=, >, >=, LIKE, IN, NOT IN)"));
            }
        };
        self.next();
        let value = self.value()?;
        Ok(Cond::Cmp { path, op, value })
    }

    fn value(&mut self) -> Result<Value, SfError> {
        let t = self.peek().clone();
        let lit =
            match &t.tok {
                Tok::Str(s) => Literal::Str(s.clone()),
                Tok::Num(n) => Literal::Num(*n),
                Tok::Date(d) => Literal::Date(*d),
                Tok::DateTime(d) => Literal::DateTime(*d),
                Tok::Ident(s) if s.eq_ignore_ascii_case("true") => Literal::Bool(true),
                Tok::Ident(s) if s.eq_ignore_ascii_case("false") => Literal::Bool(false),
                Tok::Ident(s) if s.eq_ignore_ascii_case("null") => Literal::Null,
                Tok::Ident(s) if DATE_LITERALS.iter().any(|d| d.eq_ignore_ascii_case(s)) => {
                    let name = s.to_ascii_uppercase();
                    self.next();
                    let n = if takes_n(&name) {
                        self.expect(Tok::Colon, &format!("':' and a number after {name}"))?;
                        Some(self.count(&format!("a number after {name}:"))? as i64)
                    } else {
                        None
                    };
                    return Ok(Value {
                        lit: Literal::DateRange { name, n },
                        pos: t.pos,
                    });
                }
                _ => return Err(self.unexpected(
                    "a value: 'string', number, true, false, null, date, datetime or date literal",
                )),
            };
        self.next();
        Ok(Value { lit, pos: t.pos })
    }
}

const DATE_LITERALS: &[&str] = &[
    "TODAY",
    "YESTERDAY",
    "TOMORROW",
    "LAST_WEEK",
    "THIS_WEEK",
    "NEXT_WEEK",
    "LAST_MONTH",
    "THIS_MONTH",
    "NEXT_MONTH",
    "LAST_90_DAYS",
    "NEXT_90_DAYS",
    "THIS_QUARTER",
    "LAST_QUARTER",
    "NEXT_QUARTER",
    "THIS_YEAR",
    "LAST_YEAR",
    "NEXT_YEAR",
    "LAST_N_DAYS",
    "NEXT_N_DAYS",
    "N_DAYS_AGO",
    "LAST_N_WEEKS",
    "NEXT_N_WEEKS",
    "N_WEEKS_AGO",
    "LAST_N_MONTHS",
    "NEXT_N_MONTHS",
    "N_MONTHS_AGO",
    "LAST_N_QUARTERS",
    "NEXT_N_QUARTERS",
    "LAST_N_YEARS",
    "NEXT_N_YEARS",
    "N_YEARS_AGO",
];

/// Whether a date literal takes `:n`.
fn takes_n(name: &str) -> bool {
    name.contains("_N_") || name.starts_with("N_")
}

/// Parses a query (syntax only; field names are checked by [`resolve`]).
pub fn parse(query: &str) -> Result<Query, SfError> {
    let toks = lex(query)?;
    Parser { query, toks, at: 0 }.query(false)
}

/// One relationship hop of a resolved path.
#[derive(Debug, Clone)]
struct Hop {
    relationship: String,
    ref_field: String,
    target: ObjectDef,
}

#[derive(Debug, Clone)]
struct Resolved {
    hops: Vec<Hop>,
    field: FieldDef,
}

#[derive(Debug, Clone)]
enum RCond {
    And(Vec<RCond>),
    Or(Vec<RCond>),
    Not(Box<RCond>),
    Cmp {
        path: Resolved,
        op: &'static str,
        lit: Literal,
    },
    Like {
        path: Resolved,
        regex: Vec<LikePart>,
    },
    In {
        path: Resolved,
        lits: Vec<Literal>,
        negated: bool,
        /// The quoted values case-folded, for a text field: membership is then one hash lookup per row, which
        /// answers as comparing with each value in turn would (text compares case-insensitively; a null value
        /// and a `null` in the list never match).
        folded: Option<HashSet<String>>,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum LikePart {
    Lit(char),
    One,
    Any,
}

fn resolve_path(
    query: &str,
    org: &Org,
    root: &ObjectDef,
    path: &Path,
) -> Result<Resolved, SfError> {
    let mut segments: &[String] = &path.segments;
    if segments.len() > 1
        && segments[0].eq_ignore_ascii_case(root.name)
        && root.relationship(&segments[0]).is_none()
    {
        segments = &segments[1..];
    }
    let mut current = root.clone();
    let mut hops = Vec::new();
    for seg in &segments[..segments.len() - 1] {
        let Some(rf) = current.relationship(seg) else {
            return Err(query_error(
                query,
                path.pos,
                "INVALID_FIELD",
                &format!(
                    "Didn't understand relationship '{seg}' in field path. If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name."
                ),
            ));
        };
        let FieldType::Reference(targets) = &rf.ty else {
            unreachable!("relationship fields are references")
        };
        let target = org.def(&targets[0]).ok_or_else(|| {
            query_error(
                query,
                path.pos,
                "INVALID_FIELD",
                &format!("unknown relationship target {}", targets[0]),
            )
        })?;
        hops.push(Hop {
            relationship: rf.relationship_name().unwrap_or_default(),
            ref_field: rf.name.clone(),
            target: target.clone(),
        });
        current = target;
    }
    let last = &segments[segments.len() - 1];
    let field = current.field(last).cloned().ok_or_else(|| {
        query_error(
            query,
            path.pos,
            "INVALID_FIELD",
            &format!(
                "No such column '{last}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
                current.name
            ),
        )
    })?;
    Ok(Resolved { hops, field })
}

fn check_literal(
    query: &str,
    field: &FieldDef,
    op: &str,
    value: &Value,
) -> Result<Literal, SfError> {
    let mismatch = |expected: &str| {
        query_error(
            query,
            value.pos,
            "INVALID_FIELD",
            &format!(
                "value of filter criterion for field '{}' must be of type {expected} and should not be enclosed in quotes",
                field.name
            ),
        )
    };
    let lit = value.lit.clone();
    if lit == Literal::Null {
        return if op == "=" || op == "!=" {
            Ok(lit)
        } else {
            Err(query_error(
                query,
                value.pos,
                "MALFORMED_QUERY",
                &format!("null can only be compared with = or !=, not {op}"),
            ))
        };
    }
    let ty = &field.ty;
    match (ty, &lit) {
        (FieldType::Id | FieldType::Reference(_), Literal::Str(s)) => Ok(Literal::Str(
            SalesforceId::parse(s)
                .map(|id| id.to_string())
                .unwrap_or_else(|_| s.clone()),
        )),
        (t, Literal::Str(_)) if t.is_textual() => Ok(lit),
        (t, _) if t.is_textual() => Err(query_error(
            query,
            value.pos,
            "INVALID_FIELD",
            &format!(
                "value of filter criterion for field '{}' must be of type {} and should be enclosed in quotes",
                field.name,
                t.name()
            ),
        )),
        (t, Literal::Num(_)) if t.is_numeric() => Ok(lit),
        (t, _) if t.is_numeric() => Err(mismatch("double")),
        (FieldType::Boolean, Literal::Bool(_)) => Ok(lit),
        (FieldType::Boolean, _) => Err(mismatch("boolean")),
        (FieldType::Date, Literal::Date(_) | Literal::DateRange { .. }) => Ok(lit),
        (FieldType::Date, _) => Err(mismatch("date")),
        (FieldType::DateTime, Literal::DateTime(_) | Literal::DateRange { .. }) => Ok(lit),
        (FieldType::DateTime, _) => Err(mismatch("dateTime")),
        _ => Err(mismatch(ty.name())),
    }
}

fn like_pattern(p: &str) -> Vec<LikePart> {
    let mut out = Vec::new();
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(LikePart::Lit(n));
                }
            }
            '%' => out.push(LikePart::Any),
            '_' => out.push(LikePart::One),
            c => out.push(LikePart::Lit(c)),
        }
    }
    out
}

fn like_matches(pattern: &[LikePart], text: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((LikePart::Any, rest)) => (0..=text.len()).any(|i| like_matches(rest, &text[i..])),
        Some((LikePart::One, rest)) => !text.is_empty() && like_matches(rest, &text[1..]),
        Some((LikePart::Lit(c), rest)) => {
            text.first()
                .is_some_and(|t| t.to_lowercase().eq(c.to_lowercase()))
                && like_matches(rest, &text[1..])
        }
    }
}

/// Removes the LIKE-only escapes (`\%`, `\_`, `\\`) for a plain comparison.
fn unescape(s: &str) -> String {
    s.replace("\\%", "%")
        .replace("\\_", "_")
        .replace("\\\\", "\\")
}

fn resolve_cond(query: &str, org: &Org, root: &ObjectDef, cond: &Cond) -> Result<RCond, SfError> {
    Ok(match cond {
        Cond::And(parts) => RCond::And(
            parts
                .iter()
                .map(|c| resolve_cond(query, org, root, c))
                .collect::<Result<_, _>>()?,
        ),
        Cond::Or(parts) => RCond::Or(
            parts
                .iter()
                .map(|c| resolve_cond(query, org, root, c))
                .collect::<Result<_, _>>()?,
        ),
        Cond::Not(c) => RCond::Not(Box::new(resolve_cond(query, org, root, c)?)),
        Cond::Cmp { path, op, value } => {
            let path = resolve_path(query, org, root, path)?;
            let mut lit = check_literal(query, &path.field, op, value)?;
            if let Literal::Str(s) = &lit {
                lit = Literal::Str(unescape(s));
            }
            RCond::Cmp { path, op, lit }
        }
        Cond::Like { path, pattern } => {
            let path = resolve_path(query, org, root, path)?;
            let Literal::Str(p) = &pattern.lit else {
                return Err(query_error(
                    query,
                    pattern.pos,
                    "MALFORMED_QUERY",
                    "LIKE needs a 'quoted pattern'",
                ));
            };
            if !path.field.ty.is_textual() {
                return Err(query_error(
                    query,
                    pattern.pos,
                    "INVALID_FIELD",
                    &format!(
                        "invalid operator on {} field: {}",
                        path.field.ty.name(),
                        path.field.name
                    ),
                ));
            }
            RCond::Like {
                path,
                regex: like_pattern(p),
            }
        }
        Cond::In {
            path,
            values,
            negated,
        } => {
            let path = resolve_path(query, org, root, path)?;
            let mut lits = Vec::new();
            for v in values {
                let lit = check_literal(query, &path.field, "=", v)?;
                lits.push(if let Literal::Str(s) = lit {
                    Literal::Str(unescape(&s))
                } else {
                    lit
                });
            }
            let folded = path.field.ty.is_textual().then(|| folded_strings(&lits));
            RCond::In {
                path,
                lits,
                negated: *negated,
                folded,
            }
        }
    })
}

fn folded_strings(lits: &[Literal]) -> HashSet<String> {
    lits.iter()
        .filter_map(|l| match l {
            Literal::Str(s) => Some(fold_case(s).into_owned()),
            _ => None,
        })
        .collect()
}

/// The value a resolved path has on a record (null when a lookup on the way is empty).
fn path_value(org: &Org, rec: &Record, path: &Resolved) -> FieldValue {
    let mut current = rec;
    for hop in &path.hops {
        let Some(id) = current.get(&hop.ref_field).and_then(FieldValue::as_str) else {
            return FieldValue::Null;
        };
        // A polymorphic lookup (Task.WhatId) may point at any of its targets: the id's prefix says which.
        let Some(next) = org
            .get(hop.target.name, id)
            .or_else(|| org.find_any(id).map(|(_, r)| r))
        else {
            return FieldValue::Null;
        };
        current = next;
    }
    current.get(&path.field.name).cloned().unwrap_or_default()
}

/// A stored value as ORDER BY compares it: dates and times parsed, text lower-cased (SOQL orders text
/// case-insensitively).
enum SortKey {
    Null,
    Num(Decimal),
    Bool(bool),
    Time(Option<DateTime<Utc>>),
    Text(String),
}

impl SortKey {
    fn of(ty: &FieldType, value: FieldValue) -> SortKey {
        match value {
            FieldValue::Null => SortKey::Null,
            FieldValue::Num(n) => SortKey::Num(n),
            FieldValue::Bool(b) => SortKey::Bool(b),
            FieldValue::Text(t) if *ty == FieldType::DateTime => SortKey::Time(parse_datetime(&t)),
            FieldValue::Text(t) => SortKey::Text(t.to_lowercase()),
        }
    }

    /// Orders two non-null keys of one field; keys of different kinds are equal.
    fn cmp_value(&self, other: &SortKey) -> Ordering {
        match (self, other) {
            (SortKey::Num(x), SortKey::Num(y)) => x.cmp(y),
            (SortKey::Bool(x), SortKey::Bool(y)) => x.cmp(y),
            (SortKey::Time(x), SortKey::Time(y)) => x.cmp(y),
            (SortKey::Text(x), SortKey::Text(y)) => x.cmp(y),
            _ => Ordering::Equal,
        }
    }
}

/// The first day of the month `k` months from the one `d` is in.
fn month_start(d: NaiveDate, k: i64) -> NaiveDate {
    let index = i64::from(d.year()) * 12 + i64::from(d.month0()) + k;
    let (year, month0) = (index.div_euclid(12), index.rem_euclid(12));
    NaiveDate::from_ymd_opt(year as i32, month0 as u32 + 1, 1).unwrap_or(d)
}

/// The half-open day range `[start, end)` a date literal covers (UTC days; weeks start on Sunday, quarters are
/// calendar quarters, as in an org with the default locale and fiscal year).
fn date_range(name: &str, n: Option<i64>, now: DateTime<Utc>) -> (NaiveDate, NaiveDate) {
    let today = now.date_naive();
    let n = n.unwrap_or(0);
    let day = |k: i64| today + Duration::days(k);
    let week = today - Duration::days(i64::from(today.weekday().num_days_from_sunday()));
    let weeks = |k: i64| week + Duration::weeks(k);
    let month = |k: i64| month_start(today, k);
    let q0 = month_start(today, -i64::from(today.month0() % 3));
    let quarter = |k: i64| month_start(q0, 3 * k);
    let year = |k: i64| month_start(today, -i64::from(today.month0()) + 12 * k);
    match name {
        "TODAY" => (today, day(1)),
        "YESTERDAY" => (day(-1), today),
        "TOMORROW" => (day(1), day(2)),
        "LAST_WEEK" => (weeks(-1), weeks(0)),
        "THIS_WEEK" => (weeks(0), weeks(1)),
        "NEXT_WEEK" => (weeks(1), weeks(2)),
        "LAST_MONTH" => (month(-1), month(0)),
        "NEXT_MONTH" => (month(1), month(2)),
        "LAST_90_DAYS" => (day(-90), day(1)),
        "NEXT_90_DAYS" => (day(1), day(91)),
        "THIS_QUARTER" => (quarter(0), quarter(1)),
        "LAST_QUARTER" => (quarter(-1), quarter(0)),
        "NEXT_QUARTER" => (quarter(1), quarter(2)),
        "THIS_YEAR" => (year(0), year(1)),
        "LAST_YEAR" => (year(-1), year(0)),
        "NEXT_YEAR" => (year(1), year(2)),
        "LAST_N_DAYS" => (day(-n), day(1)),
        "NEXT_N_DAYS" => (day(1), day(n + 1)),
        "N_DAYS_AGO" => (day(-n), day(-n + 1)),
        "LAST_N_WEEKS" => (weeks(-n), weeks(0)),
        "NEXT_N_WEEKS" => (weeks(1), weeks(n + 1)),
        "N_WEEKS_AGO" => (weeks(-n), weeks(-n + 1)),
        "LAST_N_MONTHS" => (month(-n), month(0)),
        "NEXT_N_MONTHS" => (month(1), month(n + 1)),
        "N_MONTHS_AGO" => (month(-n), month(-n + 1)),
        "LAST_N_QUARTERS" => (quarter(-n), quarter(0)),
        "NEXT_N_QUARTERS" => (quarter(1), quarter(n + 1)),
        "LAST_N_YEARS" => (year(-n), year(0)),
        "NEXT_N_YEARS" => (year(1), year(n + 1)),
        "N_YEARS_AGO" => (year(-n), year(-n + 1)),
        _ => (month(0), month(1)),
    }
}

fn compare(ty: &FieldType, v: &FieldValue, op: &str, lit: &Literal, now: DateTime<Utc>) -> bool {
    if *lit == Literal::Null {
        return (op == "=") == v.is_null();
    }
    if v.is_null() {
        return op == "!=";
    }
    let ord = match (lit, v) {
        (Literal::DateRange { name, n }, _) => {
            let (start, end) = date_range(name, *n, now);
            let key = match (ty, v) {
                (FieldType::DateTime, FieldValue::Text(t)) => {
                    parse_datetime(t).map(|t| t.date_naive())
                }
                (_, FieldValue::Text(t)) => parse_date(t),
                _ => None,
            };
            let Some(key) = key else { return false };
            let inside = key >= start && key < end;
            return match op {
                "=" => inside,
                "!=" => !inside,
                "<" => key < start,
                "<=" => key < end,
                ">" => key >= end,
                ">=" => key >= start,
                _ => false,
            };
        }
        (Literal::Str(s), FieldValue::Text(t)) => t.to_lowercase().cmp(&s.to_lowercase()),
        (Literal::Num(n), FieldValue::Num(d)) => d.cmp(n),
        (Literal::Bool(b), FieldValue::Bool(x)) => x.cmp(b),
        (Literal::Date(d), FieldValue::Text(t)) => match parse_date(t) {
            Some(x) => x.cmp(d),
            None => return false,
        },
        (Literal::DateTime(d), FieldValue::Text(t)) => match parse_datetime(t) {
            Some(x) => x.cmp(d),
            None => return false,
        },
        _ => return false,
    };
    match op {
        "=" => ord == Ordering::Equal,
        "!=" => ord != Ordering::Equal,
        "<" => ord == Ordering::Less,
        "<=" => ord != Ordering::Greater,
        ">" => ord == Ordering::Greater,
        ">=" => ord != Ordering::Less,
        _ => false,
    }
}

fn eval(org: &Org, rec: &Record, cond: &RCond, now: DateTime<Utc>) -> bool {
    match cond {
        RCond::And(parts) => parts.iter().all(|c| eval(org, rec, c, now)),
        RCond::Or(parts) => parts.iter().any(|c| eval(org, rec, c, now)),
        RCond::Not(c) => !eval(org, rec, c, now),
        RCond::Cmp { path, op, lit } => {
            compare(&path.field.ty, &path_value(org, rec, path), op, lit, now)
        }
        RCond::Like { path, regex } => match path_value(org, rec, path) {
            FieldValue::Text(t) => like_matches(regex, &t.chars().collect::<Vec<_>>()),
            _ => false,
        },
        RCond::In {
            path,
            lits,
            negated,
            folded,
        } => {
            let v = path_value(org, rec, path);
            let hit = match (folded, &v) {
                (Some(set), FieldValue::Text(t)) => set.contains(fold_case(t).as_ref()),
                (Some(_), _) => false,
                (None, _) => {
                    !v.is_null()
                        && lits
                            .iter()
                            .any(|l| compare(&path.field.ty, &v, "=", l, now))
                }
            };
            if *negated { !hit } else { hit }
        }
    }
}

/// The rows of a query (or only the count for `COUNT()`).
#[derive(Debug)]
pub struct QueryResult {
    pub total_size: usize,
    pub rows: Vec<OutRecord>,
}

fn insert_path(
    org: &Org,
    out: &mut Vec<(String, Out)>,
    rec: Option<&Record>,
    hops: &[Hop],
    field: &FieldDef,
    version: &str,
) {
    let Some((hop, rest)) = hops.split_first() else {
        if !out.iter().any(|(k, _)| *k == field.name) {
            let v = rec
                .and_then(|r| r.get(&field.name))
                .cloned()
                .unwrap_or_default();
            out.push((field.name.clone(), Out::Value(v)));
        }
        return;
    };
    let parent_ref = rec
        .and_then(|r| r.get(&hop.ref_field))
        .and_then(FieldValue::as_str);
    let (parent_type, parent) = match parent_ref.and_then(|id| org.find_any(id)) {
        Some((t, r)) => (t, Some(r)),
        None => (hop.target.name, None),
    };
    let slot = match out.iter().position(|(k, _)| *k == hop.relationship) {
        Some(i) => i,
        None => {
            let value = parent.map(|p| {
                let id = p.get("Id").and_then(FieldValue::as_str).unwrap_or_default();
                OutRecord(vec![attributes(version, parent_type, id)])
            });
            out.push((hop.relationship.clone(), Out::Parent(value)));
            out.len() - 1
        }
    };
    if let Out::Parent(Some(sub)) = &mut out[slot].1 {
        insert_path(org, &mut sub.0, parent, rest, field, version);
    }
}

/// A query checked against the schema, ready to run over any set of candidate records.
struct Plan {
    def: ObjectDef,
    fields: Vec<Resolved>,
    children: Vec<ChildPlan>,
    /// The select list in the order written: a field or a child subquery.
    order_of_items: Vec<PlanItem>,
    filter: Option<RCond>,
    order: Vec<(Resolved, OrderItem)>,
    limit: Option<usize>,
    offset: Option<usize>,
    count: bool,
}

enum PlanItem {
    Field(usize),
    Child(usize),
}

struct ChildPlan {
    relationship: &'static str,
    /// The lookup on the child that points at the parent.
    field: &'static str,
    plan: Plan,
}

fn plan(query: &str, org: &Org, def: ObjectDef, q: &Query) -> Result<Plan, SfError> {
    let mut fields: Vec<Resolved> = Vec::new();
    let mut keys: Vec<(Vec<String>, String)> = Vec::new();
    let mut children = Vec::new();
    let mut items = Vec::new();
    for item in &q.select {
        match item {
            SelectItem::Field(p) => {
                let r = resolve_path(query, org, &def, p)?;
                let key = (
                    r.hops
                        .iter()
                        .map(|h| h.relationship.clone())
                        .collect::<Vec<_>>(),
                    r.field.name.clone(),
                );
                if keys.contains(&key) {
                    return Err(query_error(
                        query,
                        p.pos,
                        "MALFORMED_QUERY",
                        &format!("duplicate field selected: {}", p.segments.join(".")),
                    ));
                }
                keys.push(key);
                items.push(PlanItem::Field(fields.len()));
                fields.push(r);
            }
            SelectItem::SubQuery(sub) => {
                let found = super::objects::child_relationships(def.name)
                    .find(|(_, _, rel)| rel.eq_ignore_ascii_case(&sub.object));
                let Some((child, field, relationship)) = found else {
                    return Err(query_error(
                        query,
                        sub.object_pos,
                        "INVALID_TYPE",
                        &format!(
                            "Didn't understand relationship '{}' in FROM part of query call. If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name. {} has these child relationships: {}",
                            sub.object,
                            def.name,
                            super::objects::child_relationships(def.name)
                                .map(|c| c.2)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                };
                if children
                    .iter()
                    .any(|c: &ChildPlan| c.relationship == relationship)
                {
                    return Err(query_error(
                        query,
                        sub.object_pos,
                        "MALFORMED_QUERY",
                        &format!("duplicate subquery on {relationship}"),
                    ));
                }
                if sub.select.contains(&SelectItem::Count) {
                    return Err(query_error(
                        query,
                        sub.object_pos,
                        "MALFORMED_QUERY",
                        "COUNT() can't be used in a subquery",
                    ));
                }
                let child_def = org.def(child).ok_or_else(SfError::not_found)?;
                let child_plan = plan(query, org, child_def, sub)?;
                items.push(PlanItem::Child(children.len()));
                children.push(ChildPlan {
                    relationship,
                    field,
                    plan: child_plan,
                });
            }
            SelectItem::Count => {}
        }
    }
    let filter = q
        .filter
        .as_ref()
        .map(|c| resolve_cond(query, org, &def, c))
        .transpose()?;
    let order = q
        .order
        .iter()
        .map(|o| resolve_path(query, org, &def, &o.path).map(|r| (r, o.clone())))
        .collect::<Result<_, _>>()?;
    Ok(Plan {
        def,
        fields,
        children,
        order_of_items: items,
        filter,
        order,
        limit: q.limit,
        offset: q.offset,
        count: q.select.contains(&SelectItem::Count),
    })
}

/// Filters, orders and pages candidate records.
fn select_rows<'a>(
    org: &Org,
    plan: &Plan,
    candidates: impl Iterator<Item = &'a Record>,
    now: DateTime<Utc>,
) -> Vec<&'a Record> {
    let mut rows: Vec<&Record> = candidates
        .filter(|r| plan.filter.as_ref().is_none_or(|f| eval(org, r, f, now)))
        .collect();
    if !plan.order.is_empty() {
        // Each row's ORDER BY values are read and made comparable once (dates parsed, text lower-cased), not at
        // each of the n·log n comparisons: a poll's `ORDER BY SystemModstamp` over a large object otherwise spent
        // most of its time parsing the same timestamps again.
        let mut keyed: Vec<(Vec<SortKey>, &Record)> = rows
            .into_iter()
            .map(|r| (plan.order.iter().map(|(path, _)| SortKey::of(&path.field.ty, path_value(org, r, path))).collect(), r))
            .collect();
        keyed.sort_by(|(a, _), (b, _)| {
            for ((ka, kb), (_, item)) in a.iter().zip(b).zip(&plan.order) {
                let ord = match (ka, kb) {
                    (SortKey::Null, SortKey::Null) => Ordering::Equal,
                    (SortKey::Null, _) => {
                        if item.nulls_last {
                            Ordering::Greater
                        } else {
                            Ordering::Less
                        }
                    }
                    (_, SortKey::Null) => {
                        if item.nulls_last {
                            Ordering::Less
                        } else {
                            Ordering::Greater
                        }
                    }
                    _ => {
                        let o = ka.cmp_value(kb);
                        if item.descending { o.reverse() } else { o }
                    }
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            Ordering::Equal
        });
        rows = keyed.into_iter().map(|(_, r)| r).collect();
    }
    rows.into_iter()
        .skip(plan.offset.unwrap_or(0))
        .take(plan.limit.unwrap_or(usize::MAX))
        .collect()
}

fn render_row(
    org: &Org,
    plan: &Plan,
    rec: &Record,
    all_rows: bool,
    now: DateTime<Utc>,
    version: &str,
) -> OutRecord {
    let id = rec
        .get("Id")
        .and_then(FieldValue::as_str)
        .unwrap_or_default();
    let mut out = vec![attributes(version, plan.def.name, id)];
    for item in &plan.order_of_items {
        match item {
            PlanItem::Field(i) => {
                let r = &plan.fields[*i];
                insert_path(org, &mut out, Some(rec), &r.hops, &r.field, version);
            }
            PlanItem::Child(i) => {
                let child = &plan.children[*i];
                let candidates = org
                    .records
                    .referencing(child.plan.def.name, child.field, id)
                    .into_iter()
                    .filter(|r| all_rows || !Org::is_deleted(r));
                let rows: Vec<OutRecord> = select_rows(org, &child.plan, candidates, now)
                    .into_iter()
                    .map(|r| render_row(org, &child.plan, r, all_rows, now, version))
                    .collect();
                let value = if rows.is_empty() {
                    Out::Children(None)
                } else {
                    Out::Children(Some(rows))
                };
                out.push((child.relationship.to_string(), value));
            }
        }
    }
    OutRecord(out)
}

/// The only records a WHERE can match, in creation order as a scan meets them, when one of its top-level
/// conjuncts pins `Id` or a reference field to quoted values (`=` or `IN`); the smallest such set wins. `None`
/// when nothing narrows (no WHERE, an OR at the top, a field reached through a relationship, `!=`, `NOT IN`, a
/// comparison with null), and every record of the object is a candidate.
fn narrowed<'o>(org: &'o Org, object: &str, filter: Option<&RCond>) -> Option<Vec<&'o Record>> {
    let conjuncts = match filter? {
        RCond::And(parts) => parts.as_slice(),
        single => std::slice::from_ref(single),
    };
    conjuncts
        .iter()
        .filter_map(|c| pinned(org, object, c))
        .min_by_key(BTreeMap::len)
        .map(|found| found.into_values().collect())
}

/// The records one conjunct can match, keyed (and so ordered) by id, or `None` when it does not pin its field.
fn pinned<'o>(org: &'o Org, object: &str, cond: &RCond) -> Option<BTreeMap<&'o str, &'o Record>> {
    let (path, values): (&Resolved, Vec<&str>) = match cond {
        RCond::Cmp {
            path,
            op: "=",
            lit: Literal::Str(s),
        } => (path, vec![s.as_str()]),
        // `null` in the list matches nothing, so only the quoted values can.
        RCond::In {
            path,
            lits,
            negated: false,
            ..
        } => (
            path,
            lits.iter()
                .filter_map(|l| match l {
                    Literal::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect(),
        ),
        _ => return None,
    };
    if !path.hops.is_empty() {
        return None;
    }
    let mut found = BTreeMap::new();
    match path.field.ty {
        FieldType::Id => {
            for value in values {
                let hit =
                    id_with_case(&fold_case(value)).and_then(|id| org.records.entry(object, &id));
                if let Some((id, rec)) = hit {
                    found.insert(id, rec);
                }
            }
        }
        FieldType::Reference(_) => {
            for value in values {
                for id in org.records.holders(object, &path.field.name, value)? {
                    if let Some((id, rec)) = org.records.entry(object, id) {
                        found.insert(id, rec);
                    }
                }
            }
        }
        _ => return None,
    }
    Some(found)
}

/// The one id whose case-folded form is `folded`: an 18-character id's last three characters record which of
/// its first fifteen are upper case, so SOQL's case-insensitive `Id = '…'` can be answered by one map lookup.
/// `None` when no id the org issues folds to this text.
fn id_with_case(folded: &str) -> Option<String> {
    const CASE_BITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let bytes = folded.as_bytes();
    if bytes.len() != 18 || !folded.is_ascii() {
        return None;
    }
    let mut out = bytes.to_vec();
    for block in 0..3 {
        let check = bytes[15 + block].to_ascii_uppercase();
        let bits = CASE_BITS.iter().position(|c| *c == check)?;
        out[15 + block] = check;
        for i in 0..5 {
            if bits & (1 << i) != 0 {
                out[block * 5 + i].make_ascii_uppercase();
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Parses, checks and runs a query. `all_rows` is `queryAll` (deleted records included).
pub fn run(
    org: &Org,
    query: &str,
    all_rows: bool,
    now: DateTime<Utc>,
    version: &str,
) -> Result<QueryResult, SfError> {
    let q = parse(query)?;
    let def = org.def(&q.object).ok_or_else(|| {
        query_error(
            query,
            q.object_pos,
            "INVALID_TYPE",
            &format!("sObject type '{}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name.", q.object),
        )
    })?;
    let plan = plan(query, org, def, &q)?;
    let few = narrowed(org, plan.def.name, plan.filter.as_ref());
    let candidates: Box<dyn Iterator<Item = &Record>> = match &few {
        Some(few) => Box::new(few.iter().copied()),
        None => Box::new(org.all(plan.def.name)),
    };
    let live = candidates.filter(|r| all_rows || !Org::is_deleted(r));
    let picked = select_rows(org, &plan, live, now);
    if plan.count {
        return Ok(QueryResult {
            total_size: picked.len(),
            rows: Vec::new(),
        });
    }
    let rendered: Vec<OutRecord> = picked
        .iter()
        .map(|rec| render_row(org, &plan, rec, all_rows, now, version))
        .collect();
    Ok(QueryResult {
        total_size: rendered.len(),
        rows: rendered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexes_strings_with_escapes_numbers_and_datetimes() {
        let toks = lex(r"Name = 'O\'Brien' AND Amount >= -12.50 AND SystemModstamp > 2024-01-15T10:30:00.000+0000").unwrap();
        let kinds: Vec<Tok> = toks.into_iter().map(|t| t.tok).collect();
        assert_eq!(kinds[2], Tok::Str("O'Brien".into()));
        assert_eq!(kinds[6], Tok::Num(Decimal::new(-1250, 2)));
        assert_eq!(
            kinds[10],
            Tok::DateTime(parse_datetime("2024-01-15T10:30:00Z").unwrap())
        );
        assert_eq!(
            lex("CloseDate < 2024-02-01").unwrap()[2].tok,
            Tok::Date(NaiveDate::from_ymd_opt(2024, 2, 1).unwrap())
        );
    }

    #[test]
    fn parses_the_full_grammar() {
        let q = parse(
            "select Id, Account.Name from Opportunity where (StageName = 'Closed Won' or Amount > 100) and not Name like 'X%' \
             and Id not in ('a', 'b') order by CloseDate desc nulls first, Name limit 10 offset 5",
        )
        .unwrap();
        assert_eq!(q.object, "Opportunity");
        assert_eq!(q.select.len(), 2);
        assert_eq!(q.limit, Some(10));
        assert_eq!(q.offset, Some(5));
        assert!(q.order[0].descending && !q.order[0].nulls_last);
        assert!(!q.order[1].descending && !q.order[1].nulls_last);
        let Some(Cond::And(parts)) = q.filter else {
            panic!("expected AND")
        };
        assert_eq!(parts.len(), 3);
        assert!(matches!(parts[0], Cond::Or(_)));
        assert!(matches!(parts[1], Cond::Not(_)));
        assert!(matches!(parts[2], Cond::In { negated: true, .. }));
    }

    #[test]
    fn count_and_date_literals() {
        let q = parse("SELECT COUNT() FROM Account WHERE CreatedDate = LAST_N_DAYS:30").unwrap();
        assert_eq!(q.select, vec![SelectItem::Count]);
        let Some(Cond::Cmp { value, .. }) = q.filter else {
            panic!()
        };
        assert_eq!(
            value.lit,
            Literal::DateRange {
                name: "LAST_N_DAYS".into(),
                n: Some(30)
            }
        );
    }

    #[test]
    fn syntax_errors_say_what_was_expected_where() {
        let e = parse("SELECT Id Name FROM Account").unwrap_err();
        assert_eq!(e.code(), "MALFORMED_QUERY");
        let msg = &e.errors[0].message;
        assert!(
            msg.contains("Row:1:Column:11") && msg.contains("expected FROM"),
            "{msg}"
        );
        let e = parse("SELECT Id FROM Account WHERE").unwrap_err();
        assert!(
            e.errors[0].message.contains("<EOF>"),
            "{}",
            e.errors[0].message
        );
        let e = parse("SELECT Id FROM Account WHERE A = 1 AND B = 2 OR C = 3").unwrap_err();
        assert!(e.errors[0].message.contains("can't be mixed"));
        let e = parse("SELECT Id FROM Account WHERE Name = 'open").unwrap_err();
        assert!(e.errors[0].message.contains("unterminated"));
        let e = parse("SELECT Id FROM Account LIMIT ten").unwrap_err();
        assert!(e.errors[0].message.contains("a number after LIMIT"));
    }

    #[test]
    fn like_is_case_insensitive_with_wildcards_and_escapes() {
        let text: Vec<char> = "O'Brien Logistics".chars().collect();
        assert!(like_matches(&like_pattern("o'brien%"), &text));
        assert!(like_matches(&like_pattern("%LOGISTIC_"), &text));
        assert!(!like_matches(&like_pattern("%Freight%"), &text));
        let pct: Vec<char> = "100% done".chars().collect();
        assert!(like_matches(&like_pattern("100\\% %"), &pct));
        assert!(!like_matches(
            &like_pattern("100\\%"),
            &"1000".chars().collect::<Vec<_>>()
        ));
    }

    #[test]
    fn a_folded_id_names_the_one_id_it_came_from() {
        let mut org = Org::empty();
        for seq in [1, 61, 62 * 36 + 11, 62u64.pow(5) + 3_721, 62u64.pow(8) * 61] {
            org.next_seq = seq;
            let id = org.new_id("006");
            assert_eq!(
                id_with_case(&id.to_lowercase()).as_deref(),
                Some(id.as_str())
            );
            assert_eq!(
                id_with_case(&fold_case(&id.to_uppercase())).as_deref(),
                Some(id.as_str())
            );
        }
        assert_eq!(id_with_case("006hs0000000001"), None, "15 characters");
        assert_eq!(
            id_with_case("006hs000000000199a"),
            None,
            "a check character no id has"
        );
        assert_eq!(id_with_case("006hs000000000\u{e9}1aa"), None);
    }

    fn text_in(org: &Org, field: &str, lits: Vec<Literal>, negated: bool) -> [RCond; 2] {
        let def = org.def("Account").unwrap();
        let path = Resolved {
            hops: Vec::new(),
            field: def.field(field).unwrap().clone(),
        };
        let with_set = RCond::In {
            path: path.clone(),
            folded: Some(folded_strings(&lits)),
            lits: lits.clone(),
            negated,
        };
        let one_by_one = RCond::In {
            path,
            lits,
            negated,
            folded: None,
        };
        [with_set, one_by_one]
    }

    #[test]
    fn a_text_in_list_answers_as_comparing_each_value_would() {
        let org = Org::empty();
        let now = parse_datetime("2024-03-10T12:00:00Z").unwrap();
        let lits = vec![
            Literal::Str("acme".into()),
            Literal::Str("ÄRGER GmbH".into()),
            Literal::Str("\u{212a}elvin".into()),
            Literal::Null,
            Literal::Str("acme".into()),
        ];
        let values = [
            FieldValue::text("ACME"),
            FieldValue::text("Acme "),
            FieldValue::text("ärger gmbh"),
            FieldValue::text("KELVIN"),
            FieldValue::text("kelvin"),
            FieldValue::Null,
            FieldValue::Num(Decimal::ONE),
            FieldValue::Bool(true),
        ];
        let mut hits = [0, 0];
        for negated in [false, true] {
            let [with_set, one_by_one] = text_in(&org, "Name", lits.clone(), negated);
            for v in &values {
                let mut rec = Record::new();
                rec.insert("Name".into(), v.clone());
                let expected = eval(&org, &rec, &one_by_one, now);
                assert_eq!(
                    eval(&org, &rec, &with_set, now),
                    expected,
                    "{v:?} negated={negated}"
                );
                hits[usize::from(negated)] += usize::from(expected);
            }
        }
        assert_eq!(
            hits,
            [4, 4],
            "ACME, ärger gmbh, KELVIN and kelvin are in the list; the rest are not"
        );
        let [with_set, _] = text_in(&org, "Name", vec![Literal::Null], false);
        let mut rec = Record::new();
        rec.insert("Name".into(), FieldValue::Null);
        assert!(!eval(&org, &rec, &with_set, now), "null is in no list");
    }

    /// Runs a query as written and again with `OR Id = null` at the top, which no row meets but which leaves
    /// nothing to narrow on, and checks both answer alike.
    fn assert_answers_like_a_scan(org: &Org, object: &str, filter: &str, all_rows: bool) -> usize {
        let now = parse_datetime("2030-01-01T00:00:00Z").unwrap();
        let select = "Id, Name, (SELECT Id FROM Contacts)";
        let select = if object == "Account" { select } else { "Id" };
        let pinned = format!("SELECT {select} FROM {object} WHERE {filter}");
        let scanned = format!("SELECT {select} FROM {object} WHERE ({filter}) OR Id = null");
        let a = run(org, &pinned, all_rows, now, "v59.0").unwrap();
        let b = run(org, &scanned, all_rows, now, "v59.0").unwrap();
        assert_eq!(a.rows, b.rows, "{pinned}");
        assert_eq!(a.total_size, b.total_size, "{pinned}");
        a.total_size
    }

    #[test]
    fn narrowed_queries_answer_as_a_scan_over_the_sample_org() {
        use crate::salesforce::records::{self, Ctx};
        use crate::salesforce::value::JsonIn;
        let now = parse_datetime("2024-03-10T12:00:00Z").unwrap();
        let mut org = crate::salesforce::seed::new_org(now, true);
        let ctx = Ctx {
            now,
            user_id: org.api_user_id.clone(),
        };
        let ids = |org: &Org, object: &str| -> Vec<String> {
            org.all(object)
                .filter_map(|r| r.get("Id").and_then(FieldValue::as_str).map(str::to_string))
                .collect()
        };
        let accounts = ids(&org, "Account");
        let contacts = ids(&org, "Contact");
        let opps = ids(&org, "Opportunity");
        // Move one contact, delete another and an opportunity, and undo a write, so the index has followed
        // every kind of change.
        let to = |a: &str| vec![("AccountId".to_string(), JsonIn::Str(a.to_string()))];
        records::update(&mut org, &ctx, "Contact", &contacts[0], to(&accounts[3])).unwrap();
        records::delete(&mut org, &ctx, "Contact", &contacts[1]).unwrap();
        records::delete(&mut org, &ctx, "Opportunity", &opps[0]).unwrap();
        let undo = org.begin_undo();
        records::update(&mut org, &ctx, "Contact", &contacts[2], to(&accounts[4])).unwrap();
        org.roll_back(undo);

        let list = |ids: &[String]| {
            ids.iter()
                .map(|i| format!("'{}'", i.to_lowercase()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let some_accounts = list(&accounts[..5]);
        let some_opps = list(&opps[..4]);
        let mut seen = 0;
        for all_rows in [false, true] {
            for (object, filter) in [
                ("Contact", format!("AccountId IN ({some_accounts})")),
                ("Contact", format!("AccountId = '{}'", &accounts[3][..15])),
                (
                    "Contact",
                    format!(
                        "AccountId IN ({some_accounts}) AND Id IN ({})",
                        list(&contacts)
                    ),
                ),
                (
                    "Contact",
                    format!("Id IN ({}) AND LastName != 'x'", list(&contacts[..4])),
                ),
                ("Contact", format!("AccountId NOT IN ({some_accounts})")),
                ("Account", format!("Id IN ({some_accounts})")),
                (
                    "Account",
                    format!("Id = '{}' AND Name LIKE '%'", accounts[2]),
                ),
                (
                    "OpportunityLineItem",
                    format!("OpportunityId IN ({some_opps})"),
                ),
                (
                    "OpportunityLineItem",
                    format!(
                        "OpportunityId IN ({some_opps}) AND Opportunity.AccountId IN ({some_accounts})"
                    ),
                ),
                (
                    "Opportunity",
                    format!("AccountId IN ({some_accounts}) OR Id IN ({some_opps})"),
                ),
                (
                    "Opportunity",
                    format!("Pricebook2Id != null AND AccountId = '{}'", accounts[0]),
                ),
            ] {
                seen += assert_answers_like_a_scan(&org, object, &filter, all_rows);
            }
        }
        assert!(seen > 20, "the queries found rows to compare ({seen})");
    }

    #[test]
    fn nulls_and_date_ranges_compare_like_soql() {
        let now = parse_datetime("2024-03-10T12:00:00Z").unwrap();
        let t = FieldType::DateTime;
        let v = FieldValue::text("2024-03-09T08:00:00.000+0000");
        let yesterday = Literal::DateRange {
            name: "YESTERDAY".into(),
            n: None,
        };
        assert!(compare(&t, &v, "=", &yesterday, now));
        assert!(compare(
            &t,
            &v,
            "<",
            &Literal::DateRange {
                name: "TODAY".into(),
                n: None
            },
            now
        ));
        assert!(compare(
            &t,
            &v,
            "=",
            &Literal::DateRange {
                name: "LAST_N_DAYS".into(),
                n: Some(7)
            },
            now
        ));
        assert!(compare(
            &FieldType::Text,
            &FieldValue::Null,
            "=",
            &Literal::Null,
            now
        ));
        assert!(compare(
            &FieldType::Text,
            &FieldValue::Null,
            "!=",
            &Literal::Str("x".into()),
            now
        ));
        assert!(!compare(
            &FieldType::Currency,
            &FieldValue::Null,
            ">",
            &Literal::Num(Decimal::ZERO),
            now
        ));
        assert!(compare(
            &FieldType::Text,
            &FieldValue::text("ACME"),
            "=",
            &Literal::Str("acme".into()),
            now
        ));
    }
}
