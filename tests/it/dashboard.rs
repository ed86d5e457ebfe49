//! The dashboard's JSON API over HTTP, against a real worker process: tasks appear from the
//! events stream with their arguments, a task's page reads its result record, filters and ids are
//! checked, auth and CSRF refuse what they must, `--read-only` refuses controls, a rate limit set
//! from the API reaches the worker, and a restarted dashboard has its history back.

use std::time::Duration;

use celerity_dashboard::{Credentials, Dashboard, DashboardConfig};
use serde_json::{Value, json};

use crate::support::{WorkerProcess, client, eventually, server};

const WAIT: Duration = Duration::from_secs(20);

/// One HTTP exchange: status and JSON body (`Value::Null` when the body is not JSON).
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

/// Owned copies of (name, value) pairs, to move into a blocking request.
pub(crate) fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

/// An HTTP agent that returns every status as an answer and follows no redirect.
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

/// Sends a request to the dashboard at `base` (`http://127.0.0.1:port`).
pub(crate) async fn call(
    base: &str,
    method: &'static str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    let url = format!("{base}{path}");
    let headers = owned(headers);
    tokio::task::spawn_blocking(move || {
        let agent = agent();
        let mut response = match method {
            "GET" => {
                let mut request = agent.get(&url);
                for (name, value) in &headers {
                    request = request.header(name, value);
                }
                request.call()
            }
            _ => {
                let mut request = agent.post(&url);
                for (name, value) in &headers {
                    request = request.header(name, value);
                }
                request
                    .header("Content-Type", "application/json")
                    .send(body.unwrap_or(json!({})).to_string())
            }
        }
        .expect("the dashboard answers");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    })
    .await
    .expect("the request's thread")
}

pub(crate) async fn start(
    url: &str,
    configure: impl FnOnce(&mut DashboardConfig),
) -> (Dashboard, String) {
    let mut config = DashboardConfig::new(celerity::NatsConfig::new(url));
    config.port = 0;
    configure(&mut config);
    let dashboard = Dashboard::start(config)
        .await
        .expect("the dashboard starts");
    let base = format!("http://{}", dashboard.local_addr());
    (dashboard, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_tasks_and_workers_from_nats_and_refuses_bad_input() {
    let server = server();
    let url = server.url();
    let _worker = WorkerProcess::start(&url, "dash-w1", &["-c", "2"]);
    let client = client(&url).await;
    let (dashboard, base) = start(&url, |_| {}).await;

    let sent = celerity_it::add.delay(&client, 20, 22).await.unwrap();
    assert_eq!(sent.get(WAIT).await.unwrap(), 42);
    let id = sent.id().to_string();
    eventually("the task is listed as SUCCESS", WAIT, || async {
        let page = call(&base, "GET", "/api/tasks?state=SUCCESS", &[], None).await;
        page.body["tasks"]
            .as_array()
            .is_some_and(|tasks| tasks.iter().any(|task| task["id"] == id.as_str()))
    })
    .await;
    let task = call(&base, "GET", &format!("/api/tasks/{id}"), &[], None).await;
    assert_eq!(task.status, 200);
    assert_eq!(task.body["name"], "it.add");
    assert_eq!(task.body["worker"], "dash-w1");
    assert_eq!(task.body["args"], "[20,22]");
    assert_eq!(task.body["record"]["result"], 42);
    let kinds: Vec<&str> = task.body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item["type"].as_str())
        .collect();
    assert!(
        kinds.contains(&"task-started") && kinds.contains(&"task-succeeded"),
        "{kinds:?}"
    );

    eventually("the worker is online", WAIT, || async {
        let workers = call(&base, "GET", "/api/workers", &[], None).await;
        workers.body["workers"].as_array().is_some_and(|workers| {
            workers
                .iter()
                .any(|worker| worker["hostname"] == "dash-w1" && worker["online"] == true)
        })
    })
    .await;

    let bad_state = call(&base, "GET", "/api/tasks?state=DONE", &[], None).await;
    assert_eq!(
        (bad_state.status, bad_state.body["error"]["code"].as_str()),
        (400, Some("invalid_filter"))
    );
    assert!(
        bad_state.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("state")
    );
    let bad_time = call(&base, "GET", "/api/tasks?since=yesterday", &[], None).await;
    assert_eq!(bad_time.status, 400);
    let unknown = call(
        &base,
        "GET",
        "/api/tasks/0190a5b2-7c1e-7f00-8000-00000000dead",
        &[],
        None,
    )
    .await;
    assert_eq!(
        (unknown.status, unknown.body["error"]["code"].as_str()),
        (404, Some("unknown_task"))
    );
    let malformed = call(&base, "GET", "/api/tasks/not%20an%20id", &[], None).await;
    assert_eq!(malformed.status, 400, "{:?}", malformed.body);
    let no_route = call(&base, "GET", "/api/nope", &[], None).await;
    assert_eq!(
        (no_route.status, no_route.body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // Controls need the CSRF token of /api/session.
    let refused = call(
        &base,
        "POST",
        "/api/rate-limits",
        &[],
        Some(json!({"task": "it.limited", "rate": "5/s"})),
    )
    .await;
    assert_eq!(
        (refused.status, refused.body["error"]["code"].as_str()),
        (403, Some("csrf"))
    );
    let session = call(&base, "GET", "/api/session", &[], None).await;
    let csrf = session.body["csrf"].as_str().unwrap().to_owned();
    let csrf_header = [("X-Celerity-Csrf", csrf.as_str())];
    let cross_site = [
        ("X-Celerity-Csrf", csrf.as_str()),
        ("Origin", "http://evil.example"),
    ];
    let from_elsewhere = call(
        &base,
        "POST",
        "/api/rate-limits",
        &cross_site,
        Some(json!({"task": "it.limited", "rate": "5/s"})),
    )
    .await;
    assert_eq!(from_elsewhere.status, 403);
    let bad_rate = call(
        &base,
        "POST",
        "/api/rate-limits",
        &csrf_header,
        Some(json!({"task": "it.limited", "rate": "fast"})),
    )
    .await;
    assert_eq!(
        (bad_rate.status, bad_rate.body["error"]["code"].as_str()),
        (400, Some("invalid_argument"))
    );
    let set = call(
        &base,
        "POST",
        "/api/rate-limits",
        &csrf_header,
        Some(json!({"task": "it.limited", "rate": "5/s", "scope": "worker", "worker": "dash-w1"})),
    )
    .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    assert_eq!(set.body["replies"][0]["ok"], true, "{:?}", set.body);
    let registered = client
        .control()
        .send(
            celerity_proto::ControlCommand::Registered,
            Some("dash-w1"),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    let limits = &registered[0].result.as_ref().unwrap()["rate_limits"];
    assert_eq!(
        limits["it.limited"], "5/s",
        "the worker applies it: {limits}"
    );
    dashboard.stop().await;

    // A new dashboard reads the history back from NATS.
    let (again, base) = start(&url, |_| {}).await;
    eventually(
        "the restarted dashboard has the task back",
        WAIT,
        || async {
            call(&base, "GET", &format!("/api/tasks/{id}"), &[], None)
                .await
                .body["state"]
                == "SUCCESS"
        },
    )
    .await;
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_read_only_refuse_what_they_must() {
    let server = server();
    let url = server.url();
    let (dashboard, base) = start(&url, |config| {
        let mut credentials = Credentials::default();
        credentials.add_user("admin:s3cret").unwrap();
        credentials.add_token("tok-123").unwrap();
        config.credentials = credentials;
        config.read_only = true;
    })
    .await;
    let anonymous = call(&base, "GET", "/api/workers", &[], None).await;
    assert_eq!(
        (anonymous.status, anonymous.body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let page = call(&base, "GET", "/", &[], None).await;
    assert_eq!(page.status, 303, "a page without login goes to /login");
    let wrong = call(
        &base,
        "GET",
        "/api/workers",
        &[("Authorization", "Basic YWRtaW46d3Jvbmc=")],
        None,
    )
    .await;
    assert_eq!(wrong.status, 401);
    // admin:s3cret
    let basic = [("Authorization", "Basic YWRtaW46czNjcmV0")];
    let right = call(&base, "GET", "/api/session", &basic, None).await;
    assert_eq!(right.status, 200);
    assert_eq!(
        (
            right.body["user"].as_str(),
            right.body["read_only"].as_bool()
        ),
        (Some("admin"), Some(true))
    );
    assert!(
        !right.body.to_string().contains("s3cret"),
        "no secret in an answer"
    );
    let bearer = [("Authorization", "Bearer tok-123")];
    assert_eq!(
        call(&base, "GET", "/api/overview", &bearer, None)
            .await
            .status,
        200
    );
    let control = call(
        &base,
        "POST",
        "/api/tasks/0190a5b2-7c1e-7f00-8000-000000000001/revoke",
        &bearer,
        None,
    )
    .await;
    assert_eq!(
        (control.status, control.body["error"]["code"].as_str()),
        (403, Some("read_only"))
    );
    let login_page = call(&base, "GET", "/login", &[], None).await;
    assert_eq!(login_page.status, 200, "the login page is public");
    dashboard.stop().await;

    // Anything but loopback needs a credential.
    let mut open = DashboardConfig::new(celerity::NatsConfig::new(&url));
    open.bind = "0.0.0.0".parse().unwrap();
    open.port = 0;
    let error = Dashboard::start(open).await.unwrap_err();
    assert!(error.to_string().contains("--basic-auth"), "{error}");
}
