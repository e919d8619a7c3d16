//! Copies of linked target records (a QuickBooks customer, an item) this process read, created or matched a
//! moment ago, so `find_or_create` does not GET the same customer again for every deal of a burst.
//!
//! Why a short time-to-live and not the link table: a linked record can change or disappear in the target system
//! at any time, and nothing tells the engine. Within [`RecentRecords::ttl`] of the last read a run may use a copy
//! that is that much older than a fresh GET would be — the same staleness a run already accepts between its read
//! and its write. A run never writes what it read from here back to the record (the two-way `sync` step reads its
//! records itself), so no sync hash is computed from a cached copy. A deleted customer is noticed at the next
//! read after the copy expires; an invoice refused meanwhile goes to review like any refused write.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ledgerlink_connectors::Record;

/// At most this many copies; when full, expired ones are dropped, and if none had expired, all of them.
const CAPACITY: usize = 10_000;

/// (connection, object, id).
type Key = (String, String, String);

#[derive(Debug)]
pub struct RecentRecords {
    ttl: Duration,
    /// Each copy with when it was read.
    copies: Mutex<HashMap<Key, (Instant, Record)>>,
}

impl RecentRecords {
    /// `ttl` zero keeps nothing (every linked record is read each time).
    pub fn new(ttl: Duration) -> RecentRecords {
        RecentRecords { ttl, copies: Mutex::default() }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The copy of `connection`/`object`/`id`, if one was kept less than the TTL ago.
    pub fn get(&self, connection: &str, object: &str, id: &str) -> Option<Record> {
        if self.ttl.is_zero() {
            return None;
        }
        let copies = self.copies.lock().unwrap_or_else(|p| p.into_inner());
        let key = (connection.to_string(), object.to_string(), id.to_string());
        copies.get(&key).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, rec)| rec.clone())
    }

    /// Keeps `record` as the current copy of `connection`/`object`/`id`.
    pub fn put(&self, connection: &str, object: &str, id: &str, record: &Record) {
        if self.ttl.is_zero() || id.is_empty() {
            return;
        }
        let mut copies = self.copies.lock().unwrap_or_else(|p| p.into_inner());
        if copies.len() >= CAPACITY {
            copies.retain(|_, (at, _)| at.elapsed() < self.ttl);
            if copies.len() >= CAPACITY {
                copies.clear();
            }
        }
        copies.insert((connection.to_string(), object.to_string(), id.to_string()), (Instant::now(), record.clone()));
    }

    /// Drops the copy of a record this process just changed.
    pub fn forget(&self, connection: &str, object: &str, id: &str) {
        let mut copies = self.copies.lock().unwrap_or_else(|p| p.into_inner());
        copies.remove(&(connection.to_string(), object.to_string(), id.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(name: &str) -> Record {
        json!({"Id": "1", "DisplayName": name}).as_object().unwrap().clone()
    }

    #[test]
    fn a_copy_is_served_until_it_expires_or_is_forgotten() {
        let r = RecentRecords::new(Duration::from_millis(200));
        assert!(r.get("qb", "Customer", "1").is_none());
        r.put("qb", "Customer", "1", &rec("Acme"));
        assert_eq!(r.get("qb", "Customer", "1"), Some(rec("Acme")));
        assert!(r.get("qb", "Item", "1").is_none(), "objects are kept apart");
        r.forget("qb", "Customer", "1");
        assert!(r.get("qb", "Customer", "1").is_none());
        r.put("qb", "Customer", "1", &rec("Acme"));
        std::thread::sleep(Duration::from_millis(250));
        assert!(r.get("qb", "Customer", "1").is_none(), "an expired copy is never served");
    }

    #[test]
    fn a_zero_ttl_keeps_nothing() {
        let r = RecentRecords::new(Duration::ZERO);
        r.put("qb", "Customer", "1", &rec("Acme"));
        assert!(r.get("qb", "Customer", "1").is_none());
    }
}
