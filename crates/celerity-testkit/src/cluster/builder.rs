//! [`NatsClusterBuilder`]: the options of a cluster before it starts, and its first start.
//!
//! It picks every node's ports up front and writes their configs; the running cluster is
//! [`NatsCluster`]'s business.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::binary::{check_binary, nats_server_binary};
use crate::config::{Auth, ClusterSettings, ServerConfig, TESTKIT_LAME_DUCK, unique_server_name};
use crate::port::reserve_ports;
use crate::{NatsCluster, NatsServer, TestkitError};

/// The default for [`NatsClusterBuilder::nodes`].
const DEFAULT_N_NODES: usize = 3;

/// The default for [`NatsClusterBuilder::ready_timeout`].
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a whole cluster start is tried when a picked port turns out to be taken.
const START_ATTEMPTS: u32 = 3;

/// Options for a [`NatsCluster`] to start; get one from [`NatsCluster::builder`].
///
/// Defaults: 3 nodes, JetStream on every node with its own temporary store, no domain, no
/// authentication, the server's default `max_payload`, and a 30 s ready timeout.
///
/// ```no_run
/// # fn main() -> Result<(), celerity_testkit::TestkitError> {
/// use celerity_testkit::NatsCluster;
///
/// let cluster = NatsCluster::builder()
///     .nodes(3)
///     .max_payload(4 * 1024 * 1024)
///     .domain("hub")
///     .start()?;
/// assert_eq!(cluster.urls().len(), 3);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct NatsClusterBuilder {
    binary: Option<PathBuf>,
    n_nodes: usize,
    max_payload: Option<u32>,
    domain: Option<String>,
    extra_config: Option<String>,
    ready_timeout: Duration,
}

impl Default for NatsClusterBuilder {
    fn default() -> Self {
        NatsClusterBuilder {
            binary: None,
            n_nodes: DEFAULT_N_NODES,
            max_payload: None,
            domain: None,
            extra_config: None,
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }
}

impl NatsClusterBuilder {
    /// Starts `n_nodes` nodes (default 3); three is the smallest cluster that survives losing one.
    ///
    /// # Panics
    ///
    /// When `n_nodes` is below 2: nats-server refuses to run clustered JetStream without routes
    /// ("JetStream cluster requires configured routes").
    pub fn nodes(mut self, n_nodes: usize) -> Self {
        assert!(
            n_nodes >= 2,
            "a NatsCluster needs at least 2 nodes, got {n_nodes}"
        );
        self.n_nodes = n_nodes;
        self
    }

    /// Runs this `nats-server` executable instead of the one [`nats_server_binary`] finds.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Sets the largest message payload every node accepts, in bytes (the server's default is 1 MiB).
    pub fn max_payload(mut self, bytes: u32) -> Self {
        self.max_payload = Some(bytes);
        self
    }

    /// Puts every node's JetStream into this domain (default: none), so its API is also reachable
    /// as `$JS.<domain>.API.>`.
    pub fn domain(mut self, domain: &str) -> Self {
        self.domain = Some(domain.to_owned());
        self
    }

    /// Appends `text` verbatim to every node's config file, e.g. an `accounts { ... }` block; see
    /// [`NatsServerBuilder::extra_config`](crate::NatsServerBuilder::extra_config).
    pub fn extra_config(mut self, text: &str) -> Self {
        match &mut self.extra_config {
            Some(extra_config) => {
                extra_config.push('\n');
                extra_config.push_str(text);
            }
            None => self.extra_config = Some(text.to_owned()),
        }
        self
    }

    /// Sets how long each node's start, and then the meta leader election, may take (default 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Picks free loopback ports, starts every node, and waits until each accepts clients and the
    /// JetStream meta group has elected a leader (see [`NatsCluster::wait_ready`]).
    ///
    /// The nodes must know each other's route ports before they start, so the testkit picks all
    /// ports up front; if one is taken by the time a node binds it, the whole start is tried again
    /// with new ports, up to three times.
    ///
    /// # Errors
    ///
    /// [`TestkitError::BinaryNotFound`] without a usable binary, the errors of
    /// [`NatsServer::start_again`] for a node that does not come up, and
    /// [`TestkitError::ClusterNotReady`] when no meta leader is elected in time.
    pub fn start(self) -> Result<NatsCluster, TestkitError> {
        let binary = match &self.binary {
            Some(path) => check_binary(path.clone())?,
            None => nats_server_binary()?,
        };
        let mut attempt = 1;
        loop {
            match self.try_start(&binary) {
                Err(TestkitError::PortInUse { .. }) if attempt < START_ATTEMPTS => attempt += 1,
                result => return result,
            }
        }
    }

    /// One start with freshly picked ports and fresh directories.
    fn try_start(&self, binary: &Path) -> Result<NatsCluster, TestkitError> {
        let n_nodes = self.n_nodes;
        let ports = reserve_ports(3 * n_nodes)?;
        let (client_ports, rest) = ports.split_at(n_nodes);
        let (route_ports, http_ports) = rest.split_at(n_nodes);
        let cluster_name = unique_server_name();
        let mut nodes = Vec::with_capacity(n_nodes);
        for index in 0..n_nodes {
            let temp_dir = tempfile::Builder::new()
                .prefix("celerity-nats-cluster-")
                .tempdir()
                .map_err(TestkitError::io(
                    "create a temporary directory for a nats-server cluster node",
                ))?;
            let other_route_ports = route_ports
                .iter()
                .enumerate()
                .filter(|(other, _)| *other != index)
                .map(|(_, port)| *port)
                .collect();
            let config = ServerConfig {
                port: client_ports[index],
                server_name: format!("{cluster_name}-n{index}"),
                store_dir: temp_dir.path().join("store"),
                log_path: temp_dir.path().join("nats-server.log"),
                jetstream: true,
                max_payload: self.max_payload,
                auth: Auth::None,
                tls: None,
                ports_file_dir: temp_dir.path().join("ports"),
                http_port: Some(http_ports[index]),
                cluster: Some(ClusterSettings {
                    name: cluster_name.clone(),
                    port: route_ports[index],
                    route_ports: other_route_ports,
                }),
                lame_duck: Some(TESTKIT_LAME_DUCK),
                domain: self.domain.clone(),
                extra_config: self.extra_config.clone(),
            };
            nodes.push(NatsServer::new(
                binary.to_path_buf(),
                config,
                temp_dir,
                self.ready_timeout,
            ));
        }
        let mut cluster = NatsCluster {
            cluster_name,
            nodes,
            ready_timeout: self.ready_timeout,
        };
        // A node accepts clients before its routes are up, so starting one after another is quick.
        for node in &mut cluster.nodes {
            node.start_again()?;
        }
        cluster.wait_ready()?;
        Ok(cluster)
    }
}

// The entry points to a builder live with it, so the running cluster's file names no builder.
impl NatsCluster {
    /// Starts a cluster of `n_nodes` nodes with the default options and waits until it is ready;
    /// the same as `NatsCluster::builder().nodes(n_nodes).start()`.
    ///
    /// # Errors
    ///
    /// See [`NatsClusterBuilder::start`].
    ///
    /// # Panics
    ///
    /// When `n_nodes` is below 2; see [`NatsClusterBuilder::nodes`].
    pub fn start(n_nodes: usize) -> Result<NatsCluster, TestkitError> {
        NatsCluster::builder().nodes(n_nodes).start()
    }

    /// Returns a builder to choose the node count, binary, payload limit, domain and more.
    pub fn builder() -> NatsClusterBuilder {
        NatsClusterBuilder::default()
    }
}
