//! Signals: the app's hooks run at each moment of a task's and a worker's life, in the worker
//! process and in the producer; a hook that panics or fails changes nothing for its task.

use std::time::Duration;

use celerity::{RevokeMode, TaskState};

use crate::support::{WorkerProcess, client, eventually, publish_raw, runs_stream, server};

const WAIT: Duration = Duration::from_secs(20);

/// The payloads recorded for `signal` (`it.runs.signal.<signal>`), in order.
async fn recorded(url: &str, signal: &str) -> Vec<String> {
    let mut stream = runs_stream(url).await;
    let n_messages = stream.info().await.expect("stream info").state.messages;
    let subject = format!("it.runs.signal.{signal}");
    let mut payloads = Vec::new();
    for sequence in 1..=n_messages {
        if let Ok(message) = stream.get_raw_message(sequence).await
            && message.subject.as_str() == subject
        {
            payloads.push(String::from_utf8_lossy(&message.payload).into_owned());
        }
    }
    payloads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signal_runs_where_its_moment_happens_and_a_failing_hook_changes_nothing() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let signals = [("IT_RECORD_SIGNALS", "1")];
    let mut worker = WorkerProcess::spawn(&url, "sig", &[], &signals);
    worker.wait_for_log("answering control requests", WAIT);
    // SAFETY: set before the producer's app is built, while no other thread reads them.
    unsafe {
        std::env::set_var("IT_RECORD_SIGNALS", "1");
        std::env::set_var("IT_NATS_URL", &url);
    }
    let client = client(&url).await;

    let added = celerity_it::add.delay(&client, 2, 3).await.unwrap();
    assert_eq!(added.get(WAIT).await.unwrap(), 5);
    let options = celerity::ApplyOptions::new().task_id("unlucky-1");
    let unlucky = celerity_it::add
        .apply_async(&client, (13, 1), options)
        .await
        .unwrap();
    assert_eq!(
        unlucky.get(WAIT).await.unwrap(),
        14,
        "a panicking prerun hook and a failing success hook do not fail the task"
    );
    let failed = celerity_it::fail.delay(&client, "no".into()).await.unwrap();
    assert!(failed.get(WAIT).await.is_err());
    let retried = celerity_it::retry_once_later.delay(&client).await.unwrap();
    retried.get(WAIT).await.unwrap();
    let revoked = celerity_it::add
        .apply_async(
            &client,
            (1, 1),
            celerity::ApplyOptions::new().countdown(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    client
        .control()
        .revoke(revoked.id().as_str(), RevokeMode::Skip, None, WAIT)
        .await
        .unwrap();
    assert_eq!(revoked.wait(WAIT).await.unwrap().state, TaskState::Revoked);
    let headers = [
        ("Celerity-Version", "1"),
        ("Celerity-Task", "it.nobody_has_this"),
        ("Celerity-Id", "rejected-1"),
    ];
    publish_raw(&client, &headers, br#"{"args":[],"kwargs":{}}"#).await;

    let (add_id, fail_id, retry_id, revoked_id) = (
        added.id().to_string(),
        failed.id().to_string(),
        retried.id().to_string(),
        revoked.id().to_string(),
    );
    eventually(
        "the rejection and a heartbeat are recorded",
        WAIT,
        || async {
            !recorded(&url, "task_rejected").await.is_empty()
                && !recorded(&url, "worker_heartbeat").await.is_empty()
        },
    )
    .await;
    let prerun = recorded(&url, "task_prerun").await;
    for id in [&add_id, &fail_id, &retry_id] {
        assert!(prerun.contains(id), "no task_prerun for {id}: {prerun:?}");
    }
    assert!(!prerun.contains(&revoked_id), "a revoked task never starts");
    let postrun = recorded(&url, "task_postrun").await;
    for expected in [
        format!("{add_id} SUCCESS"),
        format!("{fail_id} FAILURE"),
        format!("{retry_id} RETRY"),
        format!("{retry_id} SUCCESS"),
    ] {
        assert!(postrun.contains(&expected), "{expected} not in {postrun:?}");
    }
    let success = recorded(&url, "task_success").await;
    assert!(success.contains(&add_id) && success.contains(&"unlucky-1".to_owned()));
    assert_eq!(
        recorded(&url, "task_failure").await,
        std::slice::from_ref(&fail_id)
    );
    assert_eq!(
        recorded(&url, "task_retry").await,
        std::slice::from_ref(&retry_id)
    );
    assert_eq!(
        recorded(&url, "task_revoked").await,
        [format!("{revoked_id} revoked")]
    );
    assert_eq!(
        recorded(&url, "task_rejected").await,
        ["rejected-1 unknown_task"]
    );
    assert_eq!(recorded(&url, "worker_ready").await, ["sig"]);
    // The producer's publishes and the worker's (the retry) both run the publish hooks.
    let before = recorded(&url, "before_task_publish").await;
    let after = recorded(&url, "after_task_publish").await;
    assert!(before.contains(&add_id) && after.contains(&add_id));
    assert_eq!(
        after.iter().filter(|id| **id == retry_id).count(),
        2,
        "the producer's send and the worker's retry: {after:?}"
    );
    assert!(
        worker.log().contains("a signal hook panicked")
            && worker.log().contains("a signal hook failed"),
        "both are logged"
    );

    worker.signal(libc::SIGTERM);
    assert!(worker.wait_exit(WAIT).success());
    eventually("worker_shutdown is recorded", WAIT, || async {
        recorded(&url, "worker_shutdown").await == ["sig"]
    })
    .await;
}
