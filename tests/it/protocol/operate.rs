//! The golden files of the control commands that look at the tasks a worker holds (`active`,
//! `reserved`, `scheduled`) and that change its pool, queues and life (`pool_grow`,
//! `pool_shrink`, `add_consumer`, `cancel_consumer`, `shutdown`).

use celerity_proto::{
    ConsumersResult, ControlCommand, HeldTask, HeldTasksResult, PoolResult, ScheduledResult,
    ScheduledTask, ShutdownResult,
};
use serde_json::json;

use super::control::{reply, request, result_of};
use super::{ADD_JSON_ID, GOLDEN_WORKER, GoldenCase, SENT_AT_MS, check_golden, layout, load};

fn active() -> HeldTasksResult {
    let mut task = HeldTask::new(ADD_JSON_ID, "it.add", "default", SENT_AT_MS + 5);
    task.started_at_ms = Some(SENT_AT_MS + 7);
    task.args = Some(vec![json!(2), json!(3)]);
    task.kwargs = Some(serde_json::Map::new());
    task.root_id = Some(ADD_JSON_ID.to_owned());
    HeldTasksResult::new(vec![task])
}

fn scheduled() -> ScheduledResult {
    let mut task = ScheduledTask::new(ADD_JSON_ID, "it.add", "default", SENT_AT_MS + 60_000);
    task.priority = 5;
    ScheduledResult::active(1, vec![task])
}

/// One case: a command broadcast, or sent to `worker-1` alone.
fn command(
    file: &'static str,
    comment: &'static str,
    direct: bool,
    command: ControlCommand,
) -> GoldenCase {
    let subject = match direct {
        true => layout().control_subject(GOLDEN_WORKER),
        false => layout().control_broadcast_subject(),
    };
    GoldenCase {
        file,
        comment,
        wire: request(subject, command),
    }
}

/// The reference cases of these commands, for `reference_cases`.
pub(super) fn cases() -> Vec<GoldenCase> {
    vec![
        command(
            "control_v1_active_request.json",
            "An inspection of the tasks every worker runs now, broadcast.",
            false,
            ControlCommand::Active,
        ),
        GoldenCase {
            file: "control_v1_active_reply.json",
            comment: "A worker's reply to active (and, without started_at_ms, to reserved): each task it holds, oldest first.",
            wire: reply(&active()),
        },
        command(
            "control_v1_reserved_request.json",
            "An inspection of the tasks every worker has taken and not started, broadcast.",
            false,
            ControlCommand::Reserved,
        ),
        command(
            "control_v1_scheduled_request.json",
            "An inspection of the delayed tasks, at most 50 of them, broadcast: the active scheduler lists them.",
            false,
            ControlCommand::Scheduled { limit: Some(50) },
        ),
        GoldenCase {
            file: "control_v1_scheduled_reply.json",
            comment: "The active scheduler's reply to scheduled: how many wait, and the listed ones, soonest first. Other workers reply {\"scheduler\": false, \"total\": 0, \"tasks\": []}.",
            wire: reply(&scheduled()),
        },
        command(
            "control_v1_pool_grow_request.json",
            "Add 2 execution slots to worker-1.",
            true,
            ControlCommand::PoolGrow { n: 2 },
        ),
        GoldenCase {
            file: "control_v1_pool_reply.json",
            comment: "A worker's reply to pool_grow or pool_shrink: its slots now.",
            wire: reply(&PoolResult::new(6)),
        },
        command(
            "control_v1_pool_shrink_request.json",
            "Remove 1 execution slot from worker-1, as running tasks end.",
            true,
            ControlCommand::PoolShrink { n: 1 },
        ),
        command(
            "control_v1_add_consumer_request.json",
            "Make worker-1 consume queue reports too.",
            true,
            ControlCommand::AddConsumer {
                queue: "reports".to_owned(),
            },
        ),
        GoldenCase {
            file: "control_v1_consumers_reply.json",
            comment: "A worker's reply to add_consumer or cancel_consumer: the queues it consumes now, sorted.",
            wire: reply(&ConsumersResult::new(vec![
                "reports".to_owned(),
                "default".to_owned(),
            ])),
        },
        command(
            "control_v1_cancel_consumer_request.json",
            "Make worker-1 stop consuming queue reports; its running tasks finish.",
            true,
            ControlCommand::CancelConsumer {
                queue: "reports".to_owned(),
            },
        ),
        command(
            "control_v1_shutdown_request.json",
            "A warm shutdown of worker-1 (cold: true returns its running tasks to their queues).",
            true,
            ControlCommand::Shutdown { cold: false },
        ),
        GoldenCase {
            file: "control_v1_shutdown_reply.json",
            comment: "A worker's reply to shutdown, sent before it stops.",
            wire: reply(&ShutdownResult::new(false)),
        },
    ]
}

#[test]
fn operation_goldens_encode_and_decode_to_their_records() {
    for case in cases() {
        check_golden(&case);
    }
    assert_eq!(
        load("control_v1_pool_grow_request.json").body,
        br#"{"v":1,"command":"pool_grow","n":2}"#
    );
    assert_eq!(
        load("control_v1_shutdown_request.json").body,
        br#"{"v":1,"command":"shutdown","cold":false}"#
    );
    assert_eq!(
        result_of::<HeldTasksResult>("control_v1_active_reply.json"),
        active()
    );
    assert_eq!(
        result_of::<ScheduledResult>("control_v1_scheduled_reply.json"),
        scheduled()
    );
    assert_eq!(
        result_of::<PoolResult>("control_v1_pool_reply.json").concurrency,
        6
    );
    let queues: ConsumersResult = result_of("control_v1_consumers_reply.json");
    assert_eq!(queues.queues, ["default", "reports"]);
    assert_eq!(
        result_of::<ShutdownResult>("control_v1_shutdown_reply.json").shutdown,
        "warm"
    );
}
