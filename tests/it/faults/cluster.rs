//! Fault scenarios on a 3-node JetStream cluster with every stream and bucket at 3 replicas:
//! producers and workers are given every node's URL and fail over when the node they use goes.

use std::time::{Duration, Instant};

use celerity::{NatsConfig, Storage};
use celerity_testkit::NatsCluster;

use super::checker::{Checker, Report, make_ledger};
use super::single::version;
use crate::support::WorkerProcess;

/// How long a fault scenario's tasks may take to complete once the faults are over.
const SETTLE: Duration = Duration::from_secs(40);

/// A producer may retry a refused publish this long (an election takes seconds).
const RETRY_FOR: Duration = Duration::from_secs(30);

/// A 3-node cluster, the ledger at 3 replicas, and two workers started with every URL.
struct Deployment {
    cluster: NatsCluster,
    workers: Vec<WorkerProcess>,
}

impl Deployment {
    fn start(worker_args: &[&str]) -> Self {
        let cluster = NatsCluster::start(3).expect("a 3-node cluster starts");
        let urls = cluster.url_list();
        let mut args = vec!["--replicas", "3", "-c", "8"];
        args.extend_from_slice(worker_args);
        let workers = vec![
            WorkerProcess::start(&urls, "c-1", &args),
            WorkerProcess::start(&urls, "c-2", &args),
        ];
        Self { cluster, workers }
    }

    fn urls(&self) -> String {
        self.cluster.url_list()
    }

    /// A producer with the test app at 3 replicas, given every node's URL.
    async fn client(&self) -> celerity::Client {
        let mut storage = Storage::default();
        storage.replicas = 3;
        celerity_it::app_builder()
            .storage(storage)
            .build()
            .expect("the test app builds")
            .client(&NatsConfig::new(self.urls()))
            .await
            .expect("the producer connects to the cluster")
    }

    /// The node leading `stream`, once there is one.
    fn leader_of(&self, stream: &str) -> usize {
        self.cluster
            .wait_for_stream_leader(stream, Duration::from_secs(30))
            .unwrap_or_else(|error| panic!("no leader for {stream}: {error}"))
    }
}

/// Runs `fault` (in a blocking section: the testkit's calls block) while `count` tasks are sent,
/// then reports what the checker found.
async fn under_load(
    deployment: &mut Deployment,
    count: u64,
    sleep_ms: u64,
    fault: impl FnOnce(&mut Deployment),
) -> (Report, Duration) {
    let urls = deployment.urls();
    make_ledger(&urls, 3).await;
    let client = deployment.client().await;
    let checker = Checker::default();
    let sending = checker.send_many(&client, "c", count, sleep_ms, RETRY_FOR);
    let (outage, ()) = tokio::join!(sending, async {
        // The fault starts once some tasks are in flight.
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::task::block_in_place(|| fault(deployment));
    });
    let report = checker.report(&urls, SETTLE).await;
    (report, outage)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leaders_of_a_queue_and_of_the_results_loses_nothing() {
    let mut deployment = Deployment::start(&["--ack-wait", "5"]);
    let mut killed = Vec::new();
    let (report, outage) = under_load(&mut deployment, 2_000, 0, |deployment| {
        for stream in ["CELERITY_Q_default", "KV_celerity_results"] {
            let leader = deployment.leader_of(stream);
            deployment.cluster.kill_node(leader).expect("killed");
            let started = Instant::now();
            let next = deployment.leader_of(stream);
            assert_ne!(next, leader, "a new leader of {stream}");
            killed.push(format!(
                "{stream} leader killed, new one in {:?}",
                started.elapsed()
            ));
            deployment.cluster.restart_node(leader).expect("restarted");
            deployment
                .cluster
                .wait_ready()
                .expect("the cluster is whole again");
        }
    })
    .await;
    eprintln!("{}\npublish outage {outage:?}\n{report}", killed.join("\n"));
    report.record(
        "5 cluster: kill stream and bucket leaders",
        &version(),
        "SIGKILL the leader of the queue stream, then of the results bucket",
        Some(outage),
    );
    assert_eq!(report.acknowledged, report.attempted, "{report}");
    report.assert_clean(false);
    drop(deployment.workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_lame_duck_restart_of_every_node_loses_nothing() {
    let mut deployment = Deployment::start(&["--ack-wait", "5"]);
    let (report, outage) = under_load(&mut deployment, 2_000, 0, |deployment| {
        for node in 0..deployment.cluster.len() {
            deployment
                .cluster
                .lame_duck_node(node)
                .expect("the node leaves in lame duck mode");
            deployment.cluster.restart_node(node).expect("restarted");
            deployment
                .cluster
                .wait_ready()
                .expect("the cluster is whole again");
        }
    })
    .await;
    eprintln!("publish outage {outage:?}\n{report}");
    report.record(
        "6 cluster: rolling lame-duck restart",
        &version(),
        "lame duck mode then restart, each of 3 nodes in turn",
        Some(outage),
    );
    assert_eq!(report.acknowledged, report.attempted, "{report}");
    report.assert_clean(false);
    drop(deployment.workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_the_leader_and_a_worker_for_15_s_loses_nothing_and_the_nodes_agree() {
    let mut deployment = Deployment::start(&["--ack-wait", "5"]);
    let (report, outage) = under_load(&mut deployment, 1_000, 20, |deployment| {
        let leader = deployment.leader_of("CELERITY_Q_default");
        deployment.cluster.pause_node(leader).expect("paused");
        deployment.workers[0].signal(libc::SIGSTOP);
        // NOTE: the fault is a pause of a given length: nothing to wait on but the clock.
        std::thread::sleep(Duration::from_secs(15));
        deployment.workers[0].signal(libc::SIGCONT);
        deployment.cluster.resume_node(leader).expect("resumed");
        deployment
            .cluster
            .wait_ready()
            .expect("the cluster is whole again");
    })
    .await;
    eprintln!("publish outage {outage:?}\n{report}");
    report.record(
        "7 cluster: pause the leader and a worker 15 s",
        &version(),
        "SIGSTOP the queue stream's leader and one worker for 15 s",
        Some(outage),
    );
    assert_eq!(report.acknowledged, report.attempted, "{report}");
    report.assert_clean(false);
    assert_every_node_agrees(&deployment.cluster, "CELERITY_Q_default").await;
    drop(deployment.workers);
}

/// Waits until every node reports the same last sequence and message count for `stream`.
async fn assert_every_node_agrees(cluster: &NatsCluster, stream: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states: Vec<(u64, u64)> = tokio::task::block_in_place(|| {
            (0..cluster.len())
                .map(|node| {
                    cluster
                        .stream_state(node, stream)
                        .unwrap_or_else(|error| panic!("node {node}'s {stream}: {error}"))
                })
                .collect()
        });
        if states.windows(2).all(|pair| pair[0] == pair[1]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes never agreed on {stream}: (last sequence, messages) {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
