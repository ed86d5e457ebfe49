//! A task's records as the worker pipeline writes them: reading the final record of a redelivered
//! task, storing states and final records (retried while the server is away; a record larger than
//! a message may be becomes a `celerity::ResultTooLarge` failure), and notifying the producer's
//! reply subject.
//!
//! It sits below everything that ends a task (`execute`, `continuation`, `dead_letter`), so none
//! of them calls back into another to store a record; the bucket itself is `ResultStore`'s.

use std::time::Duration;

use celerity_proto::{Envelope, ErrorRecord, ResultRecord, TaskState};
use serde_json::Value;

use crate::result_store::ResultStore;
use crate::worker::WorkerShared;
use crate::worker::nats_io;

/// The task's final record, if it has one.
pub(crate) async fn final_record(store: &ResultStore, envelope: &Envelope) -> Option<ResultRecord> {
    match store.get(&envelope.id).await {
        Ok(Some(record)) if record.state.is_ready() => Some(record),
        Ok(_) => None,
        Err(error) => {
            tracing::warn!(task_id = %envelope.id, error = %crate::error_chain(&error), "cannot read the result of a redelivered task; running it again");
            None
        }
    }
}

/// Publishes a final record to the producer's reply subject, if it asked for one.
pub(crate) async fn notify(shared: &WorkerShared, envelope: &Envelope, record: &ResultRecord) {
    let Some(reply_to) = &envelope.reply_to else {
        return;
    };
    match ResultStore::encode(record, envelope.content_type) {
        Ok(bytes) => publish_reply(shared, envelope, reply_to, bytes).await,
        Err(error) => {
            tracing::warn!(task_id = %envelope.id, error = %crate::error_chain(&error), "cannot encode the result notification")
        }
    }
}

async fn publish_reply(
    shared: &WorkerShared,
    envelope: &Envelope,
    reply_to: &str,
    bytes: bytes::Bytes,
) {
    // NOTE(protocol): only `<ns>.reply.<token>` is accepted, so a producer cannot make a worker
    // publish into streams, buckets or the JetStream API.
    if !shared.layout.is_reply_subject(reply_to) {
        tracing::warn!(task_id = %envelope.id, reply_to, "Celerity-Reply-To is not a reply subject of this namespace; not notifying");
        return;
    }
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(celerity_proto::header::ID, envelope.id.as_str());
    if let Err(error) =
        nats_io::notify(&shared.nats, reply_to.to_owned().into(), headers, bytes).await
    {
        tracing::debug!(error = %error, "cannot notify the producer; it reads the bucket before giving up");
    }
}

pub(crate) async fn write_state(shared: &WorkerShared, envelope: &Envelope, state: TaskState) {
    let state_name = state.to_string();
    if let Err(error) = shared
        .store
        .write_progress(envelope, state, Value::Null)
        .await
    {
        tracing::warn!(task_id = %envelope.id, state = %state_name, error = %crate::error_chain(&error), "cannot record the task's state");
    }
}

/// Stores the final record (retrying for a while if the server is away), then notifies the
/// producer. Returns false when the record could not be stored.
///
/// # Cancel safety
/// Not cancel safe: dropped mid-way, the record may be stored while the producer was not notified
/// (it reads the bucket), or not stored at all (the caller has not acknowledged the message yet).
pub(crate) async fn store_final(
    shared: &WorkerShared,
    envelope: &Envelope,
    record: &celerity_proto::ResultRecord,
) -> bool {
    match ResultStore::encode(record, envelope.content_type) {
        Ok(bytes) => store_encoded(shared, envelope, bytes).await,
        Err(error) => {
            tracing::error!(task_id = %envelope.id, error = %crate::error_chain(&error), "cannot encode the result record");
            false
        }
    }
}

/// [`store_final`] of a record already encoded.
pub(crate) async fn store_encoded(
    shared: &WorkerShared,
    envelope: &Envelope,
    bytes: bytes::Bytes,
) -> bool {
    if !put_with_backoff(shared, envelope, &bytes).await {
        tracing::error!(task_id = %envelope.id, "giving up storing the result; the task will be redelivered");
        return false;
    }
    if let Some(reply_to) = &envelope.reply_to {
        publish_reply(shared, envelope, reply_to, bytes).await;
    }
    true
}

/// How a record's write is retried: after 50 ms, then twice as long each time up to 2 s, ten tries
/// in all (about 15 s).
const STORE_BACKOFF: backon::ExponentialBuilder = backon::ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(50))
    .with_max_delay(Duration::from_secs(2))
    .with_max_times(9);

/// Writes an encoded record, retried with [`STORE_BACKOFF`]. False when every try failed.
async fn put_with_backoff(
    shared: &WorkerShared,
    envelope: &Envelope,
    bytes: &bytes::Bytes,
) -> bool {
    use backon::Retryable;
    let mut attempt = 0_u32;
    (|| shared.store.put_encoded(&envelope.id, bytes.clone()))
        .retry(STORE_BACKOFF)
        .notify(|error, _| {
            attempt += 1;
            tracing::warn!(task_id = %envelope.id, attempt, error = %crate::error_chain(error), "cannot store the result; retrying");
        })
        .await
        .is_ok()
}

/// The record encoded, or, when that is larger than a message may be, the record turned into a
/// `celerity::ResultTooLarge` failure, encoded. `None` when even that cannot be encoded (logged).
pub(crate) fn encode_within_limit(
    shared: &WorkerShared,
    envelope: &Envelope,
    record: &mut ResultRecord,
) -> Option<bytes::Bytes> {
    let encode = |record: &ResultRecord| match ResultStore::encode(record, envelope.content_type) {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            tracing::error!(task_id = %envelope.id, error = %crate::error_chain(&error), "cannot encode the result record");
            None
        }
    };
    let bytes = encode(record)?;
    let max_payload = shared.nats.server_info().max_payload;
    if max_payload == 0 || bytes.len() <= max_payload {
        return Some(bytes);
    }
    let error = ErrorRecord::new(
        "celerity::ResultTooLarge",
        format!(
            "the task's result record is {} bytes encoded, more than the {max_payload} a message may hold (the server's max_payload): return less, or keep large data elsewhere and return a reference to it",
            bytes.len()
        ),
    );
    tracing::warn!(task = %envelope.task, task_id = %envelope.id, error = %error, "task failed");
    let started_at_ms = record.started_at_ms;
    *record = shared
        .store
        .record(envelope, TaskState::Failure)
        .with_error(error);
    record.started_at_ms = started_at_ms;
    encode(record)
}
