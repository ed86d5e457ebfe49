//! The reference's fan-in: a chord over chunks. A large list is cut into chunks, the chord's header
//! processes the chunks in parallel, and its body aggregates their results once every chunk is done.
//!
//! Start a server (`nats-server -js -a 127.0.0.1`, which `scripts/ensure-nats-server` installs, or
//! `docker compose up -d nats`), then
//! `cargo run -p fan_in -- run` (`--nats-url` or `CELERITY_NATS_URL` names another server).
//! It starts a worker in this process, sends a chord of `process_chunk` over the chunks of the
//! numbers 1 to 100,000 (each chunk's sum of squares) with `aggregate_results` as its body, and
//! prints the body's result beside the same sum computed here; it fails if the two differ.

use std::time::{Duration, Instant};

use celerity::{App, Chord, Client, Shutdown, WorkerConfig};
use clap::Parser;

/// How many numbers the list holds.
const N_ITEMS: u64 = 100_000;
/// How many numbers each header member processes.
const CHUNK_SIZE: usize = 5_000;
/// How long the chord may take.
const WAIT: Duration = Duration::from_secs(60);

/// One chunk's part of the work: the sum of the squares of its numbers.
#[celerity::task(name = "fan_in.process_chunk")]
async fn process_chunk(chunk: Vec<u64>) -> u64 {
    chunk.iter().map(|number| number * number).sum()
}

/// The chord's body: receives the result of every chunk, in chunk order, and adds them up.
#[celerity::task(name = "fan_in.aggregate_results")]
async fn aggregate_results(results: Vec<u64>) -> u64 {
    results.iter().sum()
}

#[derive(Debug, Parser)]
#[command(about = "The reference's chord over chunks")]
enum Command {
    /// Start a worker in this process, send the chord and print its result.
    Run(celerity::cli::NatsArgs),
}

fn main() -> anyhow::Result<()> {
    let Command::Run(nats) = Command::parse();
    celerity::cli::init_logging("warn");
    let nats = nats.config();
    let app = App::builder()
        .namespace("fan-in")
        .task(process_chunk)
        .task(aggregate_results)
        .build()?;
    let runtime = tokio::runtime::Runtime::new()?;
    // The producer connects first: it fails at once when no server answers, a worker would retry.
    let client = runtime.block_on(app.client(&nats))?;
    let config = WorkerConfig::new().hostname("fan-in-worker").concurrency(4);
    let worker = celerity::worker::spawn(app, nats, config)?;
    let outcome = runtime.block_on(fan_in(&client));
    worker.shutdown(match outcome {
        Ok(_) => Shutdown::Warm,
        Err(_) => Shutdown::Cold,
    });
    worker.join()?;
    outcome
}

async fn fan_in(client: &Client) -> anyhow::Result<()> {
    let items: Vec<u64> = (1..=N_ITEMS).collect();
    let header: Vec<_> = items
        .chunks(CHUNK_SIZE)
        .map(|chunk| process_chunk.s((chunk.to_vec(),)))
        .collect();
    let n_chunks = header.len();
    println!(
        "chord: process_chunk over {n_chunks} chunks of {CHUNK_SIZE} of {N_ITEMS} numbers -> aggregate_results"
    );
    let started = Instant::now();
    let result = Chord::new(header, aggregate_results.s(()))
        .apply_async(client)
        .await?;
    let total = result.get(WAIT).await?;
    let expected: u64 = items.iter().map(|number| number * number).sum();
    println!(
        "aggregate_results = {total} in {:.2} s (sum of squares computed here: {expected})",
        started.elapsed().as_secs_f64()
    );
    anyhow::ensure!(
        total == expected,
        "the chord's sum {total} differs from the local one {expected}"
    );
    println!("the chord's sum matches");
    Ok(())
}
