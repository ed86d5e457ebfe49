//! The reference's custom task states: a long task reports VALIDATING, PROCESSING and UPLOADING
//! with `{"step", "total"}` as it goes, and another process reads them while it runs, knowing only
//! the task's id (Celery's `AsyncResult(task_id).state` and `.info`).
//!
//! Start a server (`nats-server -js -a 127.0.0.1`, which `scripts/ensure-nats-server` installs, or
//! `docker compose up -d nats`), then
//! `cargo run -p progress -- run` (`--nats-url` or `CELERITY_NATS_URL` names another server).
//! It starts a worker in this process and a watcher process (this program's `watch <task id>`),
//! sends `long_running_task` under that id, and prints what the watcher printed: each state as it
//! changed, with its step, then the result. It fails if the watcher missed a state.
//! `progress watch <task id>` also works on its own, against a task sent by any process.

use std::process::Stdio;
use std::time::{Duration, Instant};

use celerity::{App, ApplyOptions, Client, Shutdown, TaskContext, TaskState, WorkerConfig};
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The states the task reports, in order.
const STATES: [&str; 3] = ["VALIDATING", "PROCESSING", "UPLOADING"];
/// How long each stage of the task takes.
const STAGE_TIME: Duration = Duration::from_millis(400);
/// How often the watcher reads the task's state.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long the task, and each wait for the watcher, may take.
const WAIT: Duration = Duration::from_secs(30);

/// What the task returns when it is done.
#[derive(Debug, Serialize, Deserialize)]
struct Upload {
    status: String,
    url: String,
    rows: usize,
}

/// The reference's `long_running_task`: validates, processes and uploads the data, reporting a
/// custom state with its step before each stage.
#[celerity::task(name = "tasks.long_running_task")]
async fn long_running_task(ctx: &TaskContext, data: Vec<String>) -> anyhow::Result<Upload> {
    let total = STATES.len();
    ctx.update_state(STATES[0], json!({"step": 1, "total": total}))
        .await?;
    tokio::time::sleep(STAGE_TIME).await;
    anyhow::ensure!(
        data.iter().all(|row| !row.trim().is_empty()),
        "the data has an empty row"
    );
    ctx.update_state(STATES[1], json!({"step": 2, "total": total}))
        .await?;
    tokio::time::sleep(STAGE_TIME).await;
    let processed: Vec<String> = data.iter().map(|row| row.trim().to_uppercase()).collect();
    ctx.update_state(STATES[2], json!({"step": 3, "total": total}))
        .await?;
    tokio::time::sleep(STAGE_TIME).await;
    Ok(Upload {
        status: "complete".to_owned(),
        url: format!("https://files.example.com/reports/{}.csv", ctx.id()),
        rows: processed.len(),
    })
}

#[derive(Debug, Parser)]
#[command(about = "Custom progress states, read from another process")]
enum Command {
    /// Start a worker and a watcher process, send the task and print what the watcher saw.
    Run(celerity::cli::NatsArgs),
    /// Print each state of task `task_id` as it changes, until it ends.
    Watch {
        /// The task to watch.
        task_id: String,
        /// NATS connection.
        #[command(flatten)]
        nats: celerity::cli::NatsArgs,
    },
}

fn main() -> anyhow::Result<()> {
    celerity::cli::init_logging("warn");
    let app = App::builder()
        .namespace("progress")
        .task(long_running_task)
        .build()?;
    let runtime = tokio::runtime::Runtime::new()?;
    match Command::parse() {
        Command::Watch { task_id, nats } => runtime.block_on(async {
            let client = app.client(&nats.config()).await?;
            watch(&client, &task_id).await
        }),
        Command::Run(nats) => {
            let nats = nats.config();
            // The producer connects first: it fails at once when no server answers, a worker
            // would retry.
            let client = runtime.block_on(app.client(&nats))?;
            let config = WorkerConfig::new().hostname("progress-worker");
            let worker = celerity::worker::spawn(app, nats, config)?;
            let outcome = runtime.block_on(run_with_watcher(&client));
            worker.shutdown(match outcome {
                Ok(_) => Shutdown::Warm,
                Err(_) => Shutdown::Cold,
            });
            worker.join()?;
            outcome
        }
    }
}

/// The reference's `AsyncResult(task_id)` read in a loop: prints the state and its step each time
/// they change, then the result. Reading again and again is the reference's way to follow
/// progress; waiting for the end alone needs none (`get` waits on the result itself).
async fn watch(client: &Client, task_id: &str) -> anyhow::Result<()> {
    let result = client.async_result::<Upload>(task_id)?;
    let deadline = Instant::now() + WAIT;
    let mut last_seen = None;
    loop {
        let record = result.record().await?;
        let state = record
            .as_ref()
            .map_or(TaskState::Unknown, |record| record.state.clone());
        if state.is_ready() {
            break;
        }
        let meta = record.and_then(|record| record.meta);
        let seen = Some((state.clone(), meta.clone()));
        if seen != last_seen {
            let step = meta
                .as_ref()
                .and_then(|meta| Some((meta.get("step")?, meta.get("total")?)))
                .map(|(step, total)| format!(" step {step}/{total}"))
                .unwrap_or_default();
            println!("{state}{step}");
            last_seen = seen;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "task {task_id} did not finish within {WAIT:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let upload = result.get(WAIT).await?;
    println!(
        "SUCCESS {}: {} rows at {}",
        upload.status, upload.rows, upload.url
    );
    Ok(())
}

/// Starts the watcher on a fresh task id, sends the task under that id once the watcher reads its
/// state, and relays what the watcher prints.
async fn run_with_watcher(client: &Client) -> anyhow::Result<()> {
    let task_id = uuid::Uuid::now_v7().to_string();
    // The watcher connects as this process did: the flags after `run` are the NATS flags.
    let mut watcher = tokio::process::Command::new(std::env::current_exe()?)
        .arg("watch")
        .arg(&task_id)
        .args(std::env::args_os().skip(2))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = watcher
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("the watcher's output is not piped"))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    // Its first line says it has read the state once (UNKNOWN: the task is not sent yet), so it
    // will see every state from the first.
    let first = next_line(&mut lines).await?;
    println!(
        "watcher process {}: {}",
        watcher.id().unwrap_or_default(),
        first.as_deref().unwrap_or_default()
    );
    let data: Vec<String> = ["id,amount", "1,12.50", "2,7.25"].map(String::from).into();
    let options = ApplyOptions::new().task_id(&task_id);
    let result = long_running_task
        .apply_async(client, (data,), options)
        .await?;
    println!("sent tasks.long_running_task {task_id}");
    while let Some(line) = next_line(&mut lines).await? {
        println!("  watcher: {line}");
        seen.extend(line.split_whitespace().next().map(str::to_owned));
    }
    let status = tokio::time::timeout(WAIT, watcher.wait()).await??;
    anyhow::ensure!(status.success(), "the watcher failed: {status}");
    let upload = result.get(WAIT).await?;
    println!("this process's handle: SUCCESS with {}", upload.url);
    let custom: Vec<&str> = seen
        .iter()
        .map(String::as_str)
        .filter(|state| STATES.contains(state))
        .collect();
    anyhow::ensure!(
        custom == STATES,
        "the watcher saw {custom:?}, not every state in order"
    );
    println!(
        "the watcher saw every custom state in order: {}",
        STATES.join(", ")
    );
    Ok(())
}

/// The watcher's next line, waiting at most [`WAIT`].
async fn next_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> anyhow::Result<Option<String>> {
    Ok(tokio::time::timeout(WAIT, lines.next_line()).await??)
}
