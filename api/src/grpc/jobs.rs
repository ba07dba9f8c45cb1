//! `kairos.v1.JobService`: jobs, schedules and runs, mirroring the REST routes, plus the
//! `WatchRun` server stream.

use std::{pin::Pin, time::Duration};

use futures::Stream;
use kairos_domain::{PageRequest, TenantId};
use kairos_proto::v1::{self as pb, job_service_server::JobService};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{authorization, convert, finish};
use crate::{ApiError, Service};

/// How often `WatchRun` looks for new events.
const WATCH_POLL: Duration = Duration::from_millis(250);
/// Events buffered per watcher before the poller waits for the client.
const WATCH_BUFFER: usize = 32;

#[derive(Debug, Clone)]
pub struct Jobs(pub Service);

impl Jobs {
    async fn tenant<T>(&self, request: &Request<T>) -> Result<TenantId, ApiError> {
        self.0.authenticate(authorization(request).as_deref()).await
    }
}

fn page(size: i32, token: &str) -> Result<PageRequest, ApiError> {
    Ok(PageRequest::parse(
        Some(i64::from(size)),
        convert::token(token),
    )?)
}

fn next_token(token: Option<String>) -> String {
    token.unwrap_or_default()
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl JobService for Jobs {
    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            let job = self
                .0
                .create_job(tenant, convert::create_job_draft(request.into_inner()))
                .await?;
            Ok(convert::job(&job))
        }
        .await;
        finish(&self.0, "CreateJob", result)
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            Ok(convert::job(
                &self.0.get_job(tenant, &request.get_ref().job_id).await?,
            ))
        }
        .await;
        finish(&self.0, "GetJob", result)
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            let r = request.get_ref();
            let jobs = self
                .0
                .list_jobs(tenant, page(r.page_size, &r.page_token)?)
                .await?;
            Ok(pb::ListJobsResponse {
                jobs: jobs.items.iter().map(convert::job).collect(),
                next_page_token: next_token(jobs.next_page_token),
            })
        }
        .await;
        finish(&self.0, "ListJobs", result)
    }

    async fn update_job(
        &self,
        request: Request<pb::UpdateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            let r = request.into_inner();
            let id = r.job_id.clone();
            Ok(convert::job(
                &self
                    .0
                    .update_job(tenant, &id, convert::update_job_draft(r))
                    .await?,
            ))
        }
        .await;
        finish(&self.0, "UpdateJob", result)
    }

    async fn delete_job(
        &self,
        request: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteJobResponse>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            self.0.delete_job(tenant, &request.get_ref().job_id).await?;
            Ok(pb::DeleteJobResponse {})
        }
        .await;
        finish(&self.0, "DeleteJob", result)
    }

    async fn create_registry_credential(
        &self,
        request: Request<pb::CreateRegistryCredentialRequest>,
    ) -> Result<Response<pb::RegistryCredential>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            let r = request.into_inner();
            let draft = kairos_domain::CredentialDraft {
                name: Some(r.name),
                server: Some(r.server),
                username: Some(r.username),
                password: Some(r.password),
            };
            let created = self.0.create_registry_credential(tenant, draft).await?;
            Ok(convert::registry_credential(&created))
        }
        .await;
        finish(&self.0, "CreateRegistryCredential", result)
    }

    async fn list_registry_credentials(
        &self,
        request: Request<pb::ListRegistryCredentialsRequest>,
    ) -> Result<Response<pb::ListRegistryCredentialsResponse>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            let all = self.0.list_registry_credentials(tenant).await?;
            Ok(pb::ListRegistryCredentialsResponse {
                registry_credentials: all.iter().map(convert::registry_credential).collect(),
            })
        }
        .await;
        finish(&self.0, "ListRegistryCredentials", result)
    }

    async fn delete_registry_credential(
        &self,
        request: Request<pb::DeleteRegistryCredentialRequest>,
    ) -> Result<Response<pb::DeleteRegistryCredentialResponse>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            self.0
                .delete_registry_credential(tenant, &request.get_ref().name)
                .await?;
            Ok(pb::DeleteRegistryCredentialResponse {})
        }
        .await;
        finish(&self.0, "DeleteRegistryCredential", result)
    }

    async fn create_schedule(
        &self,
        request: Request<pb::CreateScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            let r = request.into_inner();
            let draft = convert::schedule_fields!(r).into_draft()?;
            let view = self
                .0
                .create_schedule(tenant, &r.job_id, draft, r.paused.unwrap_or(false))
                .await?;
            Ok(convert::schedule(&view))
        }
        .await;
        finish(&self.0, "CreateSchedule", result)
    }

    async fn get_schedule(
        &self,
        request: Request<pb::GetScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            Ok(convert::schedule(
                &self
                    .0
                    .get_schedule(tenant, &request.get_ref().schedule_id)
                    .await?,
            ))
        }
        .await;
        finish(&self.0, "GetSchedule", result)
    }

    async fn list_schedules(
        &self,
        request: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            let r = request.get_ref();
            let job = r.job_id.as_deref().filter(|j| !j.is_empty());
            let schedules = self
                .0
                .list_schedules(tenant, job, page(r.page_size, &r.page_token)?)
                .await?;
            Ok(pb::ListSchedulesResponse {
                schedules: schedules.items.iter().map(convert::schedule).collect(),
                next_page_token: next_token(schedules.next_page_token),
            })
        }
        .await;
        finish(&self.0, "ListSchedules", result)
    }

    async fn update_schedule(
        &self,
        request: Request<pb::UpdateScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            let r = request.into_inner();
            let draft = convert::schedule_fields!(r).into_draft()?;
            Ok(convert::schedule(
                &self
                    .0
                    .update_schedule(tenant, &r.schedule_id, draft, r.paused)
                    .await?,
            ))
        }
        .await;
        finish(&self.0, "UpdateSchedule", result)
    }

    async fn delete_schedule(
        &self,
        request: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::DeleteScheduleResponse>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            self.0
                .delete_schedule(tenant, &request.get_ref().schedule_id)
                .await?;
            Ok(pb::DeleteScheduleResponse {})
        }
        .await;
        finish(&self.0, "DeleteSchedule", result)
    }

    async fn pause_schedule(
        &self,
        request: Request<pb::PauseScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            let r = request.into_inner();
            Ok(convert::schedule(
                &self
                    .0
                    .pause_schedule(tenant, &r.schedule_id, r.note)
                    .await?,
            ))
        }
        .await;
        finish(&self.0, "PauseSchedule", result)
    }

    async fn resume_schedule(
        &self,
        request: Request<pb::ResumeScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            Ok(convert::schedule(
                &self
                    .0
                    .resume_schedule(tenant, &request.get_ref().schedule_id)
                    .await?,
            ))
        }
        .await;
        finish(&self.0, "ResumeSchedule", result)
    }

    async fn trigger_schedule(
        &self,
        request: Request<pb::TriggerScheduleRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            Ok(convert::run(
                &self
                    .0
                    .trigger_schedule(tenant, &request.get_ref().schedule_id)
                    .await?,
            ))
        }
        .await;
        finish(&self.0, "TriggerSchedule", result)
    }

    async fn backfill_schedule(
        &self,
        request: Request<pb::BackfillScheduleRequest>,
    ) -> Result<Response<pb::BackfillScheduleResponse>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            let r = request.into_inner();
            let from = r
                .from
                .as_ref()
                .ok_or_else(|| ApiError::invalid("from", "is required"))?;
            let to =
                r.to.as_ref()
                    .ok_or_else(|| ApiError::invalid("to", "is required"))?;
            let outcome = self
                .0
                .backfill(
                    tenant,
                    &r.schedule_id,
                    &convert::instant("from", from)?,
                    &convert::instant("to", to)?,
                    r.dry_run,
                )
                .await?;
            Ok(pb::BackfillScheduleResponse {
                runs: outcome.runs.iter().map(convert::run).collect(),
                fire_times: outcome.fire_times.iter().map(|t| convert::ts(*t)).collect(),
                truncated: outcome.truncated,
            })
        }
        .await;
        finish(&self.0, "BackfillSchedule", result)
    }

    async fn execute_job(
        &self,
        request: Request<pb::ExecuteJobRequest>,
    ) -> Result<Response<pb::ExecuteJobResponse>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            let r = request.into_inner();
            let (run, created) = self
                .0
                .execute_now(tenant, &r.job_id, r.idempotency_key.as_deref(), r.env)
                .await?;
            Ok(pb::ExecuteJobResponse {
                run: Some(convert::run(&run)),
                created,
            })
        }
        .await;
        finish(&self.0, "ExecuteJob", result)
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            Ok(convert::run(
                &self.0.get_run(tenant, &request.get_ref().run_id).await?,
            ))
        }
        .await;
        finish(&self.0, "GetRun", result)
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            let r = request.get_ref();
            let non_empty = |s: &Option<String>| s.clone().filter(|v| !v.is_empty());
            let (job, schedule, state) = (
                non_empty(&r.job_id),
                non_empty(&r.schedule_id),
                non_empty(&r.state),
            );
            let runs = self
                .0
                .list_runs(
                    tenant,
                    job.as_deref(),
                    schedule.as_deref(),
                    state.as_deref(),
                    page(r.page_size, &r.page_token)?,
                )
                .await?;
            Ok(pb::ListRunsResponse {
                runs: runs.items.iter().map(convert::run).collect(),
                next_page_token: next_token(runs.next_page_token),
            })
        }
        .await;
        finish(&self.0, "ListRuns", result)
    }

    async fn cancel_run(
        &self,
        request: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            Ok(convert::run(
                &self.0.cancel_run(tenant, &request.get_ref().run_id).await?,
            ))
        }
        .await;
        finish(&self.0, "CancelRun", result)
    }

    async fn get_run_logs(
        &self,
        request: Request<pb::GetRunLogsRequest>,
    ) -> Result<Response<pb::GetRunLogsResponse>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            let asked = request.get_ref();
            let offset = asked.offset.map(|o| i64::try_from(o).unwrap_or(i64::MAX));
            let logs = self.0.run_logs(tenant, &asked.run_id, offset).await?;
            Ok(pb::GetRunLogsResponse {
                run_id: logs.run_id.to_string(),
                content: logs.content,
                truncated: logs.truncated,
                offset: logs.offset,
                next_offset: logs.next_offset,
                gap: logs.gap,
                state: logs.state.as_str().to_owned(),
            })
        }
        .await;
        finish(&self.0, "GetRunLogs", result)
    }

    async fn list_run_events(
        &self,
        request: Request<pb::ListRunEventsRequest>,
    ) -> Result<Response<pb::ListRunEventsResponse>, Status> {
        let result = async {
            let tenant = self.tenant(&request).await?;
            let events = self.0.run_events(tenant, &request.get_ref().run_id).await?;
            Ok(pb::ListRunEventsResponse {
                events: events.iter().map(convert::event).collect(),
            })
        }
        .await;
        finish(&self.0, "ListRunEvents", result)
    }

    type WatchRunStream = EventStream;

    /// Streams every event of the run (past ones first), ending after the terminal one.
    async fn watch_run(
        &self,
        request: Request<pb::WatchRunRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let service = self.0.clone();
        let result = async {
            let tenant = self.tenant(&request).await?;
            let run_id = request.into_inner().run_id;
            // Fail fast (NOT_FOUND) before opening the stream.
            service.get_run(tenant, &run_id).await?;
            Ok((tenant, run_id))
        }
        .await;
        let (tenant, run_id) = match result {
            Ok(v) => v,
            Err(e) => return finish(&self.0, "WatchRun", Err::<EventStream, _>(e)),
        };
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        // Owned by the stream: it ends when the run ends or when the client goes away (send fails).
        tokio::spawn(async move {
            let mut last_id = 0i64;
            loop {
                match service.run_events(tenant, &run_id).await {
                    Ok(events) => {
                        let mut finished = false;
                        let seen = last_id;
                        for event in events.iter().filter(|e| e.id > seen) {
                            last_id = event.id;
                            finished |= event.to.is_terminal();
                            if tx.send(Ok(convert::event(event))).await.is_err() {
                                return;
                            }
                        }
                        if finished {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(WATCH_POLL) => {}
                }
            }
        });
        let stream: EventStream = Box::pin(ReceiverStream::new(rx));
        finish(&self.0, "WatchRun", Ok(stream))
    }
}
