//! The QuickBooks query language: building statements with every value escaped.
//!
//! QBO's SQL dialect has `SELECT * FROM Entity [WHERE a op v AND …] [ORDERBY f] [STARTPOSITION n] [MAXRESULTS n]`
//! and nothing else (no OR, no projections). Strings are quoted with `'` and escaped with a backslash; numbers and
//! booleans are bare. Reference and email fields compare against their inner value (`CustomerRef = '12'`,
//! `PrimaryEmailAddr = 'a@b.c'`), so [`QueryBuilder`] accepts those fields written either way.

use serde_json::Value;

use crate::ConnectorError;

/// The most rows QBO returns per query page.
pub const MAX_PAGE: u32 = 1000;

/// A `SELECT * FROM …` statement under construction.
#[derive(Debug, Clone)]
pub struct QueryBuilder {
    entity: String,
    conditions: Vec<String>,
    order_by: Option<(String, bool)>,
    start_position: Option<u32>,
    max_results: Option<u32>,
}

fn bad(message: String, field: Option<&str>) -> ConnectorError {
    ConnectorError::Validation { code: "invalid_query".into(), message, field: field.map(str::to_string) }
}

/// Checks an entity name: letters and digits only (it goes into the statement and the URL unquoted).
pub fn check_entity(entity: &str) -> Result<(), ConnectorError> {
    if !entity.is_empty() && entity.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(bad(format!("`{entity}` is not a QuickBooks entity name (letters and digits only)"), None))
    }
}

/// Checks a field path such as `DisplayName` or `MetaData.LastUpdatedTime`.
fn check_field(field: &str) -> Result<(), ConnectorError> {
    let ok = !field.is_empty()
        && field.split('.').all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    if ok { Ok(()) } else { Err(bad(format!("`{field}` is not a QuickBooks field name"), Some(field))) }
}

/// Quotes a string for a QBO query: backslash before `\` and `'`.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// The field name QBO filters on: `CustomerRef.value` and `PrimaryEmailAddr.Address` are queried as
/// `CustomerRef` and `PrimaryEmailAddr`.
fn filter_field(field: &str) -> &str {
    field.strip_suffix(".value").or_else(|| field.strip_suffix(".Address")).unwrap_or(field)
}

/// A JSON value as a query literal. Objects shaped like a reference (`{"value": …}`) or an email address
/// (`{"Address": …}`) compare by that inner value, as QBO does.
pub fn literal(field: &str, value: &Value) -> Result<String, ConnectorError> {
    match value {
        Value::String(s) => {
            if s.contains('\u{2019}') {
                // QBO's lexer rejects the typographic apostrophe outright; say where instead of sending a query
                // that fails with a parser error.
                return Err(bad(
                    format!(
                        "the value for `{field}` contains a typographic apostrophe (’), which QuickBooks queries cannot express"
                    ),
                    Some(field),
                ));
            }
            Ok(quote(s))
        }
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Object(map) => match map.get("value").or_else(|| map.get("Address")) {
            Some(inner) if !inner.is_object() => literal(field, inner),
            _ => Err(bad(
                format!("the value for `{field}` is an object without `value` or `Address` to compare with"),
                Some(field),
            )),
        },
        Value::Null => Err(bad(format!("QuickBooks queries cannot compare `{field}` with null"), Some(field))),
        Value::Array(_) => Err(bad(format!("the value for `{field}` is a list; use `in` for lists"), Some(field))),
    }
}

impl QueryBuilder {
    pub fn new(entity: &str) -> Result<Self, ConnectorError> {
        check_entity(entity)?;
        Ok(QueryBuilder {
            entity: entity.to_string(),
            conditions: Vec::new(),
            order_by: None,
            start_position: None,
            max_results: None,
        })
    }

    pub fn entity(&self) -> &str {
        &self.entity
    }

    /// `field = value`.
    pub fn eq(self, field: &str, value: &Value) -> Result<Self, ConnectorError> {
        self.compare(field, "=", value)
    }

    /// `field op value` with `op` one of `=`, `<`, `>`, `<=`, `>=`, `LIKE`.
    pub fn compare(mut self, field: &str, op: &str, value: &Value) -> Result<Self, ConnectorError> {
        check_field(field)?;
        let op = op.trim().to_ascii_uppercase();
        if !matches!(op.as_str(), "=" | "<" | ">" | "<=" | ">=" | "LIKE") {
            return Err(bad(format!("`{op}` is not a QuickBooks query operator"), Some(field)));
        }
        let lit = literal(field, value)?;
        self.conditions.push(format!("{} {op} {lit}", filter_field(field)));
        Ok(self)
    }

    /// `field IN (v1, v2, …)`.
    pub fn in_list(mut self, field: &str, values: &[Value]) -> Result<Self, ConnectorError> {
        check_field(field)?;
        if values.is_empty() {
            return Err(bad(format!("`{field}` IN needs at least one value"), Some(field)));
        }
        let lits = values.iter().map(|v| literal(field, v)).collect::<Result<Vec<_>, _>>()?;
        self.conditions.push(format!("{} IN ({})", filter_field(field), lits.join(", ")));
        Ok(self)
    }

    pub fn order_by(mut self, field: &str, ascending: bool) -> Result<Self, ConnectorError> {
        check_field(field)?;
        self.order_by = Some((field.to_string(), ascending));
        Ok(self)
    }

    /// 1-based index of the first row.
    pub fn start_position(mut self, n: u32) -> Self {
        self.start_position = Some(n.max(1));
        self
    }

    /// Rows per answer, capped at [`MAX_PAGE`].
    pub fn max_results(mut self, n: u32) -> Self {
        self.max_results = Some(n.clamp(1, MAX_PAGE));
        self
    }

    pub fn build(&self) -> String {
        let mut sql = format!("SELECT * FROM {}", self.entity);
        if !self.conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&self.conditions.join(" AND "));
        }
        if let Some((field, asc)) = &self.order_by {
            sql.push_str(&format!(" ORDERBY {field} {}", if *asc { "ASC" } else { "DESC" }));
        }
        if let Some(n) = self.start_position {
            sql.push_str(&format!(" STARTPOSITION {n}"));
        }
        if let Some(n) = self.max_results {
            sql.push_str(&format!(" MAXRESULTS {n}"));
        }
        sql
    }
}

/// Whether a statement already chooses its own page (STARTPOSITION or MAXRESULTS outside string literals), in
/// which case it is run as written instead of being paged.
pub fn has_paging_clause(sql: &str) -> bool {
    let mut outside = String::with_capacity(sql.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in sql.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '\'' {
                in_string = false;
            }
            outside.push(' ');
        } else if c == '\'' {
            in_string = true;
            outside.push(' ');
        } else {
            outside.push(c.to_ascii_uppercase());
        }
    }
    outside.split_whitespace().any(|w| w == "STARTPOSITION" || w == "MAXRESULTS")
}

/// Whether a statement is a `count(*)` (answered with `totalCount`, never paged).
pub fn is_count(sql: &str) -> bool {
    sql.to_ascii_lowercase().replace(' ', "").contains("selectcount(*)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quoting_escapes_apostrophes_and_backslashes() {
        assert_eq!(quote("Amy's Bird Sanctuary"), r"'Amy\'s Bird Sanctuary'");
        assert_eq!(quote(r"a\b"), r"'a\\b'");
        assert_eq!(quote(r"\'"), r"'\\\''");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn builds_where_order_and_paging() {
        let q = QueryBuilder::new("Customer")
            .unwrap()
            .eq("DisplayName", &json!("O'Brien & Sons"))
            .unwrap()
            .eq("Active", &json!(true))
            .unwrap()
            .eq("Balance", &json!(12.5))
            .unwrap()
            .order_by("MetaData.LastUpdatedTime", true)
            .unwrap()
            .start_position(1001)
            .max_results(5000);
        assert_eq!(
            q.build(),
            r"SELECT * FROM Customer WHERE DisplayName = 'O\'Brien & Sons' AND Active = true AND Balance = 12.5 ORDERBY MetaData.LastUpdatedTime ASC STARTPOSITION 1001 MAXRESULTS 1000"
        );
    }

    #[test]
    fn references_and_emails_compare_by_inner_value() {
        let q = QueryBuilder::new("Invoice")
            .unwrap()
            .eq("CustomerRef", &json!({"value": "12", "name": "x"}))
            .unwrap()
            .eq("CustomerRef.value", &json!("12"))
            .unwrap()
            .build();
        assert_eq!(q, "SELECT * FROM Invoice WHERE CustomerRef = '12' AND CustomerRef = '12'");
        let q = QueryBuilder::new("Customer")
            .unwrap()
            .eq("PrimaryEmailAddr", &json!({"Address": "a'b@example.com"}))
            .unwrap()
            .eq("PrimaryEmailAddr.Address", &json!("c@example.com"))
            .unwrap()
            .build();
        assert_eq!(
            q,
            r"SELECT * FROM Customer WHERE PrimaryEmailAddr = 'a\'b@example.com' AND PrimaryEmailAddr = 'c@example.com'"
        );
    }

    #[test]
    fn in_lists_and_like() {
        let q = QueryBuilder::new("Item")
            .unwrap()
            .in_list("Id", &[json!("1"), json!("2")])
            .unwrap()
            .compare("Name", "like", &json!("Gar%"))
            .unwrap()
            .build();
        assert_eq!(q, "SELECT * FROM Item WHERE Id IN ('1', '2') AND Name LIKE 'Gar%'");
    }

    #[test]
    fn bad_input_is_refused_with_the_field_named() {
        assert!(QueryBuilder::new("Customer; DROP").is_err());
        assert!(QueryBuilder::new("").is_err());
        let e = QueryBuilder::new("Customer").unwrap().eq("Name OR 1=1", &json!("x")).unwrap_err();
        assert!(matches!(e, ConnectorError::Validation { field: Some(ref f), .. } if f == "Name OR 1=1"));
        let e = QueryBuilder::new("Customer").unwrap().eq("DisplayName", &Value::Null).unwrap_err();
        assert!(e.to_string().contains("DisplayName"), "{e}");
        let e = QueryBuilder::new("Customer").unwrap().eq("DisplayName", &json!("Amy\u{2019}s")).unwrap_err();
        assert!(e.to_string().contains("typographic"), "{e}");
        assert!(QueryBuilder::new("Customer").unwrap().compare("Balance", "!=", &json!(1)).is_err());
        assert!(QueryBuilder::new("Customer").unwrap().eq("PrimaryEmailAddr", &json!({"x": 1})).is_err());
    }

    #[test]
    fn paging_clause_detection_ignores_literals() {
        assert!(has_paging_clause("select * from Customer maxresults 10"));
        assert!(has_paging_clause("SELECT * FROM Customer STARTPOSITION 3"));
        assert!(!has_paging_clause(r"SELECT * FROM Customer WHERE DisplayName = 'MAXRESULTS \' STARTPOSITION'"));
        assert!(is_count("SELECT count(*) FROM Customer"));
        assert!(!is_count("SELECT * FROM Customer"));
    }
}
