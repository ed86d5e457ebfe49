//! The state every handler and background task shares: the store, the NATS connection once
//! there is one, the latest queue reading, and the live updates' channel.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use async_nats::jetstream;
use celerity::Control;
use celerity_proto::{Layout, Namespace};
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::live::Frame;
use crate::queues::QueuesReading;
use crate::store::Store;

/// Frames a slow page may fall behind before it skips some (it then catches up from the next).
const LIVE_CAPACITY: usize = 64;

/// A connection to the deployment.
#[derive(Debug, Clone)]
pub(crate) struct Nats {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) control: Control,
}

impl Nats {
    fn new(client: async_nats::Client, layout: &Layout) -> Self {
        Self {
            js: jetstream::new(client.clone()),
            control: Control::new(client.clone(), layout.clone()),
            client,
        }
    }

    /// Whether the connection is up right now.
    pub(crate) fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// What the history replay has done.
#[derive(Debug, Default)]
pub(crate) struct History {
    /// Set once the replay of the events stream has reached the present.
    pub(crate) loaded: AtomicBool,
    /// Events read back so far.
    pub(crate) replayed: AtomicU64,
    /// From when, Unix milliseconds.
    pub(crate) since_ms: AtomicU64,
}

/// Everything shared.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) layout: Layout,
    pub(crate) namespace: Namespace,
    pub(crate) jaeger_url: Option<String>,
    store: Mutex<Store>,
    nats: RwLock<Option<Nats>>,
    pub(crate) queues: Mutex<QueuesReading>,
    pub(crate) history: History,
    pub(crate) live: broadcast::Sender<Frame>,
    /// Task events per second, as last measured (an f64's bits).
    events_per_s: AtomicU64,
    /// Whether the last live tick had to leave tasks out.
    pub(crate) sampling: AtomicBool,
}

impl Shared {
    pub(crate) fn new(
        namespace: Namespace,
        max_tasks: usize,
        jaeger_url: Option<String>,
    ) -> Arc<Self> {
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        Arc::new(Self {
            layout: Layout::new(namespace.clone()),
            namespace,
            jaeger_url: jaeger_url.map(|url| url.trim_end_matches('/').to_owned()),
            store: Mutex::new(Store::new(max_tasks)),
            nats: RwLock::new(None),
            queues: Mutex::new(QueuesReading::default()),
            history: History::default(),
            live,
            events_per_s: AtomicU64::new(0),
            sampling: AtomicBool::new(false),
        })
    }

    /// The store, locked. Hold it briefly: never across an await.
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn set_nats(&self, client: async_nats::Client) {
        let nats = Nats::new(client, &self.layout);
        *self.nats.write().unwrap_or_else(|e| e.into_inner()) = Some(nats);
    }

    /// The connection, if one was ever made (it may be reconnecting).
    pub(crate) fn nats_handle(&self) -> Option<Nats> {
        self.nats.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The connection, or the error a request that needs NATS answers with.
    pub(crate) fn nats(&self) -> Result<Nats, ApiError> {
        match self.nats_handle() {
            Some(nats) if nats.is_connected() => Ok(nats),
            _ => Err(ApiError::nats_down()),
        }
    }

    pub(crate) fn set_events_per_s(&self, rate: f64) {
        self.events_per_s.store(rate.to_bits(), Ordering::Relaxed);
    }

    pub(crate) fn events_per_s(&self) -> f64 {
        f64::from_bits(self.events_per_s.load(Ordering::Relaxed))
    }
}
