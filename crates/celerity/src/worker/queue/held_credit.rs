//! `HeldCredit`: the worker's credit (free task slots) a queue actor has taken for the pull request
//! it sends, and the rules for when it takes and gives it back.
//!
//! Plain data over the worker's semaphore: no actor and no I/O.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Credit acquired and not yet used by a fetched task.
#[derive(Debug, Default)]
pub(super) struct HeldCredit {
    permits: Vec<OwnedSemaphorePermit>,
}

impl HeldCredit {
    /// Takes free credit from `credit` until `max` units are held or none is free. Returns how many
    /// units are held.
    pub(super) fn top_up(&mut self, credit: &Arc<Semaphore>, max: usize) -> usize {
        while self.permits.len() < max {
            match credit.clone().try_acquire_owned() {
                Ok(permit) => self.permits.push(permit),
                Err(_) => break,
            }
        }
        self.permits.len()
    }

    /// Adds one unit acquired elsewhere (after waiting for credit).
    pub(super) fn hold(&mut self, permit: OwnedSemaphorePermit) {
        self.permits.push(permit);
    }

    /// One unit for a fetched task, if any is held.
    pub(super) fn take_one(&mut self) -> Option<OwnedSemaphorePermit> {
        self.permits.pop()
    }

    /// Gives all of it back: the queue is idle (other queues of the worker may use it) or stopping
    /// (in-flight tasks may need it).
    pub(super) fn release(&mut self) {
        self.permits.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_up_takes_free_credit_up_to_the_bound() {
        let credit = Arc::new(Semaphore::new(5));
        let mut held = HeldCredit::default();
        assert_eq!(held.top_up(&credit, 3), 3);
        assert_eq!(credit.available_permits(), 2);
        assert_eq!(
            held.top_up(&credit, 3),
            3,
            "already at the bound: takes no more"
        );
        assert_eq!(credit.available_permits(), 2);
        assert_eq!(held.top_up(&credit, 10), 5, "takes what is free");
        assert_eq!(credit.available_permits(), 0);
    }

    #[test]
    fn a_task_takes_one_unit_and_frees_it_when_done() {
        let credit = Arc::new(Semaphore::new(2));
        let mut held = HeldCredit::default();
        held.top_up(&credit, 2);
        let permit = held.take_one().expect("two units held");
        assert_eq!(credit.available_permits(), 0, "the task holds its unit");
        drop(permit);
        assert_eq!(credit.available_permits(), 1);
        assert!(held.take_one().is_some());
        assert!(held.take_one().is_none(), "none left");
    }

    #[test]
    fn release_gives_every_unit_back() {
        let credit = Arc::new(Semaphore::new(4));
        let mut held = HeldCredit::default();
        held.top_up(&credit, 3);
        let waited = credit
            .clone()
            .try_acquire_owned()
            .expect("one unit is free");
        held.hold(waited);
        assert_eq!(credit.available_permits(), 0);
        held.release();
        assert_eq!(credit.available_permits(), 4);
        assert_eq!(held.top_up(&credit, 0), 0);
    }
}
