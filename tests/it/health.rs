//! `celerity health`, run as an operator runs it: a healthy deployment, queues with no worker,
//! a stalled queue, a server without JetStream, and a server that cannot be reached.

use std::process::Output;
use std::time::{Duration, Instant};

use celerity::ApplyOptions;
use serde_json::Value;

use crate::support::{
    WorkerProcess, client, eventually, release_held, run_celerity, run_counts, runs_stream, server,
};

const WAIT: Duration = Duration::from_secs(20);

/// `celerity health <args> --nats-url <url>`.
fn health(url: &str, args: &[&str]) -> Output {
    run_celerity(url, &[&["health"], args].concat())
}

/// `celerity health --json <args>`: the exit code and the report.
fn health_json(url: &str, args: &[&str]) -> (Option<i32>, Value) {
    let output = health(url, &[args, &["--json"]].concat());
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "the report is JSON ({error}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

/// The check `kind` (of `queue`, when given) in a JSON report.
fn check<'a>(report: &'a Value, kind: &str, queue: Option<&str>) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks is a list")
        .iter()
        .find(|check| check["check"] == kind && check["queue"].as_str() == queue)
        .unwrap_or_else(|| panic!("no {kind} check for {queue:?} in {report}"))
}

/// Runs `celerity health --json <args>` until its stalled check of queue `default` fails, and
/// returns that report (exit status 1).
async fn wait_until_stalled(url: &str, args: &[&str]) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, report) = health_json(url, args);
        if check(&report, "stalled", Some("default"))["ok"] == false {
            assert_eq!(code, Some(1), "{report}");
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "the queue never counted as stalled: {report}"
        );
        // A check that found the queue moving returns at once; ask again a little later.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_with_a_worker_and_an_empty_queue_is_healthy() {
    let server = server();
    let url = server.url();
    let _worker = WorkerProcess::start(&url, "w1", &["-Q", "default,high"]);
    let client = client(&url).await;
    celerity_it::add
        .delay(&client, 2, 3)
        .await
        .unwrap()
        .get(WAIT)
        .await
        .unwrap();

    let (code, report) = health_json(&url, &[]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["healthy"], true, "{report}");
    for check in report["checks"].as_array().unwrap() {
        assert_eq!(check["ok"], true, "{check}");
    }
    let queues: Vec<&str> = report["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|queue| queue["queue"].as_str().unwrap())
        .collect();
    assert_eq!(queues, ["default", "high"]);
    assert_eq!(report["queues"][0]["workers"], serde_json::json!(["w1"]));
    assert_eq!(report["queues"][0]["depth"], 0);
    assert_eq!(
        check(&report, "stalled", Some("default"))["reason"],
        "no backlog"
    );

    let text = health(&url, &["--queue", "default"]);
    assert!(text.status.success());
    let out = String::from_utf8_lossy(&text.stdout);
    for line in [
        "OK    server: nats-server ",
        "OK    jetstream: enabled",
        "OK    queue default: stream CELERITY_Q_default with its 10 level consumers; depth 0, 0 in flight",
        "OK    workers default: 1 worker answered (w1)",
        "OK    stalled default: no backlog",
        "OK    storage: ",
        "healthy: 7 checks passed",
    ] {
        assert!(out.contains(line), "{line:?} not in\n{out}");
    }
    assert!(!out.contains("high"), "only the queue asked for: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_whose_workers_are_gone_fail_and_are_named() {
    let server = server();
    let url = server.url();
    let (code, report) = health_json(&url, &[]);
    assert_eq!(code, Some(1), "nothing deployed: {report}");
    assert_eq!(check(&report, "queues", None)["ok"], false);

    let mut worker = WorkerProcess::start(&url, "w1", &["-Q", "default,email"]);
    worker.signal(libc::SIGTERM);
    assert!(worker.wait_exit(WAIT).success());

    let (code, report) = health_json(&url, &["--timeout", "0.3"]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["healthy"], false);
    for queue in ["default", "email"] {
        assert_eq!(check(&report, "queue", Some(queue))["ok"], true, "{report}");
        let workers = check(&report, "workers", Some(queue));
        assert_eq!(workers["ok"], false, "{report}");
        assert!(
            workers["fix"]
                .as_str()
                .unwrap()
                .contains(&format!("--queues {queue}")),
            "{workers}"
        );
    }
    let text = health(&url, &["--timeout", "0.3", "--queue", "email,nope"]);
    assert_eq!(text.status.code(), Some(1));
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(
        out.contains("FAIL  workers email: no worker consuming email answered a ping"),
        "{out}"
    );
    assert!(
        out.contains(
            "FAIL  queue nope: no stream CELERITY_Q_nope: start a worker with `--queues nope`"
        ),
        "{out}"
    );
    assert!(out.contains("unhealthy: 3 of 9 checks failed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_whose_tasks_wait_while_nothing_is_delivered_is_stalled() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let client = client(&url).await;
    // Sent before the worker starts, so its one slot takes the priority-9 task that holds it
    // and the others wait: nothing more is delivered until the hold is released.
    let held = celerity_it::hold
        .apply_async(&client, (), ApplyOptions::new().priority(9))
        .await
        .unwrap();
    let mut waiting = Vec::new();
    for i in 0..3 {
        waiting.push(celerity_it::add.delay(&client, i, i).await.unwrap());
    }
    let _worker = WorkerProcess::start(&url, "w1", &["-c", "1"]);
    eventually("the held task starts", WAIT, || async {
        run_counts(&url).await.contains_key(held.id().as_str())
    })
    .await;

    let args = ["--stalled-after", "1", "--queue", "default"];
    let report = wait_until_stalled(&url, &args).await;
    assert_eq!(report["healthy"], false);
    assert_eq!(
        check(&report, "workers", Some("default"))["ok"],
        true,
        "the worker answers: {report}"
    );
    let stalled = check(&report, "stalled", Some("default"));
    let reason = stalled["reason"].as_str().unwrap();
    assert!(
        reason.contains("priority 0: ") && reason.contains(" waiting"),
        "{reason}"
    );
    assert!(
        reason.contains("nothing delivered or acknowledged for"),
        "{reason}"
    );
    assert!(
        report["queues"][0]["stalled_levels"]
            .as_array()
            .unwrap()
            .contains(&0.into())
    );
    assert!(
        report["queues"][0]["depth"].as_u64().unwrap() > 0,
        "{report}"
    );
    let text = health(&url, &args);
    assert!(String::from_utf8_lossy(&text.stdout).contains("FAIL  stalled default: "));

    release_held(&client, &url, held.id().as_str(), WAIT).await;
    for result in &waiting {
        result.get(WAIT).await.unwrap();
    }
    let (code, report) = health_json(&url, &args);
    assert_eq!(code, Some(0), "moving again: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_whose_only_worker_is_frozen_is_stalled_and_has_no_worker() {
    let server = server();
    let url = server.url();
    let worker = WorkerProcess::start(&url, "w1", &[]);
    let client = client(&url).await;
    worker.signal(libc::SIGSTOP);
    let mut waiting = Vec::new();
    for i in 0..3 {
        waiting.push(celerity_it::add.delay(&client, i, i).await.unwrap());
    }

    let args = ["--stalled-after", "1", "--timeout", "0.3"];
    let report = wait_until_stalled(&url, &args).await;
    assert_eq!(
        check(&report, "workers", Some("default"))["ok"],
        false,
        "{report}"
    );
    let reason = check(&report, "stalled", Some("default"))["reason"]
        .as_str()
        .unwrap();
    assert!(reason.contains("priority 0: "), "{reason}");

    worker.signal(libc::SIGCONT);
    for result in &waiting {
        result.get(WAIT).await.unwrap();
    }
    let (code, report) = health_json(&url, &args);
    assert_eq!(code, Some(0), "the worker is back: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_jetstream_fails_its_check_and_one_not_reached_is_an_error() {
    let mut server = celerity_testkit::NatsServer::builder()
        .jetstream(false)
        .start()
        .expect("nats-server starts");
    let url = server.url();
    let (code, report) = health_json(&url, &[]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(check(&report, "server", None)["ok"], true);
    let jetstream = check(&report, "jetstream", None);
    assert_eq!(jetstream["ok"], false, "{report}");
    assert!(
        jetstream["fix"].as_str().unwrap().contains("-js"),
        "{jetstream}"
    );

    server.stop().expect("the server stops");
    let unreached = health(&url, &[]);
    assert_eq!(unreached.status.code(), Some(2));
    let error = String::from_utf8_lossy(&unreached.stderr);
    assert!(
        error.contains("no health report") && error.contains("cannot connect to NATS"),
        "{error}"
    );
    assert!(unreached.stdout.is_empty());

    let refused = health(&url, &["--stalled-after", "0"]);
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        error.contains("--stalled-after") && error.contains("above 0"),
        "{error}"
    );
}
