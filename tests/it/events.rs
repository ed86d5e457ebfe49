//! Events: task events (sent, received, started, succeeded, failed, retried, rejected) and worker
//! events (online, heartbeat, offline) followed live, read back after the worker is gone, and
//! tailed by `celerity events` with filters; `--without-events` leaves out the task events.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use celerity::StreamExt as _;
use celerity::events::{Event, EventStream, Since};
use celerity_proto::{TaskEventKind, WorkerEventKind};

use crate::support::{WorkerProcess, celerity_cli, client, publish_raw, server};

const WAIT: Duration = Duration::from_secs(20);

/// Reads events from `stream` until `done` says the ones read so far are enough.
async fn read_until(
    stream: &mut EventStream,
    what: &str,
    mut done: impl FnMut(&[Event]) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    let read = async {
        while !done(&seen) {
            match stream.next().await {
                Some(Ok(event)) => seen.push(event),
                Some(Err(error)) => panic!("reading events: {error}"),
                None => panic!("the event stream ended"),
            }
        }
    };
    if tokio::time::timeout(WAIT, read).await.is_err() {
        panic!("{what} never came within {WAIT:?}; events seen: {seen:#?}");
    }
    seen
}

/// The kinds of the task events of `task_id`, in the order they happened: the stream holds each
/// emitter's events in order, and the batches of different emitters in the order they were
/// stored; the producer's `task-sent` comes before anything a worker says of the task.
fn kinds_of(events: &[Event], task_id: &str) -> Vec<TaskEventKind> {
    let of_task = |from_producer: bool| {
        events.iter().filter_map(move |event| match event {
            Event::Task { hostname, event }
                if event.task_id == task_id
                    && hostname.starts_with("celerity-client@") == from_producer =>
            {
                Some(event.kind)
            }
            _ => None,
        })
    };
    of_task(true).chain(of_task(false)).collect()
}

fn worker_kinds(events: &[Event], hostname: &str) -> Vec<WorkerEventKind> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Worker(event) if event.hostname == hostname => Some(event.kind),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_and_worker_events_are_followed_live_and_read_back_after_the_worker_stops() {
    let server = server();
    let url = server.url();
    let mut worker = WorkerProcess::start(&url, "w1", &[]);
    let client = client(&url).await;
    let mut live = client.events(Since::Start).await.unwrap();

    let added = celerity_it::add.delay(&client, 2, 3).await.unwrap();
    assert_eq!(added.get(WAIT).await.unwrap(), 5);
    let failed = celerity_it::fail
        .delay(&client, "declined".into())
        .await
        .unwrap();
    assert!(failed.get(WAIT).await.is_err());
    let retried = celerity_it::retry_once_later.delay(&client).await.unwrap();
    retried.get(WAIT).await.unwrap();
    // A message no worker can run: dead-lettered, and a task-rejected event says why.
    let headers = [
        ("Celerity-Version", "1"),
        ("Celerity-Task", "it.nobody_has_this"),
        ("Celerity-Id", "rejected-1"),
        ("Nats-Msg-Id", "rejected-1"),
    ];
    publish_raw(&client, &headers, br#"{"args":[],"kwargs":{}}"#).await;

    let (add_id, fail_id, retry_id) = (
        added.id().to_string(),
        failed.id().to_string(),
        retried.id().to_string(),
    );
    let seen = read_until(
        &mut live,
        "every task's last event and a heartbeat",
        |seen| {
            kinds_of(seen, &add_id).contains(&TaskEventKind::Succeeded)
                && kinds_of(seen, &fail_id).contains(&TaskEventKind::Failed)
                && kinds_of(seen, &retry_id).contains(&TaskEventKind::Succeeded)
                && kinds_of(seen, "rejected-1").contains(&TaskEventKind::Rejected)
                && worker_kinds(seen, "w1").contains(&WorkerEventKind::Heartbeat)
        },
    )
    .await;
    use TaskEventKind::*;
    assert_eq!(
        kinds_of(&seen, &add_id),
        [Sent, Received, Started, Succeeded]
    );
    assert_eq!(kinds_of(&seen, &fail_id), [Sent, Received, Started, Failed]);
    assert_eq!(
        kinds_of(&seen, &retry_id),
        [
            Sent, Received, Started, Sent, Retried, Received, Started, Succeeded
        ],
        "the worker sends the retry (task-sent) before it says task-retried"
    );
    let by_kind: HashMap<TaskEventKind, &celerity_proto::TaskEvent> = seen
        .iter()
        .filter_map(|event| match event {
            Event::Task { hostname, event } if event.task_id == add_id => {
                assert_eq!(hostname.starts_with("celerity-client@"), event.kind == Sent);
                Some((event.kind, event))
            }
            _ => None,
        })
        .collect();
    assert_eq!(by_kind[&Sent].queue.as_deref(), Some("default"));
    assert_eq!(by_kind[&Received].delivered, Some(1));
    assert!(by_kind[&Started].wait_ms.is_some());
    assert!(by_kind[&Succeeded].runtime_ms.is_some());
    let rejected = seen
        .iter()
        .find_map(|event| match event {
            Event::Task { event, .. } if event.kind == Rejected => Some(event),
            _ => None,
        })
        .unwrap();
    assert_eq!(rejected.reason.as_deref(), Some("unknown_task"));
    assert_eq!(rejected.task, "it.nobody_has_this");
    let failure = seen
        .iter()
        .find_map(|event| match event {
            Event::Task { event, .. } if event.kind == Failed => event.error.clone(),
            _ => None,
        })
        .unwrap();
    assert!(failure.message.contains("declined"), "{failure:?}");
    let heartbeat = seen
        .iter()
        .find_map(|event| match event {
            Event::Worker(event) if event.kind == WorkerEventKind::Heartbeat => Some(event),
            _ => None,
        })
        .unwrap();
    assert_eq!(heartbeat.queues, ["default"]);
    assert!(heartbeat.processed >= 5, "{heartbeat:?}");
    assert_eq!(heartbeat.active, 0);

    // The worker stops: it says so, and everything stays readable afterwards.
    worker.signal(libc::SIGTERM);
    assert!(worker.wait_exit(WAIT).success());
    let mut replay = client.events(Since::Start).await.unwrap();
    let replayed = read_until(&mut replay, "the worker's offline event", |seen| {
        worker_kinds(seen, "w1").contains(&WorkerEventKind::Offline)
    })
    .await;
    let kinds = worker_kinds(&replayed, "w1");
    assert_eq!(kinds.first(), Some(&WorkerEventKind::Online));
    assert_eq!(kinds.last(), Some(&WorkerEventKind::Offline));
    assert_eq!(
        kinds_of(&replayed, &add_id),
        [Sent, Received, Started, Succeeded]
    );

    // `celerity events` reads them back with filters, as text or JSON lines.
    let run = |args: &[&str]| {
        let output = Command::new(celerity_cli())
            .args([
                "events",
                "--since",
                "all",
                "--no-follow",
                "--nats-url",
                &url,
            ])
            .args(args)
            .output()
            .expect("celerity events runs");
        assert!(
            output.status.success(),
            "celerity events {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let json = run(&["--json", "--task", "it.add"]);
    let mut lines: Vec<serde_json::Value> = json
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    // The producer's task-sent first, then the worker's events in the order it sent them.
    lines.sort_by_key(|line| {
        let from_producer = line["hostname"]
            .as_str()
            .is_some_and(|hostname| hostname.starts_with("celerity-client@"));
        !from_producer
    });
    let types: Vec<&str> = lines
        .iter()
        .map(|line| line["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "task-sent",
            "task-received",
            "task-started",
            "task-succeeded"
        ]
    );
    assert!(lines.iter().all(|line| line["task_id"] == add_id.as_str()));
    assert_eq!(lines[3]["hostname"], "w1");
    assert!(
        lines[0]["hostname"]
            .as_str()
            .unwrap()
            .starts_with("celerity-client@")
    );
    let failures = run(&["--state", "FAILURE"]);
    let failure_lines: Vec<&str> = failures.lines().collect();
    assert_eq!(failure_lines.len(), 2, "{failures}");
    assert!(failure_lines.iter().any(|line| line.contains("task-failed")
        && line.contains(&fail_id)
        && line.contains("declined")));
    assert!(
        failure_lines
            .iter()
            .any(|line| line.contains("task-rejected") && line.contains("reason=unknown_task"))
    );
    let workers = run(&["--worker", "w1"]);
    assert!(workers.contains("worker-online") && workers.contains("worker-offline"));
    assert!(
        workers
            .lines()
            .all(|line| line.split_whitespace().any(|token| token == "w1")),
        "only w1's events: {workers}"
    );
    let bad = Command::new(celerity_cli())
        .args(["events", "--state", "DONE", "--nats-url", &url])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unknown state \"DONE\""),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_events_sends_its_worker_events_but_no_task_events() {
    let server = server();
    let url = server.url();
    let _worker = WorkerProcess::start(&url, "quiet", &["--without-events"]);
    let client = client(&url).await;
    let mut live = client.events(Since::Start).await.unwrap();
    let added = celerity_it::add.delay(&client, 1, 1).await.unwrap();
    assert_eq!(added.get(WAIT).await.unwrap(), 2);
    let id = added.id().to_string();
    let seen = read_until(&mut live, "a heartbeat after the task", |seen| {
        let sent = seen.iter().position(|event| {
            matches!(event, Event::Task { event, .. } if event.task_id == id)
        });
        let beat = seen.iter().rposition(|event| {
            matches!(event, Event::Worker(event) if event.kind == WorkerEventKind::Heartbeat && event.processed >= 1)
        });
        matches!((sent, beat), (Some(_), Some(_)))
    })
    .await;
    assert_eq!(kinds_of(&seen, &id), [TaskEventKind::Sent]);
    assert_eq!(
        worker_kinds(&seen, "quiet").first(),
        Some(&WorkerEventKind::Online)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_an_event_is_reported_and_the_reader_goes_on() {
    let server = server();
    let url = server.url();
    let _worker = WorkerProcess::start(&url, "w1", &[]);
    let client = client(&url).await;
    let js = async_nats::jetstream::new(client.nats().clone());
    js.publish("celerity.events.task.intruder", "not json".into())
        .await
        .expect("publish")
        .await
        .expect("the events stream stores it");
    let mut events = client.events(Since::Start).await.unwrap();
    let mut saw_error = false;
    let read = async {
        while let Some(next) = events.next().await {
            match next {
                Err(celerity::events::EventError::Decode { subject, .. }) => {
                    assert_eq!(subject, "celerity.events.task.intruder");
                    saw_error = true;
                }
                Err(error) => panic!("unexpected error: {error}"),
                Ok(Event::Worker(event))
                    if saw_error && event.kind == WorkerEventKind::Heartbeat =>
                {
                    return;
                }
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the reader goes on past the bad message to the next heartbeat");
    assert!(saw_error);
}

/// The worker's events of `task_id`.
fn task_events_of<'a>(
    events: &'a [Event],
    task_id: &'a str,
) -> impl Iterator<Item = &'a celerity_proto::TaskEvent> {
    events.iter().filter_map(move |event| match event {
        Event::Task { hostname, event }
            if event.task_id == task_id && !hostname.starts_with("celerity-client@") =>
        {
            Some(event)
        }
        _ => None,
    })
}

fn task_events_of_kind(
    events: &[Event],
    kind: TaskEventKind,
) -> impl Iterator<Item = &celerity_proto::TaskEvent> {
    events.iter().filter_map(move |event| match event {
        Event::Task { event, .. } if event.kind == kind => Some(event),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_event_shows_its_arguments_and_each_event_its_group_and_chord() {
    use celerity_it::{add, length};
    let server = server();
    let url = server.url();
    let _worker = WorkerProcess::start(&url, "w1", &[]);
    let client = client(&url).await;
    let mut live = client.events(Since::Start).await.unwrap();

    let added = add.delay(&client, 2, 40).await.unwrap();
    assert_eq!(added.get(WAIT).await.unwrap(), 42);
    let long_reason = "é".repeat(3_000);
    let failed = celerity_it::fail.delay(&client, long_reason).await.unwrap();
    assert!(failed.get(WAIT).await.is_err(), "it.fail fails");
    let group = celerity::Group::new([add.s((1, 2)), add.s((3, 4))])
        .apply_async(&client)
        .await
        .unwrap();
    assert_eq!(group.get(WAIT).await.unwrap(), vec![3, 7]);
    let chord = celerity::Chord::new([add.s((5, 6)), add.s((7, 8))], length.s(()))
        .apply_async(&client)
        .await
        .unwrap();
    assert_eq!(chord.get(WAIT).await.unwrap(), 2);

    let chord_id = chord.id().to_string();
    let events = read_until(&mut live, "the chord body's task-succeeded", |seen| {
        task_events_of(seen, &chord_id).any(|event| event.kind == TaskEventKind::Succeeded)
    })
    .await;
    let started = |task_id: &str| {
        task_events_of(&events, task_id)
            .find(|event| event.kind == TaskEventKind::Started)
            .unwrap_or_else(|| panic!("no task-started for {task_id}"))
            .clone()
    };
    let add_started = started(added.id().as_str());
    assert_eq!(add_started.args.as_deref(), Some("[2,40]"));
    assert_eq!(add_started.kwargs.as_deref(), Some("{}"));
    let fail_args = started(failed.id().as_str()).args.expect("it.fail's args");
    assert!(
        fail_args.len() <= celerity_proto::MAX_ARGUMENTS_TEXT_BYTES && fail_args.ends_with('…'),
        "bounded: {} bytes",
        fail_args.len()
    );
    assert!(fail_args.starts_with("[\"éé"), "{fail_args}");
    // The header results a chord body gets as its first argument are not what its producer sent.
    assert_eq!(started(&chord_id).args.as_deref(), Some("[]"));

    for member in group.results() {
        let member_events: Vec<_> = task_events_of(&events, member.id().as_str()).collect();
        assert!(member_events.len() >= 3, "{member_events:#?}");
        for event in member_events {
            assert_eq!(
                event.group_id.as_deref(),
                Some(group.id().as_str()),
                "{event:?}"
            );
            assert_eq!(event.chord_id, None, "{event:?}");
        }
    }
    // Header members are `<chord id>-<index>`, in the chord and in its group.
    let header_id = task_events_of_kind(&events, TaskEventKind::Started)
        .find_map(|event| event.chord_id.clone())
        .expect("a header member's task-started names its chord");
    for index in 0..2 {
        let member_id = format!("{header_id}-{index}");
        let member_events: Vec<_> = task_events_of(&events, &member_id).collect();
        assert!(member_events.len() >= 3, "{member_id}: {member_events:#?}");
        for event in member_events {
            assert_eq!(
                event.chord_id.as_deref(),
                Some(header_id.as_str()),
                "{event:?}"
            );
            assert_eq!(
                event.group_id.as_deref(),
                Some(header_id.as_str()),
                "{event:?}"
            );
        }
    }
    assert_eq!(started(added.id().as_str()).group_id, None);
}
