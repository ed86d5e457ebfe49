//! Result records: what the results KV bucket holds for each task id.
//!
//! Workers write them; any process reads them.
//! The state machine and who writes each state are specified in `docs/protocol.md`.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::PROTOCOL_VERSION;
use crate::names::{TaskId, TaskName};

/// The state of a task, as stored in its result record.
///
/// Serialized as an upper-case string; any other string is a custom state set by the task
/// (the progress pattern: `update_state("PROCESSING", meta)`).
///
/// ```
/// # use celerity_proto::TaskState;
/// assert_eq!(serde_json::to_string(&TaskState::Success)?, "\"SUCCESS\"");
/// let custom: TaskState = serde_json::from_str("\"PROCESSING\"")?;
/// assert_eq!(custom, TaskState::Custom("PROCESSING".into()));
/// assert!(TaskState::Failure.is_ready() && !custom.is_ready());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TaskState {
    /// No record exists for this id: it was never sent, or its record expired or was forgotten.
    /// Never written to the bucket; readers report it.
    Unknown,
    /// Sent and waiting in its queue. Written by the producer when it publishes.
    Pending,
    /// Held by a worker that has not started it yet.
    Received,
    /// Running (written only for tasks with `track_started`).
    Started,
    /// Finished; `result` holds the return value.
    Success,
    /// Failed; `error` holds the error.
    Failure,
    /// Failed and will run again (reserved for retries).
    Retry,
    /// Will not run (reserved for revocation and expiry).
    Revoked,
    /// A state set by the task itself, with `meta`.
    Custom(String),
}

impl TaskState {
    /// The state's wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            TaskState::Unknown => "UNKNOWN",
            TaskState::Pending => "PENDING",
            TaskState::Received => "RECEIVED",
            TaskState::Started => "STARTED",
            TaskState::Success => "SUCCESS",
            TaskState::Failure => "FAILURE",
            TaskState::Retry => "RETRY",
            TaskState::Revoked => "REVOKED",
            TaskState::Custom(name) => name,
        }
    }

    /// Parses a wire spelling; unrecognised strings are custom states.
    pub fn parse(value: &str) -> Self {
        match value {
            "UNKNOWN" => TaskState::Unknown,
            "PENDING" => TaskState::Pending,
            "RECEIVED" => TaskState::Received,
            "STARTED" => TaskState::Started,
            "SUCCESS" => TaskState::Success,
            "FAILURE" => TaskState::Failure,
            "RETRY" => TaskState::Retry,
            "REVOKED" => TaskState::Revoked,
            other => TaskState::Custom(other.to_owned()),
        }
    }

    /// True for the final states: SUCCESS, FAILURE and REVOKED. A final record is never replaced by
    /// a non-final one.
    pub fn is_ready(&self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failure | TaskState::Revoked
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for TaskState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TaskState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        if value.is_empty() {
            return Err(serde::de::Error::custom("state must not be empty"));
        }
        Ok(TaskState::parse(&value))
    }
}

/// A task's error, as stored in a FAILURE record.
///
/// ```
/// # use celerity_proto::ErrorRecord;
/// let error = ErrorRecord::new("std::io::Error", "disk full");
/// assert_eq!(error.to_string(), "std::io::Error: disk full");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorRecord {
    /// The error's type: a Rust type path, `panic`, or a name the producer's language uses.
    #[serde(rename = "type")]
    pub kind: String,
    /// The error's own message.
    pub message: String,
    /// The messages of its causes, nearest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<String>,
    /// A backtrace or traceback, when one was captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
}

impl ErrorRecord {
    /// An error with a type and message and no causes.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            causes: Vec::new(),
            traceback: None,
        }
    }
}

impl fmt::Display for ErrorRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        for cause in &self.causes {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

/// The record stored under a task id in the results bucket.
///
/// ```
/// # use celerity_proto::{ContentType, ResultRecord, TaskId, TaskState};
/// let record = ResultRecord::new(TaskId::new("t1")?, TaskState::Success, 1_700_000_000_000)
///     .with_result(serde_json::json!(5));
/// let bytes = ContentType::Json.encode(&record)?;
/// let back: ResultRecord = ContentType::Json.decode(&bytes)?;
/// assert_eq!(back, record);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResultRecord {
    /// Protocol version of the record.
    pub v: u32,
    /// The task id (also the KV key).
    pub id: TaskId,
    /// The task's state.
    pub state: TaskState,
    /// The registered task name, when the writer knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskName>,
    /// The return value, on SUCCESS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error, on FAILURE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorRecord>,
    /// Custom metadata: the `meta` of a custom state, or details of RETRY and REVOKED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
    /// How many times the task had been retried when the record was written.
    #[serde(default)]
    pub retries: u32,
    /// Hostname of the worker that wrote the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// When the record was written, Unix milliseconds.
    pub updated_at_ms: u64,
    /// When the task started running, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// The W3C trace id (32 lower-case hex digits) of the trace the task ran (or, PENDING, was
    /// sent) in, when it was traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The queue message a final record was written for, `<stream>:<stream sequence>`: a later
    /// message with the same task id that is not a redelivery of this one does not replace it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ResultRecord {
    /// A record of `state` written at `now_ms`, with every optional field empty.
    pub fn new(id: TaskId, state: TaskState, now_ms: u64) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id,
            state,
            task: None,
            result: None,
            error: None,
            meta: None,
            retries: 0,
            worker: None,
            updated_at_ms: now_ms,
            started_at_ms: None,
            trace_id: None,
            message: None,
        }
    }

    /// Sets the return value.
    pub fn with_result(mut self, result: Value) -> Self {
        self.result = Some(result);
        self
    }

    /// Sets the error.
    pub fn with_error(mut self, error: ErrorRecord) -> Self {
        self.error = Some(error);
        self
    }

    /// Sets the custom metadata.
    pub fn with_meta(mut self, meta: Value) -> Self {
        self.meta = Some(meta);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_record_has_the_documented_shape() {
        let mut error = ErrorRecord::new("myapp::PaymentError", "card declined");
        error.causes = vec!["gateway timeout".into()];
        let record =
            ResultRecord::new(TaskId::new("t1").unwrap(), TaskState::Failure, 5).with_error(error);
        let json: Value = serde_json::to_value(&record).unwrap();
        assert_eq!(json["state"], "FAILURE");
        assert_eq!(json["error"]["type"], "myapp::PaymentError");
        assert_eq!(json["error"]["causes"][0], "gateway timeout");
        assert!(json.get("result").is_none());
    }

    #[test]
    fn unknown_fields_are_ignored_by_readers() {
        let record: ResultRecord = serde_json::from_str(
            r#"{"v":1,"id":"t","state":"SUCCESS","updated_at_ms":1,"future":true}"#,
        )
        .unwrap();
        assert_eq!(record.state, TaskState::Success);
    }
}
