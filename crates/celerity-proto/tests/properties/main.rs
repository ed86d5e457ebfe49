//! Property tests of every decoder of the wire protocol: what is encoded decodes to the same
//! value, in JSON and in MessagePack and through headers, and no input makes a decoder panic or
//! overflow its stack; a bad input is a typed error.
//!
//! The decoders are public, so these tests use them as another implementation would: through
//! `ContentType::decode`, the `from_headers` readers and the `parse`/`FromStr` functions.
//! Each proptest runs proptest's default 256 cases.

mod deep;
mod headers;
mod robustness;
mod round_trip;
mod strategies;
mod text;

use std::fmt::Debug;

use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

use celerity_proto::{
    ActiveQueue, ActiveQueuesResult, BeatEntryState, BeatLease, CanvasNode, ChordCompletion,
    ChordDefinition, ChordMember, ChordPolicy, ChordResults, ConsumersResult, ContentType,
    ControlCommand, ControlReply, ControlRequest, DecodeError, ErrorRecord, HeldTask,
    HeldTasksResult, Namespace, PingResult, PoolResult, Priority, PriorityWeightsResult,
    PriorityWeightsSetting, QueueName, Rate, RateLimitResult, RateLimitSetting, RegisteredResult,
    ResultRecord, RevocationReason, RevocationRecord, RevokeResult, RevokedResult, ScheduledResult,
    ScheduledTask, SettingScope, ShutdownResult, SignatureRecord, StatsResult, TaskBody, TaskEvent,
    TaskEventBatch, TaskEventKind, TaskId, TaskName, TaskState, WorkerEvent, WorkerEventKind,
};

/// Both body encodings.
const CONTENT_TYPES: [ContentType; 2] = [ContentType::Json, ContentType::MsgPack];

/// Checks that `value` decodes to itself from its encoding in each content type, that encoding
/// it again gives the same bytes, and that `ContentType::sniff` tells the encodings of an object
/// apart.
fn check_round_trip<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let mut encodings = Vec::new();
    for content_type in CONTENT_TYPES {
        let bytes = content_type
            .encode(value)
            .map_err(|error| TestCaseError::fail(format!("{error:#?}")))?;
        let decoded: T = content_type
            .decode(&bytes)
            .map_err(|error| TestCaseError::fail(format!("{error} in {bytes:?}")))?;
        prop_assert_eq!(&decoded, value, "through {}", content_type);
        let again = content_type
            .encode(&decoded)
            .map_err(|error| TestCaseError::fail(format!("{error:#?}")))?;
        prop_assert_eq!(&again, &bytes, "{} bytes are stable", content_type);
        encodings.push((content_type, bytes));
    }
    if encodings[0].1.first() == Some(&b'{') {
        for (content_type, bytes) in &encodings {
            prop_assert_eq!(ContentType::sniff(bytes), Some(*content_type));
        }
    }
    Ok(())
}

/// A record decoder: `ContentType::decode` of one record type, its value dropped.
type Decoder = fn(ContentType, &[u8]) -> Result<(), DecodeError>;

/// The [`Decoder`] of `T`.
fn decode_as<T: DeserializeOwned>(
    content_type: ContentType,
    bytes: &[u8],
) -> Result<(), DecodeError> {
    content_type.decode::<T>(bytes).map(drop)
}

/// Every record the protocol decodes from a body, a KV value or a control message, by name.
const DECODERS: &[(&str, Decoder)] = &[
    ("TaskBody", decode_as::<TaskBody>),
    ("CanvasNode", decode_as::<CanvasNode>),
    ("SignatureRecord", decode_as::<SignatureRecord>),
    ("ChordPolicy", decode_as::<ChordPolicy>),
    ("ChordMember", decode_as::<ChordMember>),
    ("ChordResults", decode_as::<ChordResults>),
    ("ChordDefinition", decode_as::<ChordDefinition>),
    ("ChordCompletion", decode_as::<ChordCompletion>),
    ("ResultRecord", decode_as::<ResultRecord>),
    ("ErrorRecord", decode_as::<ErrorRecord>),
    ("TaskState", decode_as::<TaskState>),
    ("ControlRequest", decode_as::<ControlRequest>),
    ("ControlCommand", decode_as::<ControlCommand>),
    ("ControlReply", decode_as::<ControlReply>),
    ("PingResult", decode_as::<PingResult>),
    ("RegisteredResult", decode_as::<RegisteredResult>),
    ("StatsResult", decode_as::<StatsResult>),
    ("ActiveQueue", decode_as::<ActiveQueue>),
    ("ActiveQueuesResult", decode_as::<ActiveQueuesResult>),
    ("RevokedResult", decode_as::<RevokedResult>),
    ("RevokeResult", decode_as::<RevokeResult>),
    ("RateLimitResult", decode_as::<RateLimitResult>),
    ("PriorityWeightsResult", decode_as::<PriorityWeightsResult>),
    ("RevocationReason", decode_as::<RevocationReason>),
    ("RevocationRecord", decode_as::<RevocationRecord>),
    ("TaskEventKind", decode_as::<TaskEventKind>),
    ("TaskEvent", decode_as::<TaskEvent>),
    ("TaskEventBatch", decode_as::<TaskEventBatch>),
    ("WorkerEventKind", decode_as::<WorkerEventKind>),
    ("WorkerEvent", decode_as::<WorkerEvent>),
    ("HeldTask", decode_as::<HeldTask>),
    ("HeldTasksResult", decode_as::<HeldTasksResult>),
    ("ScheduledTask", decode_as::<ScheduledTask>),
    ("ScheduledResult", decode_as::<ScheduledResult>),
    ("PoolResult", decode_as::<PoolResult>),
    ("ConsumersResult", decode_as::<ConsumersResult>),
    ("ShutdownResult", decode_as::<ShutdownResult>),
    ("BeatLease", decode_as::<BeatLease>),
    ("BeatEntryState", decode_as::<BeatEntryState>),
    ("SettingScope", decode_as::<SettingScope>),
    ("RateLimitSetting", decode_as::<RateLimitSetting>),
    (
        "PriorityWeightsSetting",
        decode_as::<PriorityWeightsSetting>,
    ),
    ("Rate", decode_as::<Rate>),
    ("TaskId", decode_as::<TaskId>),
    ("TaskName", decode_as::<TaskName>),
    ("QueueName", decode_as::<QueueName>),
    ("Namespace", decode_as::<Namespace>),
    ("Priority", decode_as::<Priority>),
    ("serde_json::Value", decode_as::<serde_json::Value>),
];

/// Runs every decoder on `bytes` in both encodings: each returns a value or an error.
fn decode_with_every_decoder(bytes: &[u8]) {
    for (_, decode) in DECODERS {
        for content_type in CONTENT_TYPES {
            let _ = decode(content_type, bytes);
        }
    }
}
