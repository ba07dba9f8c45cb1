//! The overlap rule, as a pure function: what a fire of a schedule does given the schedule's
//! runs still in progress, under its overlap policy.
//!
//! Storage calls it inside the transaction that starts a fire (the scheduler's firing batch, a
//! manual trigger), with the schedule's in-progress runs read under a lock, and writes what it
//! says; nothing here may read or write anything.

use crate::{OverlapPolicy, RunId};

/// A run of the schedule that is still in progress, as the overlap rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveRun {
    pub id: RunId,
    pub kind: ActiveKind,
}

/// Why a run counts as in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveKind {
    /// Running on a worker.
    Running,
    /// Queued, waiting for a worker.
    Queued,
    /// Queued, but held until the schedule's other runs end (`buffer_one`, `replace`).
    Held,
    /// A retry waiting for its backoff: the fire it retries is not over yet.
    PendingRetry,
}

/// What becomes of the fire itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireDecision {
    /// Queue it (and start it as usual).
    Start,
    /// Record it `skipped` with reason `overlap`.
    Skip,
    /// Queue it held: it starts when the schedule's other runs have ended. `blocked_by` is
    /// the run it waits for (shown to the customer).
    Hold { blocked_by: RunId },
}

/// The full outcome: the fire's fate plus the runs a `replace` ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlapOutcome {
    pub fire: FireDecision,
    /// Not-started runs to cancel now (reason `replaced`).
    pub cancel: Vec<RunId>,
    /// Running runs whose worker must stop them (cancel requested, reason `replaced`).
    pub stop: Vec<RunId>,
}

impl OverlapOutcome {
    fn only(fire: FireDecision) -> Self {
        Self {
            fire,
            cancel: Vec::new(),
            stop: Vec::new(),
        }
    }
}

/// Decides a fire under `policy` given the schedule's other runs in progress (`active`, the
/// fire itself excluded).
///
/// - `allow`: start, whatever runs.
/// - `skip`: skip if anything is in progress.
/// - `buffer_one`: start if nothing is in progress; else hold, unless a fire is already held,
///   in which case skip (at most one fire waits).
/// - `replace`: cancel everything not yet running (held fires included), stop everything
///   running, and hold the fire until the stopped runs have ended (start at once if none ran).
pub fn decide(policy: OverlapPolicy, active: &[ActiveRun]) -> OverlapOutcome {
    if active.is_empty() || policy == OverlapPolicy::Allow {
        return OverlapOutcome::only(FireDecision::Start);
    }
    let running = active.iter().find(|a| a.kind == ActiveKind::Running);
    match policy {
        OverlapPolicy::Allow => OverlapOutcome::only(FireDecision::Start),
        OverlapPolicy::Skip => OverlapOutcome::only(FireDecision::Skip),
        OverlapPolicy::BufferOne => {
            if active.iter().any(|a| a.kind == ActiveKind::Held) {
                return OverlapOutcome::only(FireDecision::Skip);
            }
            let blocked_by = running.unwrap_or(&active[0]).id;
            OverlapOutcome::only(FireDecision::Hold { blocked_by })
        }
        OverlapPolicy::Replace => {
            let (stop, cancel): (Vec<ActiveRun>, Vec<ActiveRun>) =
                active.iter().partition(|a| a.kind == ActiveKind::Running);
            OverlapOutcome {
                fire: match running {
                    Some(r) => FireDecision::Hold { blocked_by: r.id },
                    None => FireDecision::Start,
                },
                cancel: cancel.into_iter().map(|a| a.id).collect(),
                stop: stop.into_iter().map(|a| a.id).collect(),
            }
        }
    }
}

/// Whether a held fire may start: nothing but held fires is left in progress.
pub fn may_release(active: &[ActiveRun]) -> bool {
    active.iter().all(|a| a.kind == ActiveKind::Held)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ActiveKind::*;

    fn runs(kinds: &[ActiveKind]) -> Vec<ActiveRun> {
        kinds
            .iter()
            .map(|kind| ActiveRun {
                id: RunId::generate(),
                kind: *kind,
            })
            .collect()
    }

    const ALL: [OverlapPolicy; 4] = [
        OverlapPolicy::Allow,
        OverlapPolicy::Skip,
        OverlapPolicy::BufferOne,
        OverlapPolicy::Replace,
    ];

    #[test]
    fn with_nothing_in_progress_every_policy_starts() {
        for policy in ALL {
            assert_eq!(
                decide(policy, &[]),
                OverlapOutcome::only(FireDecision::Start),
                "{policy:?}"
            );
        }
    }

    #[test]
    fn allow_starts_alongside_anything() {
        let active = runs(&[Running, Queued, Held, PendingRetry]);
        assert_eq!(
            decide(OverlapPolicy::Allow, &active),
            OverlapOutcome::only(FireDecision::Start)
        );
    }

    #[test]
    fn skip_skips_while_anything_is_in_progress_even_a_pending_retry() {
        for kind in [Running, Queued, Held, PendingRetry] {
            assert_eq!(
                decide(OverlapPolicy::Skip, &runs(&[kind])).fire,
                FireDecision::Skip,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn buffer_one_holds_one_fire_behind_the_running_one_and_skips_the_next() {
        let active = runs(&[Queued, Running]);
        assert_eq!(
            decide(OverlapPolicy::BufferOne, &active).fire,
            FireDecision::Hold {
                blocked_by: active[1].id
            },
            "it waits for the running one"
        );
        let with_held = runs(&[Running, Held]);
        assert_eq!(
            decide(OverlapPolicy::BufferOne, &with_held).fire,
            FireDecision::Skip,
            "at most one fire waits"
        );
        let retrying = runs(&[PendingRetry]);
        assert_eq!(
            decide(OverlapPolicy::BufferOne, &retrying).fire,
            FireDecision::Hold {
                blocked_by: retrying[0].id
            },
            "a fire still retrying is in progress"
        );
    }

    #[test]
    fn replace_cancels_what_has_not_started_stops_what_runs_and_waits_for_it() {
        let active = runs(&[Running, Held, Queued, PendingRetry]);
        let outcome = decide(OverlapPolicy::Replace, &active);
        assert_eq!(
            outcome.fire,
            FireDecision::Hold {
                blocked_by: active[0].id
            }
        );
        assert_eq!(outcome.stop, [active[0].id]);
        assert_eq!(outcome.cancel, [active[1].id, active[2].id, active[3].id]);

        let queued = runs(&[Queued]);
        let outcome = decide(OverlapPolicy::Replace, &queued);
        assert_eq!(
            outcome.fire,
            FireDecision::Start,
            "nothing runs: start at once"
        );
        assert_eq!(outcome.cancel, [queued[0].id]);
        assert!(outcome.stop.is_empty());
    }

    #[test]
    fn a_held_fire_is_released_once_only_held_fires_remain() {
        assert!(may_release(&[]));
        assert!(may_release(&runs(&[Held])));
        for kind in [Running, Queued, PendingRetry] {
            assert!(!may_release(&runs(&[Held, kind])), "{kind:?}");
        }
    }
}
