//! [`WorkerShared`]: what every task run, actor and watch of one worker shares, handed to each as a
//! [`SharedHandle`]; it sits below every other worker module, so none of them names the worker's
//! entry points.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use celerity_proto::{Layout, QueueName};

use crate::app::App;
use crate::dispatch::Dispatcher;
use crate::result_store::ResultStore;
use crate::worker::observe::Observer;
use crate::worker::pool::Pool;
use crate::worker::revocations::Revocations;
use crate::worker::{handbacks, limits, settings};

/// A random number in `0.0..=1.0`, for retry jitter and weighted priorities (from the standard
/// library's random hash keys; no cryptographic quality is needed).
pub(crate) fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(crate::clock::now_ms());
    hasher.finish() as f64 / u64::MAX as f64
}

/// What every task run of one worker shares.
pub(crate) struct WorkerShared {
    pub(crate) app: App,
    pub(crate) hostname: Arc<str>,
    pub(crate) nats: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) layout: Layout,
    pub(crate) store: ResultStore,
    /// Sends what follows tasks (canvas continuations and chord bodies).
    pub(crate) dispatcher: Dispatcher,
    /// Revoked task and canvas ids, kept from the revoked bucket by a watch.
    pub(crate) revoked: Revocations,
    /// The revoked bucket, written by `revoke` control commands.
    pub(crate) revoked_bucket: async_nats::jetstream::kv::Store,
    /// Counts the messages this worker hands back without running them.
    pub(crate) handbacks: handbacks::Handbacks,
    pub(crate) runtime: tokio::runtime::Handle,
    /// Execution slots and fetch credit, changed at runtime by `pool_grow` and `pool_shrink`.
    pub(crate) pool: Pool,
    /// The queues this worker consumes, changed at runtime by `add_consumer` and
    /// `cancel_consumer`.
    pub(crate) queues: ConsumedQueues,
    /// The shortest AckWait of the consumers this worker uses.
    pub(crate) ack_wait: Duration,
    /// Deliveries of one message, at most, for tasks that set no `max_deliveries` of their own.
    pub(crate) max_deliveries: u32,
    pub(crate) recheck_interval: Duration,
    /// The priority weights in force (`None`: strict), from the flags or stored settings.
    pub(crate) priority_weights: settings::PriorityWeights,
    /// Rate limits, from task options and the settings bucket.
    pub(crate) limits: limits::RateLimits,
    /// The settings bucket, written by `rate_limit` control commands.
    pub(crate) settings_bucket: async_nats::jetstream::kv::Store,
    /// Where the task pipeline reports what happens to tasks (signals, events, counts).
    pub(crate) observer: Observer,
    /// Set while this worker is the active scheduler of delayed tasks (it holds the lease).
    pub(crate) scheduling: std::sync::atomic::AtomicBool,
    /// Cancelled when the worker starts to shut down (tasks waiting for a rate limit go back).
    pub(crate) stopping: tokio_util::sync::CancellationToken,
}

impl WorkerShared {
    /// True when the task, or the canvas it belongs to, has been revoked.
    pub(crate) fn is_revoked(&self, envelope: &celerity_proto::Envelope) -> bool {
        self.revoked.contains(envelope.id.as_str())
            || envelope
                .root_id
                .as_ref()
                .is_some_and(|root| self.revoked.contains(root.as_str()))
    }
}

pub(crate) type SharedHandle = Arc<WorkerShared>;

/// The queues a worker consumes, sorted: what its pings, stats, heartbeats and metrics name.
#[derive(Debug, Default)]
pub(crate) struct ConsumedQueues(std::sync::RwLock<Vec<QueueName>>);

impl ConsumedQueues {
    pub(crate) fn new(queues: &[QueueName]) -> Self {
        let mut queues = queues.to_vec();
        queues.sort();
        queues.dedup();
        Self(std::sync::RwLock::new(queues))
    }

    /// The queues now.
    pub(crate) fn get(&self) -> Vec<QueueName> {
        self.0.read().map_or_else(
            |poisoned| poisoned.into_inner().clone(),
            |queues| queues.clone(),
        )
    }

    /// Their names now.
    pub(crate) fn names(&self) -> Vec<String> {
        self.get().iter().map(ToString::to_string).collect()
    }

    /// Adds `queue`; false when it was there already.
    pub(crate) fn add(&self, queue: &QueueName) -> bool {
        let mut queues = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match queues.binary_search(queue) {
            Ok(_) => false,
            Err(at) => {
                queues.insert(at, queue.clone());
                true
            }
        }
    }

    /// Removes `queue`; false when it was not there.
    pub(crate) fn remove(&self, queue: &QueueName) -> bool {
        let mut queues = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match queues.binary_search(queue) {
            Ok(at) => {
                queues.remove(at);
                true
            }
            Err(_) => false,
        }
    }
}
