//! Sending canvas nodes: the one place that turns a [`CanvasNode`] into task messages, used by
//! producers for a canvas's first nodes and by workers for what follows a task.
//!
//! A signature becomes one task message. A chain sends its first node with the rest as that
//! node's continuation. A group sends every member; followed by more steps, it becomes a chord
//! whose body is those steps. A chord stores its definition and sends its header; followed by more
//! steps, its body becomes a chain of the body and those steps. A chord header member that is a
//! chain carries its membership to its last step.

use std::future::Future;
use std::pin::Pin;

use async_nats::jetstream::kv;
use celerity_proto::{
    CanvasError, CanvasNode, ChordDefinition, ChordMember, ChordPolicy, ChordResults, ContentType,
    Envelope, QueueName, SignatureRecord, TaskBody, TaskId, TaskName, header_result_id,
};
use serde_json::Value;

use crate::clock::now_ms;
use crate::error::EnqueueError;
use crate::error_text::error_chain;
use crate::publisher::{Pending, Publisher};
use crate::result_store::ResultStore;
use crate::routing::Routes;

/// Where the nodes being sent come from: the task (or chord) they follow.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// The task they continue, if any.
    pub(crate) parent_id: Option<TaskId>,
    /// The workflow's first task, if known.
    pub(crate) root_id: Option<TaskId>,
    /// Where final records are notified.
    pub(crate) reply_to: Option<String>,
    /// How messages and records are encoded.
    pub(crate) content_type: ContentType,
    /// The canvas's deadline, Unix milliseconds: every task sent carries it.
    pub(crate) expires_ms: Option<u64>,
}

impl Origin {
    /// The origin of what follows the task in `parent`.
    pub(crate) fn after(parent: &Envelope) -> Self {
        Self {
            parent_id: Some(parent.id.clone()),
            root_id: Some(parent.root_id.clone().unwrap_or_else(|| parent.id.clone())),
            reply_to: parent.reply_to.clone(),
            content_type: parent.content_type,
            expires_ms: parent.expires_ms,
        }
    }
}

/// What the first task of a node receives in front of its arguments (unless it is immutable).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Previous<'a> {
    /// Nothing: the first node of a canvas.
    Nothing,
    /// The previous task's result, or the failed task's id for errbacks.
    Value(&'a Value),
    /// A chord's header results, read by the body's worker.
    ChordResults(&'a ChordResults),
}

/// Tags that travel with the first task of a node.
#[derive(Debug, Clone, Default)]
pub(crate) struct Membership {
    /// The group the node is a member of.
    pub(crate) group_id: Option<TaskId>,
    /// The chord whose header the node is a member of: carried to the node's last task.
    pub(crate) chord: Option<ChordMember>,
}

/// Sends canvas nodes.
pub(crate) struct Dispatcher {
    publisher: Publisher,
    chords: kv::Store,
    store: ResultStore,
    routes: Routes,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

type Sending<'a> = Pin<Box<dyn Future<Output = Result<(), EnqueueError>> + Send + 'a>>;

/// Whether the PENDING records of the tasks being sent were written already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Announced {
    /// No: the first task sent writes its own, and those of the plain steps that follow it.
    No,
    /// Yes, by whoever sent the chain (or the chord body) they belong to.
    Yes,
}

impl Dispatcher {
    pub(crate) fn new(
        publisher: Publisher,
        chords: kv::Store,
        store: ResultStore,
        routes: Routes,
    ) -> Self {
        Self {
            publisher,
            chords,
            store,
            routes,
        }
    }

    /// The publisher of single tasks.
    pub(crate) fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The chords bucket, where chord definitions are stored.
    pub(crate) fn chords(&self) -> &kv::Store {
        &self.chords
    }

    /// Sends `node` with `rest` to run after it, writing the PENDING records of its first task and
    /// of the plain steps of `rest` up to its first group or chord (whose members get theirs when
    /// they are sent).
    ///
    /// # Errors
    /// [`EnqueueError`] when a message or a chord definition cannot be published; everything sent
    /// here is keyed by an id, so sending again after an error sends nothing twice.
    pub(crate) fn send<'a>(
        &'a self,
        node: &'a CanvasNode,
        origin: &'a Origin,
        previous: Previous<'a>,
        rest: Vec<CanvasNode>,
        membership: Membership,
    ) -> Sending<'a> {
        self.send_as(node, origin, previous, rest, membership, Announced::No)
    }

    /// As [`Dispatcher::send`]; with [`Announced::Yes`] (the next step of a chain, a chord's
    /// body: their PENDING records were written when the chain or the chord was sent), a plain
    /// step is published without one (a group or chord step writes its members' as it sends them).
    ///
    /// # Errors
    /// As [`Dispatcher::send`].
    pub(crate) fn send_as<'a>(
        &'a self,
        node: &'a CanvasNode,
        origin: &'a Origin,
        previous: Previous<'a>,
        rest: Vec<CanvasNode>,
        membership: Membership,
        announced: Announced,
    ) -> Sending<'a> {
        Box::pin(async move {
            match node {
                CanvasNode::Signature(signature) => {
                    let message =
                        self.task_message(signature, origin, previous, rest, membership)?;
                    self.publish_step(&message, announced).await
                }
                CanvasNode::Chain { tasks } => match tasks.split_first() {
                    Some((first, inner)) => {
                        let mut steps = inner.to_vec();
                        steps.extend(rest);
                        self.send_as(first, origin, previous, steps, membership, announced)
                            .await
                    }
                    None => Ok(()),
                },
                CanvasNode::Group { id, tasks } if rest.is_empty() => {
                    for member in tasks {
                        let tags = Membership {
                            group_id: Some(id.clone()),
                            chord: None,
                        };
                        self.send(member, origin, previous, Vec::new(), tags)
                            .await?;
                    }
                    Ok(())
                }
                CanvasNode::Group { id, tasks } => {
                    // A group followed by more steps is a chord: the next step gets the list.
                    let chord = ChordParts {
                        id,
                        header: tasks,
                        body: chain_of(rest),
                        policy: ChordPolicy::FailFast,
                    };
                    self.send_chord(chord, origin, previous, membership).await
                }
                CanvasNode::Chord {
                    id,
                    header,
                    body,
                    policy,
                } => {
                    let chord = ChordParts {
                        id,
                        header,
                        body: followed_by(body, rest),
                        policy: *policy,
                    };
                    self.send_chord(chord, origin, previous, membership).await
                }
                _ => Err(EnqueueError::InvalidCanvas(CanvasError::UnknownNode)),
            }
        })
    }

    /// The task message of `signature`: `previous` goes in front of its arguments (unless it is
    /// immutable), `rest` becomes its continuation, and a signature that names no queue is routed.
    ///
    /// # Errors
    /// [`EnqueueError::InvalidRoute`] when a router function returns an invalid route.
    fn task_message(
        &self,
        signature: &SignatureRecord,
        origin: &Origin,
        previous: Previous<'_>,
        rest: Vec<CanvasNode>,
        membership: Membership,
    ) -> Result<TaskMessage, EnqueueError> {
        let mut envelope = step_envelope(signature, origin, &membership, now_ms());
        let mut body = TaskBody::new(signature.args.clone(), signature.kwargs.clone());
        match (previous, signature.immutable) {
            (Previous::Value(value), false) => body.args.insert(0, value.clone()),
            (Previous::ChordResults(results), false) => body.chord_results = Some(results.clone()),
            _ => {}
        }
        body.chain = rest;
        body.link = signature.link.clone();
        body.link_error = signature.link_error.clone();
        body.chord = membership.chord;
        // A step that names no queue (sent by a producer in another language) is routed here, by
        // this process's routes, seeing its actual arguments.
        let queue = match &signature.queue {
            Some(queue) => queue.clone(),
            None => {
                let (queue, priority) = self
                    .routes
                    .resolve(
                        signature.task.as_str(),
                        &body.args,
                        &body.kwargs,
                        None,
                        signature.priority,
                        None,
                    )
                    .map_err(|error| EnqueueError::invalid_route(signature.task.as_str(), error))?;
                envelope.priority = priority;
                queue
            }
        };
        Ok(TaskMessage {
            envelope,
            body,
            queue,
        })
    }

    /// Publishes one task message; unless `announced`, with its PENDING record and those of the
    /// plain steps that follow it.
    async fn publish_step(
        &self,
        message: &TaskMessage,
        announced: Announced,
    ) -> Result<(), EnqueueError> {
        let TaskMessage {
            envelope,
            body,
            queue,
        } = message;
        if announced == Announced::Yes {
            return self
                .publisher
                .publish(envelope, body, queue, Pending::Skip)
                .await;
        }
        let mut later = Vec::new();
        plain_steps(&body.chain, &mut later);
        if later.is_empty() {
            return self
                .publisher
                .publish(envelope, body, queue, Pending::Write)
                .await;
        }
        self.publish_announcing(message, &later).await
    }

    /// Publishes `message` while writing the PENDING records of the `later` steps; when the
    /// publish fails, removes the records that were written.
    async fn publish_announcing(
        &self,
        message: &TaskMessage,
        later: &[(TaskId, TaskName)],
    ) -> Result<(), EnqueueError> {
        let TaskMessage {
            envelope,
            body,
            queue,
        } = message;
        // NOTE(protocol): the steps that follow read PENDING from now on, as in Celery, and the
        // workers that send them write no PENDING of their own.
        let announce = futures_util::future::join_all(later.iter().map(|(id, task)| {
            let mut step = Envelope::new(id.clone(), task.clone());
            step.content_type = envelope.content_type;
            async move {
                let written = self.store.create_pending(&step).await;
                if let Err(error) = &written {
                    tracing::warn!(task_id = %step.id, error = %error_chain(error), "a chain step's PENDING record was not written");
                }
                written.is_ok()
            }
        }));
        let (sent, written) = tokio::join!(
            self.publisher
                .publish(envelope, body, queue, Pending::Write),
            announce
        );
        if sent.is_err() {
            // Not sent: steps that will not run must not look queued.
            for ((id, _), _) in later.iter().zip(written).filter(|(_, written)| *written) {
                let _ = self.store.purge(id).await;
            }
        }
        sent
    }

    /// Stores a chord's definition, records its body's steps as PENDING, then sends its header.
    async fn send_chord(
        &self,
        chord: ChordParts<'_>,
        origin: &Origin,
        previous: Previous<'_>,
        membership: Membership,
    ) -> Result<(), EnqueueError> {
        let ChordParts {
            id,
            header,
            body,
            policy,
        } = chord;
        let size = check_header(id, header)?;
        let mut body_ids = Vec::new();
        body.result_ids(&mut body_ids);
        let mut definition = ChordDefinition::new(id.clone(), size, body);
        definition.reply_to = origin.reply_to.clone();
        definition.content_type = origin.content_type;
        definition.root_id = origin.root_id.clone().or_else(|| Some(id.clone()));
        // NOTE: a chord that is itself a chord header member reports when its body finishes: the
        // membership goes to the body's last task.
        definition.member = membership.chord;
        definition.policy = policy;
        definition.expires_ms = origin.expires_ms;
        definition.traceparent = crate::telemetry::current_traceparent();
        self.store_definition(&definition).await?;
        self.announce_body(body_ids, origin).await;
        use futures_util::{StreamExt, TryStreamExt};
        let mut sends = Vec::with_capacity(header.len());
        for (index, member) in (0..).zip(header) {
            let mut chord_member = ChordMember::new(id.clone(), index, size);
            chord_member.policy = policy;
            let tags = Membership {
                group_id: Some(id.clone()),
                chord: Some(chord_member),
            };
            sends.push(self.send(member, origin, previous, Vec::new(), tags));
        }
        futures_util::stream::iter(sends)
            .buffer_unordered(256)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Checks a chord's definition and stores it in the chords bucket.
    async fn store_definition(&self, definition: &ChordDefinition) -> Result<(), EnqueueError> {
        let id = &definition.id;
        // Refused before anything is sent: a worker would fail it (over MAX_CHORD_SIZE members, or
        // an `at_least` quorum the header cannot give).
        definition
            .check()
            .map_err(|source| EnqueueError::InvalidChord {
                chord: id.clone(),
                source,
            })?;
        let bytes = serde_json::to_vec(definition).map_err(|source| EnqueueError::EncodeChord {
            chord: id.clone(),
            source,
        })?;
        self.chords
            .put(id.as_str(), bytes.into())
            .await
            .map_err(|error| EnqueueError::Publish {
                task_id: id.clone(),
                source: error.into(),
            })?;
        Ok(())
    }

    /// Records the steps of a chord's body as PENDING: they run only when the header is done.
    async fn announce_body(&self, body_ids: Vec<TaskId>, origin: &Origin) {
        let chord_name = TaskName::new(celerity_proto::builtin::CHORD_TASK)
            .expect("the built-in chord task's name is a valid task name");
        for body_id in body_ids {
            let mut pending = Envelope::new(body_id, chord_name.clone());
            pending.content_type = origin.content_type;
            if let Err(error) = self.store.create_pending(&pending).await {
                tracing::warn!(task_id = %pending.id, error = %error_chain(&error), "chord body's PENDING record was not written");
            }
        }
    }
}

/// Checks that chord `id`'s header members store their results under `<id>-<index>`, and returns
/// their number.
fn check_header(id: &TaskId, header: &[CanvasNode]) -> Result<u32, EnqueueError> {
    let size = u32::try_from(header.len()).map_err(|_| {
        EnqueueError::InvalidCanvas(CanvasError::TooManyMembers {
            chord: id.to_string(),
            members: header.len(),
        })
    })?;
    for (index, member) in (0..).zip(header) {
        let expected = header_result_id(id, index)
            .map_err(|error| EnqueueError::invalid("chord member id", error))?;
        if member.result_id() != Some(&expected) {
            return Err(EnqueueError::InvalidCanvas(CanvasError::MemberId {
                chord: id.to_string(),
                index,
                expected: expected.to_string(),
            }));
        }
    }
    Ok(size)
}

/// One task message to publish.
struct TaskMessage {
    envelope: Envelope,
    body: TaskBody,
    queue: QueueName,
}

/// The envelope of `signature`'s task, sent at `now_ms` from `origin` with `membership`.
fn step_envelope(
    signature: &SignatureRecord,
    origin: &Origin,
    membership: &Membership,
    now_ms: u64,
) -> Envelope {
    let mut envelope = Envelope::new(signature.id.clone(), signature.task.clone());
    envelope.content_type = origin.content_type;
    envelope.priority = signature.priority.unwrap_or_default();
    envelope.reply_to = origin.reply_to.clone();
    envelope.parent_id = origin.parent_id.clone();
    envelope.root_id = Some(
        origin
            .root_id
            .clone()
            .unwrap_or_else(|| signature.id.clone()),
    );
    envelope.group_id = membership.group_id.clone();
    envelope.chord_id = membership.chord.as_ref().map(|member| member.id.clone());
    envelope.sent_at_ms = Some(now_ms);
    envelope.expires_ms = origin.expires_ms;
    envelope.eta_ms = signature
        .countdown_ms
        .map(|countdown| now_ms.saturating_add(countdown));
    envelope
}

/// A chord's body followed by the steps `rest`: the body itself, or a chain of both.
fn followed_by(body: &CanvasNode, rest: Vec<CanvasNode>) -> CanvasNode {
    if rest.is_empty() {
        return body.clone();
    }
    let mut steps = vec![body.clone()];
    steps.extend(rest);
    CanvasNode::Chain { tasks: steps }
}

/// A chord to send: its id, header, body (already followed by the rest of its chain) and policy.
struct ChordParts<'a> {
    id: &'a TaskId,
    header: &'a [CanvasNode],
    body: CanvasNode,
    policy: ChordPolicy,
}

/// The ids and task names of the plain steps at the head of `chain` (chains flattened), up to its
/// first group or chord. Returns false when it stopped at one.
fn plain_steps(chain: &[CanvasNode], steps: &mut Vec<(TaskId, TaskName)>) -> bool {
    for node in chain {
        match node {
            CanvasNode::Signature(signature) => {
                steps.push((signature.id.clone(), signature.task.clone()))
            }
            CanvasNode::Chain { tasks } => {
                if !plain_steps(tasks, steps) {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

/// The steps `rest` as one node: the single step itself, or a chain of them.
fn chain_of(mut rest: Vec<CanvasNode>) -> CanvasNode {
    if rest.len() == 1 {
        rest.remove(0)
    } else {
        CanvasNode::Chain { tasks: rest }
    }
}

#[cfg(test)]
mod tests {
    use celerity_proto::{CanvasError, CanvasNode, SignatureRecord, TaskId, TaskName};

    use super::check_header;
    use crate::error::EnqueueError;

    fn step(id: &str) -> CanvasNode {
        CanvasNode::Signature(SignatureRecord::new(
            TaskId::new(id).unwrap(),
            TaskName::new("tasks.add").unwrap(),
            Vec::new(),
        ))
    }

    #[test]
    fn a_header_numbered_from_the_chord_id_gives_its_size() {
        let chord = TaskId::new("c").unwrap();
        assert_eq!(
            check_header(&chord, &[step("c-0"), step("c-1")]).unwrap(),
            2
        );
    }

    #[test]
    fn a_header_member_with_another_result_id_is_refused() {
        let chord = TaskId::new("c").unwrap();
        let error = check_header(&chord, &[step("c-0"), step("x")]).unwrap_err();
        assert!(
            matches!(
                error,
                EnqueueError::InvalidCanvas(CanvasError::MemberId { index: 1, ref expected, .. })
                    if expected == "c-1"
            ),
            "{error}"
        );
    }
}
