//! Live updates, pushed as server-sent events (`GET /api/stream`).
//!
//! One ticker turns what changed in the store into frames, serialized once for every page:
//! `tasks` every [`TICK`] (the changed tasks, at most [`MAX_TASKS_PER_TICK`], the rest counted as
//! `dropped`: the page then says it shows a sample), `workers` when one changed and `overview`
//! every second. So however many events arrive, a page gets at most a few frames a second of
//! bounded size. A page that views one task or one canvas also gets that task's or canvas's
//! detail right after `hello` and again when it changes, its result record (custom states and
//! progress) through a KV watch.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::api;
use crate::shared::Shared;

/// How often changed tasks are pushed.
const TICK: Duration = Duration::from_millis(250);
/// Task summaries in one `tasks` frame at most.
pub(crate) const MAX_TASKS_PER_TICK: usize = 200;
/// A comment line sent this often keeps proxies from closing a quiet stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// One update for every page.
#[derive(Debug, Clone)]
pub(crate) enum Frame {
    /// A `tasks` event, and every task id and canvas root that changed in the tick.
    Tasks {
        event: Bytes,
        ids: Arc<HashSet<String>>,
        roots: Arc<HashSet<String>>,
    },
    /// A `workers` or `overview` event.
    Event(Bytes),
}

/// One SSE event's bytes.
fn sse(name: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Makes the frames, forever.
pub(crate) async fn tick(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut ticks, mut seen_before, mut last_rate_at) = (0u64, 0u64, std::time::Instant::now());
    loop {
        tick.tick().await;
        ticks += 1;
        if let Some(frame) = tasks_frame(&shared) {
            let _ = shared.live.send(frame);
        }
        if ticks % 4 != 0 {
            continue;
        }
        let (seen, workers_changed) = {
            let mut store = shared.store();
            (store.events_seen, store.take_workers_changed())
        };
        let elapsed = last_rate_at.elapsed().as_secs_f64();
        shared.set_events_per_s((seen - seen_before) as f64 / elapsed.max(0.001));
        (seen_before, last_rate_at) = (seen, std::time::Instant::now());
        if workers_changed {
            let workers = api::workers_json(&shared);
            let _ = shared.live.send(Frame::Event(sse("workers", &workers)));
        }
        let overview = api::overview_json(&shared, false);
        let _ = shared.live.send(Frame::Event(sse("overview", &overview)));
    }
}

/// The `tasks` frame of what changed since the last tick, or `None` when nothing did.
fn tasks_frame(shared: &Shared) -> Option<Frame> {
    let mut store = shared.store();
    let changed = store.take_changed();
    if changed.is_empty() {
        shared
            .sampling
            .store(false, std::sync::atomic::Ordering::Relaxed);
        return None;
    }
    let dropped = changed.len().saturating_sub(MAX_TASKS_PER_TICK);
    let ids: HashSet<String> = changed
        .iter()
        .map(|entry| entry.summary.id.clone())
        .collect();
    let roots: HashSet<String> = changed
        .iter()
        .filter_map(|entry| entry.summary.root_id.clone())
        .collect();
    let summaries: Vec<_> = changed
        .iter()
        .take(MAX_TASKS_PER_TICK)
        .map(|entry| &entry.summary)
        .collect();
    let data = serde_json::json!({ "tasks": summaries, "dropped": dropped });
    drop(summaries);
    drop(changed);
    drop(store);
    shared
        .sampling
        .store(dropped > 0, std::sync::atomic::Ordering::Relaxed);
    Some(Frame::Tasks {
        event: sse("tasks", &data),
        ids: Arc::new(ids),
        roots: Arc::new(roots),
    })
}

/// What a page asks to follow beside the general frames.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamQuery {
    task: Option<String>,
    canvas: Option<String>,
}

/// One page's stream.
struct PageStream {
    shared: Arc<Shared>,
    frames: broadcast::Receiver<Frame>,
    task: Option<String>,
    canvas: Option<String>,
    record: Option<async_nats::jetstream::kv::Watch>,
    keepalive: tokio::time::Interval,
    first: Option<Bytes>,
}

/// `GET /api/stream`.
pub(crate) async fn stream(
    shared: web::Data<Arc<Shared>>,
    query: web::Query<StreamQuery>,
) -> HttpResponse {
    let shared = shared.get_ref().clone();
    let query = query.into_inner();
    let frames = shared.live.subscribe();
    let hello = sse(
        "hello",
        &serde_json::json!({ "overview": api::overview_json(&shared, true) }),
    );
    let record = match (&query.task, shared.nats()) {
        (Some(id), Ok(nats)) => match nats.js.get_key_value(shared.layout.results_bucket()).await {
            Ok(bucket) => bucket.watch(id).await.ok(),
            Err(_) => None,
        },
        _ => None,
    };
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.reset();
    let mut page = PageStream {
        shared,
        frames,
        task: query.task,
        canvas: query.canvas,
        record,
        keepalive,
        first: None,
    };
    // INVARIANT: the followed task and canvas are read after the frames are subscribed to, so a
    // change the page's own first read missed (made before this stream opened) is in these
    // first events, and every later change comes as a frame.
    let mut first = hello.to_vec();
    if let Some(id) = page.task.clone() {
        first.extend_from_slice(&page.task_event(&id).await);
    }
    if let Some(root) = page.canvas.clone() {
        first.extend_from_slice(&page.canvas_event(&root).await);
    }
    page.first = Some(Bytes::from(first));
    let body = futures_util::stream::unfold(page, |mut page| async move {
        let bytes = page.next().await?;
        Some((Ok::<_, std::convert::Infallible>(bytes), page))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

impl PageStream {
    /// The next bytes to send; `None` ends the stream (the dashboard is stopping).
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        loop {
            tokio::select! {
                frame = self.frames.recv() => match frame {
                    Ok(frame) => {
                        if let Some(bytes) = self.bytes_of(frame).await {
                            return Some(bytes);
                        }
                    }
                    // Fell behind: what it missed is superseded by the next frames.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                Some(_) = next_record(&mut self.record) => {
                    if let Some(id) = &self.task {
                        return Some(self.task_event(&id.clone()).await);
                    }
                },
                _ = self.keepalive.tick() => return Some(Bytes::from_static(b": keepalive\n\n")),
            }
        }
    }

    async fn bytes_of(&mut self, frame: Frame) -> Option<Bytes> {
        match frame {
            Frame::Event(bytes) => Some(bytes),
            Frame::Tasks { event, ids, roots } => {
                let mut bytes = event.to_vec();
                if let Some(id) = self.task.clone()
                    && ids.contains(&id)
                {
                    bytes.extend_from_slice(&self.task_event(&id).await);
                }
                if let Some(root) = self.canvas.clone()
                    && (roots.contains(&root) || ids.contains(&root))
                {
                    bytes.extend_from_slice(&self.canvas_event(&root).await);
                }
                Some(Bytes::from(bytes))
            }
        }
    }

    async fn canvas_event(&self, root: &str) -> Bytes {
        let canvas = api::canvas_json(&self.shared, root).await;
        sse("canvas", &serde_json::json!({ "canvas": canvas }))
    }

    async fn task_event(&self, id: &str) -> Bytes {
        match api::task_json(&self.shared, id).await {
            Ok(task) => sse("task", &serde_json::json!({ "task": task })),
            Err(_) => Bytes::new(),
        }
    }
}

/// The next change of the watched record, or never when nothing is watched.
async fn next_record(
    watch: &mut Option<async_nats::jetstream::kv::Watch>,
) -> Option<async_nats::jetstream::kv::Entry> {
    match watch {
        Some(watch) => match watch.next().await {
            Some(Ok(entry)) => Some(entry),
            _ => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}
