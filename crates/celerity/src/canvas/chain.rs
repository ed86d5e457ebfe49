//! [`Chain`]: steps run one after the other, each receiving the previous result.

use std::marker::PhantomData;
use std::time::Duration;

use celerity_proto::CanvasNode;
use serde_json::Value;

use crate::async_result::AsyncResult;
use crate::client::Client;
use crate::error::EnqueueError;

use super::part::Untyped;
use super::{Part, Signature, send};

/// Steps run one after the other, each receiving the previous result (unless immutable); typed by
/// what the last step returns. Built with [`chain!`](crate::chain) or [`Chain::start`] and
/// [`Chain::then`]. A step may be a signature, a chain, a group (the next step receives the list
/// of its results) or a chord.
#[derive(Debug, Clone)]
pub struct Chain<T> {
    pub(super) steps: Vec<Untyped>,
    deadline: Option<Duration>,
    output: PhantomData<fn() -> T>,
}

impl<T> Chain<T> {
    /// A chain whose first step is `first`.
    pub fn start(first: impl Into<Part<T>>) -> Self {
        Self {
            steps: vec![first.into().node],
            deadline: None,
            output: PhantomData,
        }
    }

    /// Appends `next`, which receives this chain's result.
    pub fn then<U>(mut self, next: impl Into<Part<U>>) -> Chain<U> {
        self.steps.push(next.into().node);
        Chain {
            steps: self.steps,
            deadline: self.deadline,
            output: PhantomData,
        }
    }

    /// Bounds every step: a step that would start more than `deadline` from now is not run, and
    /// it and every later step end REVOKED with reason `expired`.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Sends the first step, with the others as its continuation. The result is the last step's,
    /// and [`AsyncResult::parent`] walks back through the earlier steps.
    ///
    /// # Errors
    /// [`EnqueueError`] for an invalid canvas (a chain may not end with a group: make it a chord)
    /// or a failed publish; nothing is enqueued then.
    ///
    /// # Cancel safety
    /// Not cancel-safe: a dropped call may have sent part of the canvas (some group members, or a
    /// chord's definition without all of its header); nothing is sent twice.
    pub async fn apply_async(self, client: &Client) -> Result<AsyncResult<T>, EnqueueError> {
        if matches!(self.steps.last(), Some(Untyped::Group(_))) {
            return Err(EnqueueError::InvalidCanvas(
                celerity_proto::CanvasError::ChainEndsWithGroup,
            ));
        }
        let node = Untyped::Chain(self.steps).into_node(&client.settings().routes)?;
        send(client, &node, self.deadline).await?;
        let CanvasNode::Chain { tasks } = &node else {
            return Err(EnqueueError::InvalidCanvas(
                celerity_proto::CanvasError::Empty("chain"),
            ));
        };
        let mut result: Option<AsyncResult<Value>> = None;
        for id in tasks.iter().filter_map(CanvasNode::result_id) {
            result = Some(AsyncResult::with_parent(
                id.clone(),
                client.results(),
                result,
            ));
        }
        match result {
            Some(result) => Ok(result.retype().with_root(node.root_id().cloned())),
            None => Err(EnqueueError::InvalidCanvas(
                celerity_proto::CanvasError::Empty("chain"),
            )),
        }
    }
}

impl<T> From<Chain<T>> for Part<T> {
    fn from(chain: Chain<T>) -> Self {
        Part::from_node(Untyped::Chain(chain.steps))
    }
}

// A signature is sent as a chain of one step; its `apply_async` lives here, above both.
impl<T> Signature<T> {
    /// Sends this signature alone.
    ///
    /// # Errors
    /// As [`Client::apply`].
    ///
    /// # Cancel safety
    /// Not cancel-safe: a dropped call may have sent part of the canvas (some group members, or a
    /// chord's definition without all of its header); nothing is sent twice.
    pub async fn apply_async(self, client: &Client) -> Result<AsyncResult<T>, EnqueueError> {
        Chain::start(self).apply_async(client).await
    }
}
