//! Starts and stops real `nats-server` processes (JetStream on) for integration tests and for
//! `celerity dev`.
//!
//! It is not a NATS client and knows nothing about Celerity: it writes a config file, runs the
//! binary on 127.0.0.1, waits until the server answers, and cleans up on drop. The API is
//! synchronous and std-only, so sync tests and async runtimes can both use it (from async code,
//! call it where blocking for up to the ready timeout is acceptable, e.g. `spawn_blocking`).
//!
//! # Quick start
//!
//! ```no_run
//! # fn main() -> Result<(), celerity_testkit::TestkitError> {
//! use celerity_testkit::NatsServer;
//!
//! let mut server = NatsServer::start()?;
//! println!("connect to {}", server.url());
//! server.restart()?; // Same port, same store directory.
//! # Ok(()) }
//! // Dropping `server` kills the process and removes its temporary directory.
//! ```
//!
//! # Finding the binary
//!
//! [`nats_server_binary`] uses `$NATS_SERVER`, then `nats-server` on `$PATH`, then `/usr/sbin`,
//! `/usr/bin` and `/usr/local/bin`. Install it with `apt-get install -y nats-server`;
//! nats-server 2.9.10 and newer work.
//!
//! # Clusters and faults
//!
//! [`NatsCluster`] starts N nodes (3 by default) that form one JetStream cluster over explicit
//! routes on 127.0.0.1, each with an HTTP monitoring port, and finds stream and meta leaders
//! through `/jsz`. Nodes can be killed, paused (SIGSTOP), resumed, sent into lame duck mode and
//! restarted with the same ports and data, one at a time:
//!
//! ```no_run
//! # fn main() -> Result<(), celerity_testkit::TestkitError> {
//! use celerity_testkit::NatsCluster;
//!
//! let mut cluster = NatsCluster::start(3)?;
//! let leader = cluster.meta_leader()?;
//! cluster.pause_node(leader)?;
//! // ... the other two elect a new meta leader ...
//! cluster.resume_node(leader)?;
//! cluster.wait_ready()?;
//! # Ok(()) }
//! ```
//!
//! Unix only: stopping, pausing and lame duck mode send signals through `libc`.

mod binary;
mod builder;
mod cluster;
mod config;
mod error;
mod monitor;
mod port;
mod readiness;
mod server;
mod tls;

pub use binary::{nats_server_binary, server_version};
pub use builder::NatsServerBuilder;
pub use cluster::{NatsCluster, NatsClusterBuilder};
pub use error::TestkitError;
pub use port::reserve_port;
pub use server::NatsServer;
pub use tls::TlsFiles;
