//! The Rust SDK of Kairos: a typed client of the `kairos.v1` gRPC API. It depends on the wire
//! types (`kairos-proto`) and the checked domain types (`kairos-domain`) only, and must never
//! reach a store or a server's internals.
//!
//! A [`Client`] speaks for one tenant (its API key, sent as `authorization: Bearer <key>`). It
//! retries transient failures with exponential backoff and jitter, but never resends a call
//! that could create something twice (see [`retry`]); every unary call has a timeout. Errors
//! are one type, [`Error`], carrying the API's code and, for bad input, the field at fault.
//!
//! - jobs: [`Client::create_job`] ([`NewJob`]), [`get_job`](Client::get_job),
//!   [`list_jobs`](Client::list_jobs) / [`jobs`](Client::jobs) (every page as a stream),
//!   [`update_job`](Client::update_job) ([`JobUpdate`]), [`delete_job`](Client::delete_job);
//! - schedules: [`Client::create_schedule`] ([`NewSchedule`]), get, list /
//!   [`schedules`](Client::schedules), update ([`ScheduleUpdate`]), delete, pause, resume,
//!   [`trigger_schedule`](Client::trigger_schedule),
//!   [`backfill_schedule`](Client::backfill_schedule) (with a dry run);
//! - runs: [`Client::execute_now`] (with an idempotency key), [`get_run`](Client::get_run),
//!   list / [`runs`](Client::runs) ([`RunFilter`]), [`cancel_run`](Client::cancel_run),
//!   [`run_logs`](Client::run_logs), [`run_events`](Client::run_events),
//!   [`watch_run`](Client::watch_run) (a `Stream` of transitions),
//!   [`wait_for_run`](Client::wait_for_run), [`follow_logs`](Client::follow_logs);
//! - tenants (operators): [`AdminClient::create_tenant`];
//! - [`credentials`]: the file where the CLI and `kairos standalone` keep endpoint and key.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use kairos_sdk::{Client, NewJob, NewSchedule};
//!
//! # async fn demo() -> Result<(), kairos_sdk::Error> {
//! let client = Client::builder("http://127.0.0.1:50051")
//!     .api_key(std::env::var("KAIROS_API_KEY").unwrap_or_default())
//!     .build()?;
//!
//! // What to run, with hard limits.
//! let job = client
//!     .create_job(
//!         NewJob::new("report", "busybox:1.36")
//!             .command(["sh", "-c", "echo hello"])
//!             .memory_mb(128)
//!             .timeout(Duration::from_secs(60)),
//!     )
//!     .await?;
//!
//! // Run it now; the same key again answers the same run.
//! let execution = client.execute_now(&job.id, Some("report-2026-01-31")).await?;
//! let run = client
//!     .wait_for_run(&execution.run.id, Duration::from_secs(300))
//!     .await?;
//! println!("{} ended {}", run.id, run.state);
//! print!("{}", client.run_logs(&run.id).await?.content);
//!
//! // And every weekday at 09:00 in Paris.
//! let schedule = client
//!     .create_schedule(NewSchedule::cron(&job.id, "0 9 * * mon-fri").timezone("Europe/Paris"))
//!     .await?;
//! println!("next fires: {:?}", schedule.next_fire_times);
//! # Ok(()) }
//! ```
//!
//! Bad input answers [`Error::Api`] with the field:
//!
//! ```no_run
//! # async fn demo(client: kairos_sdk::Client) {
//! use kairos_sdk::NewJob;
//!
//! let err = client
//!     .create_job(NewJob::new("big", "busybox").memory_mb(4096))
//!     .await
//!     .unwrap_err();
//! assert_eq!(err.code_name(), "invalid_argument");
//! assert_eq!(err.field(), Some("memory_mb"));
//! # }
//! ```

#![warn(missing_docs)]

mod admin;
mod auth;
mod client;
pub mod credentials;
mod error;
mod jobs;
mod logs;
mod pages;
pub mod retry;
mod runs;
mod schedules;
pub mod time;
mod watch;

pub use admin::{AdminClient, NewTenant};
pub use auth::{ApiKey, BearerAuth};
pub use client::{Client, ClientBuilder, ClientOptions, DEFAULT_ENDPOINT, RawJobClient};
pub use credentials::{Credentials, CredentialsError};
pub use error::{Error, FIELD_METADATA, code_name};
pub use jobs::{JobUpdate, NewJob};
pub use logs::LogChunk;
pub use pages::{Page, ResultStream};
pub use retry::RetryPolicy;
pub use runs::{ExecuteJob, Execution, RunFilter, is_terminal, run_state};
pub use schedules::{NewSchedule, ScheduleUpdate};

/// The wire types of `kairos.v1` (`Job`, `Schedule`, `Run`, `RunEvent`, the requests), as the
/// client's methods take and answer them.
pub use kairos_proto::v1 as proto;
/// The gRPC status code carried by [`Error::code`].
pub use tonic::Code;
