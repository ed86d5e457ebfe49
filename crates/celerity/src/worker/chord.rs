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
//!
//! Nothing a completion or a body's `chord_results` says about the chord's shape is trusted: the
//! size and policy come from the chord's stored definition (read once per chord by the aggregator,
//! which keeps only the size and policy while it counts), and a record that does not fit it is
//! ignored (a completion, deleted from the stream) or dead-lettered (a body).

mod fire;
mod header_results;
mod progress;

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use async_nats::jetstream::{self, consumer, kv, stream};
use celerity_proto::{CHORD_PARTITIONS, ChordCompletion, ChordPolicy, TaskId};
use futures_util::StreamExt;

use crate::worker::SharedHandle;
use fire::{Loaded, fire, load};
use progress::{Decision, Progress, Settled};

/// How many chord definitions an aggregator reads at once; past this, it reads the next one before
/// it handles any other completion, so a flood of new chords slows the replay instead of
/// buffering it in memory.
const LOADS_IN_FLIGHT: usize = 64;

pub(crate) use header_results::{HeaderResultsError, gather_header_results};

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
    /// Told apart the successive ownerships of one partition, so work started under a lease that
    /// was lost since does not touch the state of the next one.
    next_epoch: u64,
    /// Definition reads in flight.
    loads: usize,
}

struct Owned {
    epoch: u64,
    revision: u64,
    replay: SpawnHandle,
    chords: HashMap<TaskId, Tracked>,
    /// Chords settled by this owner: their late completions (members still running when an
    /// `at_least` or failed chord fired) are purged at once.
    settled: Settled,
}

/// A chord being aggregated.
enum Tracked {
    /// Its definition is being read; its completions wait here, in stream order.
    Loading(Vec<Arrived>),
    /// Counted under its definition's size and policy.
    Counting {
        size: u32,
        policy: ChordPolicy,
        progress: Progress,
    },
    /// Its definition breaks a rule; the chord is being failed, and its completions wait in the
    /// stream until it is.
    Invalid,
}

/// One completion as it came out of the stream.
struct Arrived {
    completion: ChordCompletion,
    /// Its sequence in the chord stream (to delete it if it does not fit its chord).
    sequence: Option<u64>,
}

impl ChordAggregator {
    pub(crate) fn new(shared: SharedHandle, backend: ChordBackend) -> Self {
        Self {
            shared,
            backend,
            owned: HashMap::new(),
            ticking: false,
            next_epoch: 0,
            loads: 0,
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
        let epoch = self.next_epoch;
        self.next_epoch += 1;
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
                    let handle =
                        ctx.add_stream(messages.map(move |message| Completion(partition, message)));
                    match actor.owned_at(partition, epoch) {
                        Some(owned) => owned.replay = handle,
                        None => {
                            ctx.cancel_future(handle);
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(partition, error = %error, "cannot replay a chord partition");
                    actor.give_up(ctx, partition, epoch);
                }
            }
        }));
        self.owned.insert(
            partition,
            Owned {
                epoch,
                revision,
                replay,
                chords: HashMap::new(),
                settled: Settled::default(),
            },
        );
    }

    /// The state of `partition` if it is still owned under `epoch`.
    fn owned_at(&mut self, partition: u32, epoch: u64) -> Option<&mut Owned> {
        self.owned
            .get_mut(&partition)
            .filter(|owned| owned.epoch == epoch)
    }

    /// Gives `partition` up (its state is rebuilt by a later replay); the next tick takes it again
    /// if it is still free.
    fn give_up(&mut self, ctx: &mut Context<Self>, partition: u32, epoch: u64) {
        let Some(owned) = self.owned.remove(&partition) else {
            return;
        };
        if owned.epoch != epoch {
            self.owned.insert(partition, owned);
            return;
        }
        ctx.cancel_future(owned.replay);
        let leases = self.backend.leases.clone();
        let revision = owned.revision;
        ctx.spawn(
            async move {
                let _ = leases
                    .delete_expect_revision(lease_key(partition), Some(revision))
                    .await;
            }
            .into_actor(self),
        );
    }

    fn completed(&mut self, ctx: &mut Context<Self>, partition: u32, message: jetstream::Message) {
        let Some(owned) = self.owned.get_mut(&partition) else {
            return;
        };
        let epoch = owned.epoch;
        let chord_id = message
            .subject
            .rsplit('.')
            .next()
            .and_then(|token| TaskId::new(token).ok());
        let completion: Option<ChordCompletion> = serde_json::from_slice(&message.payload).ok();
        let sequence = message.info().ok().map(|info| info.stream_sequence);
        let (Some(chord_id), Some(completion)) = (chord_id, completion) else {
            tracing::warn!(subject = %message.subject, "ignoring an unreadable chord completion; deleting it");
            self.delete(sequence);
            return;
        };
        if owned.settled.contains(&chord_id) {
            self.purge(partition, &chord_id);
            return;
        }
        let arrived = Arrived {
            completion,
            sequence,
        };
        match owned.chords.get_mut(&chord_id) {
            Some(Tracked::Loading(waiting)) => waiting.push(arrived),
            Some(_) => self.count(ctx, partition, &chord_id, arrived),
            None => {
                owned
                    .chords
                    .insert(chord_id.clone(), Tracked::Loading(vec![arrived]));
                self.start_load(ctx, partition, epoch, chord_id);
            }
        }
    }

    /// Reads the definition of a chord whose first completion arrived, then counts what waited.
    fn start_load(
        &mut self,
        ctx: &mut Context<Self>,
        partition: u32,
        epoch: u64,
        chord_id: TaskId,
    ) {
        let shared = self.shared.clone();
        let chords = self.backend.chords.clone();
        let read = async move {
            let loaded = load(&shared, &chords, &chord_id).await;
            (chord_id, loaded)
        };
        let then = read
            .into_actor(self)
            .map(move |(chord_id, loaded), actor, ctx| {
                actor.loads -= 1;
                actor.loaded(ctx, partition, epoch, chord_id, loaded);
            });
        self.loads += 1;
        if self.loads > LOADS_IN_FLIGHT {
            ctx.wait(then);
        } else {
            ctx.spawn(then);
        }
    }

    fn loaded(
        &mut self,
        ctx: &mut Context<Self>,
        partition: u32,
        epoch: u64,
        chord_id: TaskId,
        loaded: Result<Loaded, kv::EntryError>,
    ) {
        let Some(owned) = self.owned_at(partition, epoch) else {
            return;
        };
        let Some(Tracked::Loading(waiting)) = owned.chords.remove(&chord_id) else {
            return;
        };
        let tracked = match loaded {
            Ok(Loaded::Counting { size, policy }) => Tracked::Counting {
                size,
                policy,
                progress: Progress::default(),
            },
            Ok(Loaded::Invalid(error)) => {
                tracing::error!(chord_id = %chord_id, error = %error, "a chord's definition breaks a rule; failing the chord");
                owned.chords.insert(chord_id.clone(), Tracked::Invalid);
                return self.start_fire(
                    ctx,
                    (partition, epoch),
                    chord_id,
                    Decision::Invalid(error),
                    Vec::new(),
                );
            }
            Ok(Loaded::Missing) => {
                tracing::warn!(chord_id = %chord_id, "completions name a chord with no stored definition (expired, or never sent); dropping them");
                owned.settled.insert(chord_id.clone());
                return self.purge(partition, &chord_id);
            }
            Ok(Loaded::Settled) => {
                tracing::debug!(chord_id = %chord_id, "completions of a chord whose body was sent; dropping them");
                owned.settled.insert(chord_id.clone());
                return self.purge(partition, &chord_id);
            }
            Err(error) => {
                // Its completions are in the stream: a later replay counts them.
                tracing::warn!(partition, chord_id = %chord_id, error = %error, "cannot read a chord's definition; giving the partition up to replay it later");
                return self.give_up(ctx, partition, epoch);
            }
        };
        owned.chords.insert(chord_id.clone(), tracked);
        for arrived in waiting {
            self.count(ctx, partition, &chord_id, arrived);
        }
    }

    /// Counts one completion of a chord whose definition is known, and fires the chord when its
    /// policy says so.
    fn count(
        &mut self,
        ctx: &mut Context<Self>,
        partition: u32,
        chord_id: &TaskId,
        arrived: Arrived,
    ) {
        let Some(owned) = self.owned.get_mut(&partition) else {
            return;
        };
        let epoch = owned.epoch;
        let Some(Tracked::Counting {
            size,
            policy,
            progress,
        }) = owned.chords.get_mut(chord_id)
        else {
            return;
        };
        // Completions that arrive while the chord fires are purged with it.
        if progress.firing {
            return;
        }
        if let Err(mismatch) = arrived.completion.check_size(chord_id, *size) {
            tracing::warn!(chord_id = %chord_id, error = %mismatch, "ignoring a chord completion that does not fit its chord; deleting it");
            self.delete(arrived.sequence);
            return;
        }
        progress.record(&arrived.completion);
        if let Some(decision) = progress.decide(chord_id, *size, *policy) {
            progress.firing = true;
            let traces = progress.traces().to_vec();
            self.start_fire(ctx, (partition, epoch), chord_id.clone(), decision, traces);
        }
    }

    /// Fires `chord_id` of `partition` (owned since `epoch`) as `decision` says; `traces` are its
    /// members' run spans, for the body's links.
    fn start_fire(
        &mut self,
        ctx: &mut Context<Self>,
        (partition, epoch): (u32, u64),
        chord_id: TaskId,
        decision: Decision,
        traces: Vec<String>,
    ) {
        let shared = self.shared.clone();
        let chords = self.backend.chords.clone();
        let stream = self.backend.stream.clone();
        let subject = self.shared.layout.chord_subject(partition, &chord_id);
        let fire = async move {
            let decided = fire::Decided { decision, traces };
            let fired = fire(&shared, &chords, &stream, &chord_id, &subject, decided).await;
            (chord_id, fired)
        };
        ctx.spawn(
            fire.into_actor(self)
                .map(move |(chord_id, fired), actor, _| {
                    let Some(owned) = actor.owned_at(partition, epoch) else {
                        return;
                    };
                    match fired {
                        Ok(()) => {
                            owned.chords.remove(&chord_id);
                            owned.settled.insert(chord_id);
                        }
                        Err(error) => {
                            // Left in the stream: a later replay (this owner's next lease, or
                            // another's) fires it again, and the marker and ids keep that from
                            // running it twice.
                            tracing::error!(chord_id = %chord_id, error = %crate::error_chain(&error), "cannot fire a chord; it stays pending");
                            match owned.chords.get_mut(&chord_id) {
                                Some(Tracked::Counting { progress, .. }) => progress.firing = false,
                                // Read again at its next completion, and failed again.
                                Some(Tracked::Invalid) => {
                                    owned.chords.remove(&chord_id);
                                }
                                _ => {}
                            }
                        }
                    }
                }),
        );
    }

    /// Purges every completion of a settled chord.
    fn purge(&self, partition: u32, chord_id: &TaskId) {
        let stream = self.backend.stream.clone();
        let subject = self.shared.layout.chord_subject(partition, chord_id);
        self.shared.runtime.spawn(async move {
            if let Err(error) = stream.purge().filter(subject).await {
                tracing::debug!(error = %error, "cannot purge a settled chord's completions; the next replay drops them");
            }
        });
    }

    /// Deletes one completion that fits no chord, so no replay reads it again.
    fn delete(&self, sequence: Option<u64>) {
        let Some(sequence) = sequence else { return };
        let stream = self.backend.stream.clone();
        self.shared.runtime.spawn(async move {
            if let Err(error) = stream.delete_message(sequence).await {
                tracing::debug!(sequence, error = %error, "cannot delete a chord completion that fits no chord");
            }
        });
    }
}

fn lease_key(partition: u32) -> String {
    format!("p{partition}")
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
pub(crate) struct Completion(
    u32,
    Result<jetstream::Message, consumer::push::OrderedError>,
);

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
