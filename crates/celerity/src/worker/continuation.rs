//! What runs after a task: the next step of its chain and its callbacks when it succeeds; its
//! errbacks, and the failure of every later step of its chain, when it fails; and its report to
//! the chord whose header it ends.
//!
//! Runs after the task's own record is stored, or while it is stored when nothing that follows
//! reads it ([`Continuation::reads_no_record`]), and before its message is acknowledged, so a
//! crash in between redelivers the message and all of this runs again (every send is keyed by an
//! id).

use celerity_proto::{
    CanvasNode, ChordCompletion, ChordDefinition, ChordMember, ChordResults, Envelope, ErrorRecord,
    ResultRecord, TaskBody, TaskId, TaskName, TaskState, chord_partition,
};
use serde_json::{Value, json};

use crate::dispatch::{Announced, Membership, Origin, Previous};
use crate::error::EnqueueError;
use crate::worker::WorkerShared;
use crate::worker::nats_io;

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

    /// What follows the task in `payload`, the body of a message with `envelope`; nothing when
    /// the body cannot be read.
    pub(crate) fn of_message(envelope: &Envelope, payload: &[u8]) -> Self {
        envelope
            .content_type
            .decode::<TaskBody>(payload)
            .map(|mut body| Self::take(&mut body))
            .unwrap_or_default()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.chain.is_empty()
            && self.link.is_empty()
            && self.link_error.is_empty()
            && self.chord.is_none()
    }

    /// True when the task's result is a chord header member's: it must be stored even if the task
    /// ignores results, since the chord's body reads it.
    pub(crate) fn reports_to_chord(&self) -> bool {
        self.chord.is_some() && self.chain.is_empty()
    }

    /// True when nothing that follows reads the task's stored record, so it may be sent while the
    /// record is being stored: only a chord reads its members' records (its body, once every
    /// member has reported), so only a task with no chord membership qualifies.
    pub(crate) fn reads_no_record(&self) -> bool {
        self.chord.is_none()
    }

    /// Runs what follows a task that ended with `record`.
    ///
    /// # Errors
    /// A publish that failed; the caller leaves the message unacknowledged so this runs again
    /// (every send here is keyed by an id).
    pub(crate) async fn after(
        &self,
        shared: &WorkerShared,
        envelope: &Envelope,
        record: &ResultRecord,
    ) -> Result<(), EnqueueError> {
        match self.run_after(shared, envelope, record).await {
            Err(error) if error.is_permanent() => {
                // Sending again cannot fix this (a malformed canvas from a hand-written producer):
                // the steps that will never run fail visibly, and the task is acknowledged.
                let failure =
                    ErrorRecord::new("celerity::InvalidCanvas", crate::error_chain(&error));
                tracing::error!(task_id = %envelope.id, error = %failure.message, "cannot send what follows the task");
                let mut never = Vec::new();
                for node in self.chain.iter().chain(&self.link) {
                    node.result_ids(&mut never);
                }
                let meta = failed_by(&envelope.id, "the canvas after this task is invalid");
                fail_steps(shared, envelope, never, &failure, &meta).await;
                if let Some(member) = &self.chord {
                    let failed = shared
                        .store
                        .record(envelope, TaskState::Failure)
                        .with_error(failure);
                    report_to_chord(shared, envelope, member, &failed).await?;
                }
                Ok(())
            }
            other => other,
        }
    }

    async fn run_after(
        &self,
        shared: &WorkerShared,
        envelope: &Envelope,
        record: &ResultRecord,
    ) -> Result<(), EnqueueError> {
        let origin = Origin::after(envelope);
        // A task of a revoked canvas that was already running sends nothing after itself.
        let revoked_canvas = shared.is_revoked(envelope);
        if record.state == TaskState::Revoked || revoked_canvas {
            let meta = if revoked_canvas {
                Some(json!({"reason": "revoked"}))
            } else {
                record.meta.clone()
            };
            // Not run (expired): nothing after it runs either, and says why.
            let mut later = Vec::new();
            for node in &self.chain {
                node.result_ids(&mut later);
            }
            revoke_steps(shared, envelope, later, meta).await;
            if let Some(member) = &self.chord {
                report_to_chord(shared, envelope, member, record).await?;
            }
            return Ok(());
        }
        match &record.error {
            Some(error) => {
                self.on_failure(shared, envelope, &origin, error).await?;
                // A chord member's chain stopped: the chord must learn now, not wait forever.
                if let Some(member) = &self.chord {
                    report_to_chord(shared, envelope, member, record).await?;
                }
            }
            None => {
                let result = record.result.as_ref().unwrap_or(&Value::Null);
                for callback in &self.link {
                    shared
                        .dispatcher
                        .send(
                            callback,
                            &origin,
                            Previous::Value(result),
                            Vec::new(),
                            Membership::default(),
                        )
                        .await?;
                }
                match self.chain.split_first() {
                    // The membership travels to the chain's last task, whose result is the member's.
                    Some((next, rest)) => {
                        let membership = Membership {
                            group_id: None,
                            chord: self.chord.clone(),
                        };
                        // Its PENDING was written with the chain's first task.
                        shared
                            .dispatcher
                            .send_as(
                                next,
                                &origin,
                                Previous::Value(result),
                                rest.to_vec(),
                                membership,
                                Announced::Yes,
                            )
                            .await?;
                    }
                    None => {
                        if let Some(member) = &self.chord {
                            report_to_chord(shared, envelope, member, record).await?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends the errbacks with the failed task's id, and records every later step of the chain as
    /// failed with the same error, so the chain's result is this failure and no later step runs.
    ///
    /// # Errors
    /// The first errback that could not be sent, once every errback was tried and the later steps
    /// were recorded: as for a success callback, the message is then left for redelivery and this
    /// runs again (errbacks are sent under their ids, so the server drops the copies it has).
    async fn on_failure(
        &self,
        shared: &WorkerShared,
        envelope: &Envelope,
        origin: &Origin,
        error: &ErrorRecord,
    ) -> Result<(), EnqueueError> {
        let failed_id = Value::String(envelope.id.to_string());
        let mut unsent = None;
        for errback in &self.link_error {
            let sent = shared
                .dispatcher
                .send(
                    errback,
                    origin,
                    Previous::Value(&failed_id),
                    Vec::new(),
                    Membership::default(),
                )
                .await;
            if let Err(send_error) = sent {
                tracing::warn!(task_id = %envelope.id, error = %crate::error_chain(&send_error), "cannot send an errback; the task will be redelivered to send it again");
                unsent.get_or_insert(send_error);
            }
        }
        let mut later = Vec::new();
        for node in &self.chain {
            node.result_ids(&mut later);
        }
        let meta = failed_by(&envelope.id, "an earlier step of the chain failed");
        fail_steps(shared, envelope, later, error, &meta).await;
        unsent.map_or(Ok(()), Err)
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
    completion.policy = member.policy;
    completion.traceparent = crate::telemetry::current_traceparent();
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
    nats_io::publish_stored(&shared.js, subject, headers, payload.into())
        .await
        .map_err(|error| publish_error(error.into()))?;
    Ok(())
}

/// The `meta` of a step that will never run because `failed_task` failed.
fn failed_by(failed_task: &TaskId, reason: &str) -> Value {
    json!({"failed_task": failed_task.as_str(), "reason": reason})
}

/// Records steps that will never run as failed with `error` and `meta` (which names the task that
/// failed).
async fn fail_steps(
    shared: &WorkerShared,
    envelope: &Envelope,
    ids: Vec<TaskId>,
    error: &ErrorRecord,
    meta: &Value,
) {
    for id in ids {
        let mut step = Envelope::new(id, envelope.task.clone());
        step.content_type = envelope.content_type;
        step.reply_to = envelope.reply_to.clone();
        let mut record = shared
            .store
            .record(&step, TaskState::Failure)
            .with_error(error.clone())
            .with_meta(meta.clone());
        // The step never ran: its record names no task of its own.
        record.task = None;
        shared.store.store_final(&step, &record).await;
    }
}

/// Records steps that will never run because an earlier one was revoked, with its reason.
async fn revoke_steps(
    shared: &WorkerShared,
    envelope: &Envelope,
    ids: Vec<TaskId>,
    meta: Option<Value>,
) {
    for id in ids {
        let mut step = Envelope::new(id, envelope.task.clone());
        step.content_type = envelope.content_type;
        step.reply_to = envelope.reply_to.clone();
        let mut meta = meta.clone().unwrap_or_else(|| json!({}));
        if let Some(fields) = meta.as_object_mut() {
            fields.insert(
                "revoked_task".to_owned(),
                Value::String(envelope.id.to_string()),
            );
        }
        let mut record = shared
            .store
            .record(&step, TaskState::Revoked)
            .with_meta(meta);
        record.task = None;
        shared.store.store_final(&step, &record).await;
    }
}

/// Sends a chord's body with a reference to its header results, as the chord's continuation.
///
/// # Errors
/// A publish that failed.
pub(crate) async fn publish_chord_body(
    shared: &WorkerShared,
    definition: &ChordDefinition,
    results: &ChordResults,
) -> Result<(), EnqueueError> {
    let origin = chord_origin(definition);
    let membership = Membership {
        group_id: None,
        chord: definition.member.clone(),
    };

    // The body's PENDING records were written with the chord's definition.
    shared
        .dispatcher
        .send_as(
            &definition.body,
            &origin,
            Previous::ChordResults(results),
            Vec::new(),
            membership,
            Announced::Yes,
        )
        .await
}

/// Why a chord's body will never run: the error its steps are recorded with, and what their
/// `meta` names.
#[derive(Debug)]
pub(crate) struct ChordFailure {
    /// The failing header member's id (`<chord id>-<index>`), or the chord's id when the chord
    /// itself is at fault.
    failed_task: TaskId,
    reason: &'static str,
    error: ErrorRecord,
}

impl ChordFailure {
    /// Header member `member` (its result id) failed with `error`.
    pub(crate) fn member(member: TaskId, error: ErrorRecord) -> Self {
        Self {
            failed_task: member,
            reason: "a header member of the chord failed",
            error,
        }
    }

    /// Chord `chord_id`'s stored definition breaks a rule.
    pub(crate) fn invalid(chord_id: &TaskId, mismatch: &celerity_proto::ChordMismatch) -> Self {
        Self {
            failed_task: chord_id.clone(),
            reason: "the chord's definition breaks a rule of the protocol",
            error: ErrorRecord::new("celerity::InvalidChord", mismatch.to_string()),
        }
    }
}

/// Records every step of a chord's body as failed with `failure`'s error, with
/// `meta = {"failed_task": <member id>, "reason": ..., "chord_id": <chord id>}`; a chord that is
/// itself a member of another chord reports the failure there.
///
/// # Errors
/// The report to the outer chord could not be published.
pub(crate) async fn fail_chord_body(
    shared: &WorkerShared,
    definition: &ChordDefinition,
    chord_task: TaskName,
    failure: &ChordFailure,
) -> Result<(), EnqueueError> {
    let mut parent = Envelope::new(definition.id.clone(), chord_task);
    parent.content_type = definition.content_type;
    parent.reply_to = definition.reply_to.clone();
    let mut ids = Vec::new();
    definition.body.result_ids(&mut ids);
    let mut meta = failed_by(&failure.failed_task, failure.reason);
    if let Some(fields) = meta.as_object_mut() {
        fields.insert("chord_id".to_owned(), json!(definition.id.as_str()));
    }
    fail_steps(shared, &parent, ids, &failure.error, &meta).await;
    if let Some(member) = &definition.member {
        let record = shared
            .store
            .record(&parent, TaskState::Failure)
            .with_error(failure.error.clone());
        report_to_chord(shared, &parent, member, &record).await?;
    }
    Ok(())
}

/// The origin of a chord's body: the chord.
fn chord_origin(definition: &ChordDefinition) -> Origin {
    Origin {
        parent_id: Some(definition.id.clone()),
        root_id: definition.root_id.clone(),
        reply_to: definition.reply_to.clone(),
        content_type: definition.content_type,
        expires_ms: definition.expires_ms,
    }
}

#[cfg(test)]
mod tests {
    use celerity_proto::ContentType;

    use super::*;

    fn envelope() -> Envelope {
        let mut envelope =
            Envelope::new(TaskId::new("t1").unwrap(), TaskName::new("it.add").unwrap());
        envelope.content_type = ContentType::Json;
        envelope
    }

    #[test]
    fn what_follows_is_read_from_the_body_and_is_nothing_when_it_is_unreadable() {
        assert!(Continuation::of_message(&envelope(), b"not a body").is_empty());
        let mut body = TaskBody::default();
        body.link_error = vec![CanvasNode::Signature(celerity_proto::SignatureRecord::new(
            TaskId::new("e1").unwrap(),
            TaskName::new("it.log").unwrap(),
            Vec::new(),
        ))];
        let payload = ContentType::Json.encode(&body).unwrap();
        let continuation = Continuation::of_message(&envelope(), &payload);
        assert!(!continuation.is_empty());
        assert!(continuation.reads_no_record() && !continuation.reports_to_chord());
    }
}
