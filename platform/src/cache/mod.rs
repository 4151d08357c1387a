//! The cache: Redis in production, an in-process map in embedded mode, behind one small trait.
//!
//! The database is the source of truth. The cache only accelerates (deny-cache), coordinates
//! (pub/sub between instances), counts (rate limits) and holds short-lived single-use values.
//! Every operation returns `Err` when Redis is unreachable; callers must then fall back to the
//! database or refuse, never admit. Redis failures are bounded by short timeouts and a one-second
//! circuit breaker, so an outage costs milliseconds, not a hung request.

use std::fmt;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::broadcast;

mod in_process;
mod redis_cache;

pub use in_process::InProcessCache;
pub use redis_cache::RedisCache;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache unavailable: {0}")]
    Unavailable(String),
    /// Redis answered, with an error (out of memory, a read-only replica, a reply of the wrong
    /// type): it is reachable, so what it holds cannot be replaced by this instance's own view.
    #[error("cache refused the command: {0}")]
    Failed(String),
}

pub type CacheResult<T> = Result<T, CacheError>;

/// A windowed counter after an increment ([`Cache::count_admitted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub count: u64,
    /// Time left in the counter's window.
    pub left: Duration,
}

/// The limits of a login attempt's counters (pair, address and, optionally, account; see
/// `crate::ratelimit::LoginLimits`), for [`Cache::count_admitted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptLimits {
    pub per_pair: u64,
    pub per_address: u64,
    /// `u64::MAX`: no account counter.
    pub per_account: u64,
}

impl AttemptLimits {
    /// Whether an attempt is refused, given what was counted before it on its pair, its address
    /// and (with a per-account limit) its account, in that order: the pair is limited to one
    /// once the account has reached its limit. (The Redis script `COUNT_ADMITTED` is this rule
    /// too.)
    pub fn refuses(&self, before: &[u64]) -> bool {
        let count = |n: usize| before.get(n).copied().unwrap_or(u64::MAX);
        let account = if self.per_account < u64::MAX {
            count(2)
        } else {
            0
        };
        let pair_limit = if account >= self.per_account {
            1
        } else {
            self.per_pair
        };
        count(0) >= pair_limit || count(1) >= self.per_address
    }
}

/// Operations the service needs from Redis. Keys and channels are given without the deployment
/// prefix; implementations add it.
pub trait Cache: Send + Sync + fmt::Debug {
    /// `"redis"` or `"in-process"`.
    fn kind(&self) -> &'static str;
    fn ping(&self) -> BoxFuture<'_, CacheResult<()>>;
    /// Publishes to every instance subscribed to `channel` (this one included).
    fn publish<'a>(&'a self, channel: &'a str, message: &'a str) -> BoxFuture<'a, CacheResult<()>>;
    /// [`Cache::publish`] for a background task: over a connection of its own, so that the
    /// connection requests use is not made on (and driven from) the background task's runtime.
    fn publish_background<'a>(
        &'a self,
        channel: &'a str,
        message: &'a str,
    ) -> BoxFuture<'a, CacheResult<()>> {
        self.publish(channel, message)
    }
    /// Messages published on `channel` from now on. Redis subscriptions reconnect by themselves.
    fn subscribe(&self, channel: &str) -> broadcast::Receiver<String>;
    /// Since when this process's current subscription to `channel` has been receiving: every
    /// message published on it since then reached its receivers (unless a receiver lagged).
    /// `None` while no subscription is receiving (not yet subscribed, or reconnecting: messages
    /// published meanwhile are lost).
    fn subscribed_at(&self, channel: &str) -> Option<Instant>;
    /// Marks `key` for `ttl` (deny-cache entries).
    fn set_flag<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, CacheResult<()>>;
    fn has_flag<'a>(&'a self, key: &'a str) -> BoxFuture<'a, CacheResult<bool>>;
    /// Increments a counter that expires `window` after its first increment; returns the count.
    fn incr_window<'a>(&'a self, key: &'a str, window: Duration)
    -> BoxFuture<'a, CacheResult<u64>>;
    /// [`Cache::incr_window`] on each of `keys`, and each of `messages` (if any) published on
    /// `channel`, in one transaction: no count is made without its announcement, nor announced
    /// without being made, and concurrent callers see each other's counts whole (never one
    /// caller's first key counted and its second not yet).
    fn incr_windows<'a>(
        &'a self,
        keys: &'a [&'a str],
        window: Duration,
        channel: &'a str,
        messages: &'a [String],
    ) -> BoxFuture<'a, CacheResult<()>>;
    /// Takes one back from each of `keys` whose window has at most `latest` (the same position
    /// in its list) left: the window it was counted in, not a later one, which has more left.
    /// Never below zero, never creating a key, expiries unchanged; one transaction.
    fn decr_windows<'a>(
        &'a self,
        keys: &'a [&'a str],
        latest: &'a [Duration],
    ) -> BoxFuture<'a, CacheResult<()>>;
    /// Counts a login attempt on its counters (`keys`: pair, address and, with a per-account
    /// limit, account) if `limits` admit it on what was counted before it (each count plus its
    /// `floors` entry: failures counted elsewhere, such as in-process during an outage).
    /// Reading, deciding and counting are one step, so attempts at once see each other, and a
    /// refused attempt writes nothing. Returns each counter's count and time left, or `None`
    /// when refused.
    fn count_admitted<'a>(
        &'a self,
        keys: &'a [&'a str],
        window: Duration,
        limits: AttemptLimits,
        floors: &'a [u64],
    ) -> BoxFuture<'a, CacheResult<Option<Vec<Counted>>>>;
    /// The current values of [`Cache::incr_window`] counters (0 when absent or expired), in one
    /// round trip.
    fn counts<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, CacheResult<Vec<u64>>>;
    /// Stores `value` under `key` for `ttl` unless the key exists; `true` when stored.
    fn put_once<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, CacheResult<bool>>;
    /// Atomically reads and deletes `key`: of two concurrent takers, one gets the value.
    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, CacheResult<Option<String>>>;
}

/// Builds the configured cache: Redis when a URL is given, else in-process.
pub fn build(url: Option<&str>, prefix: &str) -> CacheResult<std::sync::Arc<dyn Cache>> {
    Ok(match url {
        Some(url) => std::sync::Arc::new(RedisCache::new(url, prefix)?),
        None => std::sync::Arc::new(InProcessCache::default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_process_single_use_values() {
        let c = InProcessCache::default();
        assert!(
            c.put_once("code:1", "v", Duration::from_secs(5))
                .await
                .unwrap()
        );
        assert!(
            !c.put_once("code:1", "w", Duration::from_secs(5))
                .await
                .unwrap()
        );
        assert_eq!(c.take("code:1").await.unwrap().as_deref(), Some("v"));
        assert_eq!(c.take("code:1").await.unwrap(), None, "single use");
        assert!(
            c.put_once("code:2", "v", Duration::from_millis(1))
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(c.take("code:2").await.unwrap(), None, "expired");
    }

    #[tokio::test]
    async fn in_process_counters_flags_and_pubsub() {
        let c = InProcessCache::default();
        for i in 1..=3 {
            assert_eq!(
                c.incr_window("rl", Duration::from_secs(60)).await.unwrap(),
                i
            );
        }
        assert!(!c.has_flag("deny:g1").await.unwrap());
        c.set_flag("deny:g1", Duration::from_secs(60))
            .await
            .unwrap();
        assert!(c.has_flag("deny:g1").await.unwrap());
        let mut rx = c.subscribe("revocations");
        c.publish("revocations", "g_1").await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), "g_1");
    }

    #[tokio::test]
    async fn unreachable_redis_fails_fast_and_closed() {
        // Nothing listens on port 1: every operation must return Err quickly, never "allowed".
        let c = RedisCache::new("redis://127.0.0.1:1", "t:").unwrap();
        let started = Instant::now();
        assert!(c.ping().await.is_err());
        assert!(c.has_flag("deny:g").await.is_err());
        assert!(c.take("code").await.is_err());
        assert!(c.incr_window("rl", Duration::from_secs(1)).await.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(!format!("{c:?}").contains("127.0.0.1"));
    }
}
