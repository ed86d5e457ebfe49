//! `celerity dead-letters list | show | requeue | delete | purge`: the messages no worker could
//! run, read and handled through `celerity::dead_letters`.

use anyhow::{Context as _, bail};
use celerity::dead_letters::{DeadLetters, Letter, LetterFilter, Page};
use celerity_proto::QueueName;
use clap::{Args, Subcommand};
use serde_json::json;

/// `celerity dead-letters ...`
#[derive(Debug, Args)]
pub(crate) struct DeadLettersArgs {
    #[command(subcommand)]
    command: LettersCommand,
}

#[derive(Debug, Subcommand)]
enum LettersCommand {
    /// The letters, newest first, with their reason.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Only letters with this reason code (`unknown_task`, `bad_arguments`, ...).
        #[arg(long)]
        reason: Option<String>,
        /// List at most this many (1 to 1000).
        #[arg(long, default_value = "50", value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Skip this many of the newest first.
        #[arg(long, default_value = "0")]
        offset: u64,
        /// One JSON object: `total`, `next_offset` and the `letters`, bodies left out.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: crate::ConnectionArgs,
    },
    /// One letter: its reason, error, worker, headers and body.
    Show {
        /// The letter's sequence in the dead-letter stream (from `list`).
        seq: u64,
        /// As one JSON object, with the headers and the body as text (bytes that are not UTF-8
        /// replaced).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: crate::ConnectionArgs,
    },
    /// Send letters back to the queue they came from, then delete them.
    Requeue {
        /// The letters' sequences.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        seqs: Vec<u64>,
        /// Every letter (of `--queue`, with it).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        connection: crate::ConnectionArgs,
    },
    /// Delete letters without running them.
    Delete {
        /// The letters' sequences.
        #[arg(required = true)]
        seqs: Vec<u64>,
        #[command(flatten)]
        connection: crate::ConnectionArgs,
    },
    /// Delete every letter (of `--queue`, with it), asking first unless `--force`.
    Purge {
        #[command(flatten)]
        filter: FilterArgs,
        /// Do not ask.
        #[arg(short = 'f', long)]
        force: bool,
        #[command(flatten)]
        connection: crate::ConnectionArgs,
    },
}

#[derive(Debug, Args)]
struct FilterArgs {
    /// Only the letters dead-lettered from this queue.
    #[arg(long, short = 'Q')]
    queue: Option<String>,
}

impl FilterArgs {
    fn filter(&self) -> anyhow::Result<LetterFilter> {
        let mut filter = LetterFilter::all();
        if let Some(queue) = &self.queue {
            filter = filter.queue(QueueName::new(queue).context("invalid queue name")?);
        }
        Ok(filter)
    }
}

/// Runs the subcommand; false when a letter could not be requeued or deleted, or the purge was
/// declined.
pub(crate) async fn run(args: DeadLettersArgs) -> anyhow::Result<bool> {
    match args.command {
        LettersCommand::List {
            filter,
            reason,
            limit,
            offset,
            json,
            connection,
        } => {
            let mut filter = filter.filter()?;
            filter.reason = reason;
            let letters = letters_of(&connection).await?;
            let page = Page::new(offset, limit as usize);
            let page = letters.list(&filter, page).await?;
            match json {
                true => {
                    let letters: Vec<_> =
                        page.letters.iter().map(|l| letter_json(l, false)).collect();
                    let value = json!({"total": page.total, "next_offset": page.next_offset, "letters": letters});
                    println!("{value}");
                }
                false => print_list(&page),
            }
            Ok(true)
        }
        LettersCommand::Show {
            seq,
            json,
            connection,
        } => {
            let letter = letters_of(&connection).await?.get(seq).await?;
            match json {
                true => println!("{}", letter_json(&letter, true)),
                false => print_letter(&letter),
            }
            Ok(true)
        }
        LettersCommand::Requeue {
            seqs,
            all,
            filter,
            connection,
        } => requeue(&letters_of(&connection).await?, seqs, all, &filter).await,
        LettersCommand::Delete { seqs, connection } => {
            let letters = letters_of(&connection).await?;
            let mut all_deleted = true;
            for seq in seqs {
                match letters.delete(seq).await {
                    Ok(()) => println!("deleted letter {seq}"),
                    Err(error) => {
                        eprintln!("error: {:#}", anyhow::Error::new(error));
                        all_deleted = false;
                    }
                }
            }
            Ok(all_deleted)
        }
        LettersCommand::Purge {
            filter,
            force,
            connection,
        } => purge(&letters_of(&connection).await?, &filter, force).await,
    }
}

async fn letters_of(connection: &crate::ConnectionArgs) -> anyhow::Result<DeadLetters> {
    Ok(connection.connect().await?.dead_letters())
}

/// Requeues the letters named, or every letter the filter selects; false when one failed.
async fn requeue(
    letters: &DeadLetters,
    mut seqs: Vec<u64>,
    all: bool,
    filter: &FilterArgs,
) -> anyhow::Result<bool> {
    if all {
        seqs = all_seqs(letters, &filter.filter()?).await?;
    } else if filter.queue.is_some() {
        bail!("--queue selects letters for `--all`: give sequences or --all, not both");
    }
    let mut all_requeued = true;
    for seq in seqs {
        match letters.requeue(seq).await {
            Ok(task_id) => println!("requeued letter {seq} as task {task_id}"),
            Err(error) => {
                eprintln!("error: {:#}", anyhow::Error::new(error));
                all_requeued = false;
            }
        }
    }
    Ok(all_requeued)
}

/// The sequences of every letter `filter` selects, oldest first, page by page.
async fn all_seqs(letters: &DeadLetters, filter: &LetterFilter) -> anyhow::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    let mut page = Page::first(Page::MAX_LIMIT);
    loop {
        let listed = letters.list(filter, page).await?;
        seqs.extend(listed.letters.iter().map(|letter| letter.seq));
        match listed.next_offset {
            Some(offset) => page = Page::new(offset, Page::MAX_LIMIT),
            None => break,
        }
    }
    seqs.reverse();
    Ok(seqs)
}

async fn purge(letters: &DeadLetters, filter: &FilterArgs, force: bool) -> anyhow::Result<bool> {
    let what = match &filter.queue {
        Some(queue) => format!("every dead letter of queue {queue}"),
        None => "every dead letter".to_owned(),
    };
    if !force && !crate::purge::confirm(&what, "They cannot be requeued afterwards.")? {
        eprintln!("nothing purged");
        return Ok(false);
    }
    let purged = letters.purge(&filter.filter()?).await?;
    println!(
        "purged {purged} dead letter{}",
        if purged == 1 { "" } else { "s" }
    );
    Ok(true)
}

fn print_list(page: &celerity::dead_letters::LetterPage) {
    if page.letters.is_empty() {
        println!("- no dead letters -");
        return;
    }
    for letter in &page.letters {
        let error = letter
            .dead_letter
            .as_ref()
            .map_or("", |dead| dead.error.as_str());
        println!(
            "{}  {}  {}  {}  {}: {error}",
            letter.seq,
            letter.queue,
            letter.task.as_deref().unwrap_or("-"),
            letter.task_id.as_deref().unwrap_or("-"),
            letter.reason,
        );
    }
    let shown = page.letters.len();
    match page.next_offset {
        Some(offset) => println!(
            "({shown} shown of {}; next page: --offset {offset})",
            page.total
        ),
        None => println!("({shown} shown of {})", page.total),
    }
}

fn print_letter(letter: &Letter) {
    println!("seq: {}", letter.seq);
    println!("queue: {}", letter.queue);
    println!("task: {}", letter.task.as_deref().unwrap_or("-"));
    println!("task id: {}", letter.task_id.as_deref().unwrap_or("-"));
    println!("reason: {}", letter.reason);
    if let Some(dead) = &letter.dead_letter {
        println!("error: {}", dead.error);
        println!("worker: {}", dead.worker);
        println!("deliveries: {}", dead.deliveries);
        println!(
            "subject: {} (sequence {})",
            dead.subject, dead.stream_sequence
        );
        println!("dead-lettered at: {} ms", dead.time_ms);
    }
    println!("size: {} bytes", letter.size);
    println!("headers:");
    for (name, value) in &letter.headers {
        println!("  {name}: {value}");
    }
    match letter.body_dropped {
        Some(size) => println!("body: dropped ({size} bytes)"),
        None => println!("body: {}", String::from_utf8_lossy(&letter.body)),
    }
}

/// A letter as JSON, with its body as text when `with_body`.
fn letter_json(letter: &Letter, with_body: bool) -> serde_json::Value {
    let dead = letter.dead_letter.as_ref();
    let mut value = json!({
        "seq": letter.seq,
        "queue": letter.queue,
        "task": letter.task,
        "task_id": letter.task_id,
        "reason": letter.reason,
        "error": dead.map(|dead| &dead.error),
        "worker": dead.map(|dead| &dead.worker),
        "deliveries": dead.map(|dead| dead.deliveries),
        "subject": dead.map(|dead| &dead.subject),
        "stream_sequence": dead.map(|dead| dead.stream_sequence),
        "time_ms": dead.map(|dead| dead.time_ms),
        "body_dropped": letter.body_dropped,
        "size": letter.size,
        "stored_at_ms": letter.stored_at_ms,
    });
    if with_body {
        let headers: Vec<_> = letter
            .headers
            .iter()
            .map(|(name, value)| json!([name, value]))
            .collect();
        value["headers"] = json!(headers);
        value["body"] = json!(String::from_utf8_lossy(&letter.body));
    }
    value
}
