//! `kairos worker` as an operator starts it: with the Docker runtime (the default) and no
//! reachable engine it refuses to start with an error that says how to fix it, and it refuses
//! a network setting that is not `none` or an isolated bridge. It never reaches beyond
//! 127.0.0.1 and never starts a container.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_kairos");

fn worker(env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .arg("worker")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KAIROS_ETCD_ENDPOINTS", "http://127.0.0.1:1")
        .env("KAIROS_WORKER_TOKEN", "t0ken")
        .env("KAIROS_WORKER_ID", "role-test-worker");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the kairos binary runs")
}

#[test]
fn the_docker_runtime_without_an_engine_refuses_to_start_and_says_how_to_fix_it() {
    let socket = tempfile::tempdir().unwrap();
    let host = format!("unix://{}/no-engine.sock", socket.path().display());
    let out = worker(&[("DOCKER_HOST", &host)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it must not run without an engine");
    assert!(stderr.contains("cannot reach a Docker engine"), "{stderr}");
    assert!(stderr.contains("DOCKER_HOST"), "{stderr}");
    assert!(stderr.contains("KAIROS_RUNTIME=process"), "{stderr}");
    assert!(
        !stderr.contains("t0ken"),
        "no secret in the error: {stderr}"
    );
}

#[test]
fn a_network_other_than_none_or_an_isolated_bridge_is_refused() {
    let out = worker(&[("KAIROS_DOCKER_NETWORK", "host")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("KAIROS_DOCKER_NETWORK"), "{stderr}");
    assert!(stderr.contains("host network is never allowed"), "{stderr}");
}
