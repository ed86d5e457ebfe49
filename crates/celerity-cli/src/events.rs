//! `celerity events`: tails the task and worker events of a deployment, live or read back from a
//! point in time, one line (or one JSON object) per event.

use std::time::Duration;

use celerity::StreamExt as _;
use celerity::events::{Event, EventFilter, Since};
use clap::Args;

/// `celerity events ...`
#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// Only task events of tasks named this (a name, or a glob like `tasks.bulk_*`); repeatable.
    #[arg(long = "task")]
    tasks: Vec<String>,
    /// Only task events of this kind (`succeeded`, `task-failed`) or leaving a task in this state
    /// (`FAILURE`); repeatable.
    #[arg(long = "state")]
    states: Vec<String>,
    /// Only events from this worker (its hostname); repeatable.
    #[arg(long = "worker")]
    workers: Vec<String>,
    /// Only task events of tasks sent to or taken from this queue; repeatable.
    #[arg(long = "queue")]
    queues: Vec<String>,
    /// Read back from this long ago (`10m`, `1h 30m`, `2d`) or `all` (everything the stream
    /// keeps); default: from now on.
    #[arg(long = "since", value_parser = parse_since)]
    since: Option<SinceArg>,
    /// Stop once every event stored so far is printed, instead of following new ones.
    #[arg(long = "no-follow")]
    no_follow: bool,
    /// One JSON object per line: the event as the protocol writes it, with its emitter's
    /// `hostname`.
    #[arg(long = "json")]
    json: bool,
    #[command(flatten)]
    connection: crate::ConnectionArgs,
}

/// Where `--since` starts.
#[derive(Debug, Clone, Copy)]
enum SinceArg {
    All,
    Ago(Duration),
}

fn parse_since(value: &str) -> Result<SinceArg, String> {
    if value.eq_ignore_ascii_case("all") {
        return Ok(SinceArg::All);
    }
    humantime::parse_duration(value)
        .map(SinceArg::Ago)
        .map_err(|error| format!("{error}: give a duration such as 10m, 1h or 2d, or `all`"))
}

/// Prints events until interrupted (or, with `--no-follow`, until caught up); false when none
/// matched.
pub(crate) async fn run(args: EventsArgs) -> anyhow::Result<bool> {
    let mut filter = EventFilter::new();
    for task in &args.tasks {
        filter = filter.task(task)?;
    }
    for state in &args.states {
        filter = filter.state(state)?;
    }
    for worker in &args.workers {
        filter = filter.worker(worker);
    }
    for queue in &args.queues {
        filter = filter.queue(queue);
    }
    let since = match args.since {
        None => Since::Now,
        Some(SinceArg::All) => Since::Start,
        Some(SinceArg::Ago(ago)) => {
            let ago_ms = u64::try_from(ago.as_millis()).unwrap_or(u64::MAX);
            Since::Time(celerity::clock::now_ms().saturating_sub(ago_ms))
        }
    };
    let client = args.connection.connect().await?;
    let mut events = client.events(since).await?;
    let mut printed = 0_u64;
    loop {
        if args.no_follow && events.caught_up() {
            break;
        }
        let next = tokio::select! {
            next = events.next() => next,
            _ = tokio::signal::ctrl_c() => break,
        };
        let event = match next {
            None => break,
            Some(Ok(event)) => event,
            Some(Err(error)) => {
                eprintln!("warning: {:#}", anyhow::Error::new(error));
                continue;
            }
        };
        if filter.matches(&event) {
            println!("{}", render(&event, args.json)?);
            printed += 1;
        }
    }
    Ok(printed > 0 || !args.no_follow)
}

/// One event as a line: JSON, or `<time> <type> <what> <where> <details>`.
fn render(event: &Event, json: bool) -> anyhow::Result<String> {
    if json {
        let value = match event {
            Event::Task { hostname, event } => {
                let mut value = serde_json::to_value(event)?;
                if let Some(object) = value.as_object_mut() {
                    object.insert("hostname".to_owned(), hostname.clone().into());
                }
                value
            }
            Event::Worker(event) => serde_json::to_value(event)?,
            _ => serde_json::Value::Null,
        };
        return Ok(value.to_string());
    }
    let time = chrono::DateTime::from_timestamp_millis(event.at_ms() as i64)
        .map(|time| time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default();
    let line = match event {
        Event::Task { hostname, event } => {
            let kind = serde_json::to_value(event.kind)?;
            let mut line = format!(
                "{time} {:<15} {}[{}] {hostname}",
                kind.as_str().unwrap_or("task"),
                event.task,
                event.task_id
            );
            let mut detail = |text: String| {
                line.push(' ');
                line.push_str(&text);
            };
            if let Some(queue) = &event.queue {
                detail(format!("queue={queue}"));
            }
            if event.retries > 0 {
                detail(format!("retries={}", event.retries));
            }
            if let Some(delivered) = event.delivered.filter(|delivered| *delivered > 1) {
                detail(format!("delivered={delivered}"));
            }
            if let Some(wait) = event.wait_ms {
                detail(format!("wait={wait}ms"));
            }
            if let Some(runtime) = event.runtime_ms {
                detail(format!("runtime={runtime:.1}ms"));
            }
            if let Some(reason) = &event.reason {
                detail(format!("reason={reason}"));
            }
            if let Some(error) = &event.error {
                detail(format!("error=\"{}: {}\"", error.kind, error.message));
            }
            line
        }
        Event::Worker(event) => {
            let kind = serde_json::to_value(event.kind)?;
            let load = event
                .load
                .map(|load| format!(" load={:.2},{:.2},{:.2}", load[0], load[1], load[2]))
                .unwrap_or_default();
            format!(
                "{time} {:<15} {} active={} reserved={} processed={} queues={}{load}",
                kind.as_str().unwrap_or("worker"),
                event.hostname,
                event.active,
                event.reserved,
                event.processed,
                event.queues.join(",")
            )
        }
        _ => String::new(),
    };
    Ok(line)
}
