//! Retries: explicit and automatic, with backoff, a limit, and a visible RETRY state.

use std::time::{Duration, Instant};

use celerity::{ResultError, TaskState};

use crate::support::{WorkerProcess, client, eventually, server};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_retries_back_off_exponentially() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;

    let started = Instant::now();
    let result = celerity_it::flaky.delay(&client, 3).await.unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), 3);
    // Backoff 100, 200 and 400 ms: at least 700 ms in all.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(700),
        "three retries took only {elapsed:?}"
    );
    let record = result.record().await.unwrap().unwrap();
    assert_eq!(record.retries, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_error_types_are_retried_automatically() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;

    let result = celerity_it::autoretry.delay(&client, 2).await.unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_last_retry_the_task_fails() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;

    let result = celerity_it::hopeless.delay(&client).await.unwrap();
    match result.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.kind, "celerity::MaxRetriesExceeded")
        }
        other => panic!("expected the task to give up, got {other:?}"),
    }
    assert_eq!(result.record().await.unwrap().unwrap().retries, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_retry_shows_as_retry_with_its_count_and_eta() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;

    let result = celerity_it::retry_once_later.delay(&client).await.unwrap();
    eventually("the task is RETRY", WAIT, || async {
        result.state().await.unwrap() == TaskState::Retry
    })
    .await;
    let record = result.record().await.unwrap().unwrap();
    let meta = record.meta.expect("retry details");
    assert_eq!(meta["retries"], 1);
    assert!(
        meta["eta_ms"].as_u64().unwrap() > record.updated_at_ms,
        "the next attempt is in the future"
    );
    assert_eq!(result.get(WAIT).await.unwrap(), 1);
}
