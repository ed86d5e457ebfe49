//! Workers and producers reach servers that require a password or TLS with client certificates.

use std::time::Duration;

use celerity::NatsConfig;
use celerity_testkit::NatsServer;

use crate::support::WorkerProcess;

const WAIT: Duration = Duration::from_secs(30);

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
    let client = celerity_it::app()
        .unwrap()
        .client(&nats)
        .await
        .expect("the client authenticates");
    assert_eq!(
        celerity_it::add
            .delay(&client, 3, 4)
            .await
            .unwrap()
            .get(WAIT)
            .await
            .unwrap(),
        7
    );

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
    let client = celerity_it::app()
        .unwrap()
        .client(&nats)
        .await
        .expect("the client connects over TLS");
    assert_eq!(
        celerity_it::add
            .delay(&client, 5, 6)
            .await
            .unwrap()
            .get(WAIT)
            .await
            .unwrap(),
        11
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token() {
    let server = NatsServer::builder().token("t0ken").start().unwrap();
    let _worker = WorkerProcess::start(&server.url(), "token", &["--nats-token", "t0ken"]);
    let nats = NatsConfig::new(server.url()).token("t0ken");
    let client = celerity_it::app()
        .unwrap()
        .client(&nats)
        .await
        .expect("the client authenticates");
    assert_eq!(
        celerity_it::add
            .delay(&client, 8, 9)
            .await
            .unwrap()
            .get(WAIT)
            .await
            .unwrap(),
        17
    );
}
