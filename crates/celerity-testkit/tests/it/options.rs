//! Builder options: authentication, TLS, payload size, JetStream off, fixed ports.

use celerity_testkit::{NatsServer, reserve_port};

use crate::raw_client::{RawClient, read_info};

#[test]
fn user_password_server_accepts_only_its_credentials() {
    let server = NatsServer::builder()
        .user_password("celerity", r#"s3"cr$et\"#)
        .start()
        .unwrap();
    assert_eq!(read_info(server.port())["auth_required"], true);

    RawClient::connect(server.port(), r#"{"user":"celerity","pass":"s3\"cr$et\\"}"#).unwrap();
    let Err(rejection) = RawClient::connect(server.port(), r#"{"user":"celerity","pass":"no"}"#)
    else {
        panic!("server accepted a wrong password");
    };
    assert!(rejection.starts_with("-ERR"), "{rejection}");
}

#[test]
fn token_server_accepts_only_its_token() {
    let server = NatsServer::builder().token("t0ken").start().unwrap();

    RawClient::connect(server.port(), r#"{"auth_token":"t0ken"}"#).unwrap();
    assert!(RawClient::connect(server.port(), "{}").is_err());
}

#[test]
fn tls_server_requires_tls_and_exposes_its_certificates() {
    let server = NatsServer::builder().tls().start().unwrap();

    let info = read_info(server.port());
    assert_eq!(info["tls_required"], true, "{info}");
    assert_eq!(info["jetstream"], true, "{info}");
    assert!(server.url().starts_with("nats://"));
    let files = server.tls_files().unwrap();
    for path in [
        &files.ca_cert,
        &files.client_cert,
        &files.client_key,
        &files.server_cert,
        &files.server_key,
    ] {
        assert!(path.is_file(), "{} is missing", path.display());
    }
}

#[test]
fn tls_server_starts_again_after_a_stop() {
    let mut server = NatsServer::builder().tls().start().unwrap();
    server.restart().unwrap();
    assert_eq!(read_info(server.port())["tls_required"], true);
}

#[test]
fn max_payload_is_announced_in_info() {
    let server = NatsServer::builder()
        .max_payload(4 * 1024 * 1024)
        .start()
        .unwrap();
    assert_eq!(read_info(server.port())["max_payload"], 4 * 1024 * 1024);
}

#[test]
fn jetstream_can_be_turned_off() {
    let server = NatsServer::builder().jetstream(false).start().unwrap();
    let info = read_info(server.port());
    assert_ne!(info["jetstream"], true, "{info}");
    assert!(server.tls_files().is_none());
}

#[test]
fn fixed_port_is_used() {
    let port = reserve_port().unwrap();
    let server = NatsServer::builder().port(port).start().unwrap();
    assert_eq!(server.port(), port);
    assert_eq!(server.url(), format!("nats://127.0.0.1:{port}"));
}

#[test]
fn extra_config_is_appended_to_the_config_file() {
    let server = NatsServer::builder()
        .extra_config(
            "accounts {\n  APP: { jetstream: enabled, users: [{ user: app, password: s3cret }] }\n}",
        )
        .start()
        .unwrap();

    let mut client =
        RawClient::connect(server.port(), r#"{"user":"app","pass":"s3cret"}"#).unwrap();
    let account = client.jetstream_api("$JS.API.INFO", "");
    assert!(account.get("error").is_none(), "{account}");
    assert!(RawClient::connect(server.port(), "{}").is_err());
}

#[test]
fn extra_config_overrides_an_earlier_setting_of_the_same_name() {
    let server = NatsServer::builder()
        .max_payload(4096)
        .extra_config("max_payload: 2048")
        .start()
        .unwrap();
    assert_eq!(read_info(server.port())["max_payload"], 2048);
}
