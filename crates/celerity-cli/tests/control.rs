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
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no worker named \"nobody\""));

    worker.shutdown(false);
    worker.join().expect("the worker stops");
}
