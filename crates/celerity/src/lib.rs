//! Celerity: a distributed task runtime on NATS JetStream, in the spirit of Celery.
//!
//! Define tasks with `#[celerity::task]`, send them from any process with a [`Client`], run them
//! in worker processes of your own binary, and read results and states from anywhere.
//! Producers in other languages follow `docs/protocol.md`.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! #[celerity::task]
//! async fn add(x: i64, y: i64) -> i64 {
//!     x + y
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let app = celerity::App::builder().task(add).build()?;
//! let nats = celerity::NatsConfig::new("nats://127.0.0.1:4222");
//! let worker = celerity::worker::spawn(app.clone(), nats.clone(), celerity::WorkerConfig::new())?;
//! let client = app.client(&nats).await?;
//! let result = add.delay(&client, 2, 3).await?;
//! assert_eq!(result.get(Duration::from_secs(10)).await?, 5);
//! worker.shutdown(celerity::Shutdown::Warm);
//! # Ok(()) }
//! ```
//!
//! A worker binary hands its app to [`cli::main`], which parses Celery-like flags
//! (`myapp worker -Q high,default -c 8 --prefetch-multiplier 1 --hostname w1`).
//!
//! [`task`] lists every option of `#[celerity::task]` and every method it generates (`delay`,
//! `apply_async`, `s`, `si`, `map`, `starmap`, `chunks`).
//!
//! # Coming from Celery
//!
//! `docs/coming-from-celery.md` puts each Celery call beside its Celerity form. What differs most
//! often:
//!
//! - **Arguments are tuples** in `apply_async` and in signatures: `add.s((5,))`, not `add.s(5)`;
//!   `()` for none. `delay` takes them one by one: `add.delay(&client, 2, 3)`.
//! - **Reading a result is async and can fail**: [`AsyncResult`]'s `state`, `info`, `ready`,
//!   `successful`, `failed` and [`GroupResult`]'s `ready`, `successful`, `failed`,
//!   `completed_count` read the results bucket, so each is `.await`ed and returns a `Result`
//!   (`result.ready().await?`, not `result.ready()`); `get` and `wait` take a timeout.
//! - **Streams** ([`GroupResult::as_completed`], [`AsyncResult::states`]) are read with
//!   `StreamExt::next`, re-exported here as [`StreamExt`] so no other dependency is needed.
//! - **States:** a task nobody sent (or whose record expired) is [`TaskState::Unknown`], not
//!   PENDING; [`AsyncResult::info`] is the result on SUCCESS, the error on FAILURE and the
//!   metadata otherwise, as Celery's `.info`.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use celerity::StreamExt;
//!
//! #[celerity::task]
//! async fn square(x: i64) -> i64 {
//!     x * x
//! }
//!
//! # async fn demo(client: celerity::Client) -> Result<(), Box<dyn std::error::Error>> {
//! let one = square.delay(&client, 7).await?;
//! if one.ready().await? {
//!     println!("done: {:?}", one.info().await?);
//! }
//! let group = celerity::Group::new((1..=10).map(|x| square.s((x,)))).apply_async(&client).await?;
//! let mut finished = std::pin::pin!(group.as_completed(Duration::from_secs(30)));
//! while let Some((index, outcome)) = finished.next().await {
//!     println!("member {index}: {}", outcome?);
//! }
//! println!("all succeeded: {}", group.successful().await?);
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! - `cli` (default): [`cli`], the worker command line (`cli::main`, `cli::run_worker`, the flag
//!   structs), with clap and tracing-subscriber. Without it (`default-features = false`) the
//!   library pulls in neither.

mod app;
mod async_result;
pub mod canvas;
#[cfg(feature = "cli")]
pub mod cli;
mod client;
pub mod clock;
pub mod control;
pub mod dead_letters;
mod dispatch;
mod error;
mod error_text;
pub mod events;
mod fault;
mod host;
mod nats;
mod publisher;
mod result_store;
pub mod routing;
mod settings;
pub mod signals;
mod storage;
mod task;
pub mod telemetry;
mod waiters;
pub mod worker;

#[doc(hidden)]
pub mod __private;
pub mod beat;

pub use app::{App, AppBuilder, ConfigError};
pub use async_result::{AsyncResult, ResultError, RevokeError};
pub use canvas::{Chain, Chord, Group, GroupResult, Signature};
pub use celerity_macros::task;
pub use celerity_proto::{
    ContentType, ErrorRecord, InvalidRate, Rate, ResultRecord, TaskId, TaskState,
};
pub use client::{ApplyOptions, Client, ETA_PAST_TOLERANCE};
pub use control::{
    Control, ControlError, InvalidWeights, PriorityWeightsChange, RateLimitChange, RateLimitScope,
    RevokeMode,
};
pub use error::{ClientError, EnqueueError};
pub use futures_util::StreamExt;
pub use nats::provision::{ProvisionError, Refusal};
pub use nats::server::{NEW_TASK_SIGNAL_ENV, NewTaskSignal};
pub use nats::{ConnectError, NatsConfig};
pub use result_store::StoreError;
pub use settings::Settings;
pub use storage::{MAX_REPLICAS, MIN_MAX_BYTES, Storage, StorageError, StreamUse, shared_streams};
pub use task::{
    ArgumentsError, DeliveryInfo, ErrorType, HookFuture, Retry, Task, TaskContext, TaskFuture,
    TaskHooks, TaskOptions,
};
pub use worker::{Shutdown, WorkerConfig, WorkerError, WorkerHandle};

pub(crate) use error_text::error_chain;
