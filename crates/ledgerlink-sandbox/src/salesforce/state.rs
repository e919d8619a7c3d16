//! The org's whole state: schema extensions, records, OAuth grants, usage counters.
//!
//! Layout: [`Org`] is everything that survives a restart (serialised to the state file as JSON, written to a
//! temporary file and renamed so a crash never leaves half a file); the query cursors and the call log live only
//! in memory. Records are keyed by object then id; ids are issued from a counter in base 62 so that id order is
//! creation order, which is the order Salesforce returns rows in when a query has no `ORDER BY`.
//!
//! [`Records`] owns them and is the only way to change one, so that the lookup index it keeps beside them (which
//! records point at a given parent through a reference field) and the undo journal of an all-or-none call see
//! every write: a query for one opportunity's lines then costs what it returns, not the size of the org.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use ledgerlink_model::SalesforceId;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::objects::{self, CustomField, FieldType, ObjectDef};
use super::records::OutRecord;
use super::value::FieldValue;

/// One record: canonical field name → value.
pub type Record = BTreeMap<String, FieldValue>;

/// Text as SOQL compares it: case-insensitively, by full Unicode lower-casing. ASCII that is already lower case
/// (every id the org issues, once folded) is borrowed rather than copied.
pub fn fold_case(s: &str) -> Cow<'_, str> {
    if !s.is_ascii() {
        Cow::Owned(s.to_lowercase())
    } else if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// One reference field's values: the case-folded id it holds → the records holding it, in creation order.
struct FieldIndex {
    field: String,
    holders: HashMap<String, BTreeSet<Arc<str>>>,
}

impl FieldIndex {
    fn add(&mut self, value: &str, id: Arc<str>) {
        self.holders
            .entry(fold_case(value).into_owned())
            .or_default()
            .insert(id);
    }

    fn drop_holder(&mut self, value: &str, id: &str) {
        let key = fold_case(value);
        if let Some(ids) = self.holders.get_mut(key.as_ref()) {
            ids.remove(id);
            if ids.is_empty() {
                self.holders.remove(key.as_ref());
            }
        }
    }
}

/// The reference fields of one object, indexed. Custom fields are never lookups, so the standard definition
/// names every field there is to index.
struct ObjectIndex(Vec<FieldIndex>);

impl ObjectIndex {
    fn for_object(object: &str) -> ObjectIndex {
        let fields = objects::builtin_def(object)
            .map(|def| def.fields)
            .unwrap_or_default();
        ObjectIndex(
            fields
                .into_iter()
                .filter(|f| matches!(f.ty, FieldType::Reference(_)))
                .map(|f| FieldIndex {
                    field: f.name,
                    holders: HashMap::new(),
                })
                .collect(),
        )
    }

    /// What a record holds in each indexed field, in index order.
    fn values<'r>(&self, rec: Option<&'r Record>) -> Vec<Option<&'r str>> {
        self.0
            .iter()
            .map(|f| {
                rec.and_then(|r| r.get(&f.field))
                    .and_then(FieldValue::as_str)
            })
            .collect()
    }

    /// Moves a record from the values it held to the ones it holds now (either side empty for an insert or a
    /// removal); fields whose value did not change are left alone.
    fn change(&mut self, id: &str, before: &[Option<&str>], after: &[Option<&str>]) {
        let mut shared: Option<Arc<str>> = None;
        for ((index, old), new) in self.0.iter_mut().zip(before).zip(after) {
            if old == new {
                continue;
            }
            if let Some(old) = old {
                index.drop_holder(old, id);
            }
            if let Some(new) = new {
                let id = shared.get_or_insert_with(|| Arc::from(id)).clone();
                index.add(new, id);
            }
        }
    }

    /// An object's index, made on first use (looked up without allocating: this runs on every write).
    fn of<'a>(index: &'a mut HashMap<String, ObjectIndex>, object: &str) -> &'a mut ObjectIndex {
        if !index.contains_key(object) {
            index.insert(object.to_string(), ObjectIndex::for_object(object));
        }
        index
            .get_mut(object)
            .expect("the object's index was just made")
    }

    fn field(&self, name: &str) -> Option<&FieldIndex> {
        self.0.iter().find(|f| f.field == name)
    }
}

/// Where a record stood before an all-or-none call first touched it (`None`: the call created it).
type Journal = HashMap<(String, String), Option<Record>>;

/// Every record of the org, by object then id, with its lookups indexed.
///
/// Invariant the queries rely on: a record's key is its `Id` field, an 18-character id as [`Org::new_id`] issues
/// them. Serialised as the bare map, so the state file is unchanged; the index is rebuilt when it is read.
#[derive(Default)]
pub struct Records {
    by_object: BTreeMap<String, BTreeMap<String, Record>>,
    index: HashMap<String, ObjectIndex>,
    journal: Option<Journal>,
}

impl Records {
    fn from_map(by_object: BTreeMap<String, BTreeMap<String, Record>>) -> Records {
        let mut index = HashMap::new();
        for (object, recs) in &by_object {
            let idx = index
                .entry(object.clone())
                .or_insert_with(|| ObjectIndex::for_object(object));
            for (id, rec) in recs {
                let after = idx.values(Some(rec));
                idx.change(id, &vec![None; after.len()], &after);
            }
        }
        Records {
            by_object,
            index,
            journal: None,
        }
    }

    pub fn get(&self, object: &str, id: &str) -> Option<&Record> {
        self.by_object.get(object)?.get(id)
    }

    /// A record with its key borrowed from the map, for callers that keep ids as long as the records.
    pub fn entry(&self, object: &str, id: &str) -> Option<(&str, &Record)> {
        self.by_object
            .get(object)?
            .get_key_value(id)
            .map(|(k, r)| (k.as_str(), r))
    }

    /// All records of an object in creation order.
    pub fn all(&self, object: &str) -> impl Iterator<Item = &Record> {
        self.by_object
            .get(object)
            .into_iter()
            .flat_map(|m| m.values())
    }

    /// Every object's records, objects by name and records in creation order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &BTreeMap<String, Record>)> {
        self.by_object.iter()
    }

    /// The ids of the records of `object` whose reference `field` holds `value` compared as SOQL does (case
    /// folded), in creation order, deleted ones included. `None` when the field is not indexed (not a reference
    /// field, or no record of the object was ever stored), so the caller must look at every record.
    pub fn holders(&self, object: &str, field: &str, value: &str) -> Option<Vec<&str>> {
        let index = self.index.get(object)?.field(field)?;
        Some(
            index
                .holders
                .get(fold_case(value).as_ref())
                .into_iter()
                .flatten()
                .map(|id| id.as_ref())
                .collect(),
        )
    }

    /// The records of `object` whose reference `field` holds exactly `id`, in creation order, deleted ones included:
    /// a parent's children, found through the index rather than by walking every record of the child object.
    pub fn referencing<'a>(&'a self, object: &str, field: &str, id: &str) -> Vec<&'a Record> {
        let holds = |r: &&Record| r.get(field).and_then(FieldValue::as_str) == Some(id);
        match self.holders(object, field, id) {
            Some(ids) => ids
                .into_iter()
                .filter_map(|i| self.get(object, i))
                .filter(holds)
                .collect(),
            None => self.all(object).filter(holds).collect(),
        }
    }

    /// Stores a record under `id`, new or replacing the one there.
    pub fn put(&mut self, object: &str, id: &str, rec: Record) {
        if !self.by_object.contains_key(object) {
            self.by_object.insert(object.to_string(), BTreeMap::new());
        }
        let slot = self
            .by_object
            .get_mut(object)
            .expect("the object's map was just made");
        let old = slot.insert(id.to_string(), rec);
        let idx = ObjectIndex::of(&mut self.index, object);
        idx.change(id, &idx.values(old.as_ref()), &idx.values(slot.get(id)));
        if let Some(journal) = &mut self.journal {
            journal
                .entry((object.to_string(), id.to_string()))
                .or_insert(old);
        }
    }

    /// Changes a record in place; false when there is no such record.
    pub fn edit(&mut self, object: &str, id: &str, change: impl FnOnce(&mut Record)) -> bool {
        let Some(rec) = self.by_object.get_mut(object).and_then(|m| m.get_mut(id)) else {
            return false;
        };
        if let Some(journal) = &mut self.journal {
            journal
                .entry((object.to_string(), id.to_string()))
                .or_insert_with(|| Some(rec.clone()));
        }
        let idx = ObjectIndex::of(&mut self.index, object);
        let before: Vec<Option<String>> = idx
            .values(Some(rec))
            .into_iter()
            .map(|v| v.map(str::to_string))
            .collect();
        change(rec);
        let before: Vec<Option<&str>> = before.iter().map(Option::as_deref).collect();
        idx.change(id, &before, &idx.values(Some(rec)));
        true
    }

    /// Changes every record of an object in place.
    pub fn edit_all(&mut self, object: &str, mut change: impl FnMut(&mut Record)) {
        let ids: Vec<String> = self
            .by_object
            .get(object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for id in ids {
            self.edit(object, &id, &mut change);
        }
    }

    fn remove(&mut self, object: &str, id: &str) {
        let Some(recs) = self.by_object.get_mut(object) else {
            return;
        };
        let Some(old) = recs.remove(id) else {
            return;
        };
        if recs.is_empty() {
            self.by_object.remove(object);
        }
        if let Some(idx) = self.index.get_mut(object) {
            let before = idx.values(Some(&old));
            idx.change(id, &before, &vec![None; before.len()]);
        }
        if let Some(journal) = &mut self.journal {
            journal
                .entry((object.to_string(), id.to_string()))
                .or_insert(Some(old));
        }
    }

    /// Removes every record.
    pub fn clear(&mut self) {
        let old = std::mem::take(&mut self.by_object);
        self.index.clear();
        if let Some(journal) = &mut self.journal {
            for (object, recs) in old {
                for (id, rec) in recs {
                    journal.entry((object.clone(), id)).or_insert(Some(rec));
                }
            }
        }
    }

    /// Starts remembering, for each record written from now on, how it stood before the first write.
    fn begin_journal(&mut self) {
        self.journal = Some(Journal::new());
    }

    /// Stops remembering; the writes stand.
    fn end_journal(&mut self) {
        self.journal = None;
    }

    /// Puts every record written since [`Records::begin_journal`] back as it stood, removing those created since.
    fn undo_journal(&mut self) {
        let Some(journal) = self.journal.take() else {
            return;
        };
        for ((object, id), before) in journal {
            match before {
                Some(rec) => self.put(&object, &id, rec),
                None => self.remove(&object, &id),
            }
        }
    }
}

impl Serialize for Records {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.by_object.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Records {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(deserializer).map(Records::from_map)
    }
}

/// The org as it stood before an all-or-none call, kept whole because the call's writes are not all made under
/// one lock (composite subrequests), so a journal could not tell them from other callers' writes.
pub struct Snapshot {
    records: BTreeMap<String, BTreeMap<String, Record>>,
    next_seq: u64,
}

/// An all-or-none call's journal is running; hand it back to keep or undo the call's writes.
#[must_use]
pub struct Undo {
    next_seq: u64,
}

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
    pub records: Records,
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
            records: Records::default(),
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
        self.records.get(object, id)
    }

    /// A record of any type, by id (15 or 18 characters).
    pub fn find_any(&self, id: &str) -> Option<(&'static str, &Record)> {
        let id = SalesforceId::parse(id).ok()?;
        let object = objects::object_for_prefix(id.as_str())?;
        self.get(object, id.as_str()).map(|r| (object, r))
    }

    /// All records of an object in creation order.
    pub fn all(&self, object: &str) -> impl Iterator<Item = &Record> {
        self.records.all(object)
    }

    /// Starts an all-or-none call made under one lock: from here every record written is journaled, so
    /// undoing costs what the call touched rather than a copy of the whole org.
    pub fn begin_undo(&mut self) -> Undo {
        self.records.begin_journal();
        Undo {
            next_seq: self.next_seq,
        }
    }

    /// Ends the call and keeps its writes.
    pub fn keep(&mut self, _undo: Undo) {
        self.records.end_journal();
    }

    /// Ends the call and undoes its writes, ids issued included.
    pub fn roll_back(&mut self, undo: Undo) {
        self.records.undo_journal();
        self.next_seq = undo.next_seq;
    }

    /// A copy of every record, for an all-or-none call whose writes interleave with other callers'.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            records: self.records.by_object.clone(),
            next_seq: self.next_seq,
        }
    }

    /// Puts the org back as the snapshot found it (the lookup index rebuilt to match).
    pub fn restore(&mut self, snap: Snapshot) {
        self.records = Records::from_map(snap.records);
        self.next_seq = snap.next_seq;
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

    /// What the index must say: the records whose field folds to the value, found by walking them all.
    fn scanned<'a>(records: &'a Records, object: &str, field: &str, value: &str) -> Vec<&'a str> {
        records
            .all(object)
            .filter(|r| {
                r.get(field)
                    .and_then(FieldValue::as_str)
                    .is_some_and(|v| fold_case(v) == fold_case(value))
            })
            .filter_map(|r| r.get("Id").and_then(FieldValue::as_str))
            .collect()
    }

    fn assert_index_matches_scan(records: &Records, parents: &[String], step: usize) {
        for parent in parents {
            for value in [parent.clone(), parent.to_lowercase(), parent.to_uppercase()] {
                let indexed = records
                    .holders("Contact", "AccountId", &value)
                    .unwrap_or_default();
                assert_eq!(
                    indexed,
                    scanned(records, "Contact", "AccountId", &value),
                    "step {step}: AccountId = {value}"
                );
            }
            let exact: Vec<&Record> = records
                .all("Contact")
                .filter(|r| {
                    r.get("AccountId").and_then(FieldValue::as_str) == Some(parent.as_str())
                })
                .collect();
            assert_eq!(
                records.referencing("Contact", "AccountId", parent),
                exact,
                "step {step}"
            );
        }
    }

    fn contact(id: &str, account: Option<&String>) -> Record {
        let mut rec = Record::new();
        rec.insert("Id".into(), FieldValue::text(id));
        rec.insert("LastName".into(), FieldValue::text("Index"));
        rec.insert(
            "AccountId".into(),
            account.map_or(FieldValue::Null, |a| FieldValue::text(a.clone())),
        );
        rec
    }

    #[test]
    fn the_lookup_index_answers_as_a_scan_across_every_kind_of_write() {
        let mut org = Org::empty();
        let parents: Vec<String> = (0..4).map(|_| org.new_id("001")).collect();
        let mut ids: Vec<String> = Vec::new();
        let mut records = Records::default();
        assert!(
            records
                .holders("Contact", "AccountId", &parents[0])
                .is_none(),
            "nothing is indexed before the first contact"
        );
        // A fixed pseudo-random walk through every write the org makes (a linear congruential generator, so each
        // run takes the same steps).
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize % n
        };
        let mut saved: Option<(Records, usize)> = None;
        for step in 0..600 {
            let parent = match next(5) {
                4 => None,
                i => Some(&parents[i]),
            };
            match next(10) {
                0..=2 => {
                    let id = org.new_id("003");
                    records.put("Contact", &id, contact(&id, parent));
                    ids.push(id);
                }
                3 | 4 if !ids.is_empty() => {
                    let id = ids[next(ids.len())].clone();
                    records.put("Contact", &id, contact(&id, parent));
                }
                5 | 6 if !ids.is_empty() => {
                    let id = ids[next(ids.len())].clone();
                    let value = parent.map_or(FieldValue::Null, |p| FieldValue::text(p.clone()));
                    // A clear kept by the journal's end may have taken it.
                    let exists = records.get("Contact", &id).is_some();
                    let edited = records.edit("Contact", &id, |r| {
                        r.insert("AccountId".into(), value);
                        r.insert("IsDeleted".into(), FieldValue::Bool(true));
                    });
                    assert_eq!(edited, exists);
                }
                7 if saved.is_none() => {
                    // Remember the state the journal must bring back (a copy through the state file's form).
                    let copy: Records =
                        serde_json::from_slice(&serde_json::to_vec(&records).unwrap()).unwrap();
                    saved = Some((copy, ids.len()));
                    records.begin_journal();
                }
                8 if saved.is_some() => {
                    let (before, count) = saved.take().unwrap();
                    if next(2) == 0 {
                        records.undo_journal();
                        ids.truncate(count);
                        assert_eq!(
                            serde_json::to_value(&records).unwrap(),
                            serde_json::to_value(&before).unwrap(),
                            "step {step}: the undo brings every record back"
                        );
                    } else {
                        records.end_journal();
                    }
                }
                9 if next(8) == 0 => {
                    records.clear();
                    if saved.is_none() {
                        ids.clear();
                    }
                }
                _ => {}
            }
            assert_index_matches_scan(&records, &parents, step);
        }
        let reloaded: Records =
            serde_json::from_slice(&serde_json::to_vec(&records).unwrap()).unwrap();
        assert_index_matches_scan(&reloaded, &parents, usize::MAX);
    }

    #[test]
    fn an_undone_call_leaves_no_trace_of_the_objects_it_first_wrote() {
        let mut org = Org::empty();
        let account = org.new_id("001");
        let undo = org.begin_undo();
        let id = org.new_id("003");
        org.records
            .put("Contact", &id, contact(&id, Some(&account)));
        org.roll_back(undo);
        assert_eq!(org.records.iter().count(), 0);
        assert_eq!(org.new_id("003"), id, "the id is issued again");
        assert_eq!(
            org.records.holders("Contact", "AccountId", &account),
            Some(vec![])
        );
    }
}
