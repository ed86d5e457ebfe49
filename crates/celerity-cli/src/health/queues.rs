//! What `celerity health` reads of each queue: its stream, the consumer of each priority level the
//! stream lists, their depths, and whether the queue is stalled: tasks wait (or sit delivered and
//! unacknowledged) while its consumers have delivered and acknowledged nothing for
//! `--stalled-after`.
//!
//! A consumer's info carries the time of its last delivery and of its last acknowledgement
//! (`delivered.last_active`, `ack_floor.last_active`) on nats-server 2.9.10 and later, but only
//! once it has delivered since the server started: a consumer that never delivered, or a server
//! that restarted since, shows none. Such a level is watched instead: read again every
//! [`WATCH_EVERY`] until it moves or `--stalled-after` has passed.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use celerity_proto::{Layout, Priority, QueueName};
use futures_util::TryStreamExt as _;

/// How often a level with no activity on record is read again while it is watched.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// One queue as read from the server.
pub(super) struct QueueReading {
    pub(super) queue: QueueName,
    pub(super) stream_name: String,
    /// `None` when the queue has no stream.
    pub(super) found: Option<Found>,
}

/// A queue stream that exists, with the consumers of the levels it lists.
pub(super) struct Found {
    stream: stream::Stream,
    /// The levels whose consumer exists, lowest first.
    pub(super) levels: Vec<Level>,
    /// The consumers the stream's levels need that do not exist.
    pub(super) missing: Vec<String>,
}

impl Found {
    /// Tasks stored and not yet delivered, over every level.
    pub(super) fn depth(&self) -> u64 {
        self.levels.iter().map(|level| level.info.num_pending).sum()
    }

    /// Tasks delivered and not yet acknowledged, over every level.
    pub(super) fn in_flight(&self) -> u64 {
        let in_flight: usize = self
            .levels
            .iter()
            .map(|level| level.info.num_ack_pending)
            .sum();
        in_flight as u64
    }
}

/// One priority level's consumer.
pub(super) struct Level {
    pub(super) priority: Priority,
    info: consumer::Info,
    /// What it has done lately, once [`judge`] has looked.
    pub(super) motion: Motion,
}

impl Level {
    pub(super) fn waiting(&self) -> u64 {
        self.info.num_pending
    }

    pub(super) fn in_flight(&self) -> usize {
        self.info.num_ack_pending
    }
}

/// What a level has done lately, against `--stalled-after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Motion {
    /// Nothing waits and nothing is in flight.
    Clear,
    /// It has a backlog and delivered or had an acknowledgement within `--stalled-after`.
    Moving,
    /// It has a backlog and delivered nothing since its consumer was made, less than
    /// `--stalled-after` ago.
    New,
    /// It has a backlog and delivered and acknowledged nothing for at least this long.
    Stalled(Duration),
    /// It has a backlog and no activity on record (nothing delivered since the server started):
    /// to be watched.
    Unknown,
}

/// What [`motion`] reads of a consumer, in Unix milliseconds.
#[derive(Debug, Clone, Copy)]
struct Activity {
    backlog: bool,
    last_active_ms: Option<i128>,
    created_ms: i128,
}

impl Activity {
    fn of(info: &consumer::Info) -> Self {
        let last_active_ms = [&info.delivered.last_active, &info.ack_floor.last_active]
            .into_iter()
            .flatten()
            .map(unix_ms)
            .max();
        Self {
            backlog: info.num_pending > 0 || info.num_ack_pending > 0,
            last_active_ms,
            created_ms: unix_ms(&info.created),
        }
    }
}

/// The motion of a level with `activity` at `now_ms`.
fn motion(activity: Activity, now_ms: i128, stalled_after: Duration) -> Motion {
    let since = |then_ms: i128| Duration::from_millis(u64::try_from(now_ms - then_ms).unwrap_or(0));
    match (activity.backlog, activity.last_active_ms) {
        (false, _) => Motion::Clear,
        (true, Some(last_ms)) if since(last_ms) >= stalled_after => Motion::Stalled(since(last_ms)),
        (true, Some(_)) => Motion::Moving,
        (true, None) if since(activity.created_ms) < stalled_after => Motion::New,
        (true, None) => Motion::Unknown,
    }
}

fn unix_ms(time: &async_nats::datetime::DateTime) -> i128 {
    time.unix_timestamp_nanos() / 1_000_000
}

/// Every queue that has a stream in `layout`'s namespace, sorted.
pub(super) async fn stream_queues(
    js: &jetstream::Context,
    layout: &Layout,
) -> anyhow::Result<Vec<QueueName>> {
    let names: Vec<String> = js
        .stream_names()
        .try_collect()
        .await
        .context("cannot list the streams")?;
    let mut queues: Vec<QueueName> = names
        .iter()
        .filter_map(|name| layout.parse_queue_stream(name))
        .collect();
    queues.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(queues)
}

/// Reads `queue`'s stream and the consumer of each level it lists.
pub(super) async fn read(
    js: &jetstream::Context,
    layout: &Layout,
    queue: &QueueName,
) -> anyhow::Result<QueueReading> {
    let stream_name = layout.queue_stream(queue);
    let stream = match js.get_stream(&stream_name).await {
        Ok(stream) => stream,
        Err(error) if crate::is_stream_not_found(&error) => {
            return Ok(QueueReading {
                queue: queue.clone(),
                stream_name,
                found: None,
            });
        }
        Err(error) => return Err(error).context(format!("cannot read the stream {stream_name}")),
    };
    let mut priorities: Vec<Priority> = stream
        .cached_info()
        .config
        .subjects
        .iter()
        .filter_map(|subject| layout.parse_task_subject(subject))
        .filter(|(subject_queue, _)| subject_queue == queue)
        .map(|(_, priority)| priority)
        .collect();
    priorities.sort();
    let (mut levels, mut missing) = (Vec::new(), Vec::new());
    for priority in priorities {
        let name = layout.queue_consumer(priority);
        match stream.consumer_info(&name).await {
            Ok(info) => levels.push(Level {
                priority,
                info,
                motion: Motion::Clear,
            }),
            Err(error)
                if error.kind()
                    == async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound =>
            {
                missing.push(name);
            }
            Err(error) => {
                return Err(error)
                    .context(format!("cannot read the consumer {name} of {stream_name}"));
            }
        }
    }
    let found = Found {
        stream,
        levels,
        missing,
    };
    Ok(QueueReading {
        queue: queue.clone(),
        stream_name,
        found: Some(found),
    })
}

/// Sets each level's [`Motion`], watching the levels with no activity on record for up to
/// `stalled_after` (until each moves).
pub(super) async fn judge(readings: &mut [QueueReading], stalled_after: Duration) {
    let now_ms = i128::from(celerity::clock::now_ms());
    let mut unknown = 0;
    for level in levels_mut(readings) {
        level.motion = motion(Activity::of(&level.info), now_ms, stalled_after);
        unknown += usize::from(level.motion == Motion::Unknown);
    }
    if unknown == 0 {
        return;
    }
    let deadline = tokio::time::Instant::now() + stalled_after;
    while tokio::time::Instant::now() < deadline && unknown > 0 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        tokio::time::sleep(WATCH_EVERY.min(left)).await;
        unknown = 0;
        for found in readings
            .iter_mut()
            .filter_map(|reading| reading.found.as_mut())
        {
            for level in &mut found.levels {
                if level.motion == Motion::Unknown {
                    level.motion = watched(&found.stream, level).await;
                    unknown += usize::from(level.motion == Motion::Unknown);
                }
            }
        }
    }
    for level in levels_mut(readings) {
        if level.motion == Motion::Unknown {
            level.motion = Motion::Stalled(stalled_after);
        }
    }
}

fn levels_mut(readings: &mut [QueueReading]) -> impl Iterator<Item = &mut Level> {
    readings
        .iter_mut()
        .filter_map(|reading| reading.found.as_mut())
        .flat_map(|found| found.levels.iter_mut())
}

/// A watched level read again: moving once it delivered, had an acknowledgement or emptied;
/// still unknown otherwise (and when it cannot be read now).
async fn watched(stream: &stream::Stream, level: &Level) -> Motion {
    let Ok(now) = stream.consumer_info(&level.info.name).await else {
        return Motion::Unknown;
    };
    let before = &level.info;
    let moved = now.delivered.stream_sequence != before.delivered.stream_sequence
        || now.ack_floor.stream_sequence != before.ack_floor.stream_sequence
        || now.delivered.last_active.is_some()
        || (now.num_pending == 0 && now.num_ack_pending == 0);
    match moved {
        true => Motion::Moving,
        false => Motion::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(60);

    fn activity(backlog: bool, last_active_ms: Option<i128>, created_ms: i128) -> Activity {
        Activity {
            backlog,
            last_active_ms,
            created_ms,
        }
    }

    #[test]
    fn a_level_without_backlog_is_clear_however_long_it_was_quiet() {
        assert_eq!(
            motion(activity(false, Some(0), 0), 1_000_000, AFTER),
            Motion::Clear
        );
    }

    #[test]
    fn a_backlog_is_stalled_once_nothing_moved_for_stalled_after() {
        let now = 1_000_000;
        let recent = activity(true, Some(now - 59_999), 0);
        assert_eq!(motion(recent, now, AFTER), Motion::Moving);
        let quiet = activity(true, Some(now - 75_000), 0);
        assert_eq!(
            motion(quiet, now, AFTER),
            Motion::Stalled(Duration::from_secs(75))
        );
    }

    #[test]
    fn a_last_activity_ahead_of_this_clock_counts_as_now() {
        let ahead = activity(true, Some(1_005_000), 0);
        assert_eq!(motion(ahead, 1_000_000, AFTER), Motion::Moving);
    }

    #[test]
    fn a_backlog_with_nothing_on_record_is_new_or_to_be_watched_by_its_consumers_age() {
        let now = 1_000_000;
        assert_eq!(
            motion(activity(true, None, now - 5_000), now, AFTER),
            Motion::New
        );
        assert_eq!(
            motion(activity(true, None, now - 60_000), now, AFTER),
            Motion::Unknown
        );
    }
}
