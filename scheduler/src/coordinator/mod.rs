//! Shard ownership for scheduler nodes behind the `Coordinator` seam: which shards this node may fire, with which fence token, and when it must stop; it never fires, plans or touches the store itself.
//!
//! Hand-written on purpose: ownership is the core of the scheduler. Who fires a shard, when a
//! node must stop (I8) and how a shard changes hands decide whether a fire runs twice (I1) or
//! not at all (I2), so these rules are ours to own and to test rather than a library's.
//!
//! # Contract with the scheduler core
//! A coordinator hands the core a bounded stream of [`OwnershipEvent`]s:
//! - [`OwnershipEvent::Acquired`]: the shard is ours at fence `token` (the etcd revision of the
//!   claim, strictly greater than any earlier owner's). The core claims it in the store with the
//!   token and starts planning and firing.
//! - [`OwnershipEvent::Released`]: the balancer hands this shard to another node. The core stops
//!   firing it, flushes what it has in flight for it, then calls [`Coordinator::release`]. The
//!   claim and its token stay valid until then (or until the handoff grace runs out, after which
//!   the coordinator releases the shard on its own).
//! - [`OwnershipEvent::Lost`]: the lease could not be renewed, or the claim vanished. Stop firing
//!   the shard at once; its token may already be superseded.
//!
//! Independently of events, [`Coordinator::lease_valid`] turns false the moment the local lease
//! deadline passes, before the lease can expire in etcd (I8); the core checks it before every
//! fire, so a slow event consumer cannot fire on a dead lease. [`Coordinator::shutdown`] (after
//! the core stopped firing and flushed) releases every shard and the node's membership at once
//! and ends the coordinator's tasks; no events follow it and the event channel closes.
//!
//! # Implementations
//! - [`EtcdCoordinator`]: membership and claims in etcd under a lease (`etcd.rs`, with `lease.rs`
//!   for the lease and its local deadline, `claims.rs` for the transactions, `watch.rs` for the
//!   cluster view). Balancing decisions come from [`crate::balance`].
//! - [`LocalCoordinator`]: the single node of standalone mode (`local.rs`). It owns every shard
//!   from the start at one token above every token the store has seen, and its lease is valid
//!   for as long as it runs.
//!
//! The trait-level behaviour of both is one conformance suite,
//! `scheduler/tests/coordinator_conformance.rs`.

mod claims;
mod etcd;
mod lease;
mod local;
mod watch;

use std::time::Duration;

use async_trait::async_trait;
use kairos_domain::{SHARD_COUNT, ShardId};
use tokio::sync::watch as tokio_watch;

pub use etcd::EtcdCoordinator;
pub use local::{DEFAULT_REACQUIRE_AFTER, LocalConfig, LocalCoordinator, first_token};

/// Key prefix under which nodes and shards live unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "/kairos/v1/";
/// Lease time-to-live unless configured otherwise.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// How long the core may take to flush a shard after [`OwnershipEvent::Released`] unless
/// configured otherwise.
pub const DEFAULT_HANDOFF_GRACE: Duration = Duration::from_secs(30);
/// Environment variable with comma-separated etcd client URLs.
pub const ETCD_ENDPOINTS_ENV: &str = "KAIROS_ETCD_ENDPOINTS";
/// Environment variable with this node's id.
pub const NODE_ID_ENV: &str = "KAIROS_NODE_ID";
/// Environment variable with the lease TTL in whole seconds.
pub const LEASE_TTL_ENV: &str = "KAIROS_LEASE_TTL_SECONDS";
/// Capacity of the event channel handed to the core.
pub const EVENT_CHANNEL_CAPACITY: usize = 256;
/// The shortest lease etcd grants reliably (its minimum TTL is about 1.5 s).
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

/// Settings of a coordinator node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// etcd client URLs (`KAIROS_ETCD_ENDPOINTS`).
    pub endpoints: Vec<String>,
    /// Key prefix, ending in `/` (default [`DEFAULT_PREFIX`]); nodes live under `{prefix}nodes/`,
    /// shard claims under `{prefix}shards/`.
    pub prefix: String,
    /// This node's id (`KAIROS_NODE_ID`): non-empty, printable ASCII, no `/`, at most 128 bytes.
    /// Two live processes must never share one.
    pub node_id: String,
    /// What this node registers under `{prefix}nodes/{node_id}`: its worker-facing gRPC URL
    /// (`http://host:port`), which workers discover there. Empty by default (a node no worker
    /// reaches, such as in tests); the scheduler binary sets it once it has bound its port.
    pub advertise: String,
    /// Lease time-to-live in whole seconds, at least [`MIN_LEASE_TTL`]
    /// (`KAIROS_LEASE_TTL_SECONDS`, default 10 s).
    pub lease_ttl: Duration,
    /// Number of shards S, at most [`SHARD_COUNT`] (every node of a deployment must agree).
    pub shard_count: u16,
    /// How long the core may take between [`OwnershipEvent::Released`] and
    /// [`Coordinator::release`] before the coordinator releases the shard itself.
    pub handoff_grace: Duration,
}

impl CoordinatorConfig {
    /// A config with the defaults for everything but the endpoints and the node id.
    pub fn new(endpoints: Vec<String>, node_id: impl Into<String>) -> Self {
        Self {
            endpoints,
            prefix: DEFAULT_PREFIX.to_owned(),
            node_id: node_id.into(),
            advertise: String::new(),
            lease_ttl: DEFAULT_LEASE_TTL,
            shard_count: SHARD_COUNT,
            handoff_grace: DEFAULT_HANDOFF_GRACE,
        }
    }

    /// Reads `KAIROS_ETCD_ENDPOINTS` (required), `KAIROS_NODE_ID` (default: the host name plus
    /// a random suffix) and `KAIROS_LEASE_TTL_SECONDS` (default 10) through `lookup`, so callers
    /// and tests choose where values come from.
    pub fn from_env_with(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, CoordinatorError> {
        let endpoints: Vec<String> = lookup(ETCD_ENDPOINTS_ENV)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|endpoint| !endpoint.is_empty())
            .map(str::to_owned)
            .collect();
        let node_id = match lookup(NODE_ID_ENV) {
            Some(id) if !id.trim().is_empty() => id.trim().to_owned(),
            _ => default_node_id(lookup("HOSTNAME")),
        };
        let mut config = Self::new(endpoints, node_id);
        if let Some(seconds) = lookup(LEASE_TTL_ENV) {
            let seconds: u64 =
                seconds
                    .trim()
                    .parse()
                    .map_err(|_| CoordinatorError::InvalidConfig {
                        field: "lease_ttl",
                        reason: format!("{LEASE_TTL_ENV} must be whole seconds, got {seconds:?}"),
                    })?;
            config.lease_ttl = Duration::from_secs(seconds);
        }
        config.validate()?;
        Ok(config)
    }

    /// Reads the process environment; see [`from_env_with`](Self::from_env_with).
    pub fn from_env() -> Result<Self, CoordinatorError> {
        Self::from_env_with(|name| std::env::var(name).ok())
    }

    /// Checks every field; the coordinator refuses to start with a config that fails this.
    pub fn validate(&self) -> Result<(), CoordinatorError> {
        let invalid = |field: &'static str, reason: String| {
            Err(CoordinatorError::InvalidConfig { field, reason })
        };
        if self.endpoints.is_empty() {
            return invalid("endpoints", format!("set {ETCD_ENDPOINTS_ENV}"));
        }
        if !self.prefix.starts_with('/') || !self.prefix.ends_with('/') {
            return invalid("prefix", "must start and end with '/'".to_owned());
        }
        if self.node_id.is_empty()
            || self.node_id.len() > 128
            || !self
                .node_id
                .bytes()
                .all(|byte| byte.is_ascii_graphic() && byte != b'/')
        {
            return invalid(
                "node_id",
                "must be 1 to 128 printable ASCII characters without '/'".to_owned(),
            );
        }
        if self.lease_ttl < MIN_LEASE_TTL || self.lease_ttl.subsec_nanos() != 0 {
            return invalid(
                "lease_ttl",
                format!("must be whole seconds, at least {MIN_LEASE_TTL:?}"),
            );
        }
        if self.shard_count == 0 || self.shard_count > SHARD_COUNT {
            return invalid("shard_count", format!("must be 1 to {SHARD_COUNT}"));
        }
        Ok(())
    }

    /// How long before the lease's earliest possible expiry this node stops: the larger of 1 s
    /// and a fifth of the TTL.
    pub fn safety_margin(&self) -> Duration {
        lease::safety_margin(self.lease_ttl)
    }
}

/// `{host}-{random hex}`: unique per process even when pods share a host name. Also the
/// default worker id (`kairos worker`).
pub fn default_node_id(host: Option<String>) -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = host
        .map(|host| host.trim().replace('/', "-"))
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "kairos".to_owned());
    // RandomState is seeded randomly per process: a random suffix without a dependency.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{host}-{:08x}", hasher.finish() as u32)
}

/// A change of this node's ownership of a shard, for the scheduler core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnershipEvent {
    /// The shard is ours; every store write for it carries `token`.
    Acquired { shard: ShardId, token: i64 },
    /// The shard is no longer safely ours (lease not renewed in time, or the claim vanished):
    /// stop firing it immediately. It may follow `Released` for the same shard when the lease
    /// goes before the core called [`Coordinator::release`].
    Lost { shard: ShardId },
    /// The shard is being handed to another node: stop firing, flush, then call
    /// [`Coordinator::release`]. The token stays valid until then.
    Released { shard: ShardId },
}

impl OwnershipEvent {
    /// The shard the event is about.
    pub fn shard(&self) -> ShardId {
        match *self {
            Self::Acquired { shard, .. } | Self::Lost { shard } | Self::Released { shard } => shard,
        }
    }
}

/// Why a coordinator call failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("invalid {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    /// The coordination service could not be reached or answered with an error; the
    /// coordinator keeps retrying in the background where that makes sense.
    #[error("coordination service unavailable: {0}")]
    Unavailable(String),
    #[error("the coordinator has shut down")]
    Stopped,
}

/// Shard ownership for one scheduler node. Implementations: [`EtcdCoordinator`] and
/// [`LocalCoordinator`]. Each is
/// started by its own constructor, which also returns the receiver of [`OwnershipEvent`]s.
#[async_trait]
pub trait Coordinator: Send + Sync + std::fmt::Debug {
    /// This node's id.
    fn node_id(&self) -> &str;

    /// True while this node holds a lease whose local deadline has not passed. When false, the
    /// node must not fire anything, whatever events it has seen (I8).
    fn lease_valid(&self) -> bool;

    /// Follows [`lease_valid`](Self::lease_valid): false as soon as the deadline passes, true
    /// again once a new lease is registered.
    fn lease_watch(&self) -> tokio_watch::Receiver<bool>;

    /// Gives `shard` up: the core has stopped firing it and flushed. Idempotent: a shard this
    /// node does not hold (already lost or released) is a success. A shard released without a
    /// preceding [`OwnershipEvent::Released`] may be claimed again by any node, this one too.
    async fn release(&self, shard: ShardId) -> Result<(), CoordinatorError>;

    /// Releases every shard and the node's membership, then ends the coordinator's tasks. Call
    /// it once the core stopped firing and flushed. Idempotent.
    async fn shutdown(&self) -> Result<(), CoordinatorError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_environment_sets_endpoints_node_id_and_ttl() {
        let config = CoordinatorConfig::from_env_with(env(&[
            (ETCD_ENDPOINTS_ENV, "http://a:2379, http://b:2379"),
            (NODE_ID_ENV, "node-1"),
            (LEASE_TTL_ENV, "15"),
        ]))
        .unwrap();
        assert_eq!(config.endpoints, ["http://a:2379", "http://b:2379"]);
        assert_eq!(config.node_id, "node-1");
        assert_eq!(config.lease_ttl, Duration::from_secs(15));
        assert_eq!(config.prefix, DEFAULT_PREFIX);
        assert_eq!(config.shard_count, SHARD_COUNT);
    }

    #[test]
    fn the_node_id_defaults_to_the_host_name_plus_a_suffix() {
        let config = CoordinatorConfig::from_env_with(env(&[
            (ETCD_ENDPOINTS_ENV, "http://a:2379"),
            ("HOSTNAME", "sched-0"),
        ]))
        .unwrap();
        assert!(config.node_id.starts_with("sched-0-"), "{}", config.node_id);
        assert_eq!(config.lease_ttl, DEFAULT_LEASE_TTL);
    }

    #[test]
    fn bad_settings_are_refused_naming_the_field() {
        let field = |config: CoordinatorConfig| match config.validate() {
            Err(CoordinatorError::InvalidConfig { field, .. }) => field,
            other => panic!("expected an invalid config, got {other:?}"),
        };
        let good = CoordinatorConfig::new(vec!["http://a:2379".into()], "n");
        assert!(good.validate().is_ok());
        assert_eq!(
            field(CoordinatorConfig {
                endpoints: vec![],
                ..good.clone()
            }),
            "endpoints"
        );
        assert_eq!(
            field(CoordinatorConfig {
                node_id: "a/b".into(),
                ..good.clone()
            }),
            "node_id"
        );
        assert_eq!(
            field(CoordinatorConfig {
                prefix: "x".into(),
                ..good.clone()
            }),
            "prefix"
        );
        let short = Duration::from_secs(1);
        assert_eq!(
            field(CoordinatorConfig {
                lease_ttl: short,
                ..good.clone()
            }),
            "lease_ttl"
        );
        let fractional = Duration::from_millis(2500);
        assert_eq!(
            field(CoordinatorConfig {
                lease_ttl: fractional,
                ..good.clone()
            }),
            "lease_ttl"
        );
        assert_eq!(
            field(CoordinatorConfig {
                shard_count: 0,
                ..good.clone()
            }),
            "shard_count"
        );
        let ttl = CoordinatorConfig::from_env_with(env(&[
            (ETCD_ENDPOINTS_ENV, "http://a:2379"),
            (LEASE_TTL_ENV, "ten"),
        ]));
        assert!(matches!(
            ttl,
            Err(CoordinatorError::InvalidConfig {
                field: "lease_ttl",
                ..
            })
        ));
    }
}
