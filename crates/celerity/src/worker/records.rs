//! A task's records as the worker pipeline reads and writes them: the final record of a redelivered
//! task, states (RECEIVED, STARTED), and a result record within the server's message size (a
//! larger one becomes a `celerity::ResultTooLarge` failure). Final records are stored and notified
//! by `ResultStore::store_final`.
//!
//! It sits below everything that ends a task (`execute`, `continuation`, `dead_letter`), so none
//! of them calls back into another to store a record.

use celerity_proto::{Envelope, ErrorRecord, ResultRecord, TaskState};
use serde_json::Value;

use crate::result_store::ResultStore;
use crate::worker::WorkerShared;

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
