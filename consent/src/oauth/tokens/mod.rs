//! The token endpoint (authorization_code, refresh_token), revocation (RFC 7009) and
//! introspection (RFC 7662).

use ::grants::{ClientId, Grant, GrantId, GrantScope, SubjectId};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use platform::audit::{Actor, NewEvent, Target};
use platform::crypto::{PlainToken, constant_time_eq, random_id};
use platform::revocation::{Revocations, RevokedBy, end_grants};
use platform::storage::models::RefreshTokenStatus;
use platform::storage::models::{GrantRecord, GrantStatus};
use platform::storage::schema::{
    authorization_codes, clients, grant_rows, issued_tokens, refresh_tokens, revocations,
};
use platform::storage::{AnyConnection, StorageError, write_tx};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::OAuthService;
use super::clients::{self as oauth_clients, ClientCredentials, ClientRow, OAuthClient};
use super::error::OAuthError;
use super::rar::{AccessRequest, AccountAccessDetail};

/// RFC 6749 token response, with the granted authorization details (RFC 9396) and grant id.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// A Biscuit (base64url).
    pub access_token: String,
    /// `DPoP` for a token bound to the client's DPoP key (RFC 9449): it works only with a proof
    /// that key signed.
    #[schema(value_type = crate::openapi::values::AccessTokenType)]
    pub token_type: String,
    pub expires_in: i64,
    /// Opaque. A bearer family's is single-use and rotated on every refresh. A DPoP-bound
    /// family's is not rotated (FAPI 2.0): each use needs a fresh proof from the key, and a
    /// refresh answers back the same token.
    pub refresh_token: String,
    pub scope: String,
    pub grant_id: String,
    /// What the customer granted (possibly narrowed from the request).
    pub authorization_details: Vec<AccountAccessDetail>,
}

pub mod batched;
mod code;
mod introspect;
mod refresh;
mod revoke;

pub use code::*;
pub use introspect::*;
pub use refresh::*;
pub use revoke::*;

fn load_grant(c: &mut AnyConnection, id: &str) -> Result<Option<GrantRecord>, StorageError> {
    Ok(grant_rows::table
        .filter(grant_rows::id.eq(id))
        .select(GrantRecord::as_select())
        .first(c)
        .optional()?)
}

/// RFC 9449 section 5.2: a client registered with `dpop_bound_access_tokens`, and every
/// production client (FAPI 2.0), gets no token without a proof.
fn dpop_required() -> OAuthError {
    OAuthError::InvalidDpopProof(
        "this client must use DPoP (dpop_bound_access_tokens, or a production client): send a \
         proof"
            .into(),
    )
}

/// RFC 8705 section 3: a client registered with `tls_client_certificate_bound_access_tokens`
/// gets no token without a TLS client certificate to bind it to.
fn certificate_required() -> OAuthError {
    OAuthError::InvalidRequest(
        "this client's tokens are bound to its TLS client certificate \
         (tls_client_certificate_bound_access_tokens): connect with it over mutual TLS"
            .into(),
    )
}

/// The confirmation of a token bound to a DPoP key only.
fn dpop_only(jkt: &str) -> ::grants::Confirmation<'_> {
    ::grants::Confirmation {
        jkt: Some(jkt),
        x5t: None,
    }
}

fn invalid_grant(msg: &str) -> OAuthError {
    OAuthError::InvalidGrant(msg.into())
}

/// The refresh token family a token issue belongs to, and its DPoP binding.
#[derive(Debug, Clone, Copy)]
pub(super) struct Family<'a> {
    pub(super) id: &'a str,
    /// The key the family's refresh tokens are bound to (a new family's, when rotating).
    pub(super) refresh_jkt: Option<&'a str>,
    /// The key the access token is bound to (`cnf_jkt`).
    pub(super) access_jkt: Option<&'a str>,
    /// The TLS client certificate the access token is bound to (`cnf_x5t`).
    pub(super) access_x5t: Option<&'a str>,
    /// `Some((id, token))`: the presented refresh token stays valid (bound families are not
    /// rotated) and is answered back; `None`: a new refresh token is issued.
    pub(super) kept: Option<(&'a str, &'a str)>,
}

/// What one token issue produces: the response and what must be stored with it.
struct Issue {
    response: TokenResponse,
    refresh_hash: String,
    refresh_expires: NaiveDateTime,
    access_hash: String,
    /// Revocation ids of the access token, one per block (the first is the authority's).
    revocation_ids: Vec<String>,
    access_expires: NaiveDateTime,
    /// Audit details (ids and times only).
    details: serde_json::Value,
}

/// Mints an access token and a fresh refresh token for `grant` in `family` (no I/O).
fn mint_issue(
    svc: &OAuthService,
    grant: &GrantRecord,
    oauth_client: &OAuthClient,
    family: &str,
    cnf: ::grants::Confirmation<'_>,
    now: DateTime<Utc>,
) -> Result<Issue, OAuthError> {
    let access = AccessRequest::from_stored(&grant.authorization_details)?;
    let server_err =
        |e: &dyn std::fmt::Display| OAuthError::ServerError(format!("cannot mint: {e}"));
    let scope = GrantScope::new(
        access.accounts.clone().unwrap_or_default(),
        access.actions.clone(),
        access.window,
        access.merchants.clone(),
        access.expires_at,
    )
    .map_err(|e| server_err(&e))?;
    let ids = (
        GrantId::parse(grant.id.clone()),
        ClientId::parse(grant.client_id.clone()),
        SubjectId::parse(grant.customer_id.clone()),
    );
    let (Ok(id), Ok(client), Ok(subject)) = ids else {
        return Err(OAuthError::ServerError(
            "stored ids do not fit the token vocabulary".into(),
        ));
    };
    let keys = svc.keys.current();
    let ttl = svc.platform.settings.tokens.access_token_ttl.as_chrono();
    let grant_facts = Grant {
        id,
        client,
        subject,
        scope,
        // A sandbox client's tokens say so: a production verifier refuses them.
        environment: if oauth_client.is_production() {
            ::grants::Environment::Production
        } else {
            ::grants::Environment::Sandbox
        },
    };
    let minted = ::grants::mint_confirmed(&keys.active, &grant_facts, cnf, now + ttl, now)
        .map_err(|e| invalid_grant(&format!("the grant cannot be used: {e}")))?;
    let refresh = PlainToken::generate("rt_");
    let refresh_expires =
        (now + svc.platform.settings.tokens.refresh_token_ttl.as_chrono()).min(access.expires_at);
    let details = serde_json::json!({
        "kid": minted.kid,
        "family": family,
        "expires_at": ::grants::format_timestamp(minted.expires_at),
        "dpop_bound": cnf.jkt.is_some(),
        "certificate_bound": cnf.x5t.is_some(),
    });
    Ok(Issue {
        refresh_hash: refresh.hash().into_string(),
        refresh_expires: refresh_expires.naive_utc(),
        access_hash: PlainToken::from_presented(&minted.token)
            .hash()
            .into_string(),
        revocation_ids: minted.revocation_ids.clone(),
        access_expires: minted.expires_at.naive_utc(),
        details,
        response: TokenResponse {
            expires_in: (minted.expires_at - now).num_seconds().max(0),
            access_token: minted.token,
            // A certificate-bound token is still presented as Bearer (RFC 8705 section 3).
            token_type: if cnf.jkt.is_some() { "DPoP" } else { "Bearer" }.into(),
            refresh_token: refresh.expose().to_string(),
            scope: access.scope_string(),
            grant_id: grant.id.clone(),
            authorization_details: vec![access.to_detail()],
        },
    })
}

/// Dormancy works in days: a write per token issue would only add row churn, so `last_used_at`
/// is refreshed at most once a minute.
fn use_cutoff(now: DateTime<Utc>) -> NaiveDateTime {
    (now - chrono::Duration::minutes(1)).naive_utc()
}

/// Mints and stores an access token for `grant` in `family`, with a fresh refresh token unless
/// the family keeps its own, in the caller's transaction.
fn issue(
    c: &mut AnyConnection,
    svc: &OAuthService,
    grant: &GrantRecord,
    client: &OAuthClient,
    family: Family<'_>,
    action: &'static str,
    now: DateTime<Utc>,
) -> Result<Result<TokenResponse, OAuthError>, StorageError> {
    let cnf = ::grants::Confirmation {
        jkt: family.access_jkt,
        x5t: family.access_x5t,
    };
    let mut issue = match mint_issue(svc, grant, client, family.id, cnf, now) {
        Ok(i) => i,
        Err(e) => return Ok(Err(e)),
    };
    match family.kept {
        None => {
            diesel::insert_into(refresh_tokens::table)
                .values((
                    refresh_tokens::id.eq(random_id("rtk_")),
                    refresh_tokens::token_hash.eq(&issue.refresh_hash),
                    refresh_tokens::grant_id.eq(&grant.id),
                    refresh_tokens::family_id.eq(family.id),
                    refresh_tokens::status.eq(RefreshTokenStatus::Active.as_str()),
                    refresh_tokens::created_at.eq(now.naive_utc()),
                    refresh_tokens::expires_at.eq(issue.refresh_expires),
                    refresh_tokens::dpop_jkt.eq(family.refresh_jkt),
                ))
                .execute(c)?;
        }
        Some((kept, presented)) => {
            // Not rotated: the token the client holds slides forward as a new one would have,
            // and is answered back (clients that replace their stored token set keep it).
            diesel::update(refresh_tokens::table.filter(refresh_tokens::id.eq(kept)))
                .set(refresh_tokens::expires_at.eq(issue.refresh_expires))
                .execute(c)?;
            issue.response.refresh_token = presented.to_string();
        }
    }
    for (i, rid) in issue.revocation_ids.iter().enumerate() {
        diesel::insert_into(issued_tokens::table)
            .values((
                issued_tokens::revocation_id.eq(rid),
                issued_tokens::grant_id.eq(&grant.id),
                issued_tokens::family_id.eq(Some(family.id)),
                issued_tokens::token_hash.eq((i == 0).then_some(issue.access_hash.as_str())),
                issued_tokens::expires_at.eq(issue.access_expires),
                issued_tokens::dpop_jkt.eq(family.access_jkt),
                issued_tokens::cnf_x5t.eq(family.access_x5t),
            ))
            .execute(c)?;
    }
    if grant.last_used_at.is_none_or(|t| t < use_cutoff(now)) {
        diesel::update(grant_rows::table.filter(grant_rows::id.eq(&grant.id)))
            .set(grant_rows::last_used_at.eq(now.naive_utc().trunc_subsecs(0)))
            .execute(c)?;
    }
    NewEvent::new(
        Actor::client(&grant.client_id),
        action,
        Target::new("grant", grant.id.clone()),
    )
    .details(issue.details)
    .record(c, now)?;
    Ok(Ok(issue.response))
}

/// Ends a grant after a detected replay; the caller's transaction commits it even though the
/// request fails.
fn revoke_for_security(
    c: &mut AnyConnection,
    revoked: &mut Revocations,
    grant_id: &str,
    client_id: &str,
    reason: &'static str,
    now: DateTime<Utc>,
) -> Result<(), StorageError> {
    end_grants(
        c,
        revoked,
        &[grant_id.to_string()],
        RevokedBy::Security,
        reason,
        &Actor::system("token-endpoint"),
        now,
    )?;
    NewEvent::new(
        Actor::client(client_id),
        reason,
        Target::new("grant", grant_id.to_string()),
    )
    .record(c, now)?;
    metrics::counter!("consent_token_replays_total", "kind" => reason).increment(1);
    Ok(())
}

fn replayed() -> OAuthError {
    invalid_grant("the refresh token was already used; the grant has been revoked")
}

/// Whether the grant's use is due to be recorded (at most once a minute).
fn use_due(grant: &GrantRecord, now: DateTime<Utc>) -> bool {
    grant.last_used_at.is_none_or(|t| t < use_cutoff(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX",
            challenge
        ));
        assert!(!pkce_matches("short", challenge));
        assert!(
            !pkce_matches(challenge, challenge),
            "plain is never accepted"
        );
    }
}
