//! The org's whole state: schema extensions, records, OAuth grants, usage counters.
//!
//! Layout: [`Org`] is everything that survives a restart (serialised to the state file as JSON, written to a
//! temporary file and renamed so a crash never leaves half a file); the query cursors and the call log live only
//! in memory. Records are keyed by object then id; ids are issued from a counter in base 62 so that id order is
//! creation order, which is the order Salesforce returns rows in when a query has no `ORDER BY`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use ledgerlink_model::SalesforceId;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::objects::{self, CustomField, ObjectDef};
use super::records::OutRecord;
use super::value::FieldValue;

/// One record: canonical field name → value.
pub type Record = BTreeMap<String, FieldValue>;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// How many calls `GET /sandbox/admin/calls` remembers.
const CALL_LOG_LEN: usize = 1000;

pub fn base62(mut n: u64, width: usize) -> String {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out).unwrap_or_default()
}

pub fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// An issued access token (the map key is the token itself).
#[derive(Clone, Serialize, Deserialize)]
pub struct AccessToken {
    pub user_id: String,
    pub expires_at: DateTime<Utc>,
    /// The refresh token it was minted from, so revoking that one ends this session too.
    pub refresh_token: Option<String>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct RefreshToken {
    pub user_id: String,
}

/// A one-time authorization code minted by the admin API (standing in for the browser consent step).
#[derive(Clone, Serialize, Deserialize)]
pub struct AuthCode {
    pub user_id: String,
    pub redirect_uri: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// API calls counted per sandbox-clock day for `Sforce-Limit-Info`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ApiUsage {
    pub day: Option<NaiveDate>,
    pub count: u64,
}

/// One served request, as listed by the admin API.
#[derive(Clone, Debug, Serialize)]
pub struct CallLog {
    pub at: String,
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// A query's remaining rows, served in pages through `nextRecordsUrl`.
pub struct Cursor {
    pub created: DateTime<Utc>,
    pub rows: Vec<OutRecord>,
    pub total: usize,
    pub version: String,
}

/// The persisted org.
#[derive(Serialize, Deserialize)]
pub struct Org {
    pub org_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub username: String,
    pub password: String,
    /// The user the seeded credentials act as.
    pub api_user_id: String,
    /// The refresh token printed in the startup line (stays valid across restarts with a state file).
    pub startup_refresh_token: String,
    pub next_seq: u64,
    pub custom_fields: Vec<CustomField>,
    pub records: BTreeMap<String, BTreeMap<String, Record>>,
    pub access_tokens: BTreeMap<String, AccessToken>,
    pub refresh_tokens: BTreeMap<String, RefreshToken>,
    pub auth_codes: BTreeMap<String, AuthCode>,
    pub api_usage: ApiUsage,
    /// PEMs (certificates or public keys) JWT bearer assertions are checked against.
    #[serde(default)]
    pub connected_app_certificates: Vec<String>,
    #[serde(skip)]
    pub calls: VecDeque<CallLog>,
    #[serde(skip)]
    pub cursors: HashMap<String, Cursor>,
}

impl Org {
    /// An empty org with fresh credentials (no records, no users).
    pub fn empty() -> Org {
        let mut rng = rand::rng();
        let org_seq: u64 = rng.random_range(1..62u64.pow(6));
        let org_id = SalesforceId::parse(&format!("00D{}{}", "Hs0", base62(org_seq, 9)))
            .map(|id| id.to_string())
            .unwrap_or_default();
        Org {
            org_id,
            client_id: format!("3MVG9{}", random_token(80)),
            client_secret: random_token(64).to_uppercase(),
            username: "integration@northwind-sandbox.example".into(),
            password: format!("sandbox-{}", random_token(12)),
            api_user_id: String::new(),
            startup_refresh_token: String::new(),
            next_seq: 1,
            custom_fields: Vec::new(),
            records: BTreeMap::new(),
            access_tokens: BTreeMap::new(),
            refresh_tokens: BTreeMap::new(),
            auth_codes: BTreeMap::new(),
            api_usage: ApiUsage::default(),
            connected_app_certificates: Vec::new(),
            calls: VecDeque::new(),
            cursors: HashMap::new(),
        }
    }

    /// A new 18-character id with the object's key prefix.
    pub fn new_id(&mut self, prefix: &str) -> String {
        let seq = self.next_seq;
        self.next_seq += 1;
        let id15 = format!("{prefix}Hs0{}", base62(seq, 9));
        SalesforceId::parse(&id15)
            .map(|id| id.to_string())
            .unwrap_or(id15)
    }

    pub fn def(&self, object: &str) -> Option<ObjectDef> {
        objects::object_def(object, &self.custom_fields)
    }

    pub fn get(&self, object: &str, id: &str) -> Option<&Record> {
        self.records.get(object)?.get(id)
    }

    pub fn get_mut(&mut self, object: &str, id: &str) -> Option<&mut Record> {
        self.records.get_mut(object)?.get_mut(id)
    }

    /// A record of any type, by id (15 or 18 characters).
    pub fn find_any(&self, id: &str) -> Option<(&'static str, &Record)> {
        let id = SalesforceId::parse(id).ok()?;
        let object = objects::object_for_prefix(id.as_str())?;
        self.get(object, id.as_str()).map(|r| (object, r))
    }

    /// All records of an object in creation order.
    pub fn all(&self, object: &str) -> impl Iterator<Item = &Record> {
        self.records
            .get(object)
            .into_iter()
            .flat_map(|m| m.values())
    }

    pub fn is_deleted(rec: &Record) -> bool {
        rec.get("IsDeleted")
            .and_then(FieldValue::as_bool)
            .unwrap_or(false)
    }

    /// Counts one API call against today's allowance (the day is the sandbox clock's UTC day).
    pub fn count_call(&mut self, now: DateTime<Utc>) -> u64 {
        let today = now.date_naive();
        if self.api_usage.day != Some(today) {
            self.api_usage = ApiUsage {
                day: Some(today),
                count: 0,
            };
        }
        self.api_usage.count += 1;
        self.api_usage.count
    }

    pub fn usage_today(&self, now: DateTime<Utc>) -> u64 {
        if self.api_usage.day == Some(now.date_naive()) {
            self.api_usage.count
        } else {
            0
        }
    }

    pub fn log_call(&mut self, entry: CallLog) {
        if self.calls.len() >= CALL_LOG_LEN {
            self.calls.pop_front();
        }
        self.calls.push_back(entry);
    }

    pub fn load(path: &Path) -> anyhow::Result<Option<Org>> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let org = serde_json::from_slice(&bytes).map_err(|e| {
                    anyhow::anyhow!(
                        "state file {} is not a Salesforce sandbox state: {e}",
                        path.display()
                    )
                })?;
                Ok(Some(org))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!(
                "cannot read state file {}: {e}",
                path.display()
            )),
        }
    }

    /// Writes the state next to the target and renames it into place.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        std::fs::write(&tmp, bytes)
            .map_err(|e| anyhow::anyhow!("cannot write state file {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| anyhow::anyhow!("cannot replace state file {}: {e}", path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_in_creation_order_and_carry_their_prefix() {
        let mut org = Org::empty();
        org.next_seq = 61;
        let a = org.new_id("001");
        let b = org.new_id("001");
        assert!(a.starts_with("001") && a.len() == 18);
        assert!(a < b, "{a} should sort before {b}");
        assert!(SalesforceId::parse(&a).is_ok());
        assert!(org.org_id.starts_with("00D") && org.org_id.len() == 18);
    }
}
