//! The flags of `celerity bench`, and the sizes they make.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use super::report::Sizes;

/// `celerity bench` flags.
#[derive(Debug, Clone, Args)]
pub(crate) struct BenchArgs {
    /// A smoke run: a few thousand tasks, for checking that the bench runs (not for figures).
    #[arg(long)]
    quick: bool,
    /// Tasks in each throughput figure and in the priority backlog (default 100,000; 2,000 with
    /// --quick).
    #[arg(long)]
    tasks: Option<usize>,
    /// Chains in the chain-step latency figure (default 200; 10 with --quick).
    #[arg(long)]
    chains: Option<usize>,
    /// Members of the chord and the group (default 10,000; 200 with --quick).
    #[arg(long)]
    chord: Option<usize>,
    /// Publish acknowledgements awaited at once, for Celerity and raw publishes alike.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// Execution slots of the worker, and messages in flight in the raw consumer.
    #[arg(short = 'c', long, default_value_t = 64)]
    concurrency: usize,
    /// Run only these parts (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(super) only: Option<Vec<Part>>,
    /// Also measure what one delay() costs the server, piece by piece, with raw async-nats
    /// publishes: a task's headers, the doorbell, the PENDING create (docs/performance.md).
    #[arg(long)]
    pub(super) breakdown: bool,
    /// Run the bench's worker with `--without-events` and its producer without `task-sent`
    /// events, to measure what events cost (docs/performance.md).
    #[arg(long = "without-events")]
    without_events: bool,
    /// Trace the producer and the worker, sampling this ratio of tasks (1 = all, 0.01 = 1%), and
    /// export the spans over OTLP/HTTP to a sink the bench runs, to measure what tracing costs
    /// (docs/performance.md). Without it tracing is off, whatever OTEL_* says.
    #[arg(long, value_parser = parse_ratio)]
    trace: Option<f64>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub(super) json: Option<PathBuf>,
    /// Use this NATS server instead of starting a local nats-server (its streams named
    /// `BENCH_RAW*` and the bench's queues are deleted and recreated).
    #[arg(long = "nats-url")]
    pub(super) nats_url: Option<String>,
}

/// Parses `--trace`: a ratio above 0, at most 1.
fn parse_ratio(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(ratio) if ratio > 0.0 && ratio <= 1.0 => Ok(ratio),
        _ => Err(format!(
            "give a ratio above 0 and at most 1 (1 = every task), not {value}"
        )),
    }
}

/// A part of the bench, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Part {
    /// Publish rate of delay().
    Publish,
    /// No-op tasks end to end with results.
    E2eResults,
    /// No-op tasks end to end with ignore_result.
    E2eIgnoreResult,
    /// Chain step latency.
    Chain,
    /// Chord of 10,000 against a group of as many.
    Chord,
    /// Priority-9 time to start behind a backlog.
    Priority,
}

impl BenchArgs {
    pub(super) fn sizes(&self) -> anyhow::Result<Sizes> {
        let (tasks, chains, chord) = if self.quick {
            (2_000, 10, 200)
        } else {
            (100_000, 200, 10_000)
        };
        let sizes = Sizes {
            tasks: self.tasks.unwrap_or(tasks),
            chains: self.chains.unwrap_or(chains),
            chord: self.chord.unwrap_or(chord),
            window: self.window,
            concurrency: self.concurrency,
            quick: self.quick,
            events: !self.without_events,
            trace: self.trace,
        };
        if sizes.tasks == 0
            || sizes.chains == 0
            || sizes.chord == 0
            || sizes.window == 0
            || sizes.concurrency == 0
        {
            bail!("--tasks, --chains, --chord, --window and --concurrency must be at least 1");
        }
        Ok(sizes)
    }
}
