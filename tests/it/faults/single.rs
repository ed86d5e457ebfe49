//! Fault scenarios on one server: the checker's own proof that it can fail, then the baseline.

use std::time::Duration;

use super::checker::{Checker, make_ledger};
use crate::support::{WorkerProcess, client, server};

/// The version of the nats-server under test (`2.9.10`), for the report.
pub(crate) fn version() -> String {
    celerity_testkit::nats_server_binary()
        .and_then(|binary| celerity_testkit::server_version(&binary))
        .expect("the nats-server version")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_a_deleted_task_a_second_run_and_a_stranger() {
    let server = server();
    let url = server.url();
    make_ledger(&url, 1).await;
    let client = client(&url).await;
    let checker = Checker::default();
    checker
        .send_many(&client, "proof", 20, 0, Duration::ZERO)
        .await;
    // A task deleted by hand from its queue before any worker takes it.
    let js = async_nats::jetstream::new(client.nats().clone());
    let stream = js
        .get_stream("CELERITY_Q_default")
        .await
        .expect("the queue stream");
    let mut deleted = None;
    for sequence in 1..=20 {
        let message = stream
            .get_raw_message(sequence)
            .await
            .expect("a queued task");
        if message.headers.get("Celerity-Id").map(|id| id.as_str()) == Some("proof-7") {
            stream
                .delete_message(sequence)
                .await
                .expect("deleted by hand");
            deleted = Some(sequence);
        }
    }
    assert!(deleted.is_some(), "proof-7 was queued");
    // A second run of one task, and a run of a task nobody sent, written into the ledger by hand.
    for (id, delivery) in [("proof-3", 2), ("stranger-1", 1)] {
        let entry = celerity_it::LedgerEntry {
            id: id.to_owned(),
            delivery,
            worker: "by-hand".to_owned(),
        };
        js.publish(
            format!("it.ledger.{id}"),
            serde_json::to_vec(&entry).expect("json").into(),
        )
        .await
        .expect("published")
        .await
        .expect("stored");
    }
    let _worker = WorkerProcess::start(&url, "proof", &[]);
    let report = checker.report(&url, Duration::from_secs(10)).await;
    assert_eq!(report.lost, ["proof-7"], "{report}");
    assert_eq!(report.unexpected, ["stranger-1"], "{report}");
    assert_eq!(report.duplicates, [("proof-3".to_owned(), 2)], "{report}");
    assert_eq!(report.completed, 19, "{report}");
    let clean = std::panic::catch_unwind(|| report.assert_clean(true));
    assert!(
        clean.is_err(),
        "assert_clean passed a report with a loss:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_two_producers_two_workers_lose_nothing_and_run_each_task_once() {
    let server = server();
    let url = server.url();
    make_ledger(&url, 1).await;
    let _workers = [
        WorkerProcess::start(&url, "base-1", &["-c", "16"]),
        WorkerProcess::start(&url, "base-2", &["-c", "16"]),
    ];
    let checker = Checker::default();
    let (first, second) = (client(&url).await, client(&url).await);
    let per_producer = std::env::var("IT_BASELINE_TASKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let started = std::time::Instant::now();
    tokio::join!(
        checker.send_many(&first, "a", per_producer, 0, Duration::ZERO),
        checker.send_many(&second, "b", per_producer, 0, Duration::ZERO),
    );
    eprintln!("sent {} in {:?}", 2 * per_producer, started.elapsed());
    let report = checker.report(&url, Duration::from_secs(60)).await;
    eprintln!("completed in {:?}", started.elapsed());
    report.record("1 baseline", &version(), "none", None);
    assert_eq!(report.acknowledged as u64, 2 * per_producer, "{report}");
    assert_eq!(report.completed as u64, 2 * per_producer, "{report}");
    report.assert_clean(true);
}
