//! The dashboard's routes that `dashboard.rs` leaves out, over real HTTP against real nats-server
//! processes and a real worker: a chain's and a chord's canvas graph, the live stream of
//! server-sent events, a start while NATS cannot be reached and the reconnect after it, and the
//! login form's session cookie with the CSRF checks it still needs.
//!
//! Not for the task, worker and queue JSON or the filters: `dashboard.rs` checks those.

use std::time::{Duration, Instant};

use celerity::Chord;
use celerity_dashboard::Credentials;
use celerity_it::{add, extract, hold, join, load, say, transform};
use celerity_testkit::NatsServer;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use crate::dashboard::{agent, call, owned, start};
use crate::support::{WorkerProcess, client, publish_json, release_held, runs_stream, server};

const WAIT: Duration = Duration::from_secs(20);
/// The password of the `admin` user the login test signs in as.
const ADMIN_PASSWORD: &str = "s3cret";

/// Reads `path` until it answers 200 with a body `ready` accepts, and returns that body.
async fn read_when(
    base: &str,
    path: &str,
    what: &str,
    mut ready: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = call(base, "GET", path, &[], None).await;
        if answer.status == 200 && ready(&answer.body) {
            return answer.body;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened within {WAIT:?}; GET {path} last answered {} {}",
            answer.status,
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The node of task `id` in a canvas answer.
fn node<'a>(canvas: &'a Value, id: &str) -> &'a Value {
    canvas["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|node| node["id"] == id))
        .unwrap_or_else(|| panic!("the canvas has no node {id}: {canvas:#}"))
}

/// Every node's state, in the canvas's order.
fn states(canvas: &Value) -> Vec<&str> {
    canvas["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|node| node["state"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chains_canvas_links_its_steps_in_order_and_unknown_roots_are_typed_errors() {
    let server = server();
    let url = server.url();
    let _worker = WorkerProcess::start(&url, "canvas-w1", &["-c", "2"]);
    let client = client(&url).await;
    let (dashboard, base) = start(&url, |_| {}).await;

    let loaded = celerity::chain![
        extract.s((3,)),
        transform.s(()),
        load.s(("warehouse".to_owned(),))
    ]
    .apply_async(&client)
    .await
    .expect("the chain is sent");
    assert_eq!(loaded.get(WAIT).await.unwrap(), "333 -> warehouse");
    let transformed = loaded.parent().expect("load has a parent");
    let extracted = transformed.parent().expect("transform has a parent");
    let steps = [extracted.id(), transformed.id(), loaded.id()].map(|id| id.to_string());

    // The chain's root is its first step.
    let root = &steps[0];
    let canvas = read_when(
        &base,
        &format!("/api/canvases/{root}"),
        "every step of the chain shows SUCCESS in its canvas",
        |canvas| states(canvas) == ["SUCCESS"; 3],
    )
    .await;
    assert_eq!(canvas["root_id"], root.as_str());
    assert_eq!(canvas["truncated"], false);
    assert_eq!(canvas["chords"], json!([]));
    let names: Vec<&str> = steps
        .iter()
        .map(|id| node(&canvas, id)["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["etl.extract", "etl.transform", "etl.load"]);
    assert_eq!(node(&canvas, &steps[0])["parent_id"], Value::Null);
    let mut edges: Vec<(&str, &str)> = canvas["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| (edge["from"].as_str().unwrap(), edge["to"].as_str().unwrap()))
        .collect();
    edges.sort_unstable();
    let mut expected = vec![(&*steps[0], &*steps[1]), (&*steps[1], &*steps[2])];
    expected.sort_unstable();
    assert_eq!(
        edges, expected,
        "each step is drawn from the one that sent it"
    );

    let unknown = call(
        &base,
        "GET",
        "/api/canvases/0190a5b2-7c1e-7f00-8000-00000000dead",
        &[],
        None,
    )
    .await;
    assert_eq!(
        (unknown.status, unknown.body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{:?}",
        unknown.body
    );
    assert!(
        unknown.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("0190a5b2-7c1e-7f00-8000-00000000dead")
    );
    let malformed = call(&base, "GET", "/api/canvases/not%20an%20id", &[], None).await;
    assert_eq!(
        (malformed.status, malformed.body["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{:?}",
        malformed.body
    );
    dashboard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chords_canvas_counts_its_header_done_of_its_size_until_the_body_runs() {
    let server = server();
    let url = server.url();
    runs_stream(&url).await;
    let _worker = WorkerProcess::start(&url, "canvas-w2", &["-c", "4"]);
    let client = client(&url).await;
    let (dashboard, base) = start(&url, |_| {}).await;

    // Two members end at once; the third holds until the test releases it.
    let body = Chord::new(
        [
            say.s(("a".to_owned(),)),
            say.s(("b".to_owned(),)),
            hold.s(()),
        ],
        join.s(()),
    )
    .apply_async(&client)
    .await
    .expect("the chord is sent");
    let held = read_when(
        &base,
        "/api/tasks?name=it.hold&state=STARTED",
        "the held member is listed as STARTED",
        |page| page["total"] == 1,
    )
    .await;
    let held = &held["tasks"][0];
    let (held_id, chord_id) = (
        held["id"].as_str().unwrap().to_owned(),
        held["chord_id"].as_str().unwrap().to_owned(),
    );
    // The chord's root is the chord (its header's group).
    assert_eq!(held["root_id"], chord_id.as_str());
    let path = format!("/api/canvases/{chord_id}");
    let running = read_when(&base, &path, "2 of 3 header members done", |canvas| {
        canvas["chords"][0]["done"] == 2
    })
    .await;
    assert_eq!(
        running["chords"],
        json!([{"id": chord_id, "size": 3, "done": 2, "failed": 0, "body": body.id().as_str()}]),
        "the chord's size comes from its stored definition"
    );
    // Nodes come in the order the dashboard first heard of them; members are named by index.
    let members: Vec<(&Value, &Value)> = (0..3)
        .map(|index| {
            let member = node(&running, &format!("{chord_id}-{index}"));
            assert_eq!(member["chord_id"], chord_id.as_str(), "{member}");
            (&member["name"], &member["state"])
        })
        .collect();
    assert_eq!(
        members,
        [
            (&json!("it.say"), &json!("SUCCESS")),
            (&json!("it.say"), &json!("SUCCESS")),
            (&json!("it.hold"), &json!("STARTED")),
        ]
    );
    assert_eq!(held_id, format!("{chord_id}-2"));
    assert_eq!(running["nodes"].as_array().map(Vec::len), Some(3));
    assert!(
        running["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|node| node["id"] != body.id().as_str()),
        "the body is not sent before the header ends: {running:#}"
    );

    release_held(&client, &url, &held_id, WAIT).await;
    assert_eq!(
        body.get(WAIT).await.expect("the body runs"),
        format!("a,b,{held_id}")
    );
    let done = read_when(
        &base,
        &path,
        "the header and the body show SUCCESS in the canvas",
        |canvas| states(canvas) == ["SUCCESS"; 4],
    )
    .await;
    assert_eq!(done["chords"][0]["done"], 3);
    assert_eq!(done["chords"][0]["size"], 3);
    let body_node = node(&done, body.id().as_str());
    assert_eq!(
        (&body_node["name"], &body_node["parent_id"]),
        (&json!("it.join"), &json!(chord_id))
    );
    dashboard.stop().await;
}

/// One server-sent event: its name and its JSON data.
#[derive(Debug)]
struct SseEvent {
    name: String,
    data: Value,
}

/// `GET /api/stream` read as it arrives over a raw TCP connection (HTTP/1.1, chunked bodies
/// decoded), as a browser's `EventSource` reads it.
struct LiveStream {
    status: u16,
    headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    chunked: bool,
    /// Decoded bytes not yet taken as events.
    pending: Vec<u8>,
}

impl LiveStream {
    /// Sends the request and reads the status line and headers.
    async fn open(base: &str, path: &str, headers: &[(&str, &str)]) -> Self {
        let address = base.trim_start_matches("http://");
        let mut stream = TcpStream::connect(address)
            .await
            .expect("the dashboard accepts a connection");
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("the request is sent");
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        read_line(&mut reader, &mut status_line).await;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            read_line(&mut reader, &mut line).await;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let chunked = headers
            .iter()
            .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
        Self {
            status,
            headers,
            reader,
            chunked,
            pending: Vec::new(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, value)| value.as_str())
    }

    /// More body bytes into `pending`; false at the end of the body.
    async fn read_more(&mut self) -> bool {
        if !self.chunked {
            let mut buffer = [0u8; 4096];
            let n_read = self
                .reader
                .read(&mut buffer)
                .await
                .expect("the stream's body reads");
            self.pending.extend_from_slice(&buffer[..n_read]);
            return n_read > 0;
        }
        let mut size_line = String::new();
        read_line(&mut self.reader, &mut size_line).await;
        let size_text = size_line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_text, 16)
            .unwrap_or_else(|_| panic!("not a chunk size: {size_line:?}"));
        if size == 0 {
            return false;
        }
        let mut chunk = vec![0u8; size + 2];
        self.reader
            .read_exact(&mut chunk)
            .await
            .expect("a whole chunk and its CRLF");
        self.pending.extend_from_slice(&chunk[..size]);
        true
    }

    /// The next event with data (keepalive comments are skipped), or `None` when the stream ends.
    async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.pending.windows(2).position(|pair| pair == b"\n\n") {
                let block: Vec<u8> = self.pending.drain(..end + 2).collect();
                let block = String::from_utf8(block).expect("an SSE event is UTF-8");
                if let Some(event) = parse_event(&block) {
                    return Some(event);
                }
            }
            if !self.read_more().await {
                return None;
            }
        }
    }

    /// Reads events until one `wanted` accepts, and returns it; says what never came.
    async fn wait_for(
        &mut self,
        what: &str,
        mut wanted: impl FnMut(&SseEvent) -> bool,
    ) -> SseEvent {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(WAIT, async {
            loop {
                let event = self.next_event().await?;
                if wanted(&event) {
                    return Some(event);
                }
                seen.push(event.name);
            }
        })
        .await;
        match found {
            Ok(Some(event)) => event,
            Ok(None) => panic!("the stream ended before {what}; events seen: {seen:?}"),
            Err(_) => panic!("{what} never came within {WAIT:?}; events seen: {seen:?}"),
        }
    }
}

/// One line, with a deadline: a stream that stalls fails the test instead of hanging it.
async fn read_line(reader: &mut BufReader<TcpStream>, line: &mut String) {
    tokio::time::timeout(WAIT, reader.read_line(line))
        .await
        .expect("the dashboard sends the next line in time")
        .expect("the dashboard's answer reads");
}

/// An `event: name` / `data: json` block; `None` for a comment-only block (a keepalive).
fn parse_event(block: &str) -> Option<SseEvent> {
    let mut name = "message".to_owned();
    let mut data: Option<String> = None;
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            name = value.trim().to_owned();
        } else if let Some(value) = line.strip_prefix("data:") {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut data {
                Some(text) => {
                    text.push('\n');
                    text.push_str(value);
                }
                None => data = Some(value.to_owned()),
            }
        }
    }
    let data = data?;
    let data = serde_json::from_str(&data)
        .unwrap_or_else(|error| panic!("the data of event {name} is not JSON ({error}): {data}"));
    Some(SseEvent { name, data })
}

/// Whether a `tasks` event lists task `id` in `state`.
fn lists(event: &SseEvent, id: &str, state: &str) -> bool {
    event.name == "tasks"
        && event.data["tasks"].as_array().is_some_and(|tasks| {
            tasks
                .iter()
                .any(|task| task["id"] == id && task["state"] == state)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_needs_auth_and_pushes_a_task_sent_after_it_opened() {
    let server = server();
    let url = server.url();
    let _worker = WorkerProcess::start(&url, "live-w1", &["-c", "2"]);
    let client = client(&url).await;
    let (dashboard, base) = start(&url, |config| {
        let mut credentials = Credentials::default();
        credentials.add_token("live-tok").unwrap();
        config.credentials = credentials;
    })
    .await;

    let anonymous = call(&base, "GET", "/api/stream", &[], None).await;
    assert_eq!(
        (anonymous.status, anonymous.body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let refused =
        LiveStream::open(&base, "/api/stream", &[("Authorization", "Bearer wrong")]).await;
    assert_eq!(refused.status, 401, "a wrong token opens no stream");

    let mut live = LiveStream::open(
        &base,
        "/api/stream",
        &[("Authorization", "Bearer live-tok")],
    )
    .await;
    assert_eq!(live.status, 200);
    assert_eq!(live.header("content-type"), Some("text/event-stream"));
    assert_eq!(live.header("cache-control"), Some("no-cache"));
    let hello = live
        .next_event()
        .await
        .expect("the stream opens with an event");
    assert_eq!(hello.name, "hello", "{hello:?}");
    assert!(
        hello.data["overview"]["throughput"]["points"].is_array(),
        "hello carries the overview with its chart: {}",
        hello.data
    );

    let sent = add.delay(&client, 20, 22).await.expect("add is sent");
    let id = sent.id().to_string();
    let succeeded = live
        .wait_for("a tasks event listing the task as SUCCESS", |event| {
            lists(event, &id, "SUCCESS")
        })
        .await;
    assert_eq!(succeeded.data["dropped"], 0);
    let summary = succeeded.data["tasks"]
        .as_array()
        .and_then(|tasks| tasks.iter().find(|task| task["id"] == id.as_str()))
        .expect("the task's summary");
    assert_eq!(
        (&summary["name"], &summary["worker"]),
        (&json!("it.add"), &json!("live-w1"))
    );
    let overview = live
        .wait_for("an overview event that counts the task", |event| {
            event.name == "overview" && event.data["tasks"]["by_state"]["SUCCESS"] == 1
        })
        .await;
    assert_eq!(overview.data["nats"]["connected"], true);
    assert!(
        overview.data.get("throughput").is_none(),
        "a live overview leaves the chart out: {}",
        overview.data
    );
    live.wait_for("a workers event with the worker", |event| {
        event.name == "workers"
            && event.data["workers"]
                .as_array()
                .is_some_and(|workers| workers.iter().any(|worker| worker["hostname"] == "live-w1"))
    })
    .await;
    assert_eq!(sent.get(WAIT).await.unwrap(), 42);
    dashboard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_of_a_task_page_pushes_that_tasks_detail_and_record() {
    let server = server();
    let url = server.url();
    let _worker = WorkerProcess::start(&url, "live-w2", &["-c", "2"]);
    let client = client(&url).await;
    let (dashboard, base) = start(&url, |_| {}).await;

    // The id is chosen before the task exists, as a page opened on a task's link does.
    let id = "live-page-task-1";
    let mut live = LiveStream::open(&base, &format!("/api/stream?task={id}"), &[]).await;
    assert_eq!(live.status, 200);
    live.wait_for("the hello event", |event| event.name == "hello")
        .await;
    publish_json(&client, "it.add", id, &json!({"args": [1, 2]})).await;
    let detail = live
        .wait_for("a task event with the task's SUCCESS record", |event| {
            event.name == "task" && event.data["task"]["record"]["state"] == "SUCCESS"
        })
        .await;
    let task = &detail.data["task"];
    assert_eq!(
        (&task["id"], &task["name"], &task["record"]["result"]),
        (&json!(id), &json!("it.add"), &json!(3)),
        "{task:#}"
    );
    assert!(task["timeline"].is_array(), "{task:#}");
    dashboard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_started_without_nats_answers_503_then_reconnects_by_itself() {
    let port = celerity_testkit::reserve_port().expect("a free port");
    let url = format!("nats://127.0.0.1:{port}");
    let (dashboard, base) = start(&url, |_| {}).await;

    let overview = call(&base, "GET", "/api/overview", &[], None).await;
    assert_eq!(
        overview.status, 200,
        "what the dashboard holds stays readable"
    );
    assert_eq!(overview.body["nats"]["connected"], false);
    let csrf = call(&base, "GET", "/api/session", &[], None).await.body["csrf"]
        .as_str()
        .expect("the session's CSRF token")
        .to_owned();
    let needs_nats = [
        ("GET", "/api/dead-letters", vec![]),
        (
            "GET",
            "/api/tasks/0190a5b2-7c1e-7f00-8000-00000000beef",
            vec![],
        ),
        (
            "POST",
            "/api/tasks/0190a5b2-7c1e-7f00-8000-00000000beef/revoke",
            vec![("X-Celerity-Csrf", csrf.as_str())],
        ),
    ];
    for (method, path, headers) in &needs_nats {
        let down = call(&base, method, path, headers, None).await;
        assert_eq!(
            (down.status, down.body["error"]["code"].as_str()),
            (503, Some("nats_unavailable")),
            "{method} {path}: {:?}",
            down.body
        );
        let message = down.body["error"]["message"].as_str().unwrap();
        assert!(
            !message.contains("panicked") && !message.contains(".rs:") && !message.contains('\n'),
            "one sentence, no stack trace: {message}"
        );
    }

    let _server = tokio::task::spawn_blocking(move || NatsServer::builder().port(port).start())
        .await
        .expect("the server's start thread")
        .expect("nats-server starts on the reserved port");
    read_when(
        &base,
        "/api/overview",
        "the dashboard connects",
        |overview| overview["nats"]["connected"] == true,
    )
    .await;
    let letters = read_when(
        &base,
        "/api/dead-letters",
        "dead letters answer 200",
        |_| true,
    )
    .await;
    assert_eq!(letters["total"], 0);

    let _worker = WorkerProcess::start(&url, "late-w1", &[]);
    let client = client(&url).await;
    let sent = add.delay(&client, 2, 3).await.expect("add is sent");
    assert_eq!(sent.get(WAIT).await.unwrap(), 5);
    let id = sent.id().to_string();
    let task = read_when(
        &base,
        &format!("/api/tasks/{id}"),
        "the task sent after the reconnect shows its events",
        |task| {
            task["timeline"]
                .as_array()
                .is_some_and(|timeline| !timeline.is_empty())
                && task["state"] == "SUCCESS"
        },
    )
    .await;
    assert_eq!(task["worker"], "late-w1");
    dashboard.stop().await;
}

/// An HTTP exchange with its headers kept: the login form's answer is a redirect and a cookie.
struct Reply {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
}

/// `POST path` with a form body (`fields`) or none, not following redirects.
async fn post_form(
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
    fields: &[(&str, &str)],
) -> Reply {
    let url = format!("{base}{path}");
    let (headers, fields) = (owned(headers), owned(fields));
    tokio::task::spawn_blocking(move || {
        let agent = agent();
        let mut request = agent.post(&url);
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let response = request
            .send_form(
                fields
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str())),
            )
            .expect("the dashboard answers");
        let header = |name: &str| {
            response
                .headers()
                .get_all(name)
                .iter()
                .filter_map(|value| value.to_str().ok().map(str::to_owned))
                .collect::<Vec<String>>()
        };
        Reply {
            status: response.status().as_u16(),
            location: header("location").into_iter().next(),
            set_cookies: header("set-cookie"),
        }
    })
    .await
    .expect("the request's thread")
}

/// The session id a login's `Set-Cookie` sets, after checking the cookie's attributes.
fn session_cookie(reply: &Reply) -> String {
    let [cookie] = reply.set_cookies.as_slice() else {
        panic!("one cookie is set: {:?}", reply.set_cookies);
    };
    let mut parts = cookie.split(';').map(str::trim);
    let value = parts
        .next()
        .and_then(|pair| pair.strip_prefix("celerity_session="))
        .unwrap_or_else(|| panic!("not the session cookie: {cookie}"));
    let attributes: Vec<String> = parts.map(str::to_ascii_lowercase).collect();
    for wanted in ["httponly", "samesite=strict", "path=/"] {
        assert!(
            attributes.iter().any(|attribute| attribute == wanted),
            "the session cookie is {wanted}: {cookie}"
        );
    }
    assert_eq!(value.len(), 64, "a 32-byte random session id: {cookie}");
    format!("celerity_session={value}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_form_sets_a_session_cookie_that_controls_still_need_the_csrf_token_for() {
    let server = server();
    let url = server.url();
    let (dashboard, base) = start(&url, |config| {
        let mut credentials = Credentials::default();
        credentials
            .add_user(&format!("admin:{ADMIN_PASSWORD}"))
            .unwrap();
        credentials.add_token("form-tok").unwrap();
        config.credentials = credentials;
    })
    .await;
    let same_site = [("Origin", base.as_str())];

    let wrong = post_form(
        &base,
        "/login",
        &same_site,
        &[("username", "admin"), ("password", "wrong")],
    )
    .await;
    assert_eq!(
        (wrong.status, wrong.location.as_deref()),
        (303, Some("/login#failed"))
    );
    assert!(wrong.set_cookies.is_empty(), "{:?}", wrong.set_cookies);
    let right_password = [("username", "admin"), ("password", ADMIN_PASSWORD)];
    let elsewhere = post_form(
        &base,
        "/login",
        &[("Origin", "http://evil.example")],
        &right_password,
    )
    .await;
    assert_eq!(
        (elsewhere.status, elsewhere.location.as_deref()),
        (303, Some("/login#failed")),
        "another site cannot log a browser in"
    );
    assert!(
        elsewhere.set_cookies.is_empty(),
        "{:?}",
        elsewhere.set_cookies
    );

    let logged_in = post_form(&base, "/login", &same_site, &right_password).await;
    assert_eq!(
        (logged_in.status, logged_in.location.as_deref()),
        (303, Some("/"))
    );
    let cookie = session_cookie(&logged_in);
    let with_cookie = [("Cookie", cookie.as_str())];
    let session = call(&base, "GET", "/api/session", &with_cookie, None).await;
    assert_eq!(session.status, 200, "{:?}", session.body);
    assert_eq!(
        (
            session.body["user"].as_str(),
            session.body["auth"].as_bool()
        ),
        (Some("admin"), Some(true))
    );
    let csrf = session.body["csrf"].as_str().unwrap().to_owned();

    let revoke = "/api/tasks/0190a5b2-7c1e-7f00-8000-00000000f00d/revoke";
    let no_token = call(&base, "POST", revoke, &with_cookie, None).await;
    assert_eq!(
        (no_token.status, no_token.body["error"]["code"].as_str()),
        (403, Some("csrf")),
        "a cookie alone does not allow a control"
    );
    let wrong_token = [("Cookie", cookie.as_str()), ("X-Celerity-Csrf", "0000")];
    assert_eq!(
        call(&base, "POST", revoke, &wrong_token, None).await.status,
        403
    );
    let cross_site = [
        ("Cookie", cookie.as_str()),
        ("X-Celerity-Csrf", csrf.as_str()),
        ("Origin", "http://evil.example"),
    ];
    let from_elsewhere = call(&base, "POST", revoke, &cross_site, None).await;
    assert_eq!(
        (
            from_elsewhere.status,
            from_elsewhere.body["error"]["code"].as_str()
        ),
        (403, Some("csrf"))
    );
    let allowed = [
        ("Cookie", cookie.as_str()),
        ("X-Celerity-Csrf", csrf.as_str()),
    ];
    // Past the CSRF check, a revoke on a server no worker or client has set up is a typed 409.
    let unprovisioned = call(&base, "POST", revoke, &allowed, None).await;
    assert_eq!(
        (
            unprovisioned.status,
            unprovisioned.body["error"]["code"].as_str()
        ),
        (409, Some("not_set_up")),
        "{:?}",
        unprovisioned.body
    );
    let limited = call(
        &base,
        "POST",
        "/api/rate-limits",
        &allowed,
        Some(json!({"task": "it.metered", "rate": "5/s"})),
    )
    .await;
    assert_eq!(limited.status, 200, "{:?}", limited.body);
    assert_eq!(limited.body["replies"], json!([]), "no worker runs");

    let logged_out = post_form(&base, "/logout", &with_cookie, &[]).await;
    assert_eq!(
        (logged_out.status, logged_out.location.as_deref()),
        (303, Some("/login"))
    );
    let [removal] = logged_out.set_cookies.as_slice() else {
        panic!("logout clears the cookie: {:?}", logged_out.set_cookies);
    };
    assert!(
        removal.starts_with("celerity_session=;")
            && removal.to_ascii_lowercase().contains("max-age=0"),
        "{removal}"
    );
    let after = call(&base, "GET", "/api/session", &with_cookie, None).await;
    assert_eq!(
        (after.status, after.body["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "the old cookie no longer lets anyone in"
    );

    let by_token = post_form(&base, "/login", &[], &[("token", "form-tok")]).await;
    let token_cookie = session_cookie(&by_token);
    let token_session = call(
        &base,
        "GET",
        "/api/session",
        &[("Cookie", token_cookie.as_str())],
        None,
    )
    .await;
    assert_eq!(token_session.body["user"], "token");
    dashboard.stop().await;
}
