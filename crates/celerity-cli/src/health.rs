//! `celerity health`: whether a deployment can run its tasks now, as Celery's
//! `celery_health_check` and more: the server answers, JetStream is on, each queue has its stream
//! and level consumers, a worker answers for each queue, and no queue is stalled (tasks wait while
//! its consumers deliver nothing), and no client without credentials gets in where it should not
//! (`security`). One line per check, or one JSON object; exit status 1 when a check fails.
//!
//! It only reads and asks: it makes no stream, consumer or bucket (so no `celerity::Client`,
//! which opens buckets at connect).

mod check;
mod queues;
pub(crate) mod security;
mod storage;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use celerity_proto::{Layout, Namespace, PingResult, QueueName};
use clap::Args;
use serde::Serialize;

use check::Check;
use queues::{Motion, QueueReading};

/// `celerity health ...`
#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    /// Check these queues (comma-separated); default: every queue with a stream in the namespace.
    #[arg(
        short = 'Q',
        long = "queue",
        visible_alias = "queues",
        value_delimiter = ','
    )]
    queues: Vec<String>,
    /// Seconds a queue with tasks waiting (or delivered and not acknowledged) may go without a
    /// delivery or an acknowledgement before it counts as stalled; set it above your longest task.
    #[arg(long = "stalled-after", default_value = "60", value_parser = crate::parse_seconds)]
    stalled_after: Duration,
    /// One JSON object: `{"healthy", "namespace", "checks": [...], "queues": [...]}`.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    ask: crate::AskArgs,
}

/// Every check, and what was read of each queue.
#[derive(Debug, Serialize)]
struct Report {
    healthy: bool,
    namespace: String,
    checks: Vec<Check>,
    queues: Vec<QueueSummary>,
    /// Each stream and bucket's use against its limit, and its copies.
    streams: Vec<celerity::StreamUse>,
}

/// A queue's depth and the workers that answered for it.
#[derive(Debug, Serialize)]
struct QueueSummary {
    queue: String,
    stream: String,
    /// Tasks stored and not yet delivered (`null` when the queue has no stream).
    depth: Option<u64>,
    /// Tasks delivered and not yet acknowledged.
    in_flight: Option<u64>,
    workers: Vec<String>,
    /// The priority levels found stalled.
    stalled_levels: Vec<u8>,
}

/// Runs every check and prints the report; false when a check failed.
pub(crate) async fn run(args: HealthArgs) -> anyhow::Result<bool> {
    let namespace = Namespace::new(args.ask.connection.namespace.as_str())
        .context("invalid namespace: give --namespace")?;
    let named = args
        .queues
        .iter()
        .map(QueueName::new)
        .collect::<Result<Vec<_>, _>>()
        .context("invalid queue name in --queue")?;
    let layout = Layout::new(namespace);
    let nats = args
        .ask
        .connection
        .nats
        .config()
        .connect()
        .await
        .context("no health report: check --nats-url (or CELERITY_NATS_URL), the credentials, and that the server runs")?;
    let report = examine(&nats, &layout, named, &args).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    Ok(report.healthy)
}

async fn examine(
    nats: &async_nats::Client,
    layout: &Layout,
    named: Vec<QueueName>,
    args: &HealthArgs,
) -> anyhow::Result<Report> {
    let info = nats.server_info();
    let server_name = match info.server_name == info.server_id {
        true => String::new(),
        false => format!(" (server {})", info.server_name),
    };
    let mut checks = vec![Check::pass(
        "server",
        None,
        format!("nats-server {} answers{server_name}", info.version),
    )];
    checks.push(security::check(nats, &args.ask.connection.nats).await);
    let js = async_nats::jetstream::new(nats.clone());
    let mut queues = Vec::new();
    let mut streams = Vec::new();
    match account_info(&js).await {
        Err(problem) => checks.push(Check::fail(
            "jetstream",
            None,
            format!("JetStream does not answer for this account: {problem}"),
            "enable JetStream on the server (`nats-server -js`, or `jetstream {}` in its configuration) and for this account".to_owned(),
        )),
        Ok(account) => {
            checks.push(Check::pass(
                "jetstream",
                None,
                format!(
                    "enabled ({} streams, {} consumers)",
                    account.streams, account.consumers
                ),
            ));
            let names = match named.is_empty() {
                true => queues::stream_queues(&js, layout).await?,
                false => named,
            };
            queues = examine_queues(nats, &js, layout, &names, args, &mut checks).await?;
            streams = storage::read(&js, layout, &names).await?;
            checks.extend(storage::checks(&streams));
        }
    }
    Ok(Report {
        healthy: checks.iter().all(|check| check.ok),
        namespace: layout.namespace().to_string(),
        checks,
        queues,
        streams,
    })
}

/// What `celerity health` reads of the account's JetStream information (`$JS.API.INFO`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct AccountInfo {
    streams: usize,
    consumers: usize,
    error: Option<ApiError>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct ApiError {
    description: String,
}

/// The account's JetStream information, or why it cannot be read.
///
/// Read as plain JSON: async-nats 0.51's `query_account` cannot read nats-server 2.9.10's answer.
async fn account_info(js: &async_nats::jetstream::Context) -> Result<AccountInfo, String> {
    let answer: Result<AccountInfo, _> = js.request("INFO", &serde_json::json!({})).await;
    match answer {
        Err(error) => Err(error.to_string()),
        Ok(AccountInfo {
            error: Some(error), ..
        }) => Err(error.description),
        Ok(account) => Ok(account),
    }
}

/// The checks of each queue: its stream and consumers, its workers, and whether it is stalled.
async fn examine_queues(
    nats: &async_nats::Client,
    js: &async_nats::jetstream::Context,
    layout: &Layout,
    names: &[QueueName],
    args: &HealthArgs,
    checks: &mut Vec<Check>,
) -> anyhow::Result<Vec<QueueSummary>> {
    if names.is_empty() {
        checks.push(Check::fail(
            "queues",
            None,
            format!("no queue has a stream in namespace {}", layout.namespace()),
            "start a worker (it creates its queues' streams and consumers), or name the queues with --queue".to_owned(),
        ));
        return Ok(Vec::new());
    }
    let workers = workers_by_queue(nats, layout, args.ask.timeout).await?;
    let mut readings = Vec::new();
    for queue in names {
        readings.push(queues::read(js, layout, queue).await?);
    }
    queues::judge(&mut readings, args.stalled_after).await;
    let mut summaries = Vec::new();
    for reading in &readings {
        let answered = workers
            .get(reading.queue.as_str())
            .cloned()
            .unwrap_or_default();
        checks.push(queue_check(reading));
        checks.push(workers_check(&reading.queue, &answered, args.ask.timeout));
        if let Some(check) = stalled_check(reading, args.stalled_after) {
            checks.push(check);
        }
        summaries.push(summary(reading, answered));
    }
    Ok(summaries)
}

/// The workers that answered a ping within `timeout`, by each queue they consume.
async fn workers_by_queue(
    nats: &async_nats::Client,
    layout: &Layout,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let control = celerity::Control::new(nats.clone(), layout.clone());
    let replies = control
        .ping(None, timeout)
        .await
        .context("cannot ping the workers")?;
    let mut workers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for reply in replies {
        let Some(Ok(ping)) = reply.result_as::<PingResult>() else {
            continue;
        };
        for queue in ping.queues {
            workers.entry(queue).or_default().push(reply.worker.clone());
        }
    }
    for names in workers.values_mut() {
        names.sort();
    }
    Ok(workers)
}

fn queue_check(reading: &QueueReading) -> Check {
    let queue = Some(&reading.queue);
    let Some(found) = &reading.found else {
        return Check::fail(
            "queue",
            queue,
            format!("no stream {}", reading.stream_name),
            format!(
                "start a worker with `--queues {}`: it creates the stream and its consumers",
                reading.queue
            ),
        );
    };
    if !found.missing.is_empty() {
        return Check::fail(
            "queue",
            queue,
            format!(
                "stream {} lacks the consumers {}",
                reading.stream_name,
                found.missing.join(", ")
            ),
            format!(
                "start a worker with `--queues {}`: it creates the consumer of every level the stream lists",
                reading.queue
            ),
        );
    }
    Check::pass(
        "queue",
        queue,
        format!(
            "stream {} with its {} level consumers; depth {}, {} in flight",
            reading.stream_name,
            found.levels.len(),
            found.depth(),
            found.in_flight()
        ),
    )
}

fn workers_check(queue: &QueueName, answered: &[String], timeout: Duration) -> Check {
    match answered {
        [] => Check::fail(
            "workers",
            Some(queue),
            format!("no worker consuming {queue} answered a ping within {timeout:?}"),
            format!(
                "start a worker with `--queues {queue}`, or check that the running ones use this server and namespace"
            ),
        ),
        names => Check::pass(
            "workers",
            Some(queue),
            format!(
                "{} answered ({})",
                plural(names.len(), "worker"),
                names.join(", ")
            ),
        ),
    }
}

/// Whether the queue is stalled; `None` when it has no stream to judge.
fn stalled_check(reading: &QueueReading, stalled_after: Duration) -> Option<Check> {
    let found = reading.found.as_ref()?;
    let queue = Some(&reading.queue);
    let stalled: Vec<String> = found
        .levels
        .iter()
        .filter_map(|level| match level.motion {
            Motion::Stalled(quiet) => Some(format!(
                "priority {}: {} waiting, {} in flight, nothing delivered or acknowledged for {} s",
                level.priority,
                level.waiting(),
                level.in_flight(),
                quiet.as_secs()
            )),
            _ => None,
        })
        .collect();
    if !stalled.is_empty() {
        return Some(Check::fail(
            "stalled",
            queue,
            stalled.join("; "),
            "its workers take no tasks (stopped, stuck, or every slot busy with tasks longer than --stalled-after): read their logs and `celerity inspect stats`, and restart them".to_owned(),
        ));
    }
    let backlog = found.depth() + found.in_flight();
    let reason = match backlog {
        0 => "no backlog".to_owned(),
        _ => format!(
            "{} waiting or in flight, and each level with some delivered or acknowledged within the last {} s (or was made since)",
            plural(backlog as usize, "task"),
            stalled_after.as_secs_f64()
        ),
    };
    Some(Check::pass("stalled", queue, reason))
}

fn summary(reading: &QueueReading, workers: Vec<String>) -> QueueSummary {
    let found = reading.found.as_ref();
    QueueSummary {
        queue: reading.queue.to_string(),
        stream: reading.stream_name.clone(),
        depth: found.map(queues::Found::depth),
        in_flight: found.map(queues::Found::in_flight),
        workers,
        stalled_levels: found
            .into_iter()
            .flat_map(|found| &found.levels)
            .filter(|level| matches!(level.motion, Motion::Stalled(_)))
            .map(|level| level.priority.get())
            .collect(),
    }
}

fn print_text(report: &Report) {
    for check in &report.checks {
        let status = if check.ok { "OK  " } else { "FAIL" };
        let subject = match check.queue.as_ref().or(check.stream.as_ref()) {
            Some(name) => format!("{} {name}", check.check),
            None => check.check.to_owned(),
        };
        match &check.fix {
            Some(fix) => println!("{status}  {subject}: {}: {fix}", check.reason),
            None => println!("{status}  {subject}: {}", check.reason),
        }
    }
    let failed = report.checks.iter().filter(|check| !check.ok).count();
    match failed {
        0 => println!("\nhealthy: {} passed", plural(report.checks.len(), "check")),
        _ => println!(
            "\nunhealthy: {failed} of {} failed",
            plural(report.checks.len(), "check")
        ),
    }
}

fn plural(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        _ => format!("{n} {noun}s"),
    }
}
