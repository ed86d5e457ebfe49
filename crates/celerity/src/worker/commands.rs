//! The messages the control actor sends the root actor: add or cancel a queue's consumer,
//! terminate a running task, shut down. They sit below both actors, so neither names the other's
//! module; the control actor holds them as [`Recipient`]s ([`RootCommands`]).

use actix::prelude::*;
use celerity_proto::QueueName;

use crate::worker::setup::QueueSetupError;
use crate::worker::shutdown::Shutdown;

/// Why `add_consumer` or `cancel_consumer` was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsumerError {
    #[error("this worker already consumes queue {0}")]
    AlreadyConsumed(QueueName),
    #[error("queue {0} is still draining after a cancel; ask again once its running tasks end")]
    Draining(QueueName),
    #[error("this worker does not consume queue {0}")]
    NotConsumed(QueueName),
    #[error("the worker is shutting down")]
    ShuttingDown,
    #[error("cannot set up queue {0}")]
    Setup(QueueName, #[source] QueueSetupError),
    #[error(
        "queue {queue}'s consumers have an AckWait of {found:?}, below this worker's {ours:?}; \
         start a worker with --queue {queue} (and --ack-wait at most {found:?}) instead"
    )]
    ShortAckWait {
        queue: QueueName,
        found: std::time::Duration,
        ours: std::time::Duration,
    },
}

/// Start consuming a queue (`add_consumer`): provision its stream, consumers and subscriptions,
/// then start its actor. Replies once it consumes.
#[derive(Message)]
#[rtype(result = "Result<(), ConsumerError>")]
pub(crate) struct AddConsumer(pub(crate) QueueName);

/// Stop consuming a queue (`cancel_consumer`): no new tasks from it; running ones finish.
#[derive(Message)]
#[rtype(result = "Result<(), ConsumerError>")]
pub(crate) struct CancelConsumer(pub(crate) QueueName);

/// Terminate the running task with this id on every queue (`revoke --terminate`); replies
/// whether one of them ran it.
#[derive(Message)]
#[rtype(result = "bool")]
pub(crate) struct TerminateTask(pub(crate) String);

/// Shut down at a control command's request: warm or cold as asked. Unlike a signal, asking again
/// for a warm shutdown while one is under way changes nothing (a requester that timed out may
/// ask twice); a cold one still turns it cold.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ControlShutdown(pub(crate) Shutdown);

/// How the control actor reaches the root actor.
#[derive(Clone)]
pub(crate) struct RootCommands {
    pub(crate) add_consumer: Recipient<AddConsumer>,
    pub(crate) cancel_consumer: Recipient<CancelConsumer>,
    pub(crate) terminate: Recipient<TerminateTask>,
    pub(crate) shutdown: Recipient<ControlShutdown>,
}
