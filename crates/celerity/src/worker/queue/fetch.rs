//! Fetching: the one `no_wait` pull request a queue actor keeps in flight while a level may have
//! work, with a batch equal to the credit it holds, and what its answers tell about the level.

use actix::prelude::*;
use async_nats::jetstream::consumer::pull::BatchConfig;

use super::in_flight::CreditFrom;
use super::levels::FetchTally;
use super::requests::{
    RequestEnd, is_task, level_of, numbered_reply, request_of, status_end, undelivered,
};
use super::signal::Signal;
use super::{FETCH_RETRY, Mode, QueueActor};

/// Largest number of messages asked for in one pull request.
const MAX_BATCH: usize = 256;

/// A pull request sent and not yet ended.
pub(super) struct Pull {
    request: u64,
    /// What it asked for and got so far.
    tally: FetchTally,
    /// The timer that abandons the request; cancelled when it ends, so timers do not pile up in
    /// the actor's context (each one is polled on every wake of the actor).
    timeout: Option<SpawnHandle>,
}

/// A message on the pull inbox: a task, or a status ending a pull request.
pub(super) struct PullReply(pub(super) async_nats::Message);

impl<S: Signal> QueueActor<S> {
    /// Fetches from the highest level that may have work, if there is credit; else starts the idle
    /// wait.
    pub(super) fn fetch(&mut self, ctx: &mut Context<Self>) {
        if self.mode != Mode::Running {
            // Credit that arrives while stopping goes back at once: in-flight tasks may need it.
            self.held.release();
            return;
        }
        if self.pull.is_some() {
            return;
        }
        let weights = self.shared.priority_weights.current();
        let Some(priority) = self
            .levels
            .choose(weights.as_ref(), crate::worker::random_unit())
        else {
            // Idle: give the credit back so other queues of this worker can use it, and wait for
            // the next task.
            self.held.release();
            self.start_wait(ctx);
            return;
        };
        let requested = self.held.top_up(&self.shared.pool.credit, MAX_BATCH);
        if requested == 0 {
            self.wait_for_credit(ctx);
            return;
        }
        let level = priority.get() as usize;
        let Some(consumer) = self.consumers[level].clone() else {
            // INVARIANT: only levels in use are ever flagged; unflag one that is not, defensively.
            self.levels.unflag(level);
            return;
        };
        let reply = numbered_reply(&mut self.next_request, &self.inbox, level);
        let request = reply.request;
        self.pull = Some(Pull {
            request,
            tally: FetchTally::new(&self.levels, level, requested),
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

    /// A message arrived on the pull inbox.
    ///
    /// A task message carries its stream subject, not the reply subject it was sent to, so it is
    /// counted against the request in flight; a status is sent to the reply subject and names its
    /// request.
    fn pull_reply(&mut self, ctx: &mut Context<Self>, message: async_nats::Message) {
        if is_task(&message) {
            let message = self.task_message(message);
            let behind = undelivered(&message);
            let complete = self
                .pull
                .as_mut()
                .and_then(|pull| pull.tally.counted(behind).then_some(pull.request));
            if let Some(level) = level_of(&message.subject) {
                self.took_from(ctx, level, behind);
            }
            self.receive(ctx, message, CreditFrom::Held);
            if let Some(request) = complete {
                self.pull_ended(ctx, request, Ok(()));
            }
            return;
        }
        // The late status of a request already given up is ignored.
        let Some(request) = request_of(&message.subject).filter(|request| {
            self.pull
                .as_ref()
                .is_some_and(|pull| pull.request == *request)
        }) else {
            return;
        };
        if let Some(end) = status_end(message) {
            self.pull_ended(ctx, request, end);
        }
    }

    /// Ends pull request `request` (if it is still the one in flight) and fetches again.
    fn pull_ended(&mut self, ctx: &mut Context<Self>, request: u64, outcome: RequestEnd) {
        let Some(pull) = self.pull.take_if(|pull| pull.request == request) else {
            return;
        };
        if let Some(timeout) = pull.timeout {
            ctx.cancel_future(timeout);
        }
        let level = pull.tally.level;
        if outcome.is_ok() && pull.tally.found_empty(&self.levels) {
            self.found_empty(ctx, level);
        }
        if outcome.is_ok() && pull.tally.got_nothing() {
            S::fetched_nothing(self, ctx, level);
        }
        self.check_drained(ctx);
        match outcome {
            Ok(()) => self.pump(ctx),
            Err(error) => {
                let error = crate::error_chain(&error);
                tracing::warn!(queue = %self.queue, priority = level, error = %error, "fetch failed; retrying");
                ctx.run_later(FETCH_RETRY, |actor, ctx| actor.pump(ctx));
            }
        }
    }
}

impl<S: Signal> StreamHandler<PullReply> for QueueActor<S> {
    fn handle(&mut self, PullReply(message): PullReply, ctx: &mut Self::Context) {
        self.pull_reply(ctx, message);
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        tracing::warn!(queue = %self.queue, "pull inbox subscription ended");
    }
}
