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
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, consumer::PullConsumer, kv};
use celerity_proto::{DeadLetterReason, Envelope, Priority, QueueName, header};
use futures_util::StreamExt;

use crate::clock::now_ms;
use crate::nats::headers::HeaderView;
use crate::nats::provision;
use crate::publisher::ETA_SLACK_MS;
use crate::worker::SharedHandle;
use crate::worker::nats_io;
use crate::worker::outcome::{Outcome, Rejection, apply_outcome};

/// The longest a not-yet-due task is held back before the scheduler looks at it again.
const MAX_HOLD: Duration = Duration::from_secs(3600);
/// How long after a failed release it is tried again, times the deliveries so far.
const RETRY_RELEASE: Duration = Duration::from_millis(500);
/// The longest wait between two tries of a release that keeps failing.
const MAX_RETRY_RELEASE: Duration = Duration::from_secs(30);
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
            let active = revision.is_some();
            actor
                .shared
                .scheduling
                .store(active, std::sync::atomic::Ordering::Relaxed);
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
        // NOTE(protocol): the subject names no queue whose dead letters it could join, so it goes
        // with the default queue's; `Celerity-Dlq-Subject` keeps the subject it came on.
        let error = format!(
            "the delayed subject {:?} does not end in a valid queue name",
            message.subject.as_str()
        );
        let queue = &shared.app.settings().default_queue;
        let rejection = Rejection::message(DeadLetterReason::BadEnvelope, error);
        return apply_outcome(shared, queue, &message, Outcome::DeadLetter(rejection)).await;
    };
    let envelope = match Envelope::from_headers(&HeaderView(message.headers.as_ref())) {
        Ok(envelope) => envelope,
        Err(error) => {
            // Not a task: the queue's worker would dead-letter it; do the same here.
            let rejection = Rejection::message(DeadLetterReason::BadEnvelope, error.to_string());
            return apply_outcome(shared, &queue, &message, Outcome::DeadLetter(rejection)).await;
        }
    };
    let now = now_ms();
    match envelope.eta_ms {
        Some(eta) if eta > now + ETA_SLACK_MS => {
            let wait = Duration::from_millis(eta - now).min(MAX_HOLD);
            let _ = nats_io::nak(&message, Some(wait)).await;
        }
        eta => release(shared, &queue, &message, &envelope, eta.unwrap_or(0)).await,
    }
}

/// Publishes a due task to `queue` at its priority, rounded to a level the queue has, then
/// acknowledges it; a queue without a stream gets one, as a Rust producer makes it before its first
/// publish, and the release is tried again later.
async fn release(
    shared: &crate::worker::WorkerShared,
    queue: &QueueName,
    message: &jetstream::Message,
    envelope: &Envelope,
    eta: u64,
) {
    // NOTE(protocol): on the delayed stream the priority travels in `Celerity-Priority` (the
    // subject has no priority token); a level outside the priority steps is rounded as producers
    // round it (protocol.md 3.1), and the header is rewritten to match the subject it goes to.
    let settings = shared.app.settings();
    let mut priority = settings.routes.to_step(envelope.priority);
    let publish = |priority: Priority| {
        let mut headers = crate::nats::headers::republished_headers(message.headers.as_ref());
        let release_id = format!("{}-eta-{eta}", envelope.message_id());
        headers.insert(header::NATS_MSG_ID, release_id.as_str());
        headers.insert(header::PRIORITY, priority.to_string().as_str());
        let subject = shared.layout.task_subject(queue, priority);
        nats_io::publish_stored(&shared.js, subject, headers, message.payload.clone())
    };
    let mut released = publish(priority).await;
    if let Err(error) = &released
        && error.kind() == PublishErrorKind::StreamNotFound
    {
        // No stream takes the subject: the queue has none (it is made now), or its stream lists
        // other levels than this app's steps (an app with other steps made it): the task goes to
        // the level that stream has, rounded as 3.1 says.
        let levels = &settings.priority_steps;
        match provision::queue_stream(&shared.js, &shared.layout, &settings.storage, queue, levels)
            .await
        {
            Ok(stream) => {
                let listed = listed_levels(&stream.cached_info().config.subjects);
                let rounded = round_to(&listed, envelope.priority).unwrap_or(priority);
                tracing::info!(task_id = %envelope.id, queue = %queue, priority = %rounded, "a due task's queue had no stream for its level; releasing it to the stream's");
                priority = rounded;
                released = publish(priority).await;
            }
            Err(error) => {
                tracing::warn!(queue = %queue, error = %crate::error_chain(&error), "cannot create the queue stream of a due task");
            }
        }
    }
    let error = match released {
        Ok(_) => {
            if let Err(error) = nats_io::ack(message).await {
                tracing::warn!(task_id = %envelope.id, error = %error, "cannot acknowledge a released delayed task; the release is de-duplicated if it is sent again");
            }
            return;
        }
        Err(error) => error,
    };
    // Later each time, so a release that keeps failing costs a request (and a log line) at most
    // every 30 s.
    let delivered = message
        .info()
        .map_or(1, |info| info.delivered.max(1) as u32);
    let delay = RETRY_RELEASE
        .saturating_mul(delivered)
        .min(MAX_RETRY_RELEASE);
    tracing::warn!(task_id = %envelope.id, queue = %queue, priority = %priority, error = %error, retry_in_ms = delay.as_millis() as u64, "cannot move a due task to its queue; retrying");
    let _ = nats_io::nak(message, Some(delay)).await;
}

/// The priority levels a queue stream's subjects list (their last tokens), lowest first.
fn listed_levels(subjects: &[String]) -> Vec<Priority> {
    let mut levels: Vec<Priority> = subjects
        .iter()
        .filter_map(|subject| subject.rsplit('.').next()?.parse().ok())
        .collect();
    levels.sort();
    levels.dedup();
    levels
}

/// `priority` rounded to one of `levels` (lowest first) as protocol.md 3.1 says: down to the
/// nearest level, or up to the lowest when it is below them all. `None` without levels.
fn round_to(levels: &[Priority], priority: Priority) -> Option<Priority> {
    levels
        .iter()
        .rev()
        .find(|level| **level <= priority)
        .or_else(|| levels.first())
        .copied()
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.tick(ctx);
        ctx.run_interval(self.lease_ttl / 3, |actor, ctx| actor.tick(ctx));
    }

    fn stopping(&mut self, _ctx: &mut Self::Context) -> Running {
        // Hand the lease back at once instead of letting it expire.
        let scheduling = &self.shared.scheduling;
        scheduling.store(false, std::sync::atomic::Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(values: &[u8]) -> Vec<Priority> {
        values
            .iter()
            .map(|value| Priority::new(*value).unwrap())
            .collect()
    }

    #[test]
    fn a_level_is_rounded_to_those_the_stream_lists() {
        let subjects: Vec<String> = ["celerity.q.a.9", "celerity.q.a.3", "celerity.q.a.6"]
            .iter()
            .map(|subject| subject.to_string())
            .collect();
        let listed = listed_levels(&subjects);
        assert_eq!(listed, levels(&[3, 6, 9]));
        let round = |p| round_to(&listed, Priority::new(p).unwrap()).unwrap();
        assert_eq!(round(7), Priority::new(6).unwrap());
        assert_eq!(round(9), Priority::new(9).unwrap());
        assert_eq!(round(1), Priority::new(3).unwrap(), "up to the lowest");
        assert_eq!(round_to(&[], Priority::new(5).unwrap()), None);
        assert!(listed_levels(&["celerity.q.a.*".to_string()]).is_empty());
    }
}
