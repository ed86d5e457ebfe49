//! End-to-end throughput of no-op tasks with results, for a user's own machine and server (the
//! project's figures, beside raw JetStream in the same run, come from `celerity bench`).
//!
//! `throughput worker -c 2` runs a worker (another process, so its memory can be read);
//! `throughput send 10000 <worker pid>` sends the tasks, waits for every result, and prints the
//! rate and the worker's resident memory (VmRSS, VmHWM from /proc).
//! `throughput publish 10000 [ignore]` only publishes (run it with no worker), with or without the
//! PENDING record, to show what that write costs.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};

/// Does nothing.
#[celerity::task(name = "bench.noop")]
async fn noop() {}

/// Does nothing and stores no result (so the producer writes no PENDING record).
#[celerity::task(name = "bench.noop_ignored", ignore_result)]
async fn noop_ignored() {}

fn memory(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|status| {
            status
                .lines()
                .filter(|line| line.starts_with("VmRSS") || line.starts_with("VmHWM"))
                .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

fn main() -> anyhow::Result<ExitCode> {
    let mut builder = celerity::App::builder().task(noop).task(noop_ignored);
    // `CELERITY_PRIORITY_STEPS=0` measures one priority level instead of ten.
    if let Ok(steps) = std::env::var("CELERITY_PRIORITY_STEPS") {
        builder =
            builder.priority_steps(steps.split(',').filter_map(|step| step.trim().parse().ok()));
    }
    let app = builder.build()?;
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("publish") {
        return publish_only(&app, &args);
    }
    if args.get(1).map(String::as_str) != Some("send") {
        return Ok(celerity::cli::main(app));
    }
    let n_tasks: usize = args.get(2).map_or(Ok(10_000), |a| a.parse())?;
    let pid = args.get(3).cloned().unwrap_or_default();
    let url = std::env::var("CELERITY_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    tokio::runtime::Runtime::new()?.block_on(async {
        let client = app.client(&celerity::NatsConfig::new(url)).await?;
        println!("worker memory before: {}", memory(&pid));
        let started = Instant::now();
        let results: Vec<_> = futures_util::stream::iter(0..n_tasks)
            .map(|_| noop.delay(&client))
            .buffer_unordered(1024)
            .try_collect()
            .await?;
        let published = started.elapsed();
        futures_util::stream::iter(results)
            .map(|result| async move { result.get(Duration::from_secs(120)).await })
            .buffer_unordered(n_tasks.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        let elapsed = started.elapsed();
        println!(
            "{n_tasks} no-op tasks with results: published in {:.2} s ({:.0}/s), all results in {:.2} s: {:.0} tasks/s end to end",
            published.as_secs_f64(),
            n_tasks as f64 / published.as_secs_f64(),
            elapsed.as_secs_f64(),
            n_tasks as f64 / elapsed.as_secs_f64()
        );
        println!("worker memory after: {}", memory(&pid));
        Ok(ExitCode::SUCCESS)
    })
}

fn publish_only(app: &celerity::App, args: &[String]) -> anyhow::Result<ExitCode> {
    let n_tasks: usize = args.get(2).map_or(Ok(10_000), |a| a.parse())?;
    let ignore = args.get(3).map(String::as_str) == Some("ignore");
    let url = std::env::var("CELERITY_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    tokio::runtime::Runtime::new()?.block_on(async {
        let client = app.client(&celerity::NatsConfig::new(url)).await?;
        let started = Instant::now();
        if ignore {
            futures_util::stream::iter(0..n_tasks)
                .map(|_| noop_ignored.delay(&client))
                .buffer_unordered(1024)
                .try_collect::<Vec<_>>()
                .await?;
        } else {
            futures_util::stream::iter(0..n_tasks)
                .map(|_| noop.delay(&client))
                .buffer_unordered(1024)
                .try_collect::<Vec<_>>()
                .await?;
        }
        let elapsed = started.elapsed();
        let what = if ignore {
            "ignore_result (no PENDING write)"
        } else {
            "with results (PENDING write)"
        };
        println!(
            "published {n_tasks} tasks {what} in {:.2} s: {:.0}/s",
            elapsed.as_secs_f64(),
            n_tasks as f64 / elapsed.as_secs_f64()
        );
        Ok(ExitCode::SUCCESS)
    })
}
