//! `Worker`: the root actor of a worker process. It starts one `QueueActor` per consumed queue
//! (at start, and on `add_consumer`), stops one on `cancel_consumer`, and runs the shutdown
//! protocol: the first signal is a warm shutdown, the second a cold one.

use std::collections::HashMap;

use actix::prelude::*;
use async_nats::jetstream::consumer::PullConsumer;
use celerity_proto::QueueName;

use crate::worker::SharedHandle;
use crate::worker::beat::Beat;
use crate::worker::chord::{ChordAggregator, ChordBackend};
use crate::worker::commands::{
    AddConsumer, CancelConsumer, ConsumerError, ControlShutdown, RootCommands, TerminateTask,
};
use crate::worker::control::ControlActor;
use crate::worker::queue::{self, QueueAddr, QueueDrained, QueueSetup, StopConsuming, Terminate};
use crate::worker::scheduler::Scheduler;
use crate::worker::setup::QueueProvisioning;
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
    /// Each running queue actor, by queue, until it has drained.
    running: HashMap<QueueName, Consumer>,
    control: Option<Addr<ControlActor>>,
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
            control: None,
            running: HashMap::new(),
            shutdowns: 0,
        }
    }
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        for setup in std::mem::take(&mut self.pending_queues) {
            self.start_queue(setup, ctx);
        }
        let address = ctx.address();
        let commands = RootCommands {
            add_consumer: address.clone().recipient(),
            cancel_consumer: address.clone().recipient(),
            terminate: address.clone().recipient(),
            shutdown: address.recipient(),
        };
        self.control = Some(ControlActor::new(self.shared.clone(), commands).start());
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
        tracing::info!(worker = %self.shared.hostname, concurrency = self.shared.pool.size(), "worker ready");
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

    fn handle(&mut self, StopWorker(requested): StopWorker, ctx: &mut Self::Context) {
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
        for consumer in self.running.values() {
            consumer.addr.stop.do_send(StopConsuming(shutdown));
        }
        if self.running.is_empty() {
            ctx.stop();
        }
    }
}

impl Handler<ControlShutdown> for Worker {
    type Result = ();

    fn handle(&mut self, ControlShutdown(mode): ControlShutdown, ctx: &mut Self::Context) {
        // A repeated warm request is not a second signal: it leaves a shutdown under way as it is.
        if self.shutdowns > 0 && mode == Shutdown::Warm {
            return;
        }
        self.handle(StopWorker(mode), ctx);
    }
}

impl Handler<QueueDrained> for Worker {
    type Result = ();

    fn handle(&mut self, drained: QueueDrained, ctx: &mut Self::Context) {
        self.running.remove(&drained.queue);
        if self.shutdowns == 0 {
            tracing::info!(queue = %drained.queue, "stopped consuming");
        } else if self.running.is_empty() {
            tracing::info!(worker = %self.shared.hostname, "all queues drained");
            ctx.stop();
        }
    }
}

/// A running queue actor.
struct Consumer {
    addr: QueueAddr,
    /// `cancel_consumer` asked it to stop; it is draining.
    cancelled: bool,
}

impl Worker {
    /// Starts the actor of the queue `setup` provisioned.
    fn start_queue(&mut self, setup: QueueSetup, ctx: &mut Context<Self>) {
        let queue = setup.queue.clone();
        let addr = queue::start(setup, self.shared.clone(), ctx.address().recipient());
        self.shared.queues.add(&queue);
        let consumer = Consumer {
            addr,
            cancelled: false,
        };
        self.running.insert(queue, consumer);
    }
}

impl Handler<AddConsumer> for Worker {
    type Result = ResponseActFuture<Self, Result<(), ConsumerError>>;

    fn handle(
        &mut self,
        AddConsumer(queue): AddConsumer,
        _ctx: &mut Self::Context,
    ) -> Self::Result {
        let refusal = match self.running.get(&queue) {
            _ if self.shutdowns > 0 => Some(ConsumerError::ShuttingDown),
            Some(consumer) if consumer.cancelled => Some(ConsumerError::Draining(queue.clone())),
            Some(_) => Some(ConsumerError::AlreadyConsumed(queue.clone())),
            None => None,
        };
        if let Some(refusal) = refusal {
            return Box::pin(actix::fut::ready(Err(refusal)));
        }
        let shared = self.shared.clone();
        let provision = self.shared.runtime.spawn(async move {
            let setup = provision_queue(&shared, &queue).await;
            (queue, setup)
        });
        Box::pin(provision.into_actor(self).map(|joined, actor, ctx| {
            let (queue, setup) = joined.map_err(|_| ConsumerError::ShuttingDown)?;
            let setup = setup?;
            // Asked twice at once, or shut down meanwhile: the second one yields.
            if actor.shutdowns > 0 {
                return Err(ConsumerError::ShuttingDown);
            }
            if actor.running.contains_key(&queue) {
                return Err(ConsumerError::AlreadyConsumed(queue));
            }
            tracing::info!(%queue, "adding a consumer");
            actor.start_queue(setup, ctx);
            Ok(())
        }))
    }
}

/// The setup of `queue`, added at runtime: its consumers get this worker's AckWait, and
/// consumers made earlier with a shorter one are refused (its in-progress acks would be late).
async fn provision_queue(
    shared: &crate::worker::WorkerShared,
    queue: &QueueName,
) -> Result<QueueSetup, ConsumerError> {
    let provisioning = QueueProvisioning {
        js: &shared.js,
        layout: &shared.layout,
        app: &shared.app,
        client: &shared.nats,
        ack_wait: shared.ack_wait,
    };
    let signal = crate::nats::server::NewTaskSignal::for_client(&shared.nats);
    let setup = provisioning
        .queue_setup(queue, signal)
        .await
        .map_err(|error| ConsumerError::Setup(queue.clone(), error))?;
    let shortest = setup
        .consumers
        .iter()
        .flatten()
        .map(|consumer| consumer.cached_info().config.ack_wait)
        .min();
    match shortest {
        Some(found) if found < shared.ack_wait => Err(ConsumerError::ShortAckWait {
            queue: queue.clone(),
            found,
            ours: shared.ack_wait,
        }),
        _ => Ok(setup),
    }
}

impl Handler<CancelConsumer> for Worker {
    type Result = Result<(), ConsumerError>;

    fn handle(
        &mut self,
        CancelConsumer(queue): CancelConsumer,
        _ctx: &mut Self::Context,
    ) -> Self::Result {
        if self.shutdowns > 0 {
            return Err(ConsumerError::ShuttingDown);
        }
        match self.running.get_mut(&queue) {
            Some(consumer) if !consumer.cancelled => {
                tracing::info!(%queue, "cancelling the consumer: running tasks finish");
                consumer.cancelled = true;
                consumer.addr.stop.do_send(StopConsuming(Shutdown::Warm));
                self.shared.queues.remove(&queue);
                Ok(())
            }
            _ => Err(ConsumerError::NotConsumed(queue)),
        }
    }
}

impl Handler<TerminateTask> for Worker {
    type Result = ResponseFuture<bool>;

    fn handle(
        &mut self,
        TerminateTask(task_id): TerminateTask,
        _ctx: &mut Self::Context,
    ) -> Self::Result {
        let queues: Vec<Recipient<Terminate>> = self
            .running
            .values()
            .map(|consumer| consumer.addr.terminate.clone())
            .collect();
        Box::pin(async move {
            let mut terminated = false;
            for queue in queues {
                let task_id = task_id.clone();
                if let Ok(true) = queue.send(Terminate { task_id }).await {
                    terminated = true;
                }
            }
            terminated
        })
    }
}

/// The lease time-to-live shared by the chord aggregator and the scheduler.
fn chords_lease_ttl(chords: Option<&ChordBackend>) -> std::time::Duration {
    chords.map_or(std::time::Duration::from_secs(6), |chords| chords.lease_ttl)
}
