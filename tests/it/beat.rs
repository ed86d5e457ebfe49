//! Periodic tasks: two schedulers with a failover (no tick twice, none missed), a missed tick after
//! downtime sent once, a tick sent before (its record stored) not sent again, and a bad schedule
//! file refused at startup.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::{WorkerProcess, client, eventually, run_counts, runs_stream, server};

const WAIT: Duration = Duration::from_secs(30);

/// A schedule file with one entry, `tick`, sending `it.track("beat", 0)` every `every`.
fn schedule_file(every: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("beat.toml");
    std::fs::write(
        &path,
        format!(
            "[[entry]]\nname = \"tick\"\ntask = \"it.track\"\nevery = \"{every}\"\nargs = [\"beat\", 0]\n"
        ),
    )
    .expect("the schedule file is written");
    let path = path.display().to_string();
    (dir, path)
}

/// The ticks that ran, with how often each ran.
async fn ticks(url: &str) -> BTreeMap<u64, usize> {
    run_counts(url)
        .await
        .into_iter()
        .filter_map(|(id, count)| {
            let tick = id.strip_prefix("beat-tick-")?.parse().ok()?;
            Some((tick, count))
        })
        .collect()
}

async fn leader(client: &celerity::Client) -> Option<String> {
    let status = celerity::beat::status(client)
        .await
        .expect("the beat bucket is read");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as u64;
    status
        .leader
        .filter(|lease| lease.until_ms >= now)
        .map(|lease| lease.holder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_scheduler_takes_over_without_a_double_or_missed_tick() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let (_dir, schedule) = schedule_file("4s");
    let beat_args = ["--schedule", schedule.as_str(), "--beat-lease", "2"];
    let mut b1 = Some(WorkerProcess::start(&url, "b1", &beat_args));
    let mut b2 = Some(WorkerProcess::start(&url, "b2", &beat_args));
    let client = client(&url).await;

    eventually("a first tick runs", WAIT, || async {
        !ticks(&url).await.is_empty()
    })
    .await;
    let first_leader = leader(&client).await.expect("a scheduler holds the lease");
    let (killed, survivor) = if first_leader == "b1" {
        (&mut b1, "b2")
    } else {
        (&mut b2, "b1")
    };
    killed.as_ref().unwrap().signal(libc::SIGKILL);
    let killed_at = Instant::now();
    drop(killed.take());
    eventually("the standby takes the lease", WAIT, || async {
        leader(&client).await.as_deref() == Some(survivor)
    })
    .await;
    let failover = killed_at.elapsed();
    eprintln!("beat failover: {} ms", failover.as_millis());
    assert!(
        failover < Duration::from_secs(4),
        "within the lease and a candidate round: {failover:?}"
    );

    // Three more ticks on the survivor.
    let before = ticks(&url).await.len();
    eventually("three more ticks run", WAIT, || async {
        ticks(&url).await.len() >= before + 3
    })
    .await;
    let ran = ticks(&url).await;
    assert!(
        ran.values().all(|count| *count == 1),
        "no tick twice: {ran:?}"
    );
    let times: Vec<u64> = ran.keys().copied().collect();
    assert!(
        times.windows(2).all(|pair| pair[1] - pair[0] == 4000),
        "no tick missed across the failover: {times:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_missed_during_downtime_runs_once() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let (_dir, schedule) = schedule_file("2s");
    let beat_args = ["--schedule", schedule.as_str(), "--beat-lease", "2"];
    let worker = WorkerProcess::start(&url, "b1", &beat_args);

    eventually("a first tick runs", WAIT, || async {
        !ticks(&url).await.is_empty()
    })
    .await;
    worker.signal(libc::SIGKILL);
    drop(worker);
    let last_before = *ticks(&url).await.keys().last().unwrap();
    // Downtime of three ticks and more: the scenario itself, not a wait for an event.
    tokio::time::sleep(Duration::from_millis(7_000)).await;
    let restarted_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let _worker = WorkerProcess::start(&url, "b1", &beat_args);
    eventually("ticks run again", WAIT, || async {
        ticks(&url).await.keys().any(|tick| *tick > restarted_at_ms)
    })
    .await;
    let ran = ticks(&url).await;
    let missed: Vec<u64> = ran
        .keys()
        .copied()
        .filter(|tick| *tick > last_before && *tick <= restarted_at_ms)
        .collect();
    assert_eq!(
        missed.len(),
        1,
        "of the ticks missed while down, only the latest runs: {ran:?}"
    );
    assert!(
        missed[0] + 2000 > restarted_at_ms,
        "it is the latest one: {missed:?}"
    );
    assert!(ran.values().all(|count| *count == 1), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_with_a_stored_record_is_not_sent_again() {
    // A scheduler that sent a tick and died before recording it, with the queue stream's 2-minute
    // duplicate window long gone: the tick's record (PENDING, written at publish) is all there is.
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let (_dir, schedule) = schedule_file("1h");
    let beat_args = ["--schedule", schedule.as_str(), "--beat-lease", "2"];
    let worker = WorkerProcess::start(&url, "b1", &beat_args);
    let client = client(&url).await;
    eventually("the entry's state is recorded", WAIT, || async {
        !celerity::beat::status(&client)
            .await
            .expect("the beat bucket is read")
            .entries
            .is_empty()
    })
    .await;
    worker.signal(libc::SIGKILL);
    drop(worker);

    let layout = celerity_proto::Layout::new(celerity_proto::Namespace::default());
    let js = async_nats::jetstream::new(async_nats::connect(url.as_str()).await.expect("connect"));
    let beat = js
        .get_key_value(layout.beat_bucket())
        .await
        .expect("the beat bucket");
    let key = celerity_proto::beat_entry_key("tick");
    let stored = beat.get(key.as_str()).await.expect("read").expect("stored");
    let mut state: celerity_proto::BeatEntryState =
        serde_json::from_slice(&stored).expect("an entry state");
    // The last recorded tick is an hour and a bit ago: the next one is due now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as u64;
    state.anchor_ms = now - 3_600_000 - 5_000;
    state.last_tick_ms = state.anchor_ms;
    let due = state.anchor_ms + 3_600_000;
    beat.put(
        key.as_str(),
        serde_json::to_vec(&state).expect("json").into(),
    )
    .await
    .expect("the state is rewritten");
    let sent_id = celerity_proto::beat_task_id("tick", due);
    let results = js
        .get_key_value(layout.results_bucket())
        .await
        .expect("the results bucket");
    let pending = celerity_proto::ResultRecord::new(
        celerity_proto::TaskId::new(sent_id.clone()).expect("a valid id"),
        celerity::TaskState::Pending,
        now,
    );
    results
        .put(
            sent_id.as_str(),
            serde_json::to_vec(&pending).expect("json").into(),
        )
        .await
        .expect("the record is stored");

    let _worker = WorkerProcess::start(&url, "b1", &beat_args);
    eventually("the due tick is recorded as sent", WAIT, || async {
        celerity::beat::status(&client)
            .await
            .expect("the beat bucket is read")
            .entries
            .iter()
            .any(|entry| entry.last_tick_ms == due)
    })
    .await;
    // Had the tick been sent, it would be queued before this task and run no later.
    let marker = celerity_it::track
        .delay(&client, "marker".into(), 0)
        .await
        .expect("track is sent");
    marker.wait(WAIT).await.expect("the marker runs");
    assert!(
        ticks(&url).await.is_empty(),
        "the tick was sent again: {:?}",
        run_counts(&url).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_schedule_file_is_refused_with_the_value() {
    let server = server();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("beat.toml");
    std::fs::write(
        &path,
        "[[entry]]\nname = \"nightly\"\ntask = \"it.add\"\ncron = \"0 25 * * *\"\n",
    )
    .unwrap();
    let path = path.display().to_string();
    let mut worker = WorkerProcess::spawn(&url, "b1", &["--schedule", path.as_str()], &[]);
    let status = worker.wait_exit(WAIT);
    assert_eq!(status.code(), Some(2), "a usage error");
    let log = worker.log();
    assert!(log.contains("\"0 25 * * *\""), "{log}");
}
