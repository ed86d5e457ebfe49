//! `QueueActor`: owns the pull consumers of one queue's priority levels and feeds the worker's
//! free slots from them, highest priority first.
//!
//! It learns which levels have work from bell requests (`bell_requests.rs`, on nats-server 2.10.16
//! and later) or from the stream's doorbells (`doorbells.rs`, on earlier servers), and re-checks
//! every level periodically (a signal can be lost in a reconnect, and a doorbell never rings for a
//! redelivery). It sends one `no_wait` pull request at a time with a batch equal to its free
//! credit, answered on one inbox subscription that lives as long as the actor, and spawns each
//! task on the multi-thread runtime as its message arrives.
//! When no level has work it keeps one long-poll request for one message (the idle wait) on the
//! level its last task came from, so the next task there arrives without a signal and a fetch.
//! It never runs a task body on its own thread.

mod bell_requests;
mod doorbells;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use async_nats::jetstream::{
    self,
    consumer::{PullConsumer, pull::BatchConfig},
};
use async_nats::{StatusCode, Subject};
use celerity_proto::{Priority, QueueName};
use futures_util::StreamExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::worker::WorkerShared;
use crate::worker::execute::execute;
use crate::worker::limits::Credit;
use crate::worker::root::{QueueDrained, Worker};
use bell_requests::BellRequests;
use doorbells::Doorbells;
pub(crate) use doorbells::LevelBell;

/// Largest number of messages asked for in one pull request.
const MAX_BATCH: usize = 256;
/// How long a pull request may go unanswered before it is abandoned (the server is away, or a
/// nats-server 2.9 kept a `no_wait` request whose messages other workers took).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
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
    Doorbells(Vec<Option<LevelBell>>),
    /// Bell requests, answered on `<inbox>.<level>.<request>`; `replies` subscribes to
    /// `<inbox>.>`.
    BellRequests {
        inbox: String,
        replies: async_nats::Subscriber,
    },
}

/// How a queue actor learns of new tasks.
enum Signal {
    // Boxed: one per actor, and not of the same size.
    Doorbells(Box<Doorbells>),
    BellRequests(Box<BellRequests>),
}

/// The consuming side of one queue.
pub(crate) struct QueueActor {
    queue: QueueName,
    shared: Arc<WorkerShared>,
    root: Addr<Worker>,
    /// One consumer per priority level in use, indexed by priority.
    consumers: Vec<Option<Arc<PullConsumer>>>,
    /// The levels that have a consumer.
    in_use: [bool; 10],
    /// How it learns of new tasks.
    signal: Signal,
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
    /// The level the last task came from, which the idle wait listens on.
    last_level: Option<usize>,
    /// Levels that may have work, indexed by priority.
    maybe_ready: [bool; 10],
    /// Bumped by every bell or doorbell of a level, so a fetch that raced one does not mark the
    /// level empty.
    generation: [u64; 10],
    /// Credit acquired and not yet used by a fetched task.
    held: Vec<OwnedSemaphorePermit>,
    waiting_for_credit: bool,
    /// Tasks dispatched and not finished, by a key local to this actor (a redelivery to this same
    /// worker has the same stream sequence, so that cannot be the key).
    in_flight: HashMap<u64, InFlight>,
    next_key: u64,
    mode: Mode,
}

struct InFlight {
    ack_subject: Option<async_nats::Subject>,
    abort: tokio::task::AbortHandle,
    /// The task id from the message's headers, for `revoke --terminate`.
    task_id: Option<String>,
    /// Cancelled by `revoke --terminate`: the run aborts the body and ends the task REVOKED.
    terminate: CancellationToken,
    /// The message's stream and sequence, to count its hand-back at a cold shutdown.
    position: Option<(String, u64)>,
}

/// A pull request sent and not yet ended.
struct Pull {
    request: u64,
    level: usize,
    requested: usize,
    received: usize,
    /// How many messages the level still had undelivered when its last task was sent.
    behind: Option<u64>,
    /// The level's bell generation when it was sent.
    generation: u64,
    /// The timer that abandons the request; cancelled when it ends, so timers do not pile up in
    /// the actor's context (each one is polled on every wake of the actor).
    timeout: Option<SpawnHandle>,
}

/// A long-poll request for one message, sent when no level has work.
///
/// It holds no credit, so an idle queue does not keep other queues of the worker from running:
/// the task it brings takes free credit, or goes straight back if there is none.
struct Wait {
    request: u64,
    level: usize,
    timeout: SpawnHandle,
}

/// A message on the pull inbox: a task, or a status ending a pull request.
struct PullReply(async_nats::Message);

/// A message on the idle wait's inbox: its task, or a status ending it.
struct WaitReply(async_nats::Message);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Running,
    Draining,
    Stopped,
}

impl QueueActor {
    pub(crate) fn new(setup: QueueSetup, shared: Arc<WorkerShared>, root: Addr<Worker>) -> Self {
        let mut in_use = [false; 10];
        for (level, consumer) in setup.consumers.iter().enumerate().take(10) {
            in_use[level] = consumer.is_some();
        }
        let signal = match setup.signal {
            SignalSetup::Doorbells(bells) => Signal::Doorbells(Box::new(Doorbells::new(bells))),
            SignalSetup::BellRequests { inbox, replies } => {
                Signal::BellRequests(Box::new(BellRequests::new(inbox, replies)))
            }
        };
        Self {
            queue: setup.queue,
            shared,
            root,
            consumers: setup
                .consumers
                .into_iter()
                .map(|consumer| consumer.map(Arc::new))
                .collect(),
            signal,
            inbox: setup.inbox,
            pulls: Some(setup.pulls),
            pull: None,
            next_request: 0,
            wait_inbox: setup.wait_inbox,
            waits: Some(setup.waits),
            wait: None,
            wait_paused: false,
            last_level: None,
            maybe_ready: in_use,
            in_use,
            generation: [0; 10],
            held: Vec::new(),
            waiting_for_credit: false,
            in_flight: HashMap::new(),
            next_key: 0,
            mode: Mode::Running,
        }
    }

    /// Fetches from the highest level that may have work, if there is credit, and keeps out the
    /// bell requests that the levels now need.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        self.fetch(ctx);
        self.sync_bells(ctx);
    }

    /// Fetches from the highest level that may have work, if there is credit; else starts the idle
    /// wait.
    fn fetch(&mut self, ctx: &mut Context<Self>) {
        if self.mode != Mode::Running {
            // Credit that arrives while stopping goes back at once: in-flight tasks may need it.
            self.held.clear();
            return;
        }
        if self.pull.is_some() {
            return;
        }
        let weights = self.shared.priority_weights.current();
        let Some(priority) =
            choose_level(&self.maybe_ready, weights.as_ref(), super::random_unit())
        else {
            // Idle: give the credit back so other queues of this worker can use it, and wait for
            // the next task.
            self.held.clear();
            self.start_wait(ctx);
            return;
        };
        while self.held.len() < MAX_BATCH {
            match self.shared.credit.clone().try_acquire_owned() {
                Ok(permit) => self.held.push(permit),
                Err(_) => break,
            }
        }
        if self.held.is_empty() {
            self.wait_for_credit(ctx);
            return;
        }
        let level = priority.get() as usize;
        let Some(consumer) = self.consumers[level].clone() else {
            // INVARIANT: only levels in use are ever flagged; unflag one that is not, defensively.
            self.maybe_ready[level] = false;
            return;
        };
        let reply = numbered_reply(&mut self.next_request, &self.inbox, level);
        let request = reply.0;
        let requested = self.held.len();
        self.pull = Some(Pull {
            request,
            level,
            requested,
            received: 0,
            behind: None,
            generation: self.generation[level],
            timeout: None,
        });
        let batch = BatchConfig {
            batch: requested,
            no_wait: true,
            ..BatchConfig::default()
        };
        let timeout = self.send_request(ctx, consumer, batch, reply, Self::pull_ended);
        if let Some(pull) = self.pull.as_mut() {
            pull.timeout = Some(timeout);
        }
    }

    /// Sends pull request `request` with `batch`, answered on `reply`; `ended` hears of a request
    /// that could not be sent, and of one not answered in time. Returns the timer, which `ended`
    /// cancels when the request ends otherwise.
    fn send_request(
        &mut self,
        ctx: &mut Context<Self>,
        consumer: Arc<PullConsumer>,
        batch: BatchConfig,
        (request, reply): (u64, Subject),
        ended: fn(&mut Self, &mut Context<Self>, u64, Result<(), String>),
    ) -> SpawnHandle {
        let deadline = batch.expires.unwrap_or_default() + FETCH_TIMEOUT;
        ctx.spawn(
            async move { consumer.request_batch(batch, reply).await }
                .into_actor(self)
                .map(move |sent, actor, ctx| {
                    if let Err(error) = sent {
                        ended(actor, ctx, request, Err(error.to_string()));
                    }
                }),
        );
        ctx.run_later(deadline, move |actor, ctx| {
            ended(
                actor,
                ctx,
                request,
                Err(format!("no answer within {deadline:?}")),
            );
        })
    }

    /// A message arrived on the pull inbox.
    ///
    /// A task message carries its stream subject, not the reply subject it was sent to, so it is
    /// counted against the request in flight; a status is sent to the reply subject and names its
    /// request.
    fn pull_reply(&mut self, ctx: &mut Context<Self>, message: async_nats::Message) {
        if matches!(message.status, None | Some(StatusCode::OK)) {
            let message = self.task_message(message);
            let behind = undelivered(&message);
            let complete = self.pull.as_mut().and_then(|pull| {
                pull.received += 1;
                pull.behind = behind;
                (pull.received == pull.requested).then_some(pull.request)
            });
            if let Some(level) = level_of(&message.subject) {
                self.last_level = Some(level);
                self.took_from(ctx, level, behind);
            }
            self.receive(ctx, message, true);
            if let Some(request) = complete {
                self.pull_ended(ctx, request, Ok(()));
            }
            return;
        }
        let request = request_of(&message.subject);
        let current = self
            .pull
            .as_ref()
            .filter(|pull| Some(pull.request) == request);
        match message.status {
            Some(StatusCode::IDLE_HEARTBEAT) => {}
            // No messages (404), or fewer than asked for (408): the request is over.
            Some(StatusCode::NOT_FOUND | StatusCode::TIMEOUT) if current.is_some() => {
                if let Some(request) = request {
                    self.pull_ended(ctx, request, Ok(()));
                }
            }
            Some(status) if current.is_some() => {
                if let Some(request) = request {
                    let description = message.description.unwrap_or_default();
                    self.pull_ended(ctx, request, Err(format!("{status} {description}")));
                }
            }
            // The late status of a request already given up.
            _ => {}
        }
    }

    /// Ends pull request `request` (if it is still the one in flight) and fetches again.
    fn pull_ended(&mut self, ctx: &mut Context<Self>, request: u64, outcome: Result<(), String>) {
        let Some(pull) = self.pull.take_if(|pull| pull.request == request) else {
            return;
        };
        if let Some(timeout) = pull.timeout {
            ctx.cancel_future(timeout);
        }
        // Empty: fewer tasks than asked for, or the last one had none behind it (which spares the
        // fetch that would only find that out); unless a bell rang since.
        if outcome.is_ok()
            && (pull.received < pull.requested || pull.behind == Some(0))
            && self.generation[pull.level] == pull.generation
        {
            self.found_empty(ctx, pull.level);
        }
        if outcome.is_ok() && pull.received == 0 {
            self.fetched_nothing(ctx, pull.level);
        }
        self.check_drained(ctx);
        match outcome {
            Ok(()) => self.pump(ctx),
            Err(error) => {
                tracing::warn!(queue = %self.queue, priority = pull.level, error = %error, "fetch failed; retrying");
                ctx.run_later(FETCH_RETRY, |actor, ctx| actor.pump(ctx));
            }
        }
    }

    /// Starts the idle wait, if there is none, on the level a bell rang for in vain (see
    /// `fetched_nothing`), else on the level the last task came from (at first, the lowest in
    /// use, where tasks of the default priority go). Only with free credit: without it, a task it
    /// brought would go back.
    fn start_wait(&mut self, ctx: &mut Context<Self>) {
        if self.wait.is_some()
            || self.wait_paused
            || self.mode != Mode::Running
            || self.shared.credit.available_permits() == 0
        {
            return;
        }
        let hint = match &self.signal {
            Signal::BellRequests(bells) => bells.wait_hint(),
            Signal::Doorbells(_) => None,
        };
        let Some(level) = hint
            .or(self.last_level)
            .filter(|level| self.in_use[*level])
            .or_else(|| (0..10).find(|level| self.in_use[*level]))
        else {
            return;
        };
        let Some(consumer) = self.consumers[level].clone() else {
            return;
        };
        let reply = numbered_reply(&mut self.next_request, &self.wait_inbox, level);
        let request = reply.0;
        let batch = BatchConfig {
            batch: 1,
            expires: Some(WAIT_EXPIRES),
            ..BatchConfig::default()
        };
        let timeout = self.send_request(ctx, consumer, batch, reply, Self::wait_ended);
        self.wait = Some(Wait {
            request,
            level,
            timeout,
        });
    }

    /// A message arrived on the idle wait's inbox.
    fn wait_reply(&mut self, ctx: &mut Context<Self>, message: async_nats::Message) {
        if matches!(message.status, None | Some(StatusCode::OK)) {
            // The wait asked for one message: this is it. Its level is fetched from if more were
            // behind it; if none were, the next wait brings the next one (a sequential workload,
            // such as a chain, then costs one request per task).
            let message = self.task_message(message);
            if let Some(level) = level_of(&message.subject) {
                self.last_level = Some(level);
                let behind = undelivered(&message);
                if self.in_use[level] && behind != Some(0) {
                    self.maybe_ready[level] = true;
                } else {
                    self.found_empty(ctx, level);
                }
                self.took_from(ctx, level, behind);
            }
            self.receive(ctx, message, false);
            match self.wait.as_ref().map(|wait| wait.request) {
                Some(request) => self.wait_ended(ctx, request, Ok(())),
                None => self.pump(ctx),
            }
            return;
        }
        let request = request_of(&message.subject);
        let Some(request) = request.filter(|request| {
            self.wait
                .as_ref()
                .is_some_and(|wait| wait.request == *request)
        }) else {
            // A heartbeat, or the late status of a wait already given up.
            return;
        };
        match message.status {
            Some(StatusCode::IDLE_HEARTBEAT) => {}
            // Expired (408) or nothing to wait for (404): renewed by the pump if still idle.
            Some(StatusCode::NOT_FOUND | StatusCode::TIMEOUT) => {
                self.wait_ended(ctx, request, Ok(()));
            }
            Some(status) => {
                let description = message.description.unwrap_or_default();
                self.wait_ended(ctx, request, Err(format!("{status} {description}")));
            }
            None => {}
        }
    }

    /// Ends idle wait `request` (if it is still the one in flight) and pumps again.
    fn wait_ended(&mut self, ctx: &mut Context<Self>, request: u64, outcome: Result<(), String>) {
        let Some(wait) = self.wait.take_if(|wait| wait.request == request) else {
            return;
        };
        ctx.cancel_future(wait.timeout);
        self.check_drained(ctx);
        if let Err(error) = outcome {
            tracing::warn!(queue = %self.queue, priority = wait.level, error = %error, "idle wait failed; retrying");
            self.wait_paused = true;
            ctx.run_later(FETCH_RETRY, |actor, ctx| {
                actor.wait_paused = false;
                actor.pump(ctx);
            });
        }
        self.pump(ctx);
    }

    /// Runs a delivered task on credit held for it (`held`, a pull request's task) or on free
    /// credit (the idle wait's task, or the late answer of a request given up); hands it straight
    /// back when stopping or when there is no credit for it.
    fn receive(&mut self, ctx: &mut Context<Self>, message: jetstream::Message, held: bool) {
        let permit = match self.mode {
            Mode::Running => held
                .then(|| self.held.pop())
                .flatten()
                .or_else(|| self.shared.credit.clone().try_acquire_owned().ok()),
            Mode::Draining | Mode::Stopped => None,
        };
        match permit {
            Some(permit) => self.dispatch(ctx, message, permit),
            None => {
                let shared = self.shared.clone();
                drop(self.shared.runtime.spawn(async move {
                    shared.handbacks.hand_back(&message, None).await;
                }));
            }
        }
    }

    fn task_message(&self, message: async_nats::Message) -> jetstream::Message {
        jetstream::Message {
            message,
            context: self.shared.js.clone(),
        }
    }

    /// Spawns one task on the multi-thread runtime, holding one unit of credit until it ends.
    fn dispatch(
        &mut self,
        ctx: &mut Context<Self>,
        message: jetstream::Message,
        permit: OwnedSemaphorePermit,
    ) {
        let key = self.next_key;
        self.next_key += 1;
        let ack_subject = message.reply.clone();
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(name))
                .map(|value| value.as_str().to_owned())
        };
        let task_id = header(celerity_proto::header::ID);
        let position = message
            .info()
            .ok()
            .map(|info| (info.stream.to_owned(), info.stream_sequence));
        let terminate = CancellationToken::new();
        let terminated = terminate.clone();
        let shared = self.shared.clone();
        let queue = self.queue.clone();
        // INVARIANT: the actor hears about the end of every task it dispatched, even if the task
        // panics or is aborted, so a warm shutdown never waits on a task that is gone.
        let finished = FinishedGuard {
            actor: ctx.address(),
            key,
        };
        let credit = Credit::new(self.shared.credit.clone(), permit);
        let handle = self.shared.runtime.spawn(async move {
            let _finished = finished;
            execute(shared, queue, message, credit, terminated).await;
        });
        self.in_flight.insert(
            key,
            InFlight {
                ack_subject,
                abort: handle.abort_handle(),
                task_id,
                terminate,
                position,
            },
        );
    }

    /// A task came from `level`, with `behind` tasks undelivered behind it.
    fn took_from(&mut self, ctx: &mut Context<Self>, level: usize, behind: Option<u64>) {
        self.fetched_from(level);
        self.mute_if_behind(ctx, level, behind);
    }

    /// A bell or doorbell rang for `level`: it is flagged for a fetch, unless the idle wait is on
    /// it, which brings the task itself (and flags the level when it does): a fetch now would find
    /// nothing. Returns whether it was flagged.
    fn rang(&mut self, level: usize) -> bool {
        self.generation[level] += 1;
        let flagged = self.wait.as_ref().is_none_or(|wait| wait.level != level);
        if flagged {
            self.maybe_ready[level] = self.in_use[level];
        }
        flagged
    }

    /// `level` has no work left for this worker: unflag it, and hear its doorbells again.
    fn found_empty(&mut self, ctx: &mut Context<Self>, level: usize) {
        self.maybe_ready[level] = false;
        self.unmute(ctx, level);
    }

    fn wait_for_credit(&mut self, ctx: &mut Context<Self>) {
        if self.waiting_for_credit {
            return;
        }
        self.waiting_for_credit = true;
        let credit = self.shared.credit.clone();
        ctx.spawn(
            async move { credit.acquire_owned().await.ok() }
                .into_actor(self)
                .map(|permit, actor, ctx| {
                    actor.waiting_for_credit = false;
                    if let Some(permit) = permit
                        && actor.mode == Mode::Running
                    {
                        actor.held.push(permit);
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
            self.root.do_send(QueueDrained {
                queue: self.queue.clone(),
            });
            ctx.stop();
        }
    }
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.start_doorbells(ctx);
        self.start_bell_requests(ctx);
        if let Some(pulls) = self.pulls.take() {
            ctx.add_stream(pulls.map(PullReply));
        }
        if let Some(waits) = self.waits.take() {
            ctx.add_stream(waits.map(WaitReply));
        }
        // Redelivered messages (after another worker died) ring no doorbell, and doorbells and
        // bell requests are lost while disconnected: re-check every level now and then.
        ctx.run_interval(self.shared.recheck_interval, |actor, ctx| {
            actor.maybe_ready = actor.in_use;
            actor.pump(ctx);
        });
        tracing::info!(queue = %self.queue, worker = %self.shared.hostname, "consuming");
        self.pump(ctx);
    }
}

impl StreamHandler<WaitReply> for QueueActor {
    fn handle(&mut self, WaitReply(message): WaitReply, ctx: &mut Self::Context) {
        self.wait_reply(ctx, message);
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        tracing::warn!(queue = %self.queue, "idle wait inbox subscription ended");
    }
}

impl StreamHandler<PullReply> for QueueActor {
    fn handle(&mut self, PullReply(message): PullReply, ctx: &mut Self::Context) {
        self.pull_reply(ctx, message);
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        tracing::warn!(queue = %self.queue, "pull inbox subscription ended");
    }
}

/// A new request's number, taken from `next`, and the subject its answers come to on `inbox`:
/// `<inbox>.<level>.<request>`.
fn numbered_reply(next: &mut u64, inbox: &str, level: usize) -> (u64, Subject) {
    let request = *next;
    *next += 1;
    (request, Subject::from(format!("{inbox}.{level}.{request}")))
}

/// The request named by the last token of a status's reply subject, `<inbox>.<level>.<request>`.
fn request_of(subject: &str) -> Option<u64> {
    subject
        .rsplit('.')
        .next()
        .and_then(|token| token.parse::<u64>().ok())
}

/// How many messages of its consumer were not yet delivered when `message` was sent (from its
/// `$JS.ACK` reply subject). Redeliveries due are not counted.
fn undelivered(message: &jetstream::Message) -> Option<u64> {
    message.info().ok().map(|info| info.pending)
}

/// The priority level named by the last token of a task subject.
fn level_of(subject: &str) -> Option<usize> {
    subject
        .rsplit('.')
        .next()
        .and_then(|token| token.parse::<Priority>().ok())
        .map(|priority| priority.get() as usize)
}

/// The level to fetch from: the highest that may have work (strict), or one drawn among them in
/// proportion to `weights` with `draw` in `0.0..=1.0` (weighted).
fn choose_level(
    maybe_ready: &[bool; 10],
    weights: Option<&[u32; 10]>,
    draw: f64,
) -> Option<Priority> {
    let ready = Priority::all_descending().filter(|p| maybe_ready[p.get() as usize]);
    let Some(weights) = weights else {
        return Priority::all_descending().find(|p| maybe_ready[p.get() as usize]);
    };
    let candidates: Vec<Priority> = ready.collect();
    let total: u64 = candidates
        .iter()
        .map(|p| u64::from(weights[p.get() as usize]))
        .sum();
    if total == 0 {
        return candidates.first().copied();
    }
    let mut point = (draw.clamp(0.0, 1.0) * total as f64) as u64;
    for candidate in &candidates {
        let weight = u64::from(weights[candidate.get() as usize]);
        if point < weight {
            return Some(*candidate);
        }
        point -= weight;
    }
    candidates.last().copied()
}

/// A task of this queue ended (its message was acked, nacked or dead-lettered, or its run was
/// aborted or panicked).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TaskFinished {
    key: u64,
}

/// Sends [`TaskFinished`] when the task's future is dropped, however it ends.
struct FinishedGuard {
    actor: Addr<QueueActor>,
    key: u64,
}

impl Drop for FinishedGuard {
    fn drop(&mut self) {
        self.actor.do_send(TaskFinished { key: self.key });
    }
}

impl Handler<TaskFinished> for QueueActor {
    type Result = ();

    fn handle(&mut self, finished: TaskFinished, ctx: &mut Self::Context) {
        self.in_flight.remove(&finished.key);
        self.check_drained(ctx);
        // Its credit is free again: an idle queue that had none can wait for the next task now.
        if self.pull.is_none() && !self.maybe_ready.iter().any(|ready| *ready) {
            self.start_wait(ctx);
        }
    }
}

/// Terminate the running task with this id (`revoke --terminate`): its body is aborted and it ends
/// REVOKED (reason `terminated`) like any run, so its record names the task, what follows it is
/// revoked, its chord hears of it, and its message is acknowledged. Replies whether this queue was
/// running it.
#[derive(Message)]
#[rtype(result = "bool")]
pub(crate) struct Terminate {
    pub(crate) task_id: String,
}

impl Handler<Terminate> for QueueActor {
    type Result = bool;

    fn handle(&mut self, terminate: Terminate, _ctx: &mut Self::Context) -> bool {
        let Some(task) = self
            .in_flight
            .values()
            .find(|task| task.task_id.as_deref() == Some(terminate.task_id.as_str()))
        else {
            return false;
        };
        tracing::warn!(task_id = %terminate.task_id, "terminating a running task");
        task.terminate.cancel();
        true
    }
}

/// Stop fetching; warm: let in-flight tasks finish and ack; cold: abort them and nak their messages.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopConsuming {
    pub(crate) cold: bool,
}

impl Handler<StopConsuming> for QueueActor {
    type Result = ();

    fn handle(&mut self, stop: StopConsuming, ctx: &mut Self::Context) {
        if self.mode == Mode::Stopped {
            return;
        }
        self.mode = Mode::Draining;
        self.held.clear();
        if stop.cold {
            let nats = self.shared.nats.clone();
            let mut naks = Vec::new();
            for (_, task) in self.in_flight.drain() {
                task.abort.abort();
                if let Some(subject) = task.ack_subject {
                    naks.push((subject, task.position));
                }
            }
            tracing::warn!(queue = %self.queue, n_tasks = naks.len(), "cold shutdown: returning in-flight tasks to the queue");
            let root = self.root.clone();
            let queue = self.queue.clone();
            let handbacks = self.shared.handbacks.clone();
            self.mode = Mode::Stopped;
            self.shared.runtime.spawn(async move {
                // Delayed past this worker's idle wait, which is still at the server until the
                // connection closes: redelivered at once, the task could go straight back to it.
                let nak =
                    bytes::Bytes::from(format!("-NAK {{\"delay\": {}}}", WAIT_EXPIRES.as_nanos()));
                for (subject, position) in naks {
                    // Handed back, not crashed: it does not count against max_deliveries. The
                    // count is bounded in time, since the connection is about to close.
                    if let Some((stream, sequence)) = position {
                        let counted = handbacks.count_handback(&stream, sequence);
                        let _ = tokio::time::timeout(Duration::from_secs(1), counted).await;
                    }
                    let _ = nats.publish(subject, nak.clone()).await;
                }
                // With the server gone the naks cannot arrive anyway; AckWait returns the tasks.
                if nats.connection_state() == async_nats::connection::State::Connected {
                    let _ = tokio::time::timeout(Duration::from_secs(5), nats.flush()).await;
                }
                root.do_send(QueueDrained { queue });
            });
            ctx.stop();
        } else {
            tracing::info!(queue = %self.queue, n_tasks = self.in_flight.len(), "warm shutdown: waiting for in-flight tasks");
            self.check_drained(ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_takes_the_highest_level_with_work() {
        let mut ready = [false; 10];
        ready[2] = true;
        ready[7] = true;
        assert_eq!(choose_level(&ready, None, 0.0).map(Priority::get), Some(7));
        assert_eq!(choose_level(&[false; 10], None, 0.5), None);
    }

    #[test]
    fn weighted_shares_levels_by_weight() {
        let mut ready = [false; 10];
        ready[0] = true;
        ready[9] = true;
        let weights = [1, 0, 0, 0, 0, 0, 0, 0, 0, 3];
        let picks: Vec<u8> = (0..100)
            .map(|i| {
                choose_level(&ready, Some(&weights), f64::from(i) / 100.0)
                    .unwrap()
                    .get()
            })
            .collect();
        let low = picks.iter().filter(|&&p| p == 0).count();
        assert_eq!(low, 25, "priority 0 gets a quarter of the draws");
        let zero_weight = [0; 10];
        assert_eq!(
            choose_level(&ready, Some(&zero_weight), 0.3).map(Priority::get),
            Some(9)
        );
    }
}
