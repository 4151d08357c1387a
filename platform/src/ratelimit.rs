//! Fixed-window rate limiting, shared across instances through the cache. When Redis is down the
//! limiter keeps limiting with a per-instance window instead of failing open.

#[cfg(test)]
mod shared_tests;
pub mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::{AttemptLimits, Cache, CacheError, InProcessCache};

#[derive(Debug, Clone)]
pub struct RateLimiter {
    shared: Arc<dyn Cache>,
    local: Arc<InProcessCache>,
    /// Which failure counters may have moved (see [`watch`]); trusted only once
    /// [`RateLimiter::spawn_failure_watch`] has run for a window.
    watch: Arc<watch::FailureWatch>,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Limited { retry_after_secs: u64 },
}

impl RateLimiter {
    pub fn new(shared: Arc<dyn Cache>) -> Self {
        Self {
            shared,
            local: Arc::new(InProcessCache::default()),
            watch: Arc::default(),
        }
    }

    /// Listens to the failure announcements of every instance and publishes this one's beat
    /// (see [`watch`]), until `shutdown`. Without it, every check reads the shared counters.
    pub fn spawn_failure_watch(
        &self,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        use tokio::sync::broadcast::error::RecvError;
        let (shared, watch) = (self.shared.clone(), self.watch.clone());
        let mut heard = shared.subscribe(watch::CHANNEL);
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(watch::BEAT);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut beats = 0u64;
            // Whether the last beat failed to publish: a Redis outage is logged once, not twice
            // a second.
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = beat.tick() => {
                        beats += 1;
                        if beats.is_multiple_of(10) {
                            watch.prune(Instant::now());
                        }
                        let (number, beat) = watch.beat(Instant::now());
                        match shared.publish_background(watch::CHANNEL, &beat).await {
                            Err(e) => {
                                if !failing {
                                    tracing::warn!(error = %e, "failure watch beats not published; reading the shared counters");
                                }
                                failing = true;
                                // Late until a later beat returns; overtaken, not taken as lost.
                                watch.unsent(number);
                            }
                            Ok(()) if failing => {
                                tracing::info!("failure watch beats published again");
                                failing = false;
                            }
                            Ok(()) => {}
                        }
                    }
                    message = heard.recv() => match message {
                        Ok(m) => watch.heard(&m, Instant::now(), shared.subscribed_at(watch::CHANNEL)),
                        Err(RecvError::Lagged(n)) => {
                            tracing::warn!(lost = n, "failure announcements lagged; reading the shared counters");
                            watch.missed();
                        }
                        Err(RecvError::Closed) => {
                            watch.missed();
                            heard = shared.subscribe(watch::CHANNEL);
                        }
                    },
                    _ = shutdown.changed() => return,
                }
            }
        })
    }

    /// Counts one hit on `bucket` (e.g. `"login:203.0.113.9"`), allowing `limit` per `window`.
    pub async fn check(&self, bucket: &str, limit: u64, window: Duration) -> Decision {
        let key = format!("rl:{bucket}");
        let count = match self.shared.incr_window(&key, window).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter falling back to in-process counters");
                self.local
                    .incr_window(&key, window)
                    .await
                    .unwrap_or(u64::MAX)
            }
        };
        if count > limit {
            metrics::counter!("consent_rate_limited_total").increment(1);
            Decision::Limited {
                retry_after_secs: window.as_secs().max(1),
            }
        } else {
            Decision::Allowed
        }
    }
}

/// Limits on password guessing that an attacker cannot turn against the owner. Only failures
/// count (a correct password uses nothing up), per (account, address), per address and per
/// account, within `window`:
/// - an address that failed `per_pair` times for an account may not try it again;
/// - an address that failed `per_address` times (spraying many accounts) may not try any;
/// - an account that failed `per_account` times, from anywhere, is under attack: an address that
///   has failed for it may not try it again, and every other address has one attempt. The owner,
///   at an address that has not failed, still logs in with the right password; a distributed
///   guesser gets one guess per address per window.
///
/// Before the block, failures slow down: after `free_failures` failures of an (account,
/// address) pair, each further attempt is checked only after a delay that doubles from
/// `first_delay` up to `max_delay` (held before the check, whatever its outcome, so that
/// dropping the connection early tells a guesser nothing; a timer, not the worker). A serial guesser's rate falls long before the block; the owner, who rarely
/// fails more than a few times, never waits.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    pub per_pair: u64,
    pub per_address: u64,
    pub per_account: u64,
    pub window: Duration,
    pub free_failures: u64,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl LoginLimits {
    /// Customer, developer and staff logins: failures 6 to 10 of a pair wait 0.1, 0.2, 0.4,
    /// 0.8 and 1.6 s, then the pair is blocked for the window.
    pub const DEFAULT: LoginLimits = LoginLimits {
        per_pair: 10,
        per_address: 50,
        per_account: 10,
        window: Duration::from_secs(300),
        free_failures: 5,
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(1_600),
    };

    /// The limits on an attempt's counters (see [`AttemptLimits::refuses`]).
    fn attempt_limits(&self) -> AttemptLimits {
        AttemptLimits {
            per_pair: self.per_pair,
            per_address: self.per_address,
            per_account: self.per_account,
        }
    }

    /// How long the answer to a pair's `failures`-th failure is held back.
    pub fn delay_after(&self, failures: u64) -> Duration {
        if failures <= self.free_failures {
            return Duration::ZERO;
        }
        let doublings = u32::try_from(failures - self.free_failures - 1)
            .unwrap_or(u32::MAX)
            .min(16);
        self.first_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay)
    }
}

/// An attempt [`RateLimiter::login_begin`] refused: try again after `retry_after_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub retry_after_secs: u64,
}

/// A password check admitted by [`RateLimiter::login_begin`], already counted as a failed
/// attempt: [`RateLimiter::login_succeeded`] takes the count back, [`LoginTicket::failed`] (or
/// dropping it) leaves it.
#[must_use = "an admitted attempt stays counted as a failure unless it is marked succeeded"]
#[derive(Debug)]
pub struct LoginTicket {
    /// The counters counted.
    keys: Vec<String>,
    /// Counted in the shared cache (else in-process).
    shared: bool,
    /// Time left then in each counter's window.
    left: Vec<Duration>,
    counted_at: Instant,
}

impl LoginTicket {
    /// The password was wrong: the count stays.
    pub fn failed(self) {}
}

/// The counters of one login attempt: `scope` names the kind of account (`customer`,
/// `developer`, `staff`, ...).
#[derive(Debug, Clone)]
pub struct LoginAttempt {
    pair: String,
    address: String,
    account: String,
}

impl LoginAttempt {
    /// Keys stay short whatever the caller sends: an account name or address longer than 64
    /// bytes (a login form or a Basic header can carry kilobytes) is keyed by its SHA-256, so a
    /// flood of failures cannot fill the cache with large keys.
    pub fn new(scope: &str, account: &str, address: &str) -> Self {
        let address = crate::web::throttle_unit(address);
        let (account, address) = (bounded(account), bounded(&address));
        Self {
            pair: format!("lf:{scope}:pair:{account}:{address}"),
            address: format!("lf:{scope}:addr:{address}"),
            account: format!("lf:{scope}:acct:{account}"),
        }
    }
}

impl LoginAttempt {
    /// Its counters under `limits`: pair, address and, with a per-account limit, account.
    fn counters(&self, limits: &LoginLimits) -> Vec<&str> {
        let mut keys = vec![&*self.pair, &*self.address];
        if limits.per_account < u64::MAX {
            keys.push(&self.account);
        }
        keys
    }
}

fn bounded(part: &str) -> std::borrow::Cow<'_, str> {
    if part.len() <= 64 {
        part.into()
    } else {
        crate::crypto::PlainToken::from_presented(part)
            .hash()
            .into_string()
            .into()
    }
}

impl RateLimiter {
    /// Counter values (windows of `window`): at least what this instance counted itself while
    /// the cache was unavailable, and what the shared cache holds, read in one round trip unless
    /// the failure watch knows it holds nothing for these keys.
    async fn counts(&self, keys: &[&str], window: Duration) -> Vec<u64> {
        let local = self
            .local
            .counts(keys)
            .await
            .unwrap_or_else(|_| vec![0; keys.len()]);
        let subscribed = self.shared.subscribed_at(watch::CHANNEL);
        if self
            .watch
            .may_skip(keys, window, Instant::now(), subscribed)
        {
            return local;
        }
        match self.shared.counts(keys).await {
            Ok(shared) => shared
                .into_iter()
                .zip(local)
                .map(|(s, l)| s.max(l))
                .collect(),
            Err(_) => local,
        }
    }

    /// Counts one failure on each of `keys` (in one transaction), announced to every instance
    /// (see [`watch`]); in-process while the cache is unavailable.
    async fn bump(&self, keys: &[&str], window: Duration) {
        let now = Instant::now();
        for key in keys {
            self.watch.failed_here(key, window, now);
        }
        let announcements: Vec<String> = keys
            .iter()
            .map(|key| watch::announcement(key, window))
            .collect();
        let counted = self
            .shared
            .incr_windows(keys, window, watch::CHANNEL, &announcements)
            .await;
        if counted.is_err() {
            tracing::warn!("login failure counted in-process only (cache unavailable)");
            let _ = self.local.incr_windows(keys, window, "", &[]).await;
        }
    }

    /// Admits one password check for `attempt`, or refuses it (see [`LoginLimits`]).
    ///
    /// The attempt is decided on what was counted before it, the attempts still being checked
    /// included, and counted if admitted, in one step ([`Cache::count_admitted`]): guesses sent
    /// all at once get no further than guesses sent one after the other, and a refused attempt
    /// writes nothing (an address that is blocked cannot raise anybody's counters). An admitted
    /// attempt keeps its count until [`RateLimiter::login_succeeded`] or
    /// [`RateLimiter::login_unchecked`] gives it back; a wrong password keeps it for good
    /// ([`LoginTicket::failed`]).
    ///
    /// Nothing is announced to the failure watch, whose keys serve client authentication:
    /// passwords read their counters each time (one round trip next to an Argon2 hash).
    /// Client authentication uses [`RateLimiter::login_allowed`] instead: a client secret
    /// cannot be guessed, and counting before the check would cost a shared-cache round trip on
    /// every successful call.
    pub async fn login_begin(
        &self,
        limits: &LoginLimits,
        attempt: &LoginAttempt,
    ) -> Result<LoginTicket, Refused> {
        let keys = attempt.counters(limits);
        let rule = limits.attempt_limits();
        // What this instance counted in-process while the cache was unavailable counts on top.
        let floors = self.local.counts(&keys).await.unwrap_or_default();
        let admitted = match self
            .shared
            .count_admitted(&keys, limits.window, rule, &floors)
            .await
        {
            Ok(admitted) => admitted.map(|counted| (counted, true)),
            // Reachable but erring: its counts stand, and this instance cannot see them.
            Err(e @ CacheError::Failed(_)) => {
                tracing::error!(error = %e, "password attempt refused: the cache answered an error");
                None
            }
            Err(CacheError::Unavailable(_)) => {
                tracing::warn!("password attempt counted in-process only (cache unavailable)");
                let local = self.local.count_admitted(&keys, limits.window, rule, &[]);
                local.await.ok().flatten().map(|counted| (counted, false))
            }
        };
        let Some((counted, shared)) = admitted else {
            metrics::counter!("consent_rate_limited_total").increment(1);
            return Err(Refused {
                retry_after_secs: limits.window.as_secs().max(1),
            });
        };
        // Failures of the pair before this attempt, as the delay schedule counts them.
        let pair = counted.first().map_or(0, |c| c.count.saturating_sub(1));
        let pair = pair.saturating_add(floors.first().copied().unwrap_or(0));
        let ticket = LoginTicket {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            shared,
            left: counted.iter().map(|c| c.left).collect(),
            counted_at: Instant::now(),
        };
        // Served before the password is checked, whatever the outcome (see `login_allowed`).
        let delay = limits.delay_after(pair + 1);
        if !delay.is_zero() {
            metrics::counter!("consent_login_delayed_total").increment(1);
            tokio::time::sleep(delay).await;
        }
        Ok(ticket)
    }

    /// The password of an attempt [`RateLimiter::login_begin`] admitted was right: its count is
    /// given back (a correct password uses nothing up).
    pub async fn login_succeeded(&self, ticket: LoginTicket) {
        self.give_back(ticket).await;
    }

    /// An attempt [`RateLimiter::login_begin`] admitted ended before its password was checked
    /// (the database could not be read, say): it was no guess, and its count is given back.
    pub async fn login_unchecked(&self, ticket: LoginTicket) {
        self.give_back(ticket).await;
    }

    /// Takes `ticket`'s counts back in the windows they were made in: a window that has ended
    /// since took its count with it, and a later one is not touched. In a task of its own, so
    /// that a caller that goes away meanwhile does not leave it half done. Where the cache that
    /// counted cannot be reached, the counts stay: the limit errs towards refusing.
    async fn give_back(&self, ticket: LoginTicket) {
        let cache: Arc<dyn Cache> = if ticket.shared {
            self.shared.clone()
        } else {
            self.local.clone()
        };
        // At most the time left now in each window counted in (its time left was read before
        // `counted_at`; 10 ms for rounding): a later window has about a window more. None where
        // the window has ended, which took the count with it.
        let elapsed = ticket.counted_at.elapsed();
        let latest: Vec<Duration> = ticket
            .left
            .iter()
            .map(|left| {
                left.checked_sub(elapsed)
                    .map_or(Duration::ZERO, |l| l + Duration::from_millis(10))
            })
            .collect();
        let task = tokio::spawn(async move {
            let keys: Vec<&str> = ticket.keys.iter().map(String::as_str).collect();
            if cache.decr_windows(&keys, &latest).await.is_err() {
                tracing::warn!("a password attempt stays counted (cache unavailable)");
            }
        });
        let _ = task.await;
    }

    /// Whether `attempt` may check a secret now (see [`LoginLimits`]), from the failures counted
    /// so far ([`RateLimiter::login_failed`]): attempts running at once are not counted yet, so
    /// this is for secrets that cannot be guessed (client authentication), where it spares the
    /// successful calls any shared-cache round trip. Passwords use [`RateLimiter::login_begin`].
    pub async fn login_allowed(&self, limits: &LoginLimits, attempt: &LoginAttempt) -> Decision {
        // Without a per-account limit (client authentication) the account counter is not read.
        let counts = if limits.per_account < u64::MAX {
            self.counts(
                &[&attempt.pair, &attempt.address, &attempt.account],
                limits.window,
            )
            .await
        } else {
            self.counts(&[&attempt.pair, &attempt.address], limits.window)
                .await
        };
        if limits.attempt_limits().refuses(&counts) {
            metrics::counter!("consent_rate_limited_total").increment(1);
            return Decision::Limited {
                retry_after_secs: limits.window.as_secs().max(1),
            };
        }
        // The delay is served before the password is checked, whatever the outcome: served
        // after a failure only, a guesser would drop the connection and read silence as "wrong".
        let delay = limits.delay_after(counts.first().copied().unwrap_or(0) + 1);
        if !delay.is_zero() {
            metrics::counter!("consent_login_delayed_total").increment(1);
            tokio::time::sleep(delay).await;
        }
        Decision::Allowed
    }

    /// Whether `bucket` has had fewer than `limit` failures ([`RateLimiter::failed`]) in its
    /// current window; asking counts nothing. A hard limit, for checks whose every failure is
    /// a guess by someone who already passed a first factor.
    pub async fn failures_allowed(&self, bucket: &str, limit: u64, window: Duration) -> Decision {
        let key = format!("rl:{bucket}");
        if self
            .counts(&[&key], window)
            .await
            .first()
            .copied()
            .unwrap_or(u64::MAX)
            >= limit
        {
            metrics::counter!("consent_rate_limited_total").increment(1);
            Decision::Limited {
                retry_after_secs: window.as_secs().max(1),
            }
        } else {
            Decision::Allowed
        }
    }

    /// Counts one failure on `bucket` (see [`RateLimiter::failures_allowed`]).
    pub async fn failed(&self, bucket: &str, window: Duration) {
        self.bump(&[&format!("rl:{bucket}")], window).await;
    }

    /// Counts a failed attempt (wrong password or unknown account) for `attempt`.
    pub async fn login_failed(&self, limits: &LoginLimits, attempt: &LoginAttempt) {
        self.bump(&attempt.counters(limits), limits.window).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::RedisCache;

    const MINUTE: Duration = Duration::from_secs(60);

    /// Addresses in one IPv6 /64 are one subscriber's: they share the address's counters (and
    /// their pair counters), as one IPv4 address does.
    #[test]
    fn login_counters_key_an_ipv6_client_by_its_64() {
        let a = LoginAttempt::new("customer", "alice", "2001:db8:1:2::1");
        let b = LoginAttempt::new("customer", "alice", "2001:db8:1:2:ffff::9");
        let elsewhere = LoginAttempt::new("customer", "alice", "2001:db8:1:3::1");
        assert_eq!((&a.address, &a.pair), (&b.address, &b.pair));
        assert_ne!(a.address, elsewhere.address);
        assert_ne!(a.pair, elsewhere.pair);
        assert_eq!(a.account, elsewhere.account);
    }

    #[tokio::test]
    async fn limits_after_the_allowance() {
        let rl = RateLimiter::new(Arc::new(InProcessCache::default()));
        for _ in 0..3 {
            assert_eq!(rl.check("login:a", 3, MINUTE).await, Decision::Allowed);
        }
        assert!(matches!(
            rl.check("login:a", 3, MINUTE).await,
            Decision::Limited { .. }
        ));
        assert_eq!(rl.check("login:b", 3, MINUTE).await, Decision::Allowed);
    }

    #[tokio::test]
    async fn keeps_limiting_when_redis_is_down() {
        let dead: Arc<dyn Cache> = Arc::new(RedisCache::new("redis://127.0.0.1:1", "t:").unwrap());
        let rl = RateLimiter::new(dead);
        assert_eq!(rl.check("login:a", 1, MINUTE).await, Decision::Allowed);
        assert!(matches!(
            rl.check("login:a", 1, MINUTE).await,
            Decision::Limited { .. }
        ));
    }

    /// `failures` attempts are allowed (and each fails), then the next is limited.
    async fn fails_until_limited(
        rl: &RateLimiter,
        limits: &LoginLimits,
        attempt: &LoginAttempt,
        failures: usize,
    ) {
        for _ in 0..failures {
            assert_eq!(rl.login_allowed(limits, attempt).await, Decision::Allowed);
            rl.login_failed(limits, attempt).await;
        }
        assert!(matches!(
            rl.login_allowed(limits, attempt).await,
            Decision::Limited { .. }
        ));
    }

    /// One-minute login limits: `per_pair` per (account, address) pair and `per_account` per
    /// account, with an address limit (100) the tests do not reach.
    fn minute_limits(per_pair: u64, per_account: u64) -> LoginLimits {
        LoginLimits {
            per_pair,
            per_address: 100,
            per_account,
            window: Duration::from_secs(60),
            ..LoginLimits::DEFAULT
        }
    }

    #[tokio::test]
    async fn failed_logins_cannot_lock_the_owner_out() {
        let rl = RateLimiter::new(Arc::new(InProcessCache::default()));
        let limits = minute_limits(3, 3);
        let attacker = LoginAttempt::new("customer", "alice", "203.0.113.9");
        fails_until_limited(&rl, &limits, &attacker, 3).await;
        // The owner, elsewhere, may still try (and a success counts nothing).
        let owner = LoginAttempt::new("customer", "alice", "198.51.100.7");
        assert_eq!(rl.login_allowed(&limits, &owner).await, Decision::Allowed);
        // Under attack, a new address has one attempt: a failure there blocks it.
        let other = LoginAttempt::new("customer", "alice", "192.0.2.44");
        fails_until_limited(&rl, &limits, &other, 1).await;
        // Another account from the attacker's address is not affected.
        let bob = LoginAttempt::new("customer", "bob", "203.0.113.9");
        assert_eq!(rl.login_allowed(&limits, &bob).await, Decision::Allowed);
    }

    /// While Redis is down, failures are counted in-process: client secrets (counted after the
    /// check) and passwords (counted before, given back when right) are still limited.
    #[tokio::test]
    async fn failed_logins_are_counted_when_redis_is_down() {
        let dead: Arc<dyn Cache> = Arc::new(RedisCache::new("redis://127.0.0.1:1", "t:").unwrap());
        let rl = RateLimiter::new(dead);
        let limits = minute_limits(2, 100);
        let client = LoginAttempt::new("client", "c_1", "203.0.113.9");
        fails_until_limited(&rl, &limits, &client, 2).await;
        let customer = LoginAttempt::new("customer", "alice", "203.0.113.9");
        for _ in 0..3 {
            let ticket = rl.login_begin(&limits, &customer).await.unwrap();
            rl.login_succeeded(ticket).await;
        }
        for _ in 0..2 {
            rl.login_begin(&limits, &customer).await.unwrap().failed();
        }
        assert!(rl.login_begin(&limits, &customer).await.is_err());
    }

    /// Failures slow down before they block: none for the first five of a pair, then doubling
    /// delays up to the cap (and no overflow for absurd counts).
    #[test]
    fn failures_are_delayed_progressively() {
        let l = LoginLimits::DEFAULT;
        let delays: Vec<u64> = (1..=12)
            .map(|n| l.delay_after(n).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [0, 0, 0, 0, 0, 100, 200, 400, 800, 1_600, 1_600, 1_600]
        );
        assert_eq!(l.delay_after(u64::MAX), l.max_delay);
    }

    /// The delay is served before the check, from the pair's count: the sixth attempt after five
    /// failures waits, whatever its outcome will be.
    #[tokio::test]
    async fn the_sixth_failure_of_a_pair_waits() {
        let rl = RateLimiter::new(Arc::new(InProcessCache::default()));
        let limits = LoginLimits {
            first_delay: Duration::from_millis(300),
            ..LoginLimits::DEFAULT
        };
        let attempt = LoginAttempt::new("customer", "alice", "203.0.113.9");
        for _ in 0..5 {
            rl.login_failed(&limits, &attempt).await;
        }
        let started = std::time::Instant::now();
        assert_eq!(rl.login_allowed(&limits, &attempt).await, Decision::Allowed);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn long_account_names_make_short_distinct_keys() {
        let a = LoginAttempt::new("customer", &"a".repeat(100_000), "203.0.113.9");
        let b = LoginAttempt::new("customer", &"b".repeat(100_000), "203.0.113.9");
        assert!(
            a.pair.len() < 200 && a.account.len() < 200,
            "{}",
            a.pair.len()
        );
        assert_ne!(a.account, b.account);
        assert_eq!(a.address, b.address);
        let short = LoginAttempt::new("customer", "alice", "203.0.113.9");
        assert_eq!(short.account, "lf:customer:acct:alice");
    }
}
