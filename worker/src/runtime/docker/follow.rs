//! Follows a started container to its end: copies its stdout and stderr into the run's log
//! tail, enforces the timeout (SIGTERM, grace, SIGKILL), stops it on cancel or abandon, and
//! reads how it ended from the engine (`State.ExitCode`, `State.OOMKilled`).
//!
//! The end is decided from the engine's state and the worker's own timers only: nothing the
//! container prints is ever interpreted.

use std::{collections::HashMap, time::Duration};

use bollard::{
    Docker,
    errors::Error as DockerError,
    models::{ContainerState, ContainerStateStatusEnum},
    query_parameters::{EventsOptions, KillContainerOptions, LogsOptions, WaitContainerOptions},
};
use futures::StreamExt;
use kairos_domain::FailureReason;

use crate::{
    logs::LiveLog,
    runtime::{Outcome, StopSignals},
};

/// How long the output reader may take to drain after the container stopped.
const LOG_DRAIN: Duration = Duration::from_secs(5);
/// How long the engine may take to report a SIGKILLed container as stopped.
const KILL_WAIT: Duration = Duration::from_secs(30);
/// Pause between polls when the engine's wait stream broke.
const REPOLL: Duration = Duration::from_millis(500);
/// How long after a SIGKILL exit the engine's `oom` event may still arrive.
const OOM_EVENT_LAG: Duration = Duration::from_secs(2);
/// The exit code of a process killed by SIGKILL (128 + 9).
const SIGKILL_EXIT: i64 = 137;

enum Stopped {
    Timeout,
    Signal(Outcome),
}

/// Follows the running container `id` until it ends or `time_left` runs out; `timeout` is the
/// run's whole timeout (for the note in the log).
pub async fn follow(
    docker: &Docker,
    id: &str,
    time_left: Duration,
    timeout: Duration,
    grace: Duration,
    stop: &StopSignals,
    log: &LiveLog,
) -> Outcome {
    let reader = tokio::spawn(copy_output(
        docker.clone(),
        id.to_owned(),
        log.clone(),
        true,
    ));
    let stopped = tokio::select! {
        () = wait_stopped(docker, id) => None,
        () = tokio::time::sleep(time_left) => Some(Stopped::Timeout),
        outcome = stop.fired() => Some(Stopped::Signal(outcome)),
    };
    if stopped.is_some() {
        terminate(docker, id, grace).await;
    }
    drain(reader).await;
    match stopped {
        Some(Stopped::Timeout) => {
            log.note(&format!(
                "killed: exceeded the timeout of {} s",
                timeout.as_secs()
            ));
            Outcome::failed(FailureReason::TimedOut)
        }
        Some(Stopped::Signal(outcome)) => {
            if outcome == Outcome::Cancelled {
                log.note("killed: the run was cancelled");
            } else {
                log.note("killed: the worker shut down before the run ended");
            }
            outcome
        }
        None => match docker.inspect_container(id, None).await {
            Ok(inspect) => {
                let state = inspect.state.as_ref();
                let oom_killed = state.and_then(|s| s.oom_killed) == Some(true)
                    || (state.and_then(|s| s.exit_code) == Some(SIGKILL_EXIT)
                        && oom_event_seen(docker, id, state).await);
                ended_with(state, oom_killed, log)
            }
            Err(e) => {
                log.note(&format!("lost track of the container: {e}"));
                Outcome::failed(FailureReason::WorkerLost)
            }
        },
    }
}

/// How a container that stopped by itself ended, from the engine's state.
pub fn ended(state: Option<&ContainerState>, log: &LiveLog) -> Outcome {
    ended_with(state, state.and_then(|s| s.oom_killed) == Some(true), log)
}

/// Whether the engine published an `oom` event for the container since it started. The engine
/// can record a container's exit before the kernel's OOM notification reaches it, leaving
/// `State.OOMKilled` false for a run the kernel killed for memory; so a SIGKILL exit the
/// worker did not cause is also checked against the engine's events (replayed from the start,
/// and followed for a short lag).
async fn oom_event_seen(docker: &Docker, id: &str, state: Option<&ContainerState>) -> bool {
    let now = chrono::Utc::now();
    let since = state
        .and_then(|s| s.started_at.as_deref())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(now - chrono::Duration::days(1), |t| t.to_utc());
    let until = now + OOM_EVENT_LAG;
    let options = EventsOptions {
        since: Some(since.timestamp().to_string()),
        until: Some(until.timestamp().to_string()),
        filters: Some(HashMap::from([
            ("container".to_owned(), vec![id.to_owned()]),
            ("event".to_owned(), vec!["oom".to_owned()]),
        ])),
    };
    let mut events = docker.events(Some(options));
    let first = tokio::time::timeout(OOM_EVENT_LAG * 2, events.next()).await;
    match first {
        Ok(Some(Ok(_))) => true,
        Ok(Some(Err(e))) => {
            tracing::debug!(container = %id, error = %e, "cannot read the engine's events");
            false
        }
        Ok(None) | Err(_) => false,
    }
}

/// How a container that stopped by itself ended, given whether the kernel killed it for memory.
fn ended_with(state: Option<&ContainerState>, oom_killed: bool, log: &LiveLog) -> Outcome {
    let exit_code = state
        .and_then(|s| s.exit_code)
        .map(|c| i32::try_from(c).unwrap_or(-1));
    if oom_killed {
        log.note("killed by the kernel: the run used more memory than its limit");
        return Outcome::Failed {
            reason: FailureReason::OomKilled,
            exit_code,
        };
    }
    match exit_code {
        Some(0) => Outcome::Succeeded,
        Some(code) => Outcome::Failed {
            reason: FailureReason::ExitCode,
            exit_code: Some(code),
        },
        None => {
            log.note("the engine reported no exit code");
            Outcome::failed(FailureReason::WorkerLost)
        }
    }
}

/// Copies the container's output into `log` until the engine closes the stream (with
/// `follow`, when the container stops; without, once the stored output is read).
pub async fn copy_output(docker: Docker, id: String, log: LiveLog, follow: bool) {
    let options = LogsOptions {
        follow,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let mut output = docker.logs(&id, Some(options));
    while let Some(chunk) = output.next().await {
        match chunk {
            Ok(chunk) => log.push(&chunk.into_bytes()),
            Err(e) => {
                tracing::debug!(container = %id, error = %e, "output stream ended");
                break;
            }
        }
    }
}

async fn drain(reader: tokio::task::JoinHandle<()>) {
    let abort = reader.abort_handle();
    if tokio::time::timeout(LOG_DRAIN, reader).await.is_err() {
        abort.abort();
    }
}

/// Resolves once the container is no longer running (or no longer exists).
pub async fn wait_stopped(docker: &Docker, id: &str) {
    loop {
        let options = WaitContainerOptions {
            condition: "not-running".to_owned(),
        };
        match docker.wait_container(id, Some(options)).next().await {
            // The engine reports a non-zero exit as an error of the wait: it still stopped.
            Some(Ok(_)) | Some(Err(DockerError::DockerContainerWaitError { .. })) => return,
            Some(Err(e)) => tracing::debug!(container = %id, error = %e, "wait broke; polling"),
            None => {}
        }
        match docker.inspect_container(id, None).await {
            Ok(inspect) if !running(inspect.state.as_ref()) => return,
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => return,
            _ => tokio::time::sleep(REPOLL).await,
        }
    }
}

fn running(state: Option<&ContainerState>) -> bool {
    matches!(
        state.and_then(|s| s.status),
        Some(
            ContainerStateStatusEnum::RUNNING
                | ContainerStateStatusEnum::PAUSED
                | ContainerStateStatusEnum::RESTARTING
        )
    )
}

/// SIGTERM, `grace` to stop, then SIGKILL; waits (bounded) until the engine says it stopped.
pub async fn terminate(docker: &Docker, id: &str, grace: Duration) {
    signal(docker, id, "SIGTERM").await;
    if tokio::time::timeout(grace, wait_stopped(docker, id))
        .await
        .is_ok()
    {
        return;
    }
    signal(docker, id, "SIGKILL").await;
    if tokio::time::timeout(KILL_WAIT, wait_stopped(docker, id))
        .await
        .is_err()
    {
        tracing::warn!(container = %id, "container still running after SIGKILL");
    }
}

async fn signal(docker: &Docker, id: &str, signal: &str) {
    let options = KillContainerOptions {
        signal: signal.to_owned(),
    };
    // Fails when it already stopped (409) or is gone (404): both fine here.
    if let Err(e) = docker.kill_container(id, Some(options)).await {
        tracing::debug!(container = %id, signal, error = %e, "signal not delivered");
    }
}
