//! [`Group`]: canvases run in parallel, and [`GroupResult`], the handles on their results.

use std::marker::PhantomData;
use std::time::Duration;

use celerity_proto::{CanvasNode, TaskId, TaskState};
use serde::de::DeserializeOwned;

use crate::async_result::{AsyncResult, ResultError, WaitVia};
use crate::client::Client;
use crate::error::EnqueueError;

use super::part::Untyped;
use super::signature::{ArgsTuple, starmap_signature};
use super::{Part, send};
use crate::task::Task;

/// Canvases run in parallel; the result is the list of their results, in order.
///
/// ```no_run
/// # async fn demo(client: celerity::Client) -> Result<(), Box<dyn std::error::Error>> {
/// #[celerity::task]
/// async fn square(x: i64) -> i64 { x * x }
///
/// let squares = celerity::Group::new((1..=10).map(|x| square.s((x,)))).apply_async(&client).await?;
/// assert_eq!(squares.get(std::time::Duration::from_secs(30)).await?, (1..=10).map(|x| x * x).collect::<Vec<i64>>());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Group<T> {
    pub(super) members: Vec<Untyped>,
    deadline: Option<Duration>,
    output: PhantomData<fn() -> T>,
}

impl<T> Group<T> {
    /// A group of `members` (signatures, chains or chords of the same result type).
    pub fn new<P: Into<Part<T>>>(members: impl IntoIterator<Item = P>) -> Self {
        Self {
            members: members
                .into_iter()
                .map(|member| member.into().node)
                .collect(),
            deadline: None,
            output: PhantomData,
        }
    }

    /// Bounds every member: a member that would start more than `deadline` from now is not run
    /// and ends REVOKED with reason `expired`.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Sends every member, tagged with one group id.
    ///
    /// # Errors
    /// [`EnqueueError`] for an empty group, an invalid member, or a failed publish (members sent
    /// before the failure stay sent).
    ///
    /// # Cancel safety
    /// Not cancel-safe: a dropped call may have sent part of the canvas (some group members, or a
    /// chord's definition without all of its header); nothing is sent twice.
    pub async fn apply_async(self, client: &Client) -> Result<GroupResult<T>, EnqueueError> {
        let node = Untyped::Group(self.members).into_node(&client.settings().routes)?;
        send(client, &node, self.deadline).await?;
        let CanvasNode::Group { id, tasks } = node else {
            return Err(EnqueueError::InvalidCanvas(
                celerity_proto::CanvasError::Empty("group"),
            ));
        };
        let results = tasks
            .iter()
            .filter_map(CanvasNode::result_id)
            .map(|member| AsyncResult::new(member.clone(), client.results(), WaitVia::Replies))
            .collect();
        Ok(GroupResult { id, results })
    }
}

/// The results of a group, in member order.
#[derive(Debug, Clone)]
pub struct GroupResult<T> {
    id: TaskId,
    results: Vec<AsyncResult<T>>,
}

impl<T: DeserializeOwned> GroupResult<T> {
    /// The group id.
    pub fn id(&self) -> &TaskId {
        &self.id
    }

    /// Revokes the whole group: members not started yet never run and end REVOKED.
    ///
    /// # Errors
    /// [`ResultError::Store`] when the revocation cannot be written.
    ///
    /// # Cancel safety
    /// Not cancel-safe: a dropped call may have revoked some members and not others. Revoking
    /// again is harmless.
    pub async fn revoke(&self) -> Result<(), ResultError> {
        match self.results.first() {
            Some(first) => first.revoke_id(&self.id).await,
            None => Ok(()),
        }
    }

    /// Lets the group be waited on inside a task body; see [`AsyncResult::allow_wait_in_task`].
    pub fn allow_wait_in_task(mut self) -> Self {
        self.results = self
            .results
            .into_iter()
            .map(AsyncResult::allow_wait_in_task)
            .collect();
        self
    }

    /// Each member's result handle, in order.
    pub fn results(&self) -> &[AsyncResult<T>] {
        &self.results
    }

    /// Waits up to `timeout` for every member and returns their values in member order.
    ///
    /// # Errors
    /// The first failed member's error, in member order, or [`ResultError::Timeout`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it only waits and reads.
    pub async fn get(&self, timeout: Duration) -> Result<Vec<T>, ResultError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let waits = self.results.iter().map(|result| async move {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            result.get(left).await
        });
        futures_util::future::join_all(waits)
            .await
            .into_iter()
            .collect()
    }

    /// Yields `(member index, outcome)` as members finish, not in member order, until every member
    /// has finished or `timeout` has passed (members still running then yield a timeout).
    pub fn as_completed(
        &self,
        timeout: Duration,
    ) -> impl futures_util::Stream<Item = (usize, Result<T, ResultError>)> + '_ {
        let deadline = tokio::time::Instant::now() + timeout;
        self.results
            .iter()
            .enumerate()
            .map(|(index, result)| async move {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                (index, result.get(left).await)
            })
            .collect::<futures_util::stream::FuturesUnordered<_>>()
    }

    /// How many members have a final state.
    ///
    /// # Errors
    /// [`ResultError::Store`] when the bucket cannot be read.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn completed_count(&self) -> Result<usize, ResultError> {
        let mut count = 0;
        for state in self.states().await? {
            count += usize::from(state.is_ready());
        }
        Ok(count)
    }

    /// True once every member has a final state.
    ///
    /// # Errors
    /// [`ResultError::Store`] when the bucket cannot be read.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn ready(&self) -> Result<bool, ResultError> {
        Ok(self.completed_count().await? == self.results.len())
    }

    /// True if every member succeeded.
    ///
    /// # Errors
    /// [`ResultError::Store`] when the bucket cannot be read.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn successful(&self) -> Result<bool, ResultError> {
        Ok(self
            .states()
            .await?
            .iter()
            .all(|state| *state == TaskState::Success))
    }

    /// True if any member failed.
    ///
    /// # Errors
    /// [`ResultError::Store`] when the bucket cannot be read.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn failed(&self) -> Result<bool, ResultError> {
        Ok(self.states().await?.contains(&TaskState::Failure))
    }

    async fn states(&self) -> Result<Vec<TaskState>, ResultError> {
        let reads = self.results.iter().map(AsyncResult::state);
        futures_util::future::join_all(reads)
            .await
            .into_iter()
            .collect()
    }
}

impl<T> From<Group<T>> for Part<Vec<T>> {
    fn from(group: Group<T>) -> Self {
        Part::from_node(Untyped::Group(group.members))
    }
}

#[doc(hidden)]
pub fn chunks_group<K: Task, A: ArgsTuple>(
    task: &K,
    items: impl IntoIterator<Item = A>,
    chunk_size: usize,
) -> Group<Vec<K::Output>> {
    let items: Vec<A> = items.into_iter().collect();
    let mut chunks = Vec::new();
    let mut iter = items.into_iter().peekable();
    while iter.peek().is_some() {
        let chunk: Vec<A> = iter.by_ref().take(chunk_size.max(1)).collect();
        chunks.push(starmap_signature(task, chunk));
    }
    Group::new(chunks)
}
