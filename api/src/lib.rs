//! The Kairos API service: authenticates callers, validates input into checked domain types,
//! and reads and writes the store through one service layer shared by REST and gRPC.
//!
//! It never talks to schedulers or workers directly: it reaches them only through the store
//! (and the NOTIFY hints the store sends on commit).

pub mod auth;
pub mod clock;
pub mod config;
pub mod error;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod rest;
pub mod server;
pub mod service;

pub use config::{ApiConfig, TenantLimits};
pub use error::ApiError;
pub use server::serve;
pub use service::Service;
