//! Delays: countdown and ETA wait in the delayed stream, survive restarts, and start on time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use celerity::{ApplyOptions, EnqueueError, TaskState};

use crate::support::{WorkerProcess, client, publish_raw, server};

const WAIT: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_countdown_starts_the_task_no_sooner_than_asked() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;

    let sent = now_ms();
    let delayed = celerity_it::add
        .apply_async(
            &client,
            (1, 2),
            ApplyOptions::new().countdown(Duration::from_millis(1500)),
        )
        .await
        .unwrap();
    assert_eq!(delayed.state().await.unwrap(), TaskState::Pending);
    assert_eq!(delayed.get(WAIT).await.unwrap(), 3);
    let started = delayed
        .record()
        .await
        .unwrap()
        .unwrap()
        .started_at_ms
        .unwrap();
    assert!(
        started >= sent + 1500,
        "started {} ms after sending",
        started - sent
    );
    assert!(
        started < sent + 6000,
        "started {} ms after sending",
        started - sent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_task_survives_a_worker_kill_and_a_server_restart() {
    let mut server = server();
    let url = server.url();
    let worker = WorkerProcess::start(&url, "before", &[]);
    let client = client(&url).await;

    let sent = now_ms();
    let delayed = celerity_it::add
        .apply_async(
            &client,
            (20, 22),
            ApplyOptions::new().countdown(Duration::from_secs(3)),
        )
        .await
        .unwrap();
    worker.signal(libc::SIGKILL);
    drop(worker);
    server
        .restart()
        .expect("the server restarts with its store");
    let _after = WorkerProcess::start(&url, "after", &[]);
    assert_eq!(
        delayed
            .get(WAIT)
            .await
            .expect("the delayed task runs after the restarts"),
        42
    );
    let record = delayed.record().await.unwrap().unwrap();
    assert_eq!(record.worker.as_deref(), Some("after"));
    assert!(record.started_at_ms.unwrap() >= sent + 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etas_in_the_past_are_refused_beyond_the_tolerance() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;

    let long_ago = SystemTime::now() - Duration::from_secs(3600);
    let error = celerity_it::add
        .apply_async(&client, (1, 1), ApplyOptions::new().eta(long_ago))
        .await
        .unwrap_err();
    assert!(matches!(error, EnqueueError::EtaInPast { .. }), "{error}");
    let just_now = SystemTime::now() - Duration::from_secs(2);
    let result = celerity_it::add
        .apply_async(&client, (1, 1), ApplyOptions::new().eta(just_now))
        .await
        .unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_task_put_straight_on_its_queue_waits_without_holding_a_slot() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &["-c", "1"]);
    let client = client(&server.url()).await;

    let eta = (now_ms() + 1500).to_string();
    publish_raw(
        &client,
        &[
            ("Celerity-Version", "1"),
            ("Celerity-Task", "it.add"),
            ("Celerity-Id", "later"),
            ("Celerity-Eta", &eta),
        ],
        br#"{"args":[2,2]}"#,
    )
    .await;
    // The only slot stays free for other work meanwhile.
    let now = celerity_it::add.delay(&client, 1, 1).await.unwrap();
    assert_eq!(now.get(WAIT).await.unwrap(), 2);
    let later = client.async_result::<i64>("later").unwrap();
    assert_eq!(later.get(WAIT).await.unwrap(), 4);
    let started = later
        .record()
        .await
        .unwrap()
        .unwrap()
        .started_at_ms
        .unwrap();
    assert!(
        started >= eta.parse::<u64>().unwrap(),
        "started before its ETA"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_task_is_revoked_not_run_and_a_chain_step_waits_its_countdown() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;

    let expired = celerity_it::add
        .apply_async(
            &client,
            (1, 1),
            ApplyOptions::new().expires_at(SystemTime::now() - Duration::from_secs(1)),
        )
        .await
        .unwrap();
    match expired.get(WAIT).await {
        Err(celerity::ResultError::Revoked { meta, .. }) => {
            assert_eq!(meta.unwrap()["reason"], "expired")
        }
        other => panic!("expected an expired task, got {other:?}"),
    }

    let chain = celerity::chain![
        celerity_it::add.s((1, 1)),
        celerity_it::add
            .s((1,))
            .countdown(Duration::from_millis(1000))
    ]
    .apply_async(&client)
    .await
    .unwrap();
    assert_eq!(chain.get(WAIT).await.unwrap(), 3);
    let first_done = chain
        .parent()
        .unwrap()
        .record()
        .await
        .unwrap()
        .unwrap()
        .updated_at_ms;
    let second_started = chain
        .record()
        .await
        .unwrap()
        .unwrap()
        .started_at_ms
        .unwrap();
    assert!(
        second_started >= first_done + 1000,
        "the step started {} ms after the first finished",
        second_started - first_done
    );
}

/// Publishes a hand-written task message to `subject` with a JetStream publish.
async fn publish_to(
    client: &celerity::Client,
    subject: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    let js = async_nats::jetstream::new(client.nats().clone());
    let mut map = async_nats::HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, *value);
    }
    js.publish_with_headers(subject.to_owned(), map, body.to_vec().into())
        .await
        .expect("publish")
        .await
        .expect("the message is stored");
}

/// Publishes task `task_id` (`it.add` with `args`) to `subject` with the extra `headers`, waits for
/// the scheduler to move it to its queue (a message with `Nats-Msg-Id: <id>-eta-...`) and returns the
/// subject it went to.
async fn released_to(
    client: &celerity::Client,
    subject: &str,
    task_id: &str,
    headers: &[(&str, &str)],
    args: &str,
) -> String {
    use futures_util::StreamExt;
    let mut released = client
        .nats()
        .subscribe("celerity.q.*.*")
        .await
        .expect("subscribe to the task subjects");
    client.nats().flush().await.expect("flush the subscription");
    let mut all_headers = vec![
        ("Celerity-Version", "1"),
        ("Celerity-Task", "it.add"),
        ("Celerity-Id", task_id),
    ];
    all_headers.extend_from_slice(headers);
    let body = format!(r#"{{"args":{args}}}"#);
    publish_to(client, subject, &all_headers, body.as_bytes()).await;
    let release_id = format!("{task_id}-eta-");
    let wait = async {
        while let Some(message) = released.next().await {
            let id = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get("Nats-Msg-Id"))
                .map(|value| value.as_str().to_owned())
                .unwrap_or_default();
            if id.starts_with(&release_id) {
                return message.subject.to_string();
            }
        }
        panic!("the subscription to the task subjects ended");
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("the scheduler never released the delayed task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_task_goes_back_at_the_priority_of_the_subject_it_came_on() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;

    // Priority 9 by its subject only: `Celerity-Priority` is optional on a queue subject.
    let eta = (now_ms() + 1000).to_string();
    let headers = [("Celerity-Eta", eta.as_str())];
    let subject = released_to(
        &client,
        "celerity.q.default.9",
        "urgent-later",
        &headers,
        "[4,5]",
    );

    assert_eq!(subject.await, "celerity.q.default.9");
    let result = client.async_result::<i64>("urgent-later").unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_task_between_priority_steps_is_released_at_the_step_below() {
    let server = server();
    let worker = WorkerProcess::spawn(&server.url(), "w1", &[], &[("IT_PRIORITY_STEPS", "0,5,9")]);
    worker.wait_for_log("consuming", WAIT);
    let client = client(&server.url()).await;

    // Priority 7 is no step of this deployment: its stream has only `.0`, `.5` and `.9`.
    let headers = [("Celerity-Priority", "7")];
    let subject = released_to(
        &client,
        "celerity.delayed.default",
        "between-steps",
        &headers,
        "[3,4]",
    );

    assert_eq!(subject.await, "celerity.q.default.5");
    let result = client.async_result::<i64>("between-steps").unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_task_for_a_queue_without_a_stream_gets_the_stream_and_waits_there() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;

    // No worker consumes `unstarted` yet, so nothing has made its stream.
    let headers = [("Celerity-Priority", "2")];
    let id = "for-a-queue-to-come";
    let subject = released_to(&client, "celerity.delayed.unstarted", id, &headers, "[1,1]");

    assert_eq!(subject.await, "celerity.q.unstarted.2");
    let js = async_nats::jetstream::new(client.nats().clone());
    crate::support::eventually("the task waits in its new queue stream", WAIT, || {
        let js = js.clone();
        async move {
            match js.get_stream("CELERITY_Q_unstarted").await {
                Ok(stream) => stream
                    .get_last_raw_message_by_subject("celerity.q.unstarted.2")
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        }
    })
    .await;
    let _consumer = WorkerProcess::start(&server.url(), "w2", &["-Q", "unstarted"]);
    let result = client.async_result::<i64>(id).unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_whose_subject_names_no_queue_is_dead_lettered() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;

    let subject = "celerity.delayed.no:such:queue";
    publish_to(
        &client,
        subject,
        &[
            ("Celerity-Version", "1"),
            ("Celerity-Task", "it.add"),
            ("Celerity-Id", "nowhere"),
        ],
        br#"{"args":[1,2]}"#,
    )
    .await;

    let js = async_nats::jetstream::new(client.nats().clone());
    let dlq = js
        .get_stream("CELERITY_DLQ")
        .await
        .expect("the dead-letter stream");
    crate::support::eventually("the message is dead-lettered", WAIT, || {
        let dlq = dlq.clone();
        async move {
            dlq.get_last_raw_message_by_subject("celerity.dlq.default")
                .await
                .is_ok()
        }
    })
    .await;
    let letter = dlq
        .get_last_raw_message_by_subject("celerity.dlq.default")
        .await
        .expect("the dead letter");
    let header = |name: &str| {
        letter
            .headers
            .get(name)
            .map(|value| value.as_str().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(header("Celerity-Dlq-Reason"), "bad_envelope");
    assert_eq!(header("Celerity-Dlq-Subject"), subject);
    assert_eq!(header("Celerity-Id"), "nowhere");
    assert_eq!(letter.payload.as_ref(), br#"{"args":[1,2]}"#);
    let delayed = js
        .get_stream("CELERITY_DELAYED")
        .await
        .expect("the delayed stream");
    // The copy is stored before the original is terminated (its FAILURE record comes between).
    crate::support::eventually("the message leaves the delayed stream", WAIT, || {
        let mut delayed = delayed.clone();
        async move {
            delayed
                .info()
                .await
                .is_ok_and(|info| info.state.messages == 0)
        }
    })
    .await;
}
