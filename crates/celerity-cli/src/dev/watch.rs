//! What `celerity dev` adds for watching the cluster: the dashboard, and with `--keep-running` a
//! trickle of tasks (a chord now and then) that keeps its pages moving until Ctrl-C.

use std::time::Duration;

use anyhow::Context as _;
use celerity::{Client, NatsConfig};
use celerity_dashboard::{Dashboard, DashboardConfig, DashboardError};

use crate::demo;

/// How often the trickle sends a round of tasks.
const ROUND_INTERVAL: Duration = Duration::from_secs(1);
/// Tasks in each round, of the kinds of the batch.
const TASKS_PER_ROUND: usize = 4;
/// A chord goes with every this many rounds.
const CHORD_EVERY_ROUNDS: u64 = 15;
/// Header members of each chord.
const CHORD_SIZE: i64 = 12;
/// How long the trickle's tasks keep their waiters: nobody waits for them.
const UNWATCHED: Duration = Duration::ZERO;

/// A started dashboard, and whether it had to leave the port asked for.
pub(super) struct Started {
    pub(super) dashboard: Dashboard,
    pub(super) port_taken: bool,
}

/// Starts the dashboard on `nats`, in the demo's namespace, on loopback `port`; a port another
/// program holds (a Flower, another demo) gives way to a free one rather than failing the demo.
///
/// # Errors
/// When even a free port cannot be listened on.
pub(super) async fn start_dashboard(nats: &NatsConfig, port: u16) -> anyhow::Result<Started> {
    let config = |port| {
        let mut config = DashboardConfig::new(nats.clone());
        config.port = port;
        config.namespace = demo::NAMESPACE.to_owned();
        config
    };
    let (started, port_taken) = match Dashboard::start(config(port)).await {
        Err(DashboardError::Listen { .. }) if port != 0 => {
            (Dashboard::start(config(0)).await, true)
        }
        started => (started, false),
    };
    let dashboard =
        started.context("cannot start the demo's dashboard (or pass --no-dashboard)")?;
    Ok(Started {
        dashboard,
        port_taken,
    })
}

/// Sends a few tasks every second, continuing the batch's plan from `first_index`, and a chord
/// every [`CHORD_EVERY_ROUNDS`] rounds; returns only when a send fails.
///
/// # Errors
/// When a task or a chord is not accepted.
pub(super) async fn trickle(client: &Client, first_index: usize) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval(ROUND_INTERVAL);
    let mut index = first_index;
    for round in 0u64.. {
        ticker.tick().await;
        if round.is_multiple_of(CHORD_EVERY_ROUNDS) {
            demo::send_chord(client, CHORD_SIZE)
                .await
                .context("cannot send a chord")?;
        }
        for _ in 0..TASKS_PER_ROUND {
            let job = demo::job_at(index);
            job.send(client, UNWATCHED)
                .await
                .with_context(|| format!("cannot send {job}"))?;
            index += 1;
        }
    }
    Ok(())
}
