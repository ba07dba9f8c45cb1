//! Hands each test a fresh, empty, uniquely named Postgres database, or a server of its own to
//! stop and start; never applies migrations or touches other databases.

use std::time::Duration;

use anyhow::{Context as _, bail};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

use crate::{DATABASE_URL_ENV, postgres_server};

/// Set (to anything) to keep test databases after the test, for debugging.
const KEEP_ENV: &str = "KAIROS_TEST_KEEP_DATABASES";
/// How long to keep retrying the admin connection while the server is busy.
const CONNECT_PATIENCE: Duration = Duration::from_secs(20);
/// How long dropping a database may block the dropping thread.
const DROP_TIMEOUT: Duration = Duration::from_secs(10);

/// A fresh, empty database; dropped (best effort) when this value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// Connection URL of this database, as the server's superuser.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name (`kairos_test_<uuid>`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_ENV).is_some() {
            return;
        }
        let admin_url = self.admin_url.clone();
        let sql = format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name);
        // Drop cannot await, and may run inside a runtime that must not be
        // blocked on: use a private runtime on a thread of its own. Failures
        // are ignored, since the server is a throwaway one.
        let dropper = std::thread::Builder::new()
            .name("kairos-testkit-drop-db".to_owned())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    let _ = tokio::time::timeout(DROP_TIMEOUT, async move {
                        let mut conn = PgConnection::connect(&admin_url).await?;
                        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await?;
                        conn.close().await
                    })
                    .await;
                });
            });
        if let Ok(dropper) = dropper {
            let _ = dropper.join();
        }
    }
}

/// Creates a fresh, empty, uniquely named database (no migrations applied).
///
/// With `KAIROS_TEST_DATABASE_URL` set, the database is created on that
/// server; otherwise on a throwaway server started once per test process in
/// a temporary directory and stopped when the process exits.
pub async fn database() -> anyhow::Result<TestDatabase> {
    let admin_url = match std::env::var(DATABASE_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => postgres_server::shared()
            .await
            .context("starting a throwaway Postgres server")?
            .admin_url()
            .to_owned(),
    };
    create_database(admin_url).await
}

/// A Postgres server of one test's own (never the shared one), which the test may stop and
/// start again to check what survives a database restart. Stopped and removed when the test
/// process exits.
#[derive(Debug)]
pub struct TestPostgres {
    server: postgres_server::PgServer,
}

/// Starts a dedicated throwaway Postgres server on a free loopback port.
pub async fn dedicated_postgres() -> anyhow::Result<TestPostgres> {
    let server = postgres_server::start()
        .await
        .context("starting a dedicated Postgres server")?;
    Ok(TestPostgres { server })
}

impl TestPostgres {
    /// URL of the server's `postgres` database as the superuser.
    pub fn admin_url(&self) -> &str {
        self.server.admin_url()
    }

    /// A fresh, empty database on this server.
    pub async fn database(&self) -> anyhow::Result<TestDatabase> {
        create_database(self.admin_url().to_owned()).await
    }

    /// Stops the server (fast shutdown: open sessions end), keeping its port and data.
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.server.stop().await
    }

    /// Starts the stopped server again on the same port and data.
    pub async fn start(&self) -> anyhow::Result<()> {
        self.server.start().await
    }
}

async fn create_database(admin_url: String) -> anyhow::Result<TestDatabase> {
    let name = format!("kairos_test_{}", uuid::Uuid::new_v4().simple());
    let url = with_database(&admin_url, &name)?;

    let mut conn = connect_patiently(&admin_url).await?;
    // template0 is never connected to, so concurrent creations never fail
    // with "source database is being accessed by other users".
    let sql = format!(r#"CREATE DATABASE "{name}" TEMPLATE template0 ENCODING 'UTF8'"#);
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .with_context(|| format!("creating database {name}"))?;
    // Closing is a courtesy to the server; the database already exists.
    let _ = conn.close().await;

    Ok(TestDatabase {
        url,
        admin_url,
        name,
    })
}

/// Opens an admin connection, retrying while the server is starting or full.
async fn connect_patiently(admin_url: &str) -> anyhow::Result<PgConnection> {
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    loop {
        match PgConnection::connect(admin_url).await {
            Ok(conn) => return Ok(conn),
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("connecting to Postgres at {}", redact(admin_url)));
            }
        }
    }
}

/// Replaces the database name in a `postgres://` URL, keeping any query string.
fn with_database(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let Some(scheme_end) = base.find("://") else {
        bail!(
            "{DATABASE_URL_ENV} is not a postgres:// URL: {}",
            redact(admin_url)
        );
    };
    let authority_start = scheme_end + "://".len();
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |slash| authority_start + slash);
    let mut url = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or(userinfo);
            format!(
                "{}{user}:***@{host}{}",
                &url[..scheme_end + 3],
                &rest[authority.len()..]
            )
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_and_keeps_the_query() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "db").unwrap(),
            "postgres://postgres@127.0.0.1:5432/db"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1/postgres?sslmode=disable", "db").unwrap(),
            "postgres://u:p@h:1/db?sslmode=disable"
        );
        assert_eq!(
            with_database("postgresql://h", "db").unwrap(),
            "postgresql://h/db"
        );
        assert!(with_database("not a url", "db").is_err());
    }

    #[test]
    fn hides_the_password_in_messages() {
        assert_eq!(
            redact("postgres://u:secret@h:1/db"),
            "postgres://u:***@h:1/db"
        );
        assert_eq!(redact("postgres://u@h:1/db"), "postgres://u@h:1/db");
        assert_eq!(redact("postgres://h:1/db"), "postgres://h:1/db");
    }
}
