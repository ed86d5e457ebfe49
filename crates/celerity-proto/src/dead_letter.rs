//! Dead letters: a message no worker can run, kept with the reason instead of being dropped.
//!
//! A dead letter is the original message (its headers and body, byte for byte) plus the
//! `Celerity-Dlq-*` headers defined here, stored in the dead-letter stream.

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
        }
    }

    /// Parses a code.
    pub fn parse(code: &str) -> Option<Self> {
        [
            DeadLetterReason::UnknownTask,
            DeadLetterReason::UndecodableBody,
            DeadLetterReason::BadArguments,
            DeadLetterReason::UnsupportedVersion,
            DeadLetterReason::BadEnvelope,
            DeadLetterReason::InvalidCanvas,
            DeadLetterReason::TooManyDeliveries,
            DeadLetterReason::ResultNotStored,
        ]
        .into_iter()
        .find(|reason| reason.code() == code)
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
    /// The headers to add to the original message's headers.
    ///
    /// Header values cannot hold line breaks, so they are replaced with spaces in every text value.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let clean = |text: &str| text.replace(['\r', '\n'], " ");
        vec![
            (dlq_header::REASON, self.reason.code().to_owned()),
            (dlq_header::ERROR, clean(&self.error)),
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
