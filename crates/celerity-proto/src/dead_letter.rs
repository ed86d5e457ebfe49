//! Dead letters: a message no worker can run, kept with the reason instead of being dropped.
//!
//! A dead letter is the original message (its body byte for byte, its headers except those the
//! server acts on, see [`DeadLetter::copied_header_name`]) plus the `Celerity-Dlq-*` headers
//! defined here, stored in the dead-letter stream.

use std::borrow::Cow;
use std::fmt;

use crate::envelope::HeaderSource;

/// Names of the headers a dead letter adds to the original message.
pub mod dlq_header {
    /// Machine-readable reason, one of [`super::DeadLetterReason`]'s codes.
    pub const REASON: &str = "Celerity-Dlq-Reason";
    /// Human-readable error text.
    pub const ERROR: &str = "Celerity-Dlq-Error";
    /// Hostname of the worker that dead-lettered the message.
    pub const WORKER: &str = "Celerity-Dlq-Worker";
    /// How many times the message had been delivered.
    pub const DELIVERIES: &str = "Celerity-Dlq-Deliveries";
    /// The subject the message was originally published to.
    pub const SUBJECT: &str = "Celerity-Dlq-Subject";
    /// The message's sequence in its original stream.
    pub const STREAM_SEQUENCE: &str = "Celerity-Dlq-Stream-Sequence";
    /// When it was dead-lettered, Unix milliseconds.
    pub const TIME: &str = "Celerity-Dlq-Time";
    /// Present when the copy was stored without its body (it did not fit the server's
    /// `max_payload`, or the dead-letter stream refused it): the original body's size in bytes.
    pub const BODY_DROPPED: &str = "Celerity-Dlq-Body-Dropped";
    /// Prefix of every header a dead letter adds.
    pub const PREFIX: &str = "Celerity-Dlq-";
    /// Prefix under which the copy keeps an original `Nats-*` header:
    /// `Nats-Expected-Stream` travels as `Celerity-Dlq-Original-Nats-Expected-Stream`.
    pub const ORIGINAL_PREFIX: &str = "Celerity-Dlq-Original-";
}

/// Why a message was dead-lettered.
///
/// ```
/// # use celerity_proto::DeadLetterReason;
/// assert_eq!(DeadLetterReason::UnknownTask.code(), "unknown_task");
/// assert_eq!(DeadLetterReason::parse("bad_arguments"), Some(DeadLetterReason::BadArguments));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// No task with that name is registered on the worker that consumed the queue.
    UnknownTask,
    /// The body is not valid in its `Content-Type`, or not a task body.
    UndecodableBody,
    /// The arguments do not match the task's parameters (count, names or types).
    BadArguments,
    /// The `Celerity-Version` header names a version this worker does not speak.
    UnsupportedVersion,
    /// A required header is missing or a header value is invalid.
    BadEnvelope,
    /// The canvas in the body breaks a rule (empty node, id used twice, nested too deep).
    InvalidCanvas,
    /// The message was delivered more times than its task allows (`max_deliveries`): each earlier
    /// delivery ended without an acknowledgement, most often because the task took its worker
    /// down (a native crash, an out-of-memory kill, an abort), so it is not run again.
    TooManyDeliveries,
    /// The task ran, but its result record could not be stored after every attempt allowed (the
    /// results bucket is full or keeps refusing the write).
    ResultNotStored,
    /// The task id already has a final record, written for another queue message: this one is
    /// not a redelivery of it (a producer reused the id, or sent it again after the duplicate
    /// window), so it is not run and the record stays.
    DuplicateTaskId,
}

impl DeadLetterReason {
    /// The code stored in `Celerity-Dlq-Reason`.
    pub fn code(self) -> &'static str {
        match self {
            DeadLetterReason::UnknownTask => "unknown_task",
            DeadLetterReason::UndecodableBody => "undecodable_body",
            DeadLetterReason::BadArguments => "bad_arguments",
            DeadLetterReason::UnsupportedVersion => "unsupported_version",
            DeadLetterReason::BadEnvelope => "bad_envelope",
            DeadLetterReason::InvalidCanvas => "invalid_canvas",
            DeadLetterReason::TooManyDeliveries => "too_many_deliveries",
            DeadLetterReason::ResultNotStored => "result_not_stored",
            DeadLetterReason::DuplicateTaskId => "duplicate_task_id",
        }
    }

    /// Every reason, in the order of `docs/protocol.md` section 7's table.
    pub const ALL: [DeadLetterReason; 9] = [
        DeadLetterReason::UnknownTask,
        DeadLetterReason::UndecodableBody,
        DeadLetterReason::BadArguments,
        DeadLetterReason::UnsupportedVersion,
        DeadLetterReason::BadEnvelope,
        DeadLetterReason::InvalidCanvas,
        DeadLetterReason::TooManyDeliveries,
        DeadLetterReason::ResultNotStored,
        DeadLetterReason::DuplicateTaskId,
    ];

    /// Parses a code.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.code() == code)
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// What a worker adds to a message when it dead-letters it.
///
/// ```
/// # use celerity_proto::{DeadLetter, DeadLetterReason};
/// let letter = DeadLetter {
///     reason: DeadLetterReason::UnknownTask,
///     error: "no task named \"tasks.nope\" is registered".into(),
///     worker: "w1".into(),
///     deliveries: 1,
///     subject: "celerity.q.default.0".into(),
///     stream_sequence: 42,
///     time_ms: 1_700_000_000_000,
/// };
/// let headers = letter.to_headers();
/// assert_eq!(DeadLetter::from_headers(headers.as_slice()), Some(letter));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Why.
    pub reason: DeadLetterReason,
    /// The error in words.
    pub error: String,
    /// The worker's hostname.
    pub worker: String,
    /// Deliveries of the original message so far.
    pub deliveries: u64,
    /// The original subject.
    pub subject: String,
    /// The original stream sequence.
    pub stream_sequence: u64,
    /// When, Unix milliseconds.
    pub time_ms: u64,
}

impl DeadLetter {
    /// The error kind of the FAILURE record a dead letter leaves for its task.
    pub const ERROR_KIND: &'static str = "celerity::DeadLettered";

    /// The longest error text a dead letter carries, in bytes, in `Celerity-Dlq-Error` and in
    /// the message of the task's FAILURE record (after its `<reason code>: `).
    pub const MAX_ERROR_BYTES: usize = 512;

    /// `text` cut to at most [`DeadLetter::MAX_ERROR_BYTES`] bytes, on a character boundary,
    /// ending with a marker that gives its full length.
    ///
    /// Error texts repeat bad input (an unknown argument name, a header value), which can be as
    /// large as a message.
    ///
    /// ```
    /// # use celerity_proto::DeadLetter;
    /// assert_eq!(DeadLetter::bounded_error("short"), "short");
    /// let long = "x".repeat(2_000);
    /// let bounded = DeadLetter::bounded_error(&long);
    /// assert!(bounded.len() <= DeadLetter::MAX_ERROR_BYTES);
    /// assert!(bounded.ends_with(" [cut, 2000 bytes in all]"));
    /// ```
    pub fn bounded_error(text: &str) -> Cow<'_, str> {
        if text.len() <= Self::MAX_ERROR_BYTES {
            return Cow::Borrowed(text);
        }
        let marker = format!(" [cut, {} bytes in all]", text.len());
        let mut end = Self::MAX_ERROR_BYTES - marker.len();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Cow::Owned(format!("{}{marker}", &text[..end]))
    }

    /// The name under which the copy carries the original header `name`, or `None` when the copy
    /// leaves it out.
    ///
    /// The server acts on `Nats-*` headers when the copy is published (`Nats-Expected-Stream`
    /// would make it refuse the copy, `Nats-TTL` expire it, `Nats-Rollup` purge other letters),
    /// so every header whose name starts with `Nats-`, in any letter case, is renamed with
    /// [`dlq_header::ORIGINAL_PREFIX`].
    /// `Nats-Msg-Id` is left out: the copy has its own, and the task id is in `Celerity-Id`.
    ///
    /// ```
    /// # use celerity_proto::DeadLetter;
    /// assert_eq!(DeadLetter::copied_header_name("Celerity-Id").as_deref(), Some("Celerity-Id"));
    /// assert_eq!(
    ///     DeadLetter::copied_header_name("Nats-Expected-Stream").as_deref(),
    ///     Some("Celerity-Dlq-Original-Nats-Expected-Stream")
    /// );
    /// assert_eq!(DeadLetter::copied_header_name("Nats-Msg-Id"), None);
    /// ```
    pub fn copied_header_name(name: &str) -> Option<Cow<'_, str>> {
        // NOTE(protocol): a whole prefix rather than a list of names, because each server release
        // adds some (Nats-TTL, Nats-Incr, Nats-Batch-*, Nats-Schedule-* since 2.11).
        if !crate::header::is_server_header(name) {
            Some(Cow::Borrowed(name))
        } else if name == crate::header::NATS_MSG_ID {
            None
        } else {
            Some(Cow::Owned(format!("{}{name}", dlq_header::ORIGINAL_PREFIX)))
        }
    }

    /// Whether a dead letter's header `name` travels back with the message when the letter is
    /// requeued: every header but the `Celerity-Dlq-*` ones (the `Celerity-Dlq-Original-*` copies
    /// of the server's headers among them, which described the original publish: an expected
    /// sequence no longer holds, a rollup would purge the queue) and `Nats-*` (the letter's own
    /// `Nats-Msg-Id`).
    ///
    /// ```
    /// # use celerity_proto::DeadLetter;
    /// assert!(DeadLetter::requeued_header("Celerity-Id"));
    /// assert!(DeadLetter::requeued_header("traceparent"));
    /// assert!(!DeadLetter::requeued_header("Celerity-Dlq-Reason"));
    /// assert!(!DeadLetter::requeued_header("Celerity-Dlq-Original-Nats-Expected-Stream"));
    /// assert!(!DeadLetter::requeued_header("Nats-Msg-Id"));
    /// ```
    pub fn requeued_header(name: &str) -> bool {
        let dlq = name
            .get(..dlq_header::PREFIX.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(dlq_header::PREFIX));
        !dlq && !crate::header::is_server_header(name)
    }

    /// The `Nats-Msg-Id` of the message a requeue of the letter at `letter_sequence` publishes:
    /// `<task id>-requeue-<letter sequence>`.
    ///
    /// NOTE(protocol): not the task id the original carried, which the queue stream would drop as
    /// a duplicate within its two-minute window; one per letter, so a requeue retried after a
    /// crash within the window is stored once.
    ///
    /// ```
    /// # use celerity_proto::{DeadLetter, TaskId};
    /// let id = TaskId::new("t1")?;
    /// assert_eq!(DeadLetter::requeue_message_id(&id, 7), "t1-requeue-7");
    /// # Ok::<(), celerity_proto::InvalidName>(())
    /// ```
    pub fn requeue_message_id(task_id: &crate::TaskId, letter_sequence: u64) -> String {
        format!("{task_id}-requeue-{letter_sequence}")
    }

    /// The headers to add to the original message's headers.
    ///
    /// Header values cannot hold line breaks, so they are replaced with spaces in every text value;
    /// the error text is bounded ([`DeadLetter::bounded_error`]).
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let clean = |text: &str| text.replace(['\r', '\n'], " ");
        vec![
            (dlq_header::REASON, self.reason.code().to_owned()),
            (dlq_header::ERROR, clean(&Self::bounded_error(&self.error))),
            (dlq_header::WORKER, clean(&self.worker)),
            (dlq_header::DELIVERIES, self.deliveries.to_string()),
            (dlq_header::SUBJECT, clean(&self.subject)),
            (
                dlq_header::STREAM_SEQUENCE,
                self.stream_sequence.to_string(),
            ),
            (dlq_header::TIME, self.time_ms.to_string()),
        ]
    }

    /// Reads the dead-letter headers back, or `None` when they are missing or malformed.
    pub fn from_headers<H: HeaderSource + ?Sized>(headers: &H) -> Option<Self> {
        Some(Self {
            reason: DeadLetterReason::parse(headers.get(dlq_header::REASON)?)?,
            error: headers.get(dlq_header::ERROR)?.to_owned(),
            worker: headers.get(dlq_header::WORKER)?.to_owned(),
            deliveries: headers.get(dlq_header::DELIVERIES)?.parse().ok()?,
            subject: headers.get(dlq_header::SUBJECT)?.to_owned(),
            stream_sequence: headers.get(dlq_header::STREAM_SEQUENCE)?.parse().ok()?,
            time_ms: headers.get(dlq_header::TIME)?.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_error_is_cut_on_a_character_boundary_and_says_how_long_it_was() {
        let long = "é".repeat(1_000);
        let bounded = DeadLetter::bounded_error(&long);
        assert!(
            bounded.len() <= DeadLetter::MAX_ERROR_BYTES,
            "{}",
            bounded.len()
        );
        assert!(bounded.starts_with("éé"));
        assert!(bounded.ends_with(" [cut, 2000 bytes in all]"), "{bounded}");
        // Bounding twice changes nothing, so the record and the header may both bound.
        assert_eq!(DeadLetter::bounded_error(&bounded), bounded);
    }

    #[test]
    fn an_error_at_the_limit_is_kept_whole() {
        let text = "x".repeat(DeadLetter::MAX_ERROR_BYTES);
        assert!(matches!(DeadLetter::bounded_error(&text), Cow::Borrowed(_)));
        let text = "x".repeat(DeadLetter::MAX_ERROR_BYTES + 1);
        assert!(DeadLetter::bounded_error(&text).ends_with(" [cut, 513 bytes in all]"));
    }

    #[test]
    fn the_error_header_is_bounded() {
        let letter = DeadLetter {
            reason: DeadLetterReason::BadArguments,
            error: format!("unexpected named argument {:?}", "k".repeat(900_000)),
            worker: "w1".into(),
            deliveries: 1,
            subject: "celerity.q.default.0".into(),
            stream_sequence: 1,
            time_ms: 1,
        };
        let headers = letter.to_headers();
        let error = HeaderSource::get(headers.as_slice(), dlq_header::ERROR).unwrap_or_default();
        assert!(
            error.len() <= DeadLetter::MAX_ERROR_BYTES,
            "{}",
            error.len()
        );
    }

    #[test]
    fn every_header_the_server_acts_on_is_renamed() {
        for name in [
            "Nats-Expected-Stream",
            "Nats-Expected-Last-Sequence",
            "Nats-Expected-Last-Subject-Sequence",
            "Nats-Expected-Last-Subject-Sequence-Subject",
            "Nats-Expected-Last-Msg-Id",
            "Nats-Rollup",
            "Nats-TTL",
            "Nats-Incr",
            "Nats-Batch-Id",
            "Nats-Schedule",
            "Nats-Schedule-Target",
            "Nats-Scheduler",
            "Nats-Marker-Reason",
            "Nats-Stream-Source",
            "Nats-Trace-Dest",
            "Nats-Required-Api-Level",
            "nats-ttl",
            "NATS-ROLLUP",
        ] {
            assert_eq!(
                DeadLetter::copied_header_name(name).as_deref(),
                Some(format!("Celerity-Dlq-Original-{name}").as_str()),
                "{name}"
            );
        }
        for name in [
            "Celerity-Task",
            "traceparent",
            "X-Tenant",
            "Nats",
            "NATS",
            "Natsy-X",
        ] {
            assert_eq!(DeadLetter::copied_header_name(name).as_deref(), Some(name));
        }
        assert_eq!(DeadLetter::copied_header_name("Nats-Msg-Id"), None);
    }
}
