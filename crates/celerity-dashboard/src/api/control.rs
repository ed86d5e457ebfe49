//! The controls (`POST /api/...`): worker shutdown, pool size and consumers, revoke and terminate,
//! rate limits and priority weights, sent over the control plane as `celerity control` sends
//! them. The auth gate has already checked the CSRF token and `--read-only`.

use std::time::Duration;

use actix_web::{HttpResponse, http::StatusCode, web};
use celerity::{ControlError, PriorityWeightsChange, RateLimitChange, RateLimitScope, RevokeMode};
use celerity_proto::{ControlCommand, ControlReply};
use serde::Deserialize;
use serde_json::{Value, json};

use super::SharedData;
use crate::error::ApiError;
use crate::shared::Nats;

/// How long a control command waits for replies.
const REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// The replies as the API returns them.
fn replies(result: Result<Vec<ControlReply>, ControlError>) -> Result<HttpResponse, ApiError> {
    let replies = result.map_err(control_error)?;
    let replies: Vec<Value> = replies
        .into_iter()
        .map(|reply| {
            json!({
                "worker": reply.worker,
                "ok": reply.ok,
                "message": reply.error.unwrap_or_else(|| "done".to_owned()),
                "code": reply.code,
                "result": reply.result,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "replies": replies })))
}

fn control_error(error: ControlError) -> ApiError {
    match error {
        ControlError::UnknownDestination(worker) => ApiError::not_found(
            "unknown_worker",
            format!("worker {worker:?} did not answer: it is offline or has another name"),
        ),
        ControlError::Nats(error) => ApiError::nats(error),
        error @ ControlError::NotSetUp { .. } => {
            ApiError::new(StatusCode::CONFLICT, "not_set_up", error.to_string())
        }
        // The dashboard's NATS user may not control workers: no request of the page can change
        // that, so it is forbidden, not a bad argument.
        error @ ControlError::PermissionDenied { .. } => ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            error.to_string(),
        ),
        other => ApiError::invalid_argument(other.to_string()),
    }
}

/// A worker's registered tasks and stats, asked now (`null` for what it does not answer).
pub(crate) async fn ask_worker(nats: &Nats, hostname: &str) -> (Value, Value) {
    let ask = |command| async move {
        match nats
            .control
            .send(command, Some(hostname), REPLY_TIMEOUT)
            .await
        {
            Ok(replies) => replies
                .into_iter()
                .next()
                .filter(|reply| reply.ok)
                .and_then(|reply| reply.result)
                .unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    };
    tokio::join!(ask(ControlCommand::Registered), ask(ControlCommand::Stats))
}

/// The body of `POST /api/workers/{hostname}/{action}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkerAction {
    #[serde(default)]
    cold: bool,
    n: Option<u32>,
    queue: Option<String>,
}

/// `POST /api/workers/{hostname}/{action}`: `shutdown`, `pool-grow`, `pool-shrink`,
/// `add-consumer`, `cancel-consumer`.
pub(crate) async fn worker_action(
    shared: SharedData,
    path: web::Path<(String, String)>,
    body: Option<web::Json<WorkerAction>>,
) -> Result<HttpResponse, ApiError> {
    let (hostname, action) = path.into_inner();
    let body = body.map(web::Json::into_inner).unwrap_or_default();
    let count = |n: Option<u32>| match n.unwrap_or(1) {
        0 => Err(ApiError::invalid_argument(
            "n: give a number of slots of 1 or more",
        )),
        n => Ok(n),
    };
    let queue = |queue: Option<String>| {
        queue
            .filter(|queue| !queue.trim().is_empty())
            .ok_or_else(|| ApiError::invalid_argument("queue: name the queue"))
    };
    let command = match action.as_str() {
        "shutdown" => ControlCommand::Shutdown { cold: body.cold },
        "pool-grow" => ControlCommand::PoolGrow { n: count(body.n)? },
        "pool-shrink" => ControlCommand::PoolShrink { n: count(body.n)? },
        "add-consumer" => ControlCommand::AddConsumer {
            queue: queue(body.queue)?,
        },
        "cancel-consumer" => ControlCommand::CancelConsumer {
            queue: queue(body.queue)?,
        },
        other => {
            return Err(ApiError::not_found(
                "not_found",
                format!(
                    "no worker action {other:?}: use shutdown, pool-grow, pool-shrink, add-consumer or cancel-consumer"
                ),
            ));
        }
    };
    let nats = shared.nats()?;
    replies(
        nats.control
            .send(command, Some(&hostname), REPLY_TIMEOUT)
            .await,
    )
}

/// The body of `POST /api/tasks/{id}/revoke`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeBody {
    #[serde(default)]
    terminate: bool,
}

/// `POST /api/tasks/{id}/revoke`.
pub(crate) async fn revoke(
    shared: SharedData,
    id: web::Path<String>,
    body: Option<web::Json<RevokeBody>>,
) -> Result<HttpResponse, ApiError> {
    let terminate = body.is_some_and(|body| body.terminate);
    let mode = match terminate {
        true => RevokeMode::Terminate,
        false => RevokeMode::Skip,
    };
    let nats = shared.nats()?;
    replies(nats.control.revoke(&id, mode, None, REPLY_TIMEOUT).await)
}

/// The body of `POST /api/rate-limits`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitBody {
    task: String,
    /// `10/s`, `100/m`, `off` (no limit) or `reset` (the task's own option again).
    rate: String,
    /// `cluster` (one limit all workers share) or `worker` (each worker's own; the default).
    #[serde(default)]
    scope: Option<String>,
    /// With scope `worker`: only this worker; default every worker.
    #[serde(default)]
    worker: Option<String>,
}

/// `POST /api/rate-limits`.
pub(crate) async fn rate_limit(
    shared: SharedData,
    body: web::Json<RateLimitBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let change = match body.rate.trim() {
        "off" | "none" => RateLimitChange::Unlimited,
        "reset" => RateLimitChange::Reset,
        rate => RateLimitChange::Set(
            rate.parse()
                .map_err(|error| ApiError::invalid_argument(format!("rate {rate:?}: {error}")))?,
        ),
    };
    let scope = match body.scope.as_deref() {
        None | Some("worker") => RateLimitScope::PerWorker,
        Some("cluster") => RateLimitScope::Global,
        Some(other) => {
            return Err(ApiError::invalid_argument(format!(
                "scope {other:?}: use worker (each worker's own limit) or cluster (one shared limit)"
            )));
        }
    };
    if scope == RateLimitScope::Global && body.worker.is_some() {
        return Err(ApiError::invalid_argument(
            "a cluster-wide limit applies to every worker: leave out worker",
        ));
    }
    let worker = body.worker.as_deref().filter(|worker| !worker.is_empty());
    let nats = shared.nats()?;
    let sent = nats
        .control
        .rate_limit(&body.task, change, scope, worker, REPLY_TIMEOUT);
    replies(sent.await)
}

/// The body of `POST /api/priority-weights`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WeightsBody {
    /// Ten comma-separated weights, `strict` or `reset`.
    weights: String,
    #[serde(default)]
    worker: Option<String>,
}

/// `POST /api/priority-weights`.
pub(crate) async fn priority_weights(
    shared: SharedData,
    body: web::Json<WeightsBody>,
) -> Result<HttpResponse, ApiError> {
    let change: PriorityWeightsChange = body
        .weights
        .parse()
        .map_err(|error| ApiError::invalid_argument(format!("weights: {error}")))?;
    let worker = body.worker.as_deref().filter(|worker| !worker.is_empty());
    let nats = shared.nats()?;
    replies(
        nats.control
            .priority_weights(change, worker, REPLY_TIMEOUT)
            .await,
    )
}
