//! Following a run to its end: [`Client::watch_run`] (the `WatchRun` server stream as a
//! `Stream`, resumed after a broken connection without repeating an event) and
//! [`Client::wait_for_run`] on top of it. Only reads: it must never change a run.

use std::{fmt, time::Duration};

use futures::{StreamExt, stream};
use kairos_proto::v1::{Run, RunEvent, WatchRunRequest};
use tonic::{Code, Status, Streaming};

use crate::{Client, Error, ResultStream, retry::CallKind, runs::is_terminal};

/// What the watch loop carries from one item to the next.
struct Watch {
    client: Client,
    run_id: String,
    /// The id of the last event handed out; a re-opened stream replays from the start and
    /// everything up to here is skipped.
    last_id: i64,
    stream: Option<Streaming<RunEvent>>,
    /// Failures since the last event, for the retry policy.
    failures: u32,
    done: bool,
}

/// Codes that are the server's final word on a watch (re-opening would answer the same).
fn is_definite(code: Code) -> bool {
    matches!(
        code,
        Code::NotFound
            | Code::InvalidArgument
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::Unimplemented
    )
}

impl Watch {
    /// The next event, re-opening the stream when it broke or ended early.
    async fn next(&mut self) -> Option<Result<RunEvent, Error>> {
        let retry = self.client.transport.options.retry;
        loop {
            if self.done {
                return None;
            }
            if self.stream.is_none() {
                match self.open().await {
                    Ok(stream) => self.stream = Some(stream),
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            let broken = match stream.message().await {
                Ok(Some(event)) => {
                    if event.id <= self.last_id {
                        continue;
                    }
                    self.last_id = event.id;
                    self.failures = 0;
                    self.done = is_terminal(&event.to_state);
                    return Some(Ok(event));
                }
                // The server ends the stream after the terminal event; ending before it means
                // the server went away (a graceful shutdown): watch again.
                Ok(None) => Status::unavailable("the watch ended before the run did"),
                Err(status) if is_definite(status.code()) => {
                    self.done = true;
                    return Some(Err(Error::from(status)));
                }
                Err(status) => status,
            };
            self.stream = None;
            self.failures += 1;
            if self.failures >= retry.max_attempts {
                self.done = true;
                return Some(Err(Error::from(broken)));
            }
            let delay = retry.delay(self.failures);
            tracing::debug!(run_id = %self.run_id, code = ?broken.code(), delay_ms = delay.as_millis() as u64, "watch interrupted; re-opening");
            tokio::time::sleep(delay).await;
        }
    }

    /// Opens the server stream (a read: retried on transient failures).
    async fn open(&self) -> Result<Streaming<RunEvent>, Error> {
        let request = WatchRunRequest {
            run_id: self.run_id.clone(),
        };
        // Only opening is time-limited: the stream itself lasts as long as the run.
        Ok(self
            .client
            .call(CallKind::Read, "WatchRun", request, |mut c, r| async move {
                c.watch_run(r).await
            })
            .await?)
    }
}

impl Client {
    /// The run's state transitions as they happen: first those already recorded, then each new
    /// one; the stream ends after the terminal one. A broken connection is re-opened per the
    /// retry policy without repeating an event; an error ends the stream.
    ///
    /// ```no_run
    /// # async fn demo(client: kairos_sdk::Client) -> Result<(), kairos_sdk::Error> {
    /// use futures::StreamExt;
    ///
    /// let mut events = client.watch_run("run_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f");
    /// while let Some(event) = events.next().await {
    ///     let event = event?;
    ///     println!("{} -> {}", event.from_state.unwrap_or_default(), event.to_state);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn watch_run(&self, run_id: impl fmt::Display) -> ResultStream<RunEvent> {
        let watch = Watch {
            client: self.clone(),
            run_id: run_id.to_string(),
            last_id: 0,
            stream: None,
            failures: 0,
            done: false,
        };
        Box::pin(stream::unfold(watch, |mut watch| async move {
            let item = watch.next().await?;
            Some((item, watch))
        }))
    }

    /// Waits until the run ends (succeeded, failed, cancelled or skipped) and answers it as it
    /// ended; [`Error::Timeout`] if it has not ended within `timeout` (the run goes on).
    ///
    /// This waits for this run only: a failed run whose job retries has a new run
    /// (`retry_of` = this one) that this does not follow.
    pub async fn wait_for_run(
        &self,
        run_id: impl fmt::Display,
        timeout: Duration,
    ) -> Result<Run, Error> {
        self.wait_for_run_with(run_id, timeout, |_| {}).await
    }

    /// Like [`wait_for_run`](Client::wait_for_run), calling `progress` with each transition
    /// (the recorded ones first) as it is seen.
    pub async fn wait_for_run_with(
        &self,
        run_id: impl fmt::Display,
        timeout: Duration,
        mut progress: impl FnMut(&RunEvent),
    ) -> Result<Run, Error> {
        let run_id = run_id.to_string();
        let wait = async {
            let mut events = self.watch_run(&run_id);
            while let Some(event) = events.next().await {
                let event = event?;
                progress(&event);
                if is_terminal(&event.to_state) {
                    // The run row changes in the same transaction as its event.
                    return self.get_run(&run_id).await;
                }
            }
            Err(Error::Protocol(format!(
                "the watch of run {run_id} ended without a final state"
            )))
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                run_id,
                waited: timeout,
            }),
        }
    }
}
