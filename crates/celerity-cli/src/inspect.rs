//! `celerity inspect registered | stats | active-queues | revoked`: asks workers (every one, or
//! `--destination`) what they run and hold, scatter-gathered until `--timeout`, as Celery's
//! `celery inspect`.

use celerity_proto::{
    ActiveQueuesResult, ControlCommand, ControlReply, RegisteredResult, RevokedResult, StatsResult,
};
use clap::Args;

/// `celerity inspect ...`
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// What to ask.
    #[arg(value_enum)]
    what: Inspection,
    /// Ask these workers (their hostnames, comma-separated) only; default: every worker.
    #[arg(
        short = 'd',
        long = "destination",
        value_delimiter = ',',
        global = true
    )]
    destination: Vec<String>,
    /// One JSON object: each worker's hostname and its reply's result (or `{"error": ...}`).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    ask: crate::AskArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Inspection {
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
    fn command(self) -> ControlCommand {
        match self {
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
    if args.destination.is_empty() {
        replies = control.send(args.what.command(), None, timeout).await?;
    } else {
        for worker in &args.destination {
            match control
                .send(args.what.command(), Some(worker), timeout)
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
        Inspection::Registered => match reply.result_as::<RegisteredResult>() {
            Some(Ok(result)) => result.tasks,
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
