//! Dead-lettering: copying a message no worker can run to the dead-letter stream with the reason,
//! then terminating it in its queue.
//!
//! The original headers and body are kept byte for byte; if the copy is not acknowledged, the
//! original is not terminated (it is redelivered later), so nothing is lost.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use celerity_proto::{DeadLetter, DeadLetterReason, QueueName};

use crate::clock::now_ms;
use crate::nats::headers::append_pairs;
use crate::worker::WorkerShared;

/// Copies `message` to the dead-letter stream with `reason`, then terminates it.
pub(crate) async fn dead_letter(
    shared: &WorkerShared,
    queue: &QueueName,
    message: &jetstream::Message,
    reason: DeadLetterReason,
    error: String,
) {
    let info = message.info().ok();
    let letter = DeadLetter {
        reason,
        error,
        worker: shared.hostname.to_string(),
        deliveries: info.as_ref().map_or(1, |info| info.delivered as u64),
        subject: message.subject.to_string(),
        stream_sequence: info.as_ref().map_or(0, |info| info.stream_sequence),
        time_ms: now_ms(),
    };
    let mut headers = message.headers.clone().unwrap_or_default();
    append_pairs(&mut headers, letter.to_headers());
    // NOTE(protocol): the copy is de-duplicated per original message, not per task id: two bad
    // messages that reuse one id must both be kept, while a retried copy of one message is not.
    let stream = info.as_ref().map_or("", |info| info.stream);
    headers.insert(
        celerity_proto::header::NATS_MSG_ID,
        format!("dlq-{stream}-{}", letter.stream_sequence).as_str(),
    );
    let subject = shared.layout.dead_letter_subject(queue);
    let stored = async {
        shared
            .js
            .publish_with_headers(subject, headers, message.payload.clone())
            .await?
            .await
    };
    match stored.await {
        Ok(_) => {
            tracing::warn!(
                queue = %queue,
                reason = %letter.reason,
                error = %letter.error,
                stream_sequence = letter.stream_sequence,
                deliveries = letter.deliveries,
                "dead-lettered a message"
            );
            if let Err(error) = message.ack_with(AckKind::Term).await {
                tracing::warn!(error = %error, "cannot terminate a dead-lettered message; it will be redelivered and dead-lettered again");
            }
        }
        Err(error) => {
            tracing::error!(
                queue = %queue,
                reason = %letter.reason,
                error = %error,
                "cannot store a dead letter; the message stays in its queue and is retried in 5 s"
            );
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                .await;
        }
    }
}
