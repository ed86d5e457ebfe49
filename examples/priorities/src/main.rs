//! The reference's premium versus standard users: premium work goes to its own queue with its own
//! worker, at a higher priority, so a backlog of standard work never holds it up; within a queue,
//! higher priorities start first.
//!
//! Start a server (`nats-server -js -a 127.0.0.1`, which `scripts/ensure-nats-server` installs, or
//! `docker compose up -d nats`), then
//! `cargo run -p priorities -- run` (`--nats-url` or `CELERITY_NATS_URL` names another server).
//! It queues a backlog of standard jobs, then premium jobs (priority 8 from their route) and last a
//! critical premium job (priority 9 at the call), before any worker runs. Then it starts a worker
//! of one slot on each queue, as the reference's `celery worker -Q high` and `-Q default`, and
//! prints when each job started. The critical job starts first on the premium queue, and every
//! premium job starts while standard jobs are still queued; it fails if either does not happen.

use std::time::Duration;

use celerity::{
    App, ApplyOptions, AsyncResult, Client, NatsConfig, Shutdown, WorkerConfig, WorkerHandle,
};
use clap::Parser;

/// How long each job takes.
const JOB_TIME: Duration = Duration::from_millis(100);
/// How many standard jobs are queued before the premium ones.
const N_STANDARD: u32 = 12;
/// How many premium jobs follow them (besides the critical one).
const N_PREMIUM: u32 = 3;
/// How long the jobs may take in all.
const WAIT: Duration = Duration::from_secs(30);

/// A premium user's report.
#[celerity::task(name = "tasks.premium_user_task")]
async fn premium_user_task(user_id: u32) -> String {
    render_report(user_id).await
}

/// A standard user's report.
#[celerity::task(name = "tasks.standard_user_task")]
async fn standard_user_task(user_id: u32) -> String {
    render_report(user_id).await
}

async fn render_report(user_id: u32) -> String {
    tokio::time::sleep(JOB_TIME).await;
    format!("report for user {user_id}")
}

/// A job sent, and what it is.
struct Job {
    label: String,
    premium: bool,
    priority: u8,
    result: AsyncResult<String>,
}

/// A job that ran: when it started, on which worker.
struct Started {
    at_ms: u64,
    worker: String,
    label: String,
    premium: bool,
    priority: u8,
}

#[derive(Debug, Parser)]
#[command(about = "Premium versus standard priorities on separate queues")]
enum Command {
    /// Queue the jobs, start a worker per queue in this process and print when each job started.
    Run(celerity::cli::NatsArgs),
}

fn main() -> anyhow::Result<()> {
    let Command::Run(nats) = Command::parse();
    celerity::cli::init_logging("warn");
    let nats = nats.config();
    let app = App::builder()
        .namespace("priorities")
        .queues(["premium", "standard"])
        .default_queue("standard")
        .task(premium_user_task)
        .task(standard_user_task)
        // The reference's `@task(queue="high", priority=8)`: a task's attribute names only its
        // queue, so a route gives both.
        .route_with_priority("tasks.premium_*", "premium", 8)
        .build()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let client = runtime.block_on(app.client(&nats))?;
    let jobs = runtime.block_on(queue_jobs(&client))?;
    let workers = start_workers(&app, &nats)?;
    let outcome = runtime.block_on(report(&jobs));
    for worker in &workers {
        worker.shutdown(match outcome {
            Ok(_) => Shutdown::Warm,
            Err(_) => Shutdown::Cold,
        });
    }
    for worker in workers {
        worker.join()?;
    }
    outcome
}

/// Sends every job before any worker runs: the standard backlog first, premium work last.
async fn queue_jobs(client: &Client) -> anyhow::Result<Vec<Job>> {
    let mut jobs = Vec::new();
    for user_id in 100..100 + N_STANDARD {
        jobs.push(Job {
            label: format!("standard_user_task({user_id})"),
            premium: false,
            priority: 0,
            result: standard_user_task.delay(client, user_id).await?,
        });
    }
    for user_id in 1..=N_PREMIUM {
        jobs.push(Job {
            label: format!("premium_user_task({user_id})"),
            premium: true,
            priority: 8,
            result: premium_user_task.delay(client, user_id).await?,
        });
    }
    // The reference's `critical_task.apply_async(args=[data], queue="high", priority=9)`: the
    // call's priority beats the route's; the queue still comes from the route.
    let options = ApplyOptions::new().priority(9);
    jobs.push(Job {
        label: "premium_user_task(0), critical".to_owned(),
        premium: true,
        priority: 9,
        result: premium_user_task.apply_async(client, (0,), options).await?,
    });
    println!(
        "queued {N_STANDARD} standard jobs, then {} premium jobs (the last one critical)",
        N_PREMIUM + 1
    );
    Ok(jobs)
}

/// One worker of one slot per queue, as the reference's `celery worker -Q high -c ...
/// --prefetch-multiplier=1`, both started at once, so neither queue gets a head start.
fn start_workers(app: &App, nats: &NatsConfig) -> anyhow::Result<Vec<WorkerHandle>> {
    std::thread::scope(|scope| {
        let starting: Vec<_> = ["standard", "premium"]
            .map(|queue| {
                let config = WorkerConfig::new()
                    .queues([queue])
                    .concurrency(1)
                    .prefetch_multiplier(1)
                    .hostname(format!("{queue}-worker"));
                scope.spawn(|| celerity::worker::spawn(app.clone(), nats.clone(), config))
            })
            .into();
        starting
            .into_iter()
            .map(|start| match start.join() {
                Ok(worker) => Ok(worker?),
                Err(_) => Err(anyhow::anyhow!("a worker's start panicked")),
            })
            .collect()
    })
}

async fn report(jobs: &[Job]) -> anyhow::Result<()> {
    let mut started = Vec::new();
    for job in jobs {
        job.result.get(WAIT).await?;
        let record = job
            .result
            .record()
            .await?
            .ok_or_else(|| anyhow::anyhow!("{} has no record", job.label))?;
        started.push(Started {
            at_ms: record.started_at_ms.unwrap_or(record.updated_at_ms),
            worker: record.worker.unwrap_or_default(),
            label: job.label.clone(),
            premium: job.premium,
            priority: job.priority,
        });
    }
    started.sort_by_key(|job| job.at_ms);
    let first_ms = started.first().map_or(0, |job| job.at_ms);
    println!("started (ms after the first start):");
    for job in &started {
        println!(
            "  {:>5}  {:<15}  priority {}  {}",
            job.at_ms - first_ms,
            job.worker,
            job.priority,
            job.label
        );
    }
    let first_premium = started.iter().find(|job| job.premium);
    anyhow::ensure!(
        first_premium.is_some_and(|job| job.priority == 9),
        "the critical job did not start first on the premium queue"
    );
    println!("the priority-9 job started first on the premium queue, before the priority-8 ones");
    let last_start = |premium: bool| {
        started
            .iter()
            .filter(|job| job.premium == premium)
            .map(|job| job.at_ms - first_ms)
            .max()
            .unwrap_or_default()
    };
    let (last_premium, last_standard) = (last_start(true), last_start(false));
    anyhow::ensure!(
        last_premium < last_standard,
        "premium work waited for the standard backlog: its last job started at +{last_premium} ms, the backlog's at +{last_standard} ms"
    );
    println!(
        "premium work started first: its last job started at +{last_premium} ms, while the standard backlog queued before it started its last job at +{last_standard} ms"
    );
    Ok(())
}
