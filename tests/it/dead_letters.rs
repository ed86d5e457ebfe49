//! Messages no worker can run go to the dead-letter stream with the reason, and the worker keeps
//! running.

use std::time::Duration;

use async_nats::HeaderMap;
use celerity_proto::{DeadLetter, DeadLetterReason};

use crate::support::{WorkerProcess, client, eventually, server, wait_until_queue_is_empty};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, *value);
    }
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_bad_message_is_dead_lettered_with_its_reason() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "dlq-worker", &[]);
    let client = client(&server.url()).await;
    let js = async_nats::jetstream::new(client.nats().clone());

    let cases: Vec<(&str, HeaderMap, &str, DeadLetterReason)> = vec![
        (
            "unknown task",
            headers(&[
                ("Celerity-Version", "1"),
                ("Celerity-Task", "it.nope"),
                ("Celerity-Id", "dl-1"),
            ]),
            r#"{"args":[]}"#,
            DeadLetterReason::UnknownTask,
        ),
        (
            "undecodable body",
            headers(&[
                ("Celerity-Version", "1"),
                ("Celerity-Task", "it.add"),
                ("Celerity-Id", "dl-2"),
            ]),
            "not json{",
            DeadLetterReason::UndecodableBody,
        ),
        (
            "wrong argument types",
            headers(&[
                ("Celerity-Version", "1"),
                ("Celerity-Task", "it.add"),
                ("Celerity-Id", "dl-3"),
            ]),
            r#"{"args":["a","b"]}"#,
            DeadLetterReason::BadArguments,
        ),
        (
            "unknown protocol version",
            headers(&[
                ("Celerity-Version", "99"),
                ("Celerity-Task", "it.add"),
                ("Celerity-Id", "dl-4"),
            ]),
            r#"{"args":[1,2]}"#,
            DeadLetterReason::UnsupportedVersion,
        ),
        (
            "missing id",
            headers(&[("Celerity-Version", "1"), ("Celerity-Task", "it.add")]),
            r#"{"args":[1,2]}"#,
            DeadLetterReason::BadEnvelope,
        ),
    ];
    for (_, headers, body, _) in &cases {
        js.publish_with_headers(
            "celerity.q.default.0",
            headers.clone(),
            body.to_string().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }

    let mut dlq = js
        .get_stream("CELERITY_DLQ")
        .await
        .expect("the dead-letter stream exists");
    eventually(
        "every bad message is dead-lettered",
        Duration::from_secs(20),
        || {
            let mut dlq = dlq.clone();
            async move {
                dlq.info()
                    .await
                    .map(|info| info.state.messages == 5)
                    .unwrap_or(false)
            }
        },
    )
    .await;
    // Letters are stored in the order workers finish, so find each by its original sequence.
    let mut letters = std::collections::HashMap::new();
    for sequence in 1..=5 {
        let stored = dlq.get_raw_message(sequence).await.unwrap();
        let original: u64 = stored
            .headers
            .get("Celerity-Dlq-Stream-Sequence")
            .expect("original sequence")
            .as_str()
            .parse()
            .unwrap();
        letters.insert(original, stored);
    }
    for (original, (what, sent_headers, body, reason)) in (1..).zip(&cases) {
        let stored = letters
            .remove(&original)
            .unwrap_or_else(|| panic!("{what}: no dead letter"));
        assert_eq!(
            std::str::from_utf8(&stored.payload).unwrap(),
            *body,
            "{what}: body kept"
        );
        let stored_headers = stored.headers;
        for (name, values) in sent_headers
            .iter()
            .filter(|(name, _)| AsRef::<str>::as_ref(*name) != "Nats-Msg-Id")
        {
            assert_eq!(
                stored_headers
                    .get(name.as_ref() as &str)
                    .map(|v| v.as_str()),
                values.first().map(|v| v.as_str()),
                "{what}: header kept"
            );
        }
        let view: Vec<(String, String)> = stored_headers
            .iter()
            .flat_map(|(name, values)| {
                values
                    .iter()
                    .map(move |v| (AsRef::<str>::as_ref(name).to_owned(), v.as_str().to_owned()))
            })
            .collect();
        let letter = DeadLetter::from_headers(view.as_slice())
            .unwrap_or_else(|| panic!("{what}: dead-letter headers"));
        assert_eq!(letter.reason, *reason, "{what}: reason");
        assert_eq!(letter.worker, "dlq-worker");
        assert_eq!(letter.deliveries, 1);
        assert_eq!(letter.subject, "celerity.q.default.0");
        assert!(!letter.error.is_empty());
    }
    let _ = dlq.info().await;

    // Nothing is left in the queue, and the worker still runs good tasks.
    wait_until_queue_is_empty(&client, Duration::from_secs(10)).await;
    // Tasks with a valid envelope also fail visibly, so nobody waits on them.
    let rejected = client.async_result::<i64>("dl-3").unwrap();
    match rejected.get(Duration::from_secs(5)).await {
        Err(celerity::ResultError::Failed { error, .. }) => {
            assert_eq!(error.kind, "celerity::DeadLettered");
            assert!(
                error.message.starts_with("bad_arguments: "),
                "{}",
                error.message
            );
        }
        other => panic!("expected a dead-lettered failure, got {other:?}"),
    }

    let result = celerity_it::add.delay(&client, 2, 2).await.unwrap();
    assert_eq!(result.get(Duration::from_secs(20)).await.unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_outside_zero_to_nine_is_refused_at_publish() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;
    let js = async_nats::jetstream::new(client.nats().clone());
    let body = r#"{"args":[1,2]}"#.to_string();
    let headers = headers(&[
        ("Celerity-Version", "1"),
        ("Celerity-Task", "it.add"),
        ("Celerity-Id", "p10"),
    ]);
    let refused = async {
        js.publish_with_headers("celerity.q.default.10", headers, body.into())
            .await?
            .await
    }
    .await;
    assert!(
        refused.is_err(),
        "a task on priority 10 was stored where no consumer would deliver it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_notify_only_reply_subjects_of_their_namespace() {
    let server = server();
    let worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;
    let js = async_nats::jetstream::new(client.nats().clone());
    // A producer tries to make the worker overwrite another task's result.
    let headers = headers(&[
        ("Celerity-Version", "1"),
        ("Celerity-Task", "it.add"),
        ("Celerity-Id", "sneaky"),
        ("Celerity-Reply-To", "$KV.celerity_results.victim"),
    ]);
    js.publish_with_headers(
        "celerity.q.default.0",
        headers,
        r#"{"args":[1,2]}"#.to_string().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let sneaky = client.async_result::<i64>("sneaky").unwrap();
    assert_eq!(sneaky.get(Duration::from_secs(20)).await.unwrap(), 3);
    worker.wait_for_log(
        "not a reply subject of this namespace",
        Duration::from_secs(10),
    );
    let victim = client.async_result::<i64>("victim").unwrap();
    assert_eq!(victim.state().await.unwrap(), celerity::TaskState::Unknown);
}
