//! Messages no worker can run go to the dead-letter stream with the reason, and the worker keeps
//! running.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::Info as ConsumerInfo;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::Config as StreamConfig;
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

/// A server, a worker `dlq-worker` consuming the default queue, a producer, and JetStream on the
/// producer's connection.
struct Setup {
    _server: celerity_testkit::NatsServer,
    worker: WorkerProcess,
    client: celerity::Client,
    js: async_nats::jetstream::Context,
}

/// [`Setup`]; with `operator_dlq`, the dead-letter stream is created with that configuration
/// before the worker starts (as an operator might have), so the worker opens it as it is.
async fn setup(operator_dlq: Option<StreamConfig>) -> Setup {
    let server = server();
    if let Some(config) = operator_dlq {
        let nats = async_nats::connect(server.url()).await.expect("connect");
        let js = async_nats::jetstream::new(nats);
        js.create_stream(config).await.expect("the DLQ is created");
    }
    let worker = WorkerProcess::start(&server.url(), "dlq-worker", &[]);
    let client = client(&server.url()).await;
    let js = async_nats::jetstream::new(client.nats().clone());
    Setup {
        _server: server,
        worker,
        client,
        js,
    }
}

/// The dead-letter stream's name and subjects, with the server's defaults for everything else.
fn dlq_config() -> StreamConfig {
    StreamConfig {
        name: "CELERITY_DLQ".into(),
        subjects: vec!["celerity.dlq.*".into()],
        ..Default::default()
    }
}

/// A valid envelope for task `task`.
fn envelope<'a>(task: &'a str, id: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("Celerity-Version", "1"),
        ("Celerity-Task", task),
        ("Celerity-Id", id),
    ]
}

/// Publishes a hand-written message to the default queue at priority 0.
async fn send(js: &async_nats::jetstream::Context, pairs: &[(&str, &str)], body: Vec<u8>) {
    js.publish_with_headers("celerity.q.default.0", headers(pairs), body.into())
        .await
        .expect("publish")
        .await
        .expect("the message is stored in its queue");
}

/// Every message of the dead-letter stream, once it holds `count`; it must hold no more.
async fn wait_for_letters(js: &async_nats::jetstream::Context, count: u64) -> Vec<StreamMessage> {
    eventually(
        &format!("{count} dead letters are stored"),
        Duration::from_secs(20),
        || async {
            match js.get_stream("CELERITY_DLQ").await {
                Ok(mut dlq) => dlq
                    .info()
                    .await
                    .is_ok_and(|info| info.state.messages >= count),
                Err(_) => false,
            }
        },
    )
    .await;
    let mut dlq = js.get_stream("CELERITY_DLQ").await.expect("the DLQ");
    let state = dlq.info().await.expect("the DLQ's state").state.clone();
    let mut letters = Vec::new();
    for sequence in state.first_sequence..=state.last_sequence {
        if let Ok(letter) = dlq.get_raw_message(sequence).await {
            letters.push(letter);
        }
    }
    assert_eq!(
        letters.len() as u64,
        count,
        "the DLQ holds exactly {count} letters"
    );
    letters
}

/// The letter of task `id`.
fn letter_of<'a>(letters: &'a [StreamMessage], id: &str) -> &'a StreamMessage {
    letters
        .iter()
        .find(|letter| header_of(letter, "Celerity-Id") == Some(id))
        .unwrap_or_else(|| panic!("no dead letter of {id}"))
}

fn header_of<'a>(letter: &'a StreamMessage, name: &str) -> Option<&'a str> {
    letter.headers.get(name).map(|value| value.as_str())
}

/// The priority-0 consumer of the default queue once every delivery of it is settled (acked or
/// terminated) and nothing waits: its `delivered` count then says how many deliveries there were.
async fn settled_consumer(js: &async_nats::jetstream::Context) -> ConsumerInfo {
    let queue = js
        .get_stream("CELERITY_Q_default")
        .await
        .expect("the default queue");
    let settled = |info: &ConsumerInfo| info.num_ack_pending == 0 && info.num_pending == 0;
    eventually(
        "the queue's consumer has nothing pending",
        Duration::from_secs(20),
        || async {
            queue
                .consumer_info("p0")
                .await
                .is_ok_and(|info| settled(&info))
        },
    )
    .await;
    queue.consumer_info("p0").await.expect("consumer info")
}

/// Checks that each of the `count` messages sent was delivered once, with nothing left pending.
async fn assert_each_delivered_once(js: &async_nats::jetstream::Context, count: u64) {
    let consumer = settled_consumer(js).await;
    assert_eq!(
        consumer.delivered.consumer_sequence, count,
        "each message delivered once"
    );
}

/// The error of task `id`, which must have failed as dead-lettered.
async fn dead_lettered_error(client: &celerity::Client, id: &str) -> celerity::ErrorRecord {
    let result = client.async_result::<i64>(id).expect("a task id");
    match result.get(Duration::from_secs(20)).await {
        Err(celerity::ResultError::Failed { error, .. }) => {
            assert_eq!(error.kind, "celerity::DeadLettered", "{id}");
            error
        }
        other => panic!("{id}: expected a dead-lettered failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_stored_whatever_the_producer_asked_of_the_server() {
    let test = setup(None).await;
    let Setup { client, js, .. } = &test;
    // A first letter, so the dead-letter subject has a last sequence other than 0.
    send(js, &envelope("it.nope", "plain"), b"{}".to_vec()).await;
    wait_for_letters(js, 1).await;
    wait_until_queue_is_empty(client, Duration::from_secs(10)).await;
    // protocol.md 4.3 lets a producer have the server check the stream; a subject sequence
    // check holds in the queue (its one earlier message is gone) but not in the DLQ.
    let mut checked = envelope("it.nope", "checked");
    checked.push(("Nats-Expected-Stream", "CELERITY_Q_default"));
    checked.push(("Nats-Expected-Last-Subject-Sequence", "0"));
    send(js, &checked, b"{}".to_vec()).await;

    let letters = wait_for_letters(js, 2).await;
    let letter = letter_of(&letters, "checked");
    assert_eq!(
        header_of(letter, "Celerity-Dlq-Reason"),
        Some("unknown_task")
    );
    assert_eq!(header_of(letter, "Nats-Expected-Stream"), None);
    assert_eq!(
        header_of(letter, "Nats-Expected-Last-Subject-Sequence"),
        None
    );
    assert_eq!(
        header_of(letter, "Celerity-Dlq-Original-Nats-Expected-Stream"),
        Some("CELERITY_Q_default")
    );
    assert_eq!(
        header_of(
            letter,
            "Celerity-Dlq-Original-Nats-Expected-Last-Subject-Sequence"
        ),
        Some("0")
    );
    let error = dead_lettered_error(client, "checked").await;
    assert!(
        error.message.starts_with("unknown_task: "),
        "{}",
        error.message
    );
    assert_each_delivered_once(js, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_envelope_with_a_readable_id_fails_its_pending_task() {
    let test = setup(None).await;
    let Setup { client, js, .. } = &test;
    let results = js
        .get_key_value("celerity_results")
        .await
        .expect("the results bucket");
    // PENDING, as a producer writes it before it sends (protocol.md 5.5).
    for id in ["bad-retries", "bad-version", "bad-id"] {
        let mut pending = celerity_proto::ResultRecord::new(
            celerity_proto::TaskId::new(id).unwrap(),
            celerity::TaskState::Pending,
            1,
        );
        pending.task = Some(celerity_proto::TaskName::new("it.add").unwrap());
        let bytes = serde_json::to_vec(&pending).unwrap();
        results.create(id, bytes.into()).await.expect("PENDING");
    }
    let mut replies = client
        .nats()
        .subscribe("celerity.reply.dlqtest")
        .await
        .expect("subscribe to the reply subject");
    client.nats().flush().await.unwrap();

    let body = br#"{"args":[1,2]}"#.to_vec();
    let mut bad_retries = envelope("it.add", "bad-retries");
    bad_retries.push(("Celerity-Retries", "many"));
    bad_retries.push(("Celerity-Reply-To", "celerity.reply.dlqtest"));
    send(js, &bad_retries, body.clone()).await;
    let mut bad_version = envelope("it.add", "bad-version");
    bad_version[0] = ("Celerity-Version", "99");
    send(js, &bad_version, body.clone()).await;
    // This producer got its id wrong: no worker can tell which task it meant.
    send(js, &envelope("it.add", "bad id"), body).await;

    let error = dead_lettered_error(client, "bad-retries").await;
    assert!(
        error.message.starts_with("bad_envelope: "),
        "{}",
        error.message
    );
    let error = dead_lettered_error(client, "bad-version").await;
    assert!(
        error.message.starts_with("unsupported_version: "),
        "{}",
        error.message
    );
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::StreamExt::next(&mut replies),
    )
    .await
    .expect("the producer is notified")
    .expect("a reply");
    let notified: celerity_proto::ResultRecord = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(notified.id.as_str(), "bad-retries");
    assert_eq!(notified.state, celerity::TaskState::Failure);
    assert_eq!(
        notified.task.as_ref().map(|task| task.as_str()),
        Some("it.add")
    );

    let letters = wait_for_letters(js, 3).await;
    for (id, reason) in [
        ("bad-retries", "bad_envelope"),
        ("bad-version", "unsupported_version"),
        ("bad id", "bad_envelope"),
    ] {
        let letter = letter_of(&letters, id);
        assert_eq!(
            header_of(letter, "Celerity-Dlq-Reason"),
            Some(reason),
            "{id}"
        );
    }
    assert_each_delivered_once(js, 3).await;
    // Every message is settled: the task whose id could not be read is left as it was.
    let untouched = client.async_result::<i64>("bad-id").unwrap();
    assert_eq!(
        untouched.state().await.unwrap(),
        celerity::TaskState::Pending
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_dead_letter_is_stored_once_bounded_or_without_its_body() {
    let test = setup(None).await;
    let Setup { client, js, .. } = &test;
    let max_payload = client.nats().server_info().max_payload;
    let body_with_name = |length: usize| {
        let name = "k".repeat(length);
        format!(r#"{{"args":[1,2],"kwargs":{{"{name}":1}}}}"#).into_bytes()
    };
    // The error names the argument: 900 KB of it, twice the body's size in a copy unbounded.
    let fits = body_with_name(900_000);
    send(js, &envelope("it.add", "huge-name"), fits.clone()).await;
    // A body so close to max_payload that the dead-letter headers cannot be added to it.
    let overhead = body_with_name(0).len();
    let full = body_with_name(max_payload - 400 - overhead);
    send(js, &envelope("it.add", "full-body"), full.clone()).await;

    let letters = wait_for_letters(js, 2).await;
    assert_each_delivered_once(js, 2).await;
    assert_eq!(wait_for_letters(js, 2).await.len(), 2, "no second copy");

    let kept = letter_of(&letters, "huge-name");
    assert_eq!(kept.payload.len(), fits.len(), "the body that fits is kept");
    assert_eq!(header_of(kept, "Celerity-Dlq-Body-Dropped"), None);
    let dropped = letter_of(&letters, "full-body");
    assert!(
        dropped.payload.is_empty(),
        "the body that does not fit is left out"
    );
    assert_eq!(
        header_of(dropped, "Celerity-Dlq-Body-Dropped"),
        Some(full.len().to_string().as_str())
    );
    for (id, letter) in [("huge-name", kept), ("full-body", dropped)] {
        assert_eq!(
            header_of(letter, "Celerity-Dlq-Reason"),
            Some("bad_arguments")
        );
        let error = header_of(letter, "Celerity-Dlq-Error").unwrap_or_default();
        assert!(
            error.len() <= 512,
            "{id}: a {} byte error header",
            error.len()
        );
        assert!(error.ends_with(" bytes in all]"), "{id}: {error}");
        let failure = dead_lettered_error(client, id).await;
        assert!(
            failure.message.len() <= "bad_arguments: ".len() + 512,
            "{id}: a {} byte error in the record",
            failure.message.len()
        );
        assert!(
            failure.message.starts_with("bad_arguments: task it.add: "),
            "{id}"
        );
        assert!(failure.message.ends_with(" bytes in all]"), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_dead_letter_stream_is_created_again() {
    let test = setup(None).await;
    let Setup { client, js, .. } = &test;
    js.delete_stream("CELERITY_DLQ")
        .await
        .expect("the DLQ is deleted");
    send(js, &envelope("it.nope", "after-delete"), b"{}".to_vec()).await;

    let letters = wait_for_letters(js, 1).await;
    assert_eq!(
        header_of(letter_of(&letters, "after-delete"), "Celerity-Dlq-Reason"),
        Some("unknown_task")
    );
    dead_lettered_error(client, "after-delete").await;
    assert_each_delivered_once(js, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_the_stream_refuses_is_stored_without_its_body_or_given_up_visibly() {
    let small_dlq = StreamConfig {
        max_message_size: 1_500,
        ..dlq_config()
    };
    let test = setup(Some(small_dlq)).await;
    let Setup {
        worker, client, js, ..
    } = &test;
    send(js, &envelope("it.nope", "small"), b"{}".to_vec()).await;
    send(js, &envelope("it.nope", "large-body"), vec![b' '; 4_000]).await;
    // Even without its body this one is larger than the stream takes.
    let big_value = "v".repeat(1_600);
    let mut big_headers = envelope("it.nope", "large-headers");
    big_headers.push(("X-Big", &big_value));
    send(js, &big_headers, b"{}".to_vec()).await;

    assert_each_delivered_once(js, 3).await;
    wait_until_queue_is_empty(client, Duration::from_secs(10)).await;
    let letters = wait_for_letters(js, 2).await;
    assert_eq!(letter_of(&letters, "small").payload.as_ref(), b"{}");
    let dropped = letter_of(&letters, "large-body");
    assert!(dropped.payload.is_empty());
    assert_eq!(
        header_of(dropped, "Celerity-Dlq-Body-Dropped"),
        Some("4000")
    );
    // Nobody waits on any of them, the one given up included; the loss is logged as an error.
    for id in ["small", "large-body", "large-headers"] {
        dead_lettered_error(client, id).await;
    }
    worker.wait_for_log("giving up a dead letter", Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_waits_while_the_stream_cannot_take_it() {
    let full_dlq = StreamConfig {
        max_messages: 1,
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        ..dlq_config()
    };
    let test = setup(Some(full_dlq)).await;
    let Setup { client, js, .. } = &test;
    js.publish("celerity.dlq.filler", "full".into())
        .await
        .unwrap()
        .await
        .expect("the DLQ is full");
    send(js, &envelope("it.nope", "waits"), b"{}".to_vec()).await;
    // The full stream answers 503: the worker hands the message back and tries again later.
    let queue = js.get_stream("CELERITY_Q_default").await.unwrap();
    eventually(
        "the message is delivered again",
        Duration::from_secs(20),
        || async {
            queue
                .consumer_info("p0")
                .await
                .is_ok_and(|info| info.delivered.consumer_sequence >= 2)
        },
    )
    .await;
    let dlq = js.get_stream("CELERITY_DLQ").await.unwrap();
    dlq.purge().await.expect("room in the DLQ");

    let letters = wait_for_letters(js, 1).await;
    let deliveries: u64 = header_of(letter_of(&letters, "waits"), "Celerity-Dlq-Deliveries")
        .unwrap()
        .parse()
        .unwrap();
    assert!(deliveries >= 2, "stored on a later delivery, not the first");
    dead_lettered_error(client, "waits").await;
    wait_until_queue_is_empty(client, Duration::from_secs(10)).await;
}
