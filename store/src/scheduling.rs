//! What the scheduler and the dispatch path need from storage (`SchedulerStore`) and the
//! fencing token that gates every write of a shard (`ShardLease`); nothing here may mint a
//! lease except `SchedulerStore::claim_shard`, and no write here may skip the fence check.
//!
//! The API keeps using [`crate::Store`]; the scheduler crate depends on this trait only. Every
//! write takes a `&ShardLease` and fails with [`crate::StoreError::Fenced`], writing nothing,
//! once a newer owner has claimed the shard (I1, I8). Every call is one transaction, every
//! state change is conditional on the state it moves from and records one `run_events` row
//! (I3), and list arguments are written in one batched statement.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kairos_domain::{
    Command, Env, FailureReason, ImageRef, JobId, MemoryLimit, RunId, RunState, RunTimeout,
    ScheduleId, ScheduleSpec, ShardId, SkipReason, TenantId, Trigger, run::cancel_reason,
};

use crate::Result;

/// Most bytes of a run's output tail that are stored; a longer tail keeps its end.
pub const LOG_TAIL_MAX_BYTES: usize = 64 * 1024;

/// Proof that this node claimed `shard` at fence token `token`. Only
/// [`SchedulerStore::claim_shard`] makes one; every write for the shard carries it and the
/// store refuses it once a newer token has been claimed.
///
/// ```compile_fail
/// // Outside the store a lease cannot be made up, only claimed.
/// let shard = kairos_domain::ShardId::new(0).expect("shard");
/// let lease = kairos_store::ShardLease { shard, token: i64::MAX };
/// ```
///
/// ```
/// // (The same setup without the forged lease compiles, so the failure above is the forgery.)
/// let shard = kairos_domain::ShardId::new(0).expect("shard");
/// fn takes(_: &kairos_store::ShardLease) {}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShardLease {
    shard: ShardId,
    token: i64,
}

impl ShardLease {
    /// Minted by implementations of `claim_shard` only, after the claim committed.
    pub(crate) fn new(shard: ShardId, token: i64) -> Self {
        Self { shard, token }
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// The fence token (the etcd revision at which the shard was claimed).
    pub fn token(&self) -> i64 {
        self.token
    }
}

/// A schedule of the shard whose next fire is due within the planning horizon.
#[derive(Debug, Clone)]
pub struct DueSchedule {
    pub id: ScheduleId,
    pub tenant_id: TenantId,
    pub job_id: JobId,
    /// The version the fires are computed from; `materialize` drops them if it moved (I4).
    pub version: i64,
    /// Cadence, time zone, bounds, and the overlap, catch-up and jitter policies.
    pub spec: ScheduleSpec,
    pub next_fire_at: DateTime<Utc>,
    /// Fires recorded so far (what `max_runs` counts).
    pub fire_count: u64,
}

impl DueSchedule {
    /// The schedule's fires from its fire count on.
    pub fn timeline(&self) -> kairos_domain::Timeline<'_> {
        self.spec.timeline(self.id, self.fire_count)
    }
}

/// How a fire is recorded by `materialize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireState {
    /// A run that will be queued at its fire time.
    Scheduled,
    /// A fire that will not run (overlap or missed), recorded so it is visible (I2).
    Skipped(SkipReason),
}

impl FireState {
    pub fn run_state(self) -> RunState {
        match self {
            FireState::Scheduled => RunState::Scheduled,
            FireState::Skipped(_) => RunState::Skipped,
        }
    }

    pub fn reason(self) -> Option<&'static str> {
        match self {
            FireState::Scheduled => None,
            FireState::Skipped(reason) => Some(reason.as_str()),
        }
    }
}

/// One fire to record, computed from version `schedule_version` of the schedule.
#[derive(Debug, Clone)]
pub struct Materialize {
    pub schedule_id: ScheduleId,
    pub schedule_version: i64,
    pub fire_time: DateTime<Utc>,
    pub state: FireState,
    /// The schedule's next fire after this one (`None`: nothing left to fire). Of several
    /// fires of one schedule in a batch, the latest fire's value is written; it only ever
    /// moves `next_fire_at` forward.
    pub next_fire_at: Option<DateTime<Utc>>,
}

/// The run of a materialized fire: created by this call, or found from an earlier one (a
/// retried call after a timeout or a crash; I1 keeps it unique).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaterializedRun {
    pub id: RunId,
    pub schedule_id: ScheduleId,
    pub fire_time: DateTime<Utc>,
    pub state: RunState,
    /// `false` when the fire already had its run of attempt 1.
    pub created: bool,
}

/// What [`SchedulerStore::materialize_across`] recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaterializedAcross {
    /// The run of every fire kept, with its shard, in fire order.
    pub runs: Vec<(ShardId, MaterializedRun)>,
    /// Shards whose lease was superseded: nothing of theirs was written.
    pub fenced: Vec<ShardId>,
}

/// A non-terminal run of a shard, as recovery and dispatch see it.
#[derive(Debug, Clone)]
pub struct PendingRun {
    pub id: RunId,
    pub tenant_id: TenantId,
    pub job_id: JobId,
    pub schedule_id: Option<ScheduleId>,
    pub schedule_version: Option<i64>,
    pub trigger: Trigger,
    pub attempt: u32,
    pub fire_time: DateTime<Utc>,
    /// When it is due: its fire time, or a retry's backoff time.
    pub due_at: DateTime<Utc>,
    pub state: RunState,
    pub worker_id: Option<String>,
    pub cancel_requested: bool,
    pub started_at: Option<DateTime<Utc>>,
    /// The job's timeout, to spot runs that outlived it.
    pub timeout: RunTimeout,
}

/// A retry waiting for its backoff: a `scheduled` run (trigger `retry`) due at `due_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueRetry {
    pub shard: ShardId,
    pub id: RunId,
    /// The fire it retries (its partition key).
    pub fire_time: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
}

/// A queued run the caller should now hand to dispatch: a held fire released because the
/// schedule's other runs ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleasedRun {
    pub shard: ShardId,
    pub id: RunId,
    pub fire_time: DateTime<Utc>,
}

/// What a batch that ends runs did besides moving them: the retries it created and the held
/// fires it released.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndedRuns {
    /// The runs it moved, in the order asked.
    pub moved: Vec<RunId>,
    /// Retries created for runs it failed (see [`SchedulerStore::finish_runs`]).
    pub retries: Vec<DueRetry>,
    /// Held fires released because nothing else of their schedule is in progress.
    pub released: Vec<ReleasedRun>,
}

/// Everything a worker needs to start a run it acked. `Debug` shows env names only.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub run_id: RunId,
    pub tenant_id: TenantId,
    pub job_id: JobId,
    pub schedule_id: Option<ScheduleId>,
    pub image: ImageRef,
    pub command: Command,
    /// The job's env, overridden by the run's own (execute-now overrides).
    pub env: Env,
    pub memory: MemoryLimit,
    pub timeout: RunTimeout,
    pub fire_time: DateTime<Utc>,
    pub attempt: u32,
    pub worker_id: String,
    pub started_at: DateTime<Utc>,
}

/// What a worker needs to decide on and start a `queued` run, offered before its ack (the ack
/// then moves it to `running`, or refuses if the run was cancelled or changed meanwhile).
/// `Debug` shows env names only.
#[derive(Debug, Clone)]
pub struct Offer {
    pub run_id: RunId,
    pub job_id: JobId,
    pub image: ImageRef,
    pub command: Command,
    /// The job's env, overridden by the run's own.
    pub env: Env,
    pub memory: MemoryLimit,
    pub timeout: RunTimeout,
    pub fire_time: DateTime<Utc>,
    pub attempt: u32,
    pub tenant_id: TenantId,
    /// The run's shard.
    pub shard: ShardId,
    /// Credentials for pulling `image`, when the job names a registry credential.
    pub registry_auth: Option<RegistryAuth>,
}

/// Opened registry credentials for one pull. `Debug` hides the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    pub server: String,
    pub username: String,
    pub password: kairos_domain::Secret,
}

/// A run of a shard this node owns, as the firing and dispatch path names it in batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedRun {
    pub lease: ShardLease,
    pub id: RunId,
    /// The run's fire time, when known: it is the partition key, so a batch whose fire times
    /// are all known reads only the partitions they fall in.
    pub fire_time: Option<DateTime<Utc>>,
}

/// A due run to fire. With `worker_id`, a worker holds it prepared (it accepted an upcoming
/// assignment) and the run starts on it at once, under the same checks as an ack.
#[derive(Debug, Clone)]
pub struct DueRun {
    pub run: LeasedRun,
    pub worker_id: Option<String>,
}

/// What [`SchedulerStore::fire_runs`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FiredRuns {
    /// Moved `scheduled` → `queued`: they wait for a worker's ack.
    pub queued: Vec<RunId>,
    /// Moved `scheduled` → `queued` → `running` on the worker that held them.
    pub started: Vec<RunId>,
    /// Moved `scheduled` → `skipped` (reason `overlap`): the overlap policy refused them.
    pub skipped: Vec<RunId>,
    /// Moved `scheduled` → `queued` but held by the overlap policy: they are not to be
    /// dispatched until a later call releases them.
    pub held: Vec<RunId>,
    /// Running runs a `replace` asked to stop (cancel requested): their workers must be told.
    pub stop: Vec<(ShardId, RunId)>,
    /// Shards whose lease was superseded: nothing of theirs was written.
    pub fenced: Vec<ShardId>,
}

/// A worker's ack of a queued run, batched by [`SchedulerStore::ack_runs`].
#[derive(Debug, Clone)]
pub struct RunAck {
    pub run: LeasedRun,
    pub worker_id: String,
}

/// What [`SchedulerStore::ack_runs`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckedRuns {
    /// Moved `queued` → `running`: their workers may start them.
    pub started: Vec<RunId>,
    /// Lost the race (cancelled, schedule changed, job deleted, not queued, not the shard's):
    /// their workers must not start them.
    pub refused: Vec<RunId>,
    /// Shards whose lease was superseded: nothing of theirs was written.
    pub fenced: Vec<ShardId>,
}

/// A worker's report of a run's end, batched by [`SchedulerStore::finish_runs`].
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run: LeasedRun,
    pub outcome: RunOutcome,
}

/// What [`SchedulerStore::finish_runs`] did, per run, in the order asked.
#[derive(Debug, Default)]
pub struct FinishedRuns {
    /// Each report's result, as [`SchedulerStore::finish_run`] would answer it alone.
    pub results: Vec<(RunId, Result<FinishedRun>)>,
    /// Retries created for the runs that failed.
    pub retries: Vec<DueRetry>,
    /// Held fires released because nothing else of their schedule is in progress.
    pub released: Vec<ReleasedRun>,
    /// Shards whose lease was superseded: nothing of theirs was written.
    pub fenced: Vec<ShardId>,
}

/// A committed change the API announced (NOTIFY): something in `shard` wants attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardChange {
    pub kind: ChangeKind,
    pub shard: ShardId,
    /// The queued run the change is about, with its fire time, when the hint names one
    /// (execute now, trigger): the shard's owner can offer it without a scan.
    pub run: Option<(RunId, DateTime<Utc>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A schedule was created, edited, paused, resumed or deleted.
    Schedule,
    /// A run was queued directly (execute now, trigger, backfill).
    RunQueued,
    /// A cancel was asked for a running run: its worker must stop it.
    CancelRequested,
}

/// How a run ended, as its worker (or the scheduler) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalState {
    Succeeded,
    Failed(FailureReason),
    /// Stopped after a cancel request.
    Cancelled,
}

impl TerminalState {
    pub fn run_state(self) -> RunState {
        match self {
            TerminalState::Succeeded => RunState::Succeeded,
            TerminalState::Failed(_) => RunState::Failed,
            TerminalState::Cancelled => RunState::Cancelled,
        }
    }

    pub fn reason(self) -> Option<&'static str> {
        match self {
            TerminalState::Succeeded => None,
            TerminalState::Failed(reason) => Some(reason.as_str()),
            TerminalState::Cancelled => Some(cancel_reason::REQUESTED),
        }
    }
}

/// The end of a run: its final state, exit code and output tail.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub state: TerminalState,
    pub exit_code: Option<i32>,
    /// The end of the output; stored capped at [`LOG_TAIL_MAX_BYTES`] (keeping the end).
    pub log_tail: String,
    /// Whether the worker already dropped the start of the output.
    pub log_truncated: bool,
    /// Bytes of output written in all, when the worker counted them.
    pub total_bytes: Option<u64>,
}

/// The live output of a running run, as its worker last sent it.
#[derive(Debug, Clone)]
pub struct LiveLog {
    pub run: LeasedRun,
    /// The end of the output so far; stored capped at [`LOG_TAIL_MAX_BYTES`].
    pub tail: String,
    /// Bytes of output written so far.
    pub total_bytes: u64,
}

/// What `finish_run` left stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinishedRun {
    /// The run's terminal state: the reported one if `applied`, else the one stored before.
    pub state: RunState,
    /// Whether this call made the transition (a repeated or late report does not).
    pub applied: bool,
}

/// Storage for the scheduler (planning, firing, recovery) and the dispatch of runs to workers.
/// Implementations: [`crate::PgStore`] and [`crate::SqliteStore`]. The suite in
/// `conformance_scheduling` runs against each.
#[async_trait]
pub trait SchedulerStore: Send + Sync + std::fmt::Debug + 'static {
    /// Records `owner` as the holder of `shard` at `token` if `token` is greater than the
    /// shard's current token, else fails with `Fenced` (an older or equal claim). Waits for
    /// the writes of the previous holder that are in flight; once it returns, they all fail.
    async fn claim_shard(&self, shard: ShardId, token: i64, owner: &str) -> Result<ShardLease>;

    /// The highest token any shard has been claimed at, 0 if none ever was. A coordinator
    /// that mints its own tokens (the local one) starts above it, so its claims are newer.
    async fn highest_fence_token(&self) -> Result<i64>;

    /// Unpaused schedules of the shard whose `next_fire_at <= until`, earliest first, at most
    /// `limit`.
    async fn due_schedules(
        &self,
        lease: &ShardLease,
        until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueSchedule>>;

    /// Records the fires as runs of attempt 1 (trigger `schedule`, the fire's schedule
    /// version) with their creation events and advances the schedules' `next_fire_at`, in one
    /// transaction. Fires of a schedule that was since edited, paused, deleted, or is not of
    /// this shard are dropped (I4); a fire that already has its run of that version creates
    /// nothing (I1) and answers that run. Each schedule's fire count grows by the fires this
    /// call created, its `last_fire_at` moves to the latest of them, and its `next_fire_at`
    /// becomes `None` once the count reaches `max_runs`. Returns the run of every fire kept,
    /// in fire order.
    async fn materialize(
        &self,
        lease: &ShardLease,
        fires: &[Materialize],
    ) -> Result<Vec<MaterializedRun>>;

    /// [`Self::materialize`] for the fires of many shards in one transaction; the fires of a
    /// superseded lease are left and its shard reported.
    async fn materialize_across(
        &self,
        batches: &[(ShardLease, Vec<Materialize>)],
    ) -> Result<MaterializedAcross>;

    /// Every `scheduled`, `queued` and `running` run of the shard, by fire time (recovery, I2).
    async fn shard_pending_runs(&self, lease: &ShardLease) -> Result<Vec<PendingRun>>;

    /// `scheduled` → `queued` for those of the runs (of the shard) still scheduled; returns
    /// the ids it moved.
    async fn queue_runs(&self, lease: &ShardLease, run_ids: &[RunId]) -> Result<Vec<RunId>>;

    /// `scheduled` | `queued` → `skipped` with `reason` for those of the runs still there;
    /// answers the ids it moved and the held fires it released (a skipped queued run ends
    /// what its schedule had in progress, as in [`Self::finish_runs`]).
    async fn skip_runs(
        &self,
        lease: &ShardLease,
        run_ids: &[RunId],
        reason: SkipReason,
    ) -> Result<EndedRuns>;

    /// `queued` → `running` on `worker_id`, if the run is still queued, not held by the
    /// overlap policy, no cancel was requested and its schedule is still at the version it was
    /// computed from (I4).
    /// `None` when that race was lost: the worker must not start the run. `NotFound` if the
    /// run is not the shard's.
    async fn ack_run(
        &self,
        lease: &ShardLease,
        run_id: RunId,
        worker_id: &str,
    ) -> Result<Option<Assignment>>;

    /// `running` → the outcome's terminal state, with exit code, log tail and finish time. A
    /// report for a run that is already terminal changes nothing and answers the stored state
    /// (I3); one for a run that has not started is `FailedPrecondition`, one for a run that is
    /// not the shard's `NotFound`.
    async fn finish_run(
        &self,
        lease: &ShardLease,
        run_id: RunId,
        outcome: &RunOutcome,
    ) -> Result<FinishedRun>;

    /// `running` → `failed` (reason `worker_lost`) for those of the runs still running;
    /// answers the ids it moved, the retries it created and the held fires it released, with
    /// the rules of [`Self::finish_runs`].
    async fn fail_lost_runs(&self, lease: &ShardLease, run_ids: &[RunId]) -> Result<EndedRuns>;

    /// The shard's `queued` runs not held by the overlap policy, oldest fire first, at most
    /// `limit` (dispatch after a restart).
    async fn queued_runs(&self, lease: &ShardLease, limit: u32) -> Result<Vec<PendingRun>>;

    /// Due schedules of several owned shards in one scan, with their shard (a read: the
    /// node-level planner's round trip; the writes that follow are fenced per shard).
    async fn due_schedules_across(
        &self,
        shards: &[ShardId],
        until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(ShardId, DueSchedule)>>;

    /// Running runs of several shards whose cancel was asked, with their fire times (a read:
    /// the safety net behind the cancel hint).
    async fn cancel_requested_across(
        &self,
        shards: &[ShardId],
        limit: u32,
    ) -> Result<Vec<(ShardId, RunId, DateTime<Utc>)>>;

    /// Queued, not cancel-requested runs of several shards that the overlap policy does not
    /// hold, with their fire times, oldest first (a read).
    async fn queued_runs_across(
        &self,
        shards: &[ShardId],
        limit: u32,
    ) -> Result<Vec<(ShardId, RunId, DateTime<Utc>)>>;

    /// What workers need to start these runs; only runs of the shard still `queued`, not held
    /// and not cancel-requested are returned. Reads only: the ack makes the decision.
    async fn run_offers(&self, lease: &ShardLease, run_ids: &[RunId]) -> Result<Vec<Offer>>;

    /// Fires due runs of many shards in one transaction: each still `scheduled` moves to
    /// `queued`, and one a worker holds (`worker_id`) moves on to `running` on it if it may
    /// start (no cancel requested, its schedule still at the run's version (I4), its job not
    /// deleted). Runs of superseded leases are left alone and their shards reported.
    ///
    /// A fire of a schedule (trigger `schedule`) is first decided by the schedule's overlap
    /// policy (`kairos_domain::overlap::decide`) against the schedule's runs in progress —
    /// running, queued, held, retries waiting for their backoff, and the fires of the batch
    /// decided before it (in fire order) — read under the schedule's overlap lock (see
    /// [`crate::Store::create_run`]): started as above, `skipped` (reason `overlap`), or
    /// queued held (`blocked_by`, event reason `overlap_held`); a `replace` also cancels the
    /// schedule's not-started runs (reason `replaced`) and requests the cancel of its running
    /// ones (reported in `stop`). Retries and runs without a schedule are not subject to it.
    async fn fire_runs(&self, due: &[DueRun]) -> Result<FiredRuns>;

    /// Workers' acks of queued runs of many shards in one transaction: each moves `queued` →
    /// `running` on its worker under the checks of [`Self::ack_run`]; the rest are refused.
    async fn ack_runs(&self, acks: &[RunAck]) -> Result<AckedRuns>;

    /// Workers' reports of many runs in one transaction, each with the semantics of
    /// [`Self::finish_run`]; a run reported twice in the batch is recorded once. A run whose
    /// cancel was requested with a reason (`replaced`) and that ends `cancelled` records that
    /// reason.
    ///
    /// Retries, in the same transaction: a run this call moves to `failed` (any reason) whose
    /// cancel was not requested, whose job is not deleted, whose schedule (if any) is still at
    /// the run's version, and whose `attempt` is below the job's `retry.max_attempts` gets a
    /// new run: same job, schedule, version, shard, fire time and env, attempt + 1, `retry_of`
    /// the failed run, trigger `retry`, state `scheduled`, due at the failure plus
    /// `RetryPolicy::backoff(attempt, seed)` (the seed hashes the failed run's id), with its
    /// creation event; at most one per failed run (I1). Cancelled and succeeded runs are never
    /// retried.
    ///
    /// Releases, in the same transaction and under the overlap lock of each schedule whose
    /// run ended: if nothing of the schedule but held fires is still in progress (a retry just
    /// created counts as in progress), its oldest held fire (by fire time, then id) is
    /// released (`blocked_by` cleared, no transition) and listed, to be dispatched.
    async fn finish_runs(&self, reports: &[RunReport]) -> Result<FinishedRuns>;

    /// Retries of several shards still waiting for their backoff (`scheduled`, trigger
    /// `retry`) due by `until`, earliest first, at most `limit` (a read: the planner arms them,
    /// and recovers those a crash left unarmed).
    async fn due_retries_across(
        &self,
        shards: &[ShardId],
        until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueRetry>>;

    /// The schedules among `ids` that belong to the lease's shard (a read; recovery applies
    /// the catch-up rule to the fires a previous owner left planned).
    async fn schedules_of_shard(
        &self,
        lease: &ShardLease,
        ids: &[ScheduleId],
    ) -> Result<Vec<crate::Schedule>>;

    /// Stores the live output of running runs of many shards in one transaction (runs no
    /// longer running are left as they are: their report holds the final output). Answers the
    /// shards whose lease was superseded.
    async fn record_live_logs(&self, logs: &[LiveLog]) -> Result<Vec<ShardId>>;

    /// What workers need to start these runs of owned shards (a read, across shards): runs
    /// still `queued` (and, with `upcoming`, still `scheduled`), not cancel-requested, whose
    /// job is not deleted. The ack or the fire makes the decision.
    async fn offers_across(&self, runs: &[LeasedRun], upcoming: bool) -> Result<Vec<Offer>>;

    /// Sends every change hint the API commits to `changes` until `stop` (or an error: the
    /// caller re-follows; hints are only hints, planning rescans anyway).
    async fn follow_changes(
        &self,
        changes: tokio::sync::mpsc::Sender<ShardChange>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<()>;
}

/// The stored form of an output tail: NUL bytes (which Postgres text cannot hold) replaced,
/// then capped at [`LOG_TAIL_MAX_BYTES`] keeping the end, on a character boundary. The bool
/// is true when the cap cut something.
pub fn cap_log_tail(tail: &str) -> (String, bool) {
    let cleaned;
    let tail = if tail.contains('\0') {
        cleaned = tail.replace('\0', "\u{fffd}");
        cleaned.as_str()
    } else {
        tail
    };
    if tail.len() <= LOG_TAIL_MAX_BYTES {
        return (tail.to_owned(), false);
    }
    let mut start = tail.len() - LOG_TAIL_MAX_BYTES;
    while !tail.is_char_boundary(start) {
        start += 1;
    }
    (tail[start..].to_owned(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_tail_is_kept_whole() {
        assert_eq!(cap_log_tail("hello\n"), ("hello\n".to_owned(), false));
        assert_eq!(cap_log_tail(""), (String::new(), false));
    }

    #[test]
    fn a_long_tail_keeps_its_end() {
        let tail = format!("{}END", "x".repeat(LOG_TAIL_MAX_BYTES));
        let (kept, cut) = cap_log_tail(&tail);
        assert!(cut);
        assert_eq!(kept.len(), LOG_TAIL_MAX_BYTES);
        assert!(kept.ends_with("END"));
    }

    #[test]
    fn the_cap_never_splits_a_character() {
        // 3-byte characters: the cut lands inside one and moves forward to the next boundary.
        let tail = "€".repeat(LOG_TAIL_MAX_BYTES / 3 + 10);
        let (kept, cut) = cap_log_tail(&tail);
        assert!(cut);
        assert!(kept.len() <= LOG_TAIL_MAX_BYTES);
        assert!(kept.chars().all(|c| c == '€'));
    }

    #[test]
    fn nul_bytes_are_replaced() {
        assert_eq!(
            cap_log_tail("a\0b"),
            ("a\u{fffd}b".to_owned(), false),
            "Postgres text cannot hold NUL"
        );
    }

    #[test]
    fn terminal_states_name_their_reason() {
        assert_eq!(TerminalState::Succeeded.reason(), None);
        assert_eq!(
            TerminalState::Failed(FailureReason::OomKilled).reason(),
            Some("oom_killed")
        );
        assert_eq!(
            TerminalState::Cancelled.run_state(),
            RunState::Cancelled,
            "a cancel the worker carried out"
        );
        assert_eq!(
            FireState::Skipped(SkipReason::Missed).reason(),
            Some("missed")
        );
    }
}
