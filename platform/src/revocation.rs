//! Ending grants: the one place that turns grants into `revoked` (or `expired`), invalidates their
//! refresh tokens, and appends the grant id and the revocation ids of every unexpired token minted
//! for it to the revocation list (`revocations`, the feed offline verifiers sync from). Runs in
//! the caller's transaction, so the revocation is durable before it is acknowledged.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::audit::{self, Actor, NewEvent, Target};
use crate::storage::schema::{grants, issued_tokens, refresh_tokens, revocations};
use crate::storage::{AnyConnection, StorageResult};

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
    let live: Vec<String> = grants::table
        .filter(grants::id.eq_any(grant_ids))
        .filter(grants::status.eq_any(["awaiting_authorization", "authorized"]))
        .select(grants::id)
        .load(conn)?;
    if live.is_empty() {
        return Ok(vec![]);
    }
    let now_naive = now.naive_utc();
    let status = if by == RevokedBy::Expiry {
        "expired"
    } else {
        "revoked"
    };
    diesel::update(grants::table.filter(grants::id.eq_any(&live)))
        .set((
            grants::status.eq(status),
            grants::revoked_at.eq(now_naive),
            grants::revoked_by.eq(by.as_str()),
            grants::updated_at.eq(now_naive),
        ))
        .execute(conn)?;
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::grant_id.eq_any(&live))
            .filter(refresh_tokens::status.ne("revoked")),
    )
    .set(refresh_tokens::status.eq("revoked"))
    .execute(conn)?;
    let tokens: Vec<(String, String)> = issued_tokens::table
        .filter(issued_tokens::grant_id.eq_any(&live))
        .filter(issued_tokens::expires_at.gt(now_naive))
        .select((issued_tokens::grant_id, issued_tokens::revocation_id))
        .load(conn)?;
    for id in &live {
        diesel::insert_into(revocations::table)
            .values((
                revocations::grant_id.eq(id),
                revocations::reason.eq(reason),
                revocations::revoked_at.eq(now_naive),
            ))
            .execute(conn)?;
        audit::record(
            conn,
            &NewEvent::new(
                actor.clone(),
                if status == "expired" {
                    "grant.expired"
                } else {
                    "grant.revoked"
                },
                Target::new("grant", id.clone()),
            )
            .details(serde_json::json!({ "by": by.as_str(), "reason": reason })),
            now,
        )?;
    }
    for (grant_id, revocation_id) in tokens {
        diesel::insert_into(revocations::table)
            .values((
                revocations::grant_id.eq(grant_id),
                revocations::revocation_id.eq(Some(revocation_id)),
                revocations::reason.eq(reason),
                revocations::revoked_at.eq(now_naive),
            ))
            .execute(conn)?;
    }
    Ok(live)
}
