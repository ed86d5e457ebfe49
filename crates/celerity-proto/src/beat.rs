//! Periodic tasks (beat): the scheduler's lease and the state of each entry, kept in the beat KV
//! bucket (`<ns>_beat`) so that any scheduler can take over and any tool can list them.

use serde::{Deserialize, Serialize};

/// The key of the scheduler lease in the beat bucket.
pub const BEAT_LEADER_KEY: &str = "leader";

/// The lease of the active scheduler (key [`BEAT_LEADER_KEY`]): held while `until_ms` is in the
/// future, renewed by compare-and-set, taken over by compare-and-set once it has lapsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BeatLease {
    /// Protocol version.
    pub v: u32,
    /// The hostname of the worker running the scheduler.
    pub holder: String,
    /// Unix milliseconds until which the lease holds.
    pub until_ms: u64,
    /// The names of the entries the holder schedules.
    #[serde(default)]
    pub entries: Vec<String>,
}

impl BeatLease {
    /// A version-1 lease.
    pub fn new(holder: impl Into<String>, until_ms: u64, entries: Vec<String>) -> Self {
        Self {
            v: crate::PROTOCOL_VERSION,
            holder: holder.into(),
            until_ms,
            entries,
        }
    }
}

/// The state of one entry (key `entry.<name>`), written by the active scheduler each time it
/// sends the entry's task.
///
/// Ticks are the times the schedule says the task is due; the task sent for tick `t` has the id
/// `beat-<name>-<t>` ([`beat_task_id`]), so a tick sent twice (by two schedulers around a
/// failover) is stored once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BeatEntryState {
    /// Protocol version.
    pub v: u32,
    /// The entry's name.
    pub name: String,
    /// The task it sends.
    pub task: String,
    /// The schedule, as written: `every 30s` or `cron */5 * * * *`.
    pub schedule: String,
    /// When this schedule was first seen (Unix ms); interval ticks fall on `anchor + k × every`.
    pub anchor_ms: u64,
    /// The last tick sent, or the anchor before the first.
    pub last_tick_ms: u64,
    /// When the last task was sent (Unix ms).
    #[serde(default)]
    pub last_run_ms: Option<u64>,
    /// The id of the last task sent.
    #[serde(default)]
    pub last_task_id: Option<String>,
    /// The next tick.
    #[serde(default)]
    pub next_tick_ms: Option<u64>,
    /// How many ticks were sent.
    #[serde(default)]
    pub runs: u64,
}

impl BeatEntryState {
    /// The state of an entry first seen at `now_ms`: no tick sent, the next one at `next_tick_ms`.
    pub fn new(
        name: impl Into<String>,
        task: impl Into<String>,
        schedule: impl Into<String>,
        now_ms: u64,
        next_tick_ms: Option<u64>,
    ) -> Self {
        Self {
            v: crate::PROTOCOL_VERSION,
            name: name.into(),
            task: task.into(),
            schedule: schedule.into(),
            anchor_ms: now_ms,
            last_tick_ms: now_ms,
            last_run_ms: None,
            last_task_id: None,
            next_tick_ms,
            runs: 0,
        }
    }
}

/// The beat-bucket key of entry `name`: `entry.<name>`.
pub fn beat_entry_key(name: &str) -> String {
    format!("entry.{name}")
}

/// The task id of the tick `tick_ms` of entry `name`: `beat-<name>-<tick_ms>`.
///
/// ```
/// assert_eq!(celerity_proto::beat_task_id("cleanup", 1700000000000), "beat-cleanup-1700000000000");
/// ```
pub fn beat_task_id(name: &str, tick_ms: u64) -> String {
    format!("beat-{name}-{tick_ms}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_their_documented_shape() {
        let lease = BeatLease::new("w1", 5, vec!["a".to_owned()]);
        assert_eq!(
            serde_json::to_value(&lease).unwrap(),
            serde_json::json!({"v": 1, "holder": "w1", "until_ms": 5, "entries": ["a"]})
        );
        let state = BeatEntryState::new("a", "tasks.a", "every 30s", 1000, Some(31_000));
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["last_tick_ms"], 1000);
        assert_eq!(json["runs"], 0);
        assert_eq!(
            serde_json::from_value::<BeatEntryState>(json).unwrap(),
            state
        );
    }
}
