//! The tasks of the integration tests, shared by the `it-worker` binary (which runs them) and the
//! tests (which send them with typed arguments).
//!
//! Tasks that must prove how often they ran publish a JetStream message to `it.runs.<label>`
//! (the test creates the `IT_RUNS` stream) before they finish.

use std::sync::OnceLock;
use std::time::Duration;

use celerity::TaskContext;
use futures_util::StreamExt;
use serde_json::json;

static NATS: OnceLock<async_nats::Client> = OnceLock::new();

async fn nats() -> anyhow::Result<async_nats::Client> {
    if let Some(client) = NATS.get() {
        return Ok(client.clone());
    }
    let url = std::env::var("IT_NATS_URL")?;
    // A cluster's URLs come as a comma-separated list; async-nats takes them one by one.
    let servers: Vec<&str> = url.split(',').collect();
    let client = async_nats::connect(servers.as_slice()).await?;
    Ok(NATS.get_or_init(|| client).clone())
}

/// Adds two numbers.
#[celerity::task(name = "it.add")]
pub async fn add(x: i64, y: i64) -> i64 {
    x + y
}

/// Adds two numbers; registered only when `IT_WITH_LATE_TASK` is set, as a task deployed after
/// its first messages arrived (they are dead-lettered `unknown_task` by workers without it).
#[celerity::task(name = "it.late")]
pub async fn late(x: i64, y: i64) -> i64 {
    x + y
}

/// Multiplies on the blocking pool.
#[celerity::task(name = "it.mul")]
pub fn blocking_mul(x: i64, y: i64) -> i64 {
    x * y
}

/// A payment error with a cause, to check the cause chain.
#[derive(Debug, thiserror::Error)]
#[error("card declined: {0}")]
pub struct PaymentError(String, #[source] std::io::Error);

/// Always fails with a two-level error.
#[celerity::task(name = "it.fail")]
pub async fn fail(reason: String) -> Result<(), PaymentError> {
    Err(PaymentError(
        reason,
        std::io::Error::other("gateway timeout"),
    ))
}

/// Always panics.
#[celerity::task(name = "it.panic")]
pub async fn panics(message: String) -> u8 {
    panic!("{message}");
}

/// Records that it ran (a JetStream publish to `it.runs.<label>` with the task id), sleeps, and
/// returns the label.
#[celerity::task(name = "it.track")]
pub async fn track(ctx: &TaskContext, label: String, sleep_ms: u64) -> anyhow::Result<String> {
    let client = nats().await?;
    let js = async_nats::jetstream::new(client);
    js.publish(format!("it.runs.{label}"), ctx.id().to_string().into())
        .await?
        .await?;
    tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
    Ok(label)
}

/// The subject prefix of the fault checker's ledger: every run of `it.ledger` publishes one
/// record to `it.ledger.<task id>`, kept by the `IT_LEDGER` stream the test makes.
pub const LEDGER_SUBJECTS: &str = "it.ledger.>";

/// One run of `it.ledger`, as the ledger keeps it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LedgerEntry {
    /// The task id.
    pub id: String,
    /// The delivery of its message (1 for the first).
    pub delivery: u64,
    /// The worker that ran it.
    pub worker: String,
}

/// The fault suite's task: records `(id, delivery, worker)` in the ledger, then sleeps
/// `sleep_ms` and returns `n`. The record's publish is retried until the ledger stores it (a
/// server restart does not fail the task), with one `Nats-Msg-Id` per run, so a retried publish
/// is stored once and every run is stored.
#[celerity::task(name = "it.ledger")]
pub async fn ledger(ctx: &TaskContext, n: u64, sleep_ms: u64) -> anyhow::Result<u64> {
    let client = nats().await?;
    let js = async_nats::jetstream::new(client);
    let entry = LedgerEntry {
        id: ctx.id().to_string(),
        delivery: ctx.delivered(),
        worker: ctx.hostname().unwrap_or("?").to_owned(),
    };
    let payload: bytes::Bytes = serde_json::to_vec(&entry)?.into();
    let run_id = uuid::Uuid::now_v7().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut msg_id = async_nats::HeaderMap::new();
        msg_id.insert("Nats-Msg-Id", run_id.as_str());
        let stored = async {
            js.publish_with_headers(format!("it.ledger.{}", entry.id), msg_id, payload.clone())
                .await?
                .await
        };
        match stored.await {
            Ok(_) => break,
            Err(error) if tokio::time::Instant::now() >= deadline => return Err(error.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
    Ok(n)
}

/// Reports PROCESSING step 2 of 3, then waits for a core message on `it.release.<task id>`.
#[celerity::task(name = "it.progress", track_started)]
pub async fn progress(ctx: &TaskContext) -> anyhow::Result<u32> {
    let client = nats().await?;
    let mut release = client.subscribe(format!("it.release.{}", ctx.id())).await?;
    client.flush().await?;
    ctx.update_state("PROCESSING", json!({"step": 2, "total": 3}))
        .await?;
    release.next().await;
    Ok(3)
}

/// Records STARTED, subscribes to `it.release.<task id>`, reports that on `it.runs.held` (with its
/// id), then waits for the release.
#[celerity::task(name = "it.hold", track_started)]
pub async fn hold(ctx: &TaskContext) -> anyhow::Result<String> {
    hold_until_released(ctx).await?;
    Ok(ctx.id().to_string())
}

/// ETL step 1: rows from a source.
#[celerity::task(name = "etl.extract")]
pub async fn extract(source: i64) -> Vec<i64> {
    vec![source, source * 10, source * 100]
}

/// ETL step 2: the rows' total.
#[celerity::task(name = "etl.transform")]
pub async fn transform(rows: Vec<i64>) -> i64 {
    rows.iter().sum()
}

/// ETL step 3: where the total went.
#[celerity::task(name = "etl.load")]
pub async fn load(total: i64, destination: String) -> String {
    format!("{total} -> {destination}")
}

/// A transform that always fails.
#[celerity::task(name = "etl.explode")]
pub async fn explode(rows: Vec<i64>) -> anyhow::Result<i64> {
    anyhow::bail!("cannot transform {} rows", rows.len())
}

/// An errback: records the failed task's id on `it.runs.errback`.
#[celerity::task(name = "etl.record_failure")]
pub async fn record_failure(failed_id: String) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(nats().await?);
    js.publish("it.runs.errback", failed_id.into())
        .await?
        .await?;
    Ok(())
}

/// Adds after sleeping, so a chord of them is still running when a test kills a worker.
#[celerity::task(name = "it.slow_add")]
pub async fn slow_add(x: i64, y: i64, sleep_ms: u64) -> i64 {
    tokio::time::sleep(std::time::Duration::from_millis(sleep_ms)).await;
    x + y
}

/// A chord body: the sum of the header results. Records its run on `it.runs.total` (with its
/// id), so tests can count how often a body ran.
#[celerity::task(name = "it.total")]
pub async fn sum_all(ctx: &TaskContext, numbers: Vec<i64>) -> anyhow::Result<i64> {
    let js = async_nats::jetstream::new(nats().await?);
    js.publish("it.runs.total", ctx.id().to_string().into())
        .await?
        .await?;
    Ok(numbers.iter().sum())
}

/// Sends `add(x, x)` and waits for it inside its own body: refused unless `allow` is set.
#[celerity::task(name = "it.wait_inside")]
pub async fn wait_inside(x: i64, allow: bool) -> anyhow::Result<i64> {
    let url = std::env::var("IT_NATS_URL")?;
    let client = app()?.client(&celerity::NatsConfig::new(url)).await?;
    let mut result = add.delay(&client, x, x).await?;
    if allow {
        result = result.allow_wait_in_task();
    }
    Ok(result.get(std::time::Duration::from_secs(20)).await?)
}

/// Works in 20 ms steps for up to `ms`, stopping early when its soft time limit (200 ms) tells it
/// to; returns how many steps it did.
#[celerity::task(name = "it.cooperative", soft_time_limit = 0.2)]
pub async fn cooperative(ctx: &TaskContext, ms: u64) -> u64 {
    let mut steps = 0;
    while steps * 20 < ms && !ctx.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(20)).await;
        steps += 1;
    }
    steps
}

/// Sleeps `ms`, ignoring everything: its hard time limit (300 ms) stops it.
#[celerity::task(name = "it.stubborn", time_limit = 0.3)]
pub async fn stubborn(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

/// Asks for a retry until it has been retried `needed` times (backoff 100 ms, doubling, no jitter);
/// returns how many retries it took.
#[celerity::task(
    name = "it.flaky",
    max_retries = 5,
    retry_backoff = 0.1,
    retry_jitter = false
)]
pub async fn flaky(ctx: &TaskContext, needed: u32) -> anyhow::Result<u32> {
    if ctx.retries() < needed {
        return Err(ctx.retry(None).into());
    }
    Ok(ctx.retries())
}

/// Fails with an I/O error until it has been retried `needed` times; retried automatically.
#[celerity::task(name = "it.autoretry", autoretry_for = [std::io::Error], retry_backoff = 0.05, retry_jitter = false)]
pub async fn autoretry(ctx: &TaskContext, needed: u32) -> Result<u32, std::io::Error> {
    if ctx.retries() < needed {
        return Err(std::io::Error::other(format!(
            "attempt {} failed",
            ctx.retries() + 1
        )));
    }
    Ok(ctx.retries())
}

/// Always asks for a retry; gives up after 2.
#[celerity::task(
    name = "it.hopeless",
    max_retries = 2,
    retry_backoff = 0.05,
    retry_jitter = false
)]
pub async fn hopeless(ctx: &TaskContext) -> anyhow::Result<()> {
    Err(ctx.retry(None).into())
}

/// Asks once for a retry in 1.5 s, then succeeds.
#[celerity::task(name = "it.retry_once_later")]
pub async fn retry_once_later(ctx: &TaskContext) -> anyhow::Result<u32> {
    if ctx.retries() == 0 {
        return Err(ctx.retry(Some(Duration::from_millis(1500))).into());
    }
    Ok(ctx.retries())
}

/// Hooks that record every call on `it.runs.hook.<hook>` (with the task id).
#[derive(Debug)]
pub struct RecordingHooks;

async fn record_hook(hook: &str, ctx: &TaskContext) {
    if let Ok(client) = nats().await {
        let js = async_nats::jetstream::new(client);
        if let Ok(ack) = js
            .publish(format!("it.runs.hook.{hook}"), ctx.id().to_string().into())
            .await
        {
            let _ = ack.await;
        }
    }
}

impl celerity::TaskHooks for RecordingHooks {
    fn on_success<'a>(
        &'a self,
        ctx: &'a TaskContext,
        _result: &'a serde_json::Value,
    ) -> celerity::HookFuture<'a> {
        Box::pin(record_hook("success", ctx))
    }

    fn on_failure<'a>(
        &'a self,
        ctx: &'a TaskContext,
        _error: &'a celerity::ErrorRecord,
    ) -> celerity::HookFuture<'a> {
        Box::pin(record_hook("failure", ctx))
    }

    fn on_retry<'a>(
        &'a self,
        ctx: &'a TaskContext,
        _error: &'a celerity::ErrorRecord,
        _retry: u32,
    ) -> celerity::HookFuture<'a> {
        Box::pin(record_hook("retry", ctx))
    }

    fn after_return<'a>(
        &'a self,
        ctx: &'a TaskContext,
        state: &'a celerity::TaskState,
    ) -> celerity::HookFuture<'a> {
        let hook = format!("after_return_{}", state.as_str().to_lowercase());
        Box::pin(async move { record_hook(&hook, ctx).await })
    }
}

/// Fails on its first run, succeeds on its retry; its hooks record every call.
#[celerity::task(name = "it.hooked", base = RecordingHooks, retry_backoff = 0.05, retry_jitter = false)]
pub async fn hooked(ctx: &TaskContext, should_fail: bool) -> anyhow::Result<u32> {
    if should_fail {
        anyhow::bail!("asked to fail");
    }
    if ctx.retries() == 0 {
        return Err(ctx.retry(None).into());
    }
    Ok(ctx.retries())
}

/// A chord body that says how many results it received.
#[celerity::task(name = "it.length")]
pub async fn length(items: Vec<i64>) -> usize {
    items.len()
}

/// A `collect` chord body: how many members succeeded and how many failed.
#[celerity::task(name = "it.count_outcomes")]
pub async fn count_outcomes(outcomes: Vec<serde_json::Value>) -> (usize, usize) {
    let succeeded = outcomes
        .iter()
        .filter(|outcome| outcome.get("ok").is_some())
        .count();
    let failed = outcomes
        .iter()
        .filter(|outcome| outcome.get("error").is_some())
        .count();
    (succeeded, failed)
}

/// Returns the user headers it was sent with.
#[celerity::task(name = "it.headers")]
pub async fn headers(ctx: &TaskContext) -> Vec<(String, String)> {
    ctx.headers().to_vec()
}

/// A no-op limited to 10 per second on each worker.
#[celerity::task(name = "it.limited", rate_limit = "10/s")]
pub async fn limited(n: u32) -> u32 {
    n
}

/// A no-op limited to 10 per second in the whole cluster.
#[celerity::task(name = "it.global_limited", global_rate_limit = "10/s")]
pub async fn global_limited(n: u32) -> u32 {
    n
}

/// A no-op limited to one per hour on each worker: after the first, every run waits.
#[celerity::task(name = "it.scarce", rate_limit = "1/h")]
pub async fn scarce(n: u32) -> u32 {
    n
}

/// A no-op with no limit of its own, for limits set at runtime.
#[celerity::task(name = "it.metered")]
pub async fn metered(n: u32) -> u32 {
    n
}

/// Takes its worker down (as a native crash or an out-of-memory kill would).
#[celerity::task(name = "it.abort")]
pub async fn abort_worker() -> u8 {
    std::process::abort()
}

/// Takes its worker down, and allows a single delivery.
#[celerity::task(name = "it.abort_once", max_deliveries = 1)]
pub async fn abort_worker_once() -> u8 {
    std::process::abort()
}

/// A blocking body that ignores every signal: it reports WORKING every 100 ms for `ms`.
#[celerity::task(name = "it.heedless", time_limit = 0.3)]
pub fn heedless(ctx: &TaskContext, ms: u64) -> u64 {
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(ms) {
        let _ = ctx.update_state_blocking("WORKING", json!({}));
        std::thread::sleep(Duration::from_millis(100));
    }
    ms
}

/// Logs `text` at info from inside its run, and returns it.
#[celerity::task(name = "it.say")]
pub async fn say(text: String) -> String {
    tracing::info!(%text, "said");
    text
}

/// Returns a string of `n` bytes.
#[celerity::task(name = "it.sized")]
pub async fn sized(n: usize) -> String {
    "x".repeat(n)
}

/// The app with every test task; `IT_RESULT_EXPIRES_SECS` sets the result expiry and
/// `IT_TRACK_RECEIVED=1` turns on RECEIVED records.
pub fn app() -> Result<celerity::App, celerity::ConfigError> {
    app_builder().build()
}

/// The builder of [`app`], for a test to add to (a producer's telemetry).
pub fn app_builder() -> celerity::AppBuilder {
    let mut builder = celerity::App::builder()
        .task(add)
        .task(blocking_mul)
        .task(fail)
        .task(panics)
        .task(track)
        .task(ledger)
        .task(progress)
        .task(headers)
        .task(hold)
        .task(extract)
        .task(transform)
        .task(load)
        .task(explode)
        .task(record_failure)
        .task(sum_all)
        .task(slow_add)
        .task(wait_inside)
        .task(count_outcomes)
        .task(length)
        .task(cooperative)
        .task(stubborn)
        .task(flaky)
        .task(autoretry)
        .task(hopeless)
        .task(retry_once_later)
        .task(hooked)
        .task(limited)
        .task(global_limited)
        .task(scarce)
        .task(metered)
        .task(abort_worker)
        .task(abort_worker_once)
        .task(sized)
        .task(say)
        .task(heedless)
        .task(join);
    builder = with_celery_user_tasks(builder);
    if std::env::var_os("IT_WITH_LATE_TASK").is_some() {
        builder = builder.task(late);
    }
    if let Some(seconds) = std::env::var("IT_RESULT_EXPIRES_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        builder = builder.result_expires(Duration::from_secs(seconds));
    }
    if let Ok(steps) = std::env::var("IT_PRIORITY_STEPS") {
        builder =
            builder.priority_steps(steps.split(',').filter_map(|step| step.trim().parse().ok()));
    }
    if std::env::var("IT_TRACK_RECEIVED").is_ok_and(|value| value == "1") {
        builder = builder.track_received(true);
    }
    if std::env::var("IT_RECORD_SIGNALS").is_ok_and(|value| value == "1") {
        builder = builder.signals(recording_signals());
    }
    builder
}

/// Publishes `it.runs.signal.<signal>` with `payload` (a task id, or the worker's hostname) from
/// a sync hook, on the runtime the hook runs on.
fn record_signal(signal: &'static str, payload: String) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        drop(runtime.spawn(async move {
            if let Ok(client) = nats().await {
                let js = async_nats::jetstream::new(client);
                if let Ok(ack) = js
                    .publish(format!("it.runs.signal.{signal}"), payload.into())
                    .await
                {
                    let _ = ack.await;
                }
            }
        }));
    }
}

/// Signals that record every call on `it.runs.signal.<signal>`; `task_prerun` panics for
/// `it.add(13, _)` and `task_success` returns an error for it, which must change nothing.
fn recording_signals() -> celerity::signals::Signals {
    let id = |context: &TaskContext| context.id().to_string();
    celerity::signals::Signals::new()
        .before_task_publish(|s| record_signal("before_task_publish", s.envelope.id.to_string()))
        .after_task_publish(|s| record_signal("after_task_publish", s.envelope.id.to_string()))
        .task_prerun(move |s| {
            record_signal("task_prerun", id(s.context));
            let unlucky = s.context.task_name().as_str() == "it.add"
                && s.context.envelope().id.as_str().starts_with("unlucky-");
            assert!(!unlucky, "a prerun hook that panics");
        })
        .task_postrun(move |s| {
            record_signal("task_postrun", format!("{} {}", id(s.context), s.state));
        })
        .task_success(move |s| {
            record_signal("task_success", id(s.context));
            match s.context.envelope().id.as_str().starts_with("unlucky-") {
                true => Err("a success hook that fails"),
                false => Ok(()),
            }
        })
        .task_failure(move |s| record_signal("task_failure", id(s.context)))
        .task_retry(move |s| record_signal("task_retry", id(s.context)))
        .task_revoked(|s| {
            record_signal("task_revoked", format!("{} {}", s.envelope.id, s.reason));
        })
        .task_rejected(|s| {
            let id = s.task_id.map(ToString::to_string).unwrap_or_default();
            record_signal("task_rejected", format!("{id} {}", s.reason.code()));
        })
        .worker_ready(|s| record_signal("worker_ready", s.hostname.to_owned()))
        .worker_heartbeat(|s| record_signal("worker_heartbeat", s.heartbeat.hostname.clone()))
        .worker_shutdown(|s| {
            // Outside the worker's runtime: the hook may block, on a runtime of its own.
            let url = std::env::var("IT_NATS_URL").unwrap_or_default();
            let hostname = s.hostname.to_owned();
            let publish = async move {
                let client = async_nats::connect(url).await?;
                let js = async_nats::jetstream::new(client);
                js.publish("it.runs.signal.worker_shutdown", hostname.into())
                    .await?
                    .await?;
                Ok::<_, async_nats::Error>(())
            };
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(async_nats::Error::from)
                .and_then(|runtime| runtime.block_on(publish))
        })
}

/// A chord body over string results (such as `hold`'s): them, joined with commas, in order.
#[celerity::task(name = "it.join")]
pub async fn join(items: Vec<String>) -> String {
    items.join(",")
}

/// Fails through `anyhow` until it has been retried `needed` times, with an I/O error (`how` is
/// `"io"`), an I/O error under a context (`"io_in_context"`) or a plain message (anything else);
/// retried automatically on I/O errors, as `retries.md` shows.
#[celerity::task(name = "it.autoretry_anyhow", autoretry_for = [std::io::Error], retry_backoff = 0.05, retry_jitter = false)]
pub async fn autoretry_anyhow(ctx: &TaskContext, needed: u32, how: String) -> anyhow::Result<u32> {
    if ctx.retries() < needed {
        let error = std::io::Error::other(format!("attempt {} failed", ctx.retries() + 1));
        return Err(match how.as_str() {
            "io" => error.into(),
            "io_in_context" => anyhow::Error::new(error).context("fetching the page"),
            _ => anyhow::anyhow!("attempt {} failed, not on I/O", ctx.retries() + 1),
        });
    }
    Ok(ctx.retries())
}

/// Reports where it runs: its queue, priority, delivery count and subject, and the worker's
/// hostname. On a first delivery with `wait_for_release` set, it reports `it.runs.held` (with its id) and
/// waits for `it.release.<task id>`, so a test can take the delivery away.
#[celerity::task(name = "it.where_am_i")]
pub async fn where_am_i(
    ctx: &TaskContext,
    wait_for_release: bool,
) -> anyhow::Result<serde_json::Value> {
    let delivery = ctx
        .delivery_info()
        .ok_or_else(|| anyhow::anyhow!("a task on a worker has delivery info"))?;
    if wait_for_release && !delivery.redelivered() {
        hold_until_released(ctx).await?;
    }
    Ok(json!({
        "queue": delivery.queue(),
        "priority": delivery.priority(),
        "delivered": delivery.delivered(),
        "redelivered": delivery.redelivered(),
        "subject": delivery.subject(),
        "hostname": ctx.hostname(),
    }))
}

/// A preset for flaky I/O, shared by the tasks below as a Celery base class shares its
/// attributes: retried automatically on I/O errors, up to 4 times, 50 ms apart, without jitter.
pub const FLAKY_IO: celerity::TaskOptions = celerity::TaskOptions::preset()
    .autoretry_for(&[celerity::ErrorType::of::<std::io::Error>()])
    .max_retries(4)
    .retry_backoff_ms(50)
    .retry_backoff_max_ms(50)
    .retry_jitter(false);

/// Fails with an I/O error until it has been retried `needed` times; its preset retries it.
#[celerity::task(name = "it.preset_retried", preset = FLAKY_IO)]
pub async fn preset_retried(ctx: &TaskContext, needed: u32) -> std::io::Result<u32> {
    fail_on_io_until_retried(ctx, needed)
}

/// [`preset_retried`] with its own `max_retries = 1`, which overrides the preset's 4.
#[celerity::task(name = "it.preset_overridden", preset = FLAKY_IO, max_retries = 1)]
pub async fn preset_overridden(ctx: &TaskContext, needed: u32) -> std::io::Result<u32> {
    fail_on_io_until_retried(ctx, needed)
}

/// An I/O error "not yet" until the task has been retried `needed` times, then the retry count.
fn fail_on_io_until_retried(ctx: &TaskContext, needed: u32) -> std::io::Result<u32> {
    if ctx.retries() < needed {
        return Err(std::io::Error::other("not yet"));
    }
    Ok(ctx.retries())
}

/// Subscribes to `it.release.<task id>`, reports that on `it.runs.held` (with the task id), then
/// waits for the release.
async fn hold_until_released(ctx: &TaskContext) -> anyhow::Result<()> {
    let client = nats().await?;
    let mut release = client.subscribe(format!("it.release.{}", ctx.id())).await?;
    client.flush().await?;
    // Now listening: say so (the test creates IT_RUNS) so the release cannot be missed.
    let js = async_nats::jetstream::new(client.clone());
    js.publish("it.runs.held", ctx.id().to_string().into())
        .await?
        .await?;
    release.next().await;
    Ok(())
}

/// The tasks of `it/celery_user.rs`.
fn with_celery_user_tasks(builder: celerity::AppBuilder) -> celerity::AppBuilder {
    builder
        .task(autoretry_anyhow)
        .task(where_am_i)
        .task(preset_retried)
        .task(preset_overridden)
}
