//! Control messages: requests to workers and their replies, over core NATS request/reply.
//!
//! A request goes to one worker (`<ns>.control.<worker token>`) or to all (`<ns>.control.all`,
//! replies gathered until a deadline). Bodies are JSON.

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
}

impl ControlReply {
    /// A successful reply.
    pub fn ok(worker: impl Into<String>, result: Value) -> Self {
        Self {
            worker: worker.into(),
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A refusal, with the reason.
    pub fn refused(worker: impl Into<String>, error: impl Into<String>) -> Self {
        Self {
            worker: worker.into(),
            ok: false,
            result: None,
            error: Some(error.into()),
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
}
