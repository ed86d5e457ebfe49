//! Chords across processes: the body gets the header results in order and runs exactly once.

use std::time::Duration;

use celerity::{AsyncResult, Chord, Client, ResultError, TaskState};
use celerity_it::{add, explode, hold, join, sum_all};
use futures_util::TryStreamExt;
use serde_json::json;

use crate::support::{
    WorkerProcess, client, eventually, publish_raw, release_held, run_counts, runs_stream, server,
};

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
    let chord_id = stored_chord_id(&url).await;
    assert_eq!(
        record.meta,
        Some(json!({
            "failed_task": format!("{chord_id}-7"),
            "reason": "a header member of the chord failed",
            "chord_id": chord_id,
        })),
        "the body's record names the member that failed"
    );
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

/// The id of the only chord whose definition is stored.
async fn stored_chord_id(url: &str) -> String {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.expect("connect"));
    let chords = js
        .get_key_value("celerity_chords")
        .await
        .expect("the chords bucket");
    let keys: Vec<String> = chords
        .keys()
        .await
        .expect("the chords bucket's keys")
        .try_collect()
        .await
        .expect("every key");
    let definitions: Vec<String> = keys
        .into_iter()
        .filter(|key| !key.ends_with(".fired"))
        .collect();
    assert_eq!(definitions.len(), 1, "one chord is stored: {definitions:?}");
    definitions[0].clone()
}

/// The chord stream, where header members report.
async fn chord_stream(url: &str) -> async_nats::jetstream::stream::Stream {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.expect("connect"));
    js.get_stream("CELERITY_CHORDS")
        .await
        .expect("the chord stream")
}

/// Publishes `completion` to chord `chord_id`'s completion subject, as a worker's
/// `report_to_chord` does (with its `Nats-Msg-Id` when `message_id` is given), and returns its
/// sequence in the chord stream.
async fn publish_completion(
    client: &Client,
    chord_id: &str,
    completion: serde_json::Value,
    message_id: Option<&str>,
) -> u64 {
    let id = celerity_proto::TaskId::new(chord_id).expect("a chord id");
    let subject = format!(
        "celerity.chord.{}.{chord_id}",
        celerity_proto::chord_partition(&id)
    );
    let mut headers = async_nats::HeaderMap::new();
    if let Some(message_id) = message_id {
        headers.insert("Nats-Msg-Id", message_id);
    }
    let js = async_nats::jetstream::new(client.nats().clone());
    js.publish_with_headers(
        subject,
        headers,
        serde_json::to_vec(&completion)
            .expect("a JSON completion")
            .into(),
    )
    .await
    .expect("publish a completion")
    .await
    .expect("the completion is stored")
    .sequence
}

/// A chord of two `hold` members (running until released) whose body joins their results, sent
/// to a worker of its own server.
struct HeldChord {
    _server: celerity_testkit::NatsServer,
    _worker: WorkerProcess,
    url: String,
    client: Client,
    body: AsyncResult<String>,
    chord_id: String,
}

async fn held_chord() -> HeldChord {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let worker = WorkerProcess::start(&url, "w1", &["-c", "4"]);
    let client = client(&url).await;
    let body = Chord::new([hold.s(()), hold.s(())], join.s(()))
        .apply_async(&client)
        .await
        .expect("the chord is sent");
    let chord_id = stored_chord_id(&url).await;
    HeldChord {
        _server: server,
        _worker: worker,
        url,
        client,
        body,
        chord_id,
    }
}

impl HeldChord {
    /// Lets member `index` finish, and waits until it has.
    async fn release(&self, index: usize) {
        let member = format!("{}-{index}", self.chord_id);
        release_held(&self.client, &self.url, &member, WAIT).await;
        let result = self
            .client
            .async_result::<String>(&member)
            .expect("a member id");
        assert_eq!(result.get(WAIT).await.expect("the member ends"), member);
    }

    /// Publishes `stray` on the chord's subject, lets the first `released` members finish, and
    /// checks that the chord does not fire (the stray is deleted instead) until the other members
    /// finish too.
    async fn check_stray_is_ignored(&self, stray: serde_json::Value, released: usize) {
        let sequence = publish_completion(&self.client, &self.chord_id, stray, None).await;
        for index in 0..released {
            self.release(index).await;
        }
        let stream = chord_stream(&self.url).await;
        let refused = || async { stream.get_raw_message(sequence).await.is_err() };
        let fired =
            || async { self.body.state().await.expect("the body's state") != TaskState::Pending };
        eventually(
            "the aggregator refuses the stray, or fires the chord",
            WAIT,
            || async { refused().await || fired().await },
        )
        .await;
        assert!(
            !fired().await,
            "the stray fired the chord: {:?}",
            self.body.record().await
        );
        assert!(refused().await, "the stray completion is deleted");
        for index in released..2 {
            self.release(index).await;
        }
        let joined = self.body.get(WAIT).await;
        let chord_id = &self.chord_id;
        assert_eq!(
            joined.expect("the body runs once both members end"),
            format!("{chord_id}-0,{chord_id}-1")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_completion_with_another_size_does_not_fire_a_chord_early() {
    let held = held_chord().await;
    // "Member 0 of 1 succeeded", published by someone on the chord's subject.
    let stray = json!({"v": 1, "index": 0, "size": 1, "state": "SUCCESS"});
    held.check_stray_is_ignored(stray, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_past_the_chords_size_is_ignored() {
    let held = held_chord().await;
    // "Member 5 succeeded" in a chord of two, then member 0 really ends: two successes, but
    // member 1 still runs.
    let stray = json!({"v": 1, "index": 5, "size": 2, "state": "SUCCESS", "task": "it.hold"});
    held.check_stray_is_ignored(stray, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_member_fails_the_chord_and_the_body_names_it() {
    let held = held_chord().await;
    let chord_id = &held.chord_id;
    // Member 1 reports REVOKED as a worker does for a terminated or expired member.
    let revoked = json!({"v": 1, "index": 1, "size": 2, "state": "REVOKED", "task": "it.hold"});
    let member = format!("{chord_id}-1");
    publish_completion(&held.client, chord_id, revoked, Some(&member)).await;
    match held.body.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.kind, "celerity::ChordHeaderFailed");
            assert_eq!(error.message, "header member 1 ended REVOKED");
        }
        other => panic!("expected the chord to fail, got {other:?}"),
    }
    let record = held
        .body
        .record()
        .await
        .unwrap()
        .expect("the body's record");
    assert_eq!(record.task, None, "the body never ran");
    assert_eq!(
        record.meta,
        Some(json!({
            "failed_task": member,
            "reason": "a header member of the chord failed",
            "chord_id": chord_id,
        }))
    );
    for index in 0..2 {
        held.release(index).await;
    }
}

/// The worker's resident memory, from `/proc/<pid>/status`.
fn resident_kib(worker: &WorkerProcess) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", worker.pid()))
        .expect("the worker is still running");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixty_byte_chord_results_message_is_dead_lettered_without_growing_the_worker() {
    let server = server();
    let url = server.url();
    let worker = WorkerProcess::start(&url, "w1", &[]);
    let client = client(&url).await;
    let js = async_nats::jetstream::new(client.nats().clone());
    let baseline = resident_kib(&worker);
    // A chord stored as protocol.md 4.5 says, whose body will claim another size.
    let chords = js.get_key_value("celerity_chords").await.unwrap();
    let definition = json!({"v": 1, "id": "real-chord", "size": 2,
        "body": {"kind": "signature", "id": "real-body", "task": "it.add"}});
    chords
        .put(
            "real-chord",
            serde_json::to_vec(&definition).unwrap().into(),
        )
        .await
        .unwrap();
    let cases = [
        (
            "bomb",
            r#"{"args":[1,2],"kwargs":{},"chord_results":{"id":"x","size":4294967295}}"#,
            "chord x has no stored definition",
        ),
        (
            "real-body",
            r#"{"args":[1],"chord_results":{"id":"real-chord","size":4294967295}}"#,
            "do not match its stored definition",
        ),
    ];
    for (id, body, _) in cases {
        let headers = [
            ("Celerity-Version", "1"),
            ("Celerity-Task", "it.add"),
            ("Celerity-Id", id),
        ];
        publish_raw(&client, &headers, body.as_bytes()).await;
    }
    for (id, _, why) in cases {
        let result = client.async_result::<i64>(id).unwrap();
        eventually(
            &format!("{id} is dead-lettered"),
            Duration::from_secs(20),
            || async {
                let grown = resident_kib(&worker).saturating_sub(baseline);
                assert!(grown < 64 * 1024, "the worker grew by {grown} KiB on {id}");
                result.state().await.unwrap() == TaskState::Failure
            },
        )
        .await;
        let error = crate::canvas::dead_lettered(result.get(WAIT).await, "invalid_canvas");
        assert!(error.message.contains(why), "{}", error.message);
    }
    let mut dlq = js.get_stream("CELERITY_DLQ").await.unwrap();
    assert_eq!(dlq.info().await.unwrap().state.messages, 2, "both are kept");
    let result = add.delay(&client, 2, 2).await.unwrap();
    assert_eq!(
        result.get(WAIT).await.unwrap(),
        4,
        "the worker still runs tasks"
    );
    let grown = resident_kib(&worker).saturating_sub(baseline);
    assert!(grown < 64 * 1024, "the worker grew by {grown} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_whose_body_is_a_chain_is_not_sent_again_on_recovery() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let mut first_worker = WorkerProcess::start(&url, "w1", &["-c", "4"]);
    let client = client(&url).await;
    let js = async_nats::jetstream::new(client.nats().clone());
    // A resent body step must reach the queue, not be dropped as a duplicate within two minutes.
    let mut queue = js.get_stream("CELERITY_Q_default").await.unwrap();
    let mut config = queue.info().await.unwrap().config.clone();
    config.duplicate_window = Duration::from_secs(1);
    js.update_stream(&config)
        .await
        .expect("a 1 s duplicate window");

    // The body's last step waits on a queue no worker consumes: it stays PENDING.
    let body = celerity::chain![sum_all.s(()), add.s((1,)).queue("parked")];
    let last = Chord::new([add.s((1, 1)), add.s((2, 2))], body)
        .apply_async(&client)
        .await
        .unwrap();
    let chord_id = stored_chord_id(&url).await;
    eventually("the body's first step runs", WAIT, || async {
        body_runs(&url).await.len() == 1
    })
    .await;
    let first_step = body_runs(&url).await.into_keys().next().unwrap();
    let first = client.async_result::<i64>(&first_step).unwrap();
    assert_eq!(first.get(WAIT).await.unwrap(), 6);
    eventually("the chord's completions are purged", WAIT, || async {
        chord_completions(&url).await == 0
    })
    .await;
    let sent = queue.info().await.unwrap().state.last_sequence;

    // The aggregator dies as if before its purge: the completions are still there when another
    // worker replays the partition.
    first_worker.signal(libc::SIGKILL);
    first_worker.wait_exit(WAIT);
    for index in 0..2 {
        let completion =
            json!({"v": 1, "index": index, "size": 2, "state": "SUCCESS", "task": "it.add"});
        publish_completion(&client, &chord_id, completion, None).await;
    }
    let _second_worker = WorkerProcess::start(&url, "w2", &["-c", "4"]);
    eventually(
        "the new aggregator handles the replayed completions",
        WAIT,
        || async { chord_completions(&url).await == 0 },
    )
    .await;
    assert_eq!(
        queue.info().await.unwrap().state.last_sequence,
        sent,
        "the body was sent again"
    );
    assert_eq!(body_runs(&url).await.get(&first_step), Some(&1));
    assert_eq!(last.state().await.unwrap(), TaskState::Pending);
}

/// How many completions the chord stream holds.
async fn chord_completions(url: &str) -> u64 {
    let mut stream = chord_stream(url).await;
    stream
        .info()
        .await
        .map(|info| info.state.messages)
        .unwrap_or(0)
}
