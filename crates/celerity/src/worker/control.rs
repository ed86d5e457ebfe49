//! `ControlActor`: answers control requests (`ping`, `revoke`, `rate_limit`, `priority_weights`,
//! and the inspections `registered`, `stats`, `active_queues`, `revoked`) sent to this worker or
//! to all.
//!
//! Requests arrive on core NATS (`<ns>.control.<worker token>` and `<ns>.control.all`); a malformed
//! request gets a refusal naming what is wrong, never silence. Replies are `celerity_proto` records
//! ([`PingResult`], [`RevokeResult`], [`RateLimitResult`], [`PriorityWeightsResult`]). The actor
//! reaches the queues only through [`Recipient`]s of [`Terminate`], so it knows no queue actor.

use actix::prelude::*;
use async_nats::jetstream::kv;
use celerity_proto::{
    ActiveQueue, ActiveQueuesResult, ControlCommand, ControlReply, ControlRequest, PingResult,
    PriorityWeightsResult, PriorityWeightsSetting, RateLimitResult, RateLimitSetting,
    RegisteredResult, RevocationRecord, RevokeResult, RevokedResult, SettingScope, TaskId,
    TaskName,
};

use crate::control::RevokeMode;
use crate::worker::queue::Terminate;
use crate::worker::{SharedHandle, WorkerShared};

/// Answers control requests for one worker.
pub(crate) struct ControlActor {
    shared: SharedHandle,
    /// Every queue of this worker, asked to abort a task that a `revoke` terminates.
    queues: Vec<Recipient<Terminate>>,
    queue_names: Vec<String>,
}

impl ControlActor {
    pub(crate) fn new(
        shared: SharedHandle,
        queues: Vec<Recipient<Terminate>>,
        queue_names: Vec<String>,
    ) -> Self {
        Self {
            shared,
            queues,
            queue_names,
        }
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
            queues: self.queues.clone(),
            queue_names: self.queue_names.clone(),
            direct,
        };
        let answer = async move {
            let reply = target.answer(&message.payload).await;
            match encode_reply(&target.shared.hostname, &reply) {
                Ok(bytes) => {
                    if let Err(error) = target.shared.nats.publish(reply_to, bytes).await {
                        tracing::debug!(error = %error, "cannot answer a control request");
                    }
                }
                Err(error) => {
                    tracing::error!(error = %error, "cannot encode a control reply; the requester gets none")
                }
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
    queues: Vec<Recipient<Terminate>>,
    queue_names: Vec<String>,
    /// The request was addressed to this worker alone (not broadcast).
    direct: bool,
}

impl Target {
    /// The reply to the request `payload`: the command's result, or a refusal that says why.
    async fn answer(&self, payload: &[u8]) -> ControlReply {
        let hostname = self.shared.hostname.as_ref();
        let replied = match serde_json::from_slice::<ControlRequest>(payload) {
            Err(error) => Err(Refusal::Malformed(error)),
            Ok(request) if request.v != celerity_proto::PROTOCOL_VERSION => {
                Err(Refusal::UnsupportedVersion(request.v))
            }
            Ok(request) => self.run(request.command).await,
        };
        replied
            .unwrap_or_else(|refusal| ControlReply::refused(hostname, crate::error_chain(&refusal)))
    }

    async fn run(&self, command: ControlCommand) -> Result<ControlReply, Refusal> {
        let hostname = self.shared.hostname.as_ref();
        let reply = match command {
            ControlCommand::Ping => ControlReply::with_result(
                hostname,
                &PingResult::new(self.queue_names.clone(), self.shared.concurrency),
            ),
            ControlCommand::Registered => {
                let tasks = self.shared.app.task_names().map(ToString::to_string);
                ControlReply::with_result(hostname, &RegisteredResult::new(tasks.collect()))
            }
            ControlCommand::Stats => {
                let (queues, concurrency) = (&self.queue_names, self.shared.concurrency);
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
        let mut names = self.queue_names.clone();
        names.sort();
        let queues = names
            .iter()
            .filter_map(|name| celerity_proto::QueueName::new(name).ok())
            .map(|queue| {
                ActiveQueue::new(queue.as_str(), layout.queue_stream(&queue), levels.clone())
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
        let mut terminated = false;
        if mode == RevokeMode::Terminate {
            for queue in &self.queues {
                let asked = queue.send(Terminate {
                    task_id: task_id.clone(),
                });
                if let Ok(true) = asked.await {
                    terminated = true;
                }
            }
        }
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
