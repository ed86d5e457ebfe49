//! Publishing one task message: the size check against the server's `max_payload`, the queue's
//! stream, the JetStream publish with `Nats-Msg-Id`, and the create-only PENDING record.
//!
//! Producers ([`crate::Client`]) and workers (which publish the next steps of a canvas) share it,
//! so both put the same message on the wire.

use async_nats::jetstream::{self, message::PublishMessage};
use celerity_proto::{Envelope, Layout, QueueName, TaskBody};
use dashmap::DashMap;

use crate::client::EnqueueError;
use crate::nats::headers::envelope_headers;
use crate::nats::provision;
use crate::result_store::ResultStore;

/// Publishes task messages.
pub(crate) struct Publisher {
    nats: async_nats::Client,
    js: jetstream::Context,
    layout: Layout,
    store: ResultStore,
    ready_queues: DashMap<QueueName, ()>,
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
    ) -> Self {
        Self {
            nats,
            js,
            layout,
            store,
            ready_queues: DashMap::new(),
        }
    }

    /// Publishes `body` under `envelope` to `queue` at the envelope's priority, and writes PENDING
    /// (create-only, concurrently) when `pending` is set.
    ///
    /// # Errors
    /// [`EnqueueError`] for an oversized or unencodable message, a queue stream that cannot be
    /// created, or a publish that was not acknowledged.
    pub(crate) async fn publish(
        &self,
        envelope: &Envelope,
        body: &TaskBody,
        queue: &QueueName,
        pending: bool,
    ) -> Result<(), EnqueueError> {
        let id = &envelope.id;
        let payload =
            envelope
                .content_type
                .encode(body)
                .map_err(|error| EnqueueError::InvalidOption {
                    option: "arguments",
                    value: envelope.task.to_string(),
                    reason: error.to_string(),
                })?;
        let headers = envelope_headers(envelope);
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
        let size = payload.len() + header_bytes + 12;
        let max_payload = self.nats.server_info().max_payload;
        if max_payload > 0 && size > max_payload {
            return Err(EnqueueError::PayloadTooLarge {
                task_id: id.clone(),
                size,
                max_payload,
            });
        }
        self.ensure_queue(queue).await?;
        let subject = self.layout.task_subject(queue, envelope.priority);
        let publish = async {
            let message = PublishMessage::build()
                .payload(payload.into())
                .headers(headers);
            let ack = self
                .js
                .send_publish(subject, message)
                .await
                .map_err(|error| EnqueueError::Publish {
                    task_id: id.clone(),
                    source: error.into(),
                })?;
            ack.await.map(drop).map_err(|error| EnqueueError::Publish {
                task_id: id.clone(),
                source: error.into(),
            })
        };
        if !pending {
            return publish.await;
        }
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
            // Not sent: a PENDING record would make a task that does not exist look queued.
            if pending.is_ok() {
                let _ = self.store.purge(id).await;
            }
            return Err(error);
        }
        if let Err(error) = pending {
            // The task is sent; only its PENDING record is missing, so it reads as UNKNOWN until a
            // worker records a state. Failing the call would invite a duplicate send.
            tracing::warn!(task_id = %id, error = %crate::error_chain(&error), "task sent, but its PENDING record was not written");
        }
        Ok(())
    }

    async fn ensure_queue(&self, queue: &QueueName) -> Result<(), provision::ProvisionError> {
        if self.ready_queues.contains_key(queue) {
            return Ok(());
        }
        provision::queue_stream(&self.js, &self.layout, queue).await?;
        self.ready_queues.insert(queue.clone(), ());
        Ok(())
    }
}
