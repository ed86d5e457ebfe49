//! [`NatsCluster`]: N `nats-server` nodes on 127.0.0.1 that form one JetStream cluster, with the
//! fault controls failover tests need (kill, pause, lame duck, restart a node).
//!
//! Each node is a [`NatsServer`], so starting and stopping one process stays `server.rs`'s job;
//! `cluster/builder.rs` picks the ports and writes the route settings, and this module asks the
//! nodes' `/jsz` monitoring endpoints who leads.

mod builder;

use std::thread;
use std::time::{Duration, Instant};

use crate::{NatsServer, TestkitError, monitor};

pub use builder::NatsClusterBuilder;

/// How often [`NatsCluster::restart_node`] tries again when a port is briefly taken, e.g. by an
/// outgoing connection that the kernel gave the same local port.
const RESTART_ATTEMPTS: u32 = 3;

/// The pause before a restart is tried again after a taken port.
const RESTART_RETRY_DELAY: Duration = Duration::from_millis(200);

/// How long one node's monitoring endpoint may take to answer before it counts as unreachable.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(1);

/// The pause between two polls of the monitoring endpoints; the deadline bounds the loop.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A JetStream cluster of `nats-server` nodes on 127.0.0.1; get one from [`NatsCluster::start`]
/// or [`NatsCluster::builder`].
///
/// Every node has its own client port, route port, HTTP monitoring port, store directory and log,
/// and keeps them across restarts. The nodes route to each other by explicit `routes`, share a
/// cluster name unique to this cluster, and have unique server names. Dropping the cluster kills
/// every node and removes their temporary directories.
///
/// ```no_run
/// # fn main() -> Result<(), celerity_testkit::TestkitError> {
/// use std::time::Duration;
///
/// use celerity_testkit::NatsCluster;
///
/// let mut cluster = NatsCluster::start(3)?;
/// println!("connect to {}", cluster.url_list()); // "nats://127.0.0.1:<a>,nats://127.0.0.1:<b>,..."
/// // ... create a stream "ORDERS" with 3 replicas through a client ...
/// let leader = cluster.wait_for_stream_leader("ORDERS", Duration::from_secs(10))?;
/// cluster.kill_node(leader)?;
/// let new_leader = cluster.wait_for_stream_leader("ORDERS", Duration::from_secs(30))?;
/// assert_ne!(new_leader, leader);
/// cluster.restart_node(leader)?; // Same ports, same store: it rejoins.
/// cluster.wait_ready()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct NatsCluster {
    cluster_name: String,
    /// At least two; the builder refuses fewer.
    nodes: Vec<NatsServer>,
    ready_timeout: Duration,
}

impl NatsCluster {
    /// The number of nodes, running or not.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes; never true, as a cluster starts with at least two.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The name in every node's `cluster` block, unique to this cluster.
    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    /// The client URL of every node, `nats://127.0.0.1:<port>`, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// The client URLs of all nodes joined by commas, the form NATS clients accept as a server list.
    pub fn url_list(&self) -> String {
        self.urls().join(",")
    }

    /// All nodes, in node order.
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// The node at `index`.
    ///
    /// # Panics
    ///
    /// When `index` is not below [`len`](Self::len).
    pub fn node(&self, index: usize) -> &NatsServer {
        &self.nodes[index]
    }

    /// The node at `index`, to call any [`NatsServer`] method on it, e.g. [`NatsServer::stop`].
    ///
    /// # Panics
    ///
    /// When `index` is not below [`len`](Self::len).
    pub fn node_mut(&mut self, index: usize) -> &mut NatsServer {
        &mut self.nodes[index]
    }

    /// Kills node `index` with SIGKILL, as a crash would; see [`NatsServer::kill`].
    ///
    /// # Errors
    ///
    /// The errors of [`NatsServer::kill`].
    ///
    /// # Panics
    ///
    /// When `index` is not below [`len`](Self::len).
    pub fn kill_node(&mut self, index: usize) -> Result<(), TestkitError> {
        self.nodes[index].kill()
    }

    /// Freezes node `index` with SIGSTOP; see [`NatsServer::pause`].
    ///
    /// # Errors
    ///
    /// The errors of [`NatsServer::pause`].
    ///
    /// # Panics
    ///
    /// When `index` is not below [`len`](Self::len).
    pub fn pause_node(&mut self, index: usize) -> Result<(), TestkitError> {
        self.nodes[index].pause()
    }

    /// Lets a paused node `index` run again with SIGCONT; see [`NatsServer::resume`].
    ///
    /// # Errors
    ///
    /// The errors of [`NatsServer::resume`].
    ///
    /// # Panics
    ///
    /// When `index` is not below [`len`](Self::len).
    pub fn resume_node(&mut self, index: usize) -> Result<(), TestkitError> {
        self.nodes[index].resume()
    }

    /// Puts node `index` into lame duck mode and waits until it has exited; see
    /// [`NatsServer::lame_duck`]. Its stream and meta leaderships move to other nodes first.
    ///
    /// # Errors
    ///
    /// The errors of [`NatsServer::lame_duck`].
    ///
    /// # Panics
    ///
    /// When `index` is not below [`len`](Self::len).
    pub fn lame_duck_node(&mut self, index: usize) -> Result<(), TestkitError> {
        self.nodes[index].lame_duck()
    }

    /// Starts node `index` again with the same ports and store directory (stopping it gracefully
    /// first if it runs, resuming it first if it is paused) and waits until it accepts clients.
    ///
    /// It does not wait for the node to rejoin the cluster; call [`wait_ready`](Self::wait_ready)
    /// for that. A port that is taken is tried again twice, 200 ms apart.
    ///
    /// # Errors
    ///
    /// The errors of [`NatsServer::restart`].
    ///
    /// # Panics
    ///
    /// When `index` is not below [`len`](Self::len).
    pub fn restart_node(&mut self, index: usize) -> Result<(), TestkitError> {
        let node = &mut self.nodes[index];
        node.resume()?;
        let mut attempt = 1;
        loop {
            match node.restart() {
                Err(TestkitError::PortInUse { .. }) if attempt < RESTART_ATTEMPTS => {
                    attempt += 1;
                    thread::sleep(RESTART_RETRY_DELAY);
                }
                result => return result,
            }
        }
    }

    /// Waits until the JetStream meta group has a leader that every running, unpaused node agrees
    /// on, and every such node counts all nodes in the meta group.
    ///
    /// Stopped and paused nodes are left out, so this also works while a node is down, as long as
    /// the rest can elect a leader. Uses the builder's ready timeout.
    ///
    /// # Errors
    ///
    /// [`TestkitError::ClusterNotReady`] when that does not happen within the ready timeout.
    pub fn wait_ready(&self) -> Result<(), TestkitError> {
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            let last_probe = match self.probe_ready() {
                Ok(()) => return Ok(()),
                Err(reason) => reason,
            };
            if Instant::now() >= deadline {
                return Err(TestkitError::ClusterNotReady {
                    timeout: self.ready_timeout,
                    last_probe,
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// The index of the node that leads the JetStream meta group right now.
    ///
    /// Only a node's claim about itself counts, since followers may still name a leader that is
    /// gone; stopped and paused nodes are not asked, and a node that does not answer within 1 s is
    /// skipped.
    ///
    /// # Errors
    ///
    /// [`TestkitError::NoLeader`] when no reachable node claims the leadership, or two do.
    pub fn meta_leader(&self) -> Result<usize, TestkitError> {
        self.find_leader(
            "the JetStream meta group".to_owned(),
            monitor::JSZ_META,
            monitor::meta_leader,
        )
    }

    /// The index of the node that leads the stream `stream` right now (in any account); for a
    /// KV bucket the stream is `KV_<bucket>`.
    ///
    /// Asks each running, unpaused node's `/jsz?accounts=true&streams=true` and returns the node
    /// that reports itself as the stream's leader; nodes that do not answer within 1 s are skipped.
    ///
    /// # Errors
    ///
    /// [`TestkitError::NoLeader`] when no reachable node claims the leadership (the stream does not
    /// exist, or an election is under way), or two do.
    pub fn stream_leader(&self, stream: &str) -> Result<usize, TestkitError> {
        self.find_leader(format!("stream {stream:?}"), monitor::JSZ_STREAMS, |jsz| {
            monitor::stream_leader(jsz, stream)
        })
    }

    /// Node `index`'s own copy of `stream`: its `(last sequence, messages)`, as its monitoring
    /// endpoint reports them (so copies can be compared after a fault).
    ///
    /// # Errors
    ///
    /// [`TestkitError::Monitor`] when the node is stopped or paused, does not answer within 1 s,
    /// or holds no such stream.
    pub fn stream_state(&self, index: usize, stream: &str) -> Result<(u64, u64), TestkitError> {
        self.ask(index, monitor::JSZ_STREAMS)
            .and_then(|jsz| monitor::stream_state(&jsz, stream))
            .map_err(|reason| TestkitError::Monitor {
                node: index,
                what: format!("stream {stream:?}"),
                reason,
            })
    }

    /// Polls [`stream_leader`](Self::stream_leader) until a node leads `stream` or `timeout` passes.
    ///
    /// After the old leader was killed or paused, the node this returns is the new one.
    ///
    /// # Errors
    ///
    /// The last [`TestkitError::NoLeader`] when no leader was found in time.
    pub fn wait_for_stream_leader(
        &self,
        stream: &str,
        timeout: Duration,
    ) -> Result<usize, TestkitError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.stream_leader(stream) {
                Err(TestkitError::NoLeader { .. }) if Instant::now() < deadline => {
                    thread::sleep(POLL_INTERVAL);
                }
                result => return result,
            }
        }
    }

    /// Asks every reachable node and returns the single one whose answer names itself.
    fn find_leader(
        &self,
        group: String,
        path: &str,
        leader_of: impl Fn(&serde_json::Value) -> Result<&str, String>,
    ) -> Result<usize, TestkitError> {
        let mut answers = Vec::new();
        let mut self_claims = Vec::new();
        for (index, node) in self.nodes.iter().enumerate() {
            let answer = self
                .ask(index, path)
                .and_then(|jsz| leader_of(&jsz).map(str::to_owned));
            match answer {
                Ok(leader) => {
                    if leader == node.server_name() {
                        self_claims.push(index);
                    }
                    answers.push(format!("node {index}: leader {leader:?}"));
                }
                Err(reason) => answers.push(format!("node {index}: {reason}")),
            }
        }
        match self_claims.as_slice() {
            [leader] => Ok(*leader),
            _ => Err(TestkitError::NoLeader {
                group,
                answers: answers.join("; "),
            }),
        }
    }

    /// One readiness check of the meta group; the error says what was seen instead.
    fn probe_ready(&self) -> Result<(), String> {
        let n_nodes = self.nodes.len() as u64;
        let mut leaders = Vec::new();
        for index in 0..self.nodes.len() {
            if !self.is_live(index) {
                continue;
            }
            let jsz = self
                .ask(index, monitor::JSZ_META)
                .map_err(|reason| format!("node {index}: {reason}"))?;
            let leader =
                monitor::meta_leader(&jsz).map_err(|reason| format!("node {index}: {reason}"))?;
            let size = monitor::meta_cluster_size(&jsz);
            if size != Some(n_nodes) {
                return Err(format!(
                    "node {index}: meta group size {size:?}, expected {n_nodes}"
                ));
            }
            leaders.push(leader.to_owned());
        }
        let Some(leader) = leaders.first() else {
            return Err("no node is running".to_owned());
        };
        if leaders.iter().any(|other| other != leader) {
            return Err(format!("nodes disagree on the meta leader: {leaders:?}"));
        }
        let leader_is_live = self
            .nodes
            .iter()
            .enumerate()
            .any(|(index, node)| node.server_name() == leader && self.is_live(index));
        if !leader_is_live {
            return Err(format!("meta leader {leader:?} is not a running node"));
        }
        Ok(())
    }

    /// Whether node `index` has a process that is not paused.
    fn is_live(&self, index: usize) -> bool {
        let node = &self.nodes[index];
        node.pid().is_some() && !node.is_paused()
    }

    /// GETs `path` from node `index`'s monitoring port, unless the node is stopped or paused.
    fn ask(&self, index: usize, path: &str) -> Result<serde_json::Value, String> {
        let node = &self.nodes[index];
        if node.pid().is_none() {
            return Err("stopped".to_owned());
        }
        if node.is_paused() {
            return Err("paused".to_owned());
        }
        let port = node
            .monitor_port()
            .expect("every cluster node is configured with a monitoring port");
        monitor::get_json(port, path, MONITOR_TIMEOUT)
    }
}
