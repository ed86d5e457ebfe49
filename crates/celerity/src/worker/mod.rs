//! Workers: a process that joins queues and runs their tasks.
//!
//! One actix `System` holds the actors (a root [`root::Worker`] and one [`queue::QueueActor`] per
//! queue); one multi-thread tokio runtime owns the NATS connection and runs task bodies on every
//! core. [`run`] blocks and handles SIGTERM/SIGINT; [`spawn`] starts a worker on its own thread
//! and returns a [`WorkerHandle`].
//!
//! This file holds the entry points; what every task run shares is `shared` ([`WorkerShared`]),
//! the configuration `config`, provisioning `setup`, the start-up steps `start`, the settings
//! watch `watches`, the two kinds of shutdown `shutdown`, and shutdown requests and OS signals
//! `stop`.

mod beat;
mod chord;
mod commands;
mod config;
mod continuation;
mod control;
mod dead_letter;
mod error;
mod execute;
mod handbacks;
mod held;
mod http;
mod limits;
mod metrics;
mod nats_io;
mod observe;
mod outcome;
mod pool;
mod presence;
mod queue;
mod records;
mod revocations;
mod root;
mod scheduled;
mod scheduler;
mod service;
mod settings;
mod setup;
mod shared;
mod shutdown;
mod start;
mod stop;
mod watches;

use actix::prelude::*;

use crate::app::App;
use crate::nats::NatsConfig;
use crate::worker::start::{Signals, run_on_this_thread};

pub use config::{DEFAULT_MAX_DELIVERIES, MAX_ACK_WAIT, WorkerConfig};
pub use error::WorkerError;
pub(crate) use shared::{SharedHandle, WorkerShared, random_unit};
pub use shutdown::Shutdown;

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
        stop::request(&self.root, mode);
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
