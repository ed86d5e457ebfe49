//! `celerity control` against a real server and a worker.

use std::process::Command;
use std::time::Duration;

#[test]
fn control_ping_lists_workers_and_names_a_missing_destination() {
    let server = celerity_testkit::NatsServer::start().expect("nats-server starts");
    let nats = celerity::NatsConfig::new(server.url());
    let app = celerity::App::builder().build().expect("an app");
    let config = celerity::WorkerConfig::new()
        .hostname("cli-worker")
        .recheck_interval(Duration::from_secs(1));
    let worker = celerity::worker::spawn(app, nats, config).expect("the worker starts");

    let ping = Command::new(env!("CARGO_BIN_EXE_celerity"))
        .args([
            "control",
            "--nats-url",
            &server.url(),
            "--timeout",
            "1",
            "ping",
        ])
        .output()
        .expect("celerity runs");
    let stdout = String::from_utf8_lossy(&ping.stdout);
    assert!(
        ping.status.success(),
        "ping failed: {stdout} {}",
        String::from_utf8_lossy(&ping.stderr)
    );
    assert!(
        stdout.contains("cli-worker:") && stdout.contains("\"pong\":true"),
        "{stdout}"
    );

    let missing = Command::new(env!("CARGO_BIN_EXE_celerity"))
        .args([
            "control",
            "--nats-url",
            &server.url(),
            "--timeout",
            "0.3",
            "--destination",
            "nobody",
            "ping",
        ])
        .output()
        .expect("celerity runs");
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no worker named \"nobody\""));

    worker.shutdown(celerity::Shutdown::Warm);
    worker.join().expect("the worker stops");
}

/// A task for the rate-limit command to change.
#[celerity::task(name = "cli.call_api")]
async fn call_api(n: u32) -> u32 {
    n
}

#[test]
fn control_rate_limit_changes_a_worker_and_names_a_bad_rate() {
    let server = celerity_testkit::NatsServer::start().expect("nats-server starts");
    let nats = celerity::NatsConfig::new(server.url());
    let app = celerity::App::builder()
        .task(call_api)
        .build()
        .expect("an app");
    let config = celerity::WorkerConfig::new().hostname("w1");
    let worker = celerity::worker::spawn(app, nats, config).expect("the worker starts");
    let url = server.url();
    let celerity_cmd = |args: &[&str]| {
        let mut argv = vec!["control", "--nats-url", url.as_str()];
        argv.extend_from_slice(args);
        Command::new(env!("CARGO_BIN_EXE_celerity"))
            .args(&argv)
            .output()
            .expect("celerity runs")
    };

    let set = celerity_cmd(&["rate-limit", "cli.call_api", "50/m", "--destination", "w1"]);
    let stdout = String::from_utf8_lossy(&set.stdout);
    assert!(
        set.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(
        stdout.contains("w1:") && stdout.contains("\"rate_limit\":\"50/m\""),
        "{stdout}"
    );

    let bad = celerity_cmd(&["rate-limit", "cli.call_api", "50/day"]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("\"50/day\""), "{stderr}");

    let unknown = celerity_cmd(&["rate-limit", "cli.nope", "5/s"]);
    assert_eq!(unknown.status.code(), Some(1), "a refusal is a failure");
    assert!(String::from_utf8_lossy(&unknown.stdout).contains("not registered"));

    worker.shutdown(celerity::Shutdown::Warm);
    worker.join().expect("the worker stops");
}
