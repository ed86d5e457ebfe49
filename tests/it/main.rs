//! Cross-process behaviour of Celerity against real nats-server processes.

mod roundtrip;
mod support;
