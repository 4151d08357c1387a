//! The Redis cache: one multiplexed connection with short timeouts and a circuit breaker, Lua
//! scripts where a check and a write must be one step, and a listener for pub/sub.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::*;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
const BREAKER: Duration = Duration::from_secs(1);
/// [`Cache::decr_windows`]: decrements each positive counter that exists with at most ARGV[i]
/// milliseconds left (DECR keeps its expiry); a script, so that the checks and decrements are
/// one step on the server (DECR alone would make a counter of -1, without expiry, of a key that
/// has just expired).
static DECR_LIVE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "for i, key in ipairs(KEYS) do \
           local left = redis.call('PTTL', key) \
           local n = tonumber(redis.call('GET', key) or '0') \
           if left > 0 and left <= tonumber(ARGV[i]) and n and n > 0 then \
             redis.call('DECR', key) \
           end \
         end \
         return 0",
    )
});

/// [`Cache::count_admitted`]: KEYS pair, address[, account]; ARGV window (ms), per pair, per
/// address, per account, then one floor per key. The rule is [`AttemptLimits::refuses`].
/// Returns an empty list when refused (nothing written; not `false`, which RESP3 would not turn
/// into nil), else count and time left (ms) of each key.
static COUNT_ADMITTED: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "local before = {} \
         for i, key in ipairs(KEYS) do \
           local c = tonumber(redis.call('GET', key) or '0') or 0 \
           before[i] = c + (tonumber(ARGV[4 + i]) or 0) \
         end \
         local account = 0 \
         if #KEYS >= 3 then account = before[3] end \
         local pair_limit = tonumber(ARGV[2]) \
         if account >= tonumber(ARGV[4]) then pair_limit = 1 end \
         if before[1] >= pair_limit or before[2] >= tonumber(ARGV[3]) then return {} end \
         local out = {} \
         for i, key in ipairs(KEYS) do \
           redis.call('SET', key, '0', 'NX', 'PX', ARGV[1]) \
           out[2 * i - 1] = redis.call('INCR', key) \
           local left = redis.call('PTTL', key) \
           if left < 0 then \
             redis.call('PEXPIRE', key, ARGV[1]) \
             left = tonumber(ARGV[1]) \
           end \
           out[2 * i] = left \
         end \
         return out",
    )
});

pub struct RedisCache {
    client: redis::Client,
    prefix: String,
    manager: OnceCell<ConnectionManager>,
    /// The connection of background publications ([`Cache::publish_background`]).
    background: OnceCell<ConnectionManager>,
    /// Milliseconds since `epoch` before which no new connection attempt is made.
    breaker_until_ms: AtomicI64,
    epoch: Instant,
    channels: Mutex<HashMap<String, Listener>>,
}

/// One channel's subscription: its receivers, and since when it has been receiving.
struct Listener {
    tx: broadcast::Sender<String>,
    receiving: Arc<Mutex<Option<Instant>>>,
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password: never print it.
        f.debug_struct("RedisCache")
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn unavailable(e: impl fmt::Display) -> CacheError {
    CacheError::Unavailable(e.to_string())
}

impl RedisCache {
    /// Validates the URL; the connection is made on first use (so a server can start while Redis
    /// is down, and serve from the database).
    pub fn new(url: &str, prefix: &str) -> CacheResult<Self> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        Ok(Self {
            client,
            prefix: prefix.to_string(),
            manager: OnceCell::new(),
            background: OnceCell::new(),
            breaker_until_ms: AtomicI64::new(0),
            epoch: Instant::now(),
            channels: Mutex::new(HashMap::new()),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// `f` on a connection and `key` with the deployment prefix, as the trait's boxed future.
    fn keyed<'a, T, F, Fut>(&'a self, key: &str, f: F) -> BoxFuture<'a, CacheResult<T>>
    where
        T: Send + 'a,
        F: FnOnce(ConnectionManager, String) -> Fut + Send + 'a,
        Fut: std::future::Future<Output = redis::RedisResult<T>> + Send + 'a,
    {
        let key = self.key(key);
        Box::pin(async move { self.with_conn(|c| f(c, key)).await })
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// After a failure to reach Redis, calls fail at once until [`BREAKER`] has passed.
    fn open_breaker(&self) {
        self.breaker_until_ms.store(
            self.now_ms() + BREAKER.as_millis() as i64,
            Ordering::Relaxed,
        );
    }

    fn breaker_open(&self) -> bool {
        self.now_ms() < self.breaker_until_ms.load(Ordering::Relaxed)
    }

    /// The connection in `cell`, made on first use; a failure to make it opens the breaker
    /// when `breaks` (a background caller's failures never do).
    async fn conn(
        &self,
        cell: &OnceCell<ConnectionManager>,
        breaks: bool,
    ) -> CacheResult<ConnectionManager> {
        if self.breaker_open() {
            return Err(CacheError::Unavailable(
                "redis connection circuit open".into(),
            ));
        }
        if let Some(m) = cell.get() {
            return Ok(m.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let result = cell
            .get_or_try_init(|| self.client.get_connection_manager_with_config(config))
            .await;
        match result {
            Ok(m) => Ok(m.clone()),
            Err(e) => {
                if breaks {
                    self.open_breaker();
                }
                Err(unavailable(e))
            }
        }
    }

    /// Runs one command with an overall deadline (the manager's own timeouts cover most cases;
    /// this also bounds reconnect loops). A command that cannot reach Redis opens the breaker:
    /// otherwise, while Redis is down, every call would wait for the manager's reconnect attempts
    /// (about half a second each) before failing.
    async fn with_conn<T, F, Fut>(&self, f: F) -> CacheResult<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.with_conn_in(&self.manager, true, f).await
    }

    /// [`RedisCache::with_conn`] on the connection in `cell`; a background call (`breaks`
    /// false) does not open the breaker: a late beat under load must not send the requests'
    /// calls to their fallbacks.
    async fn with_conn_in<T, F, Fut>(
        &self,
        cell: &OnceCell<ConnectionManager>,
        breaks: bool,
        f: F,
    ) -> CacheResult<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn(cell, breaks).await?;
        match tokio::time::timeout(RESPONSE_TIMEOUT * 2, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                // An error Redis answered (a wrong type, say) says nothing about reachability.
                if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
                    if breaks {
                        self.open_breaker();
                    }
                    Err(unavailable(e))
                } else {
                    Err(CacheError::Failed(e.to_string()))
                }
            }
            Err(_) => {
                if breaks {
                    self.open_breaker();
                }
                Err(CacheError::Unavailable("redis command timed out".into()))
            }
        }
    }

    fn spawn_listener(
        &self,
        channel: String,
        tx: broadcast::Sender<String>,
        receiving: Arc<Mutex<Option<Instant>>>,
    ) {
        let client = self.client.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::error!("redis subscription requested outside a tokio runtime");
            return;
        };
        handle.spawn(async move {
            loop {
                if tx.receiver_count() == 0 {
                    return; // every subscriber is gone
                }
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        if let Err(e) = pubsub.subscribe(&channel).await {
                            tracing::warn!(error = %e, "redis subscribe failed");
                        } else {
                            // Confirmed by Redis: what is published from now on is delivered.
                            set_receiving(&receiving, Some(Instant::now()));
                            let mut stream = pubsub.on_message();
                            while let Some(msg) = stream.next().await {
                                if let Ok(payload) = msg.get_payload::<String>() {
                                    let _ = tx.send(payload);
                                }
                            }
                            set_receiving(&receiving, None);
                            tracing::warn!(channel = %channel, "redis subscription lost; reconnecting");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "redis pub/sub connection failed"),
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }
}

impl Cache for RedisCache {
    fn kind(&self) -> &'static str {
        "redis"
    }
    fn ping(&self) -> BoxFuture<'_, CacheResult<()>> {
        Box::pin(async move {
            self.with_conn(
                |mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await },
            )
            .await
            .map(|_| ())
        })
    }
    fn publish<'a>(&'a self, channel: &'a str, message: &'a str) -> BoxFuture<'a, CacheResult<()>> {
        let channel = self.key(channel);
        Box::pin(async move {
            self.with_conn(|mut c| async move { c.publish::<_, _, usize>(channel, message).await })
                .await
                .map(|_| ())
        })
    }
    fn publish_background<'a>(
        &'a self,
        channel: &'a str,
        message: &'a str,
    ) -> BoxFuture<'a, CacheResult<()>> {
        let channel = self.key(channel);
        Box::pin(async move {
            self.with_conn_in(&self.background, false, |mut c| async move {
                c.publish::<_, _, usize>(channel, message).await
            })
            .await
            .map(|_| ())
        })
    }
    fn subscribe(&self, channel: &str) -> broadcast::Receiver<String> {
        let full = self.key(channel);
        let mut guard = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = guard.get(&full).filter(|l| l.tx.receiver_count() > 0) {
            return l.tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(1024);
        let receiving = Arc::new(Mutex::new(None));
        guard.insert(
            full.clone(),
            Listener {
                tx: tx.clone(),
                receiving: receiving.clone(),
            },
        );
        drop(guard);
        self.spawn_listener(full, tx, receiving);
        rx
    }
    fn subscribed_at(&self, channel: &str) -> Option<Instant> {
        let guard = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let listener = guard.get(&self.key(channel))?;
        *listener.receiving.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn set_flag<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, CacheResult<()>> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.keyed(key, move |mut c, key| async move {
            c.set_options::<_, _, ()>(
                key,
                "1",
                redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ms)),
            )
            .await
        })
    }
    fn has_flag<'a>(&'a self, key: &'a str) -> BoxFuture<'a, CacheResult<bool>> {
        self.keyed(
            key,
            |mut c, key| async move { c.exists::<_, bool>(key).await },
        )
    }
    fn counts<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, CacheResult<Vec<u64>>> {
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        Box::pin(async move {
            self.with_conn(|mut c| async move {
                // MGET: one round trip; a single key still answers a list.
                let v: Vec<Option<u64>> = redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
                Ok(v.into_iter().map(Option::unwrap_or_default).collect())
            })
            .await
        })
    }
    fn incr_window<'a>(
        &'a self,
        key: &'a str,
        window: Duration,
    ) -> BoxFuture<'a, CacheResult<u64>> {
        self.keyed(key, move |mut c, key| async move {
            // MULTI: create with expiry if absent, then increment - atomic on the server.
            let (n,): (u64,) = redis::pipe()
                .atomic()
                .add_command(set_absent(&key, "0", window))
                .ignore()
                .incr(&key, 1)
                .query_async(&mut c)
                .await?;
            Ok(n)
        })
    }
    fn incr_windows<'a>(
        &'a self,
        keys: &'a [&'a str],
        window: Duration,
        channel: &'a str,
        messages: &'a [String],
    ) -> BoxFuture<'a, CacheResult<()>> {
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let channel = self.key(channel);
        Box::pin(async move {
            self.with_conn(|mut c| async move {
                // MULTI: the counts and their announcements are executed together or not at
                // all, and no other client's command runs between them.
                let mut pipe = redis::pipe();
                pipe.atomic();
                for key in &keys {
                    pipe.add_command(set_absent(key, "0", window))
                        .ignore()
                        .incr(key, 1)
                        .ignore();
                }
                for message in messages {
                    pipe.publish(&channel, message).ignore();
                }
                pipe.query_async::<()>(&mut c).await
            })
            .await
        })
    }
    fn decr_windows<'a>(
        &'a self,
        keys: &'a [&'a str],
        latest: &'a [Duration],
    ) -> BoxFuture<'a, CacheResult<()>> {
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        Box::pin(async move {
            self.with_conn(|mut c| async move {
                let mut call = DECR_LIVE.prepare_invoke();
                for (key, latest) in keys.iter().zip(latest) {
                    call.key(key)
                        .arg(u64::try_from(latest.as_millis()).unwrap_or(u64::MAX));
                }
                call.invoke_async::<()>(&mut c).await
            })
            .await
        })
    }
    fn count_admitted<'a>(
        &'a self,
        keys: &'a [&'a str],
        window: Duration,
        limits: AttemptLimits,
        floors: &'a [u64],
    ) -> BoxFuture<'a, CacheResult<Option<Vec<Counted>>>> {
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        Box::pin(async move {
            self.with_conn(|mut c| async move {
                let mut call = COUNT_ADMITTED.prepare_invoke();
                call.arg(ms)
                    .arg(limits.per_pair)
                    .arg(limits.per_address)
                    .arg(limits.per_account);
                for (n, key) in keys.iter().enumerate() {
                    call.key(key).arg(floors.get(n).copied().unwrap_or(0));
                }
                let flat: Vec<i64> = call.invoke_async(&mut c).await?;
                Ok((!flat.is_empty()).then(|| {
                    flat.chunks(2)
                        .map(|pair| Counted {
                            count: u64::try_from(pair[0]).unwrap_or(0),
                            left: Duration::from_millis(
                                u64::try_from(pair.get(1).copied().unwrap_or(0)).unwrap_or(0),
                            ),
                        })
                        .collect()
                }))
            })
            .await
        })
    }
    fn put_once<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, CacheResult<bool>> {
        self.keyed(key, move |mut c, key| async move {
            let reply: Option<String> = set_absent(&key, value, ttl).query_async(&mut c).await?;
            Ok(reply.is_some())
        })
    }
    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, CacheResult<Option<String>>> {
        self.keyed(key, |mut c, key| async move {
            c.get_del::<_, Option<String>>(key).await
        })
    }
}

fn set_receiving(receiving: &Mutex<Option<Instant>>, since: Option<Instant>) {
    *receiving.lock().unwrap_or_else(|p| p.into_inner()) = since;
}

/// `SET key value NX PX ttl`: set only if absent, expiring after `ttl` (at least 1 ms).
fn set_absent(key: &str, value: &str, ttl: Duration) -> redis::Cmd {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value).arg("NX").arg("PX").arg(ms);
    cmd
}
