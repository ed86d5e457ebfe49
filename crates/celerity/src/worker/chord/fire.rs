//! Reading a chord's stored records when its first completion arrives (`load`), and firing it once
//! its policy decided (`fire`): the fired marker, then the body sent, or failed, then the chord's
//! completions purged.

use async_nats::jetstream::{kv, stream};
use celerity_proto::{
    ChordDefinition, ChordMismatch, ChordPolicy, TaskId, TaskName, TaskState, header_result_id,
};

use super::progress::Decision;
use crate::error::EnqueueError;
use crate::telemetry::{ChordLinks, chord_body_context};
use crate::worker::WorkerShared;
use crate::worker::continuation::{ChordFailure, fail_chord_body, publish_chord_body};
use crate::worker::records::failed_by_earlier_step;

/// The name chord records carry as their task (a chord is not a registered task).
fn chord_task() -> TaskName {
    // INVARIANT: a constant that satisfies the task name rule.
    TaskName::new(celerity_proto::builtin::CHORD_TASK).expect("a valid task name")
}

/// What the stored records say about a chord whose first completion arrived.
pub(super) enum Loaded {
    /// Count its completions under this size and policy.
    Counting { size: u32, policy: ChordPolicy },
    /// Its definition breaks a rule: the chord fails.
    Invalid(ChordMismatch),
    /// No (readable) definition: it expired, or the completion is a stray.
    Missing,
    /// It fired before and its body was sent: nothing is left to do.
    Settled,
}

/// Reads chord `chord_id`'s definition and fired marker (together: one round trip).
pub(super) async fn load(
    shared: &WorkerShared,
    chords: &kv::Store,
    chord_id: &TaskId,
) -> Result<Loaded, kv::EntryError> {
    let marker = format!("{chord_id}.fired");
    let (definition, marker) =
        tokio::join!(chords.get(chord_id.as_str()), chords.get(marker.as_str()));
    let Some(bytes) = definition? else {
        return Ok(Loaded::Missing);
    };
    let definition: ChordDefinition = match serde_json::from_slice(&bytes) {
        Ok(definition) => definition,
        Err(error) => {
            tracing::error!(chord_id = %chord_id, error = %error, "the chord's stored definition is unreadable; dropping its completions");
            return Ok(Loaded::Missing);
        }
    };
    if let Err(error) = definition.check() {
        return Ok(Loaded::Invalid(error));
    }
    // Fired before (by this worker before a restart, or by another): done if its body was sent;
    // if not (the firing worker died in between), its completions decide it again.
    if marker?.is_some() && body_was_sent(shared, &definition).await {
        return Ok(Loaded::Settled);
    }
    Ok(Loaded::Counting {
        size: definition.size,
        policy: definition.policy,
    })
}

/// Why a chord could not be fired; its completions stay in the stream, so a later replay fires
/// it again.
#[derive(Debug, thiserror::Error)]
pub(super) enum FireError {
    /// The chords bucket could not be read.
    #[error("cannot read the definition of chord {chord_id}")]
    ReadDefinition {
        chord_id: TaskId,
        #[source]
        source: kv::EntryError,
    },
    /// The stored definition is not a chord definition.
    #[error("the stored definition of chord {chord_id} is unreadable")]
    UnreadableDefinition {
        chord_id: TaskId,
        #[source]
        source: serde_json::Error,
    },
    /// The fired marker could not be written.
    #[error("cannot mark chord {chord_id} fired")]
    Mark {
        chord_id: TaskId,
        #[source]
        source: kv::CreateError,
    },
    /// The failing member's result id is not a valid id.
    #[error("header member {index} of chord {chord_id} has no valid result id")]
    MemberId {
        chord_id: TaskId,
        index: u32,
        #[source]
        source: celerity_proto::InvalidName,
    },
    /// The body, or the failure of its steps, could not be sent.
    #[error("cannot send or fail the body of chord {chord_id}")]
    Body {
        chord_id: TaskId,
        #[source]
        source: EnqueueError,
    },
    /// The chord's completions could not be purged.
    #[error("cannot purge the completions of chord {chord_id}")]
    Purge {
        chord_id: TaskId,
        #[source]
        source: stream::PurgeError,
    },
}

/// What a chord does, and the run spans of its members (the `traceparent`s its completions
/// brought), which its body's publish links to.
pub(super) struct Decided {
    pub(super) decision: Decision,
    pub(super) traces: Vec<String>,
}

/// Fires one chord: marks it fired, sends (or fails) its body, purges its completions.
///
/// # Errors
/// A read, write or send that failed; the chord stays pending.
pub(super) async fn fire(
    shared: &WorkerShared,
    chords: &kv::Store,
    stream: &stream::Stream,
    chord_id: &TaskId,
    subject: &str,
    decided: Decided,
) -> Result<(), FireError> {
    let id = || chord_id.clone();
    let stored =
        chords
            .get(chord_id.as_str())
            .await
            .map_err(|source| FireError::ReadDefinition {
                chord_id: id(),
                source,
            })?;
    let Some(bytes) = stored else {
        tracing::error!(chord_id = %chord_id, "a chord completed but has no definition (expired); dropping its completions");
        let _ = stream.purge().filter(subject).await;
        return Ok(());
    };
    let definition: ChordDefinition =
        serde_json::from_slice(&bytes).map_err(|source| FireError::UnreadableDefinition {
            chord_id: id(),
            source,
        })?;
    let first_time = match chords.create(format!("{chord_id}.fired"), "1".into()).await {
        Ok(_) => true,
        Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => false,
        Err(source) => {
            return Err(FireError::Mark {
                chord_id: id(),
                source,
            });
        }
    };
    let body_started = !first_time && body_was_sent(shared, &definition).await;
    if !body_started {
        send_or_fail_body(shared, &definition, chord_id, decided).await?;
    }
    stream
        .purge()
        .filter(subject)
        .await
        .map_err(|source| FireError::Purge {
            chord_id: id(),
            source,
        })?;
    Ok(())
}

/// Sends the chord's body with its header results, or fails its steps, as `decision` says.
async fn send_or_fail_body(
    shared: &WorkerShared,
    definition: &ChordDefinition,
    chord_id: &TaskId,
    decided: Decided,
) -> Result<(), FireError> {
    let Decided { decision, traces } = decided;
    let body_error = |source| FireError::Body {
        chord_id: chord_id.clone(),
        source,
    };
    let failure = match decision {
        Decision::Complete(results) => {
            use opentelemetry::context::FutureExt as _;
            // Sent in the chord's trace, linked to its members' runs.
            let links = ChordLinks::new(traces.iter().map(String::as_str), definition.size);
            let context = chord_body_context(definition.traceparent.as_deref(), links);
            publish_chord_body(shared, definition, &results)
                .with_context(context)
                .await
                .map_err(body_error)?;
            tracing::debug!(chord_id = %chord_id, "chord body sent");
            return Ok(());
        }
        Decision::Failed { index, error } => {
            tracing::info!(chord_id = %chord_id, member = index, "a chord header member failed; the body will not run");
            let member =
                header_result_id(chord_id, index).map_err(|source| FireError::MemberId {
                    chord_id: chord_id.clone(),
                    index,
                    source,
                })?;
            ChordFailure::member(member, error)
        }
        Decision::Invalid(mismatch) => ChordFailure::invalid(chord_id, &mismatch),
    };
    fail_chord_body(shared, definition, chord_task(), &failure)
        .await
        .map_err(body_error)
}

/// True when the chord's body already has a record beyond PENDING: it was sent before a crash.
///
/// The step read is the one the body starts with (a chain's first, not its last, which stays
/// PENDING while the earlier steps run).
async fn body_was_sent(shared: &WorkerShared, definition: &ChordDefinition) -> bool {
    let Some(first) = definition.body_first_steps().first().map(|step| &step.id) else {
        return false;
    };
    // The failure its chain's failed head wrote for it is not a send: the head ran again.
    matches!(shared.store.get(first).await, Ok(Some(record))
        if record.state != TaskState::Pending && !failed_by_earlier_step(&record))
}
