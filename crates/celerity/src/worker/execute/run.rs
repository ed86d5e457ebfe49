//! A task's run once its checks passed: the early ack (`acks_late = false`), RECEIVED and
//! STARTED, the execution slot, the body (`body.rs`), then its end: the result record, what
//! follows the task, the hooks; or its retry.
//!
//! Returns the message's outcome; nothing here acknowledges a message but [`ack_before_run`].

use std::time::Duration;

use async_nats::jetstream;
use celerity_proto::{DeadLetterReason, Envelope, ErrorRecord, QueueName, ResultRecord, TaskState};
use serde_json::Value;
use tokio::sync::SemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::body::{Ran, TimeLimits, run_body};
use crate::__private::panic_record;
use crate::clock::now_ms;
use crate::result_store::ResultStore;
use crate::task::{Registered, RetryRequest, TaskContext, TaskFuture};
use crate::worker::WorkerShared;
use crate::worker::continuation::Continuation;
use crate::worker::held::Held;
use crate::worker::observe::{Retried, ShownArguments};
use crate::worker::outcome::{Outcome, Rejection, ack_before_run};
use crate::worker::records::{encode_within_limit, message_ref, write_state};

/// How a message came to this run: what the end of the run needs besides the task.
pub(super) struct Delivery<'a> {
    pub(super) message: &'a jetstream::Message,
    pub(super) queue: &'a QueueName,
    /// Deliveries of the message so far, this one included.
    pub(super) delivered: u64,
    /// Deliveries allowed (the task's own limit, or the worker's).
    pub(super) max_deliveries: u32,
    /// Cancelled to terminate the run.
    pub(super) terminate: &'a CancellationToken,
}

/// One run of a task whose body is bound to its arguments.
pub(super) struct TaskRun<'r, 'e> {
    pub(super) shared: &'e WorkerShared,
    pub(super) task: &'r Registered,
    pub(super) envelope: &'e Envelope,
    pub(super) delivery: Delivery<'r>,
    /// The run's context (the body holds a clone).
    pub(super) context: TaskContext,
    /// Its count among the worker's reserved tasks, active once the body starts.
    pub(super) held: &'r mut Held<'e>,
    /// Its arguments for the `task-started` event (`None` without events).
    pub(super) arguments: Option<ShownArguments>,
}

impl<'e> TaskRun<'_, 'e> {
    /// Runs the body in an execution slot (kept in `slot` until the outcome is applied) and ends
    /// the run. A task acknowledged before it ran ends [`Outcome::Acknowledged`] whatever happens.
    pub(super) async fn run(
        mut self,
        future: TaskFuture,
        continuation: Continuation,
        slot: &mut Option<SemaphorePermit<'e>>,
    ) -> Outcome<'e> {
        let (shared, envelope) = (self.shared, self.envelope);
        let acks_late = self.task.options.is_acks_late();
        if !acks_late {
            ack_before_run(self.delivery.message).await;
        }
        if shared.app.settings().track_received {
            write_state(shared, envelope, TaskState::Received).await;
        }
        // With a prefetch multiplier above 1 a fetched task may wait here for an execution slot.
        *slot = shared.pool.slots.acquire().await.ok();
        let started_at = now_ms();
        if self.task.options.is_track_started() {
            write_state(shared, envelope, TaskState::Started).await;
        }
        let limits = TimeLimits {
            soft: self.task.options.soft_time_limit(),
            hard: self.task.options.time_limit(),
        };
        let cancel = self.context.cancel_token();
        let arguments = self.arguments.take();
        shared.observer.started(&self.context, self.held, arguments);
        let started = std::time::Instant::now();
        let ran = run_body(future, limits, cancel, self.delivery.terminate).await;
        let runtime = started.elapsed();
        let outcome = match self.record_of(ran) {
            Ended::Record(mut record) => {
                record.started_at_ms = Some(started_at);
                self.end(continuation, record, runtime).await
            }
            Ended::Retry { error, delay } => self.retry_later(error, delay, runtime).await,
        };
        match acks_late {
            true => outcome,
            false => Outcome::Acknowledged,
        }
    }

    /// What a body's end means: a record, or a retry when the task asked for one (or failed
    /// with an `autoretry_for` error) and has retries left.
    fn record_of(&self, ran: Ran) -> Ended {
        let (shared, envelope, options) = (self.shared, self.envelope, &self.task.options);
        let outcome = match ran {
            Ran::Terminated => {
                let record = shared
                    .store
                    .record(envelope, TaskState::Revoked)
                    .with_meta(serde_json::json!({"reason": "terminated"}));
                return Ended::Record(record);
            }
            Ran::Finished(outcome) => outcome,
        };
        let outcome = match (outcome, self.context.take_retry_request()) {
            (Err(error), request)
                if request.is_some() || options.retries_automatically(&error.kind) =>
            {
                if envelope.retries < options.max_retries_value() {
                    let retry = envelope.retries + 1;
                    let delay = request
                        .and_then(|request| request.countdown)
                        .unwrap_or_else(|| {
                            options.retry_delay(retry, crate::worker::random_unit())
                        });
                    return Ended::Retry { error, delay };
                }
                Err(given_up(error, request.as_ref(), envelope.retries))
            }
            (outcome, _) => outcome,
        };
        Ended::Record(match outcome {
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
        })
    }

    /// Ends a run that produced `record` after `runtime`: stores it (unless results are
    /// ignored), sends what follows and runs the hooks and signals; acknowledged then.
    async fn end(
        &self,
        continuation: Continuation,
        mut record: ResultRecord,
        runtime: Duration,
    ) -> Outcome<'e> {
        let (shared, envelope) = (self.shared, self.envelope);
        // Whatever the body still does (a blocking one cannot be stopped), its state is final now.
        self.context.end();
        // NOTE(protocol): a final record names its message, so another message with the same id
        // does not replace it (5.1).
        record.message = message_ref(self.delivery.message);
        let keep_result = !self.task.options.is_ignore_result() || continuation.reports_to_chord();
        let encoded = match keep_result {
            true => match encode_within_limit(shared, envelope, &mut record) {
                Some(bytes) => Some(bytes),
                None => return Outcome::Redeliver,
            },
            false => None,
        };
        let (stored, followed) = self.store_and_follow(&continuation, encoded, &record).await;
        if !stored {
            return self.not_stored(continuation);
        }
        if let Err(error) = followed {
            // Not acknowledged: the redelivered message finds the stored result and sends what
            // follows again without running the task.
            tracing::error!(task_id = %envelope.id, error = %crate::error_chain(&error), "cannot send what follows the task; it will be redelivered");
            return Outcome::Redeliver;
        }
        crate::fault::crash_point(crate::fault::AFTER_RESULT_PUT, &envelope.task);
        self.run_end_hooks(&record).await;
        shared.observer.ran(&self.context, &record, runtime);
        Outcome::Ack
    }

    /// Stores the encoded record (none: results are ignored) and sends what follows the task;
    /// whether the record was stored, and whether what follows was sent.
    async fn store_and_follow(
        &self,
        continuation: &Continuation,
        encoded: Option<bytes::Bytes>,
        record: &ResultRecord,
    ) -> (bool, Result<(), crate::error::EnqueueError>) {
        let (shared, envelope) = (self.shared, self.envelope);
        let store = async {
            match &encoded {
                Some(bytes) => shared.store.store_encoded(envelope, bytes.clone()).await,
                None => true,
            }
        };
        let follow = async {
            if continuation.is_empty() {
                return Ok(());
            }
            continuation.after(shared, envelope, record).await
        };
        // What follows is sent while the record is stored when it does not read it (a chain's next
        // step carries the value in its message): one round trip less per chain step.
        if continuation.reads_no_record() {
            // What follows first: a chain's next step is stored (and delivered) before this record.
            let (followed, stored) = tokio::join!(follow, store);
            (stored, followed)
        } else {
            match store.await {
                true => (true, follow.await),
                false => (false, Ok(())),
            }
        }
    }

    /// The outcome of a run whose record could not be stored: redelivered to run again, or on
    /// the last delivery allowed, dead-lettered `result_not_stored` rather than run once more for
    /// nothing.
    fn not_stored(&self, continuation: Continuation) -> Outcome<'e> {
        let delivery = &self.delivery;
        if self.task.options.is_acks_late()
            && delivery.delivered >= u64::from(delivery.max_deliveries)
        {
            let error = format!(
                "the task ran {} times and its result could not be stored any time (is the results bucket full?)",
                delivery.delivered
            );
            let reason = DeadLetterReason::ResultNotStored;
            let rejection = Rejection::task(self.envelope, reason, error);
            return Outcome::DeadLetter(rejection.followed_by(continuation));
        }
        // Not acknowledged: the message is redelivered after AckWait and the task runs again
        // (what follows, if it was sent, is sent again under the same ids and de-duplicated).
        Outcome::Redeliver
    }

    /// Runs the success or failure hook (none for a revoked task), then `after_return`.
    async fn run_end_hooks(&self, record: &ResultRecord) {
        let Some(hooks) = self.task.options.hooks_value() else {
            return;
        };
        let (task_id, context) = (&self.envelope.id, &self.context);
        match (&record.state, &record.result, &record.error) {
            (TaskState::Revoked, _, _) => {}
            (_, _, Some(error)) => run_hook(task_id, hooks.on_failure(context, error)).await,
            (_, result, None) => {
                let value = result.as_ref().unwrap_or(&Value::Null);
                run_hook(task_id, hooks.on_success(context, value)).await
            }
        }
        run_hook(task_id, hooks.after_return(context, &record.state)).await;
    }

    /// Records RETRY with the count, the next ETA and the error, then sends the task again after
    /// `delay` (its message's bytes, with one more retry and a new ETA, through the delayed
    /// stream, at the priority it came in on); acknowledged then.
    ///
    /// RETRY is written before the retry is sent, so the retry's own record, however fast it
    /// comes, is never overwritten by it.
    async fn retry_later(
        &self,
        error: ErrorRecord,
        delay: Duration,
        runtime: Duration,
    ) -> Outcome<'e> {
        let (shared, envelope, message) = (self.shared, self.envelope, self.delivery.message);
        let Some((queue, priority)) = shared.layout.parse_task_subject(&message.subject) else {
            tracing::error!(task_id = %envelope.id, subject = %message.subject, "cannot retry a task from an unknown subject");
            return Outcome::Redeliver;
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
        let error = record
            .error
            .take()
            .unwrap_or_else(|| ErrorRecord::new("celerity::Retry", "retry"));
        if let Err(send_error) = sent {
            tracing::error!(task_id = %envelope.id, error = %crate::error_chain(&send_error), "cannot send the retry");
            return self.retry_not_sent(error).await;
        }
        tracing::info!(task_id = %envelope.id, retry = next.retries, delay_ms = delay.as_millis() as u64, error = %error, "task will be retried");
        if let Some(hooks) = self.task.options.hooks_value() {
            let context = &self.context;
            run_hook(&envelope.id, hooks.on_retry(context, &error, next.retries)).await;
            run_hook(&envelope.id, hooks.after_return(context, &TaskState::Retry)).await;
        }
        let retried = Retried {
            error: &error,
            retries: next.retries,
            delay,
            runtime,
        };
        shared.observer.retried(&self.context, &retried);
        Outcome::Ack
    }

    /// The outcome of a retry that could not be sent: redelivered, so it is tried again; or, for
    /// a task acknowledged before it ran (nothing comes back), the task ends here, failed.
    async fn retry_not_sent(&self, error: ErrorRecord) -> Outcome<'e> {
        if self.task.options.is_acks_late() {
            return Outcome::Redeliver;
        }
        let failed = self
            .shared
            .store
            .record(self.envelope, TaskState::Failure)
            .with_error(error);
        self.shared.store.store_final(self.envelope, &failed).await;
        Outcome::Acknowledged
    }
}

/// How a body's end is recorded.
// A value returned once per run and matched at once: boxing the record would add an allocation
// per task to save a copy.
#[expect(clippy::large_enum_variant)]
enum Ended {
    /// With this record.
    Record(ResultRecord),
    /// As a retry after `delay`, failed with `error`.
    Retry { error: ErrorRecord, delay: Duration },
}

/// Runs one hook; a panicking hook is logged and the run goes on.
async fn run_hook(task_id: &celerity_proto::TaskId, hook: crate::task::HookFuture<'_>) {
    use futures_util::FutureExt;
    if let Err(panic) = std::panic::AssertUnwindSafe(hook).catch_unwind().await {
        let message = panic_record(panic).message;
        tracing::error!(task_id = %task_id, panic = %message, "a task hook panicked");
    }
}

/// The failure of a task that asked for a retry once its retries were used up: its error, or
/// when its error was the bare retry request itself, what happened.
fn given_up(error: ErrorRecord, request: Option<&RetryRequest>, retries: u32) -> ErrorRecord {
    if request.is_some_and(|request| request.bare) {
        ErrorRecord::new(
            "celerity::MaxRetriesExceeded",
            format!("the task asked for a retry after {retries} retries, its maximum"),
        )
    } else {
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_retry_given_up_says_so_and_an_error_of_its_own_is_kept() {
        let retry = ErrorRecord::new("anyhow::Error", "retry requested");
        let bare = RetryRequest {
            countdown: None,
            bare: true,
        };
        let given = given_up(retry, Some(&bare), 3);
        assert_eq!(given.kind, "celerity::MaxRetriesExceeded");
        assert_eq!(
            given.message,
            "the task asked for a retry after 3 retries, its maximum"
        );
        let own = ErrorRecord::new("it::Flaky", "the service is down");
        assert_eq!(given_up(own.clone(), None, 3), own);
    }
}
