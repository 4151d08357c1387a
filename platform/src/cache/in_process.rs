//! The in-process cache (embedded mode, and each instance's fallback counts): one map under a
//! lock, with expiry, and broadcast channels for pub/sub.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::*;

#[derive(Default)]
pub struct InProcessCache {
    entries: Mutex<HashMap<String, (String, Instant)>>,
    /// Expired entries are dropped when the map grows past this (twice what the last sweep
    /// left, at least 10,000), so sweeping costs O(1) per operation amortised instead of a full
    /// scan on every call once many entries are live (DPoP proofs live about a minute each).
    sweep_above: std::sync::atomic::AtomicUsize,
    /// Each channel's sender and when it was made (in-process delivery loses nothing).
    channels: Mutex<HashMap<String, (broadcast::Sender<String>, Instant)>>,
}

impl fmt::Debug for InProcessCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InProcessCache")
    }
}

impl InProcessCache {
    fn with_entries<T>(&self, f: impl FnOnce(&mut HashMap<String, (String, Instant)>) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-operation on a plain map; the
        // map itself is still consistent, so keep serving.
        use std::sync::atomic::Ordering::Relaxed;
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if guard.len() > self.sweep_above.load(Relaxed).max(10_000) {
            let now = Instant::now();
            guard.retain(|_, (_, exp)| *exp > now);
            self.sweep_above
                .store(guard.len().saturating_mul(2), Relaxed);
        }
        f(&mut guard)
    }

    fn sender(&self, channel: &str) -> broadcast::Sender<String> {
        let mut guard = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .entry(channel.to_string())
            .or_insert_with(|| (broadcast::channel(1024).0, Instant::now()))
            .0
            .clone()
    }
}

/// Increments `key`'s window counter in `m` (a new window once the last has ended).
fn incr_in(m: &mut HashMap<String, (String, Instant)>, key: &str, window: Duration) -> Counted {
    let now = Instant::now();
    let entry = m
        .entry(key.to_string())
        .or_insert_with(|| ("0".into(), now + window));
    if entry.1 <= now {
        *entry = ("0".into(), now + window);
    }
    let count = entry.0.parse::<u64>().unwrap_or(0).saturating_add(1);
    entry.0 = count.to_string();
    Counted {
        count,
        left: entry.1.saturating_duration_since(now),
    }
}

fn live(entry: Option<&(String, Instant)>) -> Option<&String> {
    entry
        .filter(|(_, exp)| *exp > Instant::now())
        .map(|(v, _)| v)
}

impl Cache for InProcessCache {
    fn kind(&self) -> &'static str {
        "in-process"
    }
    fn ping(&self) -> BoxFuture<'_, CacheResult<()>> {
        Box::pin(async { Ok(()) })
    }
    fn publish<'a>(&'a self, channel: &'a str, message: &'a str) -> BoxFuture<'a, CacheResult<()>> {
        Box::pin(async move {
            // No receivers is not an error: nobody is listening yet.
            let _ = self.sender(channel).send(message.to_string());
            Ok(())
        })
    }
    fn subscribe(&self, channel: &str) -> broadcast::Receiver<String> {
        self.sender(channel).subscribe()
    }
    fn subscribed_at(&self, channel: &str) -> Option<Instant> {
        let guard = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        guard.get(channel).map(|(_, since)| *since)
    }
    fn set_flag<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, CacheResult<()>> {
        Box::pin(async move {
            self.with_entries(|m| m.insert(key.to_string(), ("1".into(), Instant::now() + ttl)));
            Ok(())
        })
    }
    fn has_flag<'a>(&'a self, key: &'a str) -> BoxFuture<'a, CacheResult<bool>> {
        Box::pin(async move { Ok(self.with_entries(|m| live(m.get(key)).is_some())) })
    }
    fn counts<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, CacheResult<Vec<u64>>> {
        Box::pin(async move {
            Ok(self.with_entries(|m| {
                keys.iter()
                    .map(|k| live(m.get(*k)).and_then(|v| v.parse().ok()).unwrap_or(0))
                    .collect()
            }))
        })
    }
    fn incr_window<'a>(
        &'a self,
        key: &'a str,
        window: Duration,
    ) -> BoxFuture<'a, CacheResult<u64>> {
        Box::pin(async move { Ok(self.with_entries(|m| incr_in(m, key, window).count)) })
    }
    fn incr_windows<'a>(
        &'a self,
        keys: &'a [&'a str],
        window: Duration,
        channel: &'a str,
        messages: &'a [String],
    ) -> BoxFuture<'a, CacheResult<()>> {
        Box::pin(async move {
            // One lock for every key: concurrent callers see each other's counts whole.
            self.with_entries(|m| {
                for key in keys {
                    incr_in(m, key, window);
                }
            });
            if !messages.is_empty() {
                let tx = self.sender(channel);
                for message in messages {
                    let _ = tx.send(message.clone());
                }
            }
            Ok(())
        })
    }
    fn decr_windows<'a>(
        &'a self,
        keys: &'a [&'a str],
        latest: &'a [Duration],
    ) -> BoxFuture<'a, CacheResult<()>> {
        Box::pin(async move {
            self.with_entries(|m| {
                let now = Instant::now();
                for (key, latest) in keys.iter().zip(latest) {
                    let Some(entry) = m.get_mut(*key) else {
                        continue;
                    };
                    if entry.1 > now && entry.1.saturating_duration_since(now) <= *latest {
                        let n = entry.0.parse::<u64>().unwrap_or(0).saturating_sub(1);
                        entry.0 = n.to_string();
                    }
                }
            });
            Ok(())
        })
    }
    fn count_admitted<'a>(
        &'a self,
        keys: &'a [&'a str],
        window: Duration,
        limits: AttemptLimits,
        floors: &'a [u64],
    ) -> BoxFuture<'a, CacheResult<Option<Vec<Counted>>>> {
        Box::pin(async move {
            Ok(self.with_entries(|m| {
                let before: Vec<u64> = keys
                    .iter()
                    .enumerate()
                    .map(|(n, k)| {
                        let count: u64 = live(m.get(*k)).and_then(|v| v.parse().ok()).unwrap_or(0);
                        count.saturating_add(floors.get(n).copied().unwrap_or(0))
                    })
                    .collect();
                if limits.refuses(&before) {
                    return None;
                }
                Some(keys.iter().map(|k| incr_in(m, k, window)).collect())
            }))
        })
    }
    fn put_once<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, CacheResult<bool>> {
        Box::pin(async move {
            Ok(self.with_entries(|m| {
                if live(m.get(key)).is_some() {
                    return false;
                }
                m.insert(key.to_string(), (value.to_string(), Instant::now() + ttl));
                true
            }))
        })
    }
    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, CacheResult<Option<String>>> {
        Box::pin(async move {
            Ok(self.with_entries(|m| {
                m.remove(key)
                    .filter(|(_, exp)| *exp > Instant::now())
                    .map(|(v, _)| v)
            }))
        })
    }
}
