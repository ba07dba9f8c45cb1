//! Docker for tests, through the `docker` CLI: checks that an engine is reachable (failing
//! loudly, never skipping), builds small local images (a busybox-static rootfs `docker import`ed,
//! since no registry on the internet is reachable), and removes what a test made — its images
//! and every container carrying its label — on drop, or from the reaper if the test dies.
//!
//! It never touches an image or container it did not create or label, and never changes the
//! engine's configuration.

use std::{path::Path, process::Stdio};

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::reaper::{self, Leftover};

/// Where Debian's `busybox-static` installs its binary.
const BUSYBOX: &str = "/bin/busybox";
/// Label on every image this module builds, to find leftovers by hand.
pub const TEST_IMAGE_LABEL: &str = "kairos.test=1";

/// Fails with an actionable message unless a Docker engine answers.
pub async fn require_docker() -> anyhow::Result<()> {
    let output = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .stdin(Stdio::null())
        .output()
        .await
        .context("these tests need Docker: the `docker` CLI cannot be run (install docker.io)")?;
    if !output.status.success() {
        bail!(
            "these tests need a reachable Docker engine (they never skip): `docker version` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `docker ARGS`, failing with its stderr.
pub async fn docker(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running docker {args:?}"))?;
    if !output.status.success() {
        bail!(
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// `docker inspect` of one object, as JSON.
pub async fn inspect(id: &str) -> anyhow::Result<serde_json::Value> {
    let text = docker(&["inspect", id]).await?;
    let mut all: Vec<serde_json::Value> =
        serde_json::from_str(&text).context("parsing docker inspect")?;
    all.pop().context("docker inspect returned nothing")
}

/// Ids of the containers (running or not) with label `key=value`.
pub async fn containers_labelled(key: &str, value: &str) -> anyhow::Result<Vec<String>> {
    let filter = format!("label={key}={value}");
    let out = docker(&["ps", "-aq", "--no-trunc", "--filter", &filter]).await?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// A local image for tests, removed on drop.
#[derive(Debug)]
pub struct TestImage {
    reference: String,
}

impl TestImage {
    /// A busybox image (`/bin/busybox` from Debian's busybox-static plus a symlink per applet,
    /// `/etc/passwd` with root and nobody, an empty `/tmp`) under a unique tag.
    pub async fn busybox() -> anyhow::Result<Self> {
        Self::busybox_with(&[]).await
    }

    /// [`busybox`](Self::busybox) with Dockerfile instructions applied at import (e.g.
    /// `USER 65534`, `VOLUME /data`).
    pub async fn busybox_with(changes: &[&str]) -> anyhow::Result<Self> {
        if !Path::new(BUSYBOX).exists() {
            bail!("{BUSYBOX} is missing: install Debian's busybox-static (scripts/deps does)");
        }
        let root = tempfile::Builder::new()
            .prefix("kairos-busybox-")
            .tempdir()
            .context("creating a rootfs directory")?;
        let bin = root.path().join("bin");
        for dir in ["bin", "etc", "tmp"] {
            std::fs::create_dir_all(root.path().join(dir)).context("creating the rootfs")?;
        }
        std::fs::copy(BUSYBOX, bin.join("busybox")).context("copying busybox")?;
        let applets = std::process::Command::new(BUSYBOX)
            .arg("--list")
            .output()
            .context("listing busybox applets")?;
        for applet in String::from_utf8_lossy(&applets.stdout).lines() {
            if applet != "busybox" && !applet.contains('/') {
                std::os::unix::fs::symlink("busybox", bin.join(applet))
                    .with_context(|| format!("linking applet {applet}"))?;
            }
        }
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
        )
        .context("writing /etc/passwd")?;
        std::fs::write(
            root.path().join("etc/group"),
            "root:x:0:\nnogroup:x:65534:\n",
        )
        .context("writing /etc/group")?;

        let reference = format!("kairos-test/busybox:{}", uuid::Uuid::new_v4().simple());
        reaper::track(Leftover::DockerImage(reference.clone()))?;
        let image = Self { reference };
        let mut import = Command::new("docker");
        import.arg("import");
        for change in [
            format!("LABEL {TEST_IMAGE_LABEL}"),
            "CMD [\"/bin/sh\"]".to_owned(),
        ]
        .iter()
        .map(String::as_str)
        .chain(changes.iter().copied())
        {
            import.args(["--change", change]);
        }
        let tar = std::process::Command::new("tar")
            .arg("-C")
            .arg(root.path())
            .args(["-c", "."])
            .output()
            .context("packing the rootfs with tar")?;
        if !tar.status.success() {
            bail!("tar failed: {}", String::from_utf8_lossy(&tar.stderr));
        }
        let mut child = import
            .args(["-", &image.reference])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running docker import")?;
        {
            use tokio::io::AsyncWriteExt as _;
            let mut stdin = child.stdin.take().context("docker import has no stdin")?;
            stdin
                .write_all(&tar.stdout)
                .await
                .context("feeding docker import")?;
        }
        let output = child.wait_with_output().await?;
        if !output.status.success() {
            bail!(
                "docker import failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(image)
    }

    /// A reference to an image made elsewhere (e.g. pushed and pulled), removed on drop.
    pub fn adopt(reference: String) -> anyhow::Result<Self> {
        reaper::track(Leftover::DockerImage(reference.clone()))?;
        Ok(Self { reference })
    }

    pub fn reference(&self) -> &str {
        &self.reference
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &self.reference])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        reaper::untrack(&Leftover::DockerImage(self.reference.clone()));
    }
}

/// Removes, on drop, every container labelled `key=value`, and again from the reaper once the
/// test process has exited (a create still in flight at the drop lands after it).
#[derive(Debug)]
pub struct ContainerCleanup {
    label: String,
}

impl ContainerCleanup {
    pub fn labelled(key: &str, value: &str) -> anyhow::Result<Self> {
        let label = format!("{key}={value}");
        reaper::track(Leftover::DockerContainers(label.clone()))?;
        Ok(Self { label })
    }
}

impl Drop for ContainerCleanup {
    fn drop(&mut self) {
        let ids = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label={}", self.label)])
            .stderr(Stdio::null())
            .output();
        if let Ok(ids) = ids {
            let ids = String::from_utf8_lossy(&ids.stdout);
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        // Still tracked on purpose: the reaper sweeps the label again after the process exits.
    }
}
