//! The worker's HTTP endpoint (`worker --http-port`): `/healthz` (the process answers),
//! `/readyz` (connected to NATS and consuming) and `/metrics` (Prometheus, from `metrics.rs`).
//!
//! It binds before the worker consumes, so a port that is taken is a startup error, and serves on
//! one actix-web worker thread of its own, so a scrape never waits on the task runtime or an
//! actor.

use std::net::SocketAddr;

use actix_web::{App, HttpResponse, HttpServer, web};
use celerity_proto::QueueName;

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::worker::SharedHandle;
use crate::worker::metrics::{DEPTH_INTERVAL, Scraped};

/// What `/metrics` answers with: OpenMetrics text, which Prometheus reads.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The endpoint could not be started.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot serve the health and metrics endpoint on {addr}: is another process using it? Pick another with --http-port (or --http-bind)"
)]
pub struct HttpError {
    /// The address asked for.
    pub addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// Binds `addr`; the listener is served by [`serve`].
///
/// # Errors
/// [`HttpError`] when the address cannot be bound (taken, not local, no permission).
pub(crate) fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, HttpError> {
    std::net::TcpListener::bind(addr).map_err(|source| HttpError { addr, source })
}

/// Serves the endpoint on `listener` until the returned server is stopped; call inside the actor
/// system.
///
/// # Errors
/// [`HttpError`] when actix-web cannot take the listener.
pub(crate) fn serve(
    listener: std::net::TcpListener,
    shared: SharedHandle,
) -> Result<actix_web::dev::Server, HttpError> {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let state = web::Data::new(shared);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .map_err(|source| HttpError { addr, source })?
    .run();
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    Ok(server)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz(shared: web::Data<SharedHandle>) -> HttpResponse {
    let connected = shared.nats.connection_state() == async_nats::connection::State::Connected;
    let problem = match (
        connected,
        shared.observer.is_consuming(),
        shared.stopping.is_cancelled(),
    ) {
        (false, _, _) => Some("not connected to NATS"),
        (_, _, true) => Some("stopping"),
        (_, false, _) => Some("not consuming yet"),
        // Every queue cancelled (`cancel-consumer`): up, but taking no task.
        (true, true, false) if shared.queues.get().is_empty() => Some("consuming no queue"),
        (true, true, false) => None,
    };
    match problem {
        None => HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n"),
        Some(problem) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("not ready: {problem}\n")),
    }
}

async fn metrics(shared: web::Data<SharedHandle>) -> HttpResponse {
    let observer = &shared.observer;
    let tally = observer.tally();
    let scraped = Scraped {
        active: tally.active(),
        reserved: tally.reserved(),
        slots: shared.pool.size(),
        events_dropped: observer.events().map_or(0, crate::events::Emitter::dropped),
        spans_dropped: shared.app.settings().telemetry.spans_dropped(),
        connects: shared.nats.statistics().connects.load(Ordering::Relaxed),
    };
    let text = observer.metrics().encode(scraped);
    HttpResponse::Ok()
        .content_type(METRICS_CONTENT_TYPE)
        .body(text)
}

/// The endpoint's server, on a thread (and actix system) of its own.
pub(crate) struct HttpThread {
    handle: actix_web::dev::ServerHandle,
    thread: std::thread::JoinHandle<()>,
}

impl HttpThread {
    /// Serves `listener` on a new thread.
    ///
    /// # Errors
    /// [`HttpError`] when the thread cannot start or actix-web cannot take the listener.
    pub(crate) fn start(
        listener: std::net::TcpListener,
        shared: SharedHandle,
    ) -> Result<Self, HttpError> {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let (started, handle) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("celerity-http".to_owned())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    match serve(listener, shared) {
                        Ok(server) => {
                            let _ = started.send(Ok(server.handle()));
                            if let Err(error) = server.await {
                                tracing::error!(error = %error, "the HTTP endpoint stopped");
                            }
                        }
                        Err(error) => {
                            let _ = started.send(Err(error));
                        }
                    }
                });
            })
            .map_err(|source| HttpError { addr, source })?;
        let handle = handle.recv().map_err(|_| HttpError {
            addr,
            source: std::io::Error::other("the HTTP thread ended before it served"),
        })??;
        Ok(Self { handle, thread })
    }

    /// Stops serving (up to 2 s for requests in progress) and waits for the thread.
    pub(crate) fn stop(self, runtime: &tokio::runtime::Runtime) {
        let stopped = tokio::time::timeout(Duration::from_secs(2), self.handle.stop(true));
        if runtime.block_on(stopped).is_err() {
            tracing::warn!("the HTTP endpoint did not stop within 2 s");
        }
        let _ = self.thread.join();
    }
}

/// Reads the depth of each priority level of the queues the worker consumes (the level
/// consumer's undelivered messages), and the use of their streams and of the shared streams and
/// buckets against their limits, every [`DEPTH_INTERVAL`] into the metrics, until dropped.
///
/// # Cancel safety
/// Cancel safe: dropped, it reads nothing more.
pub(crate) async fn watch_depths(shared: SharedHandle) {
    let mut ticks = tokio::time::interval(DEPTH_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watched: Vec<QueueName> = Vec::new();
    let metrics = shared.observer.metrics();
    loop {
        ticks.tick().await;
        let queues = shared.queues.get();
        let levels = &shared.app.settings().priority_steps;
        // A cancelled queue's series go, rather than stay at their last value.
        for gone in watched.iter().filter(|queue| !queues.contains(queue)) {
            for level in levels {
                metrics.remove_depth(gone, level.get());
            }
        }
        for queue in &queues {
            let Ok(stream) = shared
                .js
                .get_stream(shared.layout.queue_stream(queue))
                .await
            else {
                continue;
            };
            metrics.set_stream_use(&crate::StreamUse::of(stream.cached_info()));
            for level in levels {
                let consumer = shared.layout.queue_consumer(*level);
                if let Ok(info) = stream.consumer_info(consumer).await {
                    metrics.set_depth(queue, level.get(), info.num_pending);
                }
            }
        }
        for name in crate::shared_streams(&shared.layout) {
            if let Ok(stream) = shared.js.get_stream(&name).await {
                metrics.set_stream_use(&crate::StreamUse::of(stream.cached_info()));
            }
        }
        watched = queues;
    }
}
