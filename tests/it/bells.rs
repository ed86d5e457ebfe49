//! How workers learn of new tasks: max-bytes probes on nats-server 2.10.16 and later, doorbells on
//! earlier servers (`celerity::NewTaskSignal`). Each test runs in both suites, on 2.9.10 and on a
//! current server; a test of one signal returns at once, saying so, on a server that uses the other.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, stream};
use celerity::{ApplyOptions, NewTaskSignal};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;

use crate::support::{WorkerProcess, client, eventually, server};

const WAIT: Duration = Duration::from_secs(30);

/// A fresh server (stopped when dropped: keep it for the test's lifetime), its URL, a producer
/// and a raw connection to it, the raw connection's JetStream context, and the default layout and
/// queue.
async fn setup() -> (
    celerity_testkit::NatsServer,
    String,
    celerity::Client,
    async_nats::Client,
    jetstream::Context,
    celerity_proto::Layout,
    celerity_proto::QueueName,
) {
    let server = server();
    let url = server.url();
    let client = client(&url).await;
    let nats = async_nats::connect(&url).await.expect("a raw connection");
    let js = jetstream::new(nats.clone());
    let layout = celerity_proto::Layout::new(celerity_proto::Namespace::default());
    let queue = celerity_proto::QueueName::new("default").expect("a queue name");
    (server, url, client, nats, js, layout, queue)
}

/// The configuration of stream `name`, which exists.
async fn stream_config(js: &jetstream::Context, name: &str) -> stream::Config {
    js.get_stream(name)
        .await
        .expect("the queue stream exists")
        .cached_info()
        .config
        .clone()
}

/// The signal workers use with the server `nats` is connected to.
fn signal(nats: &async_nats::Client) -> NewTaskSignal {
    NewTaskSignal::for_server(&nats.server_info().version)
}

/// Whether a test of `wanted` runs on this server; says so when it does not.
fn uses(nats: &async_nats::Client, wanted: NewTaskSignal) -> bool {
    let used = signal(nats);
    if used != wanted {
        eprintln!(
            "nats-server {} uses {used:?}, not {wanted:?}: this test runs on the other server",
            nats.server_info().version
        );
    }
    used == wanted
}

/// The version gate is the server's behaviour: on this server, a max-bytes probe that meets a
/// redelivery leaves the consumer as it was exactly when `NewTaskSignal` says max-bytes probes are
/// used. On nats-server before 2.10.16 the bell's 409 steps the delivery sequence back, and the
/// next pull gets the message after the redelivered one as a first delivery while it is still
/// unacknowledged (the bug that makes those servers use doorbells).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_bytes_probes_are_used_exactly_where_the_server_answers_them_safely() {
    let server = server();
    let nats = async_nats::connect(server.url())
        .await
        .expect("a raw connection");
    let js = jetstream::new(nats.clone());
    let stream = js
        .create_stream(stream::Config {
            name: "GATE".to_owned(),
            subjects: vec!["gate.*".to_owned()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .expect("the stream");
    stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("c0".to_owned()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .expect("the consumer");
    for body in ["m1", "m2"] {
        js.publish("gate.0", body.into())
            .await
            .expect("published")
            .await
            .expect("stored");
    }
    let inbox = nats.new_inbox();
    let mut replies = nats
        .subscribe(format!("{inbox}.>"))
        .await
        .expect("the inbox");
    let request = |name: &str, body: serde_json::Value| {
        let nats = nats.clone();
        let reply = format!("{inbox}.{name}");
        async move {
            nats.publish_with_reply(
                "$JS.API.CONSUMER.MSG.NEXT.GATE.c0",
                reply,
                body.to_string().into(),
            )
            .await
            .expect("the request is sent");
        }
    };
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), replies.next())
            .await
            .expect("an answer within 10 s")
            .expect("the inbox is open")
    };

    // Both messages delivered, neither acknowledged.
    request("fetch", json!({"batch": 2, "no_wait": true})).await;
    let m1 = jetstream::Message {
        message: next().await,
        context: js.clone(),
    };
    let m2 = next().await;
    assert_eq!(&m1.payload[..], b"m1");
    assert_eq!(&m2.payload[..], b"m2");
    // A max-bytes probe waits; m1 handed back is due for redelivery at once, and rings it.
    request(
        "bell",
        json!({"batch": 1, "max_bytes": 1, "expires": 5_000_000_000u64}),
    )
    .await;
    nats.flush().await.expect("flushed");
    m1.ack_with(jetstream::AckKind::Nak(None))
        .await
        .expect("m1 handed back");
    let bell = next().await;
    assert_eq!(
        bell.status,
        Some(async_nats::StatusCode::REQUEST_TERMINATED),
        "the bell rang: {:?}",
        bell.description
    );
    // The next pull gets m1 again, its second delivery, on a server that answered the bell safely.
    // On an unsafe one it gets m2 again as a first delivery (before 2.10.14), or nothing before
    // it expires (2.10.14 and 2.10.15 drop the redelivery until the next AckWait).
    request("poll", json!({"batch": 1, "expires": 2_000_000_000u64})).await;
    let polled = jetstream::Message {
        message: next().await,
        context: js.clone(),
    };
    let safe = match polled.info() {
        Ok(info) => {
            let delivery = (info.stream_sequence, info.delivered);
            assert!(
                delivery == (1, 2) || delivery == (2, 1),
                "neither m1 redelivered nor m2 delivered again: {info:?}"
            );
            delivery == (1, 2)
        }
        Err(_) => {
            assert_eq!(
                polled.status,
                Some(async_nats::StatusCode::TIMEOUT),
                "the poll ended without a message: {:?}",
                polled.description
            );
            false
        }
    };
    assert_eq!(
        signal(&nats) == NewTaskSignal::MaxBytesProbe,
        safe,
        "nats-server {} answered a max-bytes probe for a redelivery {}, but NewTaskSignal says {:?}",
        nats.server_info().version,
        if safe { "safely" } else { "by losing it" },
        signal(&nats)
    );
}

/// What Celerity provisions matches the signal (here the producer makes the queue stream, on its
/// first send): a queue stream republishes doorbells only where workers hear them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_stream_republishes_doorbells_only_where_workers_use_them() {
    let (_server, _, client, nats, js, layout, queue) = setup().await;
    celerity_it::add.delay(&client, 1, 1).await.unwrap();
    let config = stream_config(&js, &layout.queue_stream(&queue)).await;
    assert_eq!(
        config.republish.is_some(),
        signal(&nats) == NewTaskSignal::Republish,
        "on nats-server {}: {:?}",
        nats.server_info().version,
        config.republish
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_gets_the_next_task_from_its_idle_wait_without_a_signal() {
    let (_server, url, client, nats, js, layout, queue) = setup().await;
    // On a max-bytes-probe server a level without the idle wait has a max-bytes probe, which would
    // bring the task as well: only doorbells can be taken away from a worker.
    if !uses(&nats, NewTaskSignal::Republish) {
        return;
    }

    // The queue's stream without its doorbells: made as Celerity makes it, then made again
    // without the republish (which a server cannot remove from a stream).
    let sent = celerity_it::add.delay(&client, 1, 1).await.unwrap();
    let stream = layout.queue_stream(&queue);
    let mut config = stream_config(&js, &stream).await;
    js.delete_stream(&stream).await.unwrap();
    config.republish = None;
    js.create_stream(config).await.unwrap();
    drop(sent);

    // Levels are re-checked only every 10 minutes: a task that the idle wait does not bring does
    // not run within the test.
    let _worker = WorkerProcess::start(&url, "w1", &["-c", "2", "--recheck-interval", "600000"]);
    let step = Duration::from_secs(5);
    for i in 0..10 {
        let result = celerity_it::add.delay(&client, i, i).await.unwrap();
        assert_eq!(
            result
                .get(step)
                .await
                .expect("the idle wait brings the task"),
            2 * i
        );
    }
    // Idle for longer than a wait lasts on the server (2 s): the renewed wait brings the next.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let result = celerity_it::add.delay(&client, 20, 1).await.unwrap();
    assert_eq!(
        result.get(step).await.expect("the renewed wait brings it"),
        21
    );
}

/// Whether something subscribes to `subject`: a request to a subject nobody hears is answered at
/// once with no responders; one that a worker hears (as a doorbell, which it does not answer)
/// goes unanswered (a second is far more than a no-responders answer takes, even under load).
async fn heard(nats: &async_nats::Client, subject: &str) -> bool {
    match tokio::time::timeout(
        Duration::from_secs(1),
        nats.request(subject.to_owned(), bytes::Bytes::new()),
    )
    .await
    {
        Err(_elapsed) => true,
        Ok(Err(error)) if error.kind() == async_nats::RequestErrorKind::NoResponders => false,
        Ok(other) => panic!("unexpected answer to a doorbell: {other:?}"),
    }
}

/// Sends 100 quick tasks at priority 5, then 400 of 50 ms at priority 0 (20 s of work for one
/// slot), and starts a worker of one slot that re-checks levels only every 10 minutes: within the
/// test, a level learns of new work from its signal only.
async fn backlog_behind_a_quick_level(url: &str, client: &celerity::Client) -> WorkerProcess {
    let quick = ApplyOptions::new().ignore_result(true).priority(5);
    let slow = ApplyOptions::new().ignore_result(true);
    let backlogs = [
        ("it.add", 100, json!([1, 1]), quick),
        ("it.slow_add", 400, json!([0, 0, 50]), slow),
    ];
    for (name, count, args, options) in backlogs {
        futures_util::stream::iter(0..count)
            .map(|_| client.send_task(name, args.clone(), json!(null), options.clone()))
            .buffer_unordered(256)
            .try_for_each(|_| async { Ok(()) })
            .await
            .expect("the backlog is sent");
    }
    WorkerProcess::start(url, "w1", &["-c", "1", "--recheck-interval", "600000"])
}

/// A new priority-5 task overtakes what is left of the backlog at priority 0.
async fn an_urgent_task_overtakes_the_backlog(client: &celerity::Client, js: &jetstream::Context) {
    let urgent = celerity_it::add
        .apply_async(client, (2, 3), ApplyOptions::new().priority(5))
        .await
        .expect("the urgent task is sent");
    assert_eq!(
        urgent
            .get(Duration::from_secs(10))
            .await
            .expect("the urgent task runs"),
        5
    );
    let left = js
        .get_stream("CELERITY_Q_default")
        .await
        .expect("the queue stream")
        .info()
        .await
        .expect("its info")
        .state
        .messages;
    assert!(left > 0, "the priority-5 task ran before the backlog ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_level_with_a_backlog_stops_hearing_its_doorbells_until_it_is_empty() {
    let (_server, url, client, nats, js, layout, queue) = setup().await;
    if !uses(&nats, NewTaskSignal::Republish) {
        return;
    }
    let bell = |priority: u8| {
        layout.doorbell_subject(&queue, celerity_proto::Priority::new(priority).unwrap())
    };
    let _worker = backlog_behind_a_quick_level(&url, &client).await;

    // Priority 5 runs first and drains; then priority 0's backlog runs, and its doorbells, which
    // would only say what the worker knows, are not heard while it does.
    eventually("priority 0's doorbells go unheard", WAIT, || {
        let subject = bell(0);
        let nats = nats.clone();
        async move { !heard(&nats, &subject).await }
    })
    .await;
    eventually("priority 5's doorbells are heard again", WAIT, || {
        let subject = bell(5);
        let nats = nats.clone();
        async move { heard(&nats, &subject).await }
    })
    .await;

    // So a new priority-5 task overtakes what is left of the backlog.
    an_urgent_task_overtakes_the_backlog(&client, &js).await;
    assert!(
        !heard(&nats, &bell(0)).await,
        "priority 0 still has a backlog: its doorbells are still unheard"
    );
}

/// How many pull requests wait at level `priority`'s consumer: an idle worker's max-bytes probe, or
/// its idle wait.
async fn waiting_at(js: &jetstream::Context, priority: u8) -> usize {
    let mut consumer: PullConsumer = js
        .get_consumer_from_stream(format!("p{priority}"), "CELERITY_Q_default")
        .await
        .expect("the level's consumer");
    consumer.info().await.expect("its info").num_waiting
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_level_without_known_work_keeps_a_max_bytes_probe_and_one_with_a_backlog_none() {
    let (_server, url, client, nats, js, _, _) = setup().await;
    if !uses(&nats, NewTaskSignal::MaxBytesProbe) {
        return;
    }
    let _worker = backlog_behind_a_quick_level(&url, &client).await;

    // Priority 5 runs first and drains; then priority 0's backlog runs. Every level but 0 (known
    // to have work) has a max-bytes probe out, and no task was delivered to one.
    eventually("a max-bytes probe waits on every level but 0", WAIT, || {
        let js = js.clone();
        async move {
            let mut waiting = Vec::new();
            for priority in 0..=9 {
                waiting.push(waiting_at(&js, priority).await);
            }
            waiting == [0, 1, 1, 1, 1, 1, 1, 1, 1, 1]
        }
    })
    .await;

    // A new priority-5 task rings its level's bell and overtakes what is left of the backlog.
    an_urgent_task_overtakes_the_backlog(&client, &js).await;
    eventually("level 5's max-bytes probe is out again", WAIT, || {
        let js = js.clone();
        async move { waiting_at(&js, 5).await == 1 }
    })
    .await;
    for priority in [0, 5] {
        let mut consumer: PullConsumer = js
            .get_consumer_from_stream(format!("p{priority}"), "CELERITY_Q_default")
            .await
            .unwrap();
        let info = consumer.info().await.unwrap();
        assert_eq!(info.num_redelivered, 0, "no task went to a max-bytes probe");
    }
}

/// An idle worker waits on the lowest level and keeps max-bytes probes on the others: a task
/// redelivered on one of those rings its bell. With no periodic re-check within the test, only a
/// max-bytes probe or the idle wait finds it. (A redelivery rings no doorbell: with doorbells, the
/// periodic re-check finds it, which `workers.rs` tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_redelivered_on_a_level_an_idle_worker_does_not_wait_on_rings_its_bell() {
    let probe = server();
    let nats = async_nats::connect(probe.url())
        .await
        .expect("a raw connection");
    if !uses(&nats, NewTaskSignal::MaxBytesProbe) {
        return;
    }
    drop(probe);
    // An AckWait of 5 s, so the survivor is consuming (and its first fetches, which find nothing,
    // are over) well before the task is due for redelivery.
    let survivor_ready = crate::workers::a_killed_workers_task_completes_on_a_survivor(
        5,
        "5",
        &["--recheck-interval", "600000"],
    )
    .await;
    assert!(
        survivor_ready < Duration::from_secs(4),
        "the survivor took {survivor_ready:?} to start: the task may have been due when it first \
         fetched, so no bell was needed"
    );
}

/// `CELERITY_NEW_TASK_SIGNAL=doorbells` makes a worker use doorbells on any server (for a cluster
/// being upgraded across 2.10.16), and make its queue stream with the republish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doorbells_can_be_forced_on_any_server() {
    let (_server, url, client, nats, js, layout, queue) = setup().await;
    let worker = WorkerProcess::spawn(
        &url,
        "w1",
        &["-c", "1", "--recheck-interval", "600000"],
        &[(celerity::NEW_TASK_SIGNAL_ENV, "doorbells")],
    );
    worker.wait_for_log("consuming", WAIT);
    assert!(
        worker
            .log()
            .contains("learning of new tasks from republished doorbells"),
        "{}",
        worker.log()
    );
    let config = stream_config(&js, &layout.queue_stream(&queue)).await;
    assert!(config.republish.is_some(), "the stream rings doorbells");
    let doorbell = layout.doorbell_subject(&queue, celerity_proto::Priority::new(7).unwrap());
    assert!(heard(&nats, &doorbell).await, "the worker hears doorbells");
    assert_eq!(waiting_at(&js, 7).await, 0, "and sends no max-bytes probe");
    // A task on a level without the idle wait comes by its doorbell.
    let result = celerity_it::add
        .apply_async(&client, (3, 4), ApplyOptions::new().priority(7))
        .await
        .unwrap();
    assert_eq!(result.get(Duration::from_secs(10)).await.unwrap(), 7);
}
