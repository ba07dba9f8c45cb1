//! Prometheus metrics of the API role, declared in one place with their help texts.
//!
//! Labels are bounded: route templates (never raw paths), methods, status codes, triggers —
//! never a tenant, job or run id.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{StatusCode, header::CONTENT_TYPE},
    middleware::Next,
    response::{IntoResponse, Response},
};
use kairos_domain::Trigger;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::Service;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub method: String,
    pub code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    pub trigger: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~8 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// Every metric of the API role, plus the registry that renders them.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: HistogramFamily<RouteLabels>,
    pub grpc_requests: Family<GrpcLabels, Counter>,
    pub jobs_created: Counter,
    pub schedules_created: Counter,
    runs_created: Family<TriggerLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kairos_api");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "REST requests answered, by route and status",
            http_requests.clone(),
        );
        let http_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "REST request latency by route",
            http_duration.clone(),
        );
        let grpc_requests = Family::<GrpcLabels, Counter>::default();
        registry.register(
            "grpc_requests",
            "gRPC calls answered, by method and status code",
            grpc_requests.clone(),
        );
        let jobs_created = Counter::default();
        registry.register("jobs_created", "Jobs created", jobs_created.clone());
        let schedules_created = Counter::default();
        registry.register(
            "schedules_created",
            "Schedules created",
            schedules_created.clone(),
        );
        let runs_created = Family::<TriggerLabels, Counter>::default();
        registry.register(
            "runs_created",
            "Runs created by the API, by trigger",
            runs_created.clone(),
        );
        Self {
            registry: Arc::new(registry),
            http_requests,
            http_duration,
            grpc_requests,
            jobs_created,
            schedules_created,
            runs_created,
        }
    }

    pub fn runs_created(&self, trigger: Trigger) {
        self.runs_created
            .get_or_create(&TriggerLabels {
                trigger: trigger.as_str().into(),
            })
            .inc();
    }

    pub fn grpc_call(&self, method: &str, code: tonic::Code) {
        self.grpc_requests
            .get_or_create(&GrpcLabels {
                method: method.into(),
                code: format!("{code:?}"),
            })
            .inc();
    }

    /// The registry in the OpenMetrics text format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// `GET /metrics`.
pub async fn serve_metrics(State(service): State<Service>) -> Response {
    match service.metrics().render() {
        Ok(body) => (
            [(
                CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Middleware counting and timing every REST request by route template.
pub async fn track_http(State(service): State<Service>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = service.metrics();
    metrics
        .http_duration
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
