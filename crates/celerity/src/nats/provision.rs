//! Streams, consumers and buckets, created from one place so their settings match
//! `docs/protocol.md`.
//!
//! Every function is idempotent: it creates what is missing and opens what exists.
//! A server older than 2.10 ignores configuration fields it does not know, so where a setting matters
//! the configuration the server echoes back is checked.

use std::time::Duration;

use crate::nats::server::NewTaskSignal;
use crate::storage::{SMALL_BUCKET_MAX_BYTES, Storage, stream_bytes};
use async_nats::jetstream::{self, consumer, kv, stream};
use celerity_proto::{Layout, Priority, QueueName};

/// A stream, consumer or bucket could not be created or opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot provision {what} {name}{}", .refusal.map(|refusal| refusal.advice()).unwrap_or_default())]
pub struct ProvisionError {
    /// What kind of object (`stream`, `consumer`, `bucket`).
    pub what: &'static str,
    /// Its name.
    pub name: String,
    /// What the server refused, when it refused the settings rather than failed to answer.
    pub refusal: Option<Refusal>,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// Why a server refused to create a stream or bucket with the settings asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The server is not part of a cluster and keeps one copy only.
    NotClustered {
        /// The replicas asked for.
        replicas: usize,
    },
    /// The cluster has too few JetStream servers up (or with the placement tags) for the
    /// replicas; it may place them once more servers are up.
    CannotPlace {
        /// The replicas asked for.
        replicas: usize,
    },
    /// The server cannot reserve the size limit in its `max_file_store`.
    NoStorage {
        /// The limit asked for, in bytes.
        max_bytes: u64,
    },
}

impl Refusal {
    /// What to do about it, as the tail of the error's message.
    fn advice(self) -> String {
        match self {
            Refusal::NotClustered { replicas } => format!(
                ": the server is not clustered and cannot keep {replicas} replicas; use --replicas 1 (Storage::replicas), or run a cluster of at least {replicas} JetStream servers"
            ),
            Refusal::CannotPlace { replicas } => format!(
                ": the cluster cannot place {replicas} replicas (fewer JetStream servers up, or carrying the placement tags, than replicas); start more servers or lower --replicas"
            ),
            Refusal::NoStorage { max_bytes } => format!(
                ": the server cannot reserve its size limit of {max_bytes} bytes in its max_file_store; lower the limit (the --*-max-bytes flags, Storage) or raise the server's jetstream max_file_store"
            ),
        }
    }

    /// True when trying again cannot succeed without another setting or server config.
    pub fn is_permanent(self) -> bool {
        !matches!(self, Refusal::CannotPlace { .. })
    }
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
            refusal: None,
            source: source.into(),
        }
    }

    /// A stream (or a bucket's stream) the server did not create, with what it refused.
    fn create(
        what: &'static str,
        name: &str,
        storage: &Storage,
        max_bytes: u64,
        error: async_nats::jetstream::context::CreateStreamError,
    ) -> Self {
        let refusal = match error.kind() {
            stream_error::JetStream(error) => match error.error_code() {
                code if code == NOT_CLUSTERED => Some(Refusal::NotClustered {
                    replicas: storage.replicas,
                }),
                ErrorCode::CLUSTER_NO_PEERS
                | ErrorCode::INSUFFICIENT_RESOURCES
                | ErrorCode::CLUSTER_TAGS => Some(Refusal::CannotPlace {
                    replicas: storage.replicas,
                }),
                code if code == STORAGE_UNAVAILABLE => Some(Refusal::NoStorage { max_bytes }),
                _ => None,
            },
            _ => None,
        };
        Self {
            refusal,
            ..Self::new(what, name, error)
        }
    }

    /// True when trying again cannot succeed: the server refused the settings themselves.
    pub fn is_permanent(&self) -> bool {
        self.refusal.is_some_and(Refusal::is_permanent)
    }
}

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::CreateStreamErrorKind as stream_error;

/// `replicas > 1 not supported in non-clustered mode`.
const NOT_CLUSTERED: ErrorCode = ErrorCode(10074);

/// `insufficient storage resources available`: the limit does not fit in `max_file_store`.
const STORAGE_UNAVAILABLE: ErrorCode = ErrorCode(10047);

/// A stream configuration with the deployment's replicas, placement and `max_bytes`.
fn stored(config: stream::Config, storage: &Storage, max_bytes: u64) -> stream::Config {
    stream::Config {
        num_replicas: storage.replicas,
        placement: (!storage.placement_tags.is_empty()).then(|| stream::Placement {
            cluster: None,
            tags: storage.placement_tags.clone(),
        }),
        max_bytes: stream_bytes(max_bytes),
        ..config
    }
}

/// Creates or opens the stream of `config`, with the deployment's storage settings, and warns
/// when one that exists was made with other replicas or another size limit.
async fn stream_with(
    js: &jetstream::Context,
    what: &'static str,
    config: stream::Config,
    storage: &Storage,
    max_bytes: u64,
) -> Result<stream::Stream, ProvisionError> {
    let name = config.name.clone();
    let stream = js
        .get_or_create_stream(stored(config, storage, max_bytes))
        .await
        .map_err(|error| ProvisionError::create(what, &name, storage, max_bytes, error))?;
    let existing = &stream.cached_info().config;
    if existing.num_replicas.max(1) != storage.replicas
        || existing.max_bytes != stream_bytes(max_bytes)
    {
        tracing::warn!(
            stream = %name,
            replicas = existing.num_replicas,
            configured_replicas = storage.replicas,
            max_bytes = existing.max_bytes,
            configured_max_bytes = max_bytes,
            "the stream exists with other storage settings; keeping them (change them with `nats stream edit`)"
        );
    }
    Ok(stream)
}

/// The stream of a queue: work-queue retention (a task is removed once acknowledged), file storage,
/// de-duplication on `Nats-Msg-Id` for two minutes, and, on a server where workers learn of new
/// tasks from doorbells (before 2.10.16, see [`NewTaskSignal`]), a headers-only republish of every
/// stored task to the queue's doorbell subjects. Its size is limited to
/// [`Storage::queue_max_bytes`], and a full queue refuses new tasks (discard new), so nothing
/// queued is dropped. On a later server workers send max-bytes probes,
/// which cost the server nothing per task, and the stream does not republish (a republished
/// doorbell cost the server more than the task's own store). A stream that exists is opened as
/// it is: one made on an earlier server keeps its republish, which costs time but is harmless.
pub(crate) async fn queue_stream(
    js: &jetstream::Context,
    layout: &Layout,
    storage: &Storage,
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
        discard: stream::DiscardPolicy::New,
        duplicate_window: Duration::from_secs(120),
        republish: (signal == NewTaskSignal::Republish).then(|| stream::Republish {
            source: layout.queue_wildcard(queue),
            destination: layout.doorbell_subject_pattern(queue),
            headers_only: true,
        }),
        ..Default::default()
    };
    let mut stream = stream_with(js, "stream", config, storage, storage.queue_max_bytes).await?;
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
    storage: &Storage,
    expiry: Duration,
) -> Result<kv::Store, ProvisionError> {
    let limits = Limits::new(expiry, storage.results_max_bytes);
    kv_bucket(js, &layout.results_bucket(), storage, limits).await
}

/// The chords bucket: chord definitions and fired markers, expiring like results.
pub(crate) async fn chords_bucket(
    js: &jetstream::Context,
    layout: &Layout,
    storage: &Storage,
    expiry: Duration,
) -> Result<kv::Store, ProvisionError> {
    let limits = Limits::new(expiry, storage.results_max_bytes);
    kv_bucket(js, &layout.chords_bucket(), storage, limits).await
}

/// The revoked bucket: one key per revoked task or canvas id, kept as long as results are.
pub(crate) async fn revoked_bucket(
    js: &jetstream::Context,
    layout: &Layout,
    storage: &Storage,
    expiry: Duration,
) -> Result<kv::Store, ProvisionError> {
    kv_bucket(js, &layout.revoked_bucket(), storage, Limits::small(expiry)).await
}

/// The hand-backs bucket: how many times a worker handed each queue message back without running
/// it, kept as long as results are (a message waits in its queue no longer than that matters).
pub(crate) async fn handbacks_bucket(
    js: &jetstream::Context,
    layout: &Layout,
    storage: &Storage,
    expiry: Duration,
) -> Result<kv::Store, ProvisionError> {
    kv_bucket(
        js,
        &layout.handbacks_bucket(),
        storage,
        Limits::small(expiry),
    )
    .await
}

/// The leases bucket: one key per chord partition, held by the worker aggregating it. A lease is
/// kept by rewriting it; when its holder dies the key expires after `ttl` and another takes it.
pub(crate) async fn leases_bucket(
    js: &jetstream::Context,
    layout: &Layout,
    storage: &Storage,
    ttl: Duration,
) -> Result<kv::Store, ProvisionError> {
    kv_bucket(js, &layout.leases_bucket(), storage, Limits::small(ttl)).await
}

/// The settings bucket: runtime settings (rate limits) that outlive workers; never expires.
pub(crate) async fn settings_bucket(
    js: &jetstream::Context,
    layout: &Layout,
    storage: &Storage,
) -> Result<kv::Store, ProvisionError> {
    kv_bucket(
        js,
        &layout.settings_bucket(),
        storage,
        Limits::small(Duration::ZERO),
    )
    .await
}

/// The beat bucket: the scheduler lease and the entries' states; never expires.
pub(crate) async fn beat_bucket(
    js: &jetstream::Context,
    layout: &Layout,
    storage: &Storage,
) -> Result<kv::Store, ProvisionError> {
    kv_bucket(
        js,
        &layout.beat_bucket(),
        storage,
        Limits::small(Duration::ZERO),
    )
    .await
}

/// The rates bucket: the state of cluster-wide rate limits (one theoretical arrival time per
/// task). A key unused for an hour expires, which only forgets a limit that was idle anyway.
pub(crate) async fn rates_bucket(
    js: &jetstream::Context,
    layout: &Layout,
    storage: &Storage,
) -> Result<kv::Store, ProvisionError> {
    kv_bucket(
        js,
        &layout.rates_bucket(),
        storage,
        Limits::small(Duration::from_secs(3600)),
    )
    .await
}

/// How long the values of a bucket live and how many bytes it holds at most.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_age: Duration,
    max_bytes: u64,
}

impl Limits {
    fn new(max_age: Duration, max_bytes: u64) -> Self {
        Self { max_age, max_bytes }
    }

    /// The limits of a bucket of small values with no size setting of its own.
    fn small(max_age: Duration) -> Self {
        Self::new(max_age, SMALL_BUCKET_MAX_BYTES)
    }
}

/// A KV bucket with history 1 whose values expire after `limits.max_age` and which refuses new
/// values beyond `limits.max_bytes` (discard new, as every KV bucket).
///
/// The bucket's backing stream is created directly because `create_key_value` of async-nats 0.51
/// fails against nats-server 2.9 (it expects account fields the old server does not send).
async fn kv_bucket(
    js: &jetstream::Context,
    bucket: &str,
    storage: &Storage,
    limits: Limits,
) -> Result<kv::Store, ProvisionError> {
    let Limits { max_age, max_bytes } = limits;
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
    let stream = stream_with(js, "bucket", config, storage, max_bytes).await?;
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
/// to its queue), file storage, de-duplication on `Nats-Msg-Id`, at most
/// [`Storage::delayed_max_bytes`] (a full stream refuses new tasks), and the scheduler's consumer.
pub(crate) async fn delayed_stream(
    js: &jetstream::Context,
    layout: &Layout,
    storage: &Storage,
) -> Result<consumer::PullConsumer, ProvisionError> {
    let name = layout.delayed_stream();
    let config = stream::Config {
        name: name.clone(),
        subjects: vec![layout.delayed_subjects()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let stream = stream_with(js, "stream", config, storage, storage.delayed_max_bytes).await?;
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
/// is sent), file storage, de-duplication of a member's repeated report by `Nats-Msg-Id`, kept
/// as long as results (`expiry`: the completions of a chord whose definition has expired have
/// no use) and at most [`Storage::chord_max_bytes`]; a full stream refuses new completions, whose
/// members then stay in their queues until there is room.
pub(crate) async fn chord_stream(
    js: &jetstream::Context,
    layout: &Layout,
    storage: &Storage,
    expiry: Duration,
) -> Result<stream::Stream, ProvisionError> {
    let config = stream::Config {
        name: layout.chord_stream(),
        subjects: vec![layout.chord_subjects()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        max_age: expiry,
        duplicate_window: expiry.min(Duration::from_secs(120)),
        ..Default::default()
    };
    stream_with(js, "stream", config, storage, storage.chord_max_bytes).await
}

/// The dead-letter stream: limits retention, file storage, every `<ns>.dlq.*` subject, letters
/// kept [`Storage::dead_letter_max_age`] and at most [`Storage::dead_letter_max_bytes`], the
/// oldest dropped first (a flood of bad messages must not stop the letters of new ones).
pub(crate) async fn dead_letter_stream(
    js: &jetstream::Context,
    layout: &Layout,
    storage: &Storage,
) -> Result<stream::Stream, ProvisionError> {
    let config = stream::Config {
        name: layout.dead_letter_stream(),
        subjects: vec![layout.dead_letter_subjects()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        max_age: storage.dead_letter_max_age,
        ..Default::default()
    };
    stream_with(js, "stream", config, storage, storage.dead_letter_max_bytes).await
}

/// How long the events stream keeps an event.
pub(crate) const EVENTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// How many bytes of events the events stream keeps, at most (the oldest go first).
pub(crate) const EVENTS_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// The events stream: limits retention bounded by age ([`EVENTS_MAX_AGE`]) and size
/// ([`EVENTS_MAX_BYTES`]), the oldest events discarded first, file storage, every
/// `<ns>.events.>` subject. A stream that exists is opened as it is, so an operator may change
/// its limits (`nats stream edit`).
pub(crate) async fn events_stream(
    js: &jetstream::Context,
    layout: &Layout,
    storage: &Storage,
) -> Result<stream::Stream, ProvisionError> {
    let config = stream::Config {
        name: layout.events_stream(),
        subjects: vec![layout.events_subjects()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: EVENTS_MAX_AGE,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    };
    stream_with(js, "stream", config, storage, EVENTS_MAX_BYTES).await
}
