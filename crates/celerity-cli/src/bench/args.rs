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
    /// `BENCH_RAW*` and the bench's queues are deleted and recreated); a cluster's URLs
    /// comma-separated.
    #[arg(long = "nats-url")]
    pub(super) nats_url: Option<String>,
    /// Start a local JetStream cluster of this many nats-server nodes instead of one server
    /// (3 or more: three is the smallest cluster that keeps R3 streams through the loss of one
    /// node), with every stream and bucket at --replicas copies.
    #[arg(long, value_parser = parse_cluster, conflicts_with = "nats_url")]
    pub(super) cluster: Option<usize>,
    /// Copies of every stream and bucket, Celerity's and the raw references' alike (1 to 5;
    /// default: one per node of --cluster, else 1). More than 1 needs --cluster, or a
    /// --nats-url cluster of at least this many JetStream servers.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=5))]
    replicas: Option<u8>,
}

/// Parses `--cluster`: a node count of at least 2.
fn parse_cluster(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0 | 1) => Err(format!(
            "a cluster of {value} node is no cluster: leave out --cluster to measure one server, \
             or give 3 (the smallest cluster that keeps R3 streams through the loss of a node)"
        )),
        Ok(nodes) => Ok(nodes),
        Err(_) => Err(format!("give a number of nodes (3 or more), not {value}")),
    }
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
            replicas: self.replicas()?,
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

    /// The copies of every stream: `--replicas`, else one per node of `--cluster` (at most
    /// JetStream's 5), else 1; refused where the servers cannot keep them.
    fn replicas(&self) -> anyhow::Result<usize> {
        let nodes = self.cluster;
        let Some(replicas) = self.replicas.map(usize::from) else {
            return Ok(nodes.map_or(1, |nodes| nodes.min(celerity::MAX_REPLICAS)));
        };
        match nodes {
            Some(nodes) if replicas > nodes => bail!(
                "--replicas {replicas} is more than the {nodes} nodes of --cluster: a stream keeps \
                 at most one copy per server; give --cluster {replicas} or fewer replicas"
            ),
            None if replicas > 1 && self.nats_url.is_none() => bail!(
                "--replicas {replicas} needs a cluster: add --cluster {}, or point --nats-url at \
                 a cluster of at least {replicas} JetStream servers",
                replicas.max(3)
            ),
            _ => Ok(replicas),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `celerity bench` with these flags.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    /// The replicas these flags give, or the error message.
    fn replicas(flags: &[&str]) -> Result<usize, String> {
        let flags = std::iter::once("bench").chain(flags.iter().copied());
        let cli = Cli::try_parse_from(flags).map_err(|error| error.to_string())?;
        cli.bench
            .sizes()
            .map(|sizes| sizes.replicas)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn replicas_default_to_one_per_node_of_the_cluster() {
        assert_eq!(replicas(&[]), Ok(1));
        assert_eq!(replicas(&["--cluster", "3"]), Ok(3));
        assert_eq!(replicas(&["--cluster", "7"]), Ok(5), "JetStream's most");
        assert_eq!(replicas(&["--cluster", "5", "--replicas", "3"]), Ok(3));
        assert_eq!(
            replicas(&[
                "--nats-url",
                "nats://a:4222,nats://b:4222",
                "--replicas",
                "3"
            ]),
            Ok(3)
        );
    }

    #[test]
    fn a_cluster_of_one_node_is_refused() {
        let refused = replicas(&["--cluster", "1"]).unwrap_err();
        assert!(refused.contains("leave out --cluster"), "{refused}");
        assert!(replicas(&["--cluster", "0"]).is_err());
        assert!(replicas(&["--cluster", "three"]).is_err());
    }

    #[test]
    fn more_replicas_than_servers_are_refused() {
        let refused = replicas(&["--cluster", "3", "--replicas", "5"]).unwrap_err();
        assert!(refused.contains("more than the 3 nodes"), "{refused}");
        let alone = replicas(&["--replicas", "3"]).unwrap_err();
        assert!(alone.contains("needs a cluster"), "{alone}");
        assert!(replicas(&["--cluster", "3", "--replicas", "6"]).is_err());
        assert!(replicas(&["--cluster", "3", "--replicas", "0"]).is_err());
    }

    #[test]
    fn a_cluster_and_a_server_url_are_refused_together() {
        let refused = replicas(&["--cluster", "3", "--nats-url", "nats://a:4222"]).unwrap_err();
        assert!(refused.contains("--nats-url"), "{refused}");
    }
}
