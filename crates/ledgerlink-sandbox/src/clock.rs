//! The sandbox clock: wall time plus an offset that tests and the admin API can advance, so token expiry and
//! due dates can be exercised without waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }

    /// Moves the clock forward (never backward: timestamps already handed out stay in the past).
    pub fn advance(&self, by: Duration) {
        let ms = by.num_milliseconds().max(0);
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn offset(&self) -> Duration {
        Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }
}
