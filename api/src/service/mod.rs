//! The one service layer behind REST and gRPC: authentication, input checking, and the store
//! calls of every operation. Adapters translate wire formats to these calls and back, and
//! must never reach the store themselves.
//!
//! Every operation takes the caller's `TenantId` first; a resource id is looked up only within
//! that tenant, and an id that does not parse is answered as a missing resource (I6).

mod credentials;
mod jobs;
mod runs;
mod schedules;
mod tenants;

use std::{str::FromStr, sync::Arc};

use kairos_domain::TenantId;
use kairos_store::Store;

pub use runs::{BackfillOutcome, LogsView};
pub use schedules::ScheduleView;

use crate::{
    ApiError,
    auth::{self, hash_key},
    clock::Clock,
    config::{Secret, TenantLimits},
    metrics::Metrics,
};

/// Shared, cheaply cloneable handle to the service.
#[derive(Debug, Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    admin_token: Option<Secret>,
    metrics: Metrics,
    limits: TenantLimits,
}

impl Service {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        admin_token: Option<Secret>,
        metrics: Metrics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                admin_token,
                metrics,
                limits: TenantLimits::default(),
            }),
        }
    }

    /// The same service with other per-tenant quotas (the default is
    /// [`TenantLimits::default`]).
    pub fn with_limits(self, limits: TenantLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: self.inner.store.clone(),
                clock: self.inner.clock.clone(),
                admin_token: self.inner.admin_token.clone(),
                metrics: self.inner.metrics.clone(),
                limits,
            }),
        }
    }

    fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.inner.clock.now()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The tenant owning the API key in an `Authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<TenantId, ApiError> {
        let key = authorization.and_then(auth::bearer).ok_or_else(|| {
            ApiError::unauthenticated("missing 'Authorization: Bearer <api key>' header")
        })?;
        self.store()
            .tenant_for_key(&hash_key(key))
            .await?
            .ok_or_else(|| ApiError::unauthenticated("unknown or revoked API key"))
    }

    /// Checks the admin bearer of `POST /v1/tenants`.
    pub fn authorize_admin(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        let Some(configured) = &self.inner.admin_token else {
            return Err(ApiError::new(
                kairos_domain::ErrorCode::PermissionDenied,
                "the admin API is disabled: start the API with KAIROS_ADMIN_TOKEN set",
            ));
        };
        match authorization.and_then(auth::bearer) {
            Some(token) if auth::admin_token_matches(configured, token) => Ok(()),
            _ => Err(ApiError::unauthenticated("a valid admin token is required")),
        }
    }

    /// Readiness: the store answers.
    pub async fn ready(&self) -> Result<(), ApiError> {
        self.store().ping().await.map_err(ApiError::from)
    }
}

/// Parses a resource id from a path or filter; anything unparsable is "not found" (I6).
pub(crate) fn parse_id<T: FromStr>(raw: &str, kind: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found(kind))
}
