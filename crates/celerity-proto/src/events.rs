//! Events: what workers and producers tell anyone who listens about tasks and workers.
//!
//! Task events travel in batches ([`TaskEventBatch`], one message per emitter at most every
//! 100 ms) on `<ns>.events.task.<token>`; worker events ([`WorkerEvent`]: online, a heartbeat
//! every [`HEARTBEAT_INTERVAL_MS`], offline) one per message on `<ns>.events.worker.<token>`. Both
//! are stored in the events stream `<NS>_EVENTS` with bounded retention, so a monitor can follow
//! them live and read them back after a restart. Bodies are JSON. The golden files
//! `tests/golden/events_v1_*.json` pin their bytes.

use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;
use crate::names::QueueName;
use crate::result::ErrorRecord;

/// How often a worker sends its heartbeat, in milliseconds.
pub const HEARTBEAT_INTERVAL_MS: u64 = 2_000;

/// A worker whose last heartbeat is older than this many intervals is taken for gone (Flower and
/// `celerity status` both use it).
pub const HEARTBEAT_MISSED_LIMIT: u64 = 3;

/// The longest text `args` and `kwargs` of a `task-started` event hold, in bytes, the cut
/// marker included.
pub const MAX_ARGUMENTS_TEXT_BYTES: usize = 1024;

/// Marks arguments text that was cut ([`arguments_text`]).
const CUT_MARKER: &str = "\u{2026}";

/// `arguments` (a task's `args` or `kwargs`) as compact JSON text for an event, at most
/// [`MAX_ARGUMENTS_TEXT_BYTES`] bytes: a longer text is cut on a character boundary and ends with
/// `…` (as Celery's `argsrepr` and `kwargsrepr`), so the text may not parse as JSON.
///
/// ```
/// # use celerity_proto::{arguments_text, MAX_ARGUMENTS_TEXT_BYTES};
/// assert_eq!(arguments_text(&serde_json::json!([2, "x"])), r#"[2,"x"]"#);
/// let long = arguments_text(&serde_json::json!(["y".repeat(5_000)]));
/// assert!(long.len() <= MAX_ARGUMENTS_TEXT_BYTES && long.ends_with('…'));
/// ```
pub fn arguments_text<T: Serialize + ?Sized>(arguments: &T) -> String {
    let text = serde_json::to_string(arguments).unwrap_or_default();
    bounded_text(text)
}

/// `text` cut to at most [`MAX_ARGUMENTS_TEXT_BYTES`] bytes with a trailing `…`, on a character
/// boundary.
fn bounded_text(mut text: String) -> String {
    if text.len() <= MAX_ARGUMENTS_TEXT_BYTES {
        return text;
    }
    let mut end = MAX_ARGUMENTS_TEXT_BYTES - CUT_MARKER.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(CUT_MARKER);
    text
}

/// What happened to a task.
///
/// ```
/// # use celerity_proto::TaskEventKind;
/// assert_eq!(serde_json::to_value(TaskEventKind::Succeeded)?, "task-succeeded");
/// assert_eq!(TaskEventKind::parse("failed"), Some(TaskEventKind::Failed));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TaskEventKind {
    /// A producer sent it (`task-sent`).
    #[serde(rename = "task-sent")]
    Sent,
    /// A worker took its message (`task-received`), on every delivery.
    #[serde(rename = "task-received")]
    Received,
    /// Its body started (`task-started`).
    #[serde(rename = "task-started")]
    Started,
    /// Its body returned a value (`task-succeeded`).
    #[serde(rename = "task-succeeded")]
    Succeeded,
    /// Its body failed, with no retry left (`task-failed`).
    #[serde(rename = "task-failed")]
    Failed,
    /// Its body failed and it was sent again to retry (`task-retried`).
    #[serde(rename = "task-retried")]
    Retried,
    /// It was revoked, terminated or expired (`task-revoked`).
    #[serde(rename = "task-revoked")]
    Revoked,
    /// Its message was dead-lettered (`task-rejected`).
    #[serde(rename = "task-rejected")]
    Rejected,
}

impl TaskEventKind {
    /// Every kind, in the order a task meets them.
    pub const ALL: [TaskEventKind; 8] = [
        TaskEventKind::Sent,
        TaskEventKind::Received,
        TaskEventKind::Started,
        TaskEventKind::Succeeded,
        TaskEventKind::Failed,
        TaskEventKind::Retried,
        TaskEventKind::Revoked,
        TaskEventKind::Rejected,
    ];

    /// The wire name without its `task-` prefix (`succeeded`).
    pub fn name(self) -> &'static str {
        match self {
            TaskEventKind::Sent => "sent",
            TaskEventKind::Received => "received",
            TaskEventKind::Started => "started",
            TaskEventKind::Succeeded => "succeeded",
            TaskEventKind::Failed => "failed",
            TaskEventKind::Retried => "retried",
            TaskEventKind::Revoked => "revoked",
            TaskEventKind::Rejected => "rejected",
        }
    }

    /// Reads a kind from its name, with or without the `task-` prefix.
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.strip_prefix("task-").unwrap_or(name);
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// One task event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskEvent {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: TaskEventKind,
    /// The task id.
    pub task_id: String,
    /// The task name.
    pub task: String,
    /// When it happened, Unix milliseconds.
    pub at_ms: u64,
    /// The queue the task was sent to or taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Its priority (0 to 9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Retries so far (for `task-retried`, the retry about to run).
    #[serde(default)]
    pub retries: u32,
    /// The canvas the task belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_id: Option<String>,
    /// The task whose end sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// The group the task is a member of (`Celerity-Group-Id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// The chord whose header the task is a member of (`Celerity-Chord-Id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chord_id: Option<String>,
    /// Deliveries of the message so far (`task-received`; above 1 for a redelivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<u64>,
    /// From `Celerity-Sent-At` to the body's start, in milliseconds (`task-started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// How long the body ran, in milliseconds (`task-succeeded`, `task-failed`, `task-retried`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_ms: Option<f64>,
    /// When it is due, Unix milliseconds (`task-sent` with an ETA, `task-retried`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_ms: Option<u64>,
    /// The error (`task-failed`, `task-retried`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorRecord>,
    /// Why: `revoked`, `terminated` or `expired` for `task-revoked`; the dead-letter reason code
    /// for `task-rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The positional arguments as compact JSON text, at most [`MAX_ARGUMENTS_TEXT_BYTES`]
    /// (`task-started`; see [`arguments_text`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
    /// The named arguments as compact JSON text, bounded as `args` (`task-started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kwargs: Option<String>,
}

impl TaskEvent {
    /// An event of `kind` for the task `task_id` named `task`, at `at_ms`; the other fields empty.
    pub fn new(kind: TaskEventKind, task_id: &str, task: &str, at_ms: u64) -> Self {
        Self {
            kind,
            task_id: task_id.to_owned(),
            task: task.to_owned(),
            at_ms,
            queue: None,
            priority: None,
            retries: 0,
            root_id: None,
            parent_id: None,
            delivered: None,
            wait_ms: None,
            runtime_ms: None,
            eta_ms: None,
            error: None,
            reason: None,
            group_id: None,
            chord_id: None,
            args: None,
            kwargs: None,
        }
    }

    /// An event of `kind` for the task of `envelope` (id, name, priority, retries, canvas ids:
    /// root, parent, group and chord), taken from `queue`, at `at_ms`.
    pub fn of_envelope(
        kind: TaskEventKind,
        envelope: &Envelope,
        queue: Option<&QueueName>,
        at_ms: u64,
    ) -> Self {
        let mut event = Self::new(kind, envelope.id.as_str(), envelope.task.as_str(), at_ms);
        event.queue = queue.map(ToString::to_string);
        event.priority = Some(envelope.priority.get());
        event.retries = envelope.retries;
        event.root_id = envelope.root_id.as_ref().map(ToString::to_string);
        event.parent_id = envelope.parent_id.as_ref().map(ToString::to_string);
        event.group_id = envelope.group_id.as_ref().map(ToString::to_string);
        event.chord_id = envelope.chord_id.as_ref().map(ToString::to_string);
        event
    }

    /// The task's state after this event, as a result record names it (`SUCCESS` after
    /// `task-succeeded`, `FAILURE` after `task-rejected`), whether or not a record is kept.
    pub fn state(&self) -> &'static str {
        match self.kind {
            TaskEventKind::Sent => "PENDING",
            TaskEventKind::Received => "RECEIVED",
            TaskEventKind::Started => "STARTED",
            TaskEventKind::Succeeded => "SUCCESS",
            TaskEventKind::Failed | TaskEventKind::Rejected => "FAILURE",
            TaskEventKind::Retried => "RETRY",
            TaskEventKind::Revoked => "REVOKED",
        }
    }
}

/// The task events one emitter (a worker, or a producer for `task-sent`) sends in one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskEventBatch {
    /// Protocol version.
    pub v: u32,
    /// The emitter: a worker's hostname, or a producer's name.
    pub hostname: String,
    /// The events, oldest first.
    pub events: Vec<TaskEvent>,
}

impl TaskEventBatch {
    /// A version-1 batch.
    pub fn new(hostname: impl Into<String>, events: Vec<TaskEvent>) -> Self {
        Self {
            v: crate::PROTOCOL_VERSION,
            hostname: hostname.into(),
            events,
        }
    }
}

/// What happened to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WorkerEventKind {
    /// It started consuming (`worker-online`).
    #[serde(rename = "worker-online")]
    Online,
    /// It is alive (`worker-heartbeat`), every [`HEARTBEAT_INTERVAL_MS`].
    #[serde(rename = "worker-heartbeat")]
    Heartbeat,
    /// It stopped (`worker-offline`).
    #[serde(rename = "worker-offline")]
    Offline,
}

/// One worker event: the worker's state when it was sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerEvent {
    /// Protocol version.
    pub v: u32,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: WorkerEventKind,
    /// The worker's hostname.
    pub hostname: String,
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// The worker's process id.
    pub pid: u32,
    /// The software and its version (`celerity 0.1.0`).
    pub software: String,
    /// The queues it consumes.
    pub queues: Vec<String>,
    /// Its execution slots.
    pub concurrency: u32,
    /// Tasks whose body runs now.
    pub active: u32,
    /// Tasks taken and not started (waiting for a slot or a rate limit).
    pub reserved: u32,
    /// Task messages it has finished with since it started (run, revoked or dead-lettered).
    pub processed: u64,
    /// The host's load averages over 1, 5 and 15 minutes, where the system tells them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<[f64; 3]>,
    /// Seconds between heartbeats.
    pub freq_s: f64,
    /// Where it serves `/healthz`, `/readyz` and `/metrics` (`host:port`), when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
}

impl WorkerEvent {
    /// A version-1 event of `kind` from `hostname` at `at_ms`, its counts zero and its lists
    /// empty.
    pub fn new(kind: WorkerEventKind, hostname: impl Into<String>, at_ms: u64) -> Self {
        Self {
            v: crate::PROTOCOL_VERSION,
            kind,
            hostname: hostname.into(),
            at_ms,
            pid: 0,
            software: String::new(),
            queues: Vec::new(),
            concurrency: 0,
            active: 0,
            reserved: 0,
            processed: 0,
            load: None,
            freq_s: HEARTBEAT_INTERVAL_MS as f64 / 1_000.0,
            http: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_name_and_its_wire_name() {
        for kind in TaskEventKind::ALL {
            assert_eq!(TaskEventKind::parse(kind.name()), Some(kind));
            let wire = serde_json::to_value(kind).unwrap();
            assert_eq!(wire, format!("task-{}", kind.name()));
            assert_eq!(TaskEventKind::parse(wire.as_str().unwrap()), Some(kind));
        }
        assert_eq!(TaskEventKind::parse("task-nope"), None);
    }

    #[test]
    fn an_event_leaves_out_what_it_does_not_have_and_reads_unknown_fields() {
        let event = TaskEvent::new(TaskEventKind::Started, "t1", "it.add", 5);
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(
            json,
            r#"{"type":"task-started","task_id":"t1","task":"it.add","at_ms":5,"retries":0}"#
        );
        let read: TaskEvent = serde_json::from_str(
            r#"{"type":"task-started","task_id":"t1","task":"it.add","at_ms":5,"future":1}"#,
        )
        .unwrap();
        assert_eq!(read, event);
    }

    #[test]
    fn arguments_text_is_cut_on_a_character_boundary_with_a_marker() {
        assert_eq!(
            arguments_text(&serde_json::json!({"k": "v"})),
            r#"{"k":"v"}"#
        );
        let exact = "x".repeat(MAX_ARGUMENTS_TEXT_BYTES);
        assert_eq!(bounded_text(exact.clone()), exact);
        let cut = bounded_text("é".repeat(MAX_ARGUMENTS_TEXT_BYTES));
        assert!(cut.len() <= MAX_ARGUMENTS_TEXT_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.trim_end_matches('…').chars().all(|c| c == 'é'));
        let over = bounded_text("x".repeat(MAX_ARGUMENTS_TEXT_BYTES + 1));
        assert_eq!(over.len(), MAX_ARGUMENTS_TEXT_BYTES);
        assert!(over.ends_with('…'));
    }
}
