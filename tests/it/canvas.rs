//! Canvas across processes: chains, callbacks and errbacks.

use std::time::Duration;

use celerity::{ResultError, TaskState};
use celerity_it::{explode, extract, load, record_failure, transform};

use crate::support::{
    WorkerProcess, client, eventually, publish_raw, runs_stream, server, wait_until_queue_is_empty,
};

const WAIT: Duration = Duration::from_secs(30);

/// extract(3) | transform() | load("warehouse"), which ends in "333 -> warehouse".
fn etl_chain() -> celerity::Chain<String> {
    celerity::chain![
        extract.s((3,)),
        transform.s(()),
        load.s(("warehouse".to_owned(),))
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etl_chain_passes_each_result_on_and_parent_walks_back() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;

    let result = etl_chain()
        .apply_async(&client)
        .await
        .expect("the chain is sent");
    assert_eq!(
        result.get(WAIT).await.expect("the chain finishes"),
        "333 -> warehouse"
    );
    let transformed = result.parent().expect("load has a parent");
    assert_eq!(transformed.get(WAIT).await.unwrap(), serde_json::json!(333));
    let extracted = transformed.parent().expect("transform has a parent");
    assert_eq!(
        extracted.get(WAIT).await.unwrap(),
        serde_json::json!([3, 30, 300])
    );
    assert!(extracted.parent().is_none(), "extract is the first step");
}

/// Every step of a chain reads PENDING from its send on (as in Celery), not UNKNOWN until the step
/// before it ends: the producer writes the later steps' records with the first task, and the
/// workers that send those steps write none (so they cost no write on a step's path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_of_a_sent_chain_reads_pending_until_it_runs() {
    let server = server();
    let client = client(&server.url()).await;

    let result = etl_chain()
        .apply_async(&client)
        .await
        .expect("the chain is sent");
    let transformed = result.parent().expect("load has a parent");
    let extracted = transformed.parent().expect("transform has a parent");
    for (step, state) in [
        ("extract", extracted.state().await.unwrap()),
        ("transform", transformed.state().await.unwrap()),
        ("load", result.state().await.unwrap()),
    ] {
        assert_eq!(state, TaskState::Pending, "{step} before any worker runs");
    }
    let record = client
        .async_result::<String>(result.id().as_str())
        .unwrap()
        .record()
        .await
        .unwrap()
        .expect("the last step has a record");
    assert_eq!(
        record.task.as_ref().map(|task| task.as_str()),
        Some("etl.load"),
        "a step's PENDING record names its own task"
    );

    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    assert_eq!(result.get(WAIT).await.unwrap(), "333 -> warehouse");
    assert_eq!(transformed.state().await.unwrap(), TaskState::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_stops_the_chain_and_runs_its_errback() {
    let server = server();
    let url = server.url();
    let runs = runs_stream(&url).await;
    let _worker = WorkerProcess::start(&url, "w1", &[]);
    let client = client(&url).await;

    let result = celerity::chain![
        extract.s((1,)),
        explode.s(()).link_error(record_failure.s(())),
        load.s(("never".to_owned(),)),
    ]
    .apply_async(&client)
    .await
    .expect("the chain is sent");
    match result.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.message, "cannot transform 3 rows")
        }
        other => panic!("expected the chain to fail, got {other:?}"),
    }
    let exploded = result.parent().expect("load has a parent");
    assert_eq!(exploded.state().await.unwrap(), TaskState::Failure);
    let never = result
        .record()
        .await
        .unwrap()
        .expect("the last step has a record");
    assert_eq!(never.task, None, "the last step never ran");
    assert_eq!(
        never
            .meta
            .as_ref()
            .and_then(|meta| meta["failed_task"].as_str()),
        Some(exploded.id().as_str())
    );

    eventually("the errback runs with the failed task's id", WAIT, || {
        let runs = runs.clone();
        let failed = exploded.id().to_string();
        async move {
            let Ok(message) = runs
                .get_last_raw_message_by_subject("it.runs.errback")
                .await
            else {
                return false;
            };
            message.payload == failed.as_bytes()
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_steps_ignore_the_previous_result_and_links_get_it() {
    let server = server();
    let url = server.url();
    let _worker = WorkerProcess::start(&url, "w1", &[]);
    let client = client(&url).await;

    let result = celerity::chain![extract.s((2,)), extract.si((5,))]
        .apply_async(&client)
        .await
        .unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), vec![5, 50, 500]);

    // The link runs after the task succeeds (it records its run on `it.runs.linked`).
    let runs = runs_stream(&url).await;
    let linked = extract
        .s((4,))
        .link(celerity_it::track.si(("linked".to_owned(), 0)))
        .apply_async(&client)
        .await
        .unwrap();
    assert_eq!(linked.get(WAIT).await.unwrap(), vec![4, 40, 400]);
    eventually("the link callback runs", WAIT, || {
        let runs = runs.clone();
        async move {
            runs.get_last_raw_message_by_subject("it.runs.linked")
                .await
                .is_ok()
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_results_come_in_member_order_and_as_they_complete() {
    use futures_util::StreamExt;

    let server = server();
    runs_stream(&server.url()).await;
    let _w1 = WorkerProcess::start(&server.url(), "w1", &["-c", "4"]);
    let _w2 = WorkerProcess::start(&server.url(), "w2", &["-c", "4"]);
    let client = client(&server.url()).await;

    let group = celerity::Group::new((1..=50).map(|source| extract.s((source,))))
        .apply_async(&client)
        .await
        .unwrap();
    let all = group.get(WAIT).await.expect("every member succeeds");
    assert_eq!(
        all,
        (1..=50)
            .map(|s| vec![s, s * 10, s * 100])
            .collect::<Vec<_>>()
    );
    assert!(
        group.ready().await.unwrap()
            && group.successful().await.unwrap()
            && !group.failed().await.unwrap()
    );
    assert_eq!(group.completed_count().await.unwrap(), 50);

    // Slow first member, fast others: the stream yields them as they finish.
    let mixed = celerity::Group::new([
        celerity_it::track.s(("slow".to_owned(), 800)),
        celerity_it::track.s(("fast".to_owned(), 0)),
    ])
    .apply_async(&client)
    .await
    .unwrap();
    let order: Vec<usize> = mixed
        .as_completed(WAIT)
        .map(|(index, outcome)| {
            outcome.expect("both members succeed");
            index
        })
        .collect()
        .await;
    assert_eq!(order, vec![1, 0], "the fast member is yielded first");

    let failing = celerity::Group::new([explode.s((vec![1_i64],)), explode.s((vec![1_i64, 2],))])
        .apply_async(&client)
        .await
        .unwrap();
    match failing.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.message, "cannot transform 1 rows")
        }
        other => panic!("expected the first member's failure, got {other:?}"),
    }
    assert!(failing.failed().await.unwrap() && !failing.successful().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_chain_with_a_group_step_runs_the_group_with_the_previous_result() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;
    let body = serde_json::json!({
        "args": [2],
        "chain": [{"kind": "group", "id": "next-group", "tasks": [
            {"kind": "signature", "id": "next-member", "task": "etl.transform"}
        ]}]
    });
    publish_raw(
        &client,
        &[
            ("Celerity-Version", "1"),
            ("Celerity-Task", "etl.extract"),
            ("Celerity-Id", "head"),
        ],
        &serde_json::to_vec(&body).unwrap(),
    )
    .await;

    let head = client.async_result::<Vec<i64>>("head").unwrap();
    assert_eq!(head.get(WAIT).await.unwrap(), vec![2, 20, 200]);
    let member = client.async_result::<i64>("next-member").unwrap();
    assert_eq!(
        member.get(WAIT).await.unwrap(),
        222,
        "the group member got the head's result"
    );
    wait_until_queue_is_empty(&client, WAIT).await;
}

mod nesting {
    //! Celery's common ETL shapes: canvases inside canvases.

    use celerity::{Chord, Group};
    use celerity_it::{add, extract, sum_all, transform};

    use super::WAIT;
    use crate::support::{WorkerProcess, client, runs_stream, server};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_nesting_shape_runs_with_the_right_results() {
        let server = server();
        let url = server.url();
        runs_stream(&url).await;
        let _worker = WorkerProcess::start(&url, "w1", &["-c", "8"]);
        let client = client(&url).await;

        // A chain inside a group.
        let chains = Group::new([
            celerity::chain![extract.s((1,)), transform.s(())],
            celerity::chain![extract.s((2,)), transform.s(())],
        ])
        .apply_async(&client)
        .await
        .unwrap();
        assert_eq!(chains.get(WAIT).await.unwrap(), vec![111, 222]);

        // A group inside a chain: the next step receives the list.
        let fan = celerity::chain![
            extract.s((1,)),
            Group::new([transform.s(()), transform.s(())]),
            sum_all.s(())
        ]
        .apply_async(&client)
        .await
        .unwrap();
        assert_eq!(fan.get(WAIT).await.unwrap(), 222);

        // A chord whose body is a chain.
        let chord_then = Chord::new(
            (0..10).map(|i| add.s((i, 1))),
            celerity::chain![sum_all.s(()), add.s((5,))],
        )
        .apply_async(&client)
        .await
        .unwrap();
        assert_eq!(chord_then.get(WAIT).await.unwrap(), 60);

        // A chord inside a chain.
        let inner = Chord::new([transform.s(()), transform.s(())], sum_all.s(()));
        let chord_in_chain = celerity::chain![extract.s((3,)), inner, add.s((1,))]
            .apply_async(&client)
            .await
            .unwrap();
        assert_eq!(chord_in_chain.get(WAIT).await.unwrap(), 667);

        // A group of chords.
        let chords = Group::new([
            Chord::new((0..5).map(|i| add.s((i, 1))), sum_all.s(())),
            Chord::new((5..10).map(|i| add.s((i, 1))), sum_all.s(())),
        ])
        .apply_async(&client)
        .await
        .unwrap();
        assert_eq!(chords.get(WAIT).await.unwrap(), vec![15, 40]);

        // A chord whose header members are chains.
        let chained_header = Chord::new(
            [
                celerity::chain![extract.s((1,)), transform.s(())],
                celerity::chain![extract.s((2,)), transform.s(())],
            ],
            sum_all.s(()),
        )
        .apply_async(&client)
        .await
        .unwrap();
        assert_eq!(chained_header.get(WAIT).await.unwrap(), 333);

        // A chain may not end with a group (its results have no single record).
        let refused = celerity::chain![extract.s((1,)), Group::new([transform.s(())])]
            .apply_async(&client)
            .await;
        assert!(refused.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_canvas_after_a_task_fails_its_steps_instead_of_retrying_forever() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;
    // A group followed by a step runs as a chord, whose members' ids must be `<group id>-<i>`.
    let body = serde_json::json!({
        "args": [2],
        "chain": [
            {"kind": "group", "id": "g", "tasks": [{"kind": "signature", "id": "wrong-id", "task": "etl.transform"}]},
            {"kind": "signature", "id": "after-group", "task": "it.total"}
        ]
    });
    publish_raw(
        &client,
        &[
            ("Celerity-Version", "1"),
            ("Celerity-Task", "etl.extract"),
            ("Celerity-Id", "bad-head"),
        ],
        &serde_json::to_vec(&body).unwrap(),
    )
    .await;
    let after = client.async_result::<i64>("after-group").unwrap();
    match after.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => assert_eq!(error.kind, "celerity::InvalidCanvas"),
        other => panic!("expected an invalid-canvas failure, got {other:?}"),
    }
    wait_until_queue_is_empty(&client, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_starmap_and_chunks_run_a_task_over_many_items() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &["-c", "4"]);
    let client = client(&server.url()).await;

    let mapped = extract
        .map([1_i64, 2, 3])
        .apply_async(&client)
        .await
        .unwrap();
    assert_eq!(
        mapped.get(WAIT).await.unwrap(),
        vec![vec![1, 10, 100], vec![2, 20, 200], vec![3, 30, 300]]
    );

    let starmapped = celerity_it::add
        .starmap([(1_i64, 2_i64), (3, 4)])
        .apply_async(&client)
        .await
        .unwrap();
    assert_eq!(starmapped.get(WAIT).await.unwrap(), vec![3, 7]);

    let chunks = celerity_it::add
        .chunks((0..1000_i64).map(|i| (i, i)), 100)
        .apply_async(&client)
        .await
        .unwrap();
    let batches = chunks.get(WAIT).await.unwrap();
    assert_eq!(batches.len(), 10, "1,000 items in batches of 100");
    assert!(batches.iter().all(|batch| batch.len() == 100));
    assert_eq!(
        batches.concat(),
        (0..1000).map(|i| 2 * i).collect::<Vec<i64>>()
    );

    // An item that does not fit the task's parameters fails the map with its index.
    let bad = extract
        .map([serde_json::json!(1), serde_json::json!("x")])
        .apply_async(&client)
        .await
        .unwrap();
    assert!(matches!(
        bad.get(WAIT).await,
        Err(ResultError::Failed { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_on_a_result_inside_a_task_is_refused_unless_allowed() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &["-c", "2"]);
    let client = client(&server.url()).await;

    let refused = celerity_it::wait_inside
        .delay(&client, 4, false)
        .await
        .unwrap();
    match refused.get(WAIT).await {
        Err(ResultError::Failed { error, .. }) => assert!(
            error.message.contains("can deadlock the workers"),
            "{}",
            error.message
        ),
        other => panic!("expected the guard's error, got {other:?}"),
    }
    let allowed = celerity_it::wait_inside
        .delay(&client, 4, true)
        .await
        .unwrap();
    assert_eq!(allowed.get(WAIT).await.unwrap(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canvas_nested_too_deep_is_dead_lettered_before_the_task_runs() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &[]);
    let client = client(&server.url()).await;
    let mut node = serde_json::json!({"kind": "signature", "id": "leaf", "task": "etl.transform"});
    for level in 0..40 {
        node = serde_json::json!({"kind": "group", "id": format!("g{level}"), "tasks": [node]});
    }
    let body = serde_json::json!({"args": [1], "chain": [node]});
    publish_raw(
        &client,
        &[
            ("Celerity-Version", "1"),
            ("Celerity-Task", "etl.extract"),
            ("Celerity-Id", "deep"),
        ],
        &serde_json::to_vec(&body).unwrap(),
    )
    .await;
    let deep = client.async_result::<Vec<i64>>("deep").unwrap();
    dead_lettered(deep.get(WAIT).await, "invalid_canvas");
}

/// The error of a task that failed because it was dead-lettered with reason `code`.
pub(crate) fn dead_lettered<T: std::fmt::Debug>(
    outcome: Result<T, ResultError>,
    code: &str,
) -> celerity::ErrorRecord {
    match outcome {
        Err(ResultError::Failed { error, .. }) => {
            assert_eq!(error.kind, "celerity::DeadLettered");
            let prefix = format!("{code}: ");
            assert!(error.message.starts_with(&prefix), "{}", error.message);
            error
        }
        other => panic!("expected a task dead-lettered with {code}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canvas_deadline_stops_members_that_would_start_after_it() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &["-c", "1"]);
    let client = client(&server.url()).await;

    // The first step outlives the deadline, so the second would start after it.
    let chain = celerity::chain![
        celerity_it::slow_add.s((1, 1, 1500)),
        celerity_it::add.s((1,)),
        celerity_it::add.s((1,))
    ]
    .deadline(Duration::from_millis(700))
    .apply_async(&client)
    .await
    .unwrap();
    match chain.get(WAIT).await {
        Err(ResultError::Revoked { meta, .. }) => assert_eq!(
            meta.as_ref().map(|meta| meta["reason"].clone()),
            Some(serde_json::json!("expired"))
        ),
        other => panic!("expected the chain to be revoked by its deadline, got {other:?}"),
    }
    let second = chain.parent().expect("the second step");
    assert_eq!(second.state().await.unwrap(), TaskState::Revoked);
    let first = second.parent().expect("the first step");
    assert_eq!(
        first.get(WAIT).await.unwrap(),
        serde_json::json!(2),
        "the first step started in time and finished"
    );

    // A chord whose members queue past the deadline on one slot fails instead of waiting forever.
    let chord = celerity::Chord::new(
        (0..6).map(|i| celerity_it::slow_add.s((i, 1, 300))),
        celerity_it::sum_all.s(()),
    )
    .deadline(Duration::from_millis(500))
    .apply_async(&client)
    .await
    .unwrap();
    assert!(
        matches!(chord.get(WAIT).await, Err(ResultError::Failed { .. })),
        "the chord fails once members expire"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_running_chain_stops_it_and_a_revoked_group_never_runs() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let client = client(&url).await;

    // A group revoked while queued: a worker started afterwards does not run it.
    let group = celerity::Group::new((0..5).map(|i| celerity_it::add.s((i, 1))))
        .apply_async(&client)
        .await
        .unwrap();
    group.revoke().await.unwrap();
    let worker = WorkerProcess::start(&url, "w1", &["-c", "2"]);
    for member in group.results() {
        match member.get(WAIT).await {
            Err(ResultError::Revoked { meta, .. }) => {
                assert_eq!(meta.unwrap()["reason"], "revoked")
            }
            other => panic!("expected a revoked member, got {other:?}"),
        }
    }

    // A chain revoked while its first step runs: the step finishes, nothing after it runs.
    let chain = celerity::chain![
        celerity_it::hold.s(()),
        celerity_it::headers.si(()),
        celerity_it::headers.si(())
    ]
    .apply_async(&client)
    .await
    .unwrap();
    let first = chain
        .parent()
        .and_then(|second| second.parent())
        .expect("the first step")
        .clone();
    eventually("the first step starts", WAIT, || async {
        first.state().await.unwrap() == TaskState::Started
    })
    .await;
    chain.revoke().await.unwrap();
    // Workers learn revocations through a watch: wait until this one has.
    let root = first.id().to_string();
    worker.wait_for_log(&format!("revocation received id={root}"), WAIT);
    crate::support::release_held(&client, &url, first.id().as_str(), WAIT).await;
    assert_eq!(
        first.get(WAIT).await.unwrap(),
        serde_json::json!(first.id().to_string())
    );
    match chain.get(WAIT).await {
        Err(ResultError::Revoked { meta, .. }) => assert_eq!(meta.unwrap()["reason"], "revoked"),
        other => panic!("expected the rest of the chain to be revoked, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_errback_whose_publish_failed_is_sent_when_the_task_comes_back() {
    let server = server();
    let url = server.url();
    let runs = runs_stream(&url).await;
    let _worker = WorkerProcess::start(&url, "w1", &["--ack-wait", "2"]);
    let client = client(&url).await;
    let js = async_nats::jetstream::new(client.nats().clone());
    // Another stream holds the errback queue's subjects, so the server refuses to make the
    // queue's stream and the errback cannot be published.
    let blocker = async_nats::jetstream::stream::Config {
        name: "BLOCKER".into(),
        subjects: vec!["celerity.q.errbacks.>".into()],
        ..Default::default()
    };
    js.create_stream(blocker)
        .await
        .expect("the blocking stream");

    let failed = explode
        .s((vec![1_i64],))
        .link_error(record_failure.s(()).queue("errbacks"))
        .apply_async(&client)
        .await
        .expect("the task is sent");
    assert!(matches!(
        failed.get(WAIT).await,
        Err(ResultError::Failed { .. })
    ));
    // Not acknowledged, as when a success callback cannot be sent: the server delivers it again.
    let queue = js.get_stream("CELERITY_Q_default").await.unwrap();
    eventually("the task's message is delivered again", WAIT, || async {
        let info = queue.consumer_info("p0").await;
        info.is_ok_and(|info| info.num_redelivered >= 1)
    })
    .await;

    js.delete_stream("BLOCKER")
        .await
        .expect("remove the blocker");
    eventually("the errback reaches its queue", WAIT, || async {
        match js.get_stream("CELERITY_Q_errbacks").await {
            Ok(mut errbacks) => errbacks
                .info()
                .await
                .is_ok_and(|info| info.state.messages == 1),
            Err(_) => false,
        }
    })
    .await;
    let _errback_worker = WorkerProcess::start(&url, "w2", &["-Q", "errbacks"]);
    eventually("the errback runs with the failed task's id", WAIT, || {
        let runs = runs.clone();
        let failed = failed.id().to_string();
        async move {
            runs.get_last_raw_message_by_subject("it.runs.errback")
                .await
                .is_ok_and(|message| message.payload == failed.as_bytes())
        }
    })
    .await;
    wait_until_queue_is_empty(&client, WAIT).await;
}
