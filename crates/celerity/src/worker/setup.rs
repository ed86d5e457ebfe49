//! What a worker provisions before it consumes: the streams, consumers and buckets it uses
//! (through `nats::provision`), each queue's subscriptions, the revoked ids and the stored
//! settings, retried with backoff until JetStream answers.
//!
//! Nothing here runs once the worker consumes; the watches that keep the revoked ids and settings
//! current are `worker::revocations` and `worker::watches`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, kv};
use celerity_proto::{Layout, QueueName};
use futures_util::StreamExt;

use crate::app::App;
use crate::nats::provision::{self, ProvisionError};
use crate::nats::server::NewTaskSignal;
use crate::result_store::ResultStore;
use crate::worker::revocations::Revocations;
use crate::worker::{chord, handbacks, limits, queue, settings, watches};

/// How long a chord partition's lease outlives a worker that stopped renewing it.
pub(super) const CHORD_LEASE_TTL: Duration = Duration::from_secs(6);

/// What the worker provisions before it starts consuming.
pub(super) struct Setup<'a> {
    pub(super) js: &'a jetstream::Context,
    pub(super) layout: &'a Layout,
    pub(super) app: &'a App,
    pub(super) queues: &'a [QueueName],
    pub(super) ack_wait: Duration,
    pub(super) client: &'a async_nats::Client,
    pub(super) hostname: &'a Arc<str>,
    pub(super) waiting_room: limits::WaitingRoom,
    pub(super) priority_weights: Option<[u32; 10]>,
    /// This worker runs the periodic-task scheduler, and needs the beat bucket.
    pub(super) beat: bool,
}

/// One attempt at provisioning failed (it is retried).
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error(transparent)]
    Queue(#[from] QueueSetupError),
    #[error("cannot read the status of the revoked bucket")]
    RevokedStatus(#[source] kv::StatusError),
    #[error("cannot list the revoked ids")]
    RevokedKeys(#[source] kv::WatchError),
    #[error("cannot read a revoked id")]
    RevokedKey(#[source] kv::WatcherError),
    #[error("cannot list the stored settings")]
    SettingsKeys(#[source] kv::WatchError),
    #[error("cannot read the name of a stored setting")]
    SettingsKey(#[source] kv::WatcherError),
    #[error("cannot read the stored setting {key}")]
    SettingsEntry {
        key: String,
        #[source]
        source: kv::EntryError,
    },
}

/// Everything provisioned for a worker.
pub(super) struct Provisioned {
    pub(super) store: ResultStore,
    pub(super) queues: Vec<queue::QueueSetup>,
    pub(super) chords: chord::ChordBackend,
    pub(super) delayed: PullConsumer,
    pub(super) revoked: RevokedIds,
    pub(super) handbacks: handbacks::Handbacks,
    pub(super) settings: Settings,
    /// The beat bucket, when this worker runs the scheduler.
    pub(super) beat: Option<kv::Store>,
}

impl Provisioned {
    /// The shortest AckWait of the queue consumers (`configured` when there are none): in-progress
    /// acks must beat the AckWait the shared consumers really have, which the first worker to
    /// create them chose.
    pub(super) fn ack_wait(&self, configured: Duration) -> Duration {
        self.queues
            .iter()
            .flat_map(|setup| setup.consumers.iter().flatten())
            .map(|consumer| consumer.cached_info().config.ack_wait)
            .min()
            .unwrap_or(configured)
    }
}

/// The settings bucket, and the rate limits and priority weights this worker keeps from it.
pub(super) struct Settings {
    pub(super) bucket: kv::Store,
    pub(super) limits: limits::RateLimits,
    pub(super) weights: settings::PriorityWeights,
}

/// The revoked ids: the bucket, and the set this worker keeps from it.
pub(super) struct RevokedIds {
    pub(super) bucket: kv::Store,
    pub(super) ids: Revocations,
}

impl Setup<'_> {
    /// Creates or opens everything the worker needs, retrying until the server's JetStream answers.
    ///
    /// # Errors
    /// The [`ProvisionError`] of a server that refused the settings themselves (replicas on a
    /// server that is not clustered, a size limit its store cannot reserve): trying again cannot
    /// succeed, so the worker stops with what to change.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped call leaves at most streams, consumers and buckets created, which
    /// the next worker opens as they are.
    pub(super) async fn provision_with_retry(&self) -> Result<Provisioned, ProvisionError> {
        use backon::Retryable;
        // The connect loop's backoff (100 ms doubling to 5 s) has no end, so the retry returns
        // only with a success or a refusal; the loop keeps that true should it ever end.
        loop {
            let provisioned = (|| self.provision_once())
                .retry(crate::nats::SERVER_BACKOFF)
                .when(|error| error.refused().is_none())
                .notify(|error, delay| {
                    tracing::warn!(error = %crate::error_chain(error), retry_in_ms = delay.as_millis() as u64, "JetStream is not ready; retrying");
                })
                .await;
            match provisioned {
                Ok(done) => return Ok(done),
                Err(error) => {
                    if let Some(refused) = error.into_refused() {
                        return Err(refused);
                    }
                }
            }
        }
    }

    async fn provision_once(&self) -> Result<Provisioned, SetupError> {
        let Setup { js, layout, .. } = *self;
        let expiry = self.app.settings().result_expires;
        let storage = &self.app.settings().storage;
        let kv = provision::results_bucket(js, layout, storage, expiry).await?;
        provision::dead_letter_stream(js, layout, storage).await?;
        provision::events_stream(js, layout, storage).await?;
        let chords = chord::ChordBackend {
            stream: provision::chord_stream(js, layout, storage, expiry).await?,
            chords: provision::chords_bucket(js, layout, storage, expiry).await?,
            leases: provision::leases_bucket(js, layout, storage, CHORD_LEASE_TTL).await?,
            lease_ttl: CHORD_LEASE_TTL,
        };
        let delayed = provision::delayed_stream(js, layout, storage).await?;
        let queues = self.queue_setups().await?;
        let revoked = self.revoked_ids().await?;
        let handbacks_kv = provision::handbacks_bucket(js, layout, storage, expiry).await?;
        let handbacks = handbacks::Handbacks::new(handbacks_kv, layout.clone());
        let settings = self.settings().await?;
        let beat = match self.beat {
            true => Some(provision::beat_bucket(js, layout, storage).await?),
            false => None,
        };
        Ok(Provisioned {
            beat,
            settings,
            store: ResultStore::new(kv, js.clone(), layout.clone(), Some(self.hostname.clone())),
            queues,
            chords,
            delayed,
            handbacks,
            revoked,
        })
    }

    /// Every queue's stream, consumers and subscriptions, with the new-task signal the server
    /// supports.
    async fn queue_setups(&self) -> Result<Vec<queue::QueueSetup>, SetupError> {
        let signal = NewTaskSignal::for_client(self.client);
        tracing::info!(
            server = %self.client.server_info().version,
            "learning of new tasks from {}",
            match signal {
                NewTaskSignal::MaxBytesProbe => "max-bytes probes",
                NewTaskSignal::Republish => "republished doorbells",
            }
        );
        let provisioning = QueueProvisioning {
            js: self.js,
            layout: self.layout,
            app: self.app,
            client: self.client,
            ack_wait: self.ack_wait,
        };
        let mut setups = Vec::with_capacity(self.queues.len());
        for queue in self.queues {
            setups.push(provisioning.queue_setup(queue, signal).await?);
        }
        Ok(setups)
    }

    /// The revoked bucket and the ids it holds now: revocations made before this worker started
    /// apply to it, so they are loaded before it consumes. They count from now until the watch,
    /// which starts next, brings each one's real time.
    async fn revoked_ids(&self) -> Result<RevokedIds, SetupError> {
        let expiry = self.app.settings().result_expires;
        let bucket =
            provision::revoked_bucket(self.js, self.layout, &self.app.settings().storage, expiry)
                .await?;
        let status = bucket.status().await.map_err(SetupError::RevokedStatus)?;
        let ids = Revocations::new(status.max_age());
        let mut keys = bucket.keys().await.map_err(SetupError::RevokedKeys)?;
        let loaded_at = crate::clock::now_ms();
        while let Some(key) = keys.next().await {
            ids.insert(key.map_err(SetupError::RevokedKey)?, loaded_at);
        }
        Ok(RevokedIds { bucket, ids })
    }

    /// The settings bucket and the rates bucket; stored settings are applied before consuming, so
    /// a rate limit changed before this worker started holds from its first task.
    async fn settings(&self) -> Result<Settings, SetupError> {
        let bucket =
            provision::settings_bucket(self.js, self.layout, &self.app.settings().storage).await?;
        let rates =
            provision::rates_bucket(self.js, self.layout, &self.app.settings().storage).await?;
        let limits = limits::RateLimits::new(
            self.app.clone(),
            self.hostname,
            self.waiting_room.clone(),
            rates,
        );
        let weights = settings::PriorityWeights::new(self.hostname, self.priority_weights);
        let mut keys = bucket.keys().await.map_err(SetupError::SettingsKeys)?;
        while let Some(key) = keys.next().await {
            let key = key.map_err(SetupError::SettingsKey)?;
            let entry = bucket
                .entry(key.as_str())
                .await
                .map_err(|source| SetupError::SettingsEntry { key, source })?;
            if let Some(entry) = entry {
                watches::apply_setting(&limits, &weights, &entry);
            }
        }
        Ok(Settings {
            bucket,
            limits,
            weights,
        })
    }
}

/// What provisioning one queue takes: at start, and for `add_consumer` at runtime.
#[derive(Clone, Copy)]
pub(super) struct QueueProvisioning<'a> {
    pub(super) js: &'a jetstream::Context,
    pub(super) layout: &'a Layout,
    pub(super) app: &'a App,
    pub(super) client: &'a async_nats::Client,
    /// The AckWait of consumers it creates.
    pub(super) ack_wait: Duration,
}

/// Why a queue's stream, consumers or subscriptions could not be set up.
#[derive(Debug, thiserror::Error)]
pub(super) enum QueueSetupError {
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error("cannot subscribe to the doorbells or request inboxes of queue {0}")]
    Subscribe(QueueName, #[source] async_nats::SubscribeError),
}

impl SetupError {
    /// The provisioning error of a server that refused the settings for good.
    fn refused(&self) -> Option<&ProvisionError> {
        match self {
            SetupError::Provision(error) | SetupError::Queue(QueueSetupError::Provision(error)) => {
                Some(error).filter(|error| error.is_permanent())
            }
            _ => None,
        }
    }

    fn into_refused(self) -> Option<ProvisionError> {
        match self {
            SetupError::Provision(error) | SetupError::Queue(QueueSetupError::Provision(error)) => {
                Some(error).filter(ProvisionError::is_permanent)
            }
            _ => None,
        }
    }
}

impl QueueProvisioning<'_> {
    /// One queue's stream, its level consumers and the subscriptions its actor reads.
    pub(super) async fn queue_setup(
        &self,
        queue: &QueueName,
        signal: NewTaskSignal,
    ) -> Result<queue::QueueSetup, QueueSetupError> {
        let QueueProvisioning { js, layout, .. } = *self;
        let levels = &self.app.settings().priority_steps;
        let stream =
            provision::queue_stream(js, layout, &self.app.settings().storage, queue, levels)
                .await?;
        // One consumer per level in use; `None` for levels outside the priority steps.
        let mut consumers = vec![None; 10];
        for priority in levels {
            let consumer =
                provision::level_consumer(&stream, layout, queue, *priority, self.ack_wait).await?;
            consumers[priority.get() as usize] = Some(consumer);
        }
        let signal = self.signal(queue, signal).await?;
        // One inbox per queue for every pull request's answers (a subscription per request
        // would cost a SUB and an UNSUB per fetch).
        let inbox = self.client.new_inbox();
        let pulls = self.subscribe(queue, format!("{inbox}.>")).await?;
        // And one for the idle wait (a long-poll request), so its message is told from the
        // pull's by subscription: a task message carries its stream subject, not the reply.
        let wait_inbox = self.client.new_inbox();
        let waits = self.subscribe(queue, format!("{wait_inbox}.>")).await?;
        Ok(queue::QueueSetup {
            queue: queue.clone(),
            consumers,
            signal,
            inbox,
            pulls,
            wait_inbox,
            waits,
        })
    }

    /// The subscriptions through which `queue`'s actor learns of new tasks.
    async fn signal(
        &self,
        queue: &QueueName,
        signal: NewTaskSignal,
    ) -> Result<queue::SignalSetup, QueueSetupError> {
        match signal {
            NewTaskSignal::Republish => {
                // One doorbell subscription per level, so that a level known to have work can
                // stop hearing its doorbells (the queue actor unsubscribes it while it has a
                // backlog).
                let mut bells = Vec::from_iter(std::iter::repeat_with(|| None).take(10));
                for priority in &self.app.settings().priority_steps {
                    let subject = self.layout.doorbell_subject(queue, *priority);
                    bells[priority.get() as usize] = Some(queue::LevelBell {
                        subscriber: self.subscribe(queue, subject.clone()).await?,
                        subject,
                    });
                }
                Ok(queue::SignalSetup::RepublishedDoorbells(bells))
            }
            NewTaskSignal::MaxBytesProbe => {
                // One inbox for the answers to every level's max-bytes probes.
                let inbox = self.client.new_inbox();
                Ok(queue::SignalSetup::MaxBytesProbes {
                    replies: self.subscribe(queue, format!("{inbox}.>")).await?,
                    inbox,
                })
            }
        }
    }

    async fn subscribe(
        &self,
        queue: &QueueName,
        subject: String,
    ) -> Result<async_nats::Subscriber, QueueSetupError> {
        self.client
            .subscribe(subject)
            .await
            .map_err(|error| QueueSetupError::Subscribe(queue.clone(), error))
    }
}
