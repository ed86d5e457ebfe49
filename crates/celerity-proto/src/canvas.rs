//! Canvas records: signatures, chains, groups and chords as data, so any language can send a whole
//! workflow and any worker can continue it.
//!
//! A producer assigns an id to every signature, group and chord before it sends anything, so
//! results can be found (and `parent` walked) before the tasks run.
//! The runtime semantics are specified in `docs/canvas.md` and `docs/protocol.md`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::names::{Priority, QueueName, TaskId, TaskName};

/// One node of a canvas.
///
/// Serialized as an object with a `kind` tag: `signature`, `chain`, `group` or `chord`.
///
/// ```
/// # use celerity_proto::{CanvasNode, SignatureRecord, TaskId, TaskName};
/// let step = SignatureRecord::new(TaskId::new("s1")?, TaskName::new("etl.extract")?, vec![serde_json::json!(7)]);
/// let node = CanvasNode::Chain { tasks: vec![CanvasNode::Signature(step)] };
/// let json = serde_json::to_value(&node)?;
/// assert_eq!(json["kind"], "chain");
/// assert_eq!(json["tasks"][0]["kind"], "signature");
/// assert_eq!(node.depth(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum CanvasNode {
    /// One task call.
    Signature(SignatureRecord),
    /// Nodes run one after the other; each result is the first argument of the next unless the
    /// next is immutable.
    Chain {
        /// The steps, in order.
        tasks: Vec<CanvasNode>,
    },
    /// Nodes run in parallel; the group's result is the list of their results, in order.
    Group {
        /// The group id.
        id: TaskId,
        /// The members.
        tasks: Vec<CanvasNode>,
    },
    /// A group (the header) whose list of results is passed to the body once every member is done.
    Chord {
        /// The chord id.
        id: TaskId,
        /// The header members.
        header: Vec<CanvasNode>,
        /// What runs with the header's results.
        body: Box<CanvasNode>,
        /// When the body runs (default: Celery's fail-fast).
        #[serde(default, skip_serializing_if = "ChordPolicy::is_fail_fast")]
        policy: ChordPolicy,
    },
}

/// One task call inside a canvas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SignatureRecord {
    /// The id the task will run under, assigned by the producer.
    pub id: TaskId,
    /// The registered task name.
    pub task: TaskName,
    /// Positional arguments (a previous result is put in front of them unless `immutable`).
    #[serde(default)]
    pub args: Vec<Value>,
    /// Named arguments.
    #[serde(default)]
    pub kwargs: Map<String, Value>,
    /// When true, the previous step's result is not passed in.
    #[serde(default, skip_serializing_if = "is_false")]
    pub immutable: bool,
    /// The queue to send it to (default: the task's own routing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueName>,
    /// The priority to send it with (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Start no sooner than this many milliseconds after the step is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub countdown_ms: Option<u64>,
    /// Run after this task succeeds, with its result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link: Vec<CanvasNode>,
    /// Run after this task fails, with its id as the only argument.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_error: Vec<CanvasNode>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl SignatureRecord {
    /// A mutable signature with positional arguments and no options.
    pub fn new(id: TaskId, task: TaskName, args: Vec<Value>) -> Self {
        Self {
            id,
            task,
            args,
            kwargs: Map::new(),
            immutable: false,
            queue: None,
            priority: None,
            countdown_ms: None,
            link: Vec::new(),
            link_error: Vec::new(),
        }
    }
}

/// Why a canvas cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CanvasError {
    /// Nested deeper than the configured limit.
    #[error("canvas nests {depth} levels deep, over the limit of {limit}")]
    TooDeep {
        /// The canvas's depth.
        depth: usize,
        /// The limit.
        limit: usize,
    },
    /// A chain, group or chord header with no member.
    #[error("a {0} has no members")]
    Empty(&'static str),
    /// Two nodes share an id.
    #[error("id {0} is used by two nodes of the canvas")]
    DuplicateId(String),
    /// A chain ends with a group, whose results have no single record.
    #[error(
        "a chain cannot end with a group, whose results have no single record: end it with a chord"
    )]
    ChainEndsWithGroup,
    /// A chord's header member is a group, whose result is not one record.
    #[error(
        "chord header member {member} is a group, whose result is not one record: use a chord instead"
    )]
    GroupInChordHeader {
        /// The result id the member was to have.
        member: String,
    },
    /// A chord's header has more members than a member index can number.
    #[error("chord {chord} has {members} header members, more than can be numbered")]
    TooManyMembers {
        /// The chord's id.
        chord: String,
        /// How many members it has.
        members: usize,
    },
    /// A chord's header member does not store its result under the id its position gives it.
    #[error("header member {index} of chord {chord} must have the result id {expected}")]
    MemberId {
        /// The chord's id.
        chord: String,
        /// The member's position.
        index: u32,
        /// The id it must have.
        expected: String,
    },
    /// A kind of node this version does not know.
    #[error("this kind of canvas node is not known to this version")]
    UnknownNode,
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

    /// The policy's wire name: `fail_fast`, `collect` or `at_least`.
    pub fn name(&self) -> &'static str {
        match self {
            ChordPolicy::FailFast => "fail_fast",
            ChordPolicy::Collect => "collect",
            ChordPolicy::AtLeast { .. } => "at_least",
        }
    }
}

impl CanvasNode {
    /// The id the node's result is known by when it is the root of a canvas: a signature's id, a
    /// chain's first node's, a group's or chord's own id.
    ///
    /// ```
    /// # use celerity_proto::{CanvasNode, SignatureRecord, TaskId, TaskName};
    /// let step = |id: &str| CanvasNode::Signature(SignatureRecord::new(
    ///     TaskId::new(id).unwrap(),
    ///     TaskName::new("tasks.add").unwrap(),
    ///     Vec::new(),
    /// ));
    /// let chain = CanvasNode::Chain { tasks: vec![step("a"), step("b")] };
    /// assert_eq!(chain.root_id().map(TaskId::as_str), Some("a"));
    /// let mut ids = Vec::new();
    /// chain.result_ids(&mut ids);
    /// assert_eq!(ids.iter().map(TaskId::as_str).collect::<Vec<_>>(), ["a", "b"]);
    /// ```
    pub fn root_id(&self) -> Option<&TaskId> {
        match self {
            CanvasNode::Signature(signature) => Some(&signature.id),
            CanvasNode::Chain { tasks } => tasks.first().and_then(CanvasNode::root_id),
            CanvasNode::Group { id, .. } | CanvasNode::Chord { id, .. } => Some(id),
        }
    }

    /// Pushes every id in the node that gets a record when it runs or fails (each signature's, and
    /// each group's and chord's own), in canvas order.
    pub fn result_ids(&self, ids: &mut Vec<TaskId>) {
        match self {
            CanvasNode::Signature(signature) => ids.push(signature.id.clone()),
            CanvasNode::Chain { tasks } => tasks.iter().for_each(|task| task.result_ids(ids)),
            CanvasNode::Group { id, tasks } => {
                ids.push(id.clone());
                tasks.iter().for_each(|task| task.result_ids(ids));
            }
            CanvasNode::Chord {
                id, header, body, ..
            } => {
                ids.push(id.clone());
                header.iter().for_each(|task| task.result_ids(ids));
                body.result_ids(ids);
            }
        }
    }

    /// How deep the canvas nests: 1 for a signature.
    pub fn depth(&self) -> usize {
        let children =
            |nodes: &[CanvasNode]| nodes.iter().map(CanvasNode::depth).max().unwrap_or(0);
        match self {
            CanvasNode::Signature(signature) => {
                1 + children(&signature.link).max(children(&signature.link_error))
            }
            CanvasNode::Chain { tasks } | CanvasNode::Group { tasks, .. } => 1 + children(tasks),
            CanvasNode::Chord { header, body, .. } => 1 + children(header).max(body.depth()),
        }
    }

    /// Checks the rules every reader applies before running a canvas: no empty chain, group or
    /// header, no id used twice, and no deeper nesting than `max_depth`.
    ///
    /// # Errors
    /// The first rule broken.
    pub fn validate(&self, max_depth: usize) -> Result<(), CanvasError> {
        let depth = self.depth();
        if depth > max_depth {
            return Err(CanvasError::TooDeep {
                depth,
                limit: max_depth,
            });
        }
        let mut seen = std::collections::HashSet::new();
        self.check(&mut seen)
    }

    fn check<'a>(
        &'a self,
        seen: &mut std::collections::HashSet<&'a str>,
    ) -> Result<(), CanvasError> {
        let mut claim = |id: &'a TaskId| {
            if seen.insert(id.as_str()) {
                Ok(())
            } else {
                Err(CanvasError::DuplicateId(id.to_string()))
            }
        };
        match self {
            CanvasNode::Signature(signature) => {
                claim(&signature.id)?;
                for node in signature.link.iter().chain(&signature.link_error) {
                    node.check(seen)?;
                }
            }
            CanvasNode::Chain { tasks } => {
                if tasks.is_empty() {
                    return Err(CanvasError::Empty("chain"));
                }
                for node in tasks {
                    node.check(seen)?;
                }
            }
            CanvasNode::Group { id, tasks } => {
                claim(id)?;
                if tasks.is_empty() {
                    return Err(CanvasError::Empty("group"));
                }
                for node in tasks {
                    node.check(seen)?;
                }
            }
            CanvasNode::Chord {
                id, header, body, ..
            } => {
                claim(id)?;
                if header.is_empty() {
                    return Err(CanvasError::Empty("chord header"));
                }
                for node in header {
                    node.check(seen)?;
                }
                body.check(seen)?;
            }
        }
        Ok(())
    }

    /// The id under which this node's result can be read: a signature's id, a chain's last
    /// node's, a chord's body's, and a group's own id (a group has no record of its own; its
    /// members have theirs).
    pub fn result_id(&self) -> Option<&TaskId> {
        match self {
            CanvasNode::Signature(signature) => Some(&signature.id),
            CanvasNode::Chain { tasks } => tasks.last().and_then(CanvasNode::result_id),
            CanvasNode::Chord { body, .. } => body.result_id(),
            CanvasNode::Group { id, .. } => Some(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sig(id: &str) -> CanvasNode {
        CanvasNode::Signature(SignatureRecord::new(
            TaskId::new(id).unwrap(),
            TaskName::new("t").unwrap(),
            vec![],
        ))
    }

    #[test]
    fn nodes_have_a_stable_json_shape() {
        let mut step = SignatureRecord::new(
            TaskId::new("a").unwrap(),
            TaskName::new("etl.load").unwrap(),
            vec![json!("db")],
        );
        step.immutable = true;
        step.queue = Some(QueueName::new("high").unwrap());
        let node = CanvasNode::Chord {
            id: TaskId::new("c").unwrap(),
            header: vec![sig("h1")],
            body: Box::new(CanvasNode::Signature(step)),
            policy: Default::default(),
        };
        let value = serde_json::to_value(&node).unwrap();
        assert_eq!(
            value,
            json!({"kind": "chord", "id": "c",
                   "header": [{"kind": "signature", "id": "h1", "task": "t", "args": [], "kwargs": {}}],
                   "body": {"kind": "signature", "id": "a", "task": "etl.load", "args": ["db"], "kwargs": {},
                            "immutable": true, "queue": "high"}})
        );
        assert_eq!(serde_json::from_value::<CanvasNode>(value).unwrap(), node);
    }

    #[test]
    fn validation_catches_empty_duplicate_and_deep_canvases() {
        assert_eq!(
            CanvasNode::Chain { tasks: vec![] }.validate(8),
            Err(CanvasError::Empty("chain"))
        );
        let duplicate = CanvasNode::Chain {
            tasks: vec![sig("x"), sig("x")],
        };
        assert_eq!(
            duplicate.validate(8),
            Err(CanvasError::DuplicateId("x".into()))
        );
        let mut deep = sig("leaf");
        for level in 0..10 {
            deep = CanvasNode::Group {
                id: TaskId::new(format!("g{level}")).unwrap(),
                tasks: vec![deep],
            };
        }
        assert_eq!(
            deep.validate(8),
            Err(CanvasError::TooDeep {
                depth: 11,
                limit: 8
            })
        );
        assert!(deep.validate(11).is_ok());
    }

    #[test]
    fn unknown_kinds_are_errors_not_panics() {
        assert!(
            serde_json::from_value::<CanvasNode>(json!({"kind": "loop", "tasks": []})).is_err()
        );
        assert!(serde_json::from_value::<CanvasNode>(json!({"kind": "signature"})).is_err());
    }
}
