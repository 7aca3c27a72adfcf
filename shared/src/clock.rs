//! The wall clock in the one unit ferry's state and protocols count in: milliseconds since the
//! Unix epoch (token expiries, lease deadlines, Lambda deadlines). One definition, so every
//! comparison of those times reads the same clock the same way.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
