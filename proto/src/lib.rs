//! The wire types of Kairos' gRPC API, generated from `proto/kairos/v1/*.proto`; it holds no
//! logic and must never depend on another crate of ours.
//!
//! `v1` has the public `JobService` and `TenantService` (mirroring the REST contract) and the
//! internal `WorkerService` (scheduler ↔ worker). Conversions to checked `kairos-domain` types
//! live at the edges that use them (api, cli, worker), not here.

/// Package `kairos.v1`: messages, `*_client` and `*_server` modules.
pub mod v1 {
    tonic::include_proto!("kairos.v1");

    impl std::fmt::Debug for scheduler_message::RegistryAuth {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RegistryAuth")
                .field("server", &self.server)
                .field("username", &self.username)
                .field("password", &"***")
                .finish()
        }
    }
}

/// The encoded `FileDescriptorSet` of every Kairos proto, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("kairos_descriptor");

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost::Message;
    use prost_types::Timestamp;

    use super::v1::{
        self, Job, RetryPolicy, Run, WorkerMessage, scheduler_message, worker_message,
    };

    fn ts(seconds: i64) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos: 0 })
    }

    #[test]
    fn a_job_round_trips_through_encode_and_decode() {
        let job = Job {
            id: "job_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f".into(),
            name: "nightly report".into(),
            image: "alpine:3.20".into(),
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: BTreeMap::from([("GREETING".into(), "hi".into())]),
            memory_mb: 256,
            timeout_seconds: 3600,
            retry: Some(RetryPolicy {
                max_attempts: Some(3),
                initial_backoff_seconds: Some(10),
                max_backoff_seconds: Some(300),
            }),
            labels: BTreeMap::from([("team".into(), "data".into())]),
            version: 2,
            created_at: ts(1_767_225_600),
            updated_at: ts(1_767_225_660),
            registry_credential: Some("ghcr-acme".into()),
        };
        let bytes = job.encode_to_vec();
        assert_eq!(Job::decode(bytes.as_slice()).unwrap(), job);
    }

    #[test]
    fn optional_fields_keep_their_presence_on_the_wire() {
        let mut run = Run {
            id: "run_1".into(),
            job_id: "job_1".into(),
            trigger: "manual".into(),
            attempt: 1,
            fire_time: ts(1_767_225_600),
            state: "failed".into(),
            exit_code: Some(0),
            ..Run::default()
        };
        let decoded = Run::decode(run.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.exit_code, Some(0), "an explicit 0 is not absent");
        assert_eq!(decoded.schedule_id, None);
        run.exit_code = None;
        let decoded = Run::decode(run.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.exit_code, None);
    }

    #[test]
    fn worker_stream_messages_round_trip_with_their_oneof() {
        let hello = WorkerMessage {
            kind: Some(worker_message::Kind::Hello(worker_message::Hello {
                worker_id: "w1".into(),
                slots: 4,
                cached_images: vec!["alpine:3.20".into()],
                labels: BTreeMap::new(),
            })),
        };
        let decoded = WorkerMessage::decode(hello.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, hello);

        let assignment = v1::SchedulerMessage {
            kind: Some(scheduler_message::Kind::Assignment(
                scheduler_message::Assignment {
                    run_id: "run_1".into(),
                    job_id: "job_1".into(),
                    image: "alpine:3.20".into(),
                    command: vec!["true".into()],
                    env: BTreeMap::from([("A".into(), "b".into())]),
                    memory_mb: 128,
                    timeout_seconds: 60,
                    fire_time: ts(1_767_225_600),
                    attempt: 1,
                    shard: 7,
                    upcoming: true,
                    registry_auth: Some(scheduler_message::RegistryAuth {
                        server: "127.0.0.1:5000".into(),
                        username: "u".into(),
                        password: "p".into(),
                    }),
                    tenant_id: "ten_1".into(),
                },
            )),
        };
        let decoded = v1::SchedulerMessage::decode(assignment.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, assignment);
    }

    #[test]
    fn registry_credentials_never_show_their_password_in_debug() {
        let auth = scheduler_message::RegistryAuth {
            server: "registry.example.com".into(),
            username: "robot".into(),
            password: "hunter2-secret".into(),
        };
        let shown = format!("{auth:?}");
        assert!(shown.contains("robot"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn the_descriptor_set_describes_both_files() {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let names: Vec<_> = set.file.iter().filter_map(|f| f.name.as_deref()).collect();
        assert!(names.contains(&"kairos/v1/jobs.proto"), "{names:?}");
        assert!(names.contains(&"kairos/v1/worker.proto"), "{names:?}");
    }
}
