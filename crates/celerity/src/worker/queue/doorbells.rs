//! Doorbells: how a queue actor learns of new tasks on a server before 2.10.16 (see
//! [`NewTaskSignal`](crate::nats::server::NewTaskSignal)).
//!
//! The queue stream republishes the headers of every stored task to its level's doorbell subject,
//! which the actor subscribes to. A level whose last task had a backlog behind it is known to have
//! work: its doorbells would tell nothing new, so its subscription is dropped until a fetch finds
//! the level empty (a doorbell costs about as much to receive as its task, which a worker with a
//! backlog then halves).

use actix::prelude::*;
use futures_util::StreamExt;

use super::{QueueActor, Signal};

/// A level whose last task had at least this many undelivered behind it stops hearing its
/// doorbells until it is found empty. Hearing them again costs a subscription and one more fetch,
/// so it is done only for a backlog that saves many more doorbells than that.
const MUTE_AT: u64 = 32;

/// One level's doorbell subject, and the subscription to it made at setup.
pub(crate) struct LevelBell {
    pub(crate) subject: String,
    pub(crate) subscriber: async_nats::Subscriber,
}

/// The doorbell subscriptions of a queue's levels.
pub(super) struct Doorbells {
    /// Each level's subscription, indexed by priority.
    bells: [Bell; 10],
    /// Each level's doorbell subject, for subscribing again.
    subjects: [Option<String>; 10],
}

/// Where a level's doorbell subscription stands.
enum Bell {
    /// Not a level of this queue.
    Unused,
    /// Made at setup, until the actor starts and takes it as one of its streams.
    Setup(async_nats::Subscriber),
    /// Subscribed: the level's doorbells arrive as [`Doorbell`]s on this stream of the actor.
    Ringing(SpawnHandle),
    /// Unsubscribed while the level is known to have work.
    /// INVARIANT: a muted level is flagged in `maybe_ready`, so it is fetched from until it is
    /// found empty, which subscribes it again.
    Muted,
    /// Being subscribed again.
    Subscribing,
}

/// A doorbell of this level rang.
struct Doorbell(usize);

impl Doorbells {
    /// From the subscriptions made at setup, indexed by priority.
    pub(super) fn new(setup: Vec<Option<LevelBell>>) -> Self {
        let mut bells = [const { Bell::Unused }; 10];
        let mut subjects = [const { None }; 10];
        for (level, bell) in setup.into_iter().enumerate().take(10) {
            if let Some(LevelBell {
                subject,
                subscriber,
            }) = bell
            {
                bells[level] = Bell::Setup(subscriber);
                subjects[level] = Some(subject);
            }
        }
        Self { bells, subjects }
    }
}

impl QueueActor {
    fn doorbells(&mut self) -> Option<&mut Doorbells> {
        match &mut self.signal {
            Signal::Doorbells(doorbells) => Some(doorbells),
            Signal::BellRequests(_) => None,
        }
    }

    /// Takes the subscriptions made at setup as streams of the actor.
    pub(super) fn start_doorbells(&mut self, ctx: &mut Context<Self>) {
        let Some(doorbells) = self.doorbells() else {
            return;
        };
        for (level, bell) in doorbells.bells.iter_mut().enumerate() {
            if let Bell::Setup(subscriber) = std::mem::replace(bell, Bell::Unused) {
                *bell = Bell::Ringing(ctx.add_stream(subscriber.map(move |_| Doorbell(level))));
            }
        }
    }

    /// Stops hearing `level`'s doorbells while it has a backlog of `behind` tasks: they would only
    /// flag a level already flagged.
    pub(super) fn mute_if_behind(
        &mut self,
        ctx: &mut Context<Self>,
        level: usize,
        behind: Option<u64>,
    ) {
        if !(behind.is_some_and(|behind| behind >= MUTE_AT) && self.maybe_ready[level]) {
            return;
        }
        let Some(doorbells) = self.doorbells() else {
            return;
        };
        if let Bell::Ringing(stream) = doorbells.bells[level] {
            // Dropping the subscription unsubscribes it.
            ctx.cancel_future(stream);
            doorbells.bells[level] = Bell::Muted;
            tracing::debug!(queue = %self.queue, priority = level, behind, "doorbells muted");
        }
    }

    /// `level` was found empty: hear its doorbells again if they were muted.
    pub(super) fn unmute(&mut self, ctx: &mut Context<Self>, level: usize) {
        let Some(doorbells) = self.doorbells() else {
            return;
        };
        if !matches!(doorbells.bells[level], Bell::Muted) {
            return;
        }
        let Some(subject) = doorbells.subjects[level].clone() else {
            return;
        };
        doorbells.bells[level] = Bell::Subscribing;
        tracing::debug!(queue = %self.queue, priority = level, "doorbells heard again");
        let nats = self.shared.nats.clone();
        ctx.spawn(
            async move { nats.subscribe(subject).await }
                .into_actor(self)
                .map(move |subscribed, actor, ctx| {
                    let state = match subscribed {
                        Ok(subscriber) => Bell::Ringing(
                            ctx.add_stream(subscriber.map(move |_| Doorbell(level))),
                        ),
                        Err(error) => {
                            // Only a closed connection refuses a subscription; the level stays
                            // flagged and muted, and the next time it is found empty tries again.
                            tracing::warn!(queue = %actor.queue, priority = level, error = %error, "cannot hear a level's doorbells again");
                            Bell::Muted
                        }
                    };
                    if let Some(doorbells) = actor.doorbells() {
                        doorbells.bells[level] = state;
                    }
                    // A task stored after the fetch that found the level empty and before the
                    // server had the subscription rang no bell here: fetch once more. The
                    // subscription is ahead of that fetch's request on the connection.
                    actor.maybe_ready[level] = actor.in_use[level];
                    actor.pump(ctx);
                }),
        );
    }
}

impl StreamHandler<Doorbell> for QueueActor {
    fn handle(&mut self, Doorbell(level): Doorbell, ctx: &mut Self::Context) {
        self.rang(level);
        self.pump(ctx);
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // The subscription ended (connection closed for good); the periodic re-check still runs.
        tracing::warn!(queue = %self.queue, "doorbell subscription ended");
    }
}
