//! `Scheduler`: moves delayed tasks (countdown, ETA, retry backoff) from the delayed stream to
//! their queues when they are due.
//!
//! One scheduler is active in a cluster, through a lease in the leases bucket (key `scheduler`).
//! The active one pulls from the delayed stream's durable consumer: a task that is due is published
//! to its queue (de-duplicated by `<message id>-eta-<eta>`, so a scheduler that dies between
//! publishing and acknowledging does not send it twice), then acknowledged; a task not yet due is
//! negatively acknowledged with a delay until its ETA, so the server, not a worker, holds it.

use std::time::Duration;

use actix::prelude::*;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, kv};
use celerity_proto::{Envelope, header};
use futures_util::StreamExt;

use crate::clock::now_ms;
use crate::nats::headers::HeaderView;
use crate::publisher::ETA_SLACK_MS;
use crate::worker::SharedHandle;

/// The longest a not-yet-due task is held back before the scheduler looks at it again.
const MAX_HOLD: Duration = Duration::from_secs(3600);
/// The lease key of the active scheduler.
const LEASE_KEY: &str = "scheduler";

/// Moves due delayed tasks to their queues, while it holds the scheduler lease.
pub(crate) struct Scheduler {
    shared: SharedHandle,
    consumer: PullConsumer,
    leases: kv::Store,
    lease_ttl: Duration,
    revision: Option<u64>,
    pulling: bool,
    ticking: bool,
}

impl Scheduler {
    pub(crate) fn new(
        shared: SharedHandle,
        consumer: PullConsumer,
        leases: kv::Store,
        lease_ttl: Duration,
    ) -> Self {
        Self {
            shared,
            consumer,
            leases,
            lease_ttl,
            revision: None,
            pulling: false,
            ticking: false,
        }
    }

    /// Renews the lease, or tries to take it.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.ticking {
            return;
        }
        self.ticking = true;
        let leases = self.leases.clone();
        let hostname = self.shared.hostname.to_string();
        let held = self.revision;
        let work = async move {
            match held {
                Some(revision) => leases
                    .update(LEASE_KEY, hostname.into(), revision)
                    .await
                    .ok(),
                None => leases.create(LEASE_KEY, hostname.into()).await.ok(),
            }
        };
        ctx.spawn(work.into_actor(self).map(move |revision, actor, ctx| {
            actor.ticking = false;
            match (held, revision) {
                (Some(_), None) => tracing::warn!(
                    "lost the scheduler lease; another worker schedules delayed tasks now"
                ),
                (None, Some(_)) => {
                    tracing::info!(worker = %actor.shared.hostname, "scheduling delayed tasks")
                }
                _ => {}
            }
            actor.revision = revision;
            actor.pull(ctx);
        }));
    }

    /// Pulls the next batch of delayed tasks, if this scheduler is the active one.
    fn pull(&mut self, ctx: &mut Context<Self>) {
        if self.pulling || self.revision.is_none() {
            return;
        }
        self.pulling = true;
        let consumer = self.consumer.clone();
        let shared = self.shared.clone();
        let batch = async move {
            let messages = consumer
                .batch()
                .max_messages(256)
                .expires(Duration::from_secs(1))
                .messages()
                .await;
            let mut messages = match messages {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::debug!(error = %error, "cannot pull delayed tasks");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    return;
                }
            };
            while let Some(message) = messages.next().await {
                match message {
                    Ok(message) => release_or_hold(&shared, message).await,
                    Err(error) => tracing::debug!(error = %error, "delayed pull ended"),
                }
            }
        };
        ctx.spawn(batch.into_actor(self).map(|(), actor, ctx| {
            actor.pulling = false;
            actor.pull(ctx);
        }));
    }
}

/// Publishes a due task to its queue (then acknowledges it), or holds it back until its ETA.
async fn release_or_hold(shared: &crate::worker::WorkerShared, message: jetstream::Message) {
    let Some(queue) = shared.layout.parse_delayed_subject(&message.subject) else {
        tracing::warn!(subject = %message.subject, "a delayed message on an unknown subject; dropping it");
        let _ = message.ack_with(AckKind::Term).await;
        return;
    };
    let envelope = match Envelope::from_headers(&HeaderView(message.headers.as_ref())) {
        Ok(envelope) => envelope,
        Err(error) => {
            // Not a task: the queue's worker would dead-letter it; do the same here.
            let reason = celerity_proto::DeadLetterReason::BadEnvelope;
            return super::dead_letter::dead_letter(
                shared,
                &queue,
                &message,
                reason,
                error.to_string(),
            )
            .await;
        }
    };
    let now = now_ms();
    match envelope.eta_ms {
        Some(eta) if eta > now + ETA_SLACK_MS => {
            let wait = Duration::from_millis(eta - now).min(MAX_HOLD);
            let _ = message.ack_with(AckKind::Nak(Some(wait))).await;
        }
        eta => {
            let mut headers = message.headers.clone().unwrap_or_default();
            let release_id = format!("{}-eta-{}", envelope.message_id(), eta.unwrap_or(0));
            headers.insert(header::NATS_MSG_ID, release_id.as_str());
            let subject = shared.layout.task_subject(&queue, envelope.priority);
            let released = async {
                shared
                    .js
                    .publish_with_headers(subject, headers, message.payload.clone())
                    .await?
                    .await
            };
            match released.await {
                Ok(_) => {
                    if let Err(error) = message.ack().await {
                        tracing::warn!(task_id = %envelope.id, error = %error, "cannot acknowledge a released delayed task; the release is de-duplicated if it is sent again");
                    }
                }
                Err(error) => {
                    tracing::warn!(task_id = %envelope.id, error = %error, "cannot move a due task to its queue; retrying");
                    let _ = message
                        .ack_with(AckKind::Nak(Some(Duration::from_millis(500))))
                        .await;
                }
            }
        }
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.tick(ctx);
        ctx.run_interval(self.lease_ttl / 3, |actor, ctx| actor.tick(ctx));
    }

    fn stopping(&mut self, _ctx: &mut Self::Context) -> Running {
        // Hand the lease back at once instead of letting it expire.
        if let Some(revision) = self.revision.take() {
            let leases = self.leases.clone();
            self.shared.runtime.spawn(async move {
                let _ = leases
                    .delete_expect_revision(LEASE_KEY, Some(revision))
                    .await;
            });
        }
        Running::Stop
    }
}
