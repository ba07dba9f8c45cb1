//! Test harness that runs the real things on loopback (Postgres, etcd, an image registry, Docker test images, a fake scheduler node, `kairos` processes); never used by production code.
//!
//! Every helper here owns what it starts: throwaway servers live in temporary
//! directories on free `127.0.0.1` ports and are stopped when their owner goes
//! away. Two environment variables let a test run share servers started once
//! by `scripts/test` instead of starting its own:
//!
//! - `KAIROS_TEST_DATABASE_URL`: an admin URL (`postgres://postgres@127.0.0.1:PORT/postgres`);
//!   [`database`] creates a fresh, empty database on that server.
//! - `KAIROS_TEST_ETCD_ENDPOINTS`: comma-separated client URLs; [`etcd`] hands
//!   them out with a unique key prefix per call.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let db = kairos_testkit::database().await?;
//! let etcd = kairos_testkit::etcd().await?;
//! println!("{} {:?} {}", db.url(), etcd.endpoints(), etcd.key_prefix());
//! # Ok(())
//! # }
//! ```

pub mod docker;
mod etcd;
mod fake_scheduler;
mod line_buffer;
mod ports;
mod postgres;
mod postgres_server;
mod process;
mod proxy;
mod reaper;
mod registry;
mod shutdown;

pub use docker::{ContainerCleanup, TestImage, require_docker};
pub use etcd::{TestEtcd, etcd, owned_etcd};
pub use fake_scheduler::{FakeScheduler, WorkerStream};
pub use ports::free_port;
pub use postgres::{TestDatabase, TestPostgres, database, dedicated_postgres};
pub use process::KairosProcess;
pub use proxy::TcpProxy;
pub use registry::TestRegistry;

/// Environment variable naming an admin URL of a Postgres server to create test databases on.
pub const DATABASE_URL_ENV: &str = "KAIROS_TEST_DATABASE_URL";

/// Environment variable naming comma-separated etcd client URLs shared by all tests.
pub const ETCD_ENDPOINTS_ENV: &str = "KAIROS_TEST_ETCD_ENDPOINTS";
