//! The wire format, pinned: the golden files in `tests/golden/` decode to the values
//! `docs/protocol.md` documents, the same values encode to the golden bytes, and producers that know
//! only the document (the golden bytes, and a Python client with nothing but nats-py) get results
//! from a Rust worker.
//!
//! A golden mismatch is a protocol change.
//! When it is deliberate, update `docs/protocol.md` (and bump the version if old readers break),
//! then rewrite the files with `CELERITY_UPDATE_GOLDEN=1 cargo nextest run -p celerity-it protocol`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::header::HeaderName;
use async_nats::jetstream;
use celerity_proto::{
    ContentType, DeadLetter, DeadLetterReason, Envelope, ErrorRecord, Layout, Namespace, Priority,
    QueueName, ResultRecord, TaskBody, TaskId, TaskName, TaskState,
};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::support::{WorkerProcess, client, server};

mod control;
mod events;
mod operate;

const WAIT: Duration = Duration::from_secs(20);
const PYTHON_DEADLINE: Duration = Duration::from_secs(90);

const ADD_JSON_ID: &str = "0190a5b2-7c1e-7f00-8000-000000000001";
const ADD_MSGPACK_ID: &str = "0190a5b2-7c1e-7f00-8000-000000000002";
const FAIL_ID: &str = "0190a5b2-7c1e-7f00-8000-000000000003";
const UNKNOWN_TASK_ID: &str = "0190a5b2-7c1e-7f00-8000-000000000004";
const REPLY_SUBJECT: &str = "celerity.reply.0190a5b27c1e7f00800000000000c11e";
const SENT_AT_MS: u64 = 1_700_000_000_000;
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const GOLDEN_WORKER: &str = "worker-1";
const KV_CREATE_HEADER: &str = "Nats-Expected-Last-Subject-Sequence";

/// One NATS publish: what a golden file holds.
#[derive(Debug, Clone, PartialEq)]
struct Wire {
    subject: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A golden file and the reference value it must equal.
struct GoldenCase {
    file: &'static str,
    comment: &'static str,
    wire: Wire,
}

/// The on-disk form of a golden file; see `tests/golden/README.md`.
#[derive(Debug, Deserialize)]
struct GoldenFile {
    subject: String,
    headers: Vec<(String, String)>,
    body_hex: String,
    #[serde(default)]
    body_text: Option<String>,
    #[serde(default)]
    body_decoded: Option<Value>,
}

// Reference values: built with `celerity_proto`, never by hand.

fn layout() -> Layout {
    Layout::new(Namespace::default())
}

fn id(value: &str) -> TaskId {
    TaskId::new(value).expect("reference ids follow the task id rule")
}

fn add_envelope(task_id: &str, content_type: ContentType) -> Envelope {
    let mut envelope = Envelope::new(
        id(task_id),
        TaskName::new("it.add").expect("a valid task name"),
    );
    envelope.content_type = content_type;
    envelope.priority = Priority::new(5).expect("5 is a priority");
    envelope.reply_to = Some(REPLY_SUBJECT.to_owned());
    envelope.sent_at_ms = Some(SENT_AT_MS);
    envelope.traceparent = Some(TRACEPARENT.to_owned());
    envelope.extra = vec![("X-Tenant".to_owned(), "acme".to_owned())];
    envelope
}

fn add_body() -> TaskBody {
    let mut kwargs = serde_json::Map::new();
    kwargs.insert("y".to_owned(), json!(40));
    TaskBody::new(vec![json!(2)], kwargs)
}

fn task_wire(envelope: &Envelope, body: &TaskBody) -> Wire {
    let mut headers: Vec<(String, String)> = envelope
        .to_headers()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
    headers.extend(
        envelope
            .extra_headers()
            .map(|(name, value)| (name.to_owned(), value.to_owned())),
    );
    Wire {
        subject: layout().task_subject(&QueueName::default(), envelope.priority),
        headers,
        body: envelope
            .content_type
            .encode(body)
            .expect("the reference body encodes"),
    }
}

fn kv_subject(task_id: &str) -> String {
    format!("$KV.{}.{task_id}", layout().results_bucket())
}

fn pending_record() -> ResultRecord {
    let mut record = ResultRecord::new(id(ADD_JSON_ID), TaskState::Pending, SENT_AT_MS);
    record.task = Some(TaskName::new("it.add").expect("a valid task name"));
    record
}

fn success_record(task_id: &str) -> ResultRecord {
    let mut record =
        ResultRecord::new(id(task_id), TaskState::Success, SENT_AT_MS + 250).with_result(json!(42));
    record.task = Some(TaskName::new("it.add").expect("a valid task name"));
    record.worker = Some(GOLDEN_WORKER.to_owned());
    record.started_at_ms = Some(SENT_AT_MS + 200);
    // The task's message carried a traceparent: the record names its trace.
    record.trace_id = TRACEPARENT.split('-').nth(1).map(str::to_owned);
    record
}

fn failure_record() -> ResultRecord {
    let mut error = ErrorRecord::new("celerity_it::PaymentError", "card declined: no funds");
    error.causes = vec!["gateway timeout".to_owned()];
    let mut record =
        ResultRecord::new(id(FAIL_ID), TaskState::Failure, SENT_AT_MS + 250).with_error(error);
    record.task = Some(TaskName::new("it.fail").expect("a valid task name"));
    record.worker = Some(GOLDEN_WORKER.to_owned());
    record.started_at_ms = Some(SENT_AT_MS + 200);
    record
}

fn record_wire(
    subject: String,
    headers: &[(&str, &str)],
    record: &ResultRecord,
    content_type: ContentType,
) -> Wire {
    Wire {
        subject,
        headers: headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
        body: content_type
            .encode(record)
            .expect("the reference record encodes"),
    }
}

fn unknown_task_envelope() -> Envelope {
    let mut envelope = Envelope::new(
        id(UNKNOWN_TASK_ID),
        TaskName::new("it.nope").expect("a valid task name"),
    );
    envelope.sent_at_ms = Some(SENT_AT_MS);
    envelope
}

fn dead_letter() -> DeadLetter {
    DeadLetter {
        reason: DeadLetterReason::UnknownTask,
        error: format!("no task named \"it.nope\" is registered on worker {GOLDEN_WORKER}"),
        worker: GOLDEN_WORKER.to_owned(),
        deliveries: 1,
        subject: "celerity.q.default.0".to_owned(),
        stream_sequence: 7,
        time_ms: SENT_AT_MS + 300,
    }
}

fn dead_letter_wire() -> Wire {
    let original = task_wire(&unknown_task_envelope(), &TaskBody::default());
    let mut headers = original.headers;
    headers.extend(
        dead_letter()
            .to_headers()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value)),
    );
    Wire {
        subject: layout().dead_letter_subject(&QueueName::default()),
        headers,
        body: original.body,
    }
}

fn reference_cases() -> Vec<GoldenCase> {
    let mut cases = vec![
        GoldenCase {
            file: "task_v1_json.json",
            comment: "Task message, JSON body: it.add(2, y=40) on queue default at priority 5, with a reply subject, a send time, a W3C traceparent and one user header.",
            wire: task_wire(&add_envelope(ADD_JSON_ID, ContentType::Json), &add_body()),
        },
        GoldenCase {
            file: "task_v1_msgpack.json",
            comment: "Task message, MessagePack body: the same call as task_v1_json.json with its own id and Content-Type: application/msgpack. body_decoded is the body as JSON, for comparison after decoding.",
            wire: task_wire(
                &add_envelope(ADD_MSGPACK_ID, ContentType::MsgPack),
                &add_body(),
            ),
        },
        GoldenCase {
            file: "result_v1_pending.json",
            comment: "PENDING record of task_v1_json.json, written by the producer with a create-only KV publish (JetStream publish with Nats-Expected-Last-Subject-Sequence: 0).",
            wire: record_wire(
                kv_subject(ADD_JSON_ID),
                &[(KV_CREATE_HEADER, "0")],
                &pending_record(),
                ContentType::Json,
            ),
        },
        GoldenCase {
            file: "result_v1_success.json",
            comment: "SUCCESS record of task_v1_json.json, as the worker puts it in the results bucket (a JetStream publish with no headers). Readers get body_hex back as the KV value.",
            wire: record_wire(
                kv_subject(ADD_JSON_ID),
                &[],
                &success_record(ADD_JSON_ID),
                ContentType::Json,
            ),
        },
        GoldenCase {
            file: "result_v1_success_msgpack.json",
            comment: "SUCCESS record of task_v1_msgpack.json: records are encoded like the task's body, so this one is MessagePack. body_decoded is the record as JSON.",
            wire: record_wire(
                kv_subject(ADD_MSGPACK_ID),
                &[],
                &success_record(ADD_MSGPACK_ID),
                ContentType::MsgPack,
            ),
        },
        GoldenCase {
            file: "result_v1_failure.json",
            comment: "FAILURE record of it.fail(\"no funds\"): an error with its type, message and cause chain, and no result field.",
            wire: record_wire(
                kv_subject(FAIL_ID),
                &[],
                &failure_record(),
                ContentType::Json,
            ),
        },
        GoldenCase {
            file: "reply_v1_success.json",
            comment: "Reply notification of task_v1_json.json: a core NATS publish to the task's Celerity-Reply-To subject, after the record is stored, with the task id in Celerity-Id and the stored record, byte for byte, as the body.",
            wire: record_wire(
                REPLY_SUBJECT.to_owned(),
                &[("Celerity-Id", ADD_JSON_ID)],
                &success_record(ADD_JSON_ID),
                ContentType::Json,
            ),
        },
        GoldenCase {
            file: "dead_letter_v1.json",
            comment: "Dead letter of a task no worker knows (it.nope, no arguments): the original headers and body, then the Celerity-Dlq-* headers, stored on <ns>.dlq.<queue>.",
            wire: dead_letter_wire(),
        },
    ];
    cases.extend(control::cases());
    cases.extend(events::cases());
    cases.extend(operate::cases());
    cases
}

// Golden files: reading, comparing and (on request) rewriting.

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace root")
        .to_path_buf()
}

fn golden_path(file: &str) -> PathBuf {
    workspace_root().join("tests/golden").join(file)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn from_hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd-length hex {text:?}");
    (0..text.len())
        .step_by(2)
        .map(|start| {
            u8::from_str_radix(&text[start..start + 2], 16)
                .unwrap_or_else(|_| panic!("invalid hex at offset {start} in {text:?}"))
        })
        .collect()
}

/// Reads a golden file and checks that its readable copies of the body agree with its bytes.
fn load(file: &str) -> Wire {
    let path = golden_path(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read golden file {}: {error}", path.display()));
    let golden: GoldenFile = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("golden file {} is malformed: {error}", path.display()));
    let body = from_hex(&golden.body_hex);
    if let Some(body_text) = &golden.body_text {
        assert_eq!(
            body_text.as_bytes(),
            body.as_slice(),
            "{file}: body_text and body_hex disagree"
        );
    }
    if let Some(decoded) = &golden.body_decoded {
        let value: Value = ContentType::MsgPack
            .decode(&body)
            .unwrap_or_else(|error| panic!("{file}: body_hex is not MessagePack: {error}"));
        assert_eq!(
            &value, decoded,
            "{file}: body_decoded and body_hex disagree"
        );
    }
    Wire {
        subject: golden.subject,
        headers: golden.headers,
        body,
    }
}

fn render(case: &GoldenCase) -> String {
    let quote = |text: &str| serde_json::to_string(text).expect("strings serialize");
    let wire = &case.wire;
    let mut out = String::from("{\n");
    out += &format!("  \"comment\": {},\n", quote(case.comment));
    out += &format!("  \"subject\": {},\n", quote(&wire.subject));
    if wire.headers.is_empty() {
        out += "  \"headers\": [],\n";
    } else {
        let lines: Vec<String> = wire
            .headers
            .iter()
            .map(|(name, value)| format!("    [{}, {}]", quote(name), quote(value)))
            .collect();
        out += &format!("  \"headers\": [\n{}\n  ],\n", lines.join(",\n"));
    }
    match ContentType::sniff(&wire.body) {
        Some(ContentType::MsgPack) => {
            let value: Value = ContentType::MsgPack
                .decode(&wire.body)
                .expect("reference MessagePack bodies decode");
            out += &format!(
                "  \"body_decoded\": {},\n",
                serde_json::to_string(&value).expect("values serialize")
            );
        }
        _ => {
            let text = std::str::from_utf8(&wire.body).expect("JSON bodies are UTF-8");
            out += &format!("  \"body_text\": {},\n", quote(text));
        }
    }
    out += &format!("  \"body_hex\": {}\n}}\n", quote(&to_hex(&wire.body)));
    out
}

fn update_requested() -> bool {
    std::env::var("CELERITY_UPDATE_GOLDEN").is_ok_and(|value| value == "1")
}

fn write_atomically(path: &Path, text: &str) {
    let dir = path.parent().expect("golden files live in a directory");
    std::fs::create_dir_all(dir).expect("the golden directory can be created");
    let temporary = tempfile::NamedTempFile::new_in(dir).expect("a temp file beside the goldens");
    std::fs::write(temporary.path(), text).expect("the golden file is written");
    temporary
        .persist(path)
        .expect("the golden file is moved into place");
}

/// Asserts that `case.wire` is exactly what its golden file holds (rewriting the file first when
/// `CELERITY_UPDATE_GOLDEN=1`).
fn check_golden(case: &GoldenCase) {
    let path = golden_path(case.file);
    if update_requested() {
        write_atomically(&path, &render(case));
    }
    let golden = load(case.file);
    let hint = "a golden mismatch is a protocol change: update docs/protocol.md, bump the protocol \
                version if old readers break, then rerun with CELERITY_UPDATE_GOLDEN=1";
    assert_eq!(
        golden.subject, case.wire.subject,
        "{}: subject differs; {hint}",
        case.file
    );
    assert_eq!(
        golden.headers, case.wire.headers,
        "{}: headers differ; {hint}",
        case.file
    );
    assert!(
        golden.body == case.wire.body,
        "{}: body differs; {hint}\n golden: {}\n encoded: {}\n encoded text: {}",
        case.file,
        to_hex(&golden.body),
        to_hex(&case.wire.body),
        String::from_utf8_lossy(&case.wire.body),
    );
}

fn case(file: &str) -> GoldenCase {
    reference_cases()
        .into_iter()
        .find(|case| case.file == file)
        .unwrap_or_else(|| panic!("no reference case for {file}"))
}

fn decode_record(wire: &Wire) -> (ContentType, ResultRecord) {
    let content_type = ContentType::sniff(&wire.body).expect("a record starts with a map marker");
    let record = content_type
        .decode(&wire.body)
        .expect("the golden record decodes");
    (content_type, record)
}

// Decoding: the golden files say what protocol.md says.

#[test]
fn json_task_golden_decodes_to_the_documented_envelope_and_arguments() {
    let wire = load("task_v1_json.json");
    assert_eq!(
        layout().parse_task_subject(&wire.subject),
        Some((QueueName::default(), Priority::new(5).expect("a priority")))
    );
    let envelope = Envelope::from_headers(wire.headers.as_slice()).expect("a valid envelope");
    assert_eq!(envelope.id.as_str(), ADD_JSON_ID);
    assert_eq!(envelope.task.as_str(), "it.add");
    assert_eq!(envelope.content_type, ContentType::Json);
    assert_eq!(envelope.retries, 0);
    assert_eq!(envelope.priority.get(), 5);
    assert_eq!(envelope.reply_to.as_deref(), Some(REPLY_SUBJECT));
    assert_eq!(envelope.parent_id, None);
    assert_eq!(envelope.root_id, None);
    assert_eq!(envelope.group_id, None);
    assert_eq!(envelope.chord_id, None);
    assert_eq!(envelope.eta_ms, None);
    assert_eq!(envelope.expires_ms, None);
    assert_eq!(envelope.sent_at_ms, Some(SENT_AT_MS));
    assert_eq!(envelope.traceparent.as_deref(), Some(TRACEPARENT));
    assert_eq!(envelope.tracestate, None);
    assert_eq!(
        envelope.extra,
        vec![("X-Tenant".to_owned(), "acme".to_owned())]
    );
    assert!(
        wire.headers
            .contains(&("Nats-Msg-Id".to_owned(), ADD_JSON_ID.to_owned())),
        "the task id is also the JetStream de-duplication id"
    );
    assert!(
        !wire.headers.iter().any(|(name, _)| name == "Content-Type"),
        "JSON is the default and is not spelled out"
    );
    let body: TaskBody = ContentType::Json
        .decode(&wire.body)
        .expect("a JSON task body");
    assert_eq!(body.args, vec![json!(2)]);
    assert_eq!(Value::Object(body.kwargs), json!({"y": 40}));
}

#[test]
fn msgpack_task_golden_decodes_to_the_same_call_as_the_json_one() {
    let json_wire = load("task_v1_json.json");
    let msgpack_wire = load("task_v1_msgpack.json");
    assert_eq!(msgpack_wire.subject, json_wire.subject);
    let envelope =
        Envelope::from_headers(msgpack_wire.headers.as_slice()).expect("a valid envelope");
    assert_eq!(envelope.id.as_str(), ADD_MSGPACK_ID);
    assert_eq!(envelope.content_type, ContentType::MsgPack);
    assert_eq!(
        ContentType::sniff(&msgpack_wire.body),
        Some(ContentType::MsgPack)
    );
    let mut expected = Envelope::from_headers(json_wire.headers.as_slice()).expect("valid");
    expected.id = id(ADD_MSGPACK_ID);
    expected.content_type = ContentType::MsgPack;
    assert_eq!(envelope, expected);
    let msgpack_body: TaskBody = ContentType::MsgPack
        .decode(&msgpack_wire.body)
        .expect("a MessagePack task body");
    let json_body: TaskBody = ContentType::Json
        .decode(&json_wire.body)
        .expect("a JSON task body");
    assert_eq!(msgpack_body, json_body);
}

#[test]
fn pending_golden_is_a_create_only_publish_of_a_pending_record() {
    let wire = load("result_v1_pending.json");
    assert_eq!(
        wire.subject,
        "$KV.celerity_results.".to_owned() + ADD_JSON_ID
    );
    assert_eq!(
        wire.headers,
        vec![(KV_CREATE_HEADER.to_owned(), "0".to_owned())]
    );
    let (content_type, record) = decode_record(&wire);
    assert_eq!(content_type, ContentType::Json);
    assert_eq!(record.v, 1);
    assert_eq!(record.id.as_str(), ADD_JSON_ID);
    assert_eq!(record.state, TaskState::Pending);
    assert_eq!(record.task.as_ref().map(TaskName::as_str), Some("it.add"));
    assert_eq!(record.result, None);
    assert_eq!(record.error, None);
    assert_eq!(record.meta, None);
    assert_eq!(record.retries, 0);
    assert_eq!(record.worker, None);
    assert_eq!(record.updated_at_ms, SENT_AT_MS);
    assert_eq!(record.started_at_ms, None);
}

#[test]
fn success_goldens_decode_to_the_same_record_in_json_and_msgpack() {
    for (file, task_id, expected_type) in [
        ("result_v1_success.json", ADD_JSON_ID, ContentType::Json),
        (
            "result_v1_success_msgpack.json",
            ADD_MSGPACK_ID,
            ContentType::MsgPack,
        ),
    ] {
        let wire = load(file);
        assert_eq!(wire.subject, kv_subject(task_id), "{file}");
        assert!(
            wire.headers.is_empty(),
            "{file}: a worker's put has no headers"
        );
        let (content_type, record) = decode_record(&wire);
        assert_eq!(content_type, expected_type, "{file}");
        assert_eq!(record.v, 1, "{file}");
        assert_eq!(record.id.as_str(), task_id, "{file}");
        assert_eq!(record.state, TaskState::Success, "{file}");
        assert!(record.state.is_ready(), "{file}");
        assert_eq!(
            record.task.as_ref().map(TaskName::as_str),
            Some("it.add"),
            "{file}"
        );
        assert_eq!(record.result, Some(json!(42)), "{file}");
        assert_eq!(record.error, None, "{file}");
        assert_eq!(record.meta, None, "{file}");
        assert_eq!(record.retries, 0, "{file}");
        assert_eq!(record.worker.as_deref(), Some(GOLDEN_WORKER), "{file}");
        assert_eq!(record.updated_at_ms, SENT_AT_MS + 250, "{file}");
        assert_eq!(record.started_at_ms, Some(SENT_AT_MS + 200), "{file}");
    }
}

#[test]
fn failure_golden_carries_the_error_type_message_and_causes() {
    let wire = load("result_v1_failure.json");
    let (_, record) = decode_record(&wire);
    assert_eq!(record.id.as_str(), FAIL_ID);
    assert_eq!(record.state, TaskState::Failure);
    assert!(record.state.is_ready());
    assert_eq!(record.task.as_ref().map(TaskName::as_str), Some("it.fail"));
    assert_eq!(record.result, None);
    let error = record.error.expect("a FAILURE record has an error");
    assert_eq!(error.kind, "celerity_it::PaymentError");
    assert_eq!(error.message, "card declined: no funds");
    assert_eq!(error.causes, vec!["gateway timeout".to_owned()]);
    assert_eq!(error.traceback, None);
    let raw: Value = serde_json::from_slice(&wire.body).expect("JSON");
    assert!(
        raw.get("result").is_none(),
        "absent fields are left out, not null"
    );
    assert_eq!(raw["error"]["type"], "celerity_it::PaymentError");
}

#[test]
fn reply_golden_carries_the_task_id_header_and_the_stored_record() {
    let reply = load("reply_v1_success.json");
    let stored = load("result_v1_success.json");
    assert_eq!(reply.subject, REPLY_SUBJECT);
    assert_eq!(
        reply.headers,
        vec![("Celerity-Id".to_owned(), ADD_JSON_ID.to_owned())]
    );
    assert_eq!(
        reply.body, stored.body,
        "the notification body is the stored value"
    );
    let task = Envelope::from_headers(load("task_v1_json.json").headers.as_slice())
        .expect("a valid envelope");
    assert_eq!(task.reply_to.as_deref(), Some(reply.subject.as_str()));
}

#[test]
fn dead_letter_golden_keeps_the_original_message_and_adds_the_reason() {
    let wire = load("dead_letter_v1.json");
    assert_eq!(wire.subject, "celerity.dlq.default");
    let letter = DeadLetter::from_headers(wire.headers.as_slice()).expect("dead-letter headers");
    assert_eq!(letter.reason, DeadLetterReason::UnknownTask);
    assert_eq!(letter.reason.code(), "unknown_task");
    assert_eq!(
        letter.error,
        "no task named \"it.nope\" is registered on worker worker-1"
    );
    assert_eq!(letter.worker, GOLDEN_WORKER);
    assert_eq!(letter.deliveries, 1);
    assert_eq!(letter.subject, "celerity.q.default.0");
    assert_eq!(letter.stream_sequence, 7);
    assert_eq!(letter.time_ms, SENT_AT_MS + 300);
    let original = Envelope::from_headers(wire.headers.as_slice())
        .expect("the original envelope is still readable");
    assert_eq!(original.task.as_str(), "it.nope");
    assert_eq!(original.id.as_str(), UNKNOWN_TASK_ID);
    assert!(
        original.extra.is_empty(),
        "Celerity-Dlq-* headers are reserved, not user headers"
    );
    assert_eq!(wire.body, b"{\"args\":[],\"kwargs\":{}}");
}

// Encoding: the reference values produce the golden bytes.

#[test]
fn reference_tasks_encode_to_the_golden_bytes() {
    check_golden(&case("task_v1_json.json"));
    check_golden(&case("task_v1_msgpack.json"));
}

#[test]
fn reference_records_encode_to_the_golden_bytes() {
    check_golden(&case("result_v1_pending.json"));
    check_golden(&case("result_v1_success.json"));
    check_golden(&case("result_v1_success_msgpack.json"));
    check_golden(&case("result_v1_failure.json"));
    check_golden(&case("reply_v1_success.json"));
}

#[test]
fn reference_dead_letter_encodes_to_the_golden_bytes() {
    check_golden(&case("dead_letter_v1.json"));
}

#[test]
fn every_golden_file_has_a_reference_case() {
    let mut on_disk: Vec<String> = std::fs::read_dir(workspace_root().join("tests/golden"))
        .expect("tests/golden exists")
        .map(|entry| {
            entry
                .expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".json"))
        .collect();
    on_disk.sort();
    let mut known: Vec<String> = reference_cases()
        .iter()
        .map(|case| case.file.to_owned())
        .collect();
    known.sort();
    assert_eq!(
        on_disk, known,
        "a golden file without a reference case is never checked"
    );
}

// Against a real worker.

fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let name = HeaderName::try_from(name.as_str()).expect("golden header names are valid");
        map.append(name, value.as_str());
    }
    map
}

fn header_pairs(map: &HeaderMap) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for (name, values) in map.iter() {
        for value in values {
            pairs.push((AsRef::<str>::as_ref(name).to_owned(), value.to_string()));
        }
    }
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_tasks_run_on_a_rust_worker_and_produce_the_golden_records() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "golden-worker", &["-c", "2"]);
    let nats = async_nats::connect(server.url()).await.expect("connect");
    let mut replies = nats
        .subscribe(REPLY_SUBJECT)
        .await
        .expect("subscribe to the golden reply subject");
    nats.flush().await.expect("flush the subscription");
    let js = jetstream::new(nats.clone());
    for file in ["task_v1_json.json", "task_v1_msgpack.json"] {
        let wire = load(file);
        let ack = js
            .publish_with_headers(wire.subject, header_map(&wire.headers), wire.body.into())
            .await
            .expect("publish the golden task")
            .await
            .expect("JetStream acknowledges the golden task");
        assert_eq!(ack.stream, "CELERITY_Q_default");
    }

    let mut notified: HashMap<String, bytes::Bytes> = HashMap::new();
    tokio::time::timeout(WAIT, async {
        while notified.len() < 2 {
            let message = replies
                .next()
                .await
                .expect("the reply subscription stays open");
            let task_id = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get("Celerity-Id"))
                .expect("a notification names its task in Celerity-Id")
                .to_string();
            notified.insert(task_id, message.payload);
        }
    })
    .await
    .expect("the worker never published both final records to the golden reply subject");

    let kv = js
        .get_key_value("celerity_results")
        .await
        .expect("the results bucket");
    for (task_id, golden_file) in [
        (ADD_JSON_ID, "result_v1_success.json"),
        (ADD_MSGPACK_ID, "result_v1_success_msgpack.json"),
    ] {
        let stored = kv
            .get(task_id)
            .await
            .expect("read the results bucket")
            .expect("the worker stored a record");
        assert_eq!(
            Some(&stored),
            notified.get(task_id),
            "{task_id}: the notification carries the stored bytes"
        );
        let golden = load(golden_file);
        let (content_type, expected) = decode_record(&golden);
        assert_eq!(
            ContentType::sniff(&stored),
            Some(content_type),
            "{task_id}: the record is encoded like the task"
        );
        let mut actual: ResultRecord = content_type.decode(&stored).expect("a valid record");
        assert_eq!(actual.worker.as_deref(), Some("golden-worker"));
        let started = actual
            .started_at_ms
            .expect("a final record has a start time");
        assert!(started <= actual.updated_at_ms);
        // The queue message it ran (5.1); its sequence depends on the order of the sends.
        let message = actual
            .message
            .take()
            .expect("a final record names its message");
        assert!(
            message.starts_with("CELERITY_Q_default:"),
            "{task_id}: {message}"
        );
        actual.message = expected.message.clone();
        actual.worker = expected.worker.clone();
        actual.started_at_ms = expected.started_at_ms;
        actual.updated_at_ms = expected.updated_at_ms;
        assert_eq!(actual, expected, "{task_id}");
        assert_eq!(
            content_type.encode(&actual).expect("encodes"),
            golden.body,
            "{task_id}: with its times and worker set to the golden ones, the record is the golden bytes"
        );
    }
}

// A Python producer that knows only docs/protocol.md.

pub(crate) fn python_interpreter() -> PathBuf {
    let hint = "run `scripts/test` (it creates .venv-test with nats-py) or set CELERITY_TEST_PYTHON \
                to a Python 3 interpreter that has nats-py installed";
    if let Some(path) = std::env::var_os("CELERITY_TEST_PYTHON") {
        let path = PathBuf::from(path);
        assert!(
            path.exists(),
            "CELERITY_TEST_PYTHON is {} but it does not exist: {hint}",
            path.display()
        );
        return path;
    }
    let venv = workspace_root().join(".venv-test/bin/python");
    assert!(
        venv.exists(),
        "the Python protocol test needs {}: {hint}",
        venv.display()
    );
    venv
}

/// Runs `tests/python/protocol_client.py` to completion (killing it at the deadline) and returns
/// its one-line JSON summary.
async fn run_python_client(python: &Path, url: &str, worker: &str) -> Value {
    let golden_dir = workspace_root().join("tests/golden");
    let golden_dir = golden_dir.to_str().expect("a UTF-8 path");
    let args = [
        "--url",
        url,
        "--expect-worker",
        worker,
        "--park-queue",
        "py_parked",
        "--timeout",
        "30",
        "--golden-dir",
        golden_dir,
    ];
    run_python_script(python, "protocol_client.py", &args).await
}

/// Runs `tests/python/<script>` with `args` to completion (killing it at the deadline) and returns
/// its one-line JSON summary.
pub(crate) async fn run_python_script(python: &Path, script: &str, args: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("a temp dir for the script's output");
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    let script = workspace_root().join("tests/python").join(script);
    let mut child = Command::new(python)
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {}: {error}", python.display()));
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    let deadline = Instant::now() + PYTHON_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait on the Python client") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the Python client did not finish within {PYTHON_DEADLINE:?}; stderr:\n{}",
                read(&stderr_path)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stdout = read(&stdout_path);
    let stderr = read(&stderr_path);
    assert!(
        status.success(),
        "the Python client failed ({status}); stderr:\n{stderr}\nstdout:\n{stdout}"
    );
    let line = stdout
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or_else(|| panic!("the Python client printed no summary; stderr:\n{stderr}"));
    serde_json::from_str(line)
        .unwrap_or_else(|error| panic!("the summary {line:?} is not JSON: {error}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_producer_written_from_protocol_md_gets_results_from_a_rust_worker() {
    let python = python_interpreter();
    let server = server();
    // A hostname with bytes outside the token alphabet, so Python computes an escaped token.
    let worker = WorkerProcess::start(&server.url(), "py-worker@host.1", &["-c", "2"]);

    let summary = run_python_client(&python, &server.url(), &worker.hostname).await;

    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["layout"], "matches protocol.md", "{summary}");
    assert_eq!(summary["add"]["state"], "SUCCESS", "{summary}");
    assert_eq!(summary["add"]["result"], 42, "{summary}");
    assert_eq!(
        summary["add"]["duplicate_publish_dropped"], true,
        "{summary}"
    );
    assert_eq!(
        summary["add"]["pending_create_after_final"], "refused",
        "{summary}"
    );
    assert_eq!(summary["fail"]["state"], "FAILURE", "{summary}");
    assert_eq!(
        summary["fail"]["error"]["message"], "card declined: no funds",
        "{summary}"
    );
    assert_eq!(
        summary["golden_files_checked"],
        reference_cases().len(),
        "{summary}"
    );
    assert_eq!(
        summary["control"]["direct"], "py-worker@host.1",
        "{summary}"
    );
    assert_eq!(
        summary["control"]["broadcast"],
        json!(["py-worker@host.1"]),
        "{summary}"
    );
    assert_eq!(
        summary["no_stream"],
        "no stream for queue \"py_no_stream\": start a worker of the queue once, or create its stream",
        "{summary}"
    );
    let msgpack = &summary["msgpack"];
    assert!(
        msgpack == "skipped: the msgpack package is not installed"
            || (msgpack["state"] == "SUCCESS" && msgpack["result"] == 42),
        "{summary}"
    );

    // The task Python parked on a queue no worker consumed: its bytes decode with celerity_proto.
    let parked_id = summary["parked"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("the summary names the parked task: {summary}"))
        .to_owned();
    let nats = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(nats);
    let stream = js
        .get_stream("CELERITY_Q_py_parked")
        .await
        .expect("Python created the parked queue's stream");
    let message = stream
        .get_last_raw_message_by_subject("celerity.q.py_parked.3")
        .await
        .expect("the parked task waits in its stream");
    let envelope = Envelope::from_headers(header_pairs(&message.headers).as_slice())
        .expect("Python's headers are a valid envelope");
    assert_eq!(envelope.id.as_str(), parked_id);
    assert_eq!(envelope.task.as_str(), "it.add");
    assert_eq!(envelope.priority.get(), 3);
    assert!(envelope.sent_at_ms.is_some());
    let body: TaskBody = envelope
        .content_type
        .decode(&message.payload)
        .expect("Python's body is a valid task body");
    assert_eq!(body.args, vec![json!(20)]);
    assert_eq!(Value::Object(body.kwargs), json!({"y": 22}));
    let kv = js
        .get_key_value("celerity_results")
        .await
        .expect("the results bucket");
    let pending = kv
        .get(&parked_id)
        .await
        .expect("read the results bucket")
        .expect("Python wrote a PENDING record");
    let pending: ResultRecord = ContentType::sniff(&pending)
        .expect("a record starts with a map marker")
        .decode(&pending)
        .expect("Python's PENDING record is a valid record");
    assert_eq!(pending.state, TaskState::Pending);
    assert_eq!(pending.task.as_ref().map(TaskName::as_str), Some("it.add"));

    // A Rust worker runs it from the stream Python created.
    let parked_worker = WorkerProcess::start(
        &server.url(),
        "py-worker-2",
        &["-c", "1", "-Q", "py_parked"],
    );
    let client = client(&server.url()).await;
    let result = client
        .async_result::<i64>(&parked_id)
        .expect("a valid id")
        .get(WAIT)
        .await
        .expect("the parked task runs on a worker of its queue");
    assert_eq!(result, 42);
    assert!(
        !parked_worker
            .log()
            .contains("the queue stream does not republish doorbells"),
        "the stream Python created lacks the doorbell republish:\n{}",
        parked_worker.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_msgpack_body_nested_deeper_than_json_allows_is_dead_lettered_as_undecodable() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "deep-worker", &[]);
    let nats = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(nats);

    // `{"args": [[[...[0]...]]]}` with 1,000 arrays: within rmp-serde's own limit, far beyond
    // serde_json's.
    let mut body = vec![0x81, 0xa4];
    body.extend_from_slice(b"args");
    body.extend(std::iter::repeat_n(0x91, 1000));
    body.push(0x00);
    let headers = [
        ("Celerity-Version", "1"),
        ("Celerity-Task", "it.add"),
        ("Celerity-Id", "deep-msgpack"),
        ("Content-Type", "application/msgpack"),
    ]
    .map(|(name, value)| (name.to_owned(), value.to_owned()));
    js.publish_with_headers("celerity.q.default.0", header_map(&headers), body.into())
        .await
        .expect("publish the deep task")
        .await
        .expect("JetStream stores the deep task");

    let dlq = js
        .get_stream("CELERITY_DLQ")
        .await
        .expect("the dead-letter stream");
    let letter = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(letter) = dlq
                .get_last_raw_message_by_subject("celerity.dlq.default")
                .await
            {
                return letter;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
    .expect("the deep task was never dead-lettered");
    let reason = letter
        .headers
        .get("Celerity-Dlq-Reason")
        .map(|value| value.to_string());
    assert_eq!(reason.as_deref(), Some("undecodable_body"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_request_to_one_hostname_never_reaches_a_worker_whose_hostname_differs() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "host_1", &[]);
    let client = client(&server.url()).await;
    let control = client.control();

    let own = control
        .ping(Some("host_1"), Duration::from_secs(5))
        .await
        .expect("worker host_1 answers on its own subject");
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].worker, "host_1");
    // `host.1` and `host_1` once mapped to one token, so host_1 answered for host.1.
    let other = control.ping(Some("host.1"), Duration::from_secs(2)).await;
    assert!(
        matches!(other, Err(celerity::ControlError::UnknownDestination(_))),
        "a request for host.1 got {other:?}"
    );
}
