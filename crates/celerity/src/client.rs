//! The producer: [`Client`] connects, routes and publishes tasks (typed or by name) and canvases,
//! and hands out [`AsyncResult`] handles on their results.
//!
//! What a call may set is in [`options`]; the reply listener that routes final records to waits is
//! in `crate::waiters`; what a result handle reads through is `crate::async_result::ResultBackend`.

mod options;

use std::sync::Arc;

use async_nats::jetstream;
use celerity_proto::{CanvasNode, Envelope, Layout, TaskBody, TaskId, TaskName};
use serde_json::Value;
use tokio::sync::Notify;

use crate::async_result::{AsyncResult, ResultBackend, WaitVia};
use crate::clock::now_ms;
use crate::control::Control;
use crate::dispatch::{Dispatcher, Membership, Origin, Previous};
use crate::error::{ClientError, EnqueueError};
use crate::events::Emitter;
use crate::nats::NatsConfig;
use crate::nats::provision;
use crate::publisher::{Pending, Publisher};
use crate::result_store::ResultStore;
use crate::settings::Settings;
use crate::task::Task;
use crate::waiters::{Replies, Tracking};

pub use options::{ApplyOptions, ETA_PAST_TOLERANCE};

/// A connected producer: sends tasks and waits on their results. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// #[celerity::task]
/// async fn add(x: i64, y: i64) -> i64 {
///     x + y
/// }
///
/// let app = celerity::App::builder().task(add).build()?;
/// let client = app.client(&celerity::NatsConfig::new("nats://127.0.0.1:4222")).await?;
/// let result = add.delay(&client, 2, 3).await?;
/// assert_eq!(result.get(std::time::Duration::from_secs(10)).await?, 5);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    nats: async_nats::Client,
    layout: Layout,
    settings: Settings,
    dispatcher: Dispatcher,
    /// Shared with every result handle this client makes, so their waits outlive it.
    results: Arc<ResultBackend>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("namespace", &self.inner.layout.namespace())
            .field("reply_subject", &self.inner.results.replies.subject())
            .finish_non_exhaustive()
    }
}

/// One task to publish: its name and body, the queue its type names, and whether it stores a
/// result.
struct Outgoing<'a> {
    name: TaskName,
    body: TaskBody,
    task_queue: Option<&'a str>,
    ignore_result: bool,
}

impl Client {
    /// Connects with `settings`.
    ///
    /// Must be called inside a tokio runtime: the reply listener is spawned on it.
    ///
    /// # Errors
    /// [`ClientError`] when NATS is unreachable or the results bucket cannot be opened.
    ///
    /// # Cancel safety
    /// Cancel-safe: a dropped call leaves at most a connection and buckets that are closed or
    /// already exist.
    pub async fn connect(nats: &NatsConfig, settings: Settings) -> Result<Client, ClientError> {
        let reconnected = Arc::new(Notify::new());
        let nats_client = connect_notifying(nats, reconnected.clone()).await?;
        let js = jetstream::new(nats_client.clone());
        let layout = settings.layout();
        let kv =
            provision::results_bucket(&js, &layout, &settings.storage, settings.result_expires)
                .await?;
        let store = ResultStore::new(kv, js.clone(), layout.clone(), None);
        let chords =
            provision::chords_bucket(&js, &layout, &settings.storage, settings.result_expires)
                .await?;
        let revoked =
            provision::revoked_bucket(&js, &layout, &settings.storage, settings.result_expires)
                .await?;
        let reply_subject = layout.reply_subject(&uuid::Uuid::now_v7().simple().to_string());
        let subscriber = nats_client
            .subscribe(reply_subject.clone())
            .await
            .map_err(|source| ClientError::Subscribe {
                subject: reply_subject.clone(),
                source,
            })?;
        let replies = Replies::start(reply_subject, subscriber, store.clone(), reconnected);
        let sent_events = match settings.send_sent_events {
            true => {
                provision::events_stream(&js, &layout, &settings.storage).await?;
                let name = crate::host::producer_name();
                let subject = layout.task_events_subject(&name);
                let runtime = tokio::runtime::Handle::current();
                Some(Emitter::start(js.clone(), subject, name, &runtime))
            }
            false => None,
        };
        let publisher = Publisher::new(
            nats_client.clone(),
            js,
            layout.clone(),
            store.clone(),
            settings.priority_steps.clone(),
            settings.storage.clone(),
        )
        .observed(settings.signals.clone(), sent_events)
        .traced(settings.telemetry.clone());
        let dispatcher = Dispatcher::new(publisher, chords, store.clone(), settings.routes.clone());
        let control = Control::new(nats_client.clone(), layout.clone());
        Ok(Client {
            inner: Arc::new(ClientInner {
                nats: nats_client,
                layout,
                settings,
                dispatcher,
                results: Arc::new(ResultBackend {
                    store,
                    revoked,
                    replies,
                    control,
                }),
            }),
        })
    }

    /// The dead letters of this client's namespace: list, read, requeue, delete, purge; see
    /// [`crate::dead_letters`].
    pub fn dead_letters(&self) -> crate::dead_letters::DeadLetters {
        crate::dead_letters::DeadLetters::new(self.inner.nats.clone(), self.inner.layout.clone())
    }

    /// The control plane: commands to workers (`ping`, `revoke`).
    pub fn control(&self) -> Control {
        self.inner.results.control.clone()
    }

    /// Tails the events of this client's namespace (task and worker events) from `since`; see
    /// [`crate::events`].
    ///
    /// # Errors
    /// As [`crate::events::follow`].
    ///
    /// # Cancel safety
    /// As [`crate::events::follow`].
    pub async fn events(
        &self,
        since: crate::events::Since,
    ) -> Result<crate::events::EventStream, crate::events::EventError> {
        crate::events::follow(&self.inner.nats, &self.inner.settings.namespace, since).await
    }

    /// The underlying NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        &self.inner.nats
    }

    /// The settings the client was built with.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Sends task `T` with typed arguments.
    ///
    /// The task is sent when JetStream acknowledges it; a duplicate task id within two minutes is
    /// acknowledged without being enqueued twice.
    ///
    /// # Errors
    /// [`EnqueueError`] for invalid options or arguments, an oversized message, or a publish that
    /// was not acknowledged.
    ///
    /// # Cancel safety
    /// Not cancel-safe: a dropped call may or may not have enqueued the task.
    pub async fn apply<T: Task>(
        &self,
        _task: &T,
        args: T::Args,
        options: ApplyOptions,
    ) -> Result<AsyncResult<T::Output>, EnqueueError> {
        let task_options = T::options();
        let name =
            TaskName::new(T::NAME).map_err(|error| EnqueueError::invalid("task name", error))?;
        let args = T::encode_args(args).map_err(|source| EnqueueError::Arguments {
            task: T::NAME.to_owned(),
            source,
        })?;
        let outgoing = Outgoing {
            name,
            body: TaskBody::positional(args),
            task_queue: task_options.queue_name(),
            ignore_result: options
                .ignores_result()
                .unwrap_or(task_options.is_ignore_result()),
        };
        Box::pin(self.publish(outgoing, options)).await
    }

    /// Sends a task by name, with JSON arguments: `args` is an array (or null), `kwargs` an object
    /// (or null). For producers that do not link the task's code.
    ///
    /// # Errors
    /// As [`Client::apply`], and [`EnqueueError::ArgumentShape`] when `args` or `kwargs` has the
    /// wrong JSON shape.
    ///
    /// # Cancel safety
    /// Not cancel-safe: a dropped call may or may not have enqueued the task.
    pub async fn send_task(
        &self,
        name: &str,
        args: Value,
        kwargs: Value,
        options: ApplyOptions,
    ) -> Result<AsyncResult<Value>, EnqueueError> {
        let name =
            TaskName::new(name).map_err(|error| EnqueueError::invalid("task name", error))?;
        let args = match args {
            Value::Array(args) => args,
            Value::Null => Vec::new(),
            other => return Err(shape_error("args", &other, "array")),
        };
        let kwargs = match kwargs {
            Value::Object(kwargs) => kwargs,
            Value::Null => serde_json::Map::new(),
            other => return Err(shape_error("kwargs", &other, "object")),
        };
        let outgoing = Outgoing {
            name,
            body: TaskBody::new(args, kwargs),
            task_queue: None,
            ignore_result: options.ignores_result().unwrap_or(false),
        };
        Box::pin(self.publish(outgoing, options)).await
    }

    /// Sends a canvas node, as its first task's producer.
    pub(crate) async fn send_canvas(
        &self,
        node: &CanvasNode,
        expires_ms: Option<u64>,
    ) -> Result<(), EnqueueError> {
        let origin = Origin {
            parent_id: None,
            root_id: node.root_id().cloned(),
            reply_to: Some(self.inner.results.replies.subject().to_owned()),
            content_type: self.inner.settings.content_type,
            expires_ms,
        };
        let sent = self.inner.dispatcher.send(
            node,
            &origin,
            Previous::Nothing,
            Vec::new(),
            Membership::default(),
        );
        let kind = match node {
            CanvasNode::Chain { .. } => Some("chain"),
            CanvasNode::Group { .. } => Some("group"),
            CanvasNode::Chord { .. } => Some("chord"),
            // A signature alone: its publish span is the root.
            _ => None,
        };
        let root_id = origin.root_id.as_ref().map_or("", |id| id.as_str());
        let telemetry = &self.inner.settings.telemetry;
        // The canvas's root span: every publish of the canvas is inside it.
        match kind.and_then(|kind| telemetry.start_canvas(kind, root_id)) {
            Some(context) => {
                use opentelemetry::context::FutureExt as _;
                let sent = sent.with_context(context.clone()).await;
                let error = sent
                    .as_ref()
                    .err()
                    .map(|error| crate::error_text::error_chain(error));
                crate::telemetry::end(&context, error.as_deref());
                sent
            }
            None => sent.await,
        }
    }

    /// A handle on the result of a task sent by any process.
    ///
    /// Waiting on it uses a KV watch of its key, since its notifications go to its producer.
    ///
    /// # Errors
    /// [`EnqueueError::InvalidOption`] when `id` is not a valid task id.
    pub fn async_result<T>(&self, id: &str) -> Result<AsyncResult<T>, EnqueueError> {
        let id = TaskId::new(id).map_err(|error| EnqueueError::invalid("task id", error))?;
        Ok(AsyncResult::new(id, self.results(), WaitVia::Watch))
    }

    /// Flushes buffered messages to the server.
    ///
    /// # Errors
    /// When the connection is closed.
    ///
    /// # Cancel safety
    /// Cancel-safe: a dropped flush loses nothing; the messages are flushed later.
    pub async fn flush(&self) -> Result<(), async_nats::client::FlushError> {
        self.inner.nats.flush().await
    }

    /// What the result handles of this client read, wait and revoke through.
    pub(crate) fn results(&self) -> Arc<ResultBackend> {
        self.inner.results.clone()
    }

    /// Checks `options`, routes and sends one task, and returns its handle. Callers box its
    /// future: with the publish and the PENDING create awaited together it holds two JetStream
    /// publishes' futures (about 4 KB), and inline, every caller's future would be that large and
    /// be copied at each move on its way into the caller's `FuturesUnordered` or task.
    async fn publish<T>(
        &self,
        outgoing: Outgoing<'_>,
        options: ApplyOptions,
    ) -> Result<AsyncResult<T>, EnqueueError> {
        let (mut envelope, queue) = self.envelope(&outgoing, options)?;
        let id = envelope.id.clone();
        let (pending, wait_via, tracking) = if outgoing.ignore_result {
            (Pending::Skip, WaitVia::Watch, None)
        } else {
            // INVARIANT: tracked before it is sent, so the notification finds its entry.
            (
                Pending::Write,
                WaitVia::Replies,
                Some(self.track(&mut envelope)),
            )
        };
        self.inner
            .dispatcher
            .publisher()
            .publish(&envelope, &outgoing.body, &queue, pending)
            .await?;
        Ok(AsyncResult::new(id, self.results(), wait_via).with_tracking(tracking))
    }

    /// The envelope of `outgoing` and the queue it goes to, from the checked `options` and the
    /// routes.
    fn envelope(
        &self,
        outgoing: &Outgoing<'_>,
        options: ApplyOptions,
    ) -> Result<(Envelope, celerity_proto::QueueName), EnqueueError> {
        let sent_at_ms = now_ms();
        let options = options.check(sent_at_ms)?;
        let task_queue = outgoing
            .task_queue
            .and_then(|queue| celerity_proto::QueueName::new(queue).ok());
        let (queue, priority) = self
            .inner
            .settings
            .routes
            .resolve(
                outgoing.name.as_str(),
                &outgoing.body.args,
                &outgoing.body.kwargs,
                options.queue,
                options.priority,
                task_queue,
            )
            .map_err(|error| EnqueueError::invalid_route(outgoing.name.as_str(), error))?;
        let mut envelope = Envelope::new(options.task_id, outgoing.name.clone());
        envelope.content_type = options
            .content_type
            .unwrap_or(self.inner.settings.content_type);
        envelope.priority = priority;
        envelope.sent_at_ms = Some(sent_at_ms);
        envelope.eta_ms = options.eta_ms;
        envelope.expires_ms = options.expires_ms;
        envelope.extra = options.headers;
        Ok((envelope, queue))
    }

    /// Tracks the envelope's task with the reply listener and asks for its notification.
    fn track(&self, envelope: &mut Envelope) -> Arc<Tracking> {
        let replies = &self.inner.results.replies;
        envelope.reply_to = Some(replies.subject().to_owned());
        replies.track(&envelope.id)
    }
}

/// Connects to NATS, notifying `reconnected` on every (re)connection and slow-consumer event, when
/// result notifications may have been lost.
async fn connect_notifying(
    nats: &NatsConfig,
    reconnected: Arc<Notify>,
) -> Result<async_nats::Client, ClientError> {
    let client = nats
        .connect_with(move |options| {
            options.event_callback(move |event| {
                let reconnected = reconnected.clone();
                async move {
                    if matches!(
                        event,
                        async_nats::Event::Connected | async_nats::Event::SlowConsumer(_)
                    ) {
                        reconnected.notify_one();
                    }
                }
            })
        })
        .await?;
    Ok(client)
}

fn shape_error(what: &'static str, value: &Value, expected: &'static str) -> EnqueueError {
    EnqueueError::ArgumentShape {
        what,
        value: value.to_string().chars().take(80).collect(),
        expected,
    }
}
