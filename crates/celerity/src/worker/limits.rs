//! Rate limits on a worker: the gate a task passes before it may take an execution slot.
//!
//! A task type may have a per-worker limit (a governor limiter in this process) and a
//! cluster-wide one (slots reserved in the rates bucket by compare-and-set, GCRA style). Limits
//! come from the task's options, overridden by the stored settings every worker watches. A task
//! that must wait gives its fetch credit back while it waits, taking a place in the worker's
//! waiting room (bounded in tasks and in message bytes), so other tasks keep flowing; when the room
//! is full it waits holding its credit, so the worker fetches less instead of holding more. It is
//! never handed back to its queue (which would count as a delivery): its in-progress acks keep it
//! from being redelivered.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use celerity_proto::{Rate, RateLimitSetting, SettingScope, TaskName, rate_limit_key};
use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::worker::settings::Stored;

/// How far ahead a worker may reserve cluster-wide slots: at most what it wastes if it dies.
const RESERVE_AHEAD: Duration = Duration::from_secs(1);
/// How long to wait before trying the rates bucket again after an error.
const BUCKET_RETRY: Duration = Duration::from_millis(500);
/// How far the clocks of two workers may disagree: a stored start further ahead than a worker can
/// reserve, by more than this, was not written by a worker and is replaced.
const CLOCK_SKEW: Duration = Duration::from_secs(5);
/// The waiting room counts message bytes in units of this many bytes.
const ROOM_UNIT: usize = 1024;

/// A per-worker limiter.
type Limiter = governor::DefaultDirectRateLimiter;

/// The rate limits of one worker: the stored settings it has seen and one gate per task type.
pub(crate) struct RateLimits {
    app: App,
    hostname: String,
    /// Stored rate limits by key.
    stored: Stored<RateLimitSetting>,
    gates: DashMap<String, Arc<Gate>>,
    /// Held while a setting is applied, so two applies cannot set a gate out of order.
    applying: std::sync::Mutex<()>,
    /// Tasks waiting for a rate limit without fetch credit; beyond it they wait holding it.
    room: WaitingRoom,
    rates: kv::Store,
}

impl RateLimits {
    pub(crate) fn new(app: App, hostname: &str, room: WaitingRoom, rates: kv::Store) -> Self {
        Self {
            app,
            hostname: hostname.to_owned(),
            stored: Stored::new(),
            gates: DashMap::new(),
            applying: std::sync::Mutex::new(()),
            room,
            rates,
        }
    }

    /// The gate of task type `task`, or `None` when it has no limit.
    pub(crate) fn gate(&self, task: &TaskName) -> Option<Arc<Gate>> {
        let gate = match self.gates.get(task.as_str()) {
            Some(gate) => gate.clone(),
            // A name no task is registered under has no limit, and gets no gate: messages with
            // made-up names cannot grow this map.
            None if self.app.task(task).is_none() => return None,
            None => self
                .gates
                .entry(task.as_str().to_owned())
                .or_insert_with(|| Arc::new(self.new_gate(task.as_str())))
                .clone(),
        };
        (!gate.is_open()).then_some(gate)
    }

    /// Applies a stored setting read at `revision` (`None`: the key was deleted). Older revisions
    /// than the one applied are ignored, so the control path and the watch may both deliver it.
    pub(crate) fn apply(&self, key: &str, revision: u64, setting: Option<RateLimitSetting>) {
        let _applying = self
            .applying
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let task = setting.as_ref().map(|setting| setting.task.clone());
        let Some(previous) = self.stored.apply(key, revision, setting) else {
            return;
        };
        if let Some(task) = task.or_else(|| previous.map(|setting| setting.task)) {
            let limits = self.limits_of(&task);
            tracing::info!(task = %task, per_worker = ?limits.0.map(|rate| rate.to_string()), cluster = ?limits.1.map(|rate| rate.to_string()), "rate limit changed");
            self.gates
                .entry(task.clone())
                .or_insert_with(|| Arc::new(self.new_gate(&task)))
                .set(limits);
        }
    }

    /// The limits of `task` on this worker right now, and the key of the stored setting that
    /// decided each (for control replies): (per worker, cluster-wide).
    pub(crate) fn limits_of(&self, task: &str) -> (Option<Rate>, Option<Rate>) {
        let options = TaskName::new(task)
            .ok()
            .and_then(|name| self.app.task(&name))
            .map(|registered| registered.options);
        let setting = |scope: SettingScope| {
            self.stored
                .get(&rate_limit_key(task, &scope))
                .map(|setting| setting.rate)
        };
        let worker = SettingScope::Worker {
            worker: self.hostname.clone(),
        };
        let per_worker = setting(worker)
            .or_else(|| setting(SettingScope::Workers))
            .unwrap_or_else(|| options.and_then(|options| options.rate_limit_value()));
        let cluster = setting(SettingScope::Cluster)
            .unwrap_or_else(|| options.and_then(|options| options.global_rate_limit_value()));
        (per_worker, cluster)
    }

    fn new_gate(&self, task: &str) -> Gate {
        let (per_worker, cluster) = self.limits_of(task);
        let (config, _) = watch::channel(GateConfig::new(per_worker, cluster, None));
        Gate {
            config,
            turn: tokio::sync::Mutex::new(()),
            cluster_turn: tokio::sync::Mutex::new(()),
            room: self.room.clone(),
            rates: self.rates.clone(),
            key: celerity_proto::kv_key_token(task),
        }
    }
}

#[derive(Clone)]
struct GateConfig {
    per_worker: Option<(Rate, Arc<Limiter>)>,
    cluster: Option<Rate>,
}

impl GateConfig {
    /// Keeps `current`'s limiter when the per-worker rate is unchanged, so a change of the other
    /// limit does not reset its count.
    fn new(per_worker: Option<Rate>, cluster: Option<Rate>, current: Option<&GateConfig>) -> Self {
        let per_worker = per_worker.map(|rate| {
            let kept = current
                .and_then(|current| current.per_worker.as_ref())
                .filter(|(current_rate, _)| *current_rate == rate)
                .map(|(_, limiter)| limiter.clone());
            (rate, kept.unwrap_or_else(|| Arc::new(limiter(rate))))
        });
        Self {
            per_worker,
            cluster,
        }
    }

    fn rates(&self) -> (Option<Rate>, Option<Rate>) {
        (
            self.per_worker.as_ref().map(|(rate, _)| *rate),
            self.cluster,
        )
    }
}

/// A governor limiter for `rate`: one task every `rate.interval()`, no bursts.
fn limiter(rate: Rate) -> Limiter {
    let quota = governor::Quota::with_period(rate.interval())
        .unwrap_or_else(|| governor::Quota::per_second(std::num::NonZeroU32::MAX));
    governor::RateLimiter::direct(quota)
}

/// The rate limits of one task type on one worker.
pub(crate) struct Gate {
    config: watch::Sender<GateConfig>,
    /// Waiters for the per-worker limit queue here, first come first served.
    turn: tokio::sync::Mutex<()>,
    /// Reservations in the rates bucket are made one at a time by this worker.
    cluster_turn: tokio::sync::Mutex<()>,
    room: WaitingRoom,
    rates: kv::Store,
    key: String,
}

/// Where rate-limited tasks wait without fetch credit: at most `places` tasks holding at most
/// `bytes` of messages in all.
#[derive(Debug, Clone)]
pub(crate) struct WaitingRoom {
    places: Arc<Semaphore>,
    /// In units of [`ROOM_UNIT`] bytes.
    units: Arc<Semaphore>,
}

impl WaitingRoom {
    /// A room for `places` tasks (at least 1) and `bytes` of their messages (at least one
    /// message's worth of units).
    pub(crate) fn new(places: usize, bytes: usize) -> Self {
        let units = bytes.div_ceil(ROOM_UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            places: Arc::new(Semaphore::new(places.clamp(1, Semaphore::MAX_PERMITS))),
            units: Arc::new(Semaphore::new(units)),
        }
    }

    /// A place for a task whose message has `size` bytes, if the room has one.
    fn enter(&self, size: usize) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let units = u32::try_from(size.div_ceil(ROOM_UNIT).max(1)).ok()?;
        let place = self.places.clone().try_acquire_owned().ok()?;
        let bytes = self.units.clone().try_acquire_many_owned(units).ok()?;
        Some((place, bytes))
    }
}

/// How a task left the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Passage {
    /// It may run now.
    Go,
    /// The worker is stopping: hand the task back.
    Stopped,
}

impl Gate {
    fn is_open(&self) -> bool {
        let config = self.config.borrow();
        config.per_worker.is_none() && config.cluster.is_none()
    }

    fn set(&self, (per_worker, cluster): (Option<Rate>, Option<Rate>)) {
        self.config.send_if_modified(|current| {
            if current.rates() == (per_worker, cluster) {
                return false;
            }
            *current = GateConfig::new(per_worker, cluster, Some(current));
            true
        });
    }

    /// Waits until the task, whose message has `size` bytes, may run under both limits. While it
    /// waits, `credit` is given back for a place in the waiting room if there is one (and taken
    /// again before this returns [`Passage::Go`]).
    ///
    /// # Cancel safety
    /// Cancel safe in that nothing leaks, but a dropped call may leave `credit` without its fetch
    /// credit (holding a waiting-room place instead, freed when `credit` drops) and waste a
    /// reserved cluster-wide slot (at most [`RESERVE_AHEAD`] of the limit's time).
    pub(crate) async fn pass(
        &self,
        credit: &mut Credit,
        size: usize,
        stopping: &CancellationToken,
    ) -> Passage {
        let passage = self.wait(credit, size, stopping).await;
        if passage == Passage::Go && !credit.take_back(stopping).await {
            return Passage::Stopped;
        }
        passage
    }

    async fn wait(
        &self,
        credit: &mut Credit,
        size: usize,
        stopping: &CancellationToken,
    ) -> Passage {
        let mut changes = self.config.subscribe();
        // A change of either limit wakes every waiter, which starts over under the new limits.
        'limits: loop {
            // The per-worker limit: first come, first served.
            loop {
                let config = changes.borrow_and_update().clone();
                let Some((_, limiter)) = config.per_worker else {
                    break;
                };
                if let Ok(_turn) = self.turn.try_lock()
                    && limiter.check().is_ok()
                {
                    break;
                }
                credit.give_back(&self.room, size);
                let turn = tokio::select! {
                    turn = self.turn.lock() => turn,
                    _ = changes.changed() => continue,
                    () = stopping.cancelled() => return Passage::Stopped,
                };
                tokio::select! {
                    () = limiter.until_ready() => {
                        drop(turn);
                        break;
                    }
                    _ = changes.changed() => continue,
                    () = stopping.cancelled() => return Passage::Stopped,
                }
            }
            // The cluster-wide limit: reserve the next free slot in the bucket, then wait for it.
            // Reserving may wait on other workers, so the credit is given back first.
            let Some(rate) = changes.borrow().cluster else {
                return Passage::Go;
            };
            credit.give_back(&self.room, size);
            let start = loop {
                tokio::select! {
                    reserved = self.reserve(rate) => match reserved {
                        Ok(start) => break start,
                        Err(error) => {
                            tracing::warn!(key = %self.key, error = %crate::error_chain(&error), "cannot reserve a cluster-wide rate slot; retrying");
                            tokio::select! {
                                () = tokio::time::sleep(BUCKET_RETRY) => {}
                                _ = changes.changed() => continue 'limits,
                                () = stopping.cancelled() => return Passage::Stopped,
                            }
                        }
                    },
                    _ = changes.changed() => continue 'limits,
                    () = stopping.cancelled() => return Passage::Stopped,
                }
            };
            // The slot is ours (at most RESERVE_AHEAD away): a change of limits no longer matters.
            tokio::select! {
                () = tokio::time::sleep_until(start) => return Passage::Go,
                () = stopping.cancelled() => return Passage::Stopped,
            }
        }
    }

    /// Reserves the next free slot of the cluster-wide limit and returns when it starts.
    ///
    /// The bucket holds the theoretical arrival time (microseconds since the epoch) of the task
    /// after the last reserved one; reserving is one compare-and-set that moves it one interval on.
    /// Slots more than [`RESERVE_AHEAD`] away are not taken yet.
    async fn reserve(&self, rate: Rate) -> Result<Instant, RateBucketError> {
        let _turn = self.cluster_turn.lock().await;
        let interval = (rate.interval().as_micros() as u64).max(1);
        loop {
            let entry = self.rates.entry(self.key.as_str()).await?;
            let (next_free, revision) = match entry {
                Some(entry) if entry.operation == kv::Operation::Put => {
                    (next_free(&entry.value, interval), Some(entry.revision))
                }
                Some(entry) => (0, Some(entry.revision)),
                None => (0, None),
            };
            let now = crate::clock::now_us();
            let start = plausible_start(next_free, now, interval).unwrap_or_else(|| {
                tracing::warn!(key = %self.key, next_free_us = next_free, "the rates bucket holds a start no worker could have reserved; replacing it");
                now
            });
            let ahead = Duration::from_micros(start - now);
            if ahead > RESERVE_AHEAD {
                tokio::time::sleep(ahead - RESERVE_AHEAD).await;
                continue;
            }
            let value = format!("{} {interval}", start.saturating_add(interval))
                .into_bytes()
                .into();
            let written = match revision {
                Some(revision) => match self.rates.update(self.key.as_str(), value, revision).await
                {
                    Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => None,
                    other => Some(other.map_err(RateBucketError::from)),
                },
                None => match self.rates.create(self.key.as_str(), value).await {
                    Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => None,
                    other => Some(other.map_err(RateBucketError::from)),
                },
            };
            match written {
                // Another worker took it first: read again.
                None => continue,
                Some(written) => {
                    written?;
                    return Ok(Instant::now() + ahead);
                }
            }
        }
    }
}

/// The next free slot (microseconds since the epoch) from a rates bucket value,
/// `"<next_free_us> <interval_us>"`, for a limit whose interval is now `interval` microseconds.
///
/// The slot after the last reserved one was computed with the interval of its time; when the
/// limit has changed since, it moves to the last reserved slot plus the new interval, so raising a
/// limit takes effect at once. A value without an interval (or unreadable) is taken as is (or 0).
fn next_free(value: &[u8], interval: u64) -> u64 {
    let mut fields = std::str::from_utf8(value)
        .unwrap_or("")
        .split_ascii_whitespace();
    let Some(next_free) = fields.next().and_then(|field| field.parse::<u64>().ok()) else {
        return 0;
    };
    match fields.next().and_then(|field| field.parse::<u64>().ok()) {
        Some(stored) if stored != interval => {
            next_free.saturating_sub(stored).saturating_add(interval)
        }
        _ => next_free,
    }
}

/// When a task may start given the stored next free slot `next_free` (microseconds since the
/// epoch), at `now`: not before either, or `None` when the slot lies further ahead than any
/// worker reserves (a slot at most [`RESERVE_AHEAD`] away, plus one interval, plus clock skew),
/// which means the value was not written by a worker and would stall every task of the limit.
fn plausible_start(next_free: u64, now: u64, interval: u64) -> Option<u64> {
    let furthest = now
        .saturating_add(RESERVE_AHEAD.as_micros() as u64)
        .saturating_add(interval)
        .saturating_add(CLOCK_SKEW.as_micros() as u64);
    (next_free <= furthest).then(|| next_free.max(now))
}

/// The rates bucket could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RateBucketError {
    /// The key of the limit could not be read.
    #[error("cannot read the rates bucket")]
    Read(#[from] kv::EntryError),
    /// The next slot could not be written over the last.
    #[error("cannot update the rates bucket")]
    Update(#[from] kv::UpdateError),
    /// The key of the limit could not be created.
    #[error("cannot create the key in the rates bucket")]
    Create(#[from] kv::CreateError),
}

/// The fetch credit a dispatched task holds. A task waiting for a rate limit gives it back (taking
/// a place in the worker's waiting room instead), so the queue fetches other work meanwhile.
pub(crate) struct Credit {
    credit: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
    /// A place in the waiting room and its bytes.
    waiting: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

impl Credit {
    pub(crate) fn new(credit: Arc<Semaphore>, held: OwnedSemaphorePermit) -> Self {
        Self {
            credit,
            held: Some(held),
            waiting: None,
        }
    }

    /// Gives the credit back for a place in `room`, for a message of `size` bytes; when the room
    /// is full the credit is kept, and false returned.
    fn give_back(&mut self, room: &WaitingRoom, size: usize) -> bool {
        if self.waiting.is_some() {
            return true;
        }
        match room.enter(size) {
            Some(place) => {
                self.waiting = Some(place);
                self.held = None;
                true
            }
            None => false,
        }
    }

    /// Takes credit again after waiting (the queue's fetches and other waiters take turns); false
    /// when the worker stops first.
    async fn take_back(&mut self, stopping: &CancellationToken) -> bool {
        if self.held.is_none() {
            let permit = tokio::select! {
                permit = self.credit.clone().acquire_owned() => permit.ok(),
                () = stopping.cancelled() => return false,
            };
            self.held = permit;
        }
        self.waiting = None;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limiter_spreads_tasks_evenly() {
        let limiter = limiter("10/s".parse().unwrap());
        assert!(limiter.check().is_ok());
        assert!(
            limiter.check().is_err(),
            "a second task in the same 100 ms waits"
        );
    }

    #[test]
    fn a_config_keeps_its_limiter_while_its_rate_is_unchanged() {
        let ten: Rate = "10/s".parse().unwrap();
        let first = GateConfig::new(Some(ten), None, None);
        let same = GateConfig::new(Some(ten), Some(ten), Some(&first));
        let (Some((_, a)), Some((_, b))) = (&first.per_worker, &same.per_worker) else {
            unreachable!("both have a per-worker limit")
        };
        assert!(Arc::ptr_eq(a, b));
        let other = GateConfig::new(Some("5/s".parse().unwrap()), None, Some(&first));
        let Some((_, c)) = &other.per_worker else {
            unreachable!("it has a per-worker limit")
        };
        assert!(!Arc::ptr_eq(a, c));
    }

    #[test]
    fn the_next_free_slot_follows_a_changed_interval() {
        assert_eq!(next_free(b"5000 1000", 1000), 5000);
        assert_eq!(
            next_free(b"5000 1000", 100),
            4100,
            "a raised limit applies at once"
        );
        assert_eq!(next_free(b"5000 1000", 3000), 7000, "a lowered one too");
        assert_eq!(
            next_free(b"5000", 100),
            5000,
            "a value without interval is taken as is"
        );
        assert_eq!(next_free(b"garbage", 100), 0);
        assert_eq!(next_free(b"", 100), 0);
    }

    #[tokio::test]
    async fn credit_taken_back_gives_way_to_stopping() {
        let credit = Arc::new(Semaphore::new(1));
        let room = WaitingRoom::new(1, 1 << 20);
        let mut waiter = Credit::new(credit.clone(), credit.clone().try_acquire_owned().unwrap());
        assert!(waiter.give_back(&room, 100));
        let _taken = credit.clone().try_acquire_owned().unwrap();
        let stopping = CancellationToken::new();
        stopping.cancel();
        assert!(!waiter.take_back(&stopping).await, "no credit and stopping");
    }

    #[tokio::test]
    async fn credit_is_given_back_only_while_the_room_has_space() {
        let credit = Arc::new(Semaphore::new(1));
        let room = WaitingRoom::new(1, 1 << 20);
        let mut first = Credit::new(credit.clone(), credit.clone().try_acquire_owned().unwrap());
        assert_eq!(credit.available_permits(), 0);
        assert!(first.give_back(&room, 100));
        assert_eq!(credit.available_permits(), 1, "the queue may fetch again");
        let mut second = Credit::new(credit.clone(), credit.clone().try_acquire_owned().unwrap());
        assert!(!second.give_back(&room, 100), "the room holds one");
        assert!(
            second.held.is_some(),
            "a task the room has no place for keeps its credit"
        );
        drop(second);
        assert!(first.take_back(&CancellationToken::new()).await);
        assert!(first.held.is_some());
        assert_eq!(credit.available_permits(), 0);
        assert_eq!(
            room.places.available_permits(),
            1,
            "its place in the room is free again"
        );
    }

    #[test]
    fn the_room_counts_message_bytes_as_well_as_tasks() {
        let room = WaitingRoom::new(1000, 10 * ROOM_UNIT);
        let big = room.enter(8 * ROOM_UNIT).expect("8 of 10 units are free");
        assert!(
            room.enter(3 * ROOM_UNIT).is_none(),
            "3 more units do not fit"
        );
        assert_eq!(
            room.places.available_permits(),
            999,
            "a refused task takes no place"
        );
        let small = room.enter(1).expect("a tiny message takes one unit");
        drop((big, small));
        assert_eq!(room.units.available_permits(), 10);
    }

    #[test]
    fn a_stored_start_no_worker_could_have_reserved_is_refused() {
        let now = 1_000_000_000_000;
        let interval = 100_000;
        assert_eq!(plausible_start(0, now, interval), Some(now));
        assert_eq!(
            plausible_start(now + 500_000, now, interval),
            Some(now + 500_000)
        );
        assert_eq!(plausible_start(u64::MAX, now, interval), None, "far future");
        assert_eq!(plausible_start(now + 7_000_000, now, interval), None);
        assert_eq!(
            next_free(b"18446744073709551615 1", 2),
            u64::MAX,
            "no overflow"
        );
    }
}
