//! A chord body's header results: the members' records read by the chord's stored definition,
//! never by what the body's message says alone, a few at a time, stopping at the first member
//! without a usable record.

use celerity_proto::{
    ChordDefinition, ChordMismatch, ChordResults, ErrorRecord, TaskId, TaskState, header_result_id,
};
use futures_util::StreamExt;
use serde_json::Value;

use crate::result_store::StoreError;
use crate::worker::WorkerShared;

/// Why a chord body's header results cannot be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeaderResultsError {
    /// The chords or results bucket could not be read (retry later).
    #[error("cannot read chord {chord_id}'s definition or header results")]
    Unavailable {
        chord_id: TaskId,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The body's `chord_results` name a chord that has no stored definition.
    #[error("chord {chord_id} has no stored definition (it expired, or was never sent)")]
    NoChord { chord_id: TaskId },
    /// The stored definition is not a chord definition.
    #[error("the stored definition of chord {chord_id} is unreadable")]
    UnreadableDefinition {
        chord_id: TaskId,
        #[source]
        source: serde_json::Error,
    },
    /// The body's `chord_results` do not match the stored definition.
    #[error(transparent)]
    Mismatch(#[from] ChordMismatch),
    /// A member has no successful result (it can never have one for this body).
    #[error("header member {index} is {state}, not SUCCESS")]
    NotSucceeded { index: u32, state: TaskState },
}

impl HeaderResultsError {
    /// True when the message can never run as sent: it names no stored chord, or does not match
    /// it.
    pub(crate) fn is_bad_message(&self) -> bool {
        matches!(
            self,
            HeaderResultsError::NoChord { .. }
                | HeaderResultsError::UnreadableDefinition { .. }
                | HeaderResultsError::Mismatch(_)
        )
    }
}

/// Reads the results of the header members of the chord that task `task_id` is the body of, in
/// member order, a few at a time: every member's result, only the listed members' (`at_least`),
/// or every member's outcome (`collect`).
///
/// The size, the policy and the task's place in the body come from the chord's stored definition,
/// never from `results` alone (which must match it), and the reads stop at the first member
/// without a usable record.
pub(crate) async fn gather_header_results(
    shared: &WorkerShared,
    task_id: &TaskId,
    results: &ChordResults,
) -> Result<Value, HeaderResultsError> {
    let chord_id = &results.id;
    let unavailable =
        |source: Box<dyn std::error::Error + Send + Sync>| HeaderResultsError::Unavailable {
            chord_id: chord_id.clone(),
            source,
        };
    let bytes = shared
        .dispatcher
        .chords()
        .get(chord_id.as_str())
        .await
        .map_err(|error| unavailable(error.into()))?
        .ok_or_else(|| HeaderResultsError::NoChord {
            chord_id: chord_id.clone(),
        })?;
    let definition: ChordDefinition = serde_json::from_slice(&bytes).map_err(|source| {
        HeaderResultsError::UnreadableDefinition {
            chord_id: chord_id.clone(),
            source,
        }
    })?;
    definition.check_results(task_id, results)?;
    let listed = results.indices.as_deref();
    let count = listed.map_or(definition.size as usize, <[u32]>::len);
    let store = &shared.store;
    let mut reads = futures_util::stream::iter(0..count)
        .map(|position| {
            let index = listed.map_or(position as u32, |listed| listed[position]);
            async move {
                let Ok(id) = header_result_id(chord_id, index) else {
                    return (index, Ok(None));
                };
                (index, store.get(&id).await)
            }
        })
        .buffered(64);
    let mut values = Vec::new();
    while let Some((index, read)) = reads.next().await {
        let record = read.map_err(|error: StoreError| unavailable(error.into()))?;
        match record {
            Some(record) if record.state == TaskState::Success => {
                let value = record.result.unwrap_or(Value::Null);
                values.push(if results.collect {
                    serde_json::json!({ "ok": value })
                } else {
                    value
                });
            }
            Some(record) if results.collect && record.state.is_ready() => {
                let error = record.error.unwrap_or_else(|| {
                    ErrorRecord::new("celerity::Unknown", record.state.to_string())
                });
                values.push(serde_json::json!({ "error": error }));
            }
            // The first member without a usable record ends the reads: the rest are not read.
            Some(record) => {
                return Err(HeaderResultsError::NotSucceeded {
                    index,
                    state: record.state,
                });
            }
            None => {
                return Err(HeaderResultsError::NotSucceeded {
                    index,
                    state: TaskState::Unknown,
                });
            }
        }
    }
    Ok(Value::Array(values))
}
