//! Filling the store from NATS: connect (again and again until the server answers), then follow
//! the events stream from `--history` ago, so a restarted dashboard has its recent history back,
//! and on into the present.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use celerity::NatsConfig;
use celerity::events::{EventError, Since, follow};
use futures_util::StreamExt as _;

use crate::shared::Shared;
use celerity::clock::now_ms;

/// How long to wait before trying again after NATS or the events stream is not there.
const RETRY_EVERY: Duration = Duration::from_secs(2);

/// Connects to NATS, retrying until it answers.
pub(crate) async fn connect(shared: &Shared, config: &NatsConfig) -> async_nats::Client {
    let mut told = false;
    loop {
        match config.connect().await {
            Ok(client) => {
                shared.set_nats(client.clone());
                if told {
                    tracing::info!("connected to NATS");
                }
                return client;
            }
            Err(error) => {
                if !told {
                    tracing::warn!(error = %celerity_error_chain(&error), "cannot reach NATS yet; trying again every 2 s");
                    told = true;
                }
                tokio::time::sleep(RETRY_EVERY).await;
            }
        }
    }
}

/// The error and its causes on one line.
pub(crate) fn celerity_error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Follows the events stream forever, from `history` ago.
pub(crate) async fn follow_events(
    shared: Arc<Shared>,
    client: async_nats::Client,
    history: Duration,
) {
    let since_ms = now_ms().saturating_sub(history.as_millis() as u64);
    shared.history.since_ms.store(since_ms, Ordering::Relaxed);
    let mut since = Since::Time(since_ms);
    let mut last_told = None;
    loop {
        match follow(&client, &shared.namespace, since).await {
            Ok(mut events) => {
                if events.caught_up() {
                    shared.history.loaded.store(true, Ordering::Relaxed);
                }
                while let Some(item) = events.next().await {
                    match item {
                        Ok(event) => {
                            since = Since::Time(event.at_ms() + 1);
                            if !shared.history.loaded.load(Ordering::Relaxed) {
                                shared.history.replayed.fetch_add(1, Ordering::Relaxed);
                            }
                            shared.store().apply(event);
                        }
                        Err(error) => {
                            tracing::warn!(error = %celerity_error_chain(&error), "skipping an unreadable event")
                        }
                    }
                    if events.caught_up() {
                        shared.history.loaded.store(true, Ordering::Relaxed);
                    }
                }
            }
            Err(error) => {
                let text = celerity_error_chain(&error);
                if last_told.as_ref() != Some(&text) {
                    match error {
                        EventError::NoStream { .. } => {
                            tracing::info!("{text}; waiting for a worker to create it")
                        }
                        _ => {
                            tracing::warn!(error = %text, "cannot follow the events stream; trying again every 2 s")
                        }
                    }
                    last_told = Some(text);
                }
                // With no stream there is no history to wait for.
                shared.history.loaded.store(true, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}
