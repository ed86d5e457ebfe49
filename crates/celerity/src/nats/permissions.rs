//! Permission violations: what the server refused on a connection, so that a request it will never
//! answer fails at once with the refused subject instead of waiting out its timeout.
//!
//! nats-server answers a publish or a subscription that breaks the user's permissions with
//! `-ERR 'Permissions Violation for Publish to "<subject>"'` (or `for Subscription to`) and keeps
//! the connection open. async-nats reports it only as an `Event::ServerError`, and the request it
//! belonged to waits for its timeout. Every connection a [`crate::NatsConfig`] makes records the
//! violations its event callback sees in its own [`Violations`] (`connect.rs`); the request paths
//! that matter take a [`Watch`] before they send and race their answer against it
//! ([`Watch::guard`]).
//!
//! It decides nothing about what is allowed (the server does), and it knows only connections made
//! through [`crate::NatsConfig`]: on an `async_nats::Client` connected elsewhere a refused request
//! waits out its timeout, as before.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, Weak};
use std::time::Duration;

use dashmap::DashMap;
use futures_util::StreamExt;
use tokio::sync::Notify;

/// What the server refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// A publish (including a request) to the subject.
    Publish,
    /// A subscription to the subject.
    Subscribe,
}

/// One refusal the server reported on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    /// Its place among the connection's refusals, from 1.
    number: u64,
    /// What was refused.
    pub(crate) denied: Denied,
    /// The subject refused (for a refused reply subject, that reply subject).
    pub(crate) subject: String,
}

impl Violation {
    /// True for a refused publish to exactly `subject`.
    pub(crate) fn is_publish_to(&self, subject: &str) -> bool {
        self.denied == Denied::Publish && self.subject == subject
    }
}

/// How many refusals a connection keeps; a watch that falls further behind than this may miss its
/// own and then waits for its request's timeout, as without a record.
const KEPT: usize = 256;

/// How many wake-up lists a record has (see [`Violations::changed`]).
const WAKE_SHARDS: usize = 8;

/// The wake-up list a watch on this thread waits on next: the threads' turns differ, so
/// concurrent watches spread over the lists.
fn wake_shard() -> usize {
    thread_local! {
        static NEXT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }
    NEXT.with(|next| {
        let shard = next.get();
        next.set(shard.wrapping_add(1));
        shard % WAKE_SHARDS
    })
}

/// The refusals of one connection. Its event callback holds it, so it lives as long as the
/// connection; the registry finds it from any clone of the connection's client.
#[derive(Debug, Default)]
pub(crate) struct Violations {
    /// How many refusals were recorded; a watch looks only at those after its mark.
    recorded: AtomicU64,
    /// The latest refusals, oldest first. Never locked across an await.
    recent: Mutex<VecDeque<Violation>>,
    /// Woken at each refusal, all of them. A watch waits on one, picked per thread, so the many
    /// publishes in flight at once do not all queue on one lock to register and unregister.
    changed: [Notify; WAKE_SHARDS],
    /// The connection's key in the registry, once registered.
    key: OnceLock<usize>,
}

/// Every live connection's refusals, by [`connection_key`]. async-nats gives a client no room for
/// data of ours, and the publisher, the control plane and the results store hold only the client,
/// so they find the record here.
static CONNECTIONS: LazyLock<DashMap<usize, Weak<Violations>>> = LazyLock::new(DashMap::new);

/// A key shared by every clone of a connection's client and by no other live connection: the
/// address of its statistics, which the connection owns for as long as any clone lives.
fn connection_key(client: &async_nats::Client) -> usize {
    Arc::as_ptr(&client.statistics()) as usize
}

impl Violations {
    /// An empty record, for a connection about to be made.
    pub(crate) fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Makes this the record of `client`'s connection, found by [`Watch::start`].
    pub(crate) fn register(self: &Arc<Self>, client: &async_nats::Client) {
        let key = connection_key(client);
        let _ = self.key.set(key);
        CONNECTIONS.insert(key, Arc::downgrade(self));
    }

    /// Records the refusal `event` reports, if it reports one.
    pub(crate) fn observe(&self, event: &async_nats::Event) {
        if let async_nats::Event::ServerError(async_nats::ServerError::Other(text)) = event
            && let Some((denied, subject)) = parse(text)
        {
            tracing::warn!(
                subject = %subject,
                "the NATS server refused to let this user {} {subject}: its permissions do not allow it (docs/security.md lists what each Celerity role needs)",
                match denied {
                    Denied::Publish => "publish to",
                    Denied::Subscribe => "subscribe to",
                }
            );
            self.record(denied, subject);
        }
    }

    fn record(&self, denied: Denied, subject: String) {
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let number = self.recorded.load(Ordering::Relaxed) + 1;
        recent.push_back(Violation {
            number,
            denied,
            subject,
        });
        if recent.len() > KEPT {
            recent.pop_front();
        }
        self.recorded.store(number, Ordering::Release);
        drop(recent);
        for changed in &self.changed {
            changed.notify_waiters();
        }
    }

    /// The first refusal after number `mark` that `matches` accepts.
    fn first_after(&self, mark: u64, matches: &impl Fn(&Violation) -> bool) -> Option<Violation> {
        if self.recorded.load(Ordering::Acquire) <= mark {
            return None;
        }
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        recent
            .iter()
            .filter(|violation| violation.number > mark)
            .find(|violation| matches(violation))
            .cloned()
    }
}

impl Drop for Violations {
    fn drop(&mut self) {
        if let Some(key) = self.key.get() {
            // A connection made since, whose statistics took the same address, keeps its entry.
            CONNECTIONS.remove_if(key, |_, entry| entry.strong_count() == 0);
        }
    }
}

/// The refusals of one connection from a moment on: take it before sending, so the refusal of
/// what is sent comes after its mark. Without a record (a connection made elsewhere) it never
/// sees one.
#[derive(Debug)]
pub(crate) struct Watch {
    violations: Option<Arc<Violations>>,
    mark: u64,
}

impl Watch {
    /// Watches `client`'s connection from now on.
    pub(crate) fn start(client: &async_nats::Client) -> Self {
        let violations = CONNECTIONS
            .get(&connection_key(client))
            .and_then(|entry| entry.upgrade());
        Self::of(violations)
    }

    /// Watches `client`'s connection from its start: every refusal it still keeps counts. For a
    /// subject only this connection uses, whose refusal may have come before the watch.
    pub(crate) fn from_connection_start(client: &async_nats::Client) -> Self {
        Self {
            mark: 0,
            ..Self::start(client)
        }
    }

    fn of(violations: Option<Arc<Violations>>) -> Self {
        let mark = violations
            .as_ref()
            .map_or(0, |violations| violations.recorded.load(Ordering::Acquire));
        Self { violations, mark }
    }

    /// The first refusal since the watch started that `matches` accepts; pending until there is
    /// one, so forever on a connection without a record.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub(crate) async fn refused(&self, matches: impl Fn(&Violation) -> bool) -> Violation {
        let Some(violations) = &self.violations else {
            return std::future::pending().await;
        };
        let changed = &violations.changed[wake_shard()];
        loop {
            let changed = changed.notified();
            let mut changed = std::pin::pin!(changed);
            // Registered before the look, so a refusal recorded in between wakes it.
            changed.as_mut().enable();
            if let Some(violation) = violations.first_after(self.mark, &matches) {
                return violation;
            }
            changed.await;
        }
    }

    /// Runs `operation`, unless the server first refuses something `matches` accepts: then the
    /// refusal, and `operation` is dropped.
    ///
    /// # Cancel safety
    /// As cancel safe as `operation`.
    pub(crate) async fn guard<T>(
        &self,
        operation: impl IntoFuture<Output = T>,
        matches: impl Fn(&Violation) -> bool,
    ) -> Result<T, Violation> {
        let operation = operation.into_future();
        tokio::select! {
            biased;
            outcome = operation => Ok(outcome),
            violation = self.refused(matches) => Err(violation),
        }
    }
}

/// The subject a write of `key` to `bucket` is published to (`$KV.<bucket>.<key>`), which the
/// server names when it refuses the write.
pub(crate) fn key_subject(bucket: &async_nats::jetstream::kv::Store, key: &str) -> String {
    let prefix = bucket.put_prefix.as_deref().unwrap_or(&bucket.prefix);
    format!("{prefix}{key}")
}

/// How long the inbox check waits for its own message before it gives up and lets the connection
/// be used (the server answers it in one round trip).
const INBOX_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks that the server lets `client` subscribe to its reply inboxes: the answer to every
/// request comes there, so a refused inbox makes every request wait out its timeout. It
/// subscribes to a new inbox and publishes to it: the message comes back, or the server refuses
/// the subscription (then `Err` with the inbox's subject). A refused publish to the inbox says
/// nothing about subscriptions, and refusals arrive in order, so it counts as allowed.
///
/// Anything else (the connection closing, no answer in time) lets the connection be used, as if
/// nothing had been checked.
pub(crate) async fn check_inbox(
    client: &async_nats::Client,
    violations: &Arc<Violations>,
) -> Result<(), String> {
    let watch = Watch::of(Some(violations.clone()));
    let inbox = client.new_inbox();
    let Ok(mut subscriber) = client.subscribe(inbox.clone()).await else {
        return Ok(());
    };
    if client
        .publish(inbox.clone(), bytes::Bytes::new())
        .await
        .is_err()
    {
        return Ok(());
    }
    let answered = watch.guard(subscriber.next(), |violation| violation.subject == inbox);
    match tokio::time::timeout(INBOX_CHECK_TIMEOUT, answered).await {
        Ok(Err(violation)) if violation.denied == Denied::Subscribe => Err(inbox),
        _ => Ok(()),
    }
}

/// The refusal in the text of a server `-ERR`, if it is one: `Permissions Violation for Publish
/// to "<subject>"`, `... for Publish with Reply of "<reply>"`, `... for Subscription to
/// "<subject>"` (possibly followed by ` using queue "<queue>"` or `, too many tokens`).
fn parse(text: &str) -> Option<(Denied, String)> {
    let rest = text.trim().strip_prefix("Permissions Violation for ")?;
    let (denied, quoted) = [
        ("Publish to ", Denied::Publish),
        ("Publish with Reply of ", Denied::Publish),
        ("Subscription to ", Denied::Subscribe),
    ]
    .into_iter()
    .find_map(|(prefix, denied)| Some((denied, rest.strip_prefix(prefix)?)))?;
    Some((denied, unquote(quoted)?))
}

/// The string at the start of `quoted`, a Go `%q` string (`"a\"b"`), without its quotes; the
/// escapes a subject may hold (`\"`, `\\`) are undone, others are kept as written.
fn unquote(quoted: &str) -> Option<String> {
    let mut chars = quoted.strip_prefix('"')?.chars();
    let mut text = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(text),
            '\\' => match chars.next()? {
                escaped @ ('"' | '\\') => text.push(escaped),
                other => {
                    text.push('\\');
                    text.push(other);
                }
            },
            c => text.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_violation_text_of_the_server_is_read() {
        for (text, expected) in [
            (
                r#"Permissions Violation for Publish to "celerity.control.all""#,
                Some((Denied::Publish, "celerity.control.all")),
            ),
            (
                r#"Permissions Violation for Subscription to "_INBOX.x.*""#,
                Some((Denied::Subscribe, "_INBOX.x.*")),
            ),
            (
                r#"Permissions Violation for Subscription to "a.b" using queue "q""#,
                Some((Denied::Subscribe, "a.b")),
            ),
            (
                r#"Permissions Violation for Subscription to "a.b.c", too many tokens"#,
                Some((Denied::Subscribe, "a.b.c")),
            ),
            (
                r#"Permissions Violation for Publish with Reply of "_INBOX.r""#,
                Some((Denied::Publish, "_INBOX.r")),
            ),
            (
                r#"Permissions Violation for Publish to "odd\"subject\\""#,
                Some((Denied::Publish, r#"odd"subject\"#)),
            ),
            (
                r#"Permissions Violation for Publish to "unterminated"#,
                None,
            ),
            ("Permissions Violation", None),
            ("maximum subscriptions exceeded", None),
        ] {
            let parsed = parse(text);
            assert_eq!(
                parsed
                    .as_ref()
                    .map(|(denied, subject)| (*denied, subject.as_str())),
                expected,
                "{text}"
            );
        }
    }

    fn refusal(text: &str) -> async_nats::Event {
        async_nats::Event::ServerError(async_nats::ServerError::Other(text.to_owned()))
    }

    #[tokio::test]
    async fn a_watch_sees_only_refusals_after_it_started_and_in_order() {
        let violations = Violations::new();
        violations.observe(&refusal(r#"Permissions Violation for Publish to "a""#));
        let watch = Watch::of(Some(violations.clone()));
        violations.observe(&async_nats::Event::Connected);
        violations.observe(&refusal(r#"Permissions Violation for Subscription to "a""#));
        violations.observe(&refusal(r#"Permissions Violation for Publish to "a""#));
        let first = watch.refused(|violation| violation.subject == "a").await;
        assert_eq!(
            first.denied,
            Denied::Subscribe,
            "the earlier refusal is ignored"
        );
        let publish = watch
            .refused(|violation| violation.is_publish_to("a"))
            .await;
        assert_eq!(publish.number, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_guarded_operation_ends_at_its_refusal_or_with_its_outcome() {
        let violations = Violations::new();
        let watch = Watch::of(Some(violations.clone()));
        let pending = std::future::pending::<()>();
        let refused = watch.guard(pending, |violation| violation.is_publish_to("q.0"));
        let recorder = violations.clone();
        let (guarded, ()) = tokio::join!(refused, async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            recorder.observe(&refusal(r#"Permissions Violation for Publish to "other""#));
            recorder.observe(&refusal(r#"Permissions Violation for Publish to "q.0""#));
        });
        assert_eq!(guarded.expect_err("refused").subject, "q.0");
        let done = watch.guard(async { 7 }, |_| true).await;
        assert_eq!(done, Ok(7), "an operation that ends first is not refused");
        let unrecorded = Watch::of(None).guard(async { 1 }, |_| true).await;
        assert_eq!(unrecorded, Ok(1));
    }

    #[test]
    fn a_dropped_record_leaves_the_registry() {
        let violations = Violations::new();
        let _ = violations.key.set(usize::MAX);
        CONNECTIONS.insert(usize::MAX, Arc::downgrade(&violations));
        drop(violations);
        assert!(!CONNECTIONS.contains_key(&usize::MAX));
    }

    #[test]
    fn a_record_keeps_only_the_latest_refusals() {
        let violations = Violations::new();
        for n in 0..KEPT + 10 {
            violations.record(Denied::Publish, format!("s.{n}"));
        }
        let recent = violations.recent.lock().unwrap();
        assert_eq!(recent.len(), KEPT);
        assert_eq!(recent.front().unwrap().subject, "s.10");
    }
}
