//! [`Storage`]: how the streams and buckets of one deployment are kept: how many replicas each
//! has, where a cluster places them, and how large each may grow.
//!
//! Every stream and bucket has a size limit, so a flood of tasks or of bad messages fills its own
//! stream and stops there, instead of filling the server's store (which would stop JetStream for
//! every user of the server). What happens at a limit is each stream's documented choice
//! (`docs/reliability.md`): a queue refuses new tasks (the producer gets
//! [`EnqueueError::QueueFull`](crate::EnqueueError::QueueFull), nothing queued is dropped), the
//! dead-letter stream drops its oldest letters.

use std::time::Duration;

/// One mebibyte.
const MIB: u64 = 1 << 20;

/// The most replicas a JetStream stream can have.
pub const MAX_REPLICAS: usize = 5;

/// The smallest size limit accepted: below it a stream could not hold one large task.
pub const MIN_MAX_BYTES: u64 = 1 << 10;

/// The size limit of the buckets and streams with no setting of their own (revoked ids, hand-back
/// counts, chord leases, stored settings, beat state, rate-limit state): each holds one small
/// value per key.
pub(crate) const SMALL_BUCKET_MAX_BYTES: u64 = 16 * MIB;

/// How the deployment's streams and buckets are stored; part of the [`Settings`](crate::Settings)
/// producers and workers share (set with [`AppBuilder::storage`](crate::AppBuilder::storage),
/// or by a worker's `--replicas` and `--*-max-*` flags).
///
/// The first process to create a stream or bucket sets these; one that exists is opened as it
/// is (an operator may change it with `nats stream edit`), and a process whose settings differ
/// logs a warning. On nats-server every limit is reserved from the server's `max_file_store`
/// when the stream is made, so the limits of one deployment must fit in it together.
///
/// ```
/// let mut storage = celerity::Storage::default();
/// storage.replicas = 3;
/// storage.queue_max_bytes = 4 << 30;
/// let app = celerity::App::builder().storage(storage).build().unwrap();
/// assert_eq!(app.settings().storage.replicas, 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Storage {
    /// Copies of every stream and bucket (1 to 5; default 1). 3 on a cluster of three or more
    /// JetStream servers keeps every queue and result through the loss of one server.
    pub replicas: usize,
    /// Placement tags: a cluster puts the copies only on servers carrying all of them (the
    /// servers' `server_tags`); none by default.
    pub placement_tags: Vec<String>,
    /// The size limit of each queue's stream (default 1 GiB). A full queue refuses new tasks.
    pub queue_max_bytes: u64,
    /// The size limit of the stream of delayed tasks (default 256 MiB). When it is full a task
    /// with a later ETA is refused like one sent to a full queue.
    pub delayed_max_bytes: u64,
    /// The size limit of the dead-letter stream (default 256 MiB); when it is full the oldest
    /// letters are dropped.
    pub dead_letter_max_bytes: u64,
    /// How long a dead letter is kept (default 14 days).
    pub dead_letter_max_age: Duration,
    /// The size limit of the chord completion stream (default 256 MiB); its records live as long
    /// as results, and the completions of a chord whose body was sent are purged at once.
    pub chord_max_bytes: u64,
    /// The size limit of the results bucket, and of the chords bucket (default 1 GiB each). When
    /// the results bucket is full, workers keep tasks in their queue until results expire or the
    /// limit is raised.
    pub results_max_bytes: u64,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            replicas: 1,
            placement_tags: Vec::new(),
            queue_max_bytes: 1024 * MIB,
            delayed_max_bytes: 256 * MIB,
            dead_letter_max_bytes: 256 * MIB,
            dead_letter_max_age: Duration::from_secs(14 * 24 * 3600),
            chord_max_bytes: 256 * MIB,
            results_max_bytes: 1024 * MIB,
        }
    }
}

/// A [`Storage`] setting is out of its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid storage setting {setting} = {value}: {rule}")]
pub struct StorageError {
    /// The setting (`replicas`, `queue_max_bytes`, ...).
    pub setting: &'static str,
    /// Its value.
    pub value: String,
    /// The rule it breaks.
    pub rule: &'static str,
}

impl Storage {
    /// Checks every setting's range.
    ///
    /// # Errors
    /// The first setting out of range: replicas outside 1 to 5, a size limit under 1 KiB, an
    /// empty placement tag, a zero dead-letter age.
    pub fn check(&self) -> Result<(), StorageError> {
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            return Err(StorageError {
                setting: "replicas",
                value: self.replicas.to_string(),
                rule: "use 1 to 5 (JetStream's range); 3 on a cluster of three servers",
            });
        }
        let limits = [
            ("queue_max_bytes", self.queue_max_bytes),
            ("delayed_max_bytes", self.delayed_max_bytes),
            ("dead_letter_max_bytes", self.dead_letter_max_bytes),
            ("chord_max_bytes", self.chord_max_bytes),
            ("results_max_bytes", self.results_max_bytes),
        ];
        for (setting, value) in limits {
            if value < MIN_MAX_BYTES || i64::try_from(value).is_err() {
                return Err(StorageError {
                    setting,
                    value: value.to_string(),
                    rule: "use at least 1 KiB and at most 2^63 - 1 bytes",
                });
            }
        }
        if self.dead_letter_max_age.is_zero() {
            return Err(StorageError {
                setting: "dead_letter_max_age",
                value: "0s".to_owned(),
                rule: "use a positive age",
            });
        }
        if let Some(tag) = self.placement_tags.iter().find(|tag| tag.trim().is_empty()) {
            return Err(StorageError {
                setting: "placement_tags",
                value: format!("{tag:?}"),
                rule: "a tag is a non-empty word",
            });
        }
        Ok(())
    }
}

/// A byte count as the stream configuration takes it (checked to fit by [`Storage::check`]).
pub(crate) fn stream_bytes(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// The names of a namespace's streams besides its queues' (each bucket's is `KV_<bucket>`), in the
/// order `celerity health` lists them.
pub fn shared_streams(layout: &celerity_proto::Layout) -> Vec<String> {
    let buckets = [
        layout.results_bucket(),
        layout.chords_bucket(),
        layout.revoked_bucket(),
        layout.handbacks_bucket(),
        layout.leases_bucket(),
        layout.settings_bucket(),
        layout.beat_bucket(),
        layout.rates_bucket(),
    ];
    let mut names = vec![
        layout.delayed_stream(),
        layout.dead_letter_stream(),
        layout.chord_stream(),
        layout.events_stream(),
    ];
    names.extend(buckets.iter().map(|bucket| format!("KV_{bucket}")));
    names
}

/// How full one stream (or bucket) is and how its copies are doing: what `celerity health` and
/// a worker's metrics show.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StreamUse {
    /// The stream's name.
    pub stream: String,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Its size limit; `None` when it has none.
    pub max_bytes: Option<u64>,
    /// Whether a full stream refuses new messages (true) or drops its oldest (false).
    pub discards_new: bool,
    /// The copies its configuration asks for.
    pub replicas: usize,
    /// The server leading it, on a cluster.
    pub leader: Option<String>,
    /// The copies that are offline or behind the leader, by server name.
    pub lagging: Vec<String>,
}

impl StreamUse {
    /// What a stream's info tells.
    pub fn of(info: &async_nats::jetstream::stream::Info) -> Self {
        let cluster = info.cluster.as_ref();
        Self {
            stream: info.config.name.clone(),
            messages: info.state.messages,
            bytes: info.state.bytes,
            max_bytes: u64::try_from(info.config.max_bytes).ok(),
            discards_new: info.config.discard == async_nats::jetstream::stream::DiscardPolicy::New,
            replicas: info.config.num_replicas.max(1),
            leader: cluster.and_then(|cluster| cluster.leader.clone()),
            lagging: cluster
                .map(|cluster| {
                    cluster
                        .replicas
                        .iter()
                        .filter(|peer| peer.offline || !peer.current)
                        .map(|peer| peer.name.clone())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The share of its limit in use (0 to 1); `None` without a limit.
    pub fn fraction(&self) -> Option<f64> {
        self.max_bytes
            .filter(|max| *max > 0)
            .map(|max| self.bytes as f64 / max as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(Storage::default().check(), Ok(()));
    }

    #[test]
    fn each_range_is_checked() {
        let bad = |change: fn(&mut Storage)| {
            let mut storage = Storage::default();
            change(&mut storage);
            storage.check().unwrap_err().setting
        };
        assert_eq!(bad(|s| s.replicas = 0), "replicas");
        assert_eq!(bad(|s| s.replicas = 6), "replicas");
        assert_eq!(bad(|s| s.queue_max_bytes = 1023), "queue_max_bytes");
        assert_eq!(bad(|s| s.results_max_bytes = u64::MAX), "results_max_bytes");
        assert_eq!(
            bad(|s| s.dead_letter_max_age = Duration::ZERO),
            "dead_letter_max_age"
        );
        assert_eq!(
            bad(|s| s.placement_tags = vec![" ".to_owned()]),
            "placement_tags"
        );
    }
}
