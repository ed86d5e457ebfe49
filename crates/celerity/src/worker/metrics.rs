//! `Metrics`: a worker's Prometheus metrics (prometheus-client), served on `/metrics` by the
//! worker's HTTP endpoint (`worker/http.rs`).
//!
//! Per-task series are made once, for the registered tasks, when the worker starts, so the hot
//! path is a map lookup and an atomic add, and no producer can add series by sending task names
//! the worker does not know (those are counted only as dead letters, by reason). Queue depths are
//! read from the priority consumers' info every [`DEPTH_INTERVAL`], not per scrape.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use celerity_proto::{DeadLetterReason, QueueName, TaskName, TaskState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// How often queue depths are read.
pub(crate) const DEPTH_INTERVAL: Duration = Duration::from_secs(5);

/// The final states `celerity_tasks_total` counts.
const FINAL_STATES: [TaskState; 3] = [TaskState::Success, TaskState::Failure, TaskState::Revoked];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskStateLabels {
    task: String,
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    task: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LevelLabels {
    queue: String,
    priority: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds, from 1 ms to about 9 minutes, doubling.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// One registered task's series.
struct TaskSeries {
    /// By final state, in the order of [`FINAL_STATES`].
    ended: [Counter; 3],
    retries: Counter,
    runtime: Histogram,
    queue_wait: Histogram,
    rate_limit_wait: Histogram,
}

/// A worker's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    tasks: HashMap<TaskName, TaskSeries>,
    redeliveries: HashMap<QueueName, Counter>,
    /// Where the series of queues added at runtime (`add_consumer`) are made.
    redeliveries_family: Family<QueueLabels, Counter>,
    dead_letters: Family<ReasonLabels, Counter>,
    depth: Family<LevelLabels, Gauge>,
    /// Each stream's bytes, size limit and messages, in that order.
    streams: [Family<StreamLabels, Gauge>; 3],
    active: Gauge,
    reserved: Gauge,
    slots: Gauge,
    reconnects: Counter,
    events_dropped: Counter,
    spans_dropped: Counter,
    /// What `events_dropped`, `spans_dropped` and `reconnects` were last set from (running
    /// totals kept elsewhere).
    events_dropped_seen: AtomicU64,
    spans_dropped_seen: AtomicU64,
    connects_seen: AtomicU64,
}

/// The counts read at scrape time from where they are kept.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Scraped {
    /// Task bodies running.
    pub(crate) active: u32,
    /// Tasks taken and not started.
    pub(crate) reserved: u32,
    /// Execution slots (they change with `pool_grow` and `pool_shrink`).
    pub(crate) slots: usize,
    /// The emitter's dropped events so far.
    pub(crate) events_dropped: u64,
    /// The span exporter's dropped spans so far.
    pub(crate) spans_dropped: u64,
    /// Connections made so far, the first included (async-nats' `Statistics::connects`).
    pub(crate) connects: u64,
}

/// The metric families, before they are registered.
struct Families {
    ended: Family<TaskStateLabels, Counter>,
    retries: Family<TaskLabels, Counter>,
    runtime: Histograms<TaskLabels>,
    queue_wait: Histograms<TaskLabels>,
    rate_limit_wait: Histograms<TaskLabels>,
    redeliveries: Family<QueueLabels, Counter>,
    dead_letters: Family<ReasonLabels, Counter>,
    depth: Family<LevelLabels, Gauge>,
    streams: [Family<StreamLabels, Gauge>; 3],
}

impl Default for Families {
    fn default() -> Self {
        Self {
            ended: Family::default(),
            retries: Family::default(),
            runtime: Family::new_with_constructor(seconds_histogram),
            queue_wait: Family::new_with_constructor(seconds_histogram),
            rate_limit_wait: Family::new_with_constructor(seconds_histogram),
            redeliveries: Family::default(),
            dead_letters: Family::default(),
            depth: Family::default(),
            streams: Default::default(),
        }
    }
}

impl Families {
    /// The series of the registered task `name`.
    fn task(&self, name: &TaskName) -> TaskSeries {
        let task = TaskLabels {
            task: name.to_string(),
        };
        let ended = FINAL_STATES.map(|state| {
            let labels = TaskStateLabels {
                task: name.to_string(),
                state: state.to_string(),
            };
            self.ended.get_or_create_owned(&labels)
        });
        TaskSeries {
            ended,
            retries: self.retries.get_or_create_owned(&task),
            runtime: self.runtime.get_or_create_owned(&task),
            queue_wait: self.queue_wait.get_or_create_owned(&task),
            rate_limit_wait: self.rate_limit_wait.get_or_create_owned(&task),
        }
    }

    /// Registers the task and dead-letter families.
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "tasks",
            "Task runs that ended, by task and final state (SUCCESS, FAILURE, REVOKED; a dead-lettered task is a FAILURE)",
            self.ended.clone(),
        );
        registry.register(
            "task_retries",
            "Retries sent, by task",
            self.retries.clone(),
        );
        let seconds = [
            (
                "task_runtime",
                "How long task bodies ran, by task",
                &self.runtime,
            ),
            (
                "task_queue_wait",
                "From Celerity-Sent-At to the body's start, by task",
                &self.queue_wait,
            ),
            (
                "rate_limit_wait",
                "How long tasks with a rate limit waited for it, by task",
                &self.rate_limit_wait,
            ),
        ];
        for (name, help, family) in seconds {
            registry.register_with_unit(name, help, Unit::Seconds, family.clone());
        }
        registry.register(
            "dead_letters",
            "Messages dead-lettered, by reason",
            self.dead_letters.clone(),
        );
        registry.register(
            "redeliveries",
            "Deliveries of a message delivered before, by queue",
            self.redeliveries.clone(),
        );
        registry.register(
            "queue_depth",
            "Messages not yet delivered, by queue and priority level",
            self.depth.clone(),
        );
        let [bytes, max_bytes, messages] = &self.streams;
        registry.register_with_unit(
            "stream",
            "Bytes stored, by stream (queues, delayed tasks, dead letters, chords, events, buckets)",
            Unit::Bytes,
            bytes.clone(),
        );
        registry.register_with_unit(
            "stream_max",
            "Size limit, by stream: a queue at its limit refuses new tasks (-1: no limit)",
            Unit::Bytes,
            max_bytes.clone(),
        );
        registry.register(
            "stream_messages",
            "Messages stored, by stream",
            messages.clone(),
        );
    }
}

impl Metrics {
    /// The metrics of a worker running `tasks` from `queues` with `slots` execution slots.
    pub(crate) fn new<'a>(
        tasks: impl Iterator<Item = &'a TaskName>,
        queues: &[QueueName],
        slots: usize,
    ) -> Self {
        let mut registry = Registry::with_prefix("celerity");
        let families = Families::default();
        families.register(&mut registry);
        let series = tasks
            .map(|name| (name.clone(), families.task(name)))
            .collect();
        let redelivered = queues
            .iter()
            .map(|queue| {
                let labels = QueueLabels {
                    queue: queue.to_string(),
                };
                (
                    queue.clone(),
                    families.redeliveries.get_or_create_owned(&labels),
                )
            })
            .collect();
        let (active, reserved): (Gauge, Gauge) = (Gauge::default(), Gauge::default());
        let slots_gauge: Gauge = Gauge::default();
        slots_gauge.set(i64::try_from(slots).unwrap_or(i64::MAX));
        let (reconnects, events_dropped) = (Counter::default(), Counter::default());
        let spans_dropped = Counter::default();
        registry.register("tasks_active", "Task bodies running now", active.clone());
        registry.register(
            "tasks_reserved",
            "Tasks taken (prefetched) and not started: waiting for a slot or a rate limit",
            reserved.clone(),
        );
        registry.register(
            "worker_slots",
            "Execution slots (concurrency)",
            slots_gauge.clone(),
        );
        registry.register(
            "nats_reconnects",
            "Reconnections to NATS since the worker started",
            reconnects.clone(),
        );
        registry.register(
            "events_dropped",
            "Task events dropped: the emitter's channel was full, or the server did not store them",
            events_dropped.clone(),
        );
        registry.register(
            "spans_dropped",
            "Trace spans dropped: the export queue was full, or their export failed",
            spans_dropped.clone(),
        );
        Self {
            registry,
            tasks: series,
            redeliveries: redelivered,
            redeliveries_family: families.redeliveries,
            dead_letters: families.dead_letters,
            depth: families.depth,
            streams: families.streams,
            active,
            reserved,
            slots: slots_gauge,
            reconnects,
            events_dropped,
            spans_dropped,
            events_dropped_seen: AtomicU64::new(0),
            spans_dropped_seen: AtomicU64::new(0),
            connects_seen: AtomicU64::new(1),
        }
    }

    pub(crate) fn redelivered(&self, queue: &QueueName) {
        match self.redeliveries.get(queue) {
            Some(counter) => counter.inc(),
            None => {
                let labels = QueueLabels {
                    queue: queue.to_string(),
                };
                self.redeliveries_family.get_or_create(&labels).inc()
            }
        };
    }

    /// A task ended in `state` (a final state; others are not counted here).
    pub(crate) fn ended(&self, task: &TaskName, state: &TaskState) {
        let Some(series) = self.tasks.get(task) else {
            return;
        };
        if let Some(index) = FINAL_STATES
            .iter()
            .position(|final_state| final_state == state)
        {
            series.ended[index].inc();
        }
    }

    pub(crate) fn ran(&self, task: &TaskName, runtime: Duration) {
        if let Some(series) = self.tasks.get(task) {
            series.runtime.observe(runtime.as_secs_f64());
        }
    }

    pub(crate) fn started(&self, task: &TaskName, waited: Option<Duration>) {
        if let (Some(series), Some(waited)) = (self.tasks.get(task), waited) {
            series.queue_wait.observe(waited.as_secs_f64());
        }
    }

    pub(crate) fn retried(&self, task: &TaskName) {
        if let Some(series) = self.tasks.get(task) {
            series.retries.inc();
        }
    }

    pub(crate) fn rate_limited(&self, task: &TaskName, waited: Duration) {
        if let Some(series) = self.tasks.get(task) {
            series.rate_limit_wait.observe(waited.as_secs_f64());
        }
    }

    pub(crate) fn dead_lettered(&self, reason: DeadLetterReason) {
        let labels = ReasonLabels {
            reason: reason.code().to_owned(),
        };
        self.dead_letters.get_or_create(&labels).inc();
    }

    /// Sets the depth of `queue` at `level`.
    pub(crate) fn set_depth(&self, queue: &QueueName, level: u8, messages: u64) {
        let labels = LevelLabels {
            queue: queue.to_string(),
            priority: level.to_string(),
        };
        let messages = i64::try_from(messages).unwrap_or(i64::MAX);
        self.depth.get_or_create(&labels).set(messages);
    }

    /// Sets one stream's use and size limit.
    pub(crate) fn set_stream_use(&self, used: &crate::StreamUse) {
        let labels = StreamLabels {
            stream: used.stream.clone(),
        };
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let [bytes, max_bytes, messages] = &self.streams;
        bytes.get_or_create(&labels).set(gauge(used.bytes));
        max_bytes
            .get_or_create(&labels)
            .set(used.max_bytes.map_or(-1, gauge));
        messages.get_or_create(&labels).set(gauge(used.messages));
    }

    /// Removes the depth series of one level of a queue the worker no longer consumes.
    pub(crate) fn remove_depth(&self, queue: &QueueName, level: u8) {
        let labels = LevelLabels {
            queue: queue.to_string(),
            priority: level.to_string(),
        };
        self.depth.remove(&labels);
    }

    /// The metrics in the OpenMetrics text format, with the counts read at scrape time brought
    /// up to date.
    pub(crate) fn encode(&self, scraped: Scraped) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        self.active.set(i64::from(scraped.active));
        self.reserved.set(i64::from(scraped.reserved));
        self.slots
            .set(i64::try_from(scraped.slots).unwrap_or(i64::MAX));
        let seen = self
            .events_dropped_seen
            .swap(scraped.events_dropped, Relaxed);
        self.events_dropped
            .inc_by(scraped.events_dropped.saturating_sub(seen));
        let seen = self.spans_dropped_seen.swap(scraped.spans_dropped, Relaxed);
        self.spans_dropped
            .inc_by(scraped.spans_dropped.saturating_sub(seen));
        let seen = self.connects_seen.swap(scraped.connects.max(1), Relaxed);
        self.reconnects
            .inc_by(scraped.connects.saturating_sub(seen));
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %error, "cannot encode the metrics");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_named_by_prometheus_conventions_and_unknown_tasks_add_none() {
        let add = TaskName::new("it.add").unwrap();
        let queues = [QueueName::default()];
        let metrics = Metrics::new([&add].into_iter(), &queues, 4);
        metrics.ended(&add, &TaskState::Success);
        metrics.ended(&add, &TaskState::Retry);
        metrics.ran(&add, Duration::from_millis(3));
        metrics.started(&add, Some(Duration::from_millis(1)));
        metrics.retried(&add);
        metrics.redelivered(&QueueName::default());
        metrics.dead_lettered(DeadLetterReason::UnknownTask);
        let stranger = TaskName::new("it.stranger").unwrap();
        metrics.ended(&stranger, &TaskState::Failure);
        metrics.set_depth(&QueueName::default(), 9, 12);
        let scraped = Scraped {
            active: 1,
            reserved: 2,
            slots: 6,
            events_dropped: 5,
            spans_dropped: 2,
            connects: 3,
        };
        let text = metrics.encode(scraped);
        for line in [
            "celerity_tasks_total{task=\"it.add\",state=\"SUCCESS\"} 1",
            "celerity_tasks_total{task=\"it.add\",state=\"FAILURE\"} 0",
            "celerity_task_retries_total{task=\"it.add\"} 1",
            "celerity_task_runtime_seconds_count{task=\"it.add\"} 1",
            "celerity_task_queue_wait_seconds_count{task=\"it.add\"} 1",
            "celerity_dead_letters_total{reason=\"unknown_task\"} 1",
            "celerity_redeliveries_total{queue=\"default\"} 1",
            "celerity_tasks_active 1",
            "celerity_tasks_reserved 2",
            "celerity_worker_slots 6",
            "celerity_spans_dropped_total 2",
            "celerity_queue_depth{queue=\"default\",priority=\"9\"} 12",
            "celerity_events_dropped_total 5",
            "celerity_nats_reconnects_total 2",
            "# TYPE celerity_task_runtime_seconds histogram",
            "# UNIT celerity_task_runtime_seconds seconds",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(!text.contains("it.stranger"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        // The dropped count is the emitter's running total: read twice, counted once.
        let again = metrics.encode(scraped);
        assert!(again.contains("celerity_events_dropped_total 5"), "{again}");
        assert!(
            again.contains("celerity_nats_reconnects_total 2"),
            "{again}"
        );
    }
}
