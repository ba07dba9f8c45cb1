//! The etcd `Coordinator`: registers the node under a lease, claims and releases shards as `balance::plan` says, watches membership and claims, and tells the core; it never claims while its lease is not valid and never panics on an etcd error (it backs off and retries).
//!
//! One driver task owns all the state (held shards, the cluster view, pending handoffs) and
//! is the only sender of [`OwnershipEvent`]s, so the core sees events in the order the state
//! changed. A second task per lease renews it (`lease.rs`); when its local deadline passes it
//! flips [`Coordinator::lease_valid`] at once, and the driver, which races every etcd call
//! against that flip, emits `Lost` for every held shard and registers again with a new lease.
//!
//! Both tasks belong to a [`TaskTracker`] and stop on a [`CancellationToken`]. Channels are
//! bounded; events wait in a small outbox until the core takes them, and the driver claims
//! nothing new while that outbox holds `shard_count` events or more, which bounds it.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, ConnectOptions, PutOptions, WatchResponse};
use kairos_domain::ShardId;
use tokio::sync::{mpsc, oneshot, watch as tokio_watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::claims::{self, CLAIM_BATCH, ClaimOutcome};
use super::lease::{self, EtcdRenewer, LeaseSignal, LeaseState};
use super::watch::{self, Claim, Keys, View, Watches};
use super::{
    Coordinator, CoordinatorConfig, CoordinatorError, EVENT_CHANNEL_CAPACITY, OwnershipEvent,
};
use crate::balance;

/// Longest wait for one etcd request before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest pause before retrying after an etcd error (the longest is also at most
/// half the lease TTL, so a node comes back soon after etcd does).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest pause between two plans with nothing changed (a safety net under the watches).
const SAFETY_REPLAN_MAX: Duration = Duration::from_secs(30);
/// Capacity of the command channel from the handle to the driver.
const COMMAND_CAPACITY: usize = 64;
/// How many earlier leases of this node are remembered for revocation.
const STALE_LEASES_MAX: usize = 8;

/// Shard ownership through etcd. Start with [`EtcdCoordinator::start`].
#[derive(Debug)]
pub struct EtcdCoordinator {
    node_id: String,
    signal: Arc<LeaseSignal>,
    commands: mpsc::Sender<Command>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

#[derive(Debug)]
enum Command {
    Release {
        shard: ShardId,
        reply: oneshot::Sender<Result<(), CoordinatorError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

impl EtcdCoordinator {
    /// Validates `config`, connects (lazily: an unreachable etcd is retried in the background,
    /// not an error here) and starts registering and claiming. Returns the coordinator and the
    /// receiver of its events.
    pub async fn start(
        config: CoordinatorConfig,
    ) -> Result<(Self, mpsc::Receiver<OwnershipEvent>), CoordinatorError> {
        config.validate()?;
        let options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            // etcd refuses pings more often than every 5 s by default.
            .with_keep_alive(Duration::from_secs(10), REQUEST_TIMEOUT);
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|error| CoordinatorError::Unavailable(error.to_string()))?;
        let (events, event_receiver) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        let (commands, command_receiver) = mpsc::channel(COMMAND_CAPACITY);
        let signal = LeaseSignal::new();
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let span = tracing::info_span!("coordinator", node_id = %config.node_id);
        let node_id = config.node_id.clone();
        let driver = Driver::new(
            config,
            client,
            signal.clone(),
            cancel.clone(),
            tracker.clone(),
            command_receiver,
            events,
        );
        tracker.spawn(driver.run().instrument(span));
        Ok((
            Self {
                node_id,
                signal,
                commands,
                cancel,
                tracker,
            },
            event_receiver,
        ))
    }
}

impl Drop for EtcdCoordinator {
    /// Without [`Coordinator::shutdown`], the tasks stop and the lease expires on its own.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[async_trait]
impl Coordinator for EtcdCoordinator {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn lease_valid(&self) -> bool {
        self.signal.is_valid()
    }

    fn lease_watch(&self) -> tokio_watch::Receiver<bool> {
        self.signal.subscribe_valid()
    }

    async fn release(&self, shard: ShardId) -> Result<(), CoordinatorError> {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::Release { shard, reply })
            .await
            .is_err()
        {
            // Shut down: nothing is held any more.
            return Ok(());
        }
        answer.await.unwrap_or(Ok(()))
    }

    async fn shutdown(&self) -> Result<(), CoordinatorError> {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { reply })
            .await
            .is_ok()
        {
            // An error means the driver already ended.
            let _ = answer.await;
        }
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        Ok(())
    }
}

/// Why a step of the driver stopped early.
#[derive(Debug)]
enum StepError {
    /// The lease's deadline passed during the step; the driver handles the loss next.
    LeaseLost,
    /// The coordinator is stopping.
    Cancelled,
    /// etcd failed or did not answer in time; retry after a backoff.
    Etcd(String),
}

impl From<etcd_client::Error> for StepError {
    fn from(error: etcd_client::Error) -> Self {
        Self::Etcd(error.to_string())
    }
}

/// Runs one etcd call with a timeout, giving up early if the coordinator is cancelled or, when
/// `lease` is given, as soon as that lease stops being valid.
async fn guarded<T>(
    cancel: &CancellationToken,
    lease: Option<(tokio_watch::Receiver<LeaseState>, i64)>,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StepError> {
    let lost = async {
        match lease {
            Some((mut state, id)) => {
                let gone = state.wait_for(|state| {
                    !matches!(state, LeaseState::Valid { id: current, .. } if *current == id)
                });
                // An error means the signal is gone, which only happens at shutdown.
                let _ = gone.await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(StepError::Cancelled),
        () = lost => Err(StepError::LeaseLost),
        outcome = timeout(REQUEST_TIMEOUT, call) => match outcome {
            Ok(result) => result.map_err(StepError::from),
            Err(_) => Err(StepError::Etcd(format!("no answer within {REQUEST_TIMEOUT:?}"))),
        },
    }
}

/// Exponential backoff from [`BACKOFF_MIN`] up to `max`.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Self {
            next: BACKOFF_MIN,
            max: max.max(BACKOFF_MIN),
        }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    fn next(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

/// The lease this node is registered under.
#[derive(Debug)]
struct Lease {
    id: i64,
    /// Stops the keep-alive task of this lease.
    keeper: CancellationToken,
}

/// What the main loop does after handling a command.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// What woke the driver up.
enum Woke {
    Lease,
    Command(Command),
    /// Room for one event, or `None` when the core dropped its receiver.
    Permit(Option<mpsc::OwnedPermit<OwnershipEvent>>),
    Watch(Result<Option<WatchResponse>, etcd_client::Error>),
    Timer,
}

/// The task that owns this node's ownership state.
struct Driver {
    config: CoordinatorConfig,
    keys: Keys,
    client: Client,
    signal: Arc<LeaseSignal>,
    lease_state: tokio_watch::Receiver<LeaseState>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<OwnershipEvent>,
    /// Events not yet taken by the core, oldest first.
    outbox: VecDeque<OwnershipEvent>,
    lease: Option<Lease>,
    /// Earlier leases of this node, revoked (best effort) before registering again so that
    /// their claims vanish at once instead of at their expiry.
    stale_leases: Vec<i64>,
    view: View,
    watches: Option<Watches>,
    /// Shards this node owns, by fence token (those being handed off included).
    held: BTreeMap<ShardId, i64>,
    /// Shards announced as `Released`, by the instant the core's grace runs out.
    handoffs: BTreeMap<ShardId, Instant>,
    /// Shards the core gave up whose key could not be deleted yet, by token.
    unreleased: BTreeMap<ShardId, i64>,
    /// The view changed since the last plan.
    dirty: bool,
    /// The node key has to be written again (deleted while the lease lives).
    reput_node: bool,
    backoff: Backoff,
    /// No etcd work before this instant (after an error).
    retry_at: Instant,
    next_safety_plan: Instant,
}

impl Driver {
    fn new(
        config: CoordinatorConfig,
        client: Client,
        signal: Arc<LeaseSignal>,
        cancel: CancellationToken,
        tracker: TaskTracker,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<OwnershipEvent>,
    ) -> Self {
        let now = Instant::now();
        let backoff = Backoff::new(BACKOFF_MAX.min(config.lease_ttl / 2));
        Self {
            keys: Keys::new(&config.prefix, config.shard_count),
            lease_state: signal.subscribe(),
            config,
            client,
            signal,
            cancel,
            tracker,
            commands,
            events,
            outbox: VecDeque::new(),
            lease: None,
            stale_leases: Vec::new(),
            view: View::default(),
            watches: None,
            held: BTreeMap::new(),
            handoffs: BTreeMap::new(),
            unreleased: BTreeMap::new(),
            dirty: false,
            reput_node: false,
            backoff,
            retry_at: now,
            next_safety_plan: now,
        }
    }

    fn safety_replan(&self) -> Duration {
        self.config.lease_ttl.min(SAFETY_REPLAN_MAX)
    }

    async fn run(mut self) {
        tracing::info!(shard_count = self.config.shard_count, "coordinator started");
        loop {
            self.work().await;
            let wake = self.next_wake();
            let woke = tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                Ok(()) = self.lease_state.changed() => Woke::Lease,
                command = self.commands.recv() => match command {
                    Some(command) => Woke::Command(command),
                    // Every handle is gone.
                    None => break,
                },
                permit = self.events.clone().reserve_owned(), if !self.outbox.is_empty() => {
                    Woke::Permit(permit.ok())
                }
                message = next_watch_message(&mut self.watches), if self.watches.is_some() => {
                    Woke::Watch(message)
                }
                () = sleep_until(wake) => Woke::Timer,
            };
            match woke {
                Woke::Lease => self.on_lease_change(),
                Woke::Command(command) => {
                    if self.on_command(command).await == Flow::Stop {
                        break;
                    }
                }
                Woke::Permit(Some(permit)) => {
                    if let Some(event) = self.outbox.pop_front() {
                        permit.send(event);
                    }
                }
                Woke::Permit(None) => {
                    tracing::debug!("the core dropped its event receiver");
                    self.outbox.clear();
                }
                Woke::Watch(message) => self.on_watch(message),
                Woke::Timer => self.on_timer(),
            }
        }
        if let Some(lease) = self.lease.take() {
            lease.keeper.cancel();
        }
        self.signal.clear();
        tracing::info!("coordinator stopped");
    }

    /// The current lease id, if it is valid right now.
    fn lease_id(&self) -> Option<i64> {
        let id = self.lease.as_ref()?.id;
        (self.signal.state().valid_at(Instant::now()) == Some(id)).then_some(id)
    }

    /// `guarded` for a call made under the current lease.
    fn lease_guard(&self, id: i64) -> Option<(tokio_watch::Receiver<LeaseState>, i64)> {
        Some((self.signal.subscribe(), id))
    }

    /// True when some etcd work waits for `retry_at`.
    fn pending_work(&self) -> bool {
        if self.lease.is_none() {
            // Registering again waits on etcd, which may be unreachable for long: first let the
            // core take every event of the old lease (its `Lost`s), so it learns at once.
            return self.outbox.is_empty();
        }
        if self.lease_id().is_none() {
            // Lost: handled by `on_lease_change` or `on_timer`, not by etcd work.
            return false;
        }
        self.reput_node
            || self.watches.is_none()
            || !self.unreleased.is_empty()
            || (self.dirty && self.outbox.len() < usize::from(self.config.shard_count))
    }

    fn next_wake(&self) -> Instant {
        let mut wake = self.next_safety_plan;
        if self.pending_work() {
            wake = wake.min(self.retry_at);
        }
        if let Some(deadline) = self.handoffs.values().min() {
            wake = wake.min(*deadline);
        }
        if let LeaseState::Valid { valid_until, .. } = self.signal.state()
            && self.lease.is_some()
        {
            wake = wake.min(valid_until);
        }
        wake
    }

    /// Does whatever etcd work is due; errors set a backoff.
    async fn work(&mut self) {
        if !self.pending_work() || Instant::now() < self.retry_at {
            return;
        }
        match self.step().await {
            Ok(()) => self.backoff.reset(),
            Err(StepError::LeaseLost | StepError::Cancelled) => {}
            Err(StepError::Etcd(error))
                if error.contains("lease not found") && self.lease.is_some() =>
            {
                // A write under our lease failed because etcd no longer knows it (revoked, or
                // expired): no need to wait for the keeper to find out.
                if let Some(lease) = &self.lease {
                    self.signal.lost(lease.id);
                }
                self.on_lease_lost();
            }
            Err(StepError::Etcd(error)) => {
                let delay = self.backoff.next();
                tracing::warn!(%error, retry_in = ?delay, "etcd call failed");
                self.retry_at = Instant::now() + delay;
            }
        }
    }

    async fn step(&mut self) -> Result<(), StepError> {
        if self.lease.is_none() {
            self.register().await?;
        }
        let Some(lease_id) = self.lease_id() else {
            return Err(StepError::LeaseLost);
        };
        if self.reput_node {
            self.put_node(lease_id).await?;
        }
        if self.watches.is_none() {
            self.resync(lease_id).await?;
        }
        if !self.unreleased.is_empty() {
            self.retry_unreleased().await?;
        }
        while self.dirty && self.outbox.len() < usize::from(self.config.shard_count) {
            self.dirty = false;
            self.apply_plan(lease_id).await?;
        }
        Ok(())
    }

    /// Revokes earlier leases, grants a new one, writes the node key under it and starts
    /// keeping it alive.
    async fn register(&mut self) -> Result<(), StepError> {
        let mut leases = self.client.lease_client();
        while let Some(old) = self.stale_leases.pop() {
            match guarded(&self.cancel, None, leases.revoke(old)).await {
                Ok(_) => tracing::info!(lease = old, "revoked an earlier lease of this node"),
                Err(StepError::Etcd(error)) if error.contains("lease not found") => {}
                Err(error) => {
                    self.stale_leases.push(old);
                    return Err(error);
                }
            }
        }
        let ttl = i64::try_from(self.config.lease_ttl.as_secs()).unwrap_or(i64::MAX);
        let sent = Instant::now();
        let grant = guarded(&self.cancel, None, leases.grant(ttl, None)).await?;
        let id = grant.id();
        let granted = Duration::from_secs(u64::try_from(grant.ttl()).unwrap_or(0));
        let valid_until = lease::deadline(sent, granted, lease::safety_margin(granted));
        let mut kv = self.client.kv_client();
        let put = kv.put(
            self.keys.node(&self.config.node_id),
            self.config.advertise.as_str(),
            Some(PutOptions::new().with_lease(id)),
        );
        if let Err(error) = guarded(&self.cancel, None, put).await {
            self.forget_lease(id);
            return Err(error);
        }
        if Instant::now() >= valid_until {
            self.forget_lease(id);
            return Err(StepError::Etcd(
                "registering took longer than the lease lasts".to_owned(),
            ));
        }
        self.signal.granted(id, valid_until);
        let keeper = self.cancel.child_token();
        let renewer = EtcdRenewer::new(self.client.clone(), id, granted);
        let span = tracing::info_span!("lease", node_id = %self.config.node_id, lease = id);
        self.tracker.spawn(
            lease::keep_alive(renewer, id, granted, self.signal.clone(), keeper.clone())
                .instrument(span),
        );
        self.lease = Some(Lease { id, keeper });
        self.watches = None;
        tracing::info!(lease = id, ttl = ?granted, "registered");
        Ok(())
    }

    /// Remembers a lease to revoke before the next registration.
    fn forget_lease(&mut self, id: i64) {
        self.stale_leases.push(id);
        if self.stale_leases.len() > STALE_LEASES_MAX {
            self.stale_leases.remove(0);
        }
    }

    async fn put_node(&mut self, lease_id: i64) -> Result<(), StepError> {
        let mut kv = self.client.kv_client();
        let put = kv.put(
            self.keys.node(&self.config.node_id),
            self.config.advertise.as_str(),
            Some(PutOptions::new().with_lease(lease_id)),
        );
        guarded(&self.cancel, self.lease_guard(lease_id), put).await?;
        self.reput_node = false;
        Ok(())
    }

    /// Reads the whole view again, checks our claims against it and watches from there on.
    async fn resync(&mut self, lease_id: i64) -> Result<(), StepError> {
        let mut kv = self.client.kv_client();
        let (view, revision) = guarded(
            &self.cancel,
            self.lease_guard(lease_id),
            watch::snapshot(&mut kv, &self.keys),
        )
        .await?;
        self.view = view;
        let shards: Vec<ShardId> = (0..self.config.shard_count)
            .filter_map(ShardId::new)
            .collect();
        for shard in shards {
            self.reconcile(shard, lease_id);
        }
        if !self.view.live_nodes().contains(&self.config.node_id) {
            self.reput_node = true;
        }
        let watches = guarded(
            &self.cancel,
            self.lease_guard(lease_id),
            Watches::open(&self.client, &self.keys, revision + 1),
        )
        .await?;
        self.watches = Some(watches);
        self.dirty = true;
        tracing::debug!(revision, "watching nodes and shards");
        Ok(())
    }

    /// Brings `held` in line with what the view says of `shard`: a claim of ours that vanished
    /// is lost, a claim under our lease we did not know of (a claim whose answer timed out) is
    /// adopted, a key we gave up that is gone needs no more deleting.
    fn reconcile(&mut self, shard: ShardId, lease_id: i64) {
        let me = self.config.node_id.as_str();
        let claim = self.view.claim(shard).cloned();
        let ours = |claim: &Claim| claim.owner == me && claim.lease == lease_id;
        match (self.held.get(&shard).copied(), claim) {
            (Some(token), Some(claim)) if ours(&claim) && claim.create_revision == token => {}
            (Some(_), _) => self.lose(shard, "the claim vanished from etcd"),
            (None, Some(claim)) if ours(&claim) && !self.unreleased.contains_key(&shard) => {
                let token = claim.create_revision;
                self.held.insert(shard, token);
                self.outbox
                    .push_back(OwnershipEvent::Acquired { shard, token });
                tracing::info!(shard = shard.get(), token, "acquired shard (adopted)");
            }
            (None, None) => {
                self.unreleased.remove(&shard);
            }
            (None, Some(_)) => {}
        }
    }

    fn lose(&mut self, shard: ShardId, reason: &str) {
        if self.held.remove(&shard).is_some() {
            self.handoffs.remove(&shard);
            self.outbox.push_back(OwnershipEvent::Lost { shard });
            tracing::warn!(shard = shard.get(), reason, "lost shard");
        }
    }

    /// Plans against the view and acts: announces handoffs, claims in batches.
    async fn apply_plan(&mut self, lease_id: i64) -> Result<(), StepError> {
        let me = self.config.node_id.clone();
        let owners = self.view.owners(&me, |shard, claim| {
            claim.lease == lease_id && !self.unreleased.contains_key(&shard)
        });
        let plan = balance::plan(
            &me,
            self.view.live_nodes(),
            &owners,
            self.config.shard_count,
        );
        let now = Instant::now();
        for shard in plan.release {
            if self.held.contains_key(&shard) && !self.handoffs.contains_key(&shard) {
                self.handoffs.insert(shard, now + self.config.handoff_grace);
                self.outbox.push_back(OwnershipEvent::Released { shard });
                tracing::info!(shard = shard.get(), "handing shard off");
            }
        }
        let mut kv = self.client.kv_client();
        for batch in plan.claim.chunks(CLAIM_BATCH) {
            let outcomes = guarded(
                &self.cancel,
                self.lease_guard(lease_id),
                claims::claim(&mut kv, &self.keys, &me, lease_id, batch),
            )
            .await?;
            for (shard, outcome) in outcomes {
                match outcome {
                    ClaimOutcome::Won { token } => {
                        let claim = Claim {
                            owner: me.clone(),
                            lease: lease_id,
                            create_revision: token,
                        };
                        self.view.apply_shard(shard, Some(claim), token);
                        self.held.insert(shard, token);
                        self.outbox
                            .push_back(OwnershipEvent::Acquired { shard, token });
                        tracing::info!(shard = shard.get(), token, "acquired shard");
                    }
                    ClaimOutcome::Taken(current) => {
                        if let Some((claim, revision)) = current {
                            self.view.apply_shard(shard, Some(claim), revision);
                        }
                        tracing::debug!(shard = shard.get(), "shard claimed by another node first");
                        self.dirty = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// Deletes the key of a shard the core gave up (or whose handoff grace ran out).
    async fn release_key(&mut self, shard: ShardId, token: i64) -> Result<(), StepError> {
        let Some(lease_id) = self.lease_id() else {
            // The lease is gone or going: so is the key.
            return Ok(());
        };
        let mut kv = self.client.kv_client();
        let outcome = guarded(
            &self.cancel,
            self.lease_guard(lease_id),
            claims::release(&mut kv, &self.keys, &self.config.node_id, shard, token),
        )
        .await;
        match outcome {
            Ok(revision) => {
                self.unreleased.remove(&shard);
                self.view.apply_shard(shard, None, revision);
                self.dirty = true;
                tracing::info!(shard = shard.get(), token, "released shard");
                Ok(())
            }
            Err(StepError::LeaseLost) => Ok(()),
            Err(error) => {
                self.unreleased.insert(shard, token);
                Err(error)
            }
        }
    }

    async fn retry_unreleased(&mut self) -> Result<(), StepError> {
        let pending: Vec<(ShardId, i64)> = self
            .unreleased
            .iter()
            .map(|(shard, token)| (*shard, *token))
            .collect();
        for (shard, token) in pending {
            self.release_key(shard, token).await?;
        }
        Ok(())
    }

    async fn on_command(&mut self, command: Command) -> Flow {
        match command {
            Command::Release { shard, reply } => {
                let outcome = match self.held.remove(&shard) {
                    Some(token) => {
                        self.handoffs.remove(&shard);
                        self.release_key(shard, token).await
                    }
                    None => Ok(()),
                };
                let outcome = outcome.map_err(|error| {
                    let delay = self.backoff.next();
                    self.retry_at = Instant::now() + delay;
                    tracing::warn!(
                        shard = shard.get(),
                        ?error,
                        "releasing shard failed, retrying"
                    );
                    CoordinatorError::Unavailable(format!("{error:?}"))
                });
                // The core may have stopped waiting.
                let _ = reply.send(outcome);
                Flow::Continue
            }
            Command::Shutdown { reply } => {
                self.shut_down().await;
                let _ = reply.send(());
                Flow::Stop
            }
        }
    }

    /// Revokes the lease, which deletes the node key and every shard claim in one revision.
    async fn shut_down(&mut self) {
        self.signal.clear();
        self.held.clear();
        self.handoffs.clear();
        self.outbox.clear();
        let mut leases = self.client.lease_client();
        let mut reachable = true;
        if let Some(lease) = self.lease.take() {
            lease.keeper.cancel();
            match guarded(&self.cancel, None, leases.revoke(lease.id)).await {
                Ok(_) => tracing::info!(lease = lease.id, "released every shard and left"),
                Err(error) => {
                    reachable = false;
                    tracing::warn!(
                        lease = lease.id,
                        ?error,
                        "could not revoke the lease: its shards free up when it expires"
                    );
                }
            }
        }
        // Earlier leases expire on their own; revoke them only while etcd answers quickly.
        for old in std::mem::take(&mut self.stale_leases) {
            if !reachable {
                break;
            }
            reachable = match guarded(&self.cancel, None, leases.revoke(old)).await {
                Ok(_) => true,
                Err(StepError::Etcd(error)) => error.contains("lease not found"),
                Err(_) => false,
            };
        }
    }

    fn on_lease_change(&mut self) {
        let state = *self.lease_state.borrow_and_update();
        if let Some(lease) = &self.lease
            && !matches!(state, LeaseState::Valid { id, .. } if id == lease.id)
        {
            self.on_lease_lost();
        }
    }

    /// Every shard is lost; register again with a new lease.
    fn on_lease_lost(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        lease.keeper.cancel();
        self.signal.lost(lease.id);
        tracing::warn!(
            lease = lease.id,
            shards = self.held.len(),
            "lease lost: every shard is lost, registering again"
        );
        let shards: Vec<ShardId> = self.held.keys().copied().collect();
        for shard in shards {
            self.lose(shard, "lease lost");
        }
        self.unreleased.clear();
        self.forget_lease(lease.id);
        self.watches = None;
        self.retry_at = Instant::now();
    }

    fn on_watch(&mut self, message: Result<Option<WatchResponse>, etcd_client::Error>) {
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => return self.watch_broke("the watch stream ended".to_owned()),
            Err(error) => return self.watch_broke(error.to_string()),
        };
        if response.canceled() || response.compact_revision() > 0 {
            return self.watch_broke(format!(
                "watch cancelled (compacted at {}): {}",
                response.compact_revision(),
                response.cancel_reason()
            ));
        }
        let lease_id = self.lease_id();
        for change in watch::changes(&self.keys, &response) {
            let shard = match &change {
                watch::Change::Shard { shard, .. } => Some(*shard),
                watch::Change::Node { id, present } => {
                    if !*present && *id == self.config.node_id && lease_id.is_some() {
                        tracing::warn!("our node key was deleted while the lease lives");
                        self.reput_node = true;
                    }
                    None
                }
            };
            if self.view.apply(change) {
                self.dirty = true;
                if let (Some(shard), Some(lease_id)) = (shard, lease_id) {
                    self.reconcile(shard, lease_id);
                }
            }
        }
    }

    fn watch_broke(&mut self, reason: String) {
        let delay = self.backoff.next();
        tracing::warn!(%reason, retry_in = ?delay, "watch broke, reading the view again");
        self.watches = None;
        self.retry_at = Instant::now() + delay;
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.lease.is_some() && self.lease_id().is_none() {
            // The deadline passed; do not wait for the keeper task to say so.
            self.on_lease_lost();
        }
        if now >= self.next_safety_plan {
            self.dirty = true;
            self.next_safety_plan = now + self.safety_replan();
        }
        let overdue: Vec<ShardId> = self
            .handoffs
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(shard, _)| *shard)
            .collect();
        for shard in overdue {
            self.handoffs.remove(&shard);
            if let Some(token) = self.held.remove(&shard) {
                tracing::warn!(
                    shard = shard.get(),
                    grace = ?self.config.handoff_grace,
                    "the core did not release the shard in time, releasing it anyway"
                );
                // Deleted by the next `work` step.
                self.unreleased.insert(shard, token);
            }
        }
    }
}

/// The next message of the watches, or never when there are none.
async fn next_watch_message(
    watches: &mut Option<Watches>,
) -> Result<Option<WatchResponse>, etcd_client::Error> {
    match watches {
        Some(watches) => watches.next().await,
        None => std::future::pending().await,
    }
}
