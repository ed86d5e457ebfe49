//! `LevelState`: which priority levels of one queue may have work, and the rules that pick the
//! level a fetch goes to and the level the idle wait listens on.
//!
//! Plain data: no actor, no I/O, no clock. The queue actor (`queue.rs`) tells it what it heard (a
//! signal rang, a fetch came back, the idle wait brought a task) and acts on what it answers.

use celerity_proto::Priority;

/// How many priority levels a queue has (0 to 9).
pub(super) const LEVELS: usize = 10;

/// What the queue actor knows of its levels, indexed by priority.
#[derive(Debug)]
pub(super) struct LevelState {
    /// The levels that have a consumer.
    in_use: [bool; LEVELS],
    /// Levels that may have work: flagged by a signal, a re-check or a task with others behind it,
    /// unflagged when a fetch finds the level empty.
    may_have_work: [bool; LEVELS],
    /// Bumped by every signal of a level, so that a fetch which raced one does not unflag it.
    generation: [u64; LEVELS],
    /// The level the last task came from, which the idle wait listens on.
    last_level: Option<usize>,
}

impl LevelState {
    /// The levels in `in_use`, each flagged: at start, any of them may have work.
    pub(super) fn new(in_use: [bool; LEVELS]) -> Self {
        Self {
            in_use,
            may_have_work: in_use,
            generation: [0; LEVELS],
            last_level: None,
        }
    }

    /// Whether `level` may have work.
    pub(super) fn may_have_work(&self, level: usize) -> bool {
        self.may_have_work[level]
    }

    /// Whether any level may have work.
    pub(super) fn any_may_have_work(&self) -> bool {
        self.may_have_work.iter().any(|flagged| *flagged)
    }

    /// The level to fetch from: the highest that may have work (strict), or one drawn among them
    /// in proportion to `weights` with `draw` in `0.0..=1.0` (weighted).
    pub(super) fn choose(&self, weights: Option<&[u32; LEVELS]>, draw: f64) -> Option<Priority> {
        choose_level(&self.may_have_work, weights, draw)
    }

    /// `level`'s signal generation, to hand to [`FetchTally::new`].
    pub(super) fn generation(&self, level: usize) -> u64 {
        self.generation[level]
    }

    /// A signal rang for `level`: it is flagged, unless the idle wait is on it (`waiting_on`),
    /// which brings the task itself (and flags the level when it does): a fetch now would find
    /// nothing. Returns whether it was flagged.
    pub(super) fn rang(&mut self, level: usize, waiting_on: Option<usize>) -> bool {
        self.generation[level] += 1;
        let flagged = waiting_on != Some(level);
        if flagged {
            self.flag(level);
        }
        flagged
    }

    /// `level` may have work, if it is in use.
    pub(super) fn flag(&mut self, level: usize) {
        self.may_have_work[level] = self.in_use[level];
    }

    /// Every level in use may have work (the periodic re-check: a redelivery rings no doorbell, and
    /// signals are lost while disconnected).
    pub(super) fn flag_all(&mut self) {
        self.may_have_work = self.in_use;
    }

    /// `level` has no work left for this worker.
    pub(super) fn unflag(&mut self, level: usize) {
        self.may_have_work[level] = false;
    }

    /// A task came from `level`: the idle wait listens there next.
    pub(super) fn took_from(&mut self, level: usize) {
        self.last_level = Some(level);
    }

    /// The idle wait brought a task of `level` with `behind` undelivered behind it. The level is
    /// flagged if more were behind it (or that is unknown); if none were, the next wait brings the
    /// next one (a sequential workload, such as a chain, then costs one request per task). Returns
    /// whether the level may have work left (it is then flagged).
    pub(super) fn waited_task_left_work(&mut self, level: usize, behind: Option<u64>) -> bool {
        let left_work = self.in_use[level] && behind != Some(0);
        if left_work {
            self.may_have_work[level] = true;
        }
        left_work
    }

    /// The level the idle wait goes to: `hint` (a level whose signal rang for a task no fetch got),
    /// else the level the last task came from, else the lowest in use (where tasks of the default
    /// priority go).
    pub(super) fn wait_level(&self, hint: Option<usize>) -> Option<usize> {
        hint.or(self.last_level)
            .filter(|level| self.in_use[*level])
            .or_else(|| (0..LEVELS).find(|level| self.in_use[*level]))
    }

    /// Whether `level` needs a signal to hear of new work: it is in use, not known to have work,
    /// and the idle wait (`waiting_on`) is not on it.
    pub(super) fn needs_signal(&self, level: usize, waiting_on: Option<usize>) -> bool {
        self.in_use[level] && !self.may_have_work[level] && waiting_on != Some(level)
    }
}

/// What one `no_wait` pull request asked for and got, to tell whether it found its level empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FetchTally {
    /// The level it was sent to.
    pub(super) level: usize,
    requested: usize,
    received: usize,
    /// How many messages the level still had undelivered when its last task was sent.
    behind: Option<u64>,
    /// The level's signal generation when it was sent.
    generation: u64,
}

impl FetchTally {
    /// A request for `requested` tasks of `level`, sent now.
    pub(super) fn new(levels: &LevelState, level: usize, requested: usize) -> Self {
        Self {
            level,
            requested,
            received: 0,
            behind: None,
            generation: levels.generation(level),
        }
    }

    /// Counts a task that came with `behind` undelivered behind it. Returns whether it was the last
    /// one asked for.
    pub(super) fn counted(&mut self, behind: Option<u64>) -> bool {
        self.received += 1;
        self.behind = behind;
        self.received == self.requested
    }

    /// Whether the request got no task.
    pub(super) fn got_nothing(&self) -> bool {
        self.received == 0
    }

    /// Whether the request, ended without error, found its level empty: it got fewer tasks than it
    /// asked for, or the last one had none behind it (which spares the fetch that would only find
    /// that out); unless a signal rang for the level since it was sent.
    pub(super) fn found_empty(&self, levels: &LevelState) -> bool {
        (self.received < self.requested || self.behind == Some(0))
            && levels.generation(self.level) == self.generation
    }
}

/// The level to fetch from among those flagged in `may_have_work`: the highest (strict, without
/// `weights`), or one drawn in proportion to `weights` with `draw` in `0.0..=1.0`.
fn choose_level(
    may_have_work: &[bool; LEVELS],
    weights: Option<&[u32; LEVELS]>,
    draw: f64,
) -> Option<Priority> {
    let flagged = Priority::all_descending().filter(|p| may_have_work[p.get() as usize]);
    let Some(weights) = weights else {
        return Priority::all_descending().find(|p| may_have_work[p.get() as usize]);
    };
    let candidates: Vec<Priority> = flagged.collect();
    let total: u64 = candidates
        .iter()
        .map(|p| u64::from(weights[p.get() as usize]))
        .sum();
    if total == 0 {
        return candidates.first().copied();
    }
    let mut point = (draw.clamp(0.0, 1.0) * total as f64) as u64;
    for candidate in &candidates {
        let weight = u64::from(weights[candidate.get() as usize]);
        if point < weight {
            return Some(*candidate);
        }
        point -= weight;
    }
    candidates.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Levels 2 and 7 in use, both flagged (as at start).
    fn two_levels() -> LevelState {
        let mut in_use = [false; LEVELS];
        in_use[2] = true;
        in_use[7] = true;
        LevelState::new(in_use)
    }

    fn chosen(levels: &LevelState) -> Option<u8> {
        levels.choose(None, 0.0).map(Priority::get)
    }

    #[test]
    fn strict_takes_the_highest_level_with_work() {
        let mut ready = [false; LEVELS];
        ready[2] = true;
        ready[7] = true;
        assert_eq!(choose_level(&ready, None, 0.0).map(Priority::get), Some(7));
        assert_eq!(choose_level(&[false; LEVELS], None, 0.5), None);
    }

    #[test]
    fn weighted_shares_levels_by_weight() {
        let mut ready = [false; LEVELS];
        ready[0] = true;
        ready[9] = true;
        let weights = [1, 0, 0, 0, 0, 0, 0, 0, 0, 3];
        let picks: Vec<u8> = (0..100)
            .map(|i| {
                choose_level(&ready, Some(&weights), f64::from(i) / 100.0)
                    .unwrap()
                    .get()
            })
            .collect();
        let low = picks.iter().filter(|&&p| p == 0).count();
        assert_eq!(low, 25, "priority 0 gets a quarter of the draws");
        let zero_weight = [0; LEVELS];
        assert_eq!(
            choose_level(&ready, Some(&zero_weight), 0.3).map(Priority::get),
            Some(9)
        );
    }

    #[test]
    fn every_level_in_use_may_have_work_at_start_and_no_other() {
        let levels = two_levels();
        assert!(levels.may_have_work(2) && levels.may_have_work(7));
        assert!(!levels.may_have_work(0) && !levels.may_have_work(9));
        assert_eq!(chosen(&levels), Some(7));
    }

    #[test]
    fn a_level_found_empty_is_not_chosen_until_a_signal_rings_for_it() {
        let mut levels = two_levels();
        levels.unflag(7);
        assert_eq!(chosen(&levels), Some(2));
        levels.unflag(2);
        assert!(!levels.any_may_have_work());
        assert_eq!(chosen(&levels), None);
        assert!(levels.rang(7, None), "a signal flags its level");
        assert_eq!(chosen(&levels), Some(7));
    }

    #[test]
    fn a_signal_for_the_level_the_idle_wait_is_on_does_not_flag_it() {
        let mut levels = two_levels();
        levels.unflag(2);
        assert!(
            !levels.rang(2, Some(2)),
            "the idle wait brings that task itself"
        );
        assert!(!levels.may_have_work(2));
        assert!(levels.rang(2, Some(7)));
        assert!(levels.may_have_work(2));
    }

    #[test]
    fn a_level_not_in_use_is_never_flagged() {
        let mut levels = two_levels();
        assert!(levels.rang(5, None), "rang, but");
        assert!(
            !levels.may_have_work(5),
            "a level without a consumer stays unflagged"
        );
        levels.flag(5);
        assert!(!levels.may_have_work(5));
        assert!(!levels.waited_task_left_work(5, Some(3)));
        assert!(!levels.may_have_work(5));
    }

    #[test]
    fn the_recheck_flags_every_level_in_use() {
        let mut levels = two_levels();
        levels.unflag(2);
        levels.unflag(7);
        levels.flag_all();
        assert!(levels.may_have_work(2) && levels.may_have_work(7));
        assert!(!levels.may_have_work(5));
    }

    #[test]
    fn a_fetch_that_got_less_than_it_asked_for_found_its_level_empty() {
        let levels = two_levels();
        let mut tally = FetchTally::new(&levels, 7, 3);
        assert!(!tally.counted(Some(5)));
        assert!(tally.found_empty(&levels), "one task of three");
        assert!(!tally.got_nothing());
        let nothing = FetchTally::new(&levels, 7, 3);
        assert!(nothing.got_nothing());
        assert!(nothing.found_empty(&levels));
    }

    #[test]
    fn a_full_fetch_found_its_level_empty_only_if_nothing_was_behind_its_last_task() {
        let levels = two_levels();
        let mut backlog = FetchTally::new(&levels, 7, 2);
        assert!(!backlog.counted(Some(9)));
        assert!(backlog.counted(Some(8)), "the second of two completes it");
        assert!(!backlog.found_empty(&levels));
        let mut last = FetchTally::new(&levels, 7, 1);
        assert!(last.counted(Some(0)));
        assert!(
            last.found_empty(&levels),
            "none behind: no fetch to find that out"
        );
        let mut unknown = FetchTally::new(&levels, 7, 1);
        assert!(unknown.counted(None));
        assert!(
            !unknown.found_empty(&levels),
            "unknown backlog: fetch again"
        );
    }

    #[test]
    fn a_fetch_that_raced_a_signal_does_not_find_its_level_empty() {
        let mut levels = two_levels();
        let tally = FetchTally::new(&levels, 7, 4);
        levels.rang(7, None);
        assert!(
            !tally.found_empty(&levels),
            "the signal came after the request was sent"
        );
        let other = FetchTally::new(&levels, 2, 4);
        levels.rang(7, None);
        assert!(
            other.found_empty(&levels),
            "a signal of another level does not count"
        );
    }

    #[test]
    fn the_idle_wait_goes_to_the_hint_then_the_last_level_then_the_lowest_in_use() {
        let mut levels = two_levels();
        assert_eq!(
            levels.wait_level(None),
            Some(2),
            "at first, the lowest in use"
        );
        levels.took_from(7);
        assert_eq!(levels.wait_level(None), Some(7));
        assert_eq!(levels.wait_level(Some(2)), Some(2), "a hint comes first");
        assert_eq!(
            levels.wait_level(Some(5)),
            Some(2),
            "a hint not in use is not one"
        );
        assert_eq!(LevelState::new([false; LEVELS]).wait_level(None), None);
    }

    #[test]
    fn the_idle_waits_task_flags_its_level_unless_nothing_was_behind_it() {
        let mut levels = two_levels();
        levels.unflag(2);
        assert!(!levels.waited_task_left_work(2, Some(0)));
        assert!(!levels.may_have_work(2));
        assert!(levels.waited_task_left_work(2, Some(1)));
        assert!(levels.may_have_work(2));
        levels.unflag(2);
        assert!(
            levels.waited_task_left_work(2, None),
            "unknown: fetch to find out"
        );
    }

    #[test]
    fn only_a_level_in_use_without_known_work_or_the_idle_wait_needs_a_signal() {
        let mut levels = two_levels();
        assert!(
            !levels.needs_signal(7, None),
            "flagged: fetched from, not signalled"
        );
        levels.unflag(7);
        assert!(levels.needs_signal(7, None));
        assert!(!levels.needs_signal(7, Some(7)), "the idle wait is on it");
        assert!(!levels.needs_signal(5, None), "not in use");
    }
}
