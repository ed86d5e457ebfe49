//! Test helpers: a NATS server per test, worker processes of the `it-worker` binary, and a client.
//!
//! Every wait has a deadline and a failure message that says what never happened.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use celerity::{Client, NatsConfig};
use celerity_testkit::NatsServer;

/// A fresh JetStream server on a free loopback port.
pub(crate) fn server() -> NatsServer {
    NatsServer::start()
        .expect("nats-server starts (install it with `apt-get install -y nats-server`)")
}

/// A producer connected to `url` with the test app's settings.
pub(crate) async fn client(url: &str) -> Client {
    celerity_it::app()
        .expect("the test app builds")
        .client(&NatsConfig::new(url))
        .await
        .expect("the client connects")
}

/// The `celerity` command, built beside the test binaries (`cargo nextest run --workspace` and
/// `cargo build` build it).
pub(crate) fn celerity_cli() -> PathBuf {
    let worker = PathBuf::from(env!("CARGO_BIN_EXE_it-worker"));
    let cli = worker.with_file_name("celerity");
    assert!(
        cli.exists(),
        "{} is missing: build it with `cargo build -p celerity-cli`",
        cli.display()
    );
    cli
}

/// Runs `celerity <args> --nats-url <url>` to its end.
pub(crate) fn run_celerity(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(celerity_cli())
        .args(args)
        .args(["--nats-url", url])
        .output()
        .expect("celerity runs")
}

/// A worker process of the test binary; killed on drop.
pub(crate) struct WorkerProcess {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
    pub(crate) hostname: String,
}

impl WorkerProcess {
    /// Starts `it-worker worker --nats-url <url> --hostname <hostname> <extra...>` and waits until
    /// it consumes and answers control requests.
    pub(crate) fn start(url: &str, hostname: &str, extra: &[&str]) -> Self {
        let worker = Self::spawn(url, hostname, extra, &[]);
        worker.wait_for_log("consuming", Duration::from_secs(30));
        worker.wait_for_log("answering control requests", Duration::from_secs(30));
        worker
    }

    /// Starts the process without waiting for it to consume.
    pub(crate) fn spawn(url: &str, hostname: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir for the worker log");
        let log = dir.path().join("worker.log");
        let log_file = std::fs::File::create(&log).expect("the worker log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_it-worker"));
        command
            .args([
                "worker",
                "--nats-url",
                url,
                "--hostname",
                hostname,
                "--loglevel",
                "info,celerity=debug",
            ])
            .args(extra)
            .env("IT_NATS_URL", url)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("it-worker starts");
        Self {
            child,
            log,
            _dir: dir,
            hostname: hostname.to_owned(),
        }
    }

    /// The worker's log so far.
    pub(crate) fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// Waits until the log contains `needle`.
    pub(crate) fn wait_for_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "worker {} never logged {needle:?} within {within:?}; log:\n{}",
            self.hostname,
            self.log()
        );
    }

    /// The process id.
    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` (libc constant) to the process.
    pub(crate) fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        let status = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(status, 0, "cannot signal worker {}", self.hostname);
    }

    /// True once the process has exited.
    pub(crate) fn has_exited(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("try_wait on the worker")
            .is_some()
    }

    /// Waits for the process to exit.
    pub(crate) fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait on the worker") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "worker {} did not exit within {within:?}; log:\n{}",
            self.hostname,
            self.log()
        );
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The test failed: what the worker saw is the first thing to read.
            eprintln!("--- log of worker {} ---\n{}", self.hostname, self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stream that collects `it.runs.>` publishes of the `track` task.
pub(crate) async fn runs_stream(url: &str) -> async_nats::jetstream::stream::Stream {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.expect("connect"));
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "IT_RUNS".into(),
        subjects: vec!["it.runs.>".into()],
        ..Default::default()
    })
    .await
    .expect("the IT_RUNS stream")
}

/// How many times each task id ran, from the `IT_RUNS` stream.
pub(crate) async fn run_counts(url: &str) -> std::collections::HashMap<String, usize> {
    let mut stream = runs_stream(url).await;
    let n_messages = stream.info().await.expect("stream info").state.messages;
    let mut counts = std::collections::HashMap::new();
    for sequence in 1..=n_messages {
        let message = stream
            .get_raw_message(sequence)
            .await
            .expect("a run record");
        let id = String::from_utf8(message.payload.to_vec()).expect("utf-8 task id");
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// Deadline helper for async conditions.
pub(crate) async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} never happened within {within:?}");
}

/// Publishes a hand-written task message (as a producer in another language would) to the
/// default queue at priority 0.
pub(crate) async fn publish_raw(client: &Client, headers: &[(&str, &str)], body: &[u8]) {
    let js = async_nats::jetstream::new(client.nats().clone());
    let mut map = async_nats::HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, *value);
    }
    js.publish_with_headers("celerity.q.default.0", map, body.to_vec().into())
        .await
        .expect("publish")
        .await
        .expect("the task is stored");
}

/// Publishes a hand-written JSON task message of `task` under `id` (version 1 headers).
pub(crate) async fn publish_json(client: &Client, task: &str, id: &str, body: &serde_json::Value) {
    let headers = [
        ("Celerity-Version", "1"),
        ("Celerity-Task", task),
        ("Celerity-Id", id),
    ];
    let body = serde_json::to_vec(body).expect("a JSON body");
    publish_raw(client, &headers, &body).await;
}

/// Waits until the default queue's stream holds no message: every task was acknowledged.
pub(crate) async fn wait_until_queue_is_empty(client: &Client, within: Duration) {
    let js = async_nats::jetstream::new(client.nats().clone());
    let queue = js
        .get_stream("CELERITY_Q_default")
        .await
        .expect("the default queue's stream");
    eventually("every message of the queue is acknowledged", within, || {
        let mut queue = queue.clone();
        async move {
            queue
                .info()
                .await
                .map(|info| info.state.messages == 0)
                .unwrap_or(false)
        }
    })
    .await;
}

/// Waits until the `hold` task `id` listens for its release, then releases it.
pub(crate) async fn release_held(client: &Client, url: &str, id: &str, within: Duration) {
    eventually("the held task listens for its release", within, || async {
        run_counts(url).await.contains_key(id)
    })
    .await;
    client
        .nats()
        .publish(format!("it.release.{id}"), "go".into())
        .await
        .expect("publish the release");
    client.nats().flush().await.expect("flush the release");
}
