//! States and result records seen from other processes: progress, expiry.

use std::time::Duration;

use celerity::{NatsConfig, TaskState};
use serde_json::json;

use crate::support::{WorkerProcess, client, eventually, release_held, runs_stream, server};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_progress_states_are_readable_while_the_task_runs() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let producer = client(&server.url()).await;
    let observer = client(&server.url()).await;

    let sent = celerity_it::progress
        .delay(&producer)
        .await
        .expect("progress is sent");
    let seen = observer.async_result::<u32>(sent.id().as_str()).unwrap();
    eventually(
        "the PROCESSING state is visible to another client",
        WAIT,
        || async { seen.state().await.unwrap() == TaskState::Custom("PROCESSING".into()) },
    )
    .await;
    assert_eq!(
        seen.info().await.unwrap(),
        Some(json!({"step": 2, "total": 3}))
    );
    assert!(!seen.ready().await.unwrap());

    producer
        .nats()
        .publish(format!("it.release.{}", sent.id()), "go".into())
        .await
        .unwrap();
    assert_eq!(
        seen.get(WAIT)
            .await
            .expect("the task finishes when released"),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_expire_after_the_configured_time() {
    let server = server();
    let app = celerity::App::builder()
        .task(celerity_it::add)
        .result_expires(Duration::from_secs(2))
        .build()
        .unwrap();
    // The first process to create the bucket sets its expiry: here, the client.
    let client = app.client(&NatsConfig::new(server.url())).await.unwrap();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);

    let result = celerity_it::add.delay(&client, 1, 2).await.unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), 3);
    eventually("the result expires", WAIT, || async {
        result.state().await.unwrap() == TaskState::Unknown
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_and_started_are_recorded_when_tracked() {
    let server = server();
    runs_stream(&server.url()).await;
    // One slot, two tasks held: the second is RECEIVED while it waits for the slot.
    let worker = WorkerProcess::spawn(
        &server.url(),
        "w1",
        &["-c", "1", "--prefetch-multiplier", "2"],
        &[("IT_TRACK_RECEIVED", "1")],
    );
    worker.wait_for_log("consuming", WAIT);
    let client = client(&server.url()).await;

    let first = celerity_it::hold.delay(&client).await.unwrap();
    eventually("the first task is STARTED", WAIT, || async {
        first.state().await.unwrap() == TaskState::Started
    })
    .await;
    let second = celerity_it::hold.delay(&client).await.unwrap();
    eventually("the second task is RECEIVED", WAIT, || async {
        second.state().await.unwrap() == TaskState::Received
    })
    .await;
    assert_eq!(
        first.state().await.unwrap(),
        TaskState::Started,
        "the first task still holds the slot"
    );

    release_held(&client, &server.url(), first.id().as_str(), WAIT).await;
    assert_eq!(first.get(WAIT).await.unwrap(), first.id().to_string());
    eventually(
        "the second task starts once the slot is free",
        WAIT,
        || async { second.state().await.unwrap() == TaskState::Started },
    )
    .await;
    release_held(&client, &server.url(), second.id().as_str(), WAIT).await;
    assert_eq!(second.get(WAIT).await.unwrap(), second.id().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messagepack_bodies_and_records_round_trip() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;

    let result = celerity_it::add
        .apply_async(
            &client,
            (40, 2),
            celerity::ApplyOptions::new().content_type(celerity::ContentType::MsgPack),
        )
        .await
        .unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), 42);
    let js = async_nats::jetstream::new(client.nats().clone());
    let kv = js.get_key_value("celerity_results").await.unwrap();
    let stored = kv
        .get(result.id().as_str())
        .await
        .unwrap()
        .expect("a stored record");
    assert_eq!(
        celerity::ContentType::sniff(&stored),
        Some(celerity::ContentType::MsgPack),
        "the record is MessagePack"
    );
}

/// Waiting on many results at once (the bench waits on 1,000,000) holds one wait future per
/// result: each must stay small, its rare reads and watch boxed out of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_is_small_enough_to_hold_a_million_at_once() {
    let server = server();
    let producer = client(&server.url()).await;
    let sent = celerity_it::add.delay(&producer, 1, 2).await.unwrap();
    let by_id = producer.async_result::<i64>(sent.id().as_str()).unwrap();
    for (what, size) in [
        ("a tracked wait", std::mem::size_of_val(&sent.wait(WAIT))),
        ("a tracked get", std::mem::size_of_val(&sent.get(WAIT))),
        ("a wait by id", std::mem::size_of_val(&by_id.wait(WAIT))),
        (
            "a delay",
            std::mem::size_of_val(&celerity_it::add.delay(&producer, 1, 2)),
        ),
        (
            "an apply",
            std::mem::size_of_val(&celerity_it::add.apply_async(
                &producer,
                (1, 2),
                celerity::ApplyOptions::new(),
            )),
        ),
    ] {
        eprintln!("{what}: {size} bytes");
        assert!(size <= 1024, "{what} takes {size} bytes");
    }
}
