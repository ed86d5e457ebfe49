//! The errors of sending: connecting a producer ([`ClientError`]) and sending a task or a canvas
//! ([`EnqueueError`]). They live apart from the client, because the publisher, the dispatcher and
//! the worker's continuations produce them too.

use std::sync::Arc;
use std::time::Duration;

use celerity_proto::{ChordMismatch, EncodeError, InvalidName, TaskId, TaskName};

use crate::nats::ConnectError;
use crate::nats::provision::ProvisionError;
use crate::task::ArgumentsError;

/// A producer could not be connected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// NATS is unreachable or refused us.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The results bucket could not be opened.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// The reply subscription could not be made.
    #[error("cannot subscribe to the reply subject {subject}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// The client's error.
        #[source]
        source: async_nats::SubscribeError,
    },
}

/// A task could not be sent. Nothing was enqueued unless the variant says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnqueueError {
    /// An option's value breaks the rule of what it names (a task name or id, a queue, a
    /// priority, a chord member's id).
    #[error("invalid {option}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// The value given.
        value: String,
        /// The rule it breaks.
        #[source]
        source: InvalidName,
    },
    /// A router function returned a route with an invalid queue name or priority.
    #[error("a router function routed task {task} with an invalid queue or priority")]
    InvalidRoute {
        /// The task name.
        task: String,
        /// The rule the route breaks.
        #[source]
        source: InvalidName,
    },
    /// A user header is reserved or malformed.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header's name.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// An `eta` lies further in the past than [`crate::ETA_PAST_TOLERANCE`], which is taken for
    /// a mistake.
    #[error(
        "eta {eta_ms} ms since the epoch is {late_by:?} in the past, over the tolerance of {tolerance:?}"
    )]
    EtaInPast {
        /// The eta, in milliseconds since the epoch.
        eta_ms: u64,
        /// How far in the past it is.
        late_by: Duration,
        /// The tolerance.
        tolerance: Duration,
    },
    /// Arguments sent by name have the wrong JSON shape (`args` must be an array, `kwargs` an
    /// object).
    #[error("invalid {what} {value}: use a JSON {expected}")]
    ArgumentShape {
        /// `args` or `kwargs`.
        what: &'static str,
        /// The value given, cut to 80 characters.
        value: String,
        /// The shape expected.
        expected: &'static str,
    },
    /// A signature's argument could not be serialized to JSON.
    #[error("cannot serialize an argument of task {task}")]
    Serialize {
        /// The task name.
        task: String,
        /// The serializer's error (shared, as signatures are cloned).
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// The task body could not be encoded in its content type.
    #[error("cannot encode the body of task {task}")]
    Encode {
        /// The task name.
        task: TaskName,
        /// The codec's error.
        #[source]
        source: EncodeError,
    },
    /// The arguments could not be serialized or have the wrong shape.
    #[error("invalid arguments for task {task}")]
    Arguments {
        /// The task name.
        task: String,
        /// What is wrong.
        #[source]
        source: ArgumentsError,
    },
    /// The encoded message is larger than the server accepts.
    #[error("task {task_id} is {size} bytes, over the server's max_payload of {max_payload} bytes")]
    PayloadTooLarge {
        /// The task id.
        task_id: TaskId,
        /// Headers and body, in bytes.
        size: usize,
        /// The server's limit.
        max_payload: usize,
    },
    /// The queue's stream could not be created.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// The server did not acknowledge the publish (unreachable, timeout, no stream).
    #[error("task {task_id} was not acknowledged by JetStream")]
    Publish {
        /// The task id.
        task_id: TaskId,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server refused the publish for the user's permissions (`-ERR 'Permissions Violation
    /// for Publish to ...'`): nothing was enqueued. Reported as soon as the refusal arrives,
    /// not after the publish's timeout. Not [`EnqueueError::is_permanent`]: the server's
    /// permissions may change (a config reload), and then sending again succeeds.
    #[error(
        "the NATS server refused task {task_id}: this user may not publish to {subject}; nothing was enqueued (grant it publish on the queue's subjects, as the producer role of docs/permissions.conf does)"
    )]
    PermissionDenied {
        /// The task id.
        task_id: TaskId,
        /// The subject refused.
        subject: String,
    },
    /// The queue's stream (for a task due later, the delayed stream) is at its size limit and
    /// refused the task; nothing was enqueued, and nothing queued was dropped. Workers draining
    /// the queue make room, so sending again later can succeed.
    #[error(
        "queue {queue} is full: stream {stream} is at its size limit and refused task {task_id}; nothing was enqueued (send again once workers drain it, or raise the limit: Storage::queue_max_bytes, a worker's --queue-max-bytes, or `nats stream edit`)"
    )]
    QueueFull {
        /// The task id.
        task_id: TaskId,
        /// The queue.
        queue: celerity_proto::QueueName,
        /// The stream that refused it.
        stream: String,
    },
    /// The server's JetStream store is full (its `max_file_store`, or its disk) and refused the
    /// task; nothing was enqueued.
    #[error(
        "the server's JetStream store is full and refused task {task_id}; nothing was enqueued (free space on the server or raise its jetstream max_file_store)"
    )]
    StoreFull {
        /// The task id.
        task_id: TaskId,
    },
    /// The canvas breaks a rule (empty, an id used twice, nested too deep, a group where one
    /// record is needed, a chord whose members are not numbered from its id).
    #[error("invalid canvas")]
    InvalidCanvas(#[source] celerity_proto::CanvasError),
    /// A chord's definition breaks a rule (its size, or an `at_least` quorum its header cannot
    /// give).
    #[error("invalid chord {chord}")]
    InvalidChord {
        /// The chord's id.
        chord: TaskId,
        /// The rule it breaks.
        #[source]
        source: ChordMismatch,
    },
    /// A chord's definition could not be encoded.
    #[error("cannot encode the definition of chord {chord}")]
    EncodeChord {
        /// The chord's id.
        chord: TaskId,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// The PENDING record could not be written; the task was not published.
    #[error("cannot record task {task_id} as pending")]
    Pending {
        /// The task id.
        task_id: TaskId,
        /// The store's error.
        #[source]
        source: crate::result_store::StoreError,
    },
}

impl EnqueueError {
    /// True for errors that sending again cannot fix (invalid options, arguments or canvas, an
    /// oversized message), as opposed to a server that did not answer.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            EnqueueError::InvalidOption { .. }
                | EnqueueError::InvalidRoute { .. }
                | EnqueueError::InvalidHeader { .. }
                | EnqueueError::EtaInPast { .. }
                | EnqueueError::ArgumentShape { .. }
                | EnqueueError::Serialize { .. }
                | EnqueueError::Encode { .. }
                | EnqueueError::Arguments { .. }
                | EnqueueError::PayloadTooLarge { .. }
                | EnqueueError::InvalidCanvas(_)
                | EnqueueError::InvalidChord { .. }
                | EnqueueError::EncodeChord { .. }
        )
    }

    pub(crate) fn invalid_route(task: &str, source: InvalidName) -> Self {
        EnqueueError::InvalidRoute {
            task: task.to_owned(),
            source,
        }
    }

    pub(crate) fn invalid(option: &'static str, source: InvalidName) -> Self {
        EnqueueError::InvalidOption {
            option,
            value: source.value.clone(),
            source,
        }
    }
}
