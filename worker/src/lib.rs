//! The Kairos worker agent: finds scheduler nodes in etcd, holds one `WorkerService` stream to
//! each, grants credits for its free slots, acks assignments (a lost race means it never
//! starts anything), prepares them ahead of their start, runs them through a `Runtime` (Docker
//! containers with hard limits, or host processes for trusted use), heartbeats, and reports
//! how they ended.
//!
//! It never touches the database: a worker host runs customer code and holds no database
//! credentials. It never trusts a run's output for control decisions.

pub mod agent;
pub mod config;
pub mod connection;
pub mod discovery;
pub mod lifecycle;
pub mod logs;
pub mod metrics;
pub mod runtime;
pub mod slots;

pub use agent::run;
pub use config::WorkerConfig;
