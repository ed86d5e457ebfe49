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
use std::sync::Arc;
use std::time::Duration;

use celerity_proto::{
    CanvasNode, ChordPolicy, Priority, QueueName, SignatureRecord, TaskId, TaskName, TaskState,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::async_result::{AsyncResult, ResultError};
use crate::client::Client;
use crate::error::EnqueueError;
use crate::routing::Routes;
use crate::task::Task;

pub use celerity_proto::builtin::{MAP_TASK, STARMAP_TASK};

/// How deep a canvas may nest before it is refused (the protocol's
/// [`celerity_proto::builtin::MAX_CANVAS_DEPTH`]).
pub const MAX_DEPTH: usize = celerity_proto::builtin::MAX_CANVAS_DEPTH;

/// Arguments given to a signature: a tuple of serializable values, `()` for none.
#[diagnostic::on_unimplemented(
    message = "task arguments must be a tuple of up to 8 values, not `{Self}`",
    label = "wrap the arguments in a tuple: `(x,)` for one, `(x, y)` for two, `()` for none",
    note = "write `task.s((5,))`, not `task.s(5)`"
)]
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

/// Why a signature's arguments are missing: the serializer's error, kept until the send reports it
/// (shared, as signatures are cloned).
type ArgsError = Arc<serde_json::Error>;

/// One task call, typed by what the task returns: sent alone or as a step of a chain.
///
/// Made by the `s` (partial: a chain's previous result goes in front of its arguments) and `si`
/// (immutable) methods that `#[celerity::task]` generates.
#[derive(Debug, Clone)]
pub struct Signature<T> {
    task: &'static str,
    args: Result<Vec<Value>, ArgsError>,
    kwargs: Map<String, Value>,
    immutable: bool,
    /// The queue named at the call (`.queue(..)`), which beats every route.
    queue: Option<String>,
    priority: Option<u8>,
    countdown: Option<Duration>,
    /// The name routes match: the task's (for a map, the task it runs).
    route_name: &'static str,
    /// The task's own `queue` attribute.
    task_queue: Option<&'static str>,
    link: Vec<Signature<Value>>,
    link_error: Vec<Signature<Value>>,
    output: PhantomData<fn() -> T>,
}

impl<T> Signature<T> {
    #[doc(hidden)]
    pub fn of<K: Task, A: ArgsTuple>(task: &K, args: A, immutable: bool) -> Self {
        let mut signature = for_task(
            task,
            K::NAME,
            args.into_args().map_err(Arc::new),
            Map::new(),
        );
        signature.immutable = immutable;
        signature
    }

    /// Sends this step to `queue`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Starts this step no sooner than `countdown` after it is sent (for a chain step: after the
    /// step before it finished).
    pub fn countdown(mut self, countdown: Duration) -> Self {
        self.countdown = Some(countdown);
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
            Err(error) => self.args = Err(Arc::new(error)),
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
            countdown: self.countdown,
            route_name: self.route_name,
            task_queue: self.task_queue,
            link: self.link,
            link_error: self.link_error,
            output: PhantomData,
        }
    }

    /// The task of this signature, checked: name, arguments, the queue and priority named on it,
    /// the task's own queue. Callbacks and countdown are left out.
    pub(crate) fn into_task_call(self) -> Result<TaskCall, EnqueueError> {
        Ok(self.split()?.0)
    }

    /// The checked task, and what only a canvas step carries.
    fn split(self) -> Result<(TaskCall, StepExtras), EnqueueError> {
        let invalid = EnqueueError::invalid;
        let args = self.args.map_err(|source| EnqueueError::Serialize {
            task: self.task.to_owned(),
            source,
        })?;
        let task = TaskCall {
            task: TaskName::new(self.task).map_err(|e| invalid("task name", e))?,
            args,
            kwargs: self.kwargs,
            queue: self
                .queue
                .map(QueueName::new)
                .transpose()
                .map_err(|e| invalid("queue", e))?,
            priority: self
                .priority
                .map(Priority::new)
                .transpose()
                .map_err(|e| invalid("priority", e))?,
            task_queue: self.task_queue.and_then(|queue| QueueName::new(queue).ok()),
        };
        let extras = StepExtras {
            immutable: self.immutable,
            countdown: self.countdown,
            route_name: self.route_name,
            link: self.link,
            link_error: self.link_error,
        };
        Ok((task, extras))
    }

    /// The wire record of this signature, with fresh ids for it and its callbacks.
    fn into_record(self, routes: &Routes) -> Result<SignatureRecord, EnqueueError> {
        let (task, extras) = self.split()?;
        let mut record = SignatureRecord::new(new_id(), task.task, task.args);
        record.kwargs = task.kwargs;
        record.immutable = extras.immutable;
        // NOTE: routing is decided here, by the producer, for every step: workers that send the
        // later steps keep these choices.
        let (queue, priority) = routes.resolve(
            extras.route_name,
            &record.args,
            &record.kwargs,
            task.queue,
            task.priority,
            task.task_queue,
        );
        record.queue = Some(queue);
        record.countdown_ms = extras
            .countdown
            .map(|countdown| countdown.as_millis() as u64);
        record.priority = (priority.get() > 0).then_some(priority);
        record.link = callbacks(extras.link, routes)?;
        record.link_error = callbacks(extras.link_error, routes)?;
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

/// The task of a signature, checked: its name and arguments, the queue and priority named on it,
/// and the task's own queue. What a beat entry sends, and the first part of a canvas step.
#[derive(Debug, Clone)]
pub(crate) struct TaskCall {
    pub(crate) task: TaskName,
    pub(crate) args: Vec<Value>,
    pub(crate) kwargs: Map<String, Value>,
    /// The queue named on the signature or in the schedule file (beats every route).
    pub(crate) queue: Option<QueueName>,
    pub(crate) priority: Option<Priority>,
    /// The task's own `queue` attribute, when known.
    pub(crate) task_queue: Option<QueueName>,
}

/// What a canvas step carries besides its task.
struct StepExtras {
    immutable: bool,
    countdown: Option<Duration>,
    route_name: &'static str,
    link: Vec<Signature<Value>>,
    link_error: Vec<Signature<Value>>,
}

#[doc(hidden)]
pub fn map_signature<K: Task, A: Serialize>(
    task: &K,
    items: impl IntoIterator<Item = A>,
) -> Signature<Vec<K::Output>> {
    let items: Result<Vec<Value>, ArgsError> = items
        .into_iter()
        .map(|item| serde_json::to_value(item).map_err(Arc::new))
        .collect();
    builtin(task, MAP_TASK, items)
}

#[doc(hidden)]
pub fn starmap_signature<K: Task, A: ArgsTuple>(
    task: &K,
    items: impl IntoIterator<Item = A>,
) -> Signature<Vec<K::Output>> {
    let items: Result<Vec<Value>, ArgsError> = items
        .into_iter()
        .map(|item| item.into_args().map(Value::Array).map_err(Arc::new))
        .collect();
    builtin(task, STARMAP_TASK, items)
}

#[doc(hidden)]
pub fn chunks_group<K: Task, A: ArgsTuple>(
    task: &K,
    items: impl IntoIterator<Item = A>,
    chunk_size: usize,
) -> Group<Vec<K::Output>> {
    let items: Vec<A> = items.into_iter().collect();
    let mut chunks = Vec::new();
    let mut iter = items.into_iter().peekable();
    while iter.peek().is_some() {
        let chunk: Vec<A> = iter.by_ref().take(chunk_size.max(1)).collect();
        chunks.push(starmap_signature(task, chunk));
    }
    Group::new(chunks)
}

/// A signature of a built-in task that runs `task` once per item, in one worker.
fn builtin<K: Task, U>(
    _task: &K,
    name: &'static str,
    items: Result<Vec<Value>, ArgsError>,
) -> Signature<U> {
    let mut kwargs = Map::new();
    kwargs.insert("task".to_owned(), Value::String(K::NAME.to_owned()));
    let args = items.map(|items| {
        kwargs.insert("items".to_owned(), Value::Array(items));
        Vec::new()
    });
    for_task(_task, name, args, kwargs)
}

/// A signature of `name` (the task itself, or a built-in that runs it), routed as task `K`.
fn for_task<K: Task, U>(
    _task: &K,
    name: &'static str,
    args: Result<Vec<Value>, ArgsError>,
    kwargs: Map<String, Value>,
) -> Signature<U> {
    Signature {
        task: name,
        args,
        kwargs,
        immutable: false,
        queue: None,
        countdown: None,
        route_name: K::NAME,
        task_queue: K::options().queue_name(),
        priority: None,
        link: Vec::new(),
        link_error: Vec::new(),
        output: PhantomData,
    }
}

fn callbacks(
    signatures: Vec<Signature<Value>>,
    routes: &Routes,
) -> Result<Vec<CanvasNode>, EnqueueError> {
    signatures
        .into_iter()
        .map(|signature| signature.into_record(routes).map(CanvasNode::Signature))
        .collect()
}

fn new_id() -> TaskId {
    // INVARIANT: a hyphenated UUID satisfies the task id rule.
    TaskId::new(uuid::Uuid::now_v7().to_string()).expect("a UUID is a valid task id")
}

/// Any canvas (a signature, chain, group or chord) typed by its result: what chains, groups and
/// chords are built from. Every canvas type converts into it with `into()`.
#[derive(Debug, Clone)]
pub struct Part<T> {
    node: Untyped,
    output: PhantomData<fn() -> T>,
}

#[derive(Debug, Clone)]
enum Untyped {
    Signature(Signature<Value>),
    Chain(Vec<Untyped>),
    Group(Vec<Untyped>),
    Chord(Vec<Untyped>, Box<Untyped>, ChordPolicy),
}

impl<T> From<Signature<T>> for Part<T> {
    fn from(signature: Signature<T>) -> Self {
        Part {
            node: Untyped::Signature(signature.erase()),
            output: PhantomData,
        }
    }
}

impl<T> From<Chain<T>> for Part<T> {
    fn from(chain: Chain<T>) -> Self {
        Part {
            node: Untyped::Chain(chain.steps),
            output: PhantomData,
        }
    }
}

impl<T> From<Group<T>> for Part<Vec<T>> {
    fn from(group: Group<T>) -> Self {
        Part {
            node: Untyped::Group(group.members),
            output: PhantomData,
        }
    }
}

impl<T> From<Chord<T>> for Part<T> {
    fn from(chord: Chord<T>) -> Self {
        Part {
            node: Untyped::Chord(chord.header, Box::new(chord.body), chord.policy),
            output: PhantomData,
        }
    }
}

impl Untyped {
    /// The wire node, with fresh ids; chord header members get their result ids
    /// `<chord id>-<index>`.
    fn into_node(self, routes: &Routes) -> Result<CanvasNode, EnqueueError> {
        Ok(match self {
            Untyped::Signature(signature) => CanvasNode::Signature(signature.into_record(routes)?),
            Untyped::Chain(steps) => {
                let mut tasks: Vec<CanvasNode> = steps
                    .into_iter()
                    .map(|node| node.into_node(routes))
                    .collect::<Result<_, _>>()?;
                // NOTE(protocol): a group followed by more steps runs as a chord whose id is the
                // group's, so its members' results are stored as that chord's header results.
                let last = tasks.len().saturating_sub(1);
                for node in tasks.iter_mut().take(last) {
                    if let CanvasNode::Group { id, tasks: members } = node {
                        for (index, member) in (0..).zip(members.iter_mut()) {
                            set_result_id(member, chord_member_id(id, index)?)?;
                        }
                    }
                }
                CanvasNode::Chain { tasks }
            }
            Untyped::Group(members) => CanvasNode::Group {
                id: new_id(),
                tasks: members
                    .into_iter()
                    .map(|node| node.into_node(routes))
                    .collect::<Result<_, _>>()?,
            },
            Untyped::Chord(header, body, policy) => {
                let id = new_id();
                let mut tasks = Vec::with_capacity(header.len());
                for (index, member) in (0..).zip(header) {
                    let mut node = member.into_node(routes)?;
                    set_result_id(&mut node, chord_member_id(&id, index)?)?;
                    tasks.push(node);
                }
                CanvasNode::Chord {
                    id,
                    header: tasks,
                    body: Box::new(body.into_node(routes)?),
                    policy,
                }
            }
        })
    }
}

/// The result id of member `index` of chord (or chained group) `id`.
fn chord_member_id(id: &TaskId, index: u32) -> Result<TaskId, EnqueueError> {
    celerity_proto::header_result_id(id, index)
        .map_err(|error| EnqueueError::invalid("chord member id", error))
}

/// Makes `id` the id under which `node`'s result is stored.
fn set_result_id(node: &mut CanvasNode, id: TaskId) -> Result<(), EnqueueError> {
    match node {
        CanvasNode::Signature(signature) => {
            signature.id = id;
            Ok(())
        }
        CanvasNode::Chain { tasks } => match tasks.last_mut() {
            Some(last) => set_result_id(last, id),
            None => Err(EnqueueError::InvalidCanvas(
                celerity_proto::CanvasError::Empty("chain"),
            )),
        },
        CanvasNode::Chord { body, .. } => set_result_id(body, id),
        _ => Err(EnqueueError::InvalidCanvas(
            celerity_proto::CanvasError::GroupInChordHeader {
                chord: id.to_string(),
            },
        )),
    }
}

/// Validates and sends `node`.
async fn send(
    client: &Client,
    node: &CanvasNode,
    deadline: Option<Duration>,
) -> Result<(), EnqueueError> {
    node.validate(MAX_DEPTH)
        .map_err(EnqueueError::InvalidCanvas)?;
    let expires_ms =
        deadline.map(|deadline| crate::clock::now_ms().saturating_add(deadline.as_millis() as u64));
    client.send_canvas(node, expires_ms).await
}

/// Steps run one after the other, each receiving the previous result (unless immutable); typed by
/// what the last step returns. Built with [`chain!`](crate::chain) or [`Chain::start`] and
/// [`Chain::then`]. A step may be a signature, a chain, a group (the next step receives the list
/// of its results) or a chord.
#[derive(Debug, Clone)]
pub struct Chain<T> {
    steps: Vec<Untyped>,
    deadline: Option<Duration>,
    output: PhantomData<fn() -> T>,
}

impl<T> Chain<T> {
    /// A chain whose first step is `first`.
    pub fn start(first: impl Into<Part<T>>) -> Self {
        Self {
            steps: vec![first.into().node],
            deadline: None,
            output: PhantomData,
        }
    }

    /// Appends `next`, which receives this chain's result.
    pub fn then<U>(mut self, next: impl Into<Part<U>>) -> Chain<U> {
        self.steps.push(next.into().node);
        Chain {
            steps: self.steps,
            deadline: self.deadline,
            output: PhantomData,
        }
    }

    /// Bounds every step: a step that would start more than `deadline` from now is not run, and
    /// it and every later step end REVOKED with reason `expired`.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Sends the first step, with the others as its continuation. The result is the last step's,
    /// and [`AsyncResult::parent`] walks back through the earlier steps.
    ///
    /// # Errors
    /// [`EnqueueError`] for an invalid canvas (a chain may not end with a group: make it a chord)
    /// or a failed publish; nothing is enqueued then.
    pub async fn apply_async(self, client: &Client) -> Result<AsyncResult<T>, EnqueueError> {
        if matches!(self.steps.last(), Some(Untyped::Group(_))) {
            return Err(EnqueueError::InvalidCanvas(
                celerity_proto::CanvasError::ChainEndsWithGroup,
            ));
        }
        let node = Untyped::Chain(self.steps).into_node(&client.settings().routes)?;
        send(client, &node, self.deadline).await?;
        let CanvasNode::Chain { tasks } = &node else {
            return Err(EnqueueError::InvalidCanvas(
                celerity_proto::CanvasError::Empty("chain"),
            ));
        };
        let mut result: Option<AsyncResult<Value>> = None;
        for id in tasks.iter().filter_map(CanvasNode::result_id) {
            result = Some(AsyncResult::with_parent(
                id.clone(),
                client.results(),
                result,
            ));
        }
        match result {
            Some(result) => Ok(result.retype().with_root(node.root_id().cloned())),
            None => Err(EnqueueError::InvalidCanvas(
                celerity_proto::CanvasError::Empty("chain"),
            )),
        }
    }
}

/// Canvases run in parallel; the result is the list of their results, in order.
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
    members: Vec<Untyped>,
    deadline: Option<Duration>,
    output: PhantomData<fn() -> T>,
}

impl<T> Group<T> {
    /// A group of `members` (signatures, chains or chords of the same result type).
    pub fn new<P: Into<Part<T>>>(members: impl IntoIterator<Item = P>) -> Self {
        Self {
            members: members
                .into_iter()
                .map(|member| member.into().node)
                .collect(),
            deadline: None,
            output: PhantomData,
        }
    }

    /// Bounds every member: a member that would start more than `deadline` from now is not run
    /// and ends REVOKED with reason `expired`.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Sends every member, tagged with one group id.
    ///
    /// # Errors
    /// [`EnqueueError`] for an empty group, an invalid member, or a failed publish (members sent
    /// before the failure stay sent).
    pub async fn apply_async(self, client: &Client) -> Result<GroupResult<T>, EnqueueError> {
        let node = Untyped::Group(self.members).into_node(&client.settings().routes)?;
        send(client, &node, self.deadline).await?;
        let CanvasNode::Group { id, tasks } = node else {
            return Err(EnqueueError::InvalidCanvas(
                celerity_proto::CanvasError::Empty("group"),
            ));
        };
        let results = tasks
            .iter()
            .filter_map(CanvasNode::result_id)
            .map(|member| AsyncResult::new(member.clone(), client.results(), true))
            .collect();
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

    /// Revokes the whole group: members not started yet never run and end REVOKED.
    ///
    /// # Errors
    /// [`ResultError::Store`] when the revocation cannot be written.
    pub async fn revoke(&self) -> Result<(), ResultError> {
        match self.results.first() {
            Some(first) => first.revoke_id(&self.id).await,
            None => Ok(()),
        }
    }

    /// Lets the group be waited on inside a task body; see [`AsyncResult::allow_wait_in_task`].
    pub fn allow_wait_in_task(mut self) -> Self {
        self.results = self
            .results
            .into_iter()
            .map(AsyncResult::allow_wait_in_task)
            .collect();
        self
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
/// async fn sum_all(numbers: Vec<i64>) -> i64 { numbers.iter().sum() }
///
/// let sum = celerity::Chord::new((0..1000).map(|i| add.s((i, i))), sum_all.s(()))
///     .apply_async(&client)
///     .await?;
/// assert_eq!(sum.get(std::time::Duration::from_secs(60)).await?, 999_000);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Chord<U> {
    header: Vec<Untyped>,
    body: Untyped,
    policy: ChordPolicy,
    deadline: Option<Duration>,
    output: PhantomData<fn() -> U>,
}

impl<U> Chord<U> {
    /// A chord of `header` members (signatures, chains or chords) whose results go to `body` (a
    /// signature or a chain).
    pub fn new<T, P: Into<Part<T>>>(
        header: impl IntoIterator<Item = P>,
        body: impl Into<Part<U>>,
    ) -> Self {
        Self {
            header: header
                .into_iter()
                .map(|member| member.into().node)
                .collect(),
            body: body.into().node,
            policy: ChordPolicy::FailFast,
            deadline: None,
            output: PhantomData,
        }
    }

    /// Bounds every member and the body: a task that would start more than `deadline` from now is
    /// not run and ends REVOKED with reason `expired` (a chord whose header member expired fails).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The body runs once every member has ended, with one `{"ok": result}` or
    /// `{"error": error record}` per member in member order, instead of failing on the first
    /// failure.
    pub fn collect(mut self) -> Self {
        self.policy = ChordPolicy::Collect;
        self
    }

    /// The body runs as soon as `successes` members have succeeded, with their results in member
    /// order; the chord fails as soon as that can no longer happen.
    pub fn at_least(mut self, successes: u32) -> Self {
        self.policy = ChordPolicy::AtLeast { successes };
        self
    }

    /// Stores the chord's definition, then sends every header member. The result is the body's.
    ///
    /// # Errors
    /// [`EnqueueError`] for an empty header, an invalid member, or a failed publish (members sent
    /// before the failure stay sent, and the body never runs).
    pub async fn apply_async(self, client: &Client) -> Result<AsyncResult<U>, EnqueueError> {
        let node = Untyped::Chord(self.header, Box::new(self.body), self.policy)
            .into_node(&client.settings().routes)?;
        send(client, &node, self.deadline).await?;
        match node.result_id() {
            Some(id) => Ok(AsyncResult::new(id.clone(), client.results(), true)
                .with_root(node.root_id().cloned())),
            None => Err(EnqueueError::InvalidCanvas(
                celerity_proto::CanvasError::Empty("chord body"),
            )),
        }
    }
}

/// Builds a [`Chain`]: `chain![extract.s((7,)), transform.s(()), load.s(("db".to_owned(),))]`.
#[macro_export]
macro_rules! chain {
    ($first:expr $(, $rest:expr)* $(,)?) => {
        $crate::canvas::Chain::start($first)$(.then($rest))*
    };
}
