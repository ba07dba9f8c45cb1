//! Runs: executing a job now and reading, listing and cancelling its runs. It must never
//! change a run except through `ExecuteJob` and `CancelRun`, and never send an execute twice
//! unless it carries an idempotency key.

use std::{collections::BTreeMap, fmt};

use kairos_domain::RunState;
use kairos_proto::v1::{
    CancelRunRequest, ExecuteJobRequest, GetRunLogsRequest, GetRunLogsResponse, GetRunRequest,
    ListRunEventsRequest, ListRunsRequest, Run, RunEvent,
};
use tonic::Code;

use crate::{Client, Error, Page, ResultStream, pages::paginate, retry::CallKind};

/// The state of a run as a checked [`RunState`]; `None` for a state this SDK does not know
/// (a newer server).
pub fn run_state(run: &Run) -> Option<RunState> {
    RunState::parse(&run.state)
}

/// True when `state` (the wire string) is final: succeeded, failed, cancelled or skipped.
pub fn is_terminal(state: &str) -> bool {
    RunState::parse(state).is_some_and(RunState::is_terminal)
}

/// The answer of an execute-now: the run, and whether this call created it (`false` when
/// the idempotency key matched an earlier run).
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    /// The run, new or earlier.
    pub run: Run,
    /// False when the idempotency key matched an earlier run (no new run was started).
    pub created: bool,
}

/// An execute-now with more than a job and a key: env overrides for this run only.
///
/// ```
/// use kairos_sdk::ExecuteJob;
///
/// let request = ExecuteJob::new("job_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f")
///     .idempotency_key("order-42")
///     .env("DRY_RUN", "1");
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExecuteJob(ExecuteJobRequest);

impl ExecuteJob {
    /// Runs the job `job_id` now.
    pub fn new(job_id: impl fmt::Display) -> Self {
        Self(ExecuteJobRequest {
            job_id: job_id.to_string(),
            ..ExecuteJobRequest::default()
        })
    }

    /// The same key again answers the same run instead of starting another (1–128 printable
    /// ASCII characters). With a key, the call is retried on `UNAVAILABLE`.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.0.idempotency_key = Some(key.into());
        self
    }

    /// An env override for this run only (repeat for more).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.env.insert(name.into(), value.into());
        self
    }

    /// Replaces all env overrides.
    pub fn envs(mut self, env: BTreeMap<String, String>) -> Self {
        self.0.env = env;
        self
    }
}

impl From<ExecuteJob> for ExecuteJobRequest {
    fn from(request: ExecuteJob) -> Self {
        request.0
    }
}

/// Which runs a list returns; every filter is optional.
///
/// ```
/// use kairos_domain::RunState;
/// use kairos_sdk::RunFilter;
///
/// let failed = RunFilter::new()
///     .job("job_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f")
///     .state(RunState::Failed);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunFilter {
    /// Only runs of this job.
    pub job_id: Option<String>,
    /// Only runs of this schedule.
    pub schedule_id: Option<String>,
    /// Only runs in this state.
    pub state: Option<RunState>,
}

impl RunFilter {
    /// Every run.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only runs of `job_id`.
    pub fn job(mut self, job_id: impl fmt::Display) -> Self {
        self.job_id = Some(job_id.to_string());
        self
    }

    /// Only runs of `schedule_id`.
    pub fn schedule(mut self, schedule_id: impl fmt::Display) -> Self {
        self.schedule_id = Some(schedule_id.to_string());
        self
    }

    /// Only runs in `state`.
    pub fn state(mut self, state: RunState) -> Self {
        self.state = Some(state);
        self
    }
}

impl Client {
    /// Runs the job now. With an `idempotency_key`, the same key again answers the same run
    /// (`created == false`), and the call is retried on `UNAVAILABLE`; without one it is not
    /// retried once sent, since a retry could start a second run.
    pub async fn execute_now(
        &self,
        job_id: impl fmt::Display,
        idempotency_key: Option<&str>,
    ) -> Result<Execution, Error> {
        let mut request = ExecuteJob::new(job_id);
        if let Some(key) = idempotency_key {
            request = request.idempotency_key(key);
        }
        self.execute(request).await
    }

    /// Runs a job now with the options of [`ExecuteJob`] (or a raw `ExecuteJobRequest`).
    pub async fn execute(&self, request: impl Into<ExecuteJobRequest>) -> Result<Execution, Error> {
        let request = request.into();
        let kind = if request.idempotency_key.is_some() {
            CallKind::IdempotentWrite
        } else {
            CallKind::Create
        };
        let answer = self
            .call(kind, "ExecuteJob", request, |mut c, r| async move {
                c.execute_job(r).await
            })
            .await?;
        let run = answer
            .run
            .ok_or_else(|| Error::Protocol("ExecuteJob answered no run".to_owned()))?;
        Ok(Execution {
            run,
            created: answer.created,
        })
    }

    /// Reads a run.
    pub async fn get_run(&self, run_id: impl fmt::Display) -> Result<Run, Error> {
        let request = GetRunRequest {
            run_id: run_id.to_string(),
        };
        Ok(self
            .call(CallKind::Read, "GetRun", request, |mut c, r| async move {
                c.get_run(r).await
            })
            .await?)
    }

    /// One page of runs, newest first, matching `filter`.
    pub async fn list_runs(
        &self,
        filter: &RunFilter,
        page_size: u32,
        page_token: impl Into<String>,
    ) -> Result<Page<Run>, Error> {
        let request = ListRunsRequest {
            job_id: filter.job_id.clone(),
            schedule_id: filter.schedule_id.clone(),
            state: filter.state.map(|s| s.as_str().to_owned()),
            page_size: i32::try_from(page_size).unwrap_or(i32::MAX),
            page_token: page_token.into(),
        };
        let answer = self
            .call(CallKind::Read, "ListRuns", request, |mut c, r| async move {
                c.list_runs(r).await
            })
            .await?;
        Ok(Page::new(answer.runs, answer.next_page_token))
    }

    /// Every run matching `filter`, newest first, fetching pages as the stream is read.
    pub fn runs(&self, filter: RunFilter, page_size: u32) -> ResultStream<Run> {
        let client = self.clone();
        paginate(move |token| {
            let (client, filter) = (client.clone(), filter.clone());
            async move { client.list_runs(&filter, page_size, token).await }
        })
    }

    /// Cancels a run that has not ended: a scheduled or queued run ends `cancelled` at once, a
    /// running one is stopped by its worker. A run that already ended answers
    /// `FAILED_PRECONDITION` (unless an earlier attempt of this very call cancelled it).
    pub async fn cancel_run(&self, run_id: impl fmt::Display) -> Result<Run, Error> {
        let run_id = run_id.to_string();
        let request = CancelRunRequest {
            run_id: run_id.clone(),
        };
        let result = self
            .call(
                CallKind::IdempotentWrite,
                "CancelRun",
                request,
                |mut c, r| async move { c.cancel_run(r).await },
            )
            .await;
        match result {
            Ok(run) => Ok(run),
            Err(f) if f.was_retried() && f.status.code() == Code::FailedPrecondition => {
                let run = self.get_run(&run_id).await?;
                if run.state == RunState::Cancelled.as_str() {
                    Ok(run)
                } else {
                    Err(f.into())
                }
            }
            Err(f) => Err(f.into()),
        }
    }

    /// The stored, size-capped tail of a run's output (`truncated` when its head was dropped).
    pub async fn run_logs(&self, run_id: impl fmt::Display) -> Result<GetRunLogsResponse, Error> {
        self.logs(run_id, None).await
    }

    /// The run's output from byte `offset` on: pass the last answer's `next_offset` to read
    /// only what came since (`gap` is set when some of it was already dropped by the cap).
    pub async fn run_logs_from(
        &self,
        run_id: impl fmt::Display,
        offset: u64,
    ) -> Result<GetRunLogsResponse, Error> {
        self.logs(run_id, Some(offset)).await
    }

    async fn logs(
        &self,
        run_id: impl fmt::Display,
        offset: Option<u64>,
    ) -> Result<GetRunLogsResponse, Error> {
        let request = GetRunLogsRequest {
            run_id: run_id.to_string(),
            offset,
        };
        Ok(self
            .call(
                CallKind::Read,
                "GetRunLogs",
                request,
                |mut c, r| async move { c.get_run_logs(r).await },
            )
            .await?)
    }

    /// Every state transition of a run, oldest first.
    pub async fn run_events(&self, run_id: impl fmt::Display) -> Result<Vec<RunEvent>, Error> {
        let request = ListRunEventsRequest {
            run_id: run_id.to_string(),
        };
        Ok(self
            .call(
                CallKind::Read,
                "ListRunEvents",
                request,
                |mut c, r| async move { c.list_run_events(r).await },
            )
            .await?
            .events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_final_states_are_terminal() {
        assert!(is_terminal("succeeded") && is_terminal("skipped"));
        assert!(!is_terminal("running") && !is_terminal("a_future_state"));
        let run = Run {
            state: "failed".into(),
            ..Run::default()
        };
        assert_eq!(run_state(&run), Some(RunState::Failed));
    }

    #[test]
    fn an_execute_request_carries_its_key_and_overrides() {
        let req: ExecuteJobRequest = ExecuteJob::new("job_1")
            .idempotency_key("k1")
            .env("A", "1")
            .into();
        assert_eq!(req.idempotency_key.as_deref(), Some("k1"));
        assert_eq!(req.env.len(), 1);
    }
}
