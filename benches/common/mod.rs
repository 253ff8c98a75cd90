//! Shared by the benchmarks: a throw-away PostgreSQL database, created on the
//! server of `TEST_POSTGRES_URL` (default: the local one) and dropped again.

use sqlx::Connection;

pub struct ScratchPostgres {
    pub url: String,
    server: String,
    name: String,
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(future)
}

impl ScratchPostgres {
    /// `None` (with a notice) when PostgreSQL cannot be reached.
    pub fn create(prefix: &str) -> Option<ScratchPostgres> {
        let url = std::env::var("TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let server = url
            .rsplit_once('/')
            .map(|(s, _)| s.to_owned())
            .unwrap_or(url);
        let name = format!("bouncer_bench_{prefix}_{}", std::process::id());
        let created = block_on(async {
            let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
                .await
                .ok()?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut admin)
                .await
                .ok()
        });
        if created.is_none() {
            eprintln!("PostgreSQL not reachable: skipping its half");
            return None;
        }
        Some(ScratchPostgres {
            url: format!("{server}/{name}"),
            server,
            name,
        })
    }
}

impl Drop for ScratchPostgres {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        block_on(async move {
            if let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{server}/postgres")).await
            {
                let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                    .execute(&mut admin)
                    .await;
            }
        });
    }
}
