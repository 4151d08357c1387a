//! The revocation list as an offline verifier keeps it: a local copy of the `revocations` feed,
//! synced by cursor from the database every `server.revocation_sync_interval` (1 s by default)
//! and at once when an instance announces a revocation (this one through a local wake-up,
//! others on the Redis revocation channel). Redis only makes propagation faster; the periodic sync from the
//! database is what guarantees it, so a Redis outage never lets a revoked token through. A list
//! that has not synced for `MAX_STALENESS` (or three sync intervals, if longer) refuses every
//! token (fails closed).
//!
//! The cursor is the feed's `position`, handed out in commit order by
//! [`platform::revocation::link_feed`] (which this loop also runs each second, so a row whose
//! writer crashed before linking it is linked by some instance): the list never skips a
//! committed row. It stays bounded: an entry is dropped once the tokens it names have expired
//! (plus [`platform::revocation::RETENTION_MARGIN`]), when it can refuse nothing any more. Token
//! revocation ids are kept as their first 128 bits (a coincidence on 128 random bits between a
//! live token and a revoked one is negligible, and would only refuse the live one).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use platform::Platform;
use platform::storage::{AnyConnection, StorageResult};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// How old the last successful sync may be before verification fails closed.
pub const MAX_STALENESS: Duration = Duration::from_secs(10);

/// Rows read per query while syncing.
const PAGE: i64 = 10_000;

#[derive(Debug, Default)]
struct State {
    cursor: i64,
    /// Ended grants, with when their last token expires (Unix seconds).
    grants: HashMap<Box<str>, i64>,
    /// Revoked tokens by the first 128 bits of their revocation id, with their expiry.
    token_ids: HashMap<u128, i64>,
    synced_at: Option<Instant>,
    /// `MAX_STALENESS` unless the periodic sync is slower (see `spawn_sync`).
    max_staleness: Option<Duration>,
}

/// How many entries the list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListSize {
    pub grants: usize,
    pub tokens: usize,
}

#[derive(Debug, Clone, Default)]
pub struct RevocationList {
    inner: Arc<RwLock<State>>,
}

/// The key a token revocation id (hex of a 64-byte signature) is kept under.
fn token_key(revocation_id: &str) -> u128 {
    revocation_id
        .get(..32)
        .and_then(|h| u128::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| {
            // Not the hex we write; still keep it exactly enough.
            let d = Sha256::digest(revocation_id.as_bytes());
            let mut b = [0u8; 16];
            b.copy_from_slice(&d[..16]);
            u128::from_be_bytes(b)
        })
}

impl RevocationList {
    /// Pulls every feed entry after the cursor; returns how many were new.
    pub fn sync(&self, conn: &mut AnyConnection) -> StorageResult<usize> {
        let mut total = 0;
        loop {
            let cursor = self.inner.read().unwrap_or_else(|p| p.into_inner()).cursor;
            let rows = platform::revocation::read_feed(conn, cursor, PAGE)?;
            let mut state = self.inner.write().unwrap_or_else(|p| p.into_inner());
            for row in &rows {
                let expires = row.expires_at.and_utc().timestamp();
                match &row.revocation_id {
                    Some(t) => keep_latest(&mut state.token_ids, token_key(t), expires),
                    None => keep_latest(&mut state.grants, row.grant_id.as_str().into(), expires),
                }
                state.cursor = state.cursor.max(row.position);
            }
            total += rows.len();
            if (rows.len() as i64) < PAGE {
                state.synced_at = Some(Instant::now());
                return Ok(total);
            }
        }
    }

    /// Drops entries whose tokens all expired before `now - RETENTION_MARGIN`; returns how many.
    pub fn prune(&self, now: DateTime<Utc>) -> usize {
        let cutoff = (now - platform::revocation::RETENTION_MARGIN).timestamp();
        let mut state = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let before = state.grants.len() + state.token_ids.len();
        state.grants.retain(|_, exp| *exp >= cutoff);
        state.token_ids.retain(|_, exp| *exp >= cutoff);
        state.grants.shrink_to_fit();
        state.token_ids.shrink_to_fit();
        before - state.grants.len() - state.token_ids.len()
    }

    /// Entries held now.
    pub fn size(&self) -> ListSize {
        let state = self.inner.read().unwrap_or_else(|p| p.into_inner());
        ListSize {
            grants: state.grants.len(),
            tokens: state.token_ids.len(),
        }
    }

    /// `Err` when the list is too stale to trust.
    pub fn is_revoked(&self, grant: &str, token_ids: &[String]) -> Result<bool, String> {
        let state = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let max = state.max_staleness.unwrap_or(MAX_STALENESS);
        match state.synced_at {
            Some(t) if t.elapsed() <= max => {}
            _ => return Err("the revocation list is not up to date".into()),
        }
        Ok(state.grants.contains_key(grant)
            || token_ids
                .iter()
                .any(|t| state.token_ids.contains_key(&token_key(t))))
    }

    /// Syncs every `server.revocation_sync_interval`, and immediately when a revocation is
    /// announced by any instance (or committed by this one); on the periodic syncs, links feed
    /// rows left unlinked; prunes expired entries once a minute.
    pub fn spawn_sync(
        &self,
        platform: Platform,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let list = self.clone();
        let mut published = platform
            .cache
            .subscribe(platform::revocation::REVOCATION_CHANNEL);
        let mut local = platform.revocation_signals.wakeups();
        let every = platform.settings.server.revocation_sync_interval.get();
        {
            let mut state = self.inner.write().unwrap_or_else(|p| p.into_inner());
            state.max_staleness = Some(MAX_STALENESS.max(every * 3));
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut pruned_at = Instant::now();
            loop {
                let periodic = tokio::select! {
                    _ = tick.tick() => true,
                    msg = published.recv() => {
                        if let Err(tokio::sync::broadcast::error::RecvError::Closed) = msg {
                            // The subscription ended; keep the periodic sync.
                            published = platform.cache.subscribe(platform::revocation::REVOCATION_CHANNEL);
                        }
                        // A burst of messages needs one sync, not one each.
                        use tokio::sync::broadcast::error::TryRecvError;
                        while let Ok(_) | Err(TryRecvError::Lagged(_)) = published.try_recv() {}
                        false
                    }
                    // A revocation committed by this process (even with Redis down).
                    _ = local.changed() => false,
                    _ = shutdown.changed() => return,
                };
                let l = list.clone();
                let synced = platform
                    .db
                    .run(move |c| {
                        if periodic {
                            platform::revocation::link_feed_all(c)?;
                        }
                        l.sync(c)
                    })
                    .await;
                match synced {
                    Ok(n) if n > 0 => tracing::debug!(new = n, "revocation list synced"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "revocation list sync failed"),
                }
                if pruned_at.elapsed() >= Duration::from_secs(60) {
                    pruned_at = Instant::now();
                    let dropped = list.prune(platform.now());
                    if dropped > 0 {
                        tracing::debug!(dropped, "revocation list pruned");
                    }
                }
            }
        })
    }
}

fn keep_latest<K: std::hash::Hash + Eq>(map: &mut HashMap<K, i64>, key: K, expires: i64) {
    let e = map.entry(key).or_insert(expires);
    *e = (*e).max(expires);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list_with(grants: &[(&str, i64)], tokens: &[(&str, i64)]) -> RevocationList {
        let list = RevocationList::default();
        {
            let mut s = list.inner.write().unwrap();
            for (g, e) in grants {
                keep_latest(&mut s.grants, (*g).into(), *e);
            }
            for (t, e) in tokens {
                keep_latest(&mut s.token_ids, token_key(t), *e);
            }
            s.synced_at = Some(Instant::now());
        }
        list
    }

    #[test]
    fn token_ids_are_keyed_by_their_first_128_bits() {
        let rid = "ab".repeat(64);
        let other = format!("{}cd", &rid[..126]);
        let list = list_with(&[], &[(&rid, 100)]);
        assert!(list.is_revoked("g_x", std::slice::from_ref(&rid)).unwrap());
        // Same first 128 bits: refused too (never the other way round).
        assert!(list.is_revoked("g_x", &[other]).unwrap());
        assert!(!list.is_revoked("g_x", &["cd".repeat(64)]).unwrap());
        // Odd ids are still matched exactly enough.
        let list = list_with(&[], &[("not-hex", 100)]);
        assert!(list.is_revoked("g_x", &["not-hex".into()]).unwrap());
        assert!(!list.is_revoked("g_x", &["not-hex2".into()]).unwrap());
    }

    #[test]
    fn prune_drops_only_entries_past_expiry_and_margin() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let margin = platform::revocation::RETENTION_MARGIN.num_seconds();
        let old = 1_000_000 - margin - 1;
        let recent = 1_000_000 - margin + 1;
        let rid_old = "01".repeat(64);
        let rid_recent = "02".repeat(64);
        let list = list_with(
            &[("g_old", old), ("g_recent", recent)],
            &[(&rid_old, old), (&rid_recent, recent)],
        );
        assert_eq!(list.prune(now), 2);
        assert_eq!(
            list.size(),
            ListSize {
                grants: 1,
                tokens: 1
            }
        );
        assert!(list.is_revoked("g_recent", &[]).unwrap());
        assert!(list.is_revoked("g_x", &[rid_recent]).unwrap());
        assert!(!list.is_revoked("g_old", &[rid_old]).unwrap());
    }

    #[test]
    fn a_stale_list_fails_closed() {
        let list = RevocationList::default();
        assert!(list.is_revoked("g_1", &[]).is_err());
    }
}
