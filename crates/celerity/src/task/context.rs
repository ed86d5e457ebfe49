//! [`TaskContext`]: what a running task sees of itself (its id, retries, headers, where it runs)
//! and what it can ask for (progress states, a retry, whether to stop).
//!
//! The worker builds the context of each run (`worker::execute`); this module only describes it.

use std::sync::Arc;

use celerity_proto::{Envelope, Priority, QueueName, TaskId, TaskName, TaskState};
use serde_json::Value;

use crate::result_store::{ResultStore, StoreError};

/// What a running task knows about itself: its id, retries and headers, and a way to report
/// progress.
///
/// Cheap to clone.
///
/// ```no_run
/// use celerity::TaskContext;
///
/// #[celerity::task]
/// async fn import(ctx: &TaskContext, rows: Vec<String>) -> Result<usize, celerity::StoreError> {
///     for (step, _row) in rows.iter().enumerate() {
///         ctx.update_state("PROCESSING", serde_json::json!({"step": step + 1, "total": rows.len()})).await?;
///     }
///     Ok(rows.len())
/// }
/// ```
#[derive(Clone)]
pub struct TaskContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    envelope: Envelope,
    /// Set when the task runs on a worker.
    running: Option<Running>,
    store: Option<ResultStore>,
    cancel: tokio_util::sync::CancellationToken,
    retry: std::sync::Mutex<Option<RetryRequest>>,
    /// Set when the worker has ended the run (its final record is being written): a body that
    /// goes on (a blocking one, past its termination or hard limit) can no longer write a state.
    ended: std::sync::atomic::AtomicBool,
}

/// Where a running task came from: Celery's `request.delivery_info`, from
/// [`TaskContext::delivery_info`].
///
/// ```no_run
/// use celerity::TaskContext;
///
/// #[celerity::task]
/// async fn report(ctx: &TaskContext) -> String {
///     match ctx.delivery_info() {
///         Some(delivery) => format!(
///             "queue {} at priority {}, delivery {} (redelivered: {}), on {}",
///             delivery.queue(),
///             delivery.priority(),
///             delivery.delivered(),
///             delivery.redelivered(),
///             ctx.hostname().unwrap_or("?"),
///         ),
///         None => "called directly, not on a worker".to_owned(),
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryInfo {
    queue: QueueName,
    priority: Priority,
    delivered: u64,
    subject: String,
}

impl DeliveryInfo {
    /// The delivery of `message`, taken from `queue`'s consumers, for the `delivered`th time.
    pub(crate) fn new(
        message: &async_nats::jetstream::Message,
        queue: &QueueName,
        delivered: u64,
    ) -> Self {
        // The level is the subject's last token: a queue consumer's messages are all on
        // `<ns>.q.<queue>.<priority>`.
        let priority = message
            .subject
            .rsplit('.')
            .next()
            .and_then(|level| level.parse::<Priority>().ok());
        Self {
            queue: queue.clone(),
            priority: priority.unwrap_or_default(),
            delivered,
            subject: message.subject.to_string(),
        }
    }

    /// The queue the task was taken from (Celery's `delivery_info["routing_key"]`).
    pub fn queue(&self) -> &str {
        self.queue.as_str()
    }

    pub(crate) fn queue_name(&self) -> &QueueName {
        &self.queue
    }

    /// The priority level the task was taken from, 0 to 9, 9 the highest.
    pub fn priority(&self) -> u8 {
        self.priority.get()
    }

    /// How many times this message has been delivered, this delivery included (1 the first time;
    /// more after a worker died running it or a delivery was handed back). Retries are new
    /// messages and start again at 1.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// True when the message was delivered before (Celery's `delivery_info["redelivered"]`).
    pub fn redelivered(&self) -> bool {
        self.delivered > 1
    }

    /// The NATS subject the message was stored on: `<ns>.q.<queue>.<priority>`.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

/// Where a task runs: set for runs on a worker.
struct Running {
    delivery: DeliveryInfo,
    hostname: Arc<str>,
}

/// What a task asked for with [`TaskContext::retry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryRequest {
    /// The wait before the retry; `None` means the task's backoff or default delay.
    pub(crate) countdown: Option<std::time::Duration>,
    /// True when the task's error is the [`Retry`] itself (it has no error of its own), as
    /// `return Err(ctx.retry(None).into())` returns.
    pub(crate) bare: bool,
}

/// The error a task returns to be retried: made by [`TaskContext::retry`], it carries no
/// information of its own (the request is recorded on the context).
#[derive(Debug, Clone, thiserror::Error)]
#[error("retry requested")]
pub struct Retry;

impl std::fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskContext")
            .field("id", &self.inner.envelope.id)
            .field("task", &self.inner.envelope.task)
            .field("retries", &self.inner.envelope.retries)
            .field("delivery_info", &self.delivery_info())
            .field("hostname", &self.hostname())
            .finish()
    }
}

impl TaskContext {
    /// The context of a run on worker `hostname`, of a message delivered as `delivery` says.
    pub(crate) fn on_worker(
        envelope: Envelope,
        delivery: DeliveryInfo,
        hostname: &Arc<str>,
        store: ResultStore,
    ) -> Self {
        let running = Running {
            delivery,
            hostname: hostname.clone(),
        };
        Self::new(envelope, Some(running), Some(store))
    }

    fn new(envelope: Envelope, running: Option<Running>, store: Option<ResultStore>) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                envelope,
                running,
                store,
                cancel: tokio_util::sync::CancellationToken::new(),
                ended: std::sync::atomic::AtomicBool::new(false),
                retry: std::sync::Mutex::new(None),
            }),
        }
    }

    /// A context for calling a task body directly (tests, local runs): `update_state` is accepted
    /// and discarded.
    pub fn detached(id: TaskId, task: TaskName) -> Self {
        Self::new(Envelope::new(id, task), None, None)
    }

    /// Completes when the task should stop: its soft time limit passed. Select on it in long loops
    /// to clean up and return early, before the hard limit aborts the task.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled().await;
    }

    /// True once the task should stop (see [`TaskContext::cancelled`]); for blocking bodies.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Asks for this task to run again after `countdown` (or its backoff when `None`), as Celery's
    /// `raise self.retry(countdown=...)`: return the error this gives (`return Err(ctx.retry(None).into())`).
    /// The retry is recorded here, so any error type may carry it. After `max_retries` retries the
    /// task fails instead, with the error it returned.
    pub fn retry(&self, countdown: Option<std::time::Duration>) -> Retry {
        if let Ok(mut request) = self.inner.retry.lock() {
            *request = Some(RetryRequest {
                countdown,
                bare: false,
            });
        }
        Retry
    }

    /// Asks for a retry with the task's backoff, unless the task asked for one itself.
    pub(crate) fn request_autoretry(&self) {
        if let Ok(mut request) = self.inner.retry.lock() {
            request.get_or_insert(RetryRequest {
                countdown: None,
                bare: false,
            });
        }
    }

    /// Marks the retry the task asked for as bare: its error is the [`Retry`] itself.
    pub(crate) fn note_bare_retry(&self) {
        if let Ok(mut request) = self.inner.retry.lock()
            && let Some(request) = request.as_mut()
        {
            request.bare = true;
        }
    }

    /// The retry the task asked for, if any.
    pub(crate) fn take_retry_request(&self) -> Option<RetryRequest> {
        self.inner
            .retry
            .lock()
            .ok()
            .and_then(|mut request| request.take())
    }

    /// Marks the run as ended: later state updates are refused ([`StoreError::RunEnded`]).
    pub(crate) fn end(&self) {
        self.inner
            .ended
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub(crate) fn cancel_token(&self) -> tokio_util::sync::CancellationToken {
        self.inner.cancel.clone()
    }

    /// The task id.
    pub fn id(&self) -> &TaskId {
        &self.inner.envelope.id
    }

    /// The registered task name.
    pub fn task_name(&self) -> &TaskName {
        &self.inner.envelope.task
    }

    /// How many times the task has been retried.
    pub fn retries(&self) -> u32 {
        self.inner.envelope.retries
    }

    /// How many times this message has been delivered (more than 1 after a worker crash); 1 for a
    /// context made with [`TaskContext::detached`]. See [`TaskContext::delivery_info`].
    pub fn delivered(&self) -> u64 {
        self.delivery_info().map_or(1, DeliveryInfo::delivered)
    }

    /// Where the task's message came from (queue, priority, delivery count, subject), as Celery's
    /// `request.delivery_info`; `None` for a context made with [`TaskContext::detached`].
    pub fn delivery_info(&self) -> Option<&DeliveryInfo> {
        self.inner.running.as_ref().map(|running| &running.delivery)
    }

    /// The hostname of the worker running the task (`--hostname`), as Celery's
    /// `request.hostname`; `None` for a context made with [`TaskContext::detached`].
    pub fn hostname(&self) -> Option<&str> {
        self.inner
            .running
            .as_ref()
            .map(|running| &*running.hostname)
    }

    /// The whole envelope the task was sent with.
    pub fn envelope(&self) -> &Envelope {
        &self.inner.envelope
    }

    /// The user headers the producer set.
    pub fn headers(&self) -> &[(String, String)] {
        &self.inner.envelope.extra
    }

    /// The value of user header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Records a custom state with metadata, readable from any process with
    /// `AsyncResult::state()` and `info()` while the task runs.
    ///
    /// # Errors
    /// [`StoreError`] when the state is a reserved one or the record cannot be written.
    ///
    /// # Cancel safety
    /// Dropping the future may or may not leave the record written.
    pub async fn update_state(&self, state: &str, meta: Value) -> Result<(), StoreError> {
        let state = TaskState::parse(state);
        if !matches!(
            state,
            TaskState::Custom(_) | TaskState::Started | TaskState::Received
        ) {
            return Err(StoreError::ReservedState(state.to_string()));
        }
        if self.inner.ended.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StoreError::RunEnded {
                task_id: self.inner.envelope.id.clone(),
            });
        }
        match &self.inner.store {
            None => Ok(()),
            Some(store) => {
                store
                    .write_progress(&self.inner.envelope, state, meta)
                    .await
            }
        }
    }

    /// [`TaskContext::update_state`] for blocking task bodies (plain `fn` tasks).
    ///
    /// # Errors
    /// As `update_state`.
    ///
    /// # Panics
    /// When called from async code instead of a blocking task body.
    pub fn update_state_blocking(&self, state: &str, meta: Value) -> Result<(), StoreError> {
        tokio::runtime::Handle::current().block_on(self.update_state(state, meta))
    }
}
