//! The bench's task types and its worker process (`celerity bench-worker`, hidden), which runs
//! them in a process of its own so its memory can be read.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use celerity::telemetry::Telemetry;

/// The hostname of the bench's worker.
pub(crate) const WORKER_HOSTNAME: &str = "bench-worker";
/// The queue the publish figure sends to; no worker consumes it.
pub(crate) const PUBLISH_QUEUE: &str = "bench_publish";

/// Does nothing; its result (null) is stored.
#[celerity::task(name = "bench.noop")]
pub(crate) async fn noop() {}

/// Does nothing and stores no result.
#[celerity::task(name = "bench.noop_ignored", ignore_result)]
pub(crate) async fn noop_ignored() {}

/// Returns `1`: a chord or group member.
#[celerity::task(name = "bench.one")]
pub(crate) async fn one() -> u64 {
    1
}

/// Adds up a chord header's results.
#[celerity::task(name = "bench.total")]
pub(crate) async fn total(values: Vec<u64>) -> u64 {
    values.iter().sum()
}

/// A chain step: appends the time it started (microseconds since the epoch) to the times of the
/// steps before it.
#[celerity::task(name = "bench.step")]
pub(crate) async fn step(mut started: Vec<u64>) -> Vec<u64> {
    started.push(now_us());
    started
}

/// Returns the time it started (microseconds since the epoch).
#[celerity::task(name = "bench.stamp")]
pub(crate) async fn stamp() -> u64 {
    now_us()
}

/// Microseconds since the Unix epoch: comparable between the bench and its worker process.
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}

/// The bench's app: its task types, on the default settings.
pub(crate) fn app() -> anyhow::Result<celerity::App> {
    builder().build().context("the bench app is invalid")
}

/// The bench's task types.
fn builder() -> celerity::AppBuilder {
    celerity::App::builder()
        .task(noop)
        .task(noop_ignored)
        .task(one)
        .task(total)
        .task(step)
        .task(stamp)
}

/// The bench's producer app, sending `task-sent` events or not, with `replicas` copies of every
/// stream and bucket it makes, and tracing to the bench's sink or not at all.
pub(crate) fn app_with(
    sent_events: bool,
    replicas: usize,
    tracing: Option<&super::sink::Tracing>,
) -> anyhow::Result<celerity::App> {
    let telemetry = match tracing {
        Some(tracing) => Telemetry::otlp_http_sampled(&tracing.endpoint, tracing.ratio)
            .context("cannot trace to the bench's sink")?,
        None => Telemetry::disabled(),
    };
    builder()
        .send_sent_events(sent_events)
        .replicas(replicas)
        .telemetry(telemetry)
        .build()
        .context("the bench app is invalid")
}

/// The variables that could make the bench's worker trace.
const OTEL_VARIABLES: [&str; 6] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED",
];

/// The bench's worker, a child process running `celerity bench-worker`; killed on drop.
pub(crate) struct WorkerProcess {
    child: Child,
    log: PathBuf,
}

impl WorkerProcess {
    /// Starts the worker on `url` (one server, or a cluster's comma-separated) with the bench's
    /// slots and replicas (and without events when the bench runs so), logging to `dir`, and
    /// waits until it answers a ping.
    pub(crate) async fn start(
        url: &str,
        sizes: &super::report::Sizes,
        dir: &Path,
        client: &celerity::Client,
        tracing: Option<&super::sink::Tracing>,
    ) -> anyhow::Result<Self> {
        let concurrency = sizes.concurrency.to_string();
        let replicas = sizes.replicas.to_string();
        let without_events = (!sizes.events).then_some("--without-events");
        let log = dir.join("bench-worker.log");
        let log_file = std::fs::File::create(&log).context("cannot create the worker's log")?;
        let executable = std::env::current_exe().context("cannot find the celerity executable")?;
        let mut command = Command::new(executable);
        // Traced as the bench says, whatever the environment says.
        for variable in OTEL_VARIABLES {
            command.env_remove(variable);
        }
        if let Some(tracing) = tracing {
            command
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", &tracing.endpoint)
                .env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
                .env("OTEL_TRACES_SAMPLER_ARG", tracing.ratio.to_string());
        }
        let child = command
            .args([
                "bench-worker",
                "--nats-url",
                url,
                "--hostname",
                WORKER_HOSTNAME,
                "--concurrency",
                &concurrency,
                "--replicas",
                &replicas,
            ])
            .args(without_events)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(
                log_file
                    .try_clone()
                    .context("cannot share the worker's log")?,
            )
            .stderr(log_file)
            .spawn()
            .context("cannot start the bench worker")?;
        let mut worker = Self { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pinged = client
                .control()
                .ping(Some(WORKER_HOSTNAME), Duration::from_millis(500))
                .await;
            if pinged.is_ok_and(|replies| !replies.is_empty()) {
                return Ok(worker);
            }
            if let Some(status) = worker.child.try_wait()? {
                bail!("the bench worker exited ({status}): {}", worker.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "the bench worker did not answer within 30 s: {}",
                    worker.log_tail()
                );
            }
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the worker has exited, with the end of its log.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("the bench worker exited ({status}): {}", self.log_tail()),
            None => Ok(()),
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's resident memory in bytes: now (`VmRSS`) and its peak (`VmHWM`), from `/proc`.
pub(crate) fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = procfs::process::Process::new(pid.try_into().ok()?)
        .ok()?
        .status()
        .ok()?;
    Some((status.vmrss? * 1024, status.vmhwm? * 1024))
}
