//! Fault injection for the reliability suite: with the `fault-injection` feature, a worker whose
//! environment sets `CELERITY_FAULT_CRASH=<point>:<task name>` aborts its process the first time
//! a task of that name reaches that point, as a power cut or `kill -9` would at the worst moment.
//!
//! Without the feature (the default, and every release build) [`crash_point`] is empty and
//! compiles to nothing.

/// After a task's final record is stored and what follows it (a chain's next step, a chord
/// report) is sent, before its message is acknowledged.
pub(crate) const AFTER_RESULT_PUT: &str = "after-result-put";

/// Aborts the process here if `CELERITY_FAULT_CRASH` names `point` and `task`.
#[cfg(feature = "fault-injection")]
pub(crate) fn crash_point(point: &str, task: &celerity_proto::TaskName) {
    use std::sync::OnceLock;
    static ARMED: OnceLock<Option<(String, String)>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        let value = std::env::var("CELERITY_FAULT_CRASH").ok()?;
        let (point, task) = value.split_once(':')?;
        Some((point.to_owned(), task.to_owned()))
    });
    if let Some((armed_point, armed_task)) = armed
        && armed_point == point
        && armed_task == task.as_str()
    {
        eprintln!("CELERITY_FAULT_CRASH: aborting at {point} for task {task}");
        std::process::abort();
    }
}

/// Does nothing: fault injection is compiled out.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn crash_point(_point: &str, _task: &celerity_proto::TaskName) {}
