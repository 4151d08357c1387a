//! Fixed-window rate limiting, shared across instances through the cache. When Redis is down the
//! limiter keeps limiting with a per-instance window instead of failing open.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::{Cache, InProcessCache};

#[derive(Debug, Clone)]
pub struct RateLimiter {
    shared: Arc<dyn Cache>,
    local: Arc<InProcessCache>,
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
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::RedisCache;

    #[tokio::test]
    async fn limits_after_the_allowance() {
        let rl = RateLimiter::new(Arc::new(InProcessCache::default()));
        for _ in 0..3 {
            assert_eq!(
                rl.check("login:a", 3, Duration::from_secs(60)).await,
                Decision::Allowed
            );
        }
        assert!(matches!(
            rl.check("login:a", 3, Duration::from_secs(60)).await,
            Decision::Limited { .. }
        ));
        assert_eq!(
            rl.check("login:b", 3, Duration::from_secs(60)).await,
            Decision::Allowed
        );
    }

    #[tokio::test]
    async fn keeps_limiting_when_redis_is_down() {
        let dead: Arc<dyn Cache> = Arc::new(RedisCache::new("redis://127.0.0.1:1", "t:").unwrap());
        let rl = RateLimiter::new(dead);
        assert_eq!(
            rl.check("login:a", 1, Duration::from_secs(60)).await,
            Decision::Allowed
        );
        assert!(matches!(
            rl.check("login:a", 1, Duration::from_secs(60)).await,
            Decision::Limited { .. }
        ));
    }
}
