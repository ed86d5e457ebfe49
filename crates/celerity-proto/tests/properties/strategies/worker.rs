//! Strategies for what workers and tools exchange besides tasks: control requests and replies,
//! their results, events, beat records and settings.

use proptest::array::{uniform3, uniform10};
use proptest::collection::{btree_map, vec};
use proptest::option::of;
use proptest::prelude::*;

use celerity_proto::{
    ActiveQueue, ActiveQueuesResult, BeatEntryState, BeatLease, ConsumersResult, ControlCommand,
    ControlReply, ControlRequest, HeldTask, HeldTasksResult, PingResult, PoolResult,
    PriorityWeightsResult, PriorityWeightsSetting, RateLimitResult, RateLimitSetting,
    RegisteredResult, RevocationRecord, RevokeResult, RevokedResult, ScheduledResult,
    ScheduledTask, SettingScope, ShutdownResult, StatsResult, TaskEvent, TaskEventBatch,
    TaskEventKind, WorkerEvent, WorkerEventKind,
};

use super::{error_record, finite_f64, json_object, json_value, non_null_value, rate, text};

/// A list of a few texts.
fn texts() -> impl Strategy<Value = Vec<String>> {
    vec(text(), 0..4)
}

/// Priority weights, or none (strict priorities).
fn weights() -> impl Strategy<Value = Option<[u32; 10]>> {
    of(uniform10(any::<u32>()))
}

/// Any control command, with any arguments.
pub(crate) fn control_command() -> impl Strategy<Value = ControlCommand> {
    prop_oneof![
        Just(ControlCommand::Ping),
        (text(), any::<bool>())
            .prop_map(|(task_id, terminate)| ControlCommand::Revoke { task_id, terminate }),
        (text(), of(rate()), any::<bool>(), any::<bool>()).prop_map(
            |(task, rate, global, reset)| ControlCommand::RateLimit {
                task,
                rate,
                global,
                reset,
            }
        ),
        Just(ControlCommand::Registered),
        Just(ControlCommand::Stats),
        Just(ControlCommand::ActiveQueues),
        Just(ControlCommand::Revoked),
        Just(ControlCommand::Active),
        Just(ControlCommand::Reserved),
        of(any::<u32>()).prop_map(|limit| ControlCommand::Scheduled { limit }),
        any::<bool>().prop_map(|cold| ControlCommand::Shutdown { cold }),
        any::<u32>().prop_map(|n| ControlCommand::PoolGrow { n }),
        any::<u32>().prop_map(|n| ControlCommand::PoolShrink { n }),
        text().prop_map(|queue| ControlCommand::AddConsumer { queue }),
        text().prop_map(|queue| ControlCommand::CancelConsumer { queue }),
        (weights(), any::<bool>())
            .prop_map(|(weights, reset)| ControlCommand::PriorityWeights { weights, reset }),
    ]
}

/// A control request of any version.
pub(crate) fn control_request() -> impl Strategy<Value = ControlRequest> {
    (any::<u32>(), control_command()).prop_map(|(v, command)| {
        let mut request = ControlRequest::new(command);
        request.v = v;
        request
    })
}

/// A worker's reply, with any fields set.
pub(crate) fn control_reply() -> impl Strategy<Value = ControlReply> {
    (
        text(),
        any::<bool>(),
        of(non_null_value()),
        of(text()),
        of(text()),
    )
        .prop_map(|(worker, ok, result, error, code)| {
            let mut reply = ControlReply::refused(worker, String::new());
            reply.ok = ok;
            reply.result = result;
            reply.error = error;
            reply.code = code;
            reply
        })
}

/// A `ping` result.
pub(crate) fn ping_result() -> impl Strategy<Value = PingResult> {
    (any::<bool>(), texts(), any::<usize>()).prop_map(|(pong, queues, concurrency)| {
        let mut result = PingResult::new(queues, concurrency);
        result.pong = pong;
        result
    })
}

/// A `registered` result, its lists in any order.
pub(crate) fn registered_result() -> impl Strategy<Value = RegisteredResult> {
    (
        texts(),
        btree_map(text(), text(), 0..3),
        btree_map(text(), text(), 0..3),
    )
        .prop_map(|(tasks, rate_limits, global_rate_limits)| {
            let mut result = RegisteredResult::new(Vec::new());
            result.tasks = tasks;
            result.rate_limits = rate_limits;
            result.global_rate_limits = global_rate_limits;
            result
        })
}

/// A `stats` result.
pub(crate) fn stats_result() -> impl Strategy<Value = StatsResult> {
    (
        (any::<u32>(), text(), any::<u64>(), any::<usize>(), texts()),
        (any::<u32>(), any::<u32>(), any::<u64>(), any::<bool>()),
        of(text()),
    )
        .prop_map(
            |(
                (pid, software, uptime_s, concurrency, queues),
                (active, reserved, processed, events),
                http,
            )| {
                let mut stats = StatsResult::new(pid, software);
                stats.uptime_s = uptime_s;
                stats.concurrency = concurrency;
                stats.queues = queues;
                stats.active = active;
                stats.reserved = reserved;
                stats.processed = processed;
                stats.events = events;
                stats.http = http;
                stats
            },
        )
}

/// One queue of an `active_queues` result.
pub(crate) fn active_queue() -> impl Strategy<Value = ActiveQueue> {
    (text(), text(), vec(any::<u8>(), 0..10))
        .prop_map(|(name, stream, priorities)| ActiveQueue::new(name, stream, priorities))
}

/// An `active_queues` result.
pub(crate) fn active_queues_result() -> impl Strategy<Value = ActiveQueuesResult> {
    vec(active_queue(), 0..3).prop_map(ActiveQueuesResult::new)
}

/// A `revoked` result, in any order.
pub(crate) fn revoked_result() -> impl Strategy<Value = RevokedResult> {
    texts().prop_map(|ids| {
        let mut result = RevokedResult::new(Vec::new());
        result.ids = ids;
        result
    })
}

/// A `revoke` result.
pub(crate) fn revoke_result() -> impl Strategy<Value = RevokeResult> {
    (text(), any::<bool>()).prop_map(|(revoked, terminated)| RevokeResult::new(revoked, terminated))
}

/// A `rate_limit` result.
pub(crate) fn rate_limit_result() -> impl Strategy<Value = RateLimitResult> {
    (text(), of(rate()), of(rate()))
        .prop_map(|(task, local, global)| RateLimitResult::new(task, local, global))
}

/// A `priority_weights` result.
pub(crate) fn priority_weights_result() -> impl Strategy<Value = PriorityWeightsResult> {
    weights().prop_map(PriorityWeightsResult::new)
}

/// A revoked-bucket value.
pub(crate) fn revocation_record() -> impl Strategy<Value = RevocationRecord> {
    any::<u64>().prop_map(RevocationRecord::new)
}

/// A task event kind.
pub(crate) fn task_event_kind() -> impl Strategy<Value = TaskEventKind> {
    prop::sample::select(TaskEventKind::ALL.to_vec())
}

/// A worker event kind.
pub(crate) fn worker_event_kind() -> impl Strategy<Value = WorkerEventKind> {
    prop::sample::select(vec![
        WorkerEventKind::Online,
        WorkerEventKind::Heartbeat,
        WorkerEventKind::Offline,
    ])
}

/// A task event with any fields set.
pub(crate) fn task_event() -> impl Strategy<Value = TaskEvent> {
    let ids = || (of(text()), of(text()), of(text()), of(text()));
    let numbers = || {
        (
            of(any::<u64>()),
            of(any::<u64>()),
            of(finite_f64()),
            of(any::<u64>()),
        )
    };
    (
        (task_event_kind(), text(), text(), any::<u64>()),
        (of(text()), of(any::<u8>()), any::<u32>()),
        ids(),
        numbers(),
        (of(error_record()), of(text()), of(text()), of(text())),
    )
        .prop_map(
            |(
                (kind, task_id, task, at_ms),
                (queue, priority, retries),
                (root_id, parent_id, group_id, chord_id),
                (delivered, wait_ms, runtime_ms, eta_ms),
                (error, reason, args, kwargs),
            )| {
                let mut event = TaskEvent::new(kind, &task_id, &task, at_ms);
                event.queue = queue;
                event.priority = priority;
                event.retries = retries;
                event.root_id = root_id;
                event.parent_id = parent_id;
                event.group_id = group_id;
                event.chord_id = chord_id;
                event.delivered = delivered;
                event.wait_ms = wait_ms;
                event.runtime_ms = runtime_ms;
                event.eta_ms = eta_ms;
                event.error = error;
                event.reason = reason;
                event.args = args;
                event.kwargs = kwargs;
                event
            },
        )
}

/// A batch of task events of any version.
pub(crate) fn task_event_batch() -> impl Strategy<Value = TaskEventBatch> {
    (any::<u32>(), text(), vec(task_event(), 0..3)).prop_map(|(v, hostname, events)| {
        let mut batch = TaskEventBatch::new(hostname, events);
        batch.v = v;
        batch
    })
}

/// A worker event with any figures.
pub(crate) fn worker_event() -> impl Strategy<Value = WorkerEvent> {
    (
        (any::<u32>(), worker_event_kind(), text(), any::<u64>()),
        (any::<u32>(), text(), texts(), any::<u32>()),
        (any::<u32>(), any::<u32>(), any::<u64>()),
        (of(uniform3(finite_f64())), finite_f64(), of(text())),
    )
        .prop_map(
            |(
                (v, kind, hostname, at_ms),
                (pid, software, queues, concurrency),
                (active, reserved, processed),
                (load, freq_s, http),
            )| {
                let mut event = WorkerEvent::new(kind, hostname, at_ms);
                event.v = v;
                event.pid = pid;
                event.software = software;
                event.queues = queues;
                event.concurrency = concurrency;
                event.active = active;
                event.reserved = reserved;
                event.processed = processed;
                event.load = load;
                event.freq_s = freq_s;
                event.http = http;
                event
            },
        )
}

/// A task an `active` or `reserved` reply lists.
pub(crate) fn held_task() -> impl Strategy<Value = HeldTask> {
    (
        (text(), text(), text(), any::<u64>()),
        (any::<u8>(), any::<u32>(), any::<u64>(), of(any::<u64>())),
        (of(vec(json_value(), 0..3)), of(json_object()), of(text())),
    )
        .prop_map(
            |(
                (id, task, queue, received_at_ms),
                (priority, retries, delivered, started_at_ms),
                (args, kwargs, root_id),
            )| {
                let mut held = HeldTask::new(id, task, queue, received_at_ms);
                held.priority = priority;
                held.retries = retries;
                held.delivered = delivered;
                held.started_at_ms = started_at_ms;
                held.args = args;
                held.kwargs = kwargs;
                held.root_id = root_id;
                held
            },
        )
}

/// An `active` or `reserved` result, in any order.
pub(crate) fn held_tasks_result() -> impl Strategy<Value = HeldTasksResult> {
    vec(held_task(), 0..3).prop_map(|tasks| {
        let mut result = HeldTasksResult::new(Vec::new());
        result.tasks = tasks;
        result
    })
}

/// A delayed task a `scheduled` reply lists.
pub(crate) fn scheduled_task() -> impl Strategy<Value = ScheduledTask> {
    (
        (text(), text(), text(), any::<u64>()),
        (any::<u8>(), any::<u32>()),
    )
        .prop_map(|((id, task, queue, eta_ms), (priority, retries))| {
            let mut scheduled = ScheduledTask::new(id, task, queue, eta_ms);
            scheduled.priority = priority;
            scheduled.retries = retries;
            scheduled
        })
}

/// A `scheduled` result, in any order.
pub(crate) fn scheduled_result() -> impl Strategy<Value = ScheduledResult> {
    (any::<bool>(), any::<u64>(), vec(scheduled_task(), 0..3)).prop_map(
        |(scheduler, total, tasks)| {
            let mut result = ScheduledResult::inactive();
            result.scheduler = scheduler;
            result.total = total;
            result.tasks = tasks;
            result
        },
    )
}

/// A `pool_grow` or `pool_shrink` result.
pub(crate) fn pool_result() -> impl Strategy<Value = PoolResult> {
    any::<usize>().prop_map(PoolResult::new)
}

/// An `add_consumer` or `cancel_consumer` result, in any order.
pub(crate) fn consumers_result() -> impl Strategy<Value = ConsumersResult> {
    texts().prop_map(|queues| {
        let mut result = ConsumersResult::new(Vec::new());
        result.queues = queues;
        result
    })
}

/// A `shutdown` result, with any mode text.
pub(crate) fn shutdown_result() -> impl Strategy<Value = ShutdownResult> {
    text().prop_map(|mode| {
        let mut result = ShutdownResult::new(false);
        result.shutdown = mode;
        result
    })
}

/// A scheduler lease of any version.
pub(crate) fn beat_lease() -> impl Strategy<Value = BeatLease> {
    (any::<u32>(), text(), any::<u64>(), texts()).prop_map(|(v, holder, until_ms, entries)| {
        let mut lease = BeatLease::new(holder, until_ms, entries);
        lease.v = v;
        lease
    })
}

/// A beat entry's state.
pub(crate) fn beat_entry_state() -> impl Strategy<Value = BeatEntryState> {
    (
        (any::<u32>(), text(), text(), text()),
        (any::<u64>(), any::<u64>(), of(any::<u64>())),
        (of(text()), of(any::<u64>()), any::<u64>()),
    )
        .prop_map(
            |(
                (v, name, task, schedule),
                (anchor_ms, last_tick_ms, last_run_ms),
                (last_task_id, next_tick_ms, runs),
            )| {
                let mut state = BeatEntryState::new(name, task, schedule, anchor_ms, next_tick_ms);
                state.v = v;
                state.last_tick_ms = last_tick_ms;
                state.last_run_ms = last_run_ms;
                state.last_task_id = last_task_id;
                state.runs = runs;
                state
            },
        )
}

/// A setting's scope.
pub(crate) fn setting_scope() -> impl Strategy<Value = SettingScope> {
    prop_oneof![
        Just(SettingScope::Workers),
        Just(SettingScope::Cluster),
        text().prop_map(|worker| SettingScope::Worker { worker }),
    ]
}

/// A stored rate limit of any version.
pub(crate) fn rate_limit_setting() -> impl Strategy<Value = RateLimitSetting> {
    (any::<u32>(), text(), setting_scope(), of(rate())).prop_map(|(v, task, scope, rate)| {
        let mut setting = RateLimitSetting::new(task, scope, rate);
        setting.v = v;
        setting
    })
}

/// Stored priority weights of any version.
pub(crate) fn priority_weights_setting() -> impl Strategy<Value = PriorityWeightsSetting> {
    (any::<u32>(), setting_scope(), weights()).prop_map(|(v, scope, weights)| {
        let mut setting = PriorityWeightsSetting::new(scope, weights);
        setting.v = v;
        setting
    })
}
