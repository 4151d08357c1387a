//! CI guard: when CI promises PostgreSQL and Redis, the suite must really have used them.

use e2e_tests::{Backend, backends, redis_url};

#[test]
fn required_backends_are_under_test() {
    if std::env::var("CONSENT_REQUIRE_SERVICES").as_deref() != Ok("1") {
        eprintln!("CONSENT_REQUIRE_SERVICES not set: PostgreSQL/Redis runs are optional here");
        return;
    }
    assert!(
        backends().contains(&Backend::Postgres),
        "CONSENT_REQUIRE_SERVICES=1 but TEST_DATABASE_URL is not set: the PostgreSQL suite would not run"
    );
    assert!(
        redis_url().is_some(),
        "CONSENT_REQUIRE_SERVICES=1 but TEST_REDIS_URL is not set"
    );
}

#[tokio::test]
async fn redis_is_reachable_when_configured() {
    let Some(url) = redis_url() else { return };
    let cache = platform::cache::build(Some(&url), "test:reach:").unwrap();
    cache
        .ping()
        .await
        .unwrap_or_else(|e| panic!("TEST_REDIS_URL is set but Redis does not answer: {e}"));
}

/// The pool pings only connections idle for 5 s; a busy connection PostgreSQL dropped must still
/// be discarded after the one query that found it dead, and idle ones replaced before use.
#[tokio::test]
async fn pooled_connections_dropped_by_postgres_are_replaced() {
    use diesel::prelude::*;
    use platform::storage::{Db, StorageError};
    if !backends().contains(&Backend::Postgres) {
        return;
    }
    let pg = e2e_tests::PgTestDb::create();
    let pool_size = 3u32;
    let db = Db::connect(&pg.url, pool_size, std::time::Duration::from_secs(5)).unwrap();
    // `pool_size` queries at once, each holding its connection a moment, so every pooled
    // connection is used; returns how many failed because their connection was gone.
    let round = |db: &Db| {
        let db = db.clone();
        async move {
            let tasks: Vec<_> = (0..pool_size)
                .map(|_| {
                    let db = db.clone();
                    tokio::spawn(async move {
                        db.run(|c| {
                            diesel::sql_query("SELECT 1").execute(c)?;
                            std::thread::sleep(std::time::Duration::from_millis(100));
                            Ok(())
                        })
                        .await
                    })
                })
                .collect();
            let mut failed = 0;
            for t in tasks {
                match t.await.unwrap() {
                    Ok(()) => {}
                    Err(StorageError::Unavailable(_)) => failed += 1,
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            failed
        }
    };
    let kill = || {
        let admin_url = std::env::var("TEST_DATABASE_URL").unwrap();
        let mut admin = diesel::PgConnection::establish(&admin_url).unwrap();
        let killed: Vec<TerminatedRow> = diesel::sql_query(format!(
            "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity WHERE datname = '{}'",
            pg.name
        ))
        .load(&mut admin)
        .unwrap();
        assert_eq!(
            killed.len(),
            pool_size as usize,
            "every pooled connection was open"
        );
    };
    assert_eq!(round(&db).await, 0);
    // Busy connections (used within 5 s) are not pinged: each dead one fails its query once, is
    // discarded, and the next round runs on fresh connections.
    kill();
    assert!(
        round(&db).await >= 1,
        "dead busy connections are not pinged"
    );
    for _ in 0..pool_size {
        assert_eq!(round(&db).await, 0, "every dead connection was replaced");
    }
    // Idle connections are pinged before use: nobody sees the dead ones.
    kill();
    tokio::time::sleep(std::time::Duration::from_millis(5_500)).await;
    assert_eq!(
        round(&db).await,
        0,
        "idle dead connections are replaced before use"
    );
}

#[derive(diesel::QueryableByName)]
struct TerminatedRow {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    #[allow(dead_code)]
    done: bool,
}
