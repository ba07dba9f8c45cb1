//! The image cache: pulls a run's image only when it is absent (pull policy if-not-present),
//! with the run's registry credentials when it has some, and keeps the images this worker
//! pulled under a size bound by evicting the least recently used one that no container uses.
//!
//! It never logs credentials, never removes an image it did not pull, and never removes one a
//! prepared or running container of this worker uses.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use bollard::{
    Docker,
    auth::DockerCredentials,
    errors::Error as DockerError,
    query_parameters::{CreateImageOptions, ListImagesOptions, RemoveImageOptions},
};
use futures::StreamExt;

use crate::runtime::RegistryAuth;

/// What the container constructor needs to know about an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageInfo {
    /// The image's `VOLUME` paths (each gets a tmpfs instead of a host volume).
    pub volumes: Vec<String>,
}

/// Why an image could not be made present.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{0}")]
    Engine(#[from] DockerError),
    #[error("the pull did not finish within {0:?}")]
    TimedOut(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    size: u64,
    /// Logical time of the last use (a counter, not a clock: only the order matters).
    last_used: u64,
    /// Prepared or running containers of this worker using it.
    in_use: u32,
    /// Pulled by this worker, so it may evict it.
    pulled: bool,
}

/// The cache's bookkeeping; pure, so eviction is unit-tested without an engine.
#[derive(Debug, Default)]
struct CacheState {
    entries: HashMap<String, Entry>,
    clock: u64,
}

impl CacheState {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Records `image` as present (keeping whether we pulled it).
    fn present(&mut self, image: &str, size: u64, pulled: bool) {
        let now = self.tick();
        let entry = self.entries.entry(image.to_owned()).or_insert(Entry {
            size,
            last_used: now,
            in_use: 0,
            pulled,
        });
        entry.size = size;
        entry.pulled |= pulled;
        entry.last_used = now;
    }

    fn acquire(&mut self, image: &str) {
        let now = self.tick();
        if let Some(entry) = self.entries.get_mut(image) {
            entry.in_use += 1;
            entry.last_used = now;
        }
    }

    fn release(&mut self, image: &str) {
        let now = self.tick();
        if let Some(entry) = self.entries.get_mut(image) {
            entry.in_use = entry.in_use.saturating_sub(1);
            entry.last_used = now;
        }
    }

    /// Images to evict, least recently used first, until what this worker pulled fits in
    /// `bound` bytes: only pulled images, never one in use.
    fn victims(&self, bound: u64) -> Vec<String> {
        let mut total: u64 = self
            .entries
            .values()
            .filter(|e| e.pulled)
            .map(|e| e.size)
            .sum();
        let mut candidates: Vec<(&String, &Entry)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.pulled && e.in_use == 0)
            .collect();
        candidates.sort_by_key(|(_, e)| e.last_used);
        let mut out = Vec::new();
        for (image, entry) in candidates {
            if total <= bound {
                break;
            }
            total = total.saturating_sub(entry.size);
            out.push(image.clone());
        }
        out
    }

    fn evictable(&self, image: &str) -> bool {
        self.entries
            .get(image)
            .is_some_and(|e| e.pulled && e.in_use == 0)
    }
}

/// A use of an image by one prepared or running container; dropping it ends the use.
#[derive(Debug)]
pub struct ImageLease {
    state: Arc<Mutex<CacheState>>,
    image: String,
}

impl Drop for ImageLease {
    fn drop(&mut self) {
        lock(&self.state).release(&self.image);
    }
}

fn lock(state: &Mutex<CacheState>) -> MutexGuard<'_, CacheState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
pub struct ImageCache {
    docker: Docker,
    bound: u64,
    pull_timeout: Duration,
    state: Arc<Mutex<CacheState>>,
    /// One lock per image: a pull, an inspect-and-acquire and an eviction of the same image
    /// never overlap.
    per_image: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ImageCache {
    /// A cache over the engine's current images: those already present are advertised but,
    /// not pulled by this worker, never evicted.
    pub async fn load(
        docker: Docker,
        bound: u64,
        pull_timeout: Duration,
    ) -> Result<Self, DockerError> {
        let mut state = CacheState::default();
        for image in docker.list_images(None::<ListImagesOptions>).await? {
            let size = u64::try_from(image.size).unwrap_or(0);
            for tag in image.repo_tags.iter().filter(|t| *t != "<none>:<none>") {
                state.present(tag, size, false);
            }
        }
        Ok(Self {
            docker,
            bound,
            pull_timeout,
            state: Arc::new(Mutex::new(state)),
            per_image: Mutex::new(HashMap::new()),
        })
    }

    fn image_lock(&self, image: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.per_image.lock().unwrap_or_else(|e| e.into_inner());
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(image.to_owned()).or_default().clone()
    }

    /// Makes `image` present (pulling it if absent) and takes a lease on it for a container.
    pub async fn ensure(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<(ImageLease, ImageInfo), PullError> {
        let per_image = self.image_lock(image);
        let guard = per_image.lock().await;
        let (info, size, pulled) = match self.docker.inspect_image(image).await {
            Ok(found) => (info_of(&found), size_of(&found), false),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                tracing::info!(image, with_credentials = auth.is_some(), "pulling image");
                tokio::time::timeout(self.pull_timeout, self.pull(image, auth))
                    .await
                    .map_err(|_| PullError::TimedOut(self.pull_timeout))??;
                let found = self.docker.inspect_image(image).await?;
                (info_of(&found), size_of(&found), true)
            }
            Err(e) => return Err(e.into()),
        };
        {
            let mut state = lock(&self.state);
            state.present(image, size, pulled);
            state.acquire(image);
        }
        drop(guard);
        if pulled {
            self.evict().await;
        }
        Ok((
            ImageLease {
                state: self.state.clone(),
                image: image.to_owned(),
            },
            info,
        ))
    }

    /// A lease on an image a re-attached container uses (it is present: the container runs).
    pub fn lease_present(&self, image: &str) -> ImageLease {
        let mut state = lock(&self.state);
        if !state.entries.contains_key(image) {
            state.present(image, 0, false);
        }
        state.acquire(image);
        ImageLease {
            state: self.state.clone(),
            image: image.to_owned(),
        }
    }

    async fn pull(&self, image: &str, auth: Option<&RegistryAuth>) -> Result<(), DockerError> {
        let options = CreateImageOptions {
            from_image: Some(image.to_owned()),
            // Without a tag the engine would pull every tag of the repository.
            tag: (!has_tag_or_digest(image)).then(|| "latest".to_owned()),
            ..Default::default()
        };
        // Credentials go only to the registry they are for, never to another one the image
        // reference happens to name.
        let auth = auth.filter(|a| {
            let fits = same_registry(&a.server, &registry_of(image));
            if !fits {
                tracing::warn!(image, server = %a.server, "registry credentials are for another registry: pulling without them");
            }
            fits
        });
        let credentials = auth.map(|a| DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.clone()),
            serveraddress: Some(a.server.clone()),
            ..Default::default()
        });
        let mut progress = self.docker.create_image(Some(options), None, credentials);
        while let Some(step) = progress.next().await {
            step?;
        }
        Ok(())
    }

    /// Removes least recently used pulled images until the pulled ones fit the bound.
    async fn evict(&self) {
        let victims = lock(&self.state).victims(self.bound);
        for image in victims {
            let per_image = self.image_lock(&image);
            let _guard = per_image.lock().await;
            // Re-checked under the image's lock: a run may have taken it meanwhile.
            if !lock(&self.state).evictable(&image) {
                continue;
            }
            let options = RemoveImageOptions {
                force: false,
                ..Default::default()
            };
            match self.docker.remove_image(&image, Some(options), None).await {
                Ok(_)
                | Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                }) => {
                    tracing::info!(image = %image, "evicted image from the cache");
                    lock(&self.state).entries.remove(&image);
                }
                // E.g. a container of someone else uses it: try again at the next eviction.
                Err(e) => tracing::debug!(image = %image, error = %e, "cannot evict image yet"),
            }
        }
    }

    /// Images present on this worker, sorted.
    pub fn cached(&self) -> Vec<String> {
        let mut images: Vec<String> = lock(&self.state).entries.keys().cloned().collect();
        images.sort();
        images
    }
}

fn info_of(image: &bollard::models::ImageInspect) -> ImageInfo {
    let mut volumes = image
        .config
        .as_ref()
        .and_then(|c| c.volumes.clone())
        .unwrap_or_default();
    volumes.sort();
    ImageInfo { volumes }
}

fn size_of(image: &bollard::models::ImageInspect) -> u64 {
    image.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0)
}

/// Whether a reference names a tag or digest (`repo:tag`, `repo@sha256:…`); a `:` before the
/// last `/` is a registry port, not a tag.
fn has_tag_or_digest(image: &str) -> bool {
    image.contains('@')
        || image
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
}

/// The registry host of an image reference, as the engine resolves it: the first component
/// when it looks like a host (has a `.` or `:`, or is `localhost`), else Docker Hub.
fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_owned()
        }
        _ => "docker.io".to_owned(),
    }
}

/// Whether credentials for `server` (as a job names it: maybe with a scheme or a path) are
/// for `registry`.
fn same_registry(server: &str, registry: &str) -> bool {
    let host = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    host.eq_ignore_ascii_case(registry) || (hub(host) && hub(registry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_only_for_the_registry_the_image_is_on() {
        assert_eq!(registry_of("127.0.0.1:5000/team/app:1"), "127.0.0.1:5000");
        assert_eq!(
            registry_of("registry.example.com/app"),
            "registry.example.com"
        );
        assert_eq!(registry_of("library/busybox"), "docker.io");
        assert_eq!(registry_of("busybox:1"), "docker.io");
        assert!(same_registry("127.0.0.1:5000", "127.0.0.1:5000"));
        assert!(same_registry(
            "https://registry.example.com/v2/",
            "registry.example.com"
        ));
        assert!(same_registry("https://index.docker.io/v1/", "docker.io"));
        assert!(!same_registry("registry.example.com", "evil.example.net"));
        assert!(!same_registry("127.0.0.1:5000", "127.0.0.1:5001"));
    }

    #[test]
    fn tags_digests_and_registry_ports_are_told_apart() {
        assert!(has_tag_or_digest("busybox:1.36"));
        assert!(has_tag_or_digest("127.0.0.1:5000/team/app:2"));
        assert!(has_tag_or_digest("app@sha256:abcd"));
        assert!(!has_tag_or_digest("127.0.0.1:5000/team/app"));
        assert!(!has_tag_or_digest("busybox"));
    }

    #[test]
    fn eviction_takes_the_least_recently_used_pulled_image_that_is_not_in_use() {
        let mut state = CacheState::default();
        state.present("preinstalled", 500, false);
        state.present("old", 100, true);
        state.present("busy", 100, true);
        state.present("new", 100, true);
        state.acquire("busy");
        // 300 bytes pulled, bound 200: one must go; "old" is the least recently used.
        assert_eq!(state.victims(200), vec!["old".to_owned()]);
        // Bound 0: everything pulled and idle goes, never the one in use, never preinstalled.
        assert_eq!(state.victims(0), vec!["old".to_owned(), "new".to_owned()]);
        state.release("busy");
        assert_eq!(state.victims(250), vec!["old".to_owned()]);
        // "old" used again: now "new" is the oldest idle one... then "busy".
        state.acquire("old");
        state.release("old");
        assert_eq!(
            state.victims(150),
            vec!["new".to_owned(), "busy".to_owned()]
        );
    }

    #[test]
    fn under_the_bound_nothing_is_evicted() {
        let mut state = CacheState::default();
        state.present("a", 100, true);
        state.present("b", 100, true);
        assert!(state.victims(200).is_empty());
        assert!(state.evictable("a"));
        state.acquire("a");
        assert!(!state.evictable("a"));
    }
}
