//! One task id in several messages: published again inside the de-duplication window (stored
//! once), again after it (stored, not run: the final record stays), and reused by another
//! producer with other arguments (dead-lettered `duplicate_task_id`, the victim's record stays).

use std::time::Duration;

use celerity::ApplyOptions;
use serde_json::{Value, json};

use super::checker::{make_ledger, read_ledger};
use crate::support::{WorkerProcess, client, eventually, server};

const WAIT: Duration = Duration::from_secs(30);

/// The record of `id` in the results bucket, and its revision.
async fn record(js: &async_nats::jetstream::Context, id: &str) -> (u64, Value) {
    let bucket = js
        .get_key_value("celerity_results")
        .await
        .expect("the results bucket");
    let entry = bucket.entry(id).await.expect("read").expect("a record");
    (
        entry.revision,
        serde_json::from_slice(&entry.value).expect("JSON"),
    )
}

/// The dead letters stored so far, as their `Celerity-Dlq-Reason` and `Celerity-Id` headers.
async fn dead_letters(js: &async_nats::jetstream::Context) -> Vec<(String, String)> {
    let Ok(mut stream) = js.get_stream("CELERITY_DLQ").await else {
        return Vec::new();
    };
    let last = stream.info().await.expect("info").state.last_sequence;
    let mut letters = Vec::new();
    for sequence in 1..=last {
        let Ok(message) = stream.get_raw_message(sequence).await else {
            continue;
        };
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .map(|value| value.as_str().to_owned())
                .unwrap_or_default()
        };
        letters.push((header("Celerity-Dlq-Reason"), header("Celerity-Id")));
    }
    letters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_id_sent_3_times_in_the_window_and_once_after_is_stored_once_and_run_once() {
    let server = server();
    let url = server.url();
    make_ledger(&url, 1).await;
    let _worker = WorkerProcess::start(&url, "dedup", &[]);
    let client = client(&url).await;
    let js = async_nats::jetstream::new(client.nats().clone());
    // The queue's window, made one second long (an operator may edit it), so "after the window"
    // fits in a test.
    let mut queue = js.get_stream("CELERITY_Q_default").await.expect("queue");
    let mut config = queue.info().await.expect("info").config.clone();
    config.duplicate_window = Duration::from_secs(1);
    js.update_stream(config)
        .await
        .expect("the window is edited");

    let send = || {
        client.send_task(
            "it.ledger",
            json!([7, 0]),
            Value::Null,
            ApplyOptions::new().task_id("dup-7"),
        )
    };
    for _ in 0..3 {
        send().await.expect("a duplicate publish is acknowledged");
    }
    let first = send().await.expect("sent");
    assert_eq!(first.get(WAIT).await.expect("ran"), json!(7));
    let stored = queue.info().await.expect("info").state.last_sequence;
    assert_eq!(stored, 1, "four sends inside the window are stored once");
    let before = record(&js, "dup-7").await;

    // NOTE: the window is a length of time; past it the server stores the id again.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    send().await.expect("sent after the window");
    eventually("the late copy to be dead-lettered", WAIT, || async {
        dead_letters(&js)
            .await
            .contains(&("duplicate_task_id".to_owned(), "dup-7".to_owned()))
    })
    .await;
    let stored = queue.info().await.expect("info").state.last_sequence;
    assert_eq!(stored, 2, "the send after the window is stored");
    assert_eq!(record(&js, "dup-7").await, before, "the record stays");
    let runs = read_ledger(&url).await;
    assert_eq!(
        runs.get("dup-7").map(Vec::len),
        Some(1),
        "run once: {runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_tasks_id_reused_with_other_arguments_does_not_run_or_replace_its_result() {
    let server = server();
    let url = server.url();
    make_ledger(&url, 1).await;
    let _worker = WorkerProcess::start(&url, "victim-side", &[]);
    let victim = client(&url).await;
    let result = victim
        .send_task(
            "it.ledger",
            json!([1, 0]),
            Value::Null,
            ApplyOptions::new().task_id("victim-1"),
        )
        .await
        .expect("sent");
    assert_eq!(result.get(WAIT).await.expect("ran"), json!(1));
    let js = async_nats::jetstream::new(victim.nats().clone());
    let before = record(&js, "victim-1").await;

    // Another producer reuses the id, with other arguments and a `Nats-Msg-Id` of its own (with
    // the victim's, inside the window, the server would drop it as a duplicate).
    let attacker = client(&url).await;
    crate::support::publish_raw(
        &attacker,
        &[
            ("Celerity-Version", "1"),
            ("Celerity-Task", "it.ledger"),
            ("Celerity-Id", "victim-1"),
            ("Nats-Msg-Id", "attacker-1"),
        ],
        br#"{"args":[666,0]}"#,
    )
    .await;
    eventually("the reused id to be dead-lettered", WAIT, || async {
        dead_letters(&js)
            .await
            .contains(&("duplicate_task_id".to_owned(), "victim-1".to_owned()))
    })
    .await;
    assert_eq!(
        record(&js, "victim-1").await,
        before,
        "the victim's record stays"
    );
    assert_eq!(result.get(WAIT).await.expect("still readable"), json!(1));
    let runs = read_ledger(&url).await;
    assert_eq!(runs.get("victim-1").map(Vec::len), Some(1), "{runs:?}");
}
