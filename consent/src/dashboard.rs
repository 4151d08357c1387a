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

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use platform::audit::{self, Actor, NewEvent, Target};
use platform::config::Settings;
use platform::crypto::MasterKey;
use platform::revocation::{Revocations, RevokedBy, end_grants};
use platform::storage::models::GrantStatus;
use platform::storage::schema::{
    accounts, audit_events, clients, grants, merchants, refresh_tokens,
};
use platform::storage::{AnyConnection, StorageError, StorageResult};
use platform::webhooks;
use serde::Serialize;

use crate::oauth::rar::AccountAccessDetail;

/// Reason recorded in the revocation feed when a customer ends a grant.
pub const REVOKED_BY_CUSTOMER: &str = "revoked_by_customer";
/// At most this many activity events are returned per grant (newest first).
pub const ACTIVITY_LIMIT: i64 = 200;
/// [`GrantNotice::kind`] of a grant that reaches its expiry date soon.
pub const NOTICE_EXPIRING: &str = "expiring";
/// [`GrantNotice::kind`] of a grant that is revoked for dormancy soon.
pub const NOTICE_DORMANT_SOON: &str = "dormant_soon";

/// The lifecycle settings the dashboard needs (from `lifecycle.*` and `tokens.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecyclePolicy {
    /// Cap on a grant's lifetime, also on the lifetime an extension grants.
    pub max_grant_lifetime: Duration,
    /// Default dormancy period (a client may have a shorter one).
    pub dormancy_period: Duration,
    /// How long before its end a grant carries a notice.
    pub warning_lead_time: Duration,
    /// Lifetime of a refresh token (extension lifts capped refresh tokens up to it).
    pub refresh_token_ttl: Duration,
}

impl LifecyclePolicy {
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            max_grant_lifetime: s.lifecycle.max_grant_lifetime.as_chrono(),
            dormancy_period: s.lifecycle.dormancy_period.as_chrono(),
            warning_lead_time: s.lifecycle.warning_lead_time.as_chrono(),
            refresh_token_ttl: s.tokens.refresh_token_ttl.as_chrono(),
        }
    }
}

/// One account a grant covers, as the customer knows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccountView {
    pub id: String,
    /// The account's name (e.g. "Everyday account"); the id when the account no longer exists.
    pub name: String,
    /// Masked account number, e.g. `**** 1234`.
    pub masked_number: String,
    pub currency: String,
}

/// One merchant a grant is limited to.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MerchantView {
    pub id: String,
    pub name: String,
}

/// One permission, with its plain-language description.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActionView {
    /// `accounts:read`, `balances:read` or `transactions:read`.
    pub action: String,
    pub description: String,
}

/// A connected app (one grant) as the customer sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GrantView {
    pub grant_id: String,
    pub client_id: String,
    /// The app's name as registered by its developer.
    pub client_name: String,
    /// `sandbox` or `production`.
    pub environment: String,
    /// Whether the developer's identity (KYC) was verified by the bank.
    pub verified: bool,
    /// The developer's verified legal name; absent when unverified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_legal_name: Option<String>,
    /// Who operates the app, in plain language: the verified legal name, or
    /// `Sandbox, unverified` / `Unverified operator`.
    pub operator_label: String,
    /// Stored status: `awaiting_authorization`, `authorized`, `rejected`, `revoked`, `expired`.
    /// An authorized grant whose expiry has passed (not yet swept) is reported as `expired`.
    pub status: String,
    /// Whether the app can still use this access (and the customer can revoke it).
    pub active: bool,
    /// Who ended it: `customer`, `client`, `staff`, `dormancy`, `expiry`, `security`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorized_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    pub actions: Vec<ActionView>,
    pub accounts: Vec<AccountView>,
    /// Start of the transaction window; absent: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transactions_from: Option<String>,
    /// End of the transaction window; absent: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transactions_until: Option<String>,
    /// Merchants the transactions are limited to; absent: all merchants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchants: Option<Vec<MerchantView>>,
    /// The granted RFC 9396 authorization details, exactly as tokens carry them.
    pub authorization_details: Vec<AccountAccessDetail>,
    /// Authorized grants only: when the grant is revoked for dormancy unless the app uses it (or
    /// the customer extends it) before then: the last use (else the authorization) plus the
    /// dormancy period (the bank's default, or the app's shorter one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dormancy_deadline: Option<DateTime<Utc>>,
    /// Authorized grants only: present when the grant ends (expiry or dormancy, whichever is
    /// sooner) within the bank's warning lead time (default 7 days). The customer can extend it
    /// with `POST /api/v1/me/grants/{id}/extend`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<GrantNotice>,
}

/// A warning that a connected app is about to lose its access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct GrantNotice {
    /// `expiring` (the consent reaches its end date) or `dormant_soon` (the app has not used its
    /// access for a long time and will be disconnected).
    #[schema(example = "expiring")]
    pub kind: String,
    /// The same in plain language, for display.
    #[schema(example = "This access ends on 3 Dec 2026. Extend it to keep the app connected.")]
    pub message: String,
    /// When the access ends unless extended.
    pub ends_at: DateTime<Utc>,
}

/// One thing that happened to or through a grant.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActivityEvent {
    pub event_id: String,
    pub occurred_at: DateTime<Utc>,
    /// Machine-readable action, e.g. `token.issued`, `resource.read`, `grant.revoked`.
    pub action: String,
    /// The same in plain language.
    pub description: String,
    /// `customer`, `client`, `staff` or `system`.
    pub actor_type: String,
}

/// The result of a revocation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The grant was live and is now revoked.
    Revoked(Vec<String>),
    /// The grant had already ended; nothing changed.
    AlreadyEnded,
    /// No such grant for this customer.
    NotFound,
}

/// The result of an extension request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtendOutcome {
    /// The grant was re-confirmed; its expiry moved from `previous_expires_at` to `expires_at`
    /// (equal when the current expiry was already later than an extension would give).
    Extended {
        previous_expires_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    /// The grant is not authorized (revoked, expired, rejected, or never authorized) or its
    /// expiry has passed; nothing changed. `status` is what the dashboard shows for it.
    Ended { status: String },
    /// No such grant for this customer.
    NotFound,
}

/// Display format of a day in plain-language messages, e.g. `3 Dec 2026`.
pub fn format_day(t: DateTime<Utc>) -> String {
    t.format("%-d %b %Y").to_string()
}

/// Plain-language description of a permission.
pub fn describe_action(action: &str) -> &'static str {
    match action {
        "accounts:read" => "See the names, numbers and currencies of the chosen accounts",
        "balances:read" => "See the balances of those accounts",
        "transactions:read" => "See the transactions on those accounts",
        _ => "A permission this bank does not describe",
    }
}

/// Plain-language description of an audit action on a grant.
pub fn describe_event(action: &str, details: &serde_json::Value) -> String {
    let by = details.get("by").and_then(|v| v.as_str()).unwrap_or("");
    match action {
        "consent.approved" => "You allowed this app access".into(),
        "consent.denied" => "You refused this app access".into(),
        "token.issued" => "The app received access to your data".into(),
        "token.refreshed" => "The app renewed its access".into(),
        "access_token.revoked" => "The app gave up one of its access tokens".into(),
        "resource.read" => match details.get("resource").and_then(|v| v.as_str()) {
            Some("accounts") => "The app read your account list".into(),
            Some("balances") => "The app read an account balance".into(),
            Some("transactions") => "The app read your transactions".into(),
            _ => "The app read your data".into(),
        },
        "grant.revoked" => match by {
            "customer" => "You ended this app's access".into(),
            "client" => "The app ended its own access".into(),
            "staff" => "The bank ended this app's access".into(),
            "dormancy" => "Access ended because the app had not used it for a long time".into(),
            "security" => "The bank ended this access to protect you (suspicious reuse)".into(),
            _ => "This app's access was ended".into(),
        },
        "grant.expired" => "Access ended on its expiry date".into(),
        "grant.expiry_warning" | "grant.expiring" => "Access is about to expire".into(),
        "grant.dormancy_warning" | "grant.dormant_soon" => {
            "Access is about to end because the app has not used it for a long time".into()
        }
        "grant.extended" => match details
            .get("expires_at")
            .and_then(|v| v.as_str())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        {
            Some(t) => format!(
                "You extended this app's access until {}",
                format_day(t.with_timezone(&Utc))
            ),
            None => "You extended this app's access".into(),
        },
        "authorization_code.reused" | "refresh_token.replayed" => {
            "A security check failed (a one-time code was reused); access was ended".into()
        }
        other => format!("Other activity ({other})"),
    }
}

#[derive(Debug, Queryable)]
struct GrantRow {
    id: String,
    client_id: String,
    status: String,
    authorization_details: String,
    created_at: NaiveDateTime,
    authorized_at: Option<NaiveDateTime>,
    expires_at: NaiveDateTime,
    last_used_at: Option<NaiveDateTime>,
    revoked_at: Option<NaiveDateTime>,
    revoked_by: Option<String>,
}

type GrantColumns = (
    grants::id,
    grants::client_id,
    grants::status,
    grants::authorization_details,
    grants::created_at,
    grants::authorized_at,
    grants::expires_at,
    grants::last_used_at,
    grants::revoked_at,
    grants::revoked_by,
);

const GRANT_COLUMNS: GrantColumns = (
    grants::id,
    grants::client_id,
    grants::status,
    grants::authorization_details,
    grants::created_at,
    grants::authorized_at,
    grants::expires_at,
    grants::last_used_at,
    grants::revoked_at,
    grants::revoked_by,
);

fn is_live(status: &str) -> bool {
    GrantStatus::parse(status).is_some_and(GrantStatus::is_live)
}

/// Every grant of `customer_id`, newest first: live ones (`active`) and ended ones.
pub fn list_grants(
    conn: &mut AnyConnection,
    master_key: &MasterKey,
    customer_id: &str,
    policy: &LifecyclePolicy,
    now: DateTime<Utc>,
) -> StorageResult<Vec<GrantView>> {
    let rows: Vec<GrantRow> = grants::table
        .filter(grants::customer_id.eq(customer_id))
        .order((grants::created_at.desc(), grants::id.desc()))
        .select(GRANT_COLUMNS)
        .load(conn)?;
    let mut ctx = Lookup::default();
    rows.into_iter()
        .map(|r| view(conn, master_key, customer_id, &mut ctx, r, policy, now))
        .collect()
}

/// One grant of `customer_id`; `None` when it does not exist or belongs to someone else.
pub fn get_grant(
    conn: &mut AnyConnection,
    master_key: &MasterKey,
    customer_id: &str,
    grant_id: &str,
    policy: &LifecyclePolicy,
    now: DateTime<Utc>,
) -> StorageResult<Option<GrantView>> {
    let row: Option<GrantRow> = grants::table
        .filter(grants::id.eq(grant_id))
        .filter(grants::customer_id.eq(customer_id))
        .select(GRANT_COLUMNS)
        .first(conn)
        .optional()?;
    let mut ctx = Lookup::default();
    row.map(|r| view(conn, master_key, customer_id, &mut ctx, r, policy, now))
        .transpose()
}

/// The audit events whose target is this grant, newest first; `None` when the grant is not the
/// customer's.
pub fn activity(
    conn: &mut AnyConnection,
    customer_id: &str,
    grant_id: &str,
) -> StorageResult<Option<Vec<ActivityEvent>>> {
    if !owns(conn, customer_id, grant_id)? {
        return Ok(None);
    }
    let rows: Vec<(String, NaiveDateTime, String, String, String)> = audit_events::table
        .filter(audit_events::target_type.eq("grant"))
        .filter(audit_events::target_id.eq(grant_id))
        .order(audit_events::seq.desc())
        .limit(ACTIVITY_LIMIT)
        .select((
            audit_events::event_id,
            audit_events::occurred_at,
            audit_events::action,
            audit_events::actor_type,
            audit_events::details,
        ))
        .load(conn)?;
    Ok(Some(
        rows.into_iter()
            .map(|(event_id, at, action, actor_type, details)| {
                let details: serde_json::Value =
                    serde_json::from_str(&details).unwrap_or(serde_json::Value::Null);
                ActivityEvent {
                    event_id,
                    occurred_at: at.and_utc(),
                    description: describe_event(&action, &details),
                    action,
                    actor_type,
                }
            })
            .collect(),
    ))
}

fn owns(conn: &mut AnyConnection, customer_id: &str, grant_id: &str) -> StorageResult<bool> {
    let n: i64 = grants::table
        .filter(grants::id.eq(grant_id))
        .filter(grants::customer_id.eq(customer_id))
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}

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
    let live: Vec<String> = grants::table
        .filter(grants::customer_id.eq(customer_id))
        .filter(grants::status.eq_any(GrantStatus::LIVE_STR))
        .select(grants::id)
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
        grants::table
            .filter(grants::id.eq(grant_id))
            .filter(grants::customer_id.eq(customer_id)),
    )
    .set(grants::updated_at.eq(grants::updated_at))
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
    ) = grants::table
        .filter(grants::id.eq(grant_id))
        .select((
            grants::client_id,
            grants::status,
            grants::authorization_details,
            grants::created_at,
            grants::authorized_at,
            grants::expires_at,
            grants::reconfirmed_at,
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
    diesel::update(grants::table.filter(grants::id.eq(grant_id)))
        .set((
            grants::expires_at.eq(new_expiry.naive_utc()),
            grants::authorization_details.eq(&stored),
            grants::last_used_at.eq(Some(now.trunc_subsecs(0).naive_utc())),
            grants::expiry_warned_at.eq(None::<NaiveDateTime>),
            grants::dormancy_warned_at.eq(None::<NaiveDateTime>),
            grants::reconfirmed_at.eq(Some(now.trunc_subsecs(0).naive_utc())),
            grants::updated_at.eq(now_naive),
        ))
        .execute(conn)?;
    // Refresh tokens are issued with `min(issue + ttl, grant expiry)`: those that reach the old
    // expiry were capped by it.
    let capped: Vec<(String, NaiveDateTime, NaiveDateTime)> = refresh_tokens::table
        .filter(refresh_tokens::grant_id.eq(grant_id))
        .filter(refresh_tokens::status.eq("active"))
        .filter(refresh_tokens::expires_at.ge(expires_at))
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
    audit::record(
        conn,
        &NewEvent::new(
            Actor::customer(customer_id),
            "grant.extended",
            Target::new("grant", grant_id),
        )
        .details(serde_json::json!({
            "previous_expires_at": previous_formatted,
            "expires_at": formatted,
            "refresh_tokens_extended": lifted,
        })),
        now,
    )?;
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

/// Caches of names looked up while building several views.
#[derive(Debug, Default)]
struct Lookup {
    accounts: Option<HashMap<String, AccountView>>,
    merchants: HashMap<String, String>,
    clients: HashMap<String, Option<developer_portal::ClientDisplay>>,
    /// Each client's own dormancy period in days, if it has one.
    dormancy_days: HashMap<String, Option<i32>>,
}

/// The dormancy period that applies to `client_id`'s grants: the bank's default, or the client's
/// own shorter one (`clients.dormancy_days`), as the lifecycle sweeper applies it.
fn effective_dormancy(
    conn: &mut AnyConnection,
    ctx: &mut Lookup,
    client_id: &str,
    default: Duration,
) -> StorageResult<Duration> {
    let days = match ctx.dormancy_days.get(client_id) {
        Some(d) => *d,
        None => {
            let d: Option<i32> = clients::table
                .filter(clients::id.eq(client_id))
                .select(clients::dormancy_days)
                .first::<Option<i32>>(conn)
                .optional()?
                .flatten();
            ctx.dormancy_days.insert(client_id.to_string(), d);
            d
        }
    };
    Ok(crate::lifecycle::dormancy_period(days, default))
}

/// The notice for an authorized grant ending at `expires_at` (or, if sooner, at its dormancy
/// `deadline` after its last activity at `active_since`), if that end is within the lead time.
fn notice(
    expires_at: DateTime<Utc>,
    deadline: DateTime<Utc>,
    active_since: DateTime<Utc>,
    lead_time: Duration,
    now: DateTime<Utc>,
) -> Option<GrantNotice> {
    let ends_at = expires_at.min(deadline);
    if ends_at - now > lead_time {
        return None;
    }
    Some(if expires_at <= deadline {
        GrantNotice {
            kind: NOTICE_EXPIRING.into(),
            message: format!(
                "This access ends on {}. Extend it to keep the app connected.",
                format_day(expires_at)
            ),
            ends_at,
        }
    } else {
        let when = if deadline <= now {
            "at the next check".to_string()
        } else {
            format!("on {}", format_day(deadline))
        };
        GrantNotice {
            kind: NOTICE_DORMANT_SOON.into(),
            message: format!(
                "This app has not used its access since {}; it will be disconnected {when} \
                 unless you extend it.",
                format_day(active_since)
            ),
            ends_at,
        }
    })
}

fn view(
    conn: &mut AnyConnection,
    master_key: &MasterKey,
    customer_id: &str,
    ctx: &mut Lookup,
    r: GrantRow,
    policy: &LifecyclePolicy,
    now: DateTime<Utc>,
) -> StorageResult<GrantView> {
    let details: Vec<AccountAccessDetail> =
        serde_json::from_str(&r.authorization_details).unwrap_or_default();
    if ctx.accounts.is_none() {
        let rows: Vec<(String, String, String, String)> = accounts::table
            .filter(accounts::customer_id.eq(customer_id))
            .select((
                accounts::id,
                accounts::name,
                accounts::masked_number,
                accounts::currency,
            ))
            .load(conn)?;
        ctx.accounts = Some(
            rows.into_iter()
                .map(|(id, name, masked_number, currency)| {
                    (
                        id.clone(),
                        AccountView {
                            id,
                            name,
                            masked_number,
                            currency,
                        },
                    )
                })
                .collect(),
        );
    }
    let known = ctx.accounts.as_ref();
    let mut actions = Vec::new();
    let mut account_views = Vec::new();
    let mut merchant_ids: Option<Vec<String>> = None;
    let (mut from, mut until) = (None, None);
    for d in &details {
        for a in &d.actions {
            if !actions.iter().any(|v: &ActionView| &v.action == a) {
                actions.push(ActionView {
                    action: a.clone(),
                    description: describe_action(a).into(),
                });
            }
        }
        for id in d.accounts.iter().flatten() {
            let v = known
                .and_then(|m| m.get(id))
                .cloned()
                .unwrap_or_else(|| AccountView {
                    id: id.clone(),
                    name: id.clone(),
                    masked_number: String::new(),
                    currency: String::new(),
                });
            account_views.push(v);
        }
        if let Some(m) = &d.merchants {
            merchant_ids.get_or_insert_with(Vec::new).extend(m.clone());
        }
        from = from.or(d.transactions_from.clone());
        until = until.or(d.transactions_until.clone());
    }
    let merchant_views = match merchant_ids {
        None => None,
        Some(ids) => {
            let missing: Vec<String> = ids
                .iter()
                .filter(|id| !ctx.merchants.contains_key(*id))
                .cloned()
                .collect();
            if !missing.is_empty() {
                let rows: Vec<(String, String)> = merchants::table
                    .filter(merchants::id.eq_any(&missing))
                    .select((merchants::id, merchants::name))
                    .load(conn)?;
                ctx.merchants.extend(rows);
            }
            Some(
                ids.into_iter()
                    .map(|id| MerchantView {
                        name: ctx
                            .merchants
                            .get(&id)
                            .cloned()
                            .unwrap_or_else(|| id.clone()),
                        id,
                    })
                    .collect(),
            )
        }
    };
    let client = match ctx.clients.get(&r.client_id) {
        Some(c) => c.clone(),
        None => {
            let c = developer_portal::client_display(conn, master_key, &r.client_id)?;
            ctx.clients.insert(r.client_id.clone(), c.clone());
            c
        }
    };
    let (client_name, environment, verified_legal_name) = match client {
        Some(c) => (c.name, c.environment, c.verified_legal_name),
        None => ("Deleted app".to_string(), "unknown".to_string(), None),
    };
    let operator_label = match (&verified_legal_name, environment.as_str()) {
        (Some(name), _) => name.clone(),
        (None, "sandbox") => "Sandbox, unverified".to_string(),
        (None, _) => "Unverified operator".to_string(),
    };
    let expires_at = r.expires_at.and_utc();
    let status = if is_live(&r.status) && expires_at <= now {
        "expired".to_string()
    } else {
        r.status
    };
    let (dormancy_deadline, grant_notice) = if status == GrantStatus::Authorized.as_str() {
        let active_since = r
            .last_used_at
            .or(r.authorized_at)
            .unwrap_or(r.created_at)
            .and_utc();
        let period = effective_dormancy(conn, ctx, &r.client_id, policy.dormancy_period)?;
        let deadline = active_since + period;
        (
            Some(deadline),
            notice(
                expires_at,
                deadline,
                active_since,
                policy.warning_lead_time,
                now,
            ),
        )
    } else {
        (None, None)
    };
    Ok(GrantView {
        grant_id: r.id,
        client_id: r.client_id,
        client_name,
        environment,
        verified: verified_legal_name.is_some(),
        verified_legal_name,
        operator_label,
        active: is_live(&status),
        status,
        revoked_by: r.revoked_by,
        created_at: r.created_at.and_utc(),
        authorized_at: r.authorized_at.map(|t| t.and_utc()),
        expires_at,
        last_used_at: r.last_used_at.map(|t| t.and_utc()),
        revoked_at: r.revoked_at.map(|t| t.and_utc()),
        actions,
        accounts: account_views,
        transactions_from: from,
        transactions_until: until,
        merchants: merchant_views,
        authorization_details: details,
        dormancy_deadline,
        notice: grant_notice,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_described_in_plain_language() {
        let none = serde_json::json!({});
        assert_eq!(
            describe_event("token.issued", &none),
            "The app received access to your data"
        );
        assert_eq!(
            describe_event("grant.revoked", &serde_json::json!({"by": "customer"})),
            "You ended this app's access"
        );
        assert_eq!(
            describe_event(
                "resource.read",
                &serde_json::json!({"resource": "balances"})
            ),
            "The app read an account balance"
        );
        assert!(describe_event("weird.thing", &none).contains("weird.thing"));
        assert_eq!(
            describe_event(
                "grant.extended",
                &serde_json::json!({"expires_at": "2026-12-03T10:00:00Z"})
            ),
            "You extended this app's access until 3 Dec 2026"
        );
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_notice_appears_within_the_lead_time_of_the_sooner_end() {
        let now = at("2026-11-26T12:00:00Z");
        let lead = Duration::days(7);
        let far = at("2027-03-01T00:00:00Z");
        let since = at("2026-09-01T08:00:00Z");
        // Far from both ends: nothing.
        assert_eq!(notice(far, far, since, lead, now), None);
        // Expiry first, within the lead time.
        let n = notice(at("2026-12-03T10:00:00Z"), far, since, lead, now).unwrap();
        assert_eq!(n.kind, NOTICE_EXPIRING);
        assert_eq!(n.ends_at, at("2026-12-03T10:00:00Z"));
        assert_eq!(
            n.message,
            "This access ends on 3 Dec 2026. Extend it to keep the app connected."
        );
        // Exactly at the lead time: still a notice; one second later: none.
        assert!(notice(now + lead, far, since, lead, now).is_some());
        assert!(notice(now + lead + Duration::seconds(1), far, since, lead, now).is_none());
        // Dormancy first.
        let n = notice(far, at("2026-11-30T08:00:00Z"), since, lead, now).unwrap();
        assert_eq!(n.kind, NOTICE_DORMANT_SOON);
        assert_eq!(n.ends_at, at("2026-11-30T08:00:00Z"));
        assert_eq!(
            n.message,
            "This app has not used its access since 1 Sep 2026; it will be disconnected on \
             30 Nov 2026 unless you extend it."
        );
        // Dormancy deadline already passed (not yet swept).
        let n = notice(far, now - Duration::hours(1), since, lead, now).unwrap();
        assert!(
            n.message.contains("disconnected at the next check"),
            "{n:?}"
        );
    }
}
