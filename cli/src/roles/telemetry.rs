//! Log setup of the server roles: `tracing` to stderr, JSON when `KAIROS_LOG_FORMAT=json`,
//! filtered by `RUST_LOG` (default `info`). Must never log secrets: callers pass ids, not values.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// The most bollard may log.
const BOLLARD_CAP: &str = "bollard=info";

/// Installs the global subscriber once; later calls are ignored.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info"))
        // bollard traces request bodies (a container's env, which may hold secrets): never
        // below info, whatever RUST_LOG says.
        .add_directive(BOLLARD_CAP.parse().expect("a valid static directive"));
    let json = std::env::var("KAIROS_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init()
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
    // Already installed (tests): keep the first.
    let _ = result;
}
