//! `ControlActor`: answers control requests sent to this worker or to all: `ping`, the
//! inspections (`registered`, `stats`, `active_queues`, `revoked`, `active`, `reserved`,
//! `scheduled`), and the commands (`revoke`, `rate_limit`, `priority_weights`, `pool_grow`,
//! `pool_shrink`, `add_consumer`, `cancel_consumer`, `shutdown`).
//!
//! Requests arrive on core NATS (`<ns>.control.<worker token>` and `<ns>.control.all`); a malformed
//! request gets a refusal naming what is wrong, never silence. Replies are `celerity_proto` records
//! (`*Result`). The actor reaches the queues only through the root actor (terminate, add and
//! cancel consumers, shutdown), so it knows no queue actor.

use actix::prelude::*;
use async_nats::jetstream::kv;
use celerity_proto::{
    ActiveQueue, ActiveQueuesResult, ConsumersResult, ControlCommand, ControlReply, ControlRequest,
    HeldTasksResult, PingResult, PoolResult, PriorityWeightsResult, PriorityWeightsSetting,
    QueueName, RateLimitResult, RateLimitSetting, RegisteredResult, RevocationRecord, RevokeResult,
    RevokedResult, SettingScope, ShutdownResult, TaskId, TaskName,
};

use crate::control::RevokeMode;
use crate::worker::held::Phase;
use crate::worker::pool::PoolError;
use crate::worker::root::{
    self, AddConsumer, CancelConsumer, ConsumerError, StopWorker, TerminateTask,
};
use crate::worker::scheduled::{ScheduledError, list_scheduled};
use crate::worker::shutdown::Shutdown;
use crate::worker::{SharedHandle, WorkerShared};

/// Answers control requests for one worker.
pub(crate) struct ControlActor {
    shared: SharedHandle,
    /// The root actor: it reaches the queues, and stops the worker.
    root: Addr<root::Worker>,
}

impl ControlActor {
    pub(crate) fn new(shared: SharedHandle, root: Addr<root::Worker>) -> Self {
        Self { shared, root }
    }
}

impl Actor for ControlActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let nats = self.shared.nats.clone();
        let direct = self.shared.layout.control_subject(&self.shared.hostname);
        let broadcast = self.shared.layout.control_broadcast_subject();
        let subscribe = async move {
            let direct = nats.subscribe(direct).await?;
            let broadcast = nats.subscribe(broadcast).await?;
            // The server has both subscriptions once the flush returns: requests sent after the
            // log line below reach this worker.
            if let Err(error) = nats.flush().await {
                tracing::debug!(error = %error, "cannot flush the control subscriptions");
            }
            Ok::<_, async_nats::SubscribeError>(futures_util::stream::select(direct, broadcast))
        };
        ctx.spawn(subscribe.into_actor(self).map(|requests, _actor, ctx| match requests {
            Ok(requests) => {
                ctx.add_stream(requests);
                tracing::info!("answering control requests");
            }
            Err(error) => tracing::error!(error = %error, "cannot subscribe to control requests; this worker will not answer them"),
        }));
    }
}

impl StreamHandler<async_nats::Message> for ControlActor {
    fn handle(&mut self, message: async_nats::Message, ctx: &mut Self::Context) {
        let Some(reply_to) = message.reply.clone() else {
            return;
        };
        let direct = message.subject.as_str() != self.shared.layout.control_broadcast_subject();
        let target = Target {
            shared: self.shared.clone(),
            root: self.root.clone(),
            direct,
        };
        let answer = async move {
            let (reply, stop) = target.answer(&message.payload).await;
            let nats = &target.shared.nats;
            match encode_reply(&target.shared.hostname, &reply) {
                Ok(bytes) => {
                    if let Err(error) = nats.publish(reply_to, bytes).await {
                        tracing::debug!(error = %error, "cannot answer a control request");
                    }
                }
                Err(error) => {
                    tracing::error!(error = %error, "cannot encode a control reply; the requester gets none")
                }
            }
            if let Some(mode) = stop {
                // The reply leaves before anything stops.
                if let Err(error) = nats.flush().await {
                    tracing::debug!(error = %error, "cannot flush the shutdown reply");
                }
                tracing::warn!(?mode, "shutdown requested by a control command");
                target.root.do_send(StopWorker(mode));
            }
        };
        ctx.spawn(answer.into_actor(self));
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        tracing::warn!("control subscriptions ended");
    }
}

/// Why a control command was refused; its error chain is the refusal's `error`.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("malformed control request")]
    Malformed(#[source] serde_json::Error),
    #[error("unsupported control protocol version {0}")]
    UnsupportedVersion(u32),
    #[error("unknown control command")]
    UnknownCommand,
    #[error(transparent)]
    InvalidTaskId(celerity_proto::InvalidName),
    #[error("cannot encode the revocation")]
    EncodeRevocation(#[source] serde_json::Error),
    #[error("cannot store the revocation")]
    StoreRevocation(#[source] kv::PutError),
    #[error("task {0:?} is not registered on this worker")]
    NotRegistered(String),
    #[error("cannot encode the setting")]
    EncodeSetting(#[source] serde_json::Error),
    #[error("cannot store the setting")]
    StoreSetting(#[source] kv::PutError),
    #[error("cannot delete the stored setting")]
    DeleteSetting(#[source] kv::DeleteError),
    #[error("cannot read the stored setting")]
    ReadSetting(#[source] kv::EntryError),
    #[error("cannot encode the reply")]
    EncodeReply(#[source] serde_json::Error),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    InvalidQueue(celerity_proto::InvalidName),
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    #[error(transparent)]
    Scheduled(#[from] ScheduledError),
    #[error("the worker is shutting down")]
    ShuttingDown,
}

/// The reply's bytes; a reply that cannot be encoded becomes a refusal that says so.
fn encode_reply(hostname: &str, reply: &ControlReply) -> Result<bytes::Bytes, serde_json::Error> {
    let bytes = serde_json::to_vec(reply).or_else(|error| {
        let refusal =
            ControlReply::refused(hostname, crate::error_chain(&Refusal::EncodeReply(error)));
        serde_json::to_vec(&refusal)
    })?;
    Ok(bytes.into())
}

/// What a control request acts on in this worker.
struct Target {
    shared: SharedHandle,
    root: Addr<root::Worker>,
    /// The request was addressed to this worker alone (not broadcast).
    direct: bool,
}

impl Target {
    /// The reply to the request `payload` (the command's result, or a refusal that says why),
    /// and the shutdown to start once it is sent, for a `shutdown` command.
    async fn answer(&self, payload: &[u8]) -> (ControlReply, Option<Shutdown>) {
        let hostname = self.shared.hostname.as_ref();
        let mut stop = None;
        let replied = match serde_json::from_slice::<ControlRequest>(payload) {
            Err(error) => Err(Refusal::Malformed(error)),
            Ok(request) if request.v != celerity_proto::PROTOCOL_VERSION => {
                Err(Refusal::UnsupportedVersion(request.v))
            }
            Ok(request) => match request.command {
                ControlCommand::Shutdown { cold } => {
                    stop = Some(if cold { Shutdown::Cold } else { Shutdown::Warm });
                    ControlReply::with_result(hostname, &ShutdownResult::new(cold))
                        .map_err(Refusal::EncodeReply)
                }
                command => self.run(command).await,
            },
        };
        let reply = replied.unwrap_or_else(|refusal| {
            ControlReply::refused(hostname, crate::error_chain(&refusal))
        });
        (reply, stop)
    }

    async fn run(&self, command: ControlCommand) -> Result<ControlReply, Refusal> {
        let hostname = self.shared.hostname.as_ref();
        let reply = match command {
            ControlCommand::Ping => ControlReply::with_result(
                hostname,
                &PingResult::new(self.shared.queues.names(), self.shared.pool.size()),
            ),
            ControlCommand::Registered => {
                let tasks = self.shared.app.task_names().map(ToString::to_string);
                ControlReply::with_result(hostname, &RegisteredResult::new(tasks.collect()))
            }
            ControlCommand::Stats => {
                let (queues, concurrency) = (&self.shared.queues.names(), self.shared.pool.size());
                ControlReply::with_result(
                    hostname,
                    &self.shared.observer.stats(queues, concurrency),
                )
            }
            ControlCommand::ActiveQueues => {
                ControlReply::with_result(hostname, &self.active_queues())
            }
            ControlCommand::Revoked => {
                let ids = self.shared.revoked.live_ids();
                ControlReply::with_result(hostname, &RevokedResult::new(ids))
            }
            ControlCommand::Revoke { task_id, terminate } => {
                let mode = match terminate {
                    true => RevokeMode::Terminate,
                    false => RevokeMode::Skip,
                };
                let result = self.revoke(task_id, mode).await?;
                ControlReply::with_result(hostname, &result)
            }
            ControlCommand::RateLimit {
                task,
                rate,
                global,
                reset,
            } => {
                let scope = match global {
                    true => SettingScope::Cluster,
                    false => self.scope(),
                };
                set_rate_limit(&self.shared, &task, scope, (!reset).then_some(rate)).await?;
                let (per_worker, cluster) = self.shared.limits.limits_of(&task);
                ControlReply::with_result(
                    hostname,
                    &RateLimitResult::new(task, per_worker, cluster),
                )
            }
            ControlCommand::PriorityWeights { weights, reset } => {
                let scope = self.scope();
                let key = celerity_proto::priority_weights_key(&scope);
                let setting = (!reset).then(|| PriorityWeightsSetting::new(scope, weights));
                if let Some(revision) = store_setting(&self.shared, &key, setting.as_ref()).await? {
                    self.shared.priority_weights.apply(&key, revision, setting);
                }
                let weights = self.shared.priority_weights.current();
                ControlReply::with_result(hostname, &PriorityWeightsResult::new(weights))
            }
            ControlCommand::Active => {
                let tasks = self.shared.observer.tally().list(Phase::Active);
                ControlReply::with_result(hostname, &HeldTasksResult::new(tasks))
            }
            ControlCommand::Reserved => {
                let tasks = self.shared.observer.tally().list(Phase::Reserved);
                ControlReply::with_result(hostname, &HeldTasksResult::new(tasks))
            }
            ControlCommand::Scheduled { limit } => {
                let result = list_scheduled(&self.shared, limit).await?;
                ControlReply::with_result(hostname, &result)
            }
            command => return self.change(command).await,
        };
        reply.map_err(Refusal::EncodeReply)
    }

    /// The commands that change the worker's pool, queues or life.
    async fn change(&self, command: ControlCommand) -> Result<ControlReply, Refusal> {
        let hostname = self.shared.hostname.as_ref();
        let reply = match command {
            ControlCommand::PoolGrow { n } => {
                let size = self.shared.pool.grow(n as usize)?;
                tracing::info!(concurrency = size, "pool grown");
                ControlReply::with_result(hostname, &PoolResult::new(size))
            }
            ControlCommand::PoolShrink { n } => {
                let size = self.shared.pool.shrink(n as usize, &self.shared.runtime)?;
                tracing::info!(concurrency = size, "pool shrunk");
                ControlReply::with_result(hostname, &PoolResult::new(size))
            }
            ControlCommand::AddConsumer { queue } => {
                let queue = QueueName::new(queue).map_err(Refusal::InvalidQueue)?;
                let added = self.root.send(AddConsumer(queue)).await;
                added.map_err(|_| Refusal::ShuttingDown)??;
                let queues = ConsumersResult::new(self.shared.queues.names());
                ControlReply::with_result(hostname, &queues)
            }
            ControlCommand::CancelConsumer { queue } => {
                let queue = QueueName::new(queue).map_err(Refusal::InvalidQueue)?;
                let cancelled = self.root.send(CancelConsumer(queue)).await;
                cancelled.map_err(|_| Refusal::ShuttingDown)??;
                let queues = ConsumersResult::new(self.shared.queues.names());
                ControlReply::with_result(hostname, &queues)
            }
            _ => return Err(Refusal::UnknownCommand),
        };
        reply.map_err(Refusal::EncodeReply)
    }

    /// The queues this worker consumes, with their streams and levels.
    fn active_queues(&self) -> ActiveQueuesResult {
        let layout = &self.shared.layout;
        let levels: Vec<u8> = self
            .shared
            .app
            .settings()
            .priority_steps
            .iter()
            .map(|level| level.get())
            .collect();
        let queues = self
            .shared
            .queues
            .get()
            .iter()
            .map(|queue| {
                ActiveQueue::new(queue.as_str(), layout.queue_stream(queue), levels.clone())
            })
            .collect();
        ActiveQueuesResult::new(queues)
    }

    /// The scope of a setting this request stores: this worker's own, or every worker's.
    fn scope(&self) -> SettingScope {
        match self.direct {
            true => SettingScope::Worker {
                worker: self.shared.hostname.to_string(),
            },
            false => SettingScope::Workers,
        }
    }

    /// Stores the revocation of `task_id` and, with [`RevokeMode::Terminate`], asks every queue to
    /// abort it.
    async fn revoke(&self, task_id: String, mode: RevokeMode) -> Result<RevokeResult, Refusal> {
        let id = TaskId::new(task_id.clone()).map_err(Refusal::InvalidTaskId)?;
        // Stored, so every worker (also those started later) skips the task until results expire.
        let record = RevocationRecord::new(crate::clock::now_ms());
        let value = serde_json::to_vec(&record).map_err(Refusal::EncodeRevocation)?;
        self.shared
            .revoked_bucket
            .put(id.as_str(), value.into())
            .await
            .map_err(Refusal::StoreRevocation)?;
        let terminated = match mode {
            RevokeMode::Terminate => {
                let asked = self.root.send(TerminateTask(task_id.clone())).await;
                asked.unwrap_or(false)
            }
            RevokeMode::Skip => false,
        };
        Ok(RevokeResult::new(task_id, terminated))
    }
}

/// Stores a rate limit for `scope` (or, with `None`, deletes the stored one so the task's option
/// applies again) and applies it here at once; other workers apply it through their watch.
async fn set_rate_limit(
    shared: &WorkerShared,
    task: &str,
    scope: SettingScope,
    rate: Option<Option<celerity_proto::Rate>>,
) -> Result<(), Refusal> {
    let registered = TaskName::new(task)
        .ok()
        .and_then(|name| shared.app.task(&name));
    if registered.is_none() {
        return Err(Refusal::NotRegistered(task.to_owned()));
    }
    let key = celerity_proto::rate_limit_key(task, &scope);
    let setting = rate.map(|rate| RateLimitSetting::new(task, scope, rate));
    if let Some(revision) = store_setting(shared, &key, setting.as_ref()).await? {
        shared.limits.apply(&key, revision, setting);
    }
    Ok(())
}

/// Stores `setting` under `key` of the settings bucket (or, with `None`, deletes it) and returns
/// the revision written, for applying it here before the watch delivers it (`None`: leave it to
/// the watch).
async fn store_setting<T: serde::Serialize>(
    shared: &WorkerShared,
    key: &str,
    setting: Option<&T>,
) -> Result<Option<u64>, Refusal> {
    let bucket = &shared.settings_bucket;
    match setting {
        Some(setting) => {
            let value = serde_json::to_vec(setting).map_err(Refusal::EncodeSetting)?;
            let revision = bucket
                .put(key, value.into())
                .await
                .map_err(Refusal::StoreSetting)?;
            Ok(Some(revision))
        }
        None => {
            bucket.delete(key).await.map_err(Refusal::DeleteSetting)?;
            // The delete marker's revision, so the watch does not apply an older value after it.
            // A value stored since by someone else is left to the watch.
            let marker = bucket.entry(key).await.map_err(Refusal::ReadSetting)?;
            Ok(marker
                .filter(|entry| entry.operation != kv::Operation::Put)
                .map(|entry| entry.revision))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_layer_and_its_cause_once() {
        let cause = serde_json::from_slice::<ControlRequest>(b"{").unwrap_err();
        let text = crate::error_chain(&Refusal::Malformed(cause));
        assert!(text.starts_with("malformed control request: "), "{text}");
        let invalid = TaskId::new("").unwrap_err();
        let text = crate::error_chain(&Refusal::InvalidTaskId(invalid));
        assert_eq!(text.matches("invalid task id").count(), 1, "{text}");
    }

    #[test]
    fn a_reply_encodes_to_its_json() {
        let reply = ControlReply::refused("w1", "no");
        let bytes = encode_reply("w1", &reply).unwrap();
        assert_eq!(&bytes[..], br#"{"worker":"w1","ok":false,"error":"no"}"#);
    }
}
