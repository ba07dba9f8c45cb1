//! The labels every Kairos container carries: who it belongs to (worker, tenant, job, run, shard,
//! attempt) and what re-attaching it needs (its timeout). Labels are written only by the
//! container constructor and read only by reconcile; a container's own output never sets them.

use std::{collections::HashMap, time::Duration};

use crate::runtime::RunSpec;

pub const MANAGED: &str = "kairos.managed";
pub const WORKER_ID: &str = "kairos.worker_id";
pub const RUN_ID: &str = "kairos.run_id";
pub const JOB_ID: &str = "kairos.job_id";
pub const TENANT_ID: &str = "kairos.tenant_id";
pub const SHARD: &str = "kairos.shard";
pub const ATTEMPT: &str = "kairos.attempt";
/// The run's timeout: a re-attached run is killed at `State.StartedAt` + this.
pub const TIMEOUT_SECONDS: &str = "kairos.timeout_seconds";
pub const MEMORY_MB: &str = "kairos.memory_mb";

/// The labels of the container for `spec` on worker `worker_id`.
pub(crate) fn for_run(spec: &RunSpec, worker_id: &str) -> HashMap<String, String> {
    [
        (MANAGED, "true".to_owned()),
        (WORKER_ID, worker_id.to_owned()),
        (RUN_ID, spec.run_id.clone()),
        (JOB_ID, spec.job_id.clone()),
        (TENANT_ID, spec.tenant_id.clone()),
        (SHARD, spec.shard.to_string()),
        (ATTEMPT, spec.attempt.to_string()),
        (TIMEOUT_SECONDS, spec.timeout.as_secs().to_string()),
        (MEMORY_MB, spec.memory_mb.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The run a container found at start-up belongs to, read back from its labels; `None` when
/// a label is missing or malformed. Env and registry credentials are not kept in labels, and
/// a re-attached run needs neither.
pub(crate) fn spec_of(labels: &HashMap<String, String>, image: &str) -> Option<RunSpec> {
    let get = |key: &str| labels.get(key).cloned();
    let number = |key: &str| labels.get(key).and_then(|v| v.parse::<u64>().ok());
    let run_id = get(RUN_ID).filter(|id| !id.is_empty())?;
    Some(RunSpec {
        run_id,
        job_id: get(JOB_ID)?,
        tenant_id: get(TENANT_ID).unwrap_or_default(),
        image: image.to_owned(),
        registry_auth: None,
        command: Vec::new(),
        env: Default::default(),
        memory_mb: u32::try_from(number(MEMORY_MB)?).ok()?,
        timeout: Duration::from_secs(number(TIMEOUT_SECONDS)?),
        fire_time: None,
        attempt: u32::try_from(number(ATTEMPT)?).ok()?,
        shard: u32::try_from(number(SHARD)?).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RunSpec {
        RunSpec {
            run_id: "run_1".into(),
            job_id: "job_1".into(),
            tenant_id: "ten_1".into(),
            image: "busybox:1".into(),
            registry_auth: None,
            command: vec!["true".into()],
            env: [("SECRET".to_owned(), "value".to_owned())].into(),
            memory_mb: 128,
            timeout: Duration::from_secs(90),
            fire_time: None,
            attempt: 2,
            shard: 7,
        }
    }

    #[test]
    fn a_run_reads_back_from_its_labels_without_its_env() {
        let labels = for_run(&spec(), "worker-a");
        assert_eq!(labels[WORKER_ID], "worker-a");
        assert!(!labels.values().any(|v| v == "value"), "no env in labels");
        let back = spec_of(&labels, "busybox:1").expect("labels parse");
        assert_eq!(back.run_id, "run_1");
        assert_eq!(back.job_id, "job_1");
        assert_eq!(back.tenant_id, "ten_1");
        assert_eq!((back.shard, back.attempt, back.memory_mb), (7, 2, 128));
        assert_eq!(back.timeout, Duration::from_secs(90));
        assert!(back.env.is_empty());
    }

    #[test]
    fn malformed_labels_are_not_a_run() {
        let mut labels = for_run(&spec(), "worker-a");
        labels.insert(SHARD.to_owned(), "seven".to_owned());
        assert!(spec_of(&labels, "busybox:1").is_none());
        labels.remove(RUN_ID);
        assert!(spec_of(&labels, "busybox:1").is_none());
    }
}
