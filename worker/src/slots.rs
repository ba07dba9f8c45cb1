//! The worker's capacity: how many runs may execute at once, shared by every scheduler stream.
//! A slot is reserved before an ack is sent and freed when the run's report is sent; it is
//! never over-committed, whatever the schedulers send (only runs re-attached after a restart
//! may count past the total).

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub struct Slots {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    total: u32,
    used: AtomicU32,
    freed: Notify,
}

/// A reserved slot; dropping it frees the slot.
#[derive(Debug)]
pub struct SlotGuard {
    slots: Slots,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots.inner.used.fetch_sub(1, Ordering::AcqRel);
        self.slots.inner.freed.notify_waiters();
    }
}

impl Slots {
    pub fn new(total: u32) -> Self {
        Self {
            inner: Arc::new(Inner {
                total,
                used: AtomicU32::new(0),
                freed: Notify::new(),
            }),
        }
    }

    pub fn free(&self) -> u32 {
        self.inner
            .total
            .saturating_sub(self.inner.used.load(Ordering::Acquire))
    }

    pub fn running(&self) -> u32 {
        self.inner.used.load(Ordering::Acquire)
    }

    /// Reserves a slot if one is free.
    pub fn try_reserve(&self) -> Option<SlotGuard> {
        self.inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.inner.total).then_some(used + 1)
            })
            .ok()
            .map(|_| SlotGuard {
                slots: self.clone(),
            })
    }

    /// Reserves a slot even past the total: for a run that is already running (re-attached
    /// after a restart), which must be counted whatever the current slot setting.
    pub fn reserve_even_if_full(&self) -> SlotGuard {
        self.inner.used.fetch_add(1, Ordering::AcqRel);
        SlotGuard {
            slots: self.clone(),
        }
    }

    /// Resolves the next time a slot is freed.
    pub async fn freed(&self) {
        self.inner.freed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_never_over_committed_and_come_back_on_drop() {
        let slots = Slots::new(2);
        let a = slots.try_reserve().unwrap();
        let _b = slots.try_reserve().unwrap();
        assert!(slots.try_reserve().is_none());
        assert_eq!(slots.free(), 0);
        drop(a);
        assert_eq!(slots.free(), 1);
        assert!(slots.try_reserve().is_some());
    }

    #[test]
    fn a_forced_reservation_counts_past_the_total_and_leaves_no_free_slot() {
        let slots = Slots::new(1);
        let _a = slots.try_reserve().unwrap();
        let b = slots.reserve_even_if_full();
        assert_eq!((slots.free(), slots.running()), (0, 2));
        drop(b);
        assert_eq!((slots.free(), slots.running()), (0, 1));
    }
}
