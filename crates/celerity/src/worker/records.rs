//! A task's records as the worker pipeline reads and writes them: the final record of a redelivered
//! task, states (RECEIVED, STARTED), and a result record within the server's message size (a
//! larger one becomes a `celerity::ResultTooLarge` failure). Final records are stored and notified
//! by `ResultStore::store_final`.
//!
//! It sits below everything that ends a task (`execute`, `continuation`, `dead_letter`), so none
//! of them calls back into another to store a record.

use celerity_proto::{DeadLetter, Envelope, ErrorRecord, ResultRecord, TaskState};
use serde_json::Value;

use crate::result_store::ResultStore;
use crate::worker::WorkerShared;

/// The task's final record, if it has one that ends the task `envelope`'s message carries (see
/// [`ends_message`]).
pub(crate) async fn final_record(store: &ResultStore, envelope: &Envelope) -> Option<ResultRecord> {
    match store.get(&envelope.id).await {
        Ok(Some(record)) if ends_message(&record, envelope) => Some(record),
        Ok(_) => None,
        Err(error) => {
            tracing::warn!(task_id = %envelope.id, error = %crate::error_chain(&error), "cannot read the result of a redelivered task; running it again");
            None
        }
    }
}

/// Whether `record`, stored under the task's id, ends the task that `envelope`'s message carries,
/// so the message is acknowledged without running it (or dead-lettered again, when the record says
/// so). Two final records do not:
/// - the FAILURE a dead letter wrote (`celerity::DeadLettered`) before the message was requeued
///   from a dead letter (`Celerity-Requeued`): that message is the task sent again to run. A
///   FAILURE the rerun's own dead letter wrote carries the same `meta.requeued_from` and ends it;
/// - the record of a chain step that never ran because an earlier step failed
///   ([`failed_by_earlier_step`]): a message of that step exists only because the earlier step ran
///   again (requeued) and succeeded.
///
/// Both hold on every delivery of such a message, not only the first, so a worker that stops
/// before the rerun stores its record leaves nothing that ends the task early.
pub(crate) fn ends_message(record: &ResultRecord, envelope: &Envelope) -> bool {
    if !record.state.is_ready() || failed_by_earlier_step(record) {
        return false;
    }
    let Some(requeued_from) = envelope.requeued_from else {
        return true;
    };
    let dead_lettered = record
        .error
        .as_ref()
        .is_some_and(|error| error.kind == DeadLetter::ERROR_KIND);
    let written_by_this_requeue = record
        .meta
        .as_ref()
        .and_then(|meta| meta.get("requeued_from"))
        .and_then(Value::as_u64)
        == Some(requeued_from);
    !dead_lettered || written_by_this_requeue
}

/// The queue message `message` as a final record names it (`ResultRecord::message`):
/// `<stream>:<stream sequence>`, the same on every delivery of the message.
pub(crate) fn message_ref(message: &async_nats::jetstream::Message) -> Option<String> {
    let info = message.info().ok()?;
    Some(format!("{}:{}", info.stream, info.stream_sequence))
}

/// True for the record of a chain step that never ran because an earlier step failed: no task
/// name, and `meta.failed_task` the failed step's id (a chord body failed by its header, which
/// names the chord in `meta.chord_id`, is not one: a chord body runs at most once).
pub(crate) fn failed_by_earlier_step(record: &ResultRecord) -> bool {
    let Some(meta) = record.meta.as_ref().filter(|_| record.task.is_none()) else {
        return false;
    };
    meta.get("failed_task").and_then(Value::as_str).is_some() && meta.get("chord_id").is_none()
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
    let (started_at_ms, message) = (record.started_at_ms, record.message.take());
    *record = shared
        .store
        .record(envelope, TaskState::Failure)
        .with_error(error);
    record.started_at_ms = started_at_ms;
    record.message = message;
    encode(record)
}

#[cfg(test)]
mod tests {
    use celerity_proto::{TaskId, TaskName};

    use super::*;

    fn envelope(requeued_from: Option<u64>) -> Envelope {
        let mut envelope =
            Envelope::new(TaskId::new("t1").unwrap(), TaskName::new("it.add").unwrap());
        envelope.requeued_from = requeued_from;
        envelope
    }

    fn record(state: TaskState) -> ResultRecord {
        let mut record = ResultRecord::new(TaskId::new("t1").unwrap(), state, 1);
        record.task = Some(TaskName::new("it.add").unwrap());
        record
    }

    fn dead_lettered() -> ResultRecord {
        record(TaskState::Failure)
            .with_error(ErrorRecord::new(
                DeadLetter::ERROR_KIND,
                "unknown_task: no such task",
            ))
            .with_meta(serde_json::json!({"reason": "unknown_task"}))
    }

    #[test]
    fn a_dead_lettered_failure_ends_a_message_unless_it_was_requeued() {
        assert!(ends_message(&dead_lettered(), &envelope(None)));
        assert!(!ends_message(&dead_lettered(), &envelope(Some(7))));
        let failed = record(TaskState::Failure).with_error(ErrorRecord::new("Boom", "no"));
        assert!(
            ends_message(&failed, &envelope(Some(7))),
            "a failure of its own run ends a requeued message too"
        );
        assert!(ends_message(
            &record(TaskState::Success),
            &envelope(Some(7))
        ));
        let again = dead_lettered()
            .with_meta(serde_json::json!({"reason": "unknown_task", "requeued_from": 7}));
        assert!(
            ends_message(&again, &envelope(Some(7))),
            "the rerun's own dead letter ends it"
        );
        assert!(
            !ends_message(&again, &envelope(Some(9))),
            "a later requeue of that letter runs"
        );
    }

    #[test]
    fn a_step_failed_by_an_earlier_one_never_ends_a_message_of_that_step() {
        let mut step = dead_lettered().with_meta(serde_json::json!({
            "failed_task": "head",
            "reason": "an earlier step of the chain failed",
        }));
        step.task = None;
        assert!(!ends_message(&step, &envelope(None)));
        step.task = Some(TaskName::new("it.add").unwrap());
        assert!(ends_message(&step, &envelope(None)), "a step that ran");
        let mut body = step.with_meta(serde_json::json!({
            "failed_task": "member",
            "chord_id": "chord",
        }));
        body.task = None;
        assert!(
            ends_message(&body, &envelope(None)),
            "a chord body failed by its header runs at most once"
        );
    }

    #[test]
    fn a_state_that_is_not_final_ends_nothing() {
        for state in [TaskState::Pending, TaskState::Started, TaskState::Retry] {
            assert!(!ends_message(&record(state), &envelope(None)));
        }
    }
}
