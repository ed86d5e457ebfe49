//! One task run, from a fetched message to its [`Outcome`]: envelope checks, idempotency on
//! redelivery, the delivery limit, revocation, ETA and expiry, the rate-limit gate, body checks
//! (dead letters), then the run (`execute/run.rs`: the body, `execute/body.rs`, its record, what
//! follows it, a retry). A task that ends without running is `execute/finish.rs`.
//!
//! Every path returns an `Outcome`, and [`execute`] applies it once (`outcome.rs`), in the order
//! the checks are made here. Runs on the multi-thread runtime, never on an actor thread.

mod body;
mod finish;
mod run;

use std::ops::ControlFlow;
use std::sync::Arc;

use async_nats::jetstream;
use celerity_proto::{
    CanvasError, DeadLetterReason, Envelope, EnvelopeError, ErrorRecord, QueueName, TaskBody,
    TaskId, TaskName, TaskState,
};
use serde_json::Value;
use tokio::sync::SemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::nats::headers::HeaderView;
use crate::task::{ArgumentsError, Registered, TaskContext};
use crate::telemetry;
use crate::worker::WorkerShared;
use crate::worker::chord::{HeaderResultsError, gather_header_results};
use crate::worker::continuation::Continuation;
use crate::worker::held::Held;
use crate::worker::limits::{Credit, Passage};
use crate::worker::outcome::{Outcome, Rejection, apply_outcome};
use crate::worker::records::final_record;
use body::{keep_in_progress, run_over_items};
use finish::{
    acknowledge_done, already_final, expired_record, finish_with, finish_without_running,
    revoked_record,
};
use opentelemetry::context::FutureExt as _;
use run::{Delivery, TaskRun};
use tracing::Instrument as _;

/// Runs the task in `message` to completion (or dead-letters it), telling the server every half
/// AckWait that it is still being worked on.
///
/// `credit` is the fetch credit the task holds until it ends; it gives it back while it waits for a
/// rate limit. `terminate` is cancelled by `revoke --terminate`: the body is aborted and the task
/// ends REVOKED, with what follows it told so.
///
/// # Cancel safety
/// Dropped (a cold shutdown), the run is aborted with its body; its message, not acknowledged, is
/// handed back by the shutdown or comes back after AckWait.
pub(crate) async fn execute(
    shared: Arc<WorkerShared>,
    queue: QueueName,
    message: jetstream::Message,
    credit: Credit,
    terminate: CancellationToken,
) {
    let in_progress = keep_in_progress(shared.nats.clone(), message.reply.clone(), shared.ack_wait);
    tokio::select! {
        biased;
        () = run_message(shared, queue, message, credit, terminate) => {}
        never = in_progress => match never {},
    }
}

/// [`execute`] without the in-progress acks: decides the message's outcome, applies it, then
/// gives back the execution slot and the fetch credit; all of it inside the delivery's trace
/// context, when it has one.
async fn run_message(
    shared: Arc<WorkerShared>,
    queue: QueueName,
    message: jetstream::Message,
    credit: Credit,
    terminate: CancellationToken,
) {
    let envelope = Envelope::from_headers(&HeaderView(message.headers.as_ref()));
    let delivered = message.info().map_or(1, |info| info.delivered as u64);
    let trace = envelope
        .as_ref()
        .ok()
        .and_then(|envelope| process_context(&shared, envelope, &queue, &message, delivered));
    let logged = envelope
        .as_ref()
        .ok()
        .map(|envelope| task_log_span(envelope, trace.as_ref()));
    let delivery = Taken {
        message,
        queue,
        delivered,
        terminate,
    };
    let run = decide_and_apply(&shared, envelope, delivery, credit);
    let run = run.instrument(logged.unwrap_or_else(tracing::Span::none));
    match trace {
        Some(context) => {
            run.with_context(context.clone()).await;
            telemetry::end(&context, None);
        }
        None => run.await,
    }
}

/// A delivery as it was taken.
struct Taken {
    message: jetstream::Message,
    queue: QueueName,
    delivered: u64,
    terminate: CancellationToken,
}

/// The context of a delivery's run: its `process` span (or, without tracing, the context its
/// message brought, to pass on to what the run sends).
fn process_context(
    shared: &WorkerShared,
    envelope: &Envelope,
    queue: &QueueName,
    message: &jetstream::Message,
    delivered: u64,
) -> Option<opentelemetry::Context> {
    let info = message.info().ok();
    let delivery = telemetry::ProcessInfo {
        envelope,
        queue,
        subject: message.subject.as_str(),
        consumer: info.as_ref().map_or("", |info| info.consumer),
        delivered,
        worker: &shared.hostname,
    };
    shared.app.settings().telemetry.start_process(&delivery)
}

/// The `tracing` span the log lines of a task's run carry: its id and name, and its trace id when
/// it is traced.
fn task_log_span(envelope: &Envelope, trace: Option<&opentelemetry::Context>) -> tracing::Span {
    use opentelemetry::trace::TraceContextExt as _;
    let span = tracing::info_span!(
        "task",
        task_id = %envelope.id,
        task = %envelope.task,
        trace_id = tracing::field::Empty
    );
    if let Some(context) = trace {
        let trace_id = context.span().span_context().trace_id();
        span.record("trace_id", tracing::field::display(trace_id));
    }
    span
}

/// Decides the outcome of a delivery and applies it.
async fn decide_and_apply(
    shared: &Arc<WorkerShared>,
    envelope: Result<Envelope, EnvelopeError>,
    taken: Taken,
    mut credit: Credit,
) {
    let Taken {
        message,
        queue,
        delivered,
        terminate,
    } = taken;
    let mut held =
        shared
            .observer
            .taken(envelope.as_ref().ok(), &queue, delivered, &message.payload);
    let mut slot = None;
    let outcome = match &envelope {
        Ok(envelope) => {
            let delivery = Delivery {
                message: &message,
                queue: &queue,
                delivered,
                max_deliveries: max_deliveries(shared, envelope),
                terminate: &terminate,
            };
            let run = Run {
                credit: &mut credit,
                slot: &mut slot,
                held: &mut held,
            };
            run_task(shared, envelope, delivery, run).await
        }
        Err(error) => {
            let reason = match error {
                EnvelopeError::UnsupportedVersion(_) => DeadLetterReason::UnsupportedVersion,
                _ => DeadLetterReason::BadEnvelope,
            };
            Outcome::DeadLetter(Rejection::message(reason, error.to_string()))
        }
    };
    apply_outcome(shared, &queue, &message, outcome).await;
    drop(held);
    drop(slot);
    drop(credit);
}

/// What a run holds while its outcome is decided: its fetch credit, its execution slot once it
/// has one, and its count among the worker's reserved and active tasks.
struct Run<'r, 'a> {
    credit: &'r mut Credit,
    slot: &'r mut Option<SemaphorePermit<'a>>,
    held: &'r mut Held<'a>,
}

/// The outcome of a message with a valid envelope: checks, then the run.
async fn run_task<'a>(
    shared: &'a WorkerShared,
    envelope: &'a Envelope,
    delivery: Delivery<'_>,
    run: Run<'_, 'a>,
) -> Outcome<'a> {
    if let ControlFlow::Break(outcome) = admit(shared, envelope, &delivery, run.credit).await {
        return outcome;
    }
    let (task, mut body) = match checked_body(shared, envelope, &delivery).await {
        ControlFlow::Continue(checked) => checked,
        ControlFlow::Break(outcome) => return outcome,
    };
    // Shown as the producer sent them: before a chord body's header results are put first.
    let arguments = shared.observer.shown_arguments(&body.args, &body.kwargs);
    if let Some(results) = body.chord_results.take() {
        match gather_header_results(shared, &envelope.id, &results).await {
            Ok(list) => body.args.insert(0, list),
            Err(error) => {
                let chord_id = &results.id;
                let failed = HeaderFailure {
                    body,
                    error,
                    queue: delivery.queue,
                };
                return header_results_failed(shared, envelope, chord_id, failed).await;
            }
        }
    }
    let continuation = Continuation::take(&mut body);
    let context = TaskContext::on_worker(
        envelope.clone(),
        crate::task::DeliveryInfo::new(delivery.message, delivery.queue, delivery.delivered),
        &shared.hostname,
        shared.store.clone(),
    );
    let handle = context.clone();
    let bound = if is_builtin(envelope) {
        run_over_items(&task, envelope, context, body.kwargs)
    } else {
        (task.run)(context, body.args, body.kwargs)
    };
    let future = match bound {
        Ok(future) => future,
        Err(source) => {
            let task = envelope.task.clone();
            return refuse(envelope, Refusal::BadArguments { task, source });
        }
    };
    let task_run = TaskRun {
        shared,
        task: &task,
        envelope,
        delivery,
        context: handle,
        held: run.held,
        arguments,
    };
    task_run.run(future, continuation, run.slot).await
}

/// The checks made before the body is read, in this order: a final record already stored (on a
/// redelivery), the delivery limit, revocation, the ETA, expiry, then the rate limit.
async fn admit<'a>(
    shared: &'a WorkerShared,
    envelope: &'a Envelope,
    delivery: &Delivery<'_>,
    credit: &mut Credit,
) -> ControlFlow<Outcome<'a>> {
    let message = delivery.message;
    // Checked before the registry: a worker that lacks the task must not replace a stored result.
    if delivery.delivered > 1
        && let Some(record) = final_record(&shared.store, envelope).await
    {
        return ControlFlow::Break(acknowledge_done(shared, envelope, message, record).await);
    }
    // A message that came back more often than its task allows most likely took its worker down
    // each time: it is not run again (Celery's `task_reject_on_worker_lost`, bounded).
    let max_deliveries = delivery.max_deliveries;
    let ran = match delivery.delivered > u64::from(max_deliveries) {
        // Deliveries a worker handed back without running the task do not count.
        true => shared.handbacks.deliveries_that_ran(message).await,
        false => delivery.delivered,
    };
    if ran > u64::from(max_deliveries) {
        let refusal = Refusal::TooManyDeliveries {
            ran,
            max_deliveries,
        };
        return ControlFlow::Break(refuse(envelope, refusal));
    }
    // A revoked task, or a task of a revoked canvas, does not run: it ends REVOKED, saying why.
    if let Some(record) = revoked_record(shared, envelope) {
        return ControlFlow::Break(finish_without_running(shared, envelope, message, record).await);
    }
    // A task that is not due yet (a producer put it straight on its queue with a future ETA) waits
    // in the delayed stream rather than in this worker's slot.
    if envelope
        .eta_ms
        .is_some_and(|eta| eta > now_ms() + crate::publisher::ETA_SLACK_MS)
    {
        return ControlFlow::Break(Outcome::HoldUntilDue(envelope));
    }
    // A task picked up after its deadline does not run: it ends REVOKED, saying why.
    if let Some(record) = expired_record(shared, envelope) {
        return ControlFlow::Break(finish_without_running(shared, envelope, message, record).await);
    }
    // Over its rate limit, the task waits here, before its body is decoded and before it takes an
    // execution slot: a waiting task holds its message's bytes and nothing more.
    if let Some(gate) = shared.limits.gate(&envelope.task) {
        let arrived = std::time::Instant::now();
        match gate
            .pass(credit, message.payload.len(), &shared.stopping)
            .await
        {
            Passage::Go => {}
            Passage::Stopped => return ControlFlow::Break(Outcome::HandBack),
        }
        shared
            .observer
            .rate_limited(&envelope.task, arrived.elapsed());
        // It may have been revoked or have expired while it waited.
        if let Some(record) =
            revoked_record(shared, envelope).or_else(|| expired_record(shared, envelope))
        {
            let outcome = finish_without_running(shared, envelope, message, record).await;
            return ControlFlow::Break(outcome);
        }
    }
    ControlFlow::Continue(())
}

/// The task that runs the message and its decoded body, once a chord body sent twice, an unknown
/// task, an unreadable body and an invalid canvas after it are ruled out, in this order.
async fn checked_body<'a>(
    shared: &'a WorkerShared,
    envelope: &'a Envelope,
    delivery: &Delivery<'_>,
) -> ControlFlow<Outcome<'a>, (Registered, TaskBody)> {
    let message = delivery.message;
    let decoded = envelope.content_type.decode::<TaskBody>(&message.payload);
    // A chord body is always checked: it must run exactly once even if an aggregator sent it twice.
    let chord_body = matches!(&decoded, Ok(body) if body.chord_results.is_some());
    if delivery.delivered == 1
        && chord_body
        && let Some(record) = final_record(&shared.store, envelope).await
    {
        return ControlFlow::Break(acknowledge_done(shared, envelope, message, record).await);
    }
    let task = match resolve_task(shared, envelope, &decoded) {
        Ok(task) => task,
        Err(error) => return ControlFlow::Break(refuse(envelope, Refusal::UnknownTask(error))),
    };
    // A first delivery of a task that keeps its result: a final record under its id may belong
    // to another message (a reused id), whose record must not be replaced. (A redelivery was
    // checked in `admit`, a chord body above; a task that ignores its result writes none.)
    if delivery.delivered == 1
        && !chord_body
        && !task.options.is_ignore_result()
        && let Some(outcome) = already_final(shared, envelope, message).await
    {
        return ControlFlow::Break(outcome);
    }
    let body = match decoded {
        Ok(body) => body,
        Err(error) => {
            let rejection = Rejection::task(
                envelope,
                DeadLetterReason::UndecodableBody,
                error.to_string(),
            );
            return ControlFlow::Break(Outcome::DeadLetter(rejection));
        }
    };
    // The canvas that follows this task is checked before the task runs: a malformed or
    // over-deep one is dead-lettered now rather than failing after the work is done.
    let canvas_problem = body
        .chain
        .iter()
        .chain(&body.link)
        .chain(&body.link_error)
        .find_map(|node| node.validate(crate::canvas::MAX_DEPTH).err());
    if let Some(source) = canvas_problem {
        let task = envelope.task.clone();
        return ControlFlow::Break(refuse(envelope, Refusal::InvalidCanvas { task, source }));
    }
    ControlFlow::Continue((task, body))
}

/// The outcome of a chord body whose header results cannot be had: dead-lettered when it can
/// never run as sent, failed when a member did not succeed, redelivered when the buckets cannot
/// be read now.
async fn header_results_failed<'a>(
    shared: &'a WorkerShared,
    envelope: &'a Envelope,
    chord_id: &TaskId,
    failed: HeaderFailure<'_>,
) -> Outcome<'a> {
    let HeaderFailure {
        mut body,
        error,
        queue,
    } = failed;
    match error {
        // Names no stored chord or does not match it: it can never run as sent.
        error if error.is_bad_message() => {
            let error = crate::error_chain(&error);
            Outcome::DeadLetter(Rejection::task(
                envelope,
                DeadLetterReason::InvalidCanvas,
                error,
            ))
        }
        HeaderResultsError::NotSucceeded { index, state } => {
            let error = ErrorRecord::new(
                "celerity::ChordHeaderFailed",
                format!("header member {index} of chord {chord_id} is {state}, not SUCCESS"),
            );
            let continuation = Continuation::take(&mut body);
            let record = shared
                .store
                .record(envelope, TaskState::Failure)
                .with_error(error);
            finish_with(shared, envelope, Some(queue), continuation, record).await
        }
        error => {
            tracing::warn!(task_id = %envelope.id, error = %crate::error_chain(&error), "cannot read the chord's header results; the body will be redelivered");
            Outcome::Redeliver
        }
    }
}

/// A chord body whose header results cannot be had, and why.
struct HeaderFailure<'q> {
    body: TaskBody,
    error: HeaderResultsError,
    queue: &'q QueueName,
}

/// The delivery limit of the message's task: its own `max_deliveries`, else the worker's.
fn max_deliveries(shared: &WorkerShared, envelope: &Envelope) -> u32 {
    shared
        .app
        .task(&envelope.task)
        .and_then(|registered| registered.options.max_deliveries_value())
        .unwrap_or(shared.max_deliveries)
}

/// True for the built-in `celerity.map` / `celerity.starmap` tasks.
fn is_builtin(envelope: &Envelope) -> bool {
    let name = envelope.task.as_str();
    name == crate::canvas::MAP_TASK || name == crate::canvas::STARMAP_TASK
}

/// Why a task with a valid envelope is dead-lettered before it runs; the letter's error is the
/// chain of this error.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    /// Delivered more often than its task allows (`too_many_deliveries`).
    #[error(
        "delivered {ran} times that could have run it, more than the {max_deliveries} allowed: every earlier delivery ended without an acknowledgement, as when the task crashes or is killed with its worker"
    )]
    TooManyDeliveries { ran: u64, max_deliveries: u32 },
    /// No registered task runs it (`unknown_task`).
    #[error(transparent)]
    UnknownTask(UnknownTask),
    /// What follows it is malformed or too deep (`invalid_canvas`).
    #[error("task {task}")]
    InvalidCanvas {
        task: TaskName,
        #[source]
        source: CanvasError,
    },
    /// Its arguments do not fit its parameters (`bad_arguments`).
    #[error("task {task}")]
    BadArguments {
        task: TaskName,
        #[source]
        source: ArgumentsError,
    },
}

impl Refusal {
    fn reason(&self) -> DeadLetterReason {
        match self {
            Refusal::TooManyDeliveries { .. } => DeadLetterReason::TooManyDeliveries,
            Refusal::UnknownTask(_) => DeadLetterReason::UnknownTask,
            Refusal::InvalidCanvas { .. } => DeadLetterReason::InvalidCanvas,
            Refusal::BadArguments { .. } => DeadLetterReason::BadArguments,
        }
    }
}

/// The dead letter of a task refused before it runs; its failure is followed by what its body
/// says follows it.
fn refuse(envelope: &Envelope, refusal: Refusal) -> Outcome<'_> {
    let error = crate::error_chain(&refusal);
    Outcome::DeadLetter(Rejection::task(envelope, refusal.reason(), error))
}

/// No registered task runs a message.
#[derive(Debug, thiserror::Error)]
enum UnknownTask {
    /// A built-in map names no target task.
    #[error("{map} needs a \"task\" named argument")]
    NoTarget { map: TaskName },
    /// The task (or a map's target) is not registered on this worker.
    #[error("no task named {target:?} is registered on worker {worker}")]
    NotRegistered { target: String, worker: Arc<str> },
}

/// The registered task that runs this message: the task itself, or for a built-in map the task it
/// runs over its items (with that task's options).
fn resolve_task(
    shared: &WorkerShared,
    envelope: &Envelope,
    body: &Result<TaskBody, celerity_proto::DecodeError>,
) -> Result<Registered, UnknownTask> {
    let target = if is_builtin(envelope) {
        body.as_ref()
            .ok()
            .and_then(|body| body.kwargs.get("task"))
            .and_then(Value::as_str)
            .ok_or_else(|| UnknownTask::NoTarget {
                map: envelope.task.clone(),
            })?
    } else {
        envelope.task.as_str()
    };
    let registered = TaskName::new(target)
        .ok()
        .and_then(|target| shared.app.task(&target))
        .ok_or_else(|| UnknownTask::NotRegistered {
            target: target.to_owned(),
            worker: shared.hostname.clone(),
        })?;
    Ok(Registered {
        name: envelope.task.clone(),
        options: registered.options,
        run: registered.run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str) -> TaskName {
        TaskName::new(name).unwrap()
    }

    #[test]
    fn a_refusal_names_its_reason_and_says_what_the_letter_said_before() {
        let too_many = Refusal::TooManyDeliveries {
            ran: 6,
            max_deliveries: 5,
        };
        assert_eq!(too_many.reason(), DeadLetterReason::TooManyDeliveries);
        assert!(
            crate::error_chain(&too_many)
                .starts_with("delivered 6 times that could have run it, more than the 5 allowed: ")
        );
        let unknown = Refusal::UnknownTask(UnknownTask::NotRegistered {
            target: "it.nope".to_owned(),
            worker: Arc::from("worker-1"),
        });
        assert_eq!(unknown.reason(), DeadLetterReason::UnknownTask);
        assert_eq!(
            crate::error_chain(&unknown),
            "no task named \"it.nope\" is registered on worker worker-1"
        );
        let no_target = UnknownTask::NoTarget {
            map: task("celerity.map"),
        };
        assert_eq!(
            no_target.to_string(),
            "celerity.map needs a \"task\" named argument"
        );
        let bad_arguments = Refusal::BadArguments {
            task: task("it.add"),
            source: ArgumentsError::Missing("y".to_owned()),
        };
        assert_eq!(bad_arguments.reason(), DeadLetterReason::BadArguments);
        assert_eq!(
            crate::error_chain(&bad_arguments),
            "task it.add: missing argument \"y\""
        );
        let too_deep = Refusal::InvalidCanvas {
            task: task("it.add"),
            source: CanvasError::TooDeep {
                depth: 70,
                limit: 64,
            },
        };
        assert_eq!(too_deep.reason(), DeadLetterReason::InvalidCanvas);
        assert_eq!(
            crate::error_chain(&too_deep),
            "task it.add: canvas nests 70 levels deep, over the limit of 64"
        );
    }
}
