//! The NATS edge of the runtime: connecting (with every auth method the server may use), converting
//! envelope headers, and provisioning streams, consumers and buckets.
//!
//! Nothing outside this module builds an `async_nats::HeaderMap` from an envelope or spells a stream
//! configuration.

mod connect;
pub(crate) mod headers;
pub(crate) mod permissions;
pub(crate) mod provision;
pub(crate) mod server;

pub use connect::{ConnectError, NatsConfig};
#[cfg(feature = "cli")]
pub(crate) use connect::{REDACTED, without_user_info};
pub(crate) use connect::{SERVER_BACKOFF, connect_with_retry};

/// Why JetStream refused to store a message, when it refused for want of room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoRoom {
    /// The stream is at its `max_bytes` (or `max_msgs`) and discards new messages.
    StreamFull,
    /// The server's store (`max_file_store`, or the disk) is full.
    StoreFull,
}

/// `maximum bytes exceeded` / `maximum messages exceeded` (the stream's own limit).
const STREAM_STORE_FAILED: async_nats::jetstream::ErrorCode =
    async_nats::jetstream::ErrorCode(10077);

impl NoRoom {
    /// The refusal a publish's error reports, if it is one for want of room.
    pub(crate) fn of(error: &async_nats::jetstream::context::PublishError) -> Option<Self> {
        let jetstream =
            std::error::Error::source(error)?.downcast_ref::<async_nats::jetstream::Error>()?;
        match jetstream.error_code() {
            STREAM_STORE_FAILED => Some(NoRoom::StreamFull),
            async_nats::jetstream::ErrorCode::INSUFFICIENT_RESOURCES => Some(NoRoom::StoreFull),
            _ => None,
        }
    }
}
