//! Bell requests: how a queue actor learns of new tasks on nats-server 2.10.16 and later (see
//! [`NewTaskSignal`](crate::nats::server::NewTaskSignal)).
//!
//! A bell request is a long-poll pull request for at most 1 byte: no task fits, so when a task is
//! (or becomes) available on its level the server answers `409 Message Size Exceeds MaxBytes` and
//! delivers nothing. One is kept on each level not known to have work (known: its last task had
//! others behind it), except the level the idle wait is on, which brings the task itself. It costs
//! the server nothing per task, where a republished doorbell costs it more than the task's store.

use std::time::Duration;

use actix::prelude::*;
use async_nats::StatusCode;
use async_nats::jetstream::{self, consumer::pull::BatchConfig};
use futures_util::StreamExt;

use super::{FETCH_RETRY, Mode, QueueActor, Signal, numbered_reply};

/// How long a bell request waits at the server before it is renewed.
const BELL_EXPIRES: Duration = Duration::from_secs(30);

/// The bell requests of a queue's levels.
pub(super) struct BellRequests {
    /// The bell request out on each level, indexed by priority.
    out: [Option<Out>; 10],
    /// The prefix of their reply subjects, `<inbox>.<level>.<request>`.
    inbox: String,
    /// The subscription to `<inbox>.>`, until the actor starts and takes it as a stream.
    replies: Option<async_nats::Subscriber>,
    /// Set for [`FETCH_RETRY`] after a bell request failed.
    paused: bool,
    /// Levels whose bell rang and were not fetched from since.
    rang: [bool; 10],
    /// How many times in a row each level's bell rang and the fetch after it found nothing.
    in_vain: [u8; 10],
    /// Levels whose bell is not renewed for [`FETCH_RETRY`] (see `fetched_nothing`).
    quiet: [bool; 10],
    /// A level whose bell rang for a task that a `no_wait` fetch did not get: the idle wait, a
    /// long-poll request, goes there next.
    wait_hint: Option<usize>,
}

/// A bell request out on a level.
struct Out {
    request: u64,
    timeout: SpawnHandle,
}

/// A message on the bell inbox: the status ending a bell request.
struct BellReply(async_nats::Message);

impl BellRequests {
    /// Answered on `inbox`, to whose `<inbox>.>` `replies` subscribes.
    pub(super) fn new(inbox: String, replies: async_nats::Subscriber) -> Self {
        Self {
            out: [const { None }; 10],
            inbox,
            replies: Some(replies),
            paused: false,
            rang: [false; 10],
            in_vain: [0; 10],
            quiet: [false; 10],
            wait_hint: None,
        }
    }

    /// Where the idle wait should go first, if a bell rang for a task no fetch got.
    pub(super) fn wait_hint(&self) -> Option<usize> {
        self.wait_hint
    }
}

impl QueueActor {
    fn bell_requests(&mut self) -> Option<&mut BellRequests> {
        match &mut self.signal {
            Signal::BellRequests(bells) => Some(bells),
            Signal::Doorbells(_) => None,
        }
    }

    /// Takes the bell inbox's subscription as a stream of the actor.
    pub(super) fn start_bell_requests(&mut self, ctx: &mut Context<Self>) {
        if let Some(replies) = self.bell_requests().and_then(|bells| bells.replies.take()) {
            ctx.add_stream(replies.map(BellReply));
        }
    }

    /// A task came from `level`: what its bell said is known now.
    pub(super) fn fetched_from(&mut self, level: usize) {
        if let Some(bells) = self.bell_requests() {
            bells.rang[level] = false;
            bells.in_vain[level] = 0;
            if bells.wait_hint == Some(level) {
                bells.wait_hint = None;
            }
        }
    }

    /// A `no_wait` fetch from `level` found nothing. If its bell rang for it, another worker
    /// took the task first (every idle worker's bell rings for one task), and the bell is renewed
    /// at once. If that happens twice in a row, the bell may be ringing for a task no `no_wait`
    /// fetch gets: the idle wait, a long-poll request, goes to this level next, and its bell is not
    /// renewed for [`FETCH_RETRY`], so that such a bell cannot make a loop.
    pub(super) fn fetched_nothing(&mut self, ctx: &mut Context<Self>, level: usize) {
        let Some(bells) = self.bell_requests() else {
            return;
        };
        if !bells.rang[level] {
            return;
        }
        bells.rang[level] = false;
        bells.in_vain[level] += 1;
        if bells.in_vain[level] < 2 {
            return;
        }
        bells.in_vain[level] = 0;
        bells.wait_hint = Some(level);
        bells.quiet[level] = true;
        ctx.run_later(FETCH_RETRY, move |actor, ctx| {
            if let Some(bells) = actor.bell_requests() {
                bells.quiet[level] = false;
            }
            actor.pump(ctx);
        });
    }

    /// Keeps a bell request on each level in use that is not known to have work and has no idle
    /// wait on it. A bell request is never withdrawn: one on a level that got work meanwhile rings
    /// or expires, and either way only flags the level.
    pub(super) fn sync_bells(&mut self, ctx: &mut Context<Self>) {
        if self.mode != Mode::Running {
            return;
        }
        let waiting_on = self.wait.as_ref().map(|wait| wait.level);
        for level in 0..10 {
            let Signal::BellRequests(bells) = &self.signal else {
                return;
            };
            if bells.paused
                || !self.in_use[level]
                || self.maybe_ready[level]
                || waiting_on == Some(level)
                || bells.out[level].is_some()
                || bells.quiet[level]
            {
                continue;
            }
            let Some(consumer) = self.consumers[level].clone() else {
                continue;
            };
            let reply = numbered_reply(&mut self.next_request, &bells.inbox, level);
            let request = reply.0;
            // INVARIANT: no message is 1 byte or less with its headers and subject, so none is
            // ever delivered to a bell request.
            let batch = BatchConfig {
                batch: 1,
                max_bytes: 1,
                expires: Some(BELL_EXPIRES),
                ..BatchConfig::default()
            };
            let timeout = self.send_request(ctx, consumer, batch, reply, Self::bell_ended);
            if let Some(bells) = self.bell_requests() {
                bells.out[level] = Some(Out { request, timeout });
            }
        }
    }

    /// A status arrived on the bell inbox.
    fn bell_reply(&mut self, ctx: &mut Context<Self>, message: async_nats::Message) {
        let mut tokens = message.subject.rsplit('.');
        let (Some(request), Some(level)) = (
            tokens.next().and_then(|token| token.parse::<u64>().ok()),
            tokens.next().and_then(|token| token.parse::<usize>().ok()),
        ) else {
            return;
        };
        let out = self
            .bell_requests()
            .and_then(|bells| bells.out.get(level))
            .and_then(Option::as_ref)
            .map(|out| out.request);
        if out != Some(request) {
            // The late answer of a bell request already given up.
            return;
        }
        match message.status {
            Some(StatusCode::IDLE_HEARTBEAT) => {}
            // Expired: renewed by the pump.
            Some(StatusCode::TIMEOUT | StatusCode::NOT_FOUND) => {
                self.bell_ended(ctx, request, Ok(()));
            }
            // A task is there, too big for the request: the bell rang.
            Some(StatusCode::REQUEST_TERMINATED)
                if message
                    .description
                    .as_deref()
                    .is_some_and(|description| description.contains("MaxBytes")) =>
            {
                if self.rang(level)
                    && let Some(bells) = self.bell_requests()
                {
                    bells.rang[level] = true;
                }
                self.bell_ended(ctx, request, Ok(()));
            }
            Some(status) => {
                let description = message.description.unwrap_or_default();
                self.bell_ended(ctx, request, Err(format!("{status} {description}")));
            }
            // A task: cannot happen (see `sync_bells`); handed back at once, and the level
            // flagged.
            None => {
                let message = self.task_message(message);
                drop(
                    self.shared.runtime.spawn(async move {
                        message.ack_with(jetstream::AckKind::Nak(None)).await
                    }),
                );
                self.maybe_ready[level] = self.in_use[level];
                self.bell_ended(ctx, request, Ok(()));
            }
        }
    }

    /// Ends bell request `request` (if it is still out) and pumps, which renews it if its level
    /// still needs one.
    fn bell_ended(&mut self, ctx: &mut Context<Self>, request: u64, outcome: Result<(), String>) {
        let Some(bells) = self.bell_requests() else {
            return;
        };
        let Some(level) = bells
            .out
            .iter()
            .position(|out| out.as_ref().is_some_and(|out| out.request == request))
        else {
            return;
        };
        if let Some(out) = bells.out[level].take() {
            ctx.cancel_future(out.timeout);
        }
        if let Err(error) = outcome {
            bells.paused = true;
            tracing::warn!(queue = %self.queue, priority = level, error = %error, "bell request failed; retrying");
            ctx.run_later(FETCH_RETRY, |actor, ctx| {
                if let Some(bells) = actor.bell_requests() {
                    bells.paused = false;
                }
                actor.pump(ctx);
            });
        }
        self.pump(ctx);
    }
}

impl StreamHandler<BellReply> for QueueActor {
    fn handle(&mut self, BellReply(message): BellReply, ctx: &mut Self::Context) {
        self.bell_reply(ctx, message);
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // The subscription ended (connection closed for good); the periodic re-check still runs.
        tracing::warn!(queue = %self.queue, "bell inbox subscription ended");
    }
}
