//! The change keys of record versions this process wrote itself (a write-back), remembered for a while, so the
//! poll that reads such a version back knows it is handled without asking the store.
//!
//! Why: every write-back comes back through the next poll as a new version. The store knows it (the own-write
//! job that occupies its change key, `Store::enqueue_done`), but asking meant an insert that conflicts and a
//! select: on PostgreSQL two more round trips on the writer's connection for most of the records a flow
//! writes back. The store stays the truth: a key not remembered here (written by another worker, or before a
//! restart, or forgotten) is asked about as before. A key is remembered only after the store recorded it.
//!
//! Keys are kept as 64-bit hashes; two different keys with equal hashes would make a change look handled, about
//! one chance in 10^10 with the set full, far below the other ways a change can be missed.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

/// At most this many keys (about 3 MB); the oldest go first. A version comes back at the next poll, seconds
/// after it was written, so only a backlog of more write-backs than this between two polls asks the store.
const CAPACITY: usize = 100_000;

#[derive(Debug, Default)]
pub struct OwnWrites {
    keys: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

fn hash(key: &str) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

impl OwnWrites {
    /// Remembers `key` (a change job key) as a version this process wrote and recorded.
    pub fn remember(&self, key: &str) {
        let h = hash(key);
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.set.insert(h) {
            keys.order.push_back(h);
            if keys.order.len() > CAPACITY
                && let Some(old) = keys.order.pop_front()
            {
                keys.set.remove(&old);
            }
        }
    }

    /// Whether `key` is one this process remembers writing.
    pub fn contains(&self, key: &str) -> bool {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).set.contains(&hash(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_recorded_keys_and_forgets_the_oldest_beyond_capacity() {
        let own = OwnWrites::default();
        assert!(!own.contains("flow/sf/Opportunity/006A/v1"));
        own.remember("flow/sf/Opportunity/006A/v1");
        own.remember("flow/sf/Opportunity/006A/v1");
        assert!(own.contains("flow/sf/Opportunity/006A/v1"));
        assert!(!own.contains("flow/sf/Opportunity/006A/v2"));
        for i in 0..CAPACITY {
            own.remember(&format!("k{i}"));
        }
        assert!(!own.contains("flow/sf/Opportunity/006A/v1"), "the oldest key is forgotten");
        assert!(own.contains("k0") && own.contains(&format!("k{}", CAPACITY - 1)));
    }
}
