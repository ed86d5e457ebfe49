//! [`DeadLetterError`]: what a dead-letter operation reports, with what to do about it.

use std::error::Error as StdError;

use async_nats::jetstream::context::PublishError;
use celerity_proto::TaskId;

/// A dead-letter operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterError {
    /// No letter has this sequence (never stored, deleted, requeued or purged).
    #[error(
        "no dead letter {seq} in stream {stream}: it was requeued, deleted or purged, or never stored; list them with `celerity dead-letters list`"
    )]
    NotFound {
        /// The dead-letter stream.
        stream: String,
        /// The sequence asked for.
        seq: u64,
    },
    /// The letter was stored without its body, so there is nothing to run.
    #[error(
        "dead letter {seq} was stored without its body ({size} bytes were dropped), so it cannot be requeued: send the task again from its producer, then delete the letter"
    )]
    BodyDropped {
        /// The letter.
        seq: u64,
        /// The size of the body that was dropped.
        size: u64,
    },
    /// The letter has no valid `Celerity-Id`, so a requeue could not keep its task id.
    #[error(
        "dead letter {seq} has no valid task id (Celerity-Id), so it cannot be requeued: publish a corrected message yourself, then delete the letter"
    )]
    NoTaskId {
        /// The letter.
        seq: u64,
    },
    /// The letter's original subject (`Celerity-Dlq-Subject`) is missing or is no queue or delayed
    /// subject of this namespace.
    #[error(
        "dead letter {seq} came from {subject:?}, which is no queue or delayed subject of namespace {namespace}, so it cannot be requeued"
    )]
    NotRequeueable {
        /// The letter.
        seq: u64,
        /// `Celerity-Dlq-Subject`, when present.
        subject: Option<String>,
        /// The namespace.
        namespace: String,
    },
    /// The requeued message was not stored; the letter is kept.
    #[error(
        "the requeue of dead letter {seq} to {subject} was not stored (the letter is kept): check that the queue has a stream, e.g. by starting one of its workers"
    )]
    Publish {
        /// The letter.
        seq: u64,
        /// Where it was published.
        subject: String,
        /// Why.
        #[source]
        source: PublishError,
    },
    /// The task was requeued, but its letter could not be deleted.
    #[error(
        "dead letter {seq} was requeued as task {task_id} but is still stored: delete it with `celerity dead-letters delete {seq}` (a second requeue would run the task twice)"
    )]
    RequeuedNotDeleted {
        /// The letter.
        seq: u64,
        /// The task requeued.
        task_id: TaskId,
        /// Why it was not deleted.
        #[source]
        source: Box<DeadLetterError>,
    },
    /// A purge selects by queue only.
    #[error(
        "a purge selects letters by queue, not by reason {reason:?}: list them with `--reason` and delete them one by one"
    )]
    PurgeByReason {
        /// The reason asked for.
        reason: String,
    },
    /// The dead-letter stream could not be read, or a letter deleted or purged.
    #[error("cannot {action} the dead-letter stream {stream}")]
    Stream {
        /// What was asked: `read`, `delete a letter of`, `purge`.
        action: &'static str,
        /// The dead-letter stream.
        stream: String,
        /// Why.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}
