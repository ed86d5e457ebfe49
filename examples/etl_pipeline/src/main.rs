//! The reference's ETL pipeline: `extract -> transform -> load` as one chain, and the final result's
//! parents walked back to show every step.
//!
//! Start a server (`nats-server -js -a 127.0.0.1`, which `scripts/ensure-nats-server` installs, or
//! `docker compose up -d nats`), then
//! `cargo run -p etl_pipeline -- run` (`--nats-url` or `CELERITY_NATS_URL` names another server).
//! It starts a worker in this process and sends two chains. For each one it prints the final
//! result, then walks back from it through `result.parent()` and prints every step, last to first,
//! with its state, retries and result. The transform step fails once with a transient error in both
//! chains and is retried (Celery's `raise self.retry(exc=exc, countdown=...)`). The second source
//! holds a malformed row, so its transform then fails for good, and the load step after it never
//! runs: it is recorded as FAILURE.

use std::time::Duration;

use celerity::{App, AsyncResult, Client, ResultError, Shutdown, TaskContext, WorkerConfig};
use clap::Parser;
use serde::{Deserialize, Serialize};

/// How long a chain may take.
const WAIT: Duration = Duration::from_secs(30);
/// The wait before a transform that found the lookup service busy runs again.
const RETRY_COUNTDOWN: Duration = Duration::from_millis(200);
/// The source whose export holds a malformed row.
const BROKEN_SOURCE: u32 = 13;
/// Where the rows are loaded.
const DESTINATION: &str = "warehouse";

/// A row as it is cleaned up: who paid, and how much, in cents.
#[derive(Debug, Serialize, Deserialize)]
struct CleanRow {
    name: String,
    amount_cents: i64,
}

/// What the load step did.
#[derive(Debug, Serialize, Deserialize)]
struct LoadReport {
    destination: String,
    rows: usize,
    total_cents: i64,
}

/// Why a transform failed.
#[derive(Debug, thiserror::Error)]
enum TransformError {
    /// Transient: worth a retry.
    #[error("the currency lookup service is busy")]
    LookupBusy,
    /// Permanent: the row does not parse.
    #[error("row {line} ({row:?}) is not `name, amount`")]
    Malformed { line: usize, row: String },
}

/// Extract: the raw rows of a source's export, as text.
#[celerity::task(name = "etl.extract_data")]
async fn extract_data(source_id: u32) -> Vec<String> {
    let mut rows: Vec<String> = ["ada , 12.50", "grace,7.25", " linus , 30.00", "ken, 4.25"]
        .map(String::from)
        .into();
    if source_id == BROKEN_SOURCE {
        rows.push("margaret; 19.99".to_owned());
    }
    rows
}

/// Transform: parses and cleans the rows. The first attempt always finds the lookup service busy
/// and asks for a retry, keeping the error as the retry's cause.
#[celerity::task(name = "etl.transform_data")]
async fn transform_data(
    ctx: &TaskContext,
    raw_data: Vec<String>,
) -> Result<Vec<CleanRow>, TransformError> {
    if ctx.retries() == 0 {
        ctx.retry(Some(RETRY_COUNTDOWN));
        return Err(TransformError::LookupBusy);
    }
    raw_data
        .iter()
        .enumerate()
        .map(|(index, row)| parse_row(index + 1, row))
        .collect()
}

/// Load: stores the clean rows at `destination_id` and reports what it stored.
#[celerity::task(name = "etl.load_data")]
async fn load_data(clean_data: Vec<CleanRow>, destination_id: String) -> LoadReport {
    LoadReport {
        destination: destination_id,
        rows: clean_data.len(),
        total_cents: clean_data.iter().map(|row| row.amount_cents).sum(),
    }
}

fn parse_row(line: usize, row: &str) -> Result<CleanRow, TransformError> {
    let malformed = || TransformError::Malformed {
        line,
        row: row.to_owned(),
    };
    let (name, amount) = row.split_once(',').ok_or_else(malformed)?;
    let amount: f64 = amount.trim().parse().map_err(|_| malformed())?;
    Ok(CleanRow {
        name: name.trim().to_owned(),
        amount_cents: (amount * 100.0).round() as i64,
    })
}

#[derive(Debug, Parser)]
#[command(about = "The reference's ETL chain, with its parents walked back")]
enum Command {
    /// Start a worker in this process, send the chains and print every step.
    Run(celerity::cli::NatsArgs),
}

fn main() -> anyhow::Result<()> {
    let Command::Run(nats) = Command::parse();
    // The worker's report of the failure this example causes on purpose is printed below instead.
    celerity::cli::init_logging("warn,celerity::worker::execute=error");
    let nats = nats.config();
    let app = App::builder()
        .namespace("etl-pipeline")
        .task(extract_data)
        .task(transform_data)
        .task(load_data)
        .build()?;
    let runtime = tokio::runtime::Runtime::new()?;
    // The producer connects first: it fails at once when no server answers, a worker would retry.
    let client = runtime.block_on(app.client(&nats))?;
    let worker = celerity::worker::spawn(app, nats, WorkerConfig::new().hostname("etl-worker"))?;
    let outcome = runtime.block_on(send_chains(&client));
    worker.shutdown(match outcome {
        Ok(_) => Shutdown::Warm,
        Err(_) => Shutdown::Cold,
    });
    worker.join()?;
    outcome
}

async fn send_chains(client: &Client) -> anyhow::Result<()> {
    for source_id in [7, BROKEN_SOURCE] {
        println!(
            "chain: extract_data({source_id}) -> transform_data -> load_data({DESTINATION:?})"
        );
        let result = celerity::chain![
            extract_data.s((source_id,)),
            transform_data.s(()),
            load_data.s((DESTINATION.to_owned(),)),
        ]
        .apply_async(client)
        .await?;
        match result.get(WAIT).await {
            Ok(report) => println!(
                "  result: {} rows, {:.2} in all, loaded into {}",
                report.rows,
                report.total_cents as f64 / 100.0,
                report.destination
            ),
            Err(ResultError::Failed { error, .. }) if source_id == BROKEN_SOURCE => {
                println!("  result: the chain failed: {}", error.message);
            }
            Err(error) => return Err(error.into()),
        }
        walk_back(&result).await?;
    }
    Ok(())
}

/// Prints the step of `result`, then each parent in turn, as Celery's `result.parent`.
async fn walk_back(result: &AsyncResult<LoadReport>) -> anyhow::Result<()> {
    println!("  walking back from the result through result.parent():");
    print_step(result).await?;
    let mut n_parents = 0;
    let mut parent = result.parent();
    while let Some(step) = parent {
        print_step(step).await?;
        n_parents += 1;
        parent = step.parent();
    }
    println!("  walked back {n_parents} parents to the first step");
    Ok(())
}

async fn print_step<T>(step: &AsyncResult<T>) -> anyhow::Result<()> {
    let record = step
        .record()
        .await?
        .ok_or_else(|| anyhow::anyhow!("step {} has no record", step.id()))?;
    let task = record
        .task
        .map_or_else(|| format!("task {}", step.id()), |name| name.to_string());
    let retries = match record.retries {
        0 => String::new(),
        1 => " after 1 retry".to_owned(),
        n => format!(" after {n} retries"),
    };
    let detail = match (&record.result, &record.error) {
        (Some(result), _) => result.to_string(),
        (None, Some(error)) => format!("{}: {}", error.kind, error.message),
        (None, None) => String::new(),
    };
    let reason = record
        .meta
        .as_ref()
        .and_then(|meta| meta.get("reason"))
        .and_then(|reason| reason.as_str())
        .map(|reason| format!(" ({reason})"))
        .unwrap_or_default();
    println!("    {task}: {}{retries}{reason} {detail}", record.state);
    Ok(())
}
