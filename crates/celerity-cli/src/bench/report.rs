//! The bench's figures, as a table and as JSON with the versions and the machine they were
//! measured on.

use std::fmt::Write as _;
use std::time::Duration;

use procfs::Current as _;
use serde::Serialize;

use super::cpu::{PerTask, Used};
use crate::table;

/// What a figure should reach.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub(crate) enum Target {
    /// Celerity over raw, at least this.
    RatioAtLeast(f64),
    /// Celerity over raw, at most this.
    RatioAtMost(f64),
    /// The Celerity value itself, below this (in the figure's unit).
    Below(f64),
    /// No target.
    None,
}

impl Target {
    fn describe(self) -> String {
        match self {
            Self::RatioAtLeast(ratio) => format!(">= {ratio}"),
            Self::RatioAtMost(ratio) => format!("<= {ratio}x"),
            Self::Below(value) => format!("< {value}"),
            Self::None => "-".to_owned(),
        }
    }

    fn met(self, celerity: Option<f64>, ratio: Option<f64>) -> Option<bool> {
        match self {
            Self::RatioAtLeast(target) => ratio.map(|ratio| ratio >= target),
            Self::RatioAtMost(target) => ratio.map(|ratio| ratio <= target),
            Self::Below(target) => celerity.map(|value| value < target),
            Self::None => None,
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figure {
    /// Stable id, for tools reading the JSON.
    id: String,
    label: String,
    celerity: Option<f64>,
    raw: Option<f64>,
    /// `celerity / raw`.
    ratio: Option<f64>,
    unit: &'static str,
    target: Target,
    met: Option<bool>,
}

impl Figure {
    fn new(id: &str, label: &str, values: Values, unit: &'static str, target: Target) -> Self {
        let Values { celerity, raw } = values;
        let ratio = match (celerity, raw) {
            (Some(celerity), Some(raw)) if raw > 0.0 => Some(celerity / raw),
            _ => None,
        };
        Self {
            id: id.to_owned(),
            label: label.to_owned(),
            celerity,
            raw,
            ratio,
            unit,
            target,
            met: target.met(celerity, ratio),
        }
    }

    /// A throughput: `n` tasks in `celerity` against `n` messages in `raw`.
    pub(crate) fn rate(id: &str, label: &str, n: usize, celerity: Duration, raw: Duration) -> Self {
        let rate = |elapsed: Duration| n as f64 / elapsed.as_secs_f64().max(1e-9);
        Self::new(
            id,
            label,
            Values::both(rate(celerity), rate(raw)),
            "tasks/s",
            Target::RatioAtLeast(0.8),
        )
    }

    /// A latency in milliseconds.
    pub(crate) fn latency(
        id: &str,
        label: &str,
        celerity: Duration,
        raw: Duration,
        target: Target,
    ) -> Self {
        Self::new(
            id,
            label,
            Values::both(millis(celerity), millis(raw)),
            "ms",
            target,
        )
    }

    /// Two times in seconds, the reference being another Celerity figure.
    pub(crate) fn ratio_of_times(
        id: &str,
        label: &str,
        celerity: Duration,
        reference: Duration,
        target: Target,
    ) -> Self {
        Self::new(
            id,
            label,
            Values::both(celerity.as_secs_f64(), reference.as_secs_f64()),
            "s",
            target,
        )
    }

    /// The priority-9 time to start, in milliseconds.
    pub(crate) fn priority(label: &str, median: Duration) -> Self {
        Self::new(
            "priority_start",
            label,
            Values::celerity(Some(millis(median))),
            "ms",
            Target::Below(10.0),
        )
    }

    /// A resident memory, in MiB, under `limit` MiB.
    pub(crate) fn memory(id: &str, label: &str, bytes: Option<u64>, limit: f64) -> Self {
        let mib = bytes.map(|bytes| bytes as f64 / (1024.0 * 1024.0));
        Self::new(
            id,
            label,
            Values::celerity(mib),
            "MiB",
            Target::Below(limit),
        )
    }
}

/// A figure's two values, Celerity's and its reference's.
struct Values {
    celerity: Option<f64>,
    raw: Option<f64>,
}

impl Values {
    fn both(celerity: f64, raw: f64) -> Self {
        Self {
            celerity: Some(celerity),
            raw: Some(raw),
        }
    }

    /// Celerity's alone (no reference).
    fn celerity(celerity: Option<f64>) -> Self {
        Self {
            celerity,
            raw: None,
        }
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Versions of what was measured.
#[derive(Debug, Serialize)]
struct Versions {
    celerity: &'static str,
    nats_server: String,
    rustc: &'static str,
    profile: &'static str,
}

/// The machine the figures were measured on.
#[derive(Debug, Serialize)]
struct Machine {
    cores: usize,
    cpu: Option<String>,
    memory_bytes: Option<u64>,
    os: Option<String>,
    kernel: Option<String>,
}

impl Machine {
    fn read() -> Self {
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        Self {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            cpu: procfs::CpuInfo::current()
                .ok()
                .and_then(|cpuinfo| cpuinfo.model_name(0).map(str::to_owned)),
            memory_bytes: procfs::Meminfo::current()
                .ok()
                .map(|meminfo| meminfo.mem_total),
            os: os_release
                .lines()
                .find_map(|line| line.strip_prefix("PRETTY_NAME="))
                .map(|name| name.trim_matches('"').to_owned()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|release| release.trim().to_owned()),
        }
    }
}

/// The servers of a run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Topology {
    /// Nodes the bench started (1: one server), each read for the servers' CPU; `None` with
    /// `--nats-url`.
    pub(crate) nodes: Option<usize>,
    /// The cluster's name, as the connected server reports it; `None` for a server alone.
    pub(crate) cluster: Option<String>,
    /// Copies of every stream and bucket, Celerity's and the raw references' alike.
    pub(crate) replicas: usize,
}

impl Topology {
    /// `3-node cluster, R3`, `one server, R1`.
    fn describe(&self) -> String {
        let servers = match (self.nodes, &self.cluster) {
            (Some(1), _) => "one server".to_owned(),
            (Some(nodes), _) => format!("{nodes}-node cluster"),
            (None, Some(name)) => format!("cluster {name} at --nats-url"),
            (None, None) => "one server at --nats-url".to_owned(),
        };
        format!("{servers}, R{}", self.replicas)
    }

    /// The heading of the servers' CPU: `server`, or `3 servers` (the nodes' sum).
    fn server_heading(&self) -> String {
        match self.nodes {
            Some(nodes) if nodes > 1 => format!("{nodes} servers"),
            _ => "server".to_owned(),
        }
    }
}

/// Every figure of one run.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    versions: Versions,
    /// The servers measured, and the replicas of every stream.
    servers: Topology,
    machine: Machine,
    sizes: Sizes,
    figures: Vec<Figure>,
    /// With `--breakdown`: what one `delay()` costs the server, piece by piece.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    publish_costs: Vec<PublishCost>,
    /// CPU per task of each process, for both sides of each throughput figure.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cpu_per_task: Vec<PerTask>,
}

/// One step of the publish cost breakdown.
#[derive(Debug, Serialize)]
pub(crate) struct PublishCost {
    id: &'static str,
    label: &'static str,
    /// Publishes per second.
    rate: f64,
    /// CPU of the server (every node's together, on a cluster the bench started) and of the
    /// bench (the publisher) per publish, in microseconds.
    server_us: Option<f64>,
    bench_us: Option<f64>,
}

impl Report {
    pub(crate) fn new(sizes: Sizes, nats_server: String, servers: Topology) -> Self {
        Self {
            versions: Versions {
                celerity: env!("CARGO_PKG_VERSION"),
                nats_server,
                rustc: env!("CELERITY_RUSTC_VERSION"),
                profile: if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                },
            },
            servers,
            machine: Machine::read(),
            sizes,
            figures: Vec::new(),
            publish_costs: Vec::new(),
            cpu_per_task: Vec::new(),
        }
    }

    pub(crate) fn add_cpu(&mut self, split: impl IntoIterator<Item = PerTask>) {
        self.cpu_per_task.extend(split);
    }

    pub(crate) fn add(&mut self, figure: Figure) {
        self.figures.push(figure);
    }

    pub(crate) fn add_publish_costs(
        &mut self,
        costs: Vec<(&'static str, &'static str, f64, Used)>,
        publishes: usize,
    ) {
        self.publish_costs
            .extend(costs.into_iter().map(|(id, label, rate, used)| {
                let cpu = PerTask::new(id, "raw", used, publishes);
                PublishCost {
                    id,
                    label,
                    rate,
                    server_us: cpu.server_us,
                    bench_us: cpu.bench_us,
                }
            }));
    }

    /// The figures as a text table, with the versions and machine above it.
    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        let value = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), format_value);
        let machine = &self.machine;
        let _ = writeln!(
            out,
            "celerity {} ({}, {}), nats-server {} ({}); {} cores, {}, {}",
            self.versions.celerity,
            self.versions.profile,
            self.versions.rustc,
            self.versions.nats_server,
            self.servers.describe(),
            machine.cores,
            machine.cpu.as_deref().unwrap_or("unknown CPU"),
            machine.os.as_deref().unwrap_or("unknown OS"),
        );
        let figures = self.figures.iter().map(|figure| {
            [
                figure.label.clone(),
                value(figure.celerity),
                value(figure.raw),
                figure
                    .ratio
                    .map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.2}")),
                figure.target.describe(),
                figure.unit.to_owned(),
                match figure.met {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "-",
                }
                .to_owned(),
            ]
        });
        let header = [
            "figure", "celerity", "raw", "ratio", "target", "unit", "met",
        ];
        let _ = writeln!(out, "{}", table::plain(header, &[1, 2, 3, 4], figures));
        if !self.publish_costs.is_empty() {
            let costs = self.publish_costs.iter().map(|cost| {
                [
                    cost.label.to_owned(),
                    format_value(cost.rate),
                    value(cost.server_us),
                    value(cost.bench_us),
                ]
            });
            let server_us = format!("{} µs", self.servers.server_heading());
            let header = [
                "what one delay() costs the server (raw async-nats, same run)",
                "publishes/s",
                &server_us,
                "bench µs",
            ];
            let _ = writeln!(out, "\n{}", table::plain(header, &[1, 2, 3], costs));
        }
        if !self.cpu_per_task.is_empty() {
            out.push_str(&self.cpu_table());
        }
        out
    }

    /// The CPU per task of each process, for both sides of each throughput figure.
    fn cpu_table(&self) -> String {
        let value = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), format_value);
        let servers = match self.servers.nodes {
            Some(nodes) if nodes > 1 => format!("; servers: the {nodes} nodes' sum"),
            _ => String::new(),
        };
        let splits = self.cpu_per_task.iter().map(|split| {
            [
                split.figure.to_owned(),
                split.side.to_owned(),
                value(split.server_us),
                value(split.bench_us),
                value(split.worker_us),
                value(split.total_us),
            ]
        });
        let server = self.servers.server_heading();
        let header = ["figure", "side", &server, "bench", "worker", "total"];
        format!(
            "\nCPU per task, microseconds (/proc; the bench process is the producer, and all of the raw side{servers})\n{}\n",
            table::plain(header, &[2, 3, 4, 5], splits)
        )
    }

    pub(crate) fn json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }
}

/// A figure with enough digits: thousands grouped above 1,000, three significant digits below.
fn format_value(value: f64) -> String {
    if value >= 1000.0 {
        let whole = value.round() as u64;
        let digits = whole.to_string();
        let mut grouped = String::new();
        for (index, digit) in digits.chars().enumerate() {
            if index > 0 && (digits.len() - index).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        grouped
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// The sizes of one run.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct Sizes {
    pub(crate) tasks: usize,
    pub(crate) chains: usize,
    pub(crate) chord: usize,
    pub(crate) window: usize,
    pub(crate) concurrency: usize,
    pub(crate) quick: bool,
    /// Whether the worker and the producer send events (`--without-events`: not).
    pub(crate) events: bool,
    /// The ratio of traces the producer and the worker sample and export to the bench's OTLP
    /// sink (`--trace`; `None`: tracing off).
    pub(crate) trace: Option<f64>,
    /// Copies of every stream and bucket (`--replicas`; one per node of `--cluster`).
    pub(crate) replicas: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_grouped_or_rounded() {
        assert_eq!(format_value(176_543.2), "176,543");
        assert_eq!(format_value(1000.0), "1,000");
        assert_eq!(format_value(142.4), "142");
        assert_eq!(format_value(12.34), "12.3");
        assert_eq!(format_value(0.1426), "0.143");
    }

    #[test]
    fn targets_are_judged_on_the_ratio_or_the_value() {
        let rate = Figure::rate(
            "publish",
            "publish",
            100,
            Duration::from_secs(1),
            Duration::from_millis(900),
        );
        assert_eq!(rate.met, Some(true), "0.9 of raw");
        let slow = Figure::rate(
            "publish",
            "publish",
            100,
            Duration::from_secs(2),
            Duration::from_secs(1),
        );
        assert_eq!(slow.met, Some(false), "0.5 of raw");
        let memory = Figure::memory("worker_rss_idle", "rss", Some(30 * 1024 * 1024), 20.0);
        assert_eq!(memory.met, Some(false));
        assert_eq!(memory.ratio, None);
        let unknown = Figure::memory("worker_rss_idle", "rss", None, 20.0);
        assert_eq!(unknown.met, None);
    }
}
