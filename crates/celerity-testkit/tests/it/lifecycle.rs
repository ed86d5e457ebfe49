//! Starting, stopping, restarting, killing and dropping servers.

use std::net::{Ipv4Addr, TcpStream};

use celerity_testkit::NatsServer;

use crate::raw_client::{RawClient, read_info};

#[test]
fn started_server_announces_jetstream_on_its_url() {
    let mut server = NatsServer::start().unwrap();
    let info = read_info(server.port());
    assert_eq!(info["jetstream"], true, "{info}");
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    assert!(server.pid().is_some());
    assert!(server.is_running());
    assert!(server.log_path().is_file());
}

#[test]
fn stop_closes_the_port_and_start_again_reuses_it() {
    let mut server = NatsServer::start().unwrap();
    let port = server.port();
    server.stop().unwrap();
    assert_eq!(server.pid(), None);
    assert!(!server.is_running());
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
    server.stop().unwrap();

    server.start_again().unwrap();
    assert_eq!(server.port(), port);
    assert_eq!(read_info(port)["jetstream"], true);
}

#[test]
fn file_stream_and_its_message_survive_a_restart() {
    let mut server = NatsServer::start().unwrap();
    let mut client = RawClient::connect(server.port(), "{}").unwrap();
    let created = client.jetstream_api(
        "$JS.API.STREAM.CREATE.ORDERS",
        r#"{"name":"ORDERS","subjects":["orders.>"],"storage":"file"}"#,
    );
    assert!(created.get("error").is_none(), "{created}");
    let ack = client.jetstream_api("orders.1", "hello");
    assert_eq!(ack["seq"], 1, "{ack}");
    drop(client);

    server.restart().unwrap();

    assert!(server.store_dir().join("jetstream").is_dir());
    let mut client = RawClient::connect(server.port(), "{}").unwrap();
    let info = client.jetstream_api("$JS.API.STREAM.INFO.ORDERS", "");
    assert_eq!(info["state"]["messages"], 1, "{info}");
}

#[test]
fn killed_server_starts_again() {
    let mut server = NatsServer::start().unwrap();
    server.kill().unwrap();
    assert!(!server.is_running());
    server.kill().unwrap();
    server.start_again().unwrap();
    assert!(server.is_running());
}

#[test]
fn drop_kills_the_process_and_removes_the_temp_dir() {
    let server = NatsServer::start().unwrap();
    let port = server.port();
    let temp_dir = server.log_path().parent().unwrap().to_path_buf();
    assert!(temp_dir.is_dir());

    drop(server);

    assert!(!temp_dir.exists(), "{} still exists", temp_dir.display());
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
}

#[test]
fn drop_keeps_a_store_dir_given_by_the_caller() {
    let store = tempfile::tempdir().unwrap();
    let store_dir = store.path().join("nats");
    let server = NatsServer::builder().store_dir(&store_dir).start().unwrap();
    assert_eq!(server.store_dir(), store_dir);

    drop(server);

    assert!(store_dir.join("jetstream").is_dir());
}
