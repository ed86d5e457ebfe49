//! Cross-process behaviour of Celerity against real nats-server processes.

mod protocol;
mod roundtrip;
mod support;
