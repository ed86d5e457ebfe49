//! Placeholder: the protocol tests are being written.
