//! Dead-lettering: copying a message no worker can run to the dead-letter stream with the reason,
//! failing its task so nobody waits on it, then terminating the message in its queue.
//!
//! The copy keeps the original body byte for byte and every header, except that the `Nats-*`
//! headers the server would act on are renamed ([`DeadLetter::copied_header_name`]); error texts
//! are bounded ([`DeadLetter::bounded_error`]).
//! The task fails (`celerity::DeadLettered`, `meta.reason` the reason code) whenever its id can be
//! read, even from an invalid envelope, once the copy is stored; for a valid envelope what follows
//! the failure runs next (its chain, errbacks, chord), and only then is the message terminated.
//!
//! When the copy cannot be stored, what happens depends on why, and never loops without end:
//! - it does not fit the server's `max_payload`, or the dead-letter stream refuses it (an API
//!   error below 500: larger than the stream's `max_msg_size`, ...): it is stored without its
//!   body, flagged with `Celerity-Dlq-Body-Dropped`;
//! - no stream takes the dead-letter subject (it was deleted): the worker creates it again, as at
//!   startup, and publishes once more;
//! - the server cannot store it now (no acknowledgement in time, disconnected, an API error of 500
//!   or more): the message is handed back with a delay that grows with its delivery count
//!   ([`retry_delay`]), and its task is not failed yet;
//! - refused even without its body, or still not stored at delivery [`GIVE_UP_AT_DELIVERY`]: the
//!   worker gives up. It fails the task (when its id can be read), logs the message at error
//!   level and terminates it.
//!
//! The dead-lettering returns how the delivery ends ([`Ending`]); `outcome.rs` sends that.

use std::borrow::Cow;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use bytes::Bytes;
use celerity_proto::{
    ContentType, DeadLetter, DeadLetterReason, Envelope, ErrorRecord, QueueName, ResultRecord,
    TaskId, TaskName, TaskState, dlq_header, header,
};

use crate::clock::now_ms;
use crate::nats::headers::{HeaderView, append_pairs};
use crate::nats::provision::{self, ProvisionError};
use crate::worker::WorkerShared;
use crate::worker::continuation::Continuation;
use crate::worker::nats_io;
use crate::worker::records::ends_message;

/// The delivery at which a dead letter that still cannot be stored is given up (terminated,
/// with an error-level log), counting every delivery of the message.
const GIVE_UP_AT_DELIVERY: u64 = 10;

/// The longest wait before a message whose copy could not be stored is delivered again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// How a dead-lettered delivery ends; `outcome.rs` sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Terminate the message: its copy is stored (or given up).
    Terminate,
    /// Hand it back, counted as a hand-back, to be dead-lettered again after the delay.
    HandBack(Duration),
    /// Nak it with the delay, counted as a delivery (for a task that ran, or must not run again,
    /// so its next delivery is refused by the delivery limit instead of running the task).
    Nak(Duration),
}

/// Copies `message` to the dead-letter stream with `reason` and fails its task if its id can be
/// read (even from an invalid envelope); the message is then to be terminated, or handed back
/// when the copy or the record cannot be stored now.
///
/// # Cancel safety
/// Not cancel safe: dropped mid-way, the copy may be stored while the task is not failed; the
/// message, not terminated, comes back and the copy is de-duplicated.
pub(crate) async fn dead_letter(
    shared: &WorkerShared,
    queue: &QueueName,
    message: &jetstream::Message,
    reason: DeadLetterReason,
    error: String,
) -> Ending {
    let failing = Failing::read(message.headers.as_ref());
    dead_letter_failing(shared, queue, message, failing, reason, error).await
}

/// A task with a valid envelope being dead-lettered, and what follows its failure.
pub(crate) struct DeadTask<'a> {
    pub(crate) envelope: &'a Envelope,
    pub(crate) continuation: &'a Continuation,
}

/// [`dead_letter`] for a message whose envelope is valid: what follows the task's failure runs
/// after its record is stored and before the message is terminated; if it cannot be sent, the
/// message is handed back (its redelivery finds the record, sends what follows and dead-letters
/// it again, the copy de-duplicated).
///
/// # Cancel safety
/// As [`dead_letter`].
pub(crate) async fn dead_letter_task(
    shared: &WorkerShared,
    queue: &QueueName,
    message: &jetstream::Message,
    task: DeadTask<'_>,
    reason: DeadLetterReason,
    error: String,
) -> Ending {
    let failing = Failing {
        envelope: Cow::Borrowed(task.envelope),
        named: true,
        continuation: Some(task.continuation),
    };
    dead_letter_failing(shared, queue, message, Some(failing), reason, error).await
}

/// The task a dead letter fails: its envelope, or as much of an invalid one as a record needs.
struct Failing<'a> {
    envelope: Cow<'a, Envelope>,
    /// False when `Celerity-Task` is missing or invalid: the record then names no task.
    named: bool,
    /// What follows the task (a valid envelope's).
    continuation: Option<&'a Continuation>,
}

impl Failing<'_> {
    /// The envelope, or from an invalid one the id (`None` without a valid `Celerity-Id`), the
    /// task name, content type (JSON if unreadable), retries and reply subject.
    fn read(headers: Option<&HeaderMap>) -> Option<Self> {
        let view = HeaderView(headers);
        if let Ok(envelope) = Envelope::from_headers(&view) {
            return Some(Self {
                envelope: Cow::Owned(envelope),
                named: true,
                continuation: None,
            });
        }
        let value = |name| celerity_proto::HeaderSource::get(&view, name);
        let id = TaskId::new(value(header::ID)?).ok()?;
        let task = value(header::TASK).and_then(|name| TaskName::new(name).ok());
        let named = task.is_some();
        // Never stored: the record of an unnamed task leaves `task` out.
        let placeholder = || TaskName::new("celerity.unnamed").ok();
        let mut envelope = Envelope::new(id, task.or_else(placeholder)?);
        envelope.content_type = value(header::CONTENT_TYPE)
            .and_then(ContentType::parse)
            .unwrap_or(ContentType::Json);
        envelope.retries = value(header::RETRIES)
            .and_then(|retries| retries.trim().parse().ok())
            .unwrap_or(0);
        envelope.reply_to = value(header::REPLY_TO).map(str::to_owned);
        Some(Self {
            envelope: Cow::Owned(envelope),
            named,
            continuation: None,
        })
    }

    /// Stores the task's FAILURE record (`celerity::DeadLettered`, with message `<reason code>:
    /// <bounded error>` and `meta.reason` the code) and notifies its producer, unless the task
    /// already has a final record (a redelivery of the same message, or a finished task whose id
    /// was sent again).
    ///
    /// Returns the final record, or `None` when none could be confirmed or stored.
    async fn record(
        &self,
        shared: &WorkerShared,
        reason: DeadLetterReason,
        error: &str,
    ) -> Option<ResultRecord> {
        let envelope = self.envelope.as_ref();
        match shared.store.get(&envelope.id).await {
            Ok(Some(record)) if ends_message(&record, envelope) => return Some(record),
            Ok(_) => {}
            Err(error) => {
                // Unread, it might be final (a SUCCESS whose ack was lost): not overwritten, the
                // message is handed back and tried again.
                tracing::warn!(task_id = %envelope.id, error = %crate::error_chain(&error), "cannot read the record of a dead-lettered task; trying again later");
                return None;
            }
        }
        let message = format!("{reason}: {}", DeadLetter::bounded_error(error));
        let mut record = shared
            .store
            .record(envelope, TaskState::Failure)
            .with_error(ErrorRecord::new(
                celerity_proto::DeadLetter::ERROR_KIND,
                message,
            ))
            .with_meta(match envelope.requeued_from {
                None => serde_json::json!({ "reason": reason.code() }),
                Some(seq) => serde_json::json!({ "reason": reason.code(), "requeued_from": seq }),
            });
        if !self.named {
            record.task = None;
        }
        shared
            .store
            .store_final(envelope, &record)
            .await
            .then_some(record)
    }

    /// Fails the task ([`Failing::record`]) and runs what follows ([`Failing::follow`]); false
    /// when either could not be done.
    async fn fail(&self, shared: &WorkerShared, reason: DeadLetterReason, error: &str) -> bool {
        match self.record(shared, reason, error).await {
            Some(record) => self.follow(shared, &record).await,
            None => false,
        }
    }

    /// Runs what follows the task's failure; false when it could not be sent.
    async fn follow(&self, shared: &WorkerShared, record: &ResultRecord) -> bool {
        let Some(continuation) = self.continuation else {
            return true;
        };
        match continuation.after(shared, &self.envelope, record).await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(task_id = %self.envelope.id, error = %crate::error_chain(&error), "cannot send what follows a dead-lettered task; it will be redelivered");
                false
            }
        }
    }
}

/// The dead-lettering of one delivery: the copy, then the FAILURE record and the termination; or
/// the message handed back for later; or given up.
///
/// The record is written only once the copy is stored (or given up): a message handed back must
/// come to the dead-letter path again, and a redelivered task that finds a final record is
/// acknowledged without a look at why.
async fn dead_letter_failing(
    shared: &WorkerShared,
    queue: &QueueName,
    message: &jetstream::Message,
    failing: Option<Failing<'_>>,
    reason: DeadLetterReason,
    error: String,
) -> Ending {
    let info = message.info().ok();
    let letter = DeadLetter {
        reason,
        error: DeadLetter::bounded_error(&error).into_owned(),
        worker: shared.hostname.to_string(),
        deliveries: info.as_ref().map_or(1, |info| info.delivered as u64),
        subject: message.subject.to_string(),
        stream_sequence: info.as_ref().map_or(0, |info| info.stream_sequence),
        time_ms: now_ms(),
    };
    let stream = info.as_ref().map_or("", |info| info.stream);
    let headers = copy_headers(message.headers.as_ref(), &letter, stream);
    let subject = shared.layout.dead_letter_subject(queue);
    let stored = store_copy(shared, &subject, headers, message.payload.clone()).await;
    let given_up = match stored {
        Ok(body_dropped) => {
            return after_copy(shared, queue, failing.as_ref(), &letter, body_dropped).await;
        }
        Err(error @ (CopyError::Unavailable(_) | CopyError::Recreate(_))) => {
            match retry_delay(letter.deliveries) {
                Some(delay) => {
                    tracing::error!(
                        queue = %queue,
                        reason = %letter.reason,
                        error = %crate::error_chain(&error),
                        deliveries = letter.deliveries,
                        retry_in_ms = delay.as_millis() as u64,
                        "cannot store a dead letter now; the message stays in its queue and is tried again"
                    );
                    return hand_back(reason, delay);
                }
                None => error,
            }
        }
        Err(error) => error,
    };
    let recorded = match &failing {
        Some(failing) => failing.fail(shared, reason, &letter.error).await,
        None => false,
    };
    tracing::error!(
        queue = %queue,
        reason = %letter.reason,
        error = %letter.error,
        copy_error = %crate::error_chain(&given_up),
        subject = %letter.subject,
        stream_sequence = letter.stream_sequence,
        deliveries = letter.deliveries,
        task_id = failing.as_ref().map(|failing| failing.envelope.id.as_str()),
        failure_recorded = recorded,
        body_bytes = message.payload.len(),
        "giving up a dead letter that cannot be stored: the message is terminated and kept nowhere"
    );
    Ending::Terminate
}

/// How a delivery whose copy is stored ends: terminated once its task's FAILURE record is stored
/// and what follows it was sent; handed back when either could not be done (the redelivery tries
/// again, the copy de-duplicated, with a growing delay, until the worker gives the message up).
async fn after_copy(
    shared: &WorkerShared,
    queue: &QueueName,
    failing: Option<&Failing<'_>>,
    letter: &DeadLetter,
    body_dropped: Option<usize>,
) -> Ending {
    tracing::warn!(
        queue = %queue,
        reason = %letter.reason,
        error = %letter.error,
        stream_sequence = letter.stream_sequence,
        deliveries = letter.deliveries,
        body_dropped,
        "dead-lettered a message"
    );
    let Some(failing) = failing else {
        return Ending::Terminate;
    };
    if !failing.fail(shared, letter.reason, &letter.error).await {
        if let Some(delay) = retry_delay(letter.deliveries) {
            return hand_back(letter.reason, delay);
        }
        tracing::error!(queue = %queue, task_id = %failing.envelope.id, deliveries = letter.deliveries, "giving up the record of a dead-lettered task (or what follows it): the message is terminated");
    }
    Ending::Terminate
}

/// How a message to be dead-lettered again after `delay` is handed back. For a task that ran
/// (`result_not_stored`) or must not run again (`too_many_deliveries`) the hand-back counts as a
/// delivery, so its next delivery is refused by the delivery limit instead of running the task;
/// for the others, which cannot run anyway, it is counted as a hand-back and keeps its reason.
fn hand_back(reason: DeadLetterReason, delay: Duration) -> Ending {
    match reason {
        DeadLetterReason::ResultNotStored | DeadLetterReason::TooManyDeliveries => {
            Ending::Nak(delay)
        }
        _ => Ending::HandBack(delay),
    }
}

/// The copy's headers: the original's (renamed where the server would act on them), the
/// dead-letter headers, and a `Nats-Msg-Id` of its own.
fn copy_headers(original: Option<&HeaderMap>, letter: &DeadLetter, stream: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, values) in original.into_iter().flat_map(HeaderMap::iter) {
        let Some(copied) = DeadLetter::copied_header_name(name.as_ref()) else {
            continue;
        };
        for value in values {
            headers.append(copied.as_ref(), value.as_str());
        }
    }
    append_pairs(&mut headers, letter.to_headers());
    // NOTE(protocol): the copy is de-duplicated per original message, not per task id: two bad
    // messages that reuse one id must both be kept, while a retried copy of one message is not.
    headers.insert(
        header::NATS_MSG_ID,
        format!("dlq-{stream}-{}", letter.stream_sequence).as_str(),
    );
    headers
}

/// Why a copy was not stored.
#[derive(Debug, thiserror::Error)]
enum CopyError {
    /// No stream takes the dead-letter subject (a "no responders" answer).
    #[error("no stream stores the dead-letter subject")]
    NoStream(#[source] PublishError),
    /// The client or the server refused this copy: publishing it again gets the same answer.
    #[error("the copy was refused")]
    Refused(#[source] PublishError),
    /// The server could not take it now.
    #[error("the dead-letter stream did not store the copy")]
    Unavailable(#[source] PublishError),
    /// The dead-letter stream was missing and could not be created again.
    #[error("cannot create the dead-letter stream again")]
    Recreate(#[source] ProvisionError),
}

impl CopyError {
    fn of(error: PublishError) -> Self {
        let api_code = std::error::Error::source(&error)
            .and_then(|source| source.downcast_ref::<jetstream::Error>())
            .map(jetstream::Error::code);
        match error.kind() {
            PublishErrorKind::StreamNotFound => CopyError::NoStream(error),
            PublishErrorKind::MaxPayloadExceeded
            | PublishErrorKind::WrongLastMessageId
            | PublishErrorKind::WrongLastSequence => CopyError::Refused(error),
            PublishErrorKind::Other if api_code.is_some_and(|code| code < 500) => {
                CopyError::Refused(error)
            }
            _ => CopyError::Unavailable(error),
        }
    }
}

/// Stores the copy, without its body when it does not fit the server's `max_payload` or the
/// stream refuses it whole. Returns the size of the body left out, if it was.
async fn store_copy(
    shared: &WorkerShared,
    subject: &str,
    mut headers: HeaderMap,
    payload: Bytes,
) -> Result<Option<usize>, CopyError> {
    let max_payload = shared.nats.server_info().max_payload;
    if payload.is_empty() || wire_len(&headers) + payload.len() <= max_payload {
        match publish(shared, subject, headers.clone(), payload.clone()).await {
            Ok(()) => return Ok(None),
            Err(CopyError::Refused(error)) if !payload.is_empty() => {
                tracing::warn!(error = %crate::error_chain(&error), "the dead-letter stream refused a copy; storing it without its body");
            }
            Err(error) => return Err(error),
        }
    }
    headers.insert(dlq_header::BODY_DROPPED, payload.len().to_string().as_str());
    publish(shared, subject, headers, Bytes::new()).await?;
    Ok(Some(payload.len()))
}

/// Publishes one copy and waits for its acknowledgement; a dead-letter stream that is gone is
/// created again (as at startup) and the copy published once more.
async fn publish(
    shared: &WorkerShared,
    subject: &str,
    headers: HeaderMap,
    payload: Bytes,
) -> Result<(), CopyError> {
    let once = |headers, payload| async move {
        nats_io::publish_stored(&shared.js, subject.to_owned(), headers, payload)
            .await
            .map(drop)
            .map_err(CopyError::of)
    };
    match once(headers.clone(), payload.clone()).await {
        Err(CopyError::NoStream(error)) => {
            tracing::warn!(error = %crate::error_chain(&error), "the dead-letter stream is missing; creating it again");
            provision::dead_letter_stream(
                &shared.js,
                &shared.layout,
                &shared.app.settings().storage,
            )
            .await
            .map_err(CopyError::Recreate)?;
            match once(headers, payload).await {
                Err(CopyError::NoStream(error)) => Err(CopyError::Unavailable(error)),
                other => other,
            }
        }
        other => other,
    }
}

/// The size of a message's header block on the wire: `NATS/1.0\r\n`, each `name: value\r\n`, `\r\n`.
fn wire_len(headers: &HeaderMap) -> usize {
    let pairs: usize = headers
        .iter()
        .flat_map(|(name, values)| {
            let name: &str = name.as_ref();
            values
                .iter()
                .map(move |value| name.len() + value.as_str().len() + 4)
        })
        .sum();
    "NATS/1.0\r\n\r\n".len() + pairs
}

/// How long to wait before the next delivery of a message whose copy could not be stored at
/// delivery `deliveries`: 1 s, then twice as long each time up to a minute; `None` from delivery
/// [`GIVE_UP_AT_DELIVERY`] on (about four minutes of attempts for a message dead-lettered at its
/// first delivery).
fn retry_delay(deliveries: u64) -> Option<Duration> {
    if deliveries >= GIVE_UP_AT_DELIVERY {
        return None;
    }
    let doubled = Duration::from_secs(1u64 << deliveries.saturating_sub(1).min(6));
    Some(doubled.min(MAX_RETRY_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_delay_grows_with_the_deliveries_and_ends() {
        let delays: Vec<_> = (1..=GIVE_UP_AT_DELIVERY)
            .map(|deliveries| retry_delay(deliveries).map(|delay| delay.as_secs()))
            .collect();
        assert_eq!(
            delays,
            [
                Some(1),
                Some(2),
                Some(4),
                Some(8),
                Some(16),
                Some(32),
                Some(60),
                Some(60),
                Some(60),
                None
            ]
        );
        assert_eq!(retry_delay(0), Some(Duration::from_secs(1)));
        assert_eq!(retry_delay(u64::MAX), None);
    }

    #[test]
    fn a_task_that_ran_or_must_not_run_is_nakd_and_the_others_are_handed_back() {
        let delay = Duration::from_secs(2);
        assert_eq!(
            hand_back(DeadLetterReason::ResultNotStored, delay),
            Ending::Nak(delay)
        );
        assert_eq!(
            hand_back(DeadLetterReason::TooManyDeliveries, delay),
            Ending::Nak(delay)
        );
        assert_eq!(
            hand_back(DeadLetterReason::UnknownTask, delay),
            Ending::HandBack(delay)
        );
        assert_eq!(
            hand_back(DeadLetterReason::BadEnvelope, delay),
            Ending::HandBack(delay)
        );
    }

    #[test]
    fn the_wire_length_counts_every_value() {
        let mut headers = HeaderMap::new();
        headers.insert("A", "1");
        headers.append("A", "22");
        headers.insert("Bb", "");
        // NATS/1.0\r\n + "A: 1\r\n" + "A: 22\r\n" + "Bb: \r\n" + \r\n
        assert_eq!(wire_len(&headers), 10 + 6 + 7 + 6 + 2);
    }

    #[test]
    fn the_copy_renames_server_headers_and_replaces_the_message_id() {
        let mut original = HeaderMap::new();
        original.insert("Celerity-Id", "t1");
        original.insert("Nats-Msg-Id", "t1");
        original.insert("Nats-Expected-Stream", "CELERITY_Q_default");
        original.insert("X-Tenant", "acme");
        let letter = DeadLetter {
            reason: DeadLetterReason::UnknownTask,
            error: "no task".into(),
            worker: "w1".into(),
            deliveries: 1,
            subject: "celerity.q.default.0".into(),
            stream_sequence: 7,
            time_ms: 1,
        };
        let copy = copy_headers(Some(&original), &letter, "CELERITY_Q_default");
        let get = |name: &str| copy.get(name).map(|value| value.as_str().to_owned());
        assert_eq!(get("Nats-Expected-Stream"), None);
        assert_eq!(
            get("Celerity-Dlq-Original-Nats-Expected-Stream").as_deref(),
            Some("CELERITY_Q_default")
        );
        assert_eq!(
            get("Nats-Msg-Id").as_deref(),
            Some("dlq-CELERITY_Q_default-7")
        );
        assert_eq!(get("X-Tenant").as_deref(), Some("acme"));
        assert_eq!(get("Celerity-Dlq-Reason").as_deref(), Some("unknown_task"));
    }
}
