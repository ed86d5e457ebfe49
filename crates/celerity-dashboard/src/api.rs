//! The JSON API the page reads (`GET /api/...`), documented in `docs/dashboard.md`; the controls
//! are in `api/control.rs`, the dead letters in `api/letters.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use celerity::clock::now_ms;
use celerity_proto::{CanvasNode, ChordDefinition, ContentType, ResultRecord, TaskId};
use serde_json::{Value, json};

use crate::auth::{Caller, Gate};
use crate::error::ApiError;
use crate::shared::Shared;
use crate::store::{MAX_CANVAS_TASKS, THROUGHPUT_INTERVAL_MS, TaskFilter};

pub(crate) mod control;
pub(crate) mod letters;

type SharedData = web::Data<Arc<Shared>>;

/// `GET /api/session`.
pub(crate) async fn session(
    request: HttpRequest,
    shared: SharedData,
    gate: web::Data<Gate>,
) -> HttpResponse {
    let caller = request.extensions().get::<Caller>().cloned();
    HttpResponse::Ok().json(json!({
        "user": caller.as_ref().and_then(Caller::name),
        "auth": gate.auth_enabled(),
        "read_only": gate.read_only,
        "csrf": gate.csrf(),
        "namespace": shared.namespace.as_str(),
        "jaeger_url": shared.jaeger_url,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// The overview, with the throughput chart's points when `with_throughput`.
pub(crate) fn overview_json(shared: &Shared, with_throughput: bool) -> Value {
    let now = now_ms();
    let nats = shared.nats_handle();
    let connected = nats.as_ref().is_some_and(|nats| nats.is_connected());
    let server = nats
        .as_ref()
        .filter(|_| connected)
        .map(|nats| nats.client.server_info().version);
    let store = shared.store();
    let workers = store.workers(now);
    let online = workers.iter().filter(|worker| worker.online).count();
    let sampling = shared.sampling.load(Ordering::Relaxed);
    let mut overview = json!({
        "nats": { "connected": connected, "server": server },
        "history": {
            "loading": !shared.history.loaded.load(Ordering::Relaxed),
            "since_ms": shared.history.since_ms.load(Ordering::Relaxed),
            "replayed": shared.history.replayed.load(Ordering::Relaxed),
        },
        "workers": { "online": online, "offline": workers.len() - online },
        "tasks": {
            "stored": store.task_count(),
            "max": store.max_tasks(),
            "evicted": store.evicted,
            "by_state": store.by_state(),
        },
        "events_per_s": shared.events_per_s(),
        "events_seen": store.events_seen,
        "sampling": {
            "active": sampling,
            "note": sampling.then_some(format!(
                "more tasks change than a page can show: each update shows the {} most recent",
                crate::live::MAX_TASKS_PER_TICK
            )),
        },
    });
    if with_throughput {
        overview["throughput"] = json!({
            "interval_ms": THROUGHPUT_INTERVAL_MS,
            "points": store.throughput(),
        });
    }
    overview
}

/// `GET /api/overview`.
pub(crate) async fn overview(shared: SharedData) -> HttpResponse {
    HttpResponse::Ok().json(overview_json(&shared, true))
}

pub(crate) fn workers_json(shared: &Shared) -> Value {
    json!({ "workers": shared.store().workers(now_ms()) })
}

/// `GET /api/workers`.
pub(crate) async fn workers(shared: SharedData) -> HttpResponse {
    HttpResponse::Ok().json(workers_json(&shared))
}

/// `GET /api/workers/{hostname}`: the worker's last event, and what it says when asked now.
pub(crate) async fn worker(
    shared: SharedData,
    hostname: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hostname = hostname.into_inner();
    let Some(view) = shared.store().worker(&hostname, now_ms()) else {
        return Err(ApiError::not_found(
            "unknown_worker",
            format!("no worker named {hostname:?} has sent an event in the dashboard's history"),
        ));
    };
    let mut worker = serde_json::to_value(&view).unwrap_or_default();
    let asked = match (view.online, shared.nats()) {
        (true, Ok(nats)) => Some(control::ask_worker(&nats, &hostname).await),
        _ => None,
    };
    let (registered, stats) = asked.unwrap_or_default();
    worker["registered"] = registered;
    worker["stats"] = stats;
    Ok(HttpResponse::Ok().json(worker))
}

/// `GET /api/tasks`.
pub(crate) async fn tasks(
    shared: SharedData,
    query: web::Query<crate::store::TaskQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = TaskFilter::parse(query.into_inner())?;
    let page = shared.store().tasks(&filter);
    Ok(HttpResponse::Ok().json(page))
}

/// A task's detail: what the events told, and its result record.
pub(crate) async fn task_json(shared: &Shared, id: &str) -> Result<Value, ApiError> {
    let task_id = TaskId::new(id)
        .map_err(|error| ApiError::invalid_argument(format!("task id {id:?}: {error}")))?;
    let known = {
        let store = shared.store();
        store.task(id).map(|entry| {
            let mut children = entry.children.clone();
            if let Some(root) = &entry.summary.root_id {
                let sent = store
                    .canvas(root)
                    .into_iter()
                    .filter(|member| member.summary.parent_id.as_deref() == Some(id));
                children.extend(sent.map(|member| member.summary.id.clone()));
            }
            children.sort();
            children.dedup();
            (entry.clone(), children)
        })
    };
    let record = match shared.nats() {
        Ok(nats) => read_record(&nats, shared, &task_id).await?,
        Err(error) if known.is_none() => return Err(error),
        Err(_) => None,
    };
    if known.is_none() && record.is_none() {
        return Err(ApiError::not_found(
            "unknown_task",
            format!(
                "no task with id {id} is in the dashboard's history or the results bucket (it may have expired)"
            ),
        ));
    }
    let (entry, children) = match known {
        Some((entry, children)) => (Some(entry), children),
        None => (None, Vec::new()),
    };
    let mut task = match &entry {
        Some(entry) => serde_json::to_value(&entry.summary).unwrap_or_default(),
        None => summary_of_record(record.as_ref()),
    };
    let trace_url = record
        .as_ref()
        .and_then(|record| record.trace_id.as_ref())
        .zip(shared.jaeger_url.as_ref())
        .map(|(trace, jaeger)| format!("{jaeger}/trace/{trace}"));
    task["args"] = json!(entry.as_ref().and_then(|entry| entry.args.clone()));
    task["kwargs"] = json!(entry.as_ref().and_then(|entry| entry.kwargs.clone()));
    task["timeline"] = json!(
        entry
            .as_ref()
            .map(|entry| entry.timeline.clone())
            .unwrap_or_default()
    );
    task["children"] = json!(children);
    task["record"] = json!(record);
    task["trace_url"] = json!(trace_url);
    Ok(task)
}

/// The summary fields of a task known only from its result record.
fn summary_of_record(record: Option<&ResultRecord>) -> Value {
    let Some(record) = record else {
        return json!({});
    };
    json!({
        "id": record.id.as_str(),
        "name": record.task.as_ref().map(|name| name.as_str()),
        "state": record.state.as_str(),
        "queue": null, "worker": record.worker, "sent_ms": null, "received_ms": null,
        "started_ms": record.started_at_ms, "ended_ms": record.state.is_ready().then_some(record.updated_at_ms),
        "runtime_ms": null, "retries": record.retries, "root_id": null, "parent_id": null,
        "group_id": null, "chord_id": null, "updated_ms": record.updated_at_ms,
    })
}

async fn read_record(
    nats: &crate::shared::Nats,
    shared: &Shared,
    id: &TaskId,
) -> Result<Option<ResultRecord>, ApiError> {
    let bucket = match nats.js.get_key_value(shared.layout.results_bucket()).await {
        Ok(bucket) => bucket,
        // No worker has created it yet: no records.
        Err(_) => return Ok(None),
    };
    let bytes = bucket.get(id.as_str()).await.map_err(ApiError::nats)?;
    Ok(bytes.and_then(|bytes| {
        ContentType::sniff(&bytes)
            .unwrap_or(ContentType::Json)
            .decode::<ResultRecord>(&bytes)
            .ok()
    }))
}

/// `GET /api/tasks/{id}`.
pub(crate) async fn task(
    shared: SharedData,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(task_json(&shared, &id).await?))
}

/// The canvas rooted at `root_id`: its tasks, who sent whom, and its chords' progress.
pub(crate) async fn canvas_json(shared: &Shared, root_id: &str) -> Value {
    let (nodes, edges, mut chords) = {
        let store = shared.store();
        let members = store.canvas(root_id);
        let ids: std::collections::HashSet<&str> = members
            .iter()
            .map(|entry| entry.summary.id.as_str())
            .collect();
        let nodes: Vec<Value> = members
            .iter()
            .map(|entry| {
                let summary = &entry.summary;
                json!({
                    "id": summary.id, "name": summary.name, "state": summary.state,
                    "parent_id": summary.parent_id, "group_id": summary.group_id,
                    "chord_id": summary.chord_id,
                })
            })
            .collect();
        let edges: Vec<Value> = members
            .iter()
            .filter_map(|entry| {
                let parent = entry.summary.parent_id.as_deref()?;
                ids.contains(parent)
                    .then(|| json!({ "from": parent, "to": entry.summary.id }))
            })
            .collect();
        let mut chords: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
        for entry in &members {
            if let Some(chord) = &entry.summary.chord_id {
                let counts = chords.entry(chord.clone()).or_default();
                match entry.summary.state {
                    "SUCCESS" => counts.0 += 1,
                    "FAILURE" | "REVOKED" => counts.1 += 1,
                    _ => {}
                }
            }
        }
        let truncated = members.len() >= MAX_CANVAS_TASKS;
        (nodes, (edges, truncated), chords)
    };
    let mut chord_views = Vec::new();
    for (id, (done, failed)) in std::mem::take(&mut chords) {
        let definition = chord_definition(shared, &id).await;
        chord_views.push(json!({
            "id": id,
            "size": definition.as_ref().map(|definition| definition.size),
            "done": done,
            "failed": failed,
            "body": definition.as_ref().and_then(|definition| first_task_id(&definition.body)),
        }));
    }
    json!({
        "root_id": root_id,
        "nodes": nodes,
        "edges": edges.0,
        "chords": chord_views,
        "truncated": edges.1,
    })
}

/// A chord's stored definition, when the chords bucket still has it.
async fn chord_definition(shared: &Shared, chord_id: &str) -> Option<ChordDefinition> {
    let nats = shared.nats().ok()?;
    let bucket = nats
        .js
        .get_key_value(shared.layout.chords_bucket())
        .await
        .ok()?;
    let bytes = bucket.get(chord_id).await.ok()??;
    ContentType::sniff(&bytes)
        .unwrap_or(ContentType::Json)
        .decode(&bytes)
        .ok()
}

/// The id of the first task a canvas node runs.
fn first_task_id(node: &CanvasNode) -> Option<String> {
    match node {
        CanvasNode::Signature(signature) => Some(signature.id.to_string()),
        CanvasNode::Chain { tasks } => tasks.first().and_then(first_task_id),
        CanvasNode::Group { id, .. } | CanvasNode::Chord { id, .. } => Some(id.to_string()),
        _ => None,
    }
}

/// `GET /api/canvases/{root_id}`.
pub(crate) async fn canvas(
    shared: SharedData,
    root_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    TaskId::new(root_id.as_str()).map_err(|error| {
        ApiError::invalid_argument(format!("canvas root id {:?}: {error}", root_id.as_str()))
    })?;
    let canvas = canvas_json(&shared, &root_id).await;
    if canvas["nodes"].as_array().is_none_or(Vec::is_empty) {
        return Err(ApiError::not_found(
            "not_found",
            format!("no task of the canvas {root_id} is in the dashboard's history"),
        ));
    }
    Ok(HttpResponse::Ok().json(canvas))
}

/// `GET /api/queues`: the latest reading, with how many online workers consume each queue.
pub(crate) async fn queues(shared: SharedData) -> HttpResponse {
    let workers = shared.store().workers(now_ms());
    let reading = shared.queues.lock().unwrap_or_else(|e| e.into_inner());
    let queues: Vec<Value> = reading
        .queues
        .iter()
        .map(|queue| {
            let mut view = serde_json::to_value(queue).unwrap_or_default();
            let consumers: Vec<&str> = workers
                .iter()
                .filter(|worker| worker.online && worker.queues.contains(&queue.name))
                .map(|worker| worker.hostname.as_str())
                .collect();
            view["consumers"] = json!(consumers.len());
            view["workers"] = json!(consumers);
            view
        })
        .collect();
    let mut online: Vec<&str> = workers
        .iter()
        .filter(|worker| worker.online)
        .map(|worker| worker.hostname.as_str())
        .collect();
    online.sort_unstable();
    HttpResponse::Ok().json(json!({
        "read_at_ms": reading.read_at_ms,
        "workers": online,
        "error": reading.error,
        "queues": queues,
        "history": {
            "interval_ms": crate::queues::SAMPLE_EVERY.as_millis() as u64,
            "points": reading.history,
        },
        "rate_limits": reading.rate_limits,
        "priority_weights": reading.priority_weights,
    }))
}
