//! The revoked ids one worker keeps: a copy of the revoked bucket's keys, each with the time it was
//! revoked, kept by a watch and swept by age.
//!
//! The bucket's values expire after its `max_age` without a delete marker, so the watch never hears
//! of an expiry: an id older than `max_age` counts as not revoked, and a sweep drops such ids, so a
//! long-lived worker does not keep every revocation ever made.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use dashmap::DashMap;
use futures_util::StreamExt;

use crate::clock::now_ms;

/// Revoked task and canvas ids with the time (Unix milliseconds) each was revoked.
#[derive(Debug, Clone)]
pub(crate) struct Revocations {
    ids: Arc<DashMap<String, u64>>,
    /// How long the bucket keeps a revocation.
    max_age_ms: u64,
}

impl Revocations {
    /// An empty set for a bucket that keeps revocations for `max_age` (zero: for ever).
    pub(crate) fn new(max_age: Duration) -> Self {
        let max_age_ms = match max_age.as_millis() {
            0 => u64::MAX,
            ms => u64::try_from(ms).unwrap_or(u64::MAX),
        };
        Self {
            ids: Arc::new(DashMap::new()),
            max_age_ms,
        }
    }

    /// True when `id` was revoked and its revocation has not expired.
    pub(crate) fn contains(&self, id: &str) -> bool {
        !self.ids.is_empty()
            && self
                .ids
                .get(id)
                .is_some_and(|revoked_at| self.is_live(*revoked_at, now_ms()))
    }

    fn is_live(&self, revoked_at_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(revoked_at_ms) < self.max_age_ms
    }

    /// The ids whose revocation has not expired.
    pub(crate) fn live_ids(&self) -> Vec<String> {
        let now = now_ms();
        self.ids
            .iter()
            .filter(|entry| self.is_live(*entry.value(), now))
            .map(|entry| entry.key().clone())
            .collect()
    }

    /// Records `id` as revoked at `revoked_at_ms`.
    pub(crate) fn insert(&self, id: String, revoked_at_ms: u64) {
        self.ids.insert(id, revoked_at_ms);
    }

    fn remove(&self, id: &str) {
        self.ids.remove(id);
    }

    /// Drops every revocation the bucket no longer holds.
    fn sweep(&self, now_ms: u64) {
        self.ids
            .retain(|_, revoked_at| self.is_live(*revoked_at, now_ms));
    }

    /// How often expired ids are swept: a tenth of the bucket's age, between 1 s and 10 minutes.
    fn sweep_period(&self) -> Duration {
        Duration::from_millis(self.max_age_ms / 10)
            .clamp(Duration::from_secs(1), Duration::from_secs(600))
    }

    /// Keeps this set equal to the bucket's live keys, for as long as the worker runs.
    pub(crate) async fn watch(self, bucket: kv::Store) {
        let sweeper = self.clone();
        let _sweeping = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(sweeper.sweep_period());
            loop {
                ticks.tick().await;
                sweeper.sweep(now_ms());
            }
        }));
        loop {
            match bucket.watch_with_history(">").await {
                Ok(mut watch) => {
                    while let Some(entry) = watch.next().await {
                        match entry {
                            Ok(entry) if entry.operation == kv::Operation::Put => {
                                tracing::debug!(id = %entry.key, "revocation received");
                                let revoked_at =
                                    u64::try_from(entry.created.unix_timestamp_nanos() / 1_000_000)
                                        .unwrap_or(0);
                                self.insert(entry.key, revoked_at);
                            }
                            Ok(entry) => self.remove(&entry.key),
                            Err(error) => {
                                tracing::warn!(error = %error, "the revocation watch failed; restarting it");
                                break;
                            }
                        }
                    }
                }
                Err(error) => tracing::warn!(error = %error, "cannot watch revocations; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_older_than_the_bucket_keeps_it_does_not_count_and_is_swept() {
        let revocations = Revocations::new(Duration::from_secs(60));
        let now = now_ms();
        revocations.insert("old".to_owned(), now - 61_000);
        revocations.insert("new".to_owned(), now - 1_000);
        assert!(!revocations.contains("old"));
        assert!(revocations.contains("new"));
        assert_eq!(revocations.ids.len(), 2);
        revocations.sweep(now);
        assert_eq!(revocations.ids.len(), 1);
        assert!(revocations.contains("new"));
    }

    #[test]
    fn a_bucket_without_expiry_keeps_revocations_for_ever() {
        let revocations = Revocations::new(Duration::ZERO);
        revocations.insert("id".to_owned(), 0);
        revocations.sweep(now_ms());
        assert!(revocations.contains("id"));
    }

    #[test]
    fn sweeps_come_at_a_tenth_of_the_age_within_bounds() {
        let period = |secs| Revocations::new(Duration::from_secs(secs)).sweep_period();
        assert_eq!(period(2), Duration::from_secs(1));
        assert_eq!(period(600), Duration::from_secs(60));
        assert_eq!(period(86_400), Duration::from_secs(600));
    }
}
