//! Max-bytes probes: how a queue actor learns of new tasks on nats-server 2.10.16 and later (see
//! [`NewTaskSignal::MaxBytesProbe`](crate::nats::server::NewTaskSignal::MaxBytesProbe)).
//!
//! A probe is a long-poll pull request for at most 1 byte: no task fits, so when a task is (or
//! becomes) available on its level the server answers `409 Message Size Exceeds MaxBytes` and
//! delivers nothing. One is kept on each level not known to have work (known: its last task had
//! others behind it), except the level the idle wait is on, which brings the task itself. It costs
//! the server nothing per task, where a republished doorbell costs it more than the task's store.
//! When a probe rings, rests and is renewed is decided by `ProbeRules`, plain data tested here.

use std::time::Duration;

use actix::prelude::*;
use async_nats::StatusCode;
use async_nats::jetstream::consumer::pull::BatchConfig;
use futures_util::StreamExt;
use tokio::time::Instant;

use super::levels::LEVELS;
use super::requests::{RequestEnd, RequestError, level_and_request_of, numbered_reply};
use super::signal::Signal;
use super::{FETCH_RETRY, Mode, QueueActor};

/// How long a probe waits at the server before it is renewed.
const PROBE_EXPIRES: Duration = Duration::from_secs(30);

/// The max-bytes probes of a queue's levels.
pub(super) struct MaxBytesProbes {
    /// The probe out on each level, indexed by priority.
    out: [Option<Out>; LEVELS],
    /// The prefix of their reply subjects, `<inbox>.<level>.<request>`.
    inbox: String,
    /// The subscription to `<inbox>.>`, until the actor starts and takes it as a stream.
    replies: Option<async_nats::Subscriber>,
    rules: ProbeRules,
}

/// A probe out on a level.
struct Out {
    request: u64,
    timeout: SpawnHandle,
}

/// A message on the probe inbox: the status ending a probe.
struct ProbeReply(async_nats::Message);

impl MaxBytesProbes {
    /// Answered on `inbox`, to whose `<inbox>.>` `replies` subscribes.
    pub(super) fn new(inbox: String, replies: async_nats::Subscriber) -> Self {
        Self {
            out: [const { None }; LEVELS],
            inbox,
            replies: Some(replies),
            rules: ProbeRules::default(),
        }
    }
}

impl Signal for MaxBytesProbes {
    /// Takes the probe inbox's subscription as a stream of the actor.
    fn start(actor: &mut QueueActor<Self>, ctx: &mut Context<QueueActor<Self>>) {
        if let Some(replies) = actor.signal.replies.take() {
            ctx.add_stream(replies.map(ProbeReply));
        }
    }

    /// Keeps a probe on each level that needs a signal (see [`LevelState::needs_signal`]) and
    /// whose probe does not rest. A probe is never withdrawn: one on a level that got work
    /// meanwhile rings or expires, and either way only flags the level.
    ///
    /// [`LevelState::needs_signal`]: super::levels::LevelState::needs_signal
    fn sync(actor: &mut QueueActor<Self>, ctx: &mut Context<QueueActor<Self>>) {
        if actor.mode != Mode::Running {
            return;
        }
        let waiting_on = actor.waiting_on();
        for level in 0..LEVELS {
            let probes = &actor.signal;
            if !actor.levels.needs_signal(level, waiting_on)
                || probes.out[level].is_some()
                || probes.rules.rests(level)
            {
                continue;
            }
            let Some(consumer) = actor.consumers[level].clone() else {
                continue;
            };
            let reply = numbered_reply(&mut actor.next_request, &probes.inbox, level);
            let request = reply.request;
            // INVARIANT: no message is 1 byte or less with its headers and subject, so none is
            // ever delivered to a probe.
            let batch = BatchConfig {
                batch: 1,
                max_bytes: 1,
                expires: Some(PROBE_EXPIRES),
                ..BatchConfig::default()
            };
            let timeout = actor.send_request(ctx, consumer, batch, reply, probe_ended);
            actor.signal.out[level] = Some(Out { request, timeout });
        }
    }

    /// What its probe said is known now.
    fn took_from(
        actor: &mut QueueActor<Self>,
        _ctx: &mut Context<QueueActor<Self>>,
        level: usize,
        _behind: Option<u64>,
    ) {
        actor.signal.rules.fetched_from(level);
    }

    /// See [`ProbeRules::fetched_nothing`]; a probe that rests is renewed when the rest is over.
    fn fetched_nothing(
        actor: &mut QueueActor<Self>,
        ctx: &mut Context<QueueActor<Self>>,
        level: usize,
    ) {
        if actor.signal.rules.fetched_nothing(level) {
            ctx.run_later(FETCH_RETRY, |actor, ctx| actor.pump(ctx));
        }
    }

    fn found_empty(
        _actor: &mut QueueActor<Self>,
        _ctx: &mut Context<QueueActor<Self>>,
        _level: usize,
    ) {
    }

    fn wait_hint(&self) -> Option<usize> {
        self.rules.wait_hint
    }
}

impl QueueActor<MaxBytesProbes> {
    /// A status arrived on the probe inbox.
    fn probe_reply(&mut self, ctx: &mut Context<Self>, message: async_nats::Message) {
        let Some((level, request)) = level_and_request_of(&message.subject) else {
            return;
        };
        let out = self
            .signal
            .out
            .get(level)
            .and_then(Option::as_ref)
            .map(|out| out.request);
        if out != Some(request) {
            // The late answer of a probe already given up.
            return;
        }
        match message.status {
            Some(StatusCode::IDLE_HEARTBEAT) => {}
            // Expired: renewed by the pump.
            Some(StatusCode::TIMEOUT | StatusCode::NOT_FOUND) => {
                probe_ended(self, ctx, request, Ok(()));
            }
            // A task is there, too big for the request: the probe rang.
            Some(StatusCode::REQUEST_TERMINATED)
                if message
                    .description
                    .as_deref()
                    .is_some_and(|description| description.contains("MaxBytes")) =>
            {
                if self.rang(level) {
                    self.signal.rules.rang(level);
                }
                probe_ended(self, ctx, request, Ok(()));
            }
            Some(status) => {
                let error = RequestError::status(message, status);
                probe_ended(self, ctx, request, Err(error));
            }
            // A task: cannot happen (see `sync`); handed back at once, and the level flagged.
            None => {
                let message = self.task_message(message);
                drop(
                    self.shared
                        .runtime
                        .spawn(async move { crate::worker::nats_io::nak(&message, None).await }),
                );
                self.levels.flag(level);
                probe_ended(self, ctx, request, Ok(()));
            }
        }
    }
}

/// Ends probe `request` (if it is still out) and pumps, which renews it if its level still needs
/// one.
fn probe_ended(
    actor: &mut QueueActor<MaxBytesProbes>,
    ctx: &mut Context<QueueActor<MaxBytesProbes>>,
    request: u64,
    outcome: RequestEnd,
) {
    let probes = &mut actor.signal;
    let Some(level) = probes
        .out
        .iter()
        .position(|out| out.as_ref().is_some_and(|out| out.request == request))
    else {
        return;
    };
    if let Some(out) = probes.out[level].take() {
        ctx.cancel_future(out.timeout);
    }
    if let Err(error) = outcome {
        probes.rules.failed();
        let error = crate::error_chain(&error);
        tracing::warn!(queue = %actor.queue, priority = level, error = %error, "max-bytes probe failed; retrying");
        ctx.run_later(FETCH_RETRY, |actor, ctx| actor.pump(ctx));
    }
    actor.pump(ctx);
}

impl StreamHandler<ProbeReply> for QueueActor<MaxBytesProbes> {
    fn handle(&mut self, ProbeReply(message): ProbeReply, ctx: &mut Self::Context) {
        self.probe_reply(ctx, message);
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // The subscription ended (connection closed for good); the periodic re-check still runs.
        tracing::warn!(queue = %self.queue, "probe inbox subscription ended");
    }
}

/// When each level's probe rang, and when it rests: plain data over the clock.
#[derive(Debug, Default)]
struct ProbeRules {
    /// Levels whose probe rang and were not fetched from since.
    rang: [bool; LEVELS],
    /// How many times in a row each level's probe rang and the fetch after it found nothing.
    in_vain: [u8; LEVELS],
    /// Until when each level's probe is not renewed (see `fetched_nothing`).
    quiet_until: [Option<Instant>; LEVELS],
    /// Until when no probe is sent, after one failed.
    paused_until: Option<Instant>,
    /// A level whose probe rang for a task that a `no_wait` fetch did not get: the idle wait, a
    /// long-poll request, goes there next.
    wait_hint: Option<usize>,
}

impl ProbeRules {
    /// `level`'s probe rang (and flagged the level).
    fn rang(&mut self, level: usize) {
        self.rang[level] = true;
    }

    /// A task came from `level`.
    fn fetched_from(&mut self, level: usize) {
        self.rang[level] = false;
        self.in_vain[level] = 0;
        if self.wait_hint == Some(level) {
            self.wait_hint = None;
        }
    }

    /// A `no_wait` fetch from `level` found nothing. If its probe rang for it, another worker took
    /// the task first (every idle worker's probe rings for one task), and the probe is renewed at
    /// once. If that happens twice in a row, the probe may be ringing for a task no `no_wait` fetch
    /// gets: the idle wait, a long-poll request, goes to this level next, and its probe rests for
    /// [`FETCH_RETRY`], so that such a probe cannot make a loop. Returns whether it rests.
    fn fetched_nothing(&mut self, level: usize) -> bool {
        if !self.rang[level] {
            return false;
        }
        self.rang[level] = false;
        self.in_vain[level] += 1;
        if self.in_vain[level] < 2 {
            return false;
        }
        self.in_vain[level] = 0;
        self.wait_hint = Some(level);
        self.quiet_until[level] = Some(Instant::now() + FETCH_RETRY);
        true
    }

    /// A probe failed: none is sent for [`FETCH_RETRY`].
    fn failed(&mut self) {
        self.paused_until = Some(Instant::now() + FETCH_RETRY);
    }

    /// Whether `level`'s probe is not to be renewed now. Reads the clock only while a rest is set.
    fn rests(&self, level: usize) -> bool {
        let rests = |until: Option<Instant>| until.is_some_and(|until| Instant::now() < until);
        rests(self.paused_until) || rests(self.quiet_until[level])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_that_finds_nothing_after_no_ring_changes_nothing() {
        let mut rules = ProbeRules::default();
        assert!(!rules.fetched_nothing(3));
        assert!(!rules.rests(3));
        assert_eq!(rules.wait_hint, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_rang_in_vain_once_is_renewed_at_once() {
        let mut rules = ProbeRules::default();
        rules.rang(3);
        assert!(!rules.fetched_nothing(3), "another worker took the task");
        assert!(!rules.rests(3));
        assert_eq!(rules.wait_hint, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_rang_in_vain_twice_rests_and_sends_the_idle_wait_there() {
        let mut rules = ProbeRules::default();
        rules.rang(3);
        rules.fetched_nothing(3);
        rules.rang(3);
        assert!(rules.fetched_nothing(3));
        assert_eq!(rules.wait_hint, Some(3));
        assert!(rules.rests(3));
        assert!(!rules.rests(4), "other levels' probes do not rest");
        tokio::time::advance(FETCH_RETRY - Duration::from_millis(1)).await;
        assert!(rules.rests(3));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!rules.rests(3), "renewed once the rest is over");
        assert_eq!(
            rules.wait_hint,
            Some(3),
            "until a task comes from the level"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_from_the_level_clears_its_rings_and_the_hint() {
        let mut rules = ProbeRules::default();
        rules.rang(3);
        rules.fetched_nothing(3);
        rules.rang(3);
        rules.fetched_nothing(3);
        rules.fetched_from(3);
        assert_eq!(rules.wait_hint, None);
        rules.rang(3);
        assert!(
            !rules.fetched_nothing(3),
            "the count of rings in vain starts again"
        );
        rules.fetched_from(4);
        rules.rang(4);
        rules.fetched_from(4);
        assert!(
            !rules.fetched_nothing(4),
            "no ring is pending after a task came"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_pauses_every_probe_for_the_retry_delay() {
        let mut rules = ProbeRules::default();
        rules.failed();
        assert!((0..LEVELS).all(|level| rules.rests(level)));
        tokio::time::advance(FETCH_RETRY).await;
        assert!((0..LEVELS).all(|level| !rules.rests(level)));
    }
}
