//! Strict priorities: a priority-9 task overtakes a backlog, levels run in order, and a long task
//! holds back nothing it has not started.

use std::time::{Duration, Instant};

use celerity::ApplyOptions;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;

use crate::support::{WorkerProcess, client, release_held, runs_stream, server};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_nine_task_starts_before_a_backlog_of_100_000_priority_zero_tasks() {
    let server = server();
    let url = server.url();
    let _worker = WorkerProcess::start(&url, "w1", &["-c", "2"]);
    let client = client(&url).await;

    // 100,000 tasks of 50 ms at priority 0: both slots stay busy for over 40 minutes.
    let backlog = ApplyOptions::new().ignore_result(true);
    futures_util::stream::iter(0..100_000)
        .map(|_| {
            client.send_task(
                "it.slow_add",
                json!([0, 0, 50]),
                json!(null),
                backlog.clone(),
            )
        })
        .buffer_unordered(1024)
        .try_for_each(|_| async { Ok(()) })
        .await
        .expect("the backlog is sent");

    let sent = Instant::now();
    let urgent = celerity_it::add
        .apply_async(&client, (9, 9), ApplyOptions::new().priority(9))
        .await
        .unwrap();
    assert_eq!(urgent.get(WAIT).await.unwrap(), 18);
    let record = urgent.record().await.unwrap().unwrap();
    let sent_at = record
        .updated_at_ms
        .saturating_sub(sent.elapsed().as_millis() as u64);
    let latency_ms = record.started_at_ms.unwrap().saturating_sub(sent_at);
    println!(
        "priority-9 time to start behind 100,000 priority-0 tasks: {latency_ms} ms (one task lasts 50 ms)"
    );
    // One task's duration (50 ms) plus a generous allowance for a loaded 2-core machine.
    assert!(
        latency_ms < 50 + 1000,
        "the priority-9 task waited {latency_ms} ms"
    );
}

/// Waits for every task and returns (start time, priority) pairs in the order the tasks started.
async fn start_order(sent: &[(u8, celerity::AsyncResult<i64>)]) -> Vec<(u64, u8)> {
    let mut started = Vec::new();
    for (priority, result) in sent {
        result.get(WAIT).await.expect("every task finishes");
        let record = result
            .record()
            .await
            .expect("the record")
            .expect("a record");
        started.push((record.started_at_ms.expect("a start time"), *priority));
    }
    started.sort();
    started
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_batch_runs_highest_priority_first() {
    let server = server();
    let url = server.url();
    let client = client(&url).await;

    // Queued before any worker runs: three tasks per level, sent lowest level first.
    let mut sent = Vec::new();
    for round in 0..3 {
        for priority in 0..=9u8 {
            let options = ApplyOptions::new().priority(priority);
            let result = celerity_it::add
                .apply_async(&client, (i64::from(priority), round), options)
                .await
                .unwrap();
            sent.push((priority, result));
        }
    }
    let _worker = WorkerProcess::start(&url, "w1", &["-c", "1"]);
    let started = start_order(&sent).await;
    let order: Vec<u8> = started.iter().map(|(_, priority)| *priority).collect();
    let mut expected = order.clone();
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!(order, expected, "tasks ran in this order of priorities");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_task_does_not_hold_back_queued_tasks_from_an_idle_worker() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let _busy = WorkerProcess::start(&url, "busy", &["-c", "1"]);
    let _idle = WorkerProcess::start(&url, "idle", &["-c", "1"]);
    let client = client(&url).await;

    let long = celerity_it::hold.delay(&client).await.unwrap();
    let queued: Vec<_> =
        futures_util::future::try_join_all((0..5).map(|i| celerity_it::add.delay(&client, i, i)))
            .await
            .unwrap();
    for (i, result) in (0..).zip(&queued) {
        assert_eq!(
            result
                .get(WAIT)
                .await
                .expect("queued tasks run while the long one does"),
            2 * i
        );
    }
    assert!(
        !long.ready().await.unwrap(),
        "the long task is still running"
    );
    release_held(&client, &url, long.id().as_str(), WAIT).await;
    long.get(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_mode_gives_low_priorities_a_share() {
    let server = server();
    let url = server.url();
    let client = client(&url).await;

    let mut sent = Vec::new();
    for i in 0..40 {
        for priority in [0u8, 9] {
            let result = celerity_it::add
                .apply_async(&client, (i, 0), ApplyOptions::new().priority(priority))
                .await
                .unwrap();
            sent.push((priority, result));
        }
    }
    // Equal weights for 0 and 9: under strict mode priority 0 would wait for all of priority 9.
    let _worker = WorkerProcess::start(
        &url,
        "w1",
        &["-c", "1", "--priority-weights", "1,0,0,0,0,0,0,0,0,1"],
    );
    let started = start_order(&sent).await;
    let low_in_first_half = started
        .iter()
        .take(40)
        .filter(|(_, priority)| *priority == 0)
        .count();
    assert!(
        low_in_first_half >= 8,
        "priority 0 got {low_in_first_half} of the first 40 runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_steps_round_priorities_and_limit_the_queue_to_the_steps() {
    let server = server();
    let url = server.url();
    let worker = WorkerProcess::spawn(&url, "w1", &["-c", "1"], &[("IT_PRIORITY_STEPS", "0,5,9")]);
    worker.wait_for_log("consuming", WAIT);
    let app = celerity::App::builder()
        .task(celerity_it::add)
        .priority_steps([0, 5, 9])
        .build()
        .unwrap();
    let client = app.client(&celerity::NatsConfig::new(&url)).await.unwrap();

    let result = celerity_it::add
        .apply_async(&client, (3, 4), ApplyOptions::new().priority(7))
        .await
        .unwrap();
    assert_eq!(
        result.get(WAIT).await.unwrap(),
        7,
        "priority 7 is sent at step 5 and runs"
    );

    let js = async_nats::jetstream::new(client.nats().clone());
    let mut stream = js.get_stream("CELERITY_Q_default").await.unwrap();
    let subjects = stream.info().await.unwrap().config.subjects.clone();
    assert_eq!(
        subjects,
        vec![
            "celerity.q.default.0",
            "celerity.q.default.5",
            "celerity.q.default.9"
        ]
    );
    let refused = async { js.publish("celerity.q.default.7", "{}".into()).await?.await }.await;
    assert!(refused.is_err(), "a level outside the steps is refused");

    let error = celerity::App::builder()
        .priority_steps([0, 12])
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("12"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_weights_set_at_runtime_hold_for_a_worker_started_later() {
    let server = server();
    let url = server.url();
    let client = client(&url).await;

    // Set on a running strict worker, which takes them at once and stores them.
    let mut first = WorkerProcess::start(&url, "w1", &["-c", "1"]);
    let change: celerity::PriorityWeightsChange = "1,0,0,0,0,0,0,0,0,1".parse().unwrap();
    let replies = client
        .control()
        .priority_weights(change, None, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(
        replies[0].result.as_ref().unwrap()["priority_weights"],
        serde_json::json!([1, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    );
    first.signal(libc::SIGTERM);
    assert!(first.wait_exit(WAIT).success());

    // A worker started afterwards, with strict flags, reads the stored weights.
    let mut sent = Vec::new();
    for i in 0..40 {
        for priority in [0u8, 9] {
            let result = celerity_it::add
                .apply_async(&client, (i, 0), ApplyOptions::new().priority(priority))
                .await
                .unwrap();
            sent.push((priority, result));
        }
    }
    let _second = WorkerProcess::start(&url, "w2", &["-c", "1"]);
    let started = start_order(&sent).await;
    let low_in_first_half = started
        .iter()
        .take(40)
        .filter(|(_, priority)| *priority == 0)
        .count();
    assert!(
        low_in_first_half >= 8,
        "priority 0 got {low_in_first_half} of the first 40 runs"
    );

    let bad = "1,2,3"
        .parse::<celerity::PriorityWeightsChange>()
        .unwrap_err();
    assert!(bad.to_string().contains("3 weights"), "{bad}");
}
