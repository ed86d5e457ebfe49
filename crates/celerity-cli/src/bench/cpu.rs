//! Where a throughput figure's CPU goes: the CPU time the server, the bench and the worker used
//! during each side of the figure, per task, read from `/proc`. On 2 cores shared by all three,
//! a ratio is bounded by how much CPU each side spends per task, and this says which process
//! spends it.

use std::time::Duration;

use procfs::ProcResult;
use procfs::process::Process;
use serde::Serialize;

/// The processes of a run: the servers (when the bench started them: its one server, or every
/// node of its cluster, counted together), the bench (this process: the producer, and the whole
/// raw side) and the worker.
#[derive(Debug, Clone, Default)]
pub(crate) struct Processes {
    /// Empty when the bench did not start the servers (`--nats-url`).
    pub(crate) servers: Vec<u32>,
    pub(crate) worker: Option<u32>,
}

/// CPU time used so far by each process; `None` where it cannot be read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading {
    server: Option<Duration>,
    bench: Option<Duration>,
    worker: Option<Duration>,
}

/// CPU time used by each process over one side of a figure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Used {
    server: Option<Duration>,
    bench: Option<Duration>,
    worker: Option<Duration>,
}

impl Processes {
    pub(crate) fn read(&self) -> Reading {
        Reading {
            server: servers_time(&self.servers),
            bench: cpu_time(Process::myself()),
            worker: self
                .worker
                .and_then(|pid| cpu_time(Process::new(pid.try_into().ok()?))),
        }
    }
}

impl Reading {
    /// What each process used from `self` to `later`.
    pub(crate) fn until(&self, later: &Reading) -> Used {
        let since = |before: Option<Duration>, after: Option<Duration>| {
            Some(after?.saturating_sub(before?))
        };
        Used {
            server: since(self.server, later.server),
            bench: since(self.bench, later.bench),
            worker: since(self.worker, later.worker),
        }
    }
}

impl Used {
    /// Nothing used yet, by any process: where a figure measured in turns starts adding up.
    pub(crate) const ZERO: Used = Used {
        server: Some(Duration::ZERO),
        bench: Some(Duration::ZERO),
        worker: Some(Duration::ZERO),
    };

    /// Both spans added up (a figure measured in turns).
    pub(crate) fn plus(self, other: Used) -> Used {
        let add = |a: Option<Duration>, b: Option<Duration>| Some(a? + b?);
        Used {
            server: add(self.server, other.server),
            bench: add(self.bench, other.bench),
            worker: add(self.worker, other.worker),
        }
    }
}

/// One side of one figure, in microseconds of CPU per task.
#[derive(Debug, Serialize)]
pub(crate) struct PerTask {
    pub(crate) figure: &'static str,
    pub(crate) side: &'static str,
    pub(crate) server_us: Option<f64>,
    pub(crate) bench_us: Option<f64>,
    pub(crate) worker_us: Option<f64>,
    /// The sum of the three, when all three were read.
    pub(crate) total_us: Option<f64>,
}

impl PerTask {
    pub(crate) fn new(figure: &'static str, side: &'static str, used: Used, tasks: usize) -> Self {
        let per_task = |time: Option<Duration>| {
            time.map(|time| time.as_secs_f64() * 1e6 / tasks.max(1) as f64)
        };
        let (server_us, bench_us, worker_us) = (
            per_task(used.server),
            per_task(used.bench),
            per_task(used.worker),
        );
        Self {
            figure,
            side,
            server_us,
            bench_us,
            worker_us,
            total_us: server_us
                .zip(bench_us)
                .zip(worker_us)
                .map(|((server, bench), worker)| server + bench + worker),
        }
    }
}

/// The CPU time of every server together; `None` when there are none, or one cannot be read.
fn servers_time(pids: &[u32]) -> Option<Duration> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .map(|pid| cpu_time(Process::new((*pid).try_into().ok()?)))
        .sum()
}

/// User plus system CPU time of `process` (from its `/proc/<pid>/stat`), all its threads together.
fn cpu_time(process: ProcResult<Process>) -> Option<Duration> {
    let stat = process.ok()?.stat().ok()?;
    Some(ticks_to_time(
        stat.utime + stat.stime,
        procfs::ticks_per_second(),
    ))
}

/// `ticks` of a clock that ticks `ticks_per_second` times a second (Linux's `USER_HZ`).
fn ticks_to_time(ticks: u64, ticks_per_second: u64) -> Duration {
    Duration::from_micros(ticks.saturating_mul(1_000_000) / ticks_per_second.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_become_time_at_the_clocks_rate() {
        assert_eq!(ticks_to_time(325, 100), Duration::from_millis(3250));
        assert_eq!(ticks_to_time(3, 1000), Duration::from_millis(3));
        assert_eq!(ticks_to_time(7, 0), Duration::from_secs(7));
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        assert!(cpu_time(Process::myself()).is_some());
        assert!(cpu_time(Process::new(i32::MAX)).is_none());
    }

    #[test]
    fn the_servers_time_is_the_sum_of_every_node_or_none() {
        let myself = std::process::id();
        let alone = servers_time(&[myself]).expect("this process is readable");
        let twice = servers_time(&[myself, myself]).expect("this process is readable");
        assert!(twice >= alone * 2, "{twice:?} against {alone:?}");
        assert_eq!(servers_time(&[]), None);
        assert_eq!(servers_time(&[myself, u32::MAX]), None);
    }

    #[test]
    fn per_task_divides_by_tasks_and_sums_what_was_read() {
        let used = Used {
            server: Some(Duration::from_secs(2)),
            bench: Some(Duration::from_secs(1)),
            worker: Some(Duration::from_secs(1)),
        };
        let split = PerTask::new("publish", "raw", used, 100_000);
        assert_eq!(split.server_us, Some(20.0));
        assert_eq!(split.total_us, Some(40.0));
        let no_server = PerTask::new(
            "publish",
            "raw",
            Used {
                server: None,
                ..used
            },
            100_000,
        );
        assert_eq!(no_server.total_us, None);
    }
}
