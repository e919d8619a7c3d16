//! Support for tests that need a real PostgreSQL: a fresh database per test, dropped afterwards.
//!
//! The server comes from `LEDGERLINK_TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432/postgres`).
//! Without it the caller skips its PostgreSQL variant with a message, unless `CI=true`, where skipping would
//! hide a gap and [`TestDatabase::create`] panics instead. Every crate's tests use this one fixture.

/// The variable naming the PostgreSQL server tests may create databases on.
pub const PG_URL_ENV: &str = "LEDGERLINK_TEST_POSTGRES_URL";

/// A database made for one test; dropped (with `FORCE`) when this value is dropped, even while a test unwinds.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    /// URL of the new database.
    pub url: String,
}

impl TestDatabase {
    /// Creates `ledgerlink_test_<random>`; `None` (after printing why) when no server is configured outside CI.
    pub async fn create() -> Option<TestDatabase> {
        let Ok(admin_url) = std::env::var(PG_URL_ENV) else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("PostgreSQL must be reachable in CI: set {PG_URL_ENV} (e.g. postgres://postgres@127.0.0.1:5432/postgres)");
            }
            eprintln!("skipped: set {PG_URL_ENV} to run the PostgreSQL variant of this test");
            return None;
        };
        let name = format!("ledgerlink_test_{}", uuid::Uuid::new_v4().simple());
        {
            use sqlx::Connection;
            let mut admin = sqlx::PgConnection::connect(&admin_url)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {PG_URL_ENV}: {e}"));
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut admin).await.unwrap();
            let _ = admin.close().await;
        }
        let mut url = url::Url::parse(&admin_url).unwrap_or_else(|e| panic!("{PG_URL_ENV} is not a URL: {e}"));
        url.set_path(&format!("/{name}"));
        Some(TestDatabase { admin_url, name, url: url.to_string() })
    }
}

impl Drop for TestDatabase {
    /// Runs on its own thread and runtime because `Drop` cannot await and may run inside a runtime.
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                use sqlx::Connection;
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("note: could not drop test database {}", self.name);
        }
    }
}
