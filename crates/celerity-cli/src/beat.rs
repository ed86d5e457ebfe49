//! `celerity beat list`: the periodic-task scheduler's lease and every entry with its last run.

use clap::{Args, Subcommand};

/// `celerity beat ...`
#[derive(Debug, Args)]
pub(crate) struct BeatArgs {
    /// The command.
    #[command(subcommand)]
    command: BeatSubcommand,
    /// The namespace of the deployment.
    #[arg(
        long = "namespace",
        env = "CELERITY_NAMESPACE",
        default_value = "celerity",
        global = true
    )]
    namespace: String,
    /// NATS connection.
    #[command(flatten)]
    nats: celerity::cli::NatsArgs,
}

#[derive(Debug, Subcommand)]
enum BeatSubcommand {
    /// List the entries with their schedule, last run, next run and run count, and the worker
    /// that schedules them.
    List,
}

/// Runs the command; always true once the bucket was read.
pub(crate) async fn run(args: BeatArgs) -> anyhow::Result<bool> {
    let BeatSubcommand::List = args.command;
    let client = crate::connect(&args.namespace, &args.nats).await?;
    let status = celerity::beat::status(&client).await?;
    let now = celerity::clock::now_ms();
    let scheduled: Vec<String> = match &status.leader {
        Some(lease) if lease.until_ms >= now => {
            println!(
                "scheduler: {} (lease until {})",
                lease.holder,
                crate::table::time(Some(lease.until_ms))
            );
            lease.entries.clone()
        }
        Some(lease) => {
            println!(
                "scheduler: none (the lease of {} lapsed at {})",
                lease.holder,
                crate::table::time(Some(lease.until_ms))
            );
            Vec::new()
        }
        None => {
            println!("scheduler: none (no worker with --beat holds the lease)");
            Vec::new()
        }
    };
    if status.entries.is_empty() {
        println!("no entries");
        return Ok(true);
    }
    let rows: Vec<[String; 6]> = status
        .entries
        .iter()
        .map(|entry| {
            let mut name = entry.name.clone();
            if !scheduled.contains(&entry.name) {
                name.push_str(" (not scheduled)");
            }
            [
                name,
                entry.task.clone(),
                entry.schedule.clone(),
                crate::table::time(entry.last_run_ms),
                crate::table::time(entry.next_tick_ms),
                entry.runs.to_string(),
            ]
        })
        .collect();
    let header = ["NAME", "TASK", "SCHEDULE", "LAST RUN", "NEXT RUN", "RUNS"];
    println!("{}", crate::table::plain(header, &[], rows));
    Ok(true)
}
