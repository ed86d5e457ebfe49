//! The results bucket: reading and writing result records, and watching one task's record; a
//! worker's final records, retried and notified to the producer (`result_store/finals.rs`).
//!
//! Producers write PENDING (create-only, so it never hides a later state), workers write every
//! other state, and anyone reads.
//! Nothing here polls: waiting goes through a KV watch or the client's reply subject.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, kv};
use bytes::Bytes;
use celerity_proto::{ContentType, Envelope, ResultRecord, TaskId, TaskState};
use futures_util::StreamExt;
use serde_json::Value;

use crate::clock::now_ms;
use crate::error_text::error_chain;
use crate::nats::permissions::{Denied, Violation, Watch, key_subject};

mod finals;

/// A result record could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The bucket operation failed (server unreachable, timeout).
    #[error("cannot {operation} the result of task {task_id}")]
    Bucket {
        /// `read`, `write`, `watch` or `forget`.
        operation: &'static str,
        /// The task.
        task_id: TaskId,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server refused the operation for the user's permissions (`-ERR 'Permissions
    /// Violation for Publish to ...'`), reported as soon as the refusal arrives instead of after
    /// the operation's timeout.
    #[error(
        "cannot {operation} the result of task {task_id}: the NATS server refused this user's publish to {subject} (docs/security.md lists the permissions of each role)"
    )]
    PermissionDenied {
        /// `read`, `write`, `watch` or `forget`.
        operation: &'static str,
        /// The task.
        task_id: TaskId,
        /// The subject refused.
        subject: String,
    },
    /// The stored value is not a result record.
    #[error("the stored result of task {task_id} is not a valid record")]
    Corrupt {
        /// The task.
        task_id: TaskId,
        /// The decoder's error.
        #[source]
        source: celerity_proto::DecodeError,
    },
    /// A record could not be encoded.
    #[error("cannot encode the result of task {task_id}")]
    Encode {
        /// The task.
        task_id: TaskId,
        /// The encoder's error.
        #[source]
        source: celerity_proto::EncodeError,
    },
    /// A task tried to set a state only the runtime may set.
    #[error("state {0:?} is reserved: tasks may set custom states only (or STARTED, RECEIVED)")]
    ReservedState(String),
    /// A task body that went on after its run ended (a blocking body past its termination or
    /// hard time limit) tried to set a state.
    #[error(
        "task {task_id} has ended (terminated, or past its hard time limit): its state can no longer change"
    )]
    RunEnded {
        /// The task.
        task_id: TaskId,
    },
}

/// The first pause before a dropped watch of a result is made again; it doubles up to
/// [`WATCH_RETRY_MAX`].
const WATCH_RETRY_FIRST: Duration = Duration::from_millis(100);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(2);

impl StoreError {
    /// True when trying again may succeed: the bucket was out of reach (a server restarting, a
    /// leader being elected), not a refusal or a bad record.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, StoreError::Bucket { .. })
    }

    fn bucket(
        operation: &'static str,
        task_id: &TaskId,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError::Bucket {
            operation,
            task_id: task_id.clone(),
            source: source.into(),
        }
    }

    fn refused(operation: &'static str, task_id: &TaskId, refused: Violation) -> Self {
        StoreError::PermissionDenied {
            operation,
            task_id: task_id.clone(),
            subject: refused.subject,
        }
    }
}

/// Reads and writes result records in the results bucket.
#[derive(Clone)]
pub(crate) struct ResultStore {
    kv: kv::Store,
    /// For the create-only PENDING write, which is a plain JetStream publish (see
    /// [`ResultStore::create_pending`]).
    js: jetstream::Context,
    /// For the reply notifications of final records (`finals.rs`).
    nats: async_nats::Client,
    layout: celerity_proto::Layout,
    worker: Option<Arc<str>>,
    /// Set once the server refused a PENDING write for the user's permissions: the user may not
    /// write the bucket (a producer that must not overwrite results), so no more are tried.
    pending_refused: Arc<AtomicBool>,
}

impl std::fmt::Debug for ResultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultStore")
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl ResultStore {
    pub(crate) fn new(
        kv: kv::Store,
        js: jetstream::Context,
        layout: celerity_proto::Layout,
        worker: Option<Arc<str>>,
    ) -> Self {
        let nats = js.client();
        Self {
            kv,
            js,
            nats,
            layout,
            worker,
            pending_refused: Arc::default(),
        }
    }

    /// The connection the store reads and writes through.
    pub(crate) fn connection(&self) -> &async_nats::Client {
        &self.nats
    }

    /// False once the server refused a PENDING write of this store for the user's permissions:
    /// [`ResultStore::create_pending`] writes nothing from then on.
    pub(crate) fn writes_pending(&self) -> bool {
        !self.pending_refused.load(Ordering::Relaxed)
    }

    /// The subject a write of `key` is published to: `$KV.<bucket>.<key>`.
    fn key_subject(&self, key: &str) -> async_nats::Subject {
        key_subject(&self.kv, key).into()
    }

    /// True for a refused read of `key`: a direct get of its subject, or a message get.
    fn refuses_read(&self, refused: &Violation, key: &str) -> bool {
        let stream = &self.kv.stream_name;
        let subject = &refused.subject;
        refused.denied == Denied::Publish
            && (subject.ends_with(&format!(".DIRECT.GET.{stream}.{}{key}", self.kv.prefix))
                || subject.ends_with(&format!(".DIRECT.GET.{stream}"))
                || subject.ends_with(&format!(".STREAM.MSG.GET.{stream}")))
    }

    /// True for a refused consumer create on the bucket's stream (a watch).
    fn refuses_watch(&self, refused: &Violation) -> bool {
        let create = format!(".CONSUMER.CREATE.{}", self.kv.stream_name);
        refused.denied == Denied::Publish
            && (refused.subject.ends_with(&create)
                || refused.subject.contains(&format!("{create}.")))
    }

    /// Decodes a stored value, telling JSON from MessagePack by its first byte.
    pub(crate) fn decode(task_id: &TaskId, bytes: &[u8]) -> Result<ResultRecord, StoreError> {
        let content_type = ContentType::sniff(bytes).unwrap_or(ContentType::Json);
        content_type
            .decode(bytes)
            .map_err(|source| StoreError::Corrupt {
                task_id: task_id.clone(),
                source,
            })
    }

    /// The record of `task_id`, or `None` when there is none (never sent, expired or forgotten).
    pub(crate) async fn get(&self, task_id: &TaskId) -> Result<Option<ResultRecord>, StoreError> {
        let key = task_id.as_str();
        let value = Watch::start(&self.nats)
            .guard(self.kv.get(key), |refused| self.refuses_read(refused, key))
            .await
            .map_err(|refused| StoreError::refused("read", task_id, refused))?
            .map_err(|error| StoreError::bucket("read", task_id, error))?;
        value.map(|bytes| Self::decode(task_id, &bytes)).transpose()
    }

    /// Like [`get`](Self::get), but a bucket out of reach (a server restarting, a leader being
    /// elected) is read again with a growing pause, for up to `within`; the last error is kept.
    pub(crate) async fn get_patiently(
        &self,
        task_id: &TaskId,
        within: Duration,
    ) -> Result<Option<ResultRecord>, StoreError> {
        let deadline = tokio::time::Instant::now() + within;
        let mut pause = WATCH_RETRY_FIRST;
        loop {
            match self.get(task_id).await {
                Err(error)
                    if error.is_transient() && tokio::time::Instant::now() + pause < deadline =>
                {
                    tracing::debug!(%task_id, ?pause, error = %error_chain(&error), "reading a result again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(WATCH_RETRY_MAX);
                }
                read => return read,
            }
        }
    }

    /// A record for `envelope`'s task, stamped with this worker and the current time.
    pub(crate) fn record(&self, envelope: &Envelope, state: TaskState) -> ResultRecord {
        let mut record = ResultRecord::new(envelope.id.clone(), state, now_ms());
        record.task = Some(envelope.task.clone());
        record.retries = envelope.retries;
        record.worker = self.worker.as_deref().map(str::to_owned);
        record.trace_id = crate::telemetry::current_trace_id();
        record
    }

    /// Encodes a record in the task's content type.
    pub(crate) fn encode(
        record: &ResultRecord,
        content_type: ContentType,
    ) -> Result<Bytes, StoreError> {
        content_type
            .encode(record)
            .map(Bytes::from)
            .map_err(|source| StoreError::Encode {
                task_id: record.id.clone(),
                source,
            })
    }

    /// Writes an encoded record.
    pub(crate) async fn put_encoded(
        &self,
        task_id: &TaskId,
        bytes: Bytes,
    ) -> Result<(), StoreError> {
        let subject = self.key_subject(task_id.as_str());
        Watch::start(&self.nats)
            .guard(self.kv.put(task_id.as_str(), bytes), |refused| {
                refused.is_publish_to(&subject)
            })
            .await
            .map_err(|refused| StoreError::refused("write", task_id, refused))?
            .map(drop)
            .map_err(|error| StoreError::bucket("write", task_id, error))
    }

    /// Writes PENDING only if the task has no record yet, so a worker that was faster than the
    /// producer is never overwritten.
    ///
    /// A user the server does not let write the bucket gets [`StoreError::PermissionDenied`] at
    /// once, the first time; from then on nothing is written (PENDING is optional, and a producer
    /// that may not write results is a deployment's choice, `docs/security.md`), and `Ok`.
    pub(crate) async fn create_pending(&self, envelope: &Envelope) -> Result<(), StoreError> {
        if !self.writes_pending() {
            return Ok(());
        }
        let mut record = ResultRecord::new(envelope.id.clone(), TaskState::Pending, now_ms());
        record.task = Some(envelope.task.clone());
        record.trace_id = crate::telemetry::current_trace_id();
        let bytes = Self::encode(&record, envelope.content_type)?;
        // `kv::Store::create`, without its read-back on conflict in the common path: one publish
        // expecting no earlier record for the key. This runs once per task sent, and its future
        // is part of every `delay()`'s.
        let key = envelope.id.as_str();
        let subject = self.key_subject(key);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            async_nats::HeaderValue::from(0_u64),
        );
        let refusals = Watch::start(&self.nats);
        let acked = match self
            .js
            .publish_with_headers(subject.clone(), headers, bytes.clone())
            .await
        {
            Ok(ack) => refusals
                .guard(ack, |refused| refused.is_publish_to(&subject))
                .await
                .map_err(|refused| self.pending_refused(envelope, refused))?,
            Err(error) => Err(error),
        };
        match acked {
            Ok(_) => Ok(()),
            // A record exists: a faster worker's, or a deleted or purged one (`forget()` before
            // a resend of the same id), which `create` replaces.
            Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                match Box::pin(self.kv.create(key, bytes)).await {
                    Ok(_) => Ok(()),
                    Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
                    Err(error) => Err(StoreError::bucket("write", &envelope.id, error)),
                }
            }
            Err(error) => Err(StoreError::bucket("write", &envelope.id, error)),
        }
    }

    /// Remembers that the server refused PENDING writes to this user, says so once, and makes the
    /// error of this one.
    fn pending_refused(&self, envelope: &Envelope, refused: Violation) -> StoreError {
        if !self.pending_refused.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                subject = %refused.subject,
                "this NATS user may not write the results bucket, so its tasks get no PENDING record: they read UNKNOWN until a worker takes them; PENDING is no longer tried (allow publish to $KV.<ns>_results.> to write it, or leave it refused so this user cannot overwrite results)"
            );
        }
        StoreError::refused("write", &envelope.id, refused)
    }

    /// Writes a progress state (custom, STARTED or RECEIVED) with metadata.
    pub(crate) async fn write_progress(
        &self,
        envelope: &Envelope,
        state: TaskState,
        meta: Value,
    ) -> Result<(), StoreError> {
        let record = self.record(envelope, state).with_meta(meta);
        let bytes = Self::encode(&record, envelope.content_type)?;
        self.put_encoded(&envelope.id, bytes).await
    }

    /// Removes the record and its history.
    pub(crate) async fn purge(&self, task_id: &TaskId) -> Result<(), StoreError> {
        let subject = self.key_subject(task_id.as_str());
        Watch::start(&self.nats)
            .guard(self.kv.purge(task_id.as_str()), |refused| {
                refused.is_publish_to(&subject)
            })
            .await
            .map_err(|refused| StoreError::refused("forget", task_id, refused))?
            .map_err(|error| StoreError::bucket("forget", task_id, error))
    }

    /// Waits, through a KV watch of this one key, for a record that satisfies `done`, starting
    /// from the current value. A watch the server drops (restarted, a cluster electing a new
    /// leader of the bucket) is made again, from the current value, until the caller's timeout:
    /// only a refusal or a corrupt record ends the wait early.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future drops the watch.
    pub(crate) async fn watch_until(
        &self,
        task_id: &TaskId,
        done: impl Fn(&ResultRecord) -> bool,
    ) -> Result<ResultRecord, StoreError> {
        let mut pause = WATCH_RETRY_FIRST;
        loop {
            match self.watch(task_id).await {
                Ok(records) => {
                    let mut records = std::pin::pin!(records);
                    while let Some(record) = records.next().await {
                        match record {
                            Ok(record) if done(&record) => return Ok(record),
                            Ok(_) => pause = WATCH_RETRY_FIRST,
                            Err(error) if error.is_transient() => break,
                            Err(error) => return Err(error),
                        }
                    }
                }
                Err(error) if error.is_transient() => {}
                Err(error) => return Err(error),
            }
            tracing::debug!(%task_id, ?pause, "the watch of a result ended; watching again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(WATCH_RETRY_MAX);
        }
    }

    /// Every record of `task_id` as it is written, from the current one on, through a KV watch of
    /// this one key (deletions and purges are skipped).
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the stream drops the watch.
    pub(crate) async fn watch(
        &self,
        task_id: &TaskId,
    ) -> Result<
        impl futures_util::Stream<Item = Result<ResultRecord, StoreError>> + Send + use<>,
        StoreError,
    > {
        let watch = Watch::start(&self.nats)
            .guard(self.kv.watch_with_history(task_id.as_str()), |refused| {
                self.refuses_watch(refused)
            })
            .await
            .map_err(|refused| StoreError::refused("watch", task_id, refused))?
            .map_err(|error| StoreError::bucket("watch", task_id, error))?;
        let task_id = task_id.clone();
        Ok(watch.filter_map(move |entry| {
            let record = match entry {
                Ok(entry) if entry.operation != kv::Operation::Put => None,
                Ok(entry) => Some(Self::decode(&task_id, &entry.value)),
                Err(error) => Some(Err(StoreError::bucket("watch", &task_id, error))),
            };
            std::future::ready(record)
        }))
    }
}
