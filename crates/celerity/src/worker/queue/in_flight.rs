//! The tasks a queue actor has dispatched and not yet seen end: how a delivered task is spawned on
//! the multi-thread runtime with its credit, terminated (`revoke --terminate`), or handed back at a
//! cold shutdown.

use std::time::Duration;

use actix::prelude::*;
use async_nats::jetstream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::worker::execute::execute;
use crate::worker::limits::Credit;
use crate::worker::nats_io;

use super::signal::Signal;
use super::{Mode, QueueActor, QueueDrained, WAIT_EXPIRES};

/// Where a delivered task's credit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CreditFrom {
    /// The credit held for the pull request that brought it, if any is left; else free credit.
    Held,
    /// Free credit (the idle wait's task holds none).
    Free,
}

/// A task dispatched and not finished.
pub(super) struct InFlight {
    ack_subject: Option<async_nats::Subject>,
    abort: tokio::task::AbortHandle,
    /// The task id from the message's headers, for `revoke --terminate`.
    task_id: Option<String>,
    /// Cancelled by `revoke --terminate`: the run aborts the body and ends the task REVOKED.
    terminate: CancellationToken,
    /// The message's stream and sequence, to count its hand-back at a cold shutdown.
    position: Option<(String, u64)>,
}

impl<S: Signal> QueueActor<S> {
    /// Runs a delivered task on credit held for it (a pull request's task) or on free credit (the
    /// idle wait's task, or the late answer of a request given up); hands it straight back when
    /// stopping or when there is no credit for it.
    pub(super) fn receive(
        &mut self,
        ctx: &mut Context<Self>,
        message: jetstream::Message,
        credit_from: CreditFrom,
    ) {
        let permit = match self.mode {
            Mode::Running => (credit_from == CreditFrom::Held)
                .then(|| self.held.take_one())
                .flatten()
                .or_else(|| self.shared.pool.credit.clone().try_acquire_owned().ok()),
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
        let credit = Credit::new(self.shared.pool.credit.clone(), permit);
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

    /// A cold shutdown: aborts every task in flight and hands its message back, then reports the
    /// queue drained.
    pub(super) fn stop_cold(&mut self, ctx: &mut Context<Self>) {
        let nats = self.shared.nats.clone();
        let mut naks = Vec::new();
        for (_, task) in self.in_flight.drain() {
            task.abort.abort();
            if let Some(subject) = task.ack_subject {
                naks.push((subject, task.position));
            }
        }
        tracing::warn!(queue = %self.queue, n_tasks = naks.len(), "cold shutdown: returning in-flight tasks to the queue");
        let drained = self.drained.clone();
        let queue = self.queue.clone();
        let handbacks = self.shared.handbacks.clone();
        self.mode = Mode::Stopped;
        self.shared.runtime.spawn(async move {
            // Delayed past this worker's idle wait, which is still at the server until the
            // connection closes: redelivered at once, the task could go straight back to it.
            for (subject, position) in naks {
                // Handed back, not crashed: it does not count against max_deliveries. The
                // count is bounded in time, since the connection is about to close.
                if let Some((stream, sequence)) = position {
                    let counted = handbacks.count_handback(&stream, sequence);
                    let _ = tokio::time::timeout(Duration::from_secs(1), counted).await;
                }
                let _ = nats_io::nak_by_subject(&nats, subject, WAIT_EXPIRES).await;
            }
            // With the server gone the naks cannot arrive anyway; AckWait returns the tasks.
            if nats.connection_state() == async_nats::connection::State::Connected {
                let _ = tokio::time::timeout(Duration::from_secs(5), nats.flush()).await;
            }
            drained.do_send(QueueDrained { queue });
        });
        ctx.stop();
    }
}

/// A task of this queue ended (its message was acked, nacked or dead-lettered, or its run was
/// aborted or panicked).
#[derive(Message)]
#[rtype(result = "()")]
struct TaskFinished {
    key: u64,
}

/// Sends [`TaskFinished`] when the task's future is dropped, however it ends.
struct FinishedGuard<S: Signal> {
    actor: Addr<QueueActor<S>>,
    key: u64,
}

impl<S: Signal> Drop for FinishedGuard<S> {
    fn drop(&mut self) {
        self.actor.do_send(TaskFinished { key: self.key });
    }
}

impl<S: Signal> Handler<TaskFinished> for QueueActor<S> {
    type Result = ();

    fn handle(&mut self, finished: TaskFinished, ctx: &mut Self::Context) {
        self.in_flight.remove(&finished.key);
        self.check_drained(ctx);
        // Its credit is free again: an idle queue that had none can wait for the next task now.
        if self.pull.is_none() && !self.levels.any_may_have_work() {
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

impl<S: Signal> Handler<Terminate> for QueueActor<S> {
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
