//! The control plane: ping and revoke, to one worker or all, with a deadline.

use std::time::Duration;

use celerity::{ControlError, ResultError, RevokeMode, TaskState};

use crate::support::{WorkerProcess, client, eventually, runs_stream, server};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_reaches_live_workers_and_names_a_missing_one() {
    let server = server();
    let url = server.url();
    let _w1 = WorkerProcess::start(&url, "w1", &[]);
    let _w2 = WorkerProcess::start(&url, "w2", &[]);
    let dead = WorkerProcess::start(&url, "dead", &[]);
    dead.signal(libc::SIGKILL);
    drop(dead);
    let client = client(&url).await;

    let mut replies = client
        .control()
        .ping(None, Duration::from_millis(500))
        .await
        .unwrap();
    replies.sort_by(|a, b| a.worker.cmp(&b.worker));
    let workers: Vec<&str> = replies.iter().map(|reply| reply.worker.as_str()).collect();
    assert_eq!(
        workers,
        vec!["w1", "w2"],
        "live workers answer before the deadline, the dead one does not"
    );
    assert!(replies.iter().all(|reply| reply.ok));

    let one = client.control().ping(Some("w1"), WAIT).await.unwrap();
    assert_eq!(one[0].worker, "w1");
    let missing = client
        .control()
        .ping(Some("dead"), Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, ControlError::UnknownDestination(ref name) if name == "dead"),
        "{missing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_skips_a_queued_task_even_on_a_worker_started_later_and_terminates_a_running_one() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let client = client(&url).await;

    // Queued with no worker running, revoked, then a worker starts: the task never runs.
    let queued = celerity_it::add.delay(&client, 1, 2).await.unwrap();
    client
        .control()
        .revoke(
            queued.id().as_str(),
            RevokeMode::Skip,
            None,
            Duration::from_millis(200),
        )
        .await
        .unwrap();
    let worker = WorkerProcess::start(&url, "w1", &["-c", "1"]);
    match queued.get(WAIT).await {
        Err(ResultError::Revoked { meta, .. }) => assert_eq!(meta.unwrap()["reason"], "revoked"),
        other => panic!("expected the queued task to be revoked, got {other:?}"),
    }

    // A running task is aborted with --terminate, and the worker goes on.
    let running = celerity_it::hold.delay(&client).await.unwrap();
    eventually("the task runs", WAIT, || async {
        crate::support::run_counts(&url)
            .await
            .contains_key(running.id().as_str())
    })
    .await;
    let replies = client
        .control()
        .revoke(
            running.id().as_str(),
            RevokeMode::Terminate,
            Some("w1"),
            WAIT,
        )
        .await
        .unwrap();
    let result = replies[0].result_as::<celerity_proto::RevokeResult>();
    assert!(result.unwrap().unwrap().terminated, "{replies:?}");
    eventually("the task is revoked", WAIT, || async {
        running.state().await.unwrap() == TaskState::Revoked
    })
    .await;
    assert_eq!(
        running.record().await.unwrap().unwrap().meta.unwrap()["reason"],
        "terminated"
    );
    assert_eq!(
        celerity_it::add
            .delay(&client, 2, 2)
            .await
            .unwrap()
            .get(WAIT)
            .await
            .unwrap(),
        4,
        "the worker goes on"
    );

    // The same from the result handle, as Celery's `result.revoke(terminate=True)`.
    let running = celerity_it::hold.delay(&client).await.unwrap();
    eventually("the task runs", WAIT, || async {
        crate::support::run_counts(&url)
            .await
            .contains_key(running.id().as_str())
    })
    .await;
    // A wait already under way ends with the termination, not at its own (long) timeout: the
    // REVOKED record is notified like any final record.
    let waiting = tokio::spawn({
        let running = running.clone();
        async move { running.get(Duration::from_secs(3600)).await }
    });
    assert!(running.terminate(Duration::from_millis(500)).await.unwrap());
    let ended = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the wait ends when the task is terminated")
        .unwrap();
    match ended {
        Err(ResultError::Revoked { meta, .. }) => {
            assert_eq!(meta.unwrap()["reason"], "terminated")
        }
        other => panic!("expected the running task to be terminated, got {other:?}"),
    }
    drop(worker);
}
