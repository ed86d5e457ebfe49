//! Signals: hooks an app registers to run at moments of a task's or a worker's life, as Celery's
//! `celery.signals` (`task_prerun`, `task_failure`, `worker_ready`, ...).
//!
//! A hook is a closure that takes the signal's record and returns `()` or a `Result`; it runs on
//! the thread where the moment happens (a worker's runtime thread for task signals, the
//! producer's task for the publish signals), so it should be quick: a hook that has I/O to do
//! spawns it (`tokio::spawn` works there). `worker_shutdown` is the exception: it runs once the
//! worker has stopped, outside its runtime, and may block. A hook that panics or returns an error is logged, and the task or the publish goes
//! on as if it had not been there.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! use celerity::signals::Signals;
//!
//! let started = Arc::new(AtomicU64::new(0));
//! let counter = started.clone();
//! let signals = Signals::new()
//!     .task_prerun(move |_signal| {
//!         counter.fetch_add(1, Ordering::Relaxed);
//!     })
//!     .task_failure(|signal| {
//!         if signal.error.kind == "panic" {
//!             return Err(format!("task {} panicked", signal.context.id()));
//!         }
//!         Ok(())
//!     });
//! let app = celerity::App::builder().signals(signals).build()?;
//! # let _ = app;
//! # Ok::<(), celerity::ConfigError>(())
//! ```

use std::sync::Arc;
use std::time::Duration;

use celerity_proto::{
    DeadLetterReason, Envelope, ErrorRecord, Priority, QueueName, TaskId, TaskName, TaskState,
    WorkerEvent,
};
use serde_json::Value;

use crate::task::TaskContext;

/// What a hook returns: `()`, or a `Result` whose error is logged.
pub trait HookOutcome {
    /// The error to log, if any.
    fn into_error(self) -> Option<String>;
}

impl HookOutcome for () {
    fn into_error(self) -> Option<String> {
        None
    }
}

impl<E: std::fmt::Display> HookOutcome for Result<(), E> {
    fn into_error(self) -> Option<String> {
        self.err().map(|error| error.to_string())
    }
}

/// A task about to be published, or just published (`before_task_publish`,
/// `after_task_publish`); sent by producers and by workers (the next steps of a canvas, retries).
#[derive(Debug)]
#[non_exhaustive]
pub struct TaskPublish<'a> {
    /// The task message's envelope (id, name, canvas ids, headers).
    pub envelope: &'a Envelope,
    /// Its queue.
    pub queue: &'a QueueName,
    /// Its priority.
    pub priority: Priority,
}

/// A task whose body is about to run (`task_prerun`).
#[derive(Debug)]
#[non_exhaustive]
pub struct TaskPrerun<'a> {
    /// The run's context: id, name, retries, headers, delivery.
    pub context: &'a TaskContext,
}

/// A task whose body has returned and whose record is stored (`task_postrun`), whatever the
/// state: after [`TaskSuccess`], [`TaskFailure`] or [`TaskRetry`].
#[derive(Debug)]
#[non_exhaustive]
pub struct TaskPostrun<'a> {
    /// The run's context.
    pub context: &'a TaskContext,
    /// The state the run ended in (SUCCESS, FAILURE, RETRY, or REVOKED when terminated).
    pub state: &'a TaskState,
    /// What the body returned, on SUCCESS.
    pub result: Option<&'a Value>,
    /// How long the body ran.
    pub runtime: Duration,
}

/// A task that succeeded (`task_success`).
#[derive(Debug)]
#[non_exhaustive]
pub struct TaskSuccess<'a> {
    /// The run's context.
    pub context: &'a TaskContext,
    /// What the body returned.
    pub result: &'a Value,
    /// How long the body ran.
    pub runtime: Duration,
}

/// A task that failed with no retry left (`task_failure`).
#[derive(Debug)]
#[non_exhaustive]
pub struct TaskFailure<'a> {
    /// The run's context.
    pub context: &'a TaskContext,
    /// The error, as its record stores it.
    pub error: &'a ErrorRecord,
    /// How long the body ran.
    pub runtime: Duration,
}

/// A task sent again to retry (`task_retry`).
#[derive(Debug)]
#[non_exhaustive]
pub struct TaskRetry<'a> {
    /// The run's context.
    pub context: &'a TaskContext,
    /// Why it retries.
    pub error: &'a ErrorRecord,
    /// The retry's number (1 for the first retry).
    pub retries: u32,
    /// When the retry runs, from now.
    pub delay: Duration,
}

/// A task that was revoked, terminated or expired (`task_revoked`).
#[derive(Debug)]
#[non_exhaustive]
pub struct TaskRevoked<'a> {
    /// The task message's envelope.
    pub envelope: &'a Envelope,
    /// `revoked` (it never ran), `terminated` (aborted while it ran) or `expired`.
    pub reason: &'a str,
}

/// A task message that was dead-lettered (`task_rejected`).
#[derive(Debug)]
#[non_exhaustive]
pub struct TaskRejected<'a> {
    /// The task id, when the message's headers tell it.
    pub task_id: Option<&'a TaskId>,
    /// The task name, when the message's headers tell it.
    pub task: Option<&'a TaskName>,
    /// The queue it came from.
    pub queue: &'a QueueName,
    /// Why it was dead-lettered.
    pub reason: DeadLetterReason,
    /// What the dead letter's error says.
    pub error: &'a str,
}

/// A worker that has started consuming (`worker_ready`).
#[derive(Debug)]
#[non_exhaustive]
pub struct WorkerReady<'a> {
    /// The worker's hostname.
    pub hostname: &'a str,
    /// The queues it consumes.
    pub queues: &'a [QueueName],
    /// Its execution slots.
    pub concurrency: usize,
}

/// A worker that has stopped (`worker_shutdown`): it consumes no more, its tasks are done or
/// handed back, and its last events are sent. Its hooks run on the thread that ran the worker,
/// outside the worker's runtime, so a hook may block (to flush a metrics client, say).
#[derive(Debug)]
#[non_exhaustive]
pub struct WorkerShutdown<'a> {
    /// The worker's hostname.
    pub hostname: &'a str,
}

/// A worker's heartbeat (`worker_heartbeat`), every 2 seconds, with what its heartbeat event
/// carries (sent whether or not events are on).
#[derive(Debug)]
#[non_exhaustive]
pub struct WorkerHeartbeat<'a> {
    /// The heartbeat: active and reserved tasks, processed count, load, queues.
    pub heartbeat: &'a WorkerEvent,
}

macro_rules! signals {
    ($($(#[$doc:meta])* $name:ident, $fire:ident: $record:ident;)*) => {
        #[derive(Clone, Default)]
        struct Hooks {
            $($name: Vec<Arc<dyn for<'a> Fn(&$record<'a>) -> Option<String> + Send + Sync>>,)*
        }

        impl Signals {
            $(
                $(#[$doc])*
                pub fn $name<R: HookOutcome>(
                    mut self,
                    hook: impl for<'a> Fn(&$record<'a>) -> R + Send + Sync + 'static,
                ) -> Self {
                    let hook = move |record: &$record<'_>| hook(record).into_error();
                    Arc::make_mut(&mut self.hooks).$name.push(Arc::new(hook));
                    self
                }

                pub(crate) fn $fire(&self, record: &$record<'_>) {
                    for hook in &self.hooks.$name {
                        run_hook(stringify!($name), || hook(record));
                    }
                }
            )*
        }

        impl std::fmt::Debug for Signals {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut out = f.debug_struct("Signals");
                $(out.field(stringify!($name), &self.hooks.$name.len());)*
                out.finish()
            }
        }
    };
}

/// Runs one hook of the signal `name`; a panic or an error is logged and goes no further.
fn run_hook(name: &str, hook: impl FnOnce() -> Option<String>) {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook)) {
        Ok(None) => {}
        Ok(Some(error)) => tracing::warn!(signal = name, error = %error, "a signal hook failed"),
        Err(panic) => {
            let message = crate::error_text::panic_message(&*panic);
            tracing::error!(signal = name, panic = %message, "a signal hook panicked");
        }
    }
}

/// The hooks of an app, registered with [`crate::AppBuilder::signals`].
#[derive(Clone, Default)]
pub struct Signals {
    hooks: Arc<Hooks>,
}

impl Signals {
    /// No hooks.
    pub fn new() -> Self {
        Self::default()
    }
}

signals! {
    /// Runs `hook` before each task message is published.
    before_task_publish, fire_before_task_publish: TaskPublish;
    /// Runs `hook` after each task message is published (stored by its queue stream).
    after_task_publish, fire_after_task_publish: TaskPublish;
    /// Runs `hook` before each task body.
    task_prerun, fire_task_prerun: TaskPrerun;
    /// Runs `hook` after each task body, once its record is stored.
    task_postrun, fire_task_postrun: TaskPostrun;
    /// Runs `hook` when a task succeeds.
    task_success, fire_task_success: TaskSuccess;
    /// Runs `hook` when a task fails with no retry left.
    task_failure, fire_task_failure: TaskFailure;
    /// Runs `hook` when a task is sent again to retry.
    task_retry, fire_task_retry: TaskRetry;
    /// Runs `hook` when a task is revoked, terminated or expires.
    task_revoked, fire_task_revoked: TaskRevoked;
    /// Runs `hook` when a task message is dead-lettered.
    task_rejected, fire_task_rejected: TaskRejected;
    /// Runs `hook` when a worker starts consuming.
    worker_ready, fire_worker_ready: WorkerReady;
    /// Runs `hook` when a worker stops.
    worker_shutdown, fire_worker_shutdown: WorkerShutdown;
    /// Runs `hook` at each heartbeat of a worker.
    worker_heartbeat, fire_worker_heartbeat: WorkerHeartbeat;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn every_hook_runs_in_order_and_a_panic_or_an_error_stops_none_of_them() {
        let calls = Arc::new(AtomicUsize::new(0));
        let (first, second, third) = (calls.clone(), calls.clone(), calls.clone());
        let signals = Signals::new()
            .worker_ready(move |signal| {
                first.fetch_add(1, Ordering::SeqCst);
                assert_eq!(signal.hostname, "a hook that panics");
            })
            .worker_ready(move |_| {
                second.fetch_add(10, Ordering::SeqCst);
                Err("a hook that fails")
            })
            .worker_ready(move |signal| {
                assert_eq!(signal.hostname, "w1");
                third.fetch_add(100, Ordering::SeqCst);
            });
        let queues = [QueueName::default()];
        let ready = WorkerReady {
            hostname: "w1",
            queues: &queues,
            concurrency: 2,
        };
        signals.fire_worker_ready(&ready);
        assert_eq!(calls.load(Ordering::SeqCst), 111);
        // Other signals have no hooks, and cloning shares the hooks.
        signals.clone().fire_worker_ready(&ready);
        assert_eq!(calls.load(Ordering::SeqCst), 222);
        signals.fire_worker_shutdown(&WorkerShutdown { hostname: "w1" });
        assert!(format!("{signals:?}").contains("worker_ready: 3"));
    }

    #[test]
    fn a_hook_outcome_is_an_error_only_when_it_says_so() {
        assert_eq!(().into_error(), None);
        assert_eq!(Ok::<(), String>(()).into_error(), None);
        assert_eq!(Err::<(), _>("no").into_error(), Some("no".to_owned()));
    }
}
