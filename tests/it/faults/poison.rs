//! Poison and oversized work among valid tasks: a body that panics, one that aborts its worker,
//! arguments over the server's `max_payload` and a result over it; the checker's tasks around
//! them must all complete.

use std::time::Duration;

use celerity::{ApplyOptions, EnqueueError, ResultError, TaskState};
use serde_json::{Value, json};

use super::checker::{Checker, make_ledger};
use super::single::version;
use crate::support::{WorkerProcess, client, eventually, server};

const WAIT: Duration = Duration::from_secs(30);

/// Keeps `count` workers running: each one that exits (killed by a poison task) is replaced,
/// until `stop` is set. Returns how many were replaced.
async fn keep_workers(
    url: String,
    count: usize,
    args: &'static [&'static str],
    stop: tokio::sync::watch::Receiver<bool>,
) -> usize {
    let start = |n: usize| WorkerProcess::spawn(&url, &format!("p-{n}"), args, &[]);
    let mut workers: Vec<WorkerProcess> = (0..count).map(start).collect();
    let mut started = count;
    while !*stop.borrow() {
        for worker in &mut workers {
            if worker.has_exited() {
                *worker = start(started);
                started += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started - count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_tasks_fail_or_are_dead_lettered_and_the_tasks_behind_them_flow() {
    let server = server();
    let url = server.url();
    make_ledger(&url, 1).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let args: &'static [&'static str] = &["-c", "2", "--ack-wait", "1", "--max-deliveries", "4"];
    let keeper = tokio::spawn(keep_workers(url.clone(), 2, args, stopped));
    let client = client(&url).await;
    let checker = Checker::default();
    let mut panics = Vec::new();
    let mut aborts = Vec::new();
    for round in 0..4u64 {
        checker
            .send_many(&client, &format!("v{round}"), 50, 10, Duration::ZERO)
            .await;
        panics.push(
            celerity_it::panics
                .delay(&client, format!("poison {round}"))
                .await
                .expect("sent"),
        );
        if round % 2 == 0 {
            aborts.push(
                celerity_it::abort_worker
                    .delay(&client)
                    .await
                    .expect("sent"),
            );
        }
    }
    for panicked in &panics {
        match panicked.get(WAIT).await {
            Err(ResultError::Failed { error, .. }) => {
                assert!(error.message.contains("poison"), "{error:?}");
            }
            other => panic!("a panicking body is a FAILURE, got {other:?}"),
        }
    }
    for aborted in &aborts {
        let record = eventually_final(aborted).await;
        assert_eq!(record.state, TaskState::Failure, "{record:?}");
        let meta = record.meta.expect("the dead letter's meta");
        assert_eq!(meta["reason"], "too_many_deliveries", "{meta}");
    }
    let report = checker.report(&url, Duration::from_secs(60)).await;
    stop.send(true).expect("the keeper listens");
    let replaced = keeper.await.expect("the keeper ends");
    eprintln!("{replaced} workers replaced\n{report}");
    report.record(
        "10 poison",
        &version(),
        "4 panicking bodies, 2 bodies that abort their worker",
        None,
    );
    report.assert_clean(false);
    assert!(
        replaced >= 2,
        "each aborting body killed a worker ({replaced} replaced)"
    );
}

/// The final record of `result`, once it has one.
async fn eventually_final<T>(result: &celerity::AsyncResult<T>) -> celerity_proto::ResultRecord {
    eventually("a final record", WAIT, || async {
        let record = result.record().await.ok().flatten();
        record.is_some_and(|record| record.state.is_ready())
    })
    .await;
    result
        .record()
        .await
        .expect("reads the record")
        .expect("a final record")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_arguments_fail_at_send_and_an_oversized_result_is_one_failure() {
    let server = celerity_testkit::NatsServer::builder()
        .max_payload(64 * 1024)
        .start()
        .expect("a server with a 64 KiB max_payload");
    let url = server.url();
    make_ledger(&url, 1).await;
    let _worker = WorkerProcess::start(&url, "payload", &["--ack-wait", "2"]);
    let client = client(&url).await;
    let js = async_nats::jetstream::new(client.nats().clone());
    let mut queue = js.get_stream("CELERITY_Q_default").await.expect("queue");
    let before = queue.info().await.expect("info").state.last_sequence;
    let refused = client
        .send_task(
            "it.length",
            json!([vec![1; 40_000]]),
            Value::Null,
            ApplyOptions::new(),
        )
        .await
        .expect_err("100 KiB of arguments do not fit in 64 KiB");
    assert!(
        matches!(refused, EnqueueError::PayloadTooLarge { .. }),
        "{refused:?}"
    );
    let after = queue.info().await.expect("info").state.last_sequence;
    assert_eq!(after, before, "nothing was enqueued");

    let checker = Checker::default();
    checker
        .send_many(&client, "around", 20, 0, Duration::ZERO)
        .await;
    let oversized = celerity_it::sized
        .delay(&client, 200 * 1024)
        .await
        .expect("sent");
    checker
        .send_many(&client, "behind", 20, 0, Duration::ZERO)
        .await;
    match oversized.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.kind, "celerity::ResultTooLarge", "{error:?}");
        }
        other => panic!("expected ResultTooLarge, got {other:?}"),
    }
    let report = checker.report(&url, Duration::from_secs(30)).await;
    report.record(
        "15 payload limits",
        &version(),
        "arguments and a result over a 64 KiB max_payload",
        None,
    );
    report.assert_clean(true);
    // One run of the oversized task, not a redelivery loop: its message is gone.
    crate::support::wait_until_queue_is_empty(&client, WAIT).await;
}
