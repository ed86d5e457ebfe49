//! Sending tasks and reading results across processes: typed, by name, failures, panics, states.

use std::time::Duration;

use celerity::{ApplyOptions, TaskState};
use serde_json::json;

use crate::support::{WorkerProcess, client, server};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_and_by_name_round_trips() {
    let server = server();
    let _worker = WorkerProcess::start(&server.url(), "w1", &["-c", "4"]);
    let client = client(&server.url()).await;

    let typed = celerity_it::add
        .delay(&client, 2, 3)
        .await
        .expect("add is sent");
    assert_eq!(typed.get(WAIT).await.expect("add succeeds"), 5);
    assert_eq!(typed.state().await.unwrap(), TaskState::Success);
    assert!(typed.ready().await.unwrap() && typed.successful().await.unwrap());

    let blocking = celerity_it::blocking_mul
        .delay(&client, 6, 7)
        .await
        .expect("mul is sent");
    assert_eq!(blocking.get(WAIT).await.expect("mul succeeds"), 42);

    let by_name = client
        .send_task("it.add", json!([1]), json!({"y": 41}), ApplyOptions::new())
        .await
        .expect("send_task");
    assert_eq!(
        by_name.get(WAIT).await.expect("add by name succeeds"),
        json!(42)
    );
}
