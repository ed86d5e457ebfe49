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

use std::time::Duration;

use celerity_proto::{
    CanvasNode, Priority, QueueName, SignatureRecord, TaskId, TaskName, TaskState,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::async_result::{AsyncResult, ResultError};
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
        client.start_chain(tasks, None, None).await?;
        let mut result: Option<AsyncResult<Value>> = None;
        for id in ids {
            result = Some(AsyncResult::with_parent(id, client.clone(), result));
        }
        // INVARIANT: a chain has at least one step, so `result` is set.
        Ok(result.expect("a chain has a first step").retype())
    }
}

/// Signatures run in parallel; the result is the list of their results, in order.
///
/// ```no_run
/// # async fn demo(client: celerity::Client) -> Result<(), Box<dyn std::error::Error>> {
/// #[celerity::task]
/// async fn square(x: i64) -> i64 { x * x }
///
/// let squares = celerity::Group::new((1..=10).map(|x| square.s((x,)))).apply_async(&client).await?;
/// assert_eq!(squares.get(std::time::Duration::from_secs(30)).await?, (1..=10).map(|x| x * x).collect::<Vec<i64>>());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Group<T> {
    members: Vec<Signature<Value>>,
    output: PhantomData<fn() -> T>,
}

impl<T> Group<T> {
    /// A group of `members`.
    pub fn new(members: impl IntoIterator<Item = Signature<T>>) -> Self {
        Self {
            members: members.into_iter().map(Signature::erase).collect(),
            output: PhantomData,
        }
    }

    /// Sends every member, tagged with one group id.
    ///
    /// # Errors
    /// [`EnqueueError`] for an empty group, an invalid member, or a failed publish (members sent
    /// before the failure stay sent).
    pub async fn apply_async(self, client: &Client) -> Result<GroupResult<T>, EnqueueError> {
        let id = new_id();
        let tasks = callbacks(self.members)?;
        let node = CanvasNode::Group {
            id: id.clone(),
            tasks,
        };
        node.validate(MAX_DEPTH)
            .map_err(EnqueueError::InvalidCanvas)?;
        let CanvasNode::Group { tasks, .. } = node else {
            return Err(EnqueueError::InvalidCanvas(
                celerity_proto::CanvasError::Empty("group"),
            ));
        };
        let mut results = Vec::with_capacity(tasks.len());
        for member in tasks {
            let member_id = member.result_id().cloned();
            client.start_chain(vec![member], Some(&id), None).await?;
            if let Some(member_id) = member_id {
                results.push(AsyncResult::new(member_id, client.clone(), true));
            }
        }
        Ok(GroupResult { id, results })
    }
}

/// The results of a group, in member order.
#[derive(Debug, Clone)]
pub struct GroupResult<T> {
    id: TaskId,
    results: Vec<AsyncResult<T>>,
}

impl<T: DeserializeOwned> GroupResult<T> {
    /// The group id.
    pub fn id(&self) -> &TaskId {
        &self.id
    }

    /// Each member's result handle, in order.
    pub fn results(&self) -> &[AsyncResult<T>] {
        &self.results
    }

    /// Waits up to `timeout` for every member and returns their values in member order.
    ///
    /// # Errors
    /// The first failed member's error, in member order, or [`ResultError::Timeout`].
    pub async fn get(&self, timeout: Duration) -> Result<Vec<T>, ResultError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let waits = self.results.iter().map(|result| async move {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            result.get(left).await
        });
        futures_util::future::join_all(waits)
            .await
            .into_iter()
            .collect()
    }

    /// Yields `(member index, outcome)` as members finish, not in member order, until every member
    /// has finished or `timeout` has passed (members still running then yield a timeout).
    pub fn as_completed(
        &self,
        timeout: Duration,
    ) -> impl futures_util::Stream<Item = (usize, Result<T, ResultError>)> + '_ {
        let deadline = tokio::time::Instant::now() + timeout;
        self.results
            .iter()
            .enumerate()
            .map(|(index, result)| async move {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                (index, result.get(left).await)
            })
            .collect::<futures_util::stream::FuturesUnordered<_>>()
    }

    /// How many members have a final state.
    ///
    /// # Errors
    /// [`ResultError::Store`] when the bucket cannot be read.
    pub async fn completed_count(&self) -> Result<usize, ResultError> {
        let mut count = 0;
        for state in self.states().await? {
            count += usize::from(state.is_ready());
        }
        Ok(count)
    }

    /// True once every member has a final state.
    ///
    /// # Errors
    /// [`ResultError::Store`] when the bucket cannot be read.
    pub async fn ready(&self) -> Result<bool, ResultError> {
        Ok(self.completed_count().await? == self.results.len())
    }

    /// True if every member succeeded.
    ///
    /// # Errors
    /// [`ResultError::Store`] when the bucket cannot be read.
    pub async fn successful(&self) -> Result<bool, ResultError> {
        Ok(self
            .states()
            .await?
            .iter()
            .all(|state| *state == TaskState::Success))
    }

    /// True if any member failed.
    ///
    /// # Errors
    /// [`ResultError::Store`] when the bucket cannot be read.
    pub async fn failed(&self) -> Result<bool, ResultError> {
        Ok(self.states().await?.contains(&TaskState::Failure))
    }

    async fn states(&self) -> Result<Vec<TaskState>, ResultError> {
        let reads = self.results.iter().map(AsyncResult::state);
        futures_util::future::join_all(reads)
            .await
            .into_iter()
            .collect()
    }
}

/// A group (the header) whose list of results, in member order, is the first argument of the body
/// once every member has succeeded. The body runs exactly once; if a member fails, it does not run
/// and the chord's result is that member's failure.
///
/// ```no_run
/// # async fn demo(client: celerity::Client) -> Result<(), Box<dyn std::error::Error>> {
/// #[celerity::task]
/// async fn add(x: i64, y: i64) -> i64 { x + y }
/// #[celerity::task]
/// async fn total(numbers: Vec<i64>) -> i64 { numbers.iter().sum() }
///
/// let sum = celerity::Chord::new((0..1000).map(|i| add.s((i, i))), total.s(()))
///     .apply_async(&client)
///     .await?;
/// assert_eq!(sum.get(std::time::Duration::from_secs(60)).await?, 999_000);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Chord<U> {
    header: Vec<Signature<Value>>,
    body: Signature<Value>,
    output: PhantomData<fn() -> U>,
}

impl<U> Chord<U> {
    /// A chord of `header` members whose results go to `body`.
    pub fn new<T>(header: impl IntoIterator<Item = Signature<T>>, body: Signature<U>) -> Self {
        Self {
            header: header.into_iter().map(Signature::erase).collect(),
            body: body.erase(),
            output: PhantomData,
        }
    }

    /// Stores the chord's definition, then sends every header member. The result is the body's.
    ///
    /// # Errors
    /// [`EnqueueError`] for an empty header, an invalid member, or a failed publish (members sent
    /// before the failure stay sent, and the body never runs).
    pub async fn apply_async(self, client: &Client) -> Result<AsyncResult<U>, EnqueueError> {
        let id = new_id();
        let mut header = callbacks(self.header)?;
        for (index, member) in (0..).zip(header.iter_mut()) {
            if let CanvasNode::Signature(signature) = member {
                signature.id = celerity_proto::header_result_id(&id, index).map_err(|error| {
                    EnqueueError::InvalidOption {
                        option: "chord id",
                        value: error.value,
                        reason: error.rule.to_owned(),
                    }
                })?;
            }
        }
        let body = CanvasNode::Signature(self.body.into_record()?);
        let node = CanvasNode::Chord {
            id: id.clone(),
            header,
            body: Box::new(body),
        };
        node.validate(MAX_DEPTH)
            .map_err(EnqueueError::InvalidCanvas)?;
        let CanvasNode::Chord { header, body, .. } = node else {
            return Err(EnqueueError::InvalidCanvas(
                celerity_proto::CanvasError::Empty("chord header"),
            ));
        };
        let body_id = body.result_id().cloned().unwrap_or_else(|| id.clone());
        client.start_chord(&id, header, *body).await?;
        Ok(AsyncResult::new(body_id, client.clone(), true))
    }
}

/// Builds a [`Chain`]: `chain![extract.s((7,)), transform.s(()), load.s(("db".to_owned(),))]`.
#[macro_export]
macro_rules! chain {
    ($first:expr $(, $rest:expr)* $(,)?) => {
        $crate::canvas::Chain::start($first)$(.then($rest))*
    };
}
