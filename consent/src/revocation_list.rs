//! The revocation list as an offline verifier keeps it: a local copy of the `revocations` feed,
//! synced by cursor from the database every second and at once when another instance publishes
//! on the revocation channel. Redis only makes propagation faster; the periodic sync from the
//! database is what guarantees it, so a Redis outage never lets a revoked token through. A list
//! that has not synced for `MAX_STALENESS` refuses every token (fails closed).

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use platform::Platform;
use platform::storage::schema::revocations;
use platform::storage::{AnyConnection, StorageResult};
use tokio::sync::watch;

/// How old the last successful sync may be before verification fails closed.
pub const MAX_STALENESS: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct State {
    cursor: i64,
    grants: HashSet<String>,
    token_ids: HashSet<String>,
    synced_at: Option<Instant>,
}

#[derive(Debug, Clone, Default)]
pub struct RevocationList {
    inner: Arc<RwLock<State>>,
}

impl RevocationList {
    /// Pulls every revocation after the cursor; returns how many were new.
    pub fn sync(&self, conn: &mut AnyConnection) -> StorageResult<usize> {
        let mut total = 0;
        loop {
            let cursor = self.inner.read().unwrap_or_else(|p| p.into_inner()).cursor;
            let rows: Vec<(i64, String, Option<String>)> = revocations::table
                .filter(revocations::seq.gt(cursor))
                .order(revocations::seq.asc())
                .limit(10_000)
                .select((
                    revocations::seq,
                    revocations::grant_id,
                    revocations::revocation_id,
                ))
                .load(conn)?;
            let mut state = self.inner.write().unwrap_or_else(|p| p.into_inner());
            for (seq, grant, token) in &rows {
                match token {
                    Some(t) => state.token_ids.insert(t.clone()),
                    None => state.grants.insert(grant.clone()),
                };
                state.cursor = state.cursor.max(*seq);
            }
            total += rows.len();
            if rows.len() < 10_000 {
                state.synced_at = Some(Instant::now());
                return Ok(total);
            }
        }
    }

    /// `Err` when the list is too stale to trust.
    pub fn is_revoked(&self, grant: &str, token_ids: &[String]) -> Result<bool, String> {
        let state = self.inner.read().unwrap_or_else(|p| p.into_inner());
        match state.synced_at {
            Some(t) if t.elapsed() <= MAX_STALENESS => {}
            _ => return Err("the revocation list is not up to date".into()),
        }
        Ok(state.grants.contains(grant) || token_ids.iter().any(|t| state.token_ids.contains(t)))
    }

    /// Syncs every second, and immediately when a revocation is published by any instance.
    pub fn spawn_sync(
        &self,
        platform: Platform,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let list = self.clone();
        let mut published = platform
            .cache
            .subscribe(platform::revocation::REVOCATION_CHANNEL);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    msg = published.recv() => {
                        if let Err(tokio::sync::broadcast::error::RecvError::Closed) = msg {
                            // The subscription ended; keep the periodic sync.
                            published = platform.cache.subscribe(platform::revocation::REVOCATION_CHANNEL);
                        }
                        // A burst of messages needs one sync, not one each.
                        use tokio::sync::broadcast::error::TryRecvError;
                        while let Ok(_) | Err(TryRecvError::Lagged(_)) = published.try_recv() {}
                    }
                    _ = shutdown.changed() => return,
                }
                let l = list.clone();
                match platform.db.run(move |c| l.sync(c)).await {
                    Ok(n) if n > 0 => tracing::debug!(new = n, "revocation list synced"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "revocation list sync failed"),
                }
            }
        })
    }
}
