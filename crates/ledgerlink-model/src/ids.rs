//! Typed identifiers, parsed once where they enter the system.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("`{0}` is not a Salesforce id (15 or 18 letters and digits)")]
    Salesforce(String),
    #[error("`{0}` is not a QuickBooks realm id (digits only)")]
    Realm(String),
}

/// A Salesforce record id: 15 (case-sensitive) or 18 (case-insensitive, checksummed) alphanumerics.
/// Always held in its 18-character form so the same record compares equal however it was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SalesforceId(String);

impl SalesforceId {
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let t = text.trim();
        if !t.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(IdError::Salesforce(text.to_string()));
        }
        match t.len() {
            18 => {
                let expect = checksum(&t[..15]);
                if t[15..].eq_ignore_ascii_case(&expect) {
                    Ok(SalesforceId(format!("{}{}", &t[..15], expect)))
                } else {
                    Err(IdError::Salesforce(text.to_string()))
                }
            }
            15 => Ok(SalesforceId(format!("{t}{}", checksum(t)))),
            _ => Err(IdError::Salesforce(text.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Appends the three-character case checksum to a 15-character id (public algorithm: one character per
    /// block of five, encoding which letters are upper case).
    pub fn from_15(id15: &str) -> Result<Self, IdError> {
        Self::parse(id15)
    }
}

fn checksum(id15: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let bytes = id15.as_bytes();
    let mut out = String::with_capacity(3);
    for block in 0..3 {
        let mut bits = 0usize;
        for i in 0..5 {
            if bytes[block * 5 + i].is_ascii_uppercase() {
                bits |= 1 << i;
            }
        }
        out.push(ALPHABET[bits] as char);
    }
    out
}

impl TryFrom<String> for SalesforceId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        SalesforceId::parse(&value)
    }
}

impl From<SalesforceId> for String {
    fn from(id: SalesforceId) -> String {
        id.0
    }
}

impl fmt::Display for SalesforceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A QuickBooks Online company (realm) id: decimal digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QboRealmId(String);

impl QboRealmId {
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let t = text.trim();
        if !t.is_empty() && t.len() <= 32 && t.chars().all(|c| c.is_ascii_digit()) {
            Ok(QboRealmId(t.to_string()))
        } else {
            Err(IdError::Realm(text.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for QboRealmId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        QboRealmId::parse(&value)
    }
}

impl From<QboRealmId> for String {
    fn from(id: QboRealmId) -> String {
        id.0
    }
}

impl fmt::Display for QboRealmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One record in one connection: the unit the link table, audit log and jobs speak of.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordRef {
    /// The connection's name (e.g. `salesforce`, `quickbooks-acme`).
    pub connection: String,
    /// The object type in that system's own spelling (`Opportunity`, `Invoice`).
    pub object: String,
    pub id: String,
}

impl RecordRef {
    pub fn new(connection: impl Into<String>, object: impl Into<String>, id: impl Into<String>) -> Self {
        RecordRef { connection: connection.into(), object: object.into(), id: id.into() }
    }
}

impl fmt::Display for RecordRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.connection, self.object, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salesforce_15_and_18_char_forms_are_the_same_id() {
        let a = SalesforceId::parse("001D000000IqhSL").unwrap();
        let b = SalesforceId::parse("001D000000IqhSLIAZ").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "001D000000IqhSLIAZ");
    }

    #[test]
    fn salesforce_id_rejects_bad_input() {
        assert!(SalesforceId::parse("001D000000IqhSLXXX").is_err());
        assert!(SalesforceId::parse("short").is_err());
        assert!(SalesforceId::parse("001D000000Iqh'L").is_err());
    }

    #[test]
    fn realm_ids_are_digits() {
        assert!(QboRealmId::parse("9130357766920452").is_ok());
        assert!(QboRealmId::parse("93a").is_err());
        assert!(QboRealmId::parse("").is_err());
    }
}
