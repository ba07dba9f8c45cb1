//! Checks that `KairosProcess` spawns a real process, captures its output, terminates, kills and restarts it; never leaves a child behind.

use std::path::Path;
use std::time::Duration;

use kairos_testkit::KairosProcess;

const SH: &str = "/bin/sh";

#[tokio::test]
async fn captures_output_and_terminates_on_sigterm() -> anyhow::Result<()> {
    let mut process = KairosProcess::spawn(
        Path::new(SH),
        &[
            "-c",
            "echo ready; echo \"to stderr $GREETING\" >&2; exec sleep 30",
        ],
        &[("GREETING".to_owned(), "hello".to_owned())],
    )?;
    process
        .wait_for_output("ready", Duration::from_secs(10))
        .await?;
    process
        .wait_for_output("to stderr hello", Duration::from_secs(10))
        .await?;
    assert!(process.output().contains("ready\n"));

    let status = process.terminate(Duration::from_secs(10)).await?;
    assert!(!status.success(), "sleep dies by SIGTERM: {status}");
    Ok(())
}

#[tokio::test]
async fn kills_with_sigkill() -> anyhow::Result<()> {
    let mut process = KairosProcess::spawn(Path::new(SH), &["-c", "echo ready; sleep 30"], &[])?;
    process
        .wait_for_output("ready", Duration::from_secs(10))
        .await?;
    process.kill();
    let status = tokio::time::timeout(Duration::from_secs(10), process.wait()).await??;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed by SIGKILL: {status}"
    );
    Ok(())
}

#[tokio::test]
async fn reports_a_process_that_ignores_sigterm() -> anyhow::Result<()> {
    let mut process = KairosProcess::spawn(
        Path::new(SH),
        &["-c", "trap '' TERM; echo ready; sleep 30 & wait"],
        &[],
    )?;
    process
        .wait_for_output("ready", Duration::from_secs(10))
        .await?;
    let error = process
        .terminate(Duration::from_millis(300))
        .await
        .expect_err("the process ignores SIGTERM");
    assert!(error.to_string().contains("ignored SIGTERM"), "{error:#}");
    Ok(())
}

#[tokio::test]
async fn restarts_with_the_same_arguments_and_keeps_output() -> anyhow::Result<()> {
    let mut process =
        KairosProcess::spawn(Path::new(SH), &["-c", "echo \"started $$\"; sleep 30"], &[])?;
    process
        .wait_for_output("started", Duration::from_secs(10))
        .await?;
    let first_pid = process.pid();
    process.kill();
    process.restart().await?;
    assert_ne!(process.pid(), first_pid);
    process
        .wait_for_output("restarted", Duration::from_secs(10))
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while process.output().matches("started ").count() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            process.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test]
async fn waits_for_http_readiness() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/healthz", listener.local_addr()?);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0_u8; 1024];
            let _ = socket.read(&mut request).await;
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
        }
    });
    let process = KairosProcess::spawn(Path::new(SH), &["-c", "sleep 30"], &[])?;
    process
        .wait_http_ready(&url, Duration::from_secs(10))
        .await?;
    Ok(())
}

#[tokio::test]
async fn fails_fast_when_the_process_exits_before_ready() -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{}/healthz", kairos_testkit::free_port());
    let process = KairosProcess::spawn(Path::new(SH), &["-c", "echo boom; exit 3"], &[])?;
    let started = tokio::time::Instant::now();
    let error = process
        .wait_http_ready(&url, Duration::from_secs(30))
        .await
        .expect_err("nothing listens");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(error.to_string().contains("boom"), "{error:#}");
    Ok(())
}

#[tokio::test]
async fn dropping_kills_the_children_it_started_too() -> anyhow::Result<()> {
    let process = KairosProcess::spawn(
        Path::new(SH),
        &["-c", "sleep 300 & echo \"child $!\"; wait"],
        &[],
    )?;
    process
        .wait_for_output("child ", Duration::from_secs(10))
        .await?;
    let output = process.output();
    let child: i32 = output
        .lines()
        .find_map(|line| line.strip_prefix("child "))
        .expect("the shell printed its child's pid")
        .trim()
        .parse()?;
    let pid = nix::unistd::Pid::from_raw(child);
    assert!(nix::sys::signal::kill(pid, None).is_ok(), "child runs");

    drop(process);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // Killed children linger as zombies until init reaps them: check the state.
    while std::fs::read_to_string(format!("/proc/{child}/stat"))
        .is_ok_and(|stat| !stat.contains(") Z "))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "child {child} survived the drop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
