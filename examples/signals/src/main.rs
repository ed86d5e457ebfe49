//! The reference's "Custom Events": hooks on `task_prerun` and `task_postrun` count started and
//! completed tasks by name and state in a metrics registry, and a hook on `task_failure` sends an
//! alert naming the task and its error (Celery's `@signals.task_prerun.connect`, ...).
//!
//! Start a server (`nats-server -js -a 127.0.0.1`, which `scripts/ensure-nats-server` installs, or
//! `docker compose up -d nats`), then `cargo run -p signals -- run` (`--nats-url` or
//! `CELERITY_NATS_URL` names another server). It starts a worker in this process, sends five
//! orders (one of them is declined), stops the worker, then prints the counters and the alerts,
//! and fails unless they say what happened. A hook that panics (here, on one order's success) is
//! logged and changes nothing for its task.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use celerity::signals::Signals;
use celerity::{App, Shutdown, WorkerConfig};
use clap::Parser;

/// How long each order may take.
const WAIT: Duration = Duration::from_secs(30);

/// The order whose payment is declined.
const DECLINED: u32 = 3;

/// The order whose success hook panics.
const PANICKING_HOOK: u32 = 5;

/// A payment the card issuer declined.
#[derive(Debug, thiserror::Error)]
#[error("card declined for order {0}")]
struct Declined(u32);

/// Charges an order's card; order 3's is declined.
#[celerity::task(name = "tasks.charge_order")]
async fn charge_order(order: u32) -> Result<u32, Declined> {
    if order == DECLINED {
        return Err(Declined(order));
    }
    Ok(order * 100)
}

/// The reference's `metrics.counter(name, tags)`: counts by name and tags.
#[derive(Debug, Default)]
struct Metrics {
    counters: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    fn counter(&self, name: &str, tags: &[(&str, &str)]) {
        let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let key = format!("{name}{{{}}}", tags.join(","));
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        *counters.entry(key).or_default() += 1;
    }

    fn get(&self, key: &str) -> u64 {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        counters.get(key).copied().unwrap_or(0)
    }
}

/// The reference's `alerting.send_alert(message, severity)`: here, kept to be printed.
#[derive(Debug, Default)]
struct Alerting {
    sent: Mutex<Vec<(String, &'static str)>>,
}

impl Alerting {
    fn send_alert(&self, message: String, severity: &'static str) {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent.push((message, severity));
    }
}

/// The hooks of the reference, on `metrics` and `alerting`.
fn signals(metrics: &Arc<Metrics>, alerting: &Arc<Alerting>) -> Signals {
    let (started, completed, alerts) = (metrics.clone(), metrics.clone(), alerting.clone());
    Signals::new()
        .task_prerun(move |signal| {
            started.counter(
                "task_started",
                &[("task", signal.context.task_name().as_str())],
            );
        })
        .task_postrun(move |signal| {
            let state = signal.state.to_string();
            let task = signal.context.task_name().as_str();
            completed.counter("task_completed", &[("task", task), ("state", &state)]);
        })
        .task_failure(move |signal| {
            let task = signal.context.task_name();
            alerts.send_alert(
                format!("Task {task} failed: {}", signal.error.message),
                "error",
            );
        })
        .task_success(|signal| {
            assert_ne!(
                signal.result.as_u64(),
                Some(u64::from(PANICKING_HOOK) * 100),
                "this hook panics for order {PANICKING_HOOK}, and the order still succeeds"
            );
        })
        .worker_ready(|signal| {
            let queues: Vec<String> = signal.queues.iter().map(ToString::to_string).collect();
            println!("worker {} ready on {}", signal.hostname, queues.join(", "));
        })
}

#[derive(Debug, Parser)]
#[command(about = "Task signals feeding a metrics counter and an alert")]
enum Command {
    /// Start a worker, send five orders, stop the worker and print the counters and alerts.
    Run(celerity::cli::NatsArgs),
}

fn main() -> anyhow::Result<()> {
    celerity::cli::init_logging("warn");
    let Command::Run(nats) = Command::parse();
    let metrics = Arc::new(Metrics::default());
    let alerting = Arc::new(Alerting::default());
    let app = App::builder()
        .namespace("signals")
        .task(charge_order)
        .signals(signals(&metrics, &alerting))
        .build()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let nats = nats.config();
    // The producer connects first: it fails at once when no server answers, a worker would retry.
    let client = runtime.block_on(app.client(&nats))?;
    let worker = celerity::worker::spawn(app, nats, WorkerConfig::new().hostname("signals"))?;
    let sent = runtime.block_on(async {
        let mut outcomes = Vec::new();
        for order in 1..=5 {
            let result = charge_order.delay(&client, order).await?;
            outcomes.push((order, result.get(WAIT).await));
        }
        Ok::<_, anyhow::Error>(outcomes)
    });
    // Stopped before the counters are read: its hooks have all run once it has stopped.
    worker.shutdown(Shutdown::Warm);
    worker.join()?;
    for (order, outcome) in sent? {
        match outcome {
            Ok(cents) => println!("order {order}: charged {cents} cents"),
            Err(error) => println!("order {order}: {error}"),
        }
    }
    check(&metrics, &alerting)
}

/// Prints the counters and alerts; fails unless they count five starts, four successes and one
/// failure, with one alert for the declined order.
fn check(metrics: &Metrics, alerting: &Alerting) -> anyhow::Result<()> {
    let counters = metrics.counters.lock().unwrap_or_else(|e| e.into_inner());
    for (key, count) in counters.iter() {
        println!("{key} {count}");
    }
    drop(counters);
    let alerts = alerting.sent.lock().unwrap_or_else(|e| e.into_inner());
    for (message, severity) in alerts.iter() {
        println!("alert ({severity}): {message}");
    }
    let task = "tasks.charge_order";
    let expected = [
        (format!("task_started{{task={task}}}"), 5),
        (format!("task_completed{{task={task},state=SUCCESS}}"), 4),
        (format!("task_completed{{task={task},state=FAILURE}}"), 1),
    ];
    for (key, count) in &expected {
        anyhow::ensure!(
            metrics.get(key) == *count,
            "{key} is {}, not {count}",
            metrics.get(key)
        );
    }
    let declined = format!("Task {task} failed: card declined for order {DECLINED}");
    anyhow::ensure!(
        alerts.len() == 1 && alerts[0].0 == declined,
        "expected one alert, {declined:?}; got {alerts:?}"
    );
    println!("the signals counted every order and alerted on the declined one");
    Ok(())
}
