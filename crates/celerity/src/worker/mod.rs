//! Workers: a process that joins queues and runs their tasks.
//!
//! One actix `System` holds the actors (a root [`root::Worker`] and one [`queue::QueueActor`] per
//! queue); one multi-thread tokio runtime owns the NATS connection and runs task bodies on every
//! core. [`run`] blocks and handles SIGTERM/SIGINT; [`spawn`] starts a worker on its own thread
//! and returns a [`WorkerHandle`].

mod beat;
mod chord;
mod continuation;
mod control;
mod dead_letter;
mod execute;
mod handbacks;
mod limits;
mod nats_io;
mod outcome;
mod queue;
mod records;
mod revocations;
mod root;
mod scheduler;
mod settings;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use async_nats::jetstream;
use celerity_proto::{Layout, QueueName};
use futures_util::StreamExt;
use tokio::sync::Semaphore;

use crate::app::App;
use crate::dispatch::Dispatcher;
use crate::nats::provision::{self, ProvisionError};
use crate::nats::server::NewTaskSignal;
use crate::nats::{ConnectError, NatsConfig, connect_with_retry};
use crate::publisher::Publisher;
use crate::result_store::ResultStore;
use crate::worker::revocations::Revocations;

/// How a worker runs.
///
/// ```
/// let config = celerity::WorkerConfig::new().queues(["high", "default"]).concurrency(8).hostname("w1");
/// assert_eq!(config.concurrency_value(), 8);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    queues: Vec<String>,
    concurrency: usize,
    prefetch_multiplier: usize,
    hostname: String,
    ack_wait: Duration,
    recheck_interval: Duration,
    priority_weights: Option<[u32; 10]>,
    max_rate_limited: usize,
    max_rate_limited_bytes: usize,
    max_deliveries: u32,
    beat: Option<BeatConfig>,
}

/// How a worker runs the periodic-task scheduler.
#[derive(Debug, Clone)]
struct BeatConfig {
    /// Entries besides the app's (from a schedule file).
    entries: Vec<crate::beat::Entry>,
    lease: Duration,
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

    /// How often every priority level is checked for work that no signal told of (a redelivery
    /// rings no doorbell; a doorbell or bell request can be lost in a reconnect).
    pub fn recheck_interval(mut self, interval: Duration) -> Self {
        self.recheck_interval = interval.max(Duration::from_millis(50));
        self
    }
}

fn default_hostname() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("celerity@{host}.{}", std::process::id())
}

/// A worker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A queue name is invalid.
    #[error(transparent)]
    InvalidQueue(#[from] celerity_proto::InvalidName),
    /// NATS could not be reached (only for errors that retrying cannot fix).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The runtime or actor system could not start.
    #[error("cannot start the worker runtime")]
    Runtime(#[source] std::io::Error),
    /// The hostname cannot be used in headers and logs.
    #[error("invalid worker hostname {0:?}: use 1 to 255 printable characters without line breaks")]
    InvalidHostname(String),
    /// The worker thread panicked.
    #[error("the worker thread panicked")]
    Panicked,
    /// The periodic entries are invalid (two with one name).
    #[error(transparent)]
    Schedule(#[from] crate::beat::ScheduleError),
}

/// The longest AckWait a worker sets: half the queue streams' de-duplication window, so a task
/// redelivered after its worker died re-sends what follows it while the copies are still
/// recognised.
pub const MAX_ACK_WAIT: Duration = Duration::from_secs(60);

/// How many times a message is delivered, at most, when neither its task nor the worker says.
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;

/// How long a chord partition's lease outlives a worker that stopped renewing it.
const CHORD_LEASE_TTL: Duration = Duration::from_secs(6);

/// The most tasks one worker holds at once (a bound far above any sensible setting, and below
/// the semaphore's own limit).
const MAX_SLOTS: usize = 1 << 20;

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
    /// Fetch credit: concurrency × prefetch multiplier.
    pub(crate) credit: Arc<Semaphore>,
    /// Execution slots: concurrency.
    pub(crate) slots: Semaphore,
    pub(crate) concurrency: usize,
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

/// A worker running on its own thread.
#[derive(Debug)]
pub struct WorkerHandle {
    root: Addr<root::Worker>,
    thread: Option<std::thread::JoinHandle<Result<(), WorkerError>>>,
}

impl WorkerHandle {
    /// Asks the worker to stop: warm (finish in-flight tasks) or cold (return them to the queue).
    pub fn shutdown(&self, cold: bool) {
        self.root.do_send(root::Shutdown { cold });
    }

    /// Waits for the worker thread to end.
    ///
    /// # Errors
    /// The worker's error, or [`WorkerError::Panicked`].
    pub fn join(mut self) -> Result<(), WorkerError> {
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| WorkerError::Panicked)?,
            None => Ok(()),
        }
    }
}

/// Runs a worker on this thread until SIGTERM or SIGINT: the first signal is a warm shutdown, the
/// second a cold one.
///
/// A worker started while NATS is down retries the connection with backoff and logs each attempt.
///
/// # Errors
/// [`WorkerError`] when a queue name is invalid or the runtime cannot start.
pub fn run(app: App, nats: NatsConfig, config: WorkerConfig) -> Result<(), WorkerError> {
    run_on_this_thread(app, nats, config, true, |_| ())
}

/// Starts a worker on a new thread and returns once it consumes.
///
/// This blocks the calling thread until the worker is connected and provisioned, which lasts as
/// long as NATS is unreachable (the worker retries forever): from async code, call it inside
/// `tokio::task::spawn_blocking`.
///
/// # Errors
/// [`WorkerError`] when a queue name is invalid or the worker cannot start.
pub fn spawn(
    app: App,
    nats: NatsConfig,
    config: WorkerConfig,
) -> Result<WorkerHandle, WorkerError> {
    let (ready_sender, ready_receiver) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("celerity-worker".to_owned())
        .spawn(move || {
            run_on_this_thread(app, nats, config, false, move |root| {
                let _ = ready_sender.send(root);
            })
        })
        .map_err(WorkerError::Runtime)?;
    match ready_receiver.recv() {
        Ok(root) => Ok(WorkerHandle {
            root,
            thread: Some(thread),
        }),
        Err(_) => match thread.join() {
            Ok(Err(error)) => Err(error),
            _ => Err(WorkerError::Panicked),
        },
    }
}

fn run_on_this_thread(
    app: App,
    nats: NatsConfig,
    config: WorkerConfig,
    handle_signals: bool,
    on_ready: impl FnOnce(Addr<root::Worker>),
) -> Result<(), WorkerError> {
    let queues: Vec<QueueName> = if config.queues.is_empty() {
        vec![app.settings().default_queue.clone()]
    } else {
        config
            .queues
            .iter()
            .map(QueueName::new)
            .collect::<Result<_, _>>()?
    };
    let hostname_ok = !config.hostname.is_empty()
        && config.hostname.len() <= 255
        && !config.hostname.chars().any(char::is_control);
    if !hostname_ok {
        return Err(WorkerError::InvalidHostname(config.hostname));
    }
    let beat = match &config.beat {
        Some(beat) => {
            let mut entries = app.beat_entries().to_vec();
            entries.extend(beat.entries.iter().cloned());
            crate::beat::check_unique(&entries)?;
            Some((entries, beat.lease))
        }
        None => None,
    };
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name("celerity-task")
        .enable_all()
        .build()
        .map_err(WorkerError::Runtime)?;
    // NOTE: the connection is made on the multi-thread runtime so its I/O never waits on an actor.
    let hostname: Arc<str> = Arc::from(config.hostname.as_str());
    let connection_name = hostname.to_string();
    let (client, js, provisioned, ack_wait) = runtime.block_on(async {
        let client = connect_with_retry(&nats, |options| options.name(&connection_name)).await?;
        let js = jetstream::new(client.clone());
        let layout = app.settings().layout();
        let setup = Setup {
            js: &js,
            layout: &layout,
            app: &app,
            queues: &queues,
            ack_wait: config.ack_wait,
            client: &client,
            hostname: &hostname,
            waiting_room: limits::WaitingRoom::new(
                config.max_rate_limited,
                config.max_rate_limited_bytes,
            ),
            priority_weights: config.priority_weights,
            beat: beat.is_some(),
        };
        let provisioned = setup.provision_with_retry().await;
        // In-progress acks must beat the AckWait the shared consumers really have, which the
        // first worker to create them chose.
        let ack_wait = provisioned
            .queues
            .iter()
            .flat_map(|setup| {
                setup
                    .consumers
                    .iter()
                    .flatten()
                    .map(|consumer| consumer.cached_info().config.ack_wait)
            })
            .min()
            .unwrap_or(config.ack_wait);
        Ok::<_, WorkerError>((client, js, provisioned, ack_wait))
    })?;
    let Provisioned {
        store,
        queues: consumers_by_queue,
        chords,
        delayed,
        revoked,
        handbacks,
        settings,
        beat: beat_bucket,
    } = provisioned;
    let leases_kv = chords.leases.clone();
    let chords_kv = chords.chords.clone();
    let publisher = Publisher::new(
        client.clone(),
        js.clone(),
        app.settings().layout(),
        store.clone(),
        app.settings().priority_steps.clone(),
    );
    let dispatcher = Dispatcher::new(
        publisher,
        chords_kv,
        store.clone(),
        app.settings().routes.clone(),
    );
    let shared = Arc::new(WorkerShared {
        dispatcher,
        hostname: hostname.clone(),
        js,
        nats: client.clone(),
        layout: app.settings().layout(),
        app,
        store,
        runtime: runtime.handle().clone(),
        credit: Arc::new(Semaphore::new(
            config
                .concurrency
                .saturating_mul(config.prefetch_multiplier)
                .min(MAX_SLOTS),
        )),
        slots: Semaphore::new(config.concurrency.min(MAX_SLOTS)),
        concurrency: config.concurrency,
        ack_wait,
        max_deliveries: config.max_deliveries,
        recheck_interval: config.recheck_interval,
        priority_weights: settings.weights,
        revoked: revoked.ids.clone(),
        revoked_bucket: revoked.bucket.clone(),
        handbacks,
        limits: settings.limits,
        settings_bucket: settings.bucket.clone(),
        stopping: tokio_util::sync::CancellationToken::new(),
    });
    runtime.spawn(revoked.ids.watch(revoked.bucket));
    runtime.spawn(watch_settings(shared.clone()));
    let system = System::new();
    let root = system.block_on(async move {
        let beat = beat.zip(beat_bucket).map(|((entries, lease), bucket)| {
            beat::Beat::new(shared.clone(), bucket, entries, lease)
        });
        root::Worker::new(
            shared,
            consumers_by_queue,
            chords,
            (delayed, leases_kv),
            beat,
        )
        .start()
    });
    if handle_signals {
        // INVARIANT: the handlers are installed before the worker starts consuming, so a SIGTERM
        // that arrives right after it reports ready is a warm shutdown, not the default kill.
        let signals = runtime.block_on(async { install_signal_handlers() });
        match signals {
            Ok(signals) => drop(runtime.spawn(forward_signals(root.clone(), signals))),
            Err(error) => {
                tracing::error!(error = %error, "cannot install signal handlers; stop the worker with SIGKILL")
            }
        }
    }
    on_ready(root);
    system.run().map_err(WorkerError::Runtime)?;
    // Acks are buffered publishes: flush them before the connection goes away.
    runtime.block_on(async {
        if client.connection_state() != async_nats::connection::State::Connected {
            tracing::warn!("the connection is down; unacknowledged tasks will be redelivered and recognised as done");
        } else if tokio::time::timeout(Duration::from_secs(5), client.flush()).await.is_err() {
            tracing::warn!("could not flush the last acks within 5 s; those tasks will be redelivered and recognised as done");
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::info!(worker = %hostname, "worker stopped");
    Ok(())
}

/// What the worker provisions before it starts consuming.
struct Setup<'a> {
    js: &'a jetstream::Context,
    layout: &'a Layout,
    app: &'a App,
    queues: &'a [QueueName],
    ack_wait: Duration,
    client: &'a async_nats::Client,
    hostname: &'a Arc<str>,
    waiting_room: limits::WaitingRoom,
    priority_weights: Option<[u32; 10]>,
    beat: bool,
}

#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error("cannot subscribe to the doorbells or request inboxes of queue {0}")]
    Subscribe(QueueName, #[source] async_nats::SubscribeError),
    #[error("cannot read the revoked ids: {0}")]
    Revocations(String),
    #[error("cannot read the stored settings: {0}")]
    Settings(String),
}

/// Everything provisioned for a worker.
struct Provisioned {
    store: ResultStore,
    queues: Vec<queue::QueueSetup>,
    chords: chord::ChordBackend,
    delayed: async_nats::jetstream::consumer::PullConsumer,
    revoked: RevokedIds,
    handbacks: handbacks::Handbacks,
    settings: Settings,
    /// The beat bucket, when this worker runs the scheduler.
    beat: Option<async_nats::jetstream::kv::Store>,
}

/// The settings bucket, and the rate limits and priority weights this worker keeps from it.
struct Settings {
    bucket: async_nats::jetstream::kv::Store,
    limits: limits::RateLimits,
    weights: settings::PriorityWeights,
}

/// The revoked ids: the bucket, and the set this worker keeps from it.
struct RevokedIds {
    bucket: async_nats::jetstream::kv::Store,
    ids: Revocations,
}

/// Applies every change of the settings bucket, for as long as the worker runs.
async fn watch_settings(shared: SharedHandle) {
    loop {
        match shared.settings_bucket.watch_with_history(">").await {
            Ok(mut watch) => {
                while let Some(entry) = watch.next().await {
                    match entry {
                        Ok(entry) => {
                            apply_setting((&shared.limits, &shared.priority_weights), &entry)
                        }
                        Err(error) => {
                            tracing::warn!(error = %error, "the settings watch failed; restarting it");
                            break;
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(error = %error, "cannot watch settings; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Applies one entry of the settings bucket; a value that is not a setting is logged and skipped.
fn apply_setting(
    (limits, weights): (&limits::RateLimits, &settings::PriorityWeights),
    entry: &async_nats::jetstream::kv::Entry,
) {
    if entry.key.starts_with("rate_limit.") {
        if let Some(value) = decode_setting(entry, celerity_proto::RateLimitSetting::key) {
            limits.apply(&entry.key, entry.revision, value);
        }
    } else if entry.key.starts_with("priority_weights.")
        && let Some(value) = decode_setting(entry, celerity_proto::PriorityWeightsSetting::key)
    {
        weights.apply(&entry.key, entry.revision, value);
    }
}

/// The value of a settings entry: `Some(None)` for a deleted key, `Some(Some(..))` for a readable
/// value stored under its own key, `None` (logged) for anything else.
fn decode_setting<T: serde::de::DeserializeOwned>(
    entry: &async_nats::jetstream::kv::Entry,
    key_of: fn(&T) -> String,
) -> Option<Option<T>> {
    if entry.operation != async_nats::jetstream::kv::Operation::Put {
        return Some(None);
    }
    match serde_json::from_slice::<T>(&entry.value) {
        Ok(setting) if key_of(&setting) == entry.key => Some(Some(setting)),
        Ok(_) => {
            tracing::warn!(key = %entry.key, "ignoring a stored setting whose key does not match its value");
            None
        }
        Err(error) => {
            tracing::warn!(key = %entry.key, error = %error, "ignoring a stored setting that cannot be read");
            None
        }
    }
}

impl Setup<'_> {
    /// The settings bucket and the rates bucket; stored settings are applied before consuming, so
    /// a rate limit changed before this worker started holds from its first task.
    async fn settings(&self) -> Result<Settings, SetupError> {
        let bucket = provision::settings_bucket(self.js, self.layout).await?;
        let rates = provision::rates_bucket(self.js, self.layout).await?;
        let limits = limits::RateLimits::new(
            self.app.clone(),
            self.hostname,
            self.waiting_room.clone(),
            rates,
        );
        let weights = settings::PriorityWeights::new(self.hostname, self.priority_weights);
        let failed = |error: &dyn std::fmt::Display| SetupError::Settings(error.to_string());
        let mut keys = bucket.keys().await.map_err(|error| failed(&error))?;
        while let Some(key) = keys.next().await {
            let key = key.map_err(|error| failed(&error))?;
            if let Some(entry) = bucket.entry(key).await.map_err(|error| failed(&error))? {
                apply_setting((&limits, &weights), &entry);
            }
        }
        Ok(Settings {
            bucket,
            limits,
            weights,
        })
    }

    /// Creates or opens everything the worker needs, retrying until the server's JetStream answers.
    async fn provision_with_retry(&self) -> Provisioned {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.provision_once().await {
                Ok(done) => return done,
                Err(error) => {
                    tracing::warn!(error = %crate::error_chain(&error), retry_in_ms = delay.as_millis() as u64, "JetStream is not ready; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn provision_once(&self) -> Result<Provisioned, SetupError> {
        let Setup {
            js,
            layout,
            app,
            queues,
            ack_wait,
            client,
            hostname,
            waiting_room: _,
            priority_weights: _,
            beat,
        } = *self;
        let kv = provision::results_bucket(js, layout, app.settings().result_expires).await?;
        provision::dead_letter_stream(js, layout).await?;
        let chords = chord::ChordBackend {
            stream: provision::chord_stream(js, layout).await?,
            chords: provision::chords_bucket(js, layout, app.settings().result_expires).await?,
            leases: provision::leases_bucket(js, layout, CHORD_LEASE_TTL).await?,
            lease_ttl: CHORD_LEASE_TTL,
        };
        let delayed = provision::delayed_stream(js, layout).await?;
        let mut setups = Vec::new();
        let signal = NewTaskSignal::for_client(client);
        tracing::info!(
            server = %client.server_info().version,
            "learning of new tasks from {}",
            match signal {
                NewTaskSignal::BellRequests => "bell requests",
                NewTaskSignal::Doorbells => "doorbells",
            }
        );
        for queue in queues {
            let levels = &app.settings().priority_steps;
            let stream = provision::queue_stream(js, layout, queue, levels).await?;
            // One consumer per level in use; `None` for levels outside the priority steps.
            let mut consumers = vec![None; 10];
            for priority in levels {
                let consumer =
                    provision::level_consumer(&stream, layout, queue, *priority, ack_wait).await?;
                consumers[priority.get() as usize] = Some(consumer);
            }
            let subscribe = |subject: String| async move {
                client
                    .subscribe(subject)
                    .await
                    .map_err(|error| SetupError::Subscribe(queue.clone(), error))
            };
            let signal = match signal {
                NewTaskSignal::Doorbells => {
                    // One doorbell subscription per level, so that a level known to have work
                    // can stop hearing its doorbells (the queue actor unsubscribes it while it
                    // has a backlog).
                    let mut bells = Vec::from_iter(std::iter::repeat_with(|| None).take(10));
                    for priority in levels {
                        let subject = layout.doorbell_subject(queue, *priority);
                        bells[priority.get() as usize] = Some(queue::LevelBell {
                            subscriber: subscribe(subject.clone()).await?,
                            subject,
                        });
                    }
                    queue::SignalSetup::Doorbells(bells)
                }
                NewTaskSignal::BellRequests => {
                    // One inbox for the answers to every level's bell requests.
                    let inbox = client.new_inbox();
                    queue::SignalSetup::BellRequests {
                        replies: subscribe(format!("{inbox}.>")).await?,
                        inbox,
                    }
                }
            };
            // One inbox per queue for every pull request's answers (a subscription per request
            // would cost a SUB and an UNSUB per fetch).
            let inbox = client.new_inbox();
            let pulls = subscribe(format!("{inbox}.>")).await?;
            // And one for the idle wait (a long-poll request), so its message is told from the
            // pull's by subscription: a task message carries its stream subject, not the reply.
            let wait_inbox = client.new_inbox();
            let waits = subscribe(format!("{wait_inbox}.>")).await?;
            setups.push(queue::QueueSetup {
                queue: queue.clone(),
                consumers,
                signal,
                inbox,
                pulls,
                wait_inbox,
                waits,
            });
        }
        let revoked_kv =
            provision::revoked_bucket(js, layout, app.settings().result_expires).await?;
        let max_age = revoked_kv
            .status()
            .await
            .map_err(|error| SetupError::Revocations(error.to_string()))?
            .max_age();
        let revoked = Revocations::new(max_age);
        // Revocations made before this worker started apply to it: load them before consuming.
        // They count from now until the watch, which starts next, brings each one's real time.
        let mut keys = revoked_kv
            .keys()
            .await
            .map_err(|error| SetupError::Revocations(error.to_string()))?;
        let loaded_at = crate::clock::now_ms();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|error| SetupError::Revocations(error.to_string()))?;
            revoked.insert(key, loaded_at);
        }
        let handbacks_kv =
            provision::handbacks_bucket(js, layout, app.settings().result_expires).await?;
        let handbacks = handbacks::Handbacks::new(handbacks_kv, layout.clone());
        let settings = self.settings().await?;
        let beat = match beat {
            true => Some(provision::beat_bucket(js, layout).await?),
            false => None,
        };
        Ok(Provisioned {
            beat,
            settings,
            store: ResultStore::new(kv, js.clone(), Some(hostname.clone())),
            queues: setups,
            chords,
            delayed,
            handbacks,
            revoked: RevokedIds {
                bucket: revoked_kv,
                ids: revoked,
            },
        })
    }
}

type Signals = (tokio::signal::unix::Signal, tokio::signal::unix::Signal);

/// Installs the SIGTERM and SIGINT handlers (inside a runtime).
fn install_signal_handlers() -> std::io::Result<Signals> {
    use tokio::signal::unix::{SignalKind, signal};
    Ok((
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    ))
}

/// Turns every SIGTERM or SIGINT into a shutdown request: the first warm, the next cold.
async fn forward_signals(root: Addr<root::Worker>, (mut terminate, mut interrupt): Signals) {
    loop {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        root.do_send(root::Shutdown { cold: false });
    }
}
