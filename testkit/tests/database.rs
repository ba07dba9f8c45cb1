//! Checks that `database()` hands out distinct, empty databases that accept connections; never applies migrations.

use sqlx::{Connection as _, PgConnection};

#[tokio::test]
async fn hands_out_two_distinct_databases_that_accept_connections() -> anyhow::Result<()> {
    let first = kairos_testkit::database().await?;
    let second = kairos_testkit::database().await?;
    assert_ne!(first.url(), second.url());
    assert_ne!(first.name(), second.name());

    for db in [&first, &second] {
        let mut conn = PgConnection::connect(db.url()).await?;
        let name: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&mut conn)
            .await?;
        assert_eq!(name, db.name());
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_one(&mut conn)
        .await?;
        assert_eq!(tables, 0, "a fresh database is empty");
        conn.close().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_databases_concurrently() -> anyhow::Result<()> {
    let created = create_concurrently(8).await?;
    let mut names: Vec<&str> = created.iter().map(|db| db.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 8);
    Ok(())
}

#[tokio::test]
async fn drops_the_database_when_the_handle_is_dropped() -> anyhow::Result<()> {
    if std::env::var_os("KAIROS_TEST_KEEP_DATABASES").is_some() {
        return Ok(());
    }
    let keeper = kairos_testkit::database().await?;
    let doomed = kairos_testkit::database().await?;
    let doomed_name = doomed.name().to_owned();
    let mut conn = PgConnection::connect(keeper.url()).await?;
    assert!(database_exists(&mut conn, &doomed_name).await?);
    drop(doomed);
    assert!(!database_exists(&mut conn, &doomed_name).await?);
    Ok(())
}

async fn database_exists(conn: &mut PgConnection, name: &str) -> anyhow::Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(conn)
            .await?,
    )
}

/// Creates `n` databases at once on the runtime's worker threads.
async fn create_concurrently(n: usize) -> anyhow::Result<Vec<kairos_testkit::TestDatabase>> {
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(kairos_testkit::database()))
        .collect();
    let mut created = Vec::with_capacity(n);
    for task in tasks {
        created.push(task.await??);
    }
    Ok(created)
}
