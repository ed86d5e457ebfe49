//! The control plane, client side: commands to one worker or to all, with replies gathered until a
//! deadline (scatter-gather).
//!
//! ```no_run
//! # async fn demo(client: celerity::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! let replies = client.control().ping(None, Duration::from_secs(1)).await?;
//! for reply in replies {
//!     let ping = reply.result_as::<celerity::control::PingResult>().transpose()?;
//!     println!("{} answered: {ping:?}", reply.worker);
//! }
//! # Ok(()) }
//! ```

use std::time::Duration;

use celerity_proto::{ControlCommand, ControlRequest, InvalidName, Layout, RevocationRecord};
use futures_util::StreamExt;

use crate::nats::permissions::{Denied, Watch};

/// A worker's reply, and the `result` each command's reply carries ([`ControlReply::result_as`]).
pub use celerity_proto::{
    ControlReply, PingResult, PriorityWeightsResult, RateLimitResult, RevokeResult,
};

/// A control request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No worker answers to this name.
    #[error("no worker named {0:?} answers control requests")]
    UnknownDestination(String),
    /// The request could not be sent or the replies read.
    #[error("the control request failed")]
    Nats(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The task id is not valid.
    #[error(transparent)]
    InvalidTaskId(InvalidName),
    /// A worker's reply is not a valid control reply.
    #[error("worker reply is not a control reply")]
    BadReply(#[source] serde_json::Error),
    /// The task name is not valid.
    #[error(transparent)]
    InvalidTaskName(InvalidName),
    /// The request, or the revocation record, could not be encoded.
    #[error("cannot encode the control request")]
    Encode(#[source] serde_json::Error),
    /// A cluster-wide rate limit was addressed to one worker.
    #[error(
        "a global rate limit is shared by every worker and cannot go to worker {0:?} alone: drop the destination"
    )]
    GlobalWithDestination(String),
    /// The server refused the request for the user's permissions (`-ERR 'Permissions Violation
    /// for Publish to ...'`): control commands and revocations need the operator's permissions.
    /// Reported as soon as the refusal arrives, not after the request's timeout.
    #[error(
        "the NATS server refused this user's publish to {subject}: control commands and revocations need the operator role's permissions (docs/permissions.conf, docs/security.md)"
    )]
    PermissionDenied {
        /// The subject refused.
        subject: String,
    },
    /// The namespace has not been set up on this server: no worker or client of it has connected
    /// yet, so the bucket a revocation is stored in does not exist.
    #[error(
        "the {bucket} bucket does not exist: no worker or client of this namespace has connected to this server yet; start a worker (or connect a client) first, then revoke again"
    )]
    NotSetUp {
        /// The bucket that is missing.
        bucket: String,
    },
}

/// What a `revoke` control command does to a copy of the task that is already running.
///
/// ```
/// assert_eq!(celerity::RevokeMode::default(), celerity::RevokeMode::Skip);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RevokeMode {
    /// Never run the task; a copy already running finishes.
    #[default]
    Skip,
    /// Never run the task, and abort it where it runs (Celery's `terminate=True`): it ends
    /// REVOKED with reason `terminated`.
    Terminate,
}

/// Which limit a `rate_limit` control command changes.
///
/// ```
/// assert_eq!(celerity::RateLimitScope::default(), celerity::RateLimitScope::PerWorker);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RateLimitScope {
    /// Each worker's own limit: every worker addressed runs the task at most at the rate.
    #[default]
    PerWorker,
    /// The one limit all workers share: the cluster runs the task at most at the rate.
    Global,
}

/// What a `rate_limit` control command does to a task's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitChange {
    /// Limit the task to this rate.
    Set(celerity_proto::Rate),
    /// No limit, even if the task's option sets one.
    Unlimited,
    /// Forget the stored value: the task's own option applies again.
    Reset,
}

/// What a `priority_weights` control command does to how workers pick priority levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriorityWeightsChange {
    /// Weighted: levels with work are picked in proportion to these weights (index = priority).
    Weighted([u32; 10]),
    /// Strict: always the highest level with work.
    Strict,
    /// Forget the stored value: the worker's own flags apply again.
    Reset,
}

impl std::str::FromStr for PriorityWeightsChange {
    type Err = InvalidWeights;

    /// Ten comma-separated weights (`1,1,1,1,1,1,1,1,1,1`), `strict` or `reset`.
    fn from_str(value: &str) -> Result<Self, InvalidWeights> {
        match value.trim() {
            "strict" => Ok(Self::Strict),
            "reset" => Ok(Self::Reset),
            weights => parse_weights(weights).map(Self::Weighted),
        }
    }
}

/// Priority weights that cannot be read.
///
/// ```
/// let error = "1,2,3".parse::<celerity::PriorityWeightsChange>().unwrap_err();
/// assert!(error.to_string().contains("3 weights"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidWeights {
    /// A weight is not a whole number (from 0 to 4294967295).
    #[error("{part:?} in {value:?} is not a whole number")]
    NotANumber {
        /// The whole value.
        value: String,
        /// The weight that is not a number.
        part: String,
        /// Why it does not parse.
        #[source]
        source: std::num::ParseIntError,
    },
    /// There are not ten weights.
    #[error("{value:?} has {count} weights; give one per priority, 0 to 9 (10 in all)")]
    WrongCount {
        /// The whole value.
        value: String,
        /// How many weights it has.
        count: usize,
    },
}

/// Ten comma-separated weights, for priorities 0 to 9.
pub(crate) fn parse_weights(value: &str) -> Result<[u32; 10], InvalidWeights> {
    let weights: Vec<u32> = value
        .split(',')
        .map(|part| {
            part.trim()
                .parse::<u32>()
                .map_err(|source| InvalidWeights::NotANumber {
                    value: value.to_owned(),
                    part: part.to_owned(),
                    source,
                })
        })
        .collect::<Result<_, _>>()?;
    weights
        .try_into()
        .map_err(|weights: Vec<u32>| InvalidWeights::WrongCount {
            value: value.to_owned(),
            count: weights.len(),
        })
}

impl std::str::FromStr for RateLimitChange {
    type Err = celerity_proto::InvalidRate;

    /// `"50/m"`, `"none"` (or `"0"`, as in Celery) or `"reset"`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim() {
            "none" | "0" => Ok(Self::Unlimited),
            "reset" => Ok(Self::Reset),
            rate => rate.parse().map(Self::Set),
        }
    }
}

/// Sends control commands (from [`crate::Client::control`]).
#[derive(Debug, Clone)]
pub struct Control {
    nats: async_nats::Client,
    layout: Layout,
}

impl Control {
    /// The control plane of the deployment `layout` names, on a connection of the caller's: for a
    /// monitor that needs no [`crate::Client`] (a client opens the results buckets when it
    /// connects, so it needs JetStream; control commands travel on core NATS).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use celerity_proto::{Layout, Namespace};
    /// let nats = celerity::NatsConfig::new("nats://127.0.0.1:4222").connect().await?;
    /// let control = celerity::Control::new(nats, Layout::new(Namespace::default()));
    /// let replies = control.ping(None, std::time::Duration::from_secs(1)).await?;
    /// println!("{} workers answered", replies.len());
    /// # Ok(()) }
    /// ```
    pub fn new(nats: async_nats::Client, layout: Layout) -> Self {
        Self { nats, layout }
    }

    /// Pings `destination` (a worker hostname), or every worker when `None`, gathering replies
    /// until `timeout`. Each reply's `result` is a [`PingResult`].
    ///
    /// # Errors
    /// [`ControlError::UnknownDestination`] when the named worker does not answer.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped call has sent at most the request, which changes nothing.
    pub async fn ping(
        &self,
        destination: Option<&str>,
        timeout: Duration,
    ) -> Result<Vec<ControlReply>, ControlError> {
        self.send(ControlCommand::Ping, destination, timeout).await
    }

    /// Revokes task `task_id` on every worker (or only `destination`), and with
    /// [`RevokeMode::Terminate`] aborts it where it runs. The revocation is stored, so workers
    /// started later honour it too. Each reply's `result` is a [`RevokeResult`].
    ///
    /// ```no_run
    /// # async fn demo(client: celerity::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use celerity::RevokeMode;
    /// let replies = client.control().revoke("0190a5b2-7c1e-7f00-8000-000000000001", RevokeMode::Terminate, None, Duration::from_secs(1)).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ControlError::InvalidTaskId`]; [`ControlError::NotSetUp`] when no worker or client of
    /// the namespace has created the revoked bucket on this server yet; or as [`Control::ping`].
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped call may have stored the revocation without telling the workers
    /// (those honour it from the store, but none terminates a running task).
    pub async fn revoke(
        &self,
        task_id: &str,
        mode: RevokeMode,
        destination: Option<&str>,
        timeout: Duration,
    ) -> Result<Vec<ControlReply>, ControlError> {
        // Stored first, by the caller: workers not running now honour it when they start.
        let id = celerity_proto::TaskId::new(task_id).map_err(ControlError::InvalidTaskId)?;
        let bucket = self.layout.revoked_bucket();
        // Every request of the store goes to the bucket's stream or to the id's key.
        let (stream, key) = (format!("KV_{bucket}"), format!("$KV.{bucket}.{id}"));
        Watch::start(&self.nats)
            .guard(self.store_revocation(&id), |refused| {
                refused.denied == Denied::Publish
                    && (refused.subject.ends_with(&stream) || refused.subject == key)
            })
            .await
            .map_err(|refused| ControlError::PermissionDenied {
                subject: refused.subject,
            })??;
        let command = ControlCommand::Revoke {
            task_id: task_id.to_owned(),
            terminate: mode == RevokeMode::Terminate,
        };
        self.send(command, destination, timeout).await
    }

    /// Writes the revocation of `id` to the revoked bucket.
    async fn store_revocation(&self, id: &celerity_proto::TaskId) -> Result<(), ControlError> {
        let js = async_nats::jetstream::new(self.nats.clone());
        let name = self.layout.revoked_bucket();
        // Looked up as its stream first, so a bucket nobody created is told apart from a failure.
        if let Err(error) = js.get_stream(format!("KV_{name}")).await {
            return Err(match error.kind() {
                async_nats::jetstream::context::GetStreamErrorKind::JetStream(inner)
                    if inner.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    ControlError::NotSetUp { bucket: name }
                }
                _ => ControlError::Nats(error.into()),
            });
        }
        let bucket = js
            .get_key_value(name.as_str())
            .await
            .map_err(|error| ControlError::Nats(error.into()))?;
        let record = serde_json::to_vec(&RevocationRecord::new(crate::clock::now_ms()))
            .map_err(ControlError::Encode)?;
        bucket
            .put(id.as_str(), record.into())
            .await
            .map(drop)
            .map_err(|error| ControlError::Nats(error.into()))
    }

    /// Changes the rate limit of task type `task` at runtime, on `destination` only or on every
    /// worker (`None`), per worker or, with [`RateLimitScope::Global`], for the whole cluster.
    /// The change is stored in the settings bucket by the workers that apply it, so it also holds
    /// for workers started later and survives restarts. A worker that does not know the task
    /// refuses. Each reply's `result` is a [`RateLimitResult`].
    ///
    /// ```no_run
    /// # async fn demo(client: celerity::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use celerity::RateLimitScope;
    /// let change = "50/m".parse()?;
    /// let replies = client.control().rate_limit("tasks.call_api", change, RateLimitScope::PerWorker, Some("w1"), Duration::from_secs(1)).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ControlError::InvalidTaskName`], [`ControlError::GlobalWithDestination`], or as
    /// [`Control::ping`].
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped call may have sent the change, which workers then store and
    /// apply without the caller seeing their replies.
    pub async fn rate_limit(
        &self,
        task: &str,
        change: RateLimitChange,
        scope: RateLimitScope,
        destination: Option<&str>,
        timeout: Duration,
    ) -> Result<Vec<ControlReply>, ControlError> {
        celerity_proto::TaskName::new(task).map_err(ControlError::InvalidTaskName)?;
        let global = scope == RateLimitScope::Global;
        if let (true, Some(worker)) = (global, destination) {
            return Err(ControlError::GlobalWithDestination(worker.to_owned()));
        }
        let (rate, reset) = match change {
            RateLimitChange::Set(rate) => (Some(rate), false),
            RateLimitChange::Unlimited => (None, false),
            RateLimitChange::Reset => (None, true),
        };
        let command = ControlCommand::RateLimit {
            task: task.to_owned(),
            rate,
            global,
            reset,
        };
        self.send(command, destination, timeout).await
    }

    /// Changes how `destination` (or every worker, with `None`) picks among priority levels:
    /// weighted with ten weights, strict, or back to the worker's own flags. Stored like rate
    /// limits, so it also holds for workers started later. Each reply's `result` is a
    /// [`PriorityWeightsResult`].
    ///
    /// # Errors
    /// As [`Control::ping`].
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped call may have sent the change, which workers then store and
    /// apply without the caller seeing their replies.
    pub async fn priority_weights(
        &self,
        change: PriorityWeightsChange,
        destination: Option<&str>,
        timeout: Duration,
    ) -> Result<Vec<ControlReply>, ControlError> {
        let (weights, reset) = match change {
            PriorityWeightsChange::Weighted(weights) => (Some(weights), false),
            PriorityWeightsChange::Strict => (None, false),
            PriorityWeightsChange::Reset => (None, true),
        };
        let command = ControlCommand::PriorityWeights { weights, reset };
        self.send(command, destination, timeout).await
    }

    /// Sends `command` and gathers the replies.
    ///
    /// # Errors
    /// As [`Control::ping`].
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped call may have sent the command, which workers carry out without
    /// the caller seeing their replies (a `ping` changes nothing, so dropping it is harmless).
    pub async fn send(
        &self,
        command: ControlCommand,
        destination: Option<&str>,
        timeout: Duration,
    ) -> Result<Vec<ControlReply>, ControlError> {
        let request =
            serde_json::to_vec(&ControlRequest::new(command)).map_err(ControlError::Encode)?;
        match destination {
            Some(worker) => self.ask_one(worker, request.into(), timeout).await,
            None => self.ask_all(request.into(), timeout).await,
        }
    }

    /// Sends `request` to the worker `worker` and waits up to `timeout` for its reply.
    async fn ask_one(
        &self,
        worker: &str,
        request: bytes::Bytes,
        timeout: Duration,
    ) -> Result<Vec<ControlReply>, ControlError> {
        let subject = self.layout.control_subject(worker);
        let refusals = Watch::start(&self.nats);
        let asked = refusals.guard(self.nats.request(subject.clone(), request), |refused| {
            refused.is_publish_to(&subject)
        });
        let message = match tokio::time::timeout(timeout, asked).await {
            Err(_) => return Err(ControlError::UnknownDestination(worker.to_owned())),
            Ok(Err(refused)) => {
                return Err(ControlError::PermissionDenied {
                    subject: refused.subject,
                });
            }
            Ok(Ok(Err(error))) if error.kind() == async_nats::RequestErrorKind::NoResponders => {
                return Err(ControlError::UnknownDestination(worker.to_owned()));
            }
            Ok(Ok(Err(error))) => return Err(ControlError::Nats(error.into())),
            Ok(Ok(Ok(message))) => message,
        };
        let reply = serde_json::from_slice(&message.payload).map_err(ControlError::BadReply)?;
        Ok(vec![reply])
    }

    /// Broadcasts `request` and gathers every worker's reply on one inbox until `timeout`
    /// (scatter-gather).
    async fn ask_all(
        &self,
        request: bytes::Bytes,
        timeout: Duration,
    ) -> Result<Vec<ControlReply>, ControlError> {
        let subject = self.layout.control_broadcast_subject();
        let inbox = self.nats.new_inbox();
        let refusals = Watch::start(&self.nats);
        let mut replies_stream = self
            .nats
            .subscribe(inbox.clone())
            .await
            .map_err(|error| ControlError::Nats(error.into()))?;
        self.nats
            .publish_with_reply(subject.clone(), inbox.clone(), request)
            .await
            .map_err(|error| ControlError::Nats(error.into()))?;
        let gather = async {
            let mut replies = Vec::new();
            let deadline = tokio::time::Instant::now() + timeout;
            while let Ok(Some(message)) =
                tokio::time::timeout_at(deadline, replies_stream.next()).await
            {
                match serde_json::from_slice(&message.payload) {
                    Ok(reply) => replies.push(reply),
                    Err(error) => {
                        tracing::warn!(error = %error, "ignoring a malformed control reply")
                    }
                }
            }
            replies
        };
        // A refused broadcast reaches no worker, and a refused inbox hears none: without this,
        // either would look like a deployment with no workers, after the whole timeout.
        refusals
            .guard(gather, |refused| {
                refused.is_publish_to(&subject)
                    || (refused.denied == Denied::Subscribe && refused.subject == inbox)
            })
            .await
            .map_err(|refused| ControlError::PermissionDenied {
                subject: refused.subject,
            })
    }
}
