//! [`Shutdown`]: the two ways a worker stops, shared by the worker's handle, its root actor and its
//! queue actors.
//!
//! The shutdown protocol itself (stop fetching, drain or hand back in-flight tasks) is the root and
//! queue actors' job; asking for it is `stop.rs`'s.

/// How a worker stops.
///
/// ```no_run
/// # fn demo(worker: celerity::WorkerHandle) -> Result<(), celerity::WorkerError> {
/// worker.shutdown(celerity::Shutdown::Warm);
/// worker.join()
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Shutdown {
    /// Stop fetching, let in-flight tasks finish and ack, then stop.
    Warm,
    /// Stop fetching, abort in-flight tasks and return their messages to the queue at once.
    Cold,
}
