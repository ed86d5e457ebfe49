//! A 3-node JetStream cluster: readiness, stream leaders, and failover when a node is killed,
//! paused or sent into lame duck mode.

use std::time::{Duration, Instant};

use celerity_testkit::{NatsCluster, TestkitError};

use crate::raw_client::{RawClient, read_info};

/// How long an election after a lost leader may take: nats-server's Raft election timeouts are
/// several seconds, and both cores are shared with other tests.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(45);

/// Creates a file stream `name` on `subjects` (ending in `>`) with one replica per node, through
/// node `via`, and stores one message in it.
///
/// Right after the meta leader is elected the other peers may not count as current yet, so the
/// create is repeated until it is accepted.
fn create_replicated_stream(cluster: &NatsCluster, via: usize, name: &str, subjects: &str) {
    let mut client = RawClient::connect(cluster.node(via).port(), "{}")
        .expect("cluster node accepts a client without credentials");
    let config = serde_json::json!({
        "name": name,
        "subjects": [subjects],
        "storage": "file",
        "num_replicas": cluster.len(),
    });
    let deadline = Instant::now() + ELECTION_TIMEOUT;
    loop {
        let created = client.jetstream_api(
            &format!("$JS.API.STREAM.CREATE.{name}"),
            &config.to_string(),
        );
        if created.get("error").is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stream {name} was never created: {created}"
        );
        // NOTE: No event tells when the peers count as current; the deadline bounds the retries.
        std::thread::sleep(Duration::from_millis(200));
    }
    let ack = client.jetstream_api(&subjects.replace('>', "first"), "hello");
    assert_eq!(ack["seq"], 1, "{ack}");
}

/// Polls `STREAM.INFO` through node `via` until it reports `n_messages` and every replica current.
fn wait_until_stream_is_current(cluster: &NatsCluster, via: usize, name: &str, n_messages: u64) {
    let deadline = Instant::now() + ELECTION_TIMEOUT;
    loop {
        let info = RawClient::connect(cluster.node(via).port(), "{}")
            .expect("cluster node accepts a client without credentials")
            .jetstream_api(&format!("$JS.API.STREAM.INFO.{name}"), "");
        let replicas = info["cluster"]["replicas"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let all_current = replicas.len() == cluster.len() - 1
            && replicas
                .iter()
                .all(|replica| replica["current"] == true && replica.get("offline").is_none());
        if info["state"]["messages"] == n_messages && all_current {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stream {name} never became current: {info}"
        );
        // NOTE: The monitoring API has no way to wait for catch-up; the deadline bounds the polls.
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn cluster_of_three_starts_with_a_meta_leader() {
    let cluster = NatsCluster::start(3).unwrap();

    assert_eq!(cluster.len(), 3);
    let urls = cluster.urls();
    assert_eq!(cluster.url_list(), urls.join(","));
    let mut names = Vec::new();
    for (index, node) in cluster.nodes().iter().enumerate() {
        assert_eq!(urls[index], node.url());
        let info = read_info(node.port());
        assert_eq!(info["server_name"], node.server_name(), "{info}");
        assert_eq!(info["cluster"], cluster.cluster_name(), "{info}");
        assert_eq!(info["jetstream"], true, "{info}");
        assert!(node.monitor_port().is_some());
        names.push(node.server_name().to_owned());
    }
    names.dedup();
    assert_eq!(names.len(), 3, "{names:?}");
    let leader = cluster.meta_leader().unwrap();
    assert!(leader < 3);
}

#[test]
fn killed_stream_leader_is_replaced_and_rejoins_after_a_restart() {
    let mut cluster = NatsCluster::start(3).unwrap();
    create_replicated_stream(&cluster, 0, "ORDERS", "orders.>");
    let old_leader = cluster
        .wait_for_stream_leader("ORDERS", ELECTION_TIMEOUT)
        .unwrap();
    let old_port = cluster.node(old_leader).port();

    cluster.kill_node(old_leader).unwrap();

    let new_leader = cluster
        .wait_for_stream_leader("ORDERS", ELECTION_TIMEOUT)
        .expect("no new leader was elected for ORDERS");
    assert_ne!(new_leader, old_leader);

    cluster.restart_node(old_leader).unwrap();
    cluster.wait_ready().unwrap();
    assert_eq!(cluster.node(old_leader).port(), old_port);
    wait_until_stream_is_current(&cluster, old_leader, "ORDERS", 1);
    cluster
        .wait_for_stream_leader("ORDERS", ELECTION_TIMEOUT)
        .unwrap();
}

#[test]
fn paused_meta_leader_is_replaced_and_rejoins_after_resume() {
    let mut cluster = NatsCluster::start(3).unwrap();
    let old_leader = cluster.meta_leader().unwrap();

    cluster.pause_node(old_leader).unwrap();

    assert!(cluster.node(old_leader).is_paused());
    let deadline = Instant::now() + ELECTION_TIMEOUT;
    let new_leader = loop {
        match cluster.meta_leader() {
            Ok(leader) => break leader,
            Err(TestkitError::NoLeader { answers, .. }) => {
                assert!(Instant::now() < deadline, "no new meta leader: {answers}");
                // NOTE: Nothing signals an election; the deadline bounds the polls.
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(error) => panic!("{error}"),
        }
    };
    assert_ne!(new_leader, old_leader);

    cluster.resume_node(old_leader).unwrap();
    cluster.wait_ready().unwrap();
    assert!(!cluster.node(old_leader).is_paused());
    assert_eq!(
        read_info(cluster.node(old_leader).port())["server_name"],
        cluster.node(old_leader).server_name()
    );
}

#[test]
fn lame_duck_stream_leader_exits_and_hands_over_the_stream() {
    let mut cluster = NatsCluster::start(3).unwrap();
    create_replicated_stream(&cluster, 1, "KV_jobs", "$KV.jobs.>");
    let old_leader = cluster
        .wait_for_stream_leader("KV_jobs", ELECTION_TIMEOUT)
        .unwrap();
    let started = Instant::now();

    cluster.lame_duck_node(old_leader).unwrap();

    // Without clients a node leaves long before its 30 s lame duck duration.
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(cluster.node(old_leader).pid(), None);
    assert!(!cluster.node_mut(old_leader).is_running());
    let new_leader = cluster
        .wait_for_stream_leader("KV_jobs", ELECTION_TIMEOUT)
        .unwrap();
    assert_ne!(new_leader, old_leader);

    cluster.restart_node(old_leader).unwrap();
    cluster.wait_ready().unwrap();
}

#[test]
fn stream_leader_of_a_missing_stream_is_no_leader() {
    let cluster = NatsCluster::start(3).unwrap();
    let error = cluster.stream_leader("NOPE").unwrap_err();
    let TestkitError::NoLeader { group, answers } = &error else {
        panic!("expected NoLeader, got {error:?}");
    };
    assert!(group.contains("NOPE"), "{error}");
    assert!(answers.contains("no stream \"NOPE\""), "{error}");
}

#[test]
fn domain_puts_the_jetstream_api_under_the_domain_prefix() {
    let cluster = NatsCluster::builder()
        .nodes(3)
        .domain("hub")
        .start()
        .unwrap();

    let mut client = RawClient::connect(cluster.node(2).port(), "{}").unwrap();
    let account = client.jetstream_api("$JS.hub.API.INFO", "");

    assert!(account.get("error").is_none(), "{account}");
    assert_eq!(account["domain"], "hub", "{account}");
}

#[test]
fn max_payload_and_extra_config_apply_to_every_node() {
    let cluster = NatsCluster::builder()
        .max_payload(2 * 1024 * 1024)
        .extra_config("max_connections: 1000")
        .start()
        .unwrap();

    for node in cluster.nodes() {
        let info = read_info(node.port());
        assert_eq!(info["max_payload"], 2 * 1024 * 1024, "{info}");
        let config =
            std::fs::read_to_string(node.log_path().with_file_name("nats-server.conf")).unwrap();
        assert!(config.ends_with("max_connections: 1000\n"), "{config}");
    }
}
