//! An ordered set of runs waiting for the dispatcher (queued runs waiting for a worker,
//! scheduled runs waiting to be offered ahead of their fire, due runs waiting for the firing
//! batch): FIFO order with O(1) membership, so adding a run already waiting is free (the
//! planner re-announces every queued run it sees). It never decides anything about a run.

use std::collections::{HashSet, VecDeque};

use kairos_domain::{RunId, ShardId};
use kairos_store::LeasedRun;

#[derive(Debug, Default)]
pub(super) struct RunQueue {
    order: VecDeque<LeasedRun>,
    ids: HashSet<RunId>,
}

impl RunQueue {
    pub(super) fn contains(&self, run: &RunId) -> bool {
        self.ids.contains(run)
    }

    pub(super) fn push_back(&mut self, run: LeasedRun) {
        if self.ids.insert(run.id) {
            self.order.push_back(run);
        }
    }

    pub(super) fn push_front(&mut self, run: LeasedRun) {
        if self.ids.insert(run.id) {
            self.order.push_front(run);
        }
    }

    pub(super) fn pop_front(&mut self) -> Option<LeasedRun> {
        let run = self.order.pop_front()?;
        self.ids.remove(&run.id);
        Some(run)
    }

    pub(super) fn drop_shard(&mut self, shard: ShardId) {
        let ids = &mut self.ids;
        self.order.retain(|run| {
            let keep = run.lease.shard() != shard;
            if !keep {
                ids.remove(&run.id);
            }
            keep
        });
    }
}
