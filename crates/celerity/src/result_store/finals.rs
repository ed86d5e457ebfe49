//! Final records as a worker stores them: the write retried while the server is away, then the
//! notification to the producer's reply subject.

use std::time::Duration;

use celerity_proto::{Envelope, ResultRecord};

use super::ResultStore;

/// How a record's write is retried: after 50 ms, then twice as long each time up to 2 s, ten tries
/// in all (about 15 s).
const STORE_BACKOFF: backon::ExponentialBuilder = backon::ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(50))
    .with_max_delay(Duration::from_secs(2))
    .with_max_times(9);

impl ResultStore {
    /// Stores the final record (retrying for a while if the server is away), then notifies the
    /// producer. Returns false when the record could not be stored.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped mid-way, the record may be stored while the producer was not
    /// notified (it reads the bucket), or not stored at all (the caller has not acknowledged the
    /// message yet).
    pub(crate) async fn store_final(&self, envelope: &Envelope, record: &ResultRecord) -> bool {
        match Self::encode(record, envelope.content_type) {
            Ok(bytes) => self.store_encoded(envelope, bytes).await,
            Err(error) => {
                tracing::error!(task_id = %envelope.id, error = %crate::error_chain(&error), "cannot encode the result record");
                false
            }
        }
    }

    /// [`ResultStore::store_final`] of a record already encoded.
    ///
    /// # Cancel safety
    /// As [`ResultStore::store_final`].
    pub(crate) async fn store_encoded(&self, envelope: &Envelope, bytes: bytes::Bytes) -> bool {
        if !self.put_with_backoff(envelope, &bytes).await {
            tracing::error!(task_id = %envelope.id, "giving up storing the result; the task will be redelivered");
            return false;
        }
        if let Some(reply_to) = &envelope.reply_to {
            self.publish_reply(envelope, reply_to, bytes).await;
        }
        true
    }

    /// Publishes a final record to the producer's reply subject, if it asked for one.
    ///
    /// # Cancel safety
    /// Dropped, it has sent the notification or not; a producer that misses it reads the bucket.
    pub(crate) async fn notify(&self, envelope: &Envelope, record: &ResultRecord) {
        let Some(reply_to) = &envelope.reply_to else {
            return;
        };
        match Self::encode(record, envelope.content_type) {
            Ok(bytes) => self.publish_reply(envelope, reply_to, bytes).await,
            Err(error) => {
                tracing::warn!(task_id = %envelope.id, error = %crate::error_chain(&error), "cannot encode the result notification")
            }
        }
    }

    /// Publishes to the reply subject (core NATS: nothing stores it, and the producer reads the
    /// results bucket when it misses it).
    async fn publish_reply(&self, envelope: &Envelope, reply_to: &str, bytes: bytes::Bytes) {
        // NOTE(protocol): only `<ns>.reply.<token>` is accepted, so a producer cannot make a worker
        // publish into streams, buckets or the JetStream API.
        if !self.layout.is_reply_subject(reply_to) {
            tracing::warn!(task_id = %envelope.id, reply_to, "Celerity-Reply-To is not a reply subject of this namespace; not notifying");
            return;
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(celerity_proto::header::ID, envelope.id.as_str());
        let subject = async_nats::Subject::from(reply_to);
        if let Err(error) = self
            .nats
            .publish_with_headers(subject, headers, bytes)
            .await
        {
            tracing::debug!(error = %error, "cannot notify the producer; it reads the bucket before giving up");
        }
    }

    /// Writes an encoded record, retried with [`STORE_BACKOFF`]. False when every try failed.
    async fn put_with_backoff(&self, envelope: &Envelope, bytes: &bytes::Bytes) -> bool {
        use backon::Retryable;
        let mut attempt = 0_u32;
        (|| self.put_encoded(&envelope.id, bytes.clone()))
            .retry(STORE_BACKOFF)
            .notify(|error, _| {
                attempt += 1;
                tracing::warn!(task_id = %envelope.id, attempt, error = %crate::error_chain(error), "cannot store the result; retrying");
            })
            .await
            .is_ok()
    }
}
