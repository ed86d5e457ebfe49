//! `celerity purge <queue> [--priority p] [--force]`: removes the tasks stored in a queue (all
//! its levels, or one), asking first unless forced, and says how many went.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::{Context as _, bail};
use celerity_proto::{Layout, Priority, QueueName};
use clap::Args;

/// `celerity purge ...`
#[derive(Debug, Args)]
pub(crate) struct PurgeArgs {
    /// The queue whose tasks go.
    queue: String,
    /// Only this priority level (0 to 9).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
    priority: Option<u8>,
    /// Do not ask.
    #[arg(short = 'f', long)]
    force: bool,
    #[command(flatten)]
    connection: crate::ConnectionArgs,
}

/// Purges the queue; false when the user said no.
pub(crate) async fn run(args: PurgeArgs) -> anyhow::Result<bool> {
    let queue = QueueName::new(&args.queue).context("invalid queue name")?;
    let priority = args.priority.map(Priority::new).transpose()?;
    let client = args.connection.connect().await?;
    let layout = Layout::new(client.settings().namespace.clone());
    let js = async_nats::jetstream::new(client.nats().clone());
    let name = layout.queue_stream(&queue);
    let mut stream = match js.get_stream(&name).await {
        Ok(stream) => stream,
        Err(error) if crate::is_stream_not_found(&error) => {
            bail!(
                "there is no queue {queue} in namespace {}: no stream {name} (no worker or producer has used it)",
                layout.namespace()
            );
        }
        Err(error) => return Err(error).context(format!("cannot read the stream {name}")),
    };
    let stored = stream
        .info()
        .await
        .context("cannot read the queue's stream")?
        .state
        .messages;
    let what = match priority {
        Some(priority) => format!("the tasks at priority {priority} of queue {queue}"),
        None => format!("every task of queue {queue} ({stored} stored)"),
    };
    if !args.force && !confirm(&what, "Running tasks' messages go too.")? {
        eprintln!("nothing purged");
        return Ok(false);
    }
    let purge = stream.purge();
    let purged = match priority {
        Some(priority) => purge.filter(layout.task_subject(&queue, priority)).await,
        None => purge.await,
    }
    .context("the purge failed")?
    .purged;
    println!(
        "purged {purged} task{} from queue {queue}",
        if purged == 1 { "" } else { "s" }
    );
    Ok(true)
}

/// Asks whether to purge `what`, with a `note` on what it means, on the terminal; refuses without
/// one (a script passes `--force`).
pub(crate) fn confirm(what: &str, note: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing to purge {what} without asking: pass --force to purge without a terminal");
    }
    eprint!("Purge {what}? {note} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}
