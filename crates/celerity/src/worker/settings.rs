//! Stored settings as one worker sees them: each key's latest value by revision, and the priority
//! weights they decide. (Rate limits build on the same store in `limits.rs`.)

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};

use celerity_proto::{PriorityWeightsSetting, SettingScope, priority_weights_key};

/// The most keys of one kind of setting a worker keeps: a setting's key names a task or a worker,
/// so a real cluster stays far below it, while a bucket flooded with made-up keys cannot grow a
/// worker's memory without bound.
const MAX_KEYS: usize = 10_000;

/// The latest value of each key of one kind of setting, with its revision (`None`: deleted).
pub(crate) struct Stored<T> {
    values: Mutex<HashMap<String, (u64, Option<T>)>>,
}

impl<T: Clone> Stored<T> {
    pub(crate) fn new() -> Self {
        Self {
            values: Mutex::new(HashMap::new()),
        }
    }

    /// Records `value` for `key` at `revision`, unless a later revision is recorded already (the
    /// control path and the watch may both deliver it). Returns the value it replaced, or `None`
    /// when it was ignored.
    pub(crate) fn apply(&self, key: &str, revision: u64, value: Option<T>) -> Option<Option<T>> {
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = values.get(key);
        if previous.is_some_and(|(applied, _)| *applied >= revision) {
            return None;
        }
        let previous = previous.and_then(|(_, value)| value.clone());
        if values.len() >= MAX_KEYS && !values.contains_key(key) {
            // A deleted key's revision is kept so a late copy of an older value is ignored; when
            // the map is full one of those goes first, so deletions cannot crowd out real keys.
            let deleted = values
                .iter()
                .find(|(_, (_, value))| value.is_none())
                .map(|(deleted, _)| deleted.clone());
            if let Some(deleted) = deleted {
                values.remove(&deleted);
            }
        }
        if values.len() >= MAX_KEYS && !values.contains_key(key) {
            tracing::warn!(
                key,
                max_keys = MAX_KEYS,
                "ignoring a stored setting: this worker keeps this many keys of its kind already"
            );
            return None;
        } else {
            values.insert(key.to_owned(), (revision, value));
        }
        Some(previous)
    }

    /// The current value of `key`, if one is stored.
    pub(crate) fn get(&self, key: &str) -> Option<T> {
        let values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        values.get(key).and_then(|(_, value)| value.clone())
    }
}

/// The priority weights in force on one worker: a stored value for this worker, else one for every
/// worker, else the worker's own flags. `None` is strict priorities.
pub(crate) struct PriorityWeights {
    hostname: String,
    configured: Option<[u32; 10]>,
    stored: Stored<PriorityWeightsSetting>,
    current: RwLock<Option<[u32; 10]>>,
    /// Held while a setting is applied, so two applies cannot decide out of order.
    applying: Mutex<()>,
}

impl PriorityWeights {
    pub(crate) fn new(hostname: &str, configured: Option<[u32; 10]>) -> Self {
        Self {
            hostname: hostname.to_owned(),
            configured,
            stored: Stored::new(),
            current: RwLock::new(configured),
            applying: Mutex::new(()),
        }
    }

    /// The weights in force.
    pub(crate) fn current(&self) -> Option<[u32; 10]> {
        *self.current.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a stored value read at `revision` (`None`: the key was deleted).
    pub(crate) fn apply(&self, key: &str, revision: u64, setting: Option<PriorityWeightsSetting>) {
        let _applying = self.applying.lock().unwrap_or_else(PoisonError::into_inner);
        if self.stored.apply(key, revision, setting).is_none() {
            return;
        }
        let worker = SettingScope::Worker {
            worker: self.hostname.clone(),
        };
        let decided = self
            .stored
            .get(&priority_weights_key(&worker))
            .or_else(|| {
                self.stored
                    .get(&priority_weights_key(&SettingScope::Workers))
            })
            .map_or(self.configured, |setting| setting.weights);
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if *current != decided {
            tracing::info!(weights = ?decided, "priority weights changed (none: strict)");
            *current = decided;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_revisions_win_and_a_worker_value_beats_the_shared_one() {
        let weights = PriorityWeights::new("w1", None);
        let shared = PriorityWeightsSetting::new(SettingScope::Workers, Some([1; 10]));
        weights.apply("priority_weights.workers", 5, Some(shared.clone()));
        assert_eq!(weights.current(), Some([1; 10]));
        // An older revision delivered late changes nothing.
        let older = PriorityWeightsSetting::new(SettingScope::Workers, Some([2; 10]));
        weights.apply("priority_weights.workers", 4, Some(older));
        assert_eq!(weights.current(), Some([1; 10]));
        let mine = PriorityWeightsSetting::new(
            SettingScope::Worker {
                worker: "w1".to_owned(),
            },
            None,
        );
        weights.apply("priority_weights.worker.w1", 6, Some(mine));
        assert_eq!(weights.current(), None, "strict for this worker");
        weights.apply("priority_weights.worker.w1", 7, None);
        assert_eq!(
            weights.current(),
            Some([1; 10]),
            "deleted: the shared value again"
        );
        weights.apply("priority_weights.workers", 8, None);
        assert_eq!(weights.current(), None, "the worker's own flags");
    }

    #[test]
    fn keys_beyond_the_cap_are_ignored_but_known_keys_still_change() {
        let stored = Stored::new();
        for n in 0..MAX_KEYS {
            assert!(stored.apply(&format!("k{n}"), 1, Some(n)).is_some());
        }
        assert!(stored.apply("one.too.many", 1, Some(0)).is_none());
        assert_eq!(stored.get("one.too.many"), None);
        assert_eq!(stored.apply("k7", 2, Some(70)), Some(Some(7)));
        assert_eq!(stored.get("k7"), Some(70));
        // A deleted key makes room for a new one.
        assert!(stored.apply("k8", 2, None).is_some());
        assert!(stored.apply("new.after.a.delete", 1, Some(1)).is_some());
        assert_eq!(stored.get("new.after.a.delete"), Some(1));
    }
}
