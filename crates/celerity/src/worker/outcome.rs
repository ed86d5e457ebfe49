//! What happens to a task message once the pipeline is done with it: [`Outcome`], and
//! [`apply_outcome`], the one function that acknowledges, hands back, holds, dead-letters or
//! leaves a delivered message.
//!
//! The pipeline (`execute.rs`) decides and returns an `Outcome`; it stores records and sends what
//! follows a task before it returns, since those decide the outcome. Nothing else in the pipeline
//! acknowledges a task message, except [`ack_before_run`] for tasks that ask to be acknowledged
//! before they run (`acks_late = false`).

use std::time::Duration;

use async_nats::jetstream;
use celerity_proto::{DeadLetterReason, Envelope, QueueName, TaskId, TaskName, header};

use crate::worker::WorkerShared;
use crate::worker::continuation::Continuation;
use crate::worker::dead_letter::{DeadTask, Ending, dead_letter, dead_letter_task};
use crate::worker::nats_io;
use crate::worker::observe::Rejected;

/// What the pipeline decided for one delivered message.
#[derive(Debug)]
pub(crate) enum Outcome<'a> {
    /// Acknowledge it: its task has a final record and what follows it was sent.
    Ack,
    /// Nothing to send: it was acknowledged before its body ran ([`ack_before_run`]).
    Acknowledged,
    /// Leave it unacknowledged, so the server delivers it again after AckWait: a record or what
    /// follows the task could not be stored or sent, and the redelivery tries again.
    Redeliver,
    /// Hand it back to its queue at once, counted as a hand-back: the worker is stopping while
    /// the task waits for its rate limit.
    HandBack,
    /// Move it to the delayed stream, where it waits for its ETA, then acknowledge it here (or
    /// hand it back for a second when the delayed stream cannot take it now).
    HoldUntilDue(&'a Envelope),
    /// Copy it to the dead-letter stream, fail its task, then terminate it.
    DeadLetter(Rejection<'a>),
}

/// Why a message is dead-lettered, and whose task fails.
#[derive(Debug)]
pub(crate) struct Rejection<'a> {
    reason: DeadLetterReason,
    /// What the letter's `Celerity-Dlq-Error` and the task's failure say.
    error: String,
    /// The task's envelope when it is valid; without one, the task failed is what its headers
    /// tell of it (its id, if that much is readable).
    envelope: Option<&'a Envelope>,
    /// What follows the task's failure, when the pipeline has it; `None` reads it from the
    /// message's body (nothing when that is unreadable).
    continuation: Option<Continuation>,
}

impl<'a> Rejection<'a> {
    /// The rejection of a message whose envelope is not valid.
    pub(crate) fn message(reason: DeadLetterReason, error: String) -> Self {
        Self {
            reason,
            error,
            envelope: None,
            continuation: None,
        }
    }

    /// The rejection of the task of `envelope`; what follows its failure is read from its body.
    pub(crate) fn task(envelope: &'a Envelope, reason: DeadLetterReason, error: String) -> Self {
        Self {
            reason,
            error,
            envelope: Some(envelope),
            continuation: None,
        }
    }

    /// What follows the task's failure, as the pipeline took it from the body (an empty one when
    /// it was sent already).
    pub(crate) fn followed_by(mut self, continuation: Continuation) -> Self {
        self.continuation = Some(continuation);
        self
    }
}

/// Applies `outcome` to `message`, delivered from `queue`: the one place a task message's fate
/// is carried out.
///
/// A dead letter is reported to the worker's `Observer` here (`task_rejected`, `task-rejected`);
/// the other ends of a run are reported by the pipeline where it learns them (`observe.rs`).
///
/// # Cancel safety
/// Not cancel safe: dropped mid-way, the message may be left unacknowledged, or its dead letter
/// copied while its task is not failed yet; the redelivery after AckWait completes either (copies
/// are de-duplicated).
pub(crate) async fn apply_outcome(
    shared: &WorkerShared,
    queue: &QueueName,
    message: &jetstream::Message,
    outcome: Outcome<'_>,
) {
    match outcome {
        Outcome::Ack => ack(message).await,
        Outcome::Acknowledged | Outcome::Redeliver => {}
        Outcome::HandBack => shared.handbacks.hand_back(message, None).await,
        Outcome::HoldUntilDue(envelope) => hold_until_due(shared, queue, message, envelope).await,
        Outcome::DeadLetter(rejection) => {
            let Rejection {
                reason,
                error,
                envelope,
                continuation,
            } = rejection;
            observe_rejection(shared, queue, message, envelope, reason, &error);
            let ending = match envelope {
                Some(envelope) => {
                    let continuation = continuation
                        .unwrap_or_else(|| Continuation::of_message(envelope, &message.payload));
                    let task = DeadTask {
                        envelope,
                        continuation: &continuation,
                    };
                    dead_letter_task(shared, queue, message, task, reason, error).await
                }
                None => dead_letter(shared, queue, message, reason, error).await,
            };
            end_dead_letter(shared, message, ending).await;
        }
    }
}

/// Tells the observers of a dead letter, with the task's id and name from its envelope or, when
/// that is invalid, from its headers as far as they are readable.
fn observe_rejection(
    shared: &WorkerShared,
    queue: &QueueName,
    message: &jetstream::Message,
    envelope: Option<&Envelope>,
    reason: DeadLetterReason,
    error: &str,
) {
    let header = |name: &str| {
        let headers = message.headers.as_ref()?;
        headers.get(name).map(|value| value.as_str().to_owned())
    };
    let (task_id, task) = match envelope {
        Some(envelope) => (Some(envelope.id.clone()), Some(envelope.task.clone())),
        None => (
            header(header::ID).and_then(|id| TaskId::new(id).ok()),
            header(header::TASK).and_then(|name| TaskName::new(name).ok()),
        ),
    };
    shared.observer.rejected(&Rejected {
        task_id: task_id.as_ref(),
        task: task.as_ref(),
        queue,
        reason,
        error,
    });
}

/// Acknowledges the message of a task that asks to be acknowledged before it runs
/// (`acks_late = false`); its outcome is then [`Outcome::Acknowledged`], which sends nothing more.
///
/// # Cancel safety
/// As [`nats_io::ack`]: dropped, the ack has been sent or not.
pub(crate) async fn ack_before_run(message: &jetstream::Message) {
    ack(message).await;
}

async fn ack(message: &jetstream::Message) {
    if let Err(error) = nats_io::ack(message).await {
        tracing::warn!(error = %error, "cannot acknowledge a message; it will be redelivered and recognised as done");
    }
}

/// Ends a dead-lettered delivery as the dead-lettering decided.
async fn end_dead_letter(shared: &WorkerShared, message: &jetstream::Message, ending: Ending) {
    match ending {
        Ending::Terminate => {
            if let Err(error) = nats_io::term(message).await {
                tracing::warn!(error = %error, "cannot terminate a dead-lettered message; it will be redelivered and dead-lettered again (a stored copy is de-duplicated)");
            }
        }
        Ending::HandBack(delay) => shared.handbacks.hand_back(message, Some(delay)).await,
        Ending::Nak(delay) => {
            if let Err(error) = nats_io::nak(message, Some(delay)).await {
                tracing::warn!(error = %error, "cannot hand back a message to dead-letter; it will be redelivered after AckWait");
            }
        }
    }
}

/// Moves a task that is not due yet to the delayed stream, then acknowledges it here.
async fn hold_until_due(
    shared: &WorkerShared,
    queue: &QueueName,
    message: &jetstream::Message,
    envelope: &Envelope,
) {
    let mut headers = crate::nats::headers::republished_headers(message.headers.as_ref());
    let hold_id = format!(
        "{}-hold-{}",
        envelope.message_id(),
        envelope.eta_ms.unwrap_or(0)
    );
    headers.insert(header::NATS_MSG_ID, hold_id.as_str());
    // NOTE(protocol): a delayed subject has no priority token, so the priority of the subject the
    // task came on goes into `Celerity-Priority`, where the scheduler reads it.
    if let Some((_, priority)) = shared.layout.parse_task_subject(&message.subject) {
        headers.insert(header::PRIORITY, priority.to_string().as_str());
    }
    let subject = shared.layout.delayed_subject(queue);
    match nats_io::publish_stored(&shared.js, subject, headers, message.payload.clone()).await {
        Ok(_) => ack(message).await,
        Err(error) => {
            tracing::warn!(task_id = %envelope.id, error = %error, "cannot move a task that is not due yet; retrying in 1 s");
            let delay = Some(Duration::from_secs(1));
            shared.handbacks.hand_back(message, delay).await;
        }
    }
}
