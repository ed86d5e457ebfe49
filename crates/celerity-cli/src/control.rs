//! `celerity control`: control commands to workers (`ping`, `revoke`, `rate-limit`,
//! `priority-weights`, `shutdown`, `pool-grow`, `pool-shrink`, `add-consumer`,
//! `cancel-consumer`), printed one reply per line.

use std::time::Duration;

use celerity::{RateLimitScope, RevokeMode};
use clap::{Args, Subcommand};

/// `celerity control ...`
#[derive(Debug, Args)]
pub(crate) struct ControlArgs {
    /// The command.
    #[command(subcommand)]
    command: ControlSubcommand,
    #[command(flatten)]
    to: crate::Destinations,
    /// Seconds to wait for replies.
    #[arg(short = 't', long = "timeout", default_value = "1", value_parser = crate::parse_seconds, global = true)]
    timeout: Duration,
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
enum ControlSubcommand {
    /// Ask workers to answer.
    Ping,
    /// Revoke a task: it never runs (on every worker, also those started later); with
    /// `--terminate` it is aborted where it runs.
    Revoke {
        /// The task id.
        task_id: String,
        /// Abort the task if it is running.
        #[arg(long)]
        terminate: bool,
    },
    /// Change a task's rate limit at runtime: per worker (every worker, or `--destination`), or
    /// cluster-wide with `--global`. Stored, so it also holds for workers started later.
    RateLimit {
        /// The task name.
        task: String,
        /// `<count>/<s|m|h>` (like `50/m`), `none` for no limit, or `reset` to go back to the
        /// task's own option.
        rate: celerity::RateLimitChange,
        /// One limit for all workers together, instead of one per worker.
        #[arg(long)]
        global: bool,
    },
    /// Change how workers pick among priority levels (every worker, or `--destination`). Stored,
    /// so it also holds for workers started later.
    PriorityWeights {
        /// Ten comma-separated weights for priorities 0 to 9 (weighted), `strict`, or `reset` to
        /// go back to the worker's own flags.
        weights: celerity::PriorityWeightsChange,
    },
    /// Shut workers down (every worker, or `--destination`): warm (running tasks finish), or
    /// `--cold` (they go back to their queues).
    Shutdown {
        /// Return running tasks to their queues instead of finishing them.
        #[arg(long)]
        cold: bool,
    },
    /// Add execution slots to workers' pools.
    PoolGrow {
        /// How many.
        #[arg(default_value = "1", value_parser = clap::value_parser!(u32).range(1..))]
        n: u32,
    },
    /// Remove execution slots from workers' pools, as running tasks end (one always stays).
    PoolShrink {
        /// How many.
        #[arg(default_value = "1", value_parser = clap::value_parser!(u32).range(1..))]
        n: u32,
    },
    /// Make workers consume one more queue (its stream and consumers are created if needed).
    AddConsumer {
        /// The queue name.
        queue: String,
    },
    /// Make workers stop consuming a queue: no new tasks from it; running ones finish.
    CancelConsumer {
        /// The queue name.
        queue: String,
    },
}

impl ControlSubcommand {
    /// The command of the subcommands sent as they are.
    fn command(&self) -> Option<celerity_proto::ControlCommand> {
        use celerity_proto::ControlCommand;
        Some(match self {
            ControlSubcommand::Shutdown { cold } => ControlCommand::Shutdown { cold: *cold },
            ControlSubcommand::PoolGrow { n } => ControlCommand::PoolGrow { n: *n },
            ControlSubcommand::PoolShrink { n } => ControlCommand::PoolShrink { n: *n },
            ControlSubcommand::AddConsumer { queue } => ControlCommand::AddConsumer {
                queue: queue.clone(),
            },
            ControlSubcommand::CancelConsumer { queue } => ControlCommand::CancelConsumer {
                queue: queue.clone(),
            },
            _ => return None,
        })
    }
}

/// Runs the command; false when no worker answered or one refused.
pub(crate) async fn run(args: ControlArgs) -> anyhow::Result<bool> {
    let timeout = args.timeout;
    let client = crate::connect(&args.namespace, &args.nats).await?;
    let control = client.control();
    let mut replies = Vec::new();
    let mut missing = false;
    if args.to.destination.is_empty() {
        replies = send(&control, &args.command, None, timeout).await?;
    } else {
        for worker in &args.to.destination {
            match send(&control, &args.command, Some(worker), timeout).await {
                Ok(answered) => replies.extend(answered),
                Err(error @ celerity::ControlError::UnknownDestination(_)) => {
                    eprintln!("{worker}: {error}");
                    missing = true;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
    for reply in &replies {
        match (&reply.result, &reply.error) {
            (_, Some(error)) => println!("{}: refused: {error}", reply.worker),
            (Some(result), None) => println!("{}: {result}", reply.worker),
            (None, None) => println!("{}: ok", reply.worker),
        }
    }
    if replies.is_empty() {
        eprintln!("no worker answered within {timeout:?}");
    }
    Ok(!missing && !replies.is_empty() && replies.iter().all(|reply| reply.ok))
}

/// Sends `command` to `destination` (or every worker) and gathers the replies.
async fn send(
    control: &celerity::Control,
    command: &ControlSubcommand,
    destination: Option<&str>,
    timeout: Duration,
) -> Result<Vec<celerity_proto::ControlReply>, celerity::ControlError> {
    match command {
        ControlSubcommand::Ping => control.ping(destination, timeout).await,
        ControlSubcommand::Revoke { task_id, terminate } => {
            let mode = match terminate {
                true => RevokeMode::Terminate,
                false => RevokeMode::Skip,
            };
            control.revoke(task_id, mode, destination, timeout).await
        }
        ControlSubcommand::RateLimit { task, rate, global } => {
            let scope = match global {
                true => RateLimitScope::Global,
                false => RateLimitScope::PerWorker,
            };
            control
                .rate_limit(task, *rate, scope, destination, timeout)
                .await
        }
        ControlSubcommand::PriorityWeights { weights } => {
            control
                .priority_weights(*weights, destination, timeout)
                .await
        }
        other => {
            let command = other
                .command()
                .expect("every other subcommand is sent as it is");
            control.send(command, destination, timeout).await
        }
    }
}
