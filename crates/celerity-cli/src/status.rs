//! `celerity status` (the workers that answer, like `celery status`) and `celerity result <id>`
//! (a task's state, result or error, meta, worker and times).

use anyhow::Context as _;
use clap::Args;

/// `celerity status ...`
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// One JSON object: `{"workers": [{"worker", "queues", "concurrency"}, ...]}`.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    ask: crate::AskArgs,
}

/// Prints every worker that answers a ping; false when none does.
pub(crate) async fn status(args: StatusArgs) -> anyhow::Result<bool> {
    let client = args.ask.connection.connect().await?;
    let timeout = args.ask.timeout;
    let mut replies = client.control().ping(None, timeout).await?;
    replies.sort_by(|a, b| a.worker.cmp(&b.worker));
    let workers: Vec<serde_json::Value> = replies
        .iter()
        .map(|reply| {
            let ping = reply
                .result_as::<celerity_proto::PingResult>()
                .and_then(Result::ok);
            serde_json::json!({
                "worker": reply.worker,
                "ok": reply.ok,
                "queues": ping.as_ref().map(|ping| ping.queues.clone()),
                "concurrency": ping.as_ref().map(|ping| ping.concurrency),
            })
        })
        .collect();
    if args.json {
        println!("{}", serde_json::json!({ "workers": workers }));
    } else {
        for worker in &workers {
            let queues = worker["queues"]
                .as_array()
                .map(|queues| {
                    let names: Vec<&str> = queues.iter().filter_map(|q| q.as_str()).collect();
                    names.join(", ")
                })
                .unwrap_or_default();
            println!(
                "-> {}: OK (queues: {queues}; concurrency: {})",
                worker["worker"].as_str().unwrap_or("?"),
                worker["concurrency"]
            );
        }
        match workers.len() {
            0 => eprintln!("Error: no worker answered within {timeout:?}"),
            1 => println!("\n1 node online."),
            n => println!("\n{n} nodes online."),
        }
    }
    Ok(!workers.is_empty())
}

/// `celerity result ...`
#[derive(Debug, Args)]
pub(crate) struct ResultArgs {
    /// The task id.
    task_id: String,
    /// The record as stored (JSON), instead of a summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: crate::ConnectionArgs,
}

/// Prints a task's record; false when it has none (never sent, expired or forgotten).
pub(crate) async fn result(args: ResultArgs) -> anyhow::Result<bool> {
    let client = args.connection.connect().await?;
    let handle = client
        .async_result::<serde_json::Value>(&args.task_id)
        .context("invalid task id")?;
    let Some(record) = handle.record().await? else {
        if args.json {
            println!("null");
        }
        eprintln!(
            "task {} has no record: it was never sent, or its result expired or was forgotten (state UNKNOWN)",
            args.task_id
        );
        return Ok(false);
    };
    if args.json {
        println!("{}", serde_json::to_string(&record)?);
        return Ok(true);
    }
    let time = |ms: u64| crate::table::time(Some(ms));
    println!("id:       {}", record.id);
    println!("state:    {}", record.state);
    if let Some(task) = &record.task {
        println!("task:     {task}");
    }
    if let Some(result) = &record.result {
        println!("result:   {result}");
    }
    if let Some(error) = &record.error {
        println!("error:    {}: {}", error.kind, error.message);
        for cause in &error.causes {
            println!("  caused by: {cause}");
        }
    }
    if let Some(meta) = &record.meta {
        println!("meta:     {meta}");
    }
    if record.retries > 0 {
        println!("retries:  {}", record.retries);
    }
    if let Some(worker) = &record.worker {
        println!("worker:   {worker}");
    }
    if let Some(started) = record.started_at_ms {
        println!("started:  {}", time(started));
    }
    println!("updated:  {}", time(record.updated_at_ms));
    if let Some(trace_id) = &record.trace_id {
        println!("trace:    {trace_id}");
    }
    Ok(true)
}
