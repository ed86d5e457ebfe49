//! Republished doorbells: how a queue actor learns of new tasks on a server before 2.10.16 (see
//! [`NewTaskSignal::Republish`](crate::nats::server::NewTaskSignal::Republish)).
//!
//! The queue stream republishes the headers of every stored task to its level's doorbell subject,
//! which the actor subscribes to. A level whose last task had a backlog behind it is known to have
//! work: its doorbells would tell nothing new, so its subscription is dropped until a fetch finds
//! the level empty (a doorbell costs about as much to receive as its task, which a worker with a
//! backlog then halves).

use actix::prelude::*;
use futures_util::StreamExt;

use super::QueueActor;
use super::levels::{LEVELS, LevelState};
use super::signal::Signal;

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
pub(super) struct RepublishedDoorbells {
    /// Each level's subscription, indexed by priority.
    bells: [Bell; LEVELS],
    /// Each level's doorbell subject, for subscribing again.
    subjects: [Option<String>; LEVELS],
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
    /// INVARIANT: a muted level is flagged in `LevelState`, so it is fetched from until it is
    /// found empty, which subscribes it again.
    Muted,
    /// Being subscribed again.
    Subscribing,
}

/// A doorbell of this level rang.
struct Doorbell(usize);

impl RepublishedDoorbells {
    /// From the subscriptions made at setup, indexed by priority.
    pub(super) fn new(setup: Vec<Option<LevelBell>>) -> Self {
        let mut bells = [const { Bell::Unused }; LEVELS];
        let mut subjects = [const { None }; LEVELS];
        for (level, bell) in setup.into_iter().enumerate().take(LEVELS) {
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

impl Signal for RepublishedDoorbells {
    /// Takes the subscriptions made at setup as streams of the actor.
    fn start(actor: &mut QueueActor<Self>, ctx: &mut Context<QueueActor<Self>>) {
        for (level, bell) in actor.signal.bells.iter_mut().enumerate() {
            if let Bell::Setup(subscriber) = std::mem::replace(bell, Bell::Unused) {
                *bell = Bell::Ringing(ctx.add_stream(subscriber.map(move |_| Doorbell(level))));
            }
        }
    }

    /// Doorbells arrive without being asked for.
    fn sync(_actor: &mut QueueActor<Self>, _ctx: &mut Context<QueueActor<Self>>) {}

    /// Stops hearing `level`'s doorbells while it has a backlog of `behind` tasks: they would only
    /// flag a level already flagged.
    fn took_from(
        actor: &mut QueueActor<Self>,
        ctx: &mut Context<QueueActor<Self>>,
        level: usize,
        behind: Option<u64>,
    ) {
        if !mutes(&actor.levels, level, behind) {
            return;
        }
        if let Bell::Ringing(stream) = actor.signal.bells[level] {
            // Dropping the subscription unsubscribes it.
            ctx.cancel_future(stream);
            actor.signal.bells[level] = Bell::Muted;
            tracing::debug!(queue = %actor.queue, priority = level, behind, "doorbells muted");
        }
    }

    fn fetched_nothing(
        _actor: &mut QueueActor<Self>,
        _ctx: &mut Context<QueueActor<Self>>,
        _level: usize,
    ) {
    }

    /// `level` was found empty: hear its doorbells again if they were muted.
    fn found_empty(
        actor: &mut QueueActor<Self>,
        ctx: &mut Context<QueueActor<Self>>,
        level: usize,
    ) {
        if !matches!(actor.signal.bells[level], Bell::Muted) {
            return;
        }
        let Some(subject) = actor.signal.subjects[level].clone() else {
            return;
        };
        actor.signal.bells[level] = Bell::Subscribing;
        tracing::debug!(queue = %actor.queue, priority = level, "doorbells heard again");
        let nats = actor.shared.nats.clone();
        ctx.spawn(
            async move { nats.subscribe(subject).await }
                .into_actor(actor)
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
                    actor.signal.bells[level] = state;
                    // A task stored after the fetch that found the level empty and before the
                    // server had the subscription rang no bell here: fetch once more. The
                    // subscription is ahead of that fetch's request on the connection.
                    actor.levels.flag(level);
                    actor.pump(ctx);
                }),
        );
    }

    fn wait_hint(&self) -> Option<usize> {
        None
    }
}

/// Whether a task of `level` with `behind` undelivered behind it mutes the level's doorbells: the
/// backlog is at least [`MUTE_AT`] and the level is flagged, so it is fetched from until it is
/// found empty.
fn mutes(levels: &LevelState, level: usize, behind: Option<u64>) -> bool {
    behind.is_some_and(|behind| behind >= MUTE_AT) && levels.may_have_work(level)
}

impl StreamHandler<Doorbell> for QueueActor<RepublishedDoorbells> {
    fn handle(&mut self, Doorbell(level): Doorbell, ctx: &mut Self::Context) {
        self.rang(level);
        self.pump(ctx);
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // The subscription ended (connection closed for good); the periodic re-check still runs.
        tracing::warn!(queue = %self.queue, "doorbell subscription ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_flagged_level_with_a_backlog_of_at_least_mute_at_is_muted() {
        let mut in_use = [false; LEVELS];
        in_use[4] = true;
        let mut levels = LevelState::new(in_use);
        assert!(mutes(&levels, 4, Some(MUTE_AT)));
        assert!(mutes(&levels, 4, Some(MUTE_AT + 100)));
        assert!(!mutes(&levels, 4, Some(MUTE_AT - 1)), "a short backlog");
        assert!(!mutes(&levels, 4, None), "an unknown backlog");
        levels.unflag(4);
        assert!(
            !mutes(&levels, 4, Some(MUTE_AT)),
            "not flagged: nothing would fetch it"
        );
    }
}
