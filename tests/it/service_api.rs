//! Workers registered with the NATS service API: `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` of
//! the service `celerity-<ns>` reach every worker, with its metadata and its counts, and a worker
//! that stops leaves the service.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::Value;

use crate::support::{WorkerProcess, client, eventually, server};

const WAIT: Duration = Duration::from_secs(20);

/// The service name of the default namespace.
const SERVICE: &str = "celerity-celerity";

/// Sends one request to `subject` and gathers the replies until `expected` came or `within`
/// passed (a request-many, as `nats micro` sends).
async fn request_many(
    nats: &async_nats::Client,
    subject: &str,
    expected: usize,
    within: Duration,
) -> Vec<Value> {
    let inbox = nats.new_inbox();
    let mut replies = nats.subscribe(inbox.clone()).await.expect("subscribe");
    nats.publish_with_reply(subject.to_owned(), inbox, "".into())
        .await
        .expect("publish the request");
    let mut gathered = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while gathered.len() < expected {
        match tokio::time::timeout_at(deadline, replies.next()).await {
            Ok(Some(reply)) => {
                gathered.push(serde_json::from_slice(&reply.payload).expect("a JSON reply"))
            }
            Ok(None) | Err(_) => break,
        }
    }
    gathered
}

/// The reply whose metadata names the worker `hostname`.
fn of_worker<'a>(replies: &'a [Value], hostname: &str) -> &'a Value {
    replies
        .iter()
        .find(|reply| reply["metadata"]["hostname"] == hostname)
        .unwrap_or_else(|| panic!("no reply of {hostname} in {replies:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_answer_service_ping_info_and_stats_and_leave_when_they_stop() {
    let server = server();
    let url = server.url();
    let mut w1 = WorkerProcess::start(&url, "w1", &["-c", "2"]);
    let _w2 = WorkerProcess::start(&url, "w2", &["-Q", "default,high"]);
    w1.wait_for_log("registered with the NATS service API", WAIT);
    let nats = async_nats::connect(&url).await.expect("connect");

    let pings = request_many(&nats, &format!("$SRV.PING.{SERVICE}"), 2, WAIT).await;
    assert_eq!(pings.len(), 2, "{pings:?}");
    for ping in &pings {
        assert_eq!(ping["name"], SERVICE);
        assert_eq!(ping["version"], env!("CARGO_PKG_VERSION"));
    }

    let infos = request_many(&nats, &format!("$SRV.INFO.{SERVICE}"), 2, WAIT).await;
    let info = of_worker(&infos, "w2");
    assert_eq!(info["metadata"]["namespace"], "celerity");
    assert_eq!(info["metadata"]["queues"], "default,high");
    assert!(
        info["description"]
            .as_str()
            .unwrap()
            .contains("Celerity worker")
    );
    assert_eq!(info["endpoints"][0]["name"], "stats");
    assert_eq!(info["endpoints"][0]["subject"], "celerity.svc.w2.stats");
    assert_eq!(of_worker(&infos, "w1")["metadata"]["concurrency"], "2");

    let client = client(&url).await;
    for i in 0..4 {
        celerity_it::add
            .delay(&client, i, 1)
            .await
            .unwrap()
            .get(WAIT)
            .await
            .unwrap();
    }
    let stats_subject = format!("$SRV.STATS.{SERVICE}");
    eventually("both workers' stats count the four tasks", WAIT, || async {
        let stats = request_many(&nats, &stats_subject, 2, WAIT).await;
        let processed: u64 = stats
            .iter()
            .map(|reply| {
                reply["endpoints"][0]["data"]["processed"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum();
        stats.len() == 2 && processed == 4
    })
    .await;
    let stats = request_many(&nats, &stats_subject, 2, WAIT).await;
    for reply in &stats {
        let data = &reply["endpoints"][0]["data"];
        assert_eq!(data["active"], 0, "{reply}");
        assert!(data["software"].as_str().unwrap().starts_with("celerity "));
    }
    let direct = nats
        .request("celerity.svc.w1.stats", "".into())
        .await
        .expect("the stats endpoint answers");
    let record: celerity_proto::StatsResult =
        serde_json::from_slice(&direct.payload).expect("a stats record");
    assert_eq!(
        (record.concurrency, record.queues),
        (2, vec!["default".to_owned()])
    );

    w1.signal(libc::SIGTERM);
    assert!(w1.wait_exit(WAIT).success());
    // Two replies are asked for and one is expected: the wait for a second ends at its deadline.
    let pings = request_many(
        &nats,
        &format!("$SRV.PING.{SERVICE}"),
        2,
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(pings.len(), 1, "w1 left the service: {pings:?}");
    assert_eq!(pings[0]["metadata"]["hostname"], "w2");
}
