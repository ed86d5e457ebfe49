//! The dashboard in a real browser: headless Chromium driven by Playwright
//! (`tests/browser/run.mjs`) against a dashboard, a worker and a NATS server of the test.
//!
//! Each test runs one scenario of `run.mjs`. A scenario prints `READY <step>` when it needs the
//! test to act (send a task, dead-letter one) and goes on when the test writes `GO <words>` to
//! its stdin; it exits 0 after `PASS <scenario>`. Closing its stdin aborts it: it closes Chromium
//! and removes its profile, which is how a failed test ends it. A missing (or too old) Node.js,
//! Chromium or playwright-core fails the test with what is missing: `scripts/ensure-browser`
//! (which `scripts/test` runs) installs all three.
//!
//! With `CELERITY_DASHBOARD_SHOTS=<dir>`, the scenarios save their screenshots there
//! (`docs/dashboard/*.png` are made so).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use celerity::Chord;
use celerity_dashboard::{Credentials, Dashboard};
use celerity_it::{add, slow_add, sum_all};
use serde_json::Value;

use crate::dashboard::{call, start};
use crate::support::{WorkerProcess, client, eventually, publish_json, runs_stream, server};

const WAIT: Duration = Duration::from_secs(60);

/// How long a scenario whose stdin closed may take to close its browser before it is killed.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// The oldest Node.js the pinned playwright-core runs on.
const NODE_MAJOR_MIN: u32 = 18;

/// A running `node run.mjs <scenario>`.
struct Scenario {
    name: String,
    child: Child,
    /// `None` once closed, which asks the scenario to end.
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Fails with what is missing when the browser toolchain is incomplete.
fn check_toolchain() {
    const FIX: &str = "run `scripts/ensure-browser` to install it";
    let node = Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    let Some(node) = node else {
        panic!("node (Node.js) is missing: {FIX} (Debian's nodejs and npm)");
    };
    let major = node
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|major| major.parse::<u32>().ok());
    assert!(
        major.is_some_and(|major| major >= NODE_MAJOR_MIN),
        "node {node} is too old for playwright-core, which needs Node.js {NODE_MAJOR_MIN} or newer: \
         install a newer nodejs, then run `scripts/ensure-browser`"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} (Chromium) is missing: {FIX} (Debian's chromium), or set CHROMIUM"
    );
    let version_in = |path: PathBuf, pointer: &str| {
        let text = std::fs::read_to_string(path).ok()?;
        let json: Value = serde_json::from_str(&text).ok()?;
        json.pointer(pointer)?.as_str().map(str::to_owned)
    };
    let locked = version_in(
        browser_dir().join("package-lock.json"),
        "/packages/node_modules~1playwright-core/version",
    )
    .expect("tests/browser/package-lock.json pins playwright-core");
    let installed = version_in(
        browser_dir().join("node_modules/playwright-core/package.json"),
        "/version",
    );
    match installed {
        None => panic!("playwright-core is missing from tests/browser/node_modules: {FIX}"),
        Some(installed) => assert_eq!(
            installed, locked,
            "tests/browser/node_modules has playwright-core {installed}, but the lock pins \
             {locked}: run `scripts/ensure-browser` to install the pinned one"
        ),
    }
}

impl Scenario {
    /// Starts scenario `name` against the dashboard at `base`, with `extra` arguments.
    fn start(name: &str, base: &str, extra: &[&str]) -> Self {
        check_toolchain();
        let dir = tempfile::tempdir().expect("a temp dir for the scenario's stderr");
        let stderr = dir.path().join("stderr.log");
        let mut command = Command::new("node");
        command
            .current_dir(browser_dir())
            .args(["run.mjs", name, "--url", base])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("the stderr file"));
        if let Some(shots) = std::env::var_os("CELERITY_DASHBOARD_SHOTS") {
            command.arg("--shots").arg(shots);
        }
        let mut child = command.spawn().expect("node starts");
        let stdin = child.stdin.take().expect("the scenario's stdin");
        let stdout = child.stdout.take().expect("the scenario's stdout");
        let (sender, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            name: name.to_owned(),
            child,
            stdin: Some(stdin),
            lines,
            stderr,
            _dir: dir,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for the line `want` (or the scenario's end, which fails the test).
    fn expect_line(&mut self, want: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.trim() == want => return,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!(
                    "scenario {} never printed {want:?} within {within:?}; stderr:\n{}",
                    self.name,
                    self.stderr()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "scenario {} ended without printing {want:?}; stderr:\n{}",
                    self.name,
                    self.stderr()
                ),
            }
        }
    }

    /// Waits until the scenario is at `step`.
    fn ready(&mut self, step: &str) {
        self.expect_line(&format!("READY {step}"), WAIT);
    }

    /// Lets the scenario go on, with `words`.
    fn go(&mut self, words: &[&str]) {
        let line = format!("GO {}\n", words.join(" "));
        let stdin = self.stdin.as_mut().expect("the scenario's stdin is open");
        stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
            .expect("the scenario reads its stdin");
    }

    /// Waits for `PASS <scenario>` and a clean exit.
    fn pass(mut self) {
        let name = self.name.clone();
        self.expect_line(&format!("PASS {name}"), Duration::from_secs(120));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.child.try_wait().expect("the scenario's status") {
                Some(status) => {
                    assert!(
                        status.success(),
                        "{name} exited {status}: {}",
                        self.stderr()
                    );
                    return;
                }
                None if Instant::now() > deadline => panic!("{name} did not exit after PASS"),
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for Scenario {
    /// Closes the scenario's stdin, so it closes its browser and removes the browser's profile,
    /// and kills it only when it has not exited within [`CLOSE_WITHIN`]: a killed node leaves its
    /// Chromium running.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + CLOSE_WITHIN;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                // No event tells when a child exits; poll its status against the deadline.
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server, a worker and a dashboard configured by `configure`.
struct Cluster {
    _server: celerity_testkit::NatsServer,
    worker: WorkerProcess,
    client: celerity::Client,
    dashboard: Option<Dashboard>,
    base: String,
}

impl Cluster {
    async fn start(
        hostname: &str,
        configure: impl FnOnce(&mut celerity_dashboard::DashboardConfig),
    ) -> Self {
        Self::start_with_worker_args(hostname, &[], configure).await
    }

    /// As [`Cluster::start`], with `worker_args` on the worker's command line.
    async fn start_with_worker_args(
        hostname: &str,
        worker_args: &[&str],
        configure: impl FnOnce(&mut celerity_dashboard::DashboardConfig),
    ) -> Self {
        let server = server();
        let url = server.url();
        // `it.total`, the chords' body, records its runs there.
        runs_stream(&url).await;
        let worker = WorkerProcess::start(&url, hostname, worker_args);
        let client = client(&url).await;
        let (dashboard, base) = start(&url, configure).await;
        // Dashboard::start returns before its NATS connection is made.
        eventually("the dashboard connects to NATS", WAIT, || async {
            let overview = call(&base, "GET", "/api/overview", &[], None).await;
            overview.status == 401 || overview.body["nats"]["connected"] == true
        })
        .await;
        Self {
            _server: server,
            worker,
            client,
            dashboard: Some(dashboard),
            base,
        }
    }

    /// Waits until the dashboard's task page shows task `id` in `state`.
    async fn seen(&self, id: &str, state: &str) {
        eventually(
            &format!("the dashboard shows {id} {state}"),
            WAIT,
            || async {
                let task = call(&self.base, "GET", &format!("/api/tasks/{id}"), &[], None).await;
                task.body["state"] == state
            },
        )
        .await;
    }

    async fn stop(mut self) {
        if let Some(dashboard) = self.dashboard.take() {
            dashboard.stop().await;
        }
    }
}

/// A chord of `members` slow adds, member `i` sleeping `sleep_ms(i)`; returns its body's id once
/// it has been sent.
async fn send_chord(
    client: &celerity::Client,
    members: u64,
    sleep_ms: impl Fn(u64) -> u64,
) -> String {
    let chord = Chord::new(
        (0..members).map(|i| slow_add.s((i as i64, 1, sleep_ms(i)))),
        sum_all.s(()),
    );
    let body = chord.apply_async(client).await.expect("the chord is sent");
    body.id().to_string()
}

/// The canvas root of the only chord of `it.slow_add` members, once the dashboard has seen one of
/// them: the chord's own id, which every member carries as its root.
// NOTE: the chord's handle (an `AsyncResult`) knows its root but has no public getter for it, and
// the body's record (which names it too) exists only after the header is done; so the root comes
// from a header member, which the dashboard sees as soon as it is sent.
async fn header_root(base: &str) -> String {
    let root = std::sync::Mutex::new(None);
    eventually(
        "the dashboard knows a chord member's root",
        WAIT,
        || async {
            let page = call(base, "GET", "/api/tasks?name=it.slow_add", &[], None).await;
            let found = page.body["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|task| task["root_id"].as_str().map(str::to_owned));
            let known = found.is_some();
            *root.lock().expect("the root's lock") = found;
            known
        },
    )
    .await;
    root.into_inner().expect("the root's lock").expect("a root")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_with_live_data_and_no_console_error() {
    let cluster = Cluster::start("browser-w1", |_| {}).await;
    let sum = send_chord(&cluster.client, 12, |_| 20).await;
    let done = add.delay(&cluster.client, 2, 3).await.expect("add is sent");
    let failing = celerity_it::fail
        .delay(&cluster.client, "browser test".to_owned())
        .await
        .expect("fail is sent");
    let body = serde_json::json!({"args": []});
    publish_json(&cluster.client, "it.nope", "browser-unknown", &body).await;
    for (id, state) in [
        (sum.as_str(), "SUCCESS"),
        (done.id().as_str(), "SUCCESS"),
        (failing.id().as_str(), "FAILURE"),
    ] {
        cluster.seen(id, state).await;
    }
    let scenario = Scenario::start("pages", &cluster.base, &["--task", &sum]);
    scenario.pass();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_sent_after_the_page_opened_appears_without_a_reload() {
    let cluster = Cluster::start("browser-w2", |_| {}).await;
    let mut scenario = Scenario::start("live-task", &cluster.base, &[]);
    scenario.ready("publish");
    let sent = add
        .delay(&cluster.client, 20, 22)
        .await
        .expect("add is sent");
    scenario.go(&[sent.id().as_str()]);
    scenario.pass();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_graph_colours_its_nodes_live_until_all_succeed() {
    const MEMBERS: u64 = 8;
    // Every member runs at once, whatever the machine's CPU count, so they end in sleep order.
    let concurrency = MEMBERS.to_string();
    let worker_args = ["--concurrency", concurrency.as_str()];
    let cluster = Cluster::start_with_worker_args("browser-w3", &worker_args, |_| {}).await;
    let mut scenario = Scenario::start("chord", &cluster.base, &[]);
    scenario.ready("chord");
    // The first member ends 3 s after the send, time enough for the page to open on a header
    // still running; the others end 300 ms apart, so the page sees the count climb.
    let body = send_chord(&cluster.client, MEMBERS, |i| 3_000 + 300 * i).await;
    let root = header_root(&cluster.base).await;
    scenario.go(&[&root, &body, &MEMBERS.to_string()]);
    scenario.pass();
    let result = cluster.client.async_result::<i64>(&body).unwrap();
    assert_eq!(
        result.get(WAIT).await.unwrap(),
        (0..MEMBERS as i64).map(|i| i + 1).sum::<i64>()
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_set_on_the_queues_page_is_in_force_on_the_worker() {
    let cluster = Cluster::start("browser-w4", |_| {}).await;
    let mut scenario = Scenario::start("rate-limit", &cluster.base, &[]);
    scenario.ready("rate-limit");
    scenario.go(&["it.add", &cluster.worker.hostname]);
    scenario.ready("applied");
    let replies = cluster
        .client
        .control()
        .send(
            celerity_proto::ControlCommand::Registered,
            Some(&cluster.worker.hostname),
            WAIT,
        )
        .await
        .expect("the worker answers registered");
    let registered: celerity_proto::RegisteredResult = replies[0]
        .result_as()
        .expect("registered has a result")
        .expect("registered's result reads");
    assert_eq!(
        registered.rate_limits.get("it.add").map(String::as_str),
        Some("7/s"),
        "{registered:?}"
    );
    scenario.go(&[]);
    scenario.pass();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_requeued_from_its_page_runs_to_success() {
    let cluster = Cluster::start("browser-w5", |_| {}).await;
    crate::dead_letter_ops::runnable_letter(&cluster.client, "browser-letter").await;
    let letters = call(&cluster.base, "GET", "/api/dead-letters", &[], None).await;
    let seq = letters.body["letters"][0]["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("a letter: {:?}", letters.body))
        .to_string();
    let mut scenario = Scenario::start("dead-letter", &cluster.base, &[]);
    scenario.ready("dead-letter");
    scenario.go(&[&seq, "browser-letter"]);
    scenario.pass();
    let result = cluster
        .client
        .async_result::<i64>("browser-letter")
        .unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), 3);
    cluster.stop().await;
}

fn with_admin(config: &mut celerity_dashboard::DashboardConfig) {
    let mut credentials = Credentials::default();
    credentials
        .add_user("admin:browser-s3cret")
        .expect("valid credentials");
    config.credentials = credentials;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_form_refuses_a_wrong_password_and_lets_the_right_one_in() {
    let cluster = Cluster::start("browser-w6", with_admin).await;
    let anonymous = call(&cluster.base, "GET", "/api/overview", &[], None).await;
    assert_eq!(anonymous.status, 401, "{:?}", anonymous.body);
    let args = ["--user", "admin", "--password", "browser-s3cret"];
    Scenario::start("login", &cluster.base, &args).pass();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_dashboard_shows_its_badge_and_no_control() {
    let cluster = Cluster::start("browser-w7", |config| {
        with_admin(config);
        config.read_only = true;
    })
    .await;
    let args = ["--user", "admin", "--password", "browser-s3cret"];
    Scenario::start("read-only", &cluster.base, &args).pass();
    cluster.stop().await;
}
