//! Crashes on one server: a worker killed again and again mid-task, a worker that dies after a
//! task's side effects and before its acknowledgement, and the server itself killed under load.

use std::time::{Duration, Instant};

use celerity::ApplyOptions;
use celerity_it::ledger;
use serde_json::{Value, json};

use super::checker::{Checker, make_ledger};
use super::single::version;
use crate::support::{WorkerProcess, client, server, wait_until_queue_is_empty};

/// Messages in the ledger so far (one per run).
async fn runs_so_far(js: &async_nats::jetstream::Context) -> u64 {
    let mut runs = js
        .get_stream(super::checker::LEDGER_STREAM)
        .await
        .expect("the ledger stream");
    runs.info().await.expect("ledger info").state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_20_times_mid_task_loses_nothing_and_the_other_never_stalls() {
    let server = server();
    let url = server.url();
    make_ledger(&url, 1).await;
    // Each kill counts a delivery of every task the victim held: the limit must outlast 20 kills.
    let args = ["-c", "32", "--ack-wait", "3", "--max-deliveries", "50"];
    let _steady = WorkerProcess::start(&url, "steady", &args);
    let client = client(&url).await;
    let checker = Checker::default();
    checker
        .send_many(&client, "k", 500, 2_000, Duration::ZERO)
        .await;
    let js = async_nats::jetstream::new(client.nats().clone());
    let mut progress = vec![runs_so_far(&js).await];
    for round in 1..=20 {
        let victim = WorkerProcess::start(&url, &format!("victim-{round}"), &args);
        // Long enough for the victim to take tasks; a kill during a 2 s task is then certain.
        tokio::time::sleep(Duration::from_millis(700)).await;
        victim.signal(libc::SIGKILL);
        drop(victim);
        progress.push(runs_so_far(&js).await);
    }
    // The steady worker went on while the other died: runs grew in every 4 rounds (~4 s).
    for window in progress.windows(5) {
        assert!(
            window[4] > window[0],
            "no task ran for 4 kill rounds (runs after each round: {progress:?})"
        );
    }
    let report = checker.report(&url, Duration::from_secs(60)).await;
    eprintln!("{report}");
    report.record(
        "2 worker SIGKILL x20",
        &version(),
        "SIGKILL a worker 20 times during 500 two-second tasks",
        None,
    );
    report.assert_clean(false);
    assert!(
        !report.redelivered.is_empty(),
        "tasks killed mid-run were run again on redelivery:\n{report}"
    );
}

/// The final record of `id` and its revision in the results bucket.
async fn stored(js: &async_nats::jetstream::Context, id: &str) -> (u64, Value) {
    let bucket = js
        .get_key_value("celerity_results")
        .await
        .expect("the results bucket");
    let entry = bucket
        .entry(id)
        .await
        .expect("reads the record")
        .expect("a record");
    let record = serde_json::from_slice(&entry.value).expect("a JSON record");
    (entry.revision, record)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_side_effects_and_before_the_ack_overwrites_nothing_and_enqueues_once() {
    let server = server();
    let url = server.url();
    make_ledger(&url, 1).await;
    let client = client(&url).await;
    let js = async_nats::jetstream::new(client.nats().clone());
    // A lone task, and a chain of two: the first worker dies after storing each first record
    // (and after sending the chain's next step), before acknowledging the message.
    let alone = client
        .send_task(
            "it.ledger",
            json!([1, 0]),
            Value::Null,
            ApplyOptions::new().task_id("alone-1"),
        )
        .await
        .expect("sent");
    let chain = celerity::chain![ledger.si((1, 0)), ledger.si((2, 0))]
        .apply_async(&client)
        .await
        .expect("sent");
    let chain_ids = [
        chain.parent().expect("the first step").id().to_string(),
        chain.id().to_string(),
    ];
    // Each doomed worker dies at the first of the two it runs; the second takes the other (and
    // acknowledges the first, redelivered, without running it: its record is stored).
    let crash = [("CELERITY_FAULT_CRASH", "after-result-put:it.ledger")];
    for round in 1..=2 {
        let args = ["-c", "1", "--ack-wait", "2"];
        let mut doomed = WorkerProcess::spawn(&url, &format!("doomed-{round}"), &args, &crash);
        assert!(!doomed.wait_exit(Duration::from_secs(30)).success());
        assert!(
            doomed.log().contains("aborting at after-result-put"),
            "{}",
            doomed.log()
        );
    }
    let first_ids = [alone.id().to_string(), chain_ids[0].clone()];
    let mut first = Vec::new();
    for id in &first_ids {
        let record = stored(&js, id).await;
        assert_eq!(record.1["state"], "SUCCESS", "{id}: {}", record.1);
        first.push(record);
    }

    // Whatever the dead workers stored stays; what they sent is not sent again.
    let survivor = WorkerProcess::start(&url, "survivor", &["--ack-wait", "2"]);
    assert_eq!(
        chain
            .get(Duration::from_secs(30))
            .await
            .expect("the chain ends"),
        2
    );
    wait_until_queue_is_empty(&client, Duration::from_secs(30)).await;
    for (id, before) in first_ids.iter().zip(&first) {
        let after = stored(&js, id).await;
        assert_eq!(&after, before, "the stored result of {id} was overwritten");
    }
    let runs = super::checker::read_ledger(&url).await;
    for id in chain_ids.iter().map(String::as_str).chain(["alone-1"]) {
        assert_eq!(
            runs.get(id).map(Vec::len),
            Some(1),
            "{id} ran once: {runs:?}"
        );
    }
    let mut queue = js
        .get_stream("CELERITY_Q_default")
        .await
        .expect("the queue");
    let stored_ever = queue.info().await.expect("queue info").state.last_sequence;
    assert_eq!(
        stored_ever, 3,
        "the lone task and the chain's two steps, each stored once"
    );
    drop(survivor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_killed_3_times_under_load_completes_every_acknowledged_task() {
    let mut server = server();
    let url = server.url();
    make_ledger(&url, 1).await;
    let _workers = [
        WorkerProcess::start(&url, "s-1", &["-c", "8", "--ack-wait", "5"]),
        WorkerProcess::start(&url, "s-2", &["-c", "8", "--ack-wait", "5"]),
    ];
    let client = client(&url).await;
    // Waits that span the restarts: each must return, with nobody restarted.
    let checker = Checker::default();
    checker
        .send_many(&client, "wait", 20, 3_000, Duration::ZERO)
        .await;
    let waits = futures_util::future::join_all((0..20u64).map(|i| {
        let wait = client
            .async_result::<u64>(&format!("wait-{i}"))
            .expect("an id");
        async move { (i, wait.get(Duration::from_secs(60)).await) }
    }));
    let started = Instant::now();
    let sending = checker.send_many(&client, "r", 5_000, 0, Duration::from_secs(30));
    let (outage, waited, ()) = tokio::join!(sending, waits, async {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            tokio::task::block_in_place(|| {
                server.kill().expect("killed");
                server.start_again().expect("restarted on its store");
            });
        }
    });
    let report = checker.report(&url, Duration::from_secs(60)).await;
    eprintln!(
        "publish outage {outage:?} in {:?}\n{report}",
        started.elapsed()
    );
    report.record(
        "4 server SIGKILL x3",
        &version(),
        "SIGKILL the server and restart it on its store, 3 times under load",
        Some(outage),
    );
    assert_eq!(report.acknowledged, report.attempted, "{report}");
    report.assert_clean(false);
    for (i, value) in waited {
        let value = value.unwrap_or_else(|error| panic!("wait-{i} across the restarts: {error}"));
        assert_eq!(value, i);
    }
}
