//! Canvas: signatures and chains of tasks, built in Rust and sent as data (`celerity_proto`'s
//! [`CanvasNode`]), so every step after the first is published by the worker that ran the step
//! before it.
//!
//! ```no_run
//! # async fn demo(client: celerity::Client) -> Result<(), Box<dyn std::error::Error>> {
//! #[celerity::task]
//! async fn extract(source: u32) -> Vec<i64> { vec![source as i64; 3] }
//! #[celerity::task]
//! async fn transform(rows: Vec<i64>) -> i64 { rows.iter().sum() }
//! #[celerity::task]
//! async fn load(total: i64, destination: String) -> String { format!("{total} -> {destination}") }
//!
//! let result = celerity::chain![extract.s((7,)), transform.s(()), load.s(("warehouse".to_owned(),))]
//!     .apply_async(&client)
//!     .await?;
//! let loaded: String = result.get(std::time::Duration::from_secs(30)).await?;
//! let transformed = result.parent().expect("the load step has a parent");
//! println!("{loaded}, from {:?}", transformed.get(std::time::Duration::from_secs(1)).await?);
//! # Ok(()) }
//! ```

use std::marker::PhantomData;

use celerity_proto::{CanvasNode, Priority, QueueName, SignatureRecord, TaskId, TaskName};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::async_result::AsyncResult;
use crate::client::{Client, EnqueueError};
use crate::task::Task;

/// How deep a canvas may nest before it is refused.
pub const MAX_DEPTH: usize = 32;

/// Arguments given to a signature: a tuple of serializable values, `()` for none.
pub trait ArgsTuple {
    /// The arguments as positional JSON values.
    ///
    /// # Errors
    /// A value that cannot be serialized.
    fn into_args(self) -> Result<Vec<Value>, serde_json::Error>;
}

impl ArgsTuple for () {
    fn into_args(self) -> Result<Vec<Value>, serde_json::Error> {
        Ok(Vec::new())
    }
}

macro_rules! args_tuple {
    ($($name:ident),+) => {
        impl<$($name: Serialize),+> ArgsTuple for ($($name,)+) {
            #[allow(non_snake_case)]
            fn into_args(self) -> Result<Vec<Value>, serde_json::Error> {
                let ($($name,)+) = self;
                Ok(vec![$(serde_json::to_value($name)?),+])
            }
        }
    };
}

args_tuple!(A);
args_tuple!(A, B);
args_tuple!(A, B, C);
args_tuple!(A, B, C, D);
args_tuple!(A, B, C, D, E);
args_tuple!(A, B, C, D, E, F);
args_tuple!(A, B, C, D, E, F, G);
args_tuple!(A, B, C, D, E, F, G, H);

/// One task call, typed by what the task returns: sent alone or as a step of a chain.
///
/// Made by the `s` (partial: a chain's previous result goes in front of its arguments) and `si`
/// (immutable) methods that `#[celerity::task]` generates.
#[derive(Debug, Clone)]
pub struct Signature<T> {
    task: &'static str,
    args: Result<Vec<Value>, String>,
    kwargs: Map<String, Value>,
    immutable: bool,
    queue: Option<String>,
    priority: Option<u8>,
    link: Vec<Signature<Value>>,
    link_error: Vec<Signature<Value>>,
    output: PhantomData<fn() -> T>,
}

impl<T> Signature<T> {
    #[doc(hidden)]
    pub fn of<K: Task, A: ArgsTuple>(_task: &K, args: A, immutable: bool) -> Self {
        Self {
            task: K::NAME,
            args: args.into_args().map_err(|error| error.to_string()),
            kwargs: Map::new(),
            immutable,
            queue: K::options().queue_name().map(str::to_owned),
            priority: None,
            link: Vec::new(),
            link_error: Vec::new(),
            output: PhantomData,
        }
    }

    /// Sends this step to `queue`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Sends this step with `priority` (0 to 9).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Adds a named argument.
    ///
    /// # Errors
    /// None here; a value that cannot be serialized fails the send.
    pub fn kwarg(mut self, name: impl Into<String>, value: impl Serialize) -> Self {
        match serde_json::to_value(value) {
            Ok(value) => {
                self.kwargs.insert(name.into(), value);
            }
            Err(error) => self.args = Err(error.to_string()),
        }
        self
    }

    /// Runs `callback` with this task's result when it succeeds.
    pub fn link<U>(mut self, callback: Signature<U>) -> Self {
        self.link.push(callback.erase());
        self
    }

    /// Runs `errback` with this task's id when it fails.
    pub fn link_error<U>(mut self, errback: Signature<U>) -> Self {
        self.link_error.push(errback.erase());
        self
    }

    fn erase(self) -> Signature<Value> {
        Signature {
            task: self.task,
            args: self.args,
            kwargs: self.kwargs,
            immutable: self.immutable,
            queue: self.queue,
            priority: self.priority,
            link: self.link,
            link_error: self.link_error,
            output: PhantomData,
        }
    }

    /// The wire record of this signature, with fresh ids for it and its callbacks.
    fn into_record(self) -> Result<SignatureRecord, EnqueueError> {
        let invalid = |option: &'static str, error: celerity_proto::InvalidName| {
            EnqueueError::InvalidOption {
                option,
                value: error.value,
                reason: error.rule.to_owned(),
            }
        };
        let args = self.args.map_err(|detail| EnqueueError::InvalidOption {
            option: "arguments",
            value: self.task.to_owned(),
            reason: detail,
        })?;
        let mut record = SignatureRecord::new(
            new_id(),
            TaskName::new(self.task).map_err(|e| invalid("task name", e))?,
            args,
        );
        record.kwargs = self.kwargs;
        record.immutable = self.immutable;
        record.queue = self
            .queue
            .map(QueueName::new)
            .transpose()
            .map_err(|e| invalid("queue", e))?;
        record.priority = self
            .priority
            .map(Priority::new)
            .transpose()
            .map_err(|e| invalid("priority", e))?;
        record.link = callbacks(self.link)?;
        record.link_error = callbacks(self.link_error)?;
        Ok(record)
    }

    /// Sends this signature alone.
    ///
    /// # Errors
    /// As [`Client::apply`].
    pub async fn apply_async(self, client: &Client) -> Result<AsyncResult<T>, EnqueueError> {
        Chain::start(self).apply_async(client).await
    }
}

fn callbacks(signatures: Vec<Signature<Value>>) -> Result<Vec<CanvasNode>, EnqueueError> {
    signatures
        .into_iter()
        .map(|signature| signature.into_record().map(CanvasNode::Signature))
        .collect()
}

fn new_id() -> TaskId {
    // INVARIANT: a hyphenated UUID satisfies the task id rule.
    TaskId::new(uuid::Uuid::now_v7().to_string()).expect("a UUID is a valid task id")
}

/// Steps run one after the other, each receiving the previous result (unless immutable); typed by
/// what the last step returns. Built with [`chain!`](crate::chain) or [`Chain::start`] and
/// [`Chain::then`].
#[derive(Debug, Clone)]
pub struct Chain<T> {
    steps: Vec<Signature<Value>>,
    output: PhantomData<fn() -> T>,
}

impl<T> Chain<T> {
    /// A chain whose first step is `first`.
    pub fn start(first: Signature<T>) -> Self {
        Self {
            steps: vec![first.erase()],
            output: PhantomData,
        }
    }

    /// Appends `next`, which receives this chain's result.
    pub fn then<U>(mut self, next: Signature<U>) -> Chain<U> {
        self.steps.push(next.erase());
        Chain {
            steps: self.steps,
            output: PhantomData,
        }
    }

    /// The chain as wire data, with fresh ids.
    ///
    /// # Errors
    /// [`EnqueueError::InvalidOption`] for an invalid step.
    pub fn to_node(self) -> Result<CanvasNode, EnqueueError> {
        Ok(CanvasNode::Chain {
            tasks: callbacks(self.steps)?,
        })
    }

    /// Sends the first step, with the others as its continuation. The result is the last step's,
    /// and [`AsyncResult::parent`] walks back through the earlier ones.
    ///
    /// # Errors
    /// [`EnqueueError`] for an invalid step or a failed publish; nothing is enqueued then.
    pub async fn apply_async(self, client: &Client) -> Result<AsyncResult<T>, EnqueueError> {
        let tasks = callbacks(self.steps)?;
        let node = CanvasNode::Chain { tasks };
        node.validate(MAX_DEPTH)
            .map_err(EnqueueError::InvalidCanvas)?;
        let CanvasNode::Chain { tasks } = node else {
            return Err(EnqueueError::InvalidCanvas(
                celerity_proto::CanvasError::Empty("chain"),
            ));
        };
        let ids: Vec<TaskId> = tasks
            .iter()
            .filter_map(|node| node.result_id().cloned())
            .collect();
        client.start_chain(tasks).await?;
        let mut result: Option<AsyncResult<Value>> = None;
        for id in ids {
            result = Some(AsyncResult::with_parent(id, client.clone(), result));
        }
        // INVARIANT: a chain has at least one step, so `result` is set.
        Ok(result.expect("a chain has a first step").retype())
    }
}

/// Builds a [`Chain`]: `chain![extract.s((7,)), transform.s(()), load.s(("db".to_owned(),))]`.
#[macro_export]
macro_rules! chain {
    ($first:expr $(, $rest:expr)* $(,)?) => {
        $crate::canvas::Chain::start($first)$(.then($rest))*
    };
}
