//! What the protocol fixes for every implementation besides the wire records: the built-in task
//! names a worker runs without registering them, how deep a canvas may nest, and how close an ETA
//! counts as due.
//!
//! ```
//! use celerity_proto::builtin;
//! assert_eq!(builtin::MAP_TASK, "celerity.map");
//! assert_eq!(builtin::MAX_CANVAS_DEPTH, 32);
//! ```

/// The built-in task that runs a task over many items (`task.map(items)`): kwargs `task` (the
/// task's name) and `items` (one argument each).
pub const MAP_TASK: &str = "celerity.map";

/// The built-in task that runs a task over many argument lists (`task.starmap(tuples)`): kwargs
/// `task` and `items` (one list of arguments each).
pub const STARMAP_TASK: &str = "celerity.starmap";

/// The name chord records and a chord's failure carry as their task (a chord is not a task).
pub const CHORD_TASK: &str = "celerity.chord";

/// How deep a canvas may nest (a signature is 1) before it is refused as `invalid_canvas`.
pub const MAX_CANVAS_DEPTH: usize = 32;

/// An ETA less than this many milliseconds ahead is due now (clock granularity, network time): the
/// task goes straight to its queue instead of the delayed stream.
pub const ETA_SLACK_MS: u64 = 10;
