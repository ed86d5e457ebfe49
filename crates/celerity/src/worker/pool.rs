//! [`Pool`]: a worker's execution slots and fetch credit, which `pool_grow` and `pool_shrink`
//! change at runtime.
//!
//! A slot is a permit of the slots semaphore, held while a body runs; fetch credit is slots ×
//! prefetch multiplier, held from fetch to the task's end. Growing adds permits to both. Shrinking
//! forgets the free permits at once and, for those held by running tasks, takes them as the tasks
//! end and forgets them then: no running task is stopped, and the pool never goes below one slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

/// The most slots one worker holds at once (a bound far above any sensible setting, and below
/// the semaphore's own limit).
pub(crate) const MAX_SLOTS: usize = 1 << 20;

/// Why a pool change was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum PoolError {
    #[error("give a number of slots above 0")]
    Zero,
    #[error("the pool has {size} slots; growing by {by} would pass the limit of {MAX_SLOTS}")]
    TooLarge { size: usize, by: usize },
    #[error("the pool has {size} slots; shrinking by {by} would leave none (one must stay)")]
    TooSmall { size: usize, by: usize },
}

/// Execution slots and fetch credit.
pub(crate) struct Pool {
    /// Fetch credit: slots × prefetch multiplier.
    pub(crate) credit: Arc<Semaphore>,
    /// Execution slots.
    pub(crate) slots: Arc<Semaphore>,
    prefetch_multiplier: usize,
    /// The slots the pool has (or will have once the tasks holding removed ones end).
    size: AtomicUsize,
}

impl Pool {
    /// A pool of `slots` slots (at most [`MAX_SLOTS`]) and `slots × prefetch_multiplier` credit.
    pub(crate) fn new(slots: usize, prefetch_multiplier: usize) -> Self {
        let slots = slots.clamp(1, MAX_SLOTS);
        let prefetch_multiplier = prefetch_multiplier.max(1);
        Self {
            credit: Arc::new(Semaphore::new(credit_of(slots, prefetch_multiplier))),
            slots: Arc::new(Semaphore::new(slots)),
            prefetch_multiplier,
            size: AtomicUsize::new(slots),
        }
    }

    /// The slots the pool has.
    pub(crate) fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// Adds `by` slots (and their credit); returns the new size.
    pub(crate) fn grow(&self, by: usize) -> Result<usize, PoolError> {
        if by == 0 {
            return Err(PoolError::Zero);
        }
        let size = self
            .size
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |size| {
                size.checked_add(by).filter(|grown| *grown <= MAX_SLOTS)
            })
            .map_err(|size| PoolError::TooLarge { size, by })?;
        let grown = size + by;
        let credit =
            credit_of(grown, self.prefetch_multiplier) - credit_of(size, self.prefetch_multiplier);
        self.slots.add_permits(by);
        self.credit.add_permits(credit);
        Ok(grown)
    }

    /// Removes `by` slots (and their credit), the free ones now and those in use as their tasks
    /// end, on `runtime`; returns the new size.
    pub(crate) fn shrink(
        &self,
        by: usize,
        runtime: &tokio::runtime::Handle,
    ) -> Result<usize, PoolError> {
        if by == 0 {
            return Err(PoolError::Zero);
        }
        let size = self
            .size
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |size| {
                size.checked_sub(by).filter(|left| *left >= 1)
            })
            .map_err(|size| PoolError::TooSmall { size, by })?;
        let left = size - by;
        let credit =
            credit_of(size, self.prefetch_multiplier) - credit_of(left, self.prefetch_multiplier);
        forget(&self.slots, by, runtime);
        forget(&self.credit, credit, runtime);
        Ok(left)
    }
}

/// The fetch credit of `slots` slots.
fn credit_of(slots: usize, prefetch_multiplier: usize) -> usize {
    slots.saturating_mul(prefetch_multiplier).min(MAX_SLOTS)
}

/// Removes `n` permits from `semaphore`: the free ones now, the rest as they are released.
fn forget(semaphore: &Arc<Semaphore>, n: usize, runtime: &tokio::runtime::Handle) {
    let rest = n - semaphore.forget_permits(n);
    if rest == 0 {
        return;
    }
    let semaphore = semaphore.clone();
    let rest = u32::try_from(rest).unwrap_or(u32::MAX);
    drop(runtime.spawn(async move {
        if let Ok(permits) = semaphore.acquire_many_owned(rest).await {
            permits.forget();
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn growing_adds_slots_and_their_credit() {
        let pool = Pool::new(2, 3);
        assert_eq!(pool.grow(2), Ok(4));
        assert_eq!(pool.slots.available_permits(), 4);
        assert_eq!(pool.credit.available_permits(), 12);
        assert_eq!(pool.grow(0), Err(PoolError::Zero));
        assert!(matches!(
            pool.grow(MAX_SLOTS),
            Err(PoolError::TooLarge { .. })
        ));
        assert_eq!(pool.size(), 4);
    }

    #[tokio::test]
    async fn shrinking_takes_free_slots_now_and_busy_ones_when_released() {
        let runtime = tokio::runtime::Handle::current();
        let pool = Pool::new(3, 1);
        let busy = pool.slots.clone().acquire_many_owned(2).await.unwrap();
        assert_eq!(pool.shrink(2, &runtime), Ok(1));
        assert_eq!(
            pool.slots.available_permits(),
            0,
            "the free one went at once"
        );
        drop(busy);
        // The released permits are taken by the spawned forget: one stays.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while pool.slots.available_permits() != 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the busy slot was never forgotten"
            );
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.credit.available_permits(), 1);
        assert!(matches!(
            pool.shrink(1, &runtime),
            Err(PoolError::TooSmall { size: 1, by: 1 })
        ));
    }
}
