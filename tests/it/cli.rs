//! `celerity status` and `celerity result`, run as a user runs them, against live workers.

use std::process::Output;
use std::time::Duration;

use crate::support::{WorkerProcess, client, run_celerity, server};

const WAIT: Duration = Duration::from_secs(20);

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_the_workers_that_answer_and_fails_when_none_does() {
    let server = server();
    let url = server.url();
    let alone = run_celerity(&url, &["status", "--timeout", "0.3"]);
    assert!(!alone.status.success(), "no worker: a failure");
    assert!(String::from_utf8_lossy(&alone.stderr).contains("no worker answered"));

    let _w1 = WorkerProcess::start(&url, "w1", &["-Q", "high,default"]);
    let _w2 = WorkerProcess::start(&url, "w2", &["-c", "3"]);
    let text = run_celerity(&url, &["status"]);
    assert!(text.status.success());
    let out = stdout(&text);
    assert!(out.contains("-> w1: OK (queues: "), "{out}");
    assert!(
        out.contains("-> w2: OK (queues: default; concurrency: 3)"),
        "{out}"
    );
    assert!(out.contains("2 nodes online."), "{out}");
    let json = run_celerity(&url, &["status", "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let names: Vec<&str> = value["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|worker| worker["worker"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["w1", "w2"]);
    let bad = run_celerity(&url, &["status", "--timeout", "0"]);
    let error = String::from_utf8_lossy(&bad.stderr);
    assert!(
        error.contains("--timeout") && error.contains("above 0"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_prints_a_tasks_state_result_error_and_worker() {
    let server = server();
    let url = server.url();
    let _worker = WorkerProcess::start(&url, "w1", &[]);
    let client = client(&url).await;
    let added = celerity_it::add.delay(&client, 2, 3).await.unwrap();
    added.get(WAIT).await.unwrap();
    let failed = celerity_it::fail
        .delay(&client, "no funds".into())
        .await
        .unwrap();
    assert!(failed.get(WAIT).await.is_err());

    let success = run_celerity(&url, &["result", added.id().as_str()]);
    assert!(success.status.success());
    let out = stdout(&success);
    for line in [
        "state:    SUCCESS",
        "task:     it.add",
        "result:   5",
        "worker:   w1",
        "started:  ",
    ] {
        assert!(out.contains(line), "{line:?} not in {out}");
    }
    let failure = stdout(&run_celerity(&url, &["result", failed.id().as_str()]));
    assert!(failure.contains("state:    FAILURE"), "{failure}");
    assert!(
        failure.contains("error:    ") && failure.contains("no funds"),
        "{failure}"
    );
    let json = run_celerity(&url, &["result", added.id().as_str(), "--json"]);
    let record: celerity::ResultRecord = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(record.result, Some(serde_json::json!(5)));

    let unknown = run_celerity(&url, &["result", "never-sent"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("has no record"));
    let invalid = run_celerity(&url, &["result", "a b"]);
    assert!(!invalid.status.success());
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("invalid task id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_a_queues_tasks_or_one_level_asks_first_and_names_an_unknown_queue() {
    let server = server();
    let url = server.url();
    let client = client(&url).await;
    // No worker runs: the tasks stay in the queue.
    for priority in [0, 0, 5] {
        let options = celerity::ApplyOptions::new().priority(priority);
        celerity_it::add
            .apply_async(&client, (1, 1), options)
            .await
            .unwrap();
    }
    let unforced = run_celerity(&url, &["purge", "default"]);
    assert!(
        !unforced.status.success(),
        "no terminal, no --force: refused"
    );
    assert!(String::from_utf8_lossy(&unforced.stderr).contains("pass --force"));

    let level = run_celerity(&url, &["purge", "default", "--priority", "5", "--force"]);
    assert!(level.status.success());
    assert_eq!(stdout(&level).trim(), "purged 1 task from queue default");
    let rest = run_celerity(&url, &["purge", "default", "--force"]);
    assert_eq!(stdout(&rest).trim(), "purged 2 tasks from queue default");
    let again = run_celerity(&url, &["purge", "default", "--force"]);
    assert_eq!(stdout(&again).trim(), "purged 0 tasks from queue default");

    let unknown = run_celerity(&url, &["purge", "nope", "--force"]);
    assert!(!unknown.status.success());
    let error = String::from_utf8_lossy(&unknown.stderr);
    assert!(error.contains("there is no queue nope"), "{error}");
    let bad = run_celerity(&url, &["purge", "default", "--priority", "12", "--force"]);
    assert!(!bad.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_asks_every_worker_or_the_named_ones_what_they_run_and_hold() {
    let server = server();
    let url = server.url();
    let _w1 = WorkerProcess::start(&url, "w1", &["-Q", "high,default", "-c", "2"]);
    let _w2 = WorkerProcess::start(&url, "w2", &["--without-events"]);
    let client = client(&url).await;
    celerity_it::add
        .delay(&client, 1, 2)
        .await
        .unwrap()
        .get(WAIT)
        .await
        .unwrap();
    client
        .control()
        .revoke(
            "gone-1",
            celerity::RevokeMode::Skip,
            None,
            Duration::from_millis(500),
        )
        .await
        .unwrap();

    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["inspect"];
        all.extend_from_slice(args);
        all.push("--json");
        let output = run_celerity(&url, &all);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let registered = json(&["registered"]);
    let tasks = registered["w1"]["tasks"].as_array().unwrap();
    assert!(tasks.iter().any(|task| task == "it.add"), "{registered}");
    assert_eq!(registered["w1"], registered["w2"]);

    let stats = json(&["stats"]);
    assert_eq!(stats["w1"]["concurrency"], 2);
    assert_eq!(stats["w1"]["events"], true);
    assert_eq!(stats["w2"]["events"], false);
    let processed =
        stats["w1"]["processed"].as_u64().unwrap() + stats["w2"]["processed"].as_u64().unwrap();
    assert_eq!(processed, 1, "{stats}");

    let queues = json(&["active-queues", "--destination", "w1"]);
    assert_eq!(
        queues.as_object().unwrap().len(),
        1,
        "only w1 was asked: {queues}"
    );
    let names: Vec<&str> = queues["w1"]["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|queue| queue["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "high"]);
    assert_eq!(queues["w1"]["queues"][0]["stream"], "CELERITY_Q_default");
    assert_eq!(
        queues["w1"]["queues"][0]["priorities"]
            .as_array()
            .unwrap()
            .len(),
        10
    );

    let revoked = json(&["revoked", "-d", "w1,w2"]);
    assert_eq!(revoked["w1"]["ids"], serde_json::json!(["gone-1"]));
    assert_eq!(revoked["w2"]["ids"], serde_json::json!(["gone-1"]));

    let text = stdout(&run_celerity(&url, &["inspect", "stats", "-d", "w2"]));
    assert!(text.starts_with("-> w2:"), "{text}");
    assert!(
        text.contains("tasks: 0 active, 0 reserved") && text.contains("events: off"),
        "{text}"
    );
    let missing = run_celerity(
        &url,
        &["inspect", "registered", "-d", "nobody", "--timeout", "0.3"],
    );
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nobody"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_printing_command_whose_reader_is_gone_ends_quietly() {
    use std::os::unix::process::ExitStatusExt as _;
    let server = server();
    let url = server.url();
    let _worker = WorkerProcess::start(&url, "w-pipe", &[]);
    // As `celerity status | true`: the reader is gone before anything is printed.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let output = std::process::Command::new(crate::support::celerity_cli())
        .args(["status", "--nats-url", &url])
        .stdout(writer)
        .output()
        .expect("celerity runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGPIPE),
        "ended by the closed pipe, as any Unix tool: {:?} {stderr}",
        output.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_command_stops_on_sigterm() {
    use std::io::BufRead as _;
    let server = server();
    let mut dashboard = std::process::Command::new(crate::support::celerity_cli())
        .args([
            "dashboard",
            "--no-auth",
            "-p",
            "0",
            "--nats-url",
            &server.url(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("celerity dashboard starts");
    let stderr = dashboard.stderr.take().expect("its stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let serving = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.contains("Celerity dashboard at"));
    assert!(serving.is_some(), "the dashboard said where it serves");
    let pid = libc::pid_t::try_from(dashboard.id()).expect("a pid fits pid_t");
    // SAFETY: `pid` is the child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM sent");
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = dashboard.try_wait().expect("its status") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dashboard still runs {WAIT:?} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "a clean stop: {status:?}");
}
