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
