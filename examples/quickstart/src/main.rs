//! The README example: a task, a worker and a producer in one binary.
//!
//! `cargo run -p quickstart -- worker -c 4` runs a worker; `cargo run -p quickstart -- send 2 3`
//! sends `add(2, 3)` and prints the result. Both reach NATS with the same `--nats-*` flags and
//! `CELERITY_NATS_*` variables (`--nats-url`, `CELERITY_NATS_URL`, ...).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

#[celerity::task]
async fn add(x: i64, y: i64) -> i64 {
    x + y
}

/// A worker and a producer in one binary.
#[derive(Parser)]
#[allow(clippy::large_enum_variant)] // Parsed once per process: its size does not matter.
enum Command {
    /// Run a worker: `quickstart worker -Q default -c 4 --hostname w1`.
    Worker(celerity::cli::WorkerArgs),
    /// Send `add(x, y)` and print the result: `quickstart send 2 3`.
    Send {
        x: i64,
        y: i64,
        /// The worker's connection flags and variables, so both reach the same NATS.
        #[command(flatten)]
        nats: celerity::cli::NatsArgs,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    let app = celerity::App::builder().task(add).build()?;
    let (x, y, nats) = match Command::parse() {
        Command::Worker(args) => return Ok(celerity::cli::run_worker(app, &args)),
        Command::Send { x, y, nats } => (x, y, nats.config()),
    };
    tokio::runtime::Runtime::new()?.block_on(async {
        let client = app.client(&nats).await?;
        let result = add.delay(&client, x, y).await?;
        println!("{x} + {y} = {}", result.get(Duration::from_secs(30)).await?);
        Ok(ExitCode::SUCCESS)
    })
}
