//! Events: the emitter that sends one process's task events to the events stream in batches
//! (`docs/protocol.md` 7d), and ([`follow`]) the reader that tails them live or reads them back.
//!
//! A task event costs its emitter a push onto a bounded channel; one background task per process
//! gathers what arrives within [`FLUSH_INTERVAL`] (at most [`MAX_BATCH`] events) into one
//! [`TaskEventBatch`] and stores it with one JetStream publish, so a task's three or four events
//! cost the server one store per batch rather than one each. When the channel is full (the server
//! cannot keep up or is gone), events are dropped and counted ([`Emitter::dropped`]); a task never
//! waits for its events.

mod follow;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use celerity_proto::{TaskEvent, TaskEventBatch};
use tokio::sync::{mpsc, oneshot};

pub use follow::{Event, EventError, EventFilter, EventStream, Since, follow};

/// How long the emitter gathers events before it sends them.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// The most events one batch carries.
pub const MAX_BATCH: usize = 512;

/// Events waiting to be sent, at most; beyond it they are dropped and counted.
const CHANNEL_CAPACITY: usize = 16_384;

/// How long a batch's publish may take before its events are counted as dropped.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// What the emitter's channel carries.
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every item is an event; boxing each would cost an allocation per event"
)]
enum Item {
    Event(TaskEvent),
    /// Send what is gathered now, then say so.
    Flush(oneshot::Sender<()>),
}

/// Sends this process's task events, batched, to `<ns>.events.task.<token>`.
#[derive(Clone)]
pub(crate) struct Emitter {
    tx: mpsc::Sender<Item>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl Emitter {
    /// Starts the emitter's background task on `runtime`; `hostname` names the emitter in each
    /// batch and in its subject.
    pub(crate) fn start(
        js: jetstream::Context,
        subject: String,
        hostname: String,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        let sender = BatchSender {
            js,
            subject,
            hostname,
            dropped: dropped.clone(),
        };
        drop(runtime.spawn(sender.run(rx)));
        Self { tx, dropped }
    }

    /// Queues `event`; drops and counts it when the channel is full.
    pub(crate) fn emit(&self, event: TaskEvent) {
        if self.tx.try_send(Item::Event(event)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events dropped so far: the channel was full, or their batch could not be stored.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sends every event queued so far, waiting at most `timeout`.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped, the queued events are still sent with the next batch.
    pub(crate) async fn flush(&self, timeout: Duration) {
        let (done, sent) = oneshot::channel();
        let flushed = async {
            if self.tx.send(Item::Flush(done)).await.is_ok() {
                let _ = sent.await;
            }
        };
        if tokio::time::timeout(timeout, flushed).await.is_err() {
            tracing::warn!("the last task events were not sent in time");
        }
    }
}

/// The emitter's background task: gathers events into batches and stores them.
struct BatchSender {
    js: jetstream::Context,
    subject: String,
    hostname: String,
    dropped: Arc<AtomicU64>,
}

impl BatchSender {
    async fn run(self, mut rx: mpsc::Receiver<Item>) {
        let mut items = Vec::with_capacity(MAX_BATCH);
        loop {
            if rx.recv_many(&mut items, MAX_BATCH).await == 0 {
                return;
            }
            // Gather what else comes within the flush interval, unless a flush is asked for.
            let deadline = tokio::time::Instant::now() + FLUSH_INTERVAL;
            let mut flush_asked = has_flush(&items);
            while items.len() < MAX_BATCH && !flush_asked {
                let (before, room) = (items.len(), MAX_BATCH - items.len());
                tokio::select! {
                    received = rx.recv_many(&mut items, room) => if received == 0 { break },
                    () = tokio::time::sleep_until(deadline) => break,
                }
                flush_asked = has_flush(&items[before..]);
            }
            let mut events = Vec::with_capacity(items.len());
            let mut flushed = Vec::new();
            for item in items.drain(..) {
                match item {
                    Item::Event(event) => events.push(event),
                    Item::Flush(done) => flushed.push(done),
                }
            }
            if !events.is_empty() {
                self.send(events).await;
            }
            for done in flushed {
                let _ = done.send(());
            }
        }
    }

    /// Stores one batch; counts its events as dropped when it cannot.
    async fn send(&self, events: Vec<TaskEvent>) {
        let count = events.len() as u64;
        let batch = TaskEventBatch::new(self.hostname.clone(), events);
        let bytes = match serde_json::to_vec(&batch) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(error = %error, "cannot encode task events");
                self.dropped.fetch_add(count, Ordering::Relaxed);
                return;
            }
        };
        let stored = async {
            let ack = self.js.publish(self.subject.clone(), bytes.into()).await?;
            ack.await?;
            Ok::<_, async_nats::Error>(())
        };
        let error = match tokio::time::timeout(PUBLISH_TIMEOUT, stored).await {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error.to_string(),
            Err(_) => "no acknowledgement in time".to_owned(),
        };
        let before = self.dropped.fetch_add(count, Ordering::Relaxed);
        // One warning per 10,000 dropped events, so a server that is gone does not flood the log.
        if before / 10_000 != (before + count) / 10_000 || before == 0 {
            tracing::warn!(error = %error, dropped = before + count, "cannot store task events; they are dropped");
        }
    }
}

fn has_flush(items: &[Item]) -> bool {
    items.iter().any(|item| matches!(item, Item::Flush(_)))
}
