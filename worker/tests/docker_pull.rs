//! Image pulls on the real engine from a throwaway local registry (Debian's docker-registry):
//! pull-if-absent with correct credentials, refused with wrong or missing ones (and ones for
//! another registry are never sent), a missing
//! image, the cached images advertised in credits, and size-bounded eviction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use kairos_proto::v1::{scheduler_message::RegistryAuth, worker_message};
use kairos_testkit::{TestImage, TestRegistry, docker};

const USER: &str = "kairos-puller";
const PASSWORD: &str = "pull-secret-8d1f";

fn repo() -> String {
    format!("kairos-test/pulled-{}", uuid::Uuid::new_v4().simple())
}

async fn image_present(reference: &str) -> bool {
    docker::docker(&["image", "inspect", reference])
        .await
        .is_ok()
}

#[tokio::test]
async fn an_image_behind_basic_auth_is_pulled_with_the_runs_credentials_and_advertised() {
    let registry = TestRegistry::start_with_auth(USER, PASSWORD).await.unwrap();
    let mut h = Harness::start().await.unwrap();
    let pushed = registry.push(&h.image, &repo(), "v1").await.unwrap();
    assert!(!image_present(pushed.reference()).await, "must be pulled");
    let (_worker, mut s) = h.worker(h.config()).await.unwrap();

    let mut a = assignment(pushed.reference(), &["sh", "-c", "echo pulled and ran"]);
    a.registry_auth = Some(RegistryAuth {
        server: registry.host(),
        username: USER.into(),
        password: PASSWORD.into(),
    });
    let report = run_to_end(&mut s, a).await.unwrap();
    assert_eq!(report.state, "succeeded", "{report:?}");
    assert!(report.log_tail.contains("pulled and ran"));
    assert!(image_present(pushed.reference()).await);
    s.wait_for(WITHIN, |k| match k {
        worker_message::Kind::Credit(c)
            if c.cached_images.iter().any(|i| i == pushed.reference()) =>
        {
            Some(())
        }
        _ => None,
    })
    .await
    .unwrap();

    // Present now: the next run does not pull (it works even without credentials).
    let a = assignment(pushed.reference(), &["true"]);
    let report = run_to_end(&mut s, a).await.unwrap();
    assert_eq!(report.state, "succeeded", "{report:?}");
}

#[tokio::test]
async fn wrong_or_missing_credentials_fail_the_run_as_image_pull_failed() {
    let registry = TestRegistry::start_with_auth(USER, PASSWORD).await.unwrap();
    let mut h = Harness::start().await.unwrap();
    let pushed = registry.push(&h.image, &repo(), "v1").await.unwrap();
    let (_worker, mut s) = h.worker(h.config()).await.unwrap();

    let mut wrong = assignment(pushed.reference(), &["true"]);
    wrong.registry_auth = Some(RegistryAuth {
        server: registry.host(),
        username: USER.into(),
        password: "not-the-password-5e2a".into(),
    });
    let report = run_to_end(&mut s, wrong).await.unwrap();
    assert_eq!(report.state, "failed", "{report:?}");
    assert_eq!(report.reason.as_deref(), Some("image_pull_failed"));
    assert!(
        report.log_tail.contains("cannot pull image"),
        "{}",
        report.log_tail
    );
    assert!(
        !report.log_tail.contains("not-the-password"),
        "no secret in logs"
    );

    let missing = assignment(pushed.reference(), &["true"]);
    let report = run_to_end(&mut s, missing).await.unwrap();
    assert_eq!(report.state, "failed", "{report:?}");
    assert_eq!(report.reason.as_deref(), Some("image_pull_failed"));

    // The right password, but named for another registry: it is not sent to this one.
    let mut elsewhere = assignment(pushed.reference(), &["true"]);
    elsewhere.registry_auth = Some(RegistryAuth {
        server: "registry.example.com".into(),
        username: USER.into(),
        password: PASSWORD.into(),
    });
    let report = run_to_end(&mut s, elsewhere).await.unwrap();
    assert_eq!(report.state, "failed", "{report:?}");
    assert_eq!(report.reason.as_deref(), Some("image_pull_failed"));
    assert!(!report.log_tail.contains(PASSWORD));
    assert!(!image_present(pushed.reference()).await);
}

#[tokio::test]
async fn an_image_the_registry_does_not_have_fails_the_run_as_image_pull_failed() {
    let registry = TestRegistry::start().await.unwrap();
    let mut h = Harness::start().await.unwrap();
    let (_worker, mut s) = h.worker(h.config()).await.unwrap();
    let absent = format!("{}/{}:v1", registry.host(), repo());
    let report = run_to_end(&mut s, assignment(&absent, &["true"]))
        .await
        .unwrap();
    assert_eq!(report.state, "failed", "{report:?}");
    assert_eq!(report.reason.as_deref(), Some("image_pull_failed"));
    assert!(report.log_tail.contains(&absent), "{}", report.log_tail);
}

#[tokio::test]
async fn pulled_images_past_the_cache_bound_are_evicted_least_recently_used_first() {
    let registry = TestRegistry::start().await.unwrap();
    let base = TestImage::busybox().await.unwrap();
    let first = registry.push(&base, &repo(), "v1").await.unwrap();
    let second = registry.push(&base, &repo(), "v1").await.unwrap();
    let mut h = Harness::start_with_image(base).await.unwrap();
    let mut config = h.config();
    config.docker.image_cache_bytes = 1; // any second pulled image pushes the first out
    let (_worker, mut s) = h.worker(config).await.unwrap();

    let report = run_to_end(&mut s, assignment(first.reference(), &["true"]))
        .await
        .unwrap();
    assert_eq!(report.state, "succeeded", "{report:?}");
    assert!(
        image_present(first.reference()).await,
        "in use or newest: kept"
    );

    let report = run_to_end(&mut s, assignment(second.reference(), &["true"]))
        .await
        .unwrap();
    assert_eq!(report.state, "succeeded", "{report:?}");
    assert!(
        !image_present(first.reference()).await,
        "least recently used: evicted"
    );
    assert!(image_present(second.reference()).await);
    // The image the harness built was there before the worker: never evicted.
    assert!(image_present(h.image.reference()).await);
}
