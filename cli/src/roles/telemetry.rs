//! Log setup of the server roles: `tracing` to stderr, JSON when `KAIROS_LOG_FORMAT=json`,
//! filtered by `RUST_LOG` (default `info`; `kairos standalone` is quieter, see
//! [`STANDALONE_FILTER`]). Must never log secrets: callers pass ids, not values.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// The default filter of `kairos standalone`, a terminal program: warnings and errors, and
/// its own start and stop lines (not one line per shard of the 1024 it owns at start).
/// (Targets match by prefix, so `kairos::roles` and not `kairos`, which would take in every
/// `kairos_*` crate.)
pub const STANDALONE_FILTER: &str = "warn,kairos::roles=info";

/// The most bollard may log.
const BOLLARD_CAP: &str = "bollard=info";

/// Installs the global subscriber once with the default filter `info`; later calls are ignored.
pub fn init() {
    init_with("info");
}

/// [`init`] with another default filter (`RUST_LOG` still wins, but bollard is capped).
pub fn init_with(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter))
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
