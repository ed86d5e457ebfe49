//! `WorkerConfig`: how a worker runs (queues, slots, prefetch, AckWait, deliveries, priorities,
//! the rate-limit waiting room and beat). Plain data with builder methods; the worker reads it once
//! when it starts, and nothing here talks to NATS.

use std::time::Duration;

/// How a worker runs.
///
/// ```
/// let config = celerity::WorkerConfig::new().queues(["high", "default"]).concurrency(8).hostname("w1");
/// assert_eq!(config.concurrency_value(), 8);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    pub(super) queues: Vec<String>,
    pub(super) concurrency: usize,
    pub(super) prefetch_multiplier: usize,
    pub(super) hostname: String,
    pub(super) ack_wait: Duration,
    pub(super) recheck_interval: Duration,
    pub(super) priority_weights: Option<[u32; 10]>,
    pub(super) max_rate_limited: usize,
    pub(super) max_rate_limited_bytes: usize,
    pub(super) max_deliveries: u32,
    pub(super) beat: Option<BeatConfig>,
    pub(super) events: bool,
    pub(super) http: Option<std::net::SocketAddr>,
}

/// How a worker runs the periodic-task scheduler.
#[derive(Debug, Clone)]
pub(super) struct BeatConfig {
    /// Entries besides the app's (from a schedule file).
    pub(super) entries: Vec<crate::beat::Entry>,
    pub(super) lease: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerConfig {
    /// Defaults: the app's default queue, one slot per core, prefetch multiplier 1, hostname
    /// `celerity@<host>`, AckWait 30 s.
    pub fn new() -> Self {
        Self {
            queues: Vec::new(),
            concurrency: std::thread::available_parallelism().map_or(1, usize::from),
            prefetch_multiplier: 1,
            hostname: default_hostname(),
            ack_wait: Duration::from_secs(30),
            recheck_interval: Duration::from_secs(1),
            priority_weights: None,
            max_rate_limited: 1000,
            max_rate_limited_bytes: 64 << 20,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            beat: None,
            events: true,
            http: None,
        }
    }

    /// Consumes these queues (names are checked when the worker starts).
    pub fn queues<S: Into<String>>(mut self, queues: impl IntoIterator<Item = S>) -> Self {
        self.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// Runs at most `slots` tasks at once (at least 1).
    pub fn concurrency(mut self, slots: usize) -> Self {
        self.concurrency = slots.max(1);
        self
    }

    /// The number of execution slots.
    pub fn concurrency_value(&self) -> usize {
        self.concurrency
    }

    /// Holds up to `multiplier` × concurrency tasks (at least 1). Above 1, a long task may delay
    /// tasks prefetched behind it; 1 (the default) holds no task that cannot start.
    pub fn prefetch_multiplier(mut self, multiplier: usize) -> Self {
        self.prefetch_multiplier = multiplier.max(1);
        self
    }

    /// Names this worker in logs, records and dead letters.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = hostname.into();
        self
    }

    /// How long the server waits for an ack before redelivering a task to another worker
    /// (1 s to [`MAX_ACK_WAIT`], 60 s). Running tasks send in-progress acks, so only a dead
    /// worker's tasks move, however long tasks run.
    ///
    /// The bound keeps a redelivery inside the queue streams' two-minute de-duplication window:
    /// what a task sent before its worker died is sent again under the same ids when the task is
    /// redelivered, and the server drops those copies only within the window.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait.clamp(Duration::from_secs(1), MAX_ACK_WAIT);
        self
    }

    /// Runs a message at most `deliveries` times (at least 1; default 5) unless its task sets its
    /// own `max_deliveries`: a message delivered more often (every earlier delivery ended without
    /// an ack, as when its task crashed the worker, or was handed back at shutdown) is
    /// dead-lettered with `too_many_deliveries` and its task fails, so a task that kills its
    /// worker cannot kill every worker in turn.
    pub fn max_deliveries(mut self, deliveries: u32) -> Self {
        self.max_deliveries = deliveries.max(1);
        self
    }

    /// Weighted priorities: instead of always taking the highest level that has work, the worker
    /// picks among the levels that have work in proportion to `weights` (index = priority), so low
    /// levels get a share and never starve. A level of weight 0 is taken only when nothing else has
    /// work.
    pub fn priority_weights(mut self, weights: [u32; 10]) -> Self {
        self.priority_weights = Some(weights);
        self
    }

    /// Weighted priorities with weights 1 to 10 (priority 9 is picked ten times as often as 0).
    pub fn weighted_priorities(self) -> Self {
        self.priority_weights([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    }

    /// Runs the periodic-task scheduler (`worker --beat`): the app's entries plus `entries` (from a
    /// schedule file). Any number of workers may run it; one at a time sends the tasks, and another
    /// takes over within `lease` (at least 1 s; 5 s by default) when it dies.
    pub fn beat(mut self, entries: Vec<crate::beat::Entry>, lease: Duration) -> Self {
        self.beat = Some(BeatConfig {
            entries,
            lease: lease.max(Duration::from_secs(1)),
        });
        self
    }

    /// How many rate-limited tasks may wait on this worker without holding fetch credit (at least
    /// 1; default 1000), so other tasks keep flowing past them. Beyond it (or beyond
    /// [`WorkerConfig::max_rate_limited_bytes`]), a task over its rate waits holding its credit,
    /// and the worker fetches less.
    pub fn max_rate_limited(mut self, tasks: usize) -> Self {
        self.max_rate_limited = tasks.max(1);
        self
    }

    /// How many bytes of messages the rate-limited tasks waiting without fetch credit may hold in
    /// all (default 64 MiB): the waiting room is bounded in memory as well as in tasks.
    pub fn max_rate_limited_bytes(mut self, bytes: usize) -> Self {
        self.max_rate_limited_bytes = bytes.max(1);
        self
    }

    /// Whether the worker sends task events (`task-received`, `task-started`, ...; default on).
    /// Off (`worker --without-events`), it still sends its worker events (online, heartbeats,
    /// offline), which `celerity status` and `celerity health` read.
    pub fn events(mut self, send: bool) -> Self {
        self.events = send;
        self
    }

    /// Serves `/healthz`, `/readyz` and `/metrics` on `addr` (`worker --http-port`; off by
    /// default). Port 0 picks a free port, which the worker's events tell (`http`).
    pub fn http(mut self, addr: std::net::SocketAddr) -> Self {
        self.http = Some(addr);
        self
    }

    /// How often every priority level is checked for work that no signal told of (a redelivery
    /// rings no doorbell; a doorbell or a max-bytes probe can be lost in a reconnect).
    pub fn recheck_interval(mut self, interval: Duration) -> Self {
        self.recheck_interval = interval.max(Duration::from_millis(50));
        self
    }
}

/// `celerity@<host>.<pid>`, with the machine's hostname.
fn default_hostname() -> String {
    format!(
        "celerity@{}.{}",
        crate::host::machine_name(),
        std::process::id()
    )
}

/// The longest AckWait a worker sets: half the queue streams' de-duplication window, so a task
/// redelivered after its worker died re-sends what follows it while the copies are still
/// recognised.
pub const MAX_ACK_WAIT: Duration = Duration::from_secs(60);

/// How many times a message is delivered, at most, when neither its task nor the worker says.
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_hostname_names_the_host_and_the_process() {
        let hostname = default_hostname();
        assert!(hostname.starts_with("celerity@"), "{hostname}");
        assert!(
            hostname.ends_with(&format!(".{}", std::process::id())),
            "{hostname}"
        );
        assert!(hostname.len() > "celerity@.".len() + 1, "{hostname}");
    }

    #[test]
    fn settings_are_clamped_to_their_bounds() {
        let config = WorkerConfig::new()
            .concurrency(0)
            .ack_wait(Duration::from_secs(3600))
            .max_deliveries(0);
        assert_eq!(config.concurrency_value(), 1);
        assert_eq!(config.ack_wait, MAX_ACK_WAIT);
        assert_eq!(config.max_deliveries, 1);
    }
}
