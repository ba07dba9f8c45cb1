//! The firing engine: one task owns the timing wheel and the set of owned shards. It reacts to
//! ownership changes (start or stop a shard's planner), to planned runs (arm their timers),
//! and to due timers: a run's first timer, a look-ahead before its fire, offers it to a worker
//! ahead (so the worker prepares it); its second, at the fire time, hands it to the
//! dispatcher's firing batch.
//!
//! It sleeps until the next occupied slot of the wheel, not on a fixed tick, and never waits on
//! the store: writes happen in the dispatcher's batches. It never fires a shard it does not
//! own, and never fires at all while the lease is not valid (I8).

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use kairos_domain::{RunId, RunState, ShardId};
use kairos_store::{Materialize, SchedulerStore, ShardLease};
use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    coordinator::{Coordinator, OwnershipEvent},
    dispatch::Dispatcher,
    metrics::Metrics,
    planner::{MAX_FIRES_PER_ROUND, plan_fires},
    wheel::{TimerHandle, TimingWheel},
};

/// Most fires recorded by one planning transaction.
const MATERIALIZE_CHUNK: usize = 5000;

/// Settings of planning and firing.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub node_id: String,
    /// Fires due within this horizon are materialized and kept in memory.
    pub horizon: Duration,
    /// Each owned shard is re-planned at least this often (the safety net behind NOTIFY).
    pub rescan_every: Duration,
}

/// What the claim tasks and the planner tell the engine.
#[derive(Debug)]
pub enum EngineInput {
    /// A shard's fence was taken in the store: it may be fired from now on.
    Claimed(ShardLease),
    /// Taking a shard's fence failed; `fenced` when a newer claim already holds it.
    ClaimFailed {
        shard: ShardId,
        token: i64,
        fenced: bool,
    },
    /// Runs of a shard to fire at their fire time.
    Planned {
        shard: ShardId,
        runs: Vec<(RunId, DateTime<Utc>)>,
    },
}

struct Owned {
    lease: ShardLease,
    /// The run's pending timer (look-ahead or fire) and its exact fire time.
    timers: HashMap<RunId, (TimerHandle, DateTime<Utc>)>,
}

/// Which of a run's two timers popped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The look-ahead before the fire: offer the run ahead to a worker.
    Ahead,
    /// The fire time.
    Fire,
}

type Wheel = TimingWheel<(ShardId, RunId, Phase)>;

/// Converts between wall-clock fire times and the wheel's milliseconds.
#[derive(Clone, Copy)]
struct Clock {
    epoch_utc: DateTime<Utc>,
    epoch: Instant,
}

impl Clock {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn ms_of(&self, t: DateTime<Utc>) -> u64 {
        u64::try_from((t - self.epoch_utc).num_milliseconds()).unwrap_or(0)
    }

    fn utc_now(&self) -> DateTime<Utc> {
        self.epoch_utc + chrono::Duration::milliseconds(self.now_ms() as i64)
    }
}

/// The leases of owned shards, shared with the planner, and the planner's wake-up.
#[derive(Debug, Clone, Default)]
pub struct Wakers {
    leases: Arc<std::sync::Mutex<HashMap<ShardId, ShardLease>>>,
    wake: Arc<Notify>,
}

impl Wakers {
    /// A change hint for `shard`: re-plan now if it is ours.
    pub fn wake(&self, shard: ShardId) {
        if self.lock().contains_key(&shard) {
            self.wake.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ShardId, ShardLease>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, shard: ShardId, lease: Option<ShardLease>) {
        let mut map = self.lock();
        match lease {
            Some(l) => map.insert(shard, l),
            None => map.remove(&shard),
        };
    }

    fn snapshot(&self) -> HashMap<ShardId, ShardLease> {
        self.lock().clone()
    }
}

#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    store: Arc<dyn SchedulerStore>,
    coordinator: Arc<dyn Coordinator>,
    dispatcher: Dispatcher,
    metrics: Metrics,
    wakers: Wakers,
    tasks: TaskTracker,
}

impl Engine {
    pub fn new(
        config: EngineConfig,
        store: Arc<dyn SchedulerStore>,
        coordinator: Arc<dyn Coordinator>,
        dispatcher: Dispatcher,
        metrics: Metrics,
        wakers: Wakers,
    ) -> Self {
        Self {
            config,
            store,
            coordinator,
            dispatcher,
            metrics,
            wakers,
            tasks: TaskTracker::new(),
        }
    }

    /// Runs until `stop`; then stops every planner and returns the shards it owned.
    pub async fn run(
        self,
        mut ownership: mpsc::Receiver<OwnershipEvent>,
        stop: CancellationToken,
    ) -> Vec<ShardId> {
        let clock = Clock {
            epoch_utc: Utc::now(),
            epoch: Instant::now(),
        };
        let mut wheel: Wheel = TimingWheel::new(0);
        let mut owned: HashMap<ShardId, Owned> = HashMap::new();
        // Shards whose fence is being taken, with the token of their current claim.
        let mut claiming: HashMap<ShardId, i64> = HashMap::new();
        let (input_tx, mut input) = mpsc::channel::<EngineInput>(4096);
        let mut due = Vec::new();
        let planner_stop = CancellationToken::new();
        self.tasks.spawn(plan(
            self.store.clone(),
            self.dispatcher.clone(),
            self.metrics.clone(),
            self.config.clone(),
            self.wakers.clone(),
            input_tx.clone(),
            planner_stop.clone(),
            clock,
        ));
        loop {
            let sleep_until = wheel
                .next_deadline()
                .map(|ms| clock.epoch + Duration::from_millis(ms))
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = stop.cancelled() => break,
                event = ownership.recv() => {
                    let Some(event) = event else { break };
                    self.on_ownership(event, &mut owned, &mut claiming, &mut wheel, &input_tx).await;
                }
                Some(message) = input.recv() => match message {
                    EngineInput::Claimed(lease) => {
                        let shard = lease.shard();
                        if claiming.get(&shard) != Some(&lease.token()) {
                            continue; // lost, released or re-claimed while its fence was being taken
                        }
                        claiming.remove(&shard);
                        self.wakers.set(shard, Some(lease.clone()));
                        self.dispatcher.own_shard(&lease);
                        self.tasks.spawn(recover(lease.clone(), self.store.clone(), self.dispatcher.clone(), input_tx.clone()));
                        owned.insert(shard, Owned { lease, timers: HashMap::new() });
                        self.metrics.shards_owned.set(owned.len() as i64);
                        self.wakers.wake.notify_one();
                    }
                    EngineInput::ClaimFailed { shard, token, fenced } => {
                        if claiming.get(&shard) != Some(&token) {
                            continue; // a newer claim of the shard is under way
                        }
                        claiming.remove(&shard);
                        if !fenced {
                            // Let another node (or this one, later) try: nothing was fired.
                            if let Err(e) = self.coordinator.release(shard).await {
                                tracing::warn!(shard = shard.get(), error = %e, "cannot release an unfenced shard; it frees up with the lease");
                            }
                        }
                    }
                    EngineInput::Planned { shard, runs } => {
                        self.arm(shard, runs, &mut owned, &mut wheel, clock);
                        self.metrics.timers.set(wheel.len() as i64);
                    }
                },
                _ = tokio::time::sleep_until(sleep_until) => {
                    wheel.advance(clock.now_ms(), &mut due);
                    self.fire(&mut due, &mut owned, &mut wheel, clock);
                    self.metrics.timers.set(wheel.len() as i64);
                }
            }
        }
        planner_stop.cancel();
        let shards: Vec<ShardId> = owned.keys().copied().collect();
        for shard in &shards {
            self.wakers.set(*shard, None);
        }
        self.tasks.close();
        self.tasks.wait().await;
        shards
    }

    /// Arms the timers of planned runs: the look-ahead one, or (already within it) the fire
    /// one, offering the run ahead at once.
    fn arm(
        &self,
        shard: ShardId,
        runs: Vec<(RunId, DateTime<Utc>)>,
        owned: &mut HashMap<ShardId, Owned>,
        wheel: &mut Wheel,
        clock: Clock,
    ) {
        let Some(state) = owned.get_mut(&shard) else {
            return;
        };
        let ahead_ms = self.dispatcher.lookahead().as_millis() as u64;
        let now_ms = clock.now_ms();
        let mut offer_now = Vec::new();
        for (run, fire_time) in runs {
            if state.timers.contains_key(&run) {
                continue;
            }
            let fire_ms = clock.ms_of(fire_time);
            let handle = if ahead_ms > 0 && fire_ms.saturating_sub(ahead_ms) > now_ms {
                wheel.insert(fire_ms - ahead_ms, (shard, run, Phase::Ahead))
            } else {
                if ahead_ms > 0 && fire_ms > now_ms {
                    offer_now.push((run, fire_time));
                }
                wheel.insert(fire_ms, (shard, run, Phase::Fire))
            };
            state.timers.insert(run, (handle, fire_time));
        }
        if !offer_now.is_empty() {
            self.dispatcher.upcoming(&state.lease, offer_now);
        }
    }

    async fn on_ownership(
        &self,
        event: OwnershipEvent,
        owned: &mut HashMap<ShardId, Owned>,
        claiming: &mut HashMap<ShardId, i64>,
        wheel: &mut Wheel,
        input: &mpsc::Sender<EngineInput>,
    ) {
        match event {
            OwnershipEvent::Acquired { shard, token } => {
                // Fenced in the store concurrently: a node claiming hundreds of shards must not
                // take them one round trip at a time.
                claiming.insert(shard, token);
                let (store, node, input) = (
                    self.store.clone(),
                    self.config.node_id.clone(),
                    input.clone(),
                );
                self.tasks.spawn(async move {
                    match store.claim_shard(shard, token, &node).await {
                        Ok(lease) => {
                            tracing::info!(shard = shard.get(), token, "shard acquired");
                            let _ = input.send(EngineInput::Claimed(lease)).await;
                        }
                        Err(e) => {
                            let fenced = matches!(e, kairos_store::StoreError::Fenced { .. });
                            if fenced {
                                tracing::debug!(shard = shard.get(), token, "a newer claim holds the shard already");
                            } else {
                                tracing::warn!(shard = shard.get(), token, error = %e, "cannot fence the claimed shard");
                            }
                            let _ = input.send(EngineInput::ClaimFailed { shard, token, fenced }).await;
                        }
                    }
                });
            }
            OwnershipEvent::Lost { shard } | OwnershipEvent::Released { shard } => {
                claiming.remove(&shard);
                if let Some(state) = owned.remove(&shard) {
                    for (handle, _) in state.timers.into_values() {
                        wheel.cancel(handle);
                    }
                }
                self.wakers.set(shard, None);
                self.dispatcher.drop_shard(shard);
                self.metrics.shards_owned.set(owned.len() as i64);
                if matches!(event, OwnershipEvent::Released { .. }) {
                    // Nothing is in flight for it any more: hand it over.
                    if let Err(e) = self.coordinator.release(shard).await {
                        tracing::warn!(shard = shard.get(), error = %e, "cannot hand the shard off; the coordinator releases it after its grace");
                    }
                    tracing::info!(shard = shard.get(), "shard handed off");
                } else {
                    tracing::warn!(shard = shard.get(), "shard lost; stopped firing it");
                }
            }
        }
    }

    /// Hands due timers on: look-ahead ones become offers ahead (and arm the fire timer), fire
    /// ones go to the dispatcher's firing batch, grouped by shard.
    fn fire(
        &self,
        due: &mut Vec<(u64, (ShardId, RunId, Phase))>,
        owned: &mut HashMap<ShardId, Owned>,
        wheel: &mut Wheel,
        clock: Clock,
    ) {
        if due.is_empty() {
            return;
        }
        let valid = self.coordinator.lease_valid();
        let mut ahead: HashMap<ShardId, Vec<(RunId, DateTime<Utc>)>> = HashMap::new();
        let mut fire: HashMap<ShardId, Vec<(RunId, DateTime<Utc>)>> = HashMap::new();
        let now_ms = clock.now_ms();
        let mut refused = 0usize;
        for (deadline, (shard, run, phase)) in due.drain(..) {
            let Some(state) = owned.get_mut(&shard) else {
                continue;
            };
            let Some((_, fire_time)) = state.timers.remove(&run) else {
                continue;
            };
            match phase {
                Phase::Ahead => {
                    let handle = wheel.insert(clock.ms_of(fire_time), (shard, run, Phase::Fire));
                    state.timers.insert(run, (handle, fire_time));
                    ahead.entry(shard).or_default().push((run, fire_time));
                }
                Phase::Fire if !valid => refused += 1,
                Phase::Fire => {
                    self.metrics
                        .timer_lag_seconds
                        .observe(now_ms.saturating_sub(deadline) as f64 / 1000.0);
                    fire.entry(shard).or_default().push((run, fire_time));
                }
            }
        }
        if refused > 0 {
            // I8: the lease may be expiring; the next owner fires these (or records them missed).
            tracing::warn!(fires = refused, "lease not valid; not firing");
        }
        for (shard, runs) in ahead {
            if let Some(state) = owned.get(&shard) {
                self.dispatcher.upcoming(&state.lease, runs);
            }
        }
        for (shard, runs) in fire {
            if let Some(state) = owned.get(&shard) {
                self.dispatcher.fire(&state.lease, runs);
            }
        }
    }
}

/// The node's planner: every `rescan_every`, or when woken (a claim, a change hint), scans
/// the due schedules of every owned shard in one query, materializes their fires per shard
/// (fenced), arms their timers, and hands queued runs (execute now, trigger, backfill) to
/// dispatch.
#[allow(clippy::too_many_arguments)]
async fn plan(
    store: Arc<dyn SchedulerStore>,
    dispatcher: Dispatcher,
    metrics: Metrics,
    config: EngineConfig,
    wakers: Wakers,
    engine: mpsc::Sender<EngineInput>,
    stop: CancellationToken,
    clock: Clock,
) {
    loop {
        let leases = wakers.snapshot();
        if !leases.is_empty() {
            let shards: Vec<ShardId> = leases.keys().copied().collect();
            let now = clock.utc_now();
            let until = now + chrono::Duration::from_std(config.horizon).unwrap_or_default();
            match store.due_schedules_across(&shards, until, 10_000).await {
                Ok(due) => {
                    let mut by_shard: HashMap<ShardId, Vec<Materialize>> = HashMap::new();
                    for (shard, schedule) in &due {
                        by_shard.entry(*shard).or_default().extend(plan_fires(
                            schedule,
                            now,
                            until,
                            MAX_FIRES_PER_ROUND,
                        ));
                    }
                    // One transaction per chunk of fires, across shards.
                    let mut chunk: Vec<(ShardLease, Vec<Materialize>)> = Vec::new();
                    let mut size = 0;
                    for (shard, fires) in by_shard {
                        let Some(lease) = leases.get(&shard) else {
                            continue;
                        };
                        size += fires.len();
                        chunk.push((lease.clone(), fires));
                        if size >= MATERIALIZE_CHUNK {
                            materialize(store.as_ref(), &metrics, &chunk, &engine).await;
                            chunk.clear();
                            size = 0;
                        }
                    }
                    if !chunk.is_empty() {
                        materialize(store.as_ref(), &metrics, &chunk, &engine).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "planning scan failed; retrying next round"),
            }
            match store.queued_runs_across(&shards, 10_000).await {
                Ok(queued) => {
                    for (shard, run, fire_time) in queued {
                        if let Some(lease) = leases.get(&shard) {
                            dispatcher.enqueue(lease, [(run, fire_time)]);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read queued runs"),
            }
            // The safety net behind the cancel hint: running runs whose cancel was asked.
            match store.cancel_requested_across(&shards, 10_000).await {
                Ok(runs) => {
                    for (shard, run, _) in runs {
                        dispatcher.cancel_running(shard, run).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read cancel requests"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wakers.wake.notified() => {}
            _ = tokio::time::sleep(config.rescan_every) => {}
        }
    }
}

async fn materialize(
    store: &dyn SchedulerStore,
    metrics: &Metrics,
    batches: &[(ShardLease, Vec<Materialize>)],
    engine: &mpsc::Sender<EngineInput>,
) {
    match store.materialize_across(batches).await {
        Ok(done) => {
            // Crash point for tests: the fires are committed, nothing in memory knows them yet.
            if done.runs.iter().any(|(_, r)| r.created) {
                fail::fail_point!("scheduler::after_materialize", |_| std::process::abort());
            }
            metrics
                .fires_materialized
                .inc_by(done.runs.iter().filter(|(_, r)| r.created).count() as u64);
            metrics.fires_missed.inc_by(
                done.runs
                    .iter()
                    .filter(|(_, r)| r.created && r.state == RunState::Skipped)
                    .count() as u64,
            );
            let mut scheduled: HashMap<ShardId, Vec<(RunId, DateTime<Utc>)>> = HashMap::new();
            for (shard, r) in &done.runs {
                if r.state == RunState::Scheduled {
                    scheduled
                        .entry(*shard)
                        .or_default()
                        .push((r.id, r.fire_time));
                }
            }
            for (shard, runs) in scheduled {
                let _ = engine.send(EngineInput::Planned { shard, runs }).await;
            }
            if !done.fenced.is_empty() {
                tracing::info!(
                    shards = done.fenced.len(),
                    "fires of shards with a newer owner left to it"
                );
            }
        }
        Err(e) => {
            tracing::warn!(shards = batches.len(), error = %e, "materialize failed; retrying next round")
        }
    }
}

/// I2 on claim: runs a previous owner left `scheduled` go back on the wheel (fires it had not
/// materialized are planned from `next_fire_at`, where the catch-up rule applies), `queued`
/// ones go to dispatch, `running` ones are watched for heartbeats. Retries until it reads.
async fn recover(
    lease: ShardLease,
    store: Arc<dyn SchedulerStore>,
    dispatcher: Dispatcher,
    engine: mpsc::Sender<EngineInput>,
) {
    let mut backoff = Duration::from_millis(200);
    let pending = loop {
        match store.shard_pending_runs(&lease).await {
            Ok(p) => break p,
            Err(kairos_store::StoreError::Fenced { .. }) => return,
            Err(e) => {
                tracing::warn!(shard = lease.shard().get(), error = %e, "recovery scan failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    let mut scheduled = Vec::new();
    let mut queued = Vec::new();
    let mut running = Vec::new();
    for run in pending {
        match run.state {
            RunState::Scheduled => scheduled.push((run.id, run.fire_time)),
            RunState::Queued => queued.push((run.id, run.fire_time)),
            RunState::Running => running.push((run.id, run.fire_time)),
            _ => {}
        }
    }
    if !scheduled.is_empty() || !queued.is_empty() || !running.is_empty() {
        tracing::info!(
            shard = lease.shard().get(),
            scheduled = scheduled.len(),
            queued = queued.len(),
            running = running.len(),
            "shard recovered"
        );
    }
    dispatcher.enqueue(&lease, queued);
    dispatcher.adopt_running(&lease, running);
    if !scheduled.is_empty() {
        let _ = engine
            .send(EngineInput::Planned {
                shard: lease.shard(),
                runs: scheduled,
            })
            .await;
    }
}
