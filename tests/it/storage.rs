//! Where tasks are kept and how much: replicas the server cannot keep are refused with what to
//! do, every stream and bucket is made with its size limit, a full queue refuses new tasks with a
//! typed error and drops none it holds, and `celerity health` and the metrics show each stream's
//! use against its limit.

use std::time::Duration;

use celerity::{ApplyOptions, EnqueueError, NatsConfig, Refusal, Storage, TaskState};
use serde_json::json;

use crate::support::{WorkerProcess, client, eventually, run_celerity, server};

const WAIT: Duration = Duration::from_secs(30);

/// The test app with `storage`.
fn app_with(storage: Storage) -> celerity::App {
    celerity_it::app_builder()
        .storage(storage)
        .build()
        .expect("the test app builds")
}

#[tokio::test]
async fn replicas_a_lone_server_cannot_keep_are_refused_with_what_to_do() {
    let server = server();
    let mut storage = Storage::default();
    storage.replicas = 3;
    let refused = app_with(storage)
        .client(&NatsConfig::new(server.url()))
        .await
        .expect_err("a lone server keeps one copy");
    let celerity::ClientError::Provision(error) = &refused else {
        panic!("expected a provisioning error, got {refused:?}");
    };
    assert_eq!(error.refusal, Some(Refusal::NotClustered { replicas: 3 }));
    assert!(refused.to_string().contains("--replicas 1"), "{refused}");

    // A worker told the same by its flag stops at once with the same advice, instead of retrying.
    let mut worker = WorkerProcess::spawn(&server.url(), "r3", &["--replicas", "3"], &[]);
    let status = worker.wait_exit(WAIT);
    assert!(!status.success());
    assert!(worker.log().contains("not clustered"), "{}", worker.log());
}

#[tokio::test]
async fn every_stream_and_bucket_is_made_with_its_limit() {
    let server = server();
    let worker = WorkerProcess::start(&server.url(), "limits", &["--dead-letter-max-age", "3d"]);
    let nats = async_nats::connect(server.url()).await.expect("connects");
    let js = async_nats::jetstream::new(nats);
    let defaults = Storage::default();
    let config = |name: &'static str| {
        let js = js.clone();
        async move {
            js.get_stream(name)
                .await
                .unwrap_or_else(|error| panic!("stream {name}: {error}"))
                .cached_info()
                .config
                .clone()
        }
    };
    use async_nats::jetstream::stream::DiscardPolicy;
    let queue = config("CELERITY_Q_default").await;
    assert_eq!(queue.max_bytes as u64, defaults.queue_max_bytes);
    assert_eq!(queue.discard, DiscardPolicy::New);
    let dead_letters = config("CELERITY_DLQ").await;
    assert_eq!(dead_letters.discard, DiscardPolicy::Old);
    assert_eq!(dead_letters.max_age, Duration::from_secs(3 * 86_400));
    assert_eq!(
        dead_letters.max_bytes as u64,
        defaults.dead_letter_max_bytes
    );
    let delayed = config("CELERITY_DELAYED").await;
    assert_eq!(delayed.discard, DiscardPolicy::New);
    assert_eq!(delayed.max_bytes as u64, defaults.delayed_max_bytes);
    let chords = config("CELERITY_CHORDS").await;
    assert_eq!(chords.max_bytes as u64, defaults.chord_max_bytes);
    assert!(!chords.max_age.is_zero(), "chord completions expire");
    let results = config("KV_celerity_results").await;
    assert_eq!(results.max_bytes as u64, defaults.results_max_bytes);
    for name in celerity::shared_streams(&celerity_proto::Layout::new(
        celerity_proto::Namespace::default(),
    )) {
        if let Ok(stream) = js.get_stream(&name).await {
            assert!(
                stream.cached_info().config.max_bytes > 0,
                "{name} has no size limit"
            );
        }
    }
    drop(worker);
}

#[tokio::test]
async fn a_full_queue_refuses_new_tasks_and_keeps_every_one_it_took() {
    let server = server();
    let mut storage = Storage::default();
    storage.queue_max_bytes = 16 * 1024;
    let client = app_with(storage)
        .client(&NatsConfig::new(server.url()))
        .await
        .expect("connects");
    let mut accepted = Vec::new();
    let refused = loop {
        assert!(accepted.len() < 1_000, "a 16 KiB queue took 1,000 tasks");
        let sent = client
            .send_task("it.add", json!([1, 2]), json!(null), ApplyOptions::new())
            .await;
        match sent {
            Ok(result) => accepted.push(result),
            Err(error) => break error,
        }
    };
    let EnqueueError::QueueFull { queue, stream, .. } = &refused else {
        panic!("expected QueueFull, got {refused:?}");
    };
    assert_eq!(
        (queue.as_str(), stream.as_str()),
        ("default", "CELERITY_Q_default")
    );
    assert!(
        refused.to_string().contains("nothing was enqueued"),
        "{refused}"
    );
    assert!(!refused.is_permanent(), "a drained queue takes it later");
    assert!(accepted.len() > 5, "took only {} tasks", accepted.len());

    // Health shows the queue nearly full, against its limit.
    let health = run_celerity(&server.url(), &["health", "--json", "--queue", "default"]);
    let report: serde_json::Value =
        serde_json::from_slice(&health.stdout).expect("health prints JSON");
    let queue_stream = report["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|used| used["stream"] == "CELERITY_Q_default")
        .expect("the queue's stream is listed")
        .clone();
    assert_eq!(queue_stream["max_bytes"], 16 * 1024);
    let storage_check = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|check| check["check"] == "storage" && check["stream"] == "CELERITY_Q_default")
        .expect("a storage check of the queue")
        .clone();
    assert_eq!(storage_check["ok"], false, "{storage_check}");
    assert!(
        storage_check["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("nearly full")),
        "{storage_check}"
    );

    // Nothing it took is lost: a worker runs every one.
    let worker = WorkerProcess::start(&server.url(), "drain", &["--queue-max-bytes", "16KiB"]);
    for result in &accepted {
        let value = result.get(WAIT).await.expect("an accepted task runs");
        assert_eq!(value, json!(3));
    }
    // The refused task left no PENDING record behind.
    let refused_id = match &refused {
        EnqueueError::QueueFull { task_id, .. } => task_id.clone(),
        _ => unreachable!(),
    };
    let state = client
        .async_result::<serde_json::Value>(refused_id.as_str())
        .expect("a valid id")
        .state()
        .await
        .expect("reads the state");
    assert_eq!(state, TaskState::Unknown);
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_show_each_streams_use_against_its_limit() {
    let server = server();
    let worker = WorkerProcess::start(&server.url(), "metered", &["--http-port", "0"]);
    let client = client(&server.url()).await;
    let address = crate::http::http_address(&client, "metered").await;
    let limit = format!(
        "celerity_stream_max_bytes{{stream=\"CELERITY_Q_default\"}} {}",
        Storage::default().queue_max_bytes
    );
    let body = std::sync::Mutex::new(String::new());
    eventually("the metrics to show the streams' limits", WAIT, || async {
        let scraped = crate::http::get(&address, "/metrics").await.1;
        let shown = scraped.contains(&limit);
        *body.lock().expect("the body") = scraped;
        shown
    })
    .await;
    let body = body.into_inner().expect("the body");
    assert!(
        body.contains("celerity_stream_bytes{stream=\"CELERITY_DLQ\"}"),
        "{body}"
    );
    drop(worker);
}
