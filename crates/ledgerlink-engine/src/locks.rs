//! Per-key mutual exclusion inside one process. Two jobs that would create the same target record (two deals of
//! one new account) take turns, so the second finds the first one's link instead of racing it. Across processes
//! the deterministic idempotency key still makes the race harmless; this keeps it from happening at all locally.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct KeyedLocks {
    inner: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while the key is locked; the entry is dropped from the map when nobody else waits on it.
pub struct KeyGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    pub async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let m = {
            let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.to_string()).or_default().clone()
        };
        let guard = m.lock_owned().await;
        KeyGuard { locks: self, key: key.to_string(), guard: Some(guard) }
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = map.get(&self.key) {
            // Only the map holds it: nobody is waiting.
            if Arc::strong_count(m) == 1 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_key_is_exclusive_and_entries_are_cleaned_up() {
        let locks = Arc::new(KeyedLocks::default());
        let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let max_seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (locks, counter, max_seen) = (locks.clone(), counter.clone(), max_seen.clone());
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock("k").await;
                let now = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                max_seen.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                tokio::task::yield_now().await;
                counter.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(max_seen.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(locks.inner.lock().unwrap().is_empty());
    }
}
