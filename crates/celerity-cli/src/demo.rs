//! The tasks `celerity dev` runs, and the plan of which ones it sends with which arguments.
//!
//! Each task shows one behaviour: an async body, a blocking body, a typed failure with a cause, a
//! caught panic and progress reported with custom states. Starting servers and workers, and
//! printing, are `dev`'s job, not this module's.

use std::fmt::{self, Display};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use celerity::{
    ApplyOptions, AsyncResult, Chord, Client, EnqueueError, ErrorRecord, ResultError, StoreError,
    Task, TaskContext,
};
use serde::de::DeserializeOwned;
use serde_json::json;

/// The namespace of the demo's streams and buckets, kept apart from a real app's on a shared server.
pub(crate) const NAMESPACE: &str = "celerity-dev";
/// How long demo results are kept on the server.
const RESULT_EXPIRY: Duration = Duration::from_secs(3600);
/// The prefix of the panic message of [`unlucky`], so the panic hook can recognise it.
const UNLUCKY_PANIC: &str = "demo.unlucky";
/// The number that makes [`unlucky`] panic.
const UNLUCKY_NUMBER: u32 = 13;
/// The pause before each step of a [`progress`] run.
const PROGRESS_STEP_PAUSE: Duration = Duration::from_millis(150);
/// The priority of tasks that should jump the queue.
const URGENT: u8 = 9;

/// Adds two numbers on the worker's async runtime.
#[celerity::task(name = "demo.add")]
pub(crate) async fn add(x: i64, y: i64) -> i64 {
    x + y
}

/// Computes a Fibonacci number the slow way: CPU work in a plain `fn`, so it runs on the blocking pool.
#[celerity::task(name = "demo.fib")]
pub(crate) fn fib(n: u32) -> u64 {
    fn slow_fib(n: u32) -> u64 {
        if n < 2 {
            u64::from(n)
        } else {
            slow_fib(n - 1) + slow_fib(n - 2)
        }
    }
    slow_fib(n)
}

/// Why [`divide`] failed; its cause travels in the failure record.
#[derive(Debug, thiserror::Error)]
#[error("cannot divide {dividend} by {divisor}")]
pub(crate) struct DivideError {
    dividend: i64,
    divisor: i64,
    #[source]
    source: ArithmeticError,
}

/// The arithmetic reason behind a [`DivideError`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum ArithmeticError {
    /// The divisor is zero.
    #[error("division by zero")]
    DivisionByZero,
    /// The quotient does not fit in an `i64`.
    #[error("the quotient overflows i64")]
    Overflow,
}

/// Divides integers, failing with a typed error when the divisor is zero.
#[celerity::task(name = "demo.divide")]
pub(crate) async fn divide(dividend: i64, divisor: i64) -> Result<i64, DivideError> {
    let reason = match divisor {
        0 => ArithmeticError::DivisionByZero,
        _ => ArithmeticError::Overflow,
    };
    dividend.checked_div(divisor).ok_or(DivideError {
        dividend,
        divisor,
        source: reason,
    })
}

/// Squares a number, and panics on 13: the worker records the panic as a failure and carries on.
#[celerity::task(name = "demo.unlucky")]
pub(crate) async fn unlucky(n: u32) -> u64 {
    if n == UNLUCKY_NUMBER {
        panic!("{UNLUCKY_PANIC} refuses {n}");
    }
    u64::from(n) * u64::from(n)
}

/// Works through `steps` short steps and reports each one as a PROCESSING state with its meta.
#[celerity::task(name = "demo.progress")]
pub(crate) async fn progress(ctx: &TaskContext, steps: u32) -> Result<u32, StoreError> {
    for step in 1..=steps {
        tokio::time::sleep(PROGRESS_STEP_PAUSE).await;
        ctx.update_state("PROCESSING", json!({"step": step, "total": steps}))
            .await?;
    }
    Ok(steps)
}

/// Adds up a chord's results: the body of the chords `celerity dev --keep-running` sends.
#[celerity::task(name = "demo.total")]
pub(crate) async fn total(results: Vec<i64>) -> i64 {
    results.iter().sum()
}

/// Sends a chord of `size` additions whose results [`total`] adds up.
///
/// # Errors
/// [`EnqueueError`] when the chord was not accepted.
pub(crate) async fn send_chord(
    client: &Client,
    size: i64,
) -> Result<AsyncResult<i64>, EnqueueError> {
    let header: Vec<_> = (1..=size).map(|n| add.s((n, n))).collect();
    Chord::new(header, total.s(())).apply_async(client).await
}

/// The demo app: every task above, in the demo's own namespace.
///
/// # Errors
/// When the app's settings are invalid, which would be a bug in this module.
pub(crate) fn app() -> Result<celerity::App, celerity::ConfigError> {
    celerity::App::builder()
        .namespace(NAMESPACE)
        .result_expires(RESULT_EXPIRY)
        .task(add)
        .task(fib)
        .task(divide)
        .task(unlucky)
        .task(progress)
        .task(total)
        .build()
}

/// Keeps the intended panics of [`unlucky`] off stderr: the demo prints them as FAILURE lines.
/// Every other panic still goes to the previous hook.
pub(crate) fn hide_intended_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        if !message.is_some_and(|message| message.starts_with(UNLUCKY_PANIC)) {
            previous(info);
        }
    }));
}

/// One task the demo sends, with its arguments and the way it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Job {
    /// `add.delay(client, x, y)`.
    Add { x: i64, y: i64 },
    /// `add.apply_async` with priority 9.
    AddUrgent { x: i64, y: i64 },
    /// `client.send_task("demo.add", [x, y], {})`, for producers without the task's code.
    AddByName { x: i64, y: i64 },
    /// The blocking task.
    Fib { n: u32 },
    /// Fails when `divisor` is zero.
    Divide { dividend: i64, divisor: i64 },
    /// Panics on 13.
    Unlucky { n: u32 },
    /// Reports progress; sent with priority 9 so it starts at once.
    Progress { steps: u32 },
}

/// The jobs of a run of `n_tasks` tasks, the same every run: mostly successes, with a failure in
/// about every seventeen tasks and a progress task in every hundred.
pub(crate) fn plan(n_tasks: usize) -> Vec<Job> {
    (0..n_tasks).map(job_at).collect()
}

/// The job at `index` of every plan.
pub(crate) fn job_at(index: usize) -> Job {
    if index.is_multiple_of(100) {
        // Each progress task gets its own step count, so their lines tell them apart.
        return Job::Progress {
            steps: 6 + 2 * u32::try_from(index / 100 % 8).unwrap_or(0),
        };
    }
    let number = i64::try_from(index).unwrap_or(i64::MAX);
    // The tens digit picks the argument that decides success, so failures spread over the run.
    let tens = index / 10;
    match index % 10 {
        3 => Job::AddUrgent {
            x: number,
            y: number * 2,
        },
        4 => Job::AddByName {
            x: number,
            y: number * 2,
        },
        5 | 6 => Job::Fib {
            n: 20 + u32::try_from(index % 11).unwrap_or(0),
        },
        7 => Job::Divide {
            dividend: number * 3,
            divisor: i64::try_from(tens % 3).unwrap_or(1),
        },
        8 => Job::Unlucky {
            n: UNLUCKY_NUMBER - 3 + u32::try_from(tens % 4).unwrap_or(0),
        },
        _ => Job::Add {
            x: number,
            y: number * 2,
        },
    }
}

impl Job {
    /// Whether the job should succeed.
    pub(crate) fn should_succeed(&self) -> bool {
        match *self {
            Job::Divide { divisor, .. } => divisor != 0,
            Job::Unlucky { n } => n != UNLUCKY_NUMBER,
            _ => true,
        }
    }

    /// Sends the job and returns how to wait for its ending.
    ///
    /// # Errors
    /// [`EnqueueError`] when the task was not accepted.
    pub(crate) async fn send(
        self,
        client: &Client,
        timeout: Duration,
    ) -> Result<Sent, EnqueueError> {
        let urgent = || ApplyOptions::new().priority(URGENT);
        Ok(match self {
            Job::Add { x, y } => Sent::new(add.delay(client, x, y).await?, timeout),
            Job::AddUrgent { x, y } => {
                Sent::new(add.apply_async(client, (x, y), urgent()).await?, timeout)
            }
            Job::AddByName { x, y } => {
                let result = client
                    .send_task(add::NAME, json!([x, y]), json!({}), ApplyOptions::new())
                    .await?;
                Sent::new(result, timeout)
            }
            Job::Fib { n } => Sent::new(fib.delay(client, n).await?, timeout),
            Job::Divide { dividend, divisor } => {
                Sent::new(divide.delay(client, dividend, divisor).await?, timeout)
            }
            Job::Unlucky { n } => Sent::new(unlucky.delay(client, n).await?, timeout),
            Job::Progress { steps } => Sent::watched(
                progress.apply_async(client, (steps,), urgent()).await?,
                timeout,
            ),
        })
    }
}

impl Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Job::Add { x, y } => write!(f, "{}({x}, {y})", add::NAME),
            Job::AddUrgent { x, y } => write!(f, "{}({x}, {y}) [priority {URGENT}]", add::NAME),
            Job::AddByName { x, y } => write!(f, "{}({x}, {y}) [sent by name]", add::NAME),
            Job::Fib { n } => write!(f, "{}({n})", fib::NAME),
            Job::Divide { dividend, divisor } => {
                write!(f, "{}({dividend}, {divisor})", divide::NAME)
            }
            Job::Unlucky { n } => write!(f, "{}({n})", unlucky::NAME),
            Job::Progress { steps } => {
                write!(f, "{}({steps}) [priority {URGENT}]", progress::NAME)
            }
        }
    }
}

/// How a task ended, as its producer saw it.
#[derive(Debug)]
pub(crate) enum Ending {
    /// SUCCESS, with the value as text.
    Succeeded(String),
    /// FAILURE, with the task's error record.
    Failed(ErrorRecord),
    /// REVOKED.
    Revoked,
    /// No final state within the timeout.
    TimedOut,
    /// The result could not be read or decoded.
    Unreadable(String),
}

impl Ending {
    /// Every [`Ending::label`], in the order a summary lists them.
    pub(crate) const LABELS: [&'static str; 5] =
        ["SUCCESS", "FAILURE", "REVOKED", "TIMEOUT", "UNREADABLE"];

    /// The state name the summary counts this ending under.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Ending::Succeeded(_) => "SUCCESS",
            Ending::Failed(_) => "FAILURE",
            Ending::Revoked => "REVOKED",
            Ending::TimedOut => "TIMEOUT",
            Ending::Unreadable(_) => "UNREADABLE",
        }
    }
}

/// A sent task: the wait for its ending, and for a progress task a handle to watch its states.
pub(crate) struct Sent {
    /// Resolves to how the task ended.
    pub(crate) ending: Pin<Box<dyn Future<Output = Ending> + Send + 'static>>,
    /// For a progress task, a handle that reads its state and meta while it runs.
    pub(crate) progress: Option<AsyncResult<u32>>,
}

impl fmt::Debug for Sent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sent")
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

impl Sent {
    fn new<T>(result: AsyncResult<T>, timeout: Duration) -> Self
    where
        T: DeserializeOwned + Display + Send + 'static,
    {
        Sent {
            ending: Box::pin(wait_for_ending(result, timeout)),
            progress: None,
        }
    }

    fn watched(result: AsyncResult<u32>, timeout: Duration) -> Self {
        Sent {
            progress: Some(result.clone()),
            ..Sent::new(result, timeout)
        }
    }
}

async fn wait_for_ending<T>(result: AsyncResult<T>, timeout: Duration) -> Ending
where
    T: DeserializeOwned + Display,
{
    match result.get(timeout).await {
        Ok(value) => Ending::Succeeded(value.to_string()),
        Err(ResultError::Failed { error, .. }) => Ending::Failed(error),
        Err(ResultError::Revoked { .. }) => Ending::Revoked,
        Err(ResultError::Timeout { .. }) => Ending::TimedOut,
        Err(other) => Ending::Unreadable(format!("{:#}", anyhow::Error::from(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_of_forty_has_three_failures_and_one_progress_task() {
        let jobs = plan(40);
        assert_eq!(jobs.iter().filter(|job| !job.should_succeed()).count(), 3);
        assert_eq!(
            jobs.iter()
                .filter(|job| matches!(job, Job::Progress { .. }))
                .count(),
            1
        );
    }

    #[test]
    fn divide_by_zero_fails_with_its_cause() {
        let error = block_on(divide::call(7, 0)).unwrap_err();
        assert_eq!(error.to_string(), "cannot divide 7 by 0");
        assert_eq!(
            std::error::Error::source(&error).unwrap().to_string(),
            "division by zero"
        );
    }

    #[test]
    fn fib_computes_fibonacci_numbers() {
        assert_eq!(fib::call(10), 55);
        assert_eq!(fib::call(25), 75_025);
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }
}
