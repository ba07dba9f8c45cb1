//! Runs the `Store` and `SchedulerStore` conformance suites against `SqliteStore` (the same
//! tests `postgres.rs` runs against `PgStore`), plus checks only SQLite can answer (WAL mode,
//! reopening the file, many writers at once without `SQLITE_BUSY`); never shares a file between
//! tests.

use std::sync::Arc;

use chrono::Utc;
use kairos_domain::{ApiKeyId, JobDraft, JobId, RunId, RunState, ShardId, TenantName, Trigger};
use kairos_store::{NewApiKey, NewRun, SchedulerStore, SqliteStore, Store};

/// A fresh, migrated, empty store in its own temporary directory (removed after the test).
async fn sqlite() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let key =
        kairos_store::SecretKey::from_hex(&kairos_store::SecretKey::generate_hex()).expect("key");
    let store = SqliteStore::open(&dir.path().join("kairos.db"))
        .await
        .expect("open")
        .with_secret_key(key);
    store.migrate().await.expect("migrate");
    (store, dir)
}

/// The shared suite (the `conformance` feature is on for this crate's tests, see Cargo.toml).
mod conformance {
    kairos_store::store_conformance_suite!(super::sqlite());
}

/// The `SchedulerStore` suite, on the same fixture.
mod scheduler_conformance {
    kairos_store::scheduler_store_conformance_suite!(super::sqlite());
}

fn key() -> NewApiKey {
    let mut hash = [0u8; 32];
    hash[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    hash[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    NewApiKey {
        id: ApiKeyId::generate(),
        hash,
        prefix: "kai_t".into(),
    }
}

#[tokio::test]
async fn the_file_is_in_wal_mode_and_keeps_everything_across_a_reopen() {
    let (store, dir) = sqlite().await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(
            &sqlx::SqlitePool::connect(&format!(
                "sqlite://{}",
                dir.path().join("kairos.db").display()
            ))
            .await
            .expect("a separate connection"),
        )
        .await
        .expect("journal mode");
    assert_eq!(mode, "wal");
    let key = key();
    let tenant = store
        .create_tenant(&TenantName::parse("t").expect("name"), &key)
        .await
        .expect("tenant");
    let lease = store
        .claim_shard(ShardId::new(3).expect("shard"), 42, "node")
        .await
        .expect("claim");
    store.close().await;
    drop(store);

    let reopened = SqliteStore::open(&dir.path().join("kairos.db"))
        .await
        .expect("reopen");
    reopened
        .migrate()
        .await
        .expect("migrating again is a no-op");
    assert_eq!(
        reopened.tenant_for_key(&key.hash).await.expect("lookup"),
        Some(tenant.id)
    );
    assert_eq!(
        reopened.highest_fence_token().await.expect("token"),
        lease.token()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_writers_all_succeed_without_busy_errors() {
    let (store, _dir) = sqlite().await;
    let store = Arc::new(store);
    let tenant = store
        .create_tenant(&TenantName::parse("t").expect("name"), &key())
        .await
        .expect("tenant")
        .id;
    let spec = JobDraft {
        name: Some("j".into()),
        image: Some("busybox".into()),
        ..JobDraft::default()
    }
    .parse()
    .expect("spec");
    let job = store
        .create_job(tenant, JobId::generate(), &spec)
        .await
        .expect("job")
        .id;
    // 64 writers at once, each also reading: writes queue for the one writer connection.
    let writers = (0..64).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let new = NewRun {
                id: RunId::generate(),
                job_id: job,
                schedule: None,
                shard: ShardId::of(job.as_uuid()),
                trigger: Trigger::Manual,
                attempt: 1,
                retry_of: None,
                fire_time: Utc::now(),
                state: RunState::Queued,
                env: Default::default(),
                overlap: None,
            };
            let (run, _) = store
                .create_run(tenant, &new, Some(&format!("k{}", i % 16)))
                .await?;
            store.get_run(tenant, run.id).await?;
            if i % 4 == 0 {
                // Cancelling twice: the second is a refused precondition, not a lock error.
                let _ = store.cancel_run(tenant, run.id).await;
            }
            Ok::<_, kairos_store::StoreError>(())
        })
    });
    for writer in futures::future::join_all(writers).await {
        writer.expect("join").expect("every writer succeeds");
    }
    let runs = store
        .list_runs(
            tenant,
            &Default::default(),
            kairos_domain::PageRequest {
                size: 100,
                after: None,
            },
        )
        .await
        .expect("list");
    assert_eq!(runs.items.len(), 16, "one run per idempotency key");
}
