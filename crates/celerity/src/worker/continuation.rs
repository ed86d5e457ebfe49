//! What runs after a task: the next step of its chain and its callbacks when it succeeds; its
//! errbacks, and the failure of every later step of its chain, when it fails.
//!
//! Runs after the task's own record is stored and before its message is acknowledged, so a crash
//! in between redelivers the message and the continuation is published again (de-duplicated by
//! the next steps' ids).

use celerity_proto::{
    CanvasNode, ChordCompletion, ChordDefinition, ChordMember, ChordResults, Envelope, ErrorRecord,
    ResultRecord, TaskBody, TaskId, TaskName, TaskState, chord_partition,
};
use serde_json::{Value, json};

use crate::client::{EnqueueError, collect_result_ids};
use crate::worker::WorkerShared;

/// The canvas fields of a task body.
#[derive(Debug, Default)]
pub(crate) struct Continuation {
    chain: Vec<CanvasNode>,
    link: Vec<CanvasNode>,
    link_error: Vec<CanvasNode>,
    chord: Option<ChordMember>,
}

impl Continuation {
    /// Takes the canvas fields out of `body`.
    pub(crate) fn take(body: &mut TaskBody) -> Self {
        Self {
            chain: std::mem::take(&mut body.chain),
            link: std::mem::take(&mut body.link),
            link_error: std::mem::take(&mut body.link_error),
            chord: body.chord.take(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.chain.is_empty()
            && self.link.is_empty()
            && self.link_error.is_empty()
            && self.chord.is_none()
    }

    /// True when the task is a chord header member: its result must be stored even if the task
    /// ignores results, since the chord's body reads it.
    pub(crate) fn reports_to_chord(&self) -> bool {
        self.chord.is_some()
    }

    /// Runs what follows a task that ended with `record`.
    ///
    /// # Errors
    /// A publish that failed; the caller leaves the message unacknowledged so this runs again
    /// (every publish here is de-duplicated by id).
    pub(crate) async fn after(
        &self,
        shared: &WorkerShared,
        envelope: &Envelope,
        record: &ResultRecord,
    ) -> Result<(), EnqueueError> {
        match &record.error {
            Some(error) => self.on_failure(shared, envelope, error).await,
            None => {
                self.on_success(
                    shared,
                    envelope,
                    record.result.as_ref().unwrap_or(&Value::Null),
                )
                .await?
            }
        }
        if let Some(member) = &self.chord {
            report_to_chord(shared, envelope, member, record).await?;
        }
        Ok(())
    }

    /// Publishes the callbacks with `result`, then the chain's next step with `result` and the
    /// rest of the chain as its continuation.
    ///
    /// # Errors
    /// A publish that failed; the caller leaves the message unacknowledged so this runs again.
    async fn on_success(
        &self,
        shared: &WorkerShared,
        envelope: &Envelope,
        result: &Value,
    ) -> Result<(), EnqueueError> {
        for callback in &self.link {
            publish_node(
                shared,
                envelope,
                callback,
                Some(Previous::Value(result)),
                Vec::new(),
            )
            .await?;
        }
        if let Some((next, rest)) = self.chain.split_first() {
            publish_node(
                shared,
                envelope,
                next,
                Some(Previous::Value(result)),
                rest.to_vec(),
            )
            .await?;
        }
        Ok(())
    }

    /// Publishes the errbacks with the failed task's id, and records every later step of the chain
    /// as failed with the same error, so the chain's result is this failure and no later step runs.
    async fn on_failure(&self, shared: &WorkerShared, envelope: &Envelope, error: &ErrorRecord) {
        let failed_id = Value::String(envelope.id.to_string());
        for errback in &self.link_error {
            if let Err(publish_error) = publish_node(
                shared,
                envelope,
                errback,
                Some(Previous::Value(&failed_id)),
                Vec::new(),
            )
            .await
            {
                tracing::error!(task_id = %envelope.id, error = %crate::error_chain(&publish_error), "cannot send an errback");
            }
        }
        let mut later = Vec::new();
        for node in &self.chain {
            collect_result_ids(node, &mut later);
        }
        fail_steps(
            shared,
            envelope,
            later,
            error,
            "an earlier step of the chain failed",
        )
        .await;
    }
}

/// Tells the chord's aggregator that a header member ended: a JetStream publish to the chord's
/// partition subject, de-duplicated by `<chord id>-<index>`.
async fn report_to_chord(
    shared: &WorkerShared,
    envelope: &Envelope,
    member: &ChordMember,
    record: &ResultRecord,
) -> Result<(), EnqueueError> {
    let mut completion = ChordCompletion::new(member.index, member.size, record.state.clone());
    completion.error = record.error.clone();
    completion.task = Some(envelope.task.clone());
    let publish_error = |error: Box<dyn std::error::Error + Send + Sync>| EnqueueError::Publish {
        task_id: envelope.id.clone(),
        source: error,
    };
    let payload = serde_json::to_vec(&completion).map_err(|error| publish_error(error.into()))?;
    let subject = shared
        .layout
        .chord_subject(chord_partition(&member.id), &member.id);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        celerity_proto::header::NATS_MSG_ID,
        format!("{}-{}", member.id, member.index).as_str(),
    );
    shared
        .js
        .publish_with_headers(subject, headers, payload.into())
        .await
        .map_err(|error| publish_error(error.into()))?
        .await
        .map_err(|error| publish_error(error.into()))?;
    Ok(())
}

/// Records steps that will never run as failed with `error`, naming the task that failed.
async fn fail_steps(
    shared: &WorkerShared,
    envelope: &Envelope,
    ids: Vec<TaskId>,
    error: &ErrorRecord,
    reason: &str,
) {
    for id in ids {
        let mut step = Envelope::new(id, envelope.task.clone());
        step.content_type = envelope.content_type;
        step.reply_to = envelope.reply_to.clone();
        let mut record = shared
            .store
            .record(&step, TaskState::Failure)
            .with_error(error.clone())
            .with_meta(json!({"failed_task": envelope.id.as_str(), "reason": reason}));
        // The step never ran: its record names no task of its own.
        record.task = None;
        super::execute::store_final(shared, &step, &record).await;
    }
}

/// What a published node receives in front of its arguments (unless it is immutable).
#[derive(Debug, Clone, Copy)]
enum Previous<'a> {
    /// The parent's result, or its id for errbacks.
    Value(&'a Value),
    /// A chord's header results, read by the body's worker.
    ChordResults(&'a ChordResults),
}

/// Sends a chord's body with a reference to its header results, as the continuation of the chord.
///
/// # Errors
/// A publish that failed.
pub(crate) async fn publish_chord_body(
    shared: &WorkerShared,
    definition: &ChordDefinition,
    chord_task: TaskName,
) -> Result<(), EnqueueError> {
    let parent = chord_envelope(definition, chord_task);
    let results = ChordResults::new(definition.id.clone(), definition.size);
    publish_node(
        shared,
        &parent,
        &definition.body,
        Some(Previous::ChordResults(&results)),
        Vec::new(),
    )
    .await
}

/// Records every step of a chord's body as failed with a header member's error.
pub(crate) async fn fail_chord_body(
    shared: &WorkerShared,
    definition: &ChordDefinition,
    chord_task: TaskName,
    error: &ErrorRecord,
) {
    let parent = chord_envelope(definition, chord_task);
    let mut ids = Vec::new();
    collect_result_ids(&definition.body, &mut ids);
    fail_steps(
        shared,
        &parent,
        ids,
        error,
        "a header member of the chord failed",
    )
    .await;
}

/// The envelope a chord's body is a continuation of.
fn chord_envelope(definition: &ChordDefinition, chord_task: TaskName) -> Envelope {
    let mut parent = Envelope::new(definition.id.clone(), chord_task);
    parent.content_type = definition.content_type;
    parent.reply_to = definition.reply_to.clone();
    parent.root_id = definition.root_id.clone();
    parent
}

/// Publishes `node` as the continuation of the task in `parent`, with `previous` in front of its
/// arguments unless it is immutable.
async fn publish_node(
    shared: &WorkerShared,
    parent: &Envelope,
    node: &CanvasNode,
    previous: Option<Previous<'_>>,
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
            let mut body = TaskBody::new(signature.args.clone(), signature.kwargs.clone());
            match (previous, signature.immutable) {
                (Some(Previous::Value(value)), false) => body.args.insert(0, value.clone()),
                (Some(Previous::ChordResults(results)), false) => {
                    body.chord_results = Some(results.clone())
                }
                _ => {}
            }
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
            collect_result_ids(other, &mut never);
            rest.iter()
                .for_each(|node| collect_result_ids(node, &mut never));
            fail_steps(
                shared,
                parent,
                never,
                &error,
                "the worker cannot run this kind of step",
            )
            .await;
            Ok(())
        }
    }
}
