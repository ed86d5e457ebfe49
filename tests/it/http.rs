//! The worker's HTTP endpoint (`--http-port`): `/healthz`, `/readyz` and `/metrics`, scraped over
//! HTTP and parsed as Prometheus text; a taken port is a startup error.

use std::time::Duration;

use celerity::StreamExt as _;
use celerity::events::{Event, Since};
use celerity_proto::WorkerEventKind;

use crate::support::{WorkerProcess, client, eventually, server};

const WAIT: Duration = Duration::from_secs(20);

/// The address the worker `hostname` serves its endpoint on, from its `worker-online` event.
pub(crate) async fn http_address(client: &celerity::Client, hostname: &str) -> String {
    let mut events = client
        .events(Since::Start)
        .await
        .expect("the events stream");
    let found = async {
        while let Some(event) = events.next().await {
            if let Ok(Event::Worker(event)) = event
                && event.hostname == hostname
                && event.kind == WorkerEventKind::Online
            {
                return event.http.clone();
            }
        }
        None
    };
    tokio::time::timeout(WAIT, found)
        .await
        .expect("the worker's online event")
        .expect("the online event names the worker's HTTP address")
}

/// GET `path` on `address`: the status and the body.
pub(crate) async fn get(address: &str, path: &str) -> (u16, String) {
    let url = format!("http://{address}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let mut response = agent.get(&url).call().expect("the endpoint answers");
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().expect("a text body");
        (status, body)
    })
    .await
    .expect("the request's thread")
}

/// The value of the sample `name` with exactly `labels`, from Prometheus text.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the metrics parse");
    scrape.samples.iter().find_map(|sample| {
        let same_labels = sample.labels.len() == labels.len()
            && labels
                .iter()
                .all(|(key, value)| sample.labels.get(key) == Some(*value));
        if sample.metric != name || !same_labels {
            return None;
        }
        match sample.value {
            prometheus_parse::Value::Counter(value)
            | prometheus_parse::Value::Gauge(value)
            | prometheus_parse::Value::Untyped(value) => Some(value),
            _ => None,
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_health_readiness_and_metrics_that_count_its_tasks() {
    let server = server();
    let url = server.url();
    let _worker = WorkerProcess::start(&url, "web", &["--http-port", "0", "-c", "3"]);
    let client = client(&url).await;
    let address = http_address(&client, "web").await;
    assert!(
        address.starts_with("127.0.0.1:"),
        "binds loopback by default: {address}"
    );
    assert_eq!(get(&address, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(&address, "/readyz").await, (200, "ready\n".to_owned()));

    for x in 0..3 {
        assert_eq!(
            celerity_it::add
                .delay(&client, x, 1)
                .await
                .unwrap()
                .get(WAIT)
                .await
                .unwrap(),
            x + 1
        );
    }
    let failed = celerity_it::fail.delay(&client, "no".into()).await.unwrap();
    assert!(failed.get(WAIT).await.is_err());
    celerity_it::retry_once_later
        .delay(&client)
        .await
        .unwrap()
        .get(WAIT)
        .await
        .unwrap();

    let retry_success = [("task", "it.retry_once_later"), ("state", "SUCCESS")];
    eventually("the metrics count every run", WAIT, || {
        let address = address.clone();
        async move {
            let (status, body) = get(&address, "/metrics").await;
            status == 200 && sample(&body, "celerity_tasks_total", &retry_success) == Some(1.0)
        }
    })
    .await;
    let (_, text) = get(&address, "/metrics").await;
    let add_success = [("task", "it.add"), ("state", "SUCCESS")];
    assert_eq!(
        sample(&text, "celerity_tasks_total", &add_success),
        Some(3.0),
        "{text}"
    );
    let fail_failure = [("task", "it.fail"), ("state", "FAILURE")];
    assert_eq!(
        sample(&text, "celerity_tasks_total", &fail_failure),
        Some(1.0),
        "{text}"
    );
    let retries = [("task", "it.retry_once_later")];
    assert_eq!(
        sample(&text, "celerity_task_retries_total", &retries),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "celerity_worker_slots", &[]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "celerity_tasks_active", &[]),
        Some(0.0),
        "{text}"
    );
    assert!(
        text.contains("celerity_task_runtime_seconds_count{task=\"it.add\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("celerity_task_queue_wait_seconds_bucket{le=\"+Inf\",task=\"it.add\"} 3")
            || text.contains("celerity_task_queue_wait_seconds_count{task=\"it.add\"} 3"),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "celerity_queue_depth",
            &[("queue", "default"), ("priority", "0")]
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "celerity_nats_reconnects_total", &[]),
        Some(0.0),
        "{text}"
    );
    assert!(
        !text.contains("it.nobody"),
        "no series for tasks the worker lacks"
    );
    assert_eq!(get(&address, "/nope").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_disconnected_from_nats_is_alive_but_not_ready() {
    let mut server = server();
    let url = server.url();
    let _worker = WorkerProcess::start(&url, "cut", &["--http-port", "0"]);
    let client = client(&url).await;
    let address = http_address(&client, "cut").await;
    assert_eq!(get(&address, "/readyz").await.0, 200);
    server.stop().expect("the server stops");
    eventually("readyz says the worker is not connected", WAIT, || {
        let address = address.clone();
        async move {
            get(&address, "/readyz").await == (503, "not ready: not connected to NATS\n".to_owned())
        }
    })
    .await;
    assert_eq!(
        get(&address, "/healthz").await.0,
        200,
        "the process itself is alive"
    );
    server.start_again().expect("the server starts again");
    eventually("readyz is ready again after the reconnect", WAIT, || {
        let address = address.clone();
        async move { get(&address, "/readyz").await.0 == 200 }
    })
    .await;
    let (_, text) = get(&address, "/metrics").await;
    assert!(
        sample(&text, "celerity_nats_reconnects_total", &[]).is_some_and(|n| n >= 1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_http_port_is_a_startup_error_that_says_what_to_do() {
    let server = server();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut worker = WorkerProcess::spawn(&server.url(), "clash", &["--http-port", &port], &[]);
    let status = worker.wait_exit(WAIT);
    assert!(!status.success());
    let log = worker.log();
    assert!(
        log.contains(&format!(
            "cannot serve the health and metrics endpoint on 127.0.0.1:{port}"
        )) && log.contains("--http-port"),
        "{log}"
    );
}
