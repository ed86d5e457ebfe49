//! Chords across processes: the body gets the header results in order and runs exactly once.

use std::time::Duration;

use celerity::{Chord, ResultError};
use celerity_it::{add, explode, sum_all};

use crate::support::{WorkerProcess, client, run_counts, runs_stream, server};

const WAIT: Duration = Duration::from_secs(120);

/// How many times chord bodies ran, by body id.
async fn body_runs(url: &str) -> std::collections::HashMap<String, usize> {
    run_counts(url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chord_sums_a_thousand_add_tasks_and_runs_its_body_once() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let _w1 = WorkerProcess::start(&url, "w1", &["-c", "16"]);
    let _w2 = WorkerProcess::start(&url, "w2", &["-c", "16"]);
    let client = client(&url).await;

    let sum = Chord::new((0..1000).map(|i| add.s((i, i))), sum_all.s(()))
        .apply_async(&client)
        .await
        .expect("the chord is sent");
    assert_eq!(sum.get(WAIT).await.expect("the body runs"), 999_000);
    assert_eq!(
        body_runs(&url).await.get(sum.id().as_str()),
        Some(&1),
        "the body ran once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_header_member_fails_the_chord_and_the_body_never_runs() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let _worker = WorkerProcess::start(&url, "w1", &["-c", "8"]);
    let client = client(&url).await;

    // Member 7 fails; the others succeed.
    let failing = explode.s((vec![1_i64, 2, 3],));
    let sum = Chord::new(
        (0..20).map(|i| {
            if i == 7 {
                failing.clone()
            } else {
                add.s((i, 1))
            }
        }),
        sum_all.s(()),
    )
    .apply_async(&client)
    .await
    .unwrap();
    match sum.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.message, "cannot transform 3 rows")
        }
        other => panic!("expected the header's failure, got {other:?}"),
    }
    let record = sum.record().await.unwrap().expect("the body has a record");
    assert_eq!(record.task, None, "the body never ran");
    assert!(!body_runs(&url).await.contains_key(sum.id().as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_task_chord_completes() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let _w1 = WorkerProcess::start(&url, "w1", &["-c", "32"]);
    let _w2 = WorkerProcess::start(&url, "w2", &["-c", "32"]);
    let client = client(&url).await;

    let sum = Chord::new((0..10_000).map(|i| add.s((i, 1))), sum_all.s(()))
        .apply_async(&client)
        .await
        .unwrap();
    assert_eq!(
        sum.get(WAIT)
            .await
            .expect("the 10,000-task chord completes"),
        (1..=10_000).sum::<i64>()
    );
    assert_eq!(body_runs(&url).await.get(sum.id().as_str()), Some(&1));
}

/// Completions stored so far in the chord stream.
async fn completions(url: &str) -> u64 {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.expect("connect"));
    let mut stream = js
        .get_stream("CELERITY_CHORDS")
        .await
        .expect("the chord stream");
    stream
        .info()
        .await
        .map(|info| info.state.messages)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_workers_at_any_point_of_a_chord_runs_its_body_once_with_the_right_sum() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let args = ["-c", "8", "--ack-wait", "2"];
    let mut workers = vec![
        WorkerProcess::start(&url, "w1", &args),
        WorkerProcess::start(&url, "w2", &args),
    ];
    let client = client(&url).await;

    let sum = Chord::new(
        (0..1000).map(|i| celerity_it::slow_add.s((i, 1, 10))),
        sum_all.s(()),
    )
    .apply_async(&client)
    .await
    .unwrap();
    // Kill the oldest worker (the first holds the aggregator leases) early, midway, and once the
    // whole header has reported; each time a new worker joins.
    for (round, threshold) in [100, 500, 1000].into_iter().enumerate() {
        crate::support::eventually("enough header members report", WAIT, || async {
            completions(&url).await >= threshold || sum.ready().await.unwrap_or(false)
        })
        .await;
        let victim = workers.remove(0);
        victim.signal(libc::SIGKILL);
        drop(victim);
        workers.push(WorkerProcess::start(
            &url,
            &format!("w{}", round + 3),
            &args,
        ));
    }
    assert_eq!(
        sum.get(WAIT).await.expect("the body runs after the kills"),
        (1..=1000).sum::<i64>()
    );
    assert_eq!(
        body_runs(&url).await.get(sum.id().as_str()),
        Some(&1),
        "the body ran exactly once"
    );
}

/// Twenty members of which 5, 11 and 17 fail.
fn mostly_succeeding() -> Vec<celerity::Signature<i64>> {
    (0..20)
        .map(|i| {
            if [5, 11, 17].contains(&i) {
                explode.s((vec![i],))
            } else {
                add.s((i, 1))
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_and_k_of_n_policies_tolerate_failing_members() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let _worker = WorkerProcess::start(&url, "w1", &["-c", "8"]);
    let client = client(&url).await;

    let collected = Chord::new(mostly_succeeding(), celerity_it::count_outcomes.s(()))
        .collect()
        .apply_async(&client)
        .await
        .unwrap();
    assert_eq!(
        collected.get(WAIT).await.expect("the collect body runs"),
        (17, 3)
    );

    let quorum = Chord::new(mostly_succeeding(), celerity_it::length.s(()))
        .at_least(15)
        .apply_async(&client)
        .await
        .unwrap();
    assert_eq!(
        quorum
            .get(WAIT)
            .await
            .expect("15 of 20 succeed, so the body runs"),
        15,
        "the body gets the first 15 successes"
    );

    let unreachable = Chord::new(mostly_succeeding(), sum_all.s(()))
        .at_least(19)
        .apply_async(&client)
        .await
        .unwrap();
    match unreachable.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.kind, "celerity::ChordQuorumFailed")
        }
        other => panic!("expected the quorum to fail, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_producer_sends_a_chord_by_following_protocol_md() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let _worker = WorkerProcess::start(&url, "w1", &["-c", "8"]);
    let python = crate::protocol::python_interpreter();
    let summary = crate::protocol::run_python_script(
        &python,
        "chord_producer.py",
        &["--url", &url, "--size", "50"],
    )
    .await;
    assert_eq!(summary["result"], (1..=50).sum::<i64>());
    let body_id = summary["body_id"].as_str().expect("the body id");
    assert_eq!(
        body_runs(&url).await.get(body_id),
        Some(&1),
        "the body ran once"
    );
}
