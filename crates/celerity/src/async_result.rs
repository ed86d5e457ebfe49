//! [`AsyncResult`]: a typed handle on one task's result, readable from any process.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use celerity_proto::{ErrorRecord, ResultRecord, TaskId, TaskState};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::clock::now_ms;
use crate::control::{Control, ControlError};
use crate::nats::permissions::{Watch, key_subject};
use crate::result_store::{ResultStore, StoreError};
use crate::task::inside_task_body;
use crate::waiters::{Registered, Replies, Tracking};

/// Why a result could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResultError {
    /// No final state within the deadline.
    #[error("task {task_id} did not finish within {waited:?}")]
    Timeout {
        /// The task.
        task_id: TaskId,
        /// How long we waited.
        waited: Duration,
    },
    /// The task failed.
    #[error("task {task_id} failed: {error}")]
    Failed {
        /// The task.
        task_id: TaskId,
        /// Its error.
        error: ErrorRecord,
    },
    /// The task was revoked.
    #[error("task {task_id} was revoked")]
    Revoked {
        /// The task.
        task_id: TaskId,
        /// The details stored with the state.
        meta: Option<Value>,
    },
    /// Waiting on a result from inside a task body, which can deadlock the workers (Celery's
    /// forbidden pattern); call `allow_wait_in_task()` on the handle to opt out knowingly.
    #[error(
        "task {task_id}: waiting on a result inside a task body can deadlock the workers; chain the tasks instead, or call allow_wait_in_task() on the handle"
    )]
    WaitInTask {
        /// The task waited on.
        task_id: TaskId,
    },
    /// The result does not decode as the expected type.
    #[error("the result of task {task_id} does not decode as the expected type")]
    Decode {
        /// The task.
        task_id: TaskId,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The revocation could not be written.
    #[error("cannot revoke task {task_id}")]
    Revoke {
        /// The task (or canvas root) being revoked.
        task_id: TaskId,
        /// Why.
        #[source]
        source: RevokeError,
    },
    /// The record could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A control request (terminate) failed.
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// Why a revocation could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevokeError {
    /// The revocation record could not be encoded.
    #[error("cannot encode the revocation record")]
    Encode(#[source] serde_json::Error),
    /// The revocations bucket refused the write.
    #[error("cannot write to the revocations bucket")]
    Put(#[source] async_nats::jetstream::kv::PutError),
    /// The server refused the write for the user's permissions, at once instead of after the
    /// write's timeout: revoking needs the operator role's permissions.
    #[error(
        "the NATS server refused this user's publish to {subject}: revoking needs the operator role's permissions (docs/permissions.conf, docs/security.md)"
    )]
    PermissionDenied {
        /// The subject refused.
        subject: String,
    },
}

/// How a handle waits for its task's final record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitVia {
    /// Through the reply listener of the client that sent the task, which workers notify.
    Replies,
    /// Through a KV watch of the task's key: its notifications go to another process, or none.
    Watch,
}

/// What result handles read, wait and revoke through: the results and revocations buckets, the
/// reply listener's waits and the control plane. A client makes one and shares it with every
/// handle, so a handle's waits go on after its client is dropped.
pub(crate) struct ResultBackend {
    pub(crate) store: ResultStore,
    pub(crate) revoked: async_nats::jetstream::kv::Store,
    pub(crate) replies: Replies,
    pub(crate) control: Control,
}

impl ResultBackend {
    /// Revokes `id` (a task, or a canvas's root): workers do not run a task whose id or root is
    /// revoked (it ends REVOKED with reason `revoked`), and do not send what follows a task of a
    /// revoked canvas. Lasts as long as results do.
    ///
    /// # Errors
    /// [`ResultError::Revoke`] when the revocation cannot be written.
    pub(crate) async fn revoke(&self, id: &TaskId) -> Result<(), ResultError> {
        let failed = |source| ResultError::Revoke {
            task_id: id.clone(),
            source,
        };
        let record = celerity_proto::RevocationRecord::new(now_ms());
        let bytes =
            serde_json::to_vec(&record).map_err(|error| failed(RevokeError::Encode(error)))?;
        let key = key_subject(&self.revoked, id.as_str());
        Watch::start(self.store.connection())
            .guard(self.revoked.put(id.as_str(), bytes.into()), |refused| {
                refused.is_publish_to(&key)
            })
            .await
            .map_err(|refused| {
                failed(RevokeError::PermissionDenied {
                    subject: refused.subject,
                })
            })?
            .map(drop)
            .map_err(|error| failed(RevokeError::Put(error)))
    }
}

/// A handle on the result of one task, typed by what the task returns.
///
/// Every method reads the results bucket; [`AsyncResult::get`] waits without polling, through the
/// client's reply subject for tasks this client sent (a task sent with `apply`, `delay` or
/// `send_task` keeps its notification, so a wait that starts after it arrived reads no bucket)
/// and through a KV watch otherwise.
///
/// ```no_run
/// # async fn demo(client: celerity::Client) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// let result = client.async_result::<i64>("0190a5b2-7c1e-7f00-8000-000000000001")?;
/// println!("state: {}", result.state().await?);
/// let value: i64 = result.get(Duration::from_secs(5)).await?;
/// # let _ = value; Ok(()) }
/// ```
pub struct AsyncResult<T> {
    id: TaskId,
    backend: Arc<ResultBackend>,
    wait_via: WaitVia,
    allow_wait_in_task: bool,
    parent: Option<Box<AsyncResult<Value>>>,
    root: Option<TaskId>,
    /// Set when this client registered the id before sending it.
    tracking: Option<Arc<Tracking>>,
    output: PhantomData<fn() -> T>,
}

impl<T> Clone for AsyncResult<T> {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            backend: self.backend.clone(),
            wait_via: self.wait_via,
            allow_wait_in_task: self.allow_wait_in_task,
            parent: self.parent.clone(),
            root: self.root.clone(),
            tracking: self.tracking.clone(),
            output: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<T> AsyncResult<T> {
    pub(crate) fn new(id: TaskId, backend: Arc<ResultBackend>, wait_via: WaitVia) -> Self {
        Self {
            id,
            backend,
            wait_via,
            allow_wait_in_task: false,
            parent: None,
            root: None,
            tracking: None,
            output: PhantomData,
        }
    }

    /// A handle on a canvas step sent by this client, linked to the step before it.
    pub(crate) fn with_parent(
        id: TaskId,
        backend: Arc<ResultBackend>,
        parent: Option<AsyncResult<Value>>,
    ) -> Self {
        Self {
            parent: parent.map(Box::new),
            ..Self::new(id, backend, WaitVia::Replies)
        }
    }

    /// The handle of a task this client tracked before sending it.
    pub(crate) fn with_tracking(mut self, tracking: Option<Arc<Tracking>>) -> Self {
        self.tracking = tracking;
        self
    }

    /// The same handle, typed by `U`.
    pub(crate) fn retype<U>(self) -> AsyncResult<U> {
        AsyncResult {
            id: self.id,
            backend: self.backend,
            wait_via: self.wait_via,
            allow_wait_in_task: self.allow_wait_in_task,
            parent: self.parent,
            root: self.root,
            tracking: self.tracking,
            output: PhantomData,
        }
    }

    /// Lets [`AsyncResult::wait`] and [`AsyncResult::get`] run inside a task body, where they
    /// refuse by default: the waiting task holds a worker slot that the awaited task may need.
    /// Use it only when the awaited task cannot need this worker's slots (another queue, or a
    /// pool with free slots guaranteed).
    pub fn allow_wait_in_task(mut self) -> Self {
        self.allow_wait_in_task = true;
        self
    }

    /// Marks this handle as the result of the canvas whose root is `root`.
    pub(crate) fn with_root(mut self, root: Option<TaskId>) -> Self {
        self.root = root;
        self
    }

    /// Revokes this task and, for a canvas's result, the whole canvas: tasks not started yet never
    /// run and end REVOKED (reason `revoked`), and nothing after a running task is sent. A task
    /// already running finishes; [`AsyncResult::terminate`] aborts it.
    ///
    /// # Errors
    /// [`ResultError::Revoke`] when the revocation cannot be written.
    ///
    /// # Cancel safety
    /// Not cancel-safe: a dropped call may have revoked the task but not the canvas's root.
    /// Revoking again is harmless.
    pub async fn revoke(&self) -> Result<(), ResultError> {
        self.backend.revoke(&self.id).await?;
        if let Some(root) = &self.root {
            self.backend.revoke(root).await?;
        }
        Ok(())
    }

    /// Revokes like [`AsyncResult::revoke`], and aborts this task where it runs (Celery's
    /// `revoke(terminate=True)`): it ends REVOKED with reason `terminated`. Asks every worker,
    /// gathering answers for `timeout`; returns whether one of them was running it.
    ///
    /// # Errors
    /// [`ResultError::Revoke`] or [`ResultError::Control`] when the revocation cannot be sent.
    ///
    /// # Cancel safety
    /// Not cancel-safe: a dropped call may have revoked the task without asking the workers to
    /// abort it. Calling it again is harmless.
    pub async fn terminate(&self, timeout: Duration) -> Result<bool, ResultError> {
        self.revoke().await?;
        let replies = self
            .backend
            .control
            .revoke(
                self.id.as_str(),
                crate::RevokeMode::Terminate,
                None,
                timeout,
            )
            .await?;
        Ok(replies.iter().any(|reply| {
            reply
                .result_as::<celerity_proto::RevokeResult>()
                .is_some_and(|result| result.is_ok_and(|result| result.terminated))
        }))
    }

    /// Revokes `id` through this handle's client.
    pub(crate) async fn revoke_id(&self, id: &TaskId) -> Result<(), ResultError> {
        self.backend.revoke(id).await
    }

    /// The result of the step before this one in its chain, as Celery's `result.parent`.
    pub fn parent(&self) -> Option<&AsyncResult<Value>> {
        self.parent.as_deref()
    }

    /// The task id.
    pub fn id(&self) -> &TaskId {
        &self.id
    }

    /// The stored record, or `None` when there is none.
    ///
    /// # Errors
    /// [`ResultError::Store`] when the bucket cannot be read.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn record(&self) -> Result<Option<ResultRecord>, ResultError> {
        Ok(self.backend.store.get(&self.id).await?)
    }

    /// The task's state. [`TaskState::Unknown`] means no record exists: the id was never sent
    /// (Celery would say PENDING), or its record expired or was forgotten.
    ///
    /// # Errors
    /// [`ResultError::Store`] when the bucket cannot be read.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn state(&self) -> Result<TaskState, ResultError> {
        Ok(self
            .record()
            .await?
            .map_or(TaskState::Unknown, |record| record.state))
    }

    /// What the current state carries, as Celery's `AsyncResult.info`: on SUCCESS the result (as
    /// JSON; [`AsyncResult::get`] decodes it as `T`), on FAILURE the error record
    /// (`{"type", "message", "causes"}`), and in every other state its metadata: what the task
    /// passed to `update_state` for a custom state, `{"retries", "eta_ms"}` on RETRY, the reason on
    /// REVOKED. `None` when there is no record, or the state carries nothing.
    ///
    /// ```no_run
    /// # async fn demo(client: celerity::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let result = client.async_result::<serde_json::Value>("0190a5b2-7c1e-7f00-8000-000000000001")?;
    /// if result.state().await? == celerity::TaskState::Custom("PROCESSING".into()) {
    ///     if let Some(info) = result.info().await? {
    ///         println!("step {}/{}", info["step"], info["total"]);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ResultError::Store`] when the bucket cannot be read.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn info(&self) -> Result<Option<Value>, ResultError> {
        Ok(self.record().await?.and_then(record_info))
    }

    /// The task's records as they are written, starting with the current one (if any) and ending
    /// after the first final one (SUCCESS, FAILURE or REVOKED): PENDING, STARTED, custom states
    /// from `update_state`, RETRY, and so on, one item per write, from any process. Built on a KV
    /// watch of the task's one key: nothing polls.
    ///
    /// The bucket keeps one record per task, so a state replaced before the watch delivered it
    /// (two writes in quick succession) is skipped; the final record is always delivered.
    /// The stream does not end while the task has no final state (nor when its record expires or
    /// is forgotten): bound the wait with a timeout. A read error is the last item.
    /// Iterate with `StreamExt::next` (re-exported as [`celerity::StreamExt`](crate::StreamExt)).
    ///
    /// ```no_run
    /// # async fn demo(client: celerity::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use celerity::StreamExt;
    /// use std::time::Duration;
    ///
    /// let result = client.async_result::<u32>("0190a5b2-7c1e-7f00-8000-000000000001")?;
    /// let mut states = std::pin::pin!(result.states());
    /// while let Some(record) = tokio::time::timeout(Duration::from_secs(60), states.next()).await? {
    ///     let record = record?;
    ///     println!("{}: {:?}", record.state, record.meta);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the stream drops the watch.
    pub fn states(
        &self,
    ) -> impl futures_util::Stream<Item = Result<ResultRecord, ResultError>> + Send + use<T> {
        let store = self.backend.store.clone();
        let id = self.id.clone();
        let records = Box::pin(futures_util::TryFutureExt::try_flatten_stream(async move {
            store.watch(&id).await
        }));
        // The watch itself never ends: the stream does, right after the final record or an error.
        futures_util::stream::unfold(Some(records), |records| async move {
            let mut records = records?;
            let record = records.next().await?;
            let ended = record
                .as_ref()
                .map_or(true, |record| record.state.is_ready());
            Some((
                record.map_err(ResultError::from),
                (!ended).then_some(records),
            ))
        })
    }

    /// True once the task has a final state (SUCCESS, FAILURE or REVOKED).
    ///
    /// # Errors
    /// [`ResultError::Store`] when the bucket cannot be read.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn ready(&self) -> Result<bool, ResultError> {
        Ok(self.state().await?.is_ready())
    }

    /// True if the task succeeded.
    ///
    /// # Errors
    /// [`ResultError::Store`] when the bucket cannot be read.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn successful(&self) -> Result<bool, ResultError> {
        Ok(self.state().await? == TaskState::Success)
    }

    /// True if the task failed.
    ///
    /// # Errors
    /// [`ResultError::Store`] when the bucket cannot be read.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn failed(&self) -> Result<bool, ResultError> {
        Ok(self.state().await? == TaskState::Failure)
    }

    /// Deletes the stored record and its history; the state becomes UNKNOWN.
    ///
    /// # Errors
    /// [`ResultError::Store`] when the bucket cannot be written.
    ///
    /// # Cancel safety
    /// Cancel-safe: a dropped call has purged the record or not; forgetting again is harmless.
    pub async fn forget(&self) -> Result<(), ResultError> {
        self.backend.store.purge(&self.id).await?;
        if let Some(tracking) = &self.tracking {
            tracking.clear();
        }
        Ok(())
    }

    /// Waits up to `timeout` for the final record, whatever the state.
    ///
    /// # Errors
    /// [`ResultError::Timeout`] when no final state arrives in time, [`ResultError::Store`] when the
    /// bucket cannot be read, [`ResultError::WaitInTask`] inside a task body (see
    /// [`AsyncResult::allow_wait_in_task`]).
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn wait(&self, timeout: Duration) -> Result<ResultRecord, ResultError> {
        if !self.allow_wait_in_task && inside_task_body() {
            return Err(ResultError::WaitInTask {
                task_id: self.id.clone(),
            });
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || ResultError::Timeout {
            task_id: self.id.clone(),
            waited: timeout,
        };
        if self.wait_via == WaitVia::Replies
            && let Some(record) = self.wait_for_notification(deadline, timed_out).await?
        {
            return Ok(record);
        }
        // Boxed: the watch would otherwise make every wait's future as large as its own.
        let watch = Box::pin(
            self.backend
                .store
                .watch_until(&self.id, |record| record.state.is_ready()),
        );
        tokio::time::timeout_at(deadline, watch)
            .await
            .map_err(|_| timed_out())?
            .map_err(Into::into)
    }

    /// Waits until `deadline` for the final record through the client's reply listener; `None`
    /// when the listener hears nothing (the server refused its subscription), so the bucket must
    /// be watched instead.
    async fn wait_for_notification(
        &self,
        deadline: tokio::time::Instant,
        timed_out: impl Fn() -> ResultError,
    ) -> Result<Option<ResultRecord>, ResultError> {
        let replies = &self.backend.replies;
        // INVARIANT: the waiter is registered before the bucket is read, so a notification that
        // arrives in between is not missed. Workers notify every final record they store; a
        // tracked id keeps its notification from its send on, so its wait reads no bucket
        // (waiting on many results would otherwise read the bucket once for each). An untracked
        // id (a canvas step) is read once first: its notification may have come before this wait.
        let mut waiter = match replies.register_waiter(&self.id) {
            Registered::Arrived(record) => return Ok(Some(*record)),
            Registered::Waiting(_) if replies.is_deaf() => return Ok(None),
            Registered::Waiting(waiter) => waiter,
        };
        // Boxed: the reads are rare, and would otherwise make every wait's future as large as
        // their own.
        if self.tracking.is_none()
            && let Some(record) = Box::pin(self.record()).await?
            && record.state.is_ready()
        {
            return Ok(Some(record));
        }
        match tokio::time::timeout_at(deadline, waiter.notification()).await {
            Ok(Ok(record)) => return Ok(Some(record)),
            // Ended early: the listener will hear nothing, its subscription was refused.
            Ok(Err(_)) if replies.is_deaf() => return Ok(None),
            Ok(Err(_)) | Err(_) => {}
        }
        // A notification can be lost (a worker dying between its put and its publish is notified
        // again only when its message is redelivered, an AckWait later); the bucket is the truth,
        // so read it once more before giving up.
        match Box::pin(self.record()).await? {
            Some(record) if record.state.is_ready() => Ok(Some(record)),
            _ => Err(timed_out()),
        }
    }
}

/// What a record's state carries; see [`AsyncResult::info`].
fn record_info(record: ResultRecord) -> Option<Value> {
    match record.state {
        TaskState::Success => record.result,
        TaskState::Failure => record
            .error
            .and_then(|error| serde_json::to_value(error).ok())
            .or(record.meta),
        _ => record.meta,
    }
}

impl<T: DeserializeOwned> AsyncResult<T> {
    /// Waits up to `timeout` for the task to finish and returns its value.
    ///
    /// # Errors
    /// [`ResultError::Failed`] with the task's error, [`ResultError::Revoked`],
    /// [`ResultError::Timeout`], or [`ResultError::Decode`] when the value is not a `T`.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn get(&self, timeout: Duration) -> Result<T, ResultError> {
        let record = self.wait(timeout).await?;
        match record.state {
            TaskState::Success => serde_json::from_value(record.result.unwrap_or(Value::Null))
                .map_err(|source| ResultError::Decode {
                    task_id: self.id.clone(),
                    source,
                }),
            TaskState::Revoked => Err(ResultError::Revoked {
                task_id: self.id.clone(),
                meta: record.meta,
            }),
            _ => Err(ResultError::Failed {
                task_id: self.id.clone(),
                error: record.error.unwrap_or_else(|| {
                    ErrorRecord::new(
                        "celerity::UnknownError",
                        "the task failed without an error record",
                    )
                }),
            }),
        }
    }
}
