//! Tasks that end without running their body: one that has a final record already (a
//! redelivery, a chord body sent twice, a new message reusing a finished task's id), one that
//! was revoked or expired, a chord body whose
//! header failed. Each stores its record (unless it has one), sends what follows that end, and
//! returns the message's outcome.

use async_nats::jetstream;
use celerity_proto::{DeadLetterReason, Envelope, QueueName, ResultRecord, TaskState};

use crate::clock::now_ms;
use crate::worker::WorkerShared;
use crate::worker::continuation::Continuation;
use crate::worker::outcome::{Outcome, Rejection};
use crate::worker::records::{final_record, message_ref};

/// The outcome of a message whose task already has a final record, once its producer was
/// notified and what follows it was sent again: the worker that stored the record may have died
/// before doing either (those sends are de-duplicated by id). Acknowledged, or, when its record
/// says it was dead-lettered, dead-lettered again (the copy is de-duplicated), so a worker that
/// stopped between the record and the copy loses no dead letter.
pub(super) async fn acknowledge_done(
    shared: &WorkerShared,
    envelope: &Envelope,
    message: &jetstream::Message,
    record: ResultRecord,
) -> Outcome<'static> {
    tracing::info!(task_id = %envelope.id, "task already has a final result; acknowledging without running it");
    shared.store.notify(envelope, &record).await;
    let continuation = Continuation::of_message(envelope, &message.payload);
    if let Err(error) = continuation.after(shared, envelope, &record).await {
        tracing::error!(task_id = %envelope.id, error = %crate::error_chain(&error), "cannot send what follows the task; it will be redelivered");
        return Outcome::Redeliver;
    }
    let Some(reason) = dead_letter_reason(&record) else {
        return Outcome::Ack;
    };
    let error = record
        .error
        .as_ref()
        .map(|error| error.message.clone())
        .unwrap_or_default();
    let error = error
        .strip_prefix(&format!("{reason}: "))
        .map_or(error.clone(), str::to_owned);
    // What follows was sent above: the letter fails the task as its headers tell it.
    Outcome::DeadLetter(Rejection::message(reason, error))
}

/// The outcome of a first delivery whose task id already has a final record, if it has one:
/// a message that is that record's own (delivered again as new after a server crash lost its
/// consumer's state) is acknowledged without running, as a redelivery is; another message with
/// the id (a producer reused it, or sent it again after the de-duplication window) is
/// dead-lettered `duplicate_task_id` without running, and the record stays. A record that names
/// no message (written before records did) lets the task run, as before.
pub(super) async fn already_final<'a>(
    shared: &WorkerShared,
    envelope: &'a Envelope,
    message: &jetstream::Message,
) -> Option<Outcome<'a>> {
    let record = final_record(&shared.store, envelope).await?;
    let this = message_ref(message);
    let theirs = record.message.clone()?;
    if Some(&theirs) == this.as_ref() {
        return Some(acknowledge_done(shared, envelope, message, record).await);
    }
    let error = format!(
        "task {} already has a final {} record, written for message {theirs}; this message ({}) is not a redelivery of it, so it did not run and the record stays",
        envelope.id,
        record.state,
        this.as_deref().unwrap_or("of unknown sequence")
    );
    tracing::warn!(task_id = %envelope.id, error = %error, "a task id with a final record came in another message");
    let rejection = Rejection::task(envelope, DeadLetterReason::DuplicateTaskId, error);
    Some(Outcome::DeadLetter(
        rejection.followed_by(Continuation::default()),
    ))
}

/// The REVOKED record of a task that was revoked (itself or its canvas).
pub(super) fn revoked_record(shared: &WorkerShared, envelope: &Envelope) -> Option<ResultRecord> {
    if !shared.is_revoked(envelope) {
        return None;
    }
    tracing::info!(task_id = %envelope.id, "task revoked; not running it");
    let record = shared
        .store
        .record(envelope, TaskState::Revoked)
        .with_meta(serde_json::json!({"reason": "revoked"}));
    Some(record)
}

/// The REVOKED record of a task picked up after its deadline.
pub(super) fn expired_record(shared: &WorkerShared, envelope: &Envelope) -> Option<ResultRecord> {
    let expires_ms = envelope
        .expires_ms
        .filter(|expires_ms| now_ms() > *expires_ms)?;
    tracing::info!(task_id = %envelope.id, expires_ms, "task expired before it could start; not running it");
    let meta = serde_json::json!({"reason": "expired", "expires_ms": expires_ms});
    let record = shared
        .store
        .record(envelope, TaskState::Revoked)
        .with_meta(meta);
    Some(record)
}

/// Records a task that will not run because it was revoked or expired and sends what follows
/// that. A task that has a final record already (a chord body sent twice, which ran) keeps it.
pub(super) async fn finish_without_running(
    shared: &WorkerShared,
    envelope: &Envelope,
    message: &jetstream::Message,
    mut record: ResultRecord,
) -> Outcome<'static> {
    if let Some(done) = final_record(&shared.store, envelope).await {
        return acknowledge_done(shared, envelope, message, done).await;
    }
    record.message = message_ref(message);
    let continuation = Continuation::of_message(envelope, &message.payload);
    let queue = shared.layout.parse_task_subject(&message.subject);
    let queue = queue.as_ref().map(|(queue, _)| queue);
    finish_with(shared, envelope, queue, continuation, record).await
}

/// Records a task that will not run (failed or revoked), taken from `queue`, and sends what
/// follows that: acknowledged then (and its end observed), or redelivered when either could not
/// be done.
pub(super) async fn finish_with(
    shared: &WorkerShared,
    envelope: &Envelope,
    queue: Option<&QueueName>,
    continuation: Continuation,
    record: ResultRecord,
) -> Outcome<'static> {
    if !shared.store.store_final(envelope, &record).await {
        return Outcome::Redeliver;
    }
    if let Err(error) = continuation.after(shared, envelope, &record).await {
        tracing::error!(task_id = %envelope.id, error = %crate::error_chain(&error), "cannot send what follows the task; it will be redelivered");
        return Outcome::Redeliver;
    }
    shared.observer.ended_unrun(envelope, queue, &record);
    Outcome::Ack
}

/// The dead-letter reason of a record that a dead letter wrote.
fn dead_letter_reason(record: &ResultRecord) -> Option<DeadLetterReason> {
    let error = record.error.as_ref()?;
    if record.state != TaskState::Failure || error.kind != celerity_proto::DeadLetter::ERROR_KIND {
        return None;
    }
    let code = record.meta.as_ref()?.get("reason")?.as_str()?;
    DeadLetterReason::parse(code)
}
