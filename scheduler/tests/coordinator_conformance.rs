//! The conformance suite of the `Coordinator` trait, generated for every implementation: the
//! etcd coordinator against a real etcd (`kairos_testkit::etcd()`, a key prefix per test) and
//! the local one of standalone mode. Each check drives a sole node as the scheduler core would
//! and fences every acquired shard in a real store (SQLite, a fresh file per test), so "a token
//! the store accepts" is checked against the store itself. Multi-node behaviour (balancing,
//! handoffs, I8 under a partition) is etcd's alone and stays in `coordinator.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use async_trait::async_trait;
use kairos_domain::ShardId;
use kairos_scheduler::coordinator::{
    Coordinator, CoordinatorConfig, EtcdCoordinator, LocalConfig, LocalCoordinator, OwnershipEvent,
};
use kairos_store::{SchedulerStore, SqliteStore, StoreError};
use tokio::sync::mpsc;

/// Shards each check uses: few, so etcd claims them quickly, but more than one.
const SHARDS: u16 = 12;
/// How long a check waits for events that must come.
const WAIT: Duration = Duration::from_secs(30);

/// A running coordinator and its events.
struct Started {
    coordinator: Arc<dyn Coordinator>,
    events: mpsc::Receiver<OwnershipEvent>,
}

/// One implementation under test, with the backing service and store it starts nodes on.
#[async_trait]
trait Backend: Send + Sync + Sized {
    async fn new() -> anyhow::Result<Self>;
    /// Starts a node called `node` owning (as a sole node) `SHARDS` shards.
    async fn start(&self, node: &str) -> anyhow::Result<Started>;
    /// The store the core fences its shards in.
    fn store(&self) -> &SqliteStore;
}

async fn sqlite() -> anyhow::Result<(SqliteStore, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("kairos.db")).await?;
    store.migrate().await?;
    Ok((store, dir))
}

struct Etcd {
    etcd: kairos_testkit::TestEtcd,
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

#[async_trait]
impl Backend for Etcd {
    async fn new() -> anyhow::Result<Self> {
        let (store, dir) = sqlite().await?;
        Ok(Self {
            etcd: kairos_testkit::etcd().await?,
            store,
            _dir: dir,
        })
    }

    async fn start(&self, node: &str) -> anyhow::Result<Started> {
        let mut config = CoordinatorConfig::new(self.etcd.endpoints(), node);
        config.prefix = self.etcd.key_prefix().to_owned();
        config.lease_ttl = Duration::from_secs(3);
        config.shard_count = SHARDS;
        let (coordinator, events) = EtcdCoordinator::start(config).await?;
        Ok(Started {
            coordinator: Arc::new(coordinator),
            events,
        })
    }

    fn store(&self) -> &SqliteStore {
        &self.store
    }
}

struct Local {
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

#[async_trait]
impl Backend for Local {
    async fn new() -> anyhow::Result<Self> {
        let (store, dir) = sqlite().await?;
        Ok(Self { store, _dir: dir })
    }

    async fn start(&self, node: &str) -> anyhow::Result<Started> {
        let config = LocalConfig {
            shard_count: SHARDS,
            reacquire_after: Duration::from_millis(200),
            ..LocalConfig::new(node)
        };
        let (coordinator, events) = LocalCoordinator::start(config, &self.store).await?;
        Ok(Started {
            coordinator: Arc::new(coordinator),
            events,
        })
    }

    fn store(&self) -> &SqliteStore {
        &self.store
    }
}

/// Generates one test per check for a backend, in a module of its own.
macro_rules! coordinator_conformance_suite {
    ($module:ident, $backend:ty) => {
        mod $module {
            coordinator_conformance_suite!(@tests $backend;
                a_sole_node_acquires_every_shard_once_at_tokens_the_store_accepts,
                a_restarted_node_acquires_every_shard_at_newer_tokens,
                release_is_idempotent_and_a_sole_node_acquires_the_shard_again_at_a_newer_token,
                shutdown_ends_the_events_and_the_lease_and_is_idempotent,
            );
        }
    };
    (@tests $backend:ty; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> anyhow::Result<()> {
                let backend = <$backend as super::Backend>::new().await?;
                super::$name(&backend).await
            }
        )*
    };
}

coordinator_conformance_suite!(etcd, super::Etcd);
coordinator_conformance_suite!(local, super::Local);

/// Takes events until every one of `shards` was acquired; fails on anything but `Acquired`
/// or on a shard acquired twice. Answers each shard's token.
async fn acquire_all(started: &mut Started, shards: u16) -> anyhow::Result<BTreeMap<ShardId, i64>> {
    let mut acquired = BTreeMap::new();
    while acquired.len() < usize::from(shards) {
        let event = tokio::time::timeout(WAIT, started.events.recv())
            .await
            .with_context(|| format!("only {} shards acquired within {WAIT:?}", acquired.len()))?
            .context("the event channel closed")?;
        match event {
            OwnershipEvent::Acquired { shard, token } => {
                ensure!(
                    shard.get() < shards,
                    "shard {} is out of range",
                    shard.get()
                );
                ensure!(token > 0, "shard {} at token {token}", shard.get());
                if let Some(before) = acquired.insert(shard, token) {
                    bail!("shard {} acquired twice ({before}, {token})", shard.get());
                }
            }
            other => bail!("a sole node got {other:?}"),
        }
    }
    Ok(acquired)
}

/// Fences every acquired shard in the store as the core does.
async fn claim_all(
    store: &dyn SchedulerStore,
    node: &str,
    tokens: &BTreeMap<ShardId, i64>,
) -> anyhow::Result<()> {
    for (shard, token) in tokens {
        store
            .claim_shard(*shard, *token, node)
            .await
            .with_context(|| format!("the store refused shard {} at {token}", shard.get()))?;
    }
    Ok(())
}

async fn a_sole_node_acquires_every_shard_once_at_tokens_the_store_accepts<B: Backend>(
    backend: &B,
) -> anyhow::Result<()> {
    let mut node = backend.start("node-a").await?;
    assert_eq!(node.coordinator.node_id(), "node-a");
    let tokens = acquire_all(&mut node, SHARDS).await?;
    assert!(node.coordinator.lease_valid(), "valid once it owns shards");
    assert!(*node.coordinator.lease_watch().borrow());
    claim_all(backend.store(), "node-a", &tokens).await?;
    // Nothing else happens to a sole node that keeps its shards.
    let quiet = tokio::time::timeout(Duration::from_millis(500), node.events.recv()).await;
    assert!(quiet.is_err(), "unexpected event: {quiet:?}");
    assert!(node.coordinator.lease_valid());
    node.coordinator.shutdown().await?;
    Ok(())
}

async fn a_restarted_node_acquires_every_shard_at_newer_tokens<B: Backend>(
    backend: &B,
) -> anyhow::Result<()> {
    let mut first = backend.start("node-a").await?;
    let before = acquire_all(&mut first, SHARDS).await?;
    claim_all(backend.store(), "node-a", &before).await?;
    first.coordinator.shutdown().await?;
    drop(first);

    // Right away: within the same second, possibly the same millisecond.
    let mut again = backend.start("node-a").await?;
    let after = acquire_all(&mut again, SHARDS).await?;
    for (shard, token) in &after {
        assert!(
            *token > before[shard],
            "shard {} reacquired at {token}, not above {}",
            shard.get(),
            before[shard]
        );
    }
    claim_all(backend.store(), "node-a", &after).await?;
    // The old tokens are fenced off.
    let (shard, old) = before.iter().next().context("a shard")?;
    let stale = backend.store().claim_shard(*shard, *old, "node-a").await;
    assert!(matches!(stale, Err(StoreError::Fenced { .. })), "{stale:?}");
    again.coordinator.shutdown().await?;
    Ok(())
}

async fn release_is_idempotent_and_a_sole_node_acquires_the_shard_again_at_a_newer_token<
    B: Backend,
>(
    backend: &B,
) -> anyhow::Result<()> {
    let mut node = backend.start("node-a").await?;
    let tokens = acquire_all(&mut node, SHARDS).await?;
    claim_all(backend.store(), "node-a", &tokens).await?;
    let shard = ShardId::new(SHARDS - 1).context("a shard")?;
    // As the core does when fencing a shard failed: give it back for another try.
    node.coordinator.release(shard).await?;
    node.coordinator.release(shard).await?;
    let event = tokio::time::timeout(WAIT, node.events.recv())
        .await
        .context("the released shard was not acquired again")?
        .context("the event channel closed")?;
    let OwnershipEvent::Acquired {
        shard: again,
        token,
    } = event
    else {
        bail!("expected the shard acquired again, got {event:?}");
    };
    assert_eq!(again, shard);
    assert!(token > tokens[&shard], "{token} <= {}", tokens[&shard]);
    backend.store().claim_shard(shard, token, "node-a").await?;
    assert!(node.coordinator.lease_valid());
    node.coordinator.shutdown().await?;
    Ok(())
}

async fn shutdown_ends_the_events_and_the_lease_and_is_idempotent<B: Backend>(
    backend: &B,
) -> anyhow::Result<()> {
    let mut node = backend.start("node-a").await?;
    acquire_all(&mut node, SHARDS).await?;
    let mut watch = node.coordinator.lease_watch();
    node.coordinator.shutdown().await?;
    assert!(!node.coordinator.lease_valid(), "no lease after shutdown");
    tokio::time::timeout(WAIT, watch.wait_for(|valid| !*valid))
        .await
        .context("lease_watch still true after shutdown")?
        .ok();
    // No events follow, and the channel closes.
    let end = tokio::time::timeout(WAIT, node.events.recv())
        .await
        .context("the event channel did not close")?;
    assert!(end.is_none(), "an event after shutdown: {end:?}");
    node.coordinator.shutdown().await?;
    let shard = ShardId::new(0).context("a shard")?;
    node.coordinator.release(shard).await?;
    Ok(())
}

/// Local only: tokens stay above what the store holds even when the clock is behind it (a
/// clock stepped back, or a token claimed far ahead by anything).
#[tokio::test]
async fn the_local_coordinator_starts_above_a_stored_token_from_the_future() -> anyhow::Result<()> {
    let (store, _dir) = sqlite().await?;
    let shard = ShardId::new(0).context("a shard")?;
    let future = chrono::Utc::now().timestamp_millis() + 3_600_000;
    store.claim_shard(shard, future, "before").await?;
    let config = LocalConfig {
        shard_count: 1,
        ..LocalConfig::new("node-a")
    };
    let (coordinator, events) = LocalCoordinator::start(config, &store).await?;
    let mut started = Started {
        coordinator: Arc::new(coordinator),
        events,
    };
    let tokens = acquire_all(&mut started, 1).await?;
    assert_eq!(tokens[&shard], future + 1);
    store.claim_shard(shard, tokens[&shard], "node-a").await?;
    started.coordinator.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_local_config_out_of_range_is_refused() {
    let (store, _dir) = sqlite().await.expect("store");
    for config in [
        LocalConfig {
            shard_count: 0,
            ..LocalConfig::new("n")
        },
        LocalConfig::new(""),
    ] {
        assert!(LocalCoordinator::start(config, &store).await.is_err());
    }
}
