//! Stops child processes: SIGTERM, a grace period, then SIGKILL; never signals a process it was not handed.

use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::process::Child;

/// How a child ended after [`terminate`].
#[derive(Debug)]
pub(crate) enum Ended {
    /// It exited by itself within the grace period.
    Gracefully(ExitStatus),
    /// It outlived the grace period and was killed.
    Killed(ExitStatus),
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILLs and reaps the child.
pub(crate) async fn terminate(child: &mut Child, grace: Duration) -> anyhow::Result<Ended> {
    if let Some(status) = child.try_wait().context("polling child status")? {
        return Ok(Ended::Gracefully(status));
    }
    send(child, Signal::SIGTERM)?;
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => Ok(Ended::Gracefully(status.context("waiting for child")?)),
        Err(_) => {
            child.start_kill().context("sending SIGKILL")?;
            let status = child.wait().await.context("waiting for killed child")?;
            Ok(Ended::Killed(status))
        }
    }
}

/// Sends `signal` to the child, unless it has already been reaped.
pub(crate) fn send(child: &Child, signal: Signal) -> anyhow::Result<()> {
    let Some(pid) = pid_of(child)? else {
        return Ok(());
    };
    match signal::kill(Pid::from_raw(pid), signal) {
        // ESRCH: it exited between the check and the signal.
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(errno) => Err(errno).with_context(|| format!("sending {signal} to pid {pid}")),
    }
}

/// SIGKILLs every process in group `pgid`; a group that is gone is fine.
pub(crate) fn kill_group(pgid: i32) -> anyhow::Result<()> {
    match signal::killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(errno) => Err(errno).with_context(|| format!("killing process group {pgid}")),
    }
}

/// The child's pid as a signed process id (its group id too, when it was
/// spawned as a group leader); `None` once it was reaped.
pub(crate) fn pid_of(child: &Child) -> anyhow::Result<Option<i32>> {
    child
        .id()
        .map(|id| i32::try_from(id).context("pid does not fit in i32"))
        .transpose()
}
