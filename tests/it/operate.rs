//! `celerity inspect active | reserved | scheduled | ping` and `celerity control shutdown |
//! pool-grow | pool-shrink | add-consumer | cancel-consumer`, run as a user runs them, against
//! live worker processes.

use std::time::Duration;

use celerity::ApplyOptions;
use serde_json::Value;

use crate::support::{
    WorkerProcess, client, eventually, release_held, run_celerity as celerity, run_counts,
    runs_stream, server,
};

const WAIT: Duration = Duration::from_secs(20);

/// `celerity <args> --json`, which must succeed, as JSON.
fn json(url: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let output = celerity(url, &all);
    assert!(
        output.status.success(),
        "celerity {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

/// `celerity control <args>`'s one line of output for the worker it went to, and whether it
/// succeeded.
fn control(url: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec!["control"];
    all.extend_from_slice(args);
    let output = celerity(url, &all);
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// The ids of the tasks in `worker`'s `inspect active|reserved` reply.
fn held_ids(reply: &Value, worker: &str) -> Vec<String> {
    reply[worker]["tasks"]
        .as_array()
        .map(|tasks| {
            tasks
                .iter()
                .filter_map(|task| task["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The ids of two tasks sent to one free slot: the one that took it (once it runs) and the one
/// that waits. Fetched together, either may take the slot first.
async fn running_and_waiting(
    url: &str,
    first: &celerity::AsyncResult<String>,
    second: &celerity::AsyncResult<String>,
) -> (String, String) {
    let ids = [first.id().to_string(), second.id().to_string()];
    let ran = |counts: &std::collections::HashMap<String, usize>| {
        ids.iter().position(|id| counts.contains_key(id))
    };
    eventually("one of the two tasks runs", WAIT, || async {
        ran(&run_counts(url).await).is_some()
    })
    .await;
    // A run once recorded stays recorded.
    let running = ran(&run_counts(url).await).expect("a running task");
    let [a, b] = ids;
    if running == 0 { (a, b) } else { (b, a) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_lists_the_tasks_each_worker_runs_reserves_and_schedules() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    // One slot and credit for two: the second task waits for the slot, reserved.
    let _w1 = WorkerProcess::start(
        &url,
        "w1",
        &["-Q", "held", "-c", "1", "--prefetch-multiplier", "2"],
    );
    let _w2 = WorkerProcess::start(&url, "w2", &[]);
    let client = client(&url).await;
    let on_held = || ApplyOptions::new().queue("held");
    let first = celerity_it::hold
        .apply_async(&client, (), on_held())
        .await
        .unwrap();
    let second = celerity_it::hold
        .apply_async(&client, (), on_held())
        .await
        .unwrap();
    let (first_id, second_id) = running_and_waiting(&url, &first, &second).await;
    eventually("w1 reserves the other task", WAIT, || async {
        held_ids(&json(&url, &["inspect", "reserved"]), "w1") == [second_id.clone()]
    })
    .await;
    let active = json(&url, &["inspect", "active"]);
    assert_eq!(held_ids(&active, "w1"), [first_id.as_str()], "{active}");
    assert_eq!(held_ids(&active, "w2"), Vec::<String>::new(), "{active}");
    let task = &active["w1"]["tasks"][0];
    assert_eq!(task["task"], "it.hold");
    assert_eq!(task["queue"], "held");
    assert_eq!(task["args"], serde_json::json!([]));
    assert!(task["started_at_ms"].as_u64() >= task["received_at_ms"].as_u64());
    let text = celerity(&url, &["inspect", "active", "-d", "w1"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.starts_with("-> w1:"), "{text}");
    assert!(
        text.contains(&format!(
            "it.hold[{first_id}] args=[] kwargs={{}} (queue held"
        )),
        "{text}"
    );

    // A countdown waits in the delayed stream; the active scheduler lists it.
    let later = celerity_it::add
        .apply_async(
            &client,
            (1, 2),
            ApplyOptions::new().countdown(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    let scheduled = json(&url, &["inspect", "scheduled"]);
    let schedulers: Vec<&Value> = ["w1", "w2"]
        .iter()
        .map(|worker| &scheduled[*worker])
        .filter(|reply| reply["scheduler"] == true)
        .collect();
    assert_eq!(schedulers.len(), 1, "one active scheduler: {scheduled}");
    assert_eq!(schedulers[0]["total"], 1, "{scheduled}");
    let listed = &schedulers[0]["tasks"][0];
    assert_eq!(listed["id"], later.id().as_str());
    assert_eq!(listed["task"], "it.add");
    assert_eq!(listed["queue"], "default");
    let eta = listed["eta_ms"].as_u64().unwrap();
    let now = celerity::clock::now_ms();
    assert!(eta > now + 500_000 && eta <= now + 600_000, "{listed}");

    let ping = json(&url, &["inspect", "ping"]);
    assert_eq!(ping["w1"]["pong"], true, "{ping}");
    assert_eq!(ping["w2"]["queues"], serde_json::json!(["default"]));
    let refused = celerity(&url, &["inspect", "scheduled", "--limit", "5000"]);
    assert!(!refused.status.success());

    release_held(&client, &url, &first_id, WAIT).await;
    release_held(&client, &url, &second_id, WAIT).await;
    first.get(WAIT).await.unwrap();
    second.get(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_grows_and_shrinks_the_pool_of_a_running_worker() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let _w1 = WorkerProcess::start(&url, "w1", &["-c", "1"]);
    let client = client(&url).await;
    let first = celerity_it::hold.delay(&client).await.unwrap();
    let second = celerity_it::hold.delay(&client).await.unwrap();
    let (first_id, second_id) = running_and_waiting(&url, &first, &second).await;

    let (ok, text) = control(&url, &["pool-grow", "-d", "w1"]);
    assert!(ok, "{text}");
    assert!(text.contains(r#"w1: {"concurrency":2}"#), "{text}");
    // The new slot runs the second task while the first still holds its own.
    eventually("the second task runs beside the first", WAIT, || async {
        run_counts(&url).await.contains_key(&second_id)
    })
    .await;
    let mut active = held_ids(&json(&url, &["inspect", "active"]), "w1");
    active.sort();
    let mut both = vec![first_id.clone(), second_id.clone()];
    both.sort();
    assert_eq!(active, both);

    let (ok, text) = control(&url, &["pool-grow", "3"]);
    assert!(ok && text.contains(r#"{"concurrency":5}"#), "{text}");
    let (ok, text) = control(&url, &["pool-shrink", "4", "-d", "w1"]);
    assert!(ok && text.contains(r#"{"concurrency":1}"#), "{text}");
    let stats = json(&url, &["inspect", "stats"]);
    assert_eq!(stats["w1"]["concurrency"], 1, "{stats}");
    let (ok, text) = control(&url, &["pool-shrink", "-d", "w1"]);
    assert!(!ok, "the last slot stays: {text}");
    assert!(text.contains("would leave none"), "{text}");
    let (ok, text) = control(&url, &["pool-grow", "0"]);
    assert!(!ok && text.contains("0"), "{text}");

    release_held(&client, &url, &first_id, WAIT).await;
    release_held(&client, &url, &second_id, WAIT).await;
    first.get(WAIT).await.unwrap();
    second.get(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_adds_and_cancels_queue_consumers_and_shuts_a_worker_down() {
    let server = server();
    let url = server.url();
    let mut w1 = WorkerProcess::start(&url, "w1", &[]);
    let client = client(&url).await;
    let on_extra = || ApplyOptions::new().queue("extra");

    let (ok, text) = control(&url, &["add-consumer", "extra", "-d", "w1"]);
    assert!(ok, "{text}");
    assert!(
        text.contains(r#"w1: {"queues":["default","extra"]}"#),
        "{text}"
    );
    let ran = celerity_it::add
        .apply_async(&client, (2, 3), on_extra())
        .await
        .unwrap();
    assert_eq!(ran.get(WAIT).await.unwrap(), 5);
    let ping = json(&url, &["inspect", "active-queues"]);
    assert_eq!(ping["w1"]["queues"][1]["name"], "extra", "{ping}");

    let (ok, text) = control(&url, &["add-consumer", "extra"]);
    assert!(
        !ok && text.contains("already consumes queue extra"),
        "{text}"
    );
    let (ok, text) = control(&url, &["add-consumer", "not a queue"]);
    assert!(!ok && text.contains("refused"), "{text}");

    let (ok, text) = control(&url, &["cancel-consumer", "extra", "-d", "w1"]);
    assert!(ok, "{text}");
    assert!(text.contains(r#"w1: {"queues":["default"]}"#), "{text}");
    let (ok, text) = control(&url, &["cancel-consumer", "nowhere"]);
    assert!(
        !ok && text.contains("does not consume queue nowhere"),
        "{text}"
    );
    // Sent while nobody consumes it, it waits; consumed again, it runs.
    let waiting = celerity_it::add
        .apply_async(&client, (4, 5), on_extra())
        .await
        .unwrap();
    let status = json(&url, &["status"]);
    assert_eq!(
        status["workers"][0]["queues"],
        serde_json::json!(["default"])
    );
    eventually("the cancelled queue has drained", WAIT, || async {
        control(&url, &["add-consumer", "extra", "-d", "w1"]).0
    })
    .await;
    assert_eq!(waiting.get(WAIT).await.unwrap(), 9);

    let (ok, text) = control(&url, &["shutdown", "-d", "w1"]);
    assert!(ok && text.contains(r#"w1: {"shutdown":"warm"}"#), "{text}");
    let exit = w1.wait_exit(WAIT);
    assert!(
        exit.success(),
        "a warm shutdown ends the worker cleanly: {exit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_out_of_range_requests_get_typed_refusals() {
    let server = server();
    let url = server.url();
    let _w1 = WorkerProcess::start(&url, "w1", &["-c", "1"]);
    let nats = async_nats::connect(&url).await.expect("a connection");
    let ask = |body: &'static [u8]| {
        let nats = nats.clone();
        async move {
            let answer = nats
                .request("celerity.control.w1", body.into())
                .await
                .expect("the worker answers");
            serde_json::from_slice::<Value>(&answer.payload).expect("a JSON reply")
        }
    };
    for (request, code, says) in [
        (&b"not json"[..], "malformed", "malformed control request"),
        (
            br#"{"v":1,"command":"reboot"}"#,
            "unknown_command",
            "unknown control command",
        ),
        (
            br#"{"v":2,"command":"ping"}"#,
            "unsupported_version",
            "version 2",
        ),
        (br#"{"v":1,"command":"add_consumer"}"#, "malformed", "queue"),
        (
            br#"{"v":1,"command":"pool_grow","n":0}"#,
            "invalid_argument",
            "above 0",
        ),
        (
            br#"{"v":1,"command":"scheduled","limit":5000}"#,
            "invalid_argument",
            "at most 1000",
        ),
        (
            br#"{"v":1,"command":"add_consumer","queue":"no spaces"}"#,
            "invalid_argument",
            "queue",
        ),
        (
            br#"{"v":1,"command":"pool_shrink","n":1}"#,
            "refused",
            "would leave none",
        ),
        (
            br#"{"v":1,"command":"cancel_consumer","queue":"nowhere"}"#,
            "refused",
            "does not consume",
        ),
    ] {
        let reply = ask(request).await;
        let shown = String::from_utf8_lossy(request);
        assert_eq!(reply["ok"], false, "{shown}: {reply}");
        assert_eq!(reply["code"], code, "{shown}: {reply}");
        let error = reply["error"].as_str().expect("a reason");
        assert!(error.contains(says), "{shown}: {error}");
    }
    // The worker is still there and answers.
    assert_eq!(ask(br#"{"v":1,"command":"ping"}"#).await["ok"], true);
}
