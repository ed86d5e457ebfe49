//! No input makes a record decoder panic or overflow its stack: arbitrary bytes, JSON and
//! MessagePack of the wrong shape, valid records with a field changed, and values nested 10,000
//! deep are each a value or a `DecodeError`.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::strategy::Union;
use serde::Serialize;
use serde_json::Value;

use celerity_proto::ContentType;

use crate::strategies::*;
use crate::{CONTENT_TYPES, decode_with_every_decoder};

/// Every field name and tag value the records use, so generated objects reach past the first
/// missing field.
pub(crate) const WORDS: &[&str] = &[
    "v",
    "id",
    "task",
    "args",
    "kwargs",
    "chain",
    "link",
    "link_error",
    "chord",
    "chord_results",
    "kind",
    "signature",
    "group",
    "tasks",
    "header",
    "body",
    "policy",
    "fail_fast",
    "collect",
    "at_least",
    "successes",
    "index",
    "size",
    "indices",
    "immutable",
    "queue",
    "priority",
    "countdown_ms",
    "state",
    "SUCCESS",
    "result",
    "error",
    "type",
    "message",
    "causes",
    "meta",
    "retries",
    "worker",
    "updated_at_ms",
    "content_type",
    "application/msgpack",
    "member",
    "command",
    "ping",
    "revoke",
    "rate_limit",
    "rate",
    "10/s",
    "scope",
    "workers",
    "weights",
    "scheduled",
    "limit",
    "ok",
    "code",
    "hostname",
    "events",
    "task-started",
    "worker-online",
    "at_ms",
    "load",
    "freq_s",
    "holder",
    "until_ms",
    "entries",
    "reason",
    "revoked",
    "shutdown",
    "queues",
    "concurrency",
    "pong",
    "n",
];

/// A word of [`WORDS`] or any text.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(WORDS).prop_map(str::to_owned),
        1 => text(),
    ]
}

/// Any JSON value whose objects use the records' field names and whose strings are often their
/// tags: the records' shapes with the wrong types in their fields.
fn worded_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![json_value(), word().prop_map(Value::String)];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(word(), inner, 0..8).prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// `record` as a JSON value.
fn as_value<T: Serialize>(record: T) -> Value {
    serde_json::to_value(record).expect("every record is a JSON value")
}

/// A valid record of any kind, as a JSON value.
fn any_record() -> impl Strategy<Value = Value> {
    let records: Vec<BoxedStrategy<Value>> = vec![
        task_body().prop_map(as_value).boxed(),
        canvas_node().prop_map(as_value).boxed(),
        chord_definition().prop_map(as_value).boxed(),
        chord_completion().prop_map(as_value).boxed(),
        result_record().prop_map(as_value).boxed(),
        control_request().prop_map(as_value).boxed(),
        control_reply().prop_map(as_value).boxed(),
        stats_result().prop_map(as_value).boxed(),
        registered_result().prop_map(as_value).boxed(),
        held_tasks_result().prop_map(as_value).boxed(),
        scheduled_result().prop_map(as_value).boxed(),
        task_event_batch().prop_map(as_value).boxed(),
        worker_event().prop_map(as_value).boxed(),
        beat_entry_state().prop_map(as_value).boxed(),
        beat_lease().prop_map(as_value).boxed(),
        rate_limit_setting().prop_map(as_value).boxed(),
        priority_weights_setting().prop_map(as_value).boxed(),
        revocation_record().prop_map(as_value).boxed(),
    ];
    Union::new(records)
}

/// Replaces the node of `value` that `path` leads to with `replacement`, or removes it from its
/// parent when there is none: each step picks a child of an array or object, modulo its length,
/// and a leaf reached early is the node replaced.
fn change(value: &mut Value, path: &[usize], replacement: Option<Value>) {
    let Some((step, rest)) = path.split_first() else {
        return;
    };
    match value {
        Value::Array(items) if !items.is_empty() => {
            let index = step % items.len();
            match (rest.is_empty(), replacement) {
                (false, replacement) => change(&mut items[index], rest, replacement),
                (true, Some(replacement)) => items[index] = replacement,
                (true, None) => drop(items.remove(index)),
            }
        }
        Value::Object(fields) if !fields.is_empty() => {
            let key = (fields.keys().nth(step % fields.len()).cloned())
                .expect("the index is below the length");
            match (rest.is_empty(), replacement) {
                (false, replacement) => {
                    if let Some(child) = fields.get_mut(&key) {
                        change(child, rest, replacement);
                    }
                }
                (true, Some(replacement)) => drop(fields.insert(key, replacement)),
                (true, None) => drop(fields.remove(&key)),
            }
        }
        leaf => {
            if let Some(replacement) = replacement {
                *leaf = replacement;
            }
        }
    }
}

/// One MessagePack value of any type, as bytes: binary, extension and timestamp values, and maps
/// with keys that are not strings, which JSON cannot express.
fn msgpack_value() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        prop::sample::select(vec![0xc0u8, 0xc2, 0xc3, 0x00, 0x7f, 0xe0, 0xc1])
            .prop_map(|b| vec![b]),
        (
            prop::sample::select(vec![
                0xccu8, 0xcd, 0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3, 0xca, 0xcb
            ]),
            vec(any::<u8>(), 8)
        )
            .prop_map(|(marker, bytes)| {
                let width = match marker {
                    0xcc | 0xd0 => 1,
                    0xcd | 0xd1 => 2,
                    0xce | 0xd2 | 0xca => 4,
                    _ => 8,
                };
                [vec![marker], bytes[..width].to_vec()].concat()
            }),
        // A str 8: the words are shorter than 256 bytes.
        word().prop_map(|word| [vec![0xd9, word.len() as u8], word.into_bytes()].concat()),
        vec(any::<u8>(), 0..8).prop_map(|bytes| [vec![0xc4, bytes.len() as u8], bytes].concat()),
        (any::<i8>(), vec(any::<u8>(), 4)).prop_map(|(kind, bytes)| [
            vec![0xd6, kind as u8],
            bytes
        ]
        .concat()),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(|items| [
                vec![0x90 | items.len() as u8],
                items.concat()
            ]
            .concat()),
            vec((inner.clone(), inner), 0..5).prop_map(|pairs| {
                let marker = 0x80 | pairs.len() as u8;
                let fields = pairs
                    .into_iter()
                    .flat_map(|(key, value)| [key, value].concat());
                std::iter::once(marker).chain(fields).collect()
            }),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_are_a_value_or_an_error(
        bytes in prop_oneof![
            vec(any::<u8>(), 0..128),
            (prop::sample::select(vec![b'{', b'[', b'"', 0x81, 0x91, 0xde, 0xdf, 0xdc, 0xdd]),
                vec(any::<u8>(), 0..128))
                .prop_map(|(first, rest)| [vec![first], rest].concat()),
        ]
    ) {
        decode_with_every_decoder(&bytes);
        let _ = ContentType::sniff(&bytes);
    }

    #[test]
    fn arbitrary_json_like_text_is_a_value_or_an_error(
        tokens in vec(prop_oneof![
            prop::sample::select(vec![
                "{", "}", "[", "]", ":", ",", "\"", "null", "true", "-0", "1e999", "-1e-999",
                "18446744073709551616", "-9223372036854775809", "0.1e", "\\u0000", "\\ud800",
                " ", "\u{feff}", "\u{0}",
            ]).prop_map(str::to_owned),
            word().prop_map(|word| format!("{word:?}")),
        ], 0..48)
    ) {
        decode_with_every_decoder(tokens.concat().as_bytes());
    }

    #[test]
    fn wrong_shapes_in_either_encoding_are_a_value_or_an_error(value in worded_value()) {
        for content_type in CONTENT_TYPES {
            let bytes = content_type.encode(&value).expect("a JSON value encodes");
            decode_with_every_decoder(&bytes);
        }
    }

    #[test]
    fn arbitrary_msgpack_values_are_a_value_or_an_error(bytes in msgpack_value()) {
        decode_with_every_decoder(&bytes);
    }

    #[test]
    fn a_record_with_a_field_changed_or_removed_is_a_value_or_an_error(
        record in any_record(),
        path in vec(any::<usize>(), 1..6),
        replacement in proptest::option::of(worded_value()),
    ) {
        let mut value = record;
        change(&mut value, &path, replacement);
        for content_type in CONTENT_TYPES {
            let bytes = content_type.encode(&value).expect("a JSON value encodes");
            decode_with_every_decoder(&bytes);
        }
    }
}
