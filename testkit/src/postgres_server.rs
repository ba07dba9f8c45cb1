//! Starts throwaway Postgres servers in temporary directories: one shared per test process, and
//! dedicated ones a test may stop and start again; never touches a server it did not start.
//!
//! The server listens on a free `127.0.0.1` port with its unix socket inside
//! the temporary directory, runs with `fsync=off`, trusts local connections
//! and is stopped (and its directory removed) by a [`reaper`](crate::reaper)
//! once the test process exits. `initdb` refuses to run as root, so as root
//! the directory is handed to the `postgres` user and every server command
//! runs through `runuser -u postgres --`.

use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{Context as _, bail};
use tokio::process::Command;
use tokio::sync::OnceCell;

use crate::ports::free_port;
use crate::reaper;

/// How many ports to try when another process grabs the one picked.
const START_ATTEMPTS: usize = 5;
/// Seconds `pg_ctl` waits for the server to accept connections.
const START_TIMEOUT_SECONDS: &str = "60";

/// A throwaway server; it runs until stopped or until the test process exits.
#[derive(Debug)]
pub(crate) struct PgServer {
    admin_url: String,
    run_as: RunAs,
    data: PathBuf,
    log: PathBuf,
    options: String,
}

impl PgServer {
    /// URL of the `postgres` database as the `postgres` superuser.
    pub(crate) fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// Stops the server (`pg_ctl stop -m fast`: sessions are ended, the data stays).
    pub(crate) async fn stop(&self) -> anyhow::Result<()> {
        let stopped = self
            .run_as
            .command(&postgres_bin_dir().join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-m", "fast", "stop"])
            .output()
            .await
            .context("running pg_ctl stop")?;
        check(&stopped, "pg_ctl stop")
    }

    /// Starts the stopped server again on the same port and data directory.
    pub(crate) async fn start(&self) -> anyhow::Result<()> {
        let started = pg_ctl_start(self.run_as, &self.data, &self.log, &self.options).await?;
        check(&started, "pg_ctl start").with_context(|| {
            format!(
                "server log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        })
    }
}

static SERVER: OnceCell<PgServer> = OnceCell::const_new();

/// The process-wide throwaway server, started on first use.
pub(crate) async fn shared() -> anyhow::Result<&'static PgServer> {
    SERVER.get_or_try_init(start).await
}

/// A new throwaway server of its own, stopped and removed when the process exits.
pub(crate) async fn start() -> anyhow::Result<PgServer> {
    let bin_dir = postgres_bin_dir();
    let run_as = RunAs::detect()?;
    let dir = tempfile::Builder::new()
        .prefix("kairos-pg-")
        .tempdir()
        .context("creating a temporary directory for Postgres")?
        .keep();
    let data = dir.join("data");
    let sockets = dir.join("sock");
    let log = dir.join("postgres.log");
    std::fs::create_dir(&sockets).with_context(|| format!("creating {}", sockets.display()))?;
    run_as.hand_over(&dir)?;
    run_as.hand_over(&sockets)?;

    // From here on the reaper owns the directory: it stops whatever server
    // runs there and removes it once this process exits.
    let pg_ctl = bin_dir.join("pg_ctl");
    reaper::on_exit(&format!(
        "{run_as}{pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
        run_as = run_as.shell_prefix(),
        pg_ctl = reaper::shell_quote(&pg_ctl.to_string_lossy()),
        data = reaper::shell_quote(&data.to_string_lossy()),
        dir = reaper::shell_quote(&dir.to_string_lossy()),
    ))?;

    let initdb = run_as
        .command(&bin_dir.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .output()
        .await
        .context("running initdb (is Postgres installed? run scripts/deps)")?;
    check(&initdb, "initdb")?;

    let mut last_error = None;
    for _ in 0..START_ATTEMPTS {
        let port = free_port();
        let options = format!(
            "-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            sockets = sockets.display(),
        );
        let started = pg_ctl_start(run_as, &data, &log, &options).await?;
        if started.status.success() {
            return Ok(PgServer {
                admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                run_as,
                data,
                log,
                options,
            });
        }
        let server_log = std::fs::read_to_string(&log).unwrap_or_default();
        let error = check(&started, "pg_ctl start")
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("pg_ctl start failed"))
            .context(format!("server log:\n{server_log}"));
        if !server_log.contains("could not bind") && !server_log.contains("in use") {
            return Err(error);
        }
        last_error = Some(error);
    }
    Err(last_error
        .unwrap_or_else(|| anyhow::anyhow!("no attempt made"))
        .context(format!(
            "Postgres did not start after {START_ATTEMPTS} ports"
        )))
}

async fn pg_ctl_start(
    run_as: RunAs,
    data: &Path,
    log: &Path,
    options: &str,
) -> anyhow::Result<Output> {
    run_as
        .command(&postgres_bin_dir().join("pg_ctl"))
        .arg("-D")
        .arg(data)
        .arg("-l")
        .arg(log)
        .args(["-w", "-t", START_TIMEOUT_SECONDS, "-o"])
        .arg(options)
        .arg("start")
        .output()
        .await
        .context("running pg_ctl start")
}

/// Directory holding `initdb` and `pg_ctl`: the newest Debian-style
/// `/usr/lib/postgresql/<version>/bin`, else whatever `PATH` finds.
pub(crate) fn postgres_bin_dir() -> PathBuf {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    match newest {
        Some((_, bin)) => bin,
        // An empty directory makes `join("initdb")` a bare name, resolved through PATH.
        None => PathBuf::new(),
    }
}

/// Whether server commands must run as the `postgres` user.
#[derive(Debug, Clone, Copy)]
enum RunAs {
    CurrentUser,
    /// Running as root: uid and gid of `postgres`.
    Postgres(nix::unistd::Uid, nix::unistd::Gid),
}

impl RunAs {
    fn detect() -> anyhow::Result<Self> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(Self::CurrentUser);
        }
        let user = nix::unistd::User::from_name("postgres")
            .context("looking up the postgres user")?
            .context(
                "running as root needs a `postgres` user to run the server (run scripts/deps)",
            )?;
        Ok(Self::Postgres(user.uid, user.gid))
    }

    fn hand_over(self, path: &Path) -> anyhow::Result<()> {
        if let Self::Postgres(uid, gid) = self {
            std::os::unix::fs::chown(path, Some(uid.as_raw()), Some(gid.as_raw()))
                .with_context(|| format!("handing {} to the postgres user", path.display()))?;
        }
        Ok(())
    }

    fn command(self, program: &Path) -> Command {
        match self {
            Self::CurrentUser => Command::new(program),
            Self::Postgres(..) => {
                let mut command = Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(program);
                command
            }
        }
    }

    fn shell_prefix(self) -> &'static str {
        match self {
            Self::CurrentUser => "",
            Self::Postgres(..) => "runuser -u postgres -- ",
        }
    }
}

fn check(output: &Output, what: &str) -> anyhow::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    bail!(
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
