//! The control plane's golden files: requests, the replies a worker sends (one result record per
//! command, and a refusal) and the revocation record, all built with `celerity_proto`.

use celerity_proto::{
    ActiveQueue, ActiveQueuesResult, ControlCommand, ControlReply, ControlRequest, PingResult,
    PriorityWeightsResult, Rate, RateLimitResult, RegisteredResult, RevocationRecord, RevokeResult,
    RevokedResult, StatsResult,
};
use serde_json::json;

use super::{ADD_JSON_ID, GOLDEN_WORKER, GoldenCase, SENT_AT_MS, Wire, check_golden, layout, load};

/// The reply subject of the golden requests (a requester's inbox).
const INBOX: &str = "_INBOX.golden.1";
const WEIGHTS: [u32; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

fn rate() -> Rate {
    "50/m".parse().expect("50/m is a rate")
}

fn json_wire(subject: String, body: &impl serde::Serialize) -> Wire {
    Wire {
        subject,
        headers: Vec::new(),
        body: serde_json::to_vec(body).expect("the reference record encodes"),
    }
}

pub(super) fn request(subject: String, command: ControlCommand) -> Wire {
    json_wire(subject, &ControlRequest::new(command))
}

pub(super) fn reply(result: &impl serde::Serialize) -> Wire {
    let reply = ControlReply::with_result(GOLDEN_WORKER, result).expect("results encode");
    json_wire(INBOX.to_owned(), &reply)
}

fn revoke_command() -> ControlCommand {
    ControlCommand::Revoke {
        task_id: ADD_JSON_ID.to_owned(),
        terminate: true,
    }
}

fn rate_limit_command() -> ControlCommand {
    ControlCommand::RateLimit {
        task: "it.add".to_owned(),
        rate: Some(rate()),
        global: false,
        reset: false,
    }
}

fn priority_weights_command() -> ControlCommand {
    ControlCommand::PriorityWeights {
        weights: Some(WEIGHTS),
        reset: false,
    }
}

fn refusal() -> ControlReply {
    ControlReply::refused(
        GOLDEN_WORKER,
        "task \"it.nope\" is not registered on this worker",
    )
    .with_code("not_registered")
}

fn stats() -> StatsResult {
    let mut stats = StatsResult::new(4242, "celerity 0.1.0");
    stats.uptime_s = 3600;
    stats.concurrency = 4;
    stats.queues = vec!["default".to_owned()];
    stats.active = 1;
    stats.processed = 17;
    stats.events = true;
    stats.http = Some("127.0.0.1:9808".to_owned());
    stats
}

fn registered() -> RegisteredResult {
    let mut registered = RegisteredResult::new(vec!["it.fail".to_owned(), "it.add".to_owned()]);
    registered
        .rate_limits
        .insert("it.add".to_owned(), "10/s".to_owned());
    registered
        .global_rate_limits
        .insert("it.fail".to_owned(), "5/m".to_owned());
    registered
}

fn active_queues() -> ActiveQueuesResult {
    let levels = (0..=9).collect();
    ActiveQueuesResult::new(vec![ActiveQueue::new(
        "default",
        "CELERITY_Q_default",
        levels,
    )])
}

/// The inspection cases: a broadcast request and a worker's reply for each.
fn inspection_cases() -> Vec<GoldenCase> {
    let request = |command| request(layout().control_broadcast_subject(), command);
    vec![
        GoldenCase {
            file: "control_v1_registered_request.json",
            comment: "An inspection of the task names every worker runs, broadcast.",
            wire: request(ControlCommand::Registered),
        },
        GoldenCase {
            file: "control_v1_registered_reply.json",
            comment: "A worker's reply to registered: its task names, sorted, with the rate limits in force (it.add 10/s on each worker, it.fail 5/m across all workers).",
            wire: reply(&registered()),
        },
        GoldenCase {
            file: "control_v1_stats_request.json",
            comment: "An inspection of every worker's figures, broadcast.",
            wire: request(ControlCommand::Stats),
        },
        GoldenCase {
            file: "control_v1_stats_reply.json",
            comment: "A worker's reply to stats.",
            wire: reply(&stats()),
        },
        GoldenCase {
            file: "control_v1_active_queues_request.json",
            comment: "An inspection of the queues every worker consumes, broadcast.",
            wire: request(ControlCommand::ActiveQueues),
        },
        GoldenCase {
            file: "control_v1_active_queues_reply.json",
            comment: "A worker's reply to active_queues: each queue with its stream and levels.",
            wire: reply(&active_queues()),
        },
        GoldenCase {
            file: "control_v1_revoked_request.json",
            comment: "An inspection of the revoked ids every worker holds, broadcast.",
            wire: request(ControlCommand::Revoked),
        },
        GoldenCase {
            file: "control_v1_revoked_reply.json",
            comment: "A worker's reply to revoked: the ids, sorted.",
            wire: reply(&RevokedResult::new(vec![ADD_JSON_ID.to_owned()])),
        },
    ]
}

#[test]
fn inspection_goldens_encode_and_decode_to_their_records() {
    for case in inspection_cases() {
        check_golden(&case);
    }
    assert_eq!(
        load("control_v1_stats_request.json").body,
        br#"{"v":1,"command":"stats"}"#
    );
    let read: RegisteredResult = result_of("control_v1_registered_reply.json");
    assert_eq!(read, registered());
    assert_eq!(
        result_of::<StatsResult>("control_v1_stats_reply.json"),
        stats()
    );
    assert_eq!(
        result_of::<ActiveQueuesResult>("control_v1_active_queues_reply.json"),
        active_queues()
    );
    let revoked: RevokedResult = result_of("control_v1_revoked_reply.json");
    assert_eq!(revoked.ids, [ADD_JSON_ID]);
}

fn revocation() -> RevocationRecord {
    RevocationRecord::new(SENT_AT_MS + 100)
}

/// The control plane's reference cases, for `reference_cases`.
pub(super) fn cases() -> Vec<GoldenCase> {
    vec![
        GoldenCase {
            file: "control_v1_ping_request.json",
            comment: "A ping broadcast to every worker (core NATS, with the requester's inbox as reply subject).",
            wire: request(layout().control_broadcast_subject(), ControlCommand::Ping),
        },
        GoldenCase {
            file: "control_v1_ping_reply.json",
            comment: "A worker's reply to the ping: its queues and execution slots.",
            wire: reply(&PingResult::new(vec!["default".to_owned()], 4)),
        },
        GoldenCase {
            file: "control_v1_revoke_request.json",
            comment: "A revoke with terminate, sent to worker worker-1 alone (subject <ns>.control.<worker token>), after the id was stored in the revoked bucket (revocation_v1.json).",
            wire: request(layout().control_subject(GOLDEN_WORKER), revoke_command()),
        },
        GoldenCase {
            file: "control_v1_revoke_reply.json",
            comment: "A worker's reply to the revoke: it was running the task and aborted it.",
            wire: reply(&RevokeResult::new(ADD_JSON_ID, true)),
        },
        GoldenCase {
            file: "control_v1_rate_limit_request.json",
            comment: "A per-worker rate limit of 50/m for it.add, broadcast to every worker.",
            wire: request(layout().control_broadcast_subject(), rate_limit_command()),
        },
        GoldenCase {
            file: "control_v1_rate_limit_reply.json",
            comment: "A worker's reply to the rate limit: the per-worker and cluster-wide rates now in force.",
            wire: reply(&RateLimitResult::new("it.add", Some(rate()), None)),
        },
        GoldenCase {
            file: "control_v1_priority_weights_request.json",
            comment: "Weighted priorities 1 to 10 (index = priority), broadcast to every worker.",
            wire: request(
                layout().control_broadcast_subject(),
                priority_weights_command(),
            ),
        },
        GoldenCase {
            file: "control_v1_priority_weights_reply.json",
            comment: "A worker's reply to the priority weights: the weights now in force.",
            wire: reply(&PriorityWeightsResult::new(Some(WEIGHTS))),
        },
        GoldenCase {
            file: "control_v1_refused_reply.json",
            comment: "A refusal: ok is false, error says why, and there is no result.",
            wire: json_wire(INBOX.to_owned(), &refusal()),
        },
        GoldenCase {
            file: "revocation_v1.json",
            comment: "The revocation record of task_v1_json.json's id, as put in the revoked bucket (a JetStream publish with no headers). Workers read only the key.",
            wire: json_wire(
                format!("$KV.{}.{ADD_JSON_ID}", layout().revoked_bucket()),
                &revocation(),
            ),
        },
    ]
    .into_iter()
    .chain(inspection_cases())
    .collect()
}

fn decoded<T: serde::de::DeserializeOwned>(file: &str) -> T {
    serde_json::from_slice(&load(file).body)
        .unwrap_or_else(|error| panic!("{file} does not decode: {error}"))
}

pub(super) fn result_of<T: serde::de::DeserializeOwned>(file: &str) -> T {
    let reply: ControlReply = decoded(file);
    assert!(reply.ok, "{file} is a successful reply");
    assert_eq!(reply.worker, GOLDEN_WORKER);
    reply
        .result_as::<T>()
        .expect("a successful reply has a result")
        .unwrap_or_else(|error| panic!("{file}: the result does not decode: {error}"))
}

#[test]
fn control_request_goldens_decode_to_the_documented_commands() {
    let ping: ControlRequest = decoded("control_v1_ping_request.json");
    assert_eq!(ping, ControlRequest::new(ControlCommand::Ping));
    assert_eq!(
        load("control_v1_ping_request.json").body,
        br#"{"v":1,"command":"ping"}"#
    );
    let revoke: ControlRequest = decoded("control_v1_revoke_request.json");
    assert_eq!(revoke.command, revoke_command());
    assert_eq!(
        load("control_v1_revoke_request.json").subject,
        "celerity.control.worker-1"
    );
    let rate_limit: ControlRequest = decoded("control_v1_rate_limit_request.json");
    assert_eq!(rate_limit.command, rate_limit_command());
    let weights: ControlRequest = decoded("control_v1_priority_weights_request.json");
    assert_eq!(weights.command, priority_weights_command());
}

#[test]
fn control_reply_goldens_decode_to_their_result_records() {
    let ping: PingResult = result_of("control_v1_ping_reply.json");
    assert_eq!(ping, PingResult::new(vec!["default".to_owned()], 4));
    let revoke: RevokeResult = result_of("control_v1_revoke_reply.json");
    assert!(revoke.terminated);
    assert_eq!(revoke.revoked, ADD_JSON_ID);
    let rate_limit: RateLimitResult = result_of("control_v1_rate_limit_reply.json");
    assert_eq!(rate_limit.rate_limit, Some(rate()));
    assert_eq!(rate_limit.global_rate_limit, None);
    let weights: PriorityWeightsResult = result_of("control_v1_priority_weights_reply.json");
    assert_eq!(weights.priority_weights, Some(WEIGHTS));
    let refused: ControlReply = decoded("control_v1_refused_reply.json");
    assert_eq!(refused, refusal());
    let body: serde_json::Value = decoded("control_v1_refused_reply.json");
    assert!(body.get("result").is_none(), "a refusal has no result");
}

#[test]
fn revocation_golden_is_the_documented_record() {
    let wire = load("revocation_v1.json");
    assert_eq!(wire.subject, format!("$KV.celerity_revoked.{ADD_JSON_ID}"));
    let record: serde_json::Value = decoded("revocation_v1.json");
    assert_eq!(
        record,
        json!({"reason": "revoked", "at_ms": SENT_AT_MS + 100})
    );
    assert_eq!(
        decoded::<RevocationRecord>("revocation_v1.json"),
        revocation()
    );
}

#[test]
fn reference_control_messages_encode_to_the_golden_bytes() {
    for case in cases() {
        check_golden(&case);
    }
}
