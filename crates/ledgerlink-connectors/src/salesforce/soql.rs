//! SOQL statements built with every value escaped.
//!
//! Strings are single-quoted with backslash escapes (`\'`, `\\`, `\n`, `\r`, `\t`); numbers, booleans and `null`
//! are bare; date-time literals are bare ISO 8601 in UTC (`2024-01-15T10:30:00.000Z`). JSON strings are always
//! quoted — a date or date-time comparison goes through [`Soql::compare_datetime`], because a JSON string does not
//! say whether it is text or a date.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use crate::ConnectorError;

fn bad(message: String, field: Option<&str>) -> ConnectorError {
    ConnectorError::Validation { code: "invalid_query".into(), message, field: field.map(str::to_string) }
}

/// Checks an sObject name (`Account`, `Invoice__c`).
pub fn check_object(object: &str) -> Result<(), ConnectorError> {
    if !object.is_empty()
        && object.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && object.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        Ok(())
    } else {
        Err(bad(format!("`{object}` is not a Salesforce object name"), None))
    }
}

/// Checks a field path (`Name`, `Account.Name`, `Amount__c`).
pub fn check_field(field: &str) -> Result<(), ConnectorError> {
    let ok = !field.is_empty()
        && field.split('.').all(|p| {
            p.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if ok { Ok(()) } else { Err(bad(format!("`{field}` is not a Salesforce field name"), Some(field))) }
}

/// Quotes a string literal.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A date-time literal (unquoted, UTC, milliseconds).
pub fn datetime(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A JSON value as a SOQL literal.
pub fn literal(field: &str, value: &Value) -> Result<String, ConnectorError> {
    match value {
        Value::String(s) => Ok(quote(s)),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Ok("null".into()),
        Value::Array(_) | Value::Object(_) => {
            Err(bad(format!("the value for `{field}` must be a string, number, boolean or null"), Some(field)))
        }
    }
}

/// Default fields read for the objects the flows use, so a find without a field list returns what mapping needs.
pub fn default_fields(object: &str) -> &'static [&'static str] {
    match object {
        "Account" => &[
            "Id",
            "Name",
            "BillingStreet",
            "BillingCity",
            "BillingState",
            "BillingPostalCode",
            "BillingCountry",
            "Phone",
            "Website",
            "OwnerId",
            "SystemModstamp",
        ],
        "Contact" => &["Id", "AccountId", "FirstName", "LastName", "Email", "SystemModstamp"],
        "Opportunity" => &[
            "Id",
            "AccountId",
            "Name",
            "StageName",
            "IsClosed",
            "IsWon",
            "Amount",
            "CloseDate",
            "Pricebook2Id",
            "OwnerId",
            "HasOpportunityLineItem",
            "SystemModstamp",
        ],
        "OpportunityLineItem" => &[
            "Id",
            "OpportunityId",
            "PricebookEntryId",
            "Product2Id",
            "Quantity",
            "UnitPrice",
            "ListPrice",
            "TotalPrice",
            "Discount",
            "ServiceDate",
            "Description",
            "SystemModstamp",
        ],
        "Product2" => &["Id", "Name", "ProductCode", "IsActive", "Description", "SystemModstamp"],
        "PricebookEntry" => &["Id", "Pricebook2Id", "Product2Id", "UnitPrice", "IsActive", "SystemModstamp"],
        _ => &["Id"],
    }
}

/// A `SELECT … FROM …` statement under construction.
#[derive(Debug, Clone)]
pub struct Soql {
    object: String,
    fields: Vec<String>,
    conditions: Vec<String>,
    order_by: Vec<String>,
    limit: Option<u32>,
    offset: Option<u32>,
}

impl Soql {
    /// A query on `object` selecting its default fields until [`Soql::fields`] says otherwise.
    pub fn new(object: &str) -> Result<Self, ConnectorError> {
        check_object(object)?;
        Ok(Soql {
            object: object.to_string(),
            fields: default_fields(object).iter().map(|s| s.to_string()).collect(),
            conditions: Vec::new(),
            order_by: Vec::new(),
            offset: None,
            limit: None,
        })
    }

    /// Selects exactly `fields` (plus `Id`, always), or the defaults when `fields` is empty.
    pub fn fields<S: AsRef<str>>(mut self, fields: &[S]) -> Result<Self, ConnectorError> {
        if fields.is_empty() {
            return Ok(self);
        }
        let mut out = vec!["Id".to_string()];
        for f in fields {
            let f = f.as_ref().trim();
            check_field(f)?;
            if !out.iter().any(|o| o.eq_ignore_ascii_case(f)) {
                out.push(f.to_string());
            }
        }
        self.fields = out;
        Ok(self)
    }

    /// Adds a field to the selection if missing.
    pub fn with_field(mut self, field: &str) -> Result<Self, ConnectorError> {
        check_field(field)?;
        if !self.fields.iter().any(|o| o.eq_ignore_ascii_case(field)) {
            self.fields.push(field.to_string());
        }
        Ok(self)
    }

    pub fn eq(self, field: &str, value: &Value) -> Result<Self, ConnectorError> {
        self.compare(field, "=", value)
    }

    /// `field op value` with `op` one of `=`, `!=`, `<`, `>`, `<=`, `>=`, `LIKE`.
    pub fn compare(self, field: &str, op: &str, value: &Value) -> Result<Self, ConnectorError> {
        let lit = literal(field, value)?;
        self.push_condition(field, op, lit)
    }

    /// `field op <datetime>` with an unquoted date-time literal.
    pub fn compare_datetime(self, field: &str, op: &str, value: DateTime<Utc>) -> Result<Self, ConnectorError> {
        self.push_condition(field, op, datetime(value))
    }

    /// `field IN (…)`.
    pub fn in_list(mut self, field: &str, values: &[Value]) -> Result<Self, ConnectorError> {
        check_field(field)?;
        if values.is_empty() {
            return Err(bad(format!("`{field}` IN needs at least one value"), Some(field)));
        }
        let lits = values.iter().map(|v| literal(field, v)).collect::<Result<Vec<_>, _>>()?;
        self.conditions.push(format!("{field} IN ({})", lits.join(", ")));
        Ok(self)
    }

    fn push_condition(mut self, field: &str, op: &str, literal: String) -> Result<Self, ConnectorError> {
        check_field(field)?;
        let op = op.trim().to_ascii_uppercase();
        if !matches!(op.as_str(), "=" | "!=" | "<" | ">" | "<=" | ">=" | "LIKE") {
            return Err(bad(format!("`{op}` is not a supported SOQL operator"), Some(field)));
        }
        self.conditions.push(format!("{field} {op} {literal}"));
        Ok(self)
    }

    pub fn order_by(mut self, field: &str) -> Result<Self, ConnectorError> {
        check_field(field)?;
        self.order_by.push(field.to_string());
        Ok(self)
    }

    /// `ORDER BY field DESC`.
    pub fn order_by_desc(mut self, field: &str) -> Result<Self, ConnectorError> {
        check_field(field)?;
        self.order_by.push(format!("{field} DESC"));
        Ok(self)
    }

    /// `field op <date>` with an unquoted date literal (`CloseDate >= 2024-01-31`).
    pub fn compare_date(self, field: &str, op: &str, value: NaiveDate) -> Result<Self, ConnectorError> {
        self.push_condition(field, op, value.format("%Y-%m-%d").to_string())
    }

    /// `field op <relative date>`: `TODAY`, `LAST_N_DAYS:30` and the like. Only the literal forms SOQL defines
    /// are accepted (upper-case words and underscores, optionally `:n`), so nothing else can be slipped in.
    pub fn compare_date_literal(self, field: &str, op: &str, literal: &str) -> Result<Self, ConnectorError> {
        let (word, n) = match literal.split_once(':') {
            Some((w, n)) => (w, Some(n)),
            None => (literal, None),
        };
        let word_ok = !word.is_empty() && word.chars().all(|c| c.is_ascii_uppercase() || c == '_');
        let n_ok = n.is_none_or(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if !(word_ok && n_ok) {
            return Err(bad(format!("`{literal}` is not a SOQL date literal (e.g. LAST_N_DAYS:30)"), Some(field)));
        }
        self.push_condition(field, op, literal.to_string())
    }

    /// `(f1 = v1 OR f2 = v2 …)`: one condition satisfied by any of the pairs.
    pub fn any_eq(mut self, pairs: &[(&str, Value)]) -> Result<Self, ConnectorError> {
        if pairs.is_empty() {
            return Err(bad("an OR group needs at least one condition".into(), None));
        }
        let mut parts = Vec::with_capacity(pairs.len());
        for (field, value) in pairs {
            check_field(field)?;
            parts.push(format!("{field} = {}", literal(field, value)?));
        }
        self.conditions.push(format!("({})", parts.join(" OR ")));
        Ok(self)
    }

    /// `NOT field IN (…)`.
    pub fn not_in_list(mut self, field: &str, values: &[Value]) -> Result<Self, ConnectorError> {
        check_field(field)?;
        if values.is_empty() {
            return Err(bad(format!("`{field}` NOT IN needs at least one value"), Some(field)));
        }
        let lits = values.iter().map(|v| literal(field, v)).collect::<Result<Vec<_>, _>>()?;
        self.conditions.push(format!("{field} NOT IN ({})", lits.join(", ")));
        Ok(self)
    }

    /// `OFFSET n` (Salesforce allows at most 2,000).
    pub fn offset(mut self, n: u32) -> Self {
        self.offset = Some(n);
        self
    }

    pub fn limit(mut self, n: u32) -> Self {
        self.limit = Some(n);
        self
    }

    pub fn build(&self) -> String {
        let mut q = format!("SELECT {} FROM {}", self.fields.join(", "), self.object);
        if !self.conditions.is_empty() {
            q.push_str(" WHERE ");
            q.push_str(&self.conditions.join(" AND "));
        }
        if !self.order_by.is_empty() {
            q.push_str(" ORDER BY ");
            q.push_str(&self.order_by.join(", "));
        }
        if let Some(n) = self.limit {
            q.push_str(&format!(" LIMIT {n}"));
        }
        if let Some(n) = self.offset {
            q.push_str(&format!(" OFFSET {n}"));
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn quoting_escapes_everything_soql_needs() {
        assert_eq!(quote("O'Brien"), r"'O\'Brien'");
        assert_eq!(quote("a\\b"), r"'a\\b'");
        assert_eq!(quote("line1\nline2\r\tx"), r"'line1\nline2\r\tx'");
    }

    #[test]
    fn literals_by_type() {
        assert_eq!(literal("A", &json!(12.5)).unwrap(), "12.5");
        assert_eq!(literal("A", &json!(-3)).unwrap(), "-3");
        assert_eq!(literal("A", &json!(true)).unwrap(), "true");
        assert_eq!(literal("A", &Value::Null).unwrap(), "null");
        assert_eq!(literal("A", &json!("x")).unwrap(), "'x'");
        assert!(literal("A", &json!({"a": 1})).unwrap_err().to_string().contains("`A`"));
        let t = Utc.with_ymd_and_hms(2024, 1, 15, 10, 30, 0).unwrap();
        assert_eq!(datetime(t), "2024-01-15T10:30:00.000Z");
    }

    #[test]
    fn builds_full_statements() {
        let t = Utc.with_ymd_and_hms(2024, 1, 15, 10, 30, 0).unwrap() + chrono::TimeDelta::milliseconds(250);
        let q = Soql::new("Account")
            .unwrap()
            .fields(&["Name", "Id", "BillingCity"])
            .unwrap()
            .eq("Name", &json!("Amy's \"Birds\""))
            .unwrap()
            .compare_datetime("SystemModstamp", ">=", t)
            .unwrap()
            .in_list("BillingState", &[json!("CA"), json!("NY")])
            .unwrap()
            .order_by("SystemModstamp")
            .unwrap()
            .order_by("Id")
            .unwrap()
            .limit(10)
            .build();
        assert_eq!(
            q,
            r#"SELECT Id, Name, BillingCity FROM Account WHERE Name = 'Amy\'s "Birds"' AND SystemModstamp >= 2024-01-15T10:30:00.250Z AND BillingState IN ('CA', 'NY') ORDER BY SystemModstamp, Id LIMIT 10"#
        );
    }

    #[test]
    fn defaults_per_object() {
        assert!(Soql::new("Opportunity").unwrap().build().starts_with("SELECT Id, AccountId, Name, StageName"));
        assert_eq!(Soql::new("Task").unwrap().build(), "SELECT Id FROM Task");
        let q = Soql::new("Task").unwrap().with_field("SystemModstamp").unwrap().with_field("Id").unwrap();
        assert_eq!(q.build(), "SELECT Id, SystemModstamp FROM Task");
    }

    #[test]
    fn or_groups_dates_descending_and_offsets() {
        let q = Soql::new("Opportunity")
            .unwrap()
            .fields(&["Name"])
            .unwrap()
            .any_eq(&[("StageName", json!("Closed Won")), ("Name", json!("It's"))])
            .unwrap()
            .compare_date("CloseDate", ">=", NaiveDate::from_ymd_opt(2024, 1, 31).unwrap())
            .unwrap()
            .compare_date_literal("CreatedDate", "=", "LAST_N_DAYS:30")
            .unwrap()
            .not_in_list("StageName", &[json!("Closed Lost")])
            .unwrap()
            .order_by_desc("CloseDate")
            .unwrap()
            .limit(5)
            .offset(10)
            .build();
        assert_eq!(
            q,
            r"SELECT Id, Name FROM Opportunity WHERE (StageName = 'Closed Won' OR Name = 'It\'s') AND CloseDate >= 2024-01-31 AND CreatedDate = LAST_N_DAYS:30 AND StageName NOT IN ('Closed Lost') ORDER BY CloseDate DESC LIMIT 5 OFFSET 10"
        );
        let base = Soql::new("Account").unwrap();
        assert!(base.clone().compare_date_literal("CreatedDate", "=", "TODAY OR Id != null").is_err());
        assert!(base.clone().compare_date_literal("CreatedDate", "=", "LAST_N_DAYS:").is_err());
        assert!(base.clone().any_eq(&[]).is_err());
        assert!(base.any_eq(&[("Name) OR (Id", json!("x"))]).is_err());
    }

    #[test]
    fn injection_is_refused() {
        assert!(Soql::new("Account WHERE").is_err());
        assert!(Soql::new("1Account").is_err());
        assert!(Soql::new("Account").unwrap().fields(&["Name FROM User"]).is_err());
        assert!(Soql::new("Account").unwrap().eq("Name OR Id", &json!("x")).is_err());
        assert!(Soql::new("Account").unwrap().compare("Name", "; DELETE", &json!("x")).is_err());
        assert!(check_field("Account.Name").is_ok());
        assert!(check_field("Amount__c").is_ok());
    }
}
