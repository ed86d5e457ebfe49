//! `Beat`: the periodic-task scheduler of a worker started with `--beat`.
//!
//! Every such worker runs one; only the holder of the lease (key `leader` of the beat bucket)
//! sends tasks. The lease is a value with an expiry time, renewed by compare-and-set every third of
//! its duration and taken over by compare-and-set once it has lapsed, so a dead scheduler is
//! replaced within one lease duration.
//!
//! Each entry's state (its last tick, runs, next tick) lives in the beat bucket too. A tick is
//! sent with the task id `beat-<entry>-<tick>`, before the state records it: a scheduler that dies
//! in between makes its successor send the same id again, which the queue stream de-duplicates.
//! Only the latest due tick is sent, so ticks missed while no scheduler ran are sent once.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use async_nats::jetstream::kv;
use celerity_proto::{
    BEAT_LEADER_KEY, BeatEntryState, BeatLease, CanvasNode, SignatureRecord, TaskId,
    beat_entry_key, beat_task_id,
};

use crate::beat::Entry;
use crate::clock::now_ms;
use crate::dispatch::{Membership, Origin, Previous};
use crate::worker::SharedHandle;

/// How often the scheduler looks at its entries.
const ROUND: Duration = Duration::from_millis(200);
/// How often a scheduler without the lease checks whether it lapsed.
const CANDIDATE_ROUND: Duration = Duration::from_secs(1);

/// The periodic-task scheduler of one worker.
pub(crate) struct Beat {
    shared: SharedHandle,
    /// Taken by the round in progress, put back when it ends.
    state: Option<BeatState>,
}

struct BeatState {
    bucket: kv::Store,
    entries: Vec<Entry>,
    lease: Duration,
    /// The lease's revision while this scheduler holds it, and when it was last written.
    held: Option<(u64, u64)>,
    next_candidate_ms: u64,
    /// Entry states read or written while holding the lease, with their revisions.
    states: HashMap<String, (BeatEntryState, u64)>,
}

impl Beat {
    pub(crate) fn new(
        shared: SharedHandle,
        bucket: kv::Store,
        entries: Vec<Entry>,
        lease: Duration,
    ) -> Self {
        Self {
            shared,
            state: Some(BeatState {
                bucket,
                entries,
                lease,
                held: None,
                next_candidate_ms: 0,
                states: HashMap::new(),
            }),
        }
    }

    fn round(&mut self, ctx: &mut Context<Self>) {
        let Some(mut state) = self.state.take() else {
            return;
        };
        let shared = self.shared.clone();
        let work = async move {
            state.keep_lease(&shared).await;
            if state.held.is_some() {
                state.send_due(&shared).await;
            }
            state
        };
        ctx.spawn(work.into_actor(self).map(|state, actor, _ctx| {
            actor.state = Some(state);
        }));
    }
}

impl Actor for Beat {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let names: Vec<&str> = self
            .state
            .iter()
            .flat_map(|state| state.entries.iter().map(Entry::name))
            .collect();
        tracing::info!(worker = %self.shared.hostname, entries = ?names, "beat candidate");
        self.round(ctx);
        ctx.run_interval(ROUND, |actor, ctx| actor.round(ctx));
    }

    fn stopping(&mut self, _ctx: &mut Self::Context) -> Running {
        // Hand the lease back at once, so a standby takes over without waiting for it to lapse.
        if let Some(BeatState {
            bucket,
            held: Some((revision, _)),
            ..
        }) = self.state.take()
        {
            self.shared.runtime.spawn(async move {
                let _ = bucket
                    .delete_expect_revision(BEAT_LEADER_KEY, Some(revision))
                    .await;
            });
        }
        Running::Stop
    }
}

impl BeatState {
    /// The lease record this worker writes at `now`, encoded.
    fn lease_value(
        &self,
        shared: &crate::worker::WorkerShared,
        now: u64,
    ) -> Result<bytes::Bytes, serde_json::Error> {
        let names = self.entries.iter().map(|entry| entry.name().to_owned());
        let lease = BeatLease::new(
            shared.hostname.to_string(),
            now + self.lease.as_millis() as u64,
            names.collect(),
        );
        Ok(serde_json::to_vec(&lease)?.into())
    }

    /// Renews the lease when a third of it has passed, or takes it when it has lapsed.
    async fn keep_lease(&mut self, shared: &crate::worker::WorkerShared) {
        let now = now_ms();
        let renew_every = self.lease.as_millis() as u64 / 3;
        match self.held {
            Some((revision, written)) => {
                if now < written + renew_every {
                    return;
                }
                let renewed = match self.lease_value(shared, now) {
                    Ok(value) => self.bucket.update(BEAT_LEADER_KEY, value, revision).await,
                    Err(error) => {
                        tracing::error!(error = %error, "cannot encode the beat lease");
                        self.lose();
                        return;
                    }
                };
                match renewed {
                    Ok(revision) => self.held = Some((revision, now)),
                    Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        tracing::warn!(worker = %shared.hostname, "lost the beat lease; another worker schedules periodic tasks now");
                        self.lose();
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "cannot renew the beat lease; retrying");
                        // It lapses on its own: stop sending before the others may take over.
                        if now >= written + self.lease.as_millis() as u64 {
                            self.lose();
                        }
                    }
                }
            }
            None => {
                if now < self.next_candidate_ms {
                    return;
                }
                self.next_candidate_ms = now + CANDIDATE_ROUND.as_millis() as u64;
                if let Some(revision) = self.take_lease(shared, now).await {
                    tracing::info!(worker = %shared.hostname, "this worker schedules periodic tasks");
                    self.held = Some((revision, now));
                }
            }
        }
    }

    fn lose(&mut self) {
        self.held = None;
        self.states.clear();
    }

    /// Takes the lease if nobody holds it (or this worker did, before a restart).
    async fn take_lease(&self, shared: &crate::worker::WorkerShared, now: u64) -> Option<u64> {
        let value = match self.lease_value(shared, now) {
            Ok(value) => value,
            Err(error) => {
                tracing::error!(error = %error, "cannot encode the beat lease; not taking it");
                return None;
            }
        };
        let current = match self.bucket.entry(BEAT_LEADER_KEY).await {
            Ok(current) => current,
            Err(error) => {
                tracing::debug!(error = %error, "cannot read the beat lease");
                return None;
            }
        };
        match current {
            None => self.bucket.create(BEAT_LEADER_KEY, value).await.ok(),
            Some(entry) => {
                let free = entry.operation != kv::Operation::Put
                    || serde_json::from_slice::<BeatLease>(&entry.value).map_or(true, |lease| {
                        lease.until_ms < now || lease.holder == *shared.hostname
                    });
                if !free {
                    return None;
                }
                self.bucket
                    .update(BEAT_LEADER_KEY, value, entry.revision)
                    .await
                    .ok()
            }
        }
    }

    /// Sends the latest due tick of every entry that has one.
    async fn send_due(&mut self, shared: &crate::worker::WorkerShared) {
        for index in 0..self.entries.len() {
            let Some((_, written)) = self.held else {
                return;
            };
            // Never send on a lease that may have lapsed for the others.
            if now_ms() >= written + self.lease.as_millis() as u64 {
                return;
            }
            let entry = self.entries[index].clone();
            let Some((state, revision)) = self.entry_state(&entry).await else {
                continue;
            };
            let now = now_ms();
            let Some(tick) = entry
                .schedule()
                .latest_tick(state.anchor_ms, now)
                .filter(|tick| *tick > state.last_tick_ms)
            else {
                continue;
            };
            let Ok(task_id) = TaskId::new(beat_task_id(entry.name(), tick)) else {
                continue;
            };
            // A tick sent before, by a scheduler that stopped before recording it, has a record
            // under its id: the stream's dedupe window (2 minutes) may have passed since.
            match shared.store.get(&task_id).await {
                Ok(None) => {
                    if let Err(error) = send(shared, &entry, task_id.clone()).await {
                        tracing::warn!(entry = %entry.name(), error = %crate::error_chain(&error), "cannot send a periodic task; retrying");
                        continue;
                    }
                    tracing::info!(entry = %entry.name(), task_id = %task_id, tick_ms = tick, "periodic task sent");
                }
                Ok(Some(_)) | Err(crate::result_store::StoreError::Corrupt { .. }) => {
                    tracing::info!(entry = %entry.name(), task_id = %task_id, tick_ms = tick, "periodic task was sent before; recording it");
                }
                Err(error) => {
                    tracing::warn!(entry = %entry.name(), error = %crate::error_chain(&error), "cannot check whether a periodic task was sent; retrying");
                    continue;
                }
            }
            let mut next = state.clone();
            next.last_tick_ms = tick;
            next.last_run_ms = Some(now);
            next.last_task_id = Some(task_id.to_string());
            next.next_tick_ms = entry.schedule().next_tick(state.anchor_ms, now);
            next.runs += 1;
            self.write_state(&entry, next, Some(revision)).await;
        }
    }

    /// The entry's state: cached, else read from the bucket, else created. A stored state of
    /// another schedule or task starts over from now.
    async fn entry_state(&mut self, entry: &Entry) -> Option<(BeatEntryState, u64)> {
        if let Some(cached) = self.states.get(entry.name()) {
            return Some(cached.clone());
        }
        let key = beat_entry_key(entry.name());
        let stored = match self.bucket.entry(key.as_str()).await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(entry = %entry.name(), error = %error, "cannot read a beat entry's state");
                return None;
            }
        };
        let spec = entry.schedule().spec();
        let readable = stored.as_ref().and_then(|stored| {
            let state = serde_json::from_slice::<BeatEntryState>(&stored.value).ok()?;
            Some((state, stored.revision))
        });
        match readable {
            Some((state, revision))
                if state.schedule == spec && state.task == entry.task_name() =>
            {
                self.states
                    .insert(entry.name().to_owned(), (state.clone(), revision));
                Some((state, revision))
            }
            _ => {
                let now = now_ms();
                let fresh = BeatEntryState::new(
                    entry.name(),
                    entry.task_name(),
                    spec,
                    now,
                    entry.schedule().next_tick(now, now),
                );
                let revision = stored.map(|stored| stored.revision);
                self.write_state(entry, fresh, revision.or(Some(0))).await
            }
        }
    }

    /// Writes `state` expecting `revision` (0: the key must not exist); on a conflict the cached
    /// state is dropped, to be read again.
    async fn write_state(
        &mut self,
        entry: &Entry,
        state: BeatEntryState,
        revision: Option<u64>,
    ) -> Option<(BeatEntryState, u64)> {
        let key = beat_entry_key(entry.name());
        let value: bytes::Bytes = serde_json::to_vec(&state).ok()?.into();
        let written = self
            .bucket
            .update(key.as_str(), value, revision.unwrap_or(0))
            .await;
        match written {
            Ok(revision) => {
                self.states
                    .insert(entry.name().to_owned(), (state.clone(), revision));
                Some((state, revision))
            }
            Err(error) => {
                tracing::warn!(entry = %entry.name(), error = %error, "cannot record a beat entry's state; reading it again");
                self.states.remove(entry.name());
                None
            }
        }
    }
}

/// Sends the entry's task under `task_id`, routed like any task sent by this app.
async fn send(
    shared: &crate::worker::WorkerShared,
    entry: &Entry,
    task_id: TaskId,
) -> Result<(), crate::error::EnqueueError> {
    let task = &entry.task;
    let registered_queue = shared
        .app
        .task(&task.task)
        .and_then(|registered| registered.options.queue_name())
        .and_then(|queue| celerity_proto::QueueName::new(queue).ok());
    let (queue, priority) = shared
        .app
        .settings()
        .routes
        .resolve(
            task.task.as_str(),
            &task.args,
            &task.kwargs,
            task.queue.clone(),
            task.priority,
            task.task_queue.clone().or(registered_queue),
        )
        .map_err(|error| crate::error::EnqueueError::invalid_route(task.task.as_str(), error))?;
    let mut record = SignatureRecord::new(task_id, task.task.clone(), task.args.clone());
    record.kwargs = task.kwargs.clone();
    record.queue = Some(queue);
    record.priority = Some(priority);
    let origin = Origin {
        parent_id: None,
        root_id: None,
        reply_to: None,
        content_type: shared.app.settings().content_type,
        expires_ms: None,
    };
    shared
        .dispatcher
        .send(
            &CanvasNode::Signature(record),
            &origin,
            Previous::Nothing,
            Vec::new(),
            Membership::default(),
        )
        .await
}
