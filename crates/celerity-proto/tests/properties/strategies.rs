//! Proptest strategies for every wire value: names, texts, JSON values and the records built from
//! them.
//!
//! They build values through the public constructors and fields only, so they stay valid values a
//! producer could send; they are not `Arbitrary` impls on the public types.

mod task;
mod worker;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

use celerity_proto::{
    ContentType, ErrorRecord, Namespace, Priority, QueueName, Rate, TaskId, TaskName, TaskState,
};

pub(crate) use task::*;
pub(crate) use worker::*;

/// Any text, line breaks and control characters included.
pub(crate) fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "(?s).{0,16}",
        1 => "[\\x00-\\x1f\"\\\\\u{7f}\u{fffd}\u{10ffff}]{0,8}",
    ]
}

/// A task id, now and then one of the longest (128 characters).
pub(crate) fn task_id() -> impl Strategy<Value = TaskId> {
    prop_oneof![
        8 => "[A-Za-z0-9_=-]{1,16}",
        1 => "[A-Za-z0-9_=-]{128}",
    ]
    .prop_map(|id| TaskId::new(id).expect("the pattern is the task id rule"))
}

/// A task name: printable characters of any script, now and then one of the longest.
pub(crate) fn task_name() -> impl Strategy<Value = TaskName> {
    prop_oneof![
        8 => "[^\\s\\p{Cc}]{1,16}",
        1 => "[a-z.:]{256}",
    ]
    .prop_map(|name| TaskName::new(name).expect("the pattern is the task name rule"))
}

/// A queue name, now and then one of the longest (64 characters).
pub(crate) fn queue_name() -> impl Strategy<Value = QueueName> {
    prop_oneof![
        8 => "[A-Za-z0-9_-]{1,16}",
        1 => "[A-Za-z0-9_-]{64}",
    ]
    .prop_map(|name| QueueName::new(name).expect("the pattern is the queue name rule"))
}

/// A namespace.
pub(crate) fn namespace() -> impl Strategy<Value = Namespace> {
    "[a-z0-9-]{1,32}"
        .prop_map(|name| Namespace::new(name).expect("the pattern is the namespace rule"))
}

/// A priority, 0 to 9.
pub(crate) fn priority() -> impl Strategy<Value = Priority> {
    (0u8..=9).prop_map(|level| Priority::new(level).expect("0 to 9 is a priority"))
}

/// A rate of any count per second, minute or hour.
pub(crate) fn rate() -> impl Strategy<Value = Rate> {
    (1u32.., prop::sample::select(vec![1u64, 60, 3600]))
        .prop_map(|(count, period)| Rate::per(count, period).expect("a count above 0 per s/m/h"))
}

/// A body encoding.
pub(crate) fn content_type() -> impl Strategy<Value = ContentType> {
    prop_oneof![Just(ContentType::Json), Just(ContentType::MsgPack)]
}

/// A finite `f64` of any magnitude: JSON has no NaN or infinity (serde_json writes them as
/// `null`), so no record carries one.
pub(crate) fn finite_f64() -> impl Strategy<Value = f64> {
    use prop::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

/// Any JSON value, nested a few levels deep.
pub(crate) fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite_f64().prop_map(|number| {
            Value::Number(Number::from_f64(number).expect("the number is finite"))
        }),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(text(), inner, 0..4).prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A JSON value other than `null`, for an `Option<Value>` field: `Some(null)` is written
/// `"field": null` and read back as `None` (protocol 5.3 lets `result` and `meta` be `null`),
/// which `an_optional_null_value_reads_back_as_none` pins.
pub(crate) fn non_null_value() -> impl Strategy<Value = Value> {
    json_value().prop_filter("null reads back as an absent value", |value| {
        !value.is_null()
    })
}

/// Named arguments or any JSON object.
pub(crate) fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    btree_map(text(), json_value(), 0..4).prop_map(|map| map.into_iter().collect())
}

/// A task state: one of the protocol's, or a custom one.
///
/// A custom state is never empty and never spells a protocol state (`Custom("SUCCESS")` is read
/// back as `Success`): the task's `update_state` keeps to that, the type does not.
pub(crate) fn task_state() -> impl Strategy<Value = TaskState> {
    prop_oneof![
        prop::sample::select(vec![
            TaskState::Unknown,
            TaskState::Pending,
            TaskState::Received,
            TaskState::Started,
            TaskState::Success,
            TaskState::Failure,
            TaskState::Retry,
            TaskState::Revoked,
        ]),
        "(?s).{1,16}".prop_filter_map("a custom state spells no protocol state", |name| {
            match TaskState::parse(&name) {
                custom @ TaskState::Custom(_) => Some(custom),
                _ => None,
            }
        }),
    ]
}

/// A task's error.
pub(crate) fn error_record() -> impl Strategy<Value = ErrorRecord> {
    (
        text(),
        text(),
        vec(text(), 0..3),
        proptest::option::of(text()),
    )
        .prop_map(|(kind, message, causes, traceback)| {
            let mut error = ErrorRecord::new(kind, message);
            error.causes = causes;
            error.traceback = traceback;
            error
        })
}
