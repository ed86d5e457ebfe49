//! Chord records: the definition a producer stores before sending a chord's header, and the
//! completion each header member reports when it finishes.
//!
//! Completions carry no results: the body's worker reads the header results from the results
//! bucket (keys `<chord id>-<index>`), so a chord of any size never copies its results into one
//! message.

use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;
use crate::canvas::CanvasNode;
use crate::codec::ContentType;
use crate::names::{InvalidName, TaskId, TaskName};
use crate::result::{ErrorRecord, TaskState};

/// How many partitions the chord completion stream has. Fixed by the protocol: every producer and
/// worker must place a chord in the same partition.
pub const CHORD_PARTITIONS: u32 = 16;

/// The partition of `chord_id`: FNV-1a (32-bit) of its UTF-8 bytes, modulo [`CHORD_PARTITIONS`].
///
/// ```
/// # use celerity_proto::{chord_partition, TaskId};
/// let id = TaskId::new("chord-1")?;
/// assert_eq!(chord_partition(&id), chord_partition(&id));
/// assert!(chord_partition(&id) < celerity_proto::CHORD_PARTITIONS);
/// # Ok::<(), celerity_proto::InvalidName>(())
/// ```
pub fn chord_partition(chord_id: &TaskId) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in chord_id.as_str().bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % CHORD_PARTITIONS
}

/// The result id of header member `index` of chord `chord_id`: `<chord id>-<index>`.
///
/// # Errors
/// [`InvalidName`] when the chord id is so long that the result id would pass 128 characters
/// (chord ids of up to 117 characters always fit).
///
/// ```
/// # use celerity_proto::{header_result_id, TaskId};
/// assert_eq!(header_result_id(&TaskId::new("c1")?, 7)?.as_str(), "c1-7");
/// # Ok::<(), celerity_proto::InvalidName>(())
/// ```
pub fn header_result_id(chord_id: &TaskId, index: u32) -> Result<TaskId, InvalidName> {
    TaskId::new(format!("{chord_id}-{index}"))
}

/// When a chord's body runs, and what it receives.
///
/// ```
/// # use celerity_proto::ChordPolicy;
/// assert_eq!(serde_json::to_value(ChordPolicy::AtLeast { successes: 3 })?, serde_json::json!({"kind": "at_least", "successes": 3}));
/// assert!(ChordPolicy::default().is_fail_fast());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChordPolicy {
    /// Celery's: the body runs when every member succeeded, with their results; the first failure
    /// fails the chord and the body never runs.
    #[default]
    FailFast,
    /// The body runs when every member has ended, with one `{"ok": result}` or `{"error": error}`
    /// per member, in member order.
    Collect,
    /// The body runs as soon as `successes` members have succeeded, with their results in member
    /// order; the chord fails as soon as that can no longer happen.
    AtLeast {
        /// How many successes the body needs.
        successes: u32,
    },
}

impl ChordPolicy {
    /// True for the default policy.
    pub fn is_fail_fast(&self) -> bool {
        *self == ChordPolicy::FailFast
    }
}

/// What a producer stores under the chord id in the chords bucket before sending the header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChordDefinition {
    /// Protocol version.
    pub v: u32,
    /// The chord id.
    pub id: TaskId,
    /// The number of header members.
    pub size: u32,
    /// What runs with the header's results (a signature, or a chain whose first step gets them).
    pub body: CanvasNode,
    /// Where the body's final record is notified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// How the body's message and records are encoded.
    #[serde(default, with = "content_type_name")]
    pub content_type: ContentType,
    /// The workflow's first task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_id: Option<TaskId>,
    /// Set when this chord is itself a member of another chord's header: the body's last task
    /// reports to that chord.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<crate::body::ChordMember>,
    /// When the body runs.
    #[serde(default, skip_serializing_if = "ChordPolicy::is_fail_fast")]
    pub policy: ChordPolicy,
    /// The canvas's deadline, Unix milliseconds: the body carries it as `Celerity-Expires`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

impl ChordDefinition {
    /// A definition with no reply subject, JSON encoding and no root.
    pub fn new(id: TaskId, size: u32, body: CanvasNode) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id,
            size,
            body,
            reply_to: None,
            content_type: ContentType::Json,
            root_id: None,
            member: None,
            policy: ChordPolicy::FailFast,
            expires_ms: None,
        }
    }
}

mod content_type_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::codec::ContentType;

    pub(super) fn serialize<S: Serializer>(
        value: &ContentType,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<ContentType, D::Error> {
        let name = String::deserialize(deserializer)?;
        ContentType::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown content type {name:?}")))
    }
}

/// What a header member reports when it reaches a final state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChordCompletion {
    /// Protocol version.
    pub v: u32,
    /// The member's index in the header.
    pub index: u32,
    /// The number of header members.
    pub size: u32,
    /// SUCCESS or FAILURE.
    pub state: TaskState,
    /// The member's error, on FAILURE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorRecord>,
    /// The task that finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskName>,
    /// The chord's policy, as the member knew it.
    #[serde(default, skip_serializing_if = "ChordPolicy::is_fail_fast")]
    pub policy: ChordPolicy,
}

impl ChordCompletion {
    /// A completion of member `index` of `size` in `state`.
    pub fn new(index: u32, size: u32, state: TaskState) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            index,
            size,
            state,
            error: None,
            task: None,
            policy: ChordPolicy::FailFast,
        }
    }
}

/// Set on a chord body's task body: its first argument is the list of the header results, read
/// from the results bucket under `<chord id>-<index>` for every index below `size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChordResults {
    /// The chord id.
    pub id: TaskId,
    /// The number of header members.
    pub size: u32,
    /// Pass `{"ok": result}` / `{"error": error}` for every member (the `collect` policy).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub collect: bool,
    /// Pass only these members' results, in this order (the `at_least` policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indices: Option<Vec<u32>>,
}

impl ChordResults {
    /// The reference to chord `id`'s `size` header results.
    pub fn new(id: TaskId, size: u32) -> Self {
        Self {
            id,
            size,
            collect: false,
            indices: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canvas::SignatureRecord;

    #[test]
    fn partitions_are_stable_and_spread() {
        // Pinned values: a change here moves every in-flight chord to another aggregator.
        assert_eq!(
            chord_partition(&TaskId::new("a").unwrap()),
            0xe40c292c % CHORD_PARTITIONS
        );
        let used: std::collections::HashSet<u32> = (0..200)
            .map(|i| chord_partition(&TaskId::new(format!("chord-{i}")).unwrap()))
            .collect();
        assert_eq!(used.len() as u32, CHORD_PARTITIONS);
    }

    #[test]
    fn definition_round_trips_with_its_content_type() {
        let body = CanvasNode::Signature(SignatureRecord::new(
            TaskId::new("b").unwrap(),
            TaskName::new("sum").unwrap(),
            vec![],
        ));
        let mut definition = ChordDefinition::new(TaskId::new("c").unwrap(), 3, body);
        definition.content_type = ContentType::MsgPack;
        let json = serde_json::to_value(&definition).unwrap();
        assert_eq!(json["content_type"], "application/msgpack");
        assert_eq!(
            serde_json::from_value::<ChordDefinition>(json).unwrap(),
            definition
        );
    }
}
