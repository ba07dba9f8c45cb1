//! The process runtime: runs the job's `command` directly on the worker's host, in its own
//! process group with a clean environment, enforcing the timeout (SIGTERM, grace, SIGKILL).
//!
//! For trusted single-team installs and for measuring the scheduler without container start
//! cost only: it records but does not use the image, and it cannot enforce the memory cap
//! (that is the Docker runtime's job). It must never be the default runtime.

use std::{process::Stdio, time::Duration};

use async_trait::async_trait;
use kairos_domain::FailureReason;
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    process::{Child, Command},
};

use super::{Finished, Handle, Outcome, Prepared, RunSpec, Runtime, StopSignals};
use crate::logs::LiveLog;

/// PATH given to processes, whose environment is otherwise only the job's.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    /// Time between SIGTERM and SIGKILL when a run is stopped.
    pub grace: Duration,
}

impl Default for ProcessRuntime {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(10),
        }
    }
}

enum Stop {
    Timeout,
    Cancel,
    Abandon,
}

#[async_trait]
impl Runtime for ProcessRuntime {
    /// Nothing to prepare: the command starts from scratch at `start`.
    async fn prepare(&self, spec: RunSpec, _stop: &StopSignals) -> Result<Prepared, Finished> {
        Ok(Prepared {
            spec,
            handle: Handle::Process,
        })
    }

    async fn discard(&self, _prepared: Prepared) {}

    async fn start(&self, prepared: Prepared, stop: StopSignals, tail: LiveLog) -> Finished {
        let spec = prepared.spec;
        let Some((program, args)) = spec.command.split_first() else {
            return failed_to_start(
                &tail,
                "the process runtime needs a command: the job has none",
            );
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .envs(&spec.env)
            .env("KAIROS_RUN_ID", &spec.run_id)
            .env("KAIROS_JOB_ID", &spec.job_id)
            .env("KAIROS_ATTEMPT", spec.attempt.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(fire_time) = spec.fire_time {
            command.env("KAIROS_FIRE_TIME", fire_time.to_rfc3339());
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => return failed_to_start(&tail, &format!("cannot start '{program}': {e}")),
        };
        let readers = [
            child
                .stdout
                .take()
                .map(|out| tokio::spawn(capture(out, tail.clone()))),
            child
                .stderr
                .take()
                .map(|err| tokio::spawn(capture(err, tail.clone()))),
        ];

        let stopped = tokio::select! {
            status = child.wait() => {
                drain_readers(readers).await;
                let outcome = match status {
                    Ok(s) if s.success() => Outcome::Succeeded,
                    Ok(s) => Outcome::Failed { reason: FailureReason::ExitCode, exit_code: Some(exit_code(s)) },
                    Err(e) => {
                        tail.note(&format!("lost track of the process: {e}"));
                        Outcome::Failed { reason: FailureReason::WorkerLost, exit_code: None }
                    }
                };
                return finish(outcome, &tail);
            }
            _ = tokio::time::sleep(spec.timeout) => Stop::Timeout,
            _ = stop.cancel.cancelled() => Stop::Cancel,
            _ = stop.abandon.cancelled() => Stop::Abandon,
        };
        terminate(&mut child, self.grace).await;
        drain_readers(readers).await;
        let outcome = match stopped {
            Stop::Timeout => {
                tail.note(&format!(
                    "killed: exceeded the timeout of {} s",
                    spec.timeout.as_secs()
                ));
                Outcome::Failed {
                    reason: FailureReason::TimedOut,
                    exit_code: None,
                }
            }
            Stop::Cancel => Outcome::Cancelled,
            Stop::Abandon => Outcome::Failed {
                reason: FailureReason::WorkerLost,
                exit_code: None,
            },
        };
        finish(outcome, &tail)
    }
}

/// SIGTERM to the whole group, then SIGKILL after `grace` if it is still there.
async fn terminate(child: &mut Child, grace: Duration) {
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    let group = Pid::from_raw(pid);
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

async fn capture<R: AsyncRead + Unpin>(mut reader: R, tail: LiveLog) {
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tail.push(&buf[..n]);
    }
}

/// Waits briefly for the output readers: a grandchild holding the pipe must not hang us.
async fn drain_readers(readers: [Option<tokio::task::JoinHandle<()>>; 2]) {
    for reader in readers.into_iter().flatten() {
        let abort = reader.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

fn failed_to_start(tail: &LiveLog, message: &str) -> Finished {
    tail.note(message);
    finish(Outcome::failed(FailureReason::StartFailed), tail)
}

fn finish(outcome: Outcome, tail: &LiveLog) -> Finished {
    Finished::from_log(outcome, tail)
}

/// The exit code, or 128 + signal number for a process killed by a signal (as shells report).
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &[&str], timeout_ms: u64) -> RunSpec {
        RunSpec {
            run_id: "run_test".into(),
            job_id: "job_test".into(),
            tenant_id: "ten_test".into(),
            image: "ignored".into(),
            registry_auth: None,
            command: command.iter().map(|s| s.to_string()).collect(),
            env: [("GREETING".to_string(), "hello".to_string())].into(),
            memory_mb: 128,
            timeout: Duration::from_millis(timeout_ms),
            fire_time: None,
            attempt: 1,
            shard: 0,
        }
    }

    fn runtime() -> ProcessRuntime {
        ProcessRuntime {
            grace: Duration::from_millis(300),
        }
    }

    #[tokio::test]
    async fn a_successful_command_reports_its_output_and_env() {
        let done = runtime()
            .run(
                spec(
                    &["sh", "-c", "echo $GREETING $KAIROS_RUN_ID; echo oops >&2"],
                    10_000,
                ),
                StopSignals::default(),
                LiveLog::default(),
            )
            .await;
        assert_eq!(done.outcome, Outcome::Succeeded);
        assert!(
            done.log_tail.contains("hello run_test"),
            "{}",
            done.log_tail
        );
        assert!(done.log_tail.contains("oops"));
        assert!(!done.log_truncated);
    }

    #[tokio::test]
    async fn a_non_zero_exit_is_a_failure_with_its_code() {
        let done = runtime()
            .run(
                spec(&["sh", "-c", "exit 3"], 10_000),
                StopSignals::default(),
                LiveLog::default(),
            )
            .await;
        assert_eq!(
            done.outcome,
            Outcome::Failed {
                reason: FailureReason::ExitCode,
                exit_code: Some(3)
            }
        );
    }

    #[tokio::test]
    async fn a_run_past_its_timeout_is_killed_even_if_it_ignores_sigterm() {
        let done = runtime()
            .run(
                spec(&["sh", "-c", "trap '' TERM; sleep 30"], 200),
                StopSignals::default(),
                LiveLog::default(),
            )
            .await;
        assert_eq!(
            done.outcome,
            Outcome::Failed {
                reason: FailureReason::TimedOut,
                exit_code: None
            }
        );
        assert!(done.log_tail.contains("timeout"));
    }

    #[tokio::test]
    async fn a_cancelled_run_is_stopped_and_reported_cancelled() {
        let stop = StopSignals::default();
        let cancel = stop.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            cancel.cancel();
        });
        let done = runtime()
            .run(spec(&["sleep", "30"], 60_000), stop, LiveLog::default())
            .await;
        assert_eq!(done.outcome, Outcome::Cancelled);
    }

    #[tokio::test]
    async fn a_missing_program_fails_to_start() {
        let done = runtime()
            .run(
                spec(&["/nonexistent/program"], 1_000),
                StopSignals::default(),
                LiveLog::default(),
            )
            .await;
        assert_eq!(
            done.outcome,
            Outcome::Failed {
                reason: FailureReason::StartFailed,
                exit_code: None
            }
        );
        let none = runtime()
            .run(spec(&[], 1_000), StopSignals::default(), LiveLog::default())
            .await;
        assert_eq!(
            none.outcome,
            Outcome::Failed {
                reason: FailureReason::StartFailed,
                exit_code: None
            }
        );
    }
}
