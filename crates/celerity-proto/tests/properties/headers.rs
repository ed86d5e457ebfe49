//! The header readers: `Envelope::from_headers` and `DeadLetter::from_headers` read back what
//! `to_headers` wrote, and any header list, however long or malformed its values, is a value or a
//! typed error.

use proptest::collection::vec;
use proptest::prelude::*;

use celerity_proto::{DeadLetter, Envelope, EnvelopeError, HeaderSource, dlq_header, header};

use crate::strategies::{dead_letter_with, envelope, text};

/// The headers a task message carries for `envelope`: its own, then its user headers.
fn message_headers(envelope: &Envelope) -> Vec<(String, String)> {
    envelope
        .to_headers()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .chain(
            envelope
                .extra_headers()
                .map(|(name, value)| (name.to_owned(), value.to_owned())),
        )
        .collect()
}

/// Every header name the protocol reads.
const KNOWN_NAMES: [&str; 26] = [
    header::VERSION,
    header::TASK,
    header::ID,
    header::NATS_MSG_ID,
    header::CONTENT_TYPE,
    header::RETRIES,
    header::PRIORITY,
    header::REPLY_TO,
    header::PARENT_ID,
    header::ROOT_ID,
    header::GROUP_ID,
    header::CHORD_ID,
    header::ETA,
    header::EXPIRES,
    header::SENT_AT,
    header::REQUEUED,
    header::TRACEPARENT,
    header::TRACESTATE,
    dlq_header::REASON,
    dlq_header::ERROR,
    dlq_header::WORKER,
    dlq_header::DELIVERIES,
    dlq_header::SUBJECT,
    dlq_header::STREAM_SEQUENCE,
    dlq_header::TIME,
    dlq_header::BODY_DROPPED,
];

/// A header name: one the protocol reads (as spelled, or in another case), a `Nats-` or
/// `Celerity-` one it does not know, or any other.
fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KNOWN_NAMES.to_vec()).prop_map(str::to_owned),
        1 => prop::sample::select(KNOWN_NAMES.to_vec()).prop_map(str::to_ascii_lowercase),
        1 => "(Nats|NATS|nats|Celerity|Celerity-Dlq)-[A-Za-z-]{0,12}",
        1 => "(?s).{0,12}",
    ]
}

/// A header value: a valid one for some header, a number out of range, padded or signed, a
/// very long one, or any text.
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "1",
            "0",
            "9",
            "10",
            "-1",
            "+1",
            " 1 ",
            "01",
            "1.0",
            "",
            " ",
            "18446744073709551615",
            "18446744073709551616",
            "4294967296",
            "application/json",
            "application/msgpack; charset=utf-8",
            "text/xml",
            "bad_envelope",
            "unknown_task",
            "t1",
            "a.b",
            "é",
        ])
        .prop_map(str::to_owned),
        "[0-9]{15,30}",
        (
            prop::sample::select(vec!["x", "7", "é", "\u{10ffff}"]),
            1_000usize..100_000
        )
            .prop_map(|(unit, count)| unit.repeat(count)),
        text(),
    ]
}

/// Any list of headers, names repeated or not.
fn header_list() -> impl Strategy<Value = Vec<(String, String)>> {
    vec((header_name(), header_value()), 0..24)
}

/// A one-line text no longer than a dead letter keeps.
fn one_line_text() -> BoxedStrategy<String> {
    "[^\r\n]{0,40}".boxed()
}

/// Any text, now and then longer than a dead letter's error may be.
fn any_length_text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => text(),
        1 => (text(), 400usize..1_200).prop_map(|(unit, count)| unit.repeat(count)),
    ]
    .boxed()
}

proptest! {
    #[test]
    fn an_envelope_reads_back_from_its_headers(envelope in envelope()) {
        let headers = message_headers(&envelope);
        let message_id = envelope.message_id();
        prop_assert_eq!(
            HeaderSource::get(headers.as_slice(), header::NATS_MSG_ID),
            Some(message_id.as_str())
        );
        prop_assert_eq!(Envelope::from_headers(headers.as_slice()), Ok(envelope));
    }

    #[test]
    fn a_dead_letter_reads_back_from_its_headers(letter in dead_letter_with(one_line_text())) {
        let headers = letter.to_headers();
        prop_assert_eq!(DeadLetter::from_headers(headers.as_slice()), Some(letter));
    }

    #[test]
    fn a_dead_letter_reads_back_with_its_texts_on_one_line_and_its_error_bounded(
        letter in dead_letter_with(any_length_text())
    ) {
        let headers = letter.to_headers();
        let read = DeadLetter::from_headers(headers.as_slice())
            .ok_or_else(|| TestCaseError::fail("the headers of a letter read back"))?;
        for (read_text, written) in [
            (&read.error, &letter.error),
            (&read.worker, &letter.worker),
            (&read.subject, &letter.subject),
        ] {
            prop_assert!(!read_text.contains(['\r', '\n']), "{:?}", read_text);
            if !written.contains(['\r', '\n']) && written.len() <= DeadLetter::MAX_ERROR_BYTES {
                prop_assert_eq!(read_text, written);
            }
        }
        prop_assert!(read.error.len() <= DeadLetter::MAX_ERROR_BYTES);
        prop_assert_eq!(
            (read.reason, read.deliveries, read.stream_sequence, read.time_ms),
            (letter.reason, letter.deliveries, letter.stream_sequence, letter.time_ms)
        );
    }

    #[test]
    fn any_header_list_is_read_as_a_value_or_a_typed_error(headers in header_list()) {
        match Envelope::from_headers(headers.as_slice()) {
            Ok(envelope) => {
                prop_assert!(envelope.extra.iter().all(|(name, _)| !header::is_reserved(name)));
            }
            Err(EnvelopeError::MissingHeader(name)) => {
                let found = HeaderSource::get(headers.as_slice(), name);
                prop_assert!(found.is_none(), "{} is there", name);
            }
            Err(EnvelopeError::BadHeader { name, value, .. }) => {
                prop_assert_eq!(HeaderSource::get(headers.as_slice(), name), Some(value.as_str()));
            }
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
        let _ = DeadLetter::from_headers(headers.as_slice());
        for (name, _) in &headers {
            let _ = (header::is_server_header(name), header::is_reserved(name));
            let _ = (DeadLetter::copied_header_name(name), DeadLetter::requeued_header(name));
        }
    }

    #[test]
    fn a_bad_value_in_a_valid_envelope_is_an_error_naming_its_header(
        envelope in envelope(),
        corrupted in prop::sample::select(KNOWN_NAMES[..18].to_vec()),
        value in header_value(),
    ) {
        let mut headers = message_headers(&envelope);
        headers.retain(|(name, _)| name != corrupted);
        headers.insert(0, (corrupted.to_owned(), value.clone()));
        match Envelope::from_headers(headers.as_slice()) {
            Ok(_) => {}
            Err(EnvelopeError::BadHeader { name, value: bad, .. }) => {
                prop_assert_eq!((name, bad), (corrupted, value));
            }
            Err(EnvelopeError::UnsupportedVersion(version)) => {
                prop_assert_eq!((header::VERSION, version), (corrupted, value));
            }
            Err(error) => prop_assert!(false, "{error} for {corrupted}: {value:?}"),
        }
    }
}

#[test]
fn a_megabyte_header_value_is_an_error_that_names_the_header() {
    let long = "x".repeat(1 << 20);
    let headers = [
        (header::VERSION, "1"),
        (header::TASK, long.as_str()),
        (header::ID, long.as_str()),
    ];
    assert!(matches!(
        Envelope::from_headers(headers.as_slice()),
        Err(EnvelopeError::BadHeader {
            name: header::ID,
            ..
        })
    ));
}
