//! What a Celery user expects of the task API, checked against a real worker: automatic retries
//! through `anyhow`, option presets, where a task runs, `info()` and the stream of states.

use std::time::Duration;

use celerity::{AsyncResult, ErrorRecord, ResultError, ResultRecord, StreamExt, TaskState};
use serde_json::json;

use crate::support::{WorkerProcess, client, eventually, run_counts, runs_stream, server};

const WAIT: Duration = Duration::from_secs(30);

/// The error a task failed with, and how many times it had been retried.
async fn failure_of(result: &AsyncResult<u32>) -> (ErrorRecord, u32) {
    match result.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            let record = result.record().await.expect("the record is read");
            let record = record.expect("a stored failure");
            (error, record.retries)
        }
        outcome => panic!("expected the task to fail, got {outcome:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoretry_for_matches_an_error_held_by_anyhow() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;

    for how in ["io", "io_in_context"] {
        let result = celerity_it::autoretry_anyhow
            .delay(&client, 2, how.to_owned())
            .await
            .unwrap();
        let retries = result.get(WAIT).await.unwrap_or_else(|error| {
            panic!("an anyhow error holding an I/O error ({how}) is retried: {error}")
        });
        assert_eq!(retries, 2);
    }
    let other = celerity_it::autoretry_anyhow
        .delay(&client, 2, "message".to_owned())
        .await
        .unwrap();
    let (error, retries) = failure_of(&other).await;
    assert_eq!(error.kind, "anyhow::Error");
    assert_eq!(retries, 0, "an error of another type fails at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_sees_its_queue_priority_delivery_and_worker() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let first_worker = WorkerProcess::start(&url, "w1", &["--ack-wait", "1"]);
    let client = client(&url).await;
    let at_priority_7 = || celerity::ApplyOptions::new().priority(7);

    let first = celerity_it::where_am_i
        .apply_async(&client, (false,), at_priority_7())
        .await
        .unwrap();
    assert_eq!(
        first.get(WAIT).await.unwrap(),
        json!({
            "queue": "default",
            "priority": 7,
            "delivered": 1,
            "redelivered": false,
            "subject": "celerity.q.default.7",
            "hostname": "w1",
        })
    );

    // A worker dies running the task: the next worker gets it again, as a redelivery.
    let redelivered = celerity_it::where_am_i
        .apply_async(&client, (true,), at_priority_7())
        .await
        .unwrap();
    eventually("the first delivery runs", WAIT, || async {
        run_counts(&url)
            .await
            .contains_key(redelivered.id().as_str())
    })
    .await;
    first_worker.signal(libc::SIGKILL);
    drop(first_worker);
    let _second_worker = WorkerProcess::start(&url, "w2", &["--ack-wait", "1"]);
    let info = redelivered.get(WAIT).await.unwrap();
    assert_eq!(info["hostname"], "w2");
    assert_eq!(info["delivered"], 2);
    assert_eq!(info["redelivered"], true);
    assert_eq!(info["priority"], 7);
    assert_eq!(info["queue"], "default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preset_carries_retry_options_and_a_tasks_own_options_override_it() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;

    // Four retries: one more than the default `max_retries` of 3, so only the preset allows it.
    let retried = celerity_it::preset_retried.delay(&client, 4).await.unwrap();
    assert_eq!(retried.get(WAIT).await.unwrap(), 4);

    let overridden = celerity_it::preset_overridden
        .delay(&client, 4)
        .await
        .unwrap();
    let (error, retries) = failure_of(&overridden).await;
    assert_eq!(error.message, "not yet");
    assert_eq!(retries, 1, "the task's own max_retries = 1 applies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_holds_the_result_on_success_and_the_error_on_failure() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;

    let sum = celerity_it::add.delay(&client, 2, 3).await.unwrap();
    sum.wait(WAIT).await.unwrap();
    assert_eq!(sum.info().await.unwrap(), Some(json!(5)));

    let failed = celerity_it::fail
        .delay(&client, "insufficient funds".to_owned())
        .await
        .unwrap();
    failed.wait(WAIT).await.unwrap();
    let info = failed.info().await.unwrap().expect("a failure's info");
    assert!(
        info["type"].as_str().unwrap().ends_with("PaymentError"),
        "{info}"
    );
    assert_eq!(info["message"], "card declined: insufficient funds");
    assert_eq!(info["causes"], json!(["gateway timeout"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_follow_a_task_from_another_process_until_it_ends() {
    let server = server();
    let url = server.url();
    let producer = client(&url).await;
    let observer = client(&url).await;

    let sent = celerity_it::progress.delay(&producer).await.unwrap();
    let followed = observer.async_result::<u32>(sent.id().as_str()).unwrap();
    let mut states = std::pin::pin!(followed.states());
    let mut next = async || {
        tokio::time::timeout(WAIT, states.next())
            .await
            .expect("the next state arrives")
    };
    let record = next().await.expect("a record").unwrap();
    assert_eq!(record.state, TaskState::Pending, "no worker runs it yet");

    let _worker = WorkerProcess::start(&url, "w1", &[]);
    let processing = TaskState::Custom("PROCESSING".into());
    let mut running = Vec::new();
    while running
        .last()
        .is_none_or(|record: &ResultRecord| record.state != processing)
    {
        running.push(next().await.expect("a record").unwrap());
    }
    // The bucket keeps one record per task: a state replaced before the watch delivered it
    // (STARTED, then PROCESSING a round trip later) may be skipped.
    let states: Vec<_> = running.iter().map(|record| &record.state).collect();
    assert!(
        states == [&TaskState::Started, &processing] || states == [&processing],
        "{states:?}"
    );
    assert_eq!(
        running[running.len() - 1].meta,
        Some(json!({"step": 2, "total": 3}))
    );

    producer
        .nats()
        .publish(format!("it.release.{}", sent.id()), "go".into())
        .await
        .unwrap();
    let record = next().await.expect("a record").unwrap();
    assert_eq!(record.state, TaskState::Success);
    assert_eq!(record.result, Some(json!(3)));
    assert!(
        next().await.is_none(),
        "the stream ends after the final state"
    );
}
