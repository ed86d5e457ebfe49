//! `Signal`: how a queue actor learns that a priority level has new tasks (see
//! [`NewTaskSignal`](crate::nats::server::NewTaskSignal)), with one implementation per kind:
//! `MaxBytesProbes` (`max_bytes_probes.rs`) and `RepublishedDoorbells` (`republished_doorbells.rs`).
//!
//! The actor is generic over it, so each call is static. A signal flags a level through
//! [`QueueActor::rang`]; it never fetches.

use actix::prelude::*;

use super::QueueActor;

/// A kind of new-task signal, driven by the queue actor that owns it.
///
/// Each hook takes the whole actor, since a signal's own I/O (a subscription, a pull request)
/// runs in the actor's context and its completions come back to the actor.
pub(crate) trait Signal: Sized + Unpin + 'static {
    /// Takes the subscriptions made at setup as streams of the actor (from `Actor::started`).
    fn start(actor: &mut QueueActor<Self>, ctx: &mut Context<QueueActor<Self>>);

    /// Keeps out what the levels now need to hear of new tasks (after every fetch decision).
    fn sync(actor: &mut QueueActor<Self>, ctx: &mut Context<QueueActor<Self>>);

    /// A task came from `level`, with `behind` tasks undelivered behind it.
    fn took_from(
        actor: &mut QueueActor<Self>,
        ctx: &mut Context<QueueActor<Self>>,
        level: usize,
        behind: Option<u64>,
    );

    /// A `no_wait` fetch from `level` got no task.
    fn fetched_nothing(
        actor: &mut QueueActor<Self>,
        ctx: &mut Context<QueueActor<Self>>,
        level: usize,
    );

    /// `level` was found to have no work left for this worker.
    fn found_empty(actor: &mut QueueActor<Self>, ctx: &mut Context<QueueActor<Self>>, level: usize);

    /// Where the idle wait should go first, if the signal knows better than the last task's level.
    fn wait_hint(&self) -> Option<usize>;
}
