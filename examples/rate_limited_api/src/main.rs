//! The reference's rate-limited external API call, with the limit changed at runtime: Celery's
//! `@task(rate_limit=...)` and `control.rate_limit(..., destination=[...])`.
//!
//! Start a server (`nats-server -js -a 127.0.0.1`, which `scripts/ensure-nats-server` installs, or
//! `docker compose up -d nats`), then
//! `cargo run -p rate_limited_api -- run` (`--nats-url` or `CELERITY_NATS_URL` names another
//! server). It starts a worker named `api-worker` in this process and sends a burst of calls to a
//! simulated API that says when it served each one. The task's own limit is 10 calls a second;
//! then a control command lowers it to 5 on that worker (as `celerity control rate-limit
//! tasks.call_external_api 5/s --destination api-worker` would), and a second burst follows. It
//! prints the rate the API saw before and after; it fails if a burst went faster than its limit,
//! or if the change did not slow the calls down.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use celerity::control::RateLimitResult;
use celerity::{
    App, Client, ControlError, RateLimitChange, RateLimitScope, Shutdown, WorkerConfig,
};
use clap::Parser;
use serde::{Deserialize, Serialize};

/// The task whose limit changes.
const TASK: &str = "tasks.call_external_api";
/// The worker that runs it, named in the control commands.
const WORKER: &str = "api-worker";
/// The task's own limit, calls a second (its `rate_limit` option).
const OWN_LIMIT: f64 = 10.0;
/// The limit set at runtime, calls a second.
const LOWER_LIMIT: u32 = 5;
/// Calls in each burst.
const N_CALLS: usize = 10;
/// How long the simulated API takes to answer.
const API_LATENCY: Duration = Duration::from_millis(20);
/// How long the workers may take to answer a control command.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a burst may take.
const WAIT: Duration = Duration::from_secs(30);

/// What the simulated API answers.
#[derive(Debug, Serialize, Deserialize)]
struct ApiResponse {
    endpoint: String,
    status: u16,
    /// When the API served the call, in Unix milliseconds (as an HTTP `Date` header would say).
    served_at_ms: u64,
}

/// The external API, simulated: it takes a little while and records when it served the call.
async fn external_api(endpoint: String) -> ApiResponse {
    tokio::time::sleep(API_LATENCY).await;
    let served_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    ApiResponse {
        endpoint,
        status: 200,
        served_at_ms,
    }
}

/// Calls the API, at most 10 times a second on each worker (Celery's `rate_limit="10/s"`).
#[celerity::task(name = "tasks.call_external_api", rate_limit = "10/s")]
async fn call_external_api(endpoint: String) -> ApiResponse {
    external_api(endpoint).await
}

#[derive(Debug, Parser)]
#[command(about = "A rate-limited API call whose limit changes at runtime")]
enum Command {
    /// Start a worker in this process, send two bursts of calls around the change and print the rates.
    Run(celerity::cli::NatsArgs),
}

fn main() -> anyhow::Result<()> {
    let Command::Run(nats) = Command::parse();
    celerity::cli::init_logging("warn");
    let nats = nats.config();
    let app = App::builder()
        .namespace("rate-limited-api")
        .task(call_external_api)
        .build()?;
    let runtime = tokio::runtime::Runtime::new()?;
    // The producer connects first: it fails at once when no server answers, a worker would retry.
    let client = runtime.block_on(app.client(&nats))?;
    // More slots than the limit needs, so only the limit paces the calls.
    let config = WorkerConfig::new().hostname(WORKER).concurrency(4);
    let worker = celerity::worker::spawn(app, nats, config)?;
    let outcome = runtime.block_on(change_the_limit(&client));
    worker.shutdown(match outcome {
        Ok(_) => Shutdown::Warm,
        Err(_) => Shutdown::Cold,
    });
    worker.join()?;
    outcome
}

async fn change_the_limit(client: &Client) -> anyhow::Result<()> {
    wait_until_answering(client).await?;
    // A changed limit is stored and outlives the worker: forget the last run's, so the task's own
    // option is in force.
    set_limit(client, RateLimitChange::Reset).await?;
    let before = burst(client, "before").await?;
    set_limit(client, format!("{LOWER_LIMIT}/s").parse()?).await?;
    let after = burst(client, "after").await?;
    // A tenth over a limit leaves room for clock steps between the calls' timestamps.
    anyhow::ensure!(
        before <= OWN_LIMIT * 1.1 && after <= f64::from(LOWER_LIMIT) * 1.1,
        "a burst went faster than its limit: {before:.1}/s before, {after:.1}/s after"
    );
    anyhow::ensure!(
        after < before,
        "the lower limit did not slow the calls: {before:.1}/s before, {after:.1}/s after"
    );
    println!("the change took effect: {before:.1} calls/s before, {after:.1} calls/s after");
    Ok(())
}

/// Waits until the worker answers control requests: `worker::spawn` returns once the worker
/// consumes, and its control subscription is made a moment later.
async fn wait_until_answering(client: &Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + CONTROL_TIMEOUT;
    loop {
        match client.control().ping(Some(WORKER), CONTROL_TIMEOUT).await {
            Ok(_) => return Ok(()),
            Err(ControlError::UnknownDestination(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Changes the task's limit on the worker, as Celery's `control.rate_limit(task, rate,
/// destination=[worker])`, and prints the limit the worker now applies.
async fn set_limit(client: &Client, change: RateLimitChange) -> anyhow::Result<()> {
    let replies = client
        .control()
        .rate_limit(
            TASK,
            change,
            RateLimitScope::PerWorker,
            Some(WORKER),
            CONTROL_TIMEOUT,
        )
        .await?;
    for reply in replies {
        anyhow::ensure!(
            reply.ok,
            "{} refused the change: {}",
            reply.worker,
            reply.error.unwrap_or_default()
        );
        let result = reply
            .result_as::<RateLimitResult>()
            .transpose()?
            .with_context(|| format!("{} sent no rate limit back", reply.worker))?;
        match result.rate_limit {
            Some(rate) => println!("{} limits {TASK} to {rate}", reply.worker),
            None => println!("{} does not limit {TASK}", reply.worker),
        }
    }
    Ok(())
}

/// Sends `N_CALLS` calls at once and returns the rate at which the API served them.
async fn burst(client: &Client, label: &str) -> anyhow::Result<f64> {
    let mut sent = Vec::new();
    for call in 0..N_CALLS {
        sent.push(
            call_external_api
                .delay(client, format!("/v1/items/{call}"))
                .await?,
        );
    }
    let mut served_at_ms = Vec::new();
    for result in &sent {
        served_at_ms.push(result.get(WAIT).await?.served_at_ms);
    }
    served_at_ms.sort_unstable();
    let (first, last) = (served_at_ms.first(), served_at_ms.last());
    let span_ms = last
        .zip(first)
        .map_or(0, |(last, first)| last - first)
        .max(1);
    // N calls spread evenly at r a second take (N - 1) / r seconds from the first to the last.
    let rate = (N_CALLS - 1) as f64 * 1000.0 / span_ms as f64;
    println!(
        "{label}: the API served {N_CALLS} calls in {:.2} s: {rate:.1} calls/s",
        span_ms as f64 / 1000.0
    );
    Ok(rate)
}
