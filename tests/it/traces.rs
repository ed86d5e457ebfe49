//! OpenTelemetry traces, exported over OTLP/HTTP by producers and worker processes to a real
//! receiver in the test ([`OtlpReceiver`], decoding the official protobuf definitions): one trace
//! per canvas, parent and child spans across processes, chord links, the messaging attributes,
//! retries as separate runs, a Python producer's trace continued, bad input and a collector that
//! is down.

use std::time::Duration;

use celerity::telemetry::Telemetry;
use celerity::{Chord, Client, NatsConfig};
use celerity_it::{add, flaky, sum_all};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use crate::otlp::{OtlpReceiver, ReceivedSpan};
use crate::support::{WorkerProcess, eventually, publish_raw, run_celerity, server};

const WAIT: Duration = Duration::from_secs(30);

/// A worker process exporting its spans to `receiver` as service `hostname`, a batch every
/// 100 ms.
fn traced_worker(
    url: &str,
    hostname: &str,
    receiver: &OtlpReceiver,
    extra: &[&str],
) -> WorkerProcess {
    let endpoint = receiver.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_SERVICE_NAME", hostname),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let worker = WorkerProcess::spawn(url, hostname, extra, &env);
    worker.wait_for_log("consuming", WAIT);
    worker.wait_for_log("answering control requests", WAIT);
    worker
}

/// A producer exporting its spans to `receiver`.
async fn traced_client(url: &str, receiver: &OtlpReceiver) -> Client {
    let telemetry = Telemetry::otlp_http(&receiver.endpoint()).expect("the exporter builds");
    celerity_it::app_builder()
        .telemetry(telemetry)
        .build()
        .expect("the test app builds")
        .client(&NatsConfig::new(url))
        .await
        .expect("the client connects")
}

/// Exports what `client`'s app traced so far (its batches otherwise wait up to 5 s).
async fn flush(client: &Client) {
    let telemetry = client.settings().telemetry().clone();
    tokio::task::spawn_blocking(move || telemetry.flush())
        .await
        .expect("the flush ends");
}

/// The spans of `trace_id`.
fn of_trace<'a>(spans: &'a [ReceivedSpan], trace_id: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|span| span.trace_id_hex() == trace_id)
        .collect()
}

/// The one span named `name` whose `messaging.message.id` is `task_id`.
fn span_of<'a>(spans: &[&'a ReceivedSpan], name: &str, task_id: &str) -> &'a ReceivedSpan {
    let found: Vec<&&ReceivedSpan> = spans
        .iter()
        .filter(|span| {
            span.name == name && span.attr("messaging.message.id").as_deref() == Some(task_id)
        })
        .collect();
    assert_eq!(found.len(), 1, "one {name} span of {task_id}: {spans:#?}");
    found[0]
}

fn parent_of(span: &ReceivedSpan) -> String {
    span.parent_span_id_hex()
        .unwrap_or_else(|| panic!("{} has a parent", span.name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_across_two_worker_processes_is_one_trace_of_parents_and_children() {
    let server = server();
    let url = server.url();
    let receiver = OtlpReceiver::start();
    let _w1 = traced_worker(&url, "w1", &receiver, &["-Q", "a"]);
    let _w2 = traced_worker(&url, "w2", &receiver, &["-Q", "b"]);
    let client = traced_client(&url, &receiver).await;
    let chain = celerity::chain![
        add.s((1, 2)).queue("a"),
        add.s((3,)).queue("b"),
        add.s((4,)).queue("a")
    ];
    let last = chain.apply_async(&client).await.expect("the chain is sent");
    assert_eq!(last.get(WAIT).await.expect("the chain runs"), 10);
    flush(&client).await;
    let ids: Vec<String> = {
        let second = last.parent().expect("a second step");
        let first = second.parent().expect("a first step");
        [first.id(), second.id(), last.id()]
            .iter()
            .map(|id| id.to_string())
            .collect()
    };
    let spans = receiver
        .wait_for("the chain's 7 spans", WAIT, |spans| {
            spans
                .iter()
                .filter(|span| span.name.starts_with("process "))
                .count()
                >= 3
                && spans
                    .iter()
                    .filter(|span| span.name.starts_with("publish "))
                    .count()
                    >= 3
                && spans.iter().any(|span| span.name == "apply chain")
        })
        .await;
    let root = spans
        .iter()
        .find(|span| span.name == "apply chain")
        .expect("the canvas's root span");
    assert_eq!(
        root.parent_span_id_hex(),
        None,
        "the apply span is the root"
    );
    assert_eq!(root.kind, SpanKind::Internal);
    let trace_id = root.trace_id_hex();
    let trace = of_trace(&spans, &trace_id);
    assert_eq!(
        trace.len(),
        7,
        "one trace holds the whole chain: {spans:#?}"
    );
    // Each step: published inside the previous step's run (the first inside the apply span),
    // run as a child of its publish, on the worker of its queue.
    let mut parent = root.span_id_hex();
    for (id, (queue, worker)) in ids.iter().zip([("a", "w1"), ("b", "w2"), ("a", "w1")]) {
        let publish = span_of(&trace, "publish it.add", id);
        let process = span_of(&trace, "process it.add", id);
        assert_eq!(parent_of(publish), parent, "{id}'s publish");
        assert_eq!(parent_of(process), publish.span_id_hex(), "{id}'s run");
        assert_eq!(
            (publish.kind, process.kind),
            (SpanKind::Producer, SpanKind::Consumer)
        );
        assert_eq!(process.service, worker);
        for span in [publish, process] {
            assert_eq!(span.attr("messaging.system").as_deref(), Some("nats"));
            assert_eq!(span.attr("celerity.task.name").as_deref(), Some("it.add"));
            assert_eq!(span.attr("celerity.queue").as_deref(), Some(queue));
            assert_eq!(span.attr("celerity.task.retries").as_deref(), Some("0"));
            let destination = span
                .attr("messaging.destination.name")
                .expect("a destination");
            assert!(
                destination.starts_with(&format!("celerity.q.{queue}.")),
                "{destination}"
            );
        }
        assert_eq!(
            publish.attr("messaging.operation.type").as_deref(),
            Some("send")
        );
        assert_eq!(
            process.attr("messaging.operation.type").as_deref(),
            Some("process")
        );
        assert_eq!(
            process.attr("celerity.task.state").as_deref(),
            Some("SUCCESS")
        );
        assert_eq!(process.attr("celerity.worker").as_deref(), Some(worker));
        parent = process.span_id_hex();
    }
    // `celerity result` names the trace, so it can be found in Jaeger.
    let shown = run_celerity(&url, &["result", ids[2].as_str()]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains(&format!("trace:    {trace_id}")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_is_one_trace_and_its_body_links_to_every_member_run() {
    let server = server();
    let url = server.url();
    crate::support::runs_stream(&url).await;
    let receiver = OtlpReceiver::start();
    let _w1 = traced_worker(&url, "w1", &receiver, &["-c", "4"]);
    let client = traced_client(&url, &receiver).await;
    let sum = Chord::new((0..3).map(|i| add.s((i, 1))), sum_all.s(()))
        .apply_async(&client)
        .await
        .expect("the chord is sent");
    assert_eq!(sum.get(WAIT).await.expect("the body runs"), 6);
    flush(&client).await;
    let body_id = sum.id().to_string();
    let spans = receiver
        .wait_for("the chord's body ran", WAIT, |spans| {
            spans.iter().any(|span| span.name == "apply chord")
                && spans.iter().any(|span| {
                    span.name == "process it.total"
                        && span.attr("messaging.message.id").as_deref() == Some(body_id.as_str())
                })
                && spans
                    .iter()
                    .filter(|span| span.name == "process it.add")
                    .count()
                    >= 3
        })
        .await;
    let root = spans
        .iter()
        .find(|span| span.name == "apply chord")
        .expect("the chord's root span");
    let trace = of_trace(&spans, &root.trace_id_hex());
    let members: Vec<&&ReceivedSpan> = trace
        .iter()
        .filter(|span| span.name == "process it.add")
        .collect();
    assert_eq!(
        members.len(),
        3,
        "the members are in the chord's trace: {spans:#?}"
    );
    let body_publish = span_of(&trace, "publish it.total", &body_id);
    let body_run = span_of(&trace, "process it.total", &body_id);
    assert_eq!(
        parent_of(body_publish),
        root.span_id_hex(),
        "the body is sent in the chord's span"
    );
    assert_eq!(parent_of(body_run), body_publish.span_id_hex());
    let mut linked: Vec<String> = body_publish
        .links
        .iter()
        .map(|link| link.span_id_hex.clone())
        .collect();
    let mut member_ids: Vec<String> = members.iter().map(|span| span.span_id_hex()).collect();
    linked.sort();
    member_ids.sort();
    assert_eq!(linked, member_ids, "the body links to each member's run");
    assert_eq!(
        body_publish.attr("celerity.chord.size").as_deref(),
        Some("3")
    );
    assert_eq!(
        body_publish.attr("celerity.chord.links_dropped").as_deref(),
        Some("0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_a_second_run_in_the_same_trace() {
    let server = server();
    let url = server.url();
    let receiver = OtlpReceiver::start();
    let _w1 = traced_worker(&url, "w1", &receiver, &[]);
    let client = traced_client(&url, &receiver).await;
    let result = flaky.delay(&client, 1).await.expect("sent");
    assert_eq!(result.get(WAIT).await.expect("it succeeds on its retry"), 1);
    flush(&client).await;
    let id = result.id().to_string();
    let spans = receiver
        .wait_for("two runs of the flaky task", WAIT, |spans| {
            spans
                .iter()
                .filter(|span| span.name == "process it.flaky")
                .count()
                >= 2
        })
        .await;
    let runs: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|span| span.name == "process it.flaky")
        .collect();
    assert_eq!(runs[0].trace_id_hex(), runs[1].trace_id_hex());
    assert_eq!(
        runs[0].attr("celerity.task.state").as_deref(),
        Some("RETRY")
    );
    assert_eq!(
        runs[1].attr("celerity.task.state").as_deref(),
        Some("SUCCESS")
    );
    assert_eq!(runs[1].attr("celerity.task.retries").as_deref(), Some("1"));
    // The retry was sent inside the first run.
    let trace = of_trace(&spans, &runs[0].trace_id_hex());
    let resent: Vec<&&ReceivedSpan> = trace
        .iter()
        .filter(|span| {
            span.name == "publish it.flaky"
                && span.parent_span_id_hex() == Some(runs[0].span_id_hex())
        })
        .collect();
    assert_eq!(resent.len(), 1, "{trace:#?}");
    assert_eq!(parent_of(runs[1]), resent[0].span_id_hex());
    assert!(
        runs.iter()
            .all(|run| run.attr("messaging.message.id").as_deref() == Some(id.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_producers_traceparent_is_continued_and_a_malformed_one_starts_a_trace() {
    let server = server();
    let url = server.url();
    let receiver = OtlpReceiver::start();
    let worker = traced_worker(&url, "w1", &receiver, &[]);
    let python = crate::protocol::python_interpreter();
    let sent =
        crate::protocol::run_python_script(&python, "traced_producer.py", &["--url", &url]).await;
    assert_eq!(sent["record"]["result"], 5, "{sent}");
    let (trace_id, span_id) = (
        sent["trace_id"].as_str().expect("a trace id").to_owned(),
        sent["span_id"].as_str().expect("a span id").to_owned(),
    );
    assert_eq!(
        sent["record"]["trace_id"],
        trace_id.as_str(),
        "the record names the trace"
    );
    let spans = receiver
        .wait_for("the Python task's run", WAIT, |spans| {
            spans.iter().any(|span| span.trace_id_hex() == trace_id)
        })
        .await;
    let run = spans
        .iter()
        .find(|span| span.trace_id_hex() == trace_id)
        .expect("the run");
    assert_eq!(run.name, "process it.add");
    assert_eq!(
        run.parent_span_id_hex(),
        Some(span_id),
        "the run is the Python span's child"
    );

    // What a task logs names the task and its trace.
    let client = crate::support::client(&url).await;
    let said = "0190a5b2-7c1e-7f00-8000-000000005a1d";
    let traceparent = format!("00-{trace_id}-{}-01", "a".repeat(16));
    publish_raw(
        &client,
        &[
            ("Celerity-Version", "1"),
            ("Celerity-Task", "it.say"),
            ("Celerity-Id", said),
            ("traceparent", traceparent.as_str()),
        ],
        br#"{"args":["hello"],"kwargs":{}}"#,
    )
    .await;
    let said_result = client.async_result::<String>(said).expect("a valid id");
    assert_eq!(said_result.get(WAIT).await.expect("it runs"), "hello");
    worker.wait_for_log("said", WAIT);
    let line = worker
        .log()
        .lines()
        .find(|line| line.contains("said"))
        .map(str::to_owned)
        .expect("the task's line");
    assert!(
        line.contains(&format!("task_id={said}"))
            && line.contains("task=it.say")
            && line.contains(&format!("trace_id={trace_id}")),
        "{line}"
    );

    let id = "0190a5b2-7c1e-7f00-8000-00000000bad1";
    publish_raw(
        &client,
        &[
            ("Celerity-Version", "1"),
            ("Celerity-Task", "it.add"),
            ("Celerity-Id", id),
            ("traceparent", "00-not-a-trace-01"),
        ],
        br#"{"args":[1,1],"kwargs":{}}"#,
    )
    .await;
    let result = client.async_result::<i64>(id).expect("a valid id");
    assert_eq!(result.get(WAIT).await.expect("the task runs"), 2);
    let spans = receiver
        .wait_for("the run of the badly traced task", WAIT, |spans| {
            spans
                .iter()
                .any(|span| span.attr("messaging.message.id").as_deref() == Some(id))
        })
        .await;
    let run = spans
        .iter()
        .find(|span| span.attr("messaging.message.id").as_deref() == Some(id))
        .expect("the run");
    assert_eq!(
        run.parent_span_id_hex(),
        None,
        "a malformed traceparent starts a new trace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_no_task_and_the_dropped_spans_are_counted() {
    let server = server();
    let url = server.url();
    let receiver = OtlpReceiver::start();
    receiver.set_failing(true);
    let endpoint = receiver.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "16"),
    ];
    let worker = WorkerProcess::spawn(&url, "w1", &["--http-port", "0"], &env);
    worker.wait_for_log("consuming", WAIT);
    let client = crate::support::client(&url).await;
    let mut results = Vec::new();
    for i in 0..200 {
        results.push(add.delay(&client, i, 1).await.expect("sent"));
    }
    for (i, result) in (0..).zip(results) {
        assert_eq!(result.get(WAIT).await.expect("every task runs"), i + 1);
    }
    receiver
        .wait_for_requests("the worker tried to export", WAIT, 1)
        .await;
    let address = crate::http::http_address(&client, "w1").await;
    eventually("the dropped spans are counted", WAIT, || async {
        let (_, text) = crate::http::get(&address, "/metrics").await;
        text.lines()
            .find(|line| line.starts_with("celerity_spans_dropped_total "))
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|value| value.parse::<f64>().ok())
            .is_some_and(|dropped| dropped >= 100.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_does_not_trace_passes_the_trace_on_to_the_next_step() {
    let server = server();
    let url = server.url();
    let receiver = OtlpReceiver::start();
    let _untraced = WorkerProcess::start(&url, "w1", &["-Q", "a"]);
    let _traced = traced_worker(&url, "w2", &receiver, &["-Q", "b"]);
    let client = traced_client(&url, &receiver).await;
    let chain = celerity::chain![add.s((1, 2)).queue("a"), add.s((3,)).queue("b")];
    let last = chain.apply_async(&client).await.expect("the chain is sent");
    assert_eq!(last.get(WAIT).await.expect("the chain runs"), 6);
    flush(&client).await;
    let first = last.parent().expect("a first step").id().to_string();
    let second = last.id().to_string();
    let spans = receiver
        .wait_for(
            "the traced step's run and the producer's spans",
            WAIT,
            |spans| {
                spans.iter().any(|span| span.name == "process it.add")
                    && spans.iter().any(|span| span.name == "apply chain")
            },
        )
        .await;
    let root = spans
        .iter()
        .find(|span| span.name == "apply chain")
        .expect("the root");
    let trace = of_trace(&spans, &root.trace_id_hex());
    let sent = span_of(&trace, "publish it.add", &first);
    let run = span_of(&trace, "process it.add", &second);
    // w1 made no span: the second step's message carried the first's traceparent on.
    assert_eq!(parent_of(run), sent.span_id_hex(), "{trace:#?}");
    assert!(trace.iter().all(|span| span.service != "w1"));
}
