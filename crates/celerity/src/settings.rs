//! [`Settings`]: what the producers and workers of one deployment share (namespace, default
//! queue, result expiry, body encoding, priority steps, storage, routes, signal hooks).
//!
//! Built by [`crate::AppBuilder`]; read by the client and the workers. It sits below both, so
//! neither names the app to read it.

use std::time::Duration;

use celerity_proto::{ContentType, Layout, Namespace, Priority, QueueName};

use crate::routing::Routes;
use crate::signals::Signals;

/// Settings shared by producers and workers of one deployment.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    /// Prefix of every subject, stream and bucket.
    pub namespace: Namespace,
    /// Where tasks go when neither the call nor the task names a queue.
    pub default_queue: QueueName,
    /// How long result records live.
    pub result_expires: Duration,
    /// Whether workers record RECEIVED when they take a task (one more write per task).
    pub track_received: bool,
    /// How task bodies and result records are encoded.
    pub content_type: ContentType,
    /// The priority levels in use, lowest first (Celery's `priority_steps`; default all of 0 to 9).
    /// A priority is rounded down to the nearest step (up to the lowest step when below it).
    pub priority_steps: Vec<Priority>,
    /// Replicas, placement and size limits of the streams and buckets.
    pub storage: crate::storage::Storage,
    /// How tasks are routed to queues (built by [`AppBuilder::build`]).
    pub(crate) routes: Routes,
    /// The app's signal hooks (set by [`AppBuilder::signals`]).
    pub(crate) signals: Signals,
    /// Whether producers send `task-sent` events (set by [`AppBuilder::send_sent_events`]).
    pub(crate) send_sent_events: bool,
    /// Where spans go (set by [`AppBuilder::telemetry`], else from the `OTEL_*` environment).
    pub(crate) telemetry: crate::telemetry::Telemetry,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: Namespace::default(),
            default_queue: QueueName::default(),
            result_expires: Duration::from_secs(24 * 3600),
            track_received: false,
            content_type: ContentType::Json,
            priority_steps: all_levels(),
            storage: crate::storage::Storage::default(),
            routes: Routes::default_only(QueueName::default()),
            signals: Signals::default(),
            send_sent_events: true,
            telemetry: crate::telemetry::Telemetry::disabled(),
        }
    }
}

/// Every priority level, lowest first.
fn all_levels() -> Vec<Priority> {
    let mut levels: Vec<Priority> = Priority::all_descending().collect();
    levels.reverse();
    levels
}

impl Settings {
    /// Where the app's spans go: [`Telemetry::flush`](crate::telemetry::Telemetry::flush) it
    /// before a producer process exits, so its last spans are exported.
    pub fn telemetry(&self) -> &crate::telemetry::Telemetry {
        &self.telemetry
    }

    pub(crate) fn layout(&self) -> Layout {
        Layout::new(self.namespace.clone())
    }
}
