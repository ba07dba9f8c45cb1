//! The Kairos scheduler: owns shards, plans their fires, fires them on time and dispatches runs; it never talks to Docker.
//!
//! Its job is four parts (see `docs/architecture.md`):
//! - *ownership*: claim shards in etcd under a lease, fence every write with the claim's token,
//!   and stop firing before the lease can expire;
//! - *planning*: keep each owned shard's fires due within the horizon in a [`wheel::TimingWheel`]
//!   and materialize them as `scheduled` runs in batched, fenced transactions;
//! - *firing*: when a fire is due, move its run to `queued`;
//! - *dispatch*: hand queued runs to workers that granted credit.
//!
//! Overlap policies, retries and jitter (schedule semantics) are not built yet.

pub mod balance;
pub mod coordinator;
pub mod dispatch;
pub mod engine;
pub mod metrics;
pub mod node;
pub mod planner;
pub mod wheel;
