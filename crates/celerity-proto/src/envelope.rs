//! The envelope: what a task message says about itself in NATS headers.
//!
//! Routers, dashboards and the dead-letter path read the envelope without decoding the body.
//! [`Envelope::to_headers`] and [`Envelope::from_headers`] are the only code that knows header names;
//! the runtime converts the pairs to and from `async_nats::HeaderMap` in one function.

use crate::PROTOCOL_VERSION;
use crate::codec::ContentType;
use crate::names::{InvalidName, Priority, TaskId, TaskName};

/// Header names of protocol version 1, spelled exactly as they travel.
pub mod header {
    /// Protocol version of the message, a decimal integer. Required.
    pub const VERSION: &str = "Celerity-Version";
    /// Registered name of the task to run. Required.
    pub const TASK: &str = "Celerity-Task";
    /// Task id; also the result's KV key. Required.
    pub const ID: &str = "Celerity-Id";
    /// JetStream de-duplication id; producers set it to the task id.
    pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
    /// Body encoding: `application/json` (default) or `application/msgpack`.
    pub const CONTENT_TYPE: &str = "Content-Type";
    /// How many times the task has been retried, a decimal integer. Default 0.
    pub const RETRIES: &str = "Celerity-Retries";
    /// The priority the task was sent with, 0 to 9. Informational: the subject is authoritative.
    pub const PRIORITY: &str = "Celerity-Priority";
    /// Core NATS subject where the worker publishes the final result record, after storing it.
    pub const REPLY_TO: &str = "Celerity-Reply-To";
    /// Id of the task whose result this task continues (canvas).
    pub const PARENT_ID: &str = "Celerity-Parent-Id";
    /// Id of the first task of the workflow this task belongs to (canvas).
    pub const ROOT_ID: &str = "Celerity-Root-Id";
    /// Id of the group this task belongs to (canvas).
    pub const GROUP_ID: &str = "Celerity-Group-Id";
    /// Id of the chord this task is a header of (canvas).
    pub const CHORD_ID: &str = "Celerity-Chord-Id";
    /// Earliest start, milliseconds since the Unix epoch (UTC).
    pub const ETA: &str = "Celerity-Eta";
    /// Expiry, milliseconds since the Unix epoch (UTC): a task picked up later is not run.
    pub const EXPIRES: &str = "Celerity-Expires";
    /// When the producer sent the task, milliseconds since the Unix epoch (UTC).
    pub const SENT_AT: &str = "Celerity-Sent-At";
    /// The sequence, in the dead-letter stream, of the letter this message was requeued from.
    pub const REQUEUED: &str = "Celerity-Requeued";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state.
    pub const TRACESTATE: &str = "tracestate";

    /// True for the headers the NATS server acts on when a message is published (`Nats-` in any
    /// letter case: `Nats-Expected-Stream`, `Nats-Rollup`, `Nats-TTL`, ...). A message a worker
    /// publishes again elsewhere (to the delayed stream, back to a queue, to the dead-letter
    /// stream) must not carry the producer's, or the server refuses or alters the publish.
    ///
    /// ```
    /// use celerity_proto::header;
    /// assert!(header::is_server_header("Nats-Expected-Stream"));
    /// assert!(header::is_server_header("nats-rollup"));
    /// assert!(!header::is_server_header("Celerity-Id"));
    /// ```
    pub fn is_server_header(name: &str) -> bool {
        name.get(..5)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("Nats-"))
    }

    /// True for names the protocol reserves; every other header is a user header that is passed
    /// through to the task unchanged.
    pub fn is_reserved(name: &str) -> bool {
        name.starts_with("Celerity-")
            || name.starts_with("Nats-")
            || name == CONTENT_TYPE
            || name == TRACEPARENT
            || name == TRACESTATE
    }
}

/// Read access to a message's headers, implemented by the runtime for `async_nats::HeaderMap`.
pub trait HeaderSource {
    /// The first value of header `name`, if present.
    fn get(&self, name: &str) -> Option<&str>;
    /// Calls `visitor` with every (name, value) pair.
    fn visit(&self, visitor: &mut dyn FnMut(&str, &str));
}

impl<N: AsRef<str>, V: AsRef<str>> HeaderSource for [(N, V)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(key, _)| key.as_ref() == name)
            .map(|(_, value)| value.as_ref())
    }

    fn visit(&self, visitor: &mut dyn FnMut(&str, &str)) {
        for (name, value) in self {
            visitor(name.as_ref(), value.as_ref());
        }
    }
}

/// Why a message's headers are not a valid version-1 envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// A required header is absent.
    #[error("missing required header {0}")]
    MissingHeader(&'static str),
    /// A header is present but its value is not valid.
    #[error("header {name} has invalid value {value:?}: {reason}")]
    BadHeader {
        /// The header's name.
        name: &'static str,
        /// The value received.
        value: String,
        /// What is wrong with it.
        #[source]
        reason: HeaderValueError,
    },
    /// The message was written with a protocol version this reader does not know.
    #[error("unsupported protocol version {0} (this worker speaks version {PROTOCOL_VERSION})")]
    UnsupportedVersion(String),
}

/// What is wrong with a header's value, in an [`EnvelopeError::BadHeader`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderValueError {
    /// The value is not a valid name of its kind (a task id or name, a priority); the text is
    /// the rule it breaks, as the header's name and value are already in the outer message.
    #[error("{}", .0.rule)]
    Name(InvalidName),
    /// The value is not a non-negative decimal integer that fits the header's type.
    #[error("expected a non-negative decimal integer")]
    Number(#[source] std::num::ParseIntError),
    /// The `Content-Type` is neither JSON nor MessagePack.
    #[error("use application/json or application/msgpack")]
    ContentType,
}

/// Everything a task message says about itself in its headers.
///
/// ```
/// # use celerity_proto::{Envelope, TaskId, TaskName};
/// let mut envelope = Envelope::new(TaskId::new("t1")?, TaskName::new("tasks.add")?);
/// envelope.retries = 2;
/// let headers = envelope.to_headers();
/// let decoded = Envelope::from_headers(headers.as_slice())?;
/// assert_eq!(decoded, envelope);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Envelope {
    /// The task id.
    pub id: TaskId,
    /// The registered task name.
    pub task: TaskName,
    /// How the body is encoded.
    pub content_type: ContentType,
    /// How many times the task has been retried.
    pub retries: u32,
    /// The priority it was sent with.
    pub priority: Priority,
    /// Where to publish the final result record, if the producer asked.
    pub reply_to: Option<String>,
    /// The task this one continues.
    pub parent_id: Option<TaskId>,
    /// The first task of the workflow.
    pub root_id: Option<TaskId>,
    /// The group this task belongs to.
    pub group_id: Option<TaskId>,
    /// The chord this task is a header of.
    pub chord_id: Option<TaskId>,
    /// Earliest start, Unix milliseconds.
    pub eta_ms: Option<u64>,
    /// Expiry, Unix milliseconds.
    pub expires_ms: Option<u64>,
    /// Send time, Unix milliseconds.
    pub sent_at_ms: Option<u64>,
    /// The dead letter this message was requeued from (its sequence in the dead-letter stream):
    /// the FAILURE record that letter left is not this message's final record.
    pub requeued_from: Option<u64>,
    /// W3C `traceparent`.
    pub traceparent: Option<String>,
    /// W3C `tracestate`.
    pub tracestate: Option<String>,
    /// User headers, passed through to the task unchanged.
    pub extra: Vec<(String, String)>,
}

impl Envelope {
    /// An envelope with the required fields and every optional one at its default.
    pub fn new(id: TaskId, task: TaskName) -> Self {
        Self {
            id,
            task,
            content_type: ContentType::Json,
            retries: 0,
            priority: Priority::default(),
            reply_to: None,
            parent_id: None,
            root_id: None,
            group_id: None,
            chord_id: None,
            eta_ms: None,
            expires_ms: None,
            sent_at_ms: None,
            requeued_from: None,
            traceparent: None,
            tracestate: None,
            extra: Vec::new(),
        }
    }

    /// The headers of this envelope, required ones first, optional ones only when set.
    ///
    /// `Nats-Msg-Id` is set to the task id so JetStream drops a duplicate publish.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            (header::VERSION, PROTOCOL_VERSION.to_string()),
            (header::TASK, self.task.to_string()),
            (header::ID, self.id.to_string()),
            (header::NATS_MSG_ID, self.message_id()),
        ];
        if self.content_type != ContentType::Json {
            headers.push((header::CONTENT_TYPE, self.content_type.as_str().to_owned()));
        }
        if self.retries != 0 {
            headers.push((header::RETRIES, self.retries.to_string()));
        }
        if self.priority != Priority::default() {
            headers.push((header::PRIORITY, self.priority.to_string()));
        }
        let optional = [
            (header::REPLY_TO, self.reply_to.clone()),
            (
                header::PARENT_ID,
                self.parent_id.as_ref().map(TaskId::to_string),
            ),
            (
                header::ROOT_ID,
                self.root_id.as_ref().map(TaskId::to_string),
            ),
            (
                header::GROUP_ID,
                self.group_id.as_ref().map(TaskId::to_string),
            ),
            (
                header::CHORD_ID,
                self.chord_id.as_ref().map(TaskId::to_string),
            ),
            (header::ETA, self.eta_ms.map(|ms| ms.to_string())),
            (header::EXPIRES, self.expires_ms.map(|ms| ms.to_string())),
            (header::SENT_AT, self.sent_at_ms.map(|ms| ms.to_string())),
            (
                header::REQUEUED,
                self.requeued_from.map(|seq| seq.to_string()),
            ),
            (header::TRACEPARENT, self.traceparent.clone()),
            (header::TRACESTATE, self.tracestate.clone()),
        ];
        headers.extend(
            optional
                .into_iter()
                .filter_map(|(name, value)| Some((name, value?))),
        );
        headers
    }

    /// The JetStream de-duplication id of this message: the task id, or `<task id>-r<retries>` for
    /// a retry, so a retry is not dropped as a duplicate of the first send.
    pub fn message_id(&self) -> String {
        if self.retries == 0 {
            self.id.to_string()
        } else {
            format!("{}-r{}", self.id, self.retries)
        }
    }

    /// The user headers as (name, value) pairs, to append after [`Envelope::to_headers`].
    pub fn extra_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.extra
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// Reads an envelope from a message's headers.
    ///
    /// Unknown `Celerity-*` headers are ignored (a newer minor revision may add them); headers the
    /// protocol does not reserve become [`Envelope::extra`].
    ///
    /// # Errors
    /// [`EnvelopeError`] when a required header is missing, a value does not parse, or the version
    /// is not [`PROTOCOL_VERSION`].
    pub fn from_headers<H: HeaderSource + ?Sized>(headers: &H) -> Result<Self, EnvelopeError> {
        let version = headers
            .get(header::VERSION)
            .ok_or(EnvelopeError::MissingHeader(header::VERSION))?;
        if version.trim() != PROTOCOL_VERSION.to_string() {
            return Err(EnvelopeError::UnsupportedVersion(version.to_owned()));
        }
        let id = required(headers, header::ID, TaskId::new)?;
        let task = required(headers, header::TASK, TaskName::new)?;
        let content_type = match headers.get(header::CONTENT_TYPE) {
            None => ContentType::Json,
            Some(value) => ContentType::parse(value).ok_or_else(|| EnvelopeError::BadHeader {
                name: header::CONTENT_TYPE,
                value: value.to_owned(),
                reason: HeaderValueError::ContentType,
            })?,
        };
        let mut extra = Vec::new();
        headers.visit(&mut |name, value| {
            if !header::is_reserved(name) {
                extra.push((name.to_owned(), value.to_owned()));
            }
        });
        Ok(Self {
            id,
            task,
            content_type,
            retries: optional(headers, header::RETRIES, parse_number::<u32>)?.unwrap_or(0),
            priority: optional(headers, header::PRIORITY, |value| {
                value.parse::<Priority>().map_err(HeaderValueError::Name)
            })?
            .unwrap_or_default(),
            reply_to: headers.get(header::REPLY_TO).map(str::to_owned),
            parent_id: optional(headers, header::PARENT_ID, parse_id)?,
            root_id: optional(headers, header::ROOT_ID, parse_id)?,
            group_id: optional(headers, header::GROUP_ID, parse_id)?,
            chord_id: optional(headers, header::CHORD_ID, parse_id)?,
            eta_ms: optional(headers, header::ETA, parse_number::<u64>)?,
            expires_ms: optional(headers, header::EXPIRES, parse_number::<u64>)?,
            sent_at_ms: optional(headers, header::SENT_AT, parse_number::<u64>)?,
            requeued_from: optional(headers, header::REQUEUED, parse_number::<u64>)?,
            traceparent: headers.get(header::TRACEPARENT).map(str::to_owned),
            tracestate: headers.get(header::TRACESTATE).map(str::to_owned),
            extra,
        })
    }
}

fn parse_number<T>(value: &str) -> Result<T, HeaderValueError>
where
    T: std::str::FromStr<Err = std::num::ParseIntError>,
{
    value.trim().parse::<T>().map_err(HeaderValueError::Number)
}

fn parse_id(value: &str) -> Result<TaskId, HeaderValueError> {
    TaskId::new(value).map_err(HeaderValueError::Name)
}

fn required<H, T>(
    headers: &H,
    name: &'static str,
    parse: impl FnOnce(String) -> Result<T, InvalidName>,
) -> Result<T, EnvelopeError>
where
    H: HeaderSource + ?Sized,
{
    let value = headers
        .get(name)
        .ok_or(EnvelopeError::MissingHeader(name))?;
    parse(value.to_owned()).map_err(|error| EnvelopeError::BadHeader {
        name,
        value: value.to_owned(),
        reason: HeaderValueError::Name(error),
    })
}

fn optional<H, T>(
    headers: &H,
    name: &'static str,
    parse: impl FnOnce(&str) -> Result<T, HeaderValueError>,
) -> Result<Option<T>, EnvelopeError>
where
    H: HeaderSource + ?Sized,
{
    headers
        .get(name)
        .map(|value| {
            parse(value).map_err(|reason| EnvelopeError::BadHeader {
                name,
                value: value.to_owned(),
                reason,
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(headers: &[(&str, &str)]) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn full_envelope_round_trips_with_user_headers() {
        let mut envelope = Envelope::new(
            TaskId::new("t1").unwrap(),
            TaskName::new("tasks.add").unwrap(),
        );
        envelope.content_type = ContentType::MsgPack;
        envelope.retries = 3;
        envelope.priority = Priority::new(7).unwrap();
        envelope.reply_to = Some("celerity.reply.c1".into());
        envelope.parent_id = Some(TaskId::new("p").unwrap());
        envelope.root_id = Some(TaskId::new("r").unwrap());
        envelope.eta_ms = Some(1_700_000_000_000);
        envelope.requeued_from = Some(42);
        envelope.traceparent =
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        envelope.extra = vec![("X-Tenant".into(), "acme".into())];
        let mut headers: Vec<(String, String)> = envelope
            .to_headers()
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .collect();
        headers.extend(
            envelope
                .extra_headers()
                .map(|(n, v)| (n.to_owned(), v.to_owned())),
        );
        assert_eq!(
            Envelope::from_headers(headers.as_slice()).unwrap(),
            envelope
        );
    }

    #[test]
    fn missing_and_bad_headers_are_named() {
        let no_version = pairs(&[("Celerity-Task", "a"), ("Celerity-Id", "b")]);
        assert_eq!(
            Envelope::from_headers(no_version.as_slice()),
            Err(EnvelopeError::MissingHeader(header::VERSION))
        );
        let future = pairs(&[
            ("Celerity-Version", "2"),
            ("Celerity-Task", "a"),
            ("Celerity-Id", "b"),
        ]);
        assert_eq!(
            Envelope::from_headers(future.as_slice()),
            Err(EnvelopeError::UnsupportedVersion("2".into()))
        );
        let bad_retries = pairs(&[
            ("Celerity-Version", "1"),
            ("Celerity-Task", "a"),
            ("Celerity-Id", "b"),
            ("Celerity-Retries", "-1"),
        ]);
        let error = Envelope::from_headers(bad_retries.as_slice()).unwrap_err();
        assert!(
            matches!(
                error,
                EnvelopeError::BadHeader {
                    name: header::RETRIES,
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            "header Celerity-Retries has invalid value \"-1\": expected a non-negative decimal integer"
        );
        let cause = std::error::Error::source(&error).expect("the header's problem");
        assert!(
            cause
                .downcast_ref::<HeaderValueError>()
                .is_some_and(|problem| matches!(problem, HeaderValueError::Number(_)))
        );
        assert!(cause.source().is_some(), "the ParseIntError");
        let bad_id = pairs(&[
            ("Celerity-Version", "1"),
            ("Celerity-Task", "a"),
            ("Celerity-Id", "a b"),
        ]);
        assert!(matches!(
            Envelope::from_headers(bad_id.as_slice()),
            Err(EnvelopeError::BadHeader {
                reason: HeaderValueError::Name(InvalidName {
                    kind: "task id",
                    ..
                }),
                ..
            })
        ));
        let bad_type = pairs(&[
            ("Celerity-Version", "1"),
            ("Celerity-Task", "a"),
            ("Celerity-Id", "b"),
            ("Content-Type", "text/xml"),
        ]);
        assert!(
            Envelope::from_headers(bad_type.as_slice())
                .unwrap_err()
                .to_string()
                .contains("text/xml")
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_headers_never_panic(headers in proptest::collection::vec(("[A-Za-z-]{1,20}", ".{0,40}"), 0..8)) {
            let _ = Envelope::from_headers(headers.as_slice());
        }
    }
}
