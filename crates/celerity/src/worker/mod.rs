//! Workers: a process that joins queues and runs their tasks.
//!
//! One actix `System` holds the actors (a root [`root::Worker`] and one [`queue::QueueActor`] per
//! queue); one multi-thread tokio runtime owns the NATS connection and runs task bodies on every
//! core. [`run`] blocks and handles SIGTERM/SIGINT; [`spawn`] starts a worker on its own thread
//! and returns a [`WorkerHandle`].
//!
//! This file holds the entry points and what every task run shares ([`WorkerShared`]); the
//! configuration is `config`, provisioning `setup`, the start-up steps `start`, the settings watch
//! `watches`, and shutdown requests and signals `shutdown`.

mod beat;
mod chord;
mod config;
mod continuation;
mod control;
mod dead_letter;
mod execute;
mod handbacks;
mod limits;
mod nats_io;
mod outcome;
mod queue;
mod records;
mod revocations;
mod root;
mod scheduler;
mod settings;
mod setup;
mod shutdown;
mod start;
mod watches;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use async_nats::jetstream;
use celerity_proto::Layout;
use tokio::sync::Semaphore;

use crate::app::App;
use crate::dispatch::Dispatcher;
use crate::nats::{ConnectError, NatsConfig};
use crate::result_store::ResultStore;
use crate::worker::revocations::Revocations;
use crate::worker::start::{Signals, run_on_this_thread};

pub use config::{DEFAULT_MAX_DELIVERIES, MAX_ACK_WAIT, WorkerConfig};
pub use shutdown::Shutdown;

/// A worker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A queue name is invalid.
    #[error(transparent)]
    InvalidQueue(#[from] celerity_proto::InvalidName),
    /// NATS could not be reached (only for errors that retrying cannot fix).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The runtime or actor system could not start.
    #[error("cannot start the worker runtime")]
    Runtime(#[source] std::io::Error),
    /// The hostname cannot be used in headers and logs.
    #[error("invalid worker hostname {0:?}: use 1 to 255 printable characters without line breaks")]
    InvalidHostname(String),
    /// The worker thread panicked.
    #[error("the worker thread panicked")]
    Panicked,
    /// The periodic entries are invalid (two with one name).
    #[error(transparent)]
    Schedule(#[from] crate::beat::ScheduleError),
}

/// A random number in `0.0..=1.0`, for retry jitter and weighted priorities (from the standard
/// library's random hash keys; no cryptographic quality is needed).
pub(crate) fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(crate::clock::now_ms());
    hasher.finish() as f64 / u64::MAX as f64
}

/// What every task run of one worker shares.
pub(crate) struct WorkerShared {
    pub(crate) app: App,
    pub(crate) hostname: Arc<str>,
    pub(crate) nats: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) layout: Layout,
    pub(crate) store: ResultStore,
    /// Sends what follows tasks (canvas continuations and chord bodies).
    pub(crate) dispatcher: Dispatcher,
    /// Revoked task and canvas ids, kept from the revoked bucket by a watch.
    pub(crate) revoked: Revocations,
    /// The revoked bucket, written by `revoke` control commands.
    pub(crate) revoked_bucket: async_nats::jetstream::kv::Store,
    /// Counts the messages this worker hands back without running them.
    pub(crate) handbacks: handbacks::Handbacks,
    pub(crate) runtime: tokio::runtime::Handle,
    /// Fetch credit: concurrency × prefetch multiplier.
    pub(crate) credit: Arc<Semaphore>,
    /// Execution slots: concurrency.
    pub(crate) slots: Semaphore,
    pub(crate) concurrency: usize,
    /// The shortest AckWait of the consumers this worker uses.
    pub(crate) ack_wait: Duration,
    /// Deliveries of one message, at most, for tasks that set no `max_deliveries` of their own.
    pub(crate) max_deliveries: u32,
    pub(crate) recheck_interval: Duration,
    /// The priority weights in force (`None`: strict), from the flags or stored settings.
    pub(crate) priority_weights: settings::PriorityWeights,
    /// Rate limits, from task options and the settings bucket.
    pub(crate) limits: limits::RateLimits,
    /// The settings bucket, written by `rate_limit` control commands.
    pub(crate) settings_bucket: async_nats::jetstream::kv::Store,
    /// Cancelled when the worker starts to shut down (tasks waiting for a rate limit go back).
    pub(crate) stopping: tokio_util::sync::CancellationToken,
}

impl WorkerShared {
    /// True when the task, or the canvas it belongs to, has been revoked.
    pub(crate) fn is_revoked(&self, envelope: &celerity_proto::Envelope) -> bool {
        self.revoked.contains(envelope.id.as_str())
            || envelope
                .root_id
                .as_ref()
                .is_some_and(|root| self.revoked.contains(root.as_str()))
    }
}

pub(crate) type SharedHandle = Arc<WorkerShared>;

/// A worker running on its own thread.
#[derive(Debug)]
pub struct WorkerHandle {
    root: Addr<root::Worker>,
    thread: Option<std::thread::JoinHandle<Result<(), WorkerError>>>,
}

impl WorkerHandle {
    /// Asks the worker to stop: [`Shutdown::Warm`] finishes in-flight tasks,
    /// [`Shutdown::Cold`] returns them to the queue. A second request is always cold.
    pub fn shutdown(&self, mode: Shutdown) {
        shutdown::request(&self.root, mode);
    }

    /// Waits for the worker thread to end.
    ///
    /// # Errors
    /// The worker's error, or [`WorkerError::Panicked`].
    pub fn join(mut self) -> Result<(), WorkerError> {
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| WorkerError::Panicked)?,
            None => Ok(()),
        }
    }
}

/// Runs a worker on this thread until SIGTERM or SIGINT: the first signal is a warm shutdown, the
/// second a cold one.
///
/// A worker started while NATS is down retries the connection with backoff and logs each attempt.
///
/// # Errors
/// [`WorkerError`] when a queue name is invalid or the runtime cannot start.
pub fn run(app: App, nats: NatsConfig, config: WorkerConfig) -> Result<(), WorkerError> {
    run_on_this_thread(app, nats, config, Signals::Handle, |_| ())
}

/// Starts a worker on a new thread and returns once it consumes.
///
/// This blocks the calling thread until the worker is connected and provisioned, which lasts as
/// long as NATS is unreachable (the worker retries forever): from async code, call it inside
/// `tokio::task::spawn_blocking`.
///
/// # Errors
/// [`WorkerError`] when a queue name is invalid or the worker cannot start.
pub fn spawn(
    app: App,
    nats: NatsConfig,
    config: WorkerConfig,
) -> Result<WorkerHandle, WorkerError> {
    let (ready_sender, ready_receiver) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("celerity-worker".to_owned())
        .spawn(move || {
            run_on_this_thread(app, nats, config, Signals::Ignore, move |root| {
                let _ = ready_sender.send(root);
            })
        })
        .map_err(WorkerError::Runtime)?;
    match ready_receiver.recv() {
        Ok(root) => Ok(WorkerHandle {
            root,
            thread: Some(thread),
        }),
        Err(_) => match thread.join() {
            Ok(Err(error)) => Err(error),
            _ => Err(WorkerError::Panicked),
        },
    }
}
