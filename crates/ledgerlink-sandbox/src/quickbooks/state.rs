//! Everything the QuickBooks sandbox remembers, and how it is saved.
//!
//! Layout: [`SandboxState`] is the whole persisted document: the app [`Credentials`], the OAuth grants
//! ([`TokenBook`]), the data of every company the sandbox user owns (one [`Company`] per realm: one [`Table`] of
//! JSON objects per entity, plus tombstones of deleted transactions for change feeds), the stored `requestid`
//! replies and the clock offset. The call log is kept
//! in memory only. [`save`] writes the document atomically (temporary file, then rename) so a crash never leaves
//! a half-written state file behind.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The app's credentials and the company it is connected to.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub client_id: String,
    pub client_secret: String,
    pub realm_id: String,
    pub verifier_token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("realm_id", &self.realm_id)
            .field("verifier_token", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut realm = String::from("9341");
        for _ in 0..12 {
            realm.push(char::from(b'0' + rng.random_range(0..10u8)));
        }
        Credentials {
            client_id: format!("AB{}", random_alnum(48)),
            client_secret: random_alnum(40),
            realm_id: realm,
            verifier_token: uuid::Uuid::new_v4().to_string(),
        }
    }
}

pub fn random_alnum(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// An access token; it dies at `expires_at` or when its grant is revoked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessToken {
    pub realm_id: String,
    pub grant: String,
    pub expires_at: DateTime<Utc>,
}

/// A refresh token. Once a newer one is issued it keeps working for 24 h (`superseded_at` + 24 h).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshToken {
    pub realm_id: String,
    pub grant: String,
    pub expires_at: DateTime<Utc>,
    pub superseded_at: Option<DateTime<Utc>>,
}

/// A one-time authorization code minted by the admin API (and later by the authorize page).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizationCode {
    pub realm_id: String,
    pub redirect_uri: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// All live tokens, keyed by their value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TokenBook {
    pub access: BTreeMap<String, AccessToken>,
    pub refresh: BTreeMap<String, RefreshToken>,
    pub codes: BTreeMap<String, AuthorizationCode>,
    /// The pair announced in the startup line, reused across restarts while both still work.
    pub initial_access: String,
    pub initial_refresh: String,
    /// Every revocation, so a test can see that a disconnect reached the provider.
    #[serde(default)]
    pub revocations: Vec<Revocation>,
}

/// One grant ended through the revoke endpoint. Tokens are kept only as SHA-256 fingerprints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revocation {
    pub at: DateTime<Utc>,
    pub realm_id: String,
    pub grant: String,
    /// SHA-256 (hex) of the token presented.
    pub token_sha256: String,
    /// SHA-256 (hex) of every refresh token of the grant that stopped working.
    pub refresh_tokens_sha256: Vec<String>,
}

/// The rows of one entity; ids are handed out from `next_id` and never reused.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Table {
    pub next_id: u64,
    pub rows: BTreeMap<u64, Value>,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            next_id: 1,
            rows: BTreeMap::new(),
        }
    }
}

/// A deleted transaction, kept for change-data-capture style reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tombstone {
    pub entity: String,
    pub id: String,
    pub deleted_at: String,
}

/// The company's data: one table per entity name (`"Customer"`, `"Invoice"`, …).
///
/// Rows are added, replaced and removed through [`Company::put`] and [`Company::remove`], which keep the
/// [`Lookup`] index current; [`Company::get_mut`] is for fields the index does not cover.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Company {
    pub tables: BTreeMap<String, Table>,
    pub deleted: Vec<Tombstone>,
    /// Built from the tables the first time it is asked (after a load, too), kept up to date from then on.
    #[serde(skip)]
    lookup: OnceLock<Lookup>,
}

/// The fields a write looks rows up by, indexed: without it, creating an invoice read every invoice of the
/// company twice (for a DocNumber already in use, and for its customer's balance), and a sandbox holding a few
/// thousand invoices spent most of its time there.
#[derive(Debug, Clone, Default)]
struct Lookup {
    /// (entity, DocNumber) → keys of the rows carrying it.
    doc_numbers: HashMap<(String, String), BTreeSet<u64>>,
    /// (entity, reference field, referenced Id) → keys of the rows naming it, for [`INDEXED_REFS`].
    refs: HashMap<(String, &'static str, String), BTreeSet<u64>>,
}

/// The reference fields indexed: whose transactions count in a customer's or a vendor's balance.
pub const INDEXED_REFS: [&str; 2] = ["CustomerRef", "VendorRef"];

impl Lookup {
    fn build(tables: &BTreeMap<String, Table>) -> Lookup {
        let mut lookup = Lookup::default();
        for (entity, table) in tables {
            for (key, row) in &table.rows {
                lookup.add(entity, *key, row);
            }
        }
        lookup
    }

    /// The index entries of one row: its DocNumber and its indexed references.
    fn entries(row: &Value) -> (Option<&str>, impl Iterator<Item = (&'static str, &str)>) {
        let doc = row.get("DocNumber").and_then(Value::as_str);
        let refs = INDEXED_REFS
            .into_iter()
            .filter_map(move |field| row.get(field)?.get("value")?.as_str().map(|id| (field, id)));
        (doc, refs)
    }

    fn add(&mut self, entity: &str, key: u64, row: &Value) {
        let (doc, refs) = Lookup::entries(row);
        if let Some(doc) = doc {
            self.doc_numbers.entry((entity.to_string(), doc.to_string())).or_default().insert(key);
        }
        for (field, id) in refs {
            self.refs.entry((entity.to_string(), field, id.to_string())).or_default().insert(key);
        }
    }

    fn drop_row(&mut self, entity: &str, key: u64, row: &Value) {
        let (doc, refs) = Lookup::entries(row);
        if let Some(doc) = doc {
            let k = (entity.to_string(), doc.to_string());
            if let Some(keys) = self.doc_numbers.get_mut(&k) {
                keys.remove(&key);
                if keys.is_empty() {
                    self.doc_numbers.remove(&k);
                }
            }
        }
        for (field, id) in refs {
            let k = (entity.to_string(), field, id.to_string());
            if let Some(keys) = self.refs.get_mut(&k) {
                keys.remove(&key);
                if keys.is_empty() {
                    self.refs.remove(&k);
                }
            }
        }
    }
}

impl Company {
    pub fn table(&self, entity: &str) -> Option<&Table> {
        self.tables.get(entity)
    }

    /// The row whose `Id` is `id`. Ids are numeric for most entities (the table key); a few, such as the US
    /// tax codes `TAX` and `NON`, are words and are found by their `Id` field.
    pub fn get(&self, entity: &str, id: &str) -> Option<&Value> {
        let key = self.key_of(entity, id)?;
        self.tables.get(entity)?.rows.get(&key)
    }

    /// The row `id`, to change in place. Must not change the fields the index covers (`DocNumber` and the
    /// [`INDEXED_REFS`]): a write changing those replaces the row with [`Company::put`].
    pub fn get_mut(&mut self, entity: &str, id: &str) -> Option<&mut Value> {
        let key = self.key_of(entity, id)?;
        self.tables.get_mut(entity)?.rows.get_mut(&key)
    }

    /// The table key of row `id`.
    pub fn key(&self, entity: &str, id: &str) -> Option<u64> {
        self.key_of(entity, id)
    }

    fn key_of(&self, entity: &str, id: &str) -> Option<u64> {
        let id = id.trim();
        let table = self.tables.get(entity)?;
        if let Ok(key) = id.parse::<u64>()
            && table.rows.get(&key).and_then(row_id) == Some(id)
        {
            return Some(key);
        }
        table
            .rows
            .iter()
            .find(|(_, row)| row_id(row) == Some(id))
            .map(|(k, _)| *k)
    }

    /// Reserves the next id of `entity`.
    pub fn allocate_id(&mut self, entity: &str) -> u64 {
        let table = self.tables.entry(entity.to_string()).or_default();
        let id = table.next_id;
        table.next_id += 1;
        id
    }

    pub fn put(&mut self, entity: &str, id: u64, row: Value) {
        let table = self.tables.entry(entity.to_string()).or_default();
        table.next_id = table.next_id.max(id + 1);
        let old = table.rows.insert(id, row);
        if let Some(lookup) = self.lookup.get_mut() {
            if let Some(old) = &old {
                lookup.drop_row(entity, id, old);
            }
            if let Some(row) = table.rows.get(&id) {
                lookup.add(entity, id, row);
            }
        }
    }

    pub fn remove(&mut self, entity: &str, id: &str) -> Option<Value> {
        let key = self.key_of(entity, id)?;
        let row = self.tables.get_mut(entity)?.rows.remove(&key)?;
        if let Some(lookup) = self.lookup.get_mut() {
            lookup.drop_row(entity, key, &row);
        }
        Some(row)
    }

    fn lookup(&self) -> &Lookup {
        self.lookup.get_or_init(|| Lookup::build(&self.tables))
    }

    /// The rows of `entity` whose `DocNumber` is `doc`.
    pub fn rows_with_doc_number<'a>(&'a self, entity: &str, doc: &str) -> impl Iterator<Item = &'a Value> {
        self.rows_at(entity, self.lookup().doc_numbers.get(&(entity.to_string(), doc.to_string())))
    }

    /// The rows of `entity` whose reference `field` (one of [`INDEXED_REFS`]) names `id`.
    pub fn rows_referencing<'a>(&'a self, entity: &str, field: &str, id: &str) -> impl Iterator<Item = &'a Value> {
        let keys = INDEXED_REFS
            .into_iter()
            .find(|f| *f == field)
            .and_then(|f| self.lookup().refs.get(&(entity.to_string(), f, id.to_string())));
        debug_assert!(INDEXED_REFS.contains(&field), "{field} is not an indexed reference");
        self.rows_at(entity, keys)
    }

    fn rows_at<'a>(&'a self, entity: &str, keys: Option<&'a BTreeSet<u64>>) -> impl Iterator<Item = &'a Value> {
        let table = self.tables.get(entity);
        keys.into_iter().flatten().filter_map(move |k| table?.rows.get(k))
    }

    /// All rows of `entity` in id order.
    pub fn rows(&self, entity: &str) -> impl Iterator<Item = &Value> {
        self.tables
            .get(entity)
            .into_iter()
            .flat_map(|t| t.rows.values())
    }
}

/// The `Id` of a stored row. A RecurringTransaction row is a wrapper (`{"Invoice": {…}}`) whose Id sits in the
/// single object it holds.
pub fn row_id(row: &Value) -> Option<&str> {
    if let Some(id) = row.get("Id").and_then(Value::as_str) {
        return Some(id);
    }
    let obj = row.as_object()?;
    if obj.len() == 1 {
        return obj.values().next()?.get("Id").and_then(Value::as_str);
    }
    None
}

/// A reply stored under a `requestid`, replayed verbatim on a repeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredReply {
    pub status: u16,
    pub body: String,
}

/// One API call, for `GET /sandbox/admin/calls`.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    pub time: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub requestid: Option<String>,
}

/// The persisted document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxState {
    pub credentials: Credentials,
    pub tokens: TokenBook,
    /// Company data per realm id. The first realm (`credentials.realm_id`) is the one the startup line describes.
    pub companies: BTreeMap<String, Company>,
    /// `requestid` → first reply, per realm.
    pub replies: BTreeMap<String, BTreeMap<String, StoredReply>>,
    /// The sandbox clock's offset when last saved, so a restart does not move time backwards.
    pub clock_offset_ms: i64,
    #[serde(skip)]
    pub calls: Vec<CallRecord>,
}

impl SandboxState {
    pub fn new(credentials: Credentials) -> Self {
        SandboxState {
            credentials,
            tokens: TokenBook::default(),
            companies: BTreeMap::new(),
            replies: BTreeMap::new(),
            clock_offset_ms: 0,
            calls: Vec::new(),
        }
    }
}

impl SandboxState {
    pub fn company(&self, realm: &str) -> Option<&Company> {
        self.companies.get(realm)
    }

    pub fn company_mut(&mut self, realm: &str) -> Option<&mut Company> {
        self.companies.get_mut(realm)
    }
}

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("state file {path} is not a valid QuickBooks sandbox state: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("cannot write state file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Loads the state file if it exists.
pub async fn load(path: &Path) -> Result<Option<SandboxState>, StateFileError> {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateFileError::Read {
                path: path.display().to_string(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| StateFileError::Parse {
            path: path.display().to_string(),
            source,
        })
}

/// Writes the whole state to `path` through a temporary sibling file and a rename.
pub async fn save(path: &Path, state: &SandboxState) -> Result<(), StateFileError> {
    let err = |source| StateFileError::Write {
        path: path.display().to_string(),
        source,
    };
    let text = serde_json::to_vec_pretty(state).map_err(|e| err(std::io::Error::other(e)))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    tokio::fs::write(&tmp, &text).await.map_err(err)?;
    tokio::fs::rename(&tmp, path).await.map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde_json::json;

    /// What the index must answer, found by reading every row.
    fn scanned<'a>(co: &'a Company, entity: &str, field: &str, value: &str) -> Vec<&'a Value> {
        co.rows(entity)
            .filter(|r| {
                if field == "DocNumber" {
                    r.get("DocNumber").and_then(Value::as_str) == Some(value)
                } else {
                    r.get(field).and_then(|f| f.get("value")).and_then(Value::as_str) == Some(value)
                }
            })
            .collect()
    }

    #[test]
    fn lookups_agree_with_a_scan_through_puts_replacements_and_removals() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut co = Company::default();
        // Rows stored before the index is first asked for are indexed when it is built.
        co.put("Invoice", 1, json!({"Id": "1", "DocNumber": "D1", "CustomerRef": {"value": "C1"}}));
        for step in 0..600 {
            let entity = ["Invoice", "Bill", "CreditMemo"][rng.random_range(0..3)];
            let key = rng.random_range(1..40u64);
            match rng.random_range(0..4) {
                0 => {
                    co.remove(entity, &key.to_string());
                }
                _ => {
                    let mut row = json!({"Id": key.to_string()});
                    if rng.random_bool(0.8) {
                        row["DocNumber"] = json!(format!("D{}", rng.random_range(0..8)));
                    }
                    let field = if entity == "Bill" { "VendorRef" } else { "CustomerRef" };
                    if rng.random_bool(0.9) {
                        row[field] = json!({"value": format!("C{}", rng.random_range(0..5))});
                    }
                    co.put(entity, key, row);
                }
            }
            for entity in ["Invoice", "Bill", "CreditMemo"] {
                for v in 0..8 {
                    let doc = format!("D{v}");
                    let got: Vec<&Value> = co.rows_with_doc_number(entity, &doc).collect();
                    assert_eq!(got, scanned(&co, entity, "DocNumber", &doc), "step {step}: {entity} {doc}");
                }
                for field in INDEXED_REFS {
                    for v in 0..5 {
                        let id = format!("C{v}");
                        let got: Vec<&Value> = co.rows_referencing(entity, field, &id).collect();
                        assert_eq!(got, scanned(&co, entity, field, &id), "step {step}: {entity} {field} {id}");
                    }
                }
            }
        }
        // A copy carries its index; a loaded company builds its own.
        let copy = co.clone();
        let loaded: Company = serde_json::from_value(serde_json::to_value(&co).unwrap()).unwrap();
        for c in [&copy, &loaded] {
            for v in 0..8 {
                let doc = format!("D{v}");
                assert_eq!(
                    c.rows_with_doc_number("Invoice", &doc).collect::<Vec<_>>(),
                    scanned(&co, "Invoice", "DocNumber", &doc)
                );
            }
        }
    }
}
