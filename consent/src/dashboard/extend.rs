//! Extending (re-confirming) a grant.

use chrono::{DateTime, Duration, NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use platform::audit::{Actor, NewEvent, Target};
use platform::storage::models::GrantStatus;
use platform::storage::models::RefreshTokenStatus;
use platform::storage::schema::{grant_rows, refresh_tokens};
use platform::storage::{AnyConnection, StorageError, StorageResult};
use platform::webhooks;

use crate::oauth::rar::AccountAccessDetail;

use super::query::is_live;
use super::*;

fn corrupt(e: serde_json::Error) -> StorageError {
    StorageError::Query(diesel::result::Error::DeserializationError(Box::new(e)))
}

/// Extends (re-confirms) one authorized, unexpired grant of the customer (call inside a write
/// transaction). Nothing changes unless the outcome is [`ExtendOutcome::Extended`].
///
/// - The new expiry is `max(current expiry, now + min(original lifetime, max_grant_lifetime))`,
///   in whole seconds, where the lifetime is `expires_at` minus the last confirmation
///   (`reconfirmed_at`, else `authorized_at`, else `created_at`): the customer renews the consent
///   for as long as they last gave it, and repeated extensions do not compound.
/// - Re-confirming counts as activity: `last_used_at` becomes now, which restarts the dormancy
///   clock (the customer has just said they want the app connected), and the expiry and
///   dormancy warnings are cleared so that they are sent again before the new end.
/// - The expiry is updated in both places it lives: the `grants.expires_at` column and the
///   `expires_at` of the stored authorization details (from which access tokens are minted, so
///   their grant-expiry check carries the new date).
/// - Active refresh tokens of the grant that were capped at the old expiry are lifted to
///   `min(their creation + tokens.refresh_token_ttl, new expiry)`, so the app keeps its refresh
///   token past the old expiry.
/// - Audited as `grant.extended` (old and new expiry) and reported to the client with a
///   `grant.extended` webhook event.
///
/// The grant's row is locked first (PostgreSQL: an `UPDATE` row lock held until commit; SQLite:
/// the write transaction is `BEGIN IMMEDIATE`), so a concurrent revocation, sweep or extension is
/// ordered before or after this one, never interleaved.
pub fn extend(
    conn: &mut AnyConnection,
    customer_id: &str,
    grant_id: &str,
    policy: &LifecyclePolicy,
    now: DateTime<Utc>,
) -> StorageResult<ExtendOutcome> {
    let locked = diesel::update(
        grant_rows::table
            .filter(grant_rows::id.eq(grant_id))
            .filter(grant_rows::customer_id.eq(customer_id)),
    )
    .set(grant_rows::updated_at.eq(grant_rows::updated_at))
    .execute(conn)?;
    if locked == 0 {
        return Ok(ExtendOutcome::NotFound);
    }
    let (client_id, status, details, created_at, authorized_at, expires_at, reconfirmed_at): (
        String,
        String,
        String,
        NaiveDateTime,
        Option<NaiveDateTime>,
        NaiveDateTime,
        Option<NaiveDateTime>,
    ) = grant_rows::table
        .filter(grant_rows::id.eq(grant_id))
        .select((
            grant_rows::client_id,
            grant_rows::status,
            grant_rows::authorization_details,
            grant_rows::created_at,
            grant_rows::authorized_at,
            grant_rows::expires_at,
            grant_rows::reconfirmed_at,
        ))
        .first(conn)?;
    let previous = expires_at.and_utc();
    if status != GrantStatus::Authorized.as_str() || previous <= now {
        let status = if is_live(&status) && previous <= now {
            "expired".to_string()
        } else {
            status
        };
        return Ok(ExtendOutcome::Ended { status });
    }
    // The lifetime of the last confirmation: from the last extension, else the authorization.
    let start = reconfirmed_at
        .or(authorized_at)
        .unwrap_or(created_at)
        .and_utc();
    let lifetime = (previous - start)
        .min(policy.max_grant_lifetime)
        .max(Duration::zero());
    let candidate = (now + lifetime).trunc_subsecs(0);
    let new_expiry = if candidate > previous {
        candidate
    } else {
        previous
    };
    let formatted = ::grants::format_timestamp(new_expiry);
    let mut stored: Vec<AccountAccessDetail> = serde_json::from_str(&details).map_err(corrupt)?;
    for d in &mut stored {
        d.expires_at = Some(formatted.clone());
    }
    let stored = serde_json::to_string(&stored).map_err(corrupt)?;
    let now_naive = now.naive_utc();
    diesel::update(grant_rows::table.filter(grant_rows::id.eq(grant_id)))
        .set((
            grant_rows::expires_at.eq(new_expiry.naive_utc()),
            grant_rows::authorization_details.eq(&stored),
            grant_rows::last_used_at.eq(Some(now.trunc_subsecs(0).naive_utc())),
            grant_rows::expiry_warned_at.eq(None::<NaiveDateTime>),
            grant_rows::dormancy_warned_at.eq(None::<NaiveDateTime>),
            grant_rows::reconfirmed_at.eq(Some(now.trunc_subsecs(0).naive_utc())),
            grant_rows::updated_at.eq(now_naive),
        ))
        .execute(conn)?;
    // Refresh tokens are issued with `min(issue + ttl, grant expiry)`: those that reach the old
    // expiry were capped by it. Updated in id order, the order every other writer locks a grant's
    // tokens in (`platform::revocation::lock_grants`).
    let capped: Vec<(String, NaiveDateTime, NaiveDateTime)> = refresh_tokens::table
        .filter(refresh_tokens::grant_id.eq(grant_id))
        .filter(refresh_tokens::status.eq(RefreshTokenStatus::Active.as_str()))
        .filter(refresh_tokens::expires_at.ge(expires_at))
        .order(refresh_tokens::id)
        .select((
            refresh_tokens::id,
            refresh_tokens::created_at,
            refresh_tokens::expires_at,
        ))
        .load(conn)?;
    let mut lifted = 0;
    for (id, issued, current) in capped {
        let until = (issued.and_utc() + policy.refresh_token_ttl).min(new_expiry);
        if until.naive_utc() > current {
            lifted += diesel::update(refresh_tokens::table.filter(refresh_tokens::id.eq(&id)))
                .set(refresh_tokens::expires_at.eq(until.naive_utc()))
                .execute(conn)?;
        }
    }
    let previous_formatted = ::grants::format_timestamp(previous);
    NewEvent::new(
        Actor::customer(customer_id),
        "grant.extended",
        Target::new("grant", grant_id),
    )
    .details(serde_json::json!({
        "previous_expires_at": previous_formatted,
        "expires_at": formatted,
        "refresh_tokens_extended": lifted,
    }))
    .record(conn, now)?;
    webhooks::enqueue(
        conn,
        &[webhooks::Event::grant(
            webhooks::GRANT_EXTENDED,
            client_id,
            grant_id,
            serde_json::json!({
                "expires_at": formatted,
                "previous_expires_at": previous_formatted,
            }),
        )],
        now,
    )?;
    Ok(ExtendOutcome::Extended {
        previous_expires_at: previous,
        expires_at: new_expiry,
    })
}
