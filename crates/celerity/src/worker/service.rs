//! The worker's registration with the NATS service API, so `nats micro ls`, `$SRV.PING`,
//! `$SRV.INFO` and `$SRV.STATS` see every worker: one service instance per worker, named
//! `celerity-<ns>` ([`celerity_proto::Layout::service_name`]).
//!
//! The instance carries the worker's hostname, namespace, queues and concurrency in its metadata
//! and has one endpoint, `stats`, on `<ns>.svc.<worker token>.stats`: a request there is answered
//! with the worker's `StatsResult` (the `stats` control command's record), and `$SRV.STATS` carries
//! the same record as the endpoint's `data`.
//! Registration is an extra, not a condition of running: a worker that cannot register logs it
//! and runs on. Control commands stay on their own subjects (`worker/control.rs`).

use std::collections::HashMap;

use async_nats::service::{self, ServiceExt as _};
use celerity_proto::QueueName;
use futures_util::StreamExt as _;

use crate::worker::SharedHandle;

/// What the instance says it is.
const DESCRIPTION: &str = "Celerity worker: runs tasks from JetStream queues";

/// The version the instance reports: the runtime's crate version.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The name of the instance's one endpoint.
const STATS_ENDPOINT: &str = "stats";

/// The registration could not be made.
#[derive(Debug, thiserror::Error)]
enum RegisterError {
    #[error("cannot start the service {name}")]
    Start {
        name: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("cannot add the stats endpoint on {subject}")]
    Endpoint {
        subject: String,
        #[source]
        source: async_nats::Error,
    },
}

/// A worker's service instance and the task that answers its `stats` endpoint.
pub(crate) struct Registration {
    service: service::Service,
    answering: tokio::task::JoinHandle<()>,
}

impl Registration {
    /// Registers the worker; a failure is logged and gives `None`, and the worker runs on.
    /// Call on the worker's runtime.
    pub(crate) async fn start(shared: SharedHandle, queues: &[QueueName]) -> Option<Self> {
        let name = shared.layout.service_name();
        match register(shared, queues).await {
            Ok(registration) => {
                tracing::info!(service = %name, "registered with the NATS service API");
                Some(registration)
            }
            Err(error) => {
                tracing::warn!(
                    error = %crate::error_chain(&error),
                    "cannot register with the NATS service API: `nats micro` and $SRV requests will not see this worker; it runs on"
                );
                None
            }
        }
    }

    /// Leaves the service: the instance no longer answers `$SRV` requests nor its endpoint.
    pub(crate) async fn stop(self) {
        self.answering.abort();
        if let Err(error) = self.service.stop().await {
            tracing::debug!(error = %error, "cannot stop the service instance");
        }
    }
}

async fn register(
    shared: SharedHandle,
    queues: &[QueueName],
) -> Result<Registration, RegisterError> {
    let name = shared.layout.service_name();
    let queue_names: Vec<String> = queues.iter().map(ToString::to_string).collect();
    let metadata = HashMap::from([
        ("hostname".to_owned(), shared.hostname.to_string()),
        (
            "namespace".to_owned(),
            shared.layout.namespace().to_string(),
        ),
        ("queues".to_owned(), queue_names.join(",")),
        ("concurrency".to_owned(), shared.pool.size().to_string()),
    ]);
    let observed = shared.clone();
    let service = shared
        .nats
        .service_builder()
        .description(DESCRIPTION)
        .metadata(metadata)
        .stats_handler(move |_endpoint, _stats| stats(&observed))
        .start(&name, VERSION)
        .await
        .map_err(|source| RegisterError::Start { name, source })?;
    let subject = shared.layout.service_stats_subject(&shared.hostname);
    let endpoint = service
        .endpoint_builder()
        .name(STATS_ENDPOINT)
        .add(&subject)
        .await
        .map_err(|source| RegisterError::Endpoint { subject, source })?;
    let answering = shared.runtime.spawn(answer_stats(endpoint, shared.clone()));
    Ok(Registration { service, answering })
}

/// The worker's `StatsResult` as JSON.
fn stats(shared: &SharedHandle) -> serde_json::Value {
    // The queues and slots now (`add_consumer` and `pool_grow` change them), not at registration.
    let stats = shared
        .observer
        .stats(&shared.queues.names(), shared.pool.size());
    serde_json::to_value(stats).unwrap_or_else(|error| {
        tracing::error!(error = %error, "cannot encode the worker's stats");
        serde_json::Value::Null
    })
}

/// Answers each request to the `stats` endpoint with the worker's `StatsResult`, until aborted.
///
/// # Cancel safety
/// Cancel safe: aborted, it answers nothing more.
async fn answer_stats(mut endpoint: service::endpoint::Endpoint, shared: SharedHandle) {
    while let Some(request) = endpoint.next().await {
        let body = stats(&shared).to_string();
        if let Err(error) = request.respond(Ok(body.into())).await {
            tracing::debug!(error = %error, "cannot answer a stats request");
        }
    }
}
