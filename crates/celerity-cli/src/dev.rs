//! `celerity dev`: the all-in-one local demo.
//!
//! It starts a nats-server (or uses the one given), a worker, the dashboard and a producer in this
//! process, sends a few hundred tasks of the kinds in `demo`, prints each ending as it arrives and
//! a summary, and shuts the worker down warm; with `--keep-running` the worker and the dashboard
//! stay up, fed a few tasks a second, until Ctrl-C. It is a showcase, not a way to run workers:
//! that is `celerity::cli`.

mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use celerity::cli::NatsArgs;
use celerity::{AsyncResult, Client, NatsConfig, Shutdown, TaskState, WorkerConfig, WorkerHandle};
use celerity_testkit::NatsServer;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::demo::{self, Ending, Job};

/// The hostname of the in-process worker.
const WORKER_HOSTNAME: &str = "dev-worker";
/// How often a progress task's state is read while it runs.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// How long a warm shutdown may take before the demo gives up on it.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the cold shutdown after an error or an interrupt may take. A Ctrl-C in a terminal also
/// reaches the local nats-server, and a worker whose server is gone waits out its flush deadlines.
const ABORTED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// How many tasks with an unexpected ending the summary lists.
const MAX_LISTED: usize = 10;

/// The default log filter: warnings, except the worker's reports of failed tasks, which the demo
/// prints as FAILURE lines already.
pub(crate) const DEFAULT_LOG_FILTER: &str = "warn,celerity::worker::execute=error";

/// `celerity dev` flags.
#[derive(Debug, Clone, Args)]
#[command(mut_arg("url", |arg| arg
    .hide_default_value(true)
    .help("Use this NATS server (URLs comma-separated) instead of starting a local nats-server")))]
pub(crate) struct DevArgs {
    /// Tasks to send, of mixed kinds (add, fib, divide, unlucky, progress).
    #[arg(long = "tasks", default_value_t = 300)]
    tasks: usize,
    /// Tasks the worker runs at once.
    #[arg(short = 'c', long = "concurrency", default_value_t = 8)]
    concurrency: usize,
    /// Seconds to wait for each task's result.
    #[arg(long = "timeout", default_value_t = 60)]
    timeout_secs: u64,
    /// Print only the summary.
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// Port of the dashboard on 127.0.0.1 (a free one when another program holds it; 0 picks one).
    #[arg(long = "dashboard-port", default_value_t = 5555)]
    dashboard_port: u16,
    /// Start no dashboard.
    #[arg(long = "no-dashboard", conflicts_with = "dashboard_port")]
    no_dashboard: bool,
    /// After the batch, keep the worker and the dashboard up with a few tasks a second, until Ctrl-C.
    #[arg(long = "keep-running")]
    keep_running: bool,
    /// NATS connection, used only when a URL is given.
    #[command(flatten)]
    nats: NatsArgs,
    /// Whether the URL came from the command line or the environment, not from the default.
    #[arg(skip)]
    nats_url_given: bool,
}

impl DevArgs {
    /// Records which values the user gave, which clap's derive does not keep.
    pub(crate) fn note_value_sources(&mut self, matches: &ArgMatches) {
        self.nats_url_given = matches!(
            matches.value_source("url"),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
    }

    /// Whether any authentication or TLS flag is set.
    fn has_auth_flags(&self) -> bool {
        let nats = &self.nats;
        nats.user.is_some()
            || nats.token.is_some()
            || nats.nkey.is_some()
            || nats.creds.is_some()
            || nats.tls_ca.is_some()
            || nats.tls_cert.is_some()
    }

    /// Whether to use the server the user named instead of starting one.
    pub(crate) fn uses_given_server(&self) -> bool {
        self.nats_url_given
    }
}

/// Runs the demo; returns whether every task reached its expected state and the worker stopped.
///
/// # Errors
/// When the server, the producer or the worker cannot start, a task cannot be sent, or the user
/// interrupts the demo.
pub(crate) async fn run(args: DevArgs) -> anyhow::Result<bool> {
    demo::hide_intended_panics();
    let app = demo::app().context("the demo app is invalid")?;
    let verbosity = match args.quiet {
        true => Verbosity::Quiet,
        false => Verbosity::Progress,
    };
    let mut console = Console::new(verbosity);

    let server = start_server_unless_given(&args).await?;
    let nats = match &server {
        Some(server) => NatsConfig::new(server.url()),
        None => args.nats.config(),
    };
    match &server {
        Some(server) => console.line(format_args!(
            "started nats-server at {} (JetStream store {})",
            server.url(),
            server.store_dir().display()
        ))?,
        None => console.line(format_args!("using NATS at {}", nats.url()))?,
    }
    let dashboard = start_dashboard(&args, &nats, &mut console).await?;

    // The producer connects first: it fails fast on a bad URL, where the worker would retry forever.
    let client = app
        .client(&nats)
        .await
        .context("cannot connect the demo's producer")?;
    let worker_config = WorkerConfig::new()
        .hostname(WORKER_HOSTNAME)
        .concurrency(args.concurrency);
    let worker_app = app.clone();
    // `spawn` blocks until the worker consumes, so it runs off the async threads.
    let worker = tokio::task::spawn_blocking(move || {
        celerity::worker::spawn(worker_app, nats, worker_config)
    })
    .await
    .context("the worker's start was cancelled")?
    .context("cannot start the demo worker")?;
    console.line(format_args!(
        "started worker {WORKER_HOSTNAME} with {} slots; sending {} tasks",
        args.concurrency, args.tasks
    ))?;

    let outcome = tokio::select! {
        outcome = send_and_report(&client, &args, &mut console) => outcome,
        Ok(()) = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    let url = dashboard.as_ref().map(|started| started.dashboard.url());
    let (outcome, shutdown) = match outcome {
        Ok(report) if args.keep_running => {
            let kept = keep_running(&client, &args, url.as_deref(), &mut console).await;
            // A Ctrl-C in a terminal reaches the local nats-server too: no warm shutdown then.
            (kept.map(|()| report), Shutdown::Cold)
        }
        Ok(report) => (Ok(report), Shutdown::Warm),
        Err(error) => (Err(error), Shutdown::Cold),
    };
    let stopped = match shutdown {
        Shutdown::Warm => stop_worker(worker, shutdown, SHUTDOWN_TIMEOUT).await,
        _ => stop_worker(worker, shutdown, ABORTED_SHUTDOWN_TIMEOUT).await,
    };
    drop(client);
    if let Some(started) = dashboard {
        started.dashboard.stop().await;
    }
    if let Some(mut server) = server {
        // A failure to stop is not the demo's result: the server is killed on drop anyway.
        let _ = tokio::task::spawn_blocking(move || server.stop()).await;
    }
    let report = outcome?;
    let ok = report.print_summary(&mut console, shutdown, &stopped)?;
    Ok(ok && stopped.is_ok())
}

/// Starts the dashboard and prints its URL, unless `--no-dashboard`.
async fn start_dashboard(
    args: &DevArgs,
    nats: &NatsConfig,
    console: &mut Console,
) -> anyhow::Result<Option<watch::Started>> {
    if args.no_dashboard {
        return Ok(None);
    }
    let started = watch::start_dashboard(nats, args.dashboard_port).await?;
    let taken = match started.port_taken {
        true => format!(" (port {} is taken)", args.dashboard_port),
        false => String::new(),
    };
    console.line(format_args!(
        "dashboard at {}{taken}: open it to watch the tasks",
        started.dashboard.url()
    ))?;
    Ok(Some(started))
}

/// Starts a local nats-server unless the user named one.
async fn start_server_unless_given(args: &DevArgs) -> anyhow::Result<Option<NatsServer>> {
    if args.uses_given_server() {
        return Ok(None);
    }
    if args.has_auth_flags() {
        tracing::warn!("the --nats-* auth flags apply only with --nats-url; ignoring them");
    }
    start_local_server().await.map(Some)
}

/// Keeps the worker and the dashboard up, sending a few tasks a second, until Ctrl-C.
///
/// # Errors
/// When a task cannot be sent.
async fn keep_running(
    client: &Client,
    args: &DevArgs,
    dashboard_url: Option<&str>,
    console: &mut Console,
) -> anyhow::Result<()> {
    let watched = match dashboard_url {
        Some(url) => format!("the worker and the dashboard at {url}"),
        None => "the worker".to_owned(),
    };
    console.summary(format_args!(
        "keeping {watched} running with a few tasks a second (a chord every 15 s); Ctrl-C stops it and prints the summary"
    ))?;
    tokio::select! {
        sent = watch::trickle(client, args.tasks) => sent,
        Ok(()) = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Starts a throwaway nats-server with JetStream.
async fn start_local_server() -> anyhow::Result<NatsServer> {
    tokio::task::spawn_blocking(NatsServer::start)
        .await
        .context("the nats-server start was cancelled")?
        .context("cannot start a local nats-server (or pass --nats-url to use a running one)")
}

/// Stops the worker in `mode`, waiting for it up to `timeout`.
async fn stop_worker(
    worker: WorkerHandle,
    mode: Shutdown,
    timeout: Duration,
) -> anyhow::Result<()> {
    worker.shutdown(mode);
    let join = tokio::task::spawn_blocking(move || worker.join());
    tokio::time::timeout(timeout, join)
        .await
        .map_err(|_| anyhow!("the worker did not stop within {timeout:?}"))?
        .context("waiting for the worker was cancelled")?
        .context("the worker failed")
}

/// What the producer saw.
enum Event {
    /// A watched task's state changed while it ran.
    State {
        job: Job,
        state: TaskState,
        meta: Option<Value>,
    },
    /// A task ended.
    Finished { job: Job, ending: Ending },
}

/// Sends every job and prints events as they arrive, then checks an id that was never sent.
async fn send_and_report(
    client: &Client,
    args: &DevArgs,
    console: &mut Console,
) -> anyhow::Result<Report> {
    let jobs = demo::plan(args.tasks);
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut tally = Tally::new(&jobs);
    let started = Instant::now();
    let (events, received) = mpsc::unbounded_channel();
    tokio::try_join!(
        send_all(client, jobs, timeout, events),
        print_events(received, console, &mut tally),
    )?;
    let elapsed = started.elapsed();

    let never_sent = uuid::Uuid::now_v7().to_string();
    let never_sent_state = client
        .async_result::<Value>(&never_sent)
        .context("a fresh UUID is a valid task id")?
        .state()
        .await
        .context("cannot read the state of a never-sent task")?;
    console.line(format_args!(
        "{never_sent_state} is the state of {never_sent}, an id never sent (Celery would say PENDING)"
    ))?;
    Ok(Report {
        tally,
        elapsed,
        never_sent_state,
    })
}

/// Sends the jobs in order, each followed by a waiter (and for progress tasks a watcher) that
/// reports to `events`; returns once every waiter has reported.
async fn send_all(
    client: &Client,
    jobs: Vec<Job>,
    timeout: Duration,
    events: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    // INVARIANT: the set owns every waiter, so dropping this future aborts them.
    let mut waiters = JoinSet::new();
    for job in jobs {
        let sent = job
            .send(client, timeout)
            .await
            .with_context(|| format!("cannot send {job}"))?;
        if let Some(handle) = sent.progress {
            waiters.spawn(watch_states(job, handle, timeout, events.clone()));
        }
        let finished = events.clone();
        waiters.spawn(async move {
            let ending = sent.ending.await;
            // The receiver lives as long as this future's caller; a failed send means it is gone.
            let _ = finished.send(Event::Finished { job, ending });
        });
    }
    drop(events);
    while let Some(joined) = waiters.join_next().await {
        joined.context("a result waiter failed")?;
    }
    Ok(())
}

/// Reads a running task's state and meta every [`WATCH_INTERVAL`] and reports each change until it
/// ends or `timeout` passes. Polling is fine for a demo; `AsyncResult::get` waits without it.
async fn watch_states(
    job: Job,
    handle: AsyncResult<u32>,
    timeout: Duration,
    events: mpsc::UnboundedSender<Event>,
) {
    let deadline = Instant::now() + timeout;
    let mut last_seen = None;
    while Instant::now() < deadline {
        let (Ok(state), Ok(meta)) = (handle.state().await, handle.info().await) else {
            return;
        };
        if state.is_ready() {
            return;
        }
        let seen = Some((state.clone(), meta.clone()));
        if seen != last_seen {
            last_seen = seen;
            if events.send(Event::State { job, state, meta }).is_err() {
                return;
            }
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
}

/// Prints each event as it arrives and counts endings.
async fn print_events(
    mut events: mpsc::UnboundedReceiver<Event>,
    console: &mut Console,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    while let Some(event) = events.recv().await {
        match event {
            Event::State { job, state, meta } => {
                let meta = meta.map(|meta| format!(" {meta}")).unwrap_or_default();
                console.line(format_args!("watching {job}: {state}{meta}"))?;
            }
            Event::Finished { job, ending } => {
                let expected = tally.record(job, &ending);
                let note = if expected {
                    String::new()
                } else {
                    format!("  <-- expected {}", expected_label(job))
                };
                match &ending {
                    Ending::Succeeded(value) => {
                        console.line(format_args!("SUCCESS {job} = {value}{note}"))?;
                    }
                    Ending::Failed(error) => {
                        console.line(format_args!("FAILURE {job}: {error}{note}"))?;
                    }
                    Ending::Unreadable(detail) => {
                        console.line(format_args!("UNREADABLE {job}: {detail}{note}"))?;
                    }
                    Ending::Revoked | Ending::TimedOut => {
                        console.line(format_args!("{} {job}{note}", ending.label()))?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn expected_label(job: Job) -> &'static str {
    if job.should_succeed() {
        "SUCCESS"
    } else {
        "FAILURE"
    }
}

/// Counts of endings by state, against the counts the plan expects.
struct Tally {
    n_tasks: usize,
    expected: BTreeMap<&'static str, usize>,
    seen: BTreeMap<&'static str, usize>,
    unexpected: Vec<String>,
}

impl Tally {
    fn new(jobs: &[Job]) -> Self {
        let mut expected = BTreeMap::new();
        for job in jobs {
            *expected.entry(expected_label(*job)).or_default() += 1;
        }
        Tally {
            n_tasks: jobs.len(),
            expected,
            seen: BTreeMap::new(),
            unexpected: Vec::new(),
        }
    }

    /// Counts an ending; returns whether it is the expected one.
    fn record(&mut self, job: Job, ending: &Ending) -> bool {
        *self.seen.entry(ending.label()).or_default() += 1;
        let expected = ending.label() == expected_label(job);
        if !expected {
            self.unexpected.push(format!(
                "{job}: {}, expected {}",
                ending.label(),
                expected_label(job)
            ));
        }
        expected
    }
}

/// The outcome of a finished run.
struct Report {
    tally: Tally,
    elapsed: Duration,
    never_sent_state: TaskState,
}

impl Report {
    /// Prints the summary, even when quiet; returns whether everything went as expected.
    fn print_summary(
        &self,
        console: &mut Console,
        shutdown: Shutdown,
        stopped: &anyhow::Result<()>,
    ) -> anyhow::Result<bool> {
        let tally = &self.tally;
        let seconds = self.elapsed.as_secs_f64();
        let rate = if seconds > 0.0 {
            tally.n_tasks as f64 / seconds
        } else {
            0.0
        };
        console.summary(format_args!(
            "summary: {} tasks in {seconds:.2} s ({rate:.1} tasks/s)",
            tally.n_tasks
        ))?;
        let listed = Ending::LABELS
            .iter()
            .filter(|label| tally.expected.contains_key(*label) || tally.seen.contains_key(*label));
        for label in listed {
            let seen = tally.seen.get(label).copied().unwrap_or(0);
            let expected = tally.expected.get(label).copied().unwrap_or(0);
            console.summary(format_args!(
                "  {label:<10} {seen:>5} (expected {expected})"
            ))?;
        }
        console.summary(format_args!(
            "  a never-sent id reads {} (expected UNKNOWN)",
            self.never_sent_state
        ))?;
        match stopped {
            Ok(()) => console.summary(format_args!(
                "  worker {WORKER_HOSTNAME} stopped after a {} shutdown",
                match shutdown {
                    Shutdown::Warm => "warm",
                    _ => "cold",
                }
            ))?,
            Err(error) => console.summary(format_args!(
                "  worker {WORKER_HOSTNAME} did not stop cleanly: {error:#}"
            ))?,
        }
        for line in tally.unexpected.iter().take(MAX_LISTED) {
            console.summary(format_args!("  unexpected: {line}"))?;
        }
        let n_finished: usize = tally.seen.values().sum();
        let ok = tally.unexpected.is_empty()
            && n_finished == tally.n_tasks
            && self.never_sent_state == TaskState::Unknown;
        if ok {
            console.summary(format_args!(
                "ok: all {} tasks reached their expected state",
                tally.n_tasks
            ))?;
        } else {
            console.summary(format_args!(
                "not ok: {} of {} tasks ended as expected",
                n_finished - tally.unexpected.len(),
                tally.n_tasks
            ))?;
        }
        Ok(ok)
    }
}

/// Standard output, where a closed pipe (`celerity dev | head`) ends printing, not the demo.
struct Console {
    verbosity: Verbosity,
    closed: bool,
}

/// What the demo prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verbosity {
    /// Progress lines and the summary.
    Progress,
    /// The summary only (`--quiet`).
    Quiet,
}

impl Console {
    fn new(verbosity: Verbosity) -> Self {
        Console {
            verbosity,
            closed: false,
        }
    }

    /// Prints a progress line, unless quiet.
    fn line(&mut self, text: fmt::Arguments<'_>) -> anyhow::Result<()> {
        if self.verbosity == Verbosity::Quiet {
            return Ok(());
        }
        self.summary(text)
    }

    /// Prints a summary line.
    fn summary(&mut self, text: fmt::Arguments<'_>) -> anyhow::Result<()> {
        if self.closed {
            return Ok(());
        }
        match writeln!(std::io::stdout().lock(), "{text}") {
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            outcome => outcome.context("cannot write to standard output"),
        }
    }
}
