//! The reference's order-processing pipeline with content-based routing: each order runs as a chain
//! `verify_inventory -> process_payment -> notify_customer`, and where each step runs depends on
//! the task's name and on the order itself.
//!
//! Start a server (`nats-server -js -a 127.0.0.1`, which `scripts/ensure-nats-server` installs, or
//! `docker compose up -d nats`), then
//! `cargo run -p order_pipeline -- run` (`--nats-url` or `CELERITY_NATS_URL` names another server).
//! It starts one worker per queue in this process (`high`, `default`, `notifications`,
//! `analytics`, each named after its queue), sends three orders and then a sales summary, and
//! prints which worker ran each step: a large order's inventory check and payment run on the high
//! queue, a small order's on the default queue, every notification on the notifications queue, and
//! the summary on the analytics queue. It fails if a step ran anywhere else.

use std::time::Duration;

use celerity::routing::Route;
use celerity::{App, AsyncResult, Chain, Client, NatsConfig, Shutdown, WorkerConfig, WorkerHandle};
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Orders above this total (in cents) take the high queue, as the reference's `total > 1000`.
const LARGE_ORDER_CENTS: u64 = 100_000;
/// The queues of this deployment; each gets its own worker, named `<queue>-worker`.
const QUEUES: [&str; 4] = ["high", "default", "notifications", "analytics"];
/// How long an order may take.
const WAIT: Duration = Duration::from_secs(30);

/// An order, as the shop sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u32,
    customer: String,
    items: Vec<Item>,
    total_cents: u64,
}

/// One line of an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Item {
    sku: String,
    quantity: u32,
}

/// A charged order.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payment {
    order_id: u32,
    customer: String,
    charged_cents: u64,
    charge_id: String,
}

/// Why an order cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("order {order_id}: {sku:?} is not in stock")]
struct OutOfStock {
    order_id: u32,
    sku: String,
}

/// The stock the inventory check consults.
const IN_STOCK: [&str; 4] = ["lamp", "desk", "chair", "monitor"];

/// Checks that every item is in stock and reserves it.
#[celerity::task(name = "orders.verify_inventory")]
async fn verify_inventory(order: Order) -> Result<Order, OutOfStock> {
    match order
        .items
        .iter()
        .find(|item| !IN_STOCK.contains(&item.sku.as_str()))
    {
        Some(item) => Err(OutOfStock {
            order_id: order.id,
            sku: item.sku.clone(),
        }),
        None => Ok(order),
    }
}

/// Charges the customer for a verified order.
#[celerity::task(name = "orders.process_payment")]
async fn process_payment(order: Order) -> Payment {
    Payment {
        order_id: order.id,
        charge_id: format!("ch-{}", order.id),
        customer: order.customer,
        charged_cents: order.total_cents,
    }
}

/// Tells the customer the order is paid; returns the message sent.
#[celerity::task(name = "orders.notify_customer")]
async fn notify_customer(payment: Payment) -> String {
    format!(
        "{}: order {} is paid, {} charged ({})",
        payment.customer,
        payment.order_id,
        dollars(payment.charged_cents),
        payment.charge_id
    )
}

/// Adds up the day's payments.
#[celerity::task(name = "analytics.summarize_sales")]
async fn summarize_sales(payments: Vec<Payment>) -> String {
    let total: u64 = payments.iter().map(|payment| payment.charged_cents).sum();
    format!("{} orders, {} in all", payments.len(), dollars(total))
}

fn dollars(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// The reference's `TaskRouter`, as a router function: analytics tasks by name, large orders by
/// content (any task whose first argument is an order above the limit), at priority 8. Whatever it
/// leaves goes on to the name routes, then to the default queue.
fn route_for_task(name: &str, args: &[Value], _kwargs: &Map<String, Value>) -> Option<Route> {
    if name.starts_with("analytics.") {
        return Some(Route::to("analytics"));
    }
    let total_cents = args.first()?.get("total_cents")?.as_u64()?;
    (total_cents > LARGE_ORDER_CENTS).then(|| Route::to("high").priority(8))
}

/// The reference's `process_order`: the order's content picks its workflow. Celery runs it as a
/// task that sends the chain; it needs nothing but the order, so here the producer runs it.
fn process_order(order: Order) -> Chain<String> {
    let large = order.total_cents > LARGE_ORDER_CENTS;
    // The router sees the first step's order. The payment step's argument, the verified order,
    // exists only once that step has run, after the chain was routed, so a large order names its
    // queue here, as the reference's `.set(queue="high")`.
    let payment = match large {
        true => process_payment.s(()).queue("high"),
        false => process_payment.s(()),
    };
    celerity::chain![verify_inventory.s((order,)), payment, notify_customer.s(())]
}

#[derive(Debug, Parser)]
#[command(about = "The reference's order pipeline with content-based routing")]
enum Command {
    /// Start a worker per queue in this process, send the orders and print where each step ran.
    Run(celerity::cli::NatsArgs),
}

fn main() -> anyhow::Result<()> {
    let Command::Run(nats) = Command::parse();
    celerity::cli::init_logging("warn");
    let nats = nats.config();
    let app = App::builder()
        .namespace("order-pipeline")
        .queues(QUEUES)
        .task(verify_inventory)
        .task(process_payment)
        .task(notify_customer)
        .task(summarize_sales)
        .router(route_for_task)
        .route("orders.notify_*", "notifications")
        .build()?;
    let runtime = tokio::runtime::Runtime::new()?;
    // The producer connects first: it fails at once when no server answers, a worker would retry.
    let client = runtime.block_on(app.client(&nats))?;
    let workers = start_workers(&app, &nats)?;
    let outcome = runtime.block_on(send_orders(&client));
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

/// One worker per queue, as the reference's `celery worker -Q high`, `-Q default`, ...
fn start_workers(app: &App, nats: &NatsConfig) -> anyhow::Result<Vec<WorkerHandle>> {
    QUEUES
        .iter()
        .map(|queue| {
            let config = WorkerConfig::new()
                .queues([*queue])
                .concurrency(2)
                .hostname(format!("{queue}-worker"));
            Ok(celerity::worker::spawn(app.clone(), nats.clone(), config)?)
        })
        .collect()
}

fn orders() -> Vec<Order> {
    let order = |id, customer: &str, items: &[(&str, u32)], total_cents| Order {
        id,
        customer: customer.to_owned(),
        items: items
            .iter()
            .map(|(sku, quantity)| Item {
                sku: (*sku).to_owned(),
                quantity: *quantity,
            })
            .collect(),
        total_cents,
    };
    vec![
        order(1001, "bob", &[("lamp", 2)], 8_950),
        order(1002, "alice", &[("desk", 1), ("monitor", 3)], 420_000),
        order(1003, "carol", &[("chair", 1)], 24_900),
    ]
}

async fn send_orders(client: &Client) -> anyhow::Result<()> {
    let mut sent = Vec::new();
    for order in orders() {
        let label = format!(
            "order {} ({}, {})",
            order.id,
            order.customer,
            dollars(order.total_cents)
        );
        let large = order.total_cents > LARGE_ORDER_CENTS;
        sent.push((
            label,
            large,
            process_order(order).apply_async(client).await?,
        ));
    }
    let mut payments = Vec::new();
    for (label, large, result) in &sent {
        let message = result.get(WAIT).await?;
        let steps = steps_and_workers(result).await?;
        let placed: Vec<String> = steps
            .iter()
            .map(|(task, worker)| format!("{task} on {worker}"))
            .collect();
        println!("{label}: {}", placed.join(", "));
        println!("  sent: {message}");
        let queue = if *large { "high" } else { "default" };
        let expected = [
            ("orders.verify_inventory", format!("{queue}-worker")),
            ("orders.process_payment", format!("{queue}-worker")),
            ("orders.notify_customer", "notifications-worker".to_owned()),
        ];
        anyhow::ensure!(
            steps
                .iter()
                .map(|(task, worker)| (task.as_str(), worker.clone()))
                .eq(expected),
            "{label} ran somewhere unexpected: {placed:?}"
        );
        let payment = result
            .parent()
            .ok_or_else(|| anyhow::anyhow!("{label} has no payment step"))?;
        // A parent is untyped (its step may be any task): decode it as the payment step's output.
        payments.push(serde_json::from_value::<Payment>(payment.get(WAIT).await?)?);
    }
    let summary = summarize_sales.delay(client, payments).await?;
    let text = summary.get(WAIT).await?;
    let (_, worker) = placement(&summary).await?;
    println!("analytics.summarize_sales on {worker}: {text}");
    anyhow::ensure!(
        worker == "analytics-worker",
        "the summary ran on {worker}, not on the analytics queue's worker"
    );
    println!("every step ran on the queue its route chose");
    Ok(())
}

/// Each step of the chain ending in `result`, first to last, with the worker that ran it.
async fn steps_and_workers<T>(result: &AsyncResult<T>) -> anyhow::Result<Vec<(String, String)>> {
    let mut steps = vec![placement(result).await?];
    let mut parent = result.parent();
    while let Some(step) = parent {
        steps.push(placement(step).await?);
        parent = step.parent();
    }
    steps.reverse();
    Ok(steps)
}

/// The task's name and the worker that ran it, from its record.
async fn placement<T>(result: &AsyncResult<T>) -> anyhow::Result<(String, String)> {
    let record = result
        .record()
        .await?
        .ok_or_else(|| anyhow::anyhow!("task {} has no record", result.id()))?;
    let task = record.task.map(|name| name.to_string()).unwrap_or_default();
    Ok((task, record.worker.unwrap_or_default()))
}
