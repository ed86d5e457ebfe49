//! Control messages: requests to workers and their replies, over core NATS request/reply.
//!
//! A request goes to one worker (`<ns>.control.<worker token>`) or to all (`<ns>.control.all`,
//! replies gathered until a deadline). Bodies are JSON.
//! Each command's reply carries one result record ([`PingResult`], [`RevokeResult`],
//! [`RateLimitResult`], [`PriorityWeightsResult`]); a revocation is stored as a
//! [`RevocationRecord`]. The golden files `tests/golden/control_v1_*.json` and
//! `tests/golden/revocation_v1.json` pin their bytes.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A control command.
///
/// ```
/// # use celerity_proto::ControlCommand;
/// let json = serde_json::to_value(ControlCommand::Revoke { task_id: "t1".into(), terminate: true })?;
/// assert_eq!(json, serde_json::json!({"command": "revoke", "task_id": "t1", "terminate": true}));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ControlCommand {
    /// Are you there? Replies with the worker's hostname and queues.
    Ping,
    /// Stop a task: never run it, and with `terminate` abort it if it is running.
    Revoke {
        /// The task id.
        task_id: String,
        /// Also abort it if it is running.
        #[serde(default)]
        terminate: bool,
    },
    /// Change a task's rate limit, and store the change so it outlives the workers: for the worker
    /// addressed (a request on its own subject), for every worker (a broadcast), or for the whole
    /// cluster (`global`).
    RateLimit {
        /// The task name.
        task: String,
        /// The new rate; `null` is no limit.
        #[serde(default)]
        rate: Option<crate::Rate>,
        /// A cluster-wide limit instead of a per-worker one.
        #[serde(default)]
        global: bool,
        /// Delete the stored value instead, so the task's own option applies again (`rate` is
        /// ignored).
        #[serde(default)]
        reset: bool,
    },
    /// The task names the worker runs (Celery's `inspect registered`); the reply's result is a
    /// [`RegisteredResult`].
    Registered,
    /// The worker's figures (Celery's `inspect stats`); a [`StatsResult`].
    Stats,
    /// The queues the worker consumes, with their streams and levels (Celery's
    /// `inspect active_queues`); an [`ActiveQueuesResult`].
    ActiveQueues,
    /// The revoked task and canvas ids the worker holds (Celery's `inspect revoked`); a
    /// [`RevokedResult`].
    Revoked,
    /// The tasks whose body runs now (Celery's `inspect active`); a
    /// [`HeldTasksResult`](crate::HeldTasksResult).
    Active,
    /// The tasks taken and not started (Celery's `inspect reserved`): waiting for a rate limit or
    /// an execution slot; a [`HeldTasksResult`](crate::HeldTasksResult).
    Reserved,
    /// The delayed tasks (countdown, ETA, retry backoff), listed by the active scheduler (Celery's
    /// `inspect scheduled`); a [`ScheduledResult`](crate::ScheduledResult).
    Scheduled {
        /// List at most this many (default 100, at most 1,000).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Stop the worker: warm (running tasks finish; the default) or `cold`; a
    /// [`ShutdownResult`](crate::ShutdownResult), sent before it stops.
    Shutdown {
        /// Return running tasks to their queues instead of finishing them.
        #[serde(default)]
        cold: bool,
    },
    /// Add `n` execution slots (Celery's `pool_grow`); a [`PoolResult`](crate::PoolResult).
    PoolGrow {
        /// How many (at least 1).
        n: u32,
    },
    /// Remove `n` execution slots, as running tasks end (Celery's `pool_shrink`); at least one
    /// slot stays; a [`PoolResult`](crate::PoolResult).
    PoolShrink {
        /// How many (at least 1).
        n: u32,
    },
    /// Start consuming `queue` (Celery's `add_consumer`), creating its stream and consumers if
    /// needed; a [`ConsumersResult`](crate::ConsumersResult).
    AddConsumer {
        /// The queue name.
        queue: String,
    },
    /// Stop consuming `queue` (Celery's `cancel_consumer`): no new tasks from it, running ones
    /// finish; a [`ConsumersResult`](crate::ConsumersResult).
    CancelConsumer {
        /// The queue name.
        queue: String,
    },
    /// Change how workers pick among priority levels, and store the change: for the worker
    /// addressed, or for every worker (a broadcast).
    PriorityWeights {
        /// The weights of priorities 0 to 9; `null` is strict priorities.
        #[serde(default)]
        weights: Option<[u32; 10]>,
        /// Delete the stored value instead, so the worker's own flags apply again.
        #[serde(default)]
        reset: bool,
    },
}

impl ControlCommand {
    /// The `command` name of every command, as requests spell it: a worker answers a request
    /// naming another with `unknown_command`.
    pub const NAMES: [&'static str; 16] = [
        "ping",
        "revoke",
        "rate_limit",
        "registered",
        "stats",
        "active_queues",
        "revoked",
        "active",
        "reserved",
        "scheduled",
        "shutdown",
        "pool_grow",
        "pool_shrink",
        "add_consumer",
        "cancel_consumer",
        "priority_weights",
    ];
}

/// A control request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ControlRequest {
    /// Protocol version.
    pub v: u32,
    /// The command.
    #[serde(flatten)]
    pub command: ControlCommand,
}

impl ControlRequest {
    /// A version-1 request.
    pub fn new(command: ControlCommand) -> Self {
        Self {
            v: crate::PROTOCOL_VERSION,
            command,
        }
    }
}

/// A worker's reply to a control request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ControlReply {
    /// The replying worker's hostname.
    pub worker: String,
    /// Whether the command was carried out.
    pub ok: bool,
    /// What the command returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why it was not carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What kind of refusal it is, for programs: `malformed` (not a request), `unsupported_version`,
    /// `unknown_command` (a command this worker does not know: an older worker),
    /// `invalid_argument` (a field out of its range or an invalid name), `not_registered` (a task
    /// the worker does not run), `refused` (the worker's state does not allow it now),
    /// `failed` (the worker could not carry it out: a NATS error), `reply_too_large`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl ControlReply {
    /// The same reply with the refusal code `code` (see [`ControlReply::code`]).
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// A successful reply.
    pub fn ok(worker: impl Into<String>, result: Value) -> Self {
        Self {
            worker: worker.into(),
            ok: true,
            result: Some(result),
            error: None,
            code: None,
        }
    }

    /// A successful reply whose `result` is the record `result` (one of the `*Result` records).
    ///
    /// ```
    /// # use celerity_proto::{ControlReply, RevokeResult};
    /// let reply = ControlReply::with_result("w1", &RevokeResult::new("t1", true))?;
    /// assert_eq!(reply.result, Some(serde_json::json!({"revoked": "t1", "terminated": true})));
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    ///
    /// # Errors
    /// The record's serialization error (the records of this module serialize without one).
    pub fn with_result<T: Serialize>(
        worker: impl Into<String>,
        result: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::ok(worker, serde_json::to_value(result)?))
    }

    /// A refusal, with the reason.
    pub fn refused(worker: impl Into<String>, error: impl Into<String>) -> Self {
        Self {
            worker: worker.into(),
            ok: false,
            result: None,
            error: Some(error.into()),
            code: None,
        }
    }

    /// The `result` read as the record `T` (`None` for a refusal or a reply without a result).
    ///
    /// ```
    /// # use celerity_proto::{ControlReply, RevokeResult};
    /// let reply: ControlReply = serde_json::from_str(
    ///     r#"{"worker":"w1","ok":true,"result":{"revoked":"t1","terminated":false}}"#,
    /// )?;
    /// let result = reply.result_as::<RevokeResult>().transpose()?;
    /// assert_eq!(result.map(|result| result.terminated), Some(false));
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn result_as<T: DeserializeOwned>(&self) -> Option<Result<T, serde_json::Error>> {
        self.result.clone().map(serde_json::from_value)
    }
}

/// The `result` of a `ping` reply: the worker's queues and execution slots.
///
/// ```
/// # use celerity_proto::PingResult;
/// let json = serde_json::to_value(PingResult::new(vec!["default".into()], 8))?;
/// assert_eq!(json, serde_json::json!({"pong": true, "queues": ["default"], "concurrency": 8}));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PingResult {
    /// Always `true`.
    pub pong: bool,
    /// The queues the worker consumes.
    pub queues: Vec<String>,
    /// The worker's execution slots.
    pub concurrency: usize,
}

impl PingResult {
    /// The answer of a worker that consumes `queues` with `concurrency` slots.
    pub fn new(queues: Vec<String>, concurrency: usize) -> Self {
        Self {
            pong: true,
            queues,
            concurrency,
        }
    }
}

/// The `result` of a `registered` reply: the task names the worker runs, sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RegisteredResult {
    /// The task names.
    pub tasks: Vec<String>,
    /// The per-worker rate limit in force for each task that has one (`"10/s"`), after stored
    /// and runtime changes; tasks without one are left out (since revision 1.18).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rate_limits: BTreeMap<String, String>,
    /// The cluster-wide rate limit (shared by every worker) in force for each task that has one
    /// (since revision 1.18).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub global_rate_limits: BTreeMap<String, String>,
}

impl RegisteredResult {
    /// The answer of a worker that runs `tasks` (sorted here), without rate limits.
    ///
    /// ```
    /// # use celerity_proto::RegisteredResult;
    /// let mut registered = RegisteredResult::new(vec!["b".into(), "a".into()]);
    /// registered.rate_limits.insert("a".into(), "10/s".into());
    /// assert_eq!(
    ///     serde_json::to_string(&registered)?,
    ///     r#"{"tasks":["a","b"],"rate_limits":{"a":"10/s"}}"#
    /// );
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn new(mut tasks: Vec<String>) -> Self {
        tasks.sort();
        Self {
            tasks,
            rate_limits: BTreeMap::new(),
            global_rate_limits: BTreeMap::new(),
        }
    }
}

/// The `result` of a `stats` reply: what the worker is and has done since it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StatsResult {
    /// The worker's process id.
    pub pid: u32,
    /// The software and its version (`celerity 0.1.0`).
    pub software: String,
    /// Seconds since the worker started.
    pub uptime_s: u64,
    /// Execution slots.
    pub concurrency: usize,
    /// The queues it consumes.
    pub queues: Vec<String>,
    /// Task bodies running now.
    pub active: u32,
    /// Tasks taken and not started.
    pub reserved: u32,
    /// Deliveries finished with since it started.
    pub processed: u64,
    /// Whether it sends task events.
    pub events: bool,
    /// Where it serves `/healthz`, `/readyz` and `/metrics`, when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
}

impl StatsResult {
    /// Figures of a worker with process id `pid`, the others empty.
    pub fn new(pid: u32, software: impl Into<String>) -> Self {
        Self {
            pid,
            software: software.into(),
            uptime_s: 0,
            concurrency: 0,
            queues: Vec::new(),
            active: 0,
            reserved: 0,
            processed: 0,
            events: false,
            http: None,
        }
    }
}

/// One queue a worker consumes, in an [`ActiveQueuesResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ActiveQueue {
    /// The queue's name.
    pub name: String,
    /// Its stream (`<NS>_Q_<queue>`).
    pub stream: String,
    /// The priority levels it consumes, lowest first.
    pub priorities: Vec<u8>,
}

impl ActiveQueue {
    /// Queue `name` in `stream`, consumed at `priorities`.
    pub fn new(name: impl Into<String>, stream: impl Into<String>, priorities: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            stream: stream.into(),
            priorities,
        }
    }
}

/// The `result` of an `active_queues` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ActiveQueuesResult {
    /// The queues, by name.
    pub queues: Vec<ActiveQueue>,
}

impl ActiveQueuesResult {
    /// The answer of a worker consuming `queues`.
    pub fn new(queues: Vec<ActiveQueue>) -> Self {
        Self { queues }
    }
}

/// The `result` of a `revoked` reply: the revoked task and canvas ids the worker holds (those
/// the revoked bucket still keeps), sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RevokedResult {
    /// The ids.
    pub ids: Vec<String>,
}

impl RevokedResult {
    /// The answer of a worker holding `ids` (sorted here).
    pub fn new(mut ids: Vec<String>) -> Self {
        ids.sort();
        Self { ids }
    }
}

/// The `result` of a `revoke` reply.
///
/// ```
/// # use celerity_proto::RevokeResult;
/// let json = serde_json::to_value(RevokeResult::new("t1", false))?;
/// assert_eq!(json, serde_json::json!({"revoked": "t1", "terminated": false}));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RevokeResult {
    /// The revoked task id.
    pub revoked: String,
    /// Whether this worker was running the task and aborted it.
    pub terminated: bool,
}

impl RevokeResult {
    /// Task `revoked` was revoked; `terminated` when this worker aborted it.
    pub fn new(revoked: impl Into<String>, terminated: bool) -> Self {
        Self {
            revoked: revoked.into(),
            terminated,
        }
    }
}

/// The `result` of a `rate_limit` reply: the task's limits now in force on the replying worker.
///
/// ```
/// # use celerity_proto::{Rate, RateLimitResult};
/// let result = RateLimitResult::new("tasks.call_api", Some("50/m".parse::<Rate>()?), None);
/// let json = serde_json::to_value(result)?;
/// assert_eq!(json, serde_json::json!({"task": "tasks.call_api", "rate_limit": "50/m", "global_rate_limit": null}));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RateLimitResult {
    /// The task name.
    pub task: String,
    /// The per-worker rate in force (`null`: none).
    pub rate_limit: Option<crate::Rate>,
    /// The cluster-wide rate in force (`null`: none).
    pub global_rate_limit: Option<crate::Rate>,
}

impl RateLimitResult {
    /// Task `task` runs at `rate_limit` per worker and `global_rate_limit` in the cluster.
    pub fn new(
        task: impl Into<String>,
        rate_limit: Option<crate::Rate>,
        global_rate_limit: Option<crate::Rate>,
    ) -> Self {
        Self {
            task: task.into(),
            rate_limit,
            global_rate_limit,
        }
    }
}

/// The `result` of a `priority_weights` reply: the weights now in force on the replying worker.
///
/// ```
/// # use celerity_proto::PriorityWeightsResult;
/// let json = serde_json::to_value(PriorityWeightsResult::new(None))?;
/// assert_eq!(json, serde_json::json!({"priority_weights": null}));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PriorityWeightsResult {
    /// The weights of priorities 0 to 9 (`null`: strict priorities).
    pub priority_weights: Option<[u32; 10]>,
}

impl PriorityWeightsResult {
    /// The worker picks levels by `priority_weights` (`None`: strictly).
    pub fn new(priority_weights: Option<[u32; 10]>) -> Self {
        Self { priority_weights }
    }
}

/// Why an id is in the revoked bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RevocationReason {
    /// A `revoke` (control command or client call) named it.
    Revoked,
}

/// The value stored under a revoked task id (or canvas root id) in the revoked bucket.
///
/// Workers read only the key: any value revokes. The fields are in the order the first writers
/// wrote them (sorted), so the stored bytes are unchanged.
///
/// ```
/// # use celerity_proto::RevocationRecord;
/// let bytes = serde_json::to_vec(&RevocationRecord::new(1_700_000_000_000))?;
/// assert_eq!(bytes, br#"{"at_ms":1700000000000,"reason":"revoked"}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RevocationRecord {
    /// When it was revoked (Unix ms).
    pub at_ms: u64,
    /// Why.
    pub reason: RevocationReason,
}

impl RevocationRecord {
    /// A revocation made at `at_ms` (Unix ms).
    pub fn new(at_ms: u64) -> Self {
        Self {
            at_ms,
            reason: RevocationReason::Revoked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_reject_unknown_commands() {
        let request = ControlRequest::new(ControlCommand::Revoke {
            task_id: "t1".into(),
            terminate: false,
        });
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(
            serde_json::from_str::<ControlRequest>(&json).unwrap(),
            request
        );
        assert!(serde_json::from_str::<ControlRequest>(r#"{"v":1,"command":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<ControlRequest>(r#"{"v":1,"command":"revoke"}"#).is_err());
    }

    #[test]
    fn every_command_is_named() {
        let commands = [
            ControlCommand::Ping,
            ControlCommand::Revoke {
                task_id: "t".into(),
                terminate: false,
            },
            ControlCommand::RateLimit {
                task: "t".into(),
                rate: None,
                global: false,
                reset: false,
            },
            ControlCommand::Registered,
            ControlCommand::Stats,
            ControlCommand::ActiveQueues,
            ControlCommand::Revoked,
            ControlCommand::Active,
            ControlCommand::Reserved,
            ControlCommand::Scheduled { limit: None },
            ControlCommand::Shutdown { cold: false },
            ControlCommand::PoolGrow { n: 1 },
            ControlCommand::PoolShrink { n: 1 },
            ControlCommand::AddConsumer { queue: "q".into() },
            ControlCommand::CancelConsumer { queue: "q".into() },
            ControlCommand::PriorityWeights {
                weights: None,
                reset: false,
            },
        ];
        let names: Vec<String> = commands
            .iter()
            .map(|command| {
                serde_json::to_value(command).unwrap()["command"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(names, ControlCommand::NAMES);
    }

    #[test]
    fn reply_records_round_trip_through_a_reply() {
        let rate: crate::Rate = "10/s".parse().unwrap();
        let reply =
            ControlReply::with_result("w1", &RateLimitResult::new("t", None, Some(rate))).unwrap();
        let json = serde_json::to_string(&reply).unwrap();
        let back: ControlReply = serde_json::from_str(&json).unwrap();
        let result = back.result_as::<RateLimitResult>().unwrap().unwrap();
        assert_eq!(result.global_rate_limit, Some(rate));
        assert!(
            ControlReply::refused("w1", "no")
                .result_as::<PingResult>()
                .is_none()
        );
    }
}
