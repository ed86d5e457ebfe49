//! `QueueActor`: owns the pull consumers of one queue's priority levels and feeds the worker's
//! free slots from them, highest priority first.
//!
//! The actor is the adapter between actix and NATS on one side and plain rules on the other:
//! which level may have work and which one a fetch or the idle wait goes to (`LevelState`,
//! `levels.rs`), how much credit it holds (`HeldCredit`, `held_credit.rs`), and how it learns of
//! new tasks (the `Signal` trait, `signal.rs`): max-bytes probes (`max_bytes_probes.rs`, on
//! nats-server 2.10.16 and later) or the stream's republished doorbells
//! (`republished_doorbells.rs`, on earlier servers). It re-checks every level periodically (a
//! signal can be lost in a reconnect, and a doorbell never rings for a redelivery).
//! It sends one `no_wait` pull request at a time with a batch equal to its free credit
//! (`fetch.rs`), answered on one inbox subscription that lives as long as the actor, and spawns
//! each task on the multi-thread runtime as its message arrives.
//! When no level has work it keeps one long-poll request for one message (the idle wait,
//! `idle_wait.rs`) on the level its last task came from, so the next task there arrives without a
//! signal and a fetch.
//! It never runs a task body on its own thread, and reaches its parent only through the
//! [`QueueDrained`] recipient it is given.

mod fetch;
mod held_credit;
mod idle_wait;
mod in_flight;
mod levels;
mod max_bytes_probes;
mod republished_doorbells;
mod requests;
mod signal;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use async_nats::jetstream::{self, consumer::PullConsumer};
use celerity_proto::QueueName;
use futures_util::StreamExt;

use crate::worker::WorkerShared;
use crate::worker::shutdown::Shutdown;
use fetch::{Pull, PullReply};
use held_credit::HeldCredit;
use idle_wait::{Wait, WaitReply};
use in_flight::InFlight;
pub(crate) use in_flight::Terminate;
use levels::{LEVELS, LevelState};
use max_bytes_probes::MaxBytesProbes;
pub(crate) use republished_doorbells::LevelBell;
use republished_doorbells::RepublishedDoorbells;
use signal::Signal;

/// How long to wait before fetching again after a failed fetch.
const FETCH_RETRY: Duration = Duration::from_millis(500);
/// How long an idle wait lasts on the server before it is renewed. A warm shutdown waits for the
/// wait to end (a task it brings is handed back), so this bounds what the wait adds to one.
const WAIT_EXPIRES: Duration = Duration::from_secs(2);

/// What a queue actor starts from.
pub(crate) struct QueueSetup {
    pub(crate) queue: QueueName,
    /// One consumer per priority level in use, indexed by priority.
    pub(crate) consumers: Vec<Option<PullConsumer>>,
    /// How the actor learns of new tasks, as set up for it.
    pub(crate) signal: SignalSetup,
    /// The prefix of the pull requests' reply subjects, `<inbox>.<level>.<request>`.
    pub(crate) inbox: String,
    /// The subscription to `<inbox>.>`.
    pub(crate) pulls: async_nats::Subscriber,
    /// The prefix of the idle wait's reply subjects, `<wait_inbox>.<level>.<request>`.
    pub(crate) wait_inbox: String,
    /// The subscription to `<wait_inbox>.>`.
    pub(crate) waits: async_nats::Subscriber,
}

/// How a queue actor learns of new tasks (see
/// [`NewTaskSignal`](crate::nats::server::NewTaskSignal)), as set up for it.
pub(crate) enum SignalSetup {
    /// The subscription to each level's doorbell subject, indexed by priority.
    RepublishedDoorbells(Vec<Option<LevelBell>>),
    /// Max-bytes probes, answered on `<inbox>.<level>.<request>`; `replies` subscribes to
    /// `<inbox>.>`.
    MaxBytesProbes {
        inbox: String,
        replies: async_nats::Subscriber,
    },
}

/// How the worker reaches a started queue actor.
pub(crate) struct QueueAddr {
    /// Asks it to stop consuming.
    pub(crate) stop: Recipient<StopConsuming>,
    /// Asks it to terminate a task it runs.
    pub(crate) terminate: Recipient<Terminate>,
}

/// Starts the queue actor of `setup` in the current arbiter; it sends [`QueueDrained`] to
/// `drained` when it has stopped.
pub(crate) fn start(
    setup: QueueSetup,
    shared: Arc<WorkerShared>,
    drained: Recipient<QueueDrained>,
) -> QueueAddr {
    let QueueSetup {
        queue,
        consumers,
        signal,
        inbox,
        pulls,
        wait_inbox,
        waits,
    } = setup;
    let inboxes = Inboxes {
        inbox,
        pulls,
        wait_inbox,
        waits,
    };
    let parent = Parent { shared, drained };
    match signal {
        SignalSetup::RepublishedDoorbells(bells) => {
            let signal = RepublishedDoorbells::new(bells);
            addr(QueueActor::new(queue, consumers, inboxes, signal, parent).start())
        }
        SignalSetup::MaxBytesProbes { inbox, replies } => {
            let signal = MaxBytesProbes::new(inbox, replies);
            addr(QueueActor::new(queue, consumers, inboxes, signal, parent).start())
        }
    }
}

fn addr<S: Signal>(actor: Addr<QueueActor<S>>) -> QueueAddr {
    QueueAddr {
        stop: actor.clone().recipient(),
        terminate: actor.recipient(),
    }
}

/// The pull and idle-wait inboxes of a queue actor, as set up for it.
struct Inboxes {
    inbox: String,
    pulls: async_nats::Subscriber,
    wait_inbox: String,
    waits: async_nats::Subscriber,
}

/// What a queue actor gets from the worker that starts it.
struct Parent {
    shared: Arc<WorkerShared>,
    drained: Recipient<QueueDrained>,
}

/// The consuming side of one queue, learning of new tasks through `S`.
pub(crate) struct QueueActor<S> {
    queue: QueueName,
    shared: Arc<WorkerShared>,
    drained: Recipient<QueueDrained>,
    /// One consumer per priority level in use, indexed by priority.
    consumers: Vec<Option<Arc<PullConsumer>>>,
    /// How it learns of new tasks.
    signal: S,
    /// Which levels may have work.
    levels: LevelState,
    inbox: String,
    pulls: Option<async_nats::Subscriber>,
    /// The pull request in flight, if any (one at a time).
    pull: Option<Pull>,
    next_request: u64,
    wait_inbox: String,
    waits: Option<async_nats::Subscriber>,
    /// The idle wait in flight, if any (one at a time).
    wait: Option<Wait>,
    /// Set for [`FETCH_RETRY`] after an idle wait failed.
    wait_paused: bool,
    /// Credit acquired and not yet used by a fetched task.
    held: HeldCredit,
    waiting_for_credit: bool,
    /// Tasks dispatched and not finished, by a key local to this actor (a redelivery to this same
    /// worker has the same stream sequence, so that cannot be the key).
    in_flight: HashMap<u64, InFlight>,
    next_key: u64,
    mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Running,
    Draining,
    Stopped,
}

impl<S: Signal> QueueActor<S> {
    fn new(
        queue: QueueName,
        consumers: Vec<Option<PullConsumer>>,
        inboxes: Inboxes,
        signal: S,
        parent: Parent,
    ) -> Self {
        let mut in_use = [false; LEVELS];
        for (level, consumer) in consumers.iter().enumerate().take(LEVELS) {
            in_use[level] = consumer.is_some();
        }
        Self {
            queue,
            shared: parent.shared,
            drained: parent.drained,
            consumers: consumers
                .into_iter()
                .map(|consumer| consumer.map(Arc::new))
                .collect(),
            signal,
            levels: LevelState::new(in_use),
            inbox: inboxes.inbox,
            pulls: Some(inboxes.pulls),
            pull: None,
            next_request: 0,
            wait_inbox: inboxes.wait_inbox,
            waits: Some(inboxes.waits),
            wait: None,
            wait_paused: false,
            held: HeldCredit::default(),
            waiting_for_credit: false,
            in_flight: HashMap::new(),
            next_key: 0,
            mode: Mode::Running,
        }
    }

    /// Fetches from the highest level that may have work, if there is credit, and keeps out the
    /// signals that the levels now need.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        self.fetch(ctx);
        S::sync(self, ctx);
    }

    /// The level the idle wait is on, if there is one.
    fn waiting_on(&self) -> Option<usize> {
        self.wait.as_ref().map(|wait| wait.level)
    }

    /// A task came from `level`, with `behind` tasks undelivered behind it.
    fn took_from(&mut self, ctx: &mut Context<Self>, level: usize, behind: Option<u64>) {
        self.levels.took_from(level);
        S::took_from(self, ctx, level, behind);
    }

    /// A signal rang for `level` (see [`LevelState::rang`]). Returns whether it was flagged.
    fn rang(&mut self, level: usize) -> bool {
        let waiting_on = self.waiting_on();
        self.levels.rang(level, waiting_on)
    }

    /// `level` has no work left for this worker: unflag it, and tell the signal.
    fn found_empty(&mut self, ctx: &mut Context<Self>, level: usize) {
        self.levels.unflag(level);
        S::found_empty(self, ctx, level);
    }

    fn wait_for_credit(&mut self, ctx: &mut Context<Self>) {
        if self.waiting_for_credit {
            return;
        }
        self.waiting_for_credit = true;
        let credit = self.shared.pool.credit.clone();
        ctx.spawn(
            async move { credit.acquire_owned().await.ok() }
                .into_actor(self)
                .map(|permit, actor, ctx| {
                    actor.waiting_for_credit = false;
                    if let Some(permit) = permit
                        && actor.mode == Mode::Running
                    {
                        actor.held.hold(permit);
                    }
                    actor.pump(ctx);
                }),
        );
    }

    fn check_drained(&mut self, ctx: &mut Context<Self>) {
        // A pull still in flight is waited for: its messages are handed back, not stranded.
        if self.mode == Mode::Draining
            && self.in_flight.is_empty()
            && self.pull.is_none()
            && self.wait.is_none()
        {
            self.mode = Mode::Stopped;
            self.drained.do_send(QueueDrained {
                queue: self.queue.clone(),
            });
            ctx.stop();
        }
    }

    fn task_message(&self, message: async_nats::Message) -> jetstream::Message {
        jetstream::Message {
            message,
            context: self.shared.js.clone(),
        }
    }
}

impl<S: Signal> Actor for QueueActor<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        S::start(self, ctx);
        if let Some(pulls) = self.pulls.take() {
            ctx.add_stream(pulls.map(PullReply));
        }
        if let Some(waits) = self.waits.take() {
            ctx.add_stream(waits.map(WaitReply));
        }
        // Redelivered messages (after another worker died) ring no doorbell, and signals are lost
        // while disconnected: re-check every level now and then.
        ctx.run_interval(self.shared.recheck_interval, |actor, ctx| {
            actor.levels.flag_all();
            actor.pump(ctx);
        });
        tracing::info!(queue = %self.queue, worker = %self.shared.hostname, "consuming");
        self.pump(ctx);
    }
}

/// A queue actor has no task left in flight and has stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct QueueDrained {
    pub(crate) queue: QueueName,
}

/// Stop fetching; warm: let in-flight tasks finish and ack; cold: abort them and nak their messages.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopConsuming(pub(crate) Shutdown);

impl<S: Signal> Handler<StopConsuming> for QueueActor<S> {
    type Result = ();

    fn handle(&mut self, StopConsuming(shutdown): StopConsuming, ctx: &mut Self::Context) {
        if self.mode == Mode::Stopped {
            return;
        }
        self.mode = Mode::Draining;
        self.held.release();
        match shutdown {
            Shutdown::Cold => self.stop_cold(ctx),
            Shutdown::Warm => {
                tracing::info!(queue = %self.queue, n_tasks = self.in_flight.len(), "warm shutdown: waiting for in-flight tasks");
                self.check_drained(ctx);
            }
        }
    }
}
