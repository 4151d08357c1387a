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

/// The pool does not ping connections on checkout; a connection PostgreSQL dropped must still be
/// discarded after the one query that found it dead, not handed out again and again.
#[tokio::test]
async fn pooled_connections_dropped_by_postgres_are_replaced() {
    use diesel::prelude::*;
    use platform::storage::{Db, StorageError};
    if !backends().contains(&Backend::Postgres) {
        return;
    }
    let pg = e2e_tests::PgTestDb::create();
    let pool_size = 3;
    let db = Db::connect(&pg.url, pool_size, std::time::Duration::from_secs(5)).unwrap();
    let ping = |db: &Db| {
        let db = db.clone();
        async move {
            db.run(|c| {
                diesel::sql_query("SELECT 1").execute(c)?;
                Ok(())
            })
            .await
        }
    };
    // r2d2 opens every connection up front (min_idle = max_size); use them.
    for _ in 0..pool_size {
        ping(&db).await.unwrap();
    }
    let admin_url = std::env::var("TEST_DATABASE_URL").unwrap();
    let mut admin = diesel::PgConnection::establish(&admin_url).unwrap();
    let killed: Vec<TerminatedRow> = diesel::sql_query(format!(
        "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity WHERE datname = '{}'",
        pg.name
    ))
    .load(&mut admin)
    .unwrap();
    assert!(!killed.is_empty());
    // Each dead connection fails at most once (503-class `Unavailable`), then is replaced.
    let mut failures = 0;
    for _ in 0..(pool_size as usize + 2) {
        match ping(&db).await {
            Ok(()) => {}
            Err(StorageError::Unavailable(_)) => failures += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert!(
        (1..=pool_size as usize).contains(&failures),
        "the dropped connections fail once each, then are replaced: {failures} failures"
    );
    for _ in 0..10 {
        ping(&db).await.expect("recovered connections work");
    }
}

#[derive(diesel::QueryableByName)]
struct TerminatedRow {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    #[allow(dead_code)]
    done: bool,
}
