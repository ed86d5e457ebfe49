//! Hand-backs: a worker that gives a queue message back without running it (it is shutting down,
//! it has no credit for a message a late answer brought, the delayed stream or the dead-letter
//! stream cannot take it now) counts that in the hand-backs bucket, because the server counts
//! every delivery alike.
//!
//! The delivery limit (`max_deliveries`) is there to end crash loops, and the server's delivery
//! count is the only witness a crash leaves; hand-backs are subtracted from it so that only the
//! deliveries that may have run the task count. Nothing is read or written on the path of a task
//! that runs: the bucket is written when a message is handed back, and read only when a message's
//! delivery count passes its limit.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use celerity_proto::Layout;

use crate::worker::nats_io;

/// The hand-backs bucket of a worker.
#[derive(Clone)]
pub(crate) struct Handbacks {
    bucket: kv::Store,
    layout: Layout,
}

impl std::fmt::Debug for Handbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handbacks").finish_non_exhaustive()
    }
}

impl Handbacks {
    pub(crate) fn new(bucket: kv::Store, layout: Layout) -> Self {
        Self { bucket, layout }
    }

    /// Hands `message` back to its queue, to be delivered again after `delay` (or at once), and
    /// counts it. A count that cannot be written is logged: the message is still handed back, and
    /// may then reach its delivery limit one delivery early.
    pub(crate) async fn hand_back(&self, message: &jetstream::Message, delay: Option<Duration>) {
        if let Some(key) = self.key_of(message) {
            self.count(&key).await;
        }
        if let Err(error) = nats_io::nak(message, delay).await {
            tracing::warn!(error = %error, "cannot hand a task back; it will be redelivered after AckWait");
        }
    }

    /// Counts one hand-back of the message at `sequence` in `stream` (for a message whose ack
    /// subject is all that is left of it, as in a cold shutdown).
    pub(crate) async fn count_handback(&self, stream: &str, sequence: u64) {
        self.count(&self.layout.handback_key(stream, sequence))
            .await;
    }

    /// How many of `message`'s deliveries may have run it: its delivery count less the times a
    /// worker handed it back. A bucket that cannot be read counts no hand-back (logged).
    pub(crate) async fn deliveries_that_ran(&self, message: &jetstream::Message) -> u64 {
        let delivered = message.info().map_or(1, |info| info.delivered as u64);
        let Some(key) = self.key_of(message) else {
            return delivered;
        };
        let handed_back = match self.bucket.get(key.as_str()).await {
            Ok(value) => value.as_deref().map_or(0, parse_count),
            Err(error) => {
                tracing::warn!(key, error = %error, "cannot read a message's hand-backs; counting every delivery");
                0
            }
        };
        delivered.saturating_sub(handed_back)
    }

    fn key_of(&self, message: &jetstream::Message) -> Option<String> {
        let info = message.info().ok()?;
        Some(self.layout.handback_key(info.stream, info.stream_sequence))
    }

    /// Adds one to the count under `key`. One worker holds a message at a time, so a read and a
    /// compare-and-set are enough; a lost race (a redelivery already on another worker) is
    /// retried once and then given up.
    async fn count(&self, key: &str) {
        for _ in 0..2 {
            let entry = match self.bucket.entry(key).await {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::warn!(key, error = %error, "cannot read a message's hand-backs");
                    return;
                }
            };
            let (count, revision) = match &entry {
                Some(entry) if entry.operation == kv::Operation::Put => {
                    (parse_count(&entry.value), entry.revision)
                }
                Some(entry) => (0, entry.revision),
                None => (0, 0),
            };
            let value = (count + 1).to_string().into_bytes().into();
            let written = match revision {
                0 => self.bucket.create(key, value).await.map(drop).is_ok(),
                revision => self.bucket.update(key, value, revision).await.is_ok(),
            };
            if written {
                return;
            }
        }
        tracing::warn!(key, "cannot count a hand-back of a message");
    }
}

/// A count stored as decimal text; anything else counts as none.
fn parse_count(value: &[u8]) -> u64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_decimal_text_and_anything_else_is_none() {
        assert_eq!(parse_count(b"3"), 3);
        assert_eq!(parse_count(b" 12\n"), 12);
        assert_eq!(parse_count(b"x"), 0);
        assert_eq!(parse_count(b""), 0);
    }
}
