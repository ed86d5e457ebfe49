//! End-to-end test of `celerity dev`: runs the built binary against the nats-server it starts
//! itself and checks its summary and exit status.
//!
//! It needs `nats-server` installed, like every integration test in the workspace.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long the demo may run before the test kills it.
const DEADLINE: Duration = Duration::from_secs(60);

/// Starts `celerity <args>` with piped output.
fn spawn_celerity(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_celerity"))
        .args(args)
        // A URL in the environment would make the demo use that server instead of its own.
        .env_remove("CELERITY_NATS_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run the celerity binary")
}

/// Runs `celerity <args>` with its own server, killing it if it outlives [`DEADLINE`].
fn run_celerity(args: &[&str]) -> Output {
    let mut child = spawn_celerity(args);
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

/// Reads the dashboard's JSON at `path`, or `None` while it does not answer 200.
fn dashboard_json(base: &str, path: &str) -> Option<Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let text = agent
        .get(&format!("{base}{path}"))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    serde_json::from_str(&text).ok()
}

/// Waits until `check` holds, polling every 200 ms, or panics after `deadline` with `what`.
fn wait_for(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < deadline, "{what} within {deadline:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn dev_keep_running_serves_the_dashboard_with_the_worker_and_a_chord_until_ctrl_c() {
    let mut child = spawn_celerity(&[
        "dev",
        "--tasks",
        "20",
        "--dashboard-port",
        "0",
        "--keep-running",
    ]);
    let (lines, received) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let mut printed = Vec::new();
    // The URL the demo prints is how a user finds the dashboard.
    let base = loop {
        let line = received.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            panic!(
                "no dashboard URL printed; stdout so far:\n{}",
                printed.join("\n")
            )
        });
        // `dashboard at http://127.0.0.1:<port>/: open it ...`
        if let Some(url) = line
            .strip_prefix("dashboard at ")
            .and_then(|rest| rest.split_whitespace().next())
        {
            break url.trim_end_matches(':').to_owned();
        }
        printed.push(line);
    };
    wait_for(
        "the dashboard shows the worker online and the batch",
        DEADLINE,
        || {
            dashboard_json(&base, "api/overview").is_some_and(|overview| {
                overview["workers"]["online"] == 1
                    && overview["tasks"]["stored"].as_u64() > Some(20)
            })
        },
    );
    wait_for("a trickled chord's body succeeded", DEADLINE, || {
        dashboard_json(&base, "api/tasks?name=demo.total&state=SUCCESS")
            .is_some_and(|page| page["total"].as_u64() >= Some(1))
    });

    // Ctrl-C: the demo stops the worker and the dashboard and prints the batch's summary.
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    // SAFETY: kill has no memory effects; the pid is our own child, not yet waited for.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0, "SIGINT sent");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("cannot check the demo's exit") {
            break status;
        }
        assert!(started.elapsed() < DEADLINE, "the demo stops on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    // The reader ends at the end of the output, which follows the exit.
    let mut rest = Vec::new();
    while let Ok(line) = received.recv_timeout(DEADLINE) {
        rest.push(line);
    }
    let stdout = rest.join("\n");
    assert!(status.success(), "exit status {status}\n{stdout}");
    assert!(
        stdout.contains("ok: all 20 tasks reached their expected state"),
        "{stdout}"
    );
    assert!(
        dashboard_json(&base, "api/overview").is_none(),
        "the dashboard stopped with the demo"
    );
}
