//! `celerity beat list` against a real server and a worker running the scheduler.

use std::process::Command;
use std::time::{Duration, Instant};

/// The task the entry sends.
#[celerity::task(name = "cli.heartbeat")]
async fn heartbeat() -> u32 {
    1
}

#[test]
fn beat_list_shows_the_scheduler_and_each_entry_with_its_last_run() {
    let server = celerity_testkit::NatsServer::start().expect("nats-server starts");
    let nats = celerity::NatsConfig::new(server.url());
    let schedule = celerity::beat::Schedule::every(Duration::from_secs(1)).expect("a schedule");
    let entry =
        celerity::beat::Entry::new("heartbeat", schedule, heartbeat.s(())).expect("a valid entry");
    let app = celerity::App::builder()
        .task(heartbeat)
        .beat(entry)
        .build()
        .expect("an app");
    let config = celerity::WorkerConfig::new()
        .hostname("beat-worker")
        .beat(Vec::new(), Duration::from_secs(2));
    let worker = celerity::worker::spawn(app, nats, config).expect("the worker starts");

    let url = server.url();
    let list = || {
        let output = Command::new(env!("CARGO_BIN_EXE_celerity"))
            .args(["beat", "--nats-url", url.as_str(), "list"])
            .output()
            .expect("celerity runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let listed = list();
        let ran = listed
            .lines()
            .any(|line| line.starts_with("heartbeat ") && !line.trim_end().ends_with(" 0"));
        if ran {
            break listed;
        }
        assert!(Instant::now() < deadline, "no run listed: {listed}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(listed.contains("scheduler: beat-worker"), "{listed}");
    let row = listed
        .lines()
        .find(|line| line.starts_with("heartbeat "))
        .expect("the entry's row");
    assert!(
        row.contains("cli.heartbeat") && row.contains("every 1s"),
        "{listed}"
    );
    assert!(
        !row.contains(" - "),
        "last and next runs are shown: {listed}"
    );

    worker.shutdown(celerity::Shutdown::Warm);
    worker.join().expect("the worker stops");
}
