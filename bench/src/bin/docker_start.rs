//! Container start-lag benchmark on the local Docker engine, three ways in one run with one warm
//! local image (busybox, `docker import`ed) and the same command (`sleep 1`), interleaved round
//! by round so machine noise hits all three alike:
//!
//! - (a) plain `docker run -d` (default bridge): command invoked → the container's
//!   `State.StartedAt`; (a') the same with `--network none`;
//! - (b) bare bollard create + start (no hardening, default bridge): create called →
//!   `State.StartedAt`; (b') bollard start alone of a container created beforehand: start
//!   called → `State.StartedAt` (the floor for any pre-creation through the engine API);
//! - (c) the Kairos worker (Docker runtime, hardened container, isolated bridge) with an
//!   upcoming assignment from a fake scheduler over a real `WorkerService` stream: the worker
//!   pre-creates the container during the look-ahead, the fake sends the go at the due
//!   instant; due instant → `State.StartedAt`; (d) the same with `KAIROS_DOCKER_NETWORK=none`.
//!
//! Then containers/s at saturation: the worker with `--slots` slots kept full of due
//! (not upcoming) `true` runs, and `docker run --rm` with as many parallel clients.
//!
//! Run: `cargo run --release -p kairos-bench --bin docker_start [-- --rounds 50 --slots 4]`.
//! A measurement, not a test: it never asserts, and it only talks to the local engine and to
//! loopback.

use std::{collections::HashMap, time::Duration};

use anyhow::{Context, Result, bail};
use bollard::{
    Docker,
    models::ContainerCreateBody,
    query_parameters::{CreateContainerOptions, RemoveContainerOptions},
};
use chrono::{DateTime, Utc};
use kairos_proto::v1::{
    scheduler_message::{self, Assignment},
    worker_message,
};
use kairos_testkit::{ContainerCleanup, FakeScheduler, TestImage, WorkerStream, etcd};
use kairos_worker::{
    WorkerConfig,
    config::RuntimeKind,
    runtime::{DockerSettings, NetworkChoice, docker::container_name},
};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "bench-worker-token";
const BENCH_LABEL: &str = "kairos.bench";
/// How far ahead of its fire an upcoming assignment is sent.
const LOOK_AHEAD: Duration = Duration::from_millis(1500);
const WITHIN: Duration = Duration::from_secs(60);
const SATURATION_RUNS: usize = 60;

struct Args {
    rounds: usize,
    slots: u32,
}

fn args() -> Result<Args> {
    let mut args = Args {
        rounds: 50,
        slots: 4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rounds" => args.rounds = value.parse().context("--rounds")?,
            "--slots" => args.slots = value.parse().context("--slots")?,
            other => bail!("unknown flag {other} (flags: --rounds N, --slots N)"),
        }
    }
    Ok(args)
}

fn ms(d: chrono::Duration) -> f64 {
    d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (
        percentile(values, 50.0),
        percentile(values, 99.0),
        values.last().copied().unwrap_or(f64::NAN),
    )
}

/// `State.StartedAt` of a container, waiting until the engine set it.
async fn started_at(docker: &Docker, name: &str) -> Result<DateTime<Utc>> {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        if let Ok(inspect) = docker.inspect_container(name, None).await
            && let Some(t) = inspect.state.and_then(|s| s.started_at)
            && !t.starts_with("0001-")
        {
            return Ok(DateTime::parse_from_rfc3339(&t)?.with_timezone(&Utc));
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{name} never started");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn remove(docker: &Docker, name: &str) {
    let options = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    let _ = docker.remove_container(name, Some(options)).await;
}

/// (a) `docker run -d`: invocation → StartedAt.
async fn plain_docker_run(
    docker: &Docker,
    image: &str,
    bench: &str,
    network: Option<&str>,
) -> Result<f64> {
    let name = format!("kbench-run-{}", uuid::Uuid::new_v4().simple());
    let mut command = tokio::process::Command::new("docker");
    command
        .args(["run", "-d", "--name", &name, "--label"])
        .arg(format!("{BENCH_LABEL}={bench}"));
    if let Some(network) = network {
        command.args(["--network", network]);
    }
    let t0 = Utc::now();
    let out = command.args([image, "sleep", "1"]).output().await?;
    if !out.status.success() {
        bail!("docker run: {}", String::from_utf8_lossy(&out.stderr));
    }
    let lag = ms(started_at(docker, &name).await? - t0);
    remove(docker, &name).await;
    Ok(lag)
}

/// (b) bare bollard create + start: create called → StartedAt; and (b') start called →
/// StartedAt.
async fn bare_bollard(docker: &Docker, image: &str, bench: &str) -> Result<(f64, f64)> {
    let name = format!("kbench-bare-{}", uuid::Uuid::new_v4().simple());
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(vec!["sleep".into(), "1".into()]),
        labels: Some(HashMap::from([(BENCH_LABEL.to_owned(), bench.to_owned())])),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name.clone()),
        ..Default::default()
    };
    let t0 = Utc::now();
    #[expect(
        clippy::disallowed_methods,
        reason = "the benchmark's baseline is a bare, unhardened create: it must not use the worker's constructor"
    )]
    let created = docker.create_container(Some(options), body).await?;
    let t1 = Utc::now();
    docker.start_container(&created.id, None).await?;
    let started = started_at(docker, &name).await?;
    remove(docker, &name).await;
    Ok((ms(started - t0), ms(started - t1)))
}

fn assignment(image: &str, command: &[&str], fire: DateTime<Utc>, upcoming: bool) -> Assignment {
    Assignment {
        run_id: format!("run_{}", uuid::Uuid::new_v4().simple()),
        job_id: "job_bench".into(),
        image: image.to_owned(),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        env: Default::default(),
        memory_mb: 128,
        timeout_seconds: 60,
        fire_time: Some(prost_types::Timestamp {
            seconds: fire.timestamp(),
            nanos: fire.timestamp_subsec_nanos() as i32,
        }),
        attempt: 1,
        shard: 0,
        upcoming,
        registry_auth: None,
        tenant_id: "ten_bench".into(),
    }
}

/// (c) the worker with an upcoming assignment: due instant → StartedAt.
async fn kairos_upcoming(docker: &Docker, stream: &mut WorkerStream, image: &str) -> Result<f64> {
    let fire = Utc::now() + chrono::Duration::from_std(LOOK_AHEAD)?;
    let a = assignment(image, &["sleep", "1"], fire, true);
    let run_id = a.run_id.clone();
    stream.send(scheduler_message::Kind::Assignment(a)).await?;
    if !stream.ack_of(&run_id, WITHIN).await? {
        bail!("the worker refused the upcoming run");
    }
    let wait = (fire - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
    stream.decide(&run_id, true).await?;
    let lag = ms(started_at(docker, &container_name(&run_id)).await? - fire);
    let report = stream.report_of(&run_id, WITHIN).await?;
    if report.state != "succeeded" {
        bail!("run ended {report:?}");
    }
    Ok(lag)
}

/// Containers/s through the worker with every slot kept busy with due `true` runs.
async fn kairos_saturation(stream: &mut WorkerStream, image: &str, slots: u32) -> Result<f64> {
    let t0 = std::time::Instant::now();
    let (mut sent, mut done, mut in_flight) = (0usize, 0usize, 0u32);
    while done < SATURATION_RUNS {
        while in_flight < slots && sent < SATURATION_RUNS {
            let a = assignment(image, &["true"], Utc::now(), false);
            stream.send(scheduler_message::Kind::Assignment(a)).await?;
            sent += 1;
            in_flight += 1;
        }
        match stream.recv(WITHIN).await? {
            worker_message::Kind::Ack(ack) if ack.accept => {
                stream.decide(&ack.run_id, true).await?
            }
            worker_message::Kind::Ack(ack) => bail!("refused {}", ack.run_id),
            worker_message::Kind::Report(r) => {
                if r.state != "succeeded" {
                    bail!("run ended {r:?}");
                }
                done += 1;
                in_flight -= 1;
            }
            _ => {}
        }
    }
    Ok(SATURATION_RUNS as f64 / t0.elapsed().as_secs_f64())
}

/// Containers/s of `docker run --rm IMAGE true` from `clients` parallel loops.
async fn docker_run_saturation(image: &str, clients: u32, bench: &str) -> Result<f64> {
    let per_client = SATURATION_RUNS.div_ceil(clients as usize);
    let t0 = std::time::Instant::now();
    let mut loops = Vec::new();
    for _ in 0..clients {
        let (image, label) = (image.to_owned(), format!("{BENCH_LABEL}={bench}"));
        loops.push(tokio::spawn(async move {
            for _ in 0..per_client {
                let status = tokio::process::Command::new("docker")
                    .args(["run", "--rm", "--label", &label, &image, "true"])
                    .output()
                    .await?;
                if !status.status.success() {
                    bail!("docker run: {}", String::from_utf8_lossy(&status.stderr));
                }
            }
            Ok(())
        }));
    }
    for l in loops {
        l.await??;
    }
    Ok((per_client * clients as usize) as f64 / t0.elapsed().as_secs_f64())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{cores} cores, {cpu}, load average at start {}",
        load.trim()
    )
}

/// A worker with the Docker runtime on `network`, and its stream to a fake scheduler.
async fn start_worker(
    etcd: &kairos_testkit::TestEtcd,
    bench: &str,
    name: &str,
    slots: u32,
    network: NetworkChoice,
    shutdown: &CancellationToken,
) -> Result<(
    FakeScheduler,
    WorkerStream,
    ContainerCleanup,
    tokio::task::JoinHandle<Result<(), kairos_worker::agent::StartError>>,
)> {
    let mut scheduler = FakeScheduler::start(etcd, &format!("bench-node-{name}"), TOKEN).await?;
    let worker_id = format!("bench-worker-{name}-{bench}");
    let cleanup = ContainerCleanup::labelled(
        kairos_worker::runtime::docker::labels::WORKER_ID,
        &worker_id,
    )?;
    let config = WorkerConfig {
        schedulers: kairos_worker::config::Schedulers::Etcd {
            endpoints: etcd.endpoints(),
            prefix: etcd.key_prefix().to_owned(),
        },
        worker_id,
        slots,
        runtime: RuntimeKind::Docker,
        token: TOKEN.to_owned(),
        heartbeat_every: Duration::from_secs(2),
        drain_grace: Duration::from_secs(10),
        docker: DockerSettings {
            network,
            ..DockerSettings::default()
        },
        metrics_addr: None,
    };
    let worker = tokio::spawn(kairos_worker::run(config, shutdown.clone()));
    let stream = scheduler.next_stream(WITHIN).await?;
    Ok((scheduler, stream, cleanup, worker))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    kairos_testkit::require_docker().await?;
    let docker = Docker::connect_with_local_defaults()?
        .negotiate_version()
        .await?;
    let version = docker.version().await?;
    let info = docker.info().await?;
    let bench = uuid::Uuid::new_v4().simple().to_string();
    let _bench_containers = ContainerCleanup::labelled(BENCH_LABEL, &bench)?;
    let image = TestImage::busybox().await?;
    let image_ref = image.reference().to_owned();

    let etcd = etcd().await?;
    let shutdown = CancellationToken::new();
    // Two workers, each with its own fake scheduler node: discovery connects each worker to
    // both nodes, so each test reads only its own node's stream of its own worker.
    let isolated_etcd = kairos_testkit::etcd().await?;
    let none_etcd = etcd;
    let (_s1, mut isolated, _c1, w1) = start_worker(
        &isolated_etcd,
        &bench,
        "isolated",
        args.slots,
        NetworkChoice::Isolated(DockerSettings::default_network_name().to_owned()),
        &shutdown,
    )
    .await?;
    let (_s2, mut none, _c2, w2) = start_worker(
        &none_etcd,
        &bench,
        "none",
        args.slots,
        NetworkChoice::None,
        &shutdown,
    )
    .await?;

    // Warm-up: one of each, not counted.
    plain_docker_run(&docker, &image_ref, &bench, None).await?;
    plain_docker_run(&docker, &image_ref, &bench, Some("none")).await?;
    bare_bollard(&docker, &image_ref, &bench).await?;
    kairos_upcoming(&docker, &mut isolated, &image_ref).await?;
    kairos_upcoming(&docker, &mut none, &image_ref).await?;

    let mut rows: [Vec<f64>; 6] = Default::default();
    for round in 0..args.rounds {
        let figures = [
            plain_docker_run(&docker, &image_ref, &bench, None).await?,
            plain_docker_run(&docker, &image_ref, &bench, Some("none")).await?,
        ];
        let (create_start, start_only) = bare_bollard(&docker, &image_ref, &bench).await?;
        let kairos = [
            kairos_upcoming(&docker, &mut isolated, &image_ref).await?,
            kairos_upcoming(&docker, &mut none, &image_ref).await?,
        ];
        let all = [
            figures[0],
            figures[1],
            create_start,
            start_only,
            kairos[0],
            kairos[1],
        ];
        for (row, value) in rows.iter_mut().zip(all) {
            row.push(value);
        }
        eprintln!("round {round}: {all:.1?}");
    }
    let kairos_rate = kairos_saturation(&mut isolated, &image_ref, args.slots).await?;
    let docker_rate = docker_run_saturation(&image_ref, args.slots, &bench).await?;
    shutdown.cancel();
    w1.await??;
    w2.await??;

    println!("machine: {}", machine());
    println!(
        "engine: Docker {} (API {}), storage driver {}, cgroup {}",
        version.version.unwrap_or_default(),
        docker.client_version(),
        info.driver.unwrap_or_default(),
        info.cgroup_version
            .map(|v| format!("{v:?}"))
            .unwrap_or_default()
    );
    println!(
        "rounds: {} (after one warm-up round), command `sleep 1`, look-ahead {LOOK_AHEAD:?}\n",
        args.rounds
    );
    println!("| path | start lag p50 ms | p99 ms | max ms | p50 / (a) p50 |");
    println!("|---|---:|---:|---:|---:|");
    let names = [
        "(a) `docker run -d`, default bridge (invocation → StartedAt)",
        "(a') `docker run -d --network none`",
        "(b) bare bollard create+start, default bridge (create → StartedAt)",
        "(b') bare bollard start of a created container (start → StartedAt)",
        "(c) Kairos worker, upcoming, isolated bridge (due → StartedAt)",
        "(d) Kairos worker, upcoming, network none (due → StartedAt)",
    ];
    let a50 = {
        let mut a = rows[0].clone();
        summary(&mut a).0
    };
    for (name, row) in names.iter().zip(rows.iter_mut()) {
        let (p50, p99, max) = summary(row);
        println!(
            "| {name} | {p50:.1} | {p99:.1} | {max:.1} | {:.2} |",
            p50 / a50
        );
    }
    println!(
        "\nsaturation ({SATURATION_RUNS} runs of `true`, {} at a time): Kairos worker (isolated bridge) {kairos_rate:.1} containers/s, `docker run --rm` {docker_rate:.1} containers/s",
        args.slots
    );
    Ok(())
}
