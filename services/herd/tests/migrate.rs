//! Many pods starting together (a rollout, the migration Job beside them) each run `herd migrate`:
//! every migration must be applied once and the configured tenants seeded once. Needs the
//! PostgreSQL of `make test` (DATABASE_URL).

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test]
async fn six_processes_migrating_one_database_at_once_apply_each_migration_once() {
    let db = herd_e2e::fresh_database().await;
    let children: Vec<_> = (0..6)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_herd"))
                .arg("migrate")
                .current_dir(root())
                .env("HERD_CONFIG", "deploy/local/herd.toml")
                .env("HERD__DATABASE_URL", &db)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("herd migrate starts")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("ends");
        assert!(out.status.success(), "a concurrent migrate failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let files = std::fs::read_dir(root().join("migrations"))
        .expect("migrations")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql")))
        .count() as i64;
    let pool = sqlx::PgPool::connect(&db).await.expect("connect");
    let (applied, distinct, ok): (i64, i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT version), count(*) FILTER (WHERE success) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await
            .expect("migrations table");
    assert_eq!((applied, distinct, ok), (files, files, files));
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants WHERE name = 'demo'").fetch_one(&pool).await.expect("tenants");
    let channels: i64 = sqlx::query_scalar("SELECT count(*) FROM channels").fetch_one(&pool).await.expect("channels");
    assert_eq!((tenants, channels), (1, 2));
    pool.close().await;
}
