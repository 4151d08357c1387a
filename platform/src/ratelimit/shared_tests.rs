//! Failure limits across instances: two limiters on one shared cache (in-process, and real
//! Redis when `TEST_REDIS_URL` is set), each with its failure watch running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::cache::RedisCache;

/// Short windows, so that the watches trust their subscriptions within the test.
const LIMITS: LoginLimits = LoginLimits {
    per_pair: 3,
    per_address: 100,
    per_account: u64::MAX,
    window: Duration::from_millis(300),
    free_failures: u64::MAX,
    first_delay: Duration::ZERO,
    max_delay: Duration::ZERO,
};

/// A shared cache as two instances see it: its name and each instance's connection.
type Shared = (&'static str, Arc<dyn Cache>, Arc<dyn Cache>);

/// The shared caches to test on: in-process, and Redis under a fresh prefix when configured.
fn caches() -> Vec<Shared> {
    let shared: Arc<dyn Cache> = Arc::new(InProcessCache::default());
    let mut out = vec![("in-process", shared.clone(), shared)];
    match std::env::var("TEST_REDIS_URL") {
        Ok(url) => {
            let prefix = format!("t-rl-{}:", crate::crypto::random_id("p"));
            // Two connections, as two servers have.
            let a: Arc<dyn Cache> = Arc::new(RedisCache::new(&url, &prefix).unwrap());
            let b: Arc<dyn Cache> = Arc::new(RedisCache::new(&url, &prefix).unwrap());
            out.push(("redis", a, b));
        }
        Err(_) => assert!(
            std::env::var("CONSENT_REQUIRE_SERVICES").is_err(),
            "CONSENT_REQUIRE_SERVICES=1 but TEST_REDIS_URL is not set"
        ),
    }
    out
}

/// Waits until `rl`'s watch trusts its subscription for `window` (at most five seconds).
async fn trusted(rl: &RateLimiter, window: Duration) {
    let started = Instant::now();
    while !rl.watch.may_skip(
        &[],
        window,
        Instant::now(),
        rl.shared.subscribed_at(watch::CHANNEL),
    ) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the watch never trusted its subscription"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A count made behind the limiter's back (no announcement), as a lost message leaves it.
async fn unannounced_failures(cache: &Arc<dyn Cache>, attempt: &LoginAttempt, n: u64) {
    for _ in 0..n {
        cache
            .incr_window(&attempt.pair, LIMITS.window)
            .await
            .unwrap();
    }
}

fn limited(d: Decision) -> bool {
    matches!(d, Decision::Limited { .. })
}

/// Asks until `rl` limits `attempt`; fails with `why` if that takes longer than `within`.
async fn limited_within(rl: &RateLimiter, attempt: &LoginAttempt, within: Duration, why: &str) {
    let started = Instant::now();
    while !limited(rl.login_allowed(&LIMITS, attempt).await) {
        assert!(started.elapsed() < within, "{why}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_on_one_instance_block_on_another_at_once() {
    for (kind, a_cache, b_cache) in caches() {
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let (a, b) = (RateLimiter::new(a_cache), RateLimiter::new(b_cache.clone()));
        let tasks = [
            a.spawn_failure_watch(shutdown.clone()),
            b.spawn_failure_watch(shutdown),
        ];
        trusted(&b, LIMITS.window).await;
        // Trusted, `b` does not read counters nobody announced: that read is what it saves.
        let quiet = LoginAttempt::new("client", "c_quiet", "203.0.113.1");
        unannounced_failures(&b_cache, &quiet, 10).await;
        assert!(!limited(b.login_allowed(&LIMITS, &quiet).await), "{kind}");

        let attempt = LoginAttempt::new("client", "c_1", "203.0.113.9");
        for _ in 0..LIMITS.per_pair {
            assert!(!limited(a.login_allowed(&LIMITS, &attempt).await), "{kind}");
            a.login_failed(&LIMITS, &attempt).await;
        }
        assert!(limited(a.login_allowed(&LIMITS, &attempt).await), "{kind}");
        // `b` learns of the failures from their announcements: within milliseconds.
        let why = format!("{kind}: another instance's failures did not block here");
        limited_within(&b, &attempt, Duration::from_millis(200), &why).await;
        // Another address for the same client id is not blocked.
        let other = LoginAttempt::new("client", "c_1", "198.51.100.7");
        assert!(!limited(b.login_allowed(&LIMITS, &other).await), "{kind}");
        stop.send(true).unwrap();
        for t in tasks {
            t.await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_trusted_every_check_reads_the_shared_counters() {
    for (kind, _, cache) in caches() {
        let rl = RateLimiter::new(cache.clone());
        let attempt = LoginAttempt::new("client", "c_2", "203.0.113.9");
        unannounced_failures(&cache, &attempt, LIMITS.per_pair).await;
        // No watch running.
        assert!(limited(rl.login_allowed(&LIMITS, &attempt).await), "{kind}");
        // A watch that has not listened for a whole window yet.
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let task = rl.spawn_failure_watch(shutdown);
        let long = LoginLimits {
            window: Duration::from_secs(60),
            ..LIMITS
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(limited(rl.login_allowed(&long, &attempt).await), "{kind}");
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}

#[tokio::test]
async fn lost_announcements_make_every_check_read() {
    // In-process delivery on one thread: the watch cannot run while the flood is published,
    // so its receiver overflows for certain.
    let cache: Arc<dyn Cache> = Arc::new(InProcessCache::default());
    let rl = RateLimiter::new(cache.clone());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = rl.spawn_failure_watch(shutdown);
    trusted(&rl, LIMITS.window).await;
    let attempt = LoginAttempt::new("client", "c_3", "203.0.113.9");
    unannounced_failures(&cache, &attempt, LIMITS.per_pair).await;
    assert!(!limited(rl.login_allowed(&LIMITS, &attempt).await));
    // More announcements than the receiver holds, published without yielding to it.
    for i in 0..3_000 {
        let message = watch::announcement(&format!("flood-{i}"), LIMITS.window);
        cache.publish(watch::CHANNEL, &message).await.unwrap();
    }
    let why = "a lagged watch still skipped the shared counters";
    limited_within(&rl, &attempt, Duration::from_secs(1), why).await;
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// Passwords: limits without delays, over a minute.
const PASSWORDS: LoginLimits = LoginLimits {
    per_pair: 5,
    per_address: 100,
    per_account: 8,
    window: Duration::from_secs(60),
    free_failures: u64::MAX,
    first_delay: Duration::ZERO,
    max_delay: Duration::ZERO,
};

/// Attempts admitted by `login_begin` are counted before they are checked: thirty at once,
/// split over two instances, admit exactly the pair's allowance (checked one at a time with
/// `login_allowed`, all thirty would have passed), and the refused ones give their counts back,
/// so a blocked address cannot push the account under attack. An account under attack from
/// elsewhere gives a new address one attempt.
#[tokio::test]
async fn attempts_at_once_are_admitted_up_to_the_allowance() {
    for (name, a, b) in caches() {
        let (ra, rb) = (RateLimiter::new(a.clone()), RateLimiter::new(b));
        let attempt = LoginAttempt::new("customer", "alice", "203.0.113.9");
        let tries = (0..30).map(|n| {
            let rl = if n % 2 == 0 { &ra } else { &rb };
            rl.login_begin(&PASSWORDS, &attempt)
        });
        let results = futures_util::future::join_all(tries).await;
        let admitted: Vec<LoginTicket> = results.into_iter().filter_map(Result::ok).collect();
        assert_eq!(admitted.len(), 5, "{name}");
        admitted.into_iter().for_each(LoginTicket::failed);
        let keys = [&*attempt.pair, &*attempt.account];
        assert_eq!(a.counts(&keys).await.unwrap(), [5, 5], "{name}");
        for _ in 0..20 {
            assert!(
                rb.login_begin(&PASSWORDS, &attempt).await.is_err(),
                "{name}"
            );
        }
        assert_eq!(
            a.counts(&keys).await.unwrap(),
            [5, 5],
            "{name}: refusals counted"
        );
        // Three failures from a second address put the account (8 a minute) under attack.
        let second = LoginAttempt::new("customer", "alice", "198.51.100.7");
        for _ in 0..3 {
            ra.login_begin(&PASSWORDS, &second).await.unwrap().failed();
        }
        let third = LoginAttempt::new("customer", "alice", "192.0.2.44");
        rb.login_begin(&PASSWORDS, &third).await.unwrap().failed();
        assert!(ra.login_begin(&PASSWORDS, &third).await.is_err(), "{name}");
    }
}

/// A right password gives its count back: the owner logs in any number of times, and the
/// counters are where they were. A give-back never reaches into another window: one whose
/// window has ended brings no counter back, and does not take from the window after it.
#[tokio::test]
async fn a_right_password_uses_nothing_up() {
    for (name, a, b) in caches() {
        let (ra, rb) = (RateLimiter::new(a.clone()), RateLimiter::new(b));
        let attempt = LoginAttempt::new("customer", "bob", "198.51.100.7");
        ra.login_begin(&PASSWORDS, &attempt).await.unwrap().failed();
        for n in 0..20 {
            let rl = if n % 2 == 0 { &ra } else { &rb };
            let ticket = rl.login_begin(&PASSWORDS, &attempt).await.unwrap();
            if n % 4 == 3 {
                rl.login_unchecked(ticket).await;
            } else {
                rl.login_succeeded(ticket).await;
            }
        }
        let keys = [&*attempt.pair, &*attempt.address, &*attempt.account];
        assert_eq!(a.counts(&keys).await.unwrap(), [1, 1, 1], "{name}");

        let brief = LoginLimits {
            window: Duration::from_millis(600),
            ..PASSWORDS
        };
        let late = LoginAttempt::new("customer", "carol", "198.51.100.8");
        let first = ra.login_begin(&brief, &late).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        let second = ra.login_begin(&brief, &late).await.unwrap();
        second.failed();
        ra.login_succeeded(first).await;
        assert_eq!(
            a.counts(&[&late.pair]).await.unwrap(),
            [1],
            "{name}: later window"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        let ticket = ra.login_begin(&brief, &late).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        ra.login_succeeded(ticket).await;
        assert!(!a.has_flag(&late.pair).await.unwrap(), "{name}: recreated");
    }
}

/// Failures an instance counted in-process while the shared cache was down add to the shared
/// counts once it is back: five of five refuse the next attempt; four of five let one through,
/// and its failure then fills the pair.
#[tokio::test]
async fn failures_counted_during_an_outage_add_to_the_shared_counts() {
    for (name, a, _) in caches() {
        let rl = RateLimiter::new(a);
        let (full, one_left) = (
            LoginAttempt::new("customer", "alice", "203.0.113.9"),
            LoginAttempt::new("customer", "bob", "203.0.113.9"),
        );
        for _ in 0..5 {
            rl.local
                .incr_window(&full.pair, PASSWORDS.window)
                .await
                .unwrap();
        }
        for _ in 0..4 {
            rl.local
                .incr_window(&one_left.pair, PASSWORDS.window)
                .await
                .unwrap();
        }
        assert!(rl.login_begin(&PASSWORDS, &full).await.is_err(), "{name}");
        rl.login_begin(&PASSWORDS, &one_left)
            .await
            .unwrap()
            .failed();
        assert!(
            rl.login_begin(&PASSWORDS, &one_left).await.is_err(),
            "{name}"
        );
    }
}

/// A Redis that answers with an error (here: a counter's key holding a list) is reachable, so
/// its counts stand: the attempt is refused, not admitted on this instance's own counts.
#[tokio::test]
async fn a_cache_that_answers_an_error_refuses_the_attempt() {
    let Ok(url) = std::env::var("TEST_REDIS_URL") else {
        return; // `caches()` fails the other tests when CI requires Redis
    };
    let prefix = format!("t-rl-{}:", crate::crypto::random_id("p"));
    let rl = RateLimiter::new(Arc::new(RedisCache::new(&url, &prefix).unwrap()));
    let attempt = LoginAttempt::new("customer", "dave", "203.0.113.9");
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("LPUSH")
        .arg(format!("{prefix}{}", attempt.pair))
        .arg("not a counter")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    let refused = rl.login_begin(&PASSWORDS, &attempt).await.is_err();
    let local = rl.local.counts(&[&attempt.pair]).await.unwrap();
    redis::cmd("DEL")
        .arg(format!("{prefix}{}", attempt.pair))
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    assert!(refused);
    assert_eq!(local, [0]);
}
