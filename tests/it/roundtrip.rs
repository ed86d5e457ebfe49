//! Sending tasks and reading results across processes: typed, by name, failures, panics, states.

use std::time::Duration;

use celerity::{ApplyOptions, EnqueueError, ResultError, TaskState};
use celerity_testkit::NatsServer;
use serde_json::json;

use crate::support::{WorkerProcess, client, server};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_and_by_name_round_trips() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &["-c", "4"]);
    let client = client(&server.url()).await;

    let typed = celerity_it::add
        .delay(&client, 2, 3)
        .await
        .expect("add is sent");
    assert_eq!(typed.get(WAIT).await.expect("add succeeds"), 5);
    assert_eq!(typed.state().await.unwrap(), TaskState::Success);
    assert!(typed.ready().await.unwrap() && typed.successful().await.unwrap());

    let blocking = celerity_it::blocking_mul
        .delay(&client, 6, 7)
        .await
        .expect("mul is sent");
    assert_eq!(blocking.get(WAIT).await.expect("mul succeeds"), 42);

    let by_name = client
        .send_task("it.add", json!([1]), json!({"y": 41}), ApplyOptions::new())
        .await
        .expect("send_task");
    assert_eq!(
        by_name.get(WAIT).await.expect("add by name succeeds"),
        json!(42)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_panics_are_recorded_and_the_worker_keeps_running() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &["-c", "2"]);
    let client = client(&server.url()).await;

    let failed = celerity_it::fail
        .delay(&client, "no funds".into())
        .await
        .expect("fail is sent");
    match failed.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert!(
                error.kind.ends_with("PaymentError"),
                "error type: {}",
                error.kind
            );
            assert_eq!(error.message, "card declined: no funds");
            assert_eq!(error.causes, vec!["gateway timeout".to_owned()]);
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(failed.failed().await.unwrap());

    let panicked = celerity_it::panics
        .delay(&client, "boom at step 3".into())
        .await
        .expect("panic is sent");
    match panicked.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.kind, "panic");
            assert_eq!(error.message, "boom at step 3");
        }
        other => panic!("expected a panic failure, got {other:?}"),
    }

    // The worker survived both.
    let after = celerity_it::add
        .delay(&client, 1, 1)
        .await
        .expect("add is sent");
    assert_eq!(
        after.get(WAIT).await.expect("the worker still runs tasks"),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_pending_and_forgotten_states_are_told_apart() {
    let server = server();
    let client = client(&server.url()).await;

    let never_sent = client
        .async_result::<i64>("never-sent-id")
        .expect("a valid id");
    assert_eq!(never_sent.state().await.unwrap(), TaskState::Unknown);

    // No worker yet: the task waits in its queue, and says so.
    let queued = celerity_it::add
        .delay(&client, 20, 22)
        .await
        .expect("add is sent");
    assert_eq!(queued.state().await.unwrap(), TaskState::Pending);
    assert!(!queued.ready().await.unwrap());

    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    assert_eq!(queued.get(WAIT).await.expect("the queued task runs"), 42);
    queued.forget().await.expect("forget");
    assert_eq!(queued.state().await.unwrap(), TaskState::Unknown);
    // The handle kept the notification; forgetting drops it too, so nothing answers any more.
    let short = std::time::Duration::from_millis(300);
    assert!(matches!(
        queued.wait(short).await,
        Err(celerity::ResultError::Timeout { .. })
    ));
    // A clone sees what the handle it came from sees.
    assert!(queued.clone().wait(short).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_readable_from_another_process_and_headers_reach_the_task() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let producer = client(&server.url()).await;
    let reader = client(&server.url()).await;

    let sent = celerity_it::headers
        .apply_async(
            &producer,
            (),
            ApplyOptions::new()
                .header("X-Tenant", "acme")
                .priority(7)
                .task_id("my-own-id"),
        )
        .await
        .expect("headers task is sent");
    assert_eq!(sent.id().as_str(), "my-own-id");
    // Another client waits through a KV watch, not through the producer's reply subject.
    let seen_elsewhere = reader
        .async_result::<Vec<(String, String)>>("my-own-id")
        .unwrap();
    let headers = seen_elsewhere
        .get(WAIT)
        .await
        .expect("the other process sees the result");
    assert_eq!(headers, vec![("X-Tenant".to_owned(), "acme".to_owned())]);
    let record = seen_elsewhere.record().await.unwrap().expect("a record");
    assert_eq!(record.worker.as_deref(), Some("w1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_are_typed_errors_before_anything_is_sent() {
    let server = NatsServer::builder()
        .max_payload(4096)
        .start()
        .expect("server with a small max_payload");
    let client = client(&server.url()).await;

    let error = celerity_it::add
        .apply_async(&client, (1, 2), ApplyOptions::new().priority(10))
        .await
        .unwrap_err();
    assert!(
        matches!(error, EnqueueError::InvalidOption { option: "priority", ref value, .. } if value == "10"),
        "{error}"
    );

    let error = celerity_it::add
        .apply_async(&client, (1, 2), ApplyOptions::new().queue("no.dots"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            EnqueueError::InvalidOption {
                option: "queue",
                ..
            }
        ),
        "{error}"
    );

    let error = celerity_it::add
        .apply_async(
            &client,
            (1, 2),
            ApplyOptions::new().header("Celerity-Id", "x"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            EnqueueError::InvalidHeader { ref name, .. } if name == "Celerity-Id"
        ),
        "{error}"
    );

    let big = "x".repeat(10_000);
    let error = client
        .send_task("it.add", json!([big]), json!(null), ApplyOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            EnqueueError::PayloadTooLarge {
                max_payload: 4096,
                ..
            }
        ),
        "{error}"
    );

    let error = client
        .send_task("it.add", json!({"x": 1}), json!(null), ApplyOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(error, EnqueueError::ArgumentShape { what: "args", .. }),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_no_server_is_a_typed_error() {
    let port = celerity_testkit::reserve_port().expect("a free port");
    let error = celerity_it::app()
        .unwrap()
        .client(&celerity::NatsConfig::new(format!(
            "nats://127.0.0.1:{port}"
        )))
        .await
        .unwrap_err();
    assert!(
        matches!(error, celerity::ClientError::Connect(_)),
        "{error}"
    );
    assert!(error.to_string().contains(&port.to_string()), "{error}");
}
