//! The results bucket: reading and writing result records, and watching one task's record; a
//! worker's final records, retried and notified to the producer (`result_store/finals.rs`).
//!
//! Producers write PENDING (create-only, so it never hides a later state), workers write every
//! other state, and anyone reads.
//! Nothing here polls: waiting goes through a KV watch or the client's reply subject.

use std::sync::Arc;

use async_nats::jetstream::{self, context::PublishErrorKind, kv};
use bytes::Bytes;
use celerity_proto::{ContentType, Envelope, ResultRecord, TaskId, TaskState};
use futures_util::StreamExt;
use serde_json::Value;

use crate::clock::now_ms;

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

impl StoreError {
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
        }
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
        let value = self
            .kv
            .get(task_id.as_str())
            .await
            .map_err(|error| StoreError::bucket("read", task_id, error))?;
        value.map(|bytes| Self::decode(task_id, &bytes)).transpose()
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
        self.kv
            .put(task_id.as_str(), bytes)
            .await
            .map(drop)
            .map_err(|error| StoreError::bucket("write", task_id, error))
    }

    /// Writes PENDING only if the task has no record yet, so a worker that was faster than the
    /// producer is never overwritten.
    pub(crate) async fn create_pending(&self, envelope: &Envelope) -> Result<(), StoreError> {
        let mut record = ResultRecord::new(envelope.id.clone(), TaskState::Pending, now_ms());
        record.task = Some(envelope.task.clone());
        record.trace_id = crate::telemetry::current_trace_id();
        let bytes = Self::encode(&record, envelope.content_type)?;
        // `kv::Store::create`, without its read-back on conflict in the common path: one publish
        // expecting no earlier record for the key. This runs once per task sent, and its future
        // is part of every `delay()`'s.
        let key = envelope.id.as_str();
        let prefix = self.kv.put_prefix.as_deref().unwrap_or(&self.kv.prefix);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            async_nats::HeaderValue::from(0_u64),
        );
        let acked = match self
            .js
            .publish_with_headers(format!("{prefix}{key}"), headers, bytes.clone())
            .await
        {
            Ok(ack) => ack.await,
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
        self.kv
            .purge(task_id.as_str())
            .await
            .map_err(|error| StoreError::bucket("forget", task_id, error))
    }

    /// Waits, through a KV watch of this one key, for a record that satisfies `done`, starting
    /// from the current value.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future drops the watch.
    pub(crate) async fn watch_until(
        &self,
        task_id: &TaskId,
        done: impl Fn(&ResultRecord) -> bool,
    ) -> Result<ResultRecord, StoreError> {
        let mut records = std::pin::pin!(self.watch(task_id).await?);
        while let Some(record) = records.next().await {
            let record = record?;
            if done(&record) {
                return Ok(record);
            }
        }
        Err(StoreError::bucket(
            "watch",
            task_id,
            "the watch ended before the task finished",
        ))
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
        let watch = self
            .kv
            .watch_with_history(task_id.as_str())
            .await
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
