//! Integration tests of celerity-testkit against the real `nats-server` binary.
//!
//! They use whichever binary `nats_server_binary` finds, so `NATS_SERVER=/path cargo test`
//! runs the same suite against another server version.

mod cluster;
mod errors;
mod faults;
mod lifecycle;
mod options;
mod raw_client;
