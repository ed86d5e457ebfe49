//! A chord's counting, as plain data: `Progress`, a chord's member outcomes so far and what its
//! policy decides from them (`Decision`), and `Settled`, the chords an owner settled lately.
//!
//! Nothing here does I/O; the aggregator (`chord.rs`) feeds it completions and acts on decisions.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use crate::telemetry::MAX_CHORD_LINKS;
use celerity_proto::{
    ChordCompletion, ChordMismatch, ChordPolicy, ChordResults, ErrorRecord, TaskId, TaskState,
};

/// How many settled chords (fired, or found to need nothing more) an owner remembers per
/// partition, so their late completions are purged without a read. Older ones are forgotten: a
/// late completion of a forgotten chord costs one read of its definition and fired marker.
const SETTLED_PER_PARTITION: usize = 1024;

/// The most recently settled chords, oldest forgotten first.
#[derive(Default)]
pub(super) struct Settled {
    ids: HashSet<TaskId>,
    order: VecDeque<TaskId>,
}

impl Settled {
    pub(super) fn contains(&self, chord_id: &TaskId) -> bool {
        self.ids.contains(chord_id)
    }

    pub(super) fn insert(&mut self, chord_id: TaskId) {
        if !self.ids.insert(chord_id.clone()) {
            return;
        }
        self.order.push_back(chord_id);
        if self.order.len() > SETTLED_PER_PARTITION
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
    }
}

#[derive(Default)]
pub(super) struct Progress {
    succeeded: BTreeSet<u32>,
    failed: BTreeMap<u32, ErrorRecord>,
    /// True while the chord fires: later completions are purged with it.
    pub(super) firing: bool,
    /// The members' run spans (`traceparent`s) the body's publish links to, at most
    /// [`MAX_CHORD_LINKS`].
    traces: Vec<String>,
}

/// What a chord does next, by its policy.
pub(super) enum Decision {
    Complete(ChordResults),
    /// Member `index` failed, so the chord did.
    Failed {
        index: u32,
        error: ErrorRecord,
    },
    /// The definition breaks a rule, so the chord cannot run.
    Invalid(ChordMismatch),
}

impl Progress {
    /// Counts member `index`'s outcome; a member's first report wins (a later one for the same
    /// index is a duplicate, or a stray).
    pub(super) fn record(&mut self, completion: &ChordCompletion) {
        let index = completion.index;
        if self.succeeded.contains(&index) || self.failed.contains_key(&index) {
            return;
        }
        if let Some(traceparent) = &completion.traceparent
            && self.traces.len() < MAX_CHORD_LINKS
        {
            self.traces.push(traceparent.clone());
        }
        if completion.state == TaskState::Success {
            self.succeeded.insert(index);
        } else {
            let error = completion.error.clone().unwrap_or_else(|| {
                ErrorRecord::new(
                    "celerity::ChordHeaderFailed",
                    format!("header member {index} ended {}", completion.state),
                )
            });
            self.failed.insert(index, error);
        }
    }

    /// The members' run spans the body's publish links to.
    pub(super) fn traces(&self) -> &[String] {
        &self.traces
    }

    /// What the chord does now under `policy`, if anything.
    pub(super) fn decide(
        &self,
        chord_id: &TaskId,
        size: u32,
        policy: ChordPolicy,
    ) -> Option<Decision> {
        let n_succeeded = self.succeeded.len() as u64;
        let n_failed = self.failed.len() as u64;
        let first_failure = || {
            self.failed
                .iter()
                .next()
                .map(|(index, error)| (*index, error.clone()))
        };
        match policy {
            ChordPolicy::Collect => (n_succeeded + n_failed >= u64::from(size)).then(|| {
                let mut results = ChordResults::new(chord_id.clone(), size);
                results.collect = true;
                Decision::Complete(results)
            }),
            ChordPolicy::AtLeast { successes } => {
                if n_succeeded >= u64::from(successes) {
                    let mut results = ChordResults::new(chord_id.clone(), size);
                    results.indices = Some(
                        self.succeeded
                            .iter()
                            .copied()
                            .take(successes as usize)
                            .collect(),
                    );
                    Some(Decision::Complete(results))
                } else if u64::from(size).saturating_sub(n_failed) < u64::from(successes) {
                    let (index, first) = first_failure()?;
                    let error = ErrorRecord::new(
                        "celerity::ChordQuorumFailed",
                        format!(
                            "{n_failed} of {size} header members failed, so {successes} successes cannot be reached; first failure (member {index}): {first}"
                        ),
                    );
                    Some(Decision::Failed { index, error })
                } else {
                    None
                }
            }
            _ => {
                if let Some((index, error)) = first_failure() {
                    Some(Decision::Failed { index, error })
                } else {
                    (n_succeeded >= u64::from(size))
                        .then(|| Decision::Complete(ChordResults::new(chord_id.clone(), size)))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(index: u32, state: TaskState) -> ChordCompletion {
        ChordCompletion::new(index, 3, state)
    }

    #[test]
    fn a_members_first_report_wins_and_revoked_is_a_failure() {
        let chord = TaskId::new("c").unwrap();
        let mut progress = Progress::default();
        progress.record(&completion(0, TaskState::Success));
        progress.record(&completion(0, TaskState::Failure));
        progress.record(&completion(1, TaskState::Success));
        assert!(progress.decide(&chord, 3, ChordPolicy::FailFast).is_none());
        progress.record(&completion(2, TaskState::Revoked));
        match progress.decide(&chord, 3, ChordPolicy::FailFast) {
            Some(Decision::Failed { index: 2, error }) => {
                assert_eq!(error.message, "header member 2 ended REVOKED")
            }
            _ => panic!("a revoked member fails a fail-fast chord"),
        }
        match progress.decide(&chord, 3, ChordPolicy::Collect) {
            Some(Decision::Complete(results)) => assert!(results.collect && results.size == 3),
            _ => panic!("a revoked member has ended, for collect"),
        }
    }

    #[test]
    fn at_least_fires_with_the_first_successes_or_fails_once_out_of_reach() {
        let chord = TaskId::new("c").unwrap();
        let quorum = ChordPolicy::AtLeast { successes: 2 };
        let mut progress = Progress::default();
        progress.record(&completion(2, TaskState::Success));
        assert!(progress.decide(&chord, 3, quorum).is_none());
        progress.record(&completion(0, TaskState::Success));
        match progress.decide(&chord, 3, quorum) {
            Some(Decision::Complete(results)) => assert_eq!(results.indices, Some(vec![0, 2])),
            _ => panic!("two successes reach the quorum"),
        }
        let mut failing = Progress::default();
        failing.record(&completion(1, TaskState::Failure));
        assert!(failing.decide(&chord, 3, quorum).is_none());
        failing.record(&completion(2, TaskState::Revoked));
        assert!(matches!(
            failing.decide(&chord, 3, quorum),
            Some(Decision::Failed { index: 1, .. })
        ));
    }

    #[test]
    fn settled_chords_are_bounded_oldest_first() {
        let mut settled = Settled::default();
        let ids: Vec<TaskId> = (0..=SETTLED_PER_PARTITION)
            .map(|i| TaskId::new(format!("c{i}")).unwrap())
            .collect();
        for id in &ids {
            settled.insert(id.clone());
            settled.insert(id.clone());
        }
        assert_eq!(settled.ids.len(), SETTLED_PER_PARTITION);
        assert_eq!(settled.order.len(), SETTLED_PER_PARTITION);
        assert!(!settled.contains(&ids[0]), "the oldest is forgotten");
        assert!(settled.contains(&ids[1]) && settled.contains(&ids[SETTLED_PER_PARTITION]));
    }
}
