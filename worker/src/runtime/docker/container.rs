//! The one container constructor: the only code that creates containers (`clippy.toml` bans
//! `Docker::create_container` everywhere else). Every container it makes has memory = swap =
//! the run's limit (≤ 1 GiB), a pids limit, a CPU quota, all capabilities dropped,
//! no-new-privileges, a read-only root filesystem with size-limited tmpfs scratch, no host
//! paths, no devices, not privileged, a non-host network, bounded logs and the kairos labels.
//!
//! It must never take a bind, a mount, a device, a capability or a network mode from its
//! caller: the only inputs are the run's image, command, env and memory limit.

use std::{collections::HashMap, time::Duration};

use bollard::{
    Docker,
    errors::Error as DockerError,
    models::{ContainerCreateBody, HostConfig, HostConfigLogConfig},
    query_parameters::{CreateContainerOptions, RemoveContainerOptions},
};

use super::{DockerSettings, images::ImageInfo, labels};
use crate::runtime::RunSpec;

/// The platform's memory cap for one run (I5).
pub const MAX_MEMORY_MB: u32 = 1024;
/// The platform's timeout cap for one run (I5).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// CFS period the CPU quota is expressed in.
const CPU_PERIOD_US: i64 = 100_000;
/// Where a container may write: a tmpfs of `DockerSettings::tmpfs_mb`.
pub const SCRATCH_DIR: &str = "/tmp";
/// Engine-side log file bound; the worker keeps its own tail of the output.
const LOG_MAX_SIZE: &str = "16m";

/// Why a run cannot get a container.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{0}")]
    Invalid(String),
    #[error("the engine refused to create the container: {0}")]
    Engine(#[from] DockerError),
}

/// The container name of a run: stable, so a duplicate create for one run conflicts.
pub fn container_name(run_id: &str) -> String {
    let safe: String = run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("kairos-{safe}")
}

/// Refuses a run whose limits are outside the platform's caps: the worker does not take the
/// scheduler's word for them.
pub fn check(spec: &RunSpec) -> Result<(), CreateError> {
    if spec.memory_mb == 0 || spec.memory_mb > MAX_MEMORY_MB {
        return Err(CreateError::Invalid(format!(
            "memory limit {} MiB is outside 1..={MAX_MEMORY_MB} MiB",
            spec.memory_mb
        )));
    }
    if spec.timeout.is_zero() || spec.timeout > MAX_TIMEOUT {
        return Err(CreateError::Invalid(format!(
            "timeout {} s is outside 1..={} s",
            spec.timeout.as_secs(),
            MAX_TIMEOUT.as_secs()
        )));
    }
    if let Some(bad) = spec
        .env
        .keys()
        .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
    {
        return Err(CreateError::Invalid(format!(
            "env name '{}' is not a valid variable name",
            bad.escape_default()
        )));
    }
    Ok(())
}

/// The create request for `spec`: pure, so the hardening is unit-tested field by field.
pub(super) fn body(
    spec: &RunSpec,
    image: &ImageInfo,
    settings: &DockerSettings,
    worker_id: &str,
    network_mode: &str,
) -> ContainerCreateBody {
    let memory = i64::from(spec.memory_mb) * 1024 * 1024;
    let scratch = format!("rw,nosuid,nodev,size={}m", settings.tmpfs_mb);
    // Writable places are tmpfs only: the scratch dir and every VOLUME the image declares (a
    // tmpfs there keeps the engine from making an anonymous volume on the host's disk).
    let tmpfs: HashMap<String, String> = std::iter::once(SCRATCH_DIR.to_owned())
        .chain(image.volumes.iter().cloned())
        .map(|path| (path, scratch.clone()))
        .collect();
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("KAIROS_RUN_ID={}", spec.run_id));
    env.push(format!("KAIROS_JOB_ID={}", spec.job_id));
    env.push(format!("KAIROS_ATTEMPT={}", spec.attempt));
    if let Some(fire_time) = spec.fire_time {
        env.push(format!("KAIROS_FIRE_TIME={}", fire_time.to_rfc3339()));
    }
    let cpu_quota = (settings.cpus * CPU_PERIOD_US as f64).round() as i64;
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        // Empty: the image's own CMD. The entrypoint and user are always the image's.
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: Some(env),
        labels: Some(labels::for_run(spec, worker_id)),
        attach_stdin: Some(false),
        open_stdin: Some(false),
        tty: Some(false),
        host_config: Some(HostConfig {
            memory: Some(memory),
            memory_swap: Some(memory),
            memory_swappiness: Some(0),
            oom_kill_disable: Some(false),
            pids_limit: Some(settings.pids_limit),
            cpu_period: Some(CPU_PERIOD_US),
            cpu_quota: Some(cpu_quota.max(1_000)),
            cap_drop: Some(vec!["ALL".to_owned()]),
            cap_add: None,
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            privileged: Some(false),
            readonly_rootfs: Some(true),
            tmpfs: Some(tmpfs),
            binds: None,
            mounts: None,
            volumes_from: None,
            devices: None,
            network_mode: Some(network_mode.to_owned()),
            publish_all_ports: Some(false),
            ipc_mode: Some("private".to_owned()),
            auto_remove: Some(false),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".to_owned()),
                config: Some(HashMap::from([
                    ("max-size".to_owned(), LOG_MAX_SIZE.to_owned()),
                    ("max-file".to_owned(), "1".to_owned()),
                ])),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates the container for `spec` and returns its id. A leftover container of the same run
/// that never started (e.g. from an interrupted earlier attempt on this worker) is replaced;
/// any other name conflict is an error.
pub(super) async fn create(
    docker: &Docker,
    spec: &RunSpec,
    image: &ImageInfo,
    settings: &DockerSettings,
    worker_id: &str,
    network_mode: &str,
) -> Result<String, CreateError> {
    check(spec)?;
    let name = container_name(&spec.run_id);
    let body = body(spec, image, settings, worker_id, network_mode);
    let options = || CreateContainerOptions {
        name: Some(name.clone()),
        ..Default::default()
    };
    #[expect(
        clippy::disallowed_methods,
        reason = "the one container constructor: every container is created with the hardened body above"
    )]
    let first = docker.create_container(Some(options()), body.clone()).await;
    match first {
        Ok(created) => Ok(created.id),
        Err(DockerError::DockerResponseServerError {
            status_code: 409, ..
        }) if replaceable(docker, &name, worker_id).await => {
            let _ = docker
                .remove_container(
                    &name,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
            #[expect(
                clippy::disallowed_methods,
                reason = "the same constructor, retried once after removing a never-started leftover"
            )]
            let created = docker.create_container(Some(options()), body).await?;
            Ok(created.id)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether the container named `name` is this worker's and never started.
async fn replaceable(docker: &Docker, name: &str, worker_id: &str) -> bool {
    let Ok(existing) = docker.inspect_container(name, None).await else {
        return false;
    };
    let ours = existing
        .config
        .and_then(|c| c.labels)
        .is_some_and(|l| l.get(labels::WORKER_ID).map(String::as_str) == Some(worker_id));
    let never_started = existing
        .state
        .and_then(|s| s.status)
        .is_some_and(|s| s == bollard::models::ContainerStateStatusEnum::CREATED);
    ours && never_started
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(memory_mb: u32) -> RunSpec {
        RunSpec {
            run_id: "run_1".into(),
            job_id: "job_1".into(),
            tenant_id: "ten_1".into(),
            image: "busybox:1".into(),
            registry_auth: None,
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: [("TOKEN".to_owned(), "s3cret".to_owned())].into(),
            memory_mb,
            timeout: Duration::from_secs(60),
            fire_time: None,
            attempt: 1,
            shard: 3,
        }
    }

    #[test]
    fn every_container_is_hardened_whatever_the_run_asks() {
        let image = ImageInfo {
            volumes: vec!["/data".into()],
        };
        let body = body(
            &spec(128),
            &image,
            &DockerSettings::default(),
            "w1",
            "net-id",
        );
        let host = body.host_config.expect("host config");
        assert_eq!(host.memory, Some(128 * 1024 * 1024));
        assert_eq!(host.memory_swap, host.memory, "no swap beyond the limit");
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(host.cap_add, None);
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_owned()])
        );
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert!(host.pids_limit.is_some_and(|p| p > 0));
        assert!(host.cpu_quota.is_some_and(|q| q > 0));
        assert_eq!(host.binds, None);
        assert_eq!(host.mounts, None);
        assert_eq!(host.devices, None);
        assert_eq!(host.network_mode.as_deref(), Some("net-id"));
        let tmpfs = host.tmpfs.expect("tmpfs");
        assert!(tmpfs[SCRATCH_DIR].contains("size=64m"), "{tmpfs:?}");
        assert!(tmpfs.contains_key("/data"), "image volumes become tmpfs");
        let labels = body.labels.expect("labels");
        assert_eq!(labels[labels::RUN_ID], "run_1");
        assert_eq!(labels[labels::WORKER_ID], "w1");
        assert_eq!(body.user, None, "runs as the image's user");
        assert!(
            body.env
                .expect("env")
                .contains(&"KAIROS_RUN_ID=run_1".to_owned())
        );
    }

    #[test]
    fn limits_past_the_platform_caps_are_refused() {
        assert!(check(&spec(1024)).is_ok());
        assert!(check(&spec(1025)).is_err());
        assert!(check(&spec(0)).is_err());
        let mut long = spec(128);
        long.timeout = MAX_TIMEOUT + Duration::from_secs(1);
        assert!(check(&long).is_err());
        let mut bad_env = spec(128);
        bad_env.env.insert("A=B".into(), "x".into());
        let message = check(&bad_env).expect_err("invalid env name").to_string();
        assert!(
            message.contains("A=B") && !message.contains("s3cret"),
            "{message}"
        );
    }

    #[test]
    fn container_names_are_safe_for_the_engine() {
        assert_eq!(container_name("run_01/x y"), "kairos-run_01-x-y");
    }
}
