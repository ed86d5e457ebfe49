//! Wall-clock time in the protocol's unit: milliseconds since the Unix epoch (UTC).

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds. A clock before 1970 reads as 0.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// `time` in Unix milliseconds; a time before 1970 reads as 0.
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Now, in Unix microseconds. A clock before 1970 reads as 0.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}
