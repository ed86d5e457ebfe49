//! `decode(encode(x)) == x` for every record, in JSON and in MessagePack, and for the records a
//! control reply carries, through `ControlReply::result_as`.

use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use celerity_proto::{
    ContentType, ControlReply, PingResult, ResultRecord, RevocationReason, TaskId, TaskState,
};

use crate::check_round_trip;
use crate::strategies::*;

macro_rules! round_trips {
    ($($test:ident: $strategy:expr;)*) => {
        proptest! {
            $(
                #[test]
                fn $test(value in $strategy) {
                    check_round_trip(&value)?;
                }
            )*
        }
    };
}

round_trips! {
    task_body_round_trips: task_body();
    canvas_node_round_trips: canvas_node();
    signature_record_round_trips: signature_record();
    chord_policy_round_trips: chord_policy();
    chord_member_round_trips: chord_member();
    chord_results_round_trips: chord_results();
    chord_definition_round_trips: chord_definition();
    chord_completion_round_trips: chord_completion();
    result_record_round_trips: result_record();
    error_record_round_trips: error_record();
    task_state_round_trips: task_state();
    control_request_round_trips: control_request();
    control_command_round_trips: control_command();
    control_reply_round_trips: control_reply();
    ping_result_round_trips: ping_result();
    registered_result_round_trips: registered_result();
    stats_result_round_trips: stats_result();
    active_queue_round_trips: active_queue();
    active_queues_result_round_trips: active_queues_result();
    revoked_result_round_trips: revoked_result();
    revoke_result_round_trips: revoke_result();
    rate_limit_result_round_trips: rate_limit_result();
    priority_weights_result_round_trips: priority_weights_result();
    revocation_record_round_trips: revocation_record();
    revocation_reason_round_trips: Just(RevocationReason::Revoked);
    task_event_kind_round_trips: task_event_kind();
    task_event_round_trips: task_event();
    task_event_batch_round_trips: task_event_batch();
    worker_event_kind_round_trips: worker_event_kind();
    worker_event_round_trips: worker_event();
    held_task_round_trips: held_task();
    held_tasks_result_round_trips: held_tasks_result();
    scheduled_task_round_trips: scheduled_task();
    scheduled_result_round_trips: scheduled_result();
    pool_result_round_trips: pool_result();
    consumers_result_round_trips: consumers_result();
    shutdown_result_round_trips: shutdown_result();
    beat_lease_round_trips: beat_lease();
    beat_entry_state_round_trips: beat_entry_state();
    setting_scope_round_trips: setting_scope();
    rate_limit_setting_round_trips: rate_limit_setting();
    priority_weights_setting_round_trips: priority_weights_setting();
    rate_round_trips: rate();
    task_id_round_trips: task_id();
    task_name_round_trips: task_name();
    queue_name_round_trips: queue_name();
    namespace_round_trips: namespace();
    priority_round_trips: priority();
    json_value_round_trips: json_value();
}

/// Checks that `record`, sent as a control reply's result, reads back through `result_as`.
fn check_reply_result<T>(record: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let reply = ControlReply::with_result("w1", record)
        .map_err(|error| TestCaseError::fail(error.to_string()))?;
    let bytes = ContentType::Json
        .encode(&reply)
        .map_err(|error| TestCaseError::fail(error.to_string()))?;
    let read: ControlReply = ContentType::Json
        .decode(&bytes)
        .map_err(|error| TestCaseError::fail(error.to_string()))?;
    let result = read
        .result_as::<T>()
        .ok_or_else(|| TestCaseError::fail("a reply with a result has one"))?
        .map_err(|error| TestCaseError::fail(error.to_string()))?;
    prop_assert_eq!(&result, record);
    Ok(())
}

proptest! {
    #[test]
    fn every_reply_result_reads_back_through_result_as(
        records in (
            (ping_result(), registered_result(), stats_result(), active_queues_result()),
            (revoked_result(), revoke_result(), rate_limit_result(), priority_weights_result()),
            (held_tasks_result(), scheduled_result(), pool_result(), consumers_result()),
            shutdown_result(),
        )
    ) {
        let ((ping, registered, stats, active_queues), (revoked, revoke, rate_limit, weights),
            (held, scheduled, pool, consumers), shutdown) = records;
        check_reply_result(&ping)?;
        check_reply_result(&registered)?;
        check_reply_result(&stats)?;
        check_reply_result(&active_queues)?;
        check_reply_result(&revoked)?;
        check_reply_result(&revoke)?;
        check_reply_result(&rate_limit)?;
        check_reply_result(&weights)?;
        check_reply_result(&held)?;
        check_reply_result(&scheduled)?;
        check_reply_result(&pool)?;
        check_reply_result(&consumers)?;
        check_reply_result(&shutdown)?;
    }

    #[test]
    fn result_as_reads_any_result_as_a_record_or_an_error(result in json_value()) {
        let mut reply = ControlReply::ok("w1", result);
        let _ = reply.result_as::<PingResult>();
        let _ = reply.result_as::<ResultRecord>();
        reply.result = None;
        prop_assert!(reply.result_as::<PingResult>().is_none());
    }
}

/// NOTE(protocol): 5.3 lets a writer put `"result": null` and `"meta": null`, and a reader takes
/// them for absent; so `Some(null)` is not one of the values the round trips above generate.
#[test]
fn an_optional_null_value_reads_back_as_none() {
    let record = ResultRecord::new(TaskId::new("t1").unwrap(), TaskState::Success, 1)
        .with_result(Value::Null)
        .with_meta(Value::Null);
    for content_type in crate::CONTENT_TYPES {
        let bytes = content_type.encode(&record).unwrap();
        let read: ResultRecord = content_type.decode(&bytes).unwrap();
        assert_eq!((read.result, read.meta), (None, None), "{content_type}");
    }
}
