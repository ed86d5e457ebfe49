//! Rate limits: per worker and cluster-wide, measured over a minute; changed at runtime by control
//! commands (running workers, a worker started later, one named worker); a task waiting for its
//! rate holds no slot and is not redelivered.

use std::collections::BTreeMap;
use std::time::Duration;

use celerity::{AsyncResult, Client, ControlError, RateLimitChange, RateLimitScope, TaskState};

use crate::support::{WorkerProcess, client, server};

const WAIT: Duration = Duration::from_secs(30);
/// Long enough for a minute-long run, with room for a slow machine.
const LONG_WAIT: Duration = Duration::from_secs(150);

/// When each task started, by worker (milliseconds since the epoch, sorted).
async fn starts(results: &[AsyncResult<u32>], within: Duration) -> BTreeMap<String, Vec<u64>> {
    let mut by_worker: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for result in results {
        let record = result.wait(within).await.expect("the task finishes");
        assert_eq!(record.state, TaskState::Success, "{record:?}");
        by_worker
            .entry(record.worker.clone().expect("the worker is recorded"))
            .or_default()
            .push(record.started_at_ms.expect("the start is recorded"));
    }
    for times in by_worker.values_mut() {
        times.sort_unstable();
    }
    by_worker
}

/// Tasks per second between the first and the last start.
fn measured_rate(times: &[u64]) -> f64 {
    let span_ms = times[times.len() - 1] - times[0];
    (times.len() - 1) as f64 * 1000.0 / span_ms as f64
}

/// The shortest time between two starts, in milliseconds.
fn shortest_gap(times: &[u64]) -> u64 {
    times
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .min()
        .unwrap_or(u64::MAX)
}

async fn send<F, Fut>(n: u32, send_one: F) -> Vec<AsyncResult<u32>>
where
    F: Fn(u32) -> Fut,
    Fut: std::future::Future<Output = Result<AsyncResult<u32>, celerity::EnqueueError>>,
{
    let mut results = Vec::with_capacity(n as usize);
    for i in 0..n {
        results.push(send_one(i).await.expect("the task is sent"));
    }
    results
}

/// Sets the limit of `it.metered` and checks that every answering worker took it.
async fn set_metered(
    client: &Client,
    change: &str,
    scope: RateLimitScope,
    destination: Option<&str>,
) {
    let change: RateLimitChange = change.parse().expect("a valid change");
    let replies = client
        .control()
        .rate_limit(
            "it.metered",
            change,
            scope,
            destination,
            Duration::from_secs(1),
        )
        .await
        .expect("the command is sent");
    assert!(!replies.is_empty(), "some worker answers");
    assert!(replies.iter().all(|reply| reply.ok), "{replies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_worker_limit_holds_over_a_minute() {
    let server = server();
    let url = server.url();
    let _worker = WorkerProcess::start(&url, "w1", &["-c", "4"]);
    let client = client(&url).await;

    // 10/s for 61 s: the first task starts at once, the 611th one 61 s later.
    let results = send(611, |n| celerity_it::limited.delay(&client, n)).await;
    let by_worker = starts(&results, LONG_WAIT).await;
    let times = &by_worker["w1"];
    let rate = measured_rate(times);
    let span_s = (times[times.len() - 1] - times[0]) as f64 / 1000.0;
    eprintln!("per-worker limit 10/s: measured {rate:.3}/s over {span_s:.1} s");
    assert!(span_s >= 60.0, "the run lasts a minute ({span_s} s)");
    assert!((9.0..=11.0).contains(&rate), "measured {rate}/s for 10/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_limit_is_shared_by_two_workers_over_a_minute() {
    let server = server();
    let url = server.url();
    let _w1 = WorkerProcess::start(&url, "w1", &["-c", "4"]);
    let _w2 = WorkerProcess::start(&url, "w2", &["-c", "4"]);
    let client = client(&url).await;

    let results = send(611, |n| celerity_it::global_limited.delay(&client, n)).await;
    let by_worker = starts(&results, LONG_WAIT).await;
    assert_eq!(by_worker.len(), 2, "both workers run some: {by_worker:?}");
    let mut all: Vec<u64> = by_worker.values().flatten().copied().collect();
    all.sort_unstable();
    let rate = measured_rate(&all);
    let span_s = (all[all.len() - 1] - all[0]) as f64 / 1000.0;
    let shares: Vec<usize> = by_worker.values().map(Vec::len).collect();
    eprintln!(
        "global limit 10/s on two workers: measured {rate:.3}/s over {span_s:.1} s, shares {shares:?}"
    );
    assert!(span_s >= 60.0, "the run lasts a minute ({span_s} s)");
    assert!((9.0..=11.0).contains(&rate), "measured {rate}/s for 10/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_task_holds_no_slot_and_is_not_redelivered() {
    let server = server();
    let url = server.url();
    // One slot, no prefetch, and an AckWait of 2 s that the waits outlast.
    let _worker = WorkerProcess::start(&url, "w1", &["-c", "1", "--ack-wait", "2"]);
    let client = client(&url).await;

    // 1/h: the first runs, the next four wait for an hour.
    let scarce = send(5, |n| celerity_it::scarce.delay(&client, n)).await;
    assert_eq!(scarce[0].get(WAIT).await.unwrap(), 0);
    let started = std::time::Instant::now();
    let sum = celerity_it::add.delay(&client, 2, 3).await.unwrap();
    assert_eq!(
        sum.get(WAIT).await.unwrap(),
        5,
        "the only slot is free for other tasks"
    );
    // Past two AckWaits, the waiting tasks are still waiting, and none was delivered again.
    tokio::time::sleep_until(tokio::time::Instant::from_std(started) + Duration::from_secs(5))
        .await;
    for waiting in &scarce[1..] {
        assert_eq!(waiting.state().await.unwrap(), TaskState::Pending);
    }
    let js = async_nats::jetstream::new(client.nats().clone());
    let stream = js.get_stream("CELERITY_Q_default").await.unwrap();
    let mut redelivered = 0;
    for priority in 0..=9 {
        if let Ok(mut consumer) = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&format!("p{priority}"))
            .await
        {
            let info = consumer.info().await.unwrap();
            redelivered += info.num_redelivered;
            assert_eq!(info.num_ack_pending, if priority == 0 { 4 } else { 0 });
        }
    }
    assert_eq!(redelivered, 0, "in-progress acks keep waiting tasks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_change_applies_to_running_workers_and_to_one_started_later() {
    let server = server();
    let url = server.url();
    let _w1 = WorkerProcess::start(&url, "w1", &["-c", "4"]);
    let client = client(&url).await;

    // Unlimited at first: 20 tasks start within moments of each other.
    let free = send(20, |n| celerity_it::metered.delay(&client, n)).await;
    let times = &starts(&free, WAIT).await["w1"];
    assert!(shortest_gap(times) < 400, "no limit yet: {times:?}");

    // 2/s for every worker, sent to the running one; a worker started afterwards reads it.
    set_metered(&client, "2/s", RateLimitScope::PerWorker, None).await;
    let _w2 = WorkerProcess::start(&url, "w2", &["-c", "4"]);
    let limited = send(16, |n| celerity_it::metered.delay(&client, n)).await;
    let by_worker = starts(&limited, WAIT).await;
    assert_eq!(by_worker.len(), 2, "both workers run some: {by_worker:?}");
    for (worker, times) in &by_worker {
        assert!(shortest_gap(times) >= 450, "{worker} keeps 2/s: {times:?}");
    }

    // One worker alone: w1 goes back to no limit, w2 keeps 2/s.
    set_metered(&client, "none", RateLimitScope::PerWorker, Some("w1")).await;
    let mixed = send(24, |n| celerity_it::metered.delay(&client, n)).await;
    let by_worker = starts(&mixed, WAIT).await;
    assert!(
        shortest_gap(&by_worker["w1"]) < 400,
        "w1 is free: {by_worker:?}"
    );
    if let Some(times) = by_worker.get("w2") {
        assert!(shortest_gap(times) >= 450, "w2 keeps 2/s: {times:?}");
    }

    // Cluster-wide 2/s: both workers together start one task every 500 ms.
    set_metered(&client, "2/s", RateLimitScope::Global, None).await;
    let global = send(10, |n| celerity_it::metered.delay(&client, n)).await;
    let mut all: Vec<u64> = starts(&global, WAIT)
        .await
        .into_values()
        .flatten()
        .collect();
    all.sort_unstable();
    assert!(
        shortest_gap(&all) >= 400,
        "one task every 500 ms in the cluster: {all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rate_limit_requests_are_refused_with_the_reason() {
    let server = server();
    let url = server.url();
    let _worker = WorkerProcess::start(&url, "w1", &[]);
    let client = client(&url).await;
    let control = client.control();

    let bad = "fast".parse::<RateLimitChange>().unwrap_err();
    assert!(bad.to_string().contains("\"fast\""), "{bad}");

    let change = RateLimitChange::Set("5/s".parse().unwrap());
    let global_to_one = control
        .rate_limit(
            "it.metered",
            change,
            RateLimitScope::Global,
            Some("w1"),
            WAIT,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(global_to_one, ControlError::GlobalWithDestination(ref worker) if worker == "w1"),
        "{global_to_one}"
    );
    let unknown_task = control
        .rate_limit(
            "it.nope",
            change,
            RateLimitScope::PerWorker,
            Some("w1"),
            WAIT,
        )
        .await
        .unwrap();
    assert!(!unknown_task[0].ok);
    assert!(
        unknown_task[0]
            .error
            .as_deref()
            .unwrap()
            .contains("\"it.nope\" is not registered"),
        "{unknown_task:?}"
    );
    let missing = control
        .rate_limit(
            "it.metered",
            change,
            RateLimitScope::PerWorker,
            Some("nobody"),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(missing, ControlError::UnknownDestination(_)),
        "{missing}"
    );

    // A request with a bad rate, as another language might send it.
    let reply = client
        .nats()
        .request(
            "celerity.control.w1",
            r#"{"v":1,"command":"rate_limit","task":"it.metered","rate":"10/day"}"#.into(),
        )
        .await
        .unwrap();
    let reply: celerity_proto::ControlReply = serde_json::from_slice(&reply.payload).unwrap();
    assert!(!reply.ok);
    assert!(
        reply.error.as_deref().unwrap().contains("\"10/day\""),
        "{reply:?}"
    );
}

/// The `registered` reply of worker `w1`.
async fn registered_of_w1(client: &Client) -> celerity_proto::RegisteredResult {
    let replies = client
        .control()
        .send(celerity_proto::ControlCommand::Registered, Some("w1"), WAIT)
        .await
        .expect("w1 answers registered");
    replies[0]
        .result_as::<celerity_proto::RegisteredResult>()
        .expect("registered has a result")
        .expect("registered's result reads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_tells_each_task_s_rate_limits_in_force_after_runtime_changes() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;

    let before = registered_of_w1(&client).await;
    assert_eq!(
        before.rate_limits.get("it.limited").map(String::as_str),
        Some("10/s")
    );
    assert_eq!(
        before
            .global_rate_limits
            .get("it.global_limited")
            .map(String::as_str),
        Some("10/s")
    );
    assert!(!before.rate_limits.contains_key("it.add"), "{before:?}");
    assert!(!before.rate_limits.contains_key("it.metered"), "{before:?}");

    let control = client.control();
    let change = |rate: &str| RateLimitChange::Set(rate.parse().expect("a valid rate"));
    for (task, change, scope) in [
        ("it.metered", change("3/m"), RateLimitScope::PerWorker),
        ("it.add", change("7/h"), RateLimitScope::Global),
        (
            "it.limited",
            RateLimitChange::Unlimited,
            RateLimitScope::PerWorker,
        ),
    ] {
        let destination = (scope == RateLimitScope::PerWorker).then_some("w1");
        let replies = control
            .rate_limit(task, change, scope, destination, Duration::from_secs(2))
            .await
            .expect("the change is sent");
        assert!(replies.iter().all(|reply| reply.ok), "{replies:?}");
    }

    let after = registered_of_w1(&client).await;
    assert_eq!(
        after.rate_limits.get("it.metered").map(String::as_str),
        Some("3/m")
    );
    assert_eq!(
        after.global_rate_limits.get("it.add").map(String::as_str),
        Some("7/h")
    );
    assert!(!after.rate_limits.contains_key("it.limited"), "{after:?}");
    assert!(!after.rate_limits.contains_key("it.add"), "{after:?}");
    let printed = crate::support::run_celerity(
        &server.url(),
        &["inspect", "registered", "-d", "w1", "--timeout", "5"],
    );
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.contains("it.metered [rate limit 3/m]"), "{printed}");
    assert!(printed.contains("it.add [global 7/h]"), "{printed}");
}
