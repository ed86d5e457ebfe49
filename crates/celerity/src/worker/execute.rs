//! One task run, from a fetched message to its ack: envelope checks, idempotency on redelivery,
//! the delivery limit, revocation, ETA and expiry, the rate-limit gate, body checks (dead
//! letters), the body (`execute/body.rs`), the result record and the reply notification
//! (`execute/records.rs`), what follows the task, then the ack.
//!
//! Runs on the multi-thread runtime, never on an actor thread.

mod body;
mod records;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use celerity_proto::{
    DeadLetterReason, Envelope, EnvelopeError, ErrorRecord, QueueName, ResultRecord, TaskBody,
    TaskState,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::__private::panic_record;
use crate::clock::now_ms;
use crate::nats::headers::HeaderView;
use crate::result_store::ResultStore;
use crate::task::{Registered, TaskContext, TaskFuture};
use crate::worker::WorkerShared;
use crate::worker::chord::{HeaderResultsError, gather_header_results};
use crate::worker::continuation::Continuation;
use crate::worker::dead_letter::{DeadTask, dead_letter, dead_letter_task};
use crate::worker::limits::{Credit, Passage};
use body::{Ran, keep_in_progress, run_body, run_over_items};
pub(crate) use records::store_final;
use records::{encode_within_limit, final_record, notify, store_encoded, write_state};

/// Runs the task in `message` to completion (or dead-letters it), telling the server every half
/// AckWait that it is still being worked on.
///
/// `credit` is the fetch credit the task holds until it ends; it gives it back while it waits for a
/// rate limit. `terminate` is cancelled by `revoke --terminate`: the body is aborted and the task
/// ends REVOKED, with what follows it told so.
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

/// [`execute`] without the in-progress acks.
async fn run_message(
    shared: Arc<WorkerShared>,
    queue: QueueName,
    message: jetstream::Message,
    mut credit: Credit,
    terminate: CancellationToken,
) {
    let delivered = message.info().map_or(1, |info| info.delivered as u64);
    let envelope = match Envelope::from_headers(&HeaderView(message.headers.as_ref())) {
        Ok(envelope) => envelope,
        Err(error) => {
            let reason = match error {
                EnvelopeError::UnsupportedVersion(_) => DeadLetterReason::UnsupportedVersion,
                _ => DeadLetterReason::BadEnvelope,
            };
            return dead_letter(&shared, &queue, &message, reason, error.to_string()).await;
        }
    };
    // Checked before the registry: a worker that lacks the task must not replace a stored result.
    if delivered > 1
        && let Some(record) = final_record(&shared.store, &envelope).await
    {
        return acknowledge_done(&shared, &queue, &envelope, &message, record).await;
    }
    // A message that came back more often than its task allows most likely took its worker down
    // each time: it is not run again (Celery's `task_reject_on_worker_lost`, bounded).
    let max_deliveries = max_deliveries(&shared, &envelope);
    let ran = match delivered > u64::from(max_deliveries) {
        // Deliveries a worker handed back without running the task do not count.
        true => shared.handbacks.deliveries_that_ran(&message).await,
        false => delivered,
    };
    if ran > u64::from(max_deliveries) {
        let error = format!(
            "delivered {ran} times that could have run it, more than the {max_deliveries} allowed: every earlier delivery ended without an acknowledgement, as when the task crashes or is killed with its worker"
        );
        return reject(
            &shared,
            &queue,
            &message,
            &envelope,
            DeadLetterReason::TooManyDeliveries,
            error,
        )
        .await;
    }
    // A revoked task, or a task of a revoked canvas, does not run: it ends REVOKED, saying why.
    if let Some(record) = revoked_record(&shared, &envelope) {
        return finish_without_running(&shared, &queue, &envelope, &message, record).await;
    }
    // A task that is not due yet (a producer put it straight on its queue with a future ETA) waits
    // in the delayed stream rather than in this worker's slot.
    if envelope
        .eta_ms
        .is_some_and(|eta| eta > now_ms() + crate::publisher::ETA_SLACK_MS)
    {
        return hold_until_due(&shared, &queue, &message, &envelope).await;
    }
    // A task picked up after its deadline does not run: it ends REVOKED, saying why.
    if let Some(record) = expired_record(&shared, &envelope) {
        return finish_without_running(&shared, &queue, &envelope, &message, record).await;
    }
    // Over its rate limit, the task waits here, before its body is decoded and before it takes an
    // execution slot: a waiting task holds its message's bytes and nothing more.
    if let Some(gate) = shared.limits.gate(&envelope.task) {
        match gate
            .pass(&mut credit, message.payload.len(), &shared.stopping)
            .await
        {
            Passage::Go => {}
            Passage::Stopped => return shared.handbacks.hand_back(&message, None).await,
        }
        // It may have been revoked or have expired while it waited.
        if let Some(record) =
            revoked_record(&shared, &envelope).or_else(|| expired_record(&shared, &envelope))
        {
            return finish_without_running(&shared, &queue, &envelope, &message, record).await;
        }
    }
    let decoded = envelope.content_type.decode::<TaskBody>(&message.payload);
    // A chord body is always checked: it must run exactly once even if an aggregator sent it twice.
    let chord_body = matches!(&decoded, Ok(body) if body.chord_results.is_some());
    if delivered == 1
        && chord_body
        && let Some(record) = final_record(&shared.store, &envelope).await
    {
        return acknowledge_done(&shared, &queue, &envelope, &message, record).await;
    }
    let task = match resolve_task(&shared, &envelope, &decoded) {
        Ok(task) => task,
        Err(error) => {
            return reject(
                &shared,
                &queue,
                &message,
                &envelope,
                DeadLetterReason::UnknownTask,
                error,
            )
            .await;
        }
    };
    let builtin = is_builtin(&envelope);
    let mut body = match decoded {
        Ok(body) => body,
        Err(error) => {
            let reason = DeadLetterReason::UndecodableBody;
            return reject(
                &shared,
                &queue,
                &message,
                &envelope,
                reason,
                error.to_string(),
            )
            .await;
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
    if let Some(problem) = canvas_problem {
        let error = format!("task {}: {problem}", envelope.task);
        return reject(
            &shared,
            &queue,
            &message,
            &envelope,
            DeadLetterReason::InvalidCanvas,
            error,
        )
        .await;
    }
    if let Some(results) = body.chord_results.take() {
        match gather_header_results(&shared, &envelope.id, &results).await {
            Ok(list) => body.args.insert(0, list),
            // Names no stored chord or does not match it: it can never run as sent.
            Err(error) if error.is_bad_message() => {
                let (reason, error) = (DeadLetterReason::InvalidCanvas, crate::error_chain(&error));
                return reject(&shared, &queue, &message, &envelope, reason, error).await;
            }
            Err(HeaderResultsError::NotSucceeded { index, state }) => {
                let error = ErrorRecord::new(
                    "celerity::ChordHeaderFailed",
                    format!(
                        "header member {index} of chord {} is {state}, not SUCCESS",
                        results.id
                    ),
                );
                let continuation = Continuation::take(&mut body);
                let record = shared
                    .store
                    .record(&envelope, TaskState::Failure)
                    .with_error(error);
                return finish_with(&shared, &envelope, &message, continuation, record).await;
            }
            Err(error) => {
                tracing::warn!(task_id = %envelope.id, error = %crate::error_chain(&error), "cannot read the chord's header results; the body will be redelivered");
                return;
            }
        }
    }
    let continuation = Continuation::take(&mut body);
    let context = TaskContext::on_worker(
        envelope.clone(),
        crate::task::DeliveryInfo::new(&message, &queue, delivered),
        &shared.hostname,
        shared.store.clone(),
    );
    let handle = context.clone();
    let bound = if builtin {
        run_over_items(&task, &envelope, context, body.kwargs)
    } else {
        (task.run)(context, body.args, body.kwargs)
    };
    let future = match bound {
        Ok(future) => future,
        Err(error) => {
            let error = format!("task {}: {error}", envelope.task);
            return reject(
                &shared,
                &queue,
                &message,
                &envelope,
                DeadLetterReason::BadArguments,
                error,
            )
            .await;
        }
    };
    let delivery = Delivery {
        message: &message,
        queue: &queue,
        delivered,
        max_deliveries,
        terminate: &terminate,
    };
    run_bound(
        &shared,
        &task,
        &envelope,
        delivery,
        future,
        continuation,
        handle,
    )
    .await;
    drop(credit);
}

/// How a message came to this run: what the end of the run needs besides the task.
struct Delivery<'a> {
    message: &'a jetstream::Message,
    queue: &'a QueueName,
    /// Deliveries of the message so far, this one included.
    delivered: u64,
    /// Deliveries allowed (the task's own limit, or the worker's).
    max_deliveries: u32,
    /// Cancelled to terminate the run.
    terminate: &'a CancellationToken,
}

/// The delivery limit of the message's task: its own `max_deliveries`, else the worker's.
fn max_deliveries(shared: &WorkerShared, envelope: &Envelope) -> u32 {
    shared
        .app
        .task(&envelope.task)
        .and_then(|registered| registered.options.max_deliveries_value())
        .unwrap_or(shared.max_deliveries)
}

/// Acknowledges a message whose task already has a final record, after notifying its producer and
/// sending what follows it again: the worker that stored the record may have died before doing
/// either (those sends are de-duplicated by id). A message whose record says it was dead-lettered
/// is dead-lettered again instead of acknowledged (the copy is de-duplicated), so a worker that
/// stopped between the record and the copy loses no dead letter.
async fn acknowledge_done(
    shared: &WorkerShared,
    queue: &QueueName,
    envelope: &Envelope,
    message: &jetstream::Message,
    record: ResultRecord,
) {
    tracing::info!(task_id = %envelope.id, "task already has a final result; acknowledging without running it");
    notify(shared, envelope, &record).await;
    let continuation = continuation_of(envelope, message);
    if let Err(error) = continuation.after(shared, envelope, &record).await {
        tracing::error!(task_id = %envelope.id, error = %crate::error_chain(&error), "cannot send what follows the task; it will be redelivered");
        return;
    }
    if let Some(reason) = dead_letter_reason(&record) {
        let error = record
            .error
            .as_ref()
            .map(|error| error.message.clone())
            .unwrap_or_default();
        let error = error
            .strip_prefix(&format!("{reason}: "))
            .map_or(error.clone(), str::to_owned);
        return dead_letter(shared, queue, message, reason, error).await;
    }
    ack(message).await;
}

/// The canvas that follows the task in `message`, or none when its body cannot be read.
fn continuation_of(envelope: &Envelope, message: &jetstream::Message) -> Continuation {
    envelope
        .content_type
        .decode::<TaskBody>(&message.payload)
        .map(|mut body| Continuation::take(&mut body))
        .unwrap_or_default()
}

/// The REVOKED record of a task that was revoked (itself or its canvas).
fn revoked_record(shared: &WorkerShared, envelope: &Envelope) -> Option<ResultRecord> {
    if !shared.is_revoked(envelope) {
        return None;
    }
    tracing::info!(task_id = %envelope.id, "task revoked; not running it");
    let record = shared
        .store
        .record(envelope, TaskState::Revoked)
        .with_meta(serde_json::json!({"reason": "revoked"}));
    Some(record)
}

/// The REVOKED record of a task picked up after its deadline.
fn expired_record(shared: &WorkerShared, envelope: &Envelope) -> Option<ResultRecord> {
    let expires_ms = envelope
        .expires_ms
        .filter(|expires_ms| now_ms() > *expires_ms)?;
    tracing::info!(task_id = %envelope.id, expires_ms, "task expired before it could start; not running it");
    let meta = serde_json::json!({"reason": "expired", "expires_ms": expires_ms});
    let record = shared
        .store
        .record(envelope, TaskState::Revoked)
        .with_meta(meta);
    Some(record)
}

/// True for the built-in `celerity.map` / `celerity.starmap` tasks.
fn is_builtin(envelope: &Envelope) -> bool {
    let name = envelope.task.as_str();
    name == crate::canvas::MAP_TASK || name == crate::canvas::STARMAP_TASK
}

/// The registered task that runs this message: the task itself, or for a built-in map the task it
/// runs over its items (with that task's options).
fn resolve_task(
    shared: &WorkerShared,
    envelope: &Envelope,
    body: &Result<TaskBody, celerity_proto::DecodeError>,
) -> Result<Registered, String> {
    let name = envelope.task.as_str();
    let target = if is_builtin(envelope) {
        body.as_ref()
            .ok()
            .and_then(|body| body.kwargs.get("task"))
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{name} needs a \"task\" named argument"))?
    } else {
        name
    };
    let registered = celerity_proto::TaskName::new(target)
        .ok()
        .and_then(|target| shared.app.task(&target))
        .ok_or_else(|| {
            format!(
                "no task named {target:?} is registered on worker {}",
                shared.hostname
            )
        })?;
    Ok(Registered {
        name: envelope.task.clone(),
        options: registered.options,
        run: registered.run,
    })
}

/// Records RETRY with the count, the next ETA and the error, then sends the task again after
/// `delay` (its message's bytes, with one more retry and a new ETA, through the delayed stream, at
/// the priority it came in on), then acknowledges this delivery.
///
/// RETRY is written before the retry is sent, so the retry's own record, however fast it comes,
/// is never overwritten by it.
async fn retry_later(
    shared: &WorkerShared,
    (envelope, context): (&Envelope, &TaskContext),
    message: &jetstream::Message,
    error: ErrorRecord,
    delay: Duration,
    (acks_late, task): (bool, &Registered),
) {
    let Some((queue, priority)) = shared.layout.parse_task_subject(&message.subject) else {
        tracing::error!(task_id = %envelope.id, subject = %message.subject, "cannot retry a task from an unknown subject");
        return;
    };
    let mut next = envelope.clone();
    next.retries += 1;
    // NOTE(protocol): the subject is authoritative for the priority, not the header (3.1).
    next.priority = priority;
    let eta_ms = now_ms().saturating_add(delay.as_millis() as u64);
    next.eta_ms = Some(eta_ms);
    let meta = serde_json::json!({"retries": next.retries, "eta_ms": eta_ms});
    let mut record = shared
        .store
        .record(envelope, TaskState::Retry)
        .with_error(error)
        .with_meta(meta);
    record.retries = next.retries;
    if let Ok(bytes) = ResultStore::encode(&record, envelope.content_type)
        && let Err(store_error) = shared.store.put_encoded(&envelope.id, bytes).await
    {
        tracing::warn!(task_id = %envelope.id, error = %crate::error_chain(&store_error), "cannot record the RETRY state");
    }
    let sent = shared
        .dispatcher
        .publisher()
        .publish_bytes(
            &next,
            message.payload.clone(),
            &queue,
            crate::publisher::Pending::Skip,
        )
        .await;
    if let Err(send_error) = sent {
        tracing::error!(task_id = %envelope.id, error = %crate::error_chain(&send_error), "cannot send the retry");
        if acks_late {
            // Not acknowledged: the delivery comes back and the retry is tried again.
            return;
        }
        // Acknowledged before it ran: nothing comes back, so the task ends here, failed.
        let error = record
            .error
            .take()
            .unwrap_or_else(|| ErrorRecord::new("celerity::Retry", "retry"));
        let failed = shared
            .store
            .record(envelope, TaskState::Failure)
            .with_error(error);
        store_final(shared, envelope, &failed).await;
        return;
    }
    let error = record
        .error
        .take()
        .unwrap_or_else(|| ErrorRecord::new("celerity::Retry", "retry"));
    tracing::info!(task_id = %envelope.id, retry = next.retries, delay_ms = delay.as_millis() as u64, error = %error, "task will be retried");
    if let Some(hooks) = task.options.hooks_value() {
        run_hook(&envelope.id, hooks.on_retry(context, &error, next.retries)).await;
        run_hook(&envelope.id, hooks.after_return(context, &TaskState::Retry)).await;
    }
    if acks_late {
        ack(message).await;
    }
}

/// Runs one hook; a panicking hook is logged and the run goes on.
async fn run_hook(task_id: &celerity_proto::TaskId, hook: crate::task::HookFuture<'_>) {
    use futures_util::FutureExt;
    if let Err(panic) = std::panic::AssertUnwindSafe(hook).catch_unwind().await {
        let message = panic_record(panic).message;
        tracing::error!(task_id = %task_id, panic = %message, "a task hook panicked");
    }
}

/// The failure of a task that asked for a retry once its retries were used up.
fn given_up(error: ErrorRecord, retries: u32) -> ErrorRecord {
    if error.kind.ends_with("Retry") || error.message == crate::task::Retry.to_string() {
        // The task returned the bare retry request: say what happened instead.
        ErrorRecord::new(
            "celerity::MaxRetriesExceeded",
            format!("the task asked for a retry after {retries} retries, its maximum"),
        )
    } else {
        error
    }
}

/// Moves a task that is not due yet to the delayed stream, then acknowledges it here.
async fn hold_until_due(
    shared: &WorkerShared,
    queue: &QueueName,
    message: &jetstream::Message,
    envelope: &Envelope,
) {
    let mut headers = crate::nats::headers::republished_headers(message.headers.as_ref());
    let hold_id = format!(
        "{}-hold-{}",
        envelope.message_id(),
        envelope.eta_ms.unwrap_or(0)
    );
    headers.insert(celerity_proto::header::NATS_MSG_ID, hold_id.as_str());
    // NOTE(protocol): a delayed subject has no priority token, so the priority of the subject the
    // task came on goes into `Celerity-Priority`, where the scheduler reads it.
    if let Some((_, priority)) = shared.layout.parse_task_subject(&message.subject) {
        headers.insert(
            celerity_proto::header::PRIORITY,
            priority.to_string().as_str(),
        );
    }
    let subject = shared.layout.delayed_subject(queue);
    let moved = async {
        shared
            .js
            .publish_with_headers(subject, headers, message.payload.clone())
            .await?
            .await
    };
    match moved.await {
        Ok(_) => ack(message).await,
        Err(error) => {
            tracing::warn!(task_id = %envelope.id, error = %error, "cannot move a task that is not due yet; retrying in 1 s");
            let delay = Some(Duration::from_secs(1));
            shared.handbacks.hand_back(message, delay).await;
        }
    }
}

/// Records a task that will not run because it was revoked or expired, runs what follows that,
/// and acknowledges its message. A task that has a final record already (a chord body sent twice,
/// which ran) keeps it.
async fn finish_without_running(
    shared: &WorkerShared,
    queue: &QueueName,
    envelope: &Envelope,
    message: &jetstream::Message,
    record: ResultRecord,
) {
    if let Some(done) = final_record(&shared.store, envelope).await {
        return acknowledge_done(shared, queue, envelope, message, done).await;
    }
    let continuation = continuation_of(envelope, message);
    finish_with(shared, envelope, message, continuation, record).await;
}

/// Records a task that will not run (failed or revoked), runs what follows that, and acknowledges
/// its message.
async fn finish_with(
    shared: &WorkerShared,
    envelope: &Envelope,
    message: &jetstream::Message,
    continuation: Continuation,
    record: ResultRecord,
) {
    if !store_final(shared, envelope, &record).await {
        return;
    }
    if let Err(error) = continuation.after(shared, envelope, &record).await {
        tracing::error!(task_id = %envelope.id, error = %crate::error_chain(&error), "cannot send what follows the task; it will be redelivered");
        return;
    }
    ack(message).await;
}

/// Dead-letters a task whose envelope is valid, and tells its producer and its canvas: once the
/// copy is stored, the task fails with `celerity::DeadLettered` (`meta.reason` the dead-letter
/// reason; unless it already has a final record), what follows a failure runs (errbacks, the
/// chain's later steps fail, its chord hears of it), and then the message leaves the queue, so
/// nobody waits on a task that will never run.
async fn reject(
    shared: &WorkerShared,
    queue: &QueueName,
    message: &jetstream::Message,
    envelope: &Envelope,
    reason: DeadLetterReason,
    error: String,
) {
    let continuation = continuation_of(envelope, message);
    let dead = DeadTask {
        envelope,
        continuation: &continuation,
    };
    dead_letter_task(shared, queue, message, dead, reason, error).await;
}

/// The dead-letter reason of a record that [`reject`] wrote.
fn dead_letter_reason(record: &ResultRecord) -> Option<DeadLetterReason> {
    let error = record.error.as_ref()?;
    if record.state != TaskState::Failure || error.kind != "celerity::DeadLettered" {
        return None;
    }
    let code = record.meta.as_ref()?.get("reason")?.as_str()?;
    DeadLetterReason::parse(code)
}

async fn run_bound(
    shared: &WorkerShared,
    task: &Registered,
    envelope: &Envelope,
    delivery: Delivery<'_>,
    future: TaskFuture,
    continuation: Continuation,
    context: TaskContext,
) {
    let message = delivery.message;
    let acks_late = task.options.is_acks_late();
    if !acks_late {
        ack(message).await;
    }
    if shared.app.settings().track_received {
        write_state(shared, envelope, TaskState::Received).await;
    }
    // With a prefetch multiplier above 1 a fetched task may wait here for an execution slot.
    let _slot = shared.slots.acquire().await;
    let started_at = now_ms();
    if task.options.is_track_started() {
        write_state(shared, envelope, TaskState::Started).await;
    }
    let limits = (task.options.soft_time_limit(), task.options.time_limit());
    let ran = run_body(future, limits, context.cancel_token(), delivery.terminate).await;
    let mut record = match ran {
        Ran::Terminated => shared
            .store
            .record(envelope, TaskState::Revoked)
            .with_meta(serde_json::json!({"reason": "terminated"})),
        Ran::Finished(outcome) => {
            let outcome = match (outcome, context.take_retry_request()) {
                (Err(error), request)
                    if request.is_some() || task.options.retries_automatically(&error.kind) =>
                {
                    if envelope.retries < task.options.max_retries_value() {
                        let retry = envelope.retries + 1;
                        let delay = request
                            .and_then(|request| request.countdown)
                            .unwrap_or_else(|| {
                                task.options.retry_delay(retry, super::random_unit())
                            });
                        return retry_later(
                            shared,
                            (envelope, &context),
                            message,
                            error,
                            delay,
                            (acks_late, task),
                        )
                        .await;
                    }
                    Err(given_up(error, envelope.retries))
                }
                (outcome, _) => outcome,
            };
            match outcome {
                Ok(value) => shared
                    .store
                    .record(envelope, TaskState::Success)
                    .with_result(value),
                Err(error) => {
                    tracing::warn!(task = %envelope.task, task_id = %envelope.id, error = %error, "task failed");
                    shared
                        .store
                        .record(envelope, TaskState::Failure)
                        .with_error(error)
                }
            }
        }
    };
    record.started_at_ms = Some(started_at);
    end_run(
        shared,
        task,
        envelope,
        &delivery,
        continuation,
        &context,
        record,
    )
    .await;
}

/// Ends a run that produced `record`: stores it (unless results are ignored), sends what follows,
/// runs the hooks and acknowledges the message.
async fn end_run(
    shared: &WorkerShared,
    task: &Registered,
    envelope: &Envelope,
    delivery: &Delivery<'_>,
    continuation: Continuation,
    context: &TaskContext,
    mut record: ResultRecord,
) {
    // Whatever the body still does (a blocking one cannot be stopped), its state is final now.
    context.end();
    let message = delivery.message;
    let keep_result = !task.options.is_ignore_result() || continuation.reports_to_chord();
    let encoded = match keep_result {
        true => match encode_within_limit(shared, envelope, &mut record) {
            Some(bytes) => Some(bytes),
            None => return,
        },
        false => None,
    };
    let store = async {
        match &encoded {
            Some(bytes) => store_encoded(shared, envelope, bytes.clone()).await,
            None => true,
        }
    };
    let follow = async {
        if continuation.is_empty() {
            return Ok(());
        }
        continuation.after(shared, envelope, &record).await
    };
    // What follows is sent while the record is stored when it does not read it (a chain's next
    // step carries the value in its message): one round trip less per chain step.
    let (stored, followed) = if continuation.reads_no_record() {
        // What follows first: a chain's next step is stored (and delivered) before this record.
        let (followed, stored) = tokio::join!(follow, store);
        (stored, followed)
    } else {
        match store.await {
            true => (true, follow.await),
            false => (false, Ok(())),
        }
    };
    if !stored {
        if task.options.is_acks_late() && delivery.delivered >= u64::from(delivery.max_deliveries) {
            // The last delivery allowed: dead-lettered now rather than run once more for nothing.
            let error = format!(
                "the task ran {} times and its result could not be stored any time (is the results bucket full?)",
                delivery.delivered
            );
            let reason = DeadLetterReason::ResultNotStored;
            let dead = DeadTask {
                envelope,
                continuation: &continuation,
            };
            return dead_letter_task(shared, delivery.queue, message, dead, reason, error).await;
        }
        // Not acknowledged: the message is redelivered after AckWait and the task runs again
        // (what follows, if it was sent, is sent again under the same ids and de-duplicated).
        return;
    }
    if let Err(error) = followed {
        // Not acknowledged: the redelivered message finds the stored result and sends what
        // follows again without running the task.
        tracing::error!(task_id = %envelope.id, error = %crate::error_chain(&error), "cannot send what follows the task; it will be redelivered");
        return;
    }
    if let Some(hooks) = task.options.hooks_value() {
        match (&record.state, &record.result, &record.error) {
            (TaskState::Revoked, _, _) => {}
            (_, _, Some(error)) => run_hook(&envelope.id, hooks.on_failure(context, error)).await,
            (_, result, None) => {
                run_hook(
                    &envelope.id,
                    hooks.on_success(context, result.as_ref().unwrap_or(&Value::Null)),
                )
                .await
            }
        }
        run_hook(&envelope.id, hooks.after_return(context, &record.state)).await;
    }
    if task.options.is_acks_late() {
        ack(message).await;
    }
}

async fn ack(message: &jetstream::Message) {
    if let Err(error) = message.ack().await {
        tracing::warn!(error = %error, "cannot acknowledge a message; it will be redelivered and recognised as done");
    }
}
