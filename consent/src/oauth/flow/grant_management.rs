//! OpenID Grant Management for OAuth 2.0: an authorization request may change a grant the client
//! already holds instead of creating one (`grant_id` + `grant_management_action`):
//! - `create` (or no action): a new grant, as always;
//! - `merge`: the customer consents to more, and the grant allows both what it allowed and what
//!   they chose now (the consent page shows the difference);
//! - `replace`: the grant allows exactly what the customer chose now (say, a narrower scope),
//!   keeping its id and history.
//!
//! Either way the grant's earlier refresh tokens end and its unexpired access tokens go on the
//! revocation feed when the customer approves: the client exchanges the new code for tokens of
//! the new scope, and offline verifiers refuse the old ones. A `grant_id` that names no live grant
//! of this client (checked at PAR and at the authorization endpoint) or of this customer (checked
//! on the consent page and at the decision) is `invalid_grant_id`.

use super::*;
use chrono::NaiveDateTime;
use platform::revocation::{Revocations, TokenLocks, lock_grants, revoke_tokens};
use platform::storage::models::{GrantRecord, RefreshTokenStatus};
use platform::storage::schema::{issued_tokens, refresh_tokens};

/// What a request does to an existing grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantAction {
    Merge,
    Replace,
}

impl GrantAction {
    /// The `authorization_requests.grant_action` value.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantAction::Merge => "merge",
            GrantAction::Replace => "replace",
        }
    }

    /// The audit event (and revocation reason) of an applied change.
    pub fn event(self) -> &'static str {
        match self {
            GrantAction::Merge => "grant.merged",
            GrantAction::Replace => "grant.replaced",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [GrantAction::Merge, GrantAction::Replace]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// The actions this server supports (metadata `grant_management_actions_supported`).
pub const ACTIONS_SUPPORTED: [&str; 3] = ["create", "merge", "replace"];

/// Reads `grant_id` and `grant_management_action` of a request: `None` creates a grant.
pub fn requested(p: &AuthorizationParams) -> Result<Option<(GrantAction, String)>, OAuthError> {
    let id = p.grant_id.as_deref();
    match (p.grant_management_action.as_deref(), id) {
        (None | Some("create"), None) => Ok(None),
        (None | Some("create"), Some(_)) => Err(OAuthError::InvalidRequest(
            "grant_id needs grant_management_action merge or replace".into(),
        )),
        (Some(action), id) => {
            let action = GrantAction::parse(action).ok_or_else(|| {
                OAuthError::InvalidRequest(
                    "grant_management_action must be create, merge or replace".into(),
                )
            })?;
            let id = id.ok_or_else(|| {
                OAuthError::InvalidRequest(format!(
                    "grant_management_action {} needs grant_id",
                    action.as_str()
                ))
            })?;
            if !crate::dashboard::valid_grant_id(id) {
                return Err(invalid_grant_id());
            }
            Ok(Some((action, id.to_string())))
        }
    }
}

pub(super) fn invalid_grant_id() -> OAuthError {
    OAuthError::InvalidGrantId("grant_id names no active grant of this client".into())
}

/// The grant `id`, if it is live (authorized, unexpired) and the client's (and, once known, the
/// customer's); `invalid_grant_id` otherwise, the same for every reason.
pub fn live_grant(
    c: &mut AnyConnection,
    id: &str,
    client_id: &str,
    customer_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Result<GrantRecord, OAuthError>, StorageError> {
    let grant: Option<GrantRecord> = grant_rows::table
        .filter(grant_rows::id.eq(id))
        .select(GrantRecord::as_select())
        .first(c)
        .optional()?;
    Ok(match grant {
        Some(g)
            if g.client_id == client_id
                && customer_id.is_none_or(|cust| g.customer_id == cust)
                && g.is_authorized()
                && g.expires_at > now.naive_utc() =>
        {
            Ok(g)
        }
        _ => Err(invalid_grant_id()),
    })
}

/// Locks `id` and reads it live (see [`live_grant`]); then nothing can end or change it before
/// the caller's transaction ends. Reads only: a refusal leaves nothing written.
pub(super) fn lock_live(
    c: &mut AnyConnection,
    id: &str,
    client_id: &str,
    customer_id: &str,
    now: DateTime<Utc>,
) -> Result<Result<GrantRecord, OAuthError>, StorageError> {
    lock_grants(c, &[id.to_string()], TokenLocks::Active)?;
    live_grant(c, id, client_id, Some(customer_id), now)
}

/// What `grant` allows after `action` with what the customer `chosen`. No I/O.
pub(super) fn planned(
    grant: &GrantRecord,
    action: GrantAction,
    chosen: AccessRequest,
) -> Result<AccessRequest, ConsentError> {
    match action {
        GrantAction::Replace => Ok(chosen),
        GrantAction::Merge => AccessRequest::from_stored(&grant.authorization_details)
            .and_then(|current| current.merged(&chosen))
            .map_err(|e| ConsentError::Invalid(e.description().into())),
    }
}

/// Applies an approved change to `grant` (locked and checked by [`lock_live`]): its new
/// details and expiry; its refresh tokens and unexchanged codes end and its unexpired access
/// tokens go on the revocation feed. Every check is done before: this only writes.
pub(super) fn apply(
    c: &mut AnyConnection,
    revoked: &mut Revocations,
    grant: &GrantRecord,
    action: GrantAction,
    granted: &AccessRequest,
    customer_id: &str,
    now: DateTime<Utc>,
) -> Result<(), StorageError> {
    let now_naive = now.naive_utc().trunc_subsecs(0);
    diesel::update(grant_rows::table.filter(grant_rows::id.eq(&grant.id)))
        .set((
            grant_rows::authorization_details.eq(granted.to_json()),
            grant_rows::expires_at.eq(granted.expires_at.naive_utc()),
            grant_rows::updated_at.eq(now_naive),
        ))
        .execute(c)?;
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::grant_id.eq(&grant.id))
            .filter(refresh_tokens::status.eq(RefreshTokenStatus::Active.as_str())),
    )
    .set(refresh_tokens::status.eq(RefreshTokenStatus::Revoked.as_str()))
    .execute(c)?;
    // Codes issued for the grant before and not yet exchanged go too (the decision's own code
    // is written after this). Deleted, not spent: presenting one is then an unknown code, not a
    // replay that would end the grant the customer just changed.
    diesel::delete(
        authorization_codes::table
            .filter(authorization_codes::grant_id.eq(&grant.id))
            .filter(authorization_codes::used_at.is_null()),
    )
    .execute(c)?;
    let live: Vec<(String, NaiveDateTime)> = issued_tokens::table
        .filter(issued_tokens::grant_id.eq(&grant.id))
        // Recently expired ones too: verifiers whose clocks run behind still accept them.
        .filter(
            issued_tokens::expires_at
                .gt((now - platform::revocation::RETENTION_MARGIN).naive_utc()),
        )
        .select((issued_tokens::revocation_id, issued_tokens::expires_at))
        .load(c)?;
    if let Some(last) = live.iter().map(|(_, e)| *e).max() {
        let ids: Vec<String> = live.into_iter().map(|(id, _)| id).collect();
        revoke_tokens(
            c,
            revoked,
            &grant.id,
            &ids,
            action.event(),
            last.and_utc(),
            now,
        )?;
    }
    NewEvent::new(
        Actor::customer(customer_id),
        action.event(),
        Target::new("grant", grant.id.clone()),
    )
    .details(serde_json::json!({
        "client_id": grant.client_id,
        "before": serde_json::from_str::<serde_json::Value>(&grant.authorization_details).unwrap_or_default(),
        "after": serde_json::from_str::<serde_json::Value>(&granted.to_json()).unwrap_or_default(),
    }))
    .record(c, now)?;
    // The client's Shared Signals receivers hear that the grant's tokens now claim less or more
    // (CAEP token-claims-change), in this transaction.
    platform::ssf::enqueue(
        c,
        &[platform::webhooks::Event::grant(
            platform::ssf::GRANT_SCOPE_CHANGED,
            grant.client_id.clone(),
            grant.id.clone(),
            serde_json::json!({ "authorization_details": [granted.to_detail()] }),
        )],
        now,
    )?;
    Ok(())
}
