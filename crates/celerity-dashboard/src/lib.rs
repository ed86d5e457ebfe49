//! Celerity's web dashboard: workers, tasks, canvases, queues and dead letters, live from NATS.
//!
//! It keeps no database: it follows the events stream (replaying `history` of it at start, so a
//! restart has its recent past back), reads the queue streams, the results, chords and settings
//! buckets and the dead-letter stream, and sends control commands like `celerity control`. The
//! page and its assets are embedded; updates are pushed as server-sent events. It lives in its own
//! crate so the library never pulls in a web server for it. `celerity dashboard` runs it;
//! `docs/dashboard.md` documents the pages and the JSON API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use celerity_dashboard::{Dashboard, DashboardConfig};
//! let config = DashboardConfig::new(celerity::NatsConfig::new("nats://127.0.0.1:4222"));
//! let dashboard = Dashboard::start(config).await?;
//! println!("dashboard at {}", dashboard.url());
//! dashboard.wait().await;
//! # Ok(()) }
//! ```

mod api;
mod auth;
mod error;
mod ingest;
mod live;
mod queues;
mod server;
mod shared;
mod store;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpServer, web};
use celerity_proto::Namespace;

pub use auth::{Credentials, InvalidCredential};
pub use error::ApiError;

/// How the dashboard runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DashboardConfig {
    /// The address to listen on (default 127.0.0.1).
    pub bind: IpAddr,
    /// The port (default 5555, Flower's; 0 picks a free one).
    pub port: u16,
    /// The deployment's namespace.
    pub namespace: String,
    /// The NATS server.
    pub nats: celerity::NatsConfig,
    /// Who may log in; empty means no login (allowed on loopback only, unless `allow_open`).
    pub credentials: Credentials,
    /// Serve without credentials on a non-loopback address.
    pub allow_open: bool,
    /// Refuse every control.
    pub read_only: bool,
    /// Jaeger's UI, for the links to task traces.
    pub jaeger_url: Option<String>,
    /// How far back the events stream is read at start.
    pub history: Duration,
    /// Tasks remembered at most (Flower's `--max_tasks`).
    pub max_tasks: usize,
}

impl DashboardConfig {
    /// The defaults, on `nats`.
    pub fn new(nats: celerity::NatsConfig) -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 5555,
            namespace: "celerity".to_owned(),
            nats,
            credentials: Credentials::default(),
            allow_open: false,
            read_only: false,
            jaeger_url: None,
            history: Duration::from_secs(3600),
            max_tasks: 10_000,
        }
    }
}

/// The dashboard could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    /// Bound to a non-loopback address with no credential.
    #[error(
        "the dashboard would serve {bind} without a login: give --basic-auth user:password or --token, bind 127.0.0.1, or pass --no-auth to serve it open on purpose"
    )]
    OpenOnNetwork {
        /// The address.
        bind: IpAddr,
    },
    /// The namespace is not valid.
    #[error("namespace {0:?} is not valid")]
    Namespace(String, #[source] celerity_proto::InvalidName),
    /// The port cannot be listened on.
    #[error(
        "cannot listen on {address}: is another program using the port? Give another with --port"
    )]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running dashboard.
#[derive(Debug)]
pub struct Dashboard {
    address: SocketAddr,
    server: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Dashboard {
    /// Starts it: the HTTP server on its own thread, and on the caller's tokio runtime the NATS
    /// connection (retried until the server answers), the events replay and follow, the queue
    /// readings and the live ticker.
    ///
    /// # Errors
    /// [`DashboardError`] for a configuration it refuses or a port it cannot listen on.
    pub async fn start(config: DashboardConfig) -> Result<Self, DashboardError> {
        if !config.bind.is_loopback() && !config.credentials.is_enabled() && !config.allow_open {
            return Err(DashboardError::OpenOnNetwork { bind: config.bind });
        }
        let namespace = Namespace::new(config.namespace.as_str())
            .map_err(|error| DashboardError::Namespace(config.namespace.clone(), error))?;
        let address = SocketAddr::new(config.bind, config.port);
        let listener = std::net::TcpListener::bind(address)
            .map_err(|source| DashboardError::Listen { address, source })?;
        let address = listener
            .local_addr()
            .map_err(|source| DashboardError::Listen { address, source })?;
        let shared = Shared::new(namespace, config.max_tasks, config.jaeger_url.clone());
        let gate = web::Data::new(auth::Gate::new(
            config.credentials.clone(),
            config.read_only,
        ));
        let (server, thread) = serve(listener, shared.clone(), gate, address)?;
        let background = start_background(shared, config);
        Ok(Self {
            address,
            server,
            thread: Some(thread),
            background,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Its URL, `http://127.0.0.1:5555/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.address)
    }

    /// Waits until it stops (it stops on `stop`, or when its thread ends).
    pub async fn wait(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.end_background();
    }

    /// Stops it: open pages' streams end, and so does everything it started.
    pub async fn stop(mut self) {
        self.server.stop(false).await;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.end_background();
    }

    fn end_background(&mut self) {
        for task in self.background.drain(..) {
            task.abort();
        }
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.end_background();
    }
}

/// The HTTP server, on a thread of its own running an actix system.
fn serve(
    listener: std::net::TcpListener,
    shared: Arc<shared::Shared>,
    gate: web::Data<auth::Gate>,
    address: SocketAddr,
) -> Result<(actix_web::dev::ServerHandle, std::thread::JoinHandle<()>), DashboardError> {
    let (started, handle) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("celerity-dashboard".to_owned())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || server::app(shared.clone(), gate.clone()))
                    .workers(2)
                    .shutdown_timeout(2)
                    .listen(listener)
                    .map(HttpServer::run);
                match server {
                    Ok(server) => {
                        let _ = started.send(Ok(server.handle()));
                        let _ = server.await;
                    }
                    Err(error) => {
                        let _ = started.send(Err(error));
                    }
                }
            });
        })
        .map_err(|source| DashboardError::Listen { address, source })?;
    let server = handle
        .recv()
        .map_err(|_| DashboardError::Listen {
            address,
            source: std::io::Error::other("the server's thread ended"),
        })?
        .map_err(|source| DashboardError::Listen { address, source })?;
    Ok((server, thread))
}

/// The tasks that fill the dashboard from NATS.
fn start_background(
    shared: Arc<shared::Shared>,
    config: DashboardConfig,
) -> Vec<tokio::task::JoinHandle<()>> {
    let ticker = tokio::spawn(live::tick(shared.clone()));
    let sampler = tokio::spawn(queues::sample(shared.clone()));
    let ingest = tokio::spawn(async move {
        let client = ingest::connect(&shared, &config.nats).await;
        ingest::follow_events(shared, client, config.history).await;
    });
    vec![ticker, sampler, ingest]
}

use shared::Shared;
