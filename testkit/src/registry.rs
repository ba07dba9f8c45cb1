//! A throwaway image registry for pull tests: Debian's `docker-registry` on a free 127.0.0.1
//! port (the engine trusts plain HTTP on 127.0.0.0/8 without configuration), its config and
//! data in a temporary directory, optionally behind htpasswd basic auth; plus pushing a test
//! image to it with a private `docker --config` dir, so no login state leaks into the host.
//!
//! It never listens beyond loopback and is killed, its directory removed, when dropped.

use std::{process::Stdio, time::Duration};

use anyhow::{Context as _, bail};
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::{
    docker::{TestImage, docker},
    ports::free_port,
    reaper::{self, Leftover},
    shutdown,
};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 5;

/// A running `docker-registry` and, if it has them, its basic-auth credentials.
#[derive(Debug)]
pub struct TestRegistry {
    /// Config, credentials and data; removed on drop, after the process is killed.
    _dir: TempDir,
    port: u16,
    child: Child,
    group: Option<i32>,
    credentials: Option<(String, String)>,
}

impl TestRegistry {
    /// A registry anyone may pull from and push to.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_inner(None).await
    }

    /// A registry that requires `username` / `password` (htpasswd, bcrypt) for every request.
    pub async fn start_with_auth(username: &str, password: &str) -> anyhow::Result<Self> {
        Self::start_inner(Some((username.to_owned(), password.to_owned()))).await
    }

    async fn start_inner(credentials: Option<(String, String)>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("kairos-registry-")
            .tempdir()
            .context("creating a registry directory")?;
        reaper::track(Leftover::Dir(dir.path().to_path_buf()))?;
        let auth = match &credentials {
            None => String::new(),
            Some((user, password)) => {
                let output = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .stdin(Stdio::null())
                    .output()
                    .await
                    .context("running htpasswd (install apache2-utils)")?;
                if !output.status.success() {
                    bail!(
                        "htpasswd failed: {}",
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, &output.stdout).context("writing htpasswd")?;
                format!(
                    "auth:\n  htpasswd:\n    realm: kairos-test\n    path: {}\n",
                    path.display()
                )
            }
        };
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let config = format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                dir.path().join("data").display()
            );
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).context("writing the registry config")?;
            let log = std::fs::File::create(dir.path().join("registry.log"))
                .context("creating the registry log")?;
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .context("spawning docker-registry (install Debian's docker-registry)")?;
            let mut child = child;
            let group = shutdown::pid_of(&child)?;
            if let Some(group) = group {
                reaper::track(Leftover::Group(group))?;
            }
            match wait_ready(&mut child, port).await {
                Ok(()) => {
                    return Ok(Self {
                        _dir: dir,
                        port,
                        child,
                        group,
                        credentials,
                    });
                }
                Err(e) => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    if let Some(group) = group {
                        reaper::untrack(&Leftover::Group(group));
                    }
                    let log = std::fs::read_to_string(dir.path().join("registry.log"))
                        .unwrap_or_default();
                    let retry = log.contains("address already in use");
                    last_error = Some(e.context(format!("registry log:\n{log}")));
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("docker-registry did not start")))
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes `image` as `HOST/REPOSITORY:TAG` and removes that local tag again, so a pull is
    /// needed to run it. The returned image removes the reference on drop.
    pub async fn push(
        &self,
        image: &TestImage,
        repository: &str,
        tag: &str,
    ) -> anyhow::Result<TestImage> {
        let target = format!("{}/{repository}:{tag}", self.host());
        let pushed = TestImage::adopt(target.clone())?;
        let config = tempfile::Builder::new()
            .prefix("kairos-docker-config-")
            .tempdir()?;
        let config_dir = config.path().to_string_lossy().into_owned();
        docker(&["tag", image.reference(), &target]).await?;
        if let Some((user, password)) = &self.credentials {
            let mut login = Command::new("docker")
                .args(["--config", &config_dir, "login", "--username", user])
                .args(["--password-stdin", &self.host()])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("running docker login")?;
            {
                use tokio::io::AsyncWriteExt as _;
                let mut stdin = login.stdin.take().context("docker login has no stdin")?;
                stdin.write_all(password.as_bytes()).await?;
            }
            let output = login.wait_with_output().await?;
            if !output.status.success() {
                bail!(
                    "docker login to the test registry failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
        docker(&["--config", &config_dir, "push", &target]).await?;
        docker(&["rmi", &target]).await?;
        Ok(pushed)
    }
}

async fn wait_ready(child: &mut Child, port: u16) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let url = format!("http://127.0.0.1:{port}/v2/");
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("docker-registry exited with {status}");
        }
        // 401 is ready too: auth is on.
        if let Ok(response) = http.get(&url).send().await
            && (response.status().is_success() || response.status().as_u16() == 401)
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("docker-registry at {url} not ready after {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if let Some(group) = self.group.take() {
            let _ = shutdown::kill_group(group);
            reaper::untrack(&Leftover::Group(group));
        }
    }
}
