//! Prometheus metrics of the worker role, declared in one place with their help texts, and
//! the `/healthz`, `/readyz`, `/metrics` server (`KAIROS_METRICS_ADDR`). Labels are bounded
//! (a run's end state and reason), never a run, job, tenant or image.

use std::sync::Arc;

use axum::{Router, http::StatusCode, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::runtime::Outcome;

/// How a run ended: `state` and `reason` (empty unless failed).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndLabels {
    pub state: &'static str,
    pub reason: &'static str,
}

impl EndLabels {
    pub fn of(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Succeeded => Self {
                state: "succeeded",
                reason: "",
            },
            Outcome::Failed { reason, .. } => Self {
                state: "failed",
                reason: reason.as_str(),
            },
            Outcome::Cancelled => Self {
                state: "cancelled",
                reason: "",
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub runs_started: Counter,
    pub runs_finished: Family<EndLabels, Counter>,
    pub runs_withdrawn: Counter,
    pub runs_reattached: Counter,
    pub runs_running: Gauge,
    pub images_cached: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kairos_worker");
        let m = Self {
            registry: Arc::new(Registry::default()),
            runs_started: Counter::default(),
            runs_finished: Family::default(),
            runs_withdrawn: Counter::default(),
            runs_reattached: Counter::default(),
            runs_running: Gauge::default(),
            images_cached: Gauge::default(),
        };
        registry.register(
            "runs_started",
            "Runs the scheduler confirmed and this worker started",
            m.runs_started.clone(),
        );
        registry.register(
            "runs_finished",
            "Runs whose end this worker reported, by state and reason",
            m.runs_finished.clone(),
        );
        registry.register(
            "runs_withdrawn",
            "Accepted runs dropped before their start (start=false, cancel, no go in time)",
            m.runs_withdrawn.clone(),
        );
        registry.register(
            "runs_reattached",
            "Runs found running after a restart and followed to their end",
            m.runs_reattached.clone(),
        );
        registry.register(
            "runs_running",
            "Slots in use (runs being prepared or running)",
            m.runs_running.clone(),
        );
        registry.register(
            "images_cached",
            "Images present on this worker, as advertised in credits",
            m.images_cached.clone(),
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

/// Serves `/healthz`, `/readyz` and `/metrics` on `listener` until `stop`.
pub async fn serve(listener: TcpListener, metrics: Metrics, stop: CancellationToken) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    match metrics.render() {
                        Ok(body) => (StatusCode::OK, body),
                        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, String::new()),
                    }
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::warn!(error = %e, "health server stopped");
    }
}

#[cfg(test)]
mod tests {
    use kairos_domain::FailureReason;

    use super::*;

    #[test]
    fn ends_are_counted_by_state_and_reason_only() {
        let metrics = Metrics::new();
        metrics
            .runs_finished
            .get_or_create(&EndLabels::of(Outcome::Failed {
                reason: FailureReason::OomKilled,
                exit_code: Some(137),
            }))
            .inc();
        metrics.runs_started.inc();
        let text = metrics.render().unwrap();
        assert!(
            text.contains(
                r#"kairos_worker_runs_finished_total{state="failed",reason="oom_killed"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("kairos_worker_runs_started_total 1"),
            "{text}"
        );
    }
}
