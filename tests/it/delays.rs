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
    assert!(
        matches!(error, EnqueueError::InvalidOption { option: "eta", .. }),
        "{error}"
    );
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
