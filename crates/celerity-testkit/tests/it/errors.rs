//! The typed errors callers branch on.

use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use celerity_testkit::{NatsServer, TestkitError, nats_server_binary, server_version};

#[test]
fn missing_binary_is_reported_with_install_hint() {
    let error = NatsServer::builder()
        .binary("/nonexistent/nats-server")
        .start()
        .unwrap_err();
    assert!(
        matches!(error, TestkitError::BinaryNotFound { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("/nonexistent/nats-server"), "{message}");
    assert!(
        message.contains("apt-get install -y nats-server"),
        "{message}"
    );
}

#[test]
fn taken_fixed_port_is_port_in_use() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();

    let error = NatsServer::builder().port(port).start().unwrap_err();

    assert!(
        matches!(error, TestkitError::PortInUse { port: p, .. } if p == port),
        "{error}"
    );
}

#[test]
fn invalid_config_is_an_early_exit_with_the_log_tail() {
    // nats-server refuses a max_payload above its 64 MiB max_pending.
    let error = NatsServer::builder()
        .max_payload(100 * 1024 * 1024)
        .ready_timeout(Duration::from_secs(10))
        .start()
        .unwrap_err();
    let TestkitError::Exited { log_tail, .. } = &error else {
        panic!("expected an early exit, got {error:?}");
    };
    assert!(log_tail.contains("max_payload"), "{error}");
}

#[test]
fn server_version_reads_the_installed_binary() {
    let binary = nats_server_binary().unwrap();
    let version = server_version(&binary).unwrap();
    assert!(version.starts_with("2."), "{version}");
}
