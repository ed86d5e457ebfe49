//! The deliveries a worker holds, from arrival to outcome: the counts its heartbeats, stats and
//! metrics carry ([`Tally`]), and the list `inspect active` and `inspect reserved` read.
//!
//! Each delivery with a valid envelope is one entry while it is held ([`Held`], dropped however
//! the delivery ends); an entry keeps the message body by reference (a `Bytes` clone), and only an
//! inspection decodes its arguments.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use celerity_proto::{ContentType, Envelope, HeldTask, QueueName, TaskBody};
use dashmap::DashMap;

use crate::clock::now_ms;

/// The largest body whose arguments an inspection shows; a larger one is listed without them,
/// so a reply stays small.
pub(crate) const MAX_SHOWN_ARGUMENTS: usize = 1024;

/// Counts of the deliveries a worker holds, and the tasks among them.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Tasks whose body runs now.
    active: AtomicU32,
    /// Tasks taken and not started.
    reserved: AtomicU32,
    /// Deliveries finished with.
    processed: AtomicU64,
    /// The held deliveries with a valid envelope, by a key of this tally's.
    tasks: DashMap<u64, Entry>,
    next_key: AtomicU64,
}

/// What an inspection shows of one held task.
#[derive(Debug)]
struct Entry {
    id: String,
    task: String,
    queue: QueueName,
    priority: u8,
    retries: u32,
    delivered: u64,
    root_id: Option<String>,
    content_type: ContentType,
    body: bytes::Bytes,
    received_at_ms: u64,
    started_at_ms: Option<u64>,
}

/// Which held tasks an inspection lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Whose body runs.
    Active,
    /// Taken and not started.
    Reserved,
}

impl Tally {
    pub(crate) fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    pub(crate) fn reserved(&self) -> u32 {
        self.reserved.load(Ordering::Relaxed)
    }

    pub(crate) fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    /// A delivery arrived from `queue` (its envelope, when valid, and its body): counted
    /// reserved until it starts.
    pub(crate) fn hold(
        &self,
        envelope: Option<&Envelope>,
        queue: &QueueName,
        delivered: u64,
        body: &bytes::Bytes,
    ) -> Held<'_> {
        self.reserved.fetch_add(1, Ordering::Relaxed);
        let key = envelope.map(|envelope| {
            let key = self.next_key.fetch_add(1, Ordering::Relaxed);
            let entry = Entry {
                id: envelope.id.to_string(),
                task: envelope.task.to_string(),
                queue: queue.clone(),
                priority: envelope.priority.get(),
                retries: envelope.retries,
                delivered,
                root_id: envelope.root_id.as_ref().map(ToString::to_string),
                content_type: envelope.content_type,
                body: body.clone(),
                received_at_ms: now_ms(),
                started_at_ms: None,
            };
            self.tasks.insert(key, entry);
            key
        });
        Held {
            tally: self,
            key,
            started: false,
        }
    }

    /// The held tasks in `phase`, with their arguments decoded (outside the map's locks, so the
    /// hot path never waits for a decode), each task's arguments left out past
    /// [`MAX_SHOWN_ARGUMENTS`] bytes.
    pub(crate) fn list(&self, phase: Phase) -> Vec<HeldTask> {
        let shown: Vec<(HeldTask, ContentType, bytes::Bytes)> = self
            .tasks
            .iter()
            .filter(|entry| match phase {
                Phase::Active => entry.started_at_ms.is_some(),
                Phase::Reserved => entry.started_at_ms.is_none(),
            })
            .map(|entry| (entry.to_held_task(), entry.content_type, entry.body.clone()))
            .collect();
        shown
            .into_iter()
            .map(|(mut task, content_type, body)| {
                if body.len() <= MAX_SHOWN_ARGUMENTS
                    && let Ok(body) = content_type.decode::<TaskBody>(&body)
                {
                    task.args = Some(body.args);
                    task.kwargs = Some(body.kwargs);
                }
                task
            })
            .collect()
    }
}

impl Entry {
    fn to_held_task(&self) -> HeldTask {
        let mut task = HeldTask::new(
            &self.id,
            &self.task,
            self.queue.as_str(),
            self.received_at_ms,
        );
        task.priority = self.priority;
        task.retries = self.retries;
        task.delivered = self.delivered;
        task.root_id = self.root_id.clone();
        task.started_at_ms = self.started_at_ms;
        task
    }
}

/// One delivery held by the worker, from its arrival to its outcome: counted reserved, then
/// active once its body starts, and processed when dropped, however the delivery ends.
pub(crate) struct Held<'a> {
    tally: &'a Tally,
    /// Its entry in the tally's list (`None`: the envelope was not valid).
    key: Option<u64>,
    started: bool,
}

impl Held<'_> {
    /// The body starts: reserved no more, active.
    pub(crate) fn start(&mut self) {
        if !self.started {
            self.started = true;
            self.tally.reserved.fetch_sub(1, Ordering::Relaxed);
            self.tally.active.fetch_add(1, Ordering::Relaxed);
            if let Some(mut entry) = self.key.and_then(|key| self.tally.tasks.get_mut(&key)) {
                entry.started_at_ms = Some(now_ms());
            }
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.tally.tasks.remove(&key);
        }
        let held = match self.started {
            true => &self.tally.active,
            false => &self.tally.reserved,
        };
        held.fetch_sub(1, Ordering::Relaxed);
        self.tally.processed.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use celerity_proto::{TaskId, TaskName};

    use super::*;

    #[test]
    fn a_held_task_is_listed_reserved_then_active_then_gone() {
        let tally = Tally::default();
        let envelope = Envelope::new(TaskId::new("t1").unwrap(), TaskName::new("it.add").unwrap());
        let body = ContentType::Json
            .encode(&TaskBody::positional(vec![serde_json::json!(2)]))
            .unwrap();
        let queue = QueueName::new("default").unwrap();
        let mut held = tally.hold(Some(&envelope), &queue, 2, &body.into());
        let _unlisted = tally.hold(None, &queue, 1, &bytes::Bytes::new());
        let reserved = tally.list(Phase::Reserved);
        assert_eq!(
            reserved.len(),
            1,
            "an invalid envelope is counted, not listed"
        );
        assert_eq!((reserved[0].id.as_str(), reserved[0].delivered), ("t1", 2));
        assert_eq!(reserved[0].args, Some(vec![serde_json::json!(2)]));
        assert_eq!(tally.reserved(), 2);
        held.start();
        assert!(tally.list(Phase::Reserved).is_empty());
        assert!(tally.list(Phase::Active)[0].started_at_ms.is_some());
        drop(held);
        assert!(tally.list(Phase::Active).is_empty());
        assert_eq!(
            (tally.active(), tally.reserved(), tally.processed()),
            (0, 1, 1)
        );
    }
}
