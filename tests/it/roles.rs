//! Least-privilege roles: the permission sets shipped in `docs/permissions.conf`, pasted as they
//! are into a server with accounts and users. Each role does what it is for (a producer sends
//! tasks and reads results, a worker runs them, an operator controls workers, the dashboard
//! reads), and what it is not allowed comes back as a typed error within a second, not a hang.

use std::time::{Duration, Instant};

use celerity::{
    Client, ConnectError, ControlError, EnqueueError, NatsConfig, RateLimitChange, RateLimitScope,
    ResultError, RevokeError, RevokeMode, StoreError,
};
use celerity_proto::{Layout, Namespace};
use celerity_testkit::NatsServer;

use crate::support::WorkerProcess;

const WAIT: Duration = Duration::from_secs(20);

/// How long a broadcast gathers replies: its one worker answers well within it.
const BROADCAST: Duration = Duration::from_millis(500);

/// How fast a refusal must come back: one round trip, not a request's timeout.
const REFUSED_WITHIN: Duration = Duration::from_secs(1);

/// The shipped snippet, read from the repository so the tests test the file users paste.
const SNIPPET: &str = include_str!("../../docs/permissions.conf");

const ROLES: [&str; 4] = ["producer", "worker", "dashboard", "operator"];

/// A server with the shipped roles; each role's password is `<role>-secret`.
fn roles_server() -> NatsServer {
    roles_server_with(SNIPPET.to_owned())
}

/// A server with the roles of `config`, a version of the shipped snippet.
fn roles_server_with(mut config: String) -> NatsServer {
    for role in ROLES {
        let variable = format!("${}", format!("CELERITY_{role}_PASSWORD").to_uppercase());
        assert!(config.contains(&variable), "the snippet reads {variable}");
        config = config.replace(&variable, &format!("\"{role}-secret\""));
    }
    NatsServer::builder()
        .extra_config(&config)
        .start()
        .expect("nats-server starts with docs/permissions.conf")
}

/// How `role` connects: its user, and the inbox prefix its permissions allow.
fn as_role(server: &NatsServer, role: &str) -> NatsConfig {
    NatsConfig::new(server.url())
        .user_password(role, format!("{role}-secret"))
        .inbox_prefix(format!("_INBOX.{role}"))
}

/// A Celerity client of the test app connected as `role`.
async fn client_as(server: &NatsServer, role: &str) -> Client {
    celerity_it::app()
        .expect("the test app builds")
        .client(&as_role(server, role))
        .await
        .unwrap_or_else(|error| panic!("the {role} connects: {error:?}"))
}

/// A worker process connected as the worker role.
fn worker(server: &NatsServer, hostname: &str) -> WorkerProcess {
    let url = server
        .url()
        .replace("nats://", "nats://worker:worker-secret@");
    let env = [("CELERITY_NATS_INBOX_PREFIX", "_INBOX.worker")];
    let worker = WorkerProcess::spawn(&url, hostname, &[], &env);
    worker.wait_for_log("consuming", WAIT);
    worker.wait_for_log("answering control requests", WAIT);
    worker
}

/// The permission violations the server logged for `user` (2.9 writes `User "<user>"` into the
/// line, 2.15 the connection's `"<account>/user:<user>"`).
fn violations_of(server: &NatsServer, user: &str) -> Vec<String> {
    let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
    let (old, new) = (format!("User \"{user}\""), format!("/user:{user}\""));
    log.lines()
        .filter(|line| line.contains("Violation") && (line.contains(&old) || line.contains(&new)))
        .map(str::to_owned)
        .collect()
}

/// Runs `refused` and returns its outcome, failing the test if it took a timeout's worth.
async fn at_once<T>(what: &str, refused: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let outcome = tokio::time::timeout(WAIT, refused)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {WAIT:?}"));
    let elapsed = started.elapsed();
    eprintln!("{what}: {elapsed:?}");
    assert!(elapsed < REFUSED_WITHIN, "{what} took {elapsed:?}");
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_sends_tasks_and_reads_their_results_with_the_worker_running_them() {
    let server = roles_server();
    let worker = worker(&server, "roles-w1");
    let producer = client_as(&server, "producer").await;

    // Its user may not write results, so PENDING is refused: the send goes on at once.
    let sent = at_once("a send whose PENDING is refused", async {
        celerity_it::add.delay(&producer, 2, 3).await
    })
    .await
    .expect("the task is sent");
    assert_eq!(sent.get(WAIT).await.expect("the worker runs it"), 5);
    let by_id = producer
        .async_result::<i64>(sent.id().as_str())
        .expect("a valid id");
    assert_eq!(by_id.get(WAIT).await.expect("a watch reads the result"), 5);
    let later = celerity_it::add
        .apply_async(
            &producer,
            (20, 22),
            celerity::ApplyOptions::new().countdown(Duration::from_millis(200)),
        )
        .await
        .expect("a delayed task is sent");
    assert_eq!(later.get(WAIT).await.expect("the delayed task runs"), 42);

    let refused_pending: Vec<String> = violations_of(&server, "producer");
    assert!(
        refused_pending.len() == 1 && refused_pending[0].contains("$KV.celerity_results."),
        "only the first PENDING write is tried: {refused_pending:#?}"
    );
    assert!(
        violations_of(&server, "worker").is_empty(),
        "the worker role allows all the worker does: {:#?}",
        violations_of(&server, "worker")
    );
    assert!(!worker.log().contains("refused"), "{}", worker.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_is_refused_control_revocation_and_result_writes_at_once() {
    let server = roles_server();
    let _worker = worker(&server, "roles-w2");
    let producer = client_as(&server, "producer").await;
    let sent = celerity_it::add.delay(&producer, 1, 1).await.expect("sent");
    assert_eq!(sent.get(WAIT).await.expect("it runs"), 2);
    let control = producer.control();

    let broadcast = at_once("a broadcast ping", control.ping(None, WAIT)).await;
    assert!(
        matches!(&broadcast, Err(ControlError::PermissionDenied { subject }) if subject == "celerity.control.all"),
        "{broadcast:?}"
    );
    let to_one = at_once("a ping to one worker", control.ping(Some("roles-w2"), WAIT)).await;
    assert!(
        matches!(&to_one, Err(ControlError::PermissionDenied { subject }) if subject.starts_with("celerity.control.")),
        "{to_one:?}"
    );
    let limit = "10/s".parse::<RateLimitChange>().expect("a rate");
    let rate_limit = control.rate_limit("it.add", limit, RateLimitScope::PerWorker, None, WAIT);
    let rate_limit = at_once("a rate limit", rate_limit).await;
    assert!(
        matches!(rate_limit, Err(ControlError::PermissionDenied { .. })),
        "{rate_limit:?}"
    );
    let id = sent.id().as_str();
    let revoked = at_once(
        "a control revoke",
        control.revoke(id, RevokeMode::Skip, None, WAIT),
    )
    .await;
    assert!(
        matches!(&revoked, Err(ControlError::PermissionDenied { subject }) if subject == &format!("$KV.celerity_revoked.{id}")),
        "{revoked:?}"
    );
    let handle_revoke = at_once("a handle's revoke", sent.revoke()).await;
    assert!(
        matches!(
            &handle_revoke,
            Err(ResultError::Revoke {
                source: RevokeError::PermissionDenied { .. },
                ..
            })
        ),
        "{handle_revoke:?}"
    );
    let forgotten = at_once("a result write (forget)", sent.forget()).await;
    assert!(
        matches!(
            &forgotten,
            Err(ResultError::Store(StoreError::PermissionDenied { operation: "forget", subject, .. }))
                if subject == &format!("$KV.celerity_results.{id}")
        ),
        "{forgotten:?}"
    );
    assert_eq!(sent.get(WAIT).await.expect("the result is still there"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_cannot_create_a_stream() {
    let server = roles_server();
    // The namespace's streams and buckets exist (a worker made them); queue `unmade` has none.
    let _worker = worker(&server, "roles-w5");
    let producer = client_as(&server, "producer").await;
    let options = celerity::ApplyOptions::new().queue("unmade");
    let started = Instant::now();
    let sent = tokio::time::timeout(
        WAIT,
        producer.send_task(
            "it.add",
            serde_json::json!([1, 2]),
            serde_json::Value::Null,
            options,
        ),
    )
    .await
    .expect("the send ends");
    // FIXME: the refusal takes the connection's request timeout (10 s), not a round trip: the
    // stream is looked up and created in `nats/provision.rs`, whose requests are not raced
    // against the connection's permission violations yet (`nats::permissions::Watch::guard`).
    eprintln!("a stream create: {:?}", started.elapsed());
    assert!(matches!(sent, Err(EnqueueError::Provision(_))), "{sent:?}");
    let operator = client_as(&server, "operator").await;
    let js = async_nats::jetstream::new(operator.nats().clone());
    assert!(
        js.get_stream("CELERITY_Q_unmade").await.is_err(),
        "no stream was made"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pings_revokes_and_limits_rates() {
    let server = roles_server();
    let _worker = worker(&server, "roles-w3");
    let operator = client_as(&server, "operator").await;
    let control = operator.control();

    let pongs = control.ping(None, BROADCAST).await.expect("a ping");
    assert_eq!(pongs.len(), 1, "{pongs:?}");
    assert_eq!((pongs[0].worker.as_str(), pongs[0].ok), ("roles-w3", true));
    let one = control
        .ping(Some("roles-w3"), WAIT)
        .await
        .expect("a ping to one");
    assert!(one[0].ok, "{one:?}");
    let id = "01a25111-0000-7000-8000-000000000001";
    let revoked = control
        .revoke(id, RevokeMode::Skip, None, BROADCAST)
        .await
        .expect("a revoke");
    assert!(revoked.iter().all(|reply| reply.ok), "{revoked:?}");
    let limit = "10/s".parse::<RateLimitChange>().expect("a rate");
    let limited = control
        .rate_limit("it.add", limit, RateLimitScope::PerWorker, None, BROADCAST)
        .await
        .expect("a rate limit");
    assert!(limited.iter().all(|reply| reply.ok), "{limited:?}");
    assert!(
        violations_of(&server, "operator").is_empty(),
        "{:#?}",
        violations_of(&server, "operator")
    );
    assert!(violations_of(&server, "worker").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_reads_events_results_and_letters_and_is_refused_control_at_once() {
    let server = roles_server();
    let _worker = worker(&server, "roles-w4");
    let producer = client_as(&server, "producer").await;
    let sent = celerity_it::add.delay(&producer, 4, 5).await.expect("sent");
    assert_eq!(sent.get(WAIT).await.expect("it runs"), 9);
    let (dashboard, base) = crate::dashboard::start(&server.url(), |config| {
        config.nats = as_role(&server, "dashboard");
    })
    .await;

    let task_path = format!("/api/tasks/{}", sent.id());
    crate::support::eventually("the dashboard shows the task's result", WAIT, || async {
        let task = crate::dashboard::call(&base, "GET", &task_path, &[], None).await;
        task.status == 200 && task.body["record"]["result"] == 9
    })
    .await;
    for path in ["/api/queues", "/api/dead-letters", "/api/workers"] {
        let read = crate::dashboard::call(&base, "GET", path, &[], None).await;
        assert_eq!(read.status, 200, "{path}: {:?}", read.body);
    }
    let session = crate::dashboard::call(&base, "GET", "/api/session", &[], None).await;
    let csrf = session.body["csrf"]
        .as_str()
        .expect("a csrf token")
        .to_owned();
    let revoke_path = format!("{task_path}/revoke");
    let refused = at_once("a revoke from the dashboard", async {
        let headers = [("X-Celerity-Csrf", csrf.as_str())];
        crate::dashboard::call(&base, "POST", &revoke_path, &headers, None).await
    })
    .await;
    assert!(
        refused.status == 403
            && refused.body["error"]["code"] == "permission_denied"
            && refused.body.to_string().contains("operator"),
        "{} {:?}",
        refused.status,
        refused.body
    );
    dashboard.stop().await;
    let refused = violations_of(&server, "dashboard");
    assert!(
        refused
            .iter()
            .all(|line| line.contains("celerity.control.") || line.contains("KV_celerity_revoked")),
        "the dashboard's reads need nothing it lacks: {refused:#?}"
    );

    // The dashboard's user, through the library: reads work, control is refused.
    let nats = as_role(&server, "dashboard")
        .connect()
        .await
        .expect("connects");
    let letters =
        celerity::dead_letters::DeadLetters::new(nats.clone(), Layout::new(Namespace::default()));
    letters
        .list(
            &celerity::dead_letters::LetterFilter::all(),
            celerity::dead_letters::Page::first(10),
        )
        .await
        .expect("the dead letters are listed");
    let control = celerity::Control::new(nats, Layout::new(Namespace::default()));
    let pinged = at_once("a dashboard's ping", control.ping(None, WAIT)).await;
    assert!(
        matches!(pinged, Err(ControlError::PermissionDenied { .. })),
        "{pinged:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_user_may_not_subscribe_to_its_inboxes_fails_to_connect_at_once() {
    let server = roles_server();
    // The producer's user with the default inbox prefix, `_INBOX`, which it may not read.
    let config = NatsConfig::new(server.url()).user_password("producer", "producer-secret");
    let connected = at_once("a connect", async {
        celerity_it::app().expect("the app").client(&config).await
    })
    .await;
    let error = connected.expect_err("the connection is refused");
    assert!(
        matches!(&error, celerity::ClientError::Connect(ConnectError::InboxDenied { inbox }) if inbox.starts_with("_INBOX.")),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("CELERITY_NATS_INBOX_PREFIX"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_role_runs_chains_chords_retries_and_dead_letters_without_a_refusal() {
    let server = roles_server();
    let worker = worker(&server, "roles-w6");
    let producer = client_as(&server, "producer").await;

    let chain = celerity::chain![
        celerity_it::extract.s((3,)),
        celerity_it::transform.s(()),
        celerity_it::load.s(("warehouse".to_owned(),))
    ]
    .apply_async(&producer)
    .await
    .expect("the chain is sent");
    assert_eq!(
        chain.get(WAIT).await.expect("the chain runs"),
        "333 -> warehouse"
    );
    let header = (0..5).map(|i| celerity_it::add.s((i, i)));
    let chord = celerity::Chord::new(header, celerity_it::length.s(()))
        .apply_async(&producer)
        .await
        .expect("the chord is sent");
    assert_eq!(chord.get(WAIT).await.expect("the chord's body runs"), 5);
    let flaky = celerity_it::flaky.delay(&producer, 2).await.expect("sent");
    assert_eq!(flaky.get(WAIT).await.expect("it succeeds on a retry"), 2);
    let unknown = producer
        .send_task(
            "it.nope",
            serde_json::json!([]),
            serde_json::Value::Null,
            celerity::ApplyOptions::new(),
        )
        .await
        .expect("sent");
    let letter = unknown.wait(WAIT).await.expect("it is dead-lettered");
    assert_eq!(letter.state, celerity::TaskState::Failure);

    assert!(
        violations_of(&server, "worker").is_empty(),
        "{:#?}",
        violations_of(&server, "worker")
    );
    assert!(!worker.log().contains("refused"), "{}", worker.log());
    let refused = violations_of(&server, "producer");
    assert!(
        refused
            .iter()
            .all(|line| line.contains("$KV.celerity_results.")),
        "a producer's chains and chords need no more than its role: {refused:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_may_not_hear_its_reply_subject_waits_through_a_watch() {
    // The producer role without its reply subjects.
    let reply_line = "              \"celerity.reply.>\"\n";
    assert!(SNIPPET.contains(reply_line), "the producer's reply line");
    let server = roles_server_with(SNIPPET.replacen(reply_line, "", 1));
    let _worker = worker(&server, "roles-w7");
    let producer = client_as(&server, "producer").await;

    let started = Instant::now();
    let sent = celerity_it::add.delay(&producer, 3, 4).await.expect("sent");
    assert_eq!(sent.get(WAIT).await.expect("the watch reads it"), 7);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the wait did not wait out a notification: {:?}",
        started.elapsed()
    );
    let refused = violations_of(&server, "producer");
    assert!(
        refused.iter().any(|line| line.contains("celerity.reply.")),
        "{refused:#?}"
    );
}
