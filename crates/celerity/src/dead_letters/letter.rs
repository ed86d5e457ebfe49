//! The records of a dead-letter listing: which letters ([`LetterFilter`], [`Page`]), a page of
//! them ([`LetterPage`]) and one letter as stored ([`Letter`]); plain data read from the stream's
//! messages, with no I/O.

use async_nats::jetstream::message::StreamMessage;
use bytes::Bytes;
use celerity_proto::{DeadLetter, HeaderSource, Layout, QueueName, dlq_header, header};

use crate::nats::headers::HeaderView;

/// Which letters a [`DeadLetters::list`](super::DeadLetters::list) or
/// [`DeadLetters::purge`](super::DeadLetters::purge) selects; all by default.
///
/// ```
/// use celerity::dead_letters::LetterFilter;
/// let queue = celerity::QueueName::new("email")?;
/// let filter = LetterFilter::all().queue(queue).reason("bad_arguments");
/// assert_eq!(filter.reason.as_deref(), Some("bad_arguments"));
/// # Ok::<(), celerity::InvalidName>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LetterFilter {
    /// Only letters dead-lettered from this queue.
    pub queue: Option<QueueName>,
    /// Only letters with this reason code (`unknown_task`; codes this version does not know are
    /// matched as well).
    pub reason: Option<String>,
}

impl LetterFilter {
    /// Every letter.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only the letters of `queue`.
    pub fn queue(mut self, queue: QueueName) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Only the letters with reason code `code`.
    pub fn reason(mut self, code: impl Into<String>) -> Self {
        self.reason = Some(code.into());
        self
    }

    pub(super) fn selects(&self, layout: &Layout, message: &StreamMessage) -> bool {
        let queue = self
            .queue
            .as_ref()
            .is_none_or(|queue| message.subject.as_str() == layout.dead_letter_subject(queue));
        let reason = self.reason.as_deref().is_none_or(|code| {
            HeaderView(Some(&message.headers)).get(dlq_header::REASON) == Some(code)
        });
        queue && reason
    }
}

/// Which page of a listing: skip `offset` selected letters (newest first), then take up to
/// `limit`.
///
/// ```
/// use celerity::dead_letters::Page;
/// assert_eq!(Page::first(20).limit(), 20);
/// assert_eq!(Page::new(40, 5_000).limit(), Page::MAX_LIMIT);
/// assert_eq!(Page::default().offset(), 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    offset: u64,
    limit: usize,
}

impl Page {
    /// The limit of [`Page::default`].
    pub const DEFAULT_LIMIT: usize = 50;
    /// The largest limit; a larger one is lowered to it.
    pub const MAX_LIMIT: usize = 1_000;

    /// Skips `offset` letters and takes up to `limit` (at least 1, at most [`Page::MAX_LIMIT`]).
    pub fn new(offset: u64, limit: usize) -> Self {
        Self {
            offset,
            limit: limit.clamp(1, Self::MAX_LIMIT),
        }
    }

    /// The newest `limit` letters.
    pub fn first(limit: usize) -> Self {
        Self::new(0, limit)
    }

    /// Selected letters skipped before the page.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Letters on the page, at most.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Default for Page {
    fn default() -> Self {
        Self::first(Self::DEFAULT_LIMIT)
    }
}

/// One page of letters, newest first.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LetterPage {
    /// The letters.
    pub letters: Vec<Letter>,
    /// How many letters the queue filter selects (all letters without one), from the stream's
    /// state. The reason filter is not counted, since that would read every letter: with one,
    /// this is an upper bound.
    pub total: u64,
    /// The offset of the next page, or `None` when this is the last.
    pub next_offset: Option<u64>,
}

/// A dead letter as stored: the original message, the reason, and where it came from.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Letter {
    /// Its sequence in the dead-letter stream: what `DeadLetters::get`, `requeue` and `delete`
    /// take.
    pub seq: u64,
    /// The queue it was dead-lettered from (the last token of its subject `<ns>.dlq.<queue>`).
    pub queue: String,
    /// The task name (`Celerity-Task`), when the message has one.
    pub task: Option<String>,
    /// The task id (`Celerity-Id`), when the message has one.
    pub task_id: Option<String>,
    /// The reason code as stored (`Celerity-Dlq-Reason`; possibly one this version does not know).
    pub reason: String,
    /// The dead-letter headers read back (reason, error, worker, deliveries, original subject and
    /// sequence, time), or `None` when they are incomplete or the reason is unknown.
    pub dead_letter: Option<DeadLetter>,
    /// The size of the original body when the letter was stored without it
    /// (`Celerity-Dlq-Body-Dropped`); such a letter cannot be requeued.
    pub body_dropped: Option<u64>,
    /// Every header, in the order stored.
    pub headers: Vec<(String, String)>,
    /// The original body, byte for byte (empty when dropped).
    pub body: Bytes,
    /// The stored size in bytes: subject, headers and body.
    pub size: usize,
    /// When the dead-letter stream stored it, Unix milliseconds.
    pub stored_at_ms: u64,
}

impl Letter {
    pub(super) fn of(layout: &Layout, message: StreamMessage) -> Self {
        let view = HeaderView(Some(&message.headers));
        let value = |name: &str| view.get(name).map(str::to_owned);
        let mut headers = Vec::new();
        view.visit(&mut |name, value| headers.push((name.to_owned(), value.to_owned())));
        let header_bytes: usize = headers
            .iter()
            .map(|(name, value)| name.len() + value.len() + 4)
            .sum();
        let queue = layout
            .parse_dead_letter_subject(&message.subject)
            .map_or_else(|| message.subject.to_string(), |queue| queue.to_string());
        Self {
            seq: message.sequence,
            task: value(header::TASK),
            task_id: value(header::ID),
            reason: value(dlq_header::REASON).unwrap_or_default(),
            dead_letter: DeadLetter::from_headers(&view),
            body_dropped: view
                .get(dlq_header::BODY_DROPPED)
                .and_then(|size| size.parse().ok()),
            size: message.subject.len() + header_bytes + message.payload.len(),
            stored_at_ms: u64::try_from(message.time.unix_timestamp_nanos() / 1_000_000)
                .unwrap_or(0),
            queue,
            headers,
            body: message.payload,
        }
    }
}
