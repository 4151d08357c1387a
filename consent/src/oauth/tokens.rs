//! The token endpoint (authorization_code, refresh_token), revocation (RFC 7009) and
//! introspection (RFC 7662).

use ::grants::{ClientId, Grant, GrantId, GrantScope, SubjectId};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use platform::audit::{self, Actor, NewEvent, Target};
use platform::crypto::{PlainToken, constant_time_eq, random_id};
use platform::revocation::{RevokedBy, end_grants};
use platform::storage::schema::{
    authorization_codes, grants, issued_tokens, refresh_tokens, revocations,
};
use platform::storage::{AnyConnection, StorageError, write_tx};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::OAuthService;
use super::clients::OAuthClient;
use super::error::OAuthError;
use super::rar::{AccessRequest, AccountAccessDetail};

/// RFC 6749 token response, with the granted authorization details (RFC 9396) and grant id.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// A Biscuit (base64url).
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    pub expires_in: i64,
    /// Opaque, single-use, rotated on every refresh.
    pub refresh_token: String,
    pub scope: String,
    pub grant_id: String,
    /// What the customer granted (possibly narrowed from the request).
    pub authorization_details: Vec<AccountAccessDetail>,
}

struct GrantRow {
    id: String,
    customer_id: String,
    client_id: String,
    status: String,
    details: String,
    expires_at: NaiveDateTime,
    last_used_at: Option<NaiveDateTime>,
}

fn load_grant(c: &mut AnyConnection, id: &str) -> Result<Option<GrantRow>, StorageError> {
    type Row = (
        String,
        String,
        String,
        String,
        String,
        NaiveDateTime,
        Option<NaiveDateTime>,
    );
    let row: Option<Row> = grants::table
        .filter(grants::id.eq(id))
        .select((
            grants::id,
            grants::customer_id,
            grants::client_id,
            grants::status,
            grants::authorization_details,
            grants::expires_at,
            grants::last_used_at,
        ))
        .first(c)
        .optional()?;
    Ok(row.map(
        |(id, customer_id, client_id, status, details, expires_at, last_used_at)| GrantRow {
            id,
            customer_id,
            client_id,
            status,
            details,
            expires_at,
            last_used_at,
        },
    ))
}

fn invalid_grant(msg: &str) -> OAuthError {
    OAuthError::InvalidGrant(msg.into())
}

/// Mints an access token and a fresh refresh token for `grant` in `family`, in the caller's
/// transaction.
fn issue(
    c: &mut AnyConnection,
    svc: &OAuthService,
    grant: &GrantRow,
    family: &str,
    action: &'static str,
    now: DateTime<Utc>,
) -> Result<Result<TokenResponse, OAuthError>, StorageError> {
    let access = match AccessRequest::from_stored(&grant.details) {
        Ok(a) => a,
        Err(e) => return Ok(Err(e)),
    };
    let server_err =
        |e: &dyn std::fmt::Display| OAuthError::ServerError(format!("cannot mint: {e}"));
    let scope = match GrantScope::new(
        access.accounts.clone().unwrap_or_default(),
        access.actions.clone(),
        access.window,
        access.merchants.clone(),
        access.expires_at,
    ) {
        Ok(s) => s,
        Err(e) => return Ok(Err(server_err(&e))),
    };
    let ids = (
        GrantId::parse(grant.id.clone()),
        ClientId::parse(grant.client_id.clone()),
        SubjectId::parse(grant.customer_id.clone()),
    );
    let (Ok(id), Ok(client), Ok(subject)) = ids else {
        return Ok(Err(OAuthError::ServerError(
            "stored ids do not fit the token vocabulary".into(),
        )));
    };
    let keys = svc.keys.current();
    let ttl = svc.platform.settings.tokens.access_token_ttl.as_chrono();
    let minted = match ::grants::mint(
        &keys.active,
        &Grant {
            id,
            client,
            subject,
            scope,
        },
        now + ttl,
        now,
    ) {
        Ok(m) => m,
        Err(e) => {
            return Ok(Err(invalid_grant(&format!(
                "the grant cannot be used: {e}"
            ))));
        }
    };
    let refresh = PlainToken::generate("rt_");
    let refresh_expires =
        (now + svc.platform.settings.tokens.refresh_token_ttl.as_chrono()).min(access.expires_at);
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::id.eq(random_id("rtk_")),
            refresh_tokens::token_hash.eq(refresh.hash().as_str()),
            refresh_tokens::grant_id.eq(&grant.id),
            refresh_tokens::family_id.eq(family),
            refresh_tokens::status.eq("active"),
            refresh_tokens::created_at.eq(now.naive_utc()),
            refresh_tokens::expires_at.eq(refresh_expires.naive_utc()),
        ))
        .execute(c)?;
    let token_hash = PlainToken::from_presented(&minted.token).hash();
    for (i, rid) in minted.revocation_ids.iter().enumerate() {
        diesel::insert_into(issued_tokens::table)
            .values((
                issued_tokens::revocation_id.eq(rid),
                issued_tokens::grant_id.eq(&grant.id),
                issued_tokens::family_id.eq(Some(family)),
                issued_tokens::token_hash.eq((i == 0).then_some(token_hash.as_str())),
                issued_tokens::expires_at.eq(minted.expires_at.naive_utc()),
            ))
            .execute(c)?;
    }
    // Dormancy works in days: a write per token issue would only add row churn, so
    // `last_used_at` is refreshed at most once a minute.
    if grant
        .last_used_at
        .is_none_or(|t| t < (now - chrono::Duration::minutes(1)).naive_utc())
    {
        diesel::update(grants::table.filter(grants::id.eq(&grant.id)))
            .set(grants::last_used_at.eq(now.naive_utc().trunc_subsecs(0)))
            .execute(c)?;
    }
    audit::record(
        c,
        &NewEvent::new(Actor::client(&grant.client_id), action, Target::new("grant", grant.id.clone()))
            .details(serde_json::json!({ "kid": minted.kid, "family": family, "expires_at": ::grants::format_timestamp(minted.expires_at) })),
        now,
    )?;
    Ok(Ok(TokenResponse {
        access_token: minted.token,
        token_type: "Bearer".into(),
        expires_in: (minted.expires_at - now).num_seconds().max(0),
        refresh_token: refresh.expose().to_string(),
        scope: access.scope_string(),
        grant_id: grant.id.clone(),
        authorization_details: vec![access.to_detail()],
    }))
}

/// Ends a grant after a detected replay; the caller's transaction commits it even though the
/// request fails.
fn revoke_for_security(
    c: &mut AnyConnection,
    grant_id: &str,
    client_id: &str,
    reason: &'static str,
    now: DateTime<Utc>,
) -> Result<(), StorageError> {
    end_grants(
        c,
        &[grant_id.to_string()],
        RevokedBy::Security,
        reason,
        &Actor::system("token-endpoint"),
        now,
    )?;
    audit::record(
        c,
        &NewEvent::new(
            Actor::client(client_id),
            reason,
            Target::new("grant", grant_id.to_string()),
        ),
        now,
    )?;
    metrics::counter!("consent_token_replays_total", "kind" => reason).increment(1);
    Ok(())
}

fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let valid = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    valid && constant_time_eq(computed.as_bytes(), challenge.as_bytes())
}

/// `grant_type=authorization_code`.
pub fn exchange_code(
    c: &mut AnyConnection,
    svc: &OAuthService,
    client: &OAuthClient,
    code: &str,
    redirect_uri: Option<&str>,
    code_verifier: Option<&str>,
    now: DateTime<Utc>,
) -> Result<TokenResponse, OAuthError> {
    if code.is_empty() || code.len() > 256 {
        return Err(invalid_grant("the authorization code is invalid"));
    }
    let hash = PlainToken::from_presented(code).hash();
    write_tx(c, |c| {
        type CodeRow = (
            String,
            String,
            String,
            String,
            NaiveDateTime,
            Option<NaiveDateTime>,
        );
        let row: Option<CodeRow> = authorization_codes::table
            .filter(authorization_codes::code_hash.eq(hash.as_str()))
            .select((
                authorization_codes::grant_id,
                authorization_codes::client_id,
                authorization_codes::redirect_uri,
                authorization_codes::code_challenge,
                authorization_codes::expires_at,
                authorization_codes::used_at,
            ))
            .first(c)
            .optional()?;
        let Some((grant_id, code_client, code_redirect, challenge, expires_at, used_at)) = row
        else {
            return Ok(Err(invalid_grant("the authorization code is invalid")));
        };
        if code_client != client.id {
            return Ok(Err(invalid_grant(
                "the authorization code was issued to another client",
            )));
        }
        // Single use: whoever flips used_at first wins; anyone else is replaying.
        let won = diesel::update(
            authorization_codes::table
                .filter(authorization_codes::code_hash.eq(hash.as_str()))
                .filter(authorization_codes::used_at.is_null()),
        )
        .set(authorization_codes::used_at.eq(now.naive_utc()))
        .execute(c)?;
        if used_at.is_some() || won != 1 {
            revoke_for_security(c, &grant_id, &client.id, "authorization_code.reused", now)?;
            return Ok(Err(invalid_grant(
                "the authorization code was already used; the grant has been revoked",
            )));
        }
        if expires_at <= now.naive_utc() {
            return Ok(Err(invalid_grant("the authorization code has expired")));
        }
        if redirect_uri != Some(code_redirect.as_str()) {
            return Ok(Err(invalid_grant(
                "redirect_uri does not match the authorization request",
            )));
        }
        if !code_verifier.is_some_and(|v| pkce_matches(v, &challenge)) {
            return Ok(Err(invalid_grant(
                "code_verifier does not match the code_challenge",
            )));
        }
        let Some(grant) = load_grant(c, &grant_id)? else {
            return Ok(Err(invalid_grant("the grant no longer exists")));
        };
        if grant.status != "authorized" || grant.expires_at <= now.naive_utc() {
            return Ok(Err(invalid_grant("the grant is no longer active")));
        }
        issue(c, svc, &grant, &random_id("fam_"), "token.issued", now)
    })?
}

/// `grant_type=refresh_token`: rotates the refresh token; a replayed one ends the grant.
pub fn refresh(
    c: &mut AnyConnection,
    svc: &OAuthService,
    client: &OAuthClient,
    token: &str,
    now: DateTime<Utc>,
) -> Result<TokenResponse, OAuthError> {
    if token.is_empty() || token.len() > 256 {
        return Err(invalid_grant("the refresh token is invalid"));
    }
    let hash = PlainToken::from_presented(token).hash();
    write_tx(c, |c| {
        let row: Option<(String, String, String, String, NaiveDateTime)> = refresh_tokens::table
            .filter(refresh_tokens::token_hash.eq(hash.as_str()))
            .select((
                refresh_tokens::id,
                refresh_tokens::grant_id,
                refresh_tokens::family_id,
                refresh_tokens::status,
                refresh_tokens::expires_at,
            ))
            .first(c)
            .optional()?;
        let Some((id, grant_id, family, status, expires_at)) = row else {
            return Ok(Err(invalid_grant("the refresh token is invalid")));
        };
        let Some(grant) = load_grant(c, &grant_id)? else {
            return Ok(Err(invalid_grant("the refresh token is invalid")));
        };
        if grant.client_id != client.id {
            return Ok(Err(invalid_grant(
                "the refresh token was issued to another client",
            )));
        }
        match status.as_str() {
            "active" => {}
            "used" => {
                revoke_for_security(c, &grant_id, &client.id, "refresh_token.replayed", now)?;
                return Ok(Err(invalid_grant(
                    "the refresh token was already used; the grant has been revoked",
                )));
            }
            _ => return Ok(Err(invalid_grant("the refresh token has been revoked"))),
        }
        if expires_at <= now.naive_utc() {
            return Ok(Err(invalid_grant("the refresh token has expired")));
        }
        if grant.status != "authorized" || grant.expires_at <= now.naive_utc() {
            return Ok(Err(invalid_grant("the grant is no longer active")));
        }
        let won = diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::id.eq(&id))
                .filter(refresh_tokens::status.eq("active")),
        )
        .set((
            refresh_tokens::status.eq("used"),
            refresh_tokens::used_at.eq(now.naive_utc()),
        ))
        .execute(c)?;
        if won != 1 {
            revoke_for_security(c, &grant_id, &client.id, "refresh_token.replayed", now)?;
            return Ok(Err(invalid_grant(
                "the refresh token was already used; the grant has been revoked",
            )));
        }
        issue(c, svc, &grant, &family, "token.refreshed", now)
    })?
}

/// RFC 7009. Revoking a refresh token ends its grant (and so every token of it); revoking an
/// access token puts its revocation ids on the revocation list. Unknown tokens and tokens of
/// other clients are ignored (the response is the same).
pub fn revoke(
    c: &mut AnyConnection,
    svc: &OAuthService,
    client: &OAuthClient,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Vec<String>, OAuthError> {
    if token.is_empty() || token.len() > 8192 {
        return Ok(vec![]);
    }
    let ended = write_tx(c, |c| {
        if token.starts_with("rt_") {
            let hash = PlainToken::from_presented(token).hash();
            let grant_id: Option<String> = refresh_tokens::table
                .filter(refresh_tokens::token_hash.eq(hash.as_str()))
                .select(refresh_tokens::grant_id)
                .first(c)
                .optional()?;
            let Some(grant_id) = grant_id else {
                return Ok(vec![]);
            };
            match load_grant(c, &grant_id)? {
                Some(g) if g.client_id == client.id => end_grants(
                    c,
                    &[grant_id],
                    RevokedBy::Client,
                    "token_revoked_by_client",
                    &Actor::client(&client.id),
                    now,
                ),
                _ => Ok(vec![]),
            }
        } else {
            let Some(auth) = verify_ours(svc, token, now) else {
                return Ok(vec![]);
            };
            if auth.client != client.id {
                return Ok(vec![]);
            }
            for rid in &auth.revocation_ids {
                diesel::insert_into(revocations::table)
                    .values((
                        revocations::grant_id.eq(&auth.grant),
                        revocations::revocation_id.eq(Some(rid)),
                        revocations::reason.eq("access_token_revoked_by_client"),
                        revocations::revoked_at.eq(now.naive_utc()),
                    ))
                    .execute(c)?;
            }
            audit::record(
                c,
                &NewEvent::new(
                    Actor::client(&client.id),
                    "access_token.revoked",
                    Target::new("grant", auth.grant.clone()),
                ),
                now,
            )?;
            Ok(vec![])
        }
    })?;
    Ok(ended)
}

struct OurToken {
    grant: String,
    client: String,
    revocation_ids: Vec<String>,
    expires_at: DateTime<Utc>,
}

/// Verifies that `token` is a Biscuit signed by one of our keys and not expired (any action).
fn verify_ours(svc: &OAuthService, token: &str, now: DateTime<Utc>) -> Option<OurToken> {
    let info = ::grants::inspect(token).ok()?;
    let summary = info.grant?;
    let keys = svc.keys.current();
    let verifier = ::grants::Verifier::new(keys.keyset.clone(), ::grants::NoRevocationCheck);
    let auth = summary
        .actions
        .iter()
        .find_map(|a| verifier.verify_listing(token, a.clone(), now).ok())?;
    Some(OurToken {
        grant: auth.scope.grant.as_str().to_string(),
        client: auth.scope.client.as_str().to_string(),
        revocation_ids: auth.revocation_ids.clone(),
        expires_at: auth.scope.expires_at,
    })
}

/// RFC 7662 response.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// `access_token` or `refresh_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    /// The grant's status (`authorized`, `revoked`, `expired`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<Vec<AccountAccessDetail>>,
}

/// RFC 7662: a token is active when it is ours, unexpired, not revoked, its grant is authorized
/// and unexpired, and it belongs to the asking client. Anything else is `{"active": false}`.
pub fn introspect(
    c: &mut AnyConnection,
    svc: &OAuthService,
    client: &OAuthClient,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Introspection, OAuthError> {
    let inactive = Introspection::default();
    if token.is_empty() || token.len() > 8192 {
        return Ok(inactive);
    }
    let (grant_id, token_type, exp, token_revoked) = if token.starts_with("rt_") {
        let hash = PlainToken::from_presented(token).hash();
        let row: Option<(String, String, NaiveDateTime)> = refresh_tokens::table
            .filter(refresh_tokens::token_hash.eq(hash.as_str()))
            .select((
                refresh_tokens::grant_id,
                refresh_tokens::status,
                refresh_tokens::expires_at,
            ))
            .first(c)
            .optional()?;
        match row {
            Some((g, status, exp)) => (
                g,
                "refresh_token",
                exp.and_utc(),
                status != "active" || exp <= now.naive_utc(),
            ),
            None => return Ok(inactive),
        }
    } else {
        // Fast path: a token exactly as we minted it is found by its hash (its signature was made
        // by us, and nobody can produce another string with the same SHA-256).
        let hash = PlainToken::from_presented(token).hash();
        let minted: Option<(String, String, NaiveDateTime)> = issued_tokens::table
            .filter(issued_tokens::token_hash.eq(hash.as_str()))
            .select((
                issued_tokens::grant_id,
                issued_tokens::revocation_id,
                issued_tokens::expires_at,
            ))
            .first(c)
            .optional()?;
        let (grant, revocation_ids, exp) = match minted {
            Some((g, rid, exp)) => {
                if exp <= now.naive_utc() {
                    return Ok(inactive);
                }
                (g, vec![rid], exp.and_utc())
            }
            // Attenuated (or foreign) tokens: full offline verification.
            None => match verify_ours(svc, token, now) {
                Some(t) => (t.grant, t.revocation_ids, t.expires_at),
                None => return Ok(inactive),
            },
        };
        let revoked: i64 = revocations::table
            .filter(revocations::revocation_id.eq_any(&revocation_ids))
            .count()
            .get_result(c)?;
        (grant, "access_token", exp, revoked > 0)
    };
    let Some(grant) = load_grant(c, &grant_id)? else {
        return Ok(inactive);
    };
    if grant.client_id != client.id {
        return Ok(inactive);
    }
    if token_revoked || grant.status != "authorized" || grant.expires_at <= now.naive_utc() {
        // Tell the owning client why: the grant's status (e.g. revoked by the customer).
        return Ok(Introspection {
            grant_id: Some(grant.id),
            grant_status: Some(grant.status),
            ..inactive
        });
    }
    // An introspection is use of the grant (dormancy is measured from it), recorded at most once
    // a minute: the common case costs no write.
    let cutoff = (now - chrono::Duration::minutes(1)).naive_utc();
    // Best effort: a failed write (e.g. SQLite busy during a sweep) must not fail the answer.
    if grant.last_used_at.is_none_or(|t| t < cutoff)
        && let Err(e) = diesel::update(
            grants::table.filter(grants::id.eq(&grant.id)).filter(
                grants::last_used_at
                    .is_null()
                    .or(grants::last_used_at.lt(cutoff)),
            ),
        )
        .set(grants::last_used_at.eq(now.naive_utc().trunc_subsecs(0)))
        .execute(c)
    {
        tracing::warn!(error = %e, "introspection: recording use of the grant failed");
    }
    let access = AccessRequest::from_stored(&grant.details)?;
    Ok(Introspection {
        active: true,
        client_id: Some(grant.client_id),
        sub: Some(grant.customer_id),
        scope: Some(access.scope_string()),
        exp: Some(exp.timestamp()),
        iss: Some(svc.issuer.clone()),
        token_type: Some(token_type.into()),
        grant_id: Some(grant.id),
        grant_status: Some(grant.status),
        authorization_details: Some(vec![access.to_detail()]),
    })
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
