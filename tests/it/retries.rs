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

/// The hook calls recorded for task `id`, as `it.runs.hook.<hook>` subjects' last tokens.
async fn hook_calls(url: &str, id: &str) -> Vec<String> {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.expect("connect"));
    let mut stream = js.get_stream("IT_RUNS").await.expect("the IT_RUNS stream");
    let n_messages = stream.info().await.expect("stream info").state.messages;
    let mut calls = Vec::new();
    for sequence in 1..=n_messages {
        let message = stream
            .get_raw_message(sequence)
            .await
            .expect("a run record");
        if message.payload == id.as_bytes()
            && let Some(hook) = message.subject.strip_prefix("it.runs.hook.")
        {
            calls.push(hook.to_owned());
        }
    }
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_task_hooks_run_on_success_failure_and_retry() {
    let server = server();
    let url = server.url();
    crate::support::runs_stream(&url).await;
    let _worker = WorkerProcess::start(&url, "w1", &[]);
    let client = client(&url).await;

    let retried = celerity_it::hooked.delay(&client, false).await.unwrap();
    assert_eq!(retried.get(WAIT).await.unwrap(), 1);
    let failed = celerity_it::hooked.delay(&client, true).await.unwrap();
    assert!(failed.get(WAIT).await.is_err());
    eventually("every hook call is recorded", WAIT, || async {
        hook_calls(&url, retried.id().as_str()).await.len() >= 4
            && hook_calls(&url, failed.id().as_str()).await.len() >= 2
    })
    .await;
    assert_eq!(
        hook_calls(&url, retried.id().as_str()).await,
        vec![
            "retry",
            "after_return_retry",
            "success",
            "after_return_success"
        ]
    );
    assert_eq!(
        hook_calls(&url, failed.id().as_str()).await,
        vec!["failure", "after_return_failure"]
    );
}
