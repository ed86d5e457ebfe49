//! Chord records: the definition a producer stores before sending a chord's header, and the
//! completion each header member reports when it finishes.
//!
//! Completions carry no results: the body's worker reads the header results from the results
//! bucket (keys `<chord id>-<index>`), so a chord of any size never copies its results into one
//! message.

use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;
use crate::canvas::{CanvasNode, ChordPolicy, SignatureRecord};
use crate::codec::ContentType;
use crate::names::{InvalidName, TaskId, TaskName};
use crate::result::{ErrorRecord, TaskState};

/// How many partitions the chord completion stream has. Fixed by the protocol: every producer and
/// worker must place a chord in the same partition.
pub const CHORD_PARTITIONS: u32 = 16;

/// The most header members a chord may have.
///
/// A worker refuses a larger chord (its aggregator fails the chord, and its body's worker
/// dead-letters the body), so a number in a message or a definition never decides how much a
/// worker allocates or reads: the body holds every member's result in memory at once.
pub const MAX_CHORD_SIZE: u32 = 100_000;

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

/// A chord header member's place in its chord.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChordMember {
    /// The chord id.
    pub id: TaskId,
    /// The member's index in the header, from 0.
    pub index: u32,
    /// The number of header members.
    pub size: u32,
    /// The chord's policy.
    #[serde(default, skip_serializing_if = "ChordPolicy::is_fail_fast")]
    pub policy: ChordPolicy,
}

impl ChordMember {
    /// Member `index` of the `size` members of chord `id`, under the default policy.
    pub fn new(id: TaskId, index: u32, size: u32) -> Self {
        Self {
            id,
            index,
            size,
            policy: ChordPolicy::FailFast,
        }
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
    pub member: Option<ChordMember>,
    /// When the body runs.
    #[serde(default, skip_serializing_if = "ChordPolicy::is_fail_fast")]
    pub policy: ChordPolicy,
    /// The canvas's deadline, Unix milliseconds: the body carries it as `Celerity-Expires`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    /// The W3C `traceparent` of the span the chord was applied in: the body's publish is its
    /// child, so the body joins the canvas's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
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
            traceparent: None,
        }
    }

    /// Checks the definition itself: 1 to [`MAX_CHORD_SIZE`] members, and an `at_least` policy
    /// that asks for 1 to `size` successes.
    ///
    /// # Errors
    /// [`ChordMismatch`] saying which rule the definition breaks.
    ///
    /// ```
    /// # use celerity_proto::{CanvasNode, ChordDefinition, ChordPolicy, SignatureRecord, TaskId, TaskName};
    /// let body = CanvasNode::Signature(SignatureRecord::new(TaskId::new("b")?, TaskName::new("sum")?, vec![]));
    /// let mut definition = ChordDefinition::new(TaskId::new("c")?, 3, body);
    /// assert!(definition.check().is_ok());
    /// definition.policy = ChordPolicy::AtLeast { successes: 4 };
    /// assert!(definition.check().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check(&self) -> Result<(), ChordMismatch> {
        let chord_id = self.id.to_string();
        if self.size == 0 || self.size > MAX_CHORD_SIZE {
            return Err(ChordMismatch::Size {
                chord_id,
                size: self.size,
            });
        }
        if let ChordPolicy::AtLeast { successes } = self.policy
            && (successes == 0 || successes > self.size)
        {
            return Err(ChordMismatch::Quorum {
                chord_id,
                successes,
                size: self.size,
            });
        }
        Ok(())
    }

    /// Checks the `chord_results` of task `task_id` against this definition: the task is one the
    /// body starts with, and the size, the `collect` flag and the `indices` are what this chord's
    /// aggregator sends (`indices`: exactly `successes` distinct members in ascending order).
    ///
    /// # Errors
    /// [`ChordMismatch`] saying what does not match.
    pub fn check_results(
        &self,
        task_id: &TaskId,
        results: &ChordResults,
    ) -> Result<(), ChordMismatch> {
        self.check()?;
        let chord_id = self.id.to_string();
        let mismatch = |detail: ChordResultsMismatch| ChordMismatch::Results {
            chord_id: chord_id.clone(),
            detail,
        };
        if results.id != self.id {
            return Err(mismatch(ChordResultsMismatch::Chord {
                named: results.id.clone(),
            }));
        }
        if results.size != self.size {
            return Err(mismatch(ChordResultsMismatch::Size {
                given: results.size,
                defined: self.size,
            }));
        }
        let receives = self
            .body_first_steps()
            .iter()
            .any(|step| !step.immutable && step.id == *task_id);
        if !receives {
            return Err(mismatch(ChordResultsMismatch::NotFirstStep {
                task_id: task_id.clone(),
            }));
        }
        match (self.policy, results.collect, &results.indices) {
            (ChordPolicy::FailFast, false, None) | (ChordPolicy::Collect, true, None) => Ok(()),
            (ChordPolicy::AtLeast { successes }, false, Some(indices)) => {
                let ascending = indices.windows(2).all(|pair| pair[0] < pair[1]);
                let in_range = indices.last().is_none_or(|last| *last < self.size);
                if indices.len() == successes as usize && ascending && in_range {
                    Ok(())
                } else {
                    Err(mismatch(ChordResultsMismatch::Indices {
                        successes,
                        size: self.size,
                    }))
                }
            }
            _ => Err(mismatch(ChordResultsMismatch::Policy {
                policy: self.policy,
            })),
        }
    }

    /// The steps the body starts with, which the chord's aggregator sends first and which carry
    /// `chord_results` (unless immutable): a signature itself, a chain's first node's, a group's
    /// members', and a chord's header members'.
    pub fn body_first_steps(&self) -> Vec<&SignatureRecord> {
        let mut steps = Vec::new();
        first_steps(&self.body, &mut steps);
        steps
    }
}

fn first_steps<'a>(node: &'a CanvasNode, steps: &mut Vec<&'a SignatureRecord>) {
    match node {
        CanvasNode::Signature(signature) => steps.push(signature),
        CanvasNode::Chain { tasks } => {
            if let Some(first) = tasks.first() {
                first_steps(first, steps);
            }
        }
        CanvasNode::Group { tasks, .. } => tasks.iter().for_each(|task| first_steps(task, steps)),
        CanvasNode::Chord { header, .. } => header.iter().for_each(|task| first_steps(task, steps)),
    }
}

/// Why a chord record does not fit its chord, or a definition breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChordMismatch {
    /// The definition's size is 0 or over [`MAX_CHORD_SIZE`].
    #[error(
        "chord {chord_id} has {size} header members; a chord has 1 to {MAX_CHORD_SIZE}, so split a larger one"
    )]
    Size {
        /// The chord id.
        chord_id: String,
        /// Its size.
        size: u32,
    },
    /// An `at_least` policy asks for no success or more successes than there are members.
    #[error(
        "chord {chord_id} asks for at least {successes} successes of {size} members; ask for 1 to {size}"
    )]
    Quorum {
        /// The chord id.
        chord_id: String,
        /// The successes asked for.
        successes: u32,
        /// The chord's size.
        size: u32,
    },
    /// A body's `chord_results` do not match the definition.
    #[error("the chord_results of chord {chord_id} do not match its stored definition: {detail}")]
    Results {
        /// The chord id.
        chord_id: String,
        /// What does not match.
        #[source]
        detail: ChordResultsMismatch,
    },
    /// A completion does not match the definition.
    #[error("a completion of chord {chord_id} does not match its stored definition: {detail}")]
    Completion {
        /// The chord id.
        chord_id: String,
        /// What does not match.
        #[source]
        detail: ChordCompletionMismatch,
    },
}

/// What in a body's `chord_results` does not match the chord's definition, in a
/// [`ChordMismatch::Results`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChordResultsMismatch {
    /// They name another chord.
    #[error("they name chord {named}")]
    Chord {
        /// The chord they name.
        named: TaskId,
    },
    /// Their size is not the definition's.
    #[error("they say {given} header members, the definition {defined}")]
    Size {
        /// The size they give.
        given: u32,
        /// The definition's size.
        defined: u32,
    },
    /// The task carrying them is not a (mutable) step the chord's body starts with.
    #[error("task {task_id} is not a step the chord's body starts with")]
    NotFirstStep {
        /// The task that carries them.
        task_id: TaskId,
    },
    /// Their indices are not the `at_least` policy's distinct successes in ascending order.
    #[error("their indices are not {successes} distinct members below {size} in ascending order")]
    Indices {
        /// The successes the policy asks for.
        successes: u32,
        /// The chord's size.
        size: u32,
    },
    /// Their `collect` flag or `indices` are not what the chord's policy sends.
    #[error("their collect flag or indices do not fit the chord's {} policy", .policy.name())]
    Policy {
        /// The definition's policy.
        policy: ChordPolicy,
    },
}

/// What in a chord completion does not match the chord's definition, in a
/// [`ChordMismatch::Completion`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChordCompletionMismatch {
    /// Its size is not the definition's.
    #[error("it says {given} header members, the definition {defined}")]
    Size {
        /// The size it gives.
        given: u32,
        /// The definition's size.
        defined: u32,
    },
    /// Its index is not below the chord's size.
    #[error("its index {index} is not below the chord's {size} members")]
    Index {
        /// The member index it gives.
        index: u32,
        /// The chord's size.
        size: u32,
    },
    /// Its state is not final.
    #[error("its state {state} is not SUCCESS, FAILURE or REVOKED")]
    NotFinal {
        /// The state it gives.
        state: TaskState,
    },
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
    /// The chord's policy, as the member knew it. Informational: the aggregator decides by the
    /// definition's.
    #[serde(default, skip_serializing_if = "ChordPolicy::is_fail_fast")]
    pub policy: ChordPolicy,
    /// The W3C `traceparent` of the member's run span: the body's publish links to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
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
            traceparent: None,
        }
    }

    /// Checks the completion against its chord's definition: the size is the definition's, the
    /// index is below it, and the state is final (SUCCESS, FAILURE or REVOKED). The completion's
    /// own `policy` is not read: the definition's decides.
    ///
    /// # Errors
    /// [`ChordMismatch::Completion`] saying what does not match.
    ///
    /// ```
    /// # use celerity_proto::{CanvasNode, ChordCompletion, ChordDefinition, SignatureRecord, TaskId, TaskName, TaskState};
    /// let body = CanvasNode::Signature(SignatureRecord::new(TaskId::new("b")?, TaskName::new("sum")?, vec![]));
    /// let definition = ChordDefinition::new(TaskId::new("c")?, 3, body);
    /// assert!(ChordCompletion::new(2, 3, TaskState::Revoked).check(&definition).is_ok());
    /// assert!(ChordCompletion::new(3, 3, TaskState::Success).check(&definition).is_err());
    /// assert!(ChordCompletion::new(0, 1, TaskState::Success).check(&definition).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check(&self, definition: &ChordDefinition) -> Result<(), ChordMismatch> {
        self.check_size(&definition.id, definition.size)
    }

    /// [`ChordCompletion::check`] against a definition known only by its id and size.
    ///
    /// # Errors
    /// As [`ChordCompletion::check`].
    pub fn check_size(&self, chord_id: &TaskId, size: u32) -> Result<(), ChordMismatch> {
        let detail = if self.size != size {
            ChordCompletionMismatch::Size {
                given: self.size,
                defined: size,
            }
        } else if self.index >= size {
            ChordCompletionMismatch::Index {
                index: self.index,
                size,
            }
        } else if !self.state.is_ready() {
            ChordCompletionMismatch::NotFinal {
                state: self.state.clone(),
            }
        } else {
            return Ok(());
        };
        Err(ChordMismatch::Completion {
            chord_id: chord_id.to_string(),
            detail,
        })
    }
}

/// Set on a chord body's task body: its first argument is the list of the header results, read
/// from the results bucket under `<chord id>-<index>` for every index below `size`.
///
/// A worker checks it against the chord's stored definition before reading anything
/// ([`ChordDefinition::check_results`]).
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

    fn signature(id: &str, immutable: bool) -> CanvasNode {
        let mut step = SignatureRecord::new(
            TaskId::new(id).unwrap(),
            TaskName::new("t").unwrap(),
            vec![],
        );
        step.immutable = immutable;
        CanvasNode::Signature(step)
    }

    fn id(value: &str) -> TaskId {
        TaskId::new(value).unwrap()
    }

    #[test]
    fn a_definition_needs_one_to_max_members_and_a_reachable_quorum() {
        let mut definition = ChordDefinition::new(id("c"), 0, signature("b", false));
        assert!(matches!(
            definition.check(),
            Err(ChordMismatch::Size { size: 0, .. })
        ));
        definition.size = MAX_CHORD_SIZE + 1;
        assert!(matches!(
            definition.check(),
            Err(ChordMismatch::Size { .. })
        ));
        definition.size = MAX_CHORD_SIZE;
        assert_eq!(definition.check(), Ok(()));
        definition.size = 3;
        for (successes, fits) in [(0, false), (1, true), (3, true), (4, false)] {
            definition.policy = ChordPolicy::AtLeast { successes };
            assert_eq!(
                definition.check().is_ok(),
                fits,
                "at_least {successes} of 3"
            );
        }
    }

    #[test]
    fn chord_results_must_match_the_definition() {
        let body = CanvasNode::Chain {
            tasks: vec![
                CanvasNode::Group {
                    id: id("g"),
                    tasks: vec![signature("first", false), signature("fixed", true)],
                },
                signature("later", false),
            ],
        };
        let mut definition = ChordDefinition::new(id("c"), 4, body);
        let fail_fast = ChordResults::new(id("c"), 4);
        assert_eq!(definition.check_results(&id("first"), &fail_fast), Ok(()));
        let size = ChordResults::new(id("c"), 4_294_967_295);
        let other = ChordResults::new(id("x"), 4);
        for (task, results, what) in [
            ("first", &size, "a size the definition does not have"),
            ("first", &other, "another chord"),
            ("later", &fail_fast, "a later step of the body"),
            ("fixed", &fail_fast, "an immutable step"),
            ("stranger", &fail_fast, "a task outside the body"),
        ] {
            assert!(
                matches!(
                    definition.check_results(&id(task), results),
                    Err(ChordMismatch::Results { .. })
                ),
                "{what}"
            );
        }
        let mut collect = fail_fast.clone();
        collect.collect = true;
        assert!(definition.check_results(&id("first"), &collect).is_err());
        definition.policy = ChordPolicy::Collect;
        assert_eq!(definition.check_results(&id("first"), &collect), Ok(()));
        assert!(definition.check_results(&id("first"), &fail_fast).is_err());

        definition.policy = ChordPolicy::AtLeast { successes: 2 };
        for (indices, fits) in [
            (vec![0, 3], true),
            (vec![3, 0], false),
            (vec![1, 1], false),
            (vec![0, 4], false),
            (vec![0], false),
            (vec![0, 1, 2], false),
        ] {
            let mut results = fail_fast.clone();
            results.indices = Some(indices.clone());
            assert_eq!(
                definition.check_results(&id("first"), &results).is_ok(),
                fits,
                "indices {indices:?}"
            );
        }
        assert!(definition.check_results(&id("first"), &fail_fast).is_err());
    }

    #[test]
    fn a_body_starts_with_the_first_steps_of_its_first_node() {
        let body = CanvasNode::Chord {
            id: id("inner"),
            header: vec![
                CanvasNode::Chain {
                    tasks: vec![signature("h0", false), signature("h0b", false)],
                },
                signature("h1", false),
            ],
            body: Box::new(signature("inner-body", false)),
            policy: ChordPolicy::FailFast,
        };
        let definition = ChordDefinition::new(id("c"), 2, body);
        let ids: Vec<&str> = definition
            .body_first_steps()
            .iter()
            .map(|step| step.id.as_str())
            .collect();
        assert_eq!(ids, ["h0", "h1"]);
    }

    #[test]
    fn completions_must_fit_the_definition() {
        let chord = id("c");
        let fits = |completion: ChordCompletion| completion.check_size(&chord, 3).is_ok();
        assert!(fits(ChordCompletion::new(0, 3, TaskState::Success)));
        assert!(fits(ChordCompletion::new(2, 3, TaskState::Failure)));
        assert!(fits(ChordCompletion::new(1, 3, TaskState::Revoked)));
        assert!(
            !fits(ChordCompletion::new(0, 1, TaskState::Success)),
            "another size"
        );
        assert!(
            !fits(ChordCompletion::new(3, 3, TaskState::Success)),
            "index past the size"
        );
        assert!(
            !fits(ChordCompletion::new(0, 3, TaskState::Started)),
            "not final"
        );
        let mut other_policy = ChordCompletion::new(0, 3, TaskState::Success);
        other_policy.policy = ChordPolicy::Collect;
        assert!(fits(other_policy), "the completion's policy is not read");
    }

    #[test]
    fn a_mismatch_keeps_what_does_not_match_as_its_source() {
        use std::error::Error as _;
        let not_final = ChordCompletion::new(0, 3, TaskState::Started)
            .check_size(&id("c"), 3)
            .unwrap_err();
        assert_eq!(
            not_final.to_string(),
            "a completion of chord c does not match its stored definition: its state STARTED is not SUCCESS, FAILURE or REVOKED"
        );
        assert!(not_final.source().is_some_and(|cause| matches!(
            cause.downcast_ref(),
            Some(ChordCompletionMismatch::NotFinal { .. })
        )));
        let body = CanvasNode::Signature(SignatureRecord::new(
            id("b"),
            TaskName::new("sum").unwrap(),
            vec![],
        ));
        let definition = ChordDefinition::new(id("c"), 3, body);
        let size = definition
            .check_results(&id("b"), &ChordResults::new(id("c"), 4))
            .unwrap_err();
        assert_eq!(
            size,
            ChordMismatch::Results {
                chord_id: "c".to_owned(),
                detail: ChordResultsMismatch::Size {
                    given: 4,
                    defined: 3
                },
            }
        );
        assert_eq!(
            size.to_string(),
            "the chord_results of chord c do not match its stored definition: they say 4 header members, the definition 3"
        );
        let mut collect = ChordResults::new(id("c"), 3);
        collect.collect = true;
        assert_eq!(
            definition
                .check_results(&id("b"), &collect)
                .unwrap_err()
                .to_string(),
            "the chord_results of chord c do not match its stored definition: their collect flag or indices do not fit the chord's fail_fast policy"
        );
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
