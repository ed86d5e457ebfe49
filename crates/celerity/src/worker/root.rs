//! `Worker`: the root actor of a worker process. It starts one `QueueActor` per consumed queue and
//! runs the shutdown protocol: the first signal is a warm shutdown, the second a cold one.

use std::collections::HashSet;

use actix::prelude::*;
use async_nats::jetstream::consumer::PullConsumer;
use celerity_proto::QueueName;

use crate::worker::SharedHandle;
use crate::worker::beat::Beat;
use crate::worker::chord::{ChordAggregator, ChordBackend};
use crate::worker::control::ControlActor;
use crate::worker::queue::{self, QueueDrained, QueueSetup, StopConsuming};
use crate::worker::scheduler::Scheduler;
use crate::worker::shutdown::Shutdown;

/// The root actor.
pub(crate) struct Worker {
    shared: SharedHandle,
    pending_queues: Vec<QueueSetup>,
    chords: Option<ChordBackend>,
    aggregator: Option<Addr<ChordAggregator>>,
    delayed: Option<(PullConsumer, async_nats::jetstream::kv::Store)>,
    scheduler: Option<Addr<Scheduler>>,
    /// The periodic-task scheduler, before and after it starts.
    beat: Option<Beat>,
    beat_addr: Option<Addr<Beat>>,
    /// How to stop each queue actor.
    queues: Vec<Recipient<StopConsuming>>,
    control: Option<Addr<ControlActor>>,
    running: HashSet<QueueName>,
    shutdowns: u32,
}

impl Worker {
    pub(crate) fn new(
        shared: SharedHandle,
        queues: Vec<QueueSetup>,
        chords: ChordBackend,
        delayed: (PullConsumer, async_nats::jetstream::kv::Store),
        beat: Option<Beat>,
    ) -> Self {
        Self {
            shared,
            pending_queues: queues,
            chords: Some(chords),
            aggregator: None,
            delayed: Some(delayed),
            scheduler: None,
            beat,
            beat_addr: None,
            queues: Vec::new(),
            control: None,
            running: HashSet::new(),
            shutdowns: 0,
        }
    }
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let drained = ctx.address().recipient();
        let mut terminates = Vec::with_capacity(self.pending_queues.len());
        for setup in self.pending_queues.drain(..) {
            self.running.insert(setup.queue.clone());
            let actor = queue::start(setup, self.shared.clone(), drained.clone());
            self.queues.push(actor.stop);
            terminates.push(actor.terminate);
        }
        let names = self.running.iter().map(ToString::to_string).collect();
        self.control = Some(ControlActor::new(self.shared.clone(), terminates, names).start());
        if let Some((consumer, leases)) = self.delayed.take() {
            let lease_ttl = chords_lease_ttl(self.chords.as_ref());
            self.scheduler =
                Some(Scheduler::new(self.shared.clone(), consumer, leases, lease_ttl).start());
        }
        if let Some(beat) = self.beat.take() {
            self.beat_addr = Some(beat.start());
        }
        if let Some(chords) = self.chords.take() {
            self.aggregator = Some(ChordAggregator::new(self.shared.clone(), chords).start());
        }
        tracing::info!(worker = %self.shared.hostname, concurrency = self.shared.concurrency, "worker ready");
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        System::current().stop();
    }
}

/// Stop the worker (a signal, or `WorkerHandle::shutdown`); a second request is always cold.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopWorker(pub(crate) Shutdown);

impl Handler<StopWorker> for Worker {
    type Result = ();

    fn handle(&mut self, StopWorker(requested): StopWorker, _ctx: &mut Self::Context) {
        self.shutdowns += 1;
        let shutdown = if self.shutdowns > 1 {
            Shutdown::Cold
        } else {
            requested
        };
        match shutdown {
            Shutdown::Cold => tracing::warn!(worker = %self.shared.hostname, "cold shutdown"),
            Shutdown::Warm => {
                tracing::info!(worker = %self.shared.hostname, "warm shutdown: no new tasks; send the signal again for a cold shutdown");
            }
        }
        self.shared.stopping.cancel();
        for queue in &self.queues {
            queue.do_send(StopConsuming(shutdown));
        }
    }
}

impl Handler<QueueDrained> for Worker {
    type Result = ();

    fn handle(&mut self, drained: QueueDrained, ctx: &mut Self::Context) {
        self.running.remove(&drained.queue);
        if self.running.is_empty() {
            tracing::info!(worker = %self.shared.hostname, "all queues drained");
            ctx.stop();
        }
    }
}

/// The lease time-to-live shared by the chord aggregator and the scheduler.
fn chords_lease_ttl(chords: Option<&ChordBackend>) -> std::time::Duration {
    chords.map_or(std::time::Duration::from_secs(6), |chords| chords.lease_ttl)
}
