//! Workers outlive the server: started before it, and across its restart.

use std::time::Duration;

use celerity_testkit::NatsServer;

use crate::support::{WorkerProcess, client, server};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_before_the_server_waits_for_it_and_then_consumes() {
    let port = celerity_testkit::reserve_port().expect("a free port");
    let url = format!("nats://127.0.0.1:{port}");
    let worker = WorkerProcess::spawn(&url, "early", &[], &[]);
    worker.wait_for_log("NATS is not reachable yet", WAIT);

    let _server = NatsServer::builder()
        .port(port)
        .start()
        .expect("the server starts on the reserved port");
    worker.wait_for_log("consuming", WAIT);
    let client = client(&url).await;
    let result = celerity_it::add.delay(&client, 20, 1).await.unwrap();
    assert_eq!(result.get(WAIT).await.unwrap(), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_keeps_consuming_after_the_server_restarts() {
    let mut server = server();
    let url = server.url();
    let _worker = WorkerProcess::start(&url, "steady", &[]);
    let client = client(&url).await;
    assert_eq!(
        celerity_it::add
            .delay(&client, 1, 1)
            .await
            .unwrap()
            .get(WAIT)
            .await
            .unwrap(),
        2
    );

    server
        .restart()
        .expect("the server restarts on the same port and store");

    // Publishing right after the restart may race the client's reconnect; retry the send only.
    let deadline = std::time::Instant::now() + WAIT;
    let result = loop {
        match celerity_it::add.delay(&client, 2, 2).await {
            Ok(result) => break result,
            Err(error) if std::time::Instant::now() < deadline => {
                tracing::debug!(%error, "send after restart failed; the client is reconnecting");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("cannot send after the restart: {error}"),
        }
    };
    assert_eq!(
        result
            .get(WAIT)
            .await
            .expect("tasks sent after the restart are processed"),
        4
    );
}
