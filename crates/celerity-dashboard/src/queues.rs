//! The queues, read every [`SAMPLE_EVERY`]: each queue stream's depth per priority level (its
//! level consumers' pending and unacknowledged counts), rates in and out (from the stream's
//! sequence numbers), the age of its oldest stored task, an hour of such readings for the charts,
//! and the runtime settings (rate limits, priority weights) of the settings bucket.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use celerity::clock::now_ms;
use celerity_proto::{ContentType, PriorityWeightsSetting, RateLimitSetting};
use futures_util::{StreamExt as _, TryStreamExt as _};
use serde::Serialize;

use crate::shared::{Nats, Shared};

/// How often the queues are read.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// How soon the sampler looks again while the dashboard is not connected to NATS.
const NOT_CONNECTED_RETRY: Duration = Duration::from_millis(250);
/// Readings kept for the charts: one hour.
const HISTORY_POINTS: usize = 720;

/// One priority level of a queue.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LevelView {
    pub(crate) priority: u8,
    /// Stored and not yet delivered.
    pub(crate) depth: u64,
    /// Delivered and not yet acknowledged.
    pub(crate) in_flight: u64,
}

/// One queue.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct QueueView {
    pub(crate) name: String,
    pub(crate) stream: String,
    pub(crate) depth: u64,
    pub(crate) in_flight: u64,
    pub(crate) levels: Vec<LevelView>,
    pub(crate) rate_in_per_s: Option<f64>,
    pub(crate) rate_out_per_s: Option<f64>,
    /// Age of the oldest task the stream holds (waiting or in flight).
    pub(crate) oldest_age_ms: Option<u64>,
    #[serde(skip)]
    counters: Counters,
}

/// What rates are computed from.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    at_ms: u64,
    /// Messages ever stored.
    stored: u64,
    /// Messages ever removed (acknowledged or purged).
    removed: u64,
}

/// One queue in one chart point.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct PointValues {
    pub(crate) depth: u64,
    #[serde(rename = "in")]
    pub(crate) rate_in: f64,
    #[serde(rename = "out")]
    pub(crate) rate_out: f64,
}

/// One reading of every queue, for the charts.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct QueuePoint {
    pub(crate) at_ms: u64,
    pub(crate) queues: BTreeMap<String, PointValues>,
}

/// A runtime rate limit from the settings bucket.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RateLimitView {
    pub(crate) task: String,
    /// `workers` (each worker's own), `worker` (one worker's) or `cluster` (shared).
    pub(crate) scope: &'static str,
    pub(crate) worker: Option<String>,
    /// The rate, or `null` for no limit.
    pub(crate) rate: Option<String>,
}

/// Runtime priority weights from the settings bucket.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WeightsView {
    pub(crate) scope: &'static str,
    pub(crate) worker: Option<String>,
    /// `null` means strict.
    pub(crate) weights: Option<[u32; 10]>,
}

/// The latest reading.
#[derive(Debug, Default)]
pub(crate) struct QueuesReading {
    pub(crate) read_at_ms: u64,
    pub(crate) queues: Vec<QueueView>,
    pub(crate) history: VecDeque<QueuePoint>,
    pub(crate) rate_limits: Vec<RateLimitView>,
    pub(crate) priority_weights: Vec<WeightsView>,
    pub(crate) error: Option<String>,
}

/// Reads the queues every [`SAMPLE_EVERY`], forever.
pub(crate) async fn sample(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(nats) = shared.nats() else {
            // Not connected yet (or any more): look again soon, so the first reading does not
            // wait a whole period after the connection.
            tick.reset_after(NOT_CONNECTED_RETRY);
            continue;
        };
        let read = tokio::time::timeout(SAMPLE_EVERY, read_queues(&shared, &nats)).await;
        let settings = tokio::time::timeout(SAMPLE_EVERY, read_settings(&shared, &nats)).await;
        let mut reading = shared.queues.lock().unwrap_or_else(|e| e.into_inner());
        match read {
            Ok(Ok(queues)) => {
                reading.take(queues);
                reading.error = None;
            }
            Ok(Err(error)) => reading.error = Some(error.to_string()),
            Err(_) => reading.error = Some("the server did not answer in time".to_owned()),
        }
        if let Ok(Ok((rates, weights))) = settings {
            reading.rate_limits = rates;
            reading.priority_weights = weights;
        }
    }
}

impl QueuesReading {
    /// Takes in a new reading, computing rates against the previous one.
    fn take(&mut self, mut queues: Vec<QueueView>) {
        let previous: HashMap<&str, Counters> = self
            .queues
            .iter()
            .map(|queue| (queue.name.as_str(), queue.counters))
            .collect();
        let mut point = QueuePoint {
            at_ms: now_ms(),
            queues: BTreeMap::new(),
        };
        for queue in &mut queues {
            if let Some(before) = previous.get(queue.name.as_str()) {
                let seconds = queue.counters.at_ms.saturating_sub(before.at_ms) as f64 / 1_000.0;
                if seconds > 0.0 {
                    let per_s = |now: u64, then: u64| now.saturating_sub(then) as f64 / seconds;
                    queue.rate_in_per_s = Some(per_s(queue.counters.stored, before.stored));
                    queue.rate_out_per_s = Some(per_s(queue.counters.removed, before.removed));
                }
            }
            point.queues.insert(
                queue.name.clone(),
                PointValues {
                    depth: queue.depth,
                    rate_in: queue.rate_in_per_s.unwrap_or(0.0),
                    rate_out: queue.rate_out_per_s.unwrap_or(0.0),
                },
            );
        }
        self.read_at_ms = point.at_ms;
        self.history.push_back(point);
        while self.history.len() > HISTORY_POINTS {
            self.history.pop_front();
        }
        self.queues = queues;
    }
}

/// Reads every queue stream of the namespace.
async fn read_queues(shared: &Shared, nats: &Nats) -> Result<Vec<QueueView>, async_nats::Error> {
    let names: Vec<String> = nats.js.stream_names().try_collect().await?;
    let mut queues = Vec::new();
    for stream_name in names {
        let Some(queue) = shared.layout.parse_queue_stream(&stream_name) else {
            continue;
        };
        let mut stream = nats.js.get_stream(&stream_name).await?;
        let info = stream.info().await?.clone();
        let state = info.state;
        let at_ms = now_ms();
        let oldest_age_ms = (state.messages > 0).then(|| {
            let first = state.first_timestamp.unix_timestamp_nanos() / 1_000_000;
            at_ms.saturating_sub(u64::try_from(first).unwrap_or(0))
        });
        let levels = read_levels(&stream).await?;
        queues.push(QueueView {
            name: queue.to_string(),
            stream: stream_name,
            depth: levels.iter().map(|level| level.depth).sum(),
            in_flight: levels.iter().map(|level| level.in_flight).sum(),
            levels,
            rate_in_per_s: None,
            rate_out_per_s: None,
            oldest_age_ms,
            counters: Counters {
                at_ms,
                stored: state.last_sequence,
                removed: state.last_sequence.saturating_sub(state.messages),
            },
        });
    }
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(queues)
}

/// The levels of a queue stream, from its level consumers (`p0` to `p9`), highest first.
async fn read_levels(
    stream: &jetstream::stream::Stream,
) -> Result<Vec<LevelView>, async_nats::Error> {
    let mut consumers = stream.consumers();
    let mut levels = Vec::new();
    while let Some(info) = consumers.next().await {
        let info = info?;
        let Some(priority) = info
            .name
            .strip_prefix('p')
            .and_then(|digits| digits.parse::<u8>().ok())
            .filter(|priority| *priority <= 9)
        else {
            continue;
        };
        levels.push(LevelView {
            priority,
            depth: info.num_pending,
            in_flight: info.num_ack_pending as u64,
        });
    }
    levels.sort_by_key(|level| std::cmp::Reverse(level.priority));
    Ok(levels)
}

/// The runtime rate limits and priority weights of the settings bucket.
async fn read_settings(
    shared: &Shared,
    nats: &Nats,
) -> Result<(Vec<RateLimitView>, Vec<WeightsView>), async_nats::Error> {
    let bucket = nats
        .js
        .get_key_value(shared.layout.settings_bucket())
        .await?;
    let keys: Vec<String> = bucket.keys().await?.try_collect().await?;
    let (mut rates, mut weights) = (Vec::new(), Vec::new());
    for key in keys {
        let Some(value) = bucket.get(&key).await? else {
            continue;
        };
        let content_type = ContentType::sniff(&value).unwrap_or(ContentType::Json);
        if key.starts_with("rate_limit.") {
            if let Ok(setting) = content_type.decode::<RateLimitSetting>(&value) {
                let (scope, worker) = scope_of(&setting.scope);
                rates.push(RateLimitView {
                    task: setting.task,
                    scope,
                    worker,
                    rate: setting.rate.map(|rate| rate.to_string()),
                });
            }
        } else if key.starts_with("priority_weights.")
            && let Ok(setting) = content_type.decode::<PriorityWeightsSetting>(&value)
        {
            let (scope, worker) = scope_of(&setting.scope);
            weights.push(WeightsView {
                scope,
                worker,
                weights: setting.weights,
            });
        }
    }
    rates.sort_by(|a, b| (&a.task, a.scope).cmp(&(&b.task, b.scope)));
    Ok((rates, weights))
}

fn scope_of(scope: &celerity_proto::SettingScope) -> (&'static str, Option<String>) {
    match scope {
        celerity_proto::SettingScope::Workers => ("workers", None),
        celerity_proto::SettingScope::Worker { worker } => ("worker", Some(worker.clone())),
        celerity_proto::SettingScope::Cluster => ("cluster", None),
    }
}
