//! `kairos standalone`: the API, a scheduler node and a worker in one process, on one SQLite
//! file, with the local coordinator owning every shard (no Postgres, no etcd), for a single
//! team on one machine. Configured by `KAIROS_DATA_DIR`, `KAIROS_HTTP_ADDR`,
//! `KAIROS_GRPC_ADDR` and `KAIROS_RUNTIME` (plus the scheduler's tuning variables).
//!
//! It keeps in the data directory the database (`kairos.db`), a lock (`lock`: one process per
//! directory), the default tenant's API key (`credentials`, mode 0600: the database keeps
//! only its hash), so the key is the same on every start, and the key sealing registry
//! passwords (`secret-key`, mode 0600, unless `KAIROS_SECRET_KEY` gives one). It prints the URLs and, on a line of
//! its own, `api key: <KEY>`, and writes both to the CLI's credentials file. The worker reaches
//! the scheduler over the real `WorkerService` gRPC on a loopback port, with a token made up at
//! each start. On SIGTERM or Ctrl-C it stops the API, lets the worker drain (its reports reach
//! the scheduler), then stops the scheduler and closes the database. It must never print or
//! log the key anywhere but the `api key:` line.

use std::{
    fs,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use clap::Args;
use kairos_api::{ApiConfig, TenantLimits, auth, config::Secret};
use kairos_domain::{ApiKeyId, TenantName};
use kairos_scheduler::{
    coordinator::LocalConfig,
    node::{self, Ownership},
};
use kairos_sdk::Credentials;
use kairos_store::{NewApiKey, SecretKey, SqliteStore, Store};
use kairos_worker::{config::Schedulers, runtime::docker::DockerError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::client::CliError;

use super::{
    scheduler::PlanningOpts,
    shutdown,
    worker::{RunOpts, RuntimeArg},
};

/// The node and worker id of the one scheduler and worker.
const NODE_ID: &str = "standalone";
/// Name of the default tenant, created on the first start.
const DEFAULT_TENANT: &str = "default";
/// Files in the data directory.
const DATABASE_FILE: &str = "kairos.db";
const LOCK_FILE: &str = "lock";
const KEY_FILE: &str = "credentials";
const SECRET_KEY_FILE: &str = "secret-key";

#[derive(Debug, Args)]
pub struct StandaloneArgs {
    /// Directory of the database, the default tenant's API key and the lock (default:
    /// $XDG_DATA_HOME/kairos, else ~/.local/share/kairos). Delete it to start over.
    #[arg(long, env = "KAIROS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// REST listen address.
    #[arg(long, env = "KAIROS_HTTP_ADDR", default_value = ApiConfig::DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,
    /// gRPC listen address of the API (what the CLI and the SDK call).
    #[arg(long, env = "KAIROS_GRPC_ADDR", default_value = ApiConfig::DEFAULT_GRPC_ADDR)]
    pub grpc_addr: SocketAddr,
    /// Health and metrics address of the scheduler (/healthz, /readyz, /metrics); the API's
    /// are on the REST address.
    #[arg(long, env = "KAIROS_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Days of run history kept.
    #[arg(long, env = "KAIROS_RETENTION_DAYS", default_value_t = ApiConfig::DEFAULT_RETENTION_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub retention_days: u32,
    /// Seconds in-flight API requests get to finish after SIGTERM.
    #[arg(long, env = "KAIROS_SHUTDOWN_GRACE_SECONDS", default_value_t = 20)]
    pub shutdown_grace_seconds: u64,
    /// Live schedules a tenant may have (not completed; paused ones count): a create past it
    /// is refused with resource_exhausted (HTTP 429).
    #[arg(long, env = "KAIROS_MAX_SCHEDULES_PER_TENANT",
          default_value_t = TenantLimits::DEFAULT_MAX_LIVE_SCHEDULES,
          value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    pub max_schedules_per_tenant: u32,
    /// Key (64 hex digits) sealing registry passwords at rest (default: one made up on the
    /// first start and kept in the data directory as `secret-key`, mode 0600).
    #[arg(long, env = "KAIROS_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    #[command(flatten)]
    pub planning: PlanningOpts,
    /// How the worker runs jobs: `KAIROS_RUNTIME` (`docker`, the default, or `process`: the
    /// job's command directly on this machine, trusted commands only) and the Docker settings.
    #[command(flatten)]
    pub runs: RunOpts,
}

/// Runs everything until a signal; `admin_token` (the global `--admin-token` /
/// `KAIROS_ADMIN_TOKEN`) turns on the admin API for more tenants.
pub async fn run(args: StandaloneArgs, admin_token: Option<String>) -> anyhow::Result<()> {
    let data_dir = match args.data_dir.clone() {
        Some(dir) => dir,
        None => default_data_dir()?,
    };
    private_dir(&data_dir)?;
    let _lock = lock(&data_dir)?;
    // The runtime first: without a Docker engine nothing else is worth starting. The worker's
    // scheduler URL is known once its listener is bound, below.
    let worker_token = hex::encode(rand::random::<[u8; 32]>());
    let mut worker_config = args.runs.worker_config(
        Schedulers::Fixed(Vec::new()),
        worker_id(&data_dir),
        worker_token.clone(),
        None,
    )?;
    let runtime = match kairos_worker::agent::connect_runtime(&worker_config).await {
        Ok(runtime) => runtime,
        Err(e @ DockerError::Unreachable(_)) => {
            return Err(CliError::new("failed_precondition", e.to_string()).into());
        }
        Err(e) => return Err(e).context("the Docker runtime cannot start"),
    };
    let secret_key = match args.secret_key.as_deref().filter(|k| !k.is_empty()) {
        Some(key) => SecretKey::from_hex(key)?,
        None => kept_secret_key(&data_dir)?,
    };
    let store = SqliteStore::open(&data_dir.join(DATABASE_FILE))
        .await
        .with_context(|| format!("cannot open the database in {}", data_dir.display()))?
        .with_secret_key(secret_key);
    store.migrate().await.context("migrations failed")?;
    let key = default_tenant_key(&store, &data_dir).await?;

    let api_config = ApiConfig {
        http_addr: args.http_addr,
        grpc_addr: args.grpc_addr,
        admin_token: admin_token.filter(|t| !t.is_empty()).map(Secret::new),
        retention_days: args.retention_days,
        maintenance_interval: Duration::from_secs(3600),
        shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
        limits: TenantLimits {
            max_live_schedules: args.max_schedules_per_tenant,
        },
    };
    let (http, grpc) = kairos_api::server::bind(&api_config).await?;
    let rest_url = format!("http://{}", reachable(http.local_addr()?));
    let grpc_url = format!("http://{}", reachable(grpc.local_addr()?));
    // The worker's way in: loopback only, whatever the API listens on.
    let workers = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("cannot listen for the worker on loopback")?;
    let scheduler_url = format!("http://{}", workers.local_addr()?);

    let saved = Credentials::new(grpc_url.clone(), key.expose().to_owned());
    saved
        .save(&data_dir.join(KEY_FILE))
        .context("cannot keep the API key in the data directory")?;
    let credentials = match saved.save_default() {
        Ok(path) => path.display().to_string(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot write the CLI's credentials file; pass --api-key to the CLI");
            format!("not written ({e})")
        }
    };

    let scheduler_config = args.planning.node_config(
        Ownership::Local(LocalConfig::new(NODE_ID)),
        workers.local_addr()?,
        args.metrics_addr,
        worker_token.clone(),
    );
    worker_config.schedulers = Schedulers::Fixed(vec![scheduler_url]);

    let signal = shutdown::on_signal().context("cannot install signal handlers")?;
    let store = Arc::new(store);
    let api_stop = CancellationToken::new();
    let worker_stop = CancellationToken::new();
    let scheduler_stop = CancellationToken::new();
    let mut api = tokio::spawn(kairos_api::server::serve_on(
        http,
        grpc,
        api_config,
        store.clone(),
        api_stop.clone(),
    ));
    // Not spawned: the node holds the crash-point registry, which stays on this task.
    let scheduler = node::run_on(
        workers,
        scheduler_config,
        store.clone(),
        scheduler_stop.clone(),
    );
    tokio::pin!(scheduler);
    let (mut api_done, mut scheduler_done) = (false, false);
    let worker = tokio::spawn(kairos_worker::agent::run_with(
        worker_config,
        runtime,
        worker_stop.clone(),
    ));

    let runtime_note = match args.runs.runtime {
        RuntimeArg::Docker => "docker",
        RuntimeArg::Process => "process: job commands run directly on this machine",
    };
    let banner = format!(
        "Kairos standalone: API, scheduler and worker in one process (runtime {runtime_note})\n  \
         REST:        {rest_url}  (health: {rest_url}/healthz)\n  \
         gRPC:        {grpc_url}\n  \
         data:        {}\n  \
         credentials: {credentials}\n\
         Press Ctrl-C to stop.\n\
         api key: {}\n",
        data_dir.display(),
        key.expose()
    );
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(banner.as_bytes())?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!(rest = %rest_url, grpc = %grpc_url, data_dir = %data_dir.display(), "standalone started");

    let failure = tokio::select! {
        _ = signal.cancelled() => None,
        r = &mut api => {
            api_done = true;
            Some(format!("the API stopped: {}", outcome(r)))
        }
        r = &mut scheduler => {
            scheduler_done = true;
            Some(format!("the scheduler stopped: {}", outcome(Ok(r))))
        }
    };
    if let Some(failure) = &failure {
        tracing::error!(%failure, "stopping everything");
    }
    tracing::info!("standalone stopping: API first, then the worker drains, then the scheduler");
    api_stop.cancel();
    worker_stop.cancel();
    match worker.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the worker stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "the worker task failed"),
    }
    scheduler_stop.cancel();
    if !scheduler_done && let Err(e) = (&mut scheduler).await {
        tracing::warn!(error = %e, "the scheduler stopped with an error");
    }
    if !api_done {
        match api.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "the API stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "the API task failed"),
            Ok(Ok(())) => {}
        }
    }
    store.close().await;
    match failure {
        Some(failure) => bail!(failure),
        None => {
            tracing::info!("standalone stopped");
            Ok(())
        }
    }
}

/// How a component's task ended, in words.
fn outcome<E: std::fmt::Display>(joined: Result<Result<(), E>, tokio::task::JoinError>) -> String {
    match joined {
        Ok(Ok(())) => "without an error".to_owned(),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    }
}

/// The worker's id: `standalone-` and a hash of the data directory's path, so a restart on the
/// same directory re-attaches the containers it labelled, and two standalones on one Docker
/// engine (other directories) never take each other's. FNV-1a, hand-written: eight lines for a
/// hash that must not change between builds (std's `DefaultHasher` may).
fn worker_id(data_dir: &Path) -> String {
    let path = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in path.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{NODE_ID}-{:08x}", hash as u32)
}

/// `$XDG_DATA_HOME/kairos`, else `~/.local/share/kairos`.
fn default_data_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".local/share"))
        })
        .context("no data directory: set KAIROS_DATA_DIR (or HOME)")?;
    Ok(base.join("kairos"))
}

/// Creates `dir` (and its parents) if missing; a directory this creates is private (0700).
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))
}

/// Takes the data directory's lock for the life of the process: two processes on one SQLite
/// file would each own every shard.
fn lock(dir: &Path) -> anyhow::Result<fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(crate::client::CliError::new(
            "failed_precondition",
            format!(
                "another kairos standalone is running on {}: stop it, or set KAIROS_DATA_DIR to another directory",
                dir.display()
            ),
        )
        .into()),
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// The key sealing registry passwords: the one kept in the data directory, or a new one, kept
/// there (mode 0600) before anything is sealed with it.
fn kept_secret_key(dir: &Path) -> anyhow::Result<SecretKey> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let path = dir.join(SECRET_KEY_FILE);
    match fs::read_to_string(&path) {
        Ok(hex) => {
            let mode = fs::metadata(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                bail!(
                    "{} is readable by others (mode {:o}): run `chmod 600 {}`",
                    path.display(),
                    mode & 0o777,
                    path.display()
                );
            }
            SecretKey::from_hex(hex.trim())
                .with_context(|| format!("{} does not hold a secret key", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let hex = SecretKey::generate_hex();
            let temp = dir.join(format!(".{SECRET_KEY_FILE}.tmp{}", std::process::id()));
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)
                .with_context(|| format!("cannot write {}", temp.display()))?;
            file.write_all(hex.as_bytes())?;
            file.sync_all()?;
            fs::rename(&temp, &path).with_context(|| format!("cannot write {}", path.display()))?;
            Ok(SecretKey::from_hex(&hex)?)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The default tenant's API key: the one kept in the data directory (the tenant is created
/// for it if the database does not know it, e.g. after the database was deleted), or a new
/// one, kept before the tenant is created so a crash in between loses nothing.
async fn default_tenant_key(store: &SqliteStore, dir: &Path) -> anyhow::Result<Secret> {
    let path = dir.join(KEY_FILE);
    let kept = Credentials::load(&path)
        .with_context(|| format!("cannot read the API key kept in {}", path.display()))?
        .and_then(|c| c.api_key);
    let secret = match kept {
        Some(key) => Secret::new(key.expose()),
        None => {
            let minted = auth::mint_key();
            Credentials {
                endpoint: None,
                api_key: Some(minted.secret.expose().to_owned().into()),
            }
            .save(&path)
            .context("cannot keep the new API key in the data directory")?;
            minted.secret
        }
    };
    let hash = auth::hash_key(secret.expose());
    if store.tenant_for_key(&hash).await?.is_none() {
        let key = NewApiKey {
            id: ApiKeyId::generate(),
            hash,
            prefix: secret
                .expose()
                .chars()
                .take(auth::KEY_PREFIX.len() + 6)
                .collect(),
        };
        let name = TenantName::parse(DEFAULT_TENANT)?;
        let tenant = store
            .create_tenant(&name, &key)
            .await
            .context("cannot create the default tenant")?;
        tracing::info!(tenant_id = %tenant.id, "default tenant created");
    }
    Ok(secret)
}

/// An address a client on this machine can dial: a wildcard listener is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listener_is_dialled_on_loopback() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(reachable(any), "127.0.0.1:8080".parse().unwrap());
        let v6: SocketAddr = "[::]:9".parse().unwrap();
        assert_eq!(reachable(v6), "[::1]:9".parse().unwrap());
        let fixed: SocketAddr = "10.1.2.3:50051".parse().unwrap();
        assert_eq!(reachable(fixed), fixed);
    }

    #[test]
    fn a_second_lock_on_one_directory_is_refused_naming_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        let second = lock(dir.path()).unwrap_err().to_string();
        assert!(second.contains("KAIROS_DATA_DIR"), "{second}");
        drop(first);
        lock(dir.path()).unwrap();
    }
}
