//! The etcd coordinator against a real etcd: balancing, handoffs, fence tokens, exclusivity and the I8 lease deadline (the trait-level checks every coordinator passes are `coordinator_conformance.rs`); every test keeps its keys under its own testkit prefix and never touches another's.
//!
//! Each node gets a small "core" task that plays the scheduler: it records every event in a
//! shared ledger (which fails the test on any double ownership or non-increasing token) and
//! calls `release` when asked to hand a shard off.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use etcd_client::GetOptions;
use kairos_domain::ShardId;
use kairos_scheduler::balance;
use kairos_scheduler::coordinator::{
    Coordinator, CoordinatorConfig, EtcdCoordinator, OwnershipEvent,
};
use kairos_testkit::TestEtcd;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(3);
const CONVERGE: Duration = Duration::from_secs(30);

/// Who holds what according to the events the cores saw, plus every rule broken so far.
#[derive(Debug, Default)]
struct LedgerState {
    holders: BTreeMap<ShardId, (String, i64)>,
    last_token: BTreeMap<ShardId, i64>,
    violations: Vec<String>,
    /// (node, shard, when) for every `Lost`.
    lost: Vec<(String, ShardId, Instant)>,
    released: usize,
    /// (node, shard) announced `Released`; a `Lost` may still follow if the lease goes first.
    handing_off: BTreeSet<(String, ShardId)>,
}

#[derive(Debug, Default, Clone)]
struct Ledger(Arc<Mutex<LedgerState>>);

impl Ledger {
    fn state(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        self.0
            .lock()
            .expect("a core task panicked while holding the ledger")
    }

    fn record(&self, node: &str, event: OwnershipEvent) {
        let mut state = self.state();
        match event {
            OwnershipEvent::Acquired { shard, token } => {
                state.handing_off.remove(&(node.to_owned(), shard));
                if let Some((holder, held_token)) = state.holders.get(&shard) {
                    let violation = format!(
                        "{node} acquired shard {} at {token} while {holder} holds it at {held_token}",
                        shard.get()
                    );
                    state.violations.push(violation);
                }
                if let Some(last) = state.last_token.get(&shard).copied()
                    && token <= last
                {
                    let violation = format!(
                        "{node} acquired shard {} at token {token}, not above {last}",
                        shard.get()
                    );
                    state.violations.push(violation);
                }
                state.last_token.insert(shard, token);
                state.holders.insert(shard, (node.to_owned(), token));
            }
            OwnershipEvent::Lost { shard } | OwnershipEvent::Released { shard } => {
                let handing_off = state.handing_off.contains(&(node.to_owned(), shard));
                match state.holders.get(&shard) {
                    Some((holder, _)) if holder == node => {
                        state.holders.remove(&shard);
                    }
                    // A lease lost during a handoff: the core already stopped firing it.
                    _ if handing_off && matches!(event, OwnershipEvent::Lost { .. }) => {}
                    other => {
                        let violation =
                            format!("{node} gave up shard {} held by {other:?}", shard.get());
                        state.violations.push(violation);
                    }
                }
                if matches!(event, OwnershipEvent::Lost { .. }) {
                    state.handing_off.remove(&(node.to_owned(), shard));
                    state.lost.push((node.to_owned(), shard, Instant::now()));
                } else {
                    state.handing_off.insert((node.to_owned(), shard));
                    state.released += 1;
                }
            }
        }
    }

    /// The core of `node` stopped firing everything (before it calls `shutdown`).
    fn stopped(&self, node: &str) {
        self.state().holders.retain(|_, (holder, _)| holder != node);
    }

    fn holdings(&self) -> BTreeMap<ShardId, (String, i64)> {
        self.state().holders.clone()
    }

    fn held_by(&self, node: &str) -> BTreeMap<ShardId, i64> {
        self.holdings()
            .into_iter()
            .filter(|(_, (holder, _))| holder == node)
            .map(|(shard, (_, token))| (shard, token))
            .collect()
    }

    fn lost(&self) -> Vec<(String, ShardId, Instant)> {
        self.state().lost.clone()
    }

    fn released(&self) -> usize {
        self.state().released
    }

    fn check(&self) -> anyhow::Result<()> {
        let violations = self.state().violations.clone();
        ensure!(
            violations.is_empty(),
            "ownership rules broken: {violations:#?}"
        );
        Ok(())
    }

    /// Every shard held exactly once, only by `nodes`, none above `⌈S/N⌉`.
    fn converged(&self, nodes: &[&str], shard_count: u16) -> bool {
        let holdings = self.holdings();
        let target = balance::target(shard_count, nodes.len());
        holdings.len() == usize::from(shard_count)
            && holdings
                .values()
                .all(|(holder, _)| nodes.contains(&holder.as_str()))
            && nodes
                .iter()
                .all(|node| holdings.values().filter(|(h, _)| h == node).count() <= target)
    }
}

/// One scheduler node: its coordinator and the task playing its core.
struct Node {
    name: String,
    coordinator: Arc<EtcdCoordinator>,
    core: JoinHandle<()>,
}

impl Node {
    async fn start(
        etcd: &TestEtcd,
        endpoints: Vec<String>,
        name: &str,
        shard_count: u16,
        ledger: &Ledger,
    ) -> anyhow::Result<Self> {
        Self::start_with(etcd, endpoints, name, shard_count, ledger, |_| {}, true).await
    }

    /// `configure` adjusts the config; with `hand_back` false the core never calls `release`.
    async fn start_with(
        etcd: &TestEtcd,
        endpoints: Vec<String>,
        name: &str,
        shard_count: u16,
        ledger: &Ledger,
        configure: impl FnOnce(&mut CoordinatorConfig),
        hand_back: bool,
    ) -> anyhow::Result<Self> {
        init_logs();
        let mut config = CoordinatorConfig::new(endpoints, name);
        config.prefix = etcd.key_prefix().to_owned();
        config.lease_ttl = TTL;
        config.shard_count = shard_count;
        configure(&mut config);
        let (coordinator, events) = EtcdCoordinator::start(config).await?;
        let coordinator = Arc::new(coordinator);
        let core = tokio::spawn(core(
            name.to_owned(),
            coordinator.clone(),
            events,
            ledger.clone(),
            hand_back,
        ));
        Ok(Self {
            name: name.to_owned(),
            coordinator,
            core,
        })
    }

    /// Stops the node as the scheduler would: stop firing, then shut the coordinator down.
    async fn shutdown(self, ledger: &Ledger) -> anyhow::Result<()> {
        ledger.stopped(&self.name);
        self.coordinator.shutdown().await?;
        tokio::time::timeout(Duration::from_secs(10), self.core)
            .await
            .context("the event channel did not close after shutdown")??;
        Ok(())
    }
}

/// Shows the coordinators' logs with `RUST_LOG=kairos_scheduler=debug`; silent otherwise.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Plays the scheduler core: records events, hands shards back when asked.
async fn core(
    name: String,
    coordinator: Arc<EtcdCoordinator>,
    mut events: mpsc::Receiver<OwnershipEvent>,
    ledger: Ledger,
    hand_back: bool,
) {
    while let Some(event) = events.recv().await {
        ledger.record(&name, event);
        if let OwnershipEvent::Released { shard } = event
            && hand_back
        {
            // A failure is retried by the coordinator itself.
            let _ = coordinator.release(shard).await;
        }
    }
}

async fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The shard claims as etcd holds them: shard → (owner, create revision).
async fn claims_in_etcd(
    etcd: &TestEtcd,
    shard_count: u16,
) -> anyhow::Result<BTreeMap<ShardId, (String, i64)>> {
    let mut client = etcd.client().await?;
    let prefix = format!("{}shards/", etcd.key_prefix());
    let response = client
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await?;
    let mut claims = BTreeMap::new();
    for kv in response.kvs() {
        let n: u16 = kv.key_str()?.trim_start_matches(&prefix).parse()?;
        let shard = ShardId::new(n)
            .filter(|_| n < shard_count)
            .context("bad shard key")?;
        claims.insert(shard, (kv.value_str()?.to_owned(), kv.create_revision()));
    }
    Ok(claims)
}

/// Waits until the ledger shows `nodes` sharing every shard within target, then checks that
/// etcd agrees shard by shard, token by token.
async fn converge(
    etcd: &TestEtcd,
    ledger: &Ledger,
    nodes: &[&str],
    shard_count: u16,
) -> anyhow::Result<()> {
    let what = format!("{nodes:?} share {shard_count} shards");
    let waited = wait_until(&what, CONVERGE, || ledger.converged(nodes, shard_count)).await;
    ledger.check()?;
    waited.with_context(|| format!("holdings: {:?}", ledger.holdings()))?;
    let in_etcd = claims_in_etcd(etcd, shard_count).await?;
    ensure!(
        in_etcd == ledger.holdings(),
        "etcd {in_etcd:?} != ledger {:?}",
        ledger.holdings()
    );
    Ok(())
}

fn shards(node: &BTreeMap<ShardId, i64>) -> usize {
    node.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_split_the_shards_disjointly_and_completely() -> anyhow::Result<()> {
    let etcd = kairos_testkit::etcd().await?;
    let ledger = Ledger::default();
    let advertise = |config: &mut CoordinatorConfig| config.advertise = "http://a.test:1".into();
    let a = Node::start_with(&etcd, etcd.endpoints(), "a", 32, &ledger, advertise, true).await?;
    let b = Node::start(&etcd, etcd.endpoints(), "b", 32, &ledger).await?;
    converge(&etcd, &ledger, &["a", "b"], 32).await?;
    // Workers find a node's URL under its key.
    let node_key = format!("{}nodes/a", etcd.key_prefix());
    let registered = etcd.client().await?.get(node_key, None).await?;
    let url = registered
        .kvs()
        .first()
        .context("node key missing")?
        .value_str()?;
    assert_eq!(url, "http://a.test:1");
    assert_eq!(shards(&ledger.held_by("a")), 16);
    assert_eq!(shards(&ledger.held_by("b")), 16);
    assert!(a.coordinator.lease_valid() && b.coordinator.lease_valid());
    assert!(ledger.lost().is_empty(), "lost: {:?}", ledger.lost());
    a.shutdown(&ledger).await?;
    b.shutdown(&ledger).await?;
    ledger.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_takes_only_the_surplus_others_release_at_higher_tokens()
-> anyhow::Result<()> {
    let etcd = kairos_testkit::etcd().await?;
    let ledger = Ledger::default();
    let a = Node::start(&etcd, etcd.endpoints(), "a", 32, &ledger).await?;
    let b = Node::start(&etcd, etcd.endpoints(), "b", 32, &ledger).await?;
    converge(&etcd, &ledger, &["a", "b"], 32).await?;
    let before = ledger.holdings();
    let released_before = ledger.released();

    let c = Node::start(&etcd, etcd.endpoints(), "c", 32, &ledger).await?;
    converge(&etcd, &ledger, &["a", "b", "c"], 32).await?;
    // ⌈32/3⌉ = 11: a and b each hand off exactly 5, and c takes those 10.
    assert_eq!(shards(&ledger.held_by("a")), 11);
    assert_eq!(shards(&ledger.held_by("b")), 11);
    assert_eq!(shards(&ledger.held_by("c")), 10);
    assert_eq!(ledger.released() - released_before, 10);
    for (shard, token) in ledger.held_by("c") {
        let (previous_owner, old_token) = &before[&shard];
        assert!(
            token > *old_token,
            "shard {} moved from {previous_owner} at {old_token} to c at {token}",
            shard.get()
        );
    }
    // Nobody else lost or gained anything.
    for (shard, (holder, token)) in ledger.holdings() {
        if holder != "c" {
            assert_eq!(before[&shard], (holder, token));
        }
    }
    assert!(ledger.lost().is_empty(), "lost: {:?}", ledger.lost());
    for node in [a, b, c] {
        node.shutdown(&ledger).await?;
    }
    ledger.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivors_take_over_the_shards_of_a_node_that_shuts_down() -> anyhow::Result<()> {
    let etcd = kairos_testkit::etcd().await?;
    let ledger = Ledger::default();
    let a = Node::start(&etcd, etcd.endpoints(), "a", 24, &ledger).await?;
    let b = Node::start(&etcd, etcd.endpoints(), "b", 24, &ledger).await?;
    let c = Node::start(&etcd, etcd.endpoints(), "c", 24, &ledger).await?;
    converge(&etcd, &ledger, &["a", "b", "c"], 24).await?;
    let leaving = ledger.held_by("c");
    assert_eq!(leaving.len(), 8);

    let started = Instant::now();
    c.shutdown(&ledger).await?;
    converge(&etcd, &ledger, &["a", "b"], 24).await?;
    let took = started.elapsed();
    assert!(
        took < TTL,
        "takeover took {took:?}: it must not wait for the lease to expire"
    );
    for (shard, old_token) in leaving {
        let (holder, token) = &ledger.holdings()[&shard];
        assert!(
            *token > old_token,
            "shard {} to {holder}: {token} <= {old_token}",
            shard.get()
        );
    }
    assert!(ledger.lost().is_empty(), "lost: {:?}", ledger.lost());
    a.shutdown(&ledger).await?;
    b.shutdown(&ledger).await?;
    assert!(claims_in_etcd(&etcd, 24).await?.is_empty());
    ledger.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_etcd_stops_before_its_ttl_and_comes_back_with_new_tokens()
-> anyhow::Result<()> {
    let etcd = kairos_testkit::etcd().await?;
    let proxy = Proxy::start(&etcd.endpoints()[0]).await?;
    let ledger = Ledger::default();
    let a = Node::start(&etcd, vec![proxy.url()], "a", 16, &ledger).await?;
    converge(&etcd, &ledger, &["a"], 16).await?;
    let old_tokens = ledger.held_by("a");
    let mut valid = a.coordinator.lease_watch();
    assert!(*valid.borrow_and_update());

    let cut_at = Instant::now();
    proxy.cut();
    tokio::time::timeout(TTL, valid.wait_for(|valid| !*valid))
        .await
        .context("lease_valid still true a TTL after etcd went away")??;
    let stopped_after = cut_at.elapsed();
    assert!(!a.coordinator.lease_valid());
    wait_until("every shard is lost", TTL, || {
        ledger.held_by("a").is_empty()
    })
    .await?;
    let lost = ledger.lost();
    assert_eq!(lost.len(), 16);
    for (_, shard, when) in &lost {
        let after = *when - cut_at;
        assert!(
            after < TTL,
            "shard {} lost {after:?} after the cut",
            shard.get()
        );
    }
    // The last keep-alive went out at most TTL/3 before the cut: the deadline is at most
    // TTL − margin after it.
    assert!(stopped_after <= TTL - Duration::from_secs(1) + Duration::from_millis(300));

    proxy.heal();
    converge(&etcd, &ledger, &["a"], 16).await?;
    assert!(a.coordinator.lease_valid());
    for (shard, token) in ledger.held_by("a") {
        assert!(
            token > old_tokens[&shard],
            "shard {} reclaimed at {token}",
            shard.get()
        );
    }
    a.shutdown(&ledger).await?;
    ledger.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_lease_is_revoked_loses_every_shard_at_once_and_reclaims_them()
-> anyhow::Result<()> {
    let etcd = kairos_testkit::etcd().await?;
    let ledger = Ledger::default();
    let a = Node::start(&etcd, etcd.endpoints(), "a", 16, &ledger).await?;
    converge(&etcd, &ledger, &["a"], 16).await?;
    let old_tokens = ledger.held_by("a");

    let mut client = etcd.client().await?;
    let node_key = format!("{}nodes/a", etcd.key_prefix());
    let lease = client
        .get(node_key, None)
        .await?
        .kvs()
        .first()
        .context("node key missing")?
        .lease();
    let revoked_at = Instant::now();
    client.lease_revoke(lease).await?;
    wait_until("every shard is lost", TTL, || ledger.lost().len() == 16).await?;
    let took = revoked_at.elapsed();
    assert!(took < TTL, "lost after {took:?}");

    converge(&etcd, &ledger, &["a"], 16).await?;
    assert!(a.coordinator.lease_valid());
    for (shard, token) in ledger.held_by("a") {
        assert!(
            token > old_tokens[&shard],
            "shard {} reclaimed at {token}",
            shard.get()
        );
    }
    a.shutdown(&ledger).await?;
    ledger.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_stay_exclusive_while_nodes_come_and_go() -> anyhow::Result<()> {
    let etcd = kairos_testkit::etcd().await?;
    let ledger = Ledger::default();
    let a = Node::start(&etcd, etcd.endpoints(), "a", 64, &ledger).await?;
    let b = Node::start(&etcd, etcd.endpoints(), "b", 64, &ledger).await?;
    let c = Node::start(&etcd, etcd.endpoints(), "c", 64, &ledger).await?;
    converge(&etcd, &ledger, &["a", "b", "c"], 64).await?;
    b.shutdown(&ledger).await?;
    let d = Node::start(&etcd, etcd.endpoints(), "d", 64, &ledger).await?;
    let e = Node::start(&etcd, etcd.endpoints(), "e", 64, &ledger).await?;
    converge(&etcd, &ledger, &["a", "c", "d", "e"], 64).await?;
    a.shutdown(&ledger).await?;
    converge(&etcd, &ledger, &["c", "d", "e"], 64).await?;
    for node in [c, d, e] {
        node.shutdown(&ledger).await?;
    }
    ledger.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_the_core_never_hands_back_is_released_after_the_grace() -> anyhow::Result<()> {
    let etcd = kairos_testkit::etcd().await?;
    let ledger = Ledger::default();
    let grace = Duration::from_secs(1);
    let set_grace = |config: &mut CoordinatorConfig| config.handoff_grace = grace;
    let a = Node::start_with(&etcd, etcd.endpoints(), "a", 8, &ledger, set_grace, false).await?;
    converge(&etcd, &ledger, &["a"], 8).await?;

    let joined = Instant::now();
    let b = Node::start(&etcd, etcd.endpoints(), "b", 8, &ledger).await?;
    converge(&etcd, &ledger, &["a", "b"], 8).await?;
    let took = joined.elapsed();
    assert!(
        took >= grace,
        "b got shards after {took:?}, before the grace ran out"
    );
    assert_eq!(ledger.held_by("b").len(), 4);
    a.shutdown(&ledger).await?;
    b.shutdown(&ledger).await?;
    ledger.check()
}

#[tokio::test]
async fn a_bad_config_is_refused_before_anything_starts() {
    let config = CoordinatorConfig::new(Vec::new(), "a");
    let outcome = EtcdCoordinator::start(config).await;
    assert!(outcome.is_err());
}

/// A TCP forwarder in front of etcd that can be cut (every connection dropped, new ones
/// closed at once) and healed, to make etcd unreachable for one node only.
struct Proxy {
    addr: SocketAddr,
    open: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(endpoint: &str) -> anyhow::Result<Self> {
        let target: SocketAddr = endpoint
            .trim_start_matches("http://")
            .parse()
            .with_context(|| format!("etcd endpoint {endpoint}"))?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (open, _) = watch::channel(true);
        let opened = open.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut open = opened.subscribe();
                if !*open.borrow_and_update() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = open.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Ok(Self { addr, open, task })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn cut(&self) {
        self.open.send_replace(false);
    }

    fn heal(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
