//! The pull requests a queue actor sends (fetches, the idle wait, max-bytes probes): how one is sent
//! and timed out, how its reply subject is numbered, and what its answers say.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use async_nats::jetstream::{
    self,
    consumer::{PullConsumer, pull::BatchConfig, pull::BatchRequestError},
};
use async_nats::{StatusCode, Subject};
use celerity_proto::Priority;

use super::QueueActor;
use super::signal::Signal;

/// How long a pull request may go unanswered before it is abandoned (the server is away, or a
/// nats-server 2.9 kept a `no_wait` request whose messages other workers took).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a pull request ended without its answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum RequestError {
    #[error("cannot send the pull request")]
    Send(#[source] BatchRequestError),
    #[error("no answer within {0:?}")]
    Unanswered(Duration),
    #[error("the server answered {status} {description}")]
    Status {
        status: StatusCode,
        description: String,
    },
}

impl RequestError {
    /// The status that ended a request, with its description.
    pub(super) fn status(message: async_nats::Message, status: StatusCode) -> Self {
        Self::Status {
            status,
            description: message.description.unwrap_or_default(),
        }
    }
}

/// How a status on a fetch's or the idle wait's inbox ends its request: not at all (a heartbeat,
/// or no status: a task), answered (404: no messages; 408: expired, or fewer than asked for), or
/// with an error.
pub(super) fn status_end(message: async_nats::Message) -> Option<RequestEnd> {
    match message.status {
        None | Some(StatusCode::IDLE_HEARTBEAT) => None,
        Some(StatusCode::NOT_FOUND | StatusCode::TIMEOUT) => Some(Ok(())),
        Some(status) => Some(Err(RequestError::status(message, status))),
    }
}

/// How a pull request ended: answered (with tasks, or a status saying there are none), or not.
pub(super) type RequestEnd = Result<(), RequestError>;

/// What hears of a pull request's end: the actor, the request's number, how it ended.
pub(super) type Ended<S> = fn(&mut QueueActor<S>, &mut Context<QueueActor<S>>, u64, RequestEnd);

impl<S: Signal> QueueActor<S> {
    /// Sends pull request `request` with `batch`, answered on `reply`; `ended` hears of a request
    /// that could not be sent, and of one not answered in time. Returns the timer, which `ended`
    /// cancels when the request ends otherwise.
    pub(super) fn send_request(
        &mut self,
        ctx: &mut Context<Self>,
        consumer: Arc<PullConsumer>,
        batch: BatchConfig,
        reply: NumberedReply,
        ended: Ended<S>,
    ) -> SpawnHandle {
        let NumberedReply {
            request,
            subject: reply,
        } = reply;
        let deadline = batch.expires.unwrap_or_default() + FETCH_TIMEOUT;
        ctx.spawn(
            async move { consumer.request_batch(batch, reply).await }
                .into_actor(self)
                .map(move |sent, actor, ctx| {
                    if let Err(error) = sent {
                        ended(actor, ctx, request, Err(RequestError::Send(error)));
                    }
                }),
        );
        ctx.run_later(deadline, move |actor, ctx| {
            ended(actor, ctx, request, Err(RequestError::Unanswered(deadline)));
        })
    }
}

/// A pull request's number and the subject its answers come to.
pub(super) struct NumberedReply {
    pub(super) request: u64,
    pub(super) subject: Subject,
}

/// A new request's number, taken from `next`, and the subject its answers come to on `inbox`:
/// `<inbox>.<level>.<request>`.
pub(super) fn numbered_reply(next: &mut u64, inbox: &str, level: usize) -> NumberedReply {
    let request = *next;
    *next += 1;
    let subject = Subject::from(format!("{inbox}.{level}.{request}"));
    NumberedReply { request, subject }
}

/// The request named by the last token of a status's reply subject, `<inbox>.<level>.<request>`.
pub(super) fn request_of(subject: &str) -> Option<u64> {
    subject
        .rsplit('.')
        .next()
        .and_then(|token| token.parse::<u64>().ok())
}

/// The level and request named by a status's reply subject, `<inbox>.<level>.<request>`.
pub(super) fn level_and_request_of(subject: &str) -> Option<(usize, u64)> {
    let mut tokens = subject.rsplit('.');
    let request = tokens.next()?.parse::<u64>().ok()?;
    let level = tokens.next()?.parse::<usize>().ok()?;
    Some((level, request))
}

/// How many messages of its consumer were not yet delivered when `message` was sent (from its
/// `$JS.ACK` reply subject). Redeliveries due are not counted.
pub(super) fn undelivered(message: &jetstream::Message) -> Option<u64> {
    message.info().ok().map(|info| info.pending)
}

/// The priority level named by the last token of a task subject.
pub(super) fn level_of(subject: &str) -> Option<usize> {
    subject
        .rsplit('.')
        .next()
        .and_then(|token| token.parse::<Priority>().ok())
        .map(|priority| priority.get() as usize)
}

/// Whether a message on a request's inbox is a task (no status, or 200), not a status ending it.
pub(super) fn is_task(message: &async_nats::Message) -> bool {
    matches!(message.status, None | Some(StatusCode::OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_numbered_in_order_and_name_their_level() {
        let mut next = 7;
        let NumberedReply { request, subject } = numbered_reply(&mut next, "_INBOX.abc", 3);
        assert_eq!((request, subject.as_str()), (7, "_INBOX.abc.3.7"));
        assert_eq!(next, 8);
        assert_eq!(request_of(&subject), Some(7));
        assert_eq!(level_and_request_of(&subject), Some((3, 7)));
    }

    #[test]
    fn a_subject_without_numbers_names_no_request() {
        assert_eq!(request_of("_INBOX.abc"), None);
        assert_eq!(level_and_request_of("_INBOX.abc.x.1"), None);
        assert_eq!(level_and_request_of("1"), None);
    }

    fn status(status: Option<StatusCode>, description: &str) -> async_nats::Message {
        async_nats::Message {
            subject: Subject::from("_INBOX.abc.3.7"),
            reply: None,
            payload: bytes::Bytes::new(),
            headers: None,
            status,
            description: Some(description.to_owned()),
            length: 0,
        }
    }

    #[test]
    fn a_status_ends_a_request_answered_or_failed_and_a_heartbeat_does_not() {
        assert!(status_end(status(Some(StatusCode::IDLE_HEARTBEAT), "Idle Heartbeat")).is_none());
        assert!(
            status_end(status(None, "")).is_none(),
            "a task ends nothing here"
        );
        assert!(matches!(
            status_end(status(Some(StatusCode::NOT_FOUND), "No Messages")),
            Some(Ok(()))
        ));
        assert!(matches!(
            status_end(status(Some(StatusCode::TIMEOUT), "Request Timeout")),
            Some(Ok(()))
        ));
        let failed = status_end(status(
            Some(StatusCode::REQUEST_TERMINATED),
            "Consumer Deleted",
        ));
        let Some(Err(RequestError::Status {
            status,
            description,
        })) = failed
        else {
            panic!("a 409 is an error: {failed:?}");
        };
        assert_eq!(status, StatusCode::REQUEST_TERMINATED);
        assert_eq!(description, "Consumer Deleted");
    }

    #[test]
    fn a_task_subject_names_its_level() {
        assert_eq!(level_of("celerity.q.default.9"), Some(9));
        assert_eq!(level_of("celerity.q.default.10"), None, "not a priority");
        assert_eq!(level_of("celerity.q.default"), None);
    }
}
