//! [`Part`]: any canvas typed by its result, and its conversion into the wire's [`CanvasNode`],
//! with fresh ids and the result ids of chord header members.

use std::marker::PhantomData;

use celerity_proto::{CanvasNode, ChordPolicy, TaskId};
use serde_json::Value;

use crate::error::EnqueueError;
use crate::routing::Routes;

use super::Signature;
use super::signature::new_id;

/// Any canvas (a signature, chain, group or chord) typed by its result: what chains, groups and
/// chords are built from. Every canvas type converts into it with `into()`.
#[derive(Debug, Clone)]
pub struct Part<T> {
    pub(super) node: Untyped,
    output: PhantomData<fn() -> T>,
}

#[derive(Debug, Clone)]
pub(super) enum Untyped {
    Signature(Signature<Value>),
    Chain(Vec<Untyped>),
    Group(Vec<Untyped>),
    Chord(Vec<Untyped>, Box<Untyped>, ChordPolicy),
}

impl<T> Part<T> {
    /// The part of a canvas whose untyped form is `node`.
    pub(super) fn from_node(node: Untyped) -> Self {
        Part {
            node,
            output: PhantomData,
        }
    }
}

impl<T> From<Signature<T>> for Part<T> {
    fn from(signature: Signature<T>) -> Self {
        Part::from_node(Untyped::Signature(signature.erase()))
    }
}

impl Untyped {
    /// The wire node, with fresh ids; chord header members get their result ids
    /// `<chord id>-<index>`.
    pub(super) fn into_node(self, routes: &Routes) -> Result<CanvasNode, EnqueueError> {
        Ok(match self {
            Untyped::Signature(signature) => CanvasNode::Signature(signature.into_record(routes)?),
            Untyped::Chain(steps) => {
                let mut tasks: Vec<CanvasNode> = steps
                    .into_iter()
                    .map(|node| node.into_node(routes))
                    .collect::<Result<_, _>>()?;
                // NOTE(protocol): a group followed by more steps runs as a chord whose id is the
                // group's, so its members' results are stored as that chord's header results.
                let last = tasks.len().saturating_sub(1);
                for node in tasks.iter_mut().take(last) {
                    if let CanvasNode::Group { id, tasks: members } = node {
                        for (index, member) in (0..).zip(members.iter_mut()) {
                            set_result_id(member, chord_member_id(id, index)?)?;
                        }
                    }
                }
                CanvasNode::Chain { tasks }
            }
            Untyped::Group(members) => CanvasNode::Group {
                id: new_id(),
                tasks: members
                    .into_iter()
                    .map(|node| node.into_node(routes))
                    .collect::<Result<_, _>>()?,
            },
            Untyped::Chord(header, body, policy) => {
                let id = new_id();
                let mut tasks = Vec::with_capacity(header.len());
                for (index, member) in (0..).zip(header) {
                    let mut node = member.into_node(routes)?;
                    set_result_id(&mut node, chord_member_id(&id, index)?)?;
                    tasks.push(node);
                }
                CanvasNode::Chord {
                    id,
                    header: tasks,
                    body: Box::new(body.into_node(routes)?),
                    policy,
                }
            }
        })
    }
}

/// The result id of member `index` of chord (or chained group) `id`.
fn chord_member_id(id: &TaskId, index: u32) -> Result<TaskId, EnqueueError> {
    celerity_proto::header_result_id(id, index)
        .map_err(|error| EnqueueError::invalid("chord member id", error))
}

/// Makes `id` the id under which `node`'s result is stored.
fn set_result_id(node: &mut CanvasNode, id: TaskId) -> Result<(), EnqueueError> {
    match node {
        CanvasNode::Signature(signature) => {
            signature.id = id;
            Ok(())
        }
        CanvasNode::Chain { tasks } => match tasks.last_mut() {
            Some(last) => set_result_id(last, id),
            None => Err(EnqueueError::InvalidCanvas(
                celerity_proto::CanvasError::Empty("chain"),
            )),
        },
        CanvasNode::Chord { body, .. } => set_result_id(body, id),
        _ => Err(EnqueueError::InvalidCanvas(
            celerity_proto::CanvasError::GroupInChordHeader {
                member: id.to_string(),
            },
        )),
    }
}
