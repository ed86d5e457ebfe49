//! Where a throughput figure's CPU goes: the CPU time the server, the bench and the worker used
//! during each side of the figure, per task, read from `/proc`. On 2 cores shared by all three,
//! a ratio is bounded by how much CPU each side spends per task, and this says which process
//! spends it.

use std::time::Duration;

use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat` (Linux's `USER_HZ`: 100 on x86 and arm).
const USER_HZ: u64 = 100;

/// The processes of a run: the server (when the bench started it), the bench (this process: the
/// producer, and the whole raw side) and the worker.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Processes {
    pub(crate) server: Option<u32>,
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
            server: self.server.and_then(|pid| cpu_time(&pid.to_string())),
            bench: cpu_time("self"),
            worker: self.worker.and_then(|pid| cpu_time(&pid.to_string())),
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

/// User plus system CPU time of process `pid` (a number, or `self`), all its threads together.
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// `utime` and `stime`, fields 14 and 15 of `/proc/<pid>/stat`; the command name (field 2) is in
/// parentheses and may hold spaces, so fields are counted after its closing parenthesis.
fn parse_stat(stat: &str) -> Option<Duration> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 1000 / USER_HZ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (celerity (w) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 \
                    12345 1000000 500 18446744073709551615";
        assert_eq!(parse_stat(stat), Some(Duration::from_millis(3250)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        assert!(cpu_time("self").is_some());
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
