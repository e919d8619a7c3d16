//! The versions a poll has seen in its overlap window, kept compact.
//!
//! Why: the poll re-reads an overlap window behind its cursor, and recognises what it already queued by
//! (id, version). After a backfill that window holds every record it changed — 100,000 entries — and the cursor
//! is saved after every page. As a map of id text to version text that was ~150 bytes per entry in memory and
//! ~50 in the stored JSON, parsed into 200,000 strings and re-encoded at every page. Here an entry is the 64-bit
//! hash of the id, the version's time in whole seconds (what the window is trimmed by; rounding down keeps an
//! entry a fraction of a second longer, never shorter) and the 64-bit hash of the version text: 20 bytes, stored
//! as one base64 string.
//!
//! The hashes are FNV-1a (fixed, so a cursor saved by one release reads the same in the next). Two different
//! (id, version) pairs with equal hashes would make a change look seen; with 64-bit hashes of both parts that
//! is about one chance in 10^14 for a window of 100,000, far below the other ways a change can be missed.
//! A cursor saved in the older form (a JSON object of id → version) is still read.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::keys;

/// The format tag of the compact form.
const FORMAT: &str = "fnv64-s32-fnv64";
const ENTRY: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// Whole seconds since the epoch of the version's change time (rounded down).
    at_s: u32,
    version: u64,
}

/// Seen versions by record id (see the module docs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeenVersions {
    entries: HashMap<u64, Entry>,
}

impl SeenVersions {
    /// Reads a cursor's `seen` value, compact or in the older id → version form. Anything else reads as empty
    /// (the job keys still make a re-read change a no-op).
    pub fn from_json(value: &Value) -> SeenVersions {
        let mut seen = SeenVersions::default();
        match value {
            Value::Object(map) if map.get("format").and_then(Value::as_str) == Some(FORMAT) => {
                let bytes = map.get("entries").and_then(Value::as_str).and_then(|s| STANDARD.decode(s).ok()).unwrap_or_default();
                for chunk in bytes.chunks_exact(ENTRY) {
                    let (id, rest) = chunk.split_at(8);
                    let (at, version) = rest.split_at(4);
                    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
                    let at_s = u32::from_le_bytes(at.try_into().unwrap_or_default());
                    seen.entries.insert(word(id), Entry { at_s, version: word(version) });
                }
            }
            Value::Object(map) => {
                for (id, version) in map {
                    if let Some(version) = version.as_str() {
                        seen.insert(id, version);
                    }
                }
            }
            _ => {}
        }
        seen
    }

    /// The compact form, entries in hash order (so equal sets encode equally).
    pub fn to_json(&self) -> Value {
        let mut ids: Vec<&u64> = self.entries.keys().collect();
        ids.sort_unstable();
        let mut bytes = Vec::with_capacity(ids.len() * ENTRY);
        for id in ids {
            let e = self.entries[id];
            bytes.extend_from_slice(&id.to_le_bytes());
            bytes.extend_from_slice(&e.at_s.to_le_bytes());
            bytes.extend_from_slice(&e.version.to_le_bytes());
        }
        json!({"format": FORMAT, "entries": STANDARD.encode(bytes)})
    }

    /// Whether `id` was seen at exactly `version`.
    pub fn contains(&self, id: &str, version: &str) -> bool {
        self.entries.get(&fnv64(id)).is_some_and(|e| e.version == fnv64(version))
    }

    /// Notes `id` as seen at `version` (a [`keys::version_of`] text), replacing an older version.
    pub fn insert(&mut self, id: &str, version: &str) {
        let at_s = keys::version_time(version).map_or(0, seconds);
        self.entries.insert(fnv64(id), Entry { at_s, version: fnv64(version) });
    }

    /// Keeps only the versions changed at or after `horizon` (the next poll's window cannot show older ones).
    pub fn retain_since(&mut self, horizon: DateTime<Utc>) {
        let h = seconds(horizon);
        self.entries.retain(|_, e| e.at_s >= h);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Whole seconds since the epoch, rounded down, within `u32` (up to the year 2106).
fn seconds(t: DateTime<Utc>) -> u32 {
    u32::try_from(t.timestamp().max(0)).unwrap_or(u32::MAX)
}

/// 64-bit FNV-1a.
fn fnv64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn version(secs: i64, counter: Option<&str>) -> String {
        keys::version_of(Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap(), counter)
    }

    #[test]
    fn knows_exactly_the_versions_it_was_given_and_survives_its_stored_form() {
        let mut seen = SeenVersions::default();
        seen.insert("001A", &version(0, None));
        seen.insert("001B", &version(5, Some("3")));
        seen.insert("001A", &version(9, None)); // a newer version replaces the older one
        assert!(seen.contains("001A", &version(9, None)));
        assert!(!seen.contains("001A", &version(0, None)));
        assert!(seen.contains("001B", &version(5, Some("3"))));
        assert!(!seen.contains("001B", &version(5, Some("4"))), "same time, other counter: a new version");
        assert!(!seen.contains("001C", &version(5, Some("3"))));

        let stored = seen.to_json();
        assert_eq!(SeenVersions::from_json(&stored), seen);
        // Encoding is canonical: the same set in another insertion order stores the same text.
        let mut again = SeenVersions::default();
        again.insert("001B", &version(5, Some("3")));
        again.insert("001A", &version(9, None));
        assert_eq!(again.to_json(), stored);
    }

    #[test]
    fn trims_to_the_window_and_reads_the_older_form() {
        let legacy = json!({"001A": version(0, None), "001B": version(100, Some("7"))});
        let mut seen = SeenVersions::from_json(&legacy);
        assert!(seen.contains("001A", &version(0, None)) && seen.contains("001B", &version(100, Some("7"))));
        seen.retain_since(Utc.timestamp_opt(1_800_000_000 + 50, 0).unwrap());
        assert!(!seen.contains("001A", &version(0, None)));
        assert!(seen.contains("001B", &version(100, Some("7"))));
        assert_eq!(seen.len(), 1);
        assert!(SeenVersions::from_json(&json!(null)).is_empty());
    }

    #[test]
    fn a_hundred_thousand_entries_store_in_well_under_two_thirds_of_the_older_form() {
        let mut seen = SeenVersions::default();
        let mut legacy = serde_json::Map::new();
        for i in 0..100_000 {
            let id = format!("001Hs{i:013}");
            let v = version(i % 120, None);
            seen.insert(&id, &v);
            legacy.insert(id, json!(v));
        }
        assert_eq!(seen.len(), 100_000);
        let compact = seen.to_json().to_string().len();
        let older = Value::Object(legacy).to_string().len();
        assert!(compact * 3 < older * 2, "compact {compact} bytes, older form {older} bytes");
    }
}
