//! Worker processes sharing a queue, dying, and shutting down.

use std::time::Duration;

use celerity::TaskState;
use futures_util::StreamExt;

use crate::support::{WorkerProcess, client, eventually, run_counts, runs_stream, server};

const WAIT: Duration = Duration::from_secs(30);

/// Waits until the `track` task with `id` has recorded its run.
async fn wait_until_started(url: &str, id: &str) {
    eventually("the task starts", WAIT, || async {
        run_counts(url).await.contains_key(id)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_a_queue_and_every_task_runs_once() {
    let server = server();
    runs_stream(&server.url()).await;
    let _w1 = WorkerProcess::start(&server.url(), "w1", &["-c", "4"]);
    let _w2 = WorkerProcess::start(&server.url(), "w2", &["-c", "4"]);
    let client = client(&server.url()).await;

    let mut results = Vec::new();
    for _ in 0..200 {
        results.push(
            celerity_it::track
                .delay(&client, "shared".into(), 5)
                .await
                .expect("track is sent"),
        );
    }
    let mut by_worker = std::collections::HashMap::new();
    for result in &results {
        let record = result.wait(WAIT).await.expect("every task finishes");
        assert_eq!(record.state, TaskState::Success);
        *by_worker
            .entry(record.worker.clone().unwrap_or_default())
            .or_insert(0) += 1;
    }
    let counts = run_counts(&server.url()).await;
    assert_eq!(counts.len(), 200, "every task ran");
    assert!(
        counts.values().all(|&n| n == 1),
        "a task ran twice: {counts:?}"
    );
    assert_eq!(by_worker.len(), 2, "both workers took tasks: {by_worker:?}");
}

/// Sends a `track` task of 1.5 s at `priority`, kills the worker that started it, and checks that
/// a survivor started with `survivor_flags` (and the same AckWait of `ack_wait` seconds) completes
/// it. Returns how long after the task started the survivor was consuming.
pub(crate) async fn a_killed_workers_task_completes_on_a_survivor(
    priority: u8,
    ack_wait: &str,
    survivor_flags: &[&str],
) -> Duration {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let victim = WorkerProcess::start(&url, "victim", &["--ack-wait", ack_wait]);
    let client = client(&url).await;

    let result = celerity_it::track
        .apply_async(
            &client,
            (format!("crash-{priority}"), 1500),
            celerity::ApplyOptions::new().priority(priority),
        )
        .await
        .expect("track is sent");
    wait_until_started(&url, result.id().as_str()).await;
    let started = std::time::Instant::now();
    victim.signal(libc::SIGKILL);
    drop(victim);

    let flags: Vec<&str> = ["--ack-wait", ack_wait]
        .into_iter()
        .chain(survivor_flags.iter().copied())
        .collect();
    let _survivor = WorkerProcess::start(&url, "survivor", &flags);
    let survivor_ready = started.elapsed();
    let record = result
        .wait(WAIT)
        .await
        .expect("the task completes after redelivery");
    assert_eq!(record.state, TaskState::Success);
    assert_eq!(record.worker.as_deref(), Some("survivor"));
    assert_eq!(
        run_counts(&url).await[result.id().as_str()],
        2,
        "started on the victim, completed on the survivor"
    );
    survivor_ready
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_of_a_killed_worker_completes_on_another_worker() {
    a_killed_workers_task_completes_on_a_survivor(0, "2", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_task_with_a_final_result_is_acked_without_running() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    // A worker creates the queue's consumers with a 1 s AckWait, then leaves.
    let mut first = WorkerProcess::start(&url, "first", &["--ack-wait", "1"]);
    first.signal(libc::SIGTERM);
    assert!(first.wait_exit(WAIT).success());
    let client = client(&url).await;

    let result = celerity_it::track
        .delay(&client, "done-before".into(), 0)
        .await
        .expect("track is sent");
    // Take the message as a crashed worker would: delivered once, never acknowledged.
    let js = async_nats::jetstream::new(client.nats().clone());
    let consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream("p0", "CELERITY_Q_default")
        .await
        .expect("consumer p0");
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .messages()
        .await
        .expect("fetch");
    let taken = batch.next().await.expect("one message").expect("a message");
    assert_eq!(taken.info().unwrap().delivered, 1);
    // ...after it stored the final result.
    let kv = js
        .get_key_value("celerity_results")
        .await
        .expect("results bucket");
    let record = serde_json::json!({"v": 1, "id": result.id().as_str(), "state": "SUCCESS", "result": "stored-by-crashed-worker", "updated_at_ms": 1});
    kv.put(
        result.id().as_str(),
        serde_json::to_vec(&record).unwrap().into(),
    )
    .await
    .expect("put");

    let second = WorkerProcess::start(&url, "second", &["--ack-wait", "1"]);
    second.wait_for_log("already has a final result", WAIT);
    assert!(
        !run_counts(&url).await.contains_key(result.id().as_str()),
        "the task ran again"
    );
    assert_eq!(result.get(WAIT).await.unwrap(), "stored-by-crashed-worker");
    let mut stream = js.get_stream("CELERITY_Q_default").await.unwrap();
    eventually("the redelivered message is acknowledged", WAIT, || {
        let mut stream = stream.clone();
        async move {
            stream
                .info()
                .await
                .map(|info| info.state.messages == 0)
                .unwrap_or(false)
        }
    })
    .await;
    let _ = stream.info().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_a_warm_shutdown_that_finishes_in_flight_tasks() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let mut worker = WorkerProcess::start(&url, "warm", &["-c", "2"]);
    let client = client(&url).await;

    let in_flight = celerity_it::track
        .delay(&client, "warm".into(), 1000)
        .await
        .expect("track is sent");
    wait_until_started(&url, in_flight.id().as_str()).await;
    worker.signal(libc::SIGTERM);
    worker.wait_for_log("warm shutdown", WAIT);
    let later = celerity_it::add
        .delay(&client, 1, 2)
        .await
        .expect("add is sent");
    let status = worker.wait_exit(WAIT);
    assert!(status.success(), "worker exit status {status:?}");

    assert_eq!(
        in_flight.state().await.unwrap(),
        TaskState::Success,
        "the in-flight task finished"
    );
    assert_eq!(
        later.state().await.unwrap(),
        TaskState::Pending,
        "no new task was taken after SIGTERM"
    );
    let js = async_nats::jetstream::new(client.nats().clone());
    let info = js
        .get_stream("CELERITY_Q_default")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(
        info.state.messages, 1,
        "only the task sent after SIGTERM is left; the finished one was acked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_is_a_cold_shutdown_that_returns_tasks_at_once() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let mut worker = WorkerProcess::start(&url, "cold", &["-c", "2"]);
    let client = client(&url).await;

    let in_flight = celerity_it::track
        .delay(&client, "cold".into(), 60_000)
        .await
        .expect("track is sent");
    wait_until_started(&url, in_flight.id().as_str()).await;
    worker.signal(libc::SIGTERM);
    worker.wait_for_log("warm shutdown", WAIT);
    worker.signal(libc::SIGINT);
    assert!(worker.wait_exit(WAIT).success());
    assert!(worker.log().contains("cold shutdown"));

    // The task was nacked, so another worker gets it long before the 30 s AckWait.
    let _next = WorkerProcess::start(&url, "next", &[]);
    eventually(
        "the nacked task starts on the next worker",
        Duration::from_secs(15),
        || async { run_counts(&url).await.get(in_flight.id().as_str()).copied() == Some(2) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_task_runs_once_when_the_consumers_have_a_shorter_ack_wait_than_the_worker() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    // The first worker creates the shared consumers with a 1 s AckWait, then leaves.
    let mut first = WorkerProcess::start(&url, "short", &["--ack-wait", "1"]);
    first.signal(libc::SIGTERM);
    assert!(first.wait_exit(WAIT).success());
    // This worker asks for 30 s, but must keep the task alive within the consumers' 1 s.
    let second = WorkerProcess::start(&url, "long", &[]);
    let client = client(&url).await;

    let result = celerity_it::track
        .delay(&client, "long".into(), 3500)
        .await
        .unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), "long");
    assert_eq!(
        run_counts(&url).await[result.id().as_str()],
        1,
        "the task was redelivered while running"
    );
    assert!(
        second
            .log()
            .contains("in-progress acks follow the existing one")
    );
}

#[test]
fn a_hostname_that_cannot_travel_in_headers_is_refused_before_connecting() {
    let app = celerity_it::app().unwrap();
    let config = celerity::WorkerConfig::new().hostname("w1\nInjected: yes");
    let error =
        celerity::worker::spawn(app, celerity::NatsConfig::new("nats://127.0.0.1:1"), config)
            .unwrap_err();
    assert!(
        matches!(error, celerity::WorkerError::InvalidHostname(_)),
        "{error}"
    );
}
