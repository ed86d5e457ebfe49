//! The programs under `examples/`, each run end to end against its own server, with a deadline,
//! checking its exit status and the lines that show its pattern happened.
//!
//! The examples are packages of their own, so Cargo tells this crate nothing about their binaries.
//! The first test of a process to need one builds every example with one `cargo build` and takes
//! the binaries' paths from Cargo's artifact messages. Building here, rather than relying on an
//! earlier step of `scripts/test`, means a test never runs a stale binary, also when run alone
//! (`cargo nextest run -p celerity-it examples`). When the examples are up to date the build is a
//! no-op of well under a second; test processes that build at once wait on Cargo's own lock.
//! The list below is the one `scripts/test` builds last, so that build finds nothing to do.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::OnceCell;

use crate::support::server;

/// Every example package, built together.
const EXAMPLES: [&str; 9] = [
    "quickstart",
    "throughput",
    "etl_pipeline",
    "fan_in",
    "order_pipeline",
    "priorities",
    "rate_limited_api",
    "progress",
    "signals",
];
/// The variables Cargo sets for the package being built or tested (by prefix).
const PACKAGE_VARIABLES: [&str; 7] = [
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_CRATE_",
    "CARGO_BIN_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "OUT_DIR",
];
/// How long building the examples may take (from a clean target directory, on a loaded machine).
const BUILD_DEADLINE: Duration = Duration::from_secs(1800);
/// How long one example may run; each takes a few seconds.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// The path of example `name`'s binary, built once per test process.
async fn example_binary(name: &str) -> PathBuf {
    static BINARIES: OnceCell<HashMap<String, PathBuf>> = OnceCell::const_new();
    let binaries = BINARIES.get_or_init(build_examples).await;
    binaries
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("cargo built no binary named {name:?}: {binaries:?}"))
}

/// Builds every example with the cargo that built this test, and returns each binary's path.
async fn build_examples() -> HashMap<String, PathBuf> {
    let mut command = Command::new(env!("CARGO"));
    command.args([
        "build",
        "--message-format=json-render-diagnostics",
        "--manifest-path",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"),
    ]);
    for example in EXAMPLES {
        command.args(["-p", example]);
    }
    // This process has its own package's variables (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, ...).
    // Build scripts watch some of them (ring's do), so passing them on would rebuild those crates
    // here and again at the next build of the tests.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if PACKAGE_VARIABLES
            .iter()
            .any(|prefix| name.starts_with(prefix))
        {
            command.env_remove(name.as_ref());
        }
    }
    let output = run_to_completion(command, BUILD_DEADLINE, "cargo build of the examples").await;
    assert!(
        output.status.success(),
        "the examples do not build:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|message| {
            let name = message["target"]["name"].as_str()?.to_owned();
            let executable = message["executable"].as_str()?;
            Some((name, PathBuf::from(executable)))
        })
        .collect()
}

/// Runs `command` with its output captured, killing it at `deadline`.
async fn run_to_completion(mut command: Command, deadline: Duration, what: &str) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("{what} cannot start: {error}"));
    let (mut stdout, mut stderr) = (
        child.stdout.take().expect("stdout is piped"),
        child.stderr.take().expect("stderr is piped"),
    );
    let read_stdout = tokio::spawn(async move {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes).await;
        bytes
    });
    let read_stderr = tokio::spawn(async move {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes).await;
        bytes
    });
    let status = tokio::time::timeout(deadline, child.wait()).await;
    if status.is_err() {
        let _ = child.kill().await;
    }
    // The pipes close when the process and any child it left behind are gone.
    let collect = async { (read_stdout.await, read_stderr.await) };
    let (stdout, stderr) = match tokio::time::timeout(Duration::from_secs(10), collect).await {
        Ok((Ok(stdout), Ok(stderr))) => (stdout, stderr),
        _ => (Vec::new(), b"(the output could not be read)".to_vec()),
    };
    let Ok(status) = status else {
        panic!(
            "{what} did not finish within {deadline:?}; stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    Output {
        status: status.unwrap_or_else(|error| panic!("{what} cannot be waited on: {error}")),
        stdout,
        stderr,
    }
}

/// Runs `example run` against a fresh server, with the URL in `--nats-url`, and returns what it
/// printed once it has exited with success.
async fn run_example(name: &str) -> String {
    let server = server();
    let mut command = Command::new(example_binary(name).await);
    command.args(["run", "--nats-url", &server.url()]);
    successful_output(command, name).await
}

/// Runs `command` to completion and returns its standard output, asserting that it succeeded.
async fn successful_output(command: Command, what: &str) -> String {
    let output = run_to_completion(command, RUN_DEADLINE, what).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}); stdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Asserts that `output` has every one of `lines` (each a whole line or a part of one).
fn assert_prints(output: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            output.contains(line),
            "the output lacks {line:?}; it is:\n{output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etl_pipeline_walks_back_from_the_result_through_every_step() {
    let output = run_example("etl_pipeline").await;
    assert_prints(
        &output,
        &[
            "result: 4 rows, 54.00 in all, loaded into warehouse",
            "    etl.load_data: SUCCESS {\"destination\":\"warehouse\",\"rows\":4,\"total_cents\":5400}",
            "    etl.transform_data: SUCCESS after 1 retry [",
            "    etl.extract_data: SUCCESS [",
            "result: the chain failed: row 5 (\"margaret; 19.99\") is not `name, amount`",
            ": FAILURE (an earlier step of the chain failed) ",
            "    etl.transform_data: FAILURE after 1 retry ",
        ],
    );
    assert_eq!(
        output
            .matches("walked back 2 parents to the first step")
            .count(),
        2,
        "both chains are walked back to their first step:\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_aggregates_every_chunk_in_the_chord_body() {
    // This one takes the URL from the environment, as a user's shell would give it.
    let server = server();
    let mut command = Command::new(example_binary("fan_in").await);
    command.arg("run").env("CELERITY_NATS_URL", server.url());
    let output = successful_output(command, "fan_in").await;
    assert_prints(
        &output,
        &[
            "chord: process_chunk over 20 chunks of 5000 of 100000 numbers -> aggregate_results",
            "aggregate_results = 333338333350000 in ",
            "the chord's sum matches",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_pipeline_routes_each_step_by_content_and_name() {
    let output = run_example("order_pipeline").await;
    assert_prints(
        &output,
        &[
            "order 1001 (bob, 89.50): orders.verify_inventory on default-worker, orders.process_payment on default-worker, orders.notify_customer on notifications-worker",
            "order 1002 (alice, 4200.00): orders.verify_inventory on high-worker, orders.process_payment on high-worker, orders.notify_customer on notifications-worker",
            "order 1003 (carol, 249.00): orders.verify_inventory on default-worker, orders.process_payment on default-worker, orders.notify_customer on notifications-worker",
            "analytics.summarize_sales on analytics-worker: 3 orders, 4538.50 in all",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_start_premium_work_first() {
    let output = run_example("priorities").await;
    assert_prints(
        &output,
        &[
            "the priority-9 job started first on the premium queue, before the priority-8 ones",
            "premium work started first: its last job started at +",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_api_slows_down_when_its_limit_is_lowered_at_runtime() {
    let output = run_example("rate_limited_api").await;
    assert_prints(
        &output,
        &[
            "api-worker limits tasks.call_external_api to 10/s",
            "api-worker limits tasks.call_external_api to 5/s",
            "the change took effect: ",
        ],
    );
    let rate_after = output
        .lines()
        .find_map(|line| line.strip_prefix("after: the API served 10 calls in "))
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|rate| rate.strip_suffix(" calls/s"))
        .and_then(|rate| rate.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("the output has no rate after the change:\n{output}"));
    assert!(
        rate_after <= 5.5,
        "the API saw {rate_after} calls/s under a limit of 5/s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_states_are_read_by_another_process_while_the_task_runs() {
    let output = run_example("progress").await;
    assert_prints(
        &output,
        &[
            "  watcher: VALIDATING step 1/3",
            "  watcher: PROCESSING step 2/3",
            "  watcher: UPLOADING step 3/3",
            "  watcher: SUCCESS complete: 3 rows at https://files.example.com/reports/",
            "the watcher saw every custom state in order: VALIDATING, PROCESSING, UPLOADING",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_count_every_order_and_alert_on_the_declined_one() {
    let output = run_example("signals").await;
    assert_prints(
        &output,
        &[
            "worker signals ready on default",
            "order 3: ",
            "task_started{task=tasks.charge_order} 5",
            "task_completed{task=tasks.charge_order,state=SUCCESS} 4",
            "task_completed{task=tasks.charge_order,state=FAILURE} 1",
            "alert (error): Task tasks.charge_order failed: card declined for order 3",
            "the signals counted every order and alerted on the declined one",
        ],
    );
}

/// Starts `example worker` against `url`; killed when dropped.
async fn start_worker(example: &str, url: &str) -> tokio::process::Child {
    Command::new(example_binary(example).await)
        .args(["worker", "--nats-url", url, "-c", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("the {example} worker cannot start: {error}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_sends_to_its_worker_process_and_prints_the_sum() {
    let server = server();
    let _worker = start_worker("quickstart", &server.url()).await;
    let mut send = Command::new(example_binary("quickstart").await);
    send.args(["send", "2", "3"])
        .env("CELERITY_NATS_URL", server.url());
    let output = successful_output(send, "quickstart send").await;
    assert_prints(&output, &["2 + 3 = 5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_gets_every_result_from_its_worker_process() {
    let server = server();
    let worker = start_worker("throughput", &server.url()).await;
    let pid = worker.id().expect("the worker runs").to_string();
    let mut send = Command::new(example_binary("throughput").await);
    send.args(["send", "200", &pid])
        .env("CELERITY_NATS_URL", server.url());
    let output = successful_output(send, "throughput send").await;
    assert_prints(
        &output,
        &[
            "200 no-op tasks with results: published in ",
            "worker memory after: VmHWM: ",
        ],
    );
}
