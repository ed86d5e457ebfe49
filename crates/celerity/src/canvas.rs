//! Canvas: signatures and chains of tasks, built in Rust and sent as data (`celerity_proto`'s
//! [`CanvasNode`]), so every step after the first is published by the worker that ran the step
//! before it.
//!
//! ```no_run
//! # async fn demo(client: celerity::Client) -> Result<(), Box<dyn std::error::Error>> {
//! #[celerity::task]
//! async fn extract(source: u32) -> Vec<i64> { vec![source as i64; 3] }
//! #[celerity::task]
//! async fn transform(rows: Vec<i64>) -> i64 { rows.iter().sum() }
//! #[celerity::task]
//! async fn load(total: i64, destination: String) -> String { format!("{total} -> {destination}") }
//!
//! let result = celerity::chain![extract.s((7,)), transform.s(()), load.s(("warehouse".to_owned(),))]
//!     .apply_async(&client)
//!     .await?;
//! let loaded: String = result.get(std::time::Duration::from_secs(30)).await?;
//! let transformed = result.parent().expect("the load step has a parent");
//! println!("{loaded}, from {:?}", transformed.get(std::time::Duration::from_secs(1)).await?);
//! # Ok(()) }
//! ```

mod chain;
mod chord;
mod group;
mod part;
mod signature;

use std::time::Duration;

use celerity_proto::CanvasNode;

use crate::client::Client;
use crate::clock::now_ms;
use crate::error::EnqueueError;

pub use chain::Chain;
pub use chord::Chord;
pub use group::{Group, GroupResult, chunks_group};
pub use part::Part;
pub(crate) use signature::TaskCall;
pub use signature::{ArgsTuple, Signature, map_signature, starmap_signature};

pub use celerity_proto::builtin::{MAP_TASK, STARMAP_TASK};

/// How deep a canvas may nest before it is refused (the protocol's
/// [`celerity_proto::builtin::MAX_CANVAS_DEPTH`]).
pub const MAX_DEPTH: usize = celerity_proto::builtin::MAX_CANVAS_DEPTH;

/// Validates and sends `node`.
async fn send(
    client: &Client,
    node: &CanvasNode,
    deadline: Option<Duration>,
) -> Result<(), EnqueueError> {
    node.validate(MAX_DEPTH)
        .map_err(EnqueueError::InvalidCanvas)?;
    let expires_ms = deadline.map(|deadline| now_ms().saturating_add(deadline.as_millis() as u64));
    client.send_canvas(node, expires_ms).await
}

/// Builds a [`Chain`]: `chain![extract.s((7,)), transform.s(()), load.s(("db".to_owned(),))]`.
#[macro_export]
macro_rules! chain {
    ($first:expr $(, $rest:expr)* $(,)?) => {
        $crate::canvas::Chain::start($first)$(.then($rest))*
    };
}
