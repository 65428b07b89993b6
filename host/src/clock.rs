//! Wall-clock time, for what is recorded (when a checkpoint's barrier was
//! taken, when a status was written, when a job was deployed): durations
//! and deadlines use tokio's monotonic clock, which the deterministic
//! simulation pauses and advances.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
