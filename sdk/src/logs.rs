//! Following a run's output as it grows: [`Client::follow_logs`] polls `GetRunLogs` from the
//! byte offset it has reached and hands out only what is new, until the run ends. The API
//! keeps a size-capped tail; when more was written between two polls than it keeps, the chunk
//! says so (`gap`). It only reads.

use std::{fmt, time::Duration};

use futures::stream;

use crate::{Client, Error, ResultStream, runs::is_terminal};

/// A piece of a run's output that was not handed out before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// The new output.
    pub text: String,
    /// Byte offset of `text` in the run's whole output.
    pub offset: u64,
    /// True when output between the previous chunk and this one was lost: the tail is capped
    /// and more was written between two polls than it keeps.
    pub gap: bool,
}

/// What the follow loop carries between polls.
struct Follow {
    client: Client,
    run_id: String,
    every: Duration,
    next_offset: u64,
    first: bool,
    done: bool,
}

impl Follow {
    async fn next(&mut self) -> Option<Result<LogChunk, Error>> {
        loop {
            if self.done {
                return None;
            }
            if !self.first {
                tokio::time::sleep(self.every).await;
            }
            self.first = false;
            let logs = match self
                .client
                .run_logs_from(&self.run_id, self.next_offset)
                .await
            {
                Ok(logs) => logs,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            // The state is read with the output: once it is final, so is the output.
            self.done = is_terminal(&logs.state);
            self.next_offset = logs.next_offset.max(self.next_offset);
            if !logs.content.is_empty() {
                return Some(Ok(LogChunk {
                    text: logs.content,
                    offset: logs.offset,
                    gap: logs.gap,
                }));
            }
        }
    }
}

impl Client {
    /// The run's output as it grows: polls every `every`, hands out only the new part, and
    /// ends once the run has ended and its last output was handed out. A chunk after output
    /// was lost to the cap is marked `gap`.
    pub fn follow_logs(
        &self,
        run_id: impl fmt::Display,
        every: Duration,
    ) -> ResultStream<LogChunk> {
        let follow = Follow {
            client: self.clone(),
            run_id: run_id.to_string(),
            every,
            next_offset: 0,
            first: true,
            done: false,
        };
        Box::pin(stream::unfold(follow, |mut follow| async move {
            let item = follow.next().await?;
            Some((item, follow))
        }))
    }
}
