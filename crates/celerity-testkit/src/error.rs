//! The one error type of the testkit, [`TestkitError`].
//!
//! Every fallible function of the crate returns it; callers branch on its variants,
//! for example to retry on [`TestkitError::PortInUse`] with another port.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// What went wrong while finding, starting, probing or stopping a `nats-server`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// No usable `nats-server` executable exists at any of the places looked at.
    #[error(
        "nats-server binary not found (looked for {}): install with `apt-get install -y nats-server` or set NATS_SERVER=/path/to/nats-server",
        display_paths(.searched)
    )]
    BinaryNotFound {
        /// Every candidate path that was checked, in order.
        searched: Vec<PathBuf>,
    },

    /// The operating system refused to run the binary.
    #[error("could not run {}", .binary.display())]
    Spawn {
        /// The executable that was run.
        binary: PathBuf,
        /// Why it could not be run.
        #[source]
        source: io::Error,
    },

    /// The server kept running but did not answer with a matching `INFO` line in time.
    #[error(
        "nats-server on port {port} was not ready within {timeout:?} (last probe: {last_probe}); server log tail:\n{log_tail}"
    )]
    NotReady {
        /// The client port that was probed.
        port: u16,
        /// How long the testkit waited.
        timeout: Duration,
        /// What the last readiness probe saw.
        last_probe: String,
        /// The last lines the server wrote to its log during this start.
        log_tail: String,
    },

    /// The client port was already taken by another process.
    #[error(
        "nats-server could not listen on 127.0.0.1:{port}: address already in use; server log tail:\n{log_tail}"
    )]
    PortInUse {
        /// The port that was taken.
        port: u16,
        /// The last lines the server wrote to its log during this start.
        log_tail: String,
    },

    /// The server process exited before it became ready, for example on a config error.
    #[error(
        "nats-server on port {port} exited before it was ready ({status}); server log tail:\n{log_tail}"
    )]
    Exited {
        /// The client port the server was told to use.
        port: u16,
        /// How the process ended.
        status: ExitStatus,
        /// The last lines the server wrote to its log during this start.
        log_tail: String,
    },

    /// A server sent into lame duck mode was still running at the deadline, so it was killed.
    #[error(
        "nats-server on port {port} did not exit within {timeout:?} of entering lame duck mode, so it was killed; server log tail:\n{log_tail}"
    )]
    NotExited {
        /// The client port of the server.
        port: u16,
        /// How long the testkit waited.
        timeout: Duration,
        /// The last lines of the server's log.
        log_tail: String,
    },

    /// No reachable node of a cluster says it leads a stream or the JetStream meta group.
    ///
    /// Usual during an election; poll again, as [`NatsCluster::wait_for_stream_leader`](crate::NatsCluster::wait_for_stream_leader) does.
    #[error("no reachable cluster node leads {group} (answers: {answers})")]
    NoLeader {
        /// What has no leader, e.g. `stream "ORDERS"` or `the JetStream meta group`.
        group: String,
        /// What each node's monitoring endpoint said, e.g. `node 0: leader "n1"; node 1: paused`.
        answers: String,
    },

    /// A node's monitoring endpoint did not tell what was asked (stopped, paused, no such
    /// stream).
    #[error("cluster node {node} did not tell the state of {what}: {reason}")]
    Monitor {
        /// The node's index.
        node: usize,
        /// What was asked about.
        what: String,
        /// Why not.
        reason: String,
    },

    /// The nodes of a cluster all run, but did not agree on a JetStream meta leader in time.
    #[error("nats cluster was not ready within {timeout:?} (last probe: {last_probe})")]
    ClusterNotReady {
        /// How long the testkit waited.
        timeout: Duration,
        /// What the nodes' monitoring endpoints said last.
        last_probe: String,
    },

    /// `nats-server --version` printed something without a version number.
    #[error("could not read a version from `{} --version`, which printed {output:?}", .binary.display())]
    Version {
        /// The executable that was asked.
        binary: PathBuf,
        /// What it printed on stdout and stderr.
        output: String,
    },

    /// A file, socket or signal operation failed.
    #[error("could not {action}")]
    Io {
        /// What the testkit was doing, e.g. `write config file /tmp/x/nats-server.conf`.
        action: String,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },

    /// Generating the test certificate authority or a certificate signed by it failed.
    #[error("could not generate the {which} certificate")]
    Cert {
        /// Which certificate: `ca`, `server` or `client`.
        which: &'static str,
        /// Why rcgen failed.
        #[source]
        source: rcgen::Error,
    },
}

impl TestkitError {
    /// Returns a closure that wraps an [`io::Error`] with the action that failed, for `map_err`.
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(io::Error) -> TestkitError {
        let action = action.into();
        move |source| TestkitError::Io { action, source }
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nothing".to_owned();
    }
    paths
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
