//! `celerity inspect active | reserved | scheduled | registered | stats | active-queues | revoked |
//! ping`: asks workers (every one, or `--destination`) what they run and hold, scatter-gathered
//! until `--timeout`, as Celery's `celery inspect`.

use celerity_proto::{
    ActiveQueuesResult, ControlCommand, ControlReply, HeldTask, HeldTasksResult, PingResult,
    RegisteredResult, RevokedResult, ScheduledResult, StatsResult,
};
use clap::Args;

/// `celerity inspect ...`
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// What to ask.
    #[arg(value_enum)]
    what: Inspection,
    #[command(flatten)]
    to: crate::Destinations,
    /// With `scheduled`: list at most this many delayed tasks (1 to 1000).
    #[arg(long, default_value = "100", value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
    /// One JSON object: each worker's hostname and its reply's result (or `{"error": ...}`).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    ask: crate::AskArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Inspection {
    /// The tasks each worker runs now.
    Active,
    /// The tasks each worker has taken and not started (waiting for a rate limit or a slot).
    Reserved,
    /// The delayed tasks (countdown, ETA, retry backoff), from the worker that schedules them.
    Scheduled,
    /// Whether each worker answers, with its queues and slots.
    Ping,
    /// The task names each worker runs.
    Registered,
    /// Each worker's figures: uptime, slots, active, reserved and processed tasks, queues.
    Stats,
    /// The queues each worker consumes, with their streams and priority levels.
    ActiveQueues,
    /// The revoked task and canvas ids each worker holds.
    Revoked,
}

impl Inspection {
    fn command(self, limit: u32) -> ControlCommand {
        match self {
            Inspection::Active => ControlCommand::Active,
            Inspection::Reserved => ControlCommand::Reserved,
            Inspection::Scheduled => ControlCommand::Scheduled { limit: Some(limit) },
            Inspection::Ping => ControlCommand::Ping,
            Inspection::Registered => ControlCommand::Registered,
            Inspection::Stats => ControlCommand::Stats,
            Inspection::ActiveQueues => ControlCommand::ActiveQueues,
            Inspection::Revoked => ControlCommand::Revoked,
        }
    }
}

/// Prints each worker's answer; false when none answered or one refused.
pub(crate) async fn run(args: InspectArgs) -> anyhow::Result<bool> {
    let timeout = args.ask.timeout;
    let client = args.ask.connection.connect().await?;
    let control = client.control();
    let mut replies = Vec::new();
    if args.to.destination.is_empty() {
        replies = control
            .send(args.what.command(args.limit), None, timeout)
            .await?;
    } else {
        for worker in &args.to.destination {
            match control
                .send(args.what.command(args.limit), Some(worker), timeout)
                .await
            {
                Ok(answered) => replies.extend(answered),
                Err(error) => eprintln!("{worker}: {error}"),
            }
        }
    }
    replies.sort_by(|a, b| a.worker.cmp(&b.worker));
    if args.json {
        let mut object = serde_json::Map::new();
        for reply in &replies {
            let value = match (&reply.result, &reply.error) {
                (_, Some(error)) => serde_json::json!({ "error": error }),
                (result, None) => result.clone().unwrap_or_default(),
            };
            object.insert(reply.worker.clone(), value);
        }
        println!("{}", serde_json::Value::Object(object));
    } else {
        for reply in &replies {
            println!("-> {}:", reply.worker);
            for line in lines(args.what, reply) {
                println!("    {line}");
            }
        }
    }
    if replies.is_empty() {
        eprintln!("no worker answered within {timeout:?}");
    }
    Ok(!replies.is_empty() && replies.iter().all(|reply| reply.ok))
}

/// A reply's result as lines of text.
fn lines(what: Inspection, reply: &ControlReply) -> Vec<String> {
    if let Some(error) = &reply.error {
        return vec![format!("refused: {error}")];
    }
    let unreadable = |error: serde_json::Error| vec![format!("unreadable reply: {error}")];
    match what {
        Inspection::Active | Inspection::Reserved => match reply.result_as::<HeldTasksResult>() {
            Some(Ok(result)) if result.tasks.is_empty() => vec!["- empty -".to_owned()],
            Some(Ok(result)) => result.tasks.iter().map(held_task_line).collect(),
            Some(Err(error)) => unreadable(error),
            None => Vec::new(),
        },
        Inspection::Scheduled => match reply.result_as::<ScheduledResult>() {
            Some(Ok(result)) => scheduled_lines(&result),
            Some(Err(error)) => unreadable(error),
            None => Vec::new(),
        },
        Inspection::Ping => match reply.result_as::<PingResult>() {
            Some(Ok(ping)) => vec![format!(
                "pong (queues: {}; concurrency: {})",
                ping.queues.join(", "),
                ping.concurrency
            )],
            Some(Err(error)) => unreadable(error),
            None => Vec::new(),
        },
        Inspection::Registered => match reply.result_as::<RegisteredResult>() {
            Some(Ok(result)) => registered_lines(&result),
            Some(Err(error)) => unreadable(error),
            None => Vec::new(),
        },
        Inspection::Revoked => match reply.result_as::<RevokedResult>() {
            Some(Ok(result)) if result.ids.is_empty() => vec!["- empty -".to_owned()],
            Some(Ok(result)) => result.ids,
            Some(Err(error)) => unreadable(error),
            None => Vec::new(),
        },
        Inspection::ActiveQueues => match reply.result_as::<ActiveQueuesResult>() {
            Some(Ok(result)) => result
                .queues
                .iter()
                .map(|queue| {
                    let levels: Vec<String> = queue.priorities.iter().map(u8::to_string).collect();
                    format!(
                        "{} (stream {}, priorities {})",
                        queue.name,
                        queue.stream,
                        levels.join(",")
                    )
                })
                .collect(),
            Some(Err(error)) => unreadable(error),
            None => Vec::new(),
        },
        Inspection::Stats => match reply.result_as::<StatsResult>() {
            Some(Ok(stats)) => vec![
                format!("pid: {}, {}", stats.pid, stats.software),
                format!("uptime: {} s", stats.uptime_s),
                format!("concurrency: {}", stats.concurrency),
                format!(
                    "tasks: {} active, {} reserved, {} processed",
                    stats.active, stats.reserved, stats.processed
                ),
                format!("queues: {}", stats.queues.join(", ")),
                format!("events: {}", if stats.events { "on" } else { "off" }),
                format!("http: {}", stats.http.as_deref().unwrap_or("off")),
            ],
            Some(Err(error)) => unreadable(error),
            None => Vec::new(),
        },
    }
}

/// One held task: id, name, arguments, queue, and since when it is held or runs.
fn held_task_line(task: &HeldTask) -> String {
    let now = celerity::clock::now_ms();
    let since = task.started_at_ms.unwrap_or(task.received_at_ms);
    let args = serde_json::to_string(task.args.as_deref().unwrap_or_default()).unwrap_or_default();
    let kwargs = task
        .kwargs
        .as_ref()
        .map(|kwargs| serde_json::Value::Object(kwargs.clone()).to_string())
        .unwrap_or_else(|| "{}".to_owned());
    let redelivered = match task.delivered {
        0 | 1 => String::new(),
        n => format!(", delivery {n}"),
    };
    format!(
        "{}[{}] args={args} kwargs={kwargs} (queue {}, priority {}{redelivered}, for {:.1} s)",
        task.task,
        task.id,
        task.queue,
        task.priority,
        now.saturating_sub(since) as f64 / 1000.0
    )
}

/// A `scheduled` reply: none from a worker that is not the scheduler, else each delayed task
/// with its due time.
fn scheduled_lines(result: &ScheduledResult) -> Vec<String> {
    if !result.scheduler {
        return vec!["- not the active scheduler -".to_owned()];
    }
    let now = celerity::clock::now_ms();
    let mut lines = vec![format!(
        "active scheduler: {} delayed task(s), {} listed",
        result.total,
        result.tasks.len()
    )];
    lines.extend(result.tasks.iter().map(|task| {
        let due = task.eta_ms as i64 - now as i64;
        format!(
            "{}[{}] eta {} (in {:.1} s; queue {}, priority {}, retries {})",
            task.task,
            task.id,
            crate::table::time(Some(task.eta_ms)),
            due as f64 / 1000.0,
            task.queue,
            task.priority,
            task.retries
        )
    }));
    lines
}

/// One line per task, with the rate limits in force beside its name
/// (`it.limited [rate limit 10/s, global 5/m]`).
fn registered_lines(result: &RegisteredResult) -> Vec<String> {
    result
        .tasks
        .iter()
        .map(|task| {
            let limits: Vec<String> = [
                result
                    .rate_limits
                    .get(task)
                    .map(|rate| format!("rate limit {rate}")),
                result
                    .global_rate_limits
                    .get(task)
                    .map(|rate| format!("global {rate}")),
            ]
            .into_iter()
            .flatten()
            .collect();
            match limits.is_empty() {
                true => task.clone(),
                false => format!("{task} [{}]", limits.join(", ")),
            }
        })
        .collect()
}
