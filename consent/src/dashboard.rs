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

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use platform::audit::Actor;
use platform::crypto::MasterKey;
use platform::revocation::{RevokedBy, end_grants};
use platform::storage::schema::{accounts, audit_events, grants, merchants};
use platform::storage::{AnyConnection, StorageResult};
use serde::Serialize;

use crate::oauth::rar::AccountAccessDetail;

/// Reason recorded in the revocation feed when a customer ends a grant.
pub const REVOKED_BY_CUSTOMER: &str = "revoked_by_customer";
/// At most this many activity events are returned per grant (newest first).
pub const ACTIVITY_LIMIT: i64 = 200;

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
    matches!(status, "awaiting_authorization" | "authorized")
}

/// Every grant of `customer_id`, newest first: live ones (`active`) and ended ones.
pub fn list_grants(
    conn: &mut AnyConnection,
    master_key: &MasterKey,
    customer_id: &str,
    now: DateTime<Utc>,
) -> StorageResult<Vec<GrantView>> {
    let rows: Vec<GrantRow> = grants::table
        .filter(grants::customer_id.eq(customer_id))
        .order((grants::created_at.desc(), grants::id.desc()))
        .select(GRANT_COLUMNS)
        .load(conn)?;
    let mut ctx = Lookup::default();
    rows.into_iter()
        .map(|r| view(conn, master_key, customer_id, &mut ctx, r, now))
        .collect()
}

/// One grant of `customer_id`; `None` when it does not exist or belongs to someone else.
pub fn get_grant(
    conn: &mut AnyConnection,
    master_key: &MasterKey,
    customer_id: &str,
    grant_id: &str,
    now: DateTime<Utc>,
) -> StorageResult<Option<GrantView>> {
    let row: Option<GrantRow> = grants::table
        .filter(grants::id.eq(grant_id))
        .filter(grants::customer_id.eq(customer_id))
        .select(GRANT_COLUMNS)
        .first(conn)
        .optional()?;
    let mut ctx = Lookup::default();
    row.map(|r| view(conn, master_key, customer_id, &mut ctx, r, now))
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

/// Revokes one grant of the customer (call inside a write transaction, then publish the ids of
/// [`RevokeOutcome::Revoked`]).
pub fn revoke(
    conn: &mut AnyConnection,
    customer_id: &str,
    grant_id: &str,
    now: DateTime<Utc>,
) -> StorageResult<RevokeOutcome> {
    if !owns(conn, customer_id, grant_id)? {
        return Ok(RevokeOutcome::NotFound);
    }
    let ended = end_grants(
        conn,
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

/// Revokes every live grant of the customer; returns the ids that ended (call inside a write
/// transaction).
pub fn revoke_all(
    conn: &mut AnyConnection,
    customer_id: &str,
    now: DateTime<Utc>,
) -> StorageResult<Vec<String>> {
    let live: Vec<String> = grants::table
        .filter(grants::customer_id.eq(customer_id))
        .filter(grants::status.eq_any(["awaiting_authorization", "authorized"]))
        .select(grants::id)
        .load(conn)?;
    end_grants(
        conn,
        &live,
        RevokedBy::Customer,
        REVOKED_BY_CUSTOMER,
        &Actor::customer(customer_id),
        now,
    )
}

/// Caches of names looked up while building several views.
#[derive(Debug, Default)]
struct Lookup {
    accounts: Option<HashMap<String, AccountView>>,
    merchants: HashMap<String, String>,
    clients: HashMap<String, Option<developer_portal::ClientDisplay>>,
}

fn view(
    conn: &mut AnyConnection,
    master_key: &MasterKey,
    customer_id: &str,
    ctx: &mut Lookup,
    r: GrantRow,
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
    }
}
