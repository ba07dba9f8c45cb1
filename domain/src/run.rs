//! The run state machine: which states exist, which moves are allowed, and the reasons a run
//! ended the way it did.
//!
//! States only move forward (I3); this module is the one place that says what "forward" means.
//! Storage enforces it with conditional updates, and must never write a move this table refuses.

use std::fmt;

/// Where a run is in its life. `scheduled → queued → running → succeeded | failed | cancelled`,
/// and `scheduled | queued → cancelled | skipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    Scheduled,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Skipped,
}

impl RunState {
    pub const ALL: [RunState; 7] = [
        RunState::Scheduled,
        RunState::Queued,
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
        RunState::Skipped,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RunState::Scheduled => "scheduled",
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::Skipped => "skipped",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Terminal states are final: no move leaves them.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled | RunState::Skipped
        )
    }

    /// Whether `self → next` is a legal move.
    pub const fn can_move_to(self, next: RunState) -> bool {
        use RunState::*;
        matches!(
            (self, next),
            (Scheduled, Queued | Cancelled | Skipped)
                | (Queued, Running | Cancelled | Skipped)
                | (Running, Succeeded | Failed | Cancelled)
        )
    }

    /// The states from which a move to `next` is legal (for conditional SQL updates).
    pub fn predecessors(next: RunState) -> Vec<RunState> {
        Self::ALL
            .into_iter()
            .filter(|s| s.can_move_to(next))
            .collect()
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What created a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    Schedule,
    Manual,
    Retry,
    Backfill,
}

impl Trigger {
    pub const ALL: [Trigger; 4] = [
        Trigger::Schedule,
        Trigger::Manual,
        Trigger::Retry,
        Trigger::Backfill,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Retry => "retry",
            Trigger::Backfill => "backfill",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == raw)
    }
}

/// Why a run `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    ExitCode,
    OomKilled,
    TimedOut,
    ImagePullFailed,
    StartFailed,
    WorkerLost,
}

impl FailureReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureReason::ExitCode => "exit_code",
            FailureReason::OomKilled => "oom_killed",
            FailureReason::TimedOut => "timed_out",
            FailureReason::ImagePullFailed => "image_pull_failed",
            FailureReason::StartFailed => "start_failed",
            FailureReason::WorkerLost => "worker_lost",
        }
    }
}

/// Why a fire was `skipped` instead of run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    Overlap,
    Missed,
}

impl SkipReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            SkipReason::Overlap => "overlap",
            SkipReason::Missed => "missed",
        }
    }
}

/// Reasons recorded with `cancelled`.
pub mod cancel_reason {
    /// The customer cancelled the run.
    pub const REQUESTED: &str = "cancel_requested";
    /// The schedule changed; the run was materialized from the old version (I4).
    pub const SCHEDULE_UPDATED: &str = "schedule_updated";
    pub const SCHEDULE_PAUSED: &str = "schedule_paused";
    pub const SCHEDULE_DELETED: &str = "schedule_deleted";
    pub const JOB_DELETED: &str = "job_deleted";
    /// A newer fire of the schedule replaced it (overlap policy `replace`).
    pub const REPLACED: &str = "replaced";
}

/// Reasons recorded on transitions that do not end a run.
pub mod event_reason {
    /// `scheduled → queued` of a fire held behind the schedule's running run (overlap policies
    /// `buffer_one` and `replace`): it starts once that run has ended.
    pub const OVERLAP_HELD: &str = "overlap_held";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_are_final() {
        for from in RunState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in RunState::ALL {
                assert!(!from.can_move_to(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn states_only_move_forward() {
        let rank = |s: RunState| match s {
            RunState::Scheduled => 0,
            RunState::Queued => 1,
            RunState::Running => 2,
            _ => 3,
        };
        for from in RunState::ALL {
            for to in RunState::ALL {
                if from.can_move_to(to) {
                    assert!(rank(to) > rank(from), "{from} -> {to}");
                }
            }
        }
    }

    #[test]
    fn the_documented_moves_are_allowed() {
        use RunState::*;
        for (from, to) in [
            (Scheduled, Queued),
            (Queued, Running),
            (Running, Succeeded),
            (Running, Failed),
            (Running, Cancelled),
            (Scheduled, Cancelled),
            (Queued, Cancelled),
            (Scheduled, Skipped),
            (Queued, Skipped),
        ] {
            assert!(from.can_move_to(to), "{from} -> {to}");
        }
        assert!(!Scheduled.can_move_to(Running));
        assert!(!Running.can_move_to(Skipped));
        assert_eq!(
            RunState::predecessors(Cancelled),
            [Scheduled, Queued, Running]
        );
    }

    #[test]
    fn names_round_trip() {
        for s in RunState::ALL {
            assert_eq!(RunState::parse(s.as_str()), Some(s));
        }
        for t in Trigger::ALL {
            assert_eq!(Trigger::parse(t.as_str()), Some(t));
        }
        assert_eq!(RunState::parse("done"), None);
    }
}
