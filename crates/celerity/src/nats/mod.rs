//! The NATS edge of the runtime: connecting (with every auth method the server may use), converting
//! envelope headers, and provisioning streams, consumers and buckets.
//!
//! Nothing outside this module builds an `async_nats::HeaderMap` from an envelope or spells a stream
//! configuration.

mod connect;
pub(crate) mod headers;
pub(crate) mod provision;
pub(crate) mod server;

pub use connect::{ConnectError, NatsConfig};
#[cfg(feature = "cli")]
pub(crate) use connect::{REDACTED, without_user_info};
pub(crate) use connect::{SERVER_BACKOFF, connect_with_retry};
