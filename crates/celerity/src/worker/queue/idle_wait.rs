//! The idle wait: the one long-poll request for one message a queue actor keeps when no level may
//! have work, so the next task on the level it listens on arrives without a signal and a fetch.
//!
//! It holds no credit, so an idle queue does not keep other queues of the worker from running: the
//! task it brings takes free credit, or goes straight back if there is none.

use actix::prelude::*;
use async_nats::jetstream::consumer::pull::BatchConfig;

use super::in_flight::CreditFrom;
use super::requests::{
    RequestEnd, is_task, level_of, numbered_reply, request_of, status_end, undelivered,
};
use super::signal::Signal;
use super::{FETCH_RETRY, Mode, QueueActor, WAIT_EXPIRES};

/// A long-poll request for one message, sent when no level has work.
pub(super) struct Wait {
    request: u64,
    /// The level it listens on.
    pub(super) level: usize,
    timeout: SpawnHandle,
}

/// A message on the idle wait's inbox: its task, or a status ending it.
pub(super) struct WaitReply(pub(super) async_nats::Message);

impl<S: Signal> QueueActor<S> {
    /// Starts the idle wait, if there is none, on the level [`LevelState::wait_level`] picks with
    /// the signal's hint. Only with free credit: without it, a task it brought would go back.
    ///
    /// [`LevelState::wait_level`]: super::levels::LevelState::wait_level
    pub(super) fn start_wait(&mut self, ctx: &mut Context<Self>) {
        if self.wait.is_some()
            || self.wait_paused
            || self.mode != Mode::Running
            || self.shared.pool.credit.available_permits() == 0
        {
            return;
        }
        let Some(level) = self.levels.wait_level(self.signal.wait_hint()) else {
            return;
        };
        let Some(consumer) = self.consumers[level].clone() else {
            return;
        };
        let reply = numbered_reply(&mut self.next_request, &self.wait_inbox, level);
        let request = reply.request;
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
        if is_task(&message) {
            // The wait asked for one message: this is it.
            let message = self.task_message(message);
            if let Some(level) = level_of(&message.subject) {
                let behind = undelivered(&message);
                if !self.levels.waited_task_left_work(level, behind) {
                    self.found_empty(ctx, level);
                }
                self.took_from(ctx, level, behind);
            }
            self.receive(ctx, message, CreditFrom::Free);
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
        // Expired (408) or nothing to wait for (404): renewed by the pump if still idle.
        if let Some(end) = status_end(message) {
            self.wait_ended(ctx, request, end);
        }
    }

    /// Ends idle wait `request` (if it is still the one in flight) and pumps again.
    fn wait_ended(&mut self, ctx: &mut Context<Self>, request: u64, outcome: RequestEnd) {
        let Some(wait) = self.wait.take_if(|wait| wait.request == request) else {
            return;
        };
        ctx.cancel_future(wait.timeout);
        self.check_drained(ctx);
        if let Err(error) = outcome {
            let error = crate::error_chain(&error);
            tracing::warn!(queue = %self.queue, priority = wait.level, error = %error, "idle wait failed; retrying");
            self.wait_paused = true;
            ctx.run_later(FETCH_RETRY, |actor, ctx| {
                actor.wait_paused = false;
                actor.pump(ctx);
            });
        }
        self.pump(ctx);
    }
}

impl<S: Signal> StreamHandler<WaitReply> for QueueActor<S> {
    fn handle(&mut self, WaitReply(message): WaitReply, ctx: &mut Self::Context) {
        self.wait_reply(ctx, message);
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        tracing::warn!(queue = %self.queue, "idle wait inbox subscription ended");
    }
}
