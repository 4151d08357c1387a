//! Grant lifecycle: grants end on their own when they expire and when an app stops using them.
//!
//! The sweep is set-based and batched: each batch selects up to `BATCH` due grants with one
//! indexed query (on PostgreSQL `FOR UPDATE SKIP LOCKED`, so several instances sweeping at once
//! take disjoint batches; on SQLite the write transaction serializes sweepers) and ends them
//! through `platform::revocation::end_grants` in the same transaction (status, refresh tokens,
//! revocation list, audit). Idempotent: an ended grant is never selected again.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamp};
use platform::Platform;
use platform::audit::Actor;
use platform::revocation::{RevokedBy, end_grants};
use platform::storage::{AnyConnection, StorageResult, write_tx};
use serde::Serialize;

const BATCH: i64 = 1_000;

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub expired: usize,
    pub dormant: usize,
    /// Undecided authorization requests and expired sessions deleted.
    pub purged: usize,
    pub ended_grant_ids: Vec<String>,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = Text)]
    id: String,
}

/// Numbers `?` placeholders as `$1, $2, ...` for PostgreSQL; SQLite takes `?` as is.
fn placeholders(c: &AnyConnection, sql: &str) -> String {
    if !matches!(c, AnyConnection::Postgresql(_)) {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for ch in sql.chars() {
        if ch == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(ch);
        }
    }
    out
}

fn lock_clause(c: &AnyConnection) -> &'static str {
    // Several instances sweeping at once take disjoint batches on PostgreSQL; SQLite's write
    // transaction already serializes them.
    if matches!(c, AnyConnection::Postgresql(_)) {
        " FOR UPDATE OF g SKIP LOCKED"
    } else {
        ""
    }
}

fn expired_batch(c: &mut AnyConnection, now: DateTime<Utc>) -> StorageResult<Vec<String>> {
    let sql = format!(
        "SELECT g.id AS id FROM grants g \
         WHERE g.status IN ('authorized', 'awaiting_authorization') AND g.expires_at <= ? \
         ORDER BY g.expires_at LIMIT ?{}",
        lock_clause(c)
    );
    let rows = diesel::sql_query(placeholders(c, &sql))
        .bind::<Timestamp, _>(now.naive_utc())
        .bind::<BigInt, _>(BATCH)
        .load::<Id>(c)?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// Dormant grants: unused (no token issue, refresh or reported read; `last_used_at`, else the
/// authorization time) for the default period, or for a client's own shorter period.
fn dormant_batch(
    c: &mut AnyConnection,
    now: DateTime<Utc>,
    default: Duration,
) -> StorageResult<Vec<String>> {
    use platform::storage::schema::clients;
    let default_secs = default.num_seconds();
    let sql = format!(
        "SELECT g.id AS id FROM grants g JOIN clients cl ON cl.id = g.client_id \
         WHERE g.status = 'authorized' \
           AND (cl.dormancy_days IS NULL OR cl.dormancy_days * 86400 >= ?) \
           AND COALESCE(g.last_used_at, g.authorized_at, g.created_at) <= ? \
         LIMIT ?{}",
        lock_clause(c)
    );
    let mut ids: Vec<String> = diesel::sql_query(placeholders(c, &sql))
        .bind::<BigInt, _>(default_secs)
        .bind::<Timestamp, _>((now - default).naive_utc())
        .bind::<BigInt, _>(BATCH)
        .load::<Id>(c)?
        .into_iter()
        .map(|r| r.id)
        .collect();
    // Clients with a shorter period of their own (few): one query each, with their cutoff.
    let shorter: Vec<(String, Option<i32>)> = clients::table
        .filter(clients::dormancy_days.is_not_null())
        .select((clients::id, clients::dormancy_days))
        .load(c)?;
    for (client_id, days) in shorter {
        let Some(days) = days.filter(|d| i64::from(*d) * 86_400 < default_secs) else {
            continue;
        };
        if ids.len() as i64 >= BATCH {
            break;
        }
        let sql = format!(
            "SELECT g.id AS id FROM grants g \
             WHERE g.status = 'authorized' AND g.client_id = ? \
               AND COALESCE(g.last_used_at, g.authorized_at, g.created_at) <= ? \
             LIMIT ?{}",
            lock_clause(c)
        );
        let more = diesel::sql_query(placeholders(c, &sql))
            .bind::<Text, _>(&client_id)
            .bind::<Timestamp, _>((now - Duration::days(i64::from(days))).naive_utc())
            .bind::<BigInt, _>(BATCH - ids.len() as i64)
            .load::<Id>(c)?;
        ids.extend(more.into_iter().map(|r| r.id));
    }
    Ok(ids)
}

/// One full lifecycle pass.
pub fn sweep(
    c: &mut AnyConnection,
    now: DateTime<Utc>,
    dormancy: Duration,
) -> StorageResult<SweepReport> {
    let mut report = SweepReport::default();
    for kind in ["expired", "dormant"] {
        loop {
            let ended = write_tx(c, |c| {
                let (ids, by, reason) = if kind == "expired" {
                    (expired_batch(c, now)?, RevokedBy::Expiry, "expired")
                } else {
                    (
                        dormant_batch(c, now, dormancy)?,
                        RevokedBy::Dormancy,
                        "dormant",
                    )
                };
                end_grants(
                    c,
                    &ids,
                    by,
                    reason,
                    &Actor::system("lifecycle-sweeper"),
                    now,
                )
            })?;
            if ended.is_empty() {
                break;
            }
            if kind == "expired" {
                report.expired += ended.len();
            } else {
                report.dormant += ended.len();
            }
            report.ended_grant_ids.extend(ended);
        }
    }
    // Housekeeping: authorization requests nobody decided (they hold no grant) and dead
    // sessions. Decided requests stay as the record of which request produced which grant.
    report.purged = write_tx(c, |c| {
        use platform::storage::schema::authorization_requests as ar;
        let stale = diesel::delete(
            ar::table
                .filter(ar::status.eq("pending"))
                .filter(ar::expires_at.le(now.naive_utc())),
        )
        .execute(c)?;
        Ok(stale + platform::session::purge_expired(c, now)?)
    })?;
    Ok(report)
}

/// Runs `sweep` every `interval` (and once at start) until shutdown; publishes what ended.
pub fn spawn_sweeper(
    platform: Platform,
    interval: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // The first pass runs one interval after start, not at once: a fleet restarting
        // together does not sweep in lockstep, and a pass never races the start-up itself.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            match run_once(&platform).await {
                Ok(r) if r.expired + r.dormant > 0 => {
                    tracing::info!(expired = r.expired, dormant = r.dormant, "lifecycle sweep")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "lifecycle sweep failed; will retry"),
            }
        }
    })
}

/// One pass through the pool, then publication of the ended grants to every instance.
pub async fn run_once(platform: &Platform) -> StorageResult<SweepReport> {
    let now = platform.now();
    let dormancy = platform.settings.lifecycle.dormancy_period.as_chrono();
    let report = platform.db.run(move |c| sweep(c, now, dormancy)).await?;
    crate::publish_revocations(platform, &report.ended_grant_ids).await;
    metrics::counter!("consent_grants_expired_total").increment(report.expired as u64);
    metrics::counter!("consent_grants_dormant_total").increment(report.dormant as u64);
    Ok(report)
}
