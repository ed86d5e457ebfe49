//! `ControlActor`: answers control requests (`ping`, `revoke`, `rate_limit`, `priority_weights`)
//! sent to this worker or to all.
//!
//! Requests arrive on core NATS (`<ns>.control.<worker token>` and `<ns>.control.all`); a malformed
//! request gets a refusal naming what is wrong, never silence.

use actix::prelude::*;
use celerity_proto::{
    ControlCommand, ControlReply, ControlRequest, PriorityWeightsSetting, RateLimitSetting,
    SettingScope, TaskId, TaskName,
};
use serde_json::json;

use crate::worker::SharedHandle;
use crate::worker::queue::Terminate;

/// Answers control requests for one worker.
pub(crate) struct ControlActor {
    shared: SharedHandle,
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
        let hostname = self.shared.hostname.to_string();
        let request: Result<ControlRequest, _> = serde_json::from_slice(&message.payload);
        let shared = self.shared.clone();
        let queues = self.queues.clone();
        let queue_names = self.queue_names.clone();
        let answer = async move {
            let reply = match request {
                Err(error) => {
                    ControlReply::refused(&hostname, format!("malformed control request: {error}"))
                }
                Ok(request) if request.v != celerity_proto::PROTOCOL_VERSION => {
                    ControlReply::refused(
                        &hostname,
                        format!("unsupported control protocol version {}", request.v),
                    )
                }
                Ok(request) => {
                    let target = Target {
                        queues: &queues,
                        queue_names: &queue_names,
                        direct,
                    };
                    run(&shared, target, request.command).await
                }
            };
            let bytes = serde_json::to_vec(&reply).unwrap_or_default();
            if let Err(error) = shared.nats.publish(reply_to, bytes.into()).await {
                tracing::debug!(error = %error, "cannot answer a control request");
            }
        };
        ctx.spawn(answer.into_actor(self));
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        tracing::warn!("control subscriptions ended");
    }
}

/// What a control command acts on in this worker.
struct Target<'a> {
    queues: &'a [Recipient<Terminate>],
    queue_names: &'a [String],
    /// The request was addressed to this worker alone (not broadcast).
    direct: bool,
}

async fn run(
    shared: &crate::worker::WorkerShared,
    Target {
        queues,
        queue_names,
        direct,
    }: Target<'_>,
    command: ControlCommand,
) -> ControlReply {
    let hostname = shared.hostname.to_string();
    match command {
        ControlCommand::Ping => ControlReply::ok(
            &hostname,
            json!({"pong": true, "queues": queue_names, "concurrency": shared.concurrency}),
        ),
        ControlCommand::Revoke { task_id, terminate } => {
            let Ok(id) = TaskId::new(task_id.clone()) else {
                return ControlReply::refused(&hostname, format!("invalid task id {task_id:?}"));
            };
            // Stored, so every worker (also those started later) skips the task until results expire.
            let record = json!({"reason": "revoked", "at_ms": crate::clock::now_ms()});
            if let Err(error) = shared
                .revoked_bucket
                .put(
                    id.as_str(),
                    serde_json::to_vec(&record).unwrap_or_default().into(),
                )
                .await
            {
                return ControlReply::refused(
                    &hostname,
                    format!("cannot store the revocation: {error}"),
                );
            }
            let mut terminated = false;
            if terminate {
                for queue in queues {
                    if let Ok(true) = queue
                        .send(Terminate {
                            task_id: task_id.clone(),
                        })
                        .await
                    {
                        terminated = true;
                    }
                }
            }
            ControlReply::ok(
                &hostname,
                json!({"revoked": task_id, "terminated": terminated}),
            )
        }
        ControlCommand::RateLimit {
            task,
            rate,
            global,
            reset,
        } => {
            let scope = if global {
                SettingScope::Cluster
            } else if direct {
                SettingScope::Worker {
                    worker: hostname.clone(),
                }
            } else {
                SettingScope::Workers
            };
            match set_rate_limit(shared, &task, scope, (!reset).then_some(rate)).await {
                Ok(()) => {
                    let (per_worker, cluster) = shared.limits.limits_of(&task);
                    ControlReply::ok(
                        &hostname,
                        json!({"task": task, "rate_limit": per_worker, "global_rate_limit": cluster}),
                    )
                }
                Err(error) => ControlReply::refused(&hostname, error),
            }
        }
        ControlCommand::PriorityWeights { weights, reset } => {
            let scope = if direct {
                SettingScope::Worker {
                    worker: hostname.clone(),
                }
            } else {
                SettingScope::Workers
            };
            let key = celerity_proto::priority_weights_key(&scope);
            let setting = (!reset).then(|| PriorityWeightsSetting::new(scope, weights));
            match store_setting(shared, &key, setting.as_ref()).await {
                Ok(revision) => {
                    if let Some(revision) = revision {
                        shared.priority_weights.apply(&key, revision, setting);
                    }
                    let weights = shared.priority_weights.current();
                    ControlReply::ok(&hostname, json!({"priority_weights": weights}))
                }
                Err(error) => ControlReply::refused(&hostname, error),
            }
        }
        _ => ControlReply::refused(&hostname, "unknown control command"),
    }
}

/// Stores a rate limit for `scope` (or, with `None`, deletes the stored one so the task's option
/// applies again) and applies it here at once; other workers apply it through their watch.
async fn set_rate_limit(
    shared: &crate::worker::WorkerShared,
    task: &str,
    scope: SettingScope,
    rate: Option<Option<celerity_proto::Rate>>,
) -> Result<(), String> {
    let registered = TaskName::new(task)
        .ok()
        .and_then(|name| shared.app.task(&name));
    if registered.is_none() {
        return Err(format!("task {task:?} is not registered on this worker"));
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
    shared: &crate::worker::WorkerShared,
    key: &str,
    setting: Option<&T>,
) -> Result<Option<u64>, String> {
    let bucket = &shared.settings_bucket;
    match setting {
        Some(setting) => {
            let value = serde_json::to_vec(setting).map_err(|error| error.to_string())?;
            let revision = bucket
                .put(key, value.into())
                .await
                .map_err(|error| format!("cannot store the setting: {error}"))?;
            Ok(Some(revision))
        }
        None => {
            bucket
                .delete(key)
                .await
                .map_err(|error| format!("cannot delete the stored setting: {error}"))?;
            // The delete marker's revision, so the watch does not apply an older value after it.
            // A value stored since by someone else is left to the watch.
            let marker = bucket
                .entry(key)
                .await
                .map_err(|error| format!("cannot read the stored setting: {error}"))?;
            Ok(marker
                .filter(|entry| entry.operation != async_nats::jetstream::kv::Operation::Put)
                .map(|entry| entry.revision))
        }
    }
}
