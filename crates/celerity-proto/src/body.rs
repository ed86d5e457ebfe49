//! The task body: the arguments of one task run.
//!
//! Positional `args` and named `kwargs`, as in Celery, so a producer in any language can call a Rust
//! task by parameter name or position.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
}

impl TaskBody {
    /// A body with positional arguments only.
    pub fn positional(args: Vec<Value>) -> Self {
        Self {
            args,
            kwargs: Map::new(),
        }
    }

    /// A body with positional and named arguments.
    pub fn new(args: Vec<Value>, kwargs: Map<String, Value>) -> Self {
        Self { args, kwargs }
    }
}
