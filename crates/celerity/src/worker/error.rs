//! [`WorkerError`]: why a worker could not start.

use crate::nats::ConnectError;

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
    /// The server refused the streams' settings: replicas it cannot keep, a size limit its store
    /// cannot reserve (the message says what to change).
    #[error(transparent)]
    Provision(#[from] crate::nats::provision::ProvisionError),
    /// The health and metrics endpoint cannot listen where it was asked to (`--http-port`).
    #[error(transparent)]
    Http(#[from] crate::worker::http::HttpError),
}
