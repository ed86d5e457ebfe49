//! The task body: the arguments of one task run.
//!
//! Positional `args` and named `kwargs`, as in Celery, so a producer in any language can call a Rust
//! task by parameter name or position.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canvas::CanvasNode;
use crate::chord::{ChordMember, ChordResults};

/// The arguments of a task message, in the encoding named by `Content-Type`.
///
/// Both fields may be omitted and default to empty.
/// Unknown fields are ignored, so a later minor revision can add fields without breaking readers.
///
/// ```
/// # use celerity_proto::{ContentType, TaskBody};
/// let body: TaskBody = ContentType::Json.decode(br#"{"args":[1],"kwargs":{"y":2}}"#)?;
/// assert_eq!(body.args, vec![serde_json::json!(1)]);
/// assert_eq!(body.kwargs["y"], 2);
/// let empty: TaskBody = ContentType::Json.decode(b"{}")?;
/// assert!(empty.args.is_empty() && empty.kwargs.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskBody {
    /// Positional arguments, bound to the task's parameters in order.
    #[serde(default)]
    pub args: Vec<Value>,
    /// Named arguments, bound to the task's parameters by name.
    #[serde(default)]
    pub kwargs: Map<String, Value>,
    /// What runs after this task succeeds, in order: the rest of its chain. The first node gets
    /// this task's result (unless immutable) and the rest as its own continuation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<CanvasNode>,
    /// Callbacks run with this task's result when it succeeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link: Vec<CanvasNode>,
    /// Callbacks run with this task's id when it fails (after its retries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_error: Vec<CanvasNode>,
    /// Set when this task's result is a chord header member's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chord: Option<ChordMember>,
    /// Set on a chord body: the header results are its first argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chord_results: Option<ChordResults>,
}

impl TaskBody {
    /// A body with positional arguments only.
    pub fn positional(args: Vec<Value>) -> Self {
        Self::new(args, Map::new())
    }

    /// A body with positional and named arguments.
    pub fn new(args: Vec<Value>, kwargs: Map<String, Value>) -> Self {
        Self {
            args,
            kwargs,
            ..Self::default()
        }
    }
}
