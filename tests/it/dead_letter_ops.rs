//! Operating on dead letters against a real worker: the library lists, reads, requeues (keeping
//! the task id, so the task runs to SUCCESS under it), deletes and purges them, with typed errors;
//! the `celerity dead-letters` CLI and the dashboard's `/api/dead-letters` do the same.

use std::time::Duration;

use celerity::dead_letters::{DeadLetterError, LetterFilter, Page};
use celerity_proto::{DeadLetter, ErrorRecord, ResultRecord, TaskId, TaskName, TaskState};
use serde_json::json;

use crate::dashboard::{call, start};
use crate::support::{
    WorkerProcess, client, eventually, publish_json, publish_raw, run_celerity, run_counts,
    runs_stream, server,
};

const WAIT: Duration = Duration::from_secs(20);

/// Dead-letters three real messages (unknown task, undecodable body, no id) through the worker.
async fn real_letters(client: &celerity::Client) {
    let base = [("Celerity-Version", "1")];
    let with = |task: &'static str, id: Option<&'static str>| {
        let mut headers = base.to_vec();
        headers.push(("Celerity-Task", task));
        if let Some(id) = id {
            headers.push(("Celerity-Id", id));
        }
        headers
    };
    publish_raw(
        client,
        &with("it.nope", Some("ops-unknown")),
        br#"{"args":[]}"#,
    )
    .await;
    publish_raw(
        client,
        &with("it.add", Some("ops-undecodable")),
        b"not json{",
    )
    .await;
    publish_raw(client, &with("it.add", None), br#"{"args":[1,2]}"#).await;
    wait_total(client, 3).await;
}

/// Stores a letter as a worker would for a runnable `it.add` task `id` (the worker had not known
/// the task): a requeue of it runs.
pub(crate) async fn runnable_letter(client: &celerity::Client, id: &str) {
    letter(client, id, "it.add", &json!({"args": [1, 2]})).await;
}

/// Stores a letter as a worker would for a task `task` with `body` that the worker had not known.
async fn letter(client: &celerity::Client, id: &str, task: &str, body: &serde_json::Value) {
    let js = async_nats::jetstream::new(client.nats().clone());
    let mut headers = async_nats::HeaderMap::new();
    let error = format!("no task {task} on this worker");
    for (name, value) in [
        ("Celerity-Version", "1"),
        ("Celerity-Task", task),
        ("Celerity-Id", id),
        ("Celerity-Dlq-Reason", "unknown_task"),
        ("Celerity-Dlq-Error", error.as_str()),
        ("Celerity-Dlq-Worker", "old-worker"),
        ("Celerity-Dlq-Deliveries", "1"),
        ("Celerity-Dlq-Subject", "celerity.q.default.0"),
        ("Celerity-Dlq-Stream-Sequence", "1"),
        ("Celerity-Dlq-Time", "1700000000000"),
    ] {
        headers.insert(name, value);
    }
    let body = serde_json::to_vec(body).expect("a JSON body");
    js.publish_with_headers("celerity.dlq.default", headers, body.into())
        .await
        .expect("publish")
        .await
        .expect("the letter is stored");
}

async fn wait_total(client: &celerity::Client, total: u64) {
    eventually(&format!("{total} letters"), WAIT, || async {
        client
            .dead_letters()
            .list(&LetterFilter::all(), Page::first(1))
            .await
            .is_ok_and(|page| page.total == total)
    })
    .await;
}

/// The sequence of the letter of task `id` (or of the one without a task id).
async fn seq_of(client: &celerity::Client, id: Option<&str>) -> u64 {
    let page = client
        .dead_letters()
        .list(&LetterFilter::all(), Page::first(100))
        .await
        .expect("the letters are listed");
    page.letters
        .iter()
        .find(|letter| letter.task_id.as_deref() == id)
        .unwrap_or_else(|| panic!("no letter of {id:?}"))
        .seq
}

async fn assert_succeeds(client: &celerity::Client, id: &str) {
    let result = client.async_result::<i64>(id).expect("a valid task id");
    let value = result.get(WAIT).await.expect("the requeued task succeeds");
    assert_eq!(value, 3, "{id} runs under its id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_lists_reads_requeues_deletes_and_purges_letters() {
    let server = server();
    let url = server.url();
    let _worker = WorkerProcess::start(&url, "ops-w1", &[]);
    let client = client(&url).await;
    real_letters(&client).await;
    for id in ["ops-rq-1", "ops-rq-2", "ops-rq-3"] {
        runnable_letter(&client, id).await;
    }
    wait_total(&client, 6).await;
    let letters = client.dead_letters();

    let first = letters
        .list(&LetterFilter::all(), Page::first(2))
        .await
        .unwrap();
    assert_eq!(
        (first.total, first.letters.len(), first.next_offset),
        (6, 2, Some(2))
    );
    assert_eq!(
        first.letters[0].task_id.as_deref(),
        Some("ops-rq-3"),
        "newest first"
    );
    let unknown = letters
        .list(&LetterFilter::all().reason("unknown_task"), Page::first(10))
        .await
        .unwrap();
    assert_eq!(unknown.letters.len(), 4);
    let undecodable = letters
        .list(
            &LetterFilter::all().reason("undecodable_body"),
            Page::first(10),
        )
        .await
        .unwrap();
    assert_eq!(undecodable.letters.len(), 1);
    assert_eq!(
        undecodable.letters[0].task_id.as_deref(),
        Some("ops-undecodable")
    );
    assert_eq!(
        &undecodable.letters[0].body[..],
        b"not json{",
        "the original body"
    );
    assert_eq!(undecodable.letters[0].queue, "default");

    let seq = seq_of(&client, Some("ops-unknown")).await;
    let letter = letters.get(seq).await.unwrap();
    assert_eq!(
        (letter.task.as_deref(), letter.reason.as_str()),
        (Some("it.nope"), "unknown_task")
    );
    let dead = letter.dead_letter.expect("its dead-letter headers");
    assert_eq!(
        (dead.worker.as_str(), dead.subject.as_str()),
        ("ops-w1", "celerity.q.default.0")
    );

    let seq = seq_of(&client, Some("ops-rq-1")).await;
    let task_id = letters.requeue(seq).await.unwrap();
    assert_eq!(task_id.as_str(), "ops-rq-1");
    assert_succeeds(&client, "ops-rq-1").await;
    assert!(matches!(
        letters.get(seq).await,
        Err(DeadLetterError::NotFound { .. })
    ));
    for id in ["ops-rq-2", "ops-rq-3"] {
        let seq = seq_of(&client, Some(id)).await;
        letters.requeue(seq).await.unwrap();
    }
    for id in ["ops-rq-2", "ops-rq-3"] {
        assert_succeeds(&client, id).await;
    }

    let no_id = seq_of(&client, None).await;
    assert!(matches!(
        letters.requeue(no_id).await,
        Err(DeadLetterError::NoTaskId { .. })
    ));
    assert!(matches!(
        letters.get(9_999).await,
        Err(DeadLetterError::NotFound { seq: 9_999, .. })
    ));
    assert!(matches!(
        letters.requeue(9_999).await,
        Err(DeadLetterError::NotFound { .. })
    ));
    // An undecodable body is requeued as it is, and dead-lettered again.
    let undecodable = seq_of(&client, Some("ops-undecodable")).await;
    letters.requeue(undecodable).await.unwrap();
    eventually(
        "the undecodable body is dead-lettered again",
        WAIT,
        || async {
            letters
                .list(
                    &LetterFilter::all().reason("undecodable_body"),
                    Page::first(1),
                )
                .await
                .is_ok_and(|page| {
                    page.letters
                        .first()
                        .is_some_and(|letter| letter.seq > undecodable)
                })
        },
    )
    .await;

    let seq = seq_of(&client, Some("ops-unknown")).await;
    letters.delete(seq).await.unwrap();
    assert!(matches!(
        letters.delete(seq).await,
        Err(DeadLetterError::NotFound { .. })
    ));
    assert!(matches!(
        letters
            .purge(&LetterFilter::all().reason("unknown_task"))
            .await,
        Err(DeadLetterError::PurgeByReason { .. })
    ));
    assert_eq!(letters.purge(&LetterFilter::all()).await.unwrap(), 2);
    wait_total(&client, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_shows_requeues_deletes_and_purges_letters() {
    let server = server();
    let url = server.url();
    let _worker = WorkerProcess::start(&url, "ops-w2", &[]);
    let client = client(&url).await;
    real_letters(&client).await;
    runnable_letter(&client, "ops-cli-1").await;
    wait_total(&client, 4).await;

    let listed = run_celerity(&url, &["dead-letters", "list"]);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{listed:?}");
    assert!(
        stdout.contains("unknown_task") && stdout.contains("undecodable_body"),
        "{stdout}"
    );
    let json_list = run_celerity(&url, &["dead-letters", "list", "--json", "--limit", "2"]);
    let page: serde_json::Value = serde_json::from_slice(&json_list.stdout).unwrap();
    assert_eq!(
        (page["total"].as_u64(), page["next_offset"].as_u64()),
        (Some(4), Some(2))
    );

    let seq = seq_of(&client, Some("ops-unknown")).await.to_string();
    let shown = run_celerity(&url, &["dead-letters", "show", &seq]);
    let stdout = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success() && stdout.contains("it.nope"),
        "{shown:?}"
    );

    let seq = seq_of(&client, Some("ops-cli-1")).await.to_string();
    let requeued = run_celerity(&url, &["dead-letters", "requeue", &seq]);
    let stdout = String::from_utf8_lossy(&requeued.stdout);
    assert!(requeued.status.success(), "{requeued:?}");
    assert!(
        stdout.contains(&format!("requeued letter {seq} as task ops-cli-1")),
        "{stdout}"
    );
    assert_succeeds(&client, "ops-cli-1").await;
    let missing = run_celerity(&url, &["dead-letters", "requeue", "9999"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no dead letter 9999"),
        "{missing:?}"
    );

    let seq = seq_of(&client, Some("ops-unknown")).await.to_string();
    let deleted = run_celerity(&url, &["dead-letters", "delete", &seq]);
    assert!(deleted.status.success(), "{deleted:?}");
    assert!(String::from_utf8_lossy(&deleted.stdout).contains(&format!("deleted letter {seq}")));
    let purged = run_celerity(&url, &["dead-letters", "purge", "--force"]);
    assert!(purged.status.success(), "{purged:?}");
    wait_total(&client, 0).await;

    let bad_limit = run_celerity(&url, &["dead-letters", "list", "--limit", "0"]);
    assert_eq!(
        bad_limit.status.code(),
        Some(2),
        "clap refuses it: {bad_limit:?}"
    );
    assert!(
        String::from_utf8_lossy(&bad_limit.stderr).contains("--limit"),
        "{bad_limit:?}"
    );
    let nothing = run_celerity(&url, &["dead-letters", "requeue"]);
    assert_eq!(nothing.status.code(), Some(2), "{nothing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_reads_requeues_and_purges_letters() {
    let server = server();
    let url = server.url();
    let _worker = WorkerProcess::start(&url, "ops-w3", &[]);
    let client = client(&url).await;
    real_letters(&client).await;
    for id in ["ops-dash-1", "ops-dash-2", "ops-dash-3"] {
        runnable_letter(&client, id).await;
    }
    wait_total(&client, 6).await;
    let (dashboard, base) = start(&url, |_| {}).await;
    // Until its NATS connection is up the dashboard answers 503 `nats_unavailable`.
    eventually("the dashboard connects to NATS", WAIT, || async {
        let overview = call(&base, "GET", "/api/overview", &[], None).await;
        overview.body["nats"]["connected"] == true
    })
    .await;

    let list = call(&base, "GET", "/api/dead-letters?per_page=2", &[], None).await;
    assert_eq!(
        (list.status, list.body["total"].as_u64()),
        (200, Some(6)),
        "{:?}",
        list.body
    );
    assert_eq!(list.body["letters"].as_array().unwrap().len(), 2);
    let seq = seq_of(&client, Some("ops-unknown")).await;
    let one = call(&base, "GET", &format!("/api/dead-letters/{seq}"), &[], None).await;
    assert_eq!(
        (one.status, one.body["reason"].as_str()),
        (200, Some("unknown_task"))
    );
    assert_eq!(one.body["body"], r#"{"args":[]}"#);
    let unknown = call(&base, "GET", "/api/dead-letters/9999", &[], None).await;
    assert_eq!(
        (unknown.status, unknown.body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    let a = seq_of(&client, Some("ops-dash-1")).await;
    let refused = call(
        &base,
        "POST",
        "/api/dead-letters/requeue",
        &[],
        Some(json!({"seqs": [a]})),
    )
    .await;
    assert_eq!(
        (refused.status, refused.body["error"]["code"].as_str()),
        (403, Some("csrf"))
    );
    let session = call(&base, "GET", "/api/session", &[], None).await;
    let csrf = session.body["csrf"].as_str().unwrap().to_owned();
    let csrf_header = [("X-Celerity-Csrf", csrf.as_str())];
    let one = call(
        &base,
        "POST",
        "/api/dead-letters/requeue",
        &csrf_header,
        Some(json!({"seqs": [a]})),
    )
    .await;
    assert_eq!(one.status, 200, "{:?}", one.body);
    assert_eq!(one.body["requeued"][0]["task_id"], "ops-dash-1");
    assert_succeeds(&client, "ops-dash-1").await;
    let b = seq_of(&client, Some("ops-dash-2")).await;
    let c = seq_of(&client, Some("ops-dash-3")).await;
    let no_id = seq_of(&client, None).await;
    let many = call(
        &base,
        "POST",
        "/api/dead-letters/requeue",
        &csrf_header,
        Some(json!({"seqs": [b, c, no_id]})),
    )
    .await;
    assert_eq!(
        many.body["requeued"].as_array().unwrap().len(),
        2,
        "{:?}",
        many.body
    );
    assert_eq!(many.body["failed"][0]["seq"], no_id, "{:?}", many.body);
    assert_succeeds(&client, "ops-dash-2").await;
    assert_succeeds(&client, "ops-dash-3").await;

    let seq = seq_of(&client, Some("ops-unknown")).await;
    let deleted = call(
        &base,
        "POST",
        "/api/dead-letters/purge",
        &csrf_header,
        Some(json!({"seqs": [seq]})),
    )
    .await;
    assert_eq!(deleted.body["purged"], 1, "{:?}", deleted.body);
    let purged = call(
        &base,
        "POST",
        "/api/dead-letters/purge",
        &csrf_header,
        Some(json!({"all": true})),
    )
    .await;
    assert_eq!(purged.body["purged"], 2, "{:?}", purged.body);
    dashboard.stop().await;

    let (read_only, base) = start(&url, |config| config.read_only = true).await;
    let session = call(&base, "GET", "/api/session", &[], None).await;
    let csrf = session.body["csrf"].as_str().unwrap_or_default().to_owned();
    let refused = call(
        &base,
        "POST",
        "/api/dead-letters/purge",
        &[("X-Celerity-Csrf", csrf.as_str())],
        Some(json!({"all": true})),
    )
    .await;
    assert_eq!(
        (refused.status, refused.body["error"]["code"].as_str()),
        (403, Some("read_only"))
    );
    read_only.stop().await;
}

/// A chain whose first step was dead-lettered (its task was deployed later) continues when the
/// letter is requeued to a worker that has the task: the step after it, failed with it, runs
/// under its id and its SUCCESS replaces that FAILURE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeued_chain_step_continues_its_chain() {
    let server = server();
    let url = server.url();
    let old = WorkerProcess::start(&url, "ops-old", &[]);
    let client = client(&url).await;
    let body = json!({
        "args": [1, 2],
        "chain": [{"kind": "signature", "id": "late-next", "task": "it.add", "args": [10]}]
    });
    publish_json(&client, "it.late", "late-head", &body).await;
    let next = client.async_result::<i64>("late-next").unwrap();
    assert!(
        matches!(
            next.get(WAIT).await,
            Err(celerity::ResultError::Failed { .. })
        ),
        "the chain fails with its dead-lettered head"
    );
    drop(old);

    let new = WorkerProcess::spawn(&url, "ops-new", &[], &[("IT_WITH_LATE_TASK", "1")]);
    new.wait_for_log("consuming", WAIT);
    let seq = seq_of(&client, Some("late-head")).await;
    let requeued = client.dead_letters().requeue(seq).await.unwrap();
    assert_eq!(requeued.as_str(), "late-head");
    // Its dead-lettered FAILURE stays until the rerun stores SUCCESS over it.
    let head = client.async_result::<i64>("late-head").unwrap();
    eventually("the requeued head succeeds", WAIT, || async {
        head.successful().await.unwrap_or(false)
    })
    .await;
    assert_succeeds(&client, "late-head").await;
    eventually("the chain's next step succeeds", WAIT, || async {
        next.successful().await.unwrap_or(false)
    })
    .await;
    assert_eq!(
        next.get(WAIT).await.unwrap(),
        13,
        "it got the head's result"
    );
}

/// Stores `record` as the task's record, as a worker does (JSON in the results bucket).
async fn put_record(client: &celerity::Client, record: &ResultRecord) {
    let js = async_nats::jetstream::new(client.nats().clone());
    let results = js
        .get_key_value("celerity_results")
        .await
        .expect("the results bucket");
    let bytes = serde_json::to_vec(record).expect("a JSON record");
    results
        .put(record.id.as_str(), bytes.into())
        .await
        .expect("the record is stored");
}

/// Sends `worker` a warm then a cold shutdown once `id` is running on it: the task's message is
/// handed back (delivered again at once) while the task has stored nothing.
async fn cold_stop_while_running(url: &str, worker: &mut WorkerProcess, id: &str) {
    eventually(&format!("{id} starts"), WAIT, || async {
        run_counts(url).await.contains_key(id)
    })
    .await;
    worker.signal(libc::SIGTERM);
    worker.wait_for_log("warm shutdown", WAIT);
    worker.signal(libc::SIGINT);
    assert!(worker.wait_exit(WAIT).success(), "{}", worker.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeued_task_delivered_again_runs_and_so_does_its_next_step() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let mut first = WorkerProcess::start(&url, "ops-redo-1", &[]);
    let client = client(&url).await;
    // As the dead letter of a chain's head left them: the head's FAILURE and its next step's.
    let error = ErrorRecord::new(DeadLetter::ERROR_KIND, "unknown_task: no task it.track");
    let mut head = ResultRecord::new(TaskId::new("redo-head").unwrap(), TaskState::Failure, 1)
        .with_error(error.clone())
        .with_meta(json!({"reason": "unknown_task"}));
    head.task = Some(TaskName::new("it.track").unwrap());
    put_record(&client, &head).await;
    let next = ResultRecord::new(TaskId::new("redo-next").unwrap(), TaskState::Failure, 1)
        .with_error(error)
        .with_meta(
            json!({"failed_task": "redo-head", "reason": "an earlier step of the chain failed"}),
        );
    put_record(&client, &next).await;
    let body = json!({
        "args": ["redo", 4000],
        "chain": [{"kind": "signature", "id": "redo-next", "task": "it.track", "args": [4000]}]
    });
    letter(&client, "redo-head", "it.track", &body).await;
    let seq = seq_of(&client, Some("redo-head")).await;
    client.dead_letters().requeue(seq).await.unwrap();

    // Handed back before it stored anything, the head finds only its dead letter's FAILURE.
    cold_stop_while_running(&url, &mut first, "redo-head").await;
    let mut second = WorkerProcess::start(&url, "ops-redo-2", &[]);
    let head = client.async_result::<String>("redo-head").unwrap();
    eventually("the head runs again and succeeds", WAIT, || async {
        head.successful().await.unwrap_or(false)
    })
    .await;
    // Its next step, handed back the same way, finds the FAILURE its head's letter wrote for it.
    cold_stop_while_running(&url, &mut second, "redo-next").await;
    let _third = WorkerProcess::start(&url, "ops-redo-3", &[]);
    let next = client.async_result::<String>("redo-next").unwrap();
    eventually("the next step runs again and succeeds", WAIT, || async {
        next.successful().await.unwrap_or(false)
    })
    .await;
    assert_eq!(next.get(WAIT).await.unwrap(), "redo");
    let counts = run_counts(&url).await;
    assert_eq!(
        (counts.get("redo-head"), counts.get("redo-next")),
        (Some(&2), Some(&2)),
        "each ran again after its hand-back"
    );
    let letters = client
        .dead_letters()
        .list(&LetterFilter::all(), Page::first(1))
        .await
        .unwrap();
    assert_eq!(letters.total, 0, "nothing was dead-lettered again");
}
