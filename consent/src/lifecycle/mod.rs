//! Grant lifecycle: grants end on their own when they expire and when an app stops using them.
//!
//! The sweep is set-based and batched: each batch selects up to `BATCH` due grants with one
//! indexed query (on PostgreSQL `FOR NO KEY UPDATE SKIP LOCKED`, so several instances sweeping at once,
//! and the several connections one pass ends grants on, take disjoint batches; on SQLite the
//! write transaction serializes sweepers) and ends them
//! through `platform::revocation::end_locked_grants` in the same transaction (status, refresh tokens,
//! revocation list, audit). Idempotent: an ended grant is never selected again. The rules it
//! applies (dormancy periods, activity, warning times) are in [`policy`], shared with the dashboard.

pub mod policy;

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamp};
use platform::Platform;
use platform::audit::{Actor, NewEvent, Target};
use platform::revocation::{self, Revocations, RevokedBy, end_locked_grants};
use platform::storage::{AnyConnection, StorageResult, numbered, skip_locked, write_tx};
use platform::webhooks;
use serde::Serialize;

use self::policy::{ACTIVITY_DAY_SQL, ACTIVITY_SQL};

const BATCH: i64 = 1_000;

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub expired: usize,
    pub dormant: usize,
    /// Grants whose client was warned of the coming expiry (`grant.expiring`).
    pub expiry_warnings: usize,
    /// Grants whose client was warned of the coming dormancy revocation.
    pub dormancy_warnings: usize,
    /// Undecided authorization requests, expired sessions and old webhook events deleted.
    pub purged: usize,
    /// Four-eyes approval requests nobody decided in time, now stored as expired.
    pub approvals_expired: usize,
    pub ended_grant_ids: Vec<String>,
}

#[derive(QueryableByName)]
struct GrantOfClient {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    client_id: String,
}

/// Live grants expired at `?` (now), oldest first, at most `?`: the expired phase's selection.
/// Its status list is the predicate of `grants_live_expiry_idx` word for word (a bound array,
/// `= ANY($1)`, would not let PostgreSQL prove the index applies, nor SQLite any other wording);
/// a test reads its plan on both backends (`storage::the_hot_selections_read_their_indexes`).
pub const EXPIRED_SQL: &str = "SELECT g.id AS id, g.client_id AS client_id FROM grants g \
     WHERE g.status IN ('authorized', 'awaiting_authorization') AND g.expires_at <= ? \
     ORDER BY g.expires_at LIMIT ?";

/// Authorized grants expiring after `?` (now) and at or before `?` (now + lead) and not warned
/// yet, soonest first, at most `?`: the expiry warnings' selection, through
/// `grants_live_expiry_idx` as [`EXPIRED_SQL`] is. The index's predicate is repeated before the
/// narrower status condition: SQLite uses a partial index only for a query that contains its
/// predicate as written (PostgreSQL would infer it).
pub const EXPIRING_SQL: &str = "SELECT g.id AS id, g.client_id AS client_id, \
     g.expires_at AS expires_at FROM grants g \
     WHERE g.status IN ('authorized', 'awaiting_authorization') AND g.status = 'authorized' \
       AND g.expires_at > ? AND g.expires_at <= ? AND g.expiry_warned_at IS NULL \
     ORDER BY g.expires_at LIMIT ?";

/// Authorization requests nobody decided, expired at `?` (now): deleted by the sweep. The status
/// is written out, not bound, so that the database can use `authorization_requests_pending_idx`,
/// which holds only undecided requests (a minute's worth); decided ones are kept, and the table
/// grows with every consent ever given.
pub const STALE_REQUESTS_SQL: &str =
    "DELETE FROM authorization_requests WHERE status = 'pending' AND expires_at <= ?";

/// Webhook events the sweep deletes: delivered ones created at or before `?` (30 days ago),
/// failed ones at or before `?` (90 days ago; the portal shows them). Each condition is read
/// through its partial index (`webhook_outbox_delivered_idx`, `webhook_outbox_failed_idx`), whose
/// predicate it writes out; the statuses are the table's CHECK values.
pub const OUTBOX_PURGE_SQL: &str = "DELETE FROM webhook_outbox \
     WHERE (status = 'delivered' AND created_at <= ?) OR (status = 'failed' AND created_at <= ?)";

/// Shared Signals events the sweep deletes: any created at or before `?` (90 days ago: refused or
/// given up), and pending ones at or before `?` (30 days ago: a receiver that never reads cannot
/// grow its queue without bound). Read through `ssf_events_created_idx`.
pub const SSF_PURGE_SQL: &str = "DELETE FROM ssf_events \
     WHERE created_at <= ? OR (status = 'pending' AND created_at <= ?)";

/// Live grants past their expiry, each with its client; locked for this transaction on PostgreSQL
/// (skipping rows another sweeper holds).
fn expired_batch(
    c: &mut AnyConnection,
    now: DateTime<Utc>,
) -> StorageResult<Vec<(String, String)>> {
    let sql = format!("{EXPIRED_SQL}{}", skip_locked(c, "g"));
    let rows = diesel::sql_query(numbered(c, &sql))
        .bind::<Timestamp, _>(now.naive_utc())
        .bind::<BigInt, _>(BATCH)
        .load::<GrantOfClient>(c)?;
    Ok(rows.into_iter().map(|r| (r.id, r.client_id)).collect())
}

/// A dormancy period and the grants it applies to: the default (clients without a shorter
/// period of their own) or one client's shorter period.
#[derive(Debug, Clone)]
struct DormancyRule {
    client: Option<String>,
    clock: policy::DormancyClock,
}

/// The default rule first, then the (few) clients with a shorter period of their own.
fn dormancy_rules(
    c: &mut AnyConnection,
    default: Duration,
    lead: Duration,
) -> StorageResult<Vec<DormancyRule>> {
    use platform::storage::schema::clients;
    let mut rules = vec![DormancyRule {
        client: None,
        clock: policy::DormancyClock {
            period: default,
            since: None,
            default,
        },
    }];
    let shorter: Vec<(String, Option<i32>, Option<chrono::NaiveDateTime>)> = clients::table
        .filter(clients::dormancy_days.is_not_null())
        .select((clients::id, clients::dormancy_days, clients::dormancy_since))
        .load(c)?;
    for (client_id, days, since) in shorter {
        let period = policy::dormancy_period(days, default, lead);
        if period < default {
            rules.push(DormancyRule {
                client: Some(client_id),
                clock: policy::DormancyClock {
                    period,
                    since: since.map(|s| s.and_utc()),
                    default,
                },
            });
        }
    }
    Ok(rules)
}

#[derive(QueryableByName)]
struct ActivityRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    client_id: String,
    #[diesel(sql_type = Timestamp)]
    active_at: chrono::NaiveDateTime,
}

/// Authorized grants under `rule` last active at or before `cutoff`, plus `extra` conditions;
/// at most `limit`, locked for this transaction on PostgreSQL (skipping rows another sweeper
/// holds).
fn by_activity(
    c: &mut AnyConnection,
    rule: &DormancyRule,
    cutoff: DateTime<Utc>,
    extra: &str,
    limit: i64,
) -> StorageResult<Vec<ActivityRow>> {
    let rows = match &rule.client {
        None => {
            let sql = format!(
                "SELECT g.id AS id, g.client_id AS client_id, {ACTIVITY_SQL} AS active_at \
                 FROM grants g JOIN clients cl ON cl.id = g.client_id \
                 WHERE g.status = 'authorized' \
                   AND (cl.dormancy_days IS NULL OR cl.dormancy_days <= 0 OR CAST(cl.dormancy_days AS BIGINT) * 86400 >= ?) \
                   AND {ACTIVITY_DAY_SQL} <= date(?) AND {ACTIVITY_SQL} <= ?{extra} LIMIT ?{}",
                skip_locked(c, "g")
            );
            diesel::sql_query(numbered(c, &sql))
                .bind::<BigInt, _>(rule.clock.period.num_seconds())
                .bind::<Timestamp, _>(cutoff.naive_utc())
                .bind::<Timestamp, _>(cutoff.naive_utc())
                .bind::<BigInt, _>(limit)
                .load::<ActivityRow>(c)?
        }
        Some(client) => {
            let sql = format!(
                "SELECT g.id AS id, g.client_id AS client_id, {ACTIVITY_SQL} AS active_at \
                 FROM grants g \
                 WHERE g.status = 'authorized' AND g.client_id = ? \
                   AND {ACTIVITY_DAY_SQL} <= date(?) AND {ACTIVITY_SQL} <= ?{extra} LIMIT ?{}",
                skip_locked(c, "g")
            );
            diesel::sql_query(numbered(c, &sql))
                .bind::<Text, _>(client)
                .bind::<Timestamp, _>(cutoff.naive_utc())
                .bind::<Timestamp, _>(cutoff.naive_utc())
                .bind::<BigInt, _>(limit)
                .load::<ActivityRow>(c)?
        }
    };
    Ok(rows)
}

/// Dormant grants: unused (no token issue, refresh, introspection or reported read) for their
/// dormancy period; each with its client, locked as [`expired_batch`]'s are.
fn dormant_batch(
    c: &mut AnyConnection,
    now: DateTime<Utc>,
    rules: &[DormancyRule],
) -> StorageResult<Vec<(String, String)>> {
    let mut ids = Vec::new();
    for rule in rules {
        let left = BATCH - ids.len() as i64;
        if left <= 0 {
            break;
        }
        ids.extend(
            by_activity(c, rule, rule.clock.activity_cutoff(now), "", left)?
                .into_iter()
                .map(|r| (r.id, r.client_id)),
        );
    }
    Ok(ids)
}

/// One batch of warnings before the end: grants expiring within `lead` that were not warned
/// for this expiry, then grants within `lead` of their dormancy deadline not warned since their
/// last use. Marks them, audits, and writes the client's webhook events. Returns (expiring,
/// dormancy) counts.
fn warn_batch(
    c: &mut AnyConnection,
    now: DateTime<Utc>,
    rules: &[DormancyRule],
    lead: Duration,
) -> StorageResult<(usize, usize)> {
    use platform::storage::schema::grant_rows;
    // Untruncated: a warning is never older than the activity it warned about (activity <= cutoff
    // <= now), so `dormancy_warned_at < activity` cannot select the same grant again.
    let stamp = now.naive_utc();
    let at = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    #[derive(QueryableByName)]
    struct ExpiringRow {
        #[diesel(sql_type = Text)]
        id: String,
        #[diesel(sql_type = Text)]
        client_id: String,
        #[diesel(sql_type = Timestamp)]
        expires_at: chrono::NaiveDateTime,
    }
    let sql = format!("{EXPIRING_SQL}{}", skip_locked(c, "g"));
    let expiring = diesel::sql_query(numbered(c, &sql))
        .bind::<Timestamp, _>(now.naive_utc())
        .bind::<Timestamp, _>((now + lead).naive_utc())
        .bind::<BigInt, _>(BATCH)
        .load::<ExpiringRow>(c)?;
    let ids: Vec<&str> = expiring.iter().map(|r| r.id.as_str()).collect();
    diesel::update(grant_rows::table.filter(grant_rows::id.eq_any(&ids)))
        .set(grant_rows::expiry_warned_at.eq(stamp))
        .execute(c)?;
    let actor = Actor::system("lifecycle-sweeper");
    let mut events = Vec::new();
    let mut hooks = Vec::new();
    for r in &expiring {
        let ends = at(r.expires_at.and_utc());
        events.push(
            NewEvent::new(
                actor.clone(),
                "grant.expiry_warning",
                Target::new("grant", &r.id),
            )
            .details(serde_json::json!({ "expires_at": ends })),
        );
        hooks.push(webhooks::Event::grant(
            webhooks::GRANT_EXPIRING,
            &r.client_id,
            &r.id,
            serde_json::json!({ "expires_at": ends }),
        ));
    }

    let mut dormant = 0;
    for rule in rules {
        let left = BATCH - dormant as i64;
        if left <= 0 {
            break;
        }
        // Warned already for this stretch of inactivity: the warning is newer than the last use.
        let extra =
            format!(" AND (g.dormancy_warned_at IS NULL OR g.dormancy_warned_at < {ACTIVITY_SQL})");
        let cutoff = rule.clock.warning_cutoff(now, lead);
        let rows = by_activity(c, rule, cutoff, &extra, left)?;
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        diesel::update(grant_rows::table.filter(grant_rows::id.eq_any(&ids)))
            .set(grant_rows::dormancy_warned_at.eq(stamp))
            .execute(c)?;
        for r in &rows {
            let last = at(r.active_at.and_utc());
            let deadline = at(rule.clock.deadline(r.active_at.and_utc()));
            events.push(
                NewEvent::new(
                    actor.clone(),
                    "grant.dormancy_warning",
                    Target::new("grant", &r.id),
                )
                .details(serde_json::json!({ "last_used_at": last, "revoke_after": deadline })),
            );
            hooks.push(webhooks::Event::grant(
                webhooks::GRANT_DORMANCY_WARNING,
                &r.client_id,
                &r.id,
                serde_json::json!({ "last_used_at": last, "revoke_after": deadline }),
            ));
        }
        dormant += rows.len();
    }
    platform::audit::record_many(c, &events, now)?;
    webhooks::enqueue(c, &hooks, now)?;
    Ok((expiring.len(), dormant))
}

/// Ends due grants, expired ones first, one transaction per batch, until none is left (what
/// ended is announced when the caller's [`revocation::run`] returns). Several of these run at
/// once on PostgreSQL: each batch's selection skips the rows another one has locked.
fn end_due(
    c: &mut AnyConnection,
    revoked: &mut Revocations,
    now: DateTime<Utc>,
    rules: &[DormancyRule],
) -> StorageResult<SweepReport> {
    let mut report = SweepReport::default();
    for kind in ["expired", "dormant"] {
        loop {
            let ended = write_tx(c, |c| {
                // Selected live and locked: ended without locking and reading them again.
                let (mut due, by, reason) = if kind == "expired" {
                    (expired_batch(c, now)?, RevokedBy::Expiry, "expired")
                } else {
                    (
                        dormant_batch(c, now, rules)?,
                        RevokedBy::Dormancy,
                        "dormant",
                    )
                };
                // One row per grant (the rules' selections are disjoint; this keeps it so).
                due.sort_unstable();
                due.dedup_by(|a, b| a.0 == b.0);
                let ending = revocation::Ending {
                    by,
                    reason,
                    actor: &Actor::system("lifecycle-sweeper"),
                    now,
                };
                end_locked_grants(c, revoked, due, ending)
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
    Ok(report)
}

/// What follows the endings in a pass: warnings before the end, and housekeeping.
fn upkeep(
    c: &mut AnyConnection,
    report: &mut SweepReport,
    now: DateTime<Utc>,
    rules: &[DormancyRule],
    lead: Duration,
) -> StorageResult<()> {
    // Warnings before the end, for what is still live. Each batch marks what it selected, so
    // the passes end; the bound is a second line of defence against a selection that does not.
    for _ in 0..100_000 {
        let (expiring, dormancy) = write_tx(c, |c| warn_batch(c, now, rules, lead))?;
        report.expiry_warnings += expiring;
        report.dormancy_warnings += dormancy;
        if expiring + dormancy == 0 {
            break;
        }
    }
    // Housekeeping: authorization requests nobody decided (they hold no grant) and dead
    // sessions. Decided requests stay as the record of which request produced which grant.
    report.purged = write_tx(c, |c| {
        let stale = diesel::sql_query(numbered(c, STALE_REQUESTS_SQL))
            .bind::<Timestamp, _>(now.naive_utc())
            .execute(c)?;
        let month = (now - Duration::days(30)).naive_utc();
        let quarter = (now - Duration::days(90)).naive_utc();
        let webhooks = diesel::sql_query(numbered(c, OUTBOX_PURGE_SQL))
            .bind::<Timestamp, _>(month)
            .bind::<Timestamp, _>(quarter)
            .execute(c)?;
        let sets = diesel::sql_query(numbered(c, SSF_PURGE_SQL))
            .bind::<Timestamp, _>(quarter)
            .bind::<Timestamp, _>(month)
            .execute(c)?;
        let tokens = crate::ssf::access::purge_expired(c, now)?;
        Ok(stale + webhooks + sets + tokens + platform::session::purge_expired(c, now)?)
    })?;
    // Four-eyes requests nobody decided in time (reads already report them expired).
    report.approvals_expired = write_tx(c, |c| developer_portal::approvals::expire_stale(c, now))?;
    // Revocation feed entries whose tokens have all expired (module docs of
    // platform::revocation, "Retention").
    report.purged += purge_within(c, now, platform::revocation::purge_feed, PURGE_BATCH, None)?;
    report.purged += purge_spent(c, now, TOKEN_PURGE_BATCH, PURGE_BUDGET)?;
    Ok(())
}

/// Rows a purge deletes per transaction.
const PURGE_BATCH: i64 = 10_000;

/// Spent tokens per transaction (BENCHMARKS.md: a backlog of a million rows costs 1.16x one
/// bare `DELETE` of them this way; 6.4x with batches of 10,000 selected first and then deleted
/// by id, each scanning past the rows earlier batches had deleted).
const TOKEN_PURGE_BATCH: i64 = 100_000;

/// How long one pass spends purging spent tokens. The first pass after an upgrade may find
/// every token ever issued (about 170,000 rows a second here): the rest waits for the next
/// passes, which are not held up meanwhile (endings come first in a pass).
const PURGE_BUDGET: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `purge` in transactions of `batch` rows until it finds fewer, or `budget` has passed
/// after a batch. Returns how many rows it deleted.
fn purge_within(
    c: &mut AnyConnection,
    now: DateTime<Utc>,
    purge: fn(&mut AnyConnection, DateTime<Utc>, i64) -> StorageResult<usize>,
    batch: i64,
    budget: Option<std::time::Duration>,
) -> StorageResult<usize> {
    let started = std::time::Instant::now();
    let mut purged = 0;
    loop {
        let n = write_tx(c, |c| purge(c, now, batch))?;
        purged += n;
        let spent = budget.is_some_and(|b| started.elapsed() >= b);
        if n < batch as usize || spent {
            return Ok(purged);
        }
    }
}

/// Purges spent tokens ([`purge_spent_tokens`]) in transactions of `batch` rows for at most
/// about `budget`. Returns how many rows it deleted.
pub fn purge_spent(
    c: &mut AnyConnection,
    now: DateTime<Utc>,
    batch: i64,
    budget: std::time::Duration,
) -> StorageResult<usize> {
    purge_within(c, now, purge_spent_tokens, batch, Some(budget))
}

/// How long a refresh token is kept past its expiry. A used one presented again within this
/// time is still recognised as a replay, and ends its grant; after it, it is an unknown token
/// (refused as invalid, as an expired one already was).
pub const REFRESH_TOKEN_RETENTION: Duration = Duration::days(7);

/// Deletes up to `batch` spent token rows, issued tokens first: the rows of access tokens that
/// expired more than [`platform::revocation::RETENTION_MARGIN`] ago (introspection answers
/// `active: false` for them with or without the row, and what reads them for revocation, the
/// feed and Grant Management, reads only those within the margin), then refresh tokens
/// [`REFRESH_TOKEN_RETENTION`] past their expiry. Without this both tables grew by a row or two
/// per token issued, for ever. Returns how many rows it deleted.
fn purge_spent_tokens(
    c: &mut AnyConnection,
    now: DateTime<Utc>,
    batch: i64,
) -> StorageResult<usize> {
    // One statement per table, each deleting the rows its own subquery selects by their
    // physical address (PostgreSQL's ctid: a TID scan; SQLite's rowid): no ids go back and forth,
    // no bind-parameter limit bounds the batch, and no plan joins the whole table back.
    let postgres = matches!(c, AnyConnection::Postgresql(_));
    let rows_of = |select: &str| match postgres {
        true => format!("ctid = ANY(ARRAY(SELECT ctid {select}))"),
        false => format!("rowid IN (SELECT rowid {select})"),
    };
    let issued = format!(
        "DELETE FROM issued_tokens WHERE {}",
        rows_of("FROM issued_tokens WHERE expires_at < ? LIMIT ?")
    );
    let purged = diesel::sql_query(numbered(c, &issued))
        .bind::<Timestamp, _>((now - platform::revocation::RETENTION_MARGIN).naive_utc())
        .bind::<BigInt, _>(batch)
        .execute(c)?;
    let left = batch - purged as i64;
    if left <= 0 {
        return Ok(purged);
    }
    // created_at is implied by the expiry (a token is created before it expires); it is what
    // the created_at index finds them by.
    let refresh = format!(
        "DELETE FROM refresh_tokens WHERE {}",
        rows_of("FROM refresh_tokens WHERE created_at < ? AND expires_at < ? LIMIT ?")
    );
    let cutoff = (now - REFRESH_TOKEN_RETENTION).naive_utc();
    Ok(purged
        + diesel::sql_query(numbered(c, &refresh))
            .bind::<Timestamp, _>(cutoff)
            .bind::<Timestamp, _>(cutoff)
            .bind::<BigInt, _>(left)
            .execute(c)?)
}

/// How many connections end grants at once: one on SQLite (one writer), otherwise one per core
/// (at most 4), leaving at least half the pool to the requests being served meanwhile.
fn ending_workers(platform: &Platform) -> usize {
    if !platform.settings.uses_postgres() {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spare = (platform.settings.database.pool_size / 2).max(1) as usize;
    cores.clamp(1, 4).min(spare)
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

/// One full lifecycle pass: due grants end (on several connections at once on PostgreSQL, each
/// worker's endings announced to every instance when it finishes), then the warnings and
/// housekeeping.
pub async fn run_once(platform: &Platform) -> StorageResult<SweepReport> {
    let now = platform.now();
    let dormancy = platform.settings.lifecycle.dormancy_period.as_chrono();
    let lead = platform.settings.lifecycle.warning_lead_time.as_chrono();
    // Read once per pass (a change of a client's period applies from the next pass).
    let rules = std::sync::Arc::new(
        platform
            .db
            .run(move |c| dormancy_rules(c, dormancy, lead))
            .await?,
    );
    let workers = (0..ending_workers(platform)).map(|_| {
        let rules = rules.clone();
        revocation::run(platform, move |c, r| end_due(c, r, now, &rules))
    });
    let mut report = SweepReport::default();
    for ended in futures_util::future::join_all(workers).await {
        let ended = ended??;
        report.expired += ended.expired;
        report.dormant += ended.dormant;
        report.ended_grant_ids.extend(ended.ended_grant_ids);
    }
    let report = platform
        .db
        .run(move |c| upkeep(c, &mut report, now, &rules, lead).map(|()| report))
        .await?;
    metrics::counter!("consent_grants_expired_total").increment(report.expired as u64);
    metrics::counter!("consent_grants_dormant_total").increment(report.dormant as u64);
    Ok(report)
}
