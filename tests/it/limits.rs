//! Time limits: the soft limit tells the task, the hard limit stops it and frees its slot.

use std::time::{Duration, Instant};

use celerity::ResultError;

use crate::support::{WorkerProcess, client, server};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soft_limit_tells_the_task_and_it_stops_early() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;

    let steps = celerity_it::cooperative
        .delay(&client, 5000)
        .await
        .unwrap()
        .get(WAIT)
        .await
        .unwrap();
    // 200 ms of 20 ms steps, give or take scheduling; far fewer than the 250 it would do.
    assert!((5..=40).contains(&steps), "stopped after {steps} steps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hard_limit_stops_the_task_and_frees_its_slot() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &["-c", "1"]);
    let client = client(&server.url()).await;

    let started = Instant::now();
    let stuck = celerity_it::stubborn.delay(&client, 60_000).await.unwrap();
    let next = celerity_it::add.delay(&client, 1, 1).await.unwrap();
    match stuck.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.kind, "celerity::TimeLimitExceeded")
        }
        other => panic!("expected the hard limit, got {other:?}"),
    }
    // The only slot was freed: the next task ran right after.
    assert_eq!(next.get(WAIT).await.unwrap(), 2);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}
