//! What runs after a task: the next step of its chain and its callbacks when it succeeds; its
//! errbacks, and the failure of every later step of its chain, when it fails.
//!
//! Runs after the task's own record is stored and before its message is acknowledged, so a crash
//! in between redelivers the message and the continuation is published again (de-duplicated by
//! the next steps' ids).

use celerity_proto::{CanvasNode, Envelope, ErrorRecord, TaskBody, TaskId, TaskState};
use serde_json::{Value, json};

use crate::client::EnqueueError;
use crate::worker::WorkerShared;

/// The canvas fields of a task body.
#[derive(Debug, Default)]
pub(crate) struct Continuation {
    chain: Vec<CanvasNode>,
    link: Vec<CanvasNode>,
    link_error: Vec<CanvasNode>,
}

impl Continuation {
    /// Takes the canvas fields out of `body`.
    pub(crate) fn take(body: &mut TaskBody) -> Self {
        Self {
            chain: std::mem::take(&mut body.chain),
            link: std::mem::take(&mut body.link),
            link_error: std::mem::take(&mut body.link_error),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.chain.is_empty() && self.link.is_empty() && self.link_error.is_empty()
    }

    /// Publishes the callbacks with `result`, then the chain's next step with `result` and the
    /// rest of the chain as its continuation.
    ///
    /// # Errors
    /// A publish that failed; the caller leaves the message unacknowledged so this runs again.
    pub(crate) async fn on_success(
        &self,
        shared: &WorkerShared,
        envelope: &Envelope,
        result: &Value,
    ) -> Result<(), EnqueueError> {
        for callback in &self.link {
            publish_node(shared, envelope, callback, Some(result), Vec::new()).await?;
        }
        if let Some((next, rest)) = self.chain.split_first() {
            publish_node(shared, envelope, next, Some(result), rest.to_vec()).await?;
        }
        Ok(())
    }

    /// Publishes the errbacks with the failed task's id, and records every later step of the chain
    /// as failed with the same error, so the chain's result is this failure and no later step runs.
    pub(crate) async fn on_failure(
        &self,
        shared: &WorkerShared,
        envelope: &Envelope,
        error: &ErrorRecord,
    ) {
        let failed_id = Value::String(envelope.id.to_string());
        for errback in &self.link_error {
            if let Err(publish_error) =
                publish_node(shared, envelope, errback, Some(&failed_id), Vec::new()).await
            {
                tracing::error!(task_id = %envelope.id, error = %crate::error_chain(&publish_error), "cannot send an errback");
            }
        }
        let mut later = Vec::new();
        for node in &self.chain {
            collect_ids(node, &mut later);
        }
        fail_steps(shared, envelope, later, error).await;
    }
}

/// Records steps that will never run as failed with `error`, naming the task that failed.
async fn fail_steps(
    shared: &WorkerShared,
    envelope: &Envelope,
    ids: Vec<TaskId>,
    error: &ErrorRecord,
) {
    for id in ids {
        let mut step = Envelope::new(id, envelope.task.clone());
        step.content_type = envelope.content_type;
        step.reply_to = envelope.reply_to.clone();
        let mut record = shared
            .store
            .record(&step, TaskState::Failure)
            .with_error(error.clone())
            .with_meta(json!({"failed_task": envelope.id.as_str(), "reason": "an earlier step of the chain failed"}));
        // The step never ran: its record names no task of its own.
        record.task = None;
        super::execute::store_final(shared, &step, &record).await;
    }
}

/// Every result id a node would have produced: what must fail when the node will never run.
fn collect_ids(node: &CanvasNode, ids: &mut Vec<TaskId>) {
    match node {
        CanvasNode::Signature(signature) => ids.push(signature.id.clone()),
        CanvasNode::Chain { tasks } => tasks.iter().for_each(|task| collect_ids(task, ids)),
        CanvasNode::Group { id, tasks } => {
            ids.push(id.clone());
            tasks.iter().for_each(|task| collect_ids(task, ids));
        }
        CanvasNode::Chord { id, header, body } => {
            ids.push(id.clone());
            header.iter().for_each(|task| collect_ids(task, ids));
            collect_ids(body, ids);
        }
        _ => {}
    }
}

/// Publishes `node` as the continuation of the task in `parent`, with `previous` (the parent's
/// result, or its id for errbacks) in front of its arguments unless it is immutable.
async fn publish_node(
    shared: &WorkerShared,
    parent: &Envelope,
    node: &CanvasNode,
    previous: Option<&Value>,
    rest: Vec<CanvasNode>,
) -> Result<(), EnqueueError> {
    match node {
        CanvasNode::Signature(signature) => {
            let mut envelope = Envelope::new(signature.id.clone(), signature.task.clone());
            envelope.content_type = parent.content_type;
            envelope.priority = signature.priority.unwrap_or_default();
            envelope.reply_to = parent.reply_to.clone();
            envelope.parent_id = Some(parent.id.clone());
            envelope.root_id = Some(parent.root_id.clone().unwrap_or_else(|| parent.id.clone()));
            envelope.sent_at_ms = Some(crate::clock::now_ms());
            let mut args = signature.args.clone();
            if let (Some(previous), false) = (previous, signature.immutable) {
                args.insert(0, previous.clone());
            }
            let mut body = TaskBody::new(args, signature.kwargs.clone());
            body.chain = rest;
            body.link = signature.link.clone();
            body.link_error = signature.link_error.clone();
            let queue = signature
                .queue
                .clone()
                .unwrap_or_else(|| shared.app.settings().default_queue.clone());
            shared
                .publisher
                .publish(&envelope, &body, &queue, true)
                .await
        }
        CanvasNode::Chain { tasks } => match tasks.split_first() {
            // A chain inside a chain runs its own steps first, then the outer rest.
            Some((first, inner)) => {
                let mut steps = inner.to_vec();
                steps.extend(rest);
                Box::pin(publish_node(shared, parent, first, previous, steps)).await
            }
            None => Ok(()),
        },
        other => {
            // Permanent, not retryable: a redelivery would meet the same node. The steps that
            // will never run fail visibly instead.
            let error = ErrorRecord::new(
                "celerity::UnsupportedCanvas",
                "groups and chords as the next step of a chain are not supported by this worker version",
            );
            tracing::error!(task_id = %parent.id, "{}", error.message);
            let mut never = Vec::new();
            collect_ids(other, &mut never);
            rest.iter().for_each(|node| collect_ids(node, &mut never));
            fail_steps(shared, parent, never, &error).await;
            Ok(())
        }
    }
}
