//! End-to-end test of `celerity dev`: runs the built binary against the nats-server it starts
//! itself and checks its summary and exit status.
//!
//! It needs `nats-server` installed, like every integration test in the workspace.

use std::io::Read as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long the demo may run before the test kills it.
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `celerity <args>` with its own server, killing it if it outlives [`DEADLINE`].
fn run_celerity(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_celerity"))
        .args(args)
        // A URL in the environment would make the demo use that server instead of its own.
        .env_remove("CELERITY_NATS_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run the celerity binary");
    // Pipes are drained on threads so a full pipe cannot stall the child.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stdout = std::thread::spawn(move || {
        let mut text = Vec::new();
        stdout.read_to_end(&mut text).map(|_| text)
    });
    let stderr = std::thread::spawn(move || {
        let mut text = Vec::new();
        stderr.read_to_end(&mut text).map(|_| text)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .expect("cannot check whether celerity exited")
        {
            break status;
        }
        if started.elapsed() > DEADLINE {
            child.kill().expect("cannot kill celerity");
            let _ = child.wait();
            panic!(
                "`celerity {}` did not finish within {DEADLINE:?}",
                args.join(" ")
            );
        }
        // std has no wait with a timeout; a short poll keeps the deadline without a helper crate.
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: stdout
            .join()
            .expect("stdout reader panicked")
            .expect("cannot read stdout"),
        stderr: stderr
            .join()
            .expect("stderr reader panicked")
            .expect("cannot read stderr"),
    }
}

/// The count on the summary line `  <state>  <count> (expected <n>)`.
fn summary_count(stdout: &str, state: &str) -> Option<usize> {
    stdout.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(state))
            .then(|| words.next()?.parse().ok())
            .flatten()
    })
}

#[test]
fn dev_runs_forty_tasks_and_every_one_reaches_its_expected_state() {
    let output = run_celerity(&["dev", "--tasks", "40", "--quiet"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");

    assert!(
        output.status.success(),
        "exit status {}\n{context}",
        output.status
    );
    assert!(
        stdout.starts_with("summary: 40 tasks in "),
        "quiet output starts with the summary\n{context}"
    );
    // The plan for 40 tasks: 2 divisions by zero and 1 unlucky 13 fail, the rest succeed.
    assert_eq!(summary_count(&stdout, "SUCCESS"), Some(37), "{context}");
    assert_eq!(summary_count(&stdout, "FAILURE"), Some(3), "{context}");
    assert!(
        stdout.contains("a never-sent id reads UNKNOWN"),
        "{context}"
    );
    assert!(
        stdout.contains("ok: all 40 tasks reached their expected state"),
        "{context}"
    );
}

#[test]
fn dev_fails_with_the_error_chain_when_the_given_server_is_unreachable() {
    // Port 1 on loopback refuses connections.
    let output = run_celerity(&["dev", "--tasks", "1", "--nats-url", "nats://127.0.0.1:1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert_eq!(output.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(
        stderr.contains("error: cannot connect the demo's producer: cannot connect to NATS at nats://127.0.0.1:1"),
        "stderr:\n{stderr}"
    );
}
