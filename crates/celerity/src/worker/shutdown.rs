//! `Shutdown`: the two ways a worker stops, shared by the worker's handle, its root actor and its
//! queue actors.

/// How a worker stops (see `docs/ARCHITECTURE.md`, "Shutdown").
///
/// ```
/// use celerity::worker::Shutdown;
///
/// // A second signal turns a warm shutdown into a cold one.
/// fn after_signals(n_signals: u32) -> Shutdown {
///     if n_signals > 1 { Shutdown::Cold } else { Shutdown::Warm }
/// }
/// assert_eq!(after_signals(2), Shutdown::Cold);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Stop fetching, let the tasks in flight finish and acknowledge their messages, then stop.
    Warm,
    /// Stop fetching, abort the tasks in flight and hand their messages back to the queue, then
    /// stop.
    Cold,
}
