//! Chords: `ChordAggregator`, the actor that counts header completions and fires each chord's body
//! exactly once, and the reading of a body's header results.
//!
//! Completions go to a stream partitioned by chord id (`<ns>.chord.<partition>.<chord id>`). Each
//! partition is owned by one aggregator at a time through a lease in the leases bucket, which
//! expires by itself when its holder dies. An owner rebuilds its partition's state by replaying the
//! partition with an ordered consumer, so nothing is counted with a compare-and-set on a shared key
//! and a crash loses nothing. A chord fires once: a create-only marker in the chords bucket, a body
//! published under its own id (de-duplicated by the server), and a body worker that runs a chord
//! body only if it has no final record. The chord's completions are then purged.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;
use async_nats::jetstream::{self, consumer, kv, stream};
use celerity_proto::{
    CHORD_PARTITIONS, ChordCompletion, ChordDefinition, ChordPolicy, ChordResults, ErrorRecord,
    TaskId, TaskName, TaskState, header_result_id,
};
use futures_util::StreamExt;
use serde_json::Value;

use crate::result_store::{ResultStore, StoreError};
use crate::worker::SharedHandle;
use crate::worker::continuation::{fail_chord_body, publish_chord_body};

/// Why a chord body's header results cannot be had.
#[derive(Debug)]
pub(crate) enum HeaderResultsError {
    /// The bucket could not be read (retry later).
    Store(StoreError),
    /// A member has no successful result (it can never have one for this body).
    NotSucceeded { index: u32, state: TaskState },
}

/// Reads the results of a chord's header members, in member order, a few at a time: every
/// member's result, only the listed members' (`at_least`), or every member's outcome (`collect`).
pub(crate) async fn gather_header_results(
    store: &ResultStore,
    results: &ChordResults,
) -> Result<Value, HeaderResultsError> {
    let indices: Vec<u32> = match &results.indices {
        Some(indices) => indices.clone(),
        None => (0..results.size).collect(),
    };
    let reads = futures_util::stream::iter(indices)
        .map(|index| async move {
            let Ok(id) = header_result_id(&results.id, index) else {
                return (index, Ok(None));
            };
            (index, store.get(&id).await)
        })
        .buffered(64)
        .collect::<Vec<_>>()
        .await;
    let mut values = Vec::with_capacity(reads.len());
    for (index, read) in reads {
        let record = read.map_err(HeaderResultsError::Store)?;
        match record {
            Some(record) if record.state == TaskState::Success => {
                let value = record.result.unwrap_or(Value::Null);
                values.push(if results.collect {
                    serde_json::json!({ "ok": value })
                } else {
                    value
                });
            }
            Some(record) if results.collect && record.state.is_ready() => {
                let error = record.error.unwrap_or_else(|| {
                    ErrorRecord::new("celerity::Unknown", record.state.to_string())
                });
                values.push(serde_json::json!({ "error": error }));
            }
            Some(record) => {
                return Err(HeaderResultsError::NotSucceeded {
                    index,
                    state: record.state,
                });
            }
            None => {
                return Err(HeaderResultsError::NotSucceeded {
                    index,
                    state: TaskState::Unknown,
                });
            }
        }
    }
    Ok(Value::Array(values))
}

/// The name chord records carry as their task (a chord is not a registered task).
fn chord_task() -> TaskName {
    // INVARIANT: a constant that satisfies the task name rule.
    TaskName::new("celerity.chord").expect("a valid task name")
}

/// What an aggregator needs from NATS.
pub(crate) struct ChordBackend {
    pub(crate) stream: stream::Stream,
    pub(crate) chords: kv::Store,
    pub(crate) leases: kv::Store,
    pub(crate) lease_ttl: Duration,
}

/// Counts header completions of the chord partitions it owns and fires bodies.
pub(crate) struct ChordAggregator {
    shared: SharedHandle,
    backend: ChordBackend,
    owned: HashMap<u32, Owned>,
    ticking: bool,
}

struct Owned {
    revision: u64,
    replay: SpawnHandle,
    chords: HashMap<TaskId, Progress>,
    /// Chords fired by this owner: their late completions (members still running when an
    /// `at_least` chord fired) are purged at once.
    fired: HashSet<TaskId>,
}

#[derive(Default)]
struct Progress {
    succeeded: BTreeSet<u32>,
    failed: BTreeMap<u32, ErrorRecord>,
    firing: bool,
}

enum Outcome {
    Complete { size: u32, results: ChordResults },
    Failed { index: u32, error: ErrorRecord },
}

impl Progress {
    /// What the chord does now under `policy`, if anything.
    fn decide(&self, chord_id: &TaskId, size: u32, policy: ChordPolicy) -> Option<Outcome> {
        let n_succeeded = self.succeeded.len() as u64;
        let n_ended = n_succeeded + self.failed.len() as u64;
        let first_failure = || {
            self.failed
                .iter()
                .next()
                .map(|(index, error)| (*index, error.clone()))
        };
        match policy {
            ChordPolicy::Collect => (n_ended >= u64::from(size)).then(|| {
                let mut results = ChordResults::new(chord_id.clone(), size);
                results.collect = true;
                Outcome::Complete { size, results }
            }),
            ChordPolicy::AtLeast { successes } => {
                if n_succeeded >= u64::from(successes) {
                    let mut results = ChordResults::new(chord_id.clone(), size);
                    results.indices = Some(
                        self.succeeded
                            .iter()
                            .copied()
                            .take(successes as usize)
                            .collect(),
                    );
                    Some(Outcome::Complete { size, results })
                } else if u64::from(size) - (self.failed.len() as u64).min(u64::from(size))
                    < u64::from(successes)
                {
                    let (index, last) = first_failure()?;
                    let error = ErrorRecord::new(
                        "celerity::ChordQuorumFailed",
                        format!(
                            "{} of {size} header members failed, so {successes} successes cannot be reached; first failure (member {index}): {last}",
                            self.failed.len()
                        ),
                    );
                    Some(Outcome::Failed { index, error })
                } else {
                    None
                }
            }
            _ => {
                if let Some((index, error)) = first_failure() {
                    Some(Outcome::Failed { index, error })
                } else {
                    (n_succeeded >= u64::from(size)).then(|| Outcome::Complete {
                        size,
                        results: ChordResults::new(chord_id.clone(), size),
                    })
                }
            }
        }
    }
}

impl ChordAggregator {
    pub(crate) fn new(shared: SharedHandle, backend: ChordBackend) -> Self {
        Self {
            shared,
            backend,
            owned: HashMap::new(),
            ticking: false,
        }
    }

    /// Renews the leases it holds and tries to take the free ones.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.ticking {
            return;
        }
        self.ticking = true;
        let leases = self.backend.leases.clone();
        let hostname = self.shared.hostname.to_string();
        let held: Vec<(u32, u64)> = self
            .owned
            .iter()
            .map(|(partition, owned)| (*partition, owned.revision))
            .collect();
        let work = async move {
            let mut renewed = Vec::new();
            let mut lost = Vec::new();
            for (partition, revision) in held {
                match leases
                    .update(lease_key(partition), hostname.clone().into(), revision)
                    .await
                {
                    Ok(revision) => renewed.push((partition, revision)),
                    Err(_) => lost.push(partition),
                }
            }
            let mut gained = Vec::new();
            for partition in 0..CHORD_PARTITIONS {
                if renewed.iter().any(|(held, _)| *held == partition) || lost.contains(&partition) {
                    continue;
                }
                if let Ok(revision) = leases
                    .create(lease_key(partition), hostname.clone().into())
                    .await
                {
                    gained.push((partition, revision));
                }
            }
            (renewed, lost, gained)
        };
        ctx.spawn(
            work.into_actor(self)
                .map(|(renewed, lost, gained), actor, ctx| {
                    actor.ticking = false;
                    for (partition, revision) in renewed {
                        if let Some(owned) = actor.owned.get_mut(&partition) {
                            owned.revision = revision;
                        }
                    }
                    for partition in lost {
                        tracing::warn!(
                            partition,
                            "lost the lease of a chord partition; another worker aggregates it now"
                        );
                        if let Some(owned) = actor.owned.remove(&partition) {
                            ctx.cancel_future(owned.replay);
                        }
                    }
                    for (partition, revision) in gained {
                        actor.own(ctx, partition, revision);
                    }
                }),
        );
    }

    /// Starts replaying `partition` from its first retained completion.
    fn own(&mut self, ctx: &mut Context<Self>, partition: u32, revision: u64) {
        tracing::debug!(partition, worker = %self.shared.hostname, "aggregating a chord partition");
        let stream = self.backend.stream.clone();
        let filter = self.shared.layout.chord_partition_subjects(partition);
        let inbox = self.shared.nats.new_inbox();
        let replay = async move {
            let config = consumer::push::OrderedConfig {
                deliver_subject: inbox,
                filter_subject: filter,
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            };
            let consumer = stream.create_consumer(config).await?;
            Ok::<_, async_nats::Error>(consumer.messages().await?)
        };
        let replay = ctx.spawn(replay.into_actor(self).map(move |messages, actor, ctx| {
            match messages {
                Ok(messages) => {
                    let handle = ctx.add_stream(messages.map(move |message| {
                        Completion(partition, message.map_err(|e| e.to_string()))
                    }));
                    if let Some(owned) = actor.owned.get_mut(&partition) {
                        owned.replay = handle;
                    }
                }
                Err(error) => {
                    // Give the partition up; the next tick takes it again if it is still free.
                    tracing::warn!(partition, error = %error, "cannot replay a chord partition");
                    if actor.owned.remove(&partition).is_some() {
                        let leases = actor.backend.leases.clone();
                        ctx.spawn(
                            async move {
                                let _ = leases.delete(lease_key(partition)).await;
                            }
                            .into_actor(actor),
                        );
                    }
                }
            }
        }));
        self.owned.insert(
            partition,
            Owned {
                revision,
                replay,
                chords: HashMap::new(),
                fired: HashSet::new(),
            },
        );
    }

    fn completed(&mut self, ctx: &mut Context<Self>, partition: u32, message: jetstream::Message) {
        let Some(owned) = self.owned.get_mut(&partition) else {
            return;
        };
        let chord_id = message
            .subject
            .rsplit('.')
            .next()
            .and_then(|token| TaskId::new(token).ok());
        let completion: Option<ChordCompletion> = serde_json::from_slice(&message.payload).ok();
        let (Some(chord_id), Some(completion)) = (chord_id, completion) else {
            tracing::warn!(subject = %message.subject, "ignoring an unreadable chord completion");
            return;
        };
        if owned.fired.contains(&chord_id) {
            let stream = self.backend.stream.clone();
            let subject = message.subject.to_string();
            self.shared
                .runtime
                .spawn(async move { stream.purge().filter(subject).await });
            return;
        }
        let progress = owned.chords.entry(chord_id.clone()).or_default();
        if progress.firing {
            return;
        }
        if completion.state == TaskState::Success {
            progress.succeeded.insert(completion.index);
        } else {
            let error = completion.error.clone().unwrap_or_else(|| {
                ErrorRecord::new(
                    "celerity::ChordHeaderFailed",
                    format!("header member ended {}", completion.state),
                )
            });
            progress.failed.entry(completion.index).or_insert(error);
        }
        let outcome = progress.decide(&chord_id, completion.size, completion.policy);
        if let Some(outcome) = outcome {
            progress.firing = true;
            let shared = self.shared.clone();
            let chords = self.backend.chords.clone();
            let stream = self.backend.stream.clone();
            let subject = message.subject.to_string();
            let fire = async move {
                fire(&shared, &chords, &stream, &chord_id, &subject, outcome)
                    .await
                    .map(|()| chord_id)
            };
            ctx.spawn(fire.into_actor(self).map(move |fired, actor, _| {
                let Some(owned) = actor.owned.get_mut(&partition) else { return };
                match fired {
                    Ok(chord_id) => {
                        owned.chords.remove(&chord_id);
                        owned.fired.insert(chord_id);
                    }
                    Err((chord_id, error)) => {
                        // Left in the stream: a later replay (this owner's next lease, or another's)
                        // fires it again, and the marker and ids keep that from running it twice.
                        tracing::error!(chord_id = %chord_id, error = %error, "cannot fire a chord; it stays pending");
                        if let Some(progress) = owned.chords.get_mut(&chord_id) {
                            progress.firing = false;
                        }
                    }
                }
            }));
        }
    }
}

fn lease_key(partition: u32) -> String {
    format!("p{partition}")
}

/// Fires one chord: marks it fired, sends (or fails) its body, purges its completions.
async fn fire(
    shared: &crate::worker::WorkerShared,
    chords: &kv::Store,
    stream: &stream::Stream,
    chord_id: &TaskId,
    subject: &str,
    outcome: Outcome,
) -> Result<(), (TaskId, String)> {
    let failed = |error: String| (chord_id.clone(), error);
    let definition: ChordDefinition = match chords
        .get(chord_id.as_str())
        .await
        .map_err(|e| failed(e.to_string()))?
    {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| failed(format!("unreadable chord definition: {e}")))?,
        None => {
            tracing::error!(chord_id = %chord_id, "a chord completed but has no definition (expired or never stored); dropping its completions");
            let _ = stream.purge().filter(subject).await;
            return Ok(());
        }
    };
    let first_time = match chords.create(format!("{chord_id}.fired"), "1".into()).await {
        Ok(_) => true,
        Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => false,
        Err(error) => return Err(failed(error.to_string())),
    };
    let body_started = if first_time {
        false
    } else {
        body_was_sent(shared, &definition).await
    };
    if !body_started {
        match outcome {
            Outcome::Complete { size, results } => {
                if size != definition.size {
                    tracing::warn!(chord_id = %chord_id, completions = size, defined = definition.size, "header size differs from the definition");
                }
                publish_chord_body(shared, &definition, &results)
                    .await
                    .map_err(|e| failed(crate::error_chain(&e)))?;
                tracing::debug!(chord_id = %chord_id, "chord body sent");
            }
            Outcome::Failed { index, error } => {
                tracing::info!(chord_id = %chord_id, member = index, "a chord header member failed; the body will not run");
                fail_chord_body(shared, &definition, chord_task(), &error)
                    .await
                    .map_err(|e| failed(crate::error_chain(&e)))?;
            }
        }
    }
    stream
        .purge()
        .filter(subject)
        .await
        .map_err(|e| failed(e.to_string()))?;
    Ok(())
}

/// True when the chord's body already has a record beyond PENDING: it was sent before a crash.
async fn body_was_sent(shared: &crate::worker::WorkerShared, definition: &ChordDefinition) -> bool {
    let Some(body_id) = definition.body.result_id() else {
        return false;
    };
    matches!(shared.store.get(body_id).await, Ok(Some(record)) if record.state != TaskState::Pending)
}

impl Actor for ChordAggregator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.tick(ctx);
        ctx.run_interval(self.backend.lease_ttl / 3, |actor, ctx| actor.tick(ctx));
    }

    fn stopping(&mut self, ctx: &mut Self::Context) -> Running {
        // Hand the partitions back at once instead of letting the leases expire.
        let leases = self.backend.leases.clone();
        let held: Vec<(u32, u64)> = self
            .owned
            .drain()
            .map(|(partition, owned)| (partition, owned.revision))
            .collect();
        self.shared.runtime.spawn(async move {
            for (partition, revision) in held {
                let _ = leases
                    .delete_expect_revision(lease_key(partition), Some(revision))
                    .await;
            }
        });
        let _ = ctx;
        Running::Stop
    }
}

/// One completion (or replay error) of a partition's ordered consumer.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Completion(u32, Result<jetstream::Message, String>);

impl StreamHandler<Completion> for ChordAggregator {
    fn handle(&mut self, Completion(partition, message): Completion, ctx: &mut Self::Context) {
        match message {
            Ok(message) => self.completed(ctx, partition, message),
            Err(error) => {
                tracing::debug!(partition, error = %error, "chord replay hiccup; the ordered consumer recovers by itself")
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // One partition's replay ended (the connection closed for good); the others go on.
    }
}
