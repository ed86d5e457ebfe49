//! The Celerity wire protocol, version 1: what crosses NATS and nothing else.
//!
//! This crate names every subject, stream, consumer, KV bucket and header that Celerity uses, defines
//! the records that travel in message bodies and KV values, and encodes them as JSON (the default) or
//! MessagePack.
//! It does no I/O: no sockets, no clocks, no async runtime.
//! Read it next to `docs/protocol.md`; another implementation (Python, Go, JS) needs only the two.
//!
//! ```
//! use celerity_proto::{ContentType, Envelope, Priority, TaskBody, TaskId, TaskName};
//!
//! let envelope = Envelope::new(TaskId::new("0190a5b2-7c1e-7f00-8000-000000000001")?, TaskName::new("tasks.add")?);
//! let body = TaskBody::positional(vec![serde_json::json!(2), serde_json::json!(3)]);
//! let bytes = ContentType::Json.encode(&body)?;
//! assert_eq!(bytes, br#"{"args":[2,3],"kwargs":{}}"#);
//! let headers = envelope.to_headers();
//! assert!(headers.iter().any(|(name, value)| *name == "Celerity-Task" && value == "tasks.add"));
//! assert_eq!(Priority::default().get(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod beat;
mod body;
pub mod builtin;
mod canvas;
mod chord;
mod codec;
mod control;
mod dead_letter;
mod envelope;
mod events;
mod inspect;
mod names;
mod rate;
mod result;
mod settings;
mod subjects;

pub use beat::{BEAT_LEADER_KEY, BeatEntryState, BeatLease, beat_entry_key, beat_task_id};
pub use body::TaskBody;
pub use canvas::{CanvasError, CanvasNode, ChordPolicy, SignatureRecord};
pub use chord::{
    CHORD_PARTITIONS, ChordCompletion, ChordCompletionMismatch, ChordDefinition, ChordMember,
    ChordMismatch, ChordResults, ChordResultsMismatch, MAX_CHORD_SIZE, chord_partition,
    header_result_id,
};
pub use codec::{ContentType, DecodeError, DecodeFailure, EncodeError};
pub use control::{
    ActiveQueue, ActiveQueuesResult, ControlCommand, ControlReply, ControlRequest, PingResult,
    PriorityWeightsResult, RateLimitResult, RegisteredResult, RevocationReason, RevocationRecord,
    RevokeResult, RevokedResult, StatsResult,
};
pub use dead_letter::{DeadLetter, DeadLetterReason, dlq_header};
pub use envelope::{Envelope, EnvelopeError, HeaderSource, HeaderValueError, header};
pub use events::{
    HEARTBEAT_INTERVAL_MS, HEARTBEAT_MISSED_LIMIT, MAX_ARGUMENTS_TEXT_BYTES, TaskEvent,
    TaskEventBatch, TaskEventKind, WorkerEvent, WorkerEventKind, arguments_text,
};
pub use inspect::{
    ConsumersResult, HeldTask, HeldTasksResult, PoolResult, ScheduledResult, ScheduledTask,
    ShutdownResult,
};
pub use names::{InvalidName, Namespace, Priority, QueueName, TaskId, TaskName};
pub use rate::{InvalidRate, Rate};
pub use result::{ErrorRecord, ResultRecord, TaskState};
pub use settings::{
    PriorityWeightsSetting, RateLimitSetting, SettingScope, kv_key_token, priority_weights_key,
    rate_limit_key, worker_token,
};
pub use subjects::Layout;

/// The protocol version this crate reads and writes.
///
/// It travels in the `Celerity-Version` header of every task message and in the `v` field of every
/// result record.
/// A reader MUST reject (dead-letter) a message with a version it does not know.
pub const PROTOCOL_VERSION: u32 = 1;
