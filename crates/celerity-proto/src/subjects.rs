//! Where things live on NATS: the subjects, streams, consumers and buckets of one namespace.
//!
//! [`Layout`] is the only place that spells these names; the runtime and `docs/protocol.md` both follow it.

use crate::names::{Namespace, Priority, QueueName};

/// The names of every subject, stream, consumer and KV bucket of one namespace.
///
/// ```
/// # use celerity_proto::{Layout, Namespace, Priority, QueueName};
/// let layout = Layout::new(Namespace::default());
/// let queue = QueueName::new("high")?;
/// assert_eq!(layout.task_subject(&queue, Priority::new(9)?), "celerity.q.high.9");
/// assert_eq!(layout.queue_stream(&queue), "CELERITY_Q_high");
/// assert_eq!(layout.results_bucket(), "celerity_results");
/// # Ok::<(), celerity_proto::InvalidName>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    namespace: Namespace,
    upper: String,
}

impl Layout {
    /// The layout of `namespace`.
    pub fn new(namespace: Namespace) -> Self {
        let upper = namespace.as_str().to_ascii_uppercase();
        Self { namespace, upper }
    }

    /// The namespace this layout names things in.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The subject a task of `priority` is published to on `queue`: `<ns>.q.<queue>.<priority>`.
    pub fn task_subject(&self, queue: &QueueName, priority: Priority) -> String {
        format!("{}.q.{}.{}", self.namespace, queue, priority)
    }

    /// The subjects of `queue`'s stream: one per priority level, `<ns>.q.<queue>.0` to `.9`, so
    /// JetStream refuses a publish to any other priority token instead of storing a task that no
    /// consumer would ever deliver.
    pub fn queue_subjects(&self, queue: &QueueName) -> Vec<String> {
        let mut levels: Vec<Priority> = Priority::all_descending().collect();
        levels.reverse();
        levels
            .into_iter()
            .map(|priority| self.task_subject(queue, priority))
            .collect()
    }

    /// The subjects of `queue`'s stream when it uses only some priority levels (priority steps).
    pub fn queue_level_subjects(&self, queue: &QueueName, levels: &[Priority]) -> Vec<String> {
        levels
            .iter()
            .map(|priority| self.task_subject(queue, *priority))
            .collect()
    }

    /// Every task subject of `queue` as one wildcard, `<ns>.q.<queue>.*`: the republish source.
    pub fn queue_wildcard(&self, queue: &QueueName) -> String {
        format!("{}.q.{}.*", self.namespace, queue)
    }

    /// Splits a task subject back into its queue and priority.
    ///
    /// ```
    /// # use celerity_proto::{Layout, Namespace};
    /// let layout = Layout::new(Namespace::default());
    /// let (queue, priority) = layout.parse_task_subject("celerity.q.default.3").expect("a task subject");
    /// assert_eq!((queue.as_str(), priority.get()), ("default", 3));
    /// assert!(layout.parse_task_subject("other.q.default.3").is_none());
    /// ```
    pub fn parse_task_subject(&self, subject: &str) -> Option<(QueueName, Priority)> {
        let rest = subject
            .strip_prefix(self.namespace.as_str())?
            .strip_prefix(".q.")?;
        let (queue, priority) = rest.split_once('.')?;
        Some((QueueName::new(queue).ok()?, priority.parse().ok()?))
    }

    /// The stream that holds `queue`'s tasks: `<NS>_Q_<queue>`, work-queue retention.
    pub fn queue_stream(&self, queue: &QueueName) -> String {
        format!("{}_Q_{}", self.upper, queue)
    }

    /// Splits a queue stream's name back into its queue: the inverse of [`Layout::queue_stream`].
    ///
    /// ```
    /// # use celerity_proto::{Layout, Namespace};
    /// let layout = Layout::new(Namespace::default());
    /// let queue = layout.parse_queue_stream("CELERITY_Q_email").expect("a queue stream");
    /// assert_eq!(queue.as_str(), "email");
    /// assert!(layout.parse_queue_stream("CELERITY_EVENTS").is_none());
    /// assert!(layout.parse_queue_stream("SHOP_Q_email").is_none());
    /// ```
    pub fn parse_queue_stream(&self, stream: &str) -> Option<QueueName> {
        let rest = stream
            .strip_prefix(self.upper.as_str())?
            .strip_prefix("_Q_")?;
        QueueName::new(rest).ok()
    }

    /// The durable pull consumer of one priority level of a queue, shared by all its workers: `p<priority>`.
    pub fn queue_consumer(&self, priority: Priority) -> String {
        format!("p{priority}")
    }

    /// The headers-only subject the queue stream republishes each stored task to:
    /// `<ns>.bell.<queue>.<priority>`.
    ///
    /// Workers listen here to learn which priority levels have work, instead of polling every level.
    pub fn doorbell_subject(&self, queue: &QueueName, priority: Priority) -> String {
        format!("{}.bell.{}.{}", self.namespace, queue, priority)
    }

    /// The republish destination of `queue`'s stream: the doorbell subject with the priority token
    /// mapped from the task subject (`<ns>.bell.<queue>.{{wildcard(1)}}`).
    pub fn doorbell_subject_pattern(&self, queue: &QueueName) -> String {
        format!("{}.bell.{}.{{{{wildcard(1)}}}}", self.namespace, queue)
    }

    /// The wildcard of every doorbell of `queue`: `<ns>.bell.<queue>.*`.
    pub fn doorbell_subjects(&self, queue: &QueueName) -> String {
        format!("{}.bell.{}.*", self.namespace, queue)
    }

    /// The KV bucket that holds result records, keyed by task id: `<ns>_results`.
    pub fn results_bucket(&self) -> String {
        format!("{}_results", self.namespace)
    }

    /// The dead-letter stream: `<NS>_DLQ`.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}_DLQ", self.upper)
    }

    /// The subject a dead letter from `queue` is stored under: `<ns>.dlq.<queue>`.
    pub fn dead_letter_subject(&self, queue: &QueueName) -> String {
        format!("{}.dlq.{}", self.namespace, queue)
    }

    /// Splits a dead-letter subject back into its queue.
    ///
    /// ```
    /// # use celerity_proto::{Layout, Namespace};
    /// let layout = Layout::new(Namespace::new("shop")?);
    /// assert_eq!(layout.parse_dead_letter_subject("shop.dlq.email").unwrap().as_str(), "email");
    /// assert!(layout.parse_dead_letter_subject("shop.q.email.0").is_none());
    /// # Ok::<(), celerity_proto::InvalidName>(())
    /// ```
    pub fn parse_dead_letter_subject(&self, subject: &str) -> Option<QueueName> {
        let rest = subject
            .strip_prefix(self.namespace.as_str())?
            .strip_prefix(".dlq.")?;
        QueueName::new(rest).ok()
    }

    /// The subjects of the dead-letter stream: `<ns>.dlq.*`.
    pub fn dead_letter_subjects(&self) -> String {
        format!("{}.dlq.*", self.namespace)
    }

    /// True for `<ns>.reply.<token>` with one token of `A-Z a-z 0-9 - _`: the only subjects a
    /// worker publishes result notifications to.
    ///
    /// ```
    /// # use celerity_proto::{Layout, Namespace};
    /// let layout = Layout::new(Namespace::default());
    /// assert!(layout.is_reply_subject("celerity.reply.0190abc"));
    /// assert!(!layout.is_reply_subject("$JS.API.STREAM.DELETE.CELERITY_Q_default"));
    /// assert!(!layout.is_reply_subject("celerity.reply.a.b"));
    /// ```
    pub fn is_reply_subject(&self, subject: &str) -> bool {
        subject
            .strip_prefix(self.namespace.as_str())
            .and_then(|rest| rest.strip_prefix(".reply."))
            .is_some_and(|token| {
                !token.is_empty()
                    && token.len() <= 128
                    && token
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
    }

    /// The stream of chord completions: `<NS>_CHORDS`.
    pub fn chord_stream(&self) -> String {
        format!("{}_CHORDS", self.upper)
    }

    /// The subjects of the chord stream: `<ns>.chord.*.*` (partition, chord id).
    pub fn chord_subjects(&self) -> String {
        format!("{}.chord.*.*", self.namespace)
    }

    /// Where members of `chord_id` (in `partition`) report: `<ns>.chord.<partition>.<chord id>`.
    pub fn chord_subject(&self, partition: u32, chord_id: &crate::names::TaskId) -> String {
        format!("{}.chord.{partition}.{chord_id}", self.namespace)
    }

    /// Every chord of one partition: `<ns>.chord.<partition>.*`.
    pub fn chord_partition_subjects(&self, partition: u32) -> String {
        format!("{}.chord.{partition}.*", self.namespace)
    }

    /// The KV bucket of chord definitions and fired markers: `<ns>_chords`.
    pub fn chords_bucket(&self) -> String {
        format!("{}_chords", self.namespace)
    }

    /// The stream of delayed tasks (countdown, ETA, retry backoff): `<NS>_DELAYED`.
    pub fn delayed_stream(&self) -> String {
        format!("{}_DELAYED", self.upper)
    }

    /// Where a delayed task for `queue` waits: `<ns>.delayed.<queue>`.
    pub fn delayed_subject(&self, queue: &QueueName) -> String {
        format!("{}.delayed.{}", self.namespace, queue)
    }

    /// The subjects of the delayed stream: `<ns>.delayed.*`.
    pub fn delayed_subjects(&self) -> String {
        format!("{}.delayed.*", self.namespace)
    }

    /// Splits a delayed subject back into its queue.
    pub fn parse_delayed_subject(&self, subject: &str) -> Option<QueueName> {
        let rest = subject
            .strip_prefix(self.namespace.as_str())?
            .strip_prefix(".delayed.")?;
        QueueName::new(rest).ok()
    }

    /// Where control requests to one worker go: `<ns>.control.<worker token>` (see
    /// [`crate::worker_token`]).
    pub fn control_subject(&self, hostname: &str) -> String {
        format!(
            "{}.control.{}",
            self.namespace,
            crate::worker_token(hostname)
        )
    }

    /// Where control requests to every worker go: `<ns>.control.all`.
    pub fn control_broadcast_subject(&self) -> String {
        format!("{}.control.all", self.namespace)
    }

    /// The events stream: `<NS>_EVENTS`, subjects `<ns>.events.>`.
    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.upper)
    }

    /// The subjects of the events stream: `<ns>.events.>`.
    pub fn events_subjects(&self) -> String {
        format!("{}.events.>", self.namespace)
    }

    /// Where the emitter `source` (a worker's hostname, a producer's name) sends its task event
    /// batches: `<ns>.events.task.<token>` (the token as in [`crate::worker_token`]).
    pub fn task_events_subject(&self, source: &str) -> String {
        format!(
            "{}.events.task.{}",
            self.namespace,
            crate::worker_token(source)
        )
    }

    /// Every task event subject: `<ns>.events.task.*`.
    pub fn task_events_subjects(&self) -> String {
        format!("{}.events.task.*", self.namespace)
    }

    /// Where the worker `hostname` sends its worker events: `<ns>.events.worker.<token>`.
    pub fn worker_events_subject(&self, hostname: &str) -> String {
        format!(
            "{}.events.worker.{}",
            self.namespace,
            crate::worker_token(hostname)
        )
    }

    /// Every worker event subject: `<ns>.events.worker.*`.
    pub fn worker_events_subjects(&self) -> String {
        format!("{}.events.worker.*", self.namespace)
    }

    /// The KV bucket of revoked task and canvas ids: `<ns>_revoked`.
    pub fn revoked_bucket(&self) -> String {
        format!("{}_revoked", self.namespace)
    }

    /// The KV bucket of hand-backs: `<ns>_handbacks`, one key per queue message a worker handed
    /// back to its queue without running it ([`Layout::handback_key`]), holding how many times.
    pub fn handbacks_bucket(&self) -> String {
        format!("{}_handbacks", self.namespace)
    }

    /// The hand-backs key of the message at `sequence` in stream `stream`: `<stream>.<sequence>`.
    ///
    /// ```
    /// # use celerity_proto::{Layout, Namespace};
    /// let layout = Layout::new(Namespace::default());
    /// assert_eq!(layout.handback_key("CELERITY_Q_default", 42), "CELERITY_Q_default.42");
    /// ```
    pub fn handback_key(&self, stream: &str, sequence: u64) -> String {
        format!("{stream}.{sequence}")
    }

    /// The KV bucket of aggregator leases, one key per chord partition: `<ns>_leases`.
    pub fn leases_bucket(&self) -> String {
        format!("{}_leases", self.namespace)
    }

    /// The KV bucket of the periodic-task scheduler: its lease and each entry's state: `<ns>_beat`.
    pub fn beat_bucket(&self) -> String {
        format!("{}_beat", self.namespace)
    }

    /// The KV bucket of runtime settings (rate limits), watched by every worker: `<ns>_settings`.
    pub fn settings_bucket(&self) -> String {
        format!("{}_settings", self.namespace)
    }

    /// The KV bucket of cluster-wide rate limit state, one key per task (see
    /// [`crate::kv_key_token`]): `<ns>_rates`.
    pub fn rates_bucket(&self) -> String {
        format!("{}_rates", self.namespace)
    }

    /// The name workers register under with the NATS service API (`$SRV.PING.<name>`,
    /// `nats micro ls`): `celerity-<ns>`, so the workers of two deployments sharing an account are
    /// two services.
    ///
    /// ```
    /// # use celerity_proto::{Layout, Namespace};
    /// assert_eq!(Layout::new(Namespace::default()).service_name(), "celerity-celerity");
    /// assert_eq!(Layout::new(Namespace::new("shop")?).service_name(), "celerity-shop");
    /// # Ok::<(), celerity_proto::InvalidName>(())
    /// ```
    pub fn service_name(&self) -> String {
        format!("celerity-{}", self.namespace)
    }

    /// The subject of the `stats` endpoint of the worker `hostname`'s service instance:
    /// `<ns>.svc.<worker token>.stats` (the token as in [`crate::worker_token`]).
    pub fn service_stats_subject(&self, hostname: &str) -> String {
        format!(
            "{}.svc.{}.stats",
            self.namespace,
            crate::worker_token(hostname)
        )
    }

    /// The prefix of per-client result subjects: a producer sets `Celerity-Reply-To` to
    /// `<ns>.reply.<client id>` and the worker publishes final result records there.
    pub fn reply_subject(&self, client_id: &str) -> String {
        format!("{}.reply.{}", self.namespace, client_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_namespace() {
        let layout = Layout::new(Namespace::new("shop").unwrap());
        let queue = QueueName::new("email").unwrap();
        assert_eq!(layout.queue_stream(&queue), "SHOP_Q_email");
        let subjects = layout.queue_subjects(&queue);
        assert_eq!(subjects.len(), 10);
        assert_eq!(
            (subjects[0].as_str(), subjects[9].as_str()),
            ("shop.q.email.0", "shop.q.email.9")
        );
        assert_eq!(layout.queue_wildcard(&queue), "shop.q.email.*");
        assert_eq!(
            layout.doorbell_subject(&queue, Priority::new(2).unwrap()),
            "shop.bell.email.2"
        );
        assert_eq!(
            layout.doorbell_subject_pattern(&queue),
            "shop.bell.email.{{wildcard(1)}}"
        );
        assert_eq!(layout.dead_letter_stream(), "SHOP_DLQ");
        assert_eq!(layout.dead_letter_subject(&queue), "shop.dlq.email");
        assert_eq!(layout.results_bucket(), "shop_results");
        assert_eq!(layout.reply_subject("c1"), "shop.reply.c1");
        assert_eq!(layout.parse_queue_stream("SHOP_Q_email"), Some(queue));
        assert_eq!(layout.parse_queue_stream("SHOP_Q_a.b"), None);
        assert_eq!(layout.parse_queue_stream("SHOP_DLQ"), None);
        assert_eq!(layout.service_name(), "celerity-shop");
        assert_eq!(
            layout.service_stats_subject("celerity@web-1.42"),
            "shop.svc.celerity=40web-1=2E42.stats"
        );
    }

    #[test]
    fn parse_rejects_foreign_and_malformed_subjects() {
        let layout = Layout::new(Namespace::default());
        for subject in [
            "celerity.q.default",
            "celerity.q.default.10",
            "celerity.q.a.b.1",
            "celerityx.q.d.1",
        ] {
            assert!(
                layout.parse_task_subject(subject).is_none(),
                "{subject} parsed"
            );
        }
    }
}
