//! The producer: publishing tasks (typed or by name) and routing result notifications to waiters.
//!
//! A [`Client`] holds one NATS connection, one subscription on its own reply subject and a map of
//! waiters, so waiting on ten thousand results costs one subscription, not ten thousand watches.

use std::sync::Arc;

use async_nats::jetstream;
use celerity_proto::{
    CanvasNode, ContentType, Envelope, Layout, Priority, QueueName, ResultRecord, TaskBody, TaskId,
    TaskName,
};
use dashmap::DashMap;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::{Notify, oneshot};

use crate::async_result::AsyncResult;
use crate::clock::now_ms;
use crate::dispatch::{Dispatcher, Membership, Origin, Previous};
use crate::error::{ClientError, EnqueueError};
use crate::nats::NatsConfig;
use crate::nats::headers::check_user_header;
use crate::nats::provision;
use crate::publisher::Publisher;
use crate::result_store::ResultStore;
use crate::settings::Settings;
use crate::task::Task;

/// Options of one call, as in Celery's `apply_async`.
///
/// ```
/// use celerity::ApplyOptions;
/// let options = ApplyOptions::new().queue("high").priority(9).header("X-Tenant", "acme");
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ApplyOptions {
    task_id: Option<String>,
    queue: Option<String>,
    priority: Option<u8>,
    headers: Vec<(String, String)>,
    content_type: Option<ContentType>,
    ignore_result: Option<bool>,
    eta: Option<EtaSpec>,
    expires: Option<EtaSpec>,
}

/// When a task may start.
#[derive(Debug, Clone, Copy)]
enum EtaSpec {
    /// This long after it is sent.
    Countdown(std::time::Duration),
    /// At this time.
    At(std::time::SystemTime),
}

/// How far in the past an `eta` may be before it is refused as a mistake (clock skew between
/// hosts is expected to be smaller).
pub const ETA_PAST_TOLERANCE: std::time::Duration = std::time::Duration::from_secs(60);

impl ApplyOptions {
    /// Default options: a fresh UUIDv7 id, the task's queue, priority 0, no extra headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `id` as the task id (checked when the task is sent).
    pub fn task_id(mut self, id: impl Into<String>) -> Self {
        self.task_id = Some(id.into());
        self
    }

    /// Sends to `queue` instead of the task's own or the default queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Sets the priority, 0 (lowest, the default) to 9 (highest).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Adds a user header, passed to the task in `TaskContext::headers`.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Encodes this task's body and result as `content_type`.
    pub fn content_type(mut self, content_type: ContentType) -> Self {
        self.content_type = Some(content_type);
        self
    }

    /// Starts the task no sooner than `countdown` after it is sent (it waits in the delayed
    /// stream, not in a worker).
    pub fn countdown(mut self, countdown: std::time::Duration) -> Self {
        self.eta = Some(EtaSpec::Countdown(countdown));
        self
    }

    /// Starts the task no sooner than `eta`. An `eta` more than [`ETA_PAST_TOLERANCE`] in the
    /// past is refused when sending; a smaller one means now.
    pub fn eta(mut self, eta: std::time::SystemTime) -> Self {
        self.eta = Some(EtaSpec::At(eta));
        self
    }

    /// A task not started within `expires` of being sent is not run: it ends REVOKED with reason
    /// `expired`.
    pub fn expires(mut self, expires: std::time::Duration) -> Self {
        self.expires = Some(EtaSpec::Countdown(expires));
        self
    }

    /// A task not started by `expires` is not run: it ends REVOKED with reason `expired`.
    pub fn expires_at(mut self, expires: std::time::SystemTime) -> Self {
        self.expires = Some(EtaSpec::At(expires));
        self
    }

    /// Stores no result for this call (for `send_task`, where the task's own option is unknown).
    pub fn ignore_result(mut self, ignore: bool) -> Self {
        self.ignore_result = Some(ignore);
        self
    }
}

/// What the reply listener knows of one task id.
#[derive(Default)]
struct Watched {
    /// Waits in progress.
    senders: Vec<oneshot::Sender<ResultRecord>>,
    /// Handles that registered the id before it was sent ([`Tracking`]); while there are any, a
    /// notification is kept here, so their waits need not read the bucket.
    tracking: usize,
    /// Boxed: entries move when the map grows, and most have no record.
    arrived: Option<Box<ResultRecord>>,
}

impl Watched {
    fn is_unused(&self) -> bool {
        self.tracking == 0 && self.senders.is_empty()
    }
}

type Waiters = DashMap<TaskId, Watched>;

/// One registered wait for a task's final record.
pub(crate) struct Waiter {
    waiters: Arc<Waiters>,
    id: TaskId,
    receiver: oneshot::Receiver<ResultRecord>,
}

impl Waiter {
    /// The notification, once the reply listener routes it.
    pub(crate) fn notification(&mut self) -> &mut oneshot::Receiver<ResultRecord> {
        &mut self.receiver
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // INVARIANT: a dropped wait leaves nothing behind in the registry.
        self.receiver.close();
        self.waiters.remove_if_mut(&self.id, |_, watched| {
            watched.senders.retain(|sender| !sender.is_closed());
            watched.is_unused()
        });
    }
}

/// A wait registered for a record, or the record when it has already arrived.
pub(crate) enum Registered {
    Waiting(Waiter),
    Arrived(Box<ResultRecord>),
}

/// The id of a task this client sent, registered with the reply listener before the send, so its
/// notification cannot be missed and waits on it read no bucket. Shared by a handle's clones; the
/// last one dropped unregisters the id.
pub(crate) struct Tracking {
    waiters: Arc<Waiters>,
    id: TaskId,
}

impl Tracking {
    /// Forgets a kept notification (the record was deleted).
    pub(crate) fn clear(&self) {
        if let Some(mut watched) = self.waiters.get_mut(&self.id) {
            watched.arrived = None;
        }
    }
}

impl Drop for Tracking {
    fn drop(&mut self) {
        self.waiters.remove_if_mut(&self.id, |_, watched| {
            watched.tracking -= 1;
            watched.is_unused()
        });
    }
}

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
    store: ResultStore,
    revoked: async_nats::jetstream::kv::Store,
    dispatcher: Dispatcher,
    reply_subject: String,
    waiters: Arc<Waiters>,
    listener: tokio::task::AbortHandle,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("namespace", &self.inner.layout.namespace())
            .field("reply_subject", &self.inner.reply_subject)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects with `settings`.
    ///
    /// Must be called inside a tokio runtime: the reply listener is spawned on it.
    ///
    /// # Errors
    /// [`ClientError`] when NATS is unreachable or the results bucket cannot be opened.
    pub async fn connect(nats: &NatsConfig, settings: Settings) -> Result<Client, ClientError> {
        let reconnected = Arc::new(Notify::new());
        let on_event = reconnected.clone();
        let nats_client = nats
            .connect_with(move |options| {
                options.event_callback(move |event| {
                    let on_event = on_event.clone();
                    async move {
                        if matches!(
                            event,
                            async_nats::Event::Connected | async_nats::Event::SlowConsumer(_)
                        ) {
                            on_event.notify_one();
                        }
                    }
                })
            })
            .await?;
        let js = jetstream::new(nats_client.clone());
        let layout = settings.layout();
        let kv = provision::results_bucket(&js, &layout, settings.result_expires).await?;
        let store = ResultStore::new(kv, js.clone(), None);
        let chords = provision::chords_bucket(&js, &layout, settings.result_expires).await?;
        let reply_subject = layout.reply_subject(&uuid::Uuid::now_v7().simple().to_string());
        let subscriber = nats_client
            .subscribe(reply_subject.clone())
            .await
            .map_err(|source| ClientError::Subscribe {
                subject: reply_subject.clone(),
                source,
            })?;
        let waiters: Arc<Waiters> = Arc::default();
        let listener = tokio::spawn(listen_for_results(
            subscriber,
            waiters.clone(),
            store.clone(),
            reconnected,
        ));
        let publisher = Publisher::new(
            nats_client.clone(),
            js.clone(),
            layout.clone(),
            store.clone(),
            settings.priority_steps.clone(),
        );
        let revoked = provision::revoked_bucket(&js, &layout, settings.result_expires).await?;
        let dispatcher = Dispatcher::new(publisher, chords, store.clone(), settings.routes.clone());
        Ok(Client {
            inner: Arc::new(ClientInner {
                nats: nats_client,
                layout,
                settings,
                dispatcher,
                revoked,
                store,
                reply_subject,
                waiters,
                listener: listener.abort_handle(),
            }),
        })
    }

    /// The control plane: commands to workers (`ping`, `revoke`).
    pub fn control(&self) -> crate::control::Control {
        crate::control::Control::new(self.inner.nats.clone(), self.inner.settings.layout())
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
        let ignore_result = options
            .ignore_result
            .unwrap_or(task_options.is_ignore_result());
        let (id, tracking) = Box::pin(self.publish(
            name,
            TaskBody::positional(args),
            task_options.queue_name(),
            options,
            ignore_result,
        ))
        .await?;
        Ok(AsyncResult::new(id, self.clone(), !ignore_result).with_tracking(tracking))
    }

    /// Sends a task by name, with JSON arguments: `args` is an array (or null), `kwargs` an object
    /// (or null). For producers that do not link the task's code.
    ///
    /// # Errors
    /// As [`Client::apply`], and [`EnqueueError::InvalidOption`] when `args` or `kwargs` has the
    /// wrong JSON shape.
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
            other => return Err(shape_error("args", &other, "use a JSON array")),
        };
        let kwargs = match kwargs {
            Value::Object(kwargs) => kwargs,
            Value::Null => serde_json::Map::new(),
            other => return Err(shape_error("kwargs", &other, "use a JSON object")),
        };
        let ignore_result = options.ignore_result.unwrap_or(false);
        let (id, tracking) = Box::pin(self.publish(
            name,
            TaskBody::new(args, kwargs),
            None,
            options,
            ignore_result,
        ))
        .await?;
        Ok(AsyncResult::new(id, self.clone(), !ignore_result).with_tracking(tracking))
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
            reply_to: Some(self.inner.reply_subject.clone()),
            content_type: self.inner.settings.content_type,
            expires_ms,
        };
        self.inner
            .dispatcher
            .send(
                node,
                &origin,
                Previous::Nothing,
                Vec::new(),
                Membership::default(),
            )
            .await
    }

    /// Revokes `id` (a task, or a canvas's root): workers do not run a task whose id or root is
    /// revoked (it ends REVOKED with reason `revoked`), and do not send what follows a task of a
    /// revoked canvas. Lasts as long as results do.
    ///
    /// # Errors
    /// [`ResultError::Store`] when the revocation cannot be written.
    pub(crate) async fn revoke(&self, id: &TaskId) -> Result<(), crate::async_result::ResultError> {
        let record = serde_json::json!({"reason": "revoked", "at_ms": now_ms()});
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        self.inner
            .revoked
            .put(id.as_str(), bytes.into())
            .await
            .map(drop)
            .map_err(|error| {
                crate::async_result::ResultError::Store(crate::result_store::StoreError::Bucket {
                    operation: "revoke",
                    task_id: id.clone(),
                    source: error.into(),
                })
            })
    }

    /// A handle on the result of a task sent by any process.
    ///
    /// Waiting on it uses a KV watch of its key, since its notifications go to its producer.
    ///
    /// # Errors
    /// [`EnqueueError::InvalidOption`] when `id` is not a valid task id.
    pub fn async_result<T>(&self, id: &str) -> Result<AsyncResult<T>, EnqueueError> {
        let id = TaskId::new(id).map_err(|error| EnqueueError::invalid("task id", error))?;
        Ok(AsyncResult::new(id, self.clone(), false))
    }

    /// Flushes buffered messages to the server.
    ///
    /// # Errors
    /// When the connection is closed.
    pub async fn flush(&self) -> Result<(), async_nats::client::FlushError> {
        self.inner.nats.flush().await
    }

    pub(crate) fn store(&self) -> &ResultStore {
        &self.inner.store
    }

    /// Registers a waiter for `id`'s final record, delivered by the reply listener; dropping the
    /// waiter unregisters it, however the wait ends. A tracked id whose record has arrived gives
    /// the record instead.
    pub(crate) fn register_waiter(&self, id: &TaskId) -> Registered {
        let (sender, receiver) = oneshot::channel();
        let mut watched = self.inner.waiters.entry(id.clone()).or_default();
        if let Some(record) = &watched.arrived {
            return Registered::Arrived(record.clone());
        }
        watched.senders.push(sender);
        drop(watched);
        Registered::Waiting(Waiter {
            waiters: self.inner.waiters.clone(),
            id: id.clone(),
            receiver,
        })
    }

    /// Tracks `id` before it is sent (see [`Tracking`]).
    pub(crate) fn track(&self, id: &TaskId) -> Arc<Tracking> {
        self.inner.waiters.entry(id.clone()).or_default().tracking += 1;
        Arc::new(Tracking {
            waiters: self.inner.waiters.clone(),
            id: id.clone(),
        })
    }

    /// Sends one task. Callers box its future: with the publish and the PENDING create awaited
    /// together it holds two JetStream publishes' futures (about 4 KB), and inline, every
    /// caller's future would be that large and be copied at each move on its way into the
    /// caller's `FuturesUnordered` or task.
    async fn publish(
        &self,
        name: TaskName,
        body: TaskBody,
        task_queue: Option<&str>,
        options: ApplyOptions,
        ignore_result: bool,
    ) -> Result<(TaskId, Option<Arc<Tracking>>), EnqueueError> {
        let explicit_queue = options
            .queue
            .as_deref()
            .map(QueueName::new)
            .transpose()
            .map_err(|error| EnqueueError::invalid("queue", error))?;
        let explicit_priority = options
            .priority
            .map(Priority::new)
            .transpose()
            .map_err(|error| EnqueueError::invalid("priority", error))?;
        let task_queue = task_queue.and_then(|queue| QueueName::new(queue).ok());
        let (queue, priority) = self.inner.settings.routes.resolve(
            name.as_str(),
            &body.args,
            &body.kwargs,
            explicit_queue,
            explicit_priority,
            task_queue,
        );
        let id = match options.task_id {
            Some(id) => TaskId::new(id).map_err(|error| EnqueueError::invalid("task id", error))?,
            None => TaskId::new(uuid::Uuid::now_v7().to_string())
                .map_err(|error| EnqueueError::invalid("task id", error))?,
        };
        for (name, value) in &options.headers {
            check_user_header(name, value).map_err(|reason| EnqueueError::InvalidOption {
                option: "header",
                value: name.clone(),
                reason: reason.to_owned(),
            })?;
        }
        let mut envelope = Envelope::new(id.clone(), name);
        envelope.content_type = options
            .content_type
            .unwrap_or(self.inner.settings.content_type);
        envelope.priority = priority;
        envelope.sent_at_ms = Some(now_ms());
        envelope.eta_ms = match options.eta {
            None => None,
            Some(EtaSpec::Countdown(countdown)) => {
                Some(now_ms().saturating_add(countdown.as_millis() as u64))
            }
            Some(EtaSpec::At(eta)) => {
                let eta_ms = crate::clock::unix_ms(eta);
                if eta_ms + (ETA_PAST_TOLERANCE.as_millis() as u64) < now_ms() {
                    return Err(EnqueueError::InvalidOption {
                        option: "eta",
                        value: format!("{eta_ms} ms since the epoch"),
                        reason: format!(
                            "it is {} ms in the past, over the tolerance of {ETA_PAST_TOLERANCE:?}",
                            now_ms() - eta_ms
                        ),
                    });
                }
                Some(eta_ms)
            }
        };
        envelope.expires_ms = options.expires.map(|expires| match expires {
            EtaSpec::Countdown(after) => now_ms().saturating_add(after.as_millis() as u64),
            EtaSpec::At(at) => crate::clock::unix_ms(at),
        });
        envelope.extra = options.headers;
        // INVARIANT: tracked before it is sent, so the notification finds its entry.
        let tracking = (!ignore_result).then(|| {
            envelope.reply_to = Some(self.inner.reply_subject.clone());
            self.track(&id)
        });
        self.inner
            .dispatcher
            .publisher()
            .publish(&envelope, &body, &queue, !ignore_result)
            .await?;
        Ok((id, tracking))
    }
}

fn shape_error(option: &'static str, value: &Value, reason: &str) -> EnqueueError {
    let mut text = value.to_string();
    text.truncate(80);
    EnqueueError::InvalidOption {
        option,
        value: text,
        reason: reason.to_owned(),
    }
}

/// Routes final records published on the client's reply subject to their waiters, and keeps them
/// for tracked ids.
///
/// After a reconnect, notifications sent while the client was away are lost, and a slow consumer
/// drops some: then every waited or tracked record not arrived yet is read once from the bucket,
/// beside the routing. Events during a re-read make one more re-read after it, not one each.
/// (Any subscription's slow-consumer event counts: async-nats does not say which subscription a
/// `Subscriber` is.)
async fn listen_for_results(
    mut subscriber: async_nats::Subscriber,
    waiters: Arc<Waiters>,
    store: ResultStore,
    reconnected: Arc<Notify>,
) {
    let _rereads = tokio_util::task::AbortOnDropHandle::new(tokio::spawn({
        let waiters = waiters.clone();
        async move {
            loop {
                reconnected.notified().await;
                reread_waited_records(waiters.clone(), store.clone()).await;
            }
        }
    }));
    while let Some(message) = subscriber.next().await {
        let Some(id) = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(celerity_proto::header::ID))
            .and_then(|id| TaskId::new(id.as_str()).ok())
        else {
            tracing::warn!(subject = %message.subject, "result notification without a valid Celerity-Id header");
            continue;
        };
        match ResultStore::decode(&id, &message.payload) {
            Ok(record) => deliver(&waiters, record),
            Err(error) => {
                tracing::warn!(task_id = %id, error = %crate::error::error_chain(&error), "undecodable result notification")
            }
        }
    }
}

/// After a reconnect or a slow-consumer drop, notifications may be lost: read the record of every
/// waited or tracked task not arrived yet once, a few at a time, and deliver the final ones.
async fn reread_waited_records(waiters: Arc<Waiters>, store: ResultStore) {
    let ids: Vec<TaskId> = waiters
        .iter()
        .filter(|entry| entry.arrived.is_none())
        .map(|entry| entry.key().clone())
        .collect();
    futures_util::stream::iter(ids)
        .for_each_concurrent(32, |id| {
            let (waiters, store) = (waiters.clone(), store.clone());
            async move {
                if let Ok(Some(record)) = store.get(&id).await
                    && record.state.is_ready()
                {
                    deliver(&waiters, record);
                }
            }
        })
        .await;
}

fn deliver(waiters: &Waiters, record: ResultRecord) {
    let Some(mut watched) = waiters.get_mut(&record.id) else {
        return;
    };
    for sender in watched.senders.drain(..) {
        let _ = sender.send(record.clone());
    }
    if watched.tracking > 0 {
        watched.arrived = Some(Box::new(record));
        return;
    }
    let id = watched.key().clone();
    drop(watched);
    waiters.remove_if(&id, |_, watched| watched.is_unused());
}
