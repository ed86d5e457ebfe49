//! Running a worker on the calling thread, step by step: check the configuration, build the task
//! runtime, connect and provision, gather what every task run shares, register with the NATS
//! service API, start the actors, run the actor system until it stops, and flush the last acks.
//!
//! The steps live here so that `worker/mod.rs` holds only the public entry points.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use async_nats::jetstream::{self, consumer::PullConsumer, kv};
use celerity_proto::QueueName;

use crate::app::App;
use crate::beat::Entry;
use crate::dispatch::Dispatcher;
use crate::events::Emitter;
use crate::nats::{NatsConfig, connect_with_retry};
use crate::publisher::Publisher;
use crate::worker::metrics::Metrics;
use crate::worker::observe::Observer;
use crate::worker::pool::Pool;
use crate::worker::presence::Presence;
use crate::worker::service::Registration;
use crate::worker::setup::{Provisioned, RevokedIds, Setup};
use crate::worker::shared::ConsumedQueues;
use crate::worker::{
    SharedHandle, WorkerConfig, WorkerError, WorkerShared, beat, chord, http, limits, queue, root,
    stop, watches,
};

/// Whether the worker turns SIGTERM and SIGINT into shutdown requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signals {
    /// Handle them (`worker::run`, a worker process).
    Handle,
    /// Leave them to the process (`worker::spawn`, a worker inside another program).
    Ignore,
}

/// Runs a worker on this thread until its actor system stops; `on_ready` gets the root actor
/// once the worker consumes.
pub(super) fn run_on_this_thread(
    app: App,
    nats: NatsConfig,
    config: WorkerConfig,
    signals: Signals,
    on_ready: impl FnOnce(Addr<root::Worker>),
) -> Result<(), WorkerError> {
    let plan = Plan::check(&app, &config)?;
    // Bound first: a taken port fails the start before anything connects.
    let listener = config.http.map(http::bind).transpose()?;
    let observed = Observed {
        metrics: Metrics::new(app.task_names(), &plan.queues, config.concurrency),
        http: listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok()),
    };
    let runtime = build_runtime()?;
    // NOTE: the connection is made on the multi-thread runtime so its I/O never waits on an actor.
    let hostname: Arc<str> = Arc::from(config.hostname.as_str());
    let (connected, provisioned) = runtime.block_on(connect_and_provision(
        &app, &nats, &config, &plan, &hostname,
    ))?;
    let client = connected.client.clone();
    let (shared, parts, revoked) = share(
        app,
        &config,
        connected,
        provisioned,
        plan.beat,
        runtime.handle().clone(),
        observed,
    );
    runtime.spawn(revoked.ids.watch(revoked.bucket));
    runtime.spawn(watches::watch_settings(shared.clone()));
    let endpoint = match listener {
        Some(listener) => Some(Endpoint {
            server: http::HttpThread::start(listener, shared.clone())?,
            depths: runtime.spawn(http::watch_depths(shared.clone())),
        }),
        None => None,
    };
    let registration = runtime.block_on(Registration::start(shared.clone(), &plan.queues));
    let presence = Presence::new(shared.clone());
    let telemetry = shared.app.settings().telemetry.clone();
    let system = System::new();
    let root = system.block_on(async move { parts.start_root(shared) });
    if signals == Signals::Handle {
        stop::forward_signals_on(&runtime, &root);
    }
    on_ready(root);
    let heartbeats = runtime.spawn(presence.clone().run());
    let ran = system.run();
    heartbeats.abort();
    if let Some(registration) = registration {
        runtime.block_on(registration.stop());
    }
    runtime.block_on(presence.offline());
    if let Some(endpoint) = endpoint {
        endpoint.depths.abort();
        endpoint.server.stop(&runtime);
    }
    presence.shut_down();
    ran.map_err(WorkerError::Runtime)?;
    flush_last_acks(&runtime, &client);
    // The last runs' spans, after the acks (a collector that hangs delays no ack), before the
    // process may end.
    telemetry.flush();
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::info!(worker = %hostname, "worker stopped");
    Ok(())
}

/// The worker's metrics and the address of its HTTP endpoint, made before it connects.
struct Observed {
    metrics: Metrics,
    http: Option<std::net::SocketAddr>,
}

/// The HTTP endpoint and the queue-depth reader that feeds its metrics.
struct Endpoint {
    server: http::HttpThread,
    depths: tokio::task::JoinHandle<()>,
}

/// What the configuration asks for, checked before anything connects.
struct Plan {
    queues: Vec<QueueName>,
    /// The periodic entries (the app's and the schedule file's) and the lease, with `--beat`.
    beat: Option<(Vec<Entry>, Duration)>,
}

impl Plan {
    fn check(app: &App, config: &WorkerConfig) -> Result<Self, WorkerError> {
        let queues: Vec<QueueName> = if config.queues.is_empty() {
            vec![app.settings().default_queue.clone()]
        } else {
            config
                .queues
                .iter()
                .map(QueueName::new)
                .collect::<Result<_, _>>()?
        };
        if !hostname_is_valid(&config.hostname) {
            return Err(WorkerError::InvalidHostname(config.hostname.clone()));
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
        Ok(Self { queues, beat })
    }
}

/// A hostname fit for headers and logs: 1 to 255 bytes, no control characters.
fn hostname_is_valid(hostname: &str) -> bool {
    !hostname.is_empty() && hostname.len() <= 255 && !hostname.chars().any(char::is_control)
}

/// The multi-thread runtime that owns the connection and runs task bodies, one thread per core.
fn build_runtime() -> Result<tokio::runtime::Runtime, WorkerError> {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name("celerity-task")
        .enable_all()
        .build()
        .map_err(WorkerError::Runtime)
}

/// The connection of a worker.
struct Connected {
    client: async_nats::Client,
    js: jetstream::Context,
    hostname: Arc<str>,
}

/// Connects (retrying while NATS is down) and provisions (retrying while JetStream is not ready).
async fn connect_and_provision(
    app: &App,
    nats: &NatsConfig,
    config: &WorkerConfig,
    plan: &Plan,
    hostname: &Arc<str>,
) -> Result<(Connected, Provisioned), WorkerError> {
    let client = connect_with_retry(nats, |options| options.name(hostname.as_ref())).await?;
    let js = jetstream::new(client.clone());
    let layout = app.settings().layout();
    let setup = Setup {
        js: &js,
        layout: &layout,
        app,
        queues: &plan.queues,
        ack_wait: config.ack_wait,
        client: &client,
        hostname,
        waiting_room: limits::WaitingRoom::new(
            config.max_rate_limited,
            config.max_rate_limited_bytes,
        ),
        priority_weights: config.priority_weights,
        beat: plan.beat.is_some(),
    };
    let provisioned = setup.provision_with_retry().await?;
    let connected = Connected {
        client,
        js,
        hostname: hostname.clone(),
    };
    Ok((connected, provisioned))
}

/// What the root actor starts, besides what every actor shares.
struct RootParts {
    queues: Vec<queue::QueueSetup>,
    chords: chord::ChordBackend,
    delayed: (PullConsumer, kv::Store),
    /// The periodic entries, the lease and the beat bucket, with `--beat`.
    beat: Option<(Vec<Entry>, Duration, kv::Store)>,
}

impl RootParts {
    /// Starts the root actor, which starts the others (inside the actor system).
    fn start_root(self, shared: SharedHandle) -> Addr<root::Worker> {
        let beat = self.beat.map(|(entries, lease, bucket)| {
            beat::Beat::new(shared.clone(), bucket, entries, lease)
        });
        root::Worker::new(shared, self.queues, self.chords, self.delayed, beat).start()
    }
}

/// Splits what was provisioned into what every task run shares, what the root actor starts and
/// the revoked ids to watch.
fn share(
    app: App,
    config: &WorkerConfig,
    connected: Connected,
    provisioned: Provisioned,
    beat: Option<(Vec<Entry>, Duration)>,
    runtime: tokio::runtime::Handle,
    observed: Observed,
) -> (SharedHandle, RootParts, RevokedIds) {
    let ack_wait = provisioned.ack_wait(config.ack_wait);
    let Provisioned {
        store,
        queues,
        chords,
        delayed,
        revoked,
        handbacks,
        settings,
        beat: beat_bucket,
    } = provisioned;
    let layout = app.settings().layout();
    let queue_names: Vec<QueueName> = queues.iter().map(|setup| setup.queue.clone()).collect();
    let events = config
        .events
        .then(|| task_events(&connected, &layout, &runtime));
    let signals = app.settings().signals.clone();
    let sent_events = events.clone().filter(|_| app.settings().send_sent_events);
    let publisher = Publisher::new(
        connected.client.clone(),
        connected.js.clone(),
        layout.clone(),
        store.clone(),
        app.settings().priority_steps.clone(),
        app.settings().storage.clone(),
    )
    .observed(signals.clone(), sent_events)
    .traced(app.settings().telemetry.clone());
    let observer = Observer::new(connected.hostname.clone(), signals, events)
        .with_metrics(observed.metrics, observed.http);
    let dispatcher = Dispatcher::new(
        publisher,
        chords.chords.clone(),
        store.clone(),
        app.settings().routes.clone(),
    );
    let shared = Arc::new(WorkerShared {
        dispatcher,
        hostname: connected.hostname,
        js: connected.js,
        nats: connected.client,
        layout,
        app,
        store,
        runtime,
        pool: Pool::new(config.concurrency, config.prefetch_multiplier),
        queues: ConsumedQueues::new(&queue_names),
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
        scheduling: std::sync::atomic::AtomicBool::new(false),
        observer,
    });
    let parts = RootParts {
        queues,
        delayed: (delayed, chords.leases.clone()),
        chords,
        beat: beat
            .zip(beat_bucket)
            .map(|((entries, lease), bucket)| (entries, lease, bucket)),
    };
    (shared, parts, revoked)
}

/// The emitter of the worker's task events.
fn task_events(
    connected: &Connected,
    layout: &celerity_proto::Layout,
    runtime: &tokio::runtime::Handle,
) -> Emitter {
    let subject = layout.task_events_subject(&connected.hostname);
    let hostname = connected.hostname.to_string();
    Emitter::start(connected.js.clone(), subject, hostname, runtime)
}

/// Flushes the buffered acks before the connection goes away (up to 5 s).
fn flush_last_acks(runtime: &tokio::runtime::Runtime, client: &async_nats::Client) {
    runtime.block_on(async {
        if client.connection_state() != async_nats::connection::State::Connected {
            tracing::warn!("the connection is down; unacknowledged tasks will be redelivered and recognised as done");
        } else if tokio::time::timeout(Duration::from_secs(5), client.flush()).await.is_err() {
            tracing::warn!("could not flush the last acks within 5 s; those tasks will be redelivered and recognised as done");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_one_to_255_bytes_without_control_characters() {
        assert!(hostname_is_valid("celerity@host.1"));
        assert!(hostname_is_valid(&"h".repeat(255)));
        assert!(!hostname_is_valid(""));
        assert!(!hostname_is_valid(&"h".repeat(256)));
        assert!(!hostname_is_valid("a\nb"));
    }
}
