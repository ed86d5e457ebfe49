//! A worker's presence: its worker events (`worker-online` once it consumes, `worker-heartbeat`
//! every 2 s, `worker-offline` when it stops) and the worker signals that go with them
//! (`worker_ready`, `worker_heartbeat`, `worker_shutdown`).
//!
//! Worker events are sent whether or not task events are on: `celerity status` and
//! `celerity health` read them.

use std::time::Duration;

use celerity_proto::{WorkerEvent, WorkerEventKind};

use crate::signals::{WorkerHeartbeat, WorkerReady, WorkerShutdown};
use crate::worker::SharedHandle;

/// How long one worker event's publish may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a stopping worker waits for its last task events to be stored.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// What a worker tells others of itself.
#[derive(Clone)]
pub(crate) struct Presence {
    shared: SharedHandle,
}

impl Presence {
    pub(crate) fn new(shared: SharedHandle) -> Self {
        Self { shared }
    }

    /// Announces the worker (`worker_ready`, `worker-online`), then sends a heartbeat every
    /// interval until dropped.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped, it sends nothing more.
    pub(crate) async fn run(self) {
        let shared = &self.shared;
        shared.observer.set_consuming();
        shared.observer.signals().fire_worker_ready(&WorkerReady {
            hostname: &shared.hostname,
            queues: &shared.queues.get(),
            concurrency: shared.pool.size(),
        });
        self.send(self.event(WorkerEventKind::Online)).await;
        let period = Duration::from_millis(celerity_proto::HEARTBEAT_INTERVAL_MS);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let heartbeat = self.event(WorkerEventKind::Heartbeat);
            shared
                .observer
                .signals()
                .fire_worker_heartbeat(&WorkerHeartbeat {
                    heartbeat: &heartbeat,
                });
            self.send(heartbeat).await;
        }
    }

    /// The worker has stopped consuming and its tasks are done or handed back: its last task
    /// events are sent, then `worker-offline`.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped, the worker may go without saying so (its heartbeats stop).
    pub(crate) async fn offline(&self) {
        if let Some(events) = self.shared.observer.events() {
            events.flush(FLUSH_TIMEOUT).await;
        }
        self.send(self.event(WorkerEventKind::Offline)).await;
    }

    /// Runs the `worker_shutdown` hooks, after [`Presence::offline`], on the thread that ran the
    /// worker and outside its runtime, so a hook may block (to flush a metrics client, say).
    pub(crate) fn shut_down(&self) {
        let shared = &self.shared;
        shared
            .observer
            .signals()
            .fire_worker_shutdown(&WorkerShutdown {
                hostname: &shared.hostname,
            });
    }

    fn event(&self, kind: WorkerEventKind) -> WorkerEvent {
        let shared = &self.shared;
        shared
            .observer
            .worker_event(kind, &shared.queues.get(), shared.pool.size())
    }

    /// Stores one worker event in the events stream; a failure is logged and the worker goes on.
    async fn send(&self, event: WorkerEvent) {
        let shared = &self.shared;
        let subject = shared.layout.worker_events_subject(&shared.hostname);
        let bytes = match serde_json::to_vec(&event) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(error = %error, "cannot encode a worker event");
                return;
            }
        };
        let stored = async {
            shared.js.publish(subject, bytes.into()).await?.await?;
            Ok::<_, async_nats::Error>(())
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, stored).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(error = %error, "cannot store a worker event");
            }
            Err(_) => tracing::debug!("a worker event was not stored in time"),
        }
    }
}
