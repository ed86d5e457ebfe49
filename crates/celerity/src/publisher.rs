//! Publishing one task message: the size check against the server's `max_payload`, the queue's
//! stream, the JetStream publish with `Nats-Msg-Id`, and the create-only PENDING record.
//!
//! Producers ([`crate::Client`]) and workers (which publish the next steps of a canvas) share it,
//! so both put the same message on the wire, run the same publish signals and send the same
//! `task-sent` events.

use async_nats::jetstream::{self, message::PublishMessage};
use celerity_proto::{
    Envelope, Layout, Priority, QueueName, TaskBody, TaskEvent, TaskEventKind, header,
};
use dashmap::DashMap;
use opentelemetry::Context;
use opentelemetry::context::FutureExt as _;

use crate::clock::now_ms;
use crate::error::EnqueueError;
use crate::error_text::error_chain;
use crate::events::Emitter;
use crate::nats::headers::envelope_headers;
use crate::nats::{NoRoom, provision};
use crate::result_store::ResultStore;
use crate::signals::{Signals, TaskPublish};
use crate::storage::Storage;
use crate::telemetry::{self, Telemetry};

pub(crate) use celerity_proto::builtin::ETA_SLACK_MS;

/// Whether a publish also creates the task's PENDING record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pending {
    /// Create it, concurrently with the publish.
    Write,
    /// Leave it: the task stores no result, its record was written by whoever sent its chain, or
    /// the message is sent again.
    Skip,
}

/// Publishes task messages.
pub(crate) struct Publisher {
    nats: async_nats::Client,
    js: jetstream::Context,
    layout: Layout,
    store: ResultStore,
    ready_queues: DashMap<QueueName, ()>,
    delayed_ready: std::sync::atomic::AtomicBool,
    /// The priority levels queues use (priority steps).
    levels: Vec<Priority>,
    /// Replicas and limits of the streams it makes.
    storage: Storage,
    /// The server's `max_payload` and when it was read (ms since the epoch): reading it clones
    /// the whole server info, too much for every publish, and it changes only with the server.
    max_payload: std::sync::atomic::AtomicU64,
    max_payload_read_ms: std::sync::atomic::AtomicU64,
    /// The publish hooks (`before_task_publish`, `after_task_publish`).
    signals: Signals,
    /// Where `task-sent` events go (`None`: none are sent).
    sent_events: Option<Emitter>,
    /// Where each publish's span goes.
    telemetry: Telemetry,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub(crate) fn new(
        nats: async_nats::Client,
        js: jetstream::Context,
        layout: Layout,
        store: ResultStore,
        levels: Vec<Priority>,
        storage: Storage,
    ) -> Self {
        Self {
            nats,
            js,
            layout,
            store,
            ready_queues: DashMap::new(),
            delayed_ready: std::sync::atomic::AtomicBool::new(false),
            levels,
            storage,
            max_payload: std::sync::atomic::AtomicU64::new(0),
            max_payload_read_ms: std::sync::atomic::AtomicU64::new(0),
            signals: Signals::default(),
            sent_events: None,
            telemetry: Telemetry::disabled(),
        }
    }

    /// Opens a span for each publish, exported through `telemetry`.
    pub(crate) fn traced(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Runs `signals`' publish hooks around each publish and sends a `task-sent` event for each
    /// task to `sent_events`.
    pub(crate) fn observed(mut self, signals: Signals, sent_events: Option<Emitter>) -> Self {
        self.signals = signals;
        self.sent_events = sent_events;
        self
    }

    /// The server's `max_payload` (0 when unknown), read again at most once a second.
    fn max_payload(&self) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        let now = now_ms();
        if now.saturating_sub(self.max_payload_read_ms.load(Relaxed)) >= 1_000 {
            let max_payload = self.nats.server_info().max_payload;
            self.max_payload.store(max_payload as u64, Relaxed);
            self.max_payload_read_ms.store(now, Relaxed);
        }
        self.max_payload.load(Relaxed) as usize
    }

    /// Publishes `body` under `envelope` to `queue` at the envelope's priority, and with
    /// [`Pending::Write`] writes PENDING (create-only, concurrently).
    ///
    /// # Errors
    /// [`EnqueueError`] for an oversized or unencodable message, a queue stream that cannot be
    /// created, or a publish that was not acknowledged.
    pub(crate) async fn publish(
        &self,
        envelope: &Envelope,
        body: &TaskBody,
        queue: &QueueName,
        pending: Pending,
    ) -> Result<(), EnqueueError> {
        let payload =
            envelope
                .content_type
                .encode(body)
                .map_err(|source| EnqueueError::Encode {
                    task: envelope.task.clone(),
                    source,
                })?;
        self.publish_bytes(envelope, payload.into(), queue, pending)
            .await
    }

    /// Publishes an already encoded body under `envelope` (a retry resends its message's bytes).
    ///
    /// # Errors
    /// As [`Publisher::publish`].
    pub(crate) async fn publish_bytes(
        &self,
        envelope: &Envelope,
        payload: bytes::Bytes,
        queue: &QueueName,
        pending: Pending,
    ) -> Result<(), EnqueueError> {
        let signal = TaskPublish {
            envelope,
            queue,
            priority: envelope.priority,
        };
        self.signals.fire_before_task_publish(&signal);
        // The event's time is the publish's start, not its acknowledgement: a worker may take the
        // task before the acknowledgement arrives.
        let sending_at = self.sent_events.as_ref().map(|_| now_ms());
        let mut headers = envelope_headers(envelope);
        let subject = self.subject(envelope, queue).await?;
        let traced = self.trace(envelope, queue, &subject.0, &mut headers);
        let sent = async {
            self.check_size(envelope, &headers, &payload)?;
            let publish = self.send(envelope, queue, subject, payload, headers);
            match pending {
                Pending::Skip => publish.await,
                Pending::Write => self.publish_with_pending(envelope, publish).await,
            }
        };
        let sent = match &traced {
            // Inside the span, so the PENDING record names its trace.
            Some(Traced::Span(context)) => {
                let sent = sent.with_context(context.clone()).await;
                let error = sent.as_ref().err().map(|error| error_chain(error));
                telemetry::end(context, error.as_deref());
                sent
            }
            _ => sent.await,
        };
        sent?;
        self.signals.fire_after_task_publish(&signal);
        if let (Some(events), Some(at_ms)) = (&self.sent_events, sending_at) {
            events.emit(sent_event(envelope, queue, at_ms));
        }
        Ok(())
    }

    /// Opens the publish's span and writes its context into `headers`; without tracing, passes
    /// on the context the publish is made in (a run's, whose message brought a `traceparent`).
    fn trace(
        &self,
        envelope: &Envelope,
        queue: &QueueName,
        subject: &str,
        headers: &mut async_nats::HeaderMap,
    ) -> Option<Traced> {
        let traced = match self.telemetry.start_publish(envelope, queue, subject) {
            Some(context) => Traced::Span(context),
            None if envelope.traceparent.is_none() => Traced::Passed(Context::current()),
            None => return None,
        };
        let context = match &traced {
            Traced::Span(context) | Traced::Passed(context) => context,
        };
        let (traceparent, tracestate) = telemetry::traceparent_of(context)?;
        headers.insert(header::TRACEPARENT, traceparent.as_str());
        if let Some(tracestate) = tracestate {
            headers.insert(header::TRACESTATE, tracestate.as_str());
        }
        Some(traced)
    }

    /// Refuses a message larger than the server's `max_payload`.
    fn check_size(
        &self,
        envelope: &Envelope,
        headers: &async_nats::HeaderMap,
        payload: &[u8],
    ) -> Result<(), EnqueueError> {
        let size = message_size(headers, payload);
        let max_payload = self.max_payload();
        if max_payload > 0 && size > max_payload {
            return Err(EnqueueError::PayloadTooLarge {
                task_id: envelope.id.clone(),
                size,
                max_payload,
            });
        }
        Ok(())
    }

    /// Where the task goes, its stream made sure of: a task due later waits in the delayed stream,
    /// not in its queue (nor in any memory), and the scheduler moves it to its queue at its ETA.
    async fn subject(
        &self,
        envelope: &Envelope,
        queue: &QueueName,
    ) -> Result<(String, Stream), EnqueueError> {
        let delayed = envelope
            .eta_ms
            .is_some_and(|eta| eta > now_ms() + ETA_SLACK_MS);
        if delayed {
            self.ensure_delayed().await?;
            Ok((self.layout.delayed_subject(queue), Stream::Delayed))
        } else {
            self.ensure_queue(queue).await?;
            let subject = self.layout.task_subject(queue, envelope.priority);
            Ok((subject, Stream::Queue))
        }
    }

    /// Publishes the message and waits for its ack.
    async fn send(
        &self,
        envelope: &Envelope,
        queue: &QueueName,
        (subject, stream): (String, Stream),
        payload: bytes::Bytes,
        headers: async_nats::HeaderMap,
    ) -> Result<(), EnqueueError> {
        let message = PublishMessage::build().payload(payload).headers(headers);
        let subject = async_nats::Subject::from(subject);
        // Taken before the publish, so the server's refusal of it comes after the watch's start;
        // a refused publish is never acknowledged, and would otherwise wait out its timeout.
        let refusals = crate::nats::permissions::Watch::start(&self.nats);
        let ack = match self.js.send_publish(subject.clone(), message).await {
            Ok(ack) => refusals
                .guard(ack, |refused| refused.is_publish_to(&subject))
                .await
                .map_err(|refused| EnqueueError::PermissionDenied {
                    task_id: envelope.id.clone(),
                    subject: refused.subject,
                })?,
            Err(error) => Err(error),
        };
        ack.map(drop).map_err(|error| match NoRoom::of(&error) {
            Some(NoRoom::StreamFull) => EnqueueError::QueueFull {
                task_id: envelope.id.clone(),
                queue: queue.clone(),
                stream: match stream {
                    Stream::Delayed => self.layout.delayed_stream(),
                    Stream::Queue => self.layout.queue_stream(queue),
                },
            },
            Some(NoRoom::StoreFull) => EnqueueError::StoreFull {
                task_id: envelope.id.clone(),
            },
            None => EnqueueError::Publish {
                task_id: envelope.id.clone(),
                source: error.into(),
            },
        })
    }

    /// Awaits `publish` together with the create of the envelope's PENDING record; removes the
    /// record when the publish fails.
    async fn publish_with_pending(
        &self,
        envelope: &Envelope,
        publish: impl std::future::Future<Output = Result<(), EnqueueError>>,
    ) -> Result<(), EnqueueError> {
        let id = &envelope.id;
        // NOTE(protocol): PENDING is create-only, so a worker that was faster than this write is
        // never overwritten.
        let pending = async {
            self.store
                .create_pending(envelope)
                .await
                .map_err(|source| EnqueueError::Pending {
                    task_id: id.clone(),
                    source,
                })
        };
        let (published, pending) = tokio::join!(publish, pending);
        if let Err(error) = published {
            // Not sent: a PENDING record would make a task that does not exist look queued. (A
            // store whose user may not write PENDING wrote none.)
            if pending.is_ok() && self.store.writes_pending() {
                let _ = self.store.purge(id).await;
            }
            return Err(error);
        }
        match pending {
            // The user may not write results: the store said so once, and writes no more.
            Err(EnqueueError::Pending {
                source: crate::result_store::StoreError::PermissionDenied { .. },
                ..
            }) => {}
            // The task is sent; only its PENDING record is missing, so it reads as UNKNOWN until a
            // worker records a state. Failing the call would invite a duplicate send.
            Err(error) => {
                tracing::warn!(task_id = %id, error = %error_chain(&error), "task sent, but its PENDING record was not written")
            }
            Ok(()) => {}
        }
        Ok(())
    }

    async fn ensure_delayed(&self) -> Result<(), provision::ProvisionError> {
        if self
            .delayed_ready
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(());
        }
        // Boxed: run once, it would otherwise make every publish's future as large as its own.
        Box::pin(provision::delayed_stream(
            &self.js,
            &self.layout,
            &self.storage,
        ))
        .await?;
        self.delayed_ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn ensure_queue(&self, queue: &QueueName) -> Result<(), provision::ProvisionError> {
        if self.ready_queues.contains_key(queue) {
            return Ok(());
        }
        // Boxed: run once per queue, it would otherwise make every publish's future as large as
        // its own.
        Box::pin(provision::queue_stream(
            &self.js,
            &self.layout,
            &self.storage,
            queue,
            &self.levels,
        ))
        .await?;
        self.ready_queues.insert(queue.clone(), ());
        Ok(())
    }
}

/// The stream a task is published to.
#[derive(Debug, Clone, Copy)]
enum Stream {
    /// Its queue's: it is due now.
    Queue,
    /// The delayed tasks': it is due later.
    Delayed,
}

/// The trace context a publish is made in.
enum Traced {
    /// The publish's own span.
    Span(Context),
    /// The context it was made in, passed on (tracing is off).
    Passed(Context),
}

/// The `task-sent` event of a task published to `queue`.
fn sent_event(envelope: &Envelope, queue: &QueueName, at_ms: u64) -> TaskEvent {
    let mut event = TaskEvent::of_envelope(TaskEventKind::Sent, envelope, Some(queue), at_ms);
    event.eta_ms = envelope.eta_ms;
    event
}

/// The size the server counts for a message: body, headers and framing.
fn message_size(headers: &async_nats::HeaderMap, payload: &[u8]) -> usize {
    let header_bytes: usize = headers
        .iter()
        .map(|(name, values)| {
            AsRef::<str>::as_ref(name).len()
                + values
                    .iter()
                    .map(|value| value.as_str().len() + 4)
                    .sum::<usize>()
        })
        .sum();
    payload.len() + header_bytes + 12
}
