//! Customer dashboard service: the apps a customer has connected, what each may see, what each
//! did, and instant revocation. Plain Rust over storage (no actix types); the page and the JSON
//! API in `routes::dashboard` both render these view models.
//!
//! Every query is scoped to the customer: a grant of another customer is indistinguishable from
//! one that does not exist ([`None`] / [`RevokeOutcome::NotFound`]).
//!
//! Revoking is idempotent: revoking a grant that already ended (revoked, expired, rejected) changes
//! nothing and reports [`RevokeOutcome::AlreadyEnded`], which the HTTP layer answers like a
//! successful revocation (204 / back to the page).
//!
//! Lifecycle notices: an authorized grant whose end (its expiry or its dormancy deadline,
//! whichever is sooner) is within `lifecycle.warning_lead_time` carries a [`GrantNotice`], and the
//! customer may [`extend`] it (re-confirm the consent) as long as it has not ended.
//!
//! Parts: [`views`] (what the pages and the API show), [`query`] (reading grants into views),
//! [`extend`] (re-confirmation), `text` (plain-language wording), `service` ([`CustomerGrants`],
//! what the handlers call); revocation is here. The
//! lifecycle rules (dormancy periods, when a notice is due) are shared with the sweeper in
//! [`crate::lifecycle::policy`].

mod extend;
mod query;
mod service;
mod text;
mod views;

pub use crate::lifecycle::policy::LifecyclePolicy;
pub use extend::extend;
pub use query::{
    ActivityPage, LAST_READ_SQL, LastRead, activity, activity_page, customer_identity,
    customer_login, grant_views, last_reads,
};
pub use service::{CustomerGrants, valid_grant_id};
pub use text::{
    AccessSummary, describe_action, describe_event, format_day, operator_label, operator_markup,
    summary_day,
};
pub use views::*;

use chrono::{DateTime, Utc};
use platform::audit::Actor;
use platform::revocation::{Revocations, RevokedBy, end_grants};
use platform::storage::models::GrantStatus;
use platform::storage::schema::grant_rows;
use platform::storage::{AnyConnection, StorageResult};

use diesel::prelude::*;
use query::owns;

/// Reason recorded in the revocation feed when a customer ends a grant.
pub const REVOKED_BY_CUSTOMER: &str = "revoked_by_customer";
/// At most this many activity events are returned per grant (newest first), or per page.
pub const ACTIVITY_LIMIT: i64 = 200;
/// Events per page of a grant's history on the dashboard.
pub const HISTORY_PAGE: i64 = 20;
/// [`GrantNotice::kind`] of a grant that reaches its expiry date soon.
pub const NOTICE_EXPIRING: &str = "expiring";
/// [`GrantNotice::kind`] of a grant that is revoked for dormancy soon.
pub const NOTICE_DORMANT_SOON: &str = "dormant_soon";

/// Revokes one grant of the customer (inside [`platform::revocation::write`], which announces it
/// once committed).
pub fn revoke(
    conn: &mut AnyConnection,
    revoked: &mut Revocations,
    customer_id: &str,
    grant_id: &str,
    now: DateTime<Utc>,
) -> StorageResult<RevokeOutcome> {
    if !owns(conn, customer_id, grant_id)? {
        return Ok(RevokeOutcome::NotFound);
    }
    let ended = end_grants(
        conn,
        revoked,
        &[grant_id.to_string()],
        RevokedBy::Customer,
        REVOKED_BY_CUSTOMER,
        &Actor::customer(customer_id),
        now,
    )?;
    Ok(if ended.is_empty() {
        RevokeOutcome::AlreadyEnded
    } else {
        RevokeOutcome::Revoked(ended)
    })
}

/// Revokes every live grant of the customer; returns the ids that ended (inside
/// [`platform::revocation::write`]).
pub fn revoke_all(
    conn: &mut AnyConnection,
    revoked: &mut Revocations,
    customer_id: &str,
    now: DateTime<Utc>,
) -> StorageResult<Vec<String>> {
    let live: Vec<String> = grant_rows::table
        .filter(grant_rows::customer_id.eq(customer_id))
        .filter(grant_rows::status.eq_any(GrantStatus::LIVE_STR))
        .select(grant_rows::id)
        .load(conn)?;
    end_grants(
        conn,
        revoked,
        &live,
        RevokedBy::Customer,
        REVOKED_BY_CUSTOMER,
        &Actor::customer(customer_id),
        now,
    )
}
