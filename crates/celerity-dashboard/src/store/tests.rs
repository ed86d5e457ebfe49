use celerity::events::Event;
use celerity_proto::{TaskEvent, TaskEventKind, WorkerEvent, WorkerEventKind};

use super::*;

fn task(kind: TaskEventKind, id: &str, at_ms: u64) -> Event {
    let mut event = TaskEvent::new(kind, id, "it.add", at_ms);
    event.queue = Some("default".to_owned());
    Event::Task {
        hostname: "w1".to_owned(),
        event,
    }
}

#[test]
fn a_late_older_event_does_not_undo_a_state() {
    let mut store = Store::new(10);
    store.apply(task(TaskEventKind::Started, "t1", 20));
    store.apply(task(TaskEventKind::Succeeded, "t1", 30));
    store.apply(task(TaskEventKind::Sent, "t1", 10));
    let entry = store.task("t1").unwrap();
    assert_eq!(entry.summary.state, "SUCCESS");
    assert_eq!(entry.summary.sent_ms, Some(10));
    let kinds: Vec<_> = entry.timeline.iter().map(|item| item.kind).collect();
    assert_eq!(
        kinds,
        [
            TaskEventKind::Sent,
            TaskEventKind::Started,
            TaskEventKind::Succeeded
        ]
    );
}

#[test]
fn the_store_forgets_the_least_recently_updated_tasks_beyond_its_size() {
    let mut store = Store::new(3);
    for (n, id) in ["a", "b", "c"].into_iter().enumerate() {
        store.apply(task(TaskEventKind::Sent, id, n as u64));
    }
    store.apply(task(TaskEventKind::Started, "a", 10));
    store.apply(task(TaskEventKind::Sent, "d", 11));
    assert_eq!(store.task_count(), 3);
    assert!(
        store.task("b").is_none(),
        "b was the least recently updated"
    );
    assert!(store.task("a").is_some());
    assert_eq!(store.evicted, 1);
    let changed: Vec<_> = store
        .take_changed()
        .iter()
        .map(|entry| entry.summary.id.clone())
        .collect();
    assert_eq!(changed, ["d", "a", "c"]);
    assert!(store.take_changed().is_empty());
}

#[test]
fn filters_and_pages_read_newest_first() {
    let mut store = Store::new(100);
    for n in 0..10u64 {
        let kind = match n % 2 {
            0 => TaskEventKind::Succeeded,
            _ => TaskEventKind::Failed,
        };
        store.apply(task(kind, &format!("t{n}"), n));
    }
    let query = TaskQuery {
        state: Some("failure".to_owned()),
        per_page: Some("2".to_owned()),
        page: Some("2".to_owned()),
        ..TaskQuery::default()
    };
    let page = store.tasks(&TaskFilter::parse(query).unwrap());
    assert_eq!(page.total, 5);
    let ids: Vec<_> = page.tasks.iter().map(|task| task.id.as_str()).collect();
    assert_eq!(ids, ["t5", "t3"]);
    let bad = TaskQuery {
        state: Some("DONE".to_owned()),
        ..TaskQuery::default()
    };
    let error = TaskFilter::parse(bad).unwrap_err();
    assert_eq!(error.code(), "invalid_filter");
    assert!(error.to_string().contains("state"), "{error}");
    let bad_time = TaskQuery {
        since: Some("yesterday".to_owned()),
        ..TaskQuery::default()
    };
    assert!(TaskFilter::parse(bad_time).is_err());
}

#[test]
fn a_worker_is_offline_after_its_offline_event_or_missed_heartbeats() {
    let mut store = Store::new(10);
    let mut online = WorkerEvent::new(WorkerEventKind::Online, "w1", 1_000);
    online.queues = vec!["default".to_owned()];
    store.apply(Event::Worker(online));
    assert!(store.workers(2_000)[0].online);
    assert!(
        !store.workers(1_000 + 7_000)[0].online,
        "3 heartbeats missed"
    );
    store.apply(Event::Worker(WorkerEvent::new(
        WorkerEventKind::Offline,
        "w1",
        3_000,
    )));
    let worker = &store.workers(3_100)[0];
    assert!(!worker.online);
    assert!(worker.online_since_ms.is_none());
}

#[test]
fn throughput_counts_endings_per_bucket() {
    let mut store = Store::new(10);
    store.apply(task(TaskEventKind::Succeeded, "a", 10_001));
    store.apply(task(TaskEventKind::Failed, "b", 19_999));
    store.apply(task(TaskEventKind::Succeeded, "c", 5_000));
    let points = store.throughput();
    assert_eq!(points.len(), 2);
    assert_eq!((points[0].at_ms, points[0].succeeded), (0, 1));
    assert_eq!(
        (points[1].at_ms, points[1].succeeded, points[1].failed),
        (10_000, 1, 1)
    );
}

#[test]
fn a_canvas_forgets_the_tasks_the_store_forgets() {
    let mut store = Store::new(2);
    for (n, id) in ["a", "b", "c"].into_iter().enumerate() {
        let mut event = TaskEvent::new(TaskEventKind::Sent, id, "it.add", n as u64);
        event.root_id = Some("root".to_owned());
        store.apply(Event::Task {
            hostname: "w1".to_owned(),
            event,
        });
    }
    let ids: Vec<_> = store
        .canvas("root")
        .iter()
        .map(|entry| entry.summary.id.clone())
        .collect();
    assert_eq!(ids, ["b", "c"]);
    store.apply(task(TaskEventKind::Sent, "d", 10));
    store.apply(task(TaskEventKind::Sent, "e", 11));
    assert!(store.canvas("root").is_empty());
    assert!(
        store.canvases.is_empty(),
        "no list is kept for a canvas with no task left"
    );
}
