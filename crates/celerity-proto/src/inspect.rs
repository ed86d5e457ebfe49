//! The results of the control commands that look at the tasks a worker holds (`active`,
//! `reserved`, `scheduled`) and of those that change its pool and queues (`pool_grow`,
//! `pool_shrink`, `add_consumer`, `cancel_consumer`, `shutdown`). The golden files
//! `tests/golden/control_v1_*.json` pin their bytes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One task a worker holds, in an `active` or `reserved` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HeldTask {
    /// The task id.
    pub id: String,
    /// The task name.
    pub task: String,
    /// The queue it came from.
    pub queue: String,
    /// Its priority level.
    pub priority: u8,
    /// Retries before this run.
    pub retries: u32,
    /// This message's deliveries so far, this one included (above 1: a redelivery).
    pub delivered: u64,
    /// When the worker took it (Unix ms).
    pub received_at_ms: u64,
    /// When its body started (Unix ms); `null` while reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// Its positional arguments, when its body decodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<Value>>,
    /// Its keyword arguments, when its body decodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kwargs: Option<serde_json::Map<String, Value>>,
    /// The canvas it belongs to (the first task's id), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_id: Option<String>,
}

impl HeldTask {
    /// Task `id` of `task`, taken from `queue` at `received_at_ms`; the other fields empty.
    pub fn new(
        id: impl Into<String>,
        task: impl Into<String>,
        queue: impl Into<String>,
        received_at_ms: u64,
    ) -> Self {
        Self {
            id: id.into(),
            task: task.into(),
            queue: queue.into(),
            priority: 0,
            retries: 0,
            delivered: 1,
            received_at_ms,
            started_at_ms: None,
            args: None,
            kwargs: None,
            root_id: None,
        }
    }
}

/// The `result` of an `active` reply (tasks whose body runs) or a `reserved` reply (tasks taken
/// and not started: waiting for a rate limit or an execution slot), oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HeldTasksResult {
    /// The tasks.
    pub tasks: Vec<HeldTask>,
}

impl HeldTasksResult {
    /// The answer of a worker holding `tasks` (sorted here, oldest first).
    pub fn new(mut tasks: Vec<HeldTask>) -> Self {
        tasks.sort_by(|a, b| (a.received_at_ms, &a.id).cmp(&(b.received_at_ms, &b.id)));
        Self { tasks }
    }
}

/// One delayed task, in a `scheduled` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScheduledTask {
    /// The task id.
    pub id: String,
    /// The task name.
    pub task: String,
    /// The queue it goes to when due.
    pub queue: String,
    /// Its priority level.
    pub priority: u8,
    /// When it is due (Unix ms).
    pub eta_ms: u64,
    /// Retries before it (a retry's backoff waits here too).
    pub retries: u32,
}

impl ScheduledTask {
    /// Task `id` of `task`, due in `queue` at `eta_ms`.
    pub fn new(
        id: impl Into<String>,
        task: impl Into<String>,
        queue: impl Into<String>,
        eta_ms: u64,
    ) -> Self {
        Self {
            id: id.into(),
            task: task.into(),
            queue: queue.into(),
            priority: 0,
            eta_ms,
            retries: 0,
        }
    }
}

/// The `result` of a `scheduled` reply. The server holds delayed tasks (in the delayed stream)
/// and one worker, the active scheduler, moves them to their queues when due: that worker lists
/// them (the first `limit`, soonest first) and every other worker answers `scheduler: false` with
/// none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScheduledResult {
    /// Whether this worker is the active scheduler.
    pub scheduler: bool,
    /// Delayed tasks waiting in all (0 from a worker that is not the scheduler).
    pub total: u64,
    /// The listed ones, soonest first.
    pub tasks: Vec<ScheduledTask>,
}

impl ScheduledResult {
    /// The answer of the active scheduler holding `total` tasks, `tasks` of them listed (sorted
    /// here, soonest first).
    pub fn active(total: u64, mut tasks: Vec<ScheduledTask>) -> Self {
        tasks.sort_by(|a, b| (a.eta_ms, &a.id).cmp(&(b.eta_ms, &b.id)));
        Self {
            scheduler: true,
            total,
            tasks,
        }
    }

    /// The answer of a worker that is not the active scheduler.
    pub fn inactive() -> Self {
        Self {
            scheduler: false,
            total: 0,
            tasks: Vec::new(),
        }
    }
}

/// The `result` of a `pool_grow` or `pool_shrink` reply: the worker's execution slots now.
///
/// ```
/// # use celerity_proto::PoolResult;
/// let json = serde_json::to_value(PoolResult::new(6))?;
/// assert_eq!(json, serde_json::json!({"concurrency": 6}));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PoolResult {
    /// Execution slots after the change (a shrink takes effect as running tasks end).
    pub concurrency: usize,
}

impl PoolResult {
    /// A pool of `concurrency` slots.
    pub fn new(concurrency: usize) -> Self {
        Self { concurrency }
    }
}

/// The `result` of an `add_consumer` or `cancel_consumer` reply: the queues the worker consumes
/// after the change, sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConsumersResult {
    /// The queues.
    pub queues: Vec<String>,
}

impl ConsumersResult {
    /// A worker consuming `queues` (sorted here).
    pub fn new(mut queues: Vec<String>) -> Self {
        queues.sort();
        Self { queues }
    }
}

/// The `result` of a `shutdown` reply: the worker is shutting down.
///
/// ```
/// # use celerity_proto::ShutdownResult;
/// let json = serde_json::to_value(ShutdownResult::new(false))?;
/// assert_eq!(json, serde_json::json!({"shutdown": "warm"}));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ShutdownResult {
    /// `warm` (running tasks finish) or `cold` (they go back to their queues).
    pub shutdown: String,
}

impl ShutdownResult {
    /// A warm shutdown, or with `cold` a cold one.
    pub fn new(cold: bool) -> Self {
        let mode = if cold { "cold" } else { "warm" };
        Self {
            shutdown: mode.to_owned(),
        }
    }
}
