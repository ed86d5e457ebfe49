//! Tasks: the [`Task`] trait that `#[celerity::task]` implements, task options, and the context a
//! running task sees.
//!
//! This module describes tasks; running them is the worker's job (`worker::execute`) and sending
//! them the client's (`client`). The context is in `task/context.rs`.

mod context;

use std::future::Future;
use std::pin::Pin;

use celerity_proto::{ErrorRecord, Rate, TaskName, TaskState};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

pub(crate) use context::RetryRequest;
pub use context::{DeliveryInfo, Retry, TaskContext};

/// The future of one task run: the return value as JSON, or the task's failure.
pub type TaskFuture = Pin<Box<dyn Future<Output = Result<Value, ErrorRecord>> + Send + 'static>>;

/// A task type, implemented by `#[celerity::task]`.
///
/// Implement it by hand only for unusual cases; the attribute writes the argument binding for you.
///
/// ```
/// #[celerity::task(name = "tasks.add")]
/// async fn add(x: i64, y: i64) -> i64 {
///     x + y
/// }
///
/// use celerity::Task;
/// assert_eq!(add::NAME, "tasks.add");
/// assert_eq!(add::PARAMS, &["x", "y"]);
/// ```
pub trait Task: Send + Sync + 'static {
    /// The arguments as a tuple, in parameter order (the context excluded).
    type Args: Send;
    /// What the task returns on success.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// The registered name that producers send.
    const NAME: &'static str;
    /// Parameter names, for binding named arguments (`kwargs`).
    const PARAMS: &'static [&'static str];

    /// The task's options.
    fn options() -> TaskOptions;

    /// Turns typed arguments into positional JSON values.
    ///
    /// # Errors
    /// [`ArgumentsError`] when an argument cannot be serialized.
    fn encode_args(args: Self::Args) -> Result<Vec<Value>, ArgumentsError>;

    /// Binds decoded arguments to the parameters and returns the run's future, without running it.
    ///
    /// # Errors
    /// [`ArgumentsError`] when the arguments do not fit the parameters: a message that can never
    /// run, so the worker dead-letters it.
    fn run(
        ctx: TaskContext,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<TaskFuture, ArgumentsError>;
}

/// Options of a task type, set in `#[celerity::task(...)]`.
///
/// ```
/// use celerity::TaskOptions;
/// let options = TaskOptions::new("tasks.add").queue("math").track_started(true);
/// assert_eq!(options.queue_name(), Some("math"));
/// assert!(options.is_acks_late());
/// ```
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct TaskOptions {
    name: &'static str,
    queue: Option<&'static str>,
    ignore_result: bool,
    acks_late: bool,
    track_started: bool,
    soft_time_limit_ms: Option<u64>,
    time_limit_ms: Option<u64>,
    max_retries: u32,
    max_deliveries: Option<u32>,
    retry_backoff_ms: Option<u64>,
    retry_backoff_max_ms: u64,
    retry_jitter: bool,
    default_retry_delay_ms: u64,
    autoretry_for: &'static [ErrorType],
    hooks: Option<&'static dyn TaskHooks>,
    rate_limit: Option<Rate>,
    global_rate_limit: Option<Rate>,
}

impl std::fmt::Debug for TaskOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskOptions")
            .field("name", &self.name)
            .field("queue", &self.queue)
            .field("ignore_result", &self.ignore_result)
            .field("acks_late", &self.acks_late)
            .field("track_started", &self.track_started)
            .field("soft_time_limit_ms", &self.soft_time_limit_ms)
            .field("time_limit_ms", &self.time_limit_ms)
            .field("max_retries", &self.max_retries)
            .field("max_deliveries", &self.max_deliveries)
            .field("retry_backoff_ms", &self.retry_backoff_ms)
            .field("autoretry_for", &self.autoretry_for)
            .field("hooks", &self.hooks.is_some())
            .field("rate_limit", &self.rate_limit)
            .field("global_rate_limit", &self.global_rate_limit)
            .finish_non_exhaustive()
    }
}

/// An error type a task retries on automatically (`#[celerity::task(autoretry_for = [T])]`).
///
/// A failure matches when the task's error is a `T`, or holds one: as a source anywhere in its
/// chain (a `thiserror` `#[from]` or `#[source]` field), or inside an `anyhow::Error` (with or
/// without `.context(...)`) or a `Box<dyn Error + Send + Sync>`.
///
/// ```
/// use celerity::ErrorType;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("cannot fetch the page")]
/// struct FetchError(#[source] std::io::Error);
///
/// let io = ErrorType::of::<std::io::Error>();
/// assert!(io.matches(&std::io::Error::other("reset")));
/// assert!(io.matches(&FetchError(std::io::Error::other("reset"))));
/// let held = anyhow::Error::new(std::io::Error::other("reset")).context("fetching");
/// assert!(io.matches(&*held));
/// assert!(!io.matches(&std::fmt::Error));
/// ```
#[derive(Clone, Copy)]
pub struct ErrorType {
    name: fn() -> &'static str,
    is: fn(&(dyn std::error::Error + 'static)) -> bool,
}

impl ErrorType {
    /// The error type `E`.
    pub const fn of<E: std::error::Error + 'static>() -> Self {
        Self {
            name: std::any::type_name::<E>,
            is: <dyn std::error::Error>::is::<E>,
        }
    }

    /// The type's name, as `std::any::type_name` spells it (`std::io::error::Error`).
    pub fn name(&self) -> &'static str {
        (self.name)()
    }

    /// True when `error`, or an error in its source chain, is of this type.
    pub fn matches(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(error) = next {
            if (self.is)(error) {
                return true;
            }
            next = error.source();
        }
        false
    }
}

impl std::fmt::Debug for ErrorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The future a hook returns.
pub type HookFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Hooks per task type, like the methods of a Celery `Task` subclass (`on_success`,
/// `on_failure`, `on_retry`, `after_return`): attach with `#[celerity::task(base = MyHooks)]`,
/// where `MyHooks` is a unit struct (or a constant) implementing this trait.
///
/// Every method has an empty default; hooks run on the worker after the task's record is stored,
/// and a panicking hook is logged, not fatal.
///
/// ```
/// use celerity::{ErrorRecord, HookFuture, TaskContext, TaskHooks};
///
/// struct Audited;
///
/// impl TaskHooks for Audited {
///     fn on_failure<'a>(&'a self, ctx: &'a TaskContext, error: &'a ErrorRecord) -> HookFuture<'a> {
///         Box::pin(async move { eprintln!("task {} failed: {error}", ctx.id()) })
///     }
/// }
///
/// #[celerity::task(base = Audited)]
/// async fn charge(amount: u64) -> u64 {
///     amount
/// }
/// ```
pub trait TaskHooks: Send + Sync + 'static {
    /// After the task succeeded and its result was stored.
    fn on_success<'a>(&'a self, ctx: &'a TaskContext, result: &'a Value) -> HookFuture<'a> {
        let _ = (ctx, result);
        Box::pin(async {})
    }

    /// After the task failed (for good) and its failure was stored.
    fn on_failure<'a>(&'a self, ctx: &'a TaskContext, error: &'a ErrorRecord) -> HookFuture<'a> {
        let _ = (ctx, error);
        Box::pin(async {})
    }

    /// After the task was sent again as retry number `retry`.
    fn on_retry<'a>(
        &'a self,
        ctx: &'a TaskContext,
        error: &'a ErrorRecord,
        retry: u32,
    ) -> HookFuture<'a> {
        let _ = (ctx, error, retry);
        Box::pin(async {})
    }

    /// After every run, with the state it ended in.
    fn after_return<'a>(&'a self, ctx: &'a TaskContext, state: &'a TaskState) -> HookFuture<'a> {
        let _ = (ctx, state);
        Box::pin(async {})
    }
}

impl TaskOptions {
    /// Default options for the task registered as `name`: the default queue, results stored,
    /// acknowledged after the result is stored, STARTED not recorded.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            queue: None,
            ignore_result: false,
            acks_late: true,
            track_started: false,
            soft_time_limit_ms: None,
            time_limit_ms: None,
            max_retries: 3,
            max_deliveries: None,
            retry_backoff_ms: None,
            retry_backoff_max_ms: 600_000,
            retry_jitter: true,
            default_retry_delay_ms: 180_000,
            autoretry_for: &[],
            hooks: None,
            rate_limit: None,
            global_rate_limit: None,
        }
    }

    /// Default options with no task name: a preset that a family of tasks shares, as a Celery
    /// base class shares its attributes (`#[celerity::task(preset = RETRYING)]`). A task's own
    /// options override its preset's.
    ///
    /// ```
    /// use celerity::{ErrorType, Rate, TaskOptions};
    ///
    /// const RETRYING: TaskOptions = TaskOptions::preset()
    ///     .autoretry_for(&[ErrorType::of::<std::io::Error>()])
    ///     .max_retries(5)
    ///     .retry_backoff_ms(1_000)
    ///     .rate_limit(Rate::per(100, 60).expect("100 per minute is a rate"));
    ///
    /// #[celerity::task(preset = RETRYING, max_retries = 2)]
    /// async fn fetch(url: String) -> std::io::Result<String> {
    ///     Ok(url)
    /// }
    ///
    /// use celerity::Task;
    /// assert_eq!(fetch::options().max_retries_value(), 2);
    /// assert!(fetch::options().retries_automatically(ErrorType::of::<std::io::Error>().name()));
    /// assert_eq!(fetch::options().rate_limit_value(), Rate::per(100, 60));
    /// ```
    pub const fn preset() -> Self {
        Self::new("")
    }

    /// These options for the task registered as `name`.
    pub(crate) const fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Runs at most `rate` of this task type on each worker (`#[celerity::task(rate_limit =
    /// "100/m")]`). Tasks over the rate wait on the worker without holding an execution slot.
    pub const fn rate_limit(mut self, rate: Rate) -> Self {
        self.rate_limit = Some(rate);
        self
    }

    /// Runs at most `rate` of this task type in the whole cluster, all workers together
    /// (`#[celerity::task(global_rate_limit = "100/m")]`); the bucket lives in NATS.
    pub const fn global_rate_limit(mut self, rate: Rate) -> Self {
        self.global_rate_limit = Some(rate);
        self
    }

    /// The per-worker rate limit set in code (a stored setting may override it).
    pub fn rate_limit_value(&self) -> Option<Rate> {
        self.rate_limit
    }

    /// The cluster-wide rate limit set in code (a stored setting may override it).
    pub fn global_rate_limit_value(&self) -> Option<Rate> {
        self.global_rate_limit
    }

    /// Runs `hooks` around this task type's runs (`#[celerity::task(base = ...)]`).
    pub const fn hooks(mut self, hooks: &'static dyn TaskHooks) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// The task type's hooks.
    pub fn hooks_value(&self) -> Option<&'static dyn TaskHooks> {
        self.hooks
    }

    /// Retries at most `retries` times (default 3, as in Celery); after the last, the task fails.
    pub const fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Exponential backoff between retries: `base_ms`, then twice that, and so on, up to
    /// [`TaskOptions::retry_backoff_max_ms`]. Without it, retries wait the default retry delay.
    pub const fn retry_backoff_ms(mut self, base_ms: u64) -> Self {
        self.retry_backoff_ms = Some(base_ms);
        self
    }

    /// The longest backoff (default 10 minutes).
    pub const fn retry_backoff_max_ms(mut self, max_ms: u64) -> Self {
        self.retry_backoff_max_ms = max_ms;
        self
    }

    /// Randomizes each backoff between 0 and its computed value (default on, as in Celery), so
    /// many failing tasks do not retry in step.
    pub const fn retry_jitter(mut self, jitter: bool) -> Self {
        self.retry_jitter = jitter;
        self
    }

    /// The wait before a retry when no countdown and no backoff is given (default 3 minutes, as in
    /// Celery).
    pub const fn default_retry_delay_ms(mut self, delay_ms: u64) -> Self {
        self.default_retry_delay_ms = delay_ms;
        self
    }

    /// Retries automatically when the task fails with an error of one of these types, or with an
    /// error that holds one (in its source chain, or inside an `anyhow::Error`):
    /// `#[celerity::task(autoretry_for = [T, U])]` writes
    /// `.autoretry_for(&[ErrorType::of::<T>(), ErrorType::of::<U>()])`. A later call replaces
    /// the list (a task's own `autoretry_for` replaces its preset's).
    pub const fn autoretry_for(mut self, types: &'static [ErrorType]) -> Self {
        self.autoretry_for = types;
        self
    }

    /// The retry limit.
    pub fn max_retries_value(&self) -> u32 {
        self.max_retries
    }

    /// Runs a message of this task at most `deliveries` times (at least 1): a message delivered
    /// more often (every earlier delivery ended without an acknowledgement, as when the task
    /// crashes its worker) is dead-lettered with `too_many_deliveries` and fails, instead of
    /// taking down the next worker. Without it, the worker's `--max-deliveries` applies. Like
    /// Celery's `task_reject_on_worker_lost = False`, bounded. Retries are new messages and are
    /// not counted.
    pub const fn max_deliveries(mut self, deliveries: u32) -> Self {
        self.max_deliveries = Some(if deliveries == 0 { 1 } else { deliveries });
        self
    }

    /// The task's own delivery limit, if it sets one.
    pub fn max_deliveries_value(&self) -> Option<u32> {
        self.max_deliveries
    }

    /// True when a failure recorded with error type `kind` (an [`ErrorRecord`]'s `kind`) is
    /// retried automatically: `kind` is the name of one of the `autoretry_for` types.
    pub fn retries_automatically(&self, kind: &str) -> bool {
        self.autoretry_for
            .iter()
            .any(|error_type| error_type.name() == kind)
    }

    /// True when a task failing with `error` is retried automatically: `error`, or an error in its
    /// source chain, is one of the `autoretry_for` types.
    pub fn retries_automatically_on(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        self.autoretry_for
            .iter()
            .any(|error_type| error_type.matches(error))
    }

    /// How long to wait before retry number `retry` (1 for the first), with `jitter` in
    /// `0.0..=1.0` drawn by the caller when jitter is on.
    pub fn retry_delay(&self, retry: u32, jitter: f64) -> std::time::Duration {
        let millis = match self.retry_backoff_ms {
            None => self.default_retry_delay_ms,
            Some(base) => {
                let factor = 1u64
                    .checked_shl(retry.saturating_sub(1))
                    .unwrap_or(u64::MAX);
                let full = base.saturating_mul(factor).min(self.retry_backoff_max_ms);
                if self.retry_jitter {
                    (full as f64 * jitter.clamp(0.0, 1.0)) as u64
                } else {
                    full
                }
            }
        };
        std::time::Duration::from_millis(millis)
    }

    /// After this many milliseconds the task is told to stop (`TaskContext::cancelled`) and may
    /// clean up.
    pub const fn soft_time_limit_ms(mut self, limit: u64) -> Self {
        self.soft_time_limit_ms = Some(limit);
        self
    }

    /// After this many milliseconds the task is aborted and fails with
    /// `celerity::TimeLimitExceeded`; its slot is freed.
    pub const fn time_limit_ms(mut self, limit: u64) -> Self {
        self.time_limit_ms = Some(limit);
        self
    }

    /// The soft time limit.
    pub fn soft_time_limit(&self) -> Option<std::time::Duration> {
        self.soft_time_limit_ms
            .map(std::time::Duration::from_millis)
    }

    /// The hard time limit.
    pub fn time_limit(&self) -> Option<std::time::Duration> {
        self.time_limit_ms.map(std::time::Duration::from_millis)
    }

    /// Sends the task to `queue` unless the caller names another.
    pub const fn queue(mut self, queue: &'static str) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Does not store the result (nor the failure): nobody can wait on it.
    pub const fn ignore_result(mut self, ignore: bool) -> Self {
        self.ignore_result = ignore;
        self
    }

    /// Acknowledges the message after the result is stored (true, the default: a crash mid-task
    /// means it runs again elsewhere) or before the task runs (false: at most once).
    pub const fn acks_late(mut self, late: bool) -> Self {
        self.acks_late = late;
        self
    }

    /// Records STARTED when the task begins to run.
    pub const fn track_started(mut self, track: bool) -> Self {
        self.track_started = track;
        self
    }

    /// The registered name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The task's own queue, if it has one.
    pub fn queue_name(&self) -> Option<&'static str> {
        self.queue
    }

    /// Whether results are discarded.
    pub fn is_ignore_result(&self) -> bool {
        self.ignore_result
    }

    /// Whether the message is acknowledged after the result is stored.
    pub fn is_acks_late(&self) -> bool {
        self.acks_late
    }

    /// Whether STARTED is recorded.
    pub fn is_track_started(&self) -> bool {
        self.track_started
    }
}

/// Arguments that do not fit a task's parameters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArgumentsError {
    /// More positional arguments than parameters.
    #[error("takes {expected} arguments but {given} were given")]
    TooMany {
        /// Parameters.
        expected: usize,
        /// Positional arguments given.
        given: usize,
    },
    /// A parameter got no value.
    #[error("missing argument {0:?}")]
    Missing(String),
    /// A named argument matches no parameter.
    #[error("unexpected named argument {0:?}")]
    Unexpected(String),
    /// A parameter got a value both by position and by name.
    #[error("argument {0:?} given by position and by name")]
    Duplicate(String),
    /// A value does not decode to the parameter's type.
    #[error("argument {name:?} has the wrong type: {source}")]
    WrongType {
        /// The parameter.
        name: String,
        /// What the decoder said.
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be serialized by the producer.
    #[error("argument {name:?} cannot be serialized: {source}")]
    Unserializable {
        /// The parameter.
        name: String,
        /// What the encoder said.
        #[source]
        source: serde_json::Error,
    },
    /// An item of a built-in map (`celerity.map`, `celerity.starmap`) does not fit the target
    /// task's parameters.
    #[error("argument \"items[{index}]\" has the wrong type: {source}")]
    Item {
        /// The item's index in `items`.
        index: usize,
        /// Why it does not fit.
        #[source]
        source: Box<ArgumentsError>,
    },
}

tokio::task_local! {
    /// Set while an async task body runs on a worker.
    static IN_TASK_BODY: ();
}

thread_local! {
    /// Set while a blocking task body runs on a worker's blocking thread.
    static IN_BLOCKING_BODY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True when the caller is a task body running on a worker: waiting there on another task's
/// result can deadlock the worker (its slots wait on tasks that need its slots).
pub(crate) fn inside_task_body() -> bool {
    IN_TASK_BODY.try_with(|()| ()).is_ok() || IN_BLOCKING_BODY.with(std::cell::Cell::get)
}

/// Runs an async task body marked as such.
pub(crate) async fn mark_task_body<F: std::future::Future>(body: F) -> F::Output {
    IN_TASK_BODY.scope((), body).await
}

/// Runs a blocking task body marked as such.
pub(crate) fn mark_blocking_body<T>(body: impl FnOnce() -> T) -> T {
    /// Clears the flag however the body ends, a panic included, so the pool thread that ran it
    /// is not taken for a blocking body's later.
    struct Unmark;
    impl Drop for Unmark {
        fn drop(&mut self) {
            IN_BLOCKING_BODY.with(|flag| flag.set(false));
        }
    }
    IN_BLOCKING_BODY.with(|flag| flag.set(true));
    let _unmark = Unmark;
    body()
}

/// A registered task type, with its run function erased for the worker's registry.
#[derive(Debug, Clone)]
pub(crate) struct Registered {
    pub(crate) name: TaskName,
    pub(crate) options: TaskOptions,
    pub(crate) run: RunFn,
}

pub(crate) type RunFn =
    fn(TaskContext, Vec<Value>, Map<String, Value>) -> Result<TaskFuture, ArgumentsError>;
