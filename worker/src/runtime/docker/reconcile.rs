//! Start-up reconcile: finds this worker's containers by label (`kairos.worker_id`) and decides
//! each one's fate — running: re-attach; exited: report its end from `inspect` with its output,
//! removed once a scheduler confirms the report; created but never started: remove, nothing
//! runs.
//!
//! It only ever touches containers labelled with this worker's id, and reads the run from
//! labels the constructor wrote, never from anything the container printed.

use std::collections::HashMap;

use bollard::{
    models::{ContainerStateStatusEnum, ContainerSummaryStateEnum},
    query_parameters::ListContainersOptions,
};
use chrono::{DateTime, Utc};
use kairos_domain::FailureReason;

use super::{Container, DockerRuntime, follow, labels};
use crate::{
    logs::LiveLog,
    runtime::{Finished, Handle, Outcome, Prepared, Recovered},
};

pub async fn recover(runtime: &DockerRuntime) -> Vec<Recovered> {
    let docker = &runtime.inner.docker;
    let worker_id = &runtime.inner.worker_id;
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_owned(),
            vec![format!("{}={worker_id}", labels::WORKER_ID)],
        )])),
        ..Default::default()
    };
    let containers = match docker.list_containers(Some(options)).await {
        Ok(containers) => containers,
        Err(e) => {
            tracing::error!(error = %e, "cannot list this worker's containers: runs left by a previous start are not reconciled");
            return Vec::new();
        }
    };
    let mut found = Vec::new();
    for summary in containers {
        let Some(id) = summary.id else { continue };
        let image = summary.image.unwrap_or_default();
        let labels = summary.labels.unwrap_or_default();
        let Some(spec) = labels::spec_of(&labels, &image) else {
            tracing::warn!(container = %id, "container of this worker without readable run labels; leaving it alone");
            continue;
        };
        let run_id = spec.run_id.clone();
        match summary.state {
            Some(ContainerSummaryStateEnum::CREATED) => {
                tracing::info!(run_id = %run_id, container = %id, "removing a container that was prepared but never started");
                runtime.remove(&id).await;
            }
            Some(
                ContainerSummaryStateEnum::RUNNING
                | ContainerSummaryStateEnum::PAUSED
                | ContainerSummaryStateEnum::RESTARTING,
            ) => {
                let started_at = match docker.inspect_container(&id, None).await {
                    Ok(inspect) => inspect
                        .state
                        .and_then(|s| s.started_at)
                        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                        .map(|t| t.with_timezone(&Utc)),
                    Err(e) => {
                        tracing::warn!(run_id = %run_id, error = %e, "cannot inspect a running container; re-attaching with its full timeout");
                        None
                    }
                };
                tracing::info!(run_id = %run_id, container = %id, "re-attaching a running container");
                let lease = runtime.inner.images.lease_present(&image);
                found.push(Recovered::Running(Box::new(Prepared {
                    spec,
                    handle: Handle::Container(Container {
                        id,
                        lease,
                        started_at: Some(started_at.unwrap_or_else(Utc::now)),
                    }),
                })));
            }
            _ => {
                let log = LiveLog::default();
                follow::copy_output(docker.clone(), id.clone(), log.clone(), false).await;
                let outcome = match docker.inspect_container(&id, None).await {
                    Ok(inspect) => {
                        let state = inspect.state;
                        let never_ran = state
                            .as_ref()
                            .is_some_and(|s| s.status == Some(ContainerStateStatusEnum::CREATED));
                        if never_ran {
                            runtime.remove(&id).await;
                            continue;
                        }
                        follow::ended(state.as_ref(), &log)
                    }
                    Err(e) => {
                        log.note(&format!("the container ended while the worker was down and cannot be inspected: {e}"));
                        Outcome::failed(FailureReason::WorkerLost)
                    }
                };
                log.note("the run ended while the worker was down; reported after its restart");
                tracing::info!(run_id = %run_id, outcome = ?outcome, "reporting a run that ended while the worker was down");
                let lease = runtime.inner.images.lease_present(&image);
                runtime.keep_until_confirmed(
                    &run_id,
                    Container {
                        id,
                        lease,
                        started_at: None,
                    },
                );
                found.push(Recovered::Ended {
                    run_id,
                    shard: spec.shard,
                    finished: Finished::from_log(outcome, &log),
                });
            }
        }
    }
    found
}
