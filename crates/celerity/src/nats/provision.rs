//! Streams, consumers and buckets, created from one place so their settings match
//! `docs/protocol.md`.
//!
//! Every function is idempotent: it creates what is missing and opens what exists.
//! A server older than 2.10 ignores configuration fields it does not know, so where a setting matters
//! the configuration the server echoes back is checked.

use std::time::Duration;

use crate::nats::server::NewTaskSignal;
use async_nats::jetstream::{self, consumer, kv, stream};
use celerity_proto::{Layout, Priority, QueueName};

/// A stream, consumer or bucket could not be created or opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot provision {what} {name}")]
pub struct ProvisionError {
    /// What kind of object (`stream`, `consumer`, `bucket`).
    pub what: &'static str,
    /// Its name.
    pub name: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl ProvisionError {
    fn new(
        what: &'static str,
        name: &str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            what,
            name: name.to_owned(),
            source: source.into(),
        }
    }
}

/// The stream of a queue: work-queue retention (a task is removed once acknowledged), file storage,
/// de-duplication on `Nats-Msg-Id` for two minutes, and, on a server where workers learn of new
/// tasks from doorbells (before 2.10.16, see [`NewTaskSignal`]), a headers-only republish of every
/// stored task to the queue's doorbell subjects. On a later server workers send max-bytes probes,
/// which cost the server nothing per task, and the stream does not republish (a republished
/// doorbell cost the server more than the task's own store). A stream that exists is opened as
/// it is: one made on an earlier server keeps its republish, which costs time but is harmless.
pub(crate) async fn queue_stream(
    js: &jetstream::Context,
    layout: &Layout,
    queue: &QueueName,
    levels: &[Priority],
) -> Result<stream::Stream, ProvisionError> {
    let name = layout.queue_stream(queue);
    let signal = NewTaskSignal::for_client(&js.client());
    let config = stream::Config {
        name: name.clone(),
        subjects: layout.queue_level_subjects(queue, levels),
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        republish: (signal == NewTaskSignal::Republish).then(|| stream::Republish {
            source: layout.queue_wildcard(queue),
            destination: layout.doorbell_subject_pattern(queue),
            headers_only: true,
        }),
        ..Default::default()
    };
    let mut stream = js
        .get_or_create_stream(config)
        .await
        .map_err(|error| ProvisionError::new("stream", &name, error))?;
    let info = stream
        .info()
        .await
        .map_err(|error| ProvisionError::new("stream", &name, error))?;
    if signal == NewTaskSignal::Republish && info.config.republish.is_none() {
        tracing::warn!(
            stream = %name,
            "the queue stream does not republish doorbells (made on nats-server 2.10.16 or later, or without them), and this server needs them: workers here find new tasks only by their idle wait and periodic check; remake the stream to restore them"
        );
    }
    Ok(stream)
}

/// The durable pull consumer of one priority level, shared by every worker of the queue.
pub(crate) async fn level_consumer(
    stream: &stream::Stream,
    layout: &Layout,
    queue: &QueueName,
    priority: Priority,
    ack_wait: Duration,
) -> Result<consumer::PullConsumer, ProvisionError> {
    let durable = layout.queue_consumer(priority);
    let config = consumer::pull::Config {
        durable_name: Some(durable.clone()),
        filter_subject: layout.task_subject(queue, priority),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait,
        // Workers bound their in-flight work by their free slots; the server must not bound it lower.
        max_ack_pending: -1,
        ..Default::default()
    };
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(&durable, config)
        .await
        .map_err(|error| ProvisionError::new("consumer", &durable, error))?;
    let existing = consumer.cached_info().config.ack_wait;
    if existing != ack_wait {
        tracing::warn!(
            queue = %queue,
            consumer = %durable,
            configured_s = ack_wait.as_secs_f64(),
            existing_s = existing.as_secs_f64(),
            "the consumer exists with another AckWait; in-progress acks follow the existing one"
        );
    }
    Ok(consumer)
}

/// The results bucket: one value per task id (history 1), expiring after `expiry`.
pub(crate) async fn results_bucket(
    js: &jetstream::Context,
    layout: &Layout,
    expiry: Duration,
) -> Result<kv::Store, ProvisionError> {
    kv_bucket(js, &layout.results_bucket(), expiry).await
}

/// The chords bucket: chord definitions and fired markers, expiring like results.
pub(crate) async fn chords_bucket(
    js: &jetstream::Context,
    layout: &Layout,
    expiry: Duration,
) -> Result<kv::Store, ProvisionError> {
    kv_bucket(js, &layout.chords_bucket(), expiry).await
}

/// The revoked bucket: one key per revoked task or canvas id, kept as long as results are.
pub(crate) async fn revoked_bucket(
    js: &jetstream::Context,
    layout: &Layout,
    expiry: Duration,
) -> Result<kv::Store, ProvisionError> {
    kv_bucket(js, &layout.revoked_bucket(), expiry).await
}

/// The hand-backs bucket: how many times a worker handed each queue message back without running
/// it, kept as long as results are (a message waits in its queue no longer than that matters).
pub(crate) async fn handbacks_bucket(
    js: &jetstream::Context,
    layout: &Layout,
    expiry: Duration,
) -> Result<kv::Store, ProvisionError> {
    kv_bucket(js, &layout.handbacks_bucket(), expiry).await
}

/// The leases bucket: one key per chord partition, held by the worker aggregating it. A lease is
/// kept by rewriting it; when its holder dies the key expires after `ttl` and another takes it.
pub(crate) async fn leases_bucket(
    js: &jetstream::Context,
    layout: &Layout,
    ttl: Duration,
) -> Result<kv::Store, ProvisionError> {
    kv_bucket(js, &layout.leases_bucket(), ttl).await
}

/// The settings bucket: runtime settings (rate limits) that outlive workers; never expires.
pub(crate) async fn settings_bucket(
    js: &jetstream::Context,
    layout: &Layout,
) -> Result<kv::Store, ProvisionError> {
    kv_bucket(js, &layout.settings_bucket(), Duration::ZERO).await
}

/// The beat bucket: the scheduler lease and the entries' states; never expires.
pub(crate) async fn beat_bucket(
    js: &jetstream::Context,
    layout: &Layout,
) -> Result<kv::Store, ProvisionError> {
    kv_bucket(js, &layout.beat_bucket(), Duration::ZERO).await
}

/// The rates bucket: the state of cluster-wide rate limits (one theoretical arrival time per
/// task). A key unused for an hour expires, which only forgets a limit that was idle anyway.
pub(crate) async fn rates_bucket(
    js: &jetstream::Context,
    layout: &Layout,
) -> Result<kv::Store, ProvisionError> {
    kv_bucket(js, &layout.rates_bucket(), Duration::from_secs(3600)).await
}

/// A KV bucket with history 1 whose values expire after `max_age`.
///
/// The bucket's backing stream is created directly because `create_key_value` of async-nats 0.51
/// fails against nats-server 2.9 (it expects account fields the old server does not send).
async fn kv_bucket(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
) -> Result<kv::Store, ProvisionError> {
    let stream_name = format!("KV_{bucket}");
    let config = stream::Config {
        name: stream_name,
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        duplicate_window: max_age.min(Duration::from_secs(120)),
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    let stream = js
        .get_or_create_stream(config)
        .await
        .map_err(|error| ProvisionError::new("bucket", bucket, error))?;
    let existing = stream.cached_info().config.max_age;
    if existing != max_age {
        tracing::warn!(
            bucket = %bucket,
            configured_s = max_age.as_secs_f64(),
            existing_s = existing.as_secs_f64(),
            "the bucket exists with another expiry; keeping the existing one"
        );
    }
    js.get_key_value(bucket)
        .await
        .map_err(|error| ProvisionError::new("bucket", bucket, error))
}

/// The delayed-task stream: work-queue retention (a task leaves it when the scheduler has moved it
/// to its queue), file storage, de-duplication on `Nats-Msg-Id`, and the scheduler's consumer.
pub(crate) async fn delayed_stream(
    js: &jetstream::Context,
    layout: &Layout,
) -> Result<consumer::PullConsumer, ProvisionError> {
    let name = layout.delayed_stream();
    let config = stream::Config {
        name: name.clone(),
        subjects: vec![layout.delayed_subjects()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let stream = js
        .get_or_create_stream(config)
        .await
        .map_err(|error| ProvisionError::new("stream", &name, error))?;
    let consumer = consumer::pull::Config {
        durable_name: Some("scheduler".to_owned()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(10),
        max_ack_pending: -1,
        ..Default::default()
    };
    stream
        .get_or_create_consumer("scheduler", consumer)
        .await
        .map_err(|error| ProvisionError::new("consumer", "scheduler", error))
}

/// The chord completion stream: limits retention (completions are purged per chord once its body
/// is sent), file storage, de-duplication of a member's repeated report by `Nats-Msg-Id`.
pub(crate) async fn chord_stream(
    js: &jetstream::Context,
    layout: &Layout,
) -> Result<stream::Stream, ProvisionError> {
    let name = layout.chord_stream();
    let config = stream::Config {
        name: name.clone(),
        subjects: vec![layout.chord_subjects()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|error| ProvisionError::new("stream", &name, error))
}

/// The dead-letter stream: limits retention, file storage, every `<ns>.dlq.*` subject.
pub(crate) async fn dead_letter_stream(
    js: &jetstream::Context,
    layout: &Layout,
) -> Result<stream::Stream, ProvisionError> {
    let name = layout.dead_letter_stream();
    let config = stream::Config {
        name: name.clone(),
        subjects: vec![layout.dead_letter_subjects()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|error| ProvisionError::new("stream", &name, error))
}

/// How long the events stream keeps an event.
pub(crate) const EVENTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// How many bytes of events the events stream keeps, at most (the oldest go first).
pub(crate) const EVENTS_MAX_BYTES: i64 = 256 * 1024 * 1024;

/// The events stream: limits retention bounded by age ([`EVENTS_MAX_AGE`]) and size
/// ([`EVENTS_MAX_BYTES`]), the oldest events discarded first, file storage, every
/// `<ns>.events.>` subject. A stream that exists is opened as it is, so an operator may change
/// its limits (`nats stream edit`).
pub(crate) async fn events_stream(
    js: &jetstream::Context,
    layout: &Layout,
) -> Result<stream::Stream, ProvisionError> {
    let name = layout.events_stream();
    let config = stream::Config {
        name: name.clone(),
        subjects: vec![layout.events_subjects()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: EVENTS_MAX_AGE,
        max_bytes: EVENTS_MAX_BYTES,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|error| ProvisionError::new("stream", &name, error))
}
