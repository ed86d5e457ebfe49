//! `inspect scheduled`: the delayed tasks (countdown, ETA, retry backoff) the server holds in the
//! delayed stream, listed by the worker that is the active scheduler.
//!
//! The list is the first `limit` messages of the stream (the earliest delayed), read one by one
//! with the stream's message-get API, soonest first; `total` counts every one waiting.

use std::sync::atomic::Ordering;

use async_nats::jetstream::context::GetStreamError;
use async_nats::jetstream::stream::{InfoError, RawMessageError, RawMessageErrorKind};
use celerity_proto::{Envelope, ScheduledResult, ScheduledTask};

use crate::nats::headers::HeaderView;
use crate::worker::WorkerShared;

/// How many delayed tasks a `scheduled` reply lists by default.
pub(crate) const DEFAULT_LIMIT: u32 = 100;
/// The most it lists.
pub(crate) const MAX_LIMIT: u32 = 1_000;

/// Why the delayed tasks could not be listed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScheduledError {
    #[error("cannot open the delayed stream {stream}")]
    Open {
        stream: String,
        #[source]
        source: GetStreamError,
    },
    #[error("cannot read the state of the delayed stream {stream}")]
    Info {
        stream: String,
        #[source]
        source: InfoError,
    },
    #[error("cannot read a delayed task from the stream {stream}")]
    Message {
        stream: String,
        #[source]
        source: RawMessageError,
    },
    #[error("list at most {MAX_LIMIT} scheduled tasks, not {0}")]
    Limit(u32),
}

/// The delayed tasks, from the active scheduler (up to `limit`); from any other worker, none.
pub(crate) async fn list_scheduled(
    shared: &WorkerShared,
    limit: Option<u32>,
) -> Result<ScheduledResult, ScheduledError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_LIMIT {
        return Err(ScheduledError::Limit(limit));
    }
    if !shared.scheduling.load(Ordering::Relaxed) {
        return Ok(ScheduledResult::inactive());
    }
    let name = shared.layout.delayed_stream();
    let mut stream = shared
        .js
        .get_stream(&name)
        .await
        .map_err(|source| ScheduledError::Open {
            stream: name.clone(),
            source,
        })?;
    let info = stream.info().await.map_err(|source| ScheduledError::Info {
        stream: name.clone(),
        source,
    })?;
    let state = info.state.clone();
    let subjects = shared.layout.delayed_subjects();
    let mut tasks = Vec::new();
    let mut next = state.first_sequence.max(1);
    while tasks.len() < limit as usize && next <= state.last_sequence {
        let read = stream
            .raw_message_builder()
            .sequence(next)
            .next_by_subject(subjects.clone())
            .send()
            .await;
        let message = match read {
            Ok(message) => message,
            // Nothing at or after `next`: the rest were released meanwhile.
            Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => break,
            Err(source) => {
                return Err(ScheduledError::Message {
                    stream: name,
                    source,
                });
            }
        };
        next = message.sequence + 1;
        if let Some(task) = scheduled_task(shared, &message) {
            tasks.push(task);
        }
    }
    Ok(ScheduledResult::active(state.messages, tasks))
}

/// What a delayed message shows (`None` for one without a valid envelope: the scheduler
/// dead-letters it when it comes to it).
fn scheduled_task(
    shared: &WorkerShared,
    message: &async_nats::jetstream::message::StreamMessage,
) -> Option<ScheduledTask> {
    let envelope = Envelope::from_headers(&HeaderView(Some(&message.headers))).ok()?;
    let queue = shared.layout.parse_delayed_subject(&message.subject)?;
    let eta_ms = envelope.eta_ms.unwrap_or_default();
    let mut task = ScheduledTask::new(
        envelope.id.as_str(),
        envelope.task.as_str(),
        queue.as_str(),
        eta_ms,
    );
    task.priority = envelope.priority.get();
    task.retries = envelope.retries;
    Some(task)
}
