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
use crate::worker::commands::{
    AddConsumer, CancelConsumer, ConsumerError, ControlShutdown, RootCommands, TerminateTask,
};
use crate::worker::held::Phase;
use crate::worker::pool::PoolError;
use crate::worker::scheduled::{ScheduledError, list_scheduled};
use crate::worker::shutdown::Shutdown;
use crate::worker::{SharedHandle, WorkerShared};

/// How long a request waits for the root actor (the queues' answers, at most).
const ROOT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Answers control requests for one worker.
pub(crate) struct ControlActor {
    shared: SharedHandle,
    /// The root actor: it reaches the queues, and stops the worker.
    root: RootCommands,
}

impl ControlActor {
    pub(crate) fn new(shared: SharedHandle, root: RootCommands) -> Self {
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
            let max_payload = nats.server_info().max_payload;
            match encode_reply(&target.shared.hostname, &reply, max_payload) {
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
                target.root.shutdown.do_send(ControlShutdown(mode));
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
    #[error(
        "the reply is {size} bytes, over the server's max_payload of {max_payload}: ask one worker (--destination) or for fewer (--limit)"
    )]
    ReplyTooLarge { size: usize, max_payload: usize },
}

impl Refusal {
    /// The refusal's `code` (`docs/protocol.md` 7a).
    fn code(&self) -> &'static str {
        use crate::worker::scheduled::ScheduledError as Listing;
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::UnsupportedVersion(_) => "unsupported_version",
            Refusal::UnknownCommand => "unknown_command",
            Refusal::InvalidTaskId(_) | Refusal::InvalidQueue(_) => "invalid_argument",
            Refusal::Pool(PoolError::TooSmall { .. }) => "refused",
            Refusal::Pool(_) | Refusal::Scheduled(Listing::Limit(_)) => "invalid_argument",
            Refusal::NotRegistered(_) => "not_registered",
            Refusal::Consumer(ConsumerError::Setup(..)) => "failed",
            Refusal::Consumer(_) | Refusal::ShuttingDown => "refused",
            Refusal::ReplyTooLarge { .. } => "reply_too_large",
            _ => "failed",
        }
    }

    /// The reply that says so.
    fn reply(&self, hostname: &str) -> ControlReply {
        ControlReply::refused(hostname, crate::error_chain(self)).with_code(self.code())
    }
}

/// Whether a request that does not parse names a command this worker does not know (an older
/// worker than the sender), rather than being malformed.
fn names_unknown_command(payload: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|request| request.get("command")?.as_str().map(str::to_owned))
        .is_some_and(|name| !ControlCommand::NAMES.contains(&name.as_str()))
}

/// The reply's bytes; a reply that cannot be encoded, or that is larger than the server takes
/// (`max_payload`, 0: unknown), becomes a refusal that says so.
fn encode_reply(
    hostname: &str,
    reply: &ControlReply,
    max_payload: usize,
) -> Result<bytes::Bytes, serde_json::Error> {
    let bytes = match serde_json::to_vec(reply) {
        Ok(bytes) if max_payload > 0 && bytes.len() > max_payload => {
            let size = bytes.len();
            serde_json::to_vec(&Refusal::ReplyTooLarge { size, max_payload }.reply(hostname))?
        }
        Ok(bytes) => bytes,
        Err(error) => serde_json::to_vec(&Refusal::EncodeReply(error).reply(hostname))?,
    };
    Ok(bytes.into())
}

/// What a control request acts on in this worker.
struct Target {
    shared: SharedHandle,
    root: RootCommands,
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
            Err(_) if names_unknown_command(payload) => Err(Refusal::UnknownCommand),
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
        let reply = replied.unwrap_or_else(|refusal| refusal.reply(hostname));
        (reply, stop)
    }

    async fn run(&self, command: ControlCommand) -> Result<ControlReply, Refusal> {
        let hostname = self.shared.hostname.as_ref();
        let reply = match command {
            ControlCommand::Ping => ControlReply::with_result(
                hostname,
                &PingResult::new(self.shared.queues.names(), self.shared.pool.size()),
            ),
            ControlCommand::Registered => ControlReply::with_result(hostname, &self.registered()),
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
                // Provisioning a stream and ten consumers: bounded, like every wait.
                let added = self
                    .root
                    .add_consumer
                    .send(AddConsumer(queue))
                    .timeout(ROOT_WAIT * 6)
                    .await;
                added.map_err(|_| Refusal::ShuttingDown)??;
                let queues = ConsumersResult::new(self.shared.queues.names());
                ControlReply::with_result(hostname, &queues)
            }
            ControlCommand::CancelConsumer { queue } => {
                let queue = QueueName::new(queue).map_err(Refusal::InvalidQueue)?;
                let cancelled = self
                    .root
                    .cancel_consumer
                    .send(CancelConsumer(queue))
                    .timeout(ROOT_WAIT)
                    .await;
                cancelled.map_err(|_| Refusal::ShuttingDown)??;
                let queues = ConsumersResult::new(self.shared.queues.names());
                ControlReply::with_result(hostname, &queues)
            }
            _ => return Err(Refusal::UnknownCommand),
        };
        reply.map_err(Refusal::EncodeReply)
    }

    /// The tasks this worker runs, with the rate limits in force now.
    fn registered(&self) -> RegisteredResult {
        let tasks = self.shared.app.task_names().map(ToString::to_string);
        let mut registered = RegisteredResult::new(tasks.collect());
        for task in &registered.tasks {
            let (per_worker, cluster) = self.shared.limits.limits_of(task);
            if let Some(rate) = per_worker {
                registered
                    .rate_limits
                    .insert(task.clone(), rate.to_string());
            }
            if let Some(rate) = cluster {
                registered
                    .global_rate_limits
                    .insert(task.clone(), rate.to_string());
            }
        }
        registered
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
                let asked = self
                    .root
                    .terminate
                    .send(TerminateTask(task_id.clone()))
                    .timeout(ROOT_WAIT)
                    .await;
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
        let bytes = encode_reply("w1", &reply, 0).unwrap();
        assert_eq!(&bytes[..], br#"{"worker":"w1","ok":false,"error":"no"}"#);
        let large = ControlReply::refused("w1", "x".repeat(100));
        let refused: ControlReply =
            serde_json::from_slice(&encode_reply("w1", &large, 64).unwrap()).unwrap();
        assert_eq!(refused.code.as_deref(), Some("reply_too_large"));
        assert!(names_unknown_command(br#"{"v":1,"command":"reboot"}"#));
        assert!(!names_unknown_command(br#"{"v":1,"command":"pool_grow"}"#));
        assert!(!names_unknown_command(b"not json"));
    }
}
