//! How the dashboard holds up under a flood of task events: its memory and whether it keeps up.
//!
//! It starts a nats-server (JetStream, temp dir), the dashboard in a child process (this program
//! run with `--serve`, so the figures are the dashboard's alone), and publishes synthetic task
//! events at `--rate` events a second (default 10,000) for `--seconds` (default 60), in the
//! batches a worker sends (docs/protocol.md, events): four hosts, each sending every 100 ms a
//! batch of `task-received`, `task-started` (with arguments) and `task-succeeded` (one task in 17
//! `task-failed`) of fresh tasks. Every 5 s it prints the dashboard's resident memory, the events
//! it has taken in against those published, and the tasks it holds; at the end, how long it took
//! to catch up and the peak memory.
//!
//! ```sh
//! cargo run --release -p celerity-dashboard --example ingest_load -- --rate 10000 --seconds 60
//! ```

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use celerity_dashboard::{Dashboard, DashboardConfig};
use celerity_proto::{Layout, Namespace, TaskEvent, TaskEventBatch, TaskEventKind};
use serde_json::Value;

/// The namespace the load goes to.
const NAMESPACE: &str = "load";
/// Hosts the events come from.
const HOSTS: usize = 4;
/// How often each host sends a batch, as a worker does.
const BATCH_EVERY: Duration = Duration::from_millis(100);
/// How often the figures are printed.
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// How long the dashboard may take to catch up after the load ends.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(120);

struct Options {
    rate: u64,
    seconds: u64,
    max_tasks: usize,
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let [flag, url, max_tasks] = argv.as_slice()
        && flag == "--serve"
    {
        return runtime.block_on(serve(url, max_tasks.parse()?));
    }
    let options = parse(&argv)?;
    runtime.block_on(measure(&options))
}

fn parse(argv: &[String]) -> anyhow::Result<Options> {
    let mut options = Options {
        rate: 10_000,
        seconds: 60,
        max_tasks: 10_000,
    };
    let mut args = argv.iter();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rate" => options.rate = value.parse()?,
            "--seconds" => options.seconds = value.parse()?,
            "--max-tasks" => options.max_tasks = value.parse()?,
            _ => anyhow::bail!("unknown flag {flag}: use --rate N, --seconds N, --max-tasks N"),
        }
    }
    anyhow::ensure!(
        options.rate > 0 && options.seconds > 0,
        "--rate and --seconds take positive numbers"
    );
    Ok(options)
}

/// The child: a dashboard on a free loopback port; prints its URL, runs until stdin closes.
async fn serve(url: &str, max_tasks: usize) -> anyhow::Result<()> {
    let mut config = DashboardConfig::new(celerity::NatsConfig::new(url));
    config.port = 0;
    config.namespace = NAMESPACE.to_owned();
    config.max_tasks = max_tasks;
    let dashboard = Dashboard::start(config).await?;
    println!("{}", dashboard.url());
    tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await?;
    dashboard.stop().await;
    Ok(())
}

async fn measure(options: &Options) -> anyhow::Result<()> {
    let server = celerity_testkit::NatsServer::start()?;
    let nats = async_nats::connect(server.url()).await?;
    let js = async_nats::jetstream::new(nats);
    let layout = Layout::new(Namespace::new(NAMESPACE)?);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: layout.events_stream(),
        subjects: vec![layout.events_subjects()],
        max_age: Duration::from_secs(24 * 3600),
        max_bytes: 256 * 1024 * 1024,
        ..Default::default()
    })
    .await?;
    let (mut child, base) = start_dashboard(&server.url(), options.max_tasks)?;
    println!(
        "dashboard {base} (pid {}), max {} tasks; publishing {} events/s for {} s",
        child.id(),
        options.max_tasks,
        options.rate,
        options.seconds
    );
    println!(
        "{:>6} {:>10} {:>10} {:>8} {:>8} {:>9}",
        "t s", "published", "taken in", "lag", "tasks", "RSS MiB"
    );
    let pid = i32::try_from(child.id())?;
    let started = Instant::now();
    let mut report = Report::default();
    let published = publish(&js, &layout, options, |published| {
        report.sample(pid, &base, started, published);
    })
    .await?;
    let caught_up = Instant::now();
    loop {
        let seen = report.sample(pid, &base, started, published);
        if seen >= published {
            break;
        }
        anyhow::ensure!(
            caught_up.elapsed() < CATCH_UP_DEADLINE,
            "the dashboard did not catch up within {CATCH_UP_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "published {published} events in {:.1} s ({:.0}/s); the dashboard had them all {:.1} s after the last; RSS peak {:.1} MiB, first {:.1} MiB, last {:.1} MiB",
        options.seconds as f64,
        published as f64 / options.seconds as f64,
        caught_up.elapsed().as_secs_f64(),
        report.peak_mib,
        report.first_mib.unwrap_or(0.0),
        report.last_mib
    );
    drop(child.stdin.take());
    let _ = child.wait();
    Ok(())
}

fn start_dashboard(url: &str, max_tasks: usize) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve", url, &max_tasks.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    anyhow::ensure!(
        line.starts_with("http://"),
        "the dashboard did not start: {line:?}"
    );
    Ok((child, line.trim().to_owned()))
}

/// Publishes the load; calls `tick` with the count so far every [`REPORT_EVERY`].
async fn publish(
    js: &async_nats::jetstream::Context,
    layout: &Layout,
    options: &Options,
    mut tick: impl FnMut(u64),
) -> anyhow::Result<u64> {
    let batches_per_s = HOSTS as u64 * (1000 / BATCH_EVERY.as_millis() as u64);
    let per_batch = (options.rate / batches_per_s).max(3);
    let mut interval = tokio::time::interval(BATCH_EVERY);
    let (mut published, mut task) = (0u64, 0u64);
    let end = Instant::now() + Duration::from_secs(options.seconds);
    let mut next_report = Instant::now() + REPORT_EVERY;
    while Instant::now() < end {
        interval.tick().await;
        let mut acks = Vec::with_capacity(HOSTS);
        for host in 0..HOSTS {
            let hostname = format!("load-w{host}");
            let events = task_events(&mut task, per_batch);
            published += events.len() as u64;
            let batch = serde_json::to_vec(&TaskEventBatch::new(hostname.clone(), events))?;
            acks.push(
                js.publish(layout.task_events_subject(&hostname), batch.into())
                    .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
        if Instant::now() >= next_report {
            tick(published);
            next_report += REPORT_EVERY;
        }
    }
    Ok(published)
}

/// `count` events of fresh tasks, three per task, numbered from `*task`.
fn task_events(task: &mut u64, count: u64) -> Vec<TaskEvent> {
    let now = celerity::clock::now_ms();
    let mut events = Vec::with_capacity(count as usize);
    while (events.len() as u64) + 3 <= count {
        *task += 1;
        let id = format!("00000000-0000-7000-8000-{:012x}", *task);
        let name = ["load.add", "load.resize", "load.mail"][(*task % 3) as usize];
        let mut started = TaskEvent::new(TaskEventKind::Started, &id, name, now);
        started.args = Some(format!("[{}, {}]", *task, *task * 2));
        started.kwargs = Some("{}".to_owned());
        let ending = match *task % 17 {
            0 => TaskEventKind::Failed,
            _ => TaskEventKind::Succeeded,
        };
        let mut ended = TaskEvent::new(ending, &id, name, now);
        ended.runtime_ms = Some(1.5);
        let mut received = TaskEvent::new(TaskEventKind::Received, &id, name, now);
        received.queue = Some("default".to_owned());
        events.extend([received, started, ended]);
    }
    events
}

#[derive(Default)]
struct Report {
    first_mib: Option<f64>,
    peak_mib: f64,
    last_mib: f64,
}

impl Report {
    /// Prints a line of figures; returns the events the dashboard has taken in.
    fn sample(&mut self, pid: i32, base: &str, started: Instant, published: u64) -> u64 {
        let rss_mib = procfs::process::Process::new(pid)
            .and_then(|process| process.status())
            .ok()
            .and_then(|status| status.vmrss)
            .map_or(0.0, |kib| kib as f64 / 1024.0);
        self.first_mib.get_or_insert(rss_mib);
        self.peak_mib = self.peak_mib.max(rss_mib);
        self.last_mib = rss_mib;
        let overview = overview(base).unwrap_or(Value::Null);
        let seen = overview["events_seen"].as_u64().unwrap_or(0);
        let tasks = overview["tasks"]["stored"].as_u64().unwrap_or(0);
        println!(
            "{:>6.0} {published:>10} {seen:>10} {:>8} {tasks:>8} {rss_mib:>9.1}",
            started.elapsed().as_secs_f64(),
            published.saturating_sub(seen)
        );
        seen
    }
}

fn overview(base: &str) -> Option<Value> {
    let text = ureq::get(&format!("{base}api/overview"))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    serde_json::from_str(&text).ok()
}
