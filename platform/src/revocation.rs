//! Ending grants: the one place that turns grants into `revoked` (or `expired`), invalidates their
//! refresh tokens, and appends the grant id and the revocation ids of every unexpired token minted
//! for it to the revocation list (`revocations`, the feed offline verifiers sync from). Runs in
//! the caller's transaction, so the revocation is durable before it is acknowledged.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::audit::{self, Actor, NewEvent, Target};
use crate::storage::schema::{grants, issued_tokens, refresh_tokens, revocations};
use crate::storage::{AnyConnection, StorageResult};
use crate::webhooks;

/// Who or what ended a grant (`grants.revoked_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokedBy {
    Customer,
    Client,
    Staff,
    Dormancy,
    Expiry,
    /// The server itself, after a detected attack (authorization code or refresh token replay).
    Security,
}

impl RevokedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokedBy::Customer => "customer",
            RevokedBy::Client => "client",
            RevokedBy::Staff => "staff",
            RevokedBy::Dormancy => "dormancy",
            RevokedBy::Expiry => "expiry",
            RevokedBy::Security => "security",
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = revocations, treat_none_as_default_value = false)]
struct NewRevocation<'a> {
    grant_id: &'a str,
    revocation_id: Option<&'a str>,
    reason: &'a str,
    revoked_at: chrono::NaiveDateTime,
}

/// Tells every instance (Redis pub/sub) that grants ended, after the transaction committed: one
/// message per 1,000 ids (space-separated). Receivers only need the wake-up (they sync from the
/// revocation feed in the database), so a failure is logged, not returned: the database stays
/// authoritative and every instance also polls it each second.
pub async fn publish(platform: &crate::Platform, grant_ids: &[String]) {
    EPOCH.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    for ids in grant_ids.chunks(1_000) {
        if let Err(e) = platform
            .cache
            .publish(REVOCATION_CHANNEL, &ids.join(" "))
            .await
        {
            tracing::warn!(error = %e, "revocation publish failed; the database remains authoritative");
        }
    }
}

/// Counts [`publish`] calls in this process (revocations committed here), so per-instance caches
/// of token answers can tell that something was revoked since they stored an answer, without
/// waiting for the revocation feed. Callers of `publish` for access-token revocations (which end
/// no grant) pass an empty list: the count still moves.
static EPOCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The current revocation epoch of this process (see [`publish`]).
pub fn epoch() -> u64 {
    EPOCH.load(std::sync::atomic::Ordering::SeqCst)
}

/// Channel on which ended grant ids are published to every instance.
pub const REVOCATION_CHANNEL: &str = "revocations";

/// Ends the given grants that are still live. Returns the ids that actually changed (already
/// ended ones are skipped, so calling twice is harmless).
pub fn end_grants(
    conn: &mut AnyConnection,
    grant_ids: &[String],
    by: RevokedBy,
    reason: &str,
    actor: &Actor,
    now: DateTime<Utc>,
) -> StorageResult<Vec<String>> {
    if grant_ids.is_empty() {
        return Ok(vec![]);
    }
    // On PostgreSQL, lock the rows first (the locks the UPDATEs below take anyway), each kind in
    // id order: the grants, so two concurrent calls for one grant (say, two replays detected at
    // once) cannot both see it live (the second waits, then reads it ended and skips it); then
    // their active refresh tokens, in the order the batched rotation locks tokens, so that a
    // rotation batch holding tokens of several of these grants and this call cannot each wait
    // for a token the other holds. SQLite's write transaction already serializes them.
    if let AnyConnection::Postgresql(pg) = conn {
        use diesel::sql_types::{Array, Text};
        diesel::sql_query("SELECT 1 FROM grants WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
            .bind::<Array<Text>, _>(grant_ids)
            .execute(pg)?;
        diesel::sql_query(
            "SELECT 1 FROM refresh_tokens WHERE grant_id = ANY($1) AND status = 'active' \
             ORDER BY id FOR NO KEY UPDATE",
        )
        .bind::<Array<Text>, _>(grant_ids)
        .execute(pg)?;
    }
    let mut live: Vec<(String, String)> = Vec::new();
    for ids in grant_ids.chunks(1_000) {
        live.extend(
            grants::table
                .filter(grants::id.eq_any(ids))
                .filter(grants::status.eq_any(["awaiting_authorization", "authorized"]))
                .select((grants::id, grants::client_id))
                .load::<(String, String)>(conn)?,
        );
    }
    if live.is_empty() {
        return Ok(vec![]);
    }
    let (live, client_of): (Vec<String>, Vec<String>) = live.into_iter().unzip();
    let now_naive = now.naive_utc();
    let status = if by == RevokedBy::Expiry {
        "expired"
    } else {
        "revoked"
    };
    // Large sets (the lifecycle sweep) go in chunks; each statement stays within bind limits.
    for ids in live.chunks(1_000) {
        diesel::update(grants::table.filter(grants::id.eq_any(ids)))
            .set((
                grants::status.eq(status),
                grants::revoked_at.eq(now_naive),
                grants::revoked_by.eq(by.as_str()),
                grants::updated_at.eq(now_naive),
            ))
            .execute(conn)?;
        diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::grant_id.eq_any(ids))
                .filter(refresh_tokens::status.ne("revoked")),
        )
        .set(refresh_tokens::status.eq("revoked"))
        .execute(conn)?;
    }
    let mut tokens: Vec<(String, String)> = Vec::new();
    for ids in live.chunks(1_000) {
        tokens.extend(
            issued_tokens::table
                .filter(issued_tokens::grant_id.eq_any(ids))
                .filter(issued_tokens::expires_at.gt(now_naive))
                .select((issued_tokens::grant_id, issued_tokens::revocation_id))
                .load::<(String, String)>(conn)?,
        );
    }
    // The revocation feed: one row per grant, one per unexpired token minted for it.
    let feed: Vec<NewRevocation<'_>> = live
        .iter()
        .map(|id| NewRevocation {
            grant_id: id,
            revocation_id: None,
            reason,
            revoked_at: now_naive,
        })
        .chain(
            tokens
                .iter()
                .map(|(grant_id, revocation_id)| NewRevocation {
                    grant_id,
                    revocation_id: Some(revocation_id),
                    reason,
                    revoked_at: now_naive,
                }),
        )
        .collect();
    crate::insert_rows!(conn, revocations::table, &feed);
    let action = if status == "expired" {
        "grant.expired"
    } else {
        "grant.revoked"
    };
    let events: Vec<NewEvent> = live
        .iter()
        .map(|id| {
            NewEvent::new(actor.clone(), action, Target::new("grant", id.clone()))
                .details(serde_json::json!({ "by": by.as_str(), "reason": reason }))
        })
        .collect();
    audit::record_many(conn, &events, now)?;
    // The client hears of it through its webhook (same transaction: the outbox).
    let hooks: Vec<webhooks::Event> = live
        .iter()
        .zip(&client_of)
        .map(|(id, client)| {
            webhooks::Event::grant(
                action,
                client.clone(),
                id.clone(),
                serde_json::json!({
                    "status": status,
                    "revoked_by": by.as_str(),
                    "reason": reason,
                    "at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                }),
            )
        })
        .collect();
    webhooks::enqueue(conn, &hooks, now)?;
    Ok(live)
}
