//! Node fault controls on a single server: pause, resume, lame duck, and drop while paused.

use std::io::Read;
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use celerity_testkit::NatsServer;

use crate::raw_client::read_info;

/// Whether the server sends its `INFO` line within `timeout` on a fresh connection.
fn answers_within(port: u16, timeout: Duration) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    stream
        .set_read_timeout(Some(timeout))
        .expect("read timeout can be set");
    let mut first_byte = [0; 1];
    matches!(stream.read(&mut first_byte), Ok(1))
}

#[test]
fn paused_server_answers_nothing_until_resumed() {
    let mut server = NatsServer::start().unwrap();

    server.pause().unwrap();

    assert!(server.is_paused());
    assert!(server.is_running(), "a paused process is still alive");
    assert!(
        !answers_within(server.port(), Duration::from_millis(300)),
        "a paused server sent INFO"
    );

    server.resume().unwrap();

    assert!(!server.is_paused());
    assert_eq!(
        read_info(server.port())["server_name"],
        server.server_name()
    );
}

#[test]
fn dropping_a_paused_server_kills_it() {
    let mut server = NatsServer::start().unwrap();
    let port = server.port();
    let temp_dir = server.log_path().parent().unwrap().to_path_buf();
    server.pause().unwrap();

    drop(server);

    assert!(!temp_dir.exists(), "{} still exists", temp_dir.display());
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
}

#[test]
fn paused_server_can_be_stopped_and_started_again() {
    let mut server = NatsServer::start().unwrap();
    server.pause().unwrap();

    server.restart().unwrap();

    assert!(!server.is_paused());
    assert_eq!(read_info(server.port())["jetstream"], true);
}

#[test]
fn lame_duck_exits_the_process_and_start_again_brings_it_back() {
    let mut server = NatsServer::start().unwrap();
    let port = server.port();
    let started = Instant::now();

    server.lame_duck().unwrap();

    // Without clients the server shuts down right away, long before its 2 min lame duck duration.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.pid(), None);
    assert!(!server.is_running());
    let log = std::fs::read_to_string(server.log_path()).unwrap();
    assert!(log.contains("lame duck"), "{log}");
    server.lame_duck().unwrap();

    server.start_again().unwrap();
    assert_eq!(server.port(), port);
}

#[test]
fn server_name_is_the_one_in_info() {
    let server = NatsServer::start().unwrap();
    assert_eq!(
        read_info(server.port())["server_name"],
        server.server_name()
    );
    assert_eq!(server.monitor_port(), None);
}
