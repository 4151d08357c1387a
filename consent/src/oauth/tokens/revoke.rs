//! RFC 7009 revocation, and the offline verification of our own access tokens it needs.

use super::*;

/// RFC 7009. Revoking a refresh token ends its grant (and so every token of it); revoking an
/// access token puts its revocation ids on the revocation list. Unknown tokens and tokens of
/// other clients are ignored (the response is the same). An access token must have been
/// verified beforehand, off the connection ([`verify_offline`]): `verified` is what that found.
pub fn revoke(
    c: &mut AnyConnection,
    revoked: &mut Revocations,
    client: &OAuthClient,
    token: &str,
    verified: Option<OurToken>,
    now: DateTime<Utc>,
) -> Result<(), OAuthError> {
    if token.is_empty() || token.len() > MAX_PRESENTED_TOKEN {
        return Ok(());
    }
    write_tx(c, |c| {
        if is_refresh_token(token) {
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
                    revoked,
                    &[grant_id],
                    RevokedBy::Client,
                    "token_revoked_by_client",
                    &Actor::client(&client.id),
                    now,
                ),
                _ => Ok(vec![]),
            }
        } else {
            let Some(auth) = verified else {
                return Ok(vec![]);
            };
            if auth.client != client.id {
                return Ok(vec![]);
            }
            let listed = platform::revocation::revoke_tokens(
                c,
                revoked,
                &auth.grant,
                &auth.revocation_ids,
                "access_token_revoked_by_client",
                auth.authority_expires_at,
                now,
            )?;
            if listed == 0 {
                // Revoked before: nothing changes, so nothing to audit.
                return Ok(vec![]);
            }
            NewEvent::new(
                Actor::client(&client.id),
                "access_token.revoked",
                Target::new("grant", auth.grant.clone()),
            )
            .record(c, now)?;
            Ok(vec![])
        }
    })?;
    Ok(())
}

/// Longest token text revocation and introspection look at (longer ones are unknown tokens).
pub(super) const MAX_PRESENTED_TOKEN: usize = 8192;

/// Refresh tokens are opaque `rt_...`; anything else is read as a Biscuit access token.
pub fn is_refresh_token(token: &str) -> bool {
    token.starts_with("rt_")
}

/// An access token verified as ours: signed by one of our keys and unexpired (any action).
#[derive(Debug, Clone)]
pub struct OurToken {
    pub(super) grant: String,
    pub(super) client: String,
    pub(super) revocation_ids: Vec<String>,
    /// The DPoP key the token is bound to.
    pub(super) cnf_jkt: Option<String>,
    /// The TLS client certificate the token is bound to.
    pub(super) cnf_x5t: Option<String>,
    /// When this token stops working (attenuated expiry included).
    pub(super) expires_at: DateTime<Utc>,
    /// The authority block's expiry: its first revocation id is shared with the token it was
    /// attenuated from (and that token's other attenuations), which may live until then.
    pub(super) authority_expires_at: DateTime<Utc>,
}

/// Verifies an access token offline on the verification pool ([`crate::verification`]), never
/// on the caller's thread or inside a database connection. `Ok(None)`: not a valid token of
/// ours; `Err`: the pool is full (answer 503).
pub async fn verify_offline(
    svc: &OAuthService,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<OurToken>, OAuthError> {
    if token.is_empty() || token.len() > MAX_PRESENTED_TOKEN || is_refresh_token(token) {
        return Ok(None);
    }
    let keys = svc.keys.current().keyset;
    let token = token.to_string();
    let cache = svc.decoded.clone();
    svc.verify
        .run(move || verify_ours(keys, cache, &token, now))
        .await
        .map_err(|e| OAuthError::TemporarilyUnavailable(e.to_string()))
}

/// Verifies that `token` is a Biscuit signed by one of our keys and not expired (any action).
pub(super) fn verify_ours(
    keys: std::sync::Arc<::grants::KeySet>,
    cache: ::grants::DecodeCache,
    token: &str,
    now: DateTime<Utc>,
) -> Option<OurToken> {
    let info = ::grants::inspect(token).ok()?;
    let summary = info.grant?;
    // One decode for all the actions tried below, and none for a token seen before.
    let verifier = ::grants::Verifier::new(keys, ::grants::NoRevocationCheck).with_cache(cache);
    // Some granted action must still be allowed. Only a denial depends on the action: any
    // other refusal (signature, expiry, limits) would repeat for every action, so stop there.
    let mut auth = None;
    for action in &summary.actions {
        // The token's DPoP and certificate bindings are the resource server's to enforce;
        // introspection reports them (`cnf`), and anyone holding the token may revoke it.
        let listing = ::grants::Request::new(action.clone(), now);
        match verifier.verify_reporting_binding(token, &listing) {
            Ok(a) => {
                auth = Some(a);
                break;
            }
            Err(::grants::error::VerifyError::Denied(_)) => continue,
            Err(_) => return None,
        }
    }
    let auth = auth?;
    Some(OurToken {
        grant: auth.scope.grant.as_str().to_string(),
        client: auth.scope.client.as_str().to_string(),
        revocation_ids: auth.revocation_ids.clone(),
        cnf_jkt: auth.cnf_jkt.clone(),
        cnf_x5t: auth.cnf_x5t.clone(),
        expires_at: auth.scope.expires_at,
        authority_expires_at: summary.expires_at,
    })
}
