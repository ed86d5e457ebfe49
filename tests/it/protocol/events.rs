//! The events' golden files: a batch of task events and a worker's heartbeat, built with
//! `celerity_proto`.

use celerity_proto::{
    ErrorRecord, TaskEvent, TaskEventBatch, TaskEventKind, WorkerEvent, WorkerEventKind,
};

use super::{ADD_JSON_ID, GOLDEN_WORKER, GoldenCase, SENT_AT_MS, Wire, check_golden, layout, load};

fn json_wire(subject: String, body: &impl serde::Serialize) -> Wire {
    Wire {
        subject,
        headers: Vec::new(),
        body: serde_json::to_vec(body).expect("the reference record encodes"),
    }
}

/// The chord whose header member fails in [`batch`].
const CHORD_ID: &str = "0190a5b2-7c1e-7f00-8000-0000000000cc";

/// The events of task_v1_json.json's run on worker-1, and of a failed chord header member, in one
/// batch.
fn batch() -> TaskEventBatch {
    let event = |kind, at| {
        let mut event = TaskEvent::new(kind, ADD_JSON_ID, "it.add", SENT_AT_MS + at);
        event.queue = Some("default".to_owned());
        event.priority = Some(5);
        event
    };
    let mut received = event(TaskEventKind::Received, 2);
    received.delivered = Some(1);
    let mut started = event(TaskEventKind::Started, 3);
    started.wait_ms = Some(3);
    started.args = Some("[2]".to_owned());
    started.kwargs = Some(r#"{"y":40}"#.to_owned());
    let mut succeeded = event(TaskEventKind::Succeeded, 4);
    succeeded.runtime_ms = Some(0.25);
    let mut failed = TaskEvent::new(
        TaskEventKind::Failed,
        "0190a5b2-7c1e-7f00-8000-0000000000cc-1",
        "it.fail",
        SENT_AT_MS + 5,
    );
    failed.queue = Some("default".to_owned());
    failed.root_id = Some(CHORD_ID.to_owned());
    failed.group_id = Some(CHORD_ID.to_owned());
    failed.chord_id = Some(CHORD_ID.to_owned());
    failed.priority = Some(0);
    failed.runtime_ms = Some(1.5);
    failed.error = Some(ErrorRecord::new("it::PaymentError", "card declined"));
    TaskEventBatch::new(GOLDEN_WORKER, vec![received, started, succeeded, failed])
}

fn heartbeat() -> WorkerEvent {
    let mut event = WorkerEvent::new(
        WorkerEventKind::Heartbeat,
        GOLDEN_WORKER,
        SENT_AT_MS + 2_000,
    );
    event.pid = 4242;
    event.software = "celerity 0.1.0".to_owned();
    event.queues = vec!["default".to_owned()];
    event.concurrency = 4;
    event.active = 1;
    event.reserved = 0;
    event.processed = 17;
    event.load = Some([0.5, 0.25, 0.125]);
    event
}

/// The events' reference cases, for `reference_cases`.
pub(super) fn cases() -> Vec<GoldenCase> {
    vec![
        GoldenCase {
            file: "events_v1_task_batch.json",
            comment: "A batch of task events from worker-1 (received, started with its arguments, and succeeded for task_v1_json.json, then the failure of a chord's header member 1, with its group and chord ids), on <ns>.events.task.<worker token>.",
            wire: json_wire(layout().task_events_subject(GOLDEN_WORKER), &batch()),
        },
        GoldenCase {
            file: "events_v1_worker_heartbeat.json",
            comment: "A heartbeat of worker-1, on <ns>.events.worker.<worker token>.",
            wire: json_wire(layout().worker_events_subject(GOLDEN_WORKER), &heartbeat()),
        },
    ]
}

#[test]
fn reference_events_encode_to_the_golden_bytes() {
    for case in cases() {
        check_golden(&case);
    }
}

#[test]
fn event_goldens_decode_to_the_documented_events() {
    let wire = load("events_v1_task_batch.json");
    assert_eq!(wire.subject, "celerity.events.task.worker-1");
    let read: TaskEventBatch = serde_json::from_slice(&wire.body).unwrap();
    assert_eq!(read, batch());
    let kinds: Vec<&str> = read.events.iter().map(TaskEvent::state).collect();
    assert_eq!(kinds, ["RECEIVED", "STARTED", "SUCCESS", "FAILURE"]);
    let wire = load("events_v1_worker_heartbeat.json");
    assert_eq!(wire.subject, "celerity.events.worker.worker-1");
    let read: WorkerEvent = serde_json::from_slice(&wire.body).unwrap();
    assert_eq!(read, heartbeat());
    let text: serde_json::Value = serde_json::from_slice(&wire.body).unwrap();
    assert_eq!(text["type"], "worker-heartbeat");
    assert_eq!(text["freq_s"], 2.0);
}
