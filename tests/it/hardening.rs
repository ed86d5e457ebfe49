//! What hostile or unlucky work does to a worker, and that it ends: a task that kills its worker,
//! an oversized result, a terminated chord member or chain step, a retry's priority and record,
//! revocations that expire, a flood of rate-limited tasks.

use std::time::Duration;

use async_nats::HeaderMap;
use celerity::{ApplyOptions, ResultError, TaskState};
use celerity_proto::{DeadLetter, DeadLetterReason};
use futures_util::StreamExt;

use crate::support::{WorkerProcess, client, eventually, run_counts, runs_stream, server};

const WAIT: Duration = Duration::from_secs(30);

/// The headers of a hand-written task message (as a producer in another language sends it):
/// version 1, task `task`, id `id`, then `extra`.
fn task_headers(task: &str, id: &str, extra: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Celerity-Version", "1");
    headers.insert("Celerity-Task", task);
    headers.insert("Celerity-Id", id);
    for (name, value) in extra {
        headers.insert(*name, *value);
    }
    headers
}

/// `ahead` from now, in Unix milliseconds, as a `Celerity-Eta` value.
fn eta_in(ahead: Duration) -> String {
    (std::time::SystemTime::now() + ahead)
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis()
        .to_string()
}

/// The default queue's priority-0 consumer.
async fn default_p0(
    js: &async_nats::jetstream::Context,
) -> async_nats::jetstream::consumer::PullConsumer {
    js.get_consumer_from_stream("p0", "CELERITY_Q_default")
        .await
        .expect("the priority-0 consumer")
}

/// Every dead letter stored so far, read back.
async fn dead_letters(nats: &async_nats::Client) -> Vec<(DeadLetter, HeaderMap)> {
    let js = async_nats::jetstream::new(nats.clone());
    let Ok(mut stream) = js.get_stream("CELERITY_DLQ").await else {
        return Vec::new();
    };
    let last = stream
        .info()
        .await
        .expect("dead-letter stream info")
        .state
        .last_sequence;
    let mut letters = Vec::new();
    for sequence in 1..=last {
        if let Ok(stored) = stream.get_raw_message(sequence).await {
            let headers = stored.headers;
            let pairs: Vec<(String, String)> = headers
                .iter()
                .flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |value| (name.to_string(), value.as_str().to_owned()))
                })
                .collect();
            let letter = DeadLetter::from_headers(pairs.as_slice()).expect("dead-letter headers");
            letters.push((letter, headers));
        }
    }
    letters
}

/// The dead letters of task `task_id`.
async fn dead_letters_of(nats: &async_nats::Client, task_id: &str) -> Vec<DeadLetter> {
    dead_letters(nats)
        .await
        .into_iter()
        .filter(|(_, headers)| headers.get("Celerity-Id").map(|id| id.as_str()) == Some(task_id))
        .map(|(letter, _)| letter)
        .collect()
}

/// Waits for the dead letter of task `task_id`, and checks it is the only one.
async fn dead_letter_of(nats: &async_nats::Client, task_id: &str) -> DeadLetter {
    eventually("the message is dead-lettered", WAIT, || async {
        !dead_letters_of(nats, task_id).await.is_empty()
    })
    .await;
    let mut letters = dead_letters_of(nats, task_id).await;
    assert_eq!(letters.len(), 1, "one dead letter per message: {letters:?}");
    letters.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_kills_its_worker_runs_once_per_allowed_delivery_then_is_dead_lettered() {
    let server = server();
    let url = server.url();
    let client = client(&url).await;
    // `it.abort_once` allows one delivery: the first kills its worker, the second is refused.
    let mut workers = [
        WorkerProcess::start(&url, "victim-1", &["--ack-wait", "1"]),
        WorkerProcess::start(&url, "victim-2", &["--ack-wait", "1"]),
    ];
    let result = celerity_it::abort_worker_once.delay(&client).await.unwrap();
    match result.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.kind, "celerity::DeadLettered");
            assert!(
                error.message.contains("more than the 1 allowed"),
                "{}",
                error.message
            );
        }
        other => panic!("expected the task to fail as dead-lettered, got {other:?}"),
    }
    let record = result.record().await.unwrap().expect("a record");
    assert_eq!(record.meta.unwrap()["reason"], "too_many_deliveries");
    let letter = dead_letter_of(client.nats(), result.id().as_str()).await;
    assert_eq!(letter.reason, DeadLetterReason::TooManyDeliveries);
    // NOTE: the server counts a delivery to a dead worker's pull request still open in the instant
    // before its connection closes, so the count can be one more than the runs.
    assert!(letter.deliveries >= 2, "{letter:?}");
    let dead = workers
        .iter_mut()
        .map(WorkerProcess::has_exited)
        .filter(|exited| *exited)
        .count();
    assert_eq!(dead, 1, "one worker died running it, the other refused it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_delivery_limit_bounds_tasks_that_set_none() {
    let server = server();
    let url = server.url();
    let client = client(&url).await;
    let flags = ["--ack-wait", "1", "--max-deliveries", "2"];
    let mut workers = [
        WorkerProcess::start(&url, "victim-1", &flags),
        WorkerProcess::start(&url, "victim-2", &flags),
        WorkerProcess::start(&url, "victim-3", &flags),
    ];
    let result = celerity_it::abort_worker.delay(&client).await.unwrap();
    let letter = dead_letter_of(client.nats(), result.id().as_str()).await;
    assert_eq!(letter.reason, DeadLetterReason::TooManyDeliveries);
    assert!(letter.deliveries >= 3, "{letter:?}");
    assert_eq!(result.state().await.unwrap(), TaskState::Failure);
    let dead = workers
        .iter_mut()
        .map(WorkerProcess::has_exited)
        .filter(|exited| *exited)
        .count();
    // At most two deliveries ran (and killed their workers); a live worker refused the next.
    assert!((1..=2).contains(&dead), "{dead} workers died");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_limit_flag_out_of_range_is_refused_with_its_range() {
    let server = server();
    let mut worker = WorkerProcess::spawn(&server.url(), "w1", &["--max-deliveries", "0"], &[]);
    assert!(!worker.wait_exit(WAIT).success());
    assert!(
        worker.log().contains("--max-deliveries"),
        "{}",
        worker.log()
    );
    let mut worker = WorkerProcess::spawn(&server.url(), "w2", &["--ack-wait", "600"], &[]);
    assert!(!worker.wait_exit(WAIT).success());
    assert!(worker.log().contains("1..=60"), "{}", worker.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_larger_than_a_message_fails_the_task_once_instead_of_running_it_again() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let client = client(&url).await;
    let _worker = WorkerProcess::start(&url, "w1", &["--ack-wait", "2"]);
    // The server's max_payload is 1 MiB by default.
    let result = celerity_it::sized.delay(&client, 2 << 20).await.unwrap();
    match result.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.kind, "celerity::ResultTooLarge");
            assert!(error.message.contains("max_payload"), "{}", error.message);
        }
        other => panic!("expected ResultTooLarge, got {other:?}"),
    }
    crate::support::wait_until_queue_is_empty(&client, WAIT).await;
    // A small result still works.
    assert_eq!(
        celerity_it::sized
            .delay(&client, 3)
            .await
            .unwrap()
            .get(WAIT)
            .await
            .unwrap(),
        "xxx"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_task_is_recorded_under_its_own_name_and_its_chain_is_revoked() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let client = client(&url).await;
    let _worker = WorkerProcess::start(&url, "w1", &["-c", "2"]);
    let chain = celerity::chain![celerity_it::hold.s(()), celerity_it::length.s(())];
    let last = chain.apply_async(&client).await.unwrap();
    let first = last.parent().expect("the chain's first step");
    eventually("the first step runs", WAIT, || async {
        run_counts(&url).await.contains_key(first.id().as_str())
    })
    .await;
    assert!(first.terminate(Duration::from_secs(5)).await.unwrap());
    eventually("the first step ends REVOKED", WAIT, || async {
        first.state().await.unwrap() == TaskState::Revoked
    })
    .await;
    let record = first.record().await.unwrap().expect("a record");
    assert_eq!(
        record.task.as_ref().map(|name| name.as_str()),
        Some("it.hold")
    );
    assert_eq!(record.meta.unwrap()["reason"], "terminated");
    eventually("the later step ends REVOKED too", WAIT, || async {
        last.state().await.unwrap() == TaskState::Revoked
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_chord_member_ends_the_chord_instead_of_hanging_it() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let client = client(&url).await;
    let _worker = WorkerProcess::start(&url, "w1", &["-c", "4"]);
    let chord = celerity::Chord::new(
        [celerity_it::hold.s(()), celerity_it::hold.s(())],
        celerity_it::length.s(()),
    );
    let body = chord.apply_async(&client).await.unwrap();
    let held = eventually_held(&url).await;
    let member = client.async_result::<String>(held.as_str()).unwrap();
    assert!(member.terminate(Duration::from_secs(5)).await.unwrap());
    match body.get(WAIT).await {
        Err(error) => assert!(
            matches!(
                error,
                ResultError::Failed { .. } | ResultError::Revoked { .. }
            ),
            "the body fails with the member: {error:?}"
        ),
        Ok(value) => panic!("the body ran without a member: {value:?}"),
    }
}

/// The id of the first `hold` task that listens for its release.
async fn eventually_held(url: &str) -> String {
    let nats = async_nats::connect(url).await.expect("a connection");
    let js = async_nats::jetstream::new(nats);
    let stream = js.get_stream("IT_RUNS").await.expect("the runs stream");
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: "it.runs.held".to_owned(),
            ..Default::default()
        })
        .await
        .expect("a consumer of the held runs");
    let mut messages = consumer.messages().await.expect("the held runs");
    let message = tokio::time::timeout(WAIT, messages.next())
        .await
        .expect("a held task listens")
        .expect("a message")
        .expect("a message");
    String::from_utf8(message.payload.to_vec()).expect("a utf-8 task id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_keeps_the_priority_its_task_came_in_on_and_records_retry_first() {
    let server = server();
    let url = server.url();
    let client = client(&url).await;
    let _worker = WorkerProcess::start(&url, "w1", &["-c", "2"]);
    let mut sent = client
        .nats()
        .subscribe("celerity.q.default.>")
        .await
        .unwrap();
    client.nats().flush().await.unwrap();
    // A producer in another language may leave the priority header out: the subject says 9.
    let js = async_nats::jetstream::new(client.nats().clone());
    let kv = js.get_key_value("celerity_results").await.unwrap();
    let mut watch = kv.watch("retry-at-9").await.unwrap();
    // The retry goes to the delayed stream (a 1.5 s countdown): seen here as it is published.
    let mut delayed = client.nats().subscribe("celerity.delayed.>").await.unwrap();
    client.nats().flush().await.unwrap();
    let headers = task_headers("it.retry_once_later", "retry-at-9", &[]);
    js.publish_with_headers("celerity.q.default.9", headers, "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // What reaches this connection first: the RETRY record, or the retry it announces. The
    // record is written (and acknowledged) before the retry is published, a round trip apart.
    let first = tokio::time::timeout(WAIT, async {
        loop {
            tokio::select! {
                entry = watch.next() => {
                    let entry = entry.expect("the watch goes on").unwrap();
                    let record: serde_json::Value = serde_json::from_slice(&entry.value).unwrap();
                    if record["state"] == "RETRY" {
                        return "the RETRY record";
                    }
                }
                _ = delayed.next() => return "the retry",
            }
        }
    })
    .await
    .expect("a RETRY record or a retry");
    assert_eq!(first, "the RETRY record");
    let mut watch = kv.watch("retry-at-9").await.unwrap();
    let result = client.async_result::<u32>("retry-at-9").unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), 1);
    let subjects: Vec<String> = tokio::time::timeout(Duration::from_secs(5), async {
        let mut subjects = Vec::new();
        while subjects.len() < 2 {
            let message = sent.next().await.expect("a task message");
            subjects.push(message.subject.to_string());
        }
        subjects
    })
    .await
    .expect("the task and its retry were both sent to the queue");
    assert_eq!(subjects, ["celerity.q.default.9", "celerity.q.default.9"]);
    // The record ends SUCCESS, not overwritten by the RETRY of the run before.
    let last = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("the record's latest value")
        .expect("the watch goes on")
        .unwrap();
    let record: serde_json::Value = serde_json::from_slice(&last.value).unwrap();
    assert_eq!(record["state"], "SUCCESS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_that_expired_from_its_bucket_no_longer_stops_the_task() {
    let server = server();
    let url = server.url();
    let expires = [("IT_RESULT_EXPIRES_SECS", "2")];
    let worker = WorkerProcess::spawn(&url, "w1", &[], &expires);
    worker.wait_for_log("answering control requests", WAIT);
    let client = client(&url).await;
    client
        .control()
        .revoke(
            "revoked-then-expired",
            celerity::RevokeMode::Skip,
            None,
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client.nats().clone());
    let kv = js.get_key_value("celerity_revoked").await.unwrap();
    eventually("the revocation expires from its bucket", WAIT, || async {
        kv.get("revoked-then-expired").await.unwrap().is_none()
    })
    .await;
    let options = ApplyOptions::new().task_id("revoked-then-expired");
    let result = celerity_it::add
        .apply_async(&client, (2, 3), options)
        .await
        .unwrap();
    assert_eq!(
        result.get(WAIT).await.unwrap(),
        5,
        "it runs: its revocation is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_tasks_wait_within_a_byte_budget_and_are_not_handed_back() {
    let server = server();
    let url = server.url();
    let client = client(&url).await;
    let flags = ["-c", "1", "--max-rate-limited-bytes", "1048576"];
    let _worker = WorkerProcess::start(&url, "w1", &flags);
    // `it.scarce` runs once an hour: the first task runs, every later one waits. Each message
    // carries 100 KB the task ignores, so 10 fit the 1 MiB room; the 11th waits on its credit.
    let padding = "p".repeat(100 * 1024);
    for n in 0..30 {
        let body = format!(r#"{{"args":[{n}],"padding":"{padding}"}}"#);
        let id = format!("scarce-{n}");
        let headers = [
            ("Celerity-Version", "1"),
            ("Celerity-Task", "it.scarce"),
            ("Celerity-Id", id.as_str()),
        ];
        crate::support::publish_raw(&client, &headers, body.as_bytes()).await;
    }
    let js = async_nats::jetstream::new(client.nats().clone());
    let mut consumer = default_p0(&js).await;
    eventually("the room and the credit fill up", WAIT, || {
        let mut consumer = consumer.clone();
        async move {
            let info = consumer.info().await.unwrap();
            info.num_ack_pending == 11 && info.num_pending == 18
        }
    })
    .await;
    // No event marks that nothing more is fetched: watch for a while that it stays so, and that
    // nothing goes back to the queue (a hand-back would count as a delivery).
    for _ in 0..20 {
        let info = consumer.info().await.unwrap();
        assert_eq!(info.num_ack_pending, 11, "the worker holds no more");
        assert_eq!(info.num_redelivered, 0, "no task was handed back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_with_the_producers_expected_stream_header_still_waits_for_its_eta_and_runs() {
    let server = server();
    let url = server.url();
    let client = client(&url).await;
    let _worker = WorkerProcess::start(&url, "w1", &[]);
    let js = async_nats::jetstream::new(client.nats().clone());
    let due = eta_in(Duration::from_millis(1500));
    // Straight to its queue with a future ETA (the worker moves it to the delayed stream), and
    // straight to the delayed stream (the scheduler moves it to its queue): each with the
    // `Nats-Expected-Stream` its producer's own publish asked for (protocol.md 4.3).
    for (subject, id, stream) in [
        (
            "celerity.q.default.0",
            "eta-via-queue",
            "CELERITY_Q_default",
        ),
        (
            "celerity.delayed.default",
            "eta-via-delayed",
            "CELERITY_DELAYED",
        ),
    ] {
        let extra = [
            ("Celerity-Eta", due.as_str()),
            ("Nats-Msg-Id", id),
            ("Nats-Expected-Stream", stream),
        ];
        let headers = task_headers("it.add", id, &extra);
        js.publish_with_headers(subject, headers, r#"{"args":[1,2]}"#.into())
            .await
            .unwrap()
            .await
            .expect("the producer's publish is stored");
    }
    for id in ["eta-via-queue", "eta-via-delayed"] {
        let result = client.async_result::<i64>(id).unwrap();
        assert_eq!(result.get(WAIT).await.unwrap(), 3, "{id} runs at its ETA");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_handed_back_at_shutdown_is_not_counted_as_a_crash() {
    let server = server();
    let url = server.url();
    let client = client(&url).await;
    // One delivery allowed: a hand-back that counted would dead-letter the task on the next.
    let flags = ["-c", "1", "--max-deliveries", "1"];
    let mut first = WorkerProcess::start(&url, "w1", &flags);
    // `it.scarce` runs once an hour per worker: the first task runs, the second waits on w1.
    let ran = celerity_it::scarce.delay(&client, 1).await.unwrap();
    let waiting = celerity_it::scarce.delay(&client, 2).await.unwrap();
    assert_eq!(ran.get(WAIT).await.unwrap(), 1);
    let js = async_nats::jetstream::new(client.nats().clone());
    let consumer = default_p0(&js).await;
    eventually("the second task waits on w1", WAIT, || {
        let mut consumer = consumer.clone();
        async move { consumer.info().await.unwrap().num_ack_pending == 1 }
    })
    .await;
    // A warm shutdown hands the waiting task back to its queue (a delivery, at the server).
    first.signal(libc::SIGTERM);
    assert!(first.wait_exit(WAIT).success());
    let _second = WorkerProcess::start(&url, "w2", &flags);
    assert_eq!(waiting.get(WAIT).await.unwrap(), 2, "it runs on w2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_chord_member_fails_the_chord_instead_of_hanging_it() {
    let server = server();
    let url = server.url();
    let client = client(&url).await;
    let _worker = WorkerProcess::start(&url, "w1", &["-c", "2"]);
    // The second member's arguments do not bind (an argument the task does not have).
    let members = [
        celerity_it::add.s((1, 2)),
        celerity_it::add.s((3, 4)).kwarg("bogus", 1),
    ];
    let body = celerity::Chord::new(members, celerity_it::sum_all.s(()))
        .apply_async(&client)
        .await
        .unwrap();
    match body.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.kind, "celerity::DeadLettered", "{error:?}");
            assert!(error.message.starts_with("bad_arguments"), "{error:?}");
        }
        other => panic!("expected the chord to fail with its member, got {other:?}"),
    }
    let record = body.record().await.unwrap().expect("the body's record");
    let failed_task = record.meta.expect("meta")["failed_task"].clone();
    assert!(
        failed_task.as_str().unwrap().ends_with("-1"),
        "{failed_task}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_the_bucket_refuses_on_the_last_delivery_is_dead_lettered_not_run_again() {
    let server = server();
    let url = server.url();
    let client = client(&url).await;
    let _worker = WorkerProcess::start(&url, "w1", &["--max-deliveries", "1"]);
    // The results bucket takes small records (PENDING, the FAILURE below) but not this result.
    let js = async_nats::jetstream::new(client.nats().clone());
    let mut results = js.get_stream("KV_celerity_results").await.unwrap();
    let mut config = results.info().await.unwrap().config.clone();
    config.max_message_size = 700;
    js.update_stream(config)
        .await
        .expect("the bucket takes a size limit");
    let result = celerity_it::sized.delay(&client, 2000).await.unwrap();
    let letter = dead_letter_of(client.nats(), result.id().as_str()).await;
    assert_eq!(letter.reason, DeadLetterReason::ResultNotStored);
    match result.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.kind, "celerity::DeadLettered", "{error:?}");
        }
        other => panic!("expected a dead-lettered failure, got {other:?}"),
    }
    crate::support::wait_until_queue_is_empty(&client, WAIT).await;
    let mut p0 = default_p0(&js).await;
    assert_eq!(
        p0.info().await.unwrap().delivered.consumer_sequence,
        1,
        "it ran once, and was not delivered again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_body_past_its_hard_limit_cannot_replace_its_final_record() {
    let server = server();
    let url = server.url();
    let client = client(&url).await;
    let _worker = WorkerProcess::start(&url, "w1", &[]);
    // Stopped at 300 ms, the body goes on writing WORKING until 1.5 s.
    let result = celerity_it::heedless.delay(&client, 1500).await.unwrap();
    match result.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.kind, "celerity::TimeLimitExceeded");
        }
        other => panic!("expected the hard limit, got {other:?}"),
    }
    // No event marks the body's last write: watch past its end that the record stays final.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(result.state().await.unwrap(), TaskState::Failure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_task_goes_to_a_level_its_queue_stream_lists_whatever_the_schedulers_steps() {
    let server = server();
    let url = server.url();
    // A deployment with priority steps 0 and 5 made queue `coarse`'s stream with those levels.
    let steps = [("IT_PRIORITY_STEPS", "0,5")];
    let mut coarse = WorkerProcess::spawn(&url, "coarse", &["-Q", "coarse"], &steps);
    coarse.wait_for_log("answering control requests", WAIT);
    coarse.signal(libc::SIGTERM);
    assert!(coarse.wait_exit(WAIT).success());
    // The scheduler that releases the task runs in a worker with all ten levels.
    let _fine = WorkerProcess::start(&url, "fine", &[]);
    let client = client(&url).await;
    let js = async_nats::jetstream::new(client.nats().clone());
    let due = eta_in(Duration::ZERO);
    let extra = [
        ("Celerity-Priority", "9"),
        ("Celerity-Eta", due.as_str()),
        ("Nats-Msg-Id", "due-at-9"),
    ];
    let headers = task_headers("it.add", "due-at-9", &extra);
    js.publish_with_headers(
        "celerity.delayed.coarse",
        headers,
        r#"{"args":[1,2]}"#.into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let stream = js.get_stream("CELERITY_Q_coarse").await.unwrap();
    eventually("the task is released to level 5", WAIT, || async {
        stream
            .get_last_raw_message_by_subject("celerity.q.coarse.5")
            .await
            .is_ok()
    })
    .await;
}
