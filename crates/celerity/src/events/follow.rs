//! Reading the events stream: [`follow`] tails it from a point in time (or its start, or now)
//! with an ordered consumer, and [`EventFilter`] keeps the events a reader asked for.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_nats::jetstream::{self, consumer};
use celerity_proto::{Layout, Namespace, TaskEvent, TaskEventBatch, TaskEventKind, WorkerEvent};
use futures_util::{Stream, StreamExt};

/// One event read from the events stream.
// A task event is the larger by far, and the common one: boxing it would cost an allocation per
// event read and change the variant's public shape.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A task event, and the worker (or producer) that sent it.
    Task {
        /// The emitter's hostname.
        hostname: String,
        /// The event.
        event: TaskEvent,
    },
    /// A worker event.
    Worker(WorkerEvent),
}

impl Event {
    /// The hostname of the worker (or producer) the event comes from.
    pub fn hostname(&self) -> &str {
        match self {
            Event::Task { hostname, .. } => hostname,
            Event::Worker(event) => &event.hostname,
        }
    }

    /// When it happened, Unix milliseconds.
    pub fn at_ms(&self) -> u64 {
        match self {
            Event::Task { event, .. } => event.at_ms,
            Event::Worker(event) => event.at_ms,
        }
    }
}

/// Where [`follow`] starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Since {
    /// Events sent from now on.
    Now,
    /// Every event the stream still keeps.
    Start,
    /// Events stored at or after this time, Unix milliseconds.
    Time(u64),
}

/// The events stream could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The namespace has no events stream: no worker of it has started yet.
    #[error("there is no events stream {stream}: no worker of namespace {namespace} has started")]
    NoStream {
        /// The stream's name.
        stream: String,
        /// The namespace.
        namespace: String,
    },
    /// The stream or its consumer could not be opened.
    #[error("cannot read the events stream {stream}")]
    Open {
        /// The stream's name.
        stream: String,
        /// What failed.
        #[source]
        source: async_nats::Error,
    },
    /// A message could not be read from the stream (the reader goes on).
    #[error("cannot read an event message")]
    Read(#[source] async_nats::Error),
    /// A message on an events subject is not an event (the reader goes on).
    #[error("the message on {subject} is not a valid event")]
    Decode {
        /// Its subject.
        subject: String,
        /// Why it is not.
        #[source]
        source: serde_json::Error,
    },
    /// A filter's task pattern is not a valid glob.
    #[error("task pattern {pattern:?} is not a valid glob")]
    InvalidPattern {
        /// The pattern.
        pattern: String,
        /// The glob parser's error.
        #[source]
        source: globset::Error,
    },
    /// A filter's state is neither an event kind nor a task state events tell of.
    #[error(
        "unknown state {0:?}: use an event kind (sent, received, started, succeeded, failed, retried, revoked, rejected) or a state (PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED)"
    )]
    UnknownState(String),
}

/// Which events a reader keeps. Task-only criteria (task, state, queue) leave out worker events;
/// the worker criterion applies to both. Criteria of one kind are alternatives; of different
/// kinds, all must hold.
///
/// ```
/// use celerity::events::EventFilter;
/// let filter = EventFilter::new().task("tasks.bulk_*")?.state("FAILURE")?.worker("w1");
/// # let _ = filter;
/// # Ok::<(), celerity::events::EventError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    tasks: Vec<globset::GlobMatcher>,
    kinds: Vec<TaskEventKind>,
    workers: Vec<String>,
    queues: Vec<String>,
}

impl EventFilter {
    /// Keeps every event.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps task events of tasks named `pattern` (a name, or a glob with `*`).
    ///
    /// # Errors
    /// [`EventError::InvalidPattern`] for a pattern that is not a glob.
    pub fn task(mut self, pattern: &str) -> Result<Self, EventError> {
        let glob = globset::Glob::new(pattern).map_err(|source| EventError::InvalidPattern {
            pattern: pattern.to_owned(),
            source,
        })?;
        self.tasks.push(glob.compile_matcher());
        Ok(self)
    }

    /// Keeps task events of one kind (`succeeded`, `task-failed`) or of the kinds that leave a
    /// task in one state (`FAILURE`: failed and rejected), case-insensitive.
    ///
    /// # Errors
    /// [`EventError::UnknownState`] for anything else.
    pub fn state(mut self, state: &str) -> Result<Self, EventError> {
        let lower = state.to_ascii_lowercase();
        let kinds: Vec<TaskEventKind> = match TaskEventKind::parse(&lower) {
            Some(kind) => vec![kind],
            None => TaskEventKind::ALL
                .into_iter()
                .filter(|kind| {
                    let probe = TaskEvent::new(*kind, "", "", 0);
                    probe.state().eq_ignore_ascii_case(state)
                })
                .collect(),
        };
        if kinds.is_empty() {
            return Err(EventError::UnknownState(state.to_owned()));
        }
        self.kinds.extend(kinds);
        Ok(self)
    }

    /// Keeps events from the worker (or producer) `hostname`.
    pub fn worker(mut self, hostname: &str) -> Self {
        self.workers.push(hostname.to_owned());
        self
    }

    /// Keeps task events of tasks sent to or taken from `queue`.
    pub fn queue(mut self, queue: &str) -> Self {
        self.queues.push(queue.to_owned());
        self
    }

    /// True when `event` meets every criterion.
    pub fn matches(&self, event: &Event) -> bool {
        if !self.workers.is_empty() && !self.workers.iter().any(|w| w == event.hostname()) {
            return false;
        }
        match event {
            Event::Worker(_) => {
                self.tasks.is_empty() && self.kinds.is_empty() && self.queues.is_empty()
            }
            Event::Task { event, .. } => {
                (self.tasks.is_empty() || self.tasks.iter().any(|t| t.is_match(&event.task)))
                    && (self.kinds.is_empty() || self.kinds.contains(&event.kind))
                    && (self.queues.is_empty()
                        || event
                            .queue
                            .as_ref()
                            .is_some_and(|queue| self.queues.contains(queue)))
            }
        }
    }
}

/// Tails the events stream of `namespace` from `since`, with an ordered consumer (it recovers
/// from a reconnect by itself, skipping nothing the stream still keeps).
///
/// # Errors
/// [`EventError::NoStream`] when no worker of the namespace has started; [`EventError::Open`]
/// when the stream or the consumer cannot be opened.
///
/// # Cancel safety
/// Cancel safe: a dropped call leaves at most an ephemeral consumer, which the server removes.
pub async fn follow(
    nats: &async_nats::Client,
    namespace: &Namespace,
    since: Since,
) -> Result<EventStream, EventError> {
    let layout = Layout::new(namespace.clone());
    let name = layout.events_stream();
    let open = |source: async_nats::Error| EventError::Open {
        stream: name.clone(),
        source,
    };
    let js = jetstream::new(nats.clone());
    let stream = match js.get_stream(&name).await {
        Ok(stream) => stream,
        Err(error)
            if matches!(
                error.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(inner)
                    if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            return Err(EventError::NoStream {
                stream: name,
                namespace: namespace.to_string(),
            });
        }
        Err(error) => return Err(open(error.into())),
    };
    let deliver_policy = match since {
        Since::Now => consumer::DeliverPolicy::New,
        Since::Start => consumer::DeliverPolicy::All,
        Since::Time(ms) => consumer::DeliverPolicy::ByStartTime {
            start_time: async_nats::datetime::from_nanos(i128::from(ms) * 1_000_000)
                .map_err(open)?,
        },
    };
    let config = consumer::push::OrderedConfig {
        deliver_subject: nats.new_inbox(),
        filter_subject: layout.events_subjects(),
        deliver_policy,
        ..Default::default()
    };
    let mut consumer = stream
        .create_consumer(config)
        .await
        .map_err(|error| open(error.into()))?;
    let pending = consumer
        .info()
        .await
        .map_err(|error| open(error.into()))?
        .num_pending;
    let messages = consumer
        .messages()
        .await
        .map_err(|error| open(error.into()))?;
    Ok(EventStream {
        messages: Box::pin(messages),
        layout,
        buffered: VecDeque::new(),
        caught_up: pending == 0,
    })
}

/// The events read by [`follow`], oldest first, one [`Event`] per event (a batch of task events
/// yields each of its events).
pub struct EventStream {
    messages: Pin<Box<consumer::push::Ordered>>,
    layout: Layout,
    buffered: VecDeque<Event>,
    caught_up: bool,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("buffered", &self.buffered.len())
            .field("caught_up", &self.caught_up)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// True once every event the stream held when the last message was read has been yielded
    /// (or the stream held none when reading began): what a reader that reads back and stops
    /// waits for.
    pub fn caught_up(&self) -> bool {
        self.caught_up && self.buffered.is_empty()
    }

    fn decode(&self, message: &jetstream::Message) -> Result<Vec<Event>, EventError> {
        let subject = message.subject.as_str();
        let decode_error = |source| EventError::Decode {
            subject: subject.to_owned(),
            source,
        };
        let prefix = format!("{}.events.", self.layout.namespace());
        match subject.strip_prefix(&prefix) {
            Some(rest) if rest.starts_with("worker.") => {
                let event: WorkerEvent =
                    serde_json::from_slice(&message.payload).map_err(decode_error)?;
                Ok(vec![Event::Worker(event)])
            }
            _ => {
                let batch: TaskEventBatch =
                    serde_json::from_slice(&message.payload).map_err(decode_error)?;
                let hostname = batch.hostname;
                Ok(batch
                    .events
                    .into_iter()
                    .map(|event| Event::Task {
                        hostname: hostname.clone(),
                        event,
                    })
                    .collect())
            }
        }
    }
}

impl Stream for EventStream {
    type Item = Result<Event, EventError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            let message = match futures_util::ready!(self.messages.poll_next_unpin(cx)) {
                None => return Poll::Ready(None),
                Some(Err(error)) => return Poll::Ready(Some(Err(EventError::Read(error.into())))),
                Some(Ok(message)) => message,
            };
            if let Ok(info) = message.info() {
                self.caught_up = info.pending == 0;
            }
            match self.decode(&message) {
                Ok(events) => self.buffered.extend(events),
                Err(error) => return Poll::Ready(Some(Err(error))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_event(kind: TaskEventKind, task: &str, queue: &str) -> Event {
        let mut event = TaskEvent::new(kind, "t1", task, 1);
        event.queue = Some(queue.to_owned());
        Event::Task {
            hostname: "w1".to_owned(),
            event,
        }
    }

    #[test]
    fn a_filter_keeps_what_it_names_and_task_criteria_leave_out_worker_events() {
        let succeeded = task_event(TaskEventKind::Succeeded, "tasks.bulk_a", "low");
        let rejected = task_event(TaskEventKind::Rejected, "tasks.add", "default");
        assert!(EventFilter::new().matches(&succeeded));
        let bulk = EventFilter::new().task("tasks.bulk_*").unwrap();
        assert!(bulk.matches(&succeeded) && !bulk.matches(&rejected));
        let failure = EventFilter::new().state("FAILURE").unwrap();
        assert!(failure.matches(&rejected) && !failure.matches(&succeeded));
        let kind = EventFilter::new().state("task-succeeded").unwrap();
        assert!(kind.matches(&succeeded));
        assert!(EventFilter::new().queue("low").matches(&succeeded));
        assert!(!EventFilter::new().worker("w2").matches(&succeeded));
        assert!(matches!(
            EventFilter::new().state("DONE"),
            Err(EventError::UnknownState(_))
        ));
        assert!(EventFilter::new().task("[").is_err());
    }
}
