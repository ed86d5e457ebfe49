//! `Observer`: where the task pipeline tells what happens to its tasks, and the one place that
//! turns it into what others see: signal hooks, task events, Prometheus metrics, and the counts
//! heartbeats carry.
//!
//! The pipeline calls it at each moment of a delivery (taken, started, ran, retried, ended without
//! running, dead-lettered); each call is synchronous and cheap (an event is a push onto the
//! emitter's channel), so a task never waits for its observers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use celerity_proto::{
    DeadLetterReason, Envelope, ErrorRecord, QueueName, ResultRecord, TaskEvent, TaskEventKind,
    TaskId, TaskName, TaskState, WorkerEvent, WorkerEventKind,
};
use serde_json::Value;

use crate::clock::now_ms;
use crate::events::Emitter;
use crate::signals::{
    Signals, TaskFailure, TaskPostrun, TaskPrerun, TaskRejected, TaskRetry, TaskRevoked,
    TaskSuccess,
};
use crate::task::TaskContext;
use crate::worker::held::{Held, Tally};
use crate::worker::metrics::Metrics;

/// What workers call their software in events and stats.
const SOFTWARE: &str = concat!("celerity ", env!("CARGO_PKG_VERSION"));

/// What a worker's task pipeline reports to.
pub(crate) struct Observer {
    hostname: Arc<str>,
    signals: Signals,
    /// `None` when the worker runs `--without-events`.
    events: Option<Emitter>,
    metrics: Metrics,
    tally: Tally,
    /// Set once the worker consumes (`/readyz`).
    consuming: AtomicBool,
    /// Where the worker serves its HTTP endpoint, told in its worker events.
    http: Option<std::net::SocketAddr>,
    started: std::time::Instant,
}

impl Observer {
    pub(crate) fn new(hostname: Arc<str>, signals: Signals, events: Option<Emitter>) -> Self {
        Self {
            hostname,
            signals,
            events,
            metrics: Metrics::new(std::iter::empty(), &[], 0),
            tally: Tally::default(),
            consuming: AtomicBool::new(false),
            http: None,
            started: std::time::Instant::now(),
        }
    }

    /// The worker's figures for `stats`.
    pub(crate) fn stats(
        &self,
        queues: &[String],
        concurrency: usize,
    ) -> celerity_proto::StatsResult {
        let mut stats = celerity_proto::StatsResult::new(std::process::id(), SOFTWARE);
        stats.uptime_s = self.started.elapsed().as_secs();
        stats.concurrency = concurrency;
        stats.queues = queues.to_vec();
        stats.active = self.tally.active();
        stats.reserved = self.tally.reserved();
        stats.processed = self.tally.processed();
        stats.events = self.events.is_some();
        stats.http = self.http.map(|addr| addr.to_string());
        stats
    }

    /// Counts in `metrics`, and names `http` in the worker events.
    pub(crate) fn with_metrics(
        mut self,
        metrics: Metrics,
        http: Option<std::net::SocketAddr>,
    ) -> Self {
        self.metrics = metrics;
        self.http = http;
        self
    }

    pub(crate) fn tally(&self) -> &Tally {
        &self.tally
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The worker consumes from now on.
    pub(crate) fn set_consuming(&self) {
        self.consuming.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_consuming(&self) -> bool {
        self.consuming.load(Ordering::Relaxed)
    }

    /// A task with a rate limit waited `waited` for it.
    pub(crate) fn rate_limited(&self, task: &TaskName, waited: Duration) {
        self.metrics.rate_limited(task, waited);
    }

    pub(crate) fn signals(&self) -> &Signals {
        &self.signals
    }

    pub(crate) fn events(&self) -> Option<&Emitter> {
        self.events.as_ref()
    }

    /// A delivery arrived: counted reserved until it starts; `task-received` when its envelope is
    /// valid.
    pub(crate) fn taken(
        &self,
        envelope: Option<&Envelope>,
        queue: &QueueName,
        delivered: u64,
        body: &bytes::Bytes,
    ) -> Held<'_> {
        let held = self.tally.hold(envelope, queue, delivered, body);
        if delivered > 1 {
            self.metrics.redelivered(queue);
        }
        if let (Some(events), Some(envelope)) = (&self.events, envelope) {
            let mut event = task_event(TaskEventKind::Received, envelope, Some(queue));
            event.delivered = Some(delivered);
            events.emit(event);
        }
        held
    }

    /// A task's arguments as its `task-started` event shows them, or `None` (at no cost) when the
    /// worker sends no events.
    pub(crate) fn shown_arguments(
        &self,
        args: &[Value],
        kwargs: &serde_json::Map<String, Value>,
    ) -> Option<ShownArguments> {
        self.events.as_ref()?;
        Some(ShownArguments {
            args: celerity_proto::arguments_text(args),
            kwargs: celerity_proto::arguments_text(kwargs),
        })
    }

    /// A body is about to run: `task_prerun`, `task-started` with the time it waited since it
    /// was sent and the arguments it was sent with.
    pub(crate) fn started(
        &self,
        context: &TaskContext,
        held: &mut Held<'_>,
        arguments: Option<ShownArguments>,
    ) {
        held.start();
        self.signals.fire_task_prerun(&TaskPrerun { context });
        let envelope = context.envelope();
        let now = now_ms();
        let wait_ms = envelope.sent_at_ms.map(|sent| now.saturating_sub(sent));
        self.metrics
            .started(&envelope.task, wait_ms.map(Duration::from_millis));
        if let Some(events) = &self.events {
            let mut event = task_event(TaskEventKind::Started, envelope, queue_of(context));
            event.wait_ms = wait_ms;
            if let Some(ShownArguments { args, kwargs }) = arguments {
                event.args = Some(args);
                event.kwargs = Some(kwargs);
            }
            events.emit(event);
        }
    }

    /// A body ended in `record` (SUCCESS, FAILURE, or REVOKED when terminated), stored: the
    /// success, failure or revoked signal and event, then `task_postrun`.
    pub(crate) fn ran(&self, context: &TaskContext, record: &ResultRecord, runtime: Duration) {
        let signals = &self.signals;
        let result = record.result.as_ref();
        match (&record.state, &record.error) {
            (TaskState::Revoked, _) => {
                let envelope = context.envelope();
                signals.fire_task_revoked(&TaskRevoked {
                    envelope,
                    reason: "terminated",
                });
            }
            (_, Some(error)) => signals.fire_task_failure(&TaskFailure {
                context,
                error,
                runtime,
            }),
            (_, None) => signals.fire_task_success(&TaskSuccess {
                context,
                result: result.unwrap_or(&Value::Null),
                runtime,
            }),
        }
        signals.fire_task_postrun(&TaskPostrun {
            context,
            state: &record.state,
            result,
            runtime,
        });
        let task = context.task_name();
        self.metrics.ended(task, &record.state);
        self.metrics.ran(task, runtime);
        let error = record.error.as_ref().map(|error| error.message.as_str());
        crate::telemetry::record_state(record.state.as_str(), error);
        if let Some(events) = &self.events {
            let envelope = context.envelope();
            let kind = match (&record.state, &record.error) {
                (TaskState::Revoked, _) => TaskEventKind::Revoked,
                (_, Some(_)) => TaskEventKind::Failed,
                (_, None) => TaskEventKind::Succeeded,
            };
            let mut event = task_event(kind, envelope, queue_of(context));
            event.runtime_ms = Some(runtime.as_secs_f64() * 1_000.0);
            event.error = record.error.clone();
            if kind == TaskEventKind::Revoked {
                event.reason = Some("terminated".to_owned());
            }
            events.emit(event);
        }
    }

    /// A body failed and the task was sent again: `task_retry`, `task-retried`, `task_postrun`.
    pub(crate) fn retried(&self, context: &TaskContext, retry: &Retried<'_>) {
        let Retried {
            error,
            retries,
            delay,
            runtime,
        } = *retry;
        self.signals.fire_task_retry(&TaskRetry {
            context,
            error,
            retries,
            delay,
        });
        self.signals.fire_task_postrun(&TaskPostrun {
            context,
            state: &TaskState::Retry,
            result: None,
            runtime,
        });
        self.metrics.retried(context.task_name());
        self.metrics.ran(context.task_name(), runtime);
        crate::telemetry::record_state(TaskState::Retry.as_str(), Some(&error.message));
        if let Some(events) = &self.events {
            let mut event = task_event(
                TaskEventKind::Retried,
                context.envelope(),
                queue_of(context),
            );
            event.retries = retries;
            event.runtime_ms = Some(runtime.as_secs_f64() * 1_000.0);
            event.eta_ms = Some(event.at_ms.saturating_add(delay.as_millis() as u64));
            event.error = Some(error.clone());
            events.emit(event);
        }
    }

    /// A task ended without its body running, in `record` (stored): revoked or expired
    /// (`task_revoked`, `task-revoked`), or failed (a chord body whose header failed:
    /// `task-failed`).
    pub(crate) fn ended_unrun(
        &self,
        envelope: &Envelope,
        queue: Option<&QueueName>,
        record: &ResultRecord,
    ) {
        let reason = record
            .meta
            .as_ref()
            .and_then(|meta| meta.get("reason"))
            .and_then(Value::as_str)
            .unwrap_or("revoked");
        let kind = match record.state {
            TaskState::Revoked => {
                self.signals
                    .fire_task_revoked(&TaskRevoked { envelope, reason });
                TaskEventKind::Revoked
            }
            _ => TaskEventKind::Failed,
        };
        self.metrics.ended(&envelope.task, &record.state);
        crate::telemetry::record_state(record.state.as_str(), None);
        if let Some(events) = &self.events {
            let mut event = task_event(kind, envelope, queue);
            match kind {
                TaskEventKind::Revoked => event.reason = Some(reason.to_owned()),
                _ => event.error = record.error.clone(),
            }
            events.emit(event);
        }
    }

    /// A task message was dead-lettered: `task_rejected`, `task-rejected`.
    pub(crate) fn rejected(&self, rejected: &Rejected<'_>) {
        let Rejected {
            task_id,
            task,
            queue,
            reason,
            error,
        } = *rejected;
        self.signals.fire_task_rejected(&TaskRejected {
            task_id,
            task,
            queue,
            reason,
            error,
        });
        self.metrics.dead_lettered(reason);
        crate::telemetry::record_state("REJECTED", Some(error));
        if let Some(task) = task {
            self.metrics.ended(task, &TaskState::Failure);
        }
        if let Some(events) = &self.events {
            let id = task_id.map_or("", TaskId::as_str);
            let name = task.map_or("", TaskName::as_str);
            let mut event = TaskEvent::new(TaskEventKind::Rejected, id, name, now_ms());
            event.queue = Some(queue.to_string());
            event.reason = Some(reason.code().to_owned());
            event.error = Some(ErrorRecord::new(
                celerity_proto::DeadLetter::ERROR_KIND,
                error,
            ));
            events.emit(event);
        }
    }

    /// The worker's state now, as a worker event of `kind`.
    pub(crate) fn worker_event(
        &self,
        kind: WorkerEventKind,
        queues: &[QueueName],
        concurrency: usize,
    ) -> WorkerEvent {
        let mut event = WorkerEvent::new(kind, self.hostname.as_ref(), now_ms());
        event.pid = std::process::id();
        event.software = SOFTWARE.to_owned();
        event.queues = queues.iter().map(ToString::to_string).collect();
        event.concurrency = u32::try_from(concurrency).unwrap_or(u32::MAX);
        event.active = self.tally.active();
        event.reserved = self.tally.reserved();
        event.processed = self.tally.processed();
        event.load = load_average();
        event.http = self.http.map(|addr| addr.to_string());
        event
    }
}

/// A task's `args` and `kwargs` as bounded JSON text ([`celerity_proto::arguments_text`]), for
/// [`Observer::started`].
pub(crate) struct ShownArguments {
    args: String,
    kwargs: String,
}

/// A retry that was sent, for [`Observer::retried`].
#[derive(Clone, Copy)]
pub(crate) struct Retried<'a> {
    pub(crate) error: &'a ErrorRecord,
    /// The retry's number.
    pub(crate) retries: u32,
    pub(crate) delay: Duration,
    /// How long the failed body ran.
    pub(crate) runtime: Duration,
}

/// A dead-lettered message, for [`Observer::rejected`].
#[derive(Clone, Copy)]
pub(crate) struct Rejected<'a> {
    pub(crate) task_id: Option<&'a TaskId>,
    pub(crate) task: Option<&'a TaskName>,
    pub(crate) queue: &'a QueueName,
    pub(crate) reason: DeadLetterReason,
    pub(crate) error: &'a str,
}

/// A task event of `kind` with what the envelope tells, now.
fn task_event(kind: TaskEventKind, envelope: &Envelope, queue: Option<&QueueName>) -> TaskEvent {
    TaskEvent::of_envelope(kind, envelope, queue, now_ms())
}

fn queue_of(context: &TaskContext) -> Option<&QueueName> {
    context
        .delivery_info()
        .map(|delivery| delivery.queue_name())
}

/// The host's load averages (`/proc/loadavg`), where the system has them.
fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    Some([
        fields.next()?.ok()?,
        fields.next()?.ok()?,
        fields.next()?.ok()?,
    ])
}
