//! [`Signature`]: one task call, typed by what the task returns, and the built-in signatures
//! that run a task over many items (`map`, `starmap`, `chunks`).

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use celerity_proto::{CanvasNode, Priority, QueueName, SignatureRecord, TaskId, TaskName};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::EnqueueError;
use crate::routing::Routes;
use crate::task::Task;

use super::{MAP_TASK, STARMAP_TASK};

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
    /// A partial call (`task.s(..)`): a chain's previous result goes in front of `args`.
    #[doc(hidden)]
    pub fn partial<K: Task, A: ArgsTuple>(task: &K, args: A) -> Self {
        for_task(
            task,
            K::NAME,
            args.into_args().map_err(Arc::new),
            Map::new(),
        )
    }

    /// An immutable call (`task.si(..)`): it receives only `args`.
    #[doc(hidden)]
    pub fn immutable<K: Task, A: ArgsTuple>(task: &K, args: A) -> Self {
        Self {
            immutable: true,
            ..Self::partial(task, args)
        }
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

    pub(super) fn erase(self) -> Signature<Value> {
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
    pub(super) fn into_record(self, routes: &Routes) -> Result<SignatureRecord, EnqueueError> {
        let (task, extras) = self.split()?;
        let mut record = SignatureRecord::new(new_id(), task.task, task.args);
        record.kwargs = task.kwargs;
        record.immutable = extras.immutable;
        // NOTE: routing is decided here, by the producer, for every step: workers that send the
        // later steps keep these choices.
        let (queue, priority) = routes
            .resolve(
                extras.route_name,
                &record.args,
                &record.kwargs,
                task.queue,
                task.priority,
                task.task_queue,
            )
            .map_err(|error| EnqueueError::invalid_route(extras.route_name, error))?;
        record.queue = Some(queue);
        record.countdown_ms = extras
            .countdown
            .map(|countdown| countdown.as_millis() as u64);
        record.priority = (priority.get() > 0).then_some(priority);
        record.link = callbacks(extras.link, routes)?;
        record.link_error = callbacks(extras.link_error, routes)?;
        Ok(record)
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

pub(super) fn new_id() -> TaskId {
    // INVARIANT: a hyphenated UUID satisfies the task id rule.
    TaskId::new(uuid::Uuid::now_v7().to_string()).expect("a UUID is a valid task id")
}
