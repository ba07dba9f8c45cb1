//! The single-node `Coordinator` of standalone mode: this node owns every shard from the
//! start, its lease never runs out while it runs, and its fence tokens come from the clock,
//! above every token the store has seen; it never talks to etcd and never shares shards.
//!
//! Tokens must grow across restarts: the store refuses a claim whose token is not newer than
//! the shard's current one. A start therefore mints `max(highest stored token + 1, now in
//! milliseconds)`, which also holds when the process restarts within one millisecond or the
//! clock stepped back. A shard the core gives back ([`Coordinator::release`], after a claim
//! failed in the store) is acquired again after a pause, at a token above every one minted
//! before, as a sole etcd node would re-claim it.
//!
//! One driver task (owned by a [`TaskTracker`], stopped by a [`CancellationToken`]) is the only
//! sender of events, on a bounded channel.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use kairos_domain::ShardId;
use kairos_store::SchedulerStore;
use tokio::sync::{mpsc, oneshot, watch as tokio_watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::{Coordinator, CoordinatorError, EVENT_CHANNEL_CAPACITY, OwnershipEvent};

/// How long a released shard waits before it is acquired again unless configured otherwise.
pub const DEFAULT_REACQUIRE_AFTER: Duration = Duration::from_secs(1);
/// Capacity of the command channel from the handle to the driver.
const COMMAND_CAPACITY: usize = 64;

/// Settings of a local coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    /// This node's id, recorded as the owner of every shard it claims.
    pub node_id: String,
    /// Number of shards S, at most [`kairos_domain::SHARD_COUNT`].
    pub shard_count: u16,
    /// Pause before a released shard is acquired again.
    pub reacquire_after: Duration,
}

impl LocalConfig {
    /// Every shard, for `node_id`, with the default pause.
    pub fn new(node_id: impl Into<String>) -> Self {
        Self {
            node_id: node_id.into(),
            shard_count: kairos_domain::SHARD_COUNT,
            reacquire_after: DEFAULT_REACQUIRE_AFTER,
        }
    }

    fn validate(&self) -> Result<(), CoordinatorError> {
        if self.node_id.is_empty() || self.node_id.len() > 128 {
            return Err(CoordinatorError::InvalidConfig {
                field: "node_id",
                reason: "must be 1 to 128 bytes".to_owned(),
            });
        }
        if self.shard_count == 0 || self.shard_count > kairos_domain::SHARD_COUNT {
            return Err(CoordinatorError::InvalidConfig {
                field: "shard_count",
                reason: format!("must be 1 to {}", kairos_domain::SHARD_COUNT),
            });
        }
        Ok(())
    }
}

/// Shard ownership for a node that is alone: every shard, always. Start with
/// [`LocalCoordinator::start`].
#[derive(Debug)]
pub struct LocalCoordinator {
    node_id: String,
    valid: tokio_watch::Sender<bool>,
    commands: mpsc::Sender<Command>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

#[derive(Debug)]
enum Command {
    Release {
        shard: ShardId,
        reply: oneshot::Sender<()>,
    },
}

/// The first token of a start: above every token `store` has recorded, and at least the wall
/// clock in milliseconds (so tokens also read as claim times).
pub async fn first_token(store: &dyn SchedulerStore) -> Result<i64, CoordinatorError> {
    let highest = store
        .highest_fence_token()
        .await
        .map_err(|e| CoordinatorError::Unavailable(format!("cannot read the fence tokens: {e}")))?;
    Ok(next_token(highest, now_ms()))
}

/// The smallest token above `previous` that is at least `now_ms`.
fn next_token(previous: i64, now_ms: i64) -> i64 {
    previous.saturating_add(1).max(now_ms)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl LocalCoordinator {
    /// Validates `config`, reads the highest fence token from `store`, and starts acquiring
    /// every shard at one newer token. Returns the coordinator and the receiver of its events.
    pub async fn start(
        config: LocalConfig,
        store: &dyn SchedulerStore,
    ) -> Result<(Self, mpsc::Receiver<OwnershipEvent>), CoordinatorError> {
        config.validate()?;
        let token = first_token(store).await?;
        let (events, receiver) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        let (commands, command_receiver) = mpsc::channel(COMMAND_CAPACITY);
        let (valid, _) = tokio_watch::channel(true);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let driver = Driver {
            reacquire_after: config.reacquire_after,
            last_token: token,
            events,
            commands: command_receiver,
            cancel: cancel.clone(),
            held: BTreeSet::new(),
            pending: (0..config.shard_count)
                .filter_map(ShardId::new)
                .map(|shard| (Instant::now(), shard, false))
                .collect(),
        };
        let span = tracing::info_span!("coordinator", node_id = %config.node_id);
        tracker.spawn(driver.run(token).instrument(span));
        tracker.close();
        Ok((
            Self {
                node_id: config.node_id,
                valid,
                commands,
                cancel,
                tracker,
            },
            receiver,
        ))
    }
}

impl Drop for LocalCoordinator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[async_trait]
impl Coordinator for LocalCoordinator {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn lease_valid(&self) -> bool {
        *self.valid.borrow()
    }

    fn lease_watch(&self) -> tokio_watch::Receiver<bool> {
        self.valid.subscribe()
    }

    async fn release(&self, shard: ShardId) -> Result<(), CoordinatorError> {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::Release { shard, reply })
            .await
            .is_ok()
        {
            // An error means the driver stopped: nothing is held any more.
            let _ = answer.await;
        }
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), CoordinatorError> {
        self.valid.send_replace(false);
        self.cancel.cancel();
        self.tracker.wait().await;
        Ok(())
    }
}

/// The task that owns which shards are held and hands out their events.
struct Driver {
    reacquire_after: Duration,
    /// The newest token minted.
    last_token: i64,
    events: mpsc::Sender<OwnershipEvent>,
    commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
    held: BTreeSet<ShardId>,
    /// Shards to acquire, each at the instant it may be (in that order), and whether it is
    /// acquired again after a release.
    pending: VecDeque<(Instant, ShardId, bool)>,
}

impl Driver {
    async fn run(mut self, first: i64) {
        tracing::info!(
            shards = self.pending.len(),
            token = first,
            "local coordinator started: this node owns every shard"
        );
        let cancel = self.cancel.clone();
        let events = self.events.clone();
        loop {
            let next = self.pending.front().map(|(at, _, _)| *at);
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(Command::Release { shard, reply }) => {
                        self.release(shard);
                        let _ = reply.send(());
                    }
                    // Every handle is gone.
                    None => break,
                },
                permit = events.reserve(), if next.is_some_and(|at| at <= Instant::now()) => {
                    let Ok(permit) = permit else {
                        tracing::debug!("the core dropped its event receiver");
                        break;
                    };
                    if let Some((_, shard, again)) = self.pending.pop_front() {
                        // The first round shares the start's token; a shard acquired again
                        // gets a newer one, above every token minted before.
                        let token = if again {
                            self.last_token = next_token(self.last_token, now_ms());
                            self.last_token
                        } else {
                            first
                        };
                        self.held.insert(shard);
                        permit.send(OwnershipEvent::Acquired { shard, token });
                    }
                }
                () = sleep_until(next), if next.is_some_and(|at| at > Instant::now()) => {}
            }
        }
        tracing::info!(
            shards = self.held.len(),
            "local coordinator stopped; shards released"
        );
    }

    /// Gives `shard` up (idempotent) and plans to acquire it again after the pause.
    fn release(&mut self, shard: ShardId) {
        if self.held.remove(&shard) {
            tracing::info!(
                shard = shard.get(),
                "shard released; acquiring it again shortly"
            );
            self.pending
                .push_back((Instant::now() + self.reacquire_after, shard, true));
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
