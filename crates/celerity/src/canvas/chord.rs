//! [`Chord`]: a group whose list of results is the first argument of a body.

use std::marker::PhantomData;
use std::time::Duration;

use celerity_proto::ChordPolicy;

use crate::async_result::{AsyncResult, WaitVia};
use crate::client::Client;
use crate::error::EnqueueError;

use super::part::Untyped;
use super::{Part, send};

/// A group (the header) whose list of results, in member order, is the first argument of the body
/// once every member has succeeded. The body runs exactly once; if a member fails, it does not run
/// and the chord's result is that member's failure.
///
/// ```no_run
/// # async fn demo(client: celerity::Client) -> Result<(), Box<dyn std::error::Error>> {
/// #[celerity::task]
/// async fn add(x: i64, y: i64) -> i64 { x + y }
/// #[celerity::task]
/// async fn sum_all(numbers: Vec<i64>) -> i64 { numbers.iter().sum() }
///
/// let sum = celerity::Chord::new((0..1000).map(|i| add.s((i, i))), sum_all.s(()))
///     .apply_async(&client)
///     .await?;
/// assert_eq!(sum.get(std::time::Duration::from_secs(60)).await?, 999_000);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Chord<U> {
    pub(super) header: Vec<Untyped>,
    pub(super) body: Untyped,
    pub(super) policy: ChordPolicy,
    deadline: Option<Duration>,
    output: PhantomData<fn() -> U>,
}

impl<U> Chord<U> {
    /// A chord of `header` members (signatures, chains or chords) whose results go to `body` (a
    /// signature or a chain).
    pub fn new<T, P: Into<Part<T>>>(
        header: impl IntoIterator<Item = P>,
        body: impl Into<Part<U>>,
    ) -> Self {
        Self {
            header: header
                .into_iter()
                .map(|member| member.into().node)
                .collect(),
            body: body.into().node,
            policy: ChordPolicy::FailFast,
            deadline: None,
            output: PhantomData,
        }
    }

    /// Bounds every member and the body: a task that would start more than `deadline` from now is
    /// not run and ends REVOKED with reason `expired` (a chord whose header member expired fails).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The body runs once every member has ended, with one `{"ok": result}` or
    /// `{"error": error record}` per member in member order, instead of failing on the first
    /// failure.
    pub fn collect(mut self) -> Self {
        self.policy = ChordPolicy::Collect;
        self
    }

    /// The body runs as soon as `successes` members have succeeded, with their results in member
    /// order; the chord fails as soon as that can no longer happen.
    pub fn at_least(mut self, successes: u32) -> Self {
        self.policy = ChordPolicy::AtLeast { successes };
        self
    }

    /// Stores the chord's definition, then sends every header member. The result is the body's.
    ///
    /// # Errors
    /// [`EnqueueError`] for an empty header, an invalid member, or a failed publish (members sent
    /// before the failure stay sent, and the body never runs).
    ///
    /// # Cancel safety
    /// Not cancel-safe: a dropped call may have sent part of the canvas (some group members, or a
    /// chord's definition without all of its header); nothing is sent twice.
    pub async fn apply_async(self, client: &Client) -> Result<AsyncResult<U>, EnqueueError> {
        let node = Untyped::Chord(self.header, Box::new(self.body), self.policy)
            .into_node(&client.settings().routes)?;
        send(client, &node, self.deadline).await?;
        match node.result_id() {
            Some(id) => Ok(
                AsyncResult::new(id.clone(), client.results(), WaitVia::Replies)
                    .with_root(node.root_id().cloned()),
            ),
            None => Err(EnqueueError::InvalidCanvas(
                celerity_proto::CanvasError::Empty("chord body"),
            )),
        }
    }
}

impl<T> From<Chord<T>> for Part<T> {
    fn from(chord: Chord<T>) -> Self {
        Part::from_node(Untyped::Chord(
            chord.header,
            Box::new(chord.body),
            chord.policy,
        ))
    }
}
