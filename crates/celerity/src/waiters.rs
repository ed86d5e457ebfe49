//! The reply listener and the waits it routes final records to.
//!
//! A client subscribes once to its own reply subject; workers publish every final record of a task
//! sent with that subject there. [`Replies`] owns the subscription's task and a map of waiters, so
//! waiting on ten thousand results costs one subscription, not ten thousand watches.
//! Reading records is not its job: that is the results store's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use celerity_proto::{ResultRecord, TaskId};
use dashmap::DashMap;
use futures_util::StreamExt;
use tokio::sync::{Notify, oneshot};

use crate::error_text::error_chain;
use crate::nats::permissions::{Denied, Watch};
use crate::result_store::ResultStore;

/// The reply listener of one client: its subject, its task, and the waits it serves.
/// Dropping it stops the listener.
pub(crate) struct Replies {
    subject: String,
    waiters: Arc<WaiterMap>,
    /// Set when the server refused the subscription for the user's permissions: no
    /// notification ever comes, and waits must watch the bucket instead.
    deaf: Arc<AtomicBool>,
    listener: tokio::task::AbortHandle,
}

impl Replies {
    /// Starts routing the records that arrive on `subscriber` (subscribed to `subject`), and
    /// re-reads the waited records from `store` each time `reconnected` is notified.
    ///
    /// Must be called inside a tokio runtime: the listener is spawned on it.
    pub(crate) fn start(
        subject: String,
        subscriber: async_nats::Subscriber,
        store: ResultStore,
        reconnected: Arc<Notify>,
    ) -> Self {
        let waiters: Arc<WaiterMap> = Arc::default();
        let deaf: Arc<AtomicBool> = Arc::default();
        let listener = tokio::spawn(listen_unless_refused(
            Listener {
                subscriber,
                waiters: waiters.clone(),
                store,
                reconnected,
            },
            subject.clone(),
            deaf.clone(),
        ));
        Self {
            subject,
            waiters,
            deaf,
            listener: listener.abort_handle(),
        }
    }

    /// True once the server has refused the reply subscription: no notification comes, so a wait
    /// must watch the bucket (and a waiter registered before ends without one).
    pub(crate) fn is_deaf(&self) -> bool {
        self.deaf.load(Ordering::Acquire)
    }

    /// The subject workers publish this client's final records on.
    pub(crate) fn subject(&self) -> &str {
        &self.subject
    }

    /// Registers a waiter for `id`'s final record, delivered by the reply listener; dropping the
    /// waiter unregisters it, however the wait ends. A tracked id whose record has arrived gives
    /// the record instead.
    pub(crate) fn register_waiter(&self, id: &TaskId) -> Registered {
        let (sender, receiver) = oneshot::channel();
        let mut watched = self.waiters.entry(id.clone()).or_default();
        if let Some(record) = &watched.arrived {
            return Registered::Arrived(record.clone());
        }
        watched.senders.push(sender);
        drop(watched);
        Registered::Waiting(Waiter {
            waiters: self.waiters.clone(),
            id: id.clone(),
            receiver,
        })
    }

    /// Tracks `id` before it is sent (see [`Tracking`]).
    pub(crate) fn track(&self, id: &TaskId) -> Arc<Tracking> {
        self.waiters.entry(id.clone()).or_default().tracking += 1;
        Arc::new(Tracking {
            waiters: self.waiters.clone(),
            id: id.clone(),
        })
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        self.listener.abort();
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

type WaiterMap = DashMap<TaskId, Watched>;

/// One registered wait for a task's final record.
pub(crate) struct Waiter {
    waiters: Arc<WaiterMap>,
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
    waiters: Arc<WaiterMap>,
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

/// What the reply listener works with.
struct Listener {
    subscriber: async_nats::Subscriber,
    waiters: Arc<WaiterMap>,
    store: ResultStore,
    reconnected: Arc<Notify>,
}

/// Listens for results until the server refuses the reply subscription (the user may not
/// subscribe to `subject`): then it marks the replies `deaf` and ends every wait registered, so
/// waits watch the bucket instead of waiting out their timeouts for notifications that never come.
async fn listen_unless_refused(listener: Listener, subject: String, deaf: Arc<AtomicBool>) {
    // From the connection's start: the refusal may have come before this task runs. The subject
    // is this client's own, so no other refusal matches.
    let refusals = Watch::from_connection_start(listener.store.connection());
    let waiters = listener.waiters.clone();
    let listened = refusals.guard(listen_for_results(listener), |refused| {
        refused.denied == Denied::Subscribe && refused.subject == subject
    });
    if listened.await.is_err() {
        tracing::warn!(
            subject = %subject,
            "the NATS server refused the subscription to this client's reply subject, so no result notification reaches it: each wait watches its task's key instead (one consumer per wait); allow this user to subscribe to the namespace's reply subjects (<ns>.reply.>)"
        );
        deaf.store(true, Ordering::Release);
        for mut watched in waiters.iter_mut() {
            // Dropped senders end their waits, which then watch the bucket.
            watched.senders.clear();
        }
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
async fn listen_for_results(listener: Listener) {
    let Listener {
        mut subscriber,
        waiters,
        store,
        reconnected,
    } = listener;
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
                tracing::warn!(task_id = %id, error = %error_chain(&error), "undecodable result notification")
            }
        }
    }
}

/// How long a re-read after a reconnect keeps trying a bucket out of reach: a restarted server
/// answers JetStream requests only once it has recovered its streams.
const REREAD_WITHIN: Duration = Duration::from_secs(30);

/// After a reconnect or a slow-consumer drop, notifications may be lost: read the record of every
/// waited or tracked task not arrived yet, a few at a time, and deliver the final ones.
async fn reread_waited_records(waiters: Arc<WaiterMap>, store: ResultStore) {
    let ids: Vec<TaskId> = waiters
        .iter()
        .filter(|entry| entry.arrived.is_none())
        .map(|entry| entry.key().clone())
        .collect();
    futures_util::stream::iter(ids)
        .for_each_concurrent(32, |id| {
            let (waiters, store) = (waiters.clone(), store.clone());
            async move {
                if let Ok(Some(record)) = store.get_patiently(&id, REREAD_WITHIN).await
                    && record.state.is_ready()
                {
                    deliver(&waiters, record);
                }
            }
        })
        .await;
}

fn deliver(waiters: &WaiterMap, record: ResultRecord) {
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
