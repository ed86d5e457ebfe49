//! A task's body as it runs: its own tokio task under the soft and hard time limits and the
//! termination token, the in-progress acks that keep its message, and the built-in map tasks' runs
//! over their items.
//!
//! Nothing here reads or writes records; `execute/run.rs` decides what a run's end means.

use std::time::Duration;

use celerity_proto::{Envelope, ErrorRecord};
use opentelemetry::context::FutureExt as _;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::__private::panic_record;
use crate::task::{ArgumentsError, Registered, TaskContext, TaskFuture};
use crate::worker::nats_io;

/// Runs the body as its own tokio task, so a panic is caught at the join; the body is aborted
/// if this future is dropped (a cold shutdown aborts the whole run).
///
/// At the soft limit the task's cancellation token is cancelled (it may clean up and return); at
/// the hard limit the body is aborted and the run fails with `celerity::TimeLimitExceeded`. A
/// blocking body cannot be stopped mid-call: its slot is freed, its thread finishes on its own.
pub(super) async fn run_body(
    future: TaskFuture,
    limits: TimeLimits,
    cancel: CancellationToken,
    terminate: &CancellationToken,
) -> Ran {
    let TimeLimits {
        soft: soft_limit,
        hard: hard_limit,
    } = limits;
    if terminate.is_cancelled() {
        return Ran::Terminated;
    }
    let started = tokio::time::Instant::now();
    // Spawned, so a body that blocks its thread stops neither the hard limit nor in-progress acks.
    // The body runs in the run's trace context and log span, so what it logs names the task and
    // what it sends joins the trace.
    let body = crate::task::mark_task_body(future)
        .with_context(opentelemetry::Context::current())
        .instrument(tracing::Span::current());
    let mut body = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(body));
    let far = Duration::from_secs(100 * 365 * 24 * 3600);
    let soft = tokio::time::sleep_until(started + soft_limit.unwrap_or(far));
    let hard = tokio::time::sleep_until(started + hard_limit.unwrap_or(far));
    tokio::pin!(soft, hard);
    let mut soft_passed = false;
    loop {
        tokio::select! {
            joined = &mut body => {
                return Ran::Finished(match joined {
                    Ok(outcome) => outcome,
                    Err(error) if error.is_panic() => Err(panic_record(error.into_panic())),
                    Err(_) => Err(ErrorRecord::new("celerity::Cancelled", "the task was cancelled")),
                });
            }
            () = terminate.cancelled() => {
                // A blocking body cannot be aborted: its token tells it to stop.
                cancel.cancel();
                body.abort();
                return Ran::Terminated;
            }
            () = &mut soft, if soft_limit.is_some() && !soft_passed => {
                soft_passed = true;
                cancel.cancel();
            }
            () = &mut hard, if hard_limit.is_some() => {
                cancel.cancel();
                body.abort();
                let limit = hard_limit.unwrap_or(far);
                return Ran::Finished(Err(ErrorRecord::new("celerity::TimeLimitExceeded", format!("the task ran past its hard time limit of {limit:?} and was stopped"))));
            }
        }
    }
}

/// A task's time limits (`None`: no limit).
#[derive(Debug, Clone, Copy)]
pub(super) struct TimeLimits {
    /// When its cancellation token is cancelled.
    pub(super) soft: Option<Duration>,
    /// When it is aborted.
    pub(super) hard: Option<Duration>,
}

/// How a task's body ended.
pub(super) enum Ran {
    /// It returned, panicked or ran out of time.
    Finished(Result<Value, ErrorRecord>),
    /// `revoke --terminate` stopped it.
    Terminated,
}

/// Tells the server every half AckWait that the message acknowledged on `reply` is still being
/// worked on; polled beside the run, from dispatch to the final ack (while the task waits for a
/// slot, runs, and while its result is being stored), so it costs no task of its own.
pub(super) async fn keep_in_progress(
    nats: async_nats::Client,
    reply: Option<async_nats::Subject>,
    ack_wait: Duration,
) -> std::convert::Infallible {
    let Some(reply) = reply else {
        return std::future::pending().await;
    };
    let period = (ack_wait / 2).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        if let Err(error) = nats_io::in_progress(&nats, reply.clone()).await {
            tracing::debug!(error = %error, "cannot send an in-progress ack");
        }
    }
}

/// The run of a built-in map: the target task over every item, one after the other, in this
/// worker; the result is the list of results, and the first failing item fails the whole run.
pub(super) fn run_over_items(
    target: &Registered,
    envelope: &Envelope,
    context: TaskContext,
    mut kwargs: serde_json::Map<String, Value>,
) -> Result<TaskFuture, ArgumentsError> {
    let spread = envelope.task.as_str() == crate::canvas::STARMAP_TASK;
    let items = match kwargs.remove("items") {
        Some(Value::Array(items)) => items,
        _ => return Err(ArgumentsError::Missing("items".to_owned())),
    };
    let run = target.run;
    let mut runs = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let args = match (spread, item) {
            (true, Value::Array(args)) => args,
            (_, item) => vec![item],
        };
        let bound = run(context.clone(), args, serde_json::Map::new()).map_err(|error| {
            ArgumentsError::Item {
                index,
                source: Box::new(error),
            }
        })?;
        runs.push(bound);
    }
    Ok(Box::pin(async move {
        let mut results = Vec::with_capacity(runs.len());
        for (index, run) in runs.into_iter().enumerate() {
            let value = run.await.map_err(|mut error| {
                error.message = format!("item {index}: {}", error.message);
                error
            })?;
            results.push(value);
        }
        Ok(Value::Array(results))
    }))
}
