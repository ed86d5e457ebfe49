//! What the dashboard knows, in memory and bounded: the most recent tasks (at most `max_tasks`,
//! the least recently updated forgotten first), each with a bounded timeline; every worker's last
//! event; task throughput per 10 s over the last hour. It is filled from the events stream
//! (`ingest`), so a restart rebuilds it from NATS.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use celerity::events::Event;
use celerity_proto::{
    ErrorRecord, HEARTBEAT_MISSED_LIMIT, TaskEvent, TaskEventKind, WorkerEvent, WorkerEventKind,
};
use serde::Serialize;

mod filter;

pub(crate) use filter::{TaskFilter, TaskQuery};

/// Timeline entries kept per task: the first (usually `task-sent`) and the latest others.
const MAX_TIMELINE: usize = 32;
/// Children remembered per task.
const MAX_CHILDREN: usize = 256;
/// Tasks remembered per canvas.
pub(crate) const MAX_CANVAS_TASKS: usize = 2_000;
/// Width of one throughput bucket.
pub(crate) const THROUGHPUT_INTERVAL_MS: u64 = 10_000;
/// Buckets kept: one hour.
const THROUGHPUT_BUCKETS: usize = 360;

/// One event in a task's timeline.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TimelineItem {
    #[serde(rename = "type")]
    pub(crate) kind: TaskEventKind,
    pub(crate) at_ms: u64,
    pub(crate) worker: String,
    pub(crate) retries: u32,
    pub(crate) delivered: Option<u64>,
    pub(crate) runtime_ms: Option<f64>,
    pub(crate) reason: Option<String>,
    pub(crate) error: Option<ErrorRecord>,
}

/// What the dashboard knows of one task.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TaskSummary {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) state: &'static str,
    pub(crate) queue: Option<String>,
    pub(crate) worker: Option<String>,
    pub(crate) sent_ms: Option<u64>,
    pub(crate) received_ms: Option<u64>,
    pub(crate) started_ms: Option<u64>,
    pub(crate) ended_ms: Option<u64>,
    pub(crate) runtime_ms: Option<f64>,
    pub(crate) retries: u32,
    pub(crate) root_id: Option<String>,
    pub(crate) parent_id: Option<String>,
    pub(crate) group_id: Option<String>,
    pub(crate) chord_id: Option<String>,
    pub(crate) updated_ms: u64,
}

/// A task with what its page shows beyond the summary.
#[derive(Debug, Clone)]
pub(crate) struct TaskEntry {
    pub(crate) summary: TaskSummary,
    /// When the event that set the state happened: an older event arriving late does not undo it.
    state_at_ms: u64,
    pub(crate) args: Option<String>,
    pub(crate) kwargs: Option<String>,
    pub(crate) timeline: Vec<TimelineItem>,
    pub(crate) children: Vec<String>,
    /// Its key in `Store::order`.
    order: u64,
}

/// A worker as its last event tells it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WorkerView {
    pub(crate) hostname: String,
    pub(crate) online: bool,
    pub(crate) pid: u32,
    pub(crate) software: String,
    pub(crate) queues: Vec<String>,
    pub(crate) concurrency: u32,
    pub(crate) active: u32,
    pub(crate) reserved: u32,
    pub(crate) processed: u64,
    pub(crate) load: Option<[f64; 3]>,
    pub(crate) last_heartbeat_ms: u64,
    pub(crate) online_since_ms: Option<u64>,
    pub(crate) http: Option<String>,
}

#[derive(Debug, Clone)]
struct WorkerEntry {
    last: WorkerEvent,
    online_since_ms: Option<u64>,
}

/// Tasks that ended or were sent in one 10 s bucket.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct ThroughputPoint {
    pub(crate) at_ms: u64,
    pub(crate) sent: u64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
}

/// The dashboard's memory.
#[derive(Debug)]
pub(crate) struct Store {
    max_tasks: usize,
    tasks: HashMap<String, TaskEntry>,
    /// Task ids by their last update, oldest first.
    order: BTreeMap<u64, String>,
    next_order: u64,
    canvases: HashMap<String, Vec<String>>,
    workers: BTreeMap<String, WorkerEntry>,
    throughput: VecDeque<ThroughputPoint>,
    /// Tasks changed since the last `take_changed`.
    changed: HashSet<String>,
    workers_changed: bool,
    /// Task events applied since the start.
    pub(crate) events_seen: u64,
    /// Tasks forgotten to stay within `max_tasks`.
    pub(crate) evicted: u64,
}

impl Store {
    pub(crate) fn new(max_tasks: usize) -> Self {
        Self {
            max_tasks: max_tasks.max(1),
            tasks: HashMap::new(),
            order: BTreeMap::new(),
            next_order: 0,
            canvases: HashMap::new(),
            workers: BTreeMap::new(),
            throughput: VecDeque::new(),
            changed: HashSet::new(),
            workers_changed: false,
            events_seen: 0,
            evicted: 0,
        }
    }

    pub(crate) fn max_tasks(&self) -> usize {
        self.max_tasks
    }

    pub(crate) fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Takes in one event from the stream.
    pub(crate) fn apply(&mut self, event: Event) {
        match event {
            Event::Task { hostname, event } => self.apply_task(&hostname, event),
            Event::Worker(event) => self.apply_worker(event),
            _ => {}
        }
    }

    fn apply_worker(&mut self, event: WorkerEvent) {
        self.workers_changed = true;
        let previous = self.workers.get(&event.hostname);
        let online_since_ms = match event.kind {
            WorkerEventKind::Online => Some(event.at_ms),
            WorkerEventKind::Offline => None,
            _ => previous
                .and_then(|entry| entry.online_since_ms)
                .or(Some(event.at_ms)),
        };
        if previous.is_some_and(|entry| entry.last.at_ms > event.at_ms) {
            return;
        }
        let hostname = event.hostname.clone();
        let entry = WorkerEntry {
            last: event,
            online_since_ms,
        };
        self.workers.insert(hostname, entry);
    }

    fn apply_task(&mut self, hostname: &str, event: TaskEvent) {
        self.events_seen += 1;
        self.count_throughput(&event);
        let order = self.next_order;
        self.next_order += 1;
        let id = event.task_id.clone();
        let is_new = !self.tasks.contains_key(&id);
        if is_new {
            self.forget_oldest_beyond(self.max_tasks - 1);
        }
        let entry = self
            .tasks
            .entry(id.clone())
            .or_insert_with(|| TaskEntry::new(&event, order));
        self.order.remove(&entry.order);
        entry.order = order;
        entry.take(hostname, event);
        self.order.insert(order, id.clone());
        if is_new {
            self.link(&id);
        }
        self.changed.insert(id);
    }

    /// Records a new task under its parent and its canvas.
    fn link(&mut self, id: &str) {
        let Some(entry) = self.tasks.get(id) else {
            return;
        };
        let (parent, root) = (
            entry.summary.parent_id.clone(),
            entry.summary.root_id.clone(),
        );
        if let Some(parent) = parent.and_then(|parent| self.tasks.get_mut(&parent))
            && parent.children.len() < MAX_CHILDREN
        {
            parent.children.push(id.to_owned());
        }
        if let Some(root) = root {
            let members = self.canvases.entry(root).or_default();
            if members.len() < MAX_CANVAS_TASKS {
                members.push(id.to_owned());
            }
        }
    }

    fn forget_oldest_beyond(&mut self, keep: usize) {
        while self.tasks.len() > keep {
            let Some((_, id)) = self.order.pop_first() else {
                return;
            };
            if let Some(entry) = self.tasks.remove(&id) {
                self.evicted += 1;
                self.changed.remove(&id);
                // A canvas lists only tasks the store holds, and goes with its last one.
                if let Some(root) = &entry.summary.root_id
                    && let Some(members) = self.canvases.get_mut(root)
                {
                    members.retain(|member| member != &id);
                    if members.is_empty() {
                        self.canvases.remove(root);
                    }
                }
            }
        }
    }

    fn count_throughput(&mut self, event: &TaskEvent) {
        let bucket_at = event.at_ms - event.at_ms % THROUGHPUT_INTERVAL_MS;
        let newest = self.throughput.back().map_or(0, |point| point.at_ms);
        if bucket_at + THROUGHPUT_INTERVAL_MS * THROUGHPUT_BUCKETS as u64 <= newest {
            return;
        }
        let index = match self.throughput.iter().rposition(|p| p.at_ms <= bucket_at) {
            Some(index) if self.throughput[index].at_ms == bucket_at => index,
            found => {
                let at = found.map_or(0, |index| index + 1);
                let point = ThroughputPoint {
                    at_ms: bucket_at,
                    ..ThroughputPoint::default()
                };
                self.throughput.insert(at, point);
                while self.throughput.len() > THROUGHPUT_BUCKETS {
                    self.throughput.pop_front();
                }
                at.min(self.throughput.len() - 1)
            }
        };
        let Some(point) = self.throughput.get_mut(index) else {
            return;
        };
        match event.kind {
            TaskEventKind::Sent => point.sent += 1,
            TaskEventKind::Succeeded => point.succeeded += 1,
            TaskEventKind::Failed | TaskEventKind::Rejected => point.failed += 1,
            _ => {}
        }
    }

    pub(crate) fn throughput(&self) -> Vec<ThroughputPoint> {
        self.throughput.iter().copied().collect()
    }

    pub(crate) fn task(&self, id: &str) -> Option<&TaskEntry> {
        self.tasks.get(id)
    }

    /// The tasks of the canvas rooted at `root_id`, the root first when known.
    pub(crate) fn canvas(&self, root_id: &str) -> Vec<&TaskEntry> {
        let mut members: Vec<&TaskEntry> = self
            .canvases
            .get(root_id)
            .map(|ids| ids.iter().filter_map(|id| self.tasks.get(id)).collect())
            .unwrap_or_default();
        if let Some(root) = self.tasks.get(root_id)
            && !members.iter().any(|entry| entry.summary.id == root_id)
        {
            members.insert(0, root);
        }
        members
    }

    /// How many tasks of each state the store holds.
    pub(crate) fn by_state(&self) -> BTreeMap<&'static str, u64> {
        let mut counts = BTreeMap::new();
        for entry in self.tasks.values() {
            *counts.entry(entry.summary.state).or_default() += 1;
        }
        counts
    }

    /// The workers, by hostname; online as of `now_ms`.
    pub(crate) fn workers(&self, now_ms: u64) -> Vec<WorkerView> {
        self.workers
            .values()
            .map(|entry| entry.view(now_ms))
            .collect()
    }

    pub(crate) fn worker(&self, hostname: &str, now_ms: u64) -> Option<WorkerView> {
        self.workers.get(hostname).map(|entry| entry.view(now_ms))
    }

    /// The tasks changed since the last call, newest update first.
    pub(crate) fn take_changed(&mut self) -> Vec<&TaskEntry> {
        let changed = std::mem::take(&mut self.changed);
        let mut entries: Vec<&TaskEntry> =
            changed.iter().filter_map(|id| self.tasks.get(id)).collect();
        entries.sort_unstable_by_key(|entry| std::cmp::Reverse(entry.order));
        entries
    }

    /// Whether a worker event arrived since the last call.
    pub(crate) fn take_workers_changed(&mut self) -> bool {
        std::mem::take(&mut self.workers_changed)
    }
}

impl TaskEntry {
    fn new(event: &TaskEvent, order: u64) -> Self {
        Self {
            summary: TaskSummary {
                id: event.task_id.clone(),
                name: event.task.clone(),
                state: event.state(),
                queue: None,
                worker: None,
                sent_ms: None,
                received_ms: None,
                started_ms: None,
                ended_ms: None,
                runtime_ms: None,
                retries: 0,
                root_id: None,
                parent_id: None,
                group_id: None,
                chord_id: None,
                updated_ms: event.at_ms,
            },
            state_at_ms: 0,
            args: None,
            kwargs: None,
            timeline: Vec::new(),
            children: Vec::new(),
            order,
        }
    }

    /// Takes in one of the task's events, sent by `hostname`.
    fn take(&mut self, hostname: &str, event: TaskEvent) {
        let summary = &mut self.summary;
        let at = event.at_ms;
        summary.updated_ms = summary.updated_ms.max(at);
        if at >= self.state_at_ms {
            summary.state = event.state();
            self.state_at_ms = at;
        }
        let fill = |slot: &mut Option<String>, value: &Option<String>| {
            if slot.is_none() {
                slot.clone_from(value);
            }
        };
        fill(&mut summary.queue, &event.queue);
        fill(&mut summary.root_id, &event.root_id);
        fill(&mut summary.parent_id, &event.parent_id);
        fill(&mut summary.group_id, &event.group_id);
        fill(&mut summary.chord_id, &event.chord_id);
        summary.retries = summary.retries.max(event.retries);
        match event.kind {
            TaskEventKind::Sent => summary.sent_ms = Some(at),
            TaskEventKind::Received => {
                summary.received_ms = Some(at);
                summary.worker = Some(hostname.to_owned());
            }
            TaskEventKind::Started => {
                summary.started_ms = Some(at);
                summary.worker = Some(hostname.to_owned());
                fill(&mut self.args, &event.args);
                fill(&mut self.kwargs, &event.kwargs);
            }
            TaskEventKind::Succeeded | TaskEventKind::Failed | TaskEventKind::Revoked => {
                summary.ended_ms = Some(at);
                summary.runtime_ms = event.runtime_ms.or(summary.runtime_ms);
            }
            TaskEventKind::Rejected => summary.ended_ms = Some(at),
            _ => {}
        }
        self.push_timeline(TimelineItem {
            kind: event.kind,
            at_ms: at,
            worker: hostname.to_owned(),
            retries: event.retries,
            delivered: event.delivered,
            runtime_ms: event.runtime_ms,
            reason: event.reason,
            error: event.error,
        });
    }

    fn push_timeline(&mut self, item: TimelineItem) {
        let at = self
            .timeline
            .partition_point(|held| held.at_ms <= item.at_ms);
        self.timeline.insert(at, item);
        if self.timeline.len() > MAX_TIMELINE {
            // Keep the first entry (how the task began); forget the oldest after it.
            self.timeline.remove(1);
        }
    }
}

impl WorkerEntry {
    fn view(&self, now_ms: u64) -> WorkerView {
        let last = &self.last;
        let freq_ms = (last.freq_s * 1_000.0) as u64;
        let fresh = now_ms.saturating_sub(last.at_ms) <= freq_ms.max(1) * HEARTBEAT_MISSED_LIMIT;
        WorkerView {
            hostname: last.hostname.clone(),
            online: last.kind != WorkerEventKind::Offline && fresh,
            pid: last.pid,
            software: last.software.clone(),
            queues: last.queues.clone(),
            concurrency: last.concurrency,
            active: last.active,
            reserved: last.reserved,
            processed: last.processed,
            load: last.load,
            last_heartbeat_ms: last.at_ms,
            online_since_ms: self.online_since_ms,
            http: last.http.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
