//! Dead letters as a library: list, read, requeue, delete and purge the messages the workers put in
//! the dead-letter stream (`<NS>_DLQ`, `docs/protocol.md` section 7).
//!
//! This is the operator's side of dead-lettering, for tools and dashboards; the worker's side (how
//! a letter is made) is `worker::dead_letter`. Nothing here runs in a worker or on a task's path.
//!
//! ```no_run
//! # async fn demo(client: celerity::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use celerity::dead_letters::{LetterFilter, Page};
//! let dead_letters = client.dead_letters();
//! let page = dead_letters
//!     .list(&LetterFilter::all().reason("unknown_task"), Page::first(20))
//!     .await?;
//! for letter in &page.letters {
//!     println!("{} {} {:?}: {}", letter.seq, letter.queue, letter.task, letter.reason);
//!     let task_id = dead_letters.requeue(letter.seq).await?;
//!     println!("requeued {task_id}");
//! }
//! # Ok(()) }
//! ```

mod error;
mod letter;

use std::error::Error as StdError;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::StreamMessage, stream};
use celerity_proto::{Layout, TaskId, dlq_header, header};
use futures_util::TryStreamExt;

pub use celerity_proto::{DeadLetter, DeadLetterReason};
pub use error::DeadLetterError;
pub use letter::{Letter, LetterFilter, LetterPage, Page};

/// The dead letters of one namespace (from [`crate::Client::dead_letters`], or
/// [`DeadLetters::new`] on a connection of the caller's).
///
/// Every call is a few JetStream API requests, each with the connection's request timeout; none
/// creates a stream (a namespace whose workers never started has no dead-letter stream: its list
/// is empty and its letters are not found).
#[derive(Debug, Clone)]
pub struct DeadLetters {
    js: jetstream::Context,
    layout: Layout,
}

impl DeadLetters {
    /// The dead letters of the namespace `layout` spells, read and written through `nats`.
    pub fn new(nats: async_nats::Client, layout: Layout) -> Self {
        Self {
            js: jetstream::new(nats),
            layout,
        }
    }

    /// A page of the letters `filter` selects, newest first.
    ///
    /// The total comes from the stream's state (per subject with a queue filter); the letters are
    /// read one message get by sequence at a time, from the newest: a page costs one get per
    /// letter on it and per letter skipped before it (the offset, letters the filter does not
    /// select, and one more to know whether a next page exists), plus one per deleted sequence
    /// passed over. Deep pages of a large stream are therefore slow; filter by queue to keep them
    /// short.
    ///
    /// ```no_run
    /// # async fn demo(client: celerity::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use celerity::dead_letters::{LetterFilter, Page};
    /// let filter = LetterFilter::all().queue(celerity_proto::QueueName::new("email")?);
    /// let page = client.dead_letters().list(&filter, Page::first(10)).await?;
    /// println!("{} of {} letters", page.letters.len(), page.total);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`DeadLetterError::Stream`] when the stream cannot be read.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn list(
        &self,
        filter: &LetterFilter,
        page: Page,
    ) -> Result<LetterPage, DeadLetterError> {
        let mut letters = Vec::new();
        let Some(stream) = self.stream().await? else {
            return Ok(LetterPage {
                letters,
                total: 0,
                next_offset: None,
            });
        };
        let total = self.total(&stream, filter).await?;
        let state = &stream.cached_info().state;
        let (mut skipped, mut next_offset) = (0, None);
        let mut seq = state.last_sequence;
        while seq >= state.first_sequence.max(1) {
            if let Some(message) = self.read(&stream, seq).await?
                && filter.selects(&self.layout, &message)
            {
                if skipped < page.offset() {
                    skipped += 1;
                } else if letters.len() < page.limit() {
                    letters.push(Letter::of(&self.layout, message));
                } else {
                    next_offset = Some(page.offset() + page.limit() as u64);
                    break;
                }
            }
            seq -= 1;
        }
        Ok(LetterPage {
            letters,
            total,
            next_offset,
        })
    }

    /// The letter at `seq`.
    ///
    /// ```no_run
    /// # async fn demo(client: celerity::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let letter = client.dead_letters().get(7).await?;
    /// println!("{:?} failed: {:?}", letter.task, letter.dead_letter.map(|letter| letter.error));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`DeadLetterError::NotFound`] when no letter has it, [`DeadLetterError::Stream`] when the
    /// stream cannot be read.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn get(&self, seq: u64) -> Result<Letter, DeadLetterError> {
        let stream = self.stream().await?.ok_or_else(|| self.not_found(seq))?;
        let message = self
            .read(&stream, seq)
            .await?
            .ok_or_else(|| self.not_found(seq))?;
        Ok(Letter::of(&self.layout, message))
    }

    /// Publishes the letter at `seq` back to the subject it was dead-lettered from and, once the
    /// queue stream has stored it, deletes the letter; returns its task id.
    ///
    /// The message keeps its body and headers, task id included (so a chain or chord it belongs
    /// to continues when it succeeds), without the `Celerity-Dlq-*` headers
    /// ([`DeadLetter::requeued_header`]: the server's headers of the original publish are not
    /// restored either) and with `Nats-Msg-Id: <task id>-requeue-<seq>`
    /// ([`DeadLetter::requeue_message_id`]). The original's `Nats-Msg-Id` (its task id) would be
    /// dropped as a duplicate by the queue stream within two minutes of its first publish.
    ///
    /// The task's record, FAILURE since it was dead-lettered, is left as it is until the task runs
    /// again and writes its new one; the message carries `Celerity-Requeued: <seq>`, so a worker
    /// does not take that FAILURE as the end of this message on any delivery.
    ///
    /// ```no_run
    /// # async fn demo(client: celerity::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let task_id = client.dead_letters().requeue(7).await?;
    /// let result = client.async_result::<i64>(task_id.as_str())?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`DeadLetterError::NotFound`], [`DeadLetterError::BodyDropped`],
    /// [`DeadLetterError::NoTaskId`] and [`DeadLetterError::NotRequeueable`] before anything is
    /// sent; [`DeadLetterError::Publish`] when the queue stream did not store it (the letter is
    /// kept); [`DeadLetterError::RequeuedNotDeleted`] when it was requeued and the letter is still
    /// stored.
    ///
    /// # Cancel safety
    /// Not cancel safe, nor crash safe: stopped after the publish and before the delete, the
    /// letter stays while its task is queued again, and a second requeue sends it again (stored
    /// once within the queue stream's two-minute window, since it has the same `Nats-Msg-Id`;
    /// twice after it, and then the task runs twice).
    pub async fn requeue(&self, seq: u64) -> Result<TaskId, DeadLetterError> {
        let letter = self.get(seq).await?;
        if let Some(size) = letter.body_dropped {
            return Err(DeadLetterError::BodyDropped { seq, size });
        }
        let task_id = letter
            .task_id
            .as_deref()
            .and_then(|id| TaskId::new(id).ok())
            .ok_or(DeadLetterError::NoTaskId { seq })?;
        let subject = self.original_subject(&letter)?;
        let mut headers = HeaderMap::new();
        for (name, value) in &letter.headers {
            if DeadLetter::requeued_header(name) {
                headers.append(name.as_str(), value.as_str());
            }
        }
        let message_id = DeadLetter::requeue_message_id(&task_id, seq);
        headers.insert(header::NATS_MSG_ID, message_id.as_str());
        headers.insert(header::REQUEUED, seq.to_string().as_str());
        let published = async {
            self.js
                .publish_with_headers(subject.clone(), headers, letter.body)
                .await?
                .await
        };
        // A duplicate is a requeue stored before (stopped ahead of its delete): done as well.
        published.await.map_err(|source| DeadLetterError::Publish {
            seq,
            subject,
            source,
        })?;
        match self.delete(seq).await {
            Ok(()) | Err(DeadLetterError::NotFound { .. }) => Ok(task_id),
            Err(error) => Err(DeadLetterError::RequeuedNotDeleted {
                seq,
                task_id,
                source: Box::new(error),
            }),
        }
    }

    /// Deletes the letter at `seq`.
    ///
    /// ```no_run
    /// # async fn demo(client: celerity::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// client.dead_letters().delete(7).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`DeadLetterError::NotFound`] when no letter has it, [`DeadLetterError::Stream`] when the
    /// server refused.
    ///
    /// # Cancel safety
    /// Dropped, it has deleted the letter or not.
    pub async fn delete(&self, seq: u64) -> Result<(), DeadLetterError> {
        let stream = self.stream().await?.ok_or_else(|| self.not_found(seq))?;
        match stream.delete_message(seq).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.not_found(seq)),
            // The server's answer for a sequence it does not hold varies across versions (10037,
            // 10057): a read tells.
            Err(error) => match error.kind() {
                stream::DeleteMessageErrorKind::JetStream(_)
                    if self.read(&stream, seq).await?.is_none() =>
                {
                    Err(self.not_found(seq))
                }
                _ => Err(self.stream_error("delete a letter of", error)),
            },
        }
    }

    /// Deletes every letter of the filter's queue (a stream purge of its subject), or every letter
    /// without one; returns how many were deleted.
    ///
    /// ```no_run
    /// # async fn demo(client: celerity::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use celerity::dead_letters::LetterFilter;
    /// let queue = celerity_proto::QueueName::new("email")?;
    /// let purged = client.dead_letters().purge(&LetterFilter::all().queue(queue)).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`DeadLetterError::PurgeByReason`] for a filter with a reason (nothing is deleted),
    /// [`DeadLetterError::Stream`] when the server refused.
    ///
    /// # Cancel safety
    /// Dropped, it has purged or not.
    pub async fn purge(&self, filter: &LetterFilter) -> Result<u64, DeadLetterError> {
        if let Some(reason) = &filter.reason {
            let reason = reason.clone();
            return Err(DeadLetterError::PurgeByReason { reason });
        }
        let Some(stream) = self.stream().await? else {
            return Ok(0);
        };
        let purged = match &filter.queue {
            Some(queue) => {
                let subject = self.layout.dead_letter_subject(queue);
                stream.purge().filter(subject).await
            }
            None => stream.purge().await,
        };
        purged
            .map(|response| response.purged)
            .map_err(|error| self.stream_error("purge", error))
    }

    /// The dead-letter stream with its current info, or `None` when it does not exist.
    async fn stream(&self) -> Result<Option<stream::Stream>, DeadLetterError> {
        match self.js.get_stream(self.layout.dead_letter_stream()).await {
            Ok(stream) => Ok(Some(stream)),
            Err(error) => match error.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(inner)
                    if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(None)
                }
                _ => Err(self.stream_error("read", error)),
            },
        }
    }

    /// How many letters the filter's queue holds (all letters without one).
    async fn total(
        &self,
        stream: &stream::Stream,
        filter: &LetterFilter,
    ) -> Result<u64, DeadLetterError> {
        let Some(queue) = &filter.queue else {
            return Ok(stream.cached_info().state.messages);
        };
        let subject = self.layout.dead_letter_subject(queue);
        let mut subjects = stream
            .info_with_subjects(&subject)
            .await
            .map_err(|error| self.stream_error("read", error))?;
        let mut total = 0;
        while let Some((_, count)) = subjects
            .try_next()
            .await
            .map_err(|error| self.stream_error("read", error))?
        {
            total += count as u64;
        }
        Ok(total)
    }

    /// The message at `seq`, or `None` when there is none (deleted, or out of range).
    async fn read(
        &self,
        stream: &stream::Stream,
        seq: u64,
    ) -> Result<Option<StreamMessage>, DeadLetterError> {
        match stream.get_raw_message(seq).await {
            Ok(message) => Ok(Some(message)),
            Err(error) if error.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(self.stream_error("read", error)),
        }
    }

    /// Where a requeue of `letter` goes: its `Celerity-Dlq-Subject`, when that is a queue or
    /// delayed subject of this namespace (never another subject a letter's header names).
    fn original_subject(&self, letter: &Letter) -> Result<String, DeadLetterError> {
        let subject = letter
            .headers
            .iter()
            .find(|(name, _)| name == dlq_header::SUBJECT)
            .map(|(_, subject)| subject.clone());
        match subject {
            Some(subject)
                if self.layout.parse_task_subject(&subject).is_some()
                    || self.layout.parse_delayed_subject(&subject).is_some() =>
            {
                Ok(subject)
            }
            subject => Err(DeadLetterError::NotRequeueable {
                seq: letter.seq,
                subject,
                namespace: self.layout.namespace().to_string(),
            }),
        }
    }

    fn not_found(&self, seq: u64) -> DeadLetterError {
        DeadLetterError::NotFound {
            stream: self.layout.dead_letter_stream(),
            seq,
        }
    }

    fn stream_error(
        &self,
        action: &'static str,
        source: impl StdError + Send + Sync + 'static,
    ) -> DeadLetterError {
        DeadLetterError::Stream {
            action,
            stream: self.layout.dead_letter_stream(),
            source: Box::new(source),
        }
    }
}
