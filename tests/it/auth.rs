//! Workers and producers reach servers that require a password or TLS with client certificates,
//! and never print a password they were given.

use std::time::Duration;

use celerity::NatsConfig;
use celerity_testkit::NatsServer;

use crate::support::WorkerProcess;

const WAIT: Duration = Duration::from_secs(30);

/// Connects a producer with `nats` (`expect` says why it must connect) and checks that `it.add`
/// of `(x, y)` returns their sum from the test's worker.
async fn add_through(nats: &NatsConfig, (x, y): (i64, i64), expect: &str) {
    let app = celerity_it::app().expect("the test app builds");
    let client = app.client(nats).await.expect(expect);
    let result = celerity_it::add
        .delay(&client, x, y)
        .await
        .expect("the task is sent");
    assert_eq!(result.get(WAIT).await.expect("it.add returns"), x + y);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password() {
    let server = NatsServer::builder()
        .user_password("app", "s3cret")
        .start()
        .unwrap();
    let _worker = WorkerProcess::start(
        &server.url(),
        "auth",
        &["--nats-user", "app", "--nats-password", "s3cret"],
    );
    let nats = NatsConfig::new(server.url()).user_password("app", "s3cret");
    add_through(&nats, (3, 4), "the client authenticates").await;

    let refused = celerity_it::app()
        .unwrap()
        .client(&NatsConfig::new(server.url()).user_password("app", "wrong"))
        .await;
    assert!(refused.is_err(), "a wrong password is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_and_client_certificates() {
    let server = NatsServer::builder().tls().start().unwrap();
    let tls = server.tls_files().expect("TLS files").clone();
    let (ca, cert, key) = (
        tls.ca_cert.to_str().unwrap(),
        tls.client_cert.to_str().unwrap(),
        tls.client_key.to_str().unwrap(),
    );
    let _worker = WorkerProcess::start(
        &server.url(),
        "tls",
        &[
            "--nats-tls-ca",
            ca,
            "--nats-tls-cert",
            cert,
            "--nats-tls-key",
            key,
        ],
    );
    let nats = NatsConfig::new(server.url())
        .tls_ca(&tls.ca_cert)
        .tls_client_cert(&tls.client_cert, &tls.client_key);
    add_through(&nats, (5, 6), "the client connects over TLS").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token() {
    let server = NatsServer::builder().token("t0ken").start().unwrap();
    let _worker = WorkerProcess::start(&server.url(), "token", &["--nats-token", "t0ken"]);
    let nats = NatsConfig::new(server.url()).token("t0ken");
    add_through(&nats, (8, 9), "the client authenticates").await;
}

/// `url` (`nats://host:port`) with `user_info` before its host.
fn with_user_info(url: &str, user_info: &str) -> String {
    url.replacen("nats://", &format!("nats://{user_info}@"), 1)
}

/// Every text a failed connection error can print: its message, its chain and its `Debug`.
fn printed(error: &dyn std::error::Error) -> String {
    let mut text = format!("{error}\n{error:?}");
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!("\n{cause}\n{cause:?}"));
        source = cause.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_url_authenticate_and_are_never_logged() {
    let server = NatsServer::builder()
        .user_password("app", "url-s3cret")
        .start()
        .unwrap();
    let url = with_user_info(&server.url(), "app:url-s3cret");
    // Everything at debug, async-nats's own logs too.
    let worker = WorkerProcess::spawn(&url, "url-auth", &[], &[("RUST_LOG", "debug")]);
    worker.wait_for_log("consuming", WAIT);
    let nats = NatsConfig::new(url.as_str());
    add_through(
        &nats,
        (1, 2),
        "the client authenticates with the URL's credentials",
    )
    .await;
    assert!(
        !worker.log().contains("url-s3cret"),
        "the worker logged the password:\n{}",
        worker.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connection_never_prints_the_password_of_its_url() {
    // A port nobody listens on: bound, read, released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port();
    let url = format!("nats://app:closed-s3cret@127.0.0.1:{port}");

    let worker = WorkerProcess::spawn(&url, "closed", &[], &[("RUST_LOG", "debug")]);
    // The worker retries forever, logging each attempt: the second is logged after the first
    // attempt's error went through every layer.
    worker.wait_for_log("attempt=2", WAIT);
    let log = worker.log();
    assert!(
        log.contains(&format!("127.0.0.1:{port}")),
        "the log names the server:\n{log}"
    );
    assert!(
        !log.contains("closed-s3cret"),
        "the worker logged the password:\n{log}"
    );

    let refused = celerity_it::app()
        .unwrap()
        .client(&NatsConfig::new(url.as_str()))
        .await
        .expect_err("nothing listens on the port");
    let text = printed(&refused);
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(
        !text.contains("closed-s3cret"),
        "the error prints the password:\n{text}"
    );
}
