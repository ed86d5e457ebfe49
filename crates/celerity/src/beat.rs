//! Periodic tasks (beat): schedules (every N, crontab), entries, and the schedule file.
//!
//! Entries are declared in code ([`crate::AppBuilder::beat`]) or in a TOML file (`worker --beat
//! --schedule beat.toml`). Workers started with `--beat` run the scheduler; one of them at a time
//! holds its lease in NATS and sends the tasks (`worker::beat`).
//!
//! ```
//! use std::time::Duration;
//! use celerity::beat::{Entry, Schedule};
//!
//! #[celerity::task(name = "tasks.cleanup")]
//! async fn cleanup(days: u32) -> u32 {
//!     days
//! }
//!
//! let every = Entry::new("cleanup", Schedule::every(Duration::from_secs(30))?, cleanup.s((7,)))?;
//! let nightly = Entry::new("nightly-cleanup", Schedule::cron("0 3 * * *")?, cleanup.s((30,)))?;
//! let app = celerity::App::builder().task(cleanup).beat(every).beat(nightly).build()?;
//! assert_eq!(app.beat_entries().len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::kv;
use celerity_proto::{InvalidName, Priority, QueueName, TaskName};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::canvas::{Signature, TaskCall};
use crate::client::Client;
use crate::error::EnqueueError;

/// What the beat bucket says: the scheduler that holds the lease, and the state of every entry
/// ever scheduled (with its last run), sorted by name.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct BeatStatus {
    /// The lease, if a scheduler ever held it (it may have lapsed: compare `until_ms` with now).
    pub leader: Option<celerity_proto::BeatLease>,
    /// Every entry's state.
    pub entries: Vec<celerity_proto::BeatEntryState>,
}

/// The beat bucket exists but could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// Its keys could not be listed.
    #[error("cannot list the keys of the beat bucket")]
    Keys(#[source] kv::HistoryError),
    /// The listing of its keys broke off.
    #[error("the listing of the beat bucket's keys broke off")]
    Listing(#[source] kv::WatcherError),
    /// A key could not be read.
    #[error("cannot read key {key:?} of the beat bucket")]
    Read {
        /// The key.
        key: String,
        /// The bucket's error.
        #[source]
        source: kv::EntryError,
    },
}

/// Reads the scheduler's lease and every entry's state (`celerity beat list`). A deployment where
/// no worker ever ran `--beat` has an empty status.
///
/// # Errors
/// [`StatusError`] when the bucket exists but cannot be read.
///
/// # Cancel safety
/// Cancel-safe: it only reads.
pub async fn status(client: &Client) -> Result<BeatStatus, StatusError> {
    use futures_util::StreamExt as _;
    let js = async_nats::jetstream::new(client.nats().clone());
    let Ok(bucket) = js
        .get_key_value(client.settings().layout().beat_bucket())
        .await
    else {
        return Ok(BeatStatus::default());
    };
    let mut status = BeatStatus::default();
    let mut keys = bucket.keys().await.map_err(StatusError::Keys)?;
    while let Some(key) = keys.next().await {
        let key = key.map_err(StatusError::Listing)?;
        let value = bucket.get(&key).await.map_err(|source| StatusError::Read {
            key: key.clone(),
            source,
        })?;
        let Some(value) = value else {
            continue;
        };
        if key == celerity_proto::BEAT_LEADER_KEY {
            status.leader = serde_json::from_slice(&value).ok();
        } else if let Ok(state) = serde_json::from_slice(&value) {
            status.entries.push(state);
        }
    }
    status.entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(status)
}

/// The shortest interval of an `every` schedule.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// A schedule or an entry is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// A cron expression does not parse.
    #[error("invalid cron expression {expression:?}: {source}")]
    InvalidCron {
        /// The expression.
        expression: String,
        /// What is wrong.
        #[source]
        source: CronError,
    },
    /// An interval is too short or not a duration.
    #[error(
        "invalid interval {value:?}: use a duration of at least 1 s, like 30, \"30s\", \"5m\", \"1h\" or \"1d\""
    )]
    InvalidInterval {
        /// The value.
        value: String,
    },
    /// An entry name breaks the rule.
    #[error("invalid beat entry name {0:?}: use 1 to 64 characters of A-Z a-z 0-9 - _")]
    InvalidName(String),
    /// An entry's task is invalid (name, arguments, queue or priority).
    #[error("beat entry {entry:?}: {source}")]
    InvalidTask {
        /// The entry.
        entry: String,
        /// What is wrong.
        #[source]
        source: EntryError,
    },
    /// Two entries share a name.
    #[error("beat entry {0:?} is defined twice")]
    Duplicate(String),
    /// The schedule file cannot be read.
    #[error("cannot read the schedule file {path}")]
    File {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The schedule file is not a valid schedule.
    #[error("invalid schedule file {path}: {source}")]
    Parse {
        /// The file (empty for text parsed without one).
        path: String,
        /// What is wrong, with its line.
        #[source]
        source: Box<toml::de::Error>,
    },
}

/// Why a cron expression does not parse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CronError {
    /// The expression does not have 5 or 6 fields.
    #[error(
        "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, found {0}"
    )]
    FieldCount(usize),
    /// A field does not parse.
    #[error("{0}")]
    Syntax(#[source] croner::errors::CronError),
}

/// What is wrong with a beat entry's task.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// A schedule file entry gives both `every` and `cron`, or neither.
    #[error("give exactly one of `every` and `cron`")]
    ScheduleKind,
    /// The task name, queue or priority breaks its rule.
    #[error("{0}")]
    Name(#[source] InvalidName),
    /// The signature's arguments, queue or priority are invalid.
    #[error("{0}")]
    Signature(#[source] Box<EnqueueError>),
}

/// When an entry is due: every fixed interval, or on a crontab pattern (UTC).
#[derive(Debug, Clone)]
pub struct Schedule(Kind);

#[derive(Debug, Clone)]
enum Kind {
    Every(Duration),
    Cron {
        expression: String,
        cron: Box<croner::Cron>,
    },
}

impl Schedule {
    /// Every `interval` (at least [`MIN_INTERVAL`]), counted from when the entry was first seen;
    /// the first run is one interval after that, as in Celery.
    ///
    /// # Errors
    /// [`ScheduleError::InvalidInterval`] below one second.
    pub fn every(interval: Duration) -> Result<Self, ScheduleError> {
        if interval < MIN_INTERVAL {
            return Err(ScheduleError::InvalidInterval {
                value: format!("{interval:?}"),
            });
        }
        Ok(Self(Kind::Every(interval)))
    }

    /// On a crontab pattern, in UTC: five fields (`minute hour day-of-month month day-of-week`,
    /// as Celery's `crontab()`), or six with seconds first.
    ///
    /// ```
    /// use celerity::beat::Schedule;
    /// assert!(Schedule::cron("*/15 * * * *").is_ok());
    /// let error = Schedule::cron("61 * * * *").unwrap_err();
    /// assert!(error.to_string().contains("\"61 * * * *\""));
    /// ```
    ///
    /// # Errors
    /// [`ScheduleError::InvalidCron`] naming the expression and what is wrong.
    pub fn cron(expression: &str) -> Result<Self, ScheduleError> {
        let invalid = |source: CronError| ScheduleError::InvalidCron {
            expression: expression.to_owned(),
            source,
        };
        let fields = expression.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(invalid(CronError::FieldCount(fields)));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|error| invalid(CronError::Syntax(error)))?;
        Ok(Self(Kind::Cron {
            expression: expression.trim().to_owned(),
            cron: Box::new(cron),
        }))
    }

    /// How the schedule is shown and stored: `every 30s` or `cron */5 * * * *`.
    pub fn spec(&self) -> String {
        match &self.0 {
            Kind::Every(interval) if interval.subsec_millis() == 0 => {
                format!("every {}s", interval.as_secs())
            }
            Kind::Every(interval) => format!("every {}ms", interval.as_millis()),
            Kind::Cron { expression, .. } => format!("cron {expression}"),
        }
    }

    /// The latest tick in `(anchor_ms, now_ms]`, if any.
    pub(crate) fn latest_tick(&self, anchor_ms: u64, now_ms: u64) -> Option<u64> {
        match &self.0 {
            Kind::Every(interval) => {
                let every = interval.as_millis() as u64;
                let ticks = now_ms.checked_sub(anchor_ms)? / every;
                (ticks > 0).then(|| anchor_ms + ticks * every)
            }
            Kind::Cron { cron, .. } => {
                let now = DateTime::<Utc>::from_timestamp_millis(i64::try_from(now_ms).ok()?)?;
                let tick = cron.find_previous_occurrence(&now, true).ok()?;
                let tick = u64::try_from(tick.timestamp_millis()).ok()?;
                (tick > anchor_ms).then_some(tick)
            }
        }
    }

    /// The first tick after `after_ms` (interval ticks fall on `anchor_ms + k × interval`).
    pub(crate) fn next_tick(&self, anchor_ms: u64, after_ms: u64) -> Option<u64> {
        match &self.0 {
            Kind::Every(interval) => {
                let every = interval.as_millis() as u64;
                let passed = after_ms.saturating_sub(anchor_ms) / every;
                Some(anchor_ms + (passed + 1) * every)
            }
            Kind::Cron { cron, .. } => {
                let after = DateTime::<Utc>::from_timestamp_millis(i64::try_from(after_ms).ok()?)?;
                let tick = cron.find_next_occurrence(&after, false).ok()?;
                u64::try_from(tick.timestamp_millis()).ok()
            }
        }
    }
}

/// One periodic task: a name, a schedule and the task it sends.
#[derive(Debug, Clone)]
pub struct Entry {
    name: String,
    schedule: Schedule,
    pub(crate) task: TaskCall,
}

impl Entry {
    /// An entry that sends `signature` on `schedule`. The name (1 to 64 characters of
    /// `A-Z a-z 0-9 - _`) identifies the entry across restarts and schedulers.
    ///
    /// # Errors
    /// [`ScheduleError::InvalidName`], or [`ScheduleError::InvalidTask`] when the signature's
    /// arguments, queue or priority are invalid.
    pub fn new<T>(
        name: &str,
        schedule: Schedule,
        signature: Signature<T>,
    ) -> Result<Self, ScheduleError> {
        check_name(name)?;
        let task = signature
            .into_task_call()
            .map_err(|error| ScheduleError::InvalidTask {
                entry: name.to_owned(),
                source: EntryError::Signature(Box::new(error)),
            })?;
        Ok(Self {
            name: name.to_owned(),
            schedule,
            task,
        })
    }

    /// An entry that sends task `task` by name with `args` and `kwargs` (for tasks this binary
    /// does not define).
    ///
    /// # Errors
    /// As [`Entry::new`].
    pub fn by_name(
        name: &str,
        schedule: Schedule,
        task: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Self, ScheduleError> {
        check_name(name)?;
        let task = TaskName::new(task).map_err(|error| ScheduleError::InvalidTask {
            entry: name.to_owned(),
            source: EntryError::Name(error),
        })?;
        Ok(Self {
            name: name.to_owned(),
            schedule,
            task: TaskCall {
                task,
                args,
                kwargs,
                queue: None,
                priority: None,
                task_queue: None,
            },
        })
    }

    /// The entry's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The name of the task it sends.
    pub fn task_name(&self) -> &str {
        self.task.task.as_str()
    }
}

fn check_name(name: &str) -> Result<(), ScheduleError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(ScheduleError::InvalidName(name.to_owned()))
    }
}

/// Checks that no two entries share a name.
pub(crate) fn check_unique(entries: &[Entry]) -> Result<(), ScheduleError> {
    let mut seen = std::collections::HashSet::new();
    for entry in entries {
        if !seen.insert(entry.name.as_str()) {
            return Err(ScheduleError::Duplicate(entry.name.clone()));
        }
    }
    Ok(())
}

/// Reads a schedule file: TOML with one `[[entry]]` table per entry.
///
/// ```toml
/// [[entry]]
/// name = "cleanup"
/// task = "tasks.cleanup"
/// every = "30s"            # or a number of seconds, or: cron = "*/5 * * * *"
/// args = [7]
/// kwargs = { dry_run = false }
/// queue = "low"            # optional; default: the task's routing
/// priority = 3             # optional
/// ```
///
/// # Errors
/// [`ScheduleError`] naming the file, the entry and the bad value.
pub fn load_schedule_file(path: &Path) -> Result<Vec<Entry>, ScheduleError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ScheduleError::File {
        path: shown.clone(),
        source,
    })?;
    parse_schedule(&text).map_err(|error| match error {
        ScheduleError::Parse { source, .. } => ScheduleError::Parse {
            path: shown,
            source,
        },
        other => other,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFile {
    #[serde(default)]
    entry: Vec<FileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: String,
    task: String,
    every: Option<Interval>,
    cron: Option<String>,
    #[serde(default)]
    args: Vec<Value>,
    #[serde(default)]
    kwargs: Map<String, Value>,
    queue: Option<String>,
    priority: Option<u8>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Interval {
    Seconds(f64),
    Text(String),
}

/// Parses the text of a schedule file.
pub(crate) fn parse_schedule(text: &str) -> Result<Vec<Entry>, ScheduleError> {
    let file: ScheduleFile = toml::from_str(text).map_err(|error| ScheduleError::Parse {
        path: String::new(),
        source: Box::new(error),
    })?;
    let mut entries = Vec::with_capacity(file.entry.len());
    for item in file.entry {
        let invalid = |source: EntryError| ScheduleError::InvalidTask {
            entry: item.name.clone(),
            source,
        };
        let schedule = match (&item.every, &item.cron) {
            (Some(every), None) => Schedule::every(parse_interval(every)?)?,
            (None, Some(cron)) => Schedule::cron(cron)?,
            _ => {
                return Err(invalid(EntryError::ScheduleKind));
            }
        };
        let mut entry = Entry::by_name(&item.name, schedule, &item.task, item.args, item.kwargs)?;
        entry.task.queue = item
            .queue
            .map(QueueName::new)
            .transpose()
            .map_err(|error| invalid(EntryError::Name(error)))?;
        entry.task.priority = item
            .priority
            .map(Priority::new)
            .transpose()
            .map_err(|error| invalid(EntryError::Name(error)))?;
        entries.push(entry);
    }
    check_unique(&entries)?;
    Ok(entries)
}

/// A duration: seconds as a number, or text with a unit (`500ms`, `30s`, `5m`, `1h`, `1d`).
fn parse_interval(interval: &Interval) -> Result<Duration, ScheduleError> {
    let (value, shown) = match interval {
        Interval::Seconds(seconds) => (Some(*seconds), seconds.to_string()),
        Interval::Text(text) => {
            let text = text.trim();
            let split = text
                .find(|c: char| c.is_ascii_alphabetic())
                .unwrap_or(text.len());
            let (number, unit) = text.split_at(split);
            let scale = match unit {
                "ms" => Some(0.001),
                "s" | "" => Some(1.0),
                "m" => Some(60.0),
                "h" => Some(3600.0),
                "d" => Some(86_400.0),
                _ => None,
            };
            let seconds = number
                .trim()
                .parse::<f64>()
                .ok()
                .zip(scale)
                .map(|(number, scale)| number * scale);
            (seconds, text.to_owned())
        }
    };
    value
        .filter(|seconds| seconds.is_finite() && *seconds >= MIN_INTERVAL.as_secs_f64())
        .map(Duration::from_secs_f64)
        .ok_or(ScheduleError::InvalidInterval { value: shown })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;

    #[test]
    fn interval_ticks_fall_on_the_anchor_grid() {
        let schedule = Schedule::every(Duration::from_secs(60)).unwrap();
        assert_eq!(schedule.spec(), "every 60s");
        assert_eq!(schedule.latest_tick(1000, 1000 + MINUTE - 1), None);
        assert_eq!(
            schedule.latest_tick(1000, 1000 + MINUTE),
            Some(1000 + MINUTE)
        );
        // After downtime of several ticks, only the latest is due: a missed tick runs once.
        assert_eq!(
            schedule.latest_tick(1000, 1000 + 5 * MINUTE + 7),
            Some(1000 + 5 * MINUTE)
        );
        assert_eq!(
            schedule.next_tick(1000, 1000 + 5 * MINUTE),
            Some(1000 + 6 * MINUTE)
        );
        assert_eq!(schedule.next_tick(1000, 0), Some(1000 + MINUTE));
    }

    #[test]
    fn cron_ticks_follow_the_pattern_in_utc() {
        let schedule = Schedule::cron("*/15 * * * *").unwrap();
        assert_eq!(schedule.spec(), "cron */15 * * * *");
        // 2026-01-01T00:20:00Z: the latest quarter is 00:15, the next 00:30.
        let at = 1_767_225_600_000 + 20 * MINUTE;
        assert_eq!(schedule.latest_tick(0, at), Some(at - 5 * MINUTE));
        assert_eq!(schedule.latest_tick(at - 4 * MINUTE, at), None);
        assert_eq!(schedule.next_tick(0, at), Some(at + 10 * MINUTE));
        let seconds = Schedule::cron("*/2 * * * * *").unwrap();
        assert_eq!(seconds.next_tick(0, at), Some(at + 2000));
    }

    #[test]
    fn bad_schedules_name_the_value() {
        for bad in ["61 * * * *", "* * *", "every minute", "*/0 * * * *"] {
            let error = Schedule::cron(bad).unwrap_err();
            assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
            assert_eq!(crate::error_chain(&error), error.to_string());
        }
        assert!(matches!(
            Schedule::cron("* * *"),
            Err(ScheduleError::InvalidCron {
                source: CronError::FieldCount(3),
                ..
            })
        ));
        assert!(matches!(
            Entry::by_name(
                "e",
                Schedule::every(Duration::from_secs(1)).unwrap(),
                "bad name",
                vec![],
                Map::new()
            ),
            Err(ScheduleError::InvalidTask {
                source: EntryError::Name(_),
                ..
            })
        ));
        assert!(Schedule::every(Duration::from_millis(500)).is_err());
        assert!(matches!(
            check_name("has space"),
            Err(ScheduleError::InvalidName(_))
        ));
    }

    #[test]
    fn schedule_files_parse_and_name_what_is_wrong() {
        let entries = parse_schedule(
            r#"
            [[entry]]
            name = "tick"
            task = "tasks.tick"
            every = "2s"
            args = [1, "a"]
            kwargs = { x = 1 }
            queue = "low"
            priority = 3

            [[entry]]
            name = "nightly"
            task = "tasks.nightly"
            cron = "0 3 * * *"
            "#,
        )
        .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].schedule().spec(), "every 2s");
        assert_eq!(
            entries[0].task.args,
            vec![serde_json::json!(1), serde_json::json!("a")]
        );
        assert_eq!(
            entries[0].task.queue.as_ref().map(QueueName::as_str),
            Some("low")
        );
        assert_eq!(entries[1].schedule().spec(), "cron 0 3 * * *");

        let message = |text: &str| parse_schedule(text).unwrap_err().to_string();
        let entry = |extra: &str| format!("[[entry]]\nname = \"e\"\ntask = \"t\"\n{extra}\n");
        assert!(message(&entry("cron = \"0 25 * * *\"")).contains("\"0 25 * * *\""));
        assert!(message(&entry("every = \"5 weeks\"")).contains("\"5 weeks\""));
        assert!(message(&entry("every = 0.5")).contains("\"0.5\""));
        assert!(message(&entry("")).contains("exactly one of `every` and `cron`"));
        assert!(message(&entry("every = 5\nsecond = 1")).contains("unknown field `second`"));
        assert!(message(&entry("every = 5\npriority = 12")).contains("12"));
        let twice = format!("{}{}", entry("every = 5"), entry("every = 6"));
        assert!(message(&twice).contains("\"e\" is defined twice"));
    }
}
