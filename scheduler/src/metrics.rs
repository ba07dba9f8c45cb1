//! Prometheus metrics of the scheduler role, declared in one place with their help texts.
//! Labels are bounded (never a run, job or shard id).

use std::sync::Arc;

use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub shards_owned: Gauge,
    pub fires_materialized: Counter,
    pub fires_missed: Counter,
    pub runs_queued: Counter,
    /// Lateness of a fire: when its run was durably `queued` (or started on a worker holding
    /// it) minus its fire time.
    pub fire_lag_seconds: Histogram,
    /// Lateness of the wheel itself: when a fire timer popped minus its deadline.
    pub timer_lag_seconds: Histogram,
    pub runs_started: Counter,
    /// Runs started by their fire on a worker that held them prepared (offered ahead).
    pub runs_started_ahead: Counter,
    pub runs_finished: Counter,
    pub runs_lost: Counter,
    pub timers: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kairos_scheduler");
        let m = Self {
            registry: Arc::new(Registry::default()),
            shards_owned: Gauge::default(),
            fires_materialized: Counter::default(),
            fires_missed: Counter::default(),
            runs_queued: Counter::default(),
            fire_lag_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            timer_lag_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            runs_started: Counter::default(),
            runs_started_ahead: Counter::default(),
            runs_finished: Counter::default(),
            runs_lost: Counter::default(),
            timers: Gauge::default(),
        };
        registry.register(
            "shards_owned",
            "Shards this node owns",
            m.shards_owned.clone(),
        );
        registry.register(
            "fires_materialized",
            "Fires recorded as runs",
            m.fires_materialized.clone(),
        );
        registry.register(
            "fires_missed",
            "Fires recorded skipped/missed (outside the catch-up window)",
            m.fires_missed.clone(),
        );
        registry.register(
            "runs_queued",
            "Runs moved to queued at their fire time",
            m.runs_queued.clone(),
        );
        registry.register(
            "fire_lag_seconds",
            "Durably queued (or started on a worker holding the run) minus fire time",
            m.fire_lag_seconds.clone(),
        );
        registry.register(
            "timer_lag_seconds",
            "Fire timer popped minus its deadline",
            m.timer_lag_seconds.clone(),
        );
        registry.register(
            "runs_started_ahead",
            "Runs started by their fire on a worker that held them prepared",
            m.runs_started_ahead.clone(),
        );
        registry.register(
            "runs_started",
            "Runs a worker acked and started",
            m.runs_started.clone(),
        );
        registry.register(
            "runs_finished",
            "Runs whose end a worker reported",
            m.runs_finished.clone(),
        );
        registry.register(
            "runs_lost",
            "Runs failed with worker_lost",
            m.runs_lost.clone(),
        );
        registry.register(
            "timers",
            "Fires waiting in the timing wheel",
            m.timers.clone(),
        );
        Self {
            registry: Arc::new(registry),
            ..m
        }
    }

    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
