//! The worker's JetStream edge: every acknowledgement it sends a delivered message (ack, nak,
//! term, in-progress; the queue actor's hand-backs too), and every JetStream publish the pipeline
//! awaits the stream's acknowledgement for (a task held until due, a dead letter, a released
//! delayed task, a chord completion). Reply notifications are `ResultStore`'s.
//!
//! The payloads are `async_nats`'s own ([`AckKind`]), never spelled here. This module decides
//! nothing: `outcome.rs` decides what a task message is told, and the callers log failures in
//! their own words.
//! Sends to the task queues go through `Dispatcher` and `Publisher`, which producers share.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, context::PublishError, publish::PublishAck};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;

/// Acknowledges `message`: it is done, and the server forgets it.
///
/// # Errors
/// The acknowledgement could not be sent (the message is then delivered again after AckWait).
///
/// # Cancel safety
/// Dropped, it has sent the acknowledgement or not; either way the server delivers the message
/// again after AckWait unless it was sent.
pub(crate) async fn ack(message: &jetstream::Message) -> Result<(), async_nats::Error> {
    message.ack().await
}

/// Negatively acknowledges `message`: the server delivers it again after `delay`, or at once.
///
/// # Errors
/// The nak could not be sent (the message is then delivered again after AckWait).
///
/// # Cancel safety
/// Dropped, it has sent the acknowledgement or not; either way the server delivers the message
/// again after AckWait unless it was sent.
pub(crate) async fn nak(
    message: &jetstream::Message,
    delay: Option<Duration>,
) -> Result<(), async_nats::Error> {
    message.ack_with(AckKind::Nak(delay)).await
}

/// Terminates `message`: the server never delivers it again.
///
/// # Errors
/// The term could not be sent (the message is then delivered again after AckWait).
///
/// # Cancel safety
/// Dropped, it has sent the acknowledgement or not; either way the server delivers the message
/// again after AckWait unless it was sent.
pub(crate) async fn term(message: &jetstream::Message) -> Result<(), async_nats::Error> {
    message.ack_with(AckKind::Term).await
}

/// Tells the server that the message acknowledged on `reply` is still being worked on, which
/// restarts its AckWait.
///
/// # Errors
/// The in-progress ack could not be sent.
///
/// # Cancel safety
/// Dropped, it has sent the in-progress ack or not; the next one (half an AckWait later) follows.
pub(crate) async fn in_progress(
    nats: &async_nats::Client,
    reply: Subject,
) -> Result<(), async_nats::PublishError> {
    nats.publish(reply, AckKind::Progress.into()).await
}

/// Publishes `payload` with `headers` to `subject` and waits for the stream to store it.
///
/// # Errors
/// The publish failed, or the stream did not acknowledge it (`PublishError::kind` says why).
///
/// # Cancel safety
/// Not cancel safe: dropped after the publish went out, the message may be stored without the caller
/// learning it. Callers set `Nats-Msg-Id`, so publishing it again is de-duplicated.
pub(crate) async fn publish_stored(
    js: &jetstream::Context,
    subject: impl Into<Subject>,
    headers: HeaderMap,
    payload: Bytes,
) -> Result<PublishAck, PublishError> {
    js.publish_with_headers(subject.into(), headers, payload)
        .await?
        .await
}

/// Negatively acknowledges the message whose ack subject is `subject` (a task whose message the
/// queue actor no longer holds, at a cold shutdown): delivered again after `delay`.
///
/// # Errors
/// The nak could not be sent (the message is then delivered again after AckWait).
///
/// # Cancel safety
/// Dropped, it has sent the nak or not.
pub(crate) async fn nak_by_subject(
    nats: &async_nats::Client,
    subject: Subject,
    delay: Duration,
) -> Result<(), async_nats::PublishError> {
    nats.publish(subject, Bytes::from(AckKind::Nak(Some(delay))))
        .await
}
