//! `grant_type=refresh_token` on the transactional path: rotation, replay detection.

use platform::revocation::{TokenLocks, lock_grants};
use platform::storage::models::RefreshTokenStatus;

use super::*;

/// A refresh token with its grant.
#[derive(Clone)]
pub(super) struct RefreshRow {
    pub(super) id: String,
    pub(super) family: String,
    pub(super) status: String,
    pub(super) expires_at: NaiveDateTime,
    /// The DPoP key the family is bound to: each refresh needs a proof from it.
    pub(super) dpop_jkt: Option<String>,
    pub(super) grant: GrantRecord,
    /// The grant's client.
    pub(super) client: OAuthClient,
}

/// Refresh tokens by hash, each joined with its grant and the grant's client: one indexed query
/// for any number of hashes (one request's, or a batch's). Pairs each row with its hash.
pub(super) fn load_refreshes(
    c: &mut AnyConnection,
    hashes: &[String],
) -> Result<Vec<(String, RefreshRow)>, StorageError> {
    type Row = (
        (
            String,
            String,
            String,
            String,
            NaiveDateTime,
            Option<String>,
        ),
        GrantRecord,
        ClientRow,
    );
    let rows: Vec<Row> = refresh_tokens::table
        .inner_join(grant_rows::table.inner_join(clients::table))
        .filter(refresh_tokens::token_hash.eq_any(hashes))
        .select((
            (
                refresh_tokens::token_hash,
                refresh_tokens::id,
                refresh_tokens::family_id,
                refresh_tokens::status,
                refresh_tokens::expires_at,
                refresh_tokens::dpop_jkt,
            ),
            GrantRecord::as_select(),
            ClientRow::as_select(),
        ))
        .load(c)?;
    Ok(rows
        .into_iter()
        .map(
            |((hash, id, family, status, expires_at, dpop_jkt), grant, client)| {
                let row = RefreshRow {
                    id,
                    family,
                    status,
                    expires_at,
                    dpop_jkt,
                    grant,
                    client: client.into(),
                };
                (hash, row)
            },
        )
        .collect())
}

/// [`load_refreshes`] for one hash.
pub(super) fn load_refresh(
    c: &mut AnyConnection,
    hash: &str,
) -> Result<Option<RefreshRow>, StorageError> {
    Ok(load_refreshes(c, &[hash.to_string()])?
        .pop()
        .map(|(_, row)| row))
}

/// What the refresh rules say of a token row, for the client presenting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Valid,
    /// Used before: a replay, which ends the grant.
    Replayed,
    Refused(&'static str),
}

impl RefreshRow {
    /// The refresh rules, written once for both paths: the token belongs to `client_id`, is
    /// active and unexpired, and its grant is authorized and unexpired. (The batched path only
    /// answers [`Verdict::Valid`] rows; anything else goes to [`refresh`] for the precise error
    /// and the replay response. The batched rotation statement re-checks `status = 'active'`
    /// under its row lock, which is what makes rotation single-use.)
    pub(super) fn verdict(&self, client_id: &str, now: DateTime<Utc>) -> Verdict {
        let now = now.naive_utc();
        if self.grant.client_id != client_id {
            return Verdict::Refused("the refresh token was issued to another client");
        }
        match self.status.as_str() {
            s if s == RefreshTokenStatus::Active.as_str() => {}
            s if s == RefreshTokenStatus::Used.as_str() => return Verdict::Replayed,
            _ => return Verdict::Refused("the refresh token has been revoked"),
        }
        if self.expires_at <= now {
            return Verdict::Refused("the refresh token has expired");
        }
        if !self.grant.is_authorized() || self.grant.expires_at <= now {
            return Verdict::Refused("the grant is no longer active");
        }
        Verdict::Valid
    }
}

/// `grant_type=refresh_token`: authenticates the client, then rotates the refresh token; a
/// replayed one ends the grant.
///
/// The token is looked up first, joined with its grant and the grant's client, so that in the
/// common case one query serves both client authentication and the token (authentication still
/// completes before anything about the token is decided or revealed). On PostgreSQL,
/// [`batched::refresh`] answers the plain cases first; this path decides the rest.
pub fn refresh(
    c: &mut AnyConnection,
    revoked: &mut Revocations,
    svc: &OAuthService,
    creds: &ClientCredentials,
    token: &str,
    proven: ::grants::Confirmation<'_>,
    now: DateTime<Utc>,
) -> Result<TokenResponse, OAuthError> {
    // What the request proves: a DPoP key (its proof was checked and recorded by the caller),
    // a TLS client certificate.
    let ::grants::Confirmation {
        jkt: proven_jkt,
        x5t: certificate,
    } = proven;
    let plausible = !token.is_empty() && token.len() <= 256;
    let hash = PlainToken::from_presented(token).hash();
    let found = match plausible {
        true => load_refresh(c, hash.as_str())?,
        false => None,
    };
    let client = oauth_clients::authenticate_with(c, creds, found.as_ref().map(|r| &r.client))?;
    let Some(found) = found else {
        return Err(invalid_grant("the refresh token is invalid"));
    };
    let client = &client;
    write_tx(c, |c| {
        // The grant, then (by the UPDATE below) the token: the lock order of
        // `platform::revocation::lock_grants`. A token's grant never changes, so the read above
        // names it.
        lock_grants(c, std::slice::from_ref(&found.grant.id), TokenLocks::None)?;
        // Token and grant as they are now, inside the transaction (and after the lock).
        let Some(row) = load_refresh(c, hash.as_str())? else {
            return Ok(Err(invalid_grant("the refresh token is invalid")));
        };
        let grant = &row.grant;
        match row.verdict(&client.id, now) {
            Verdict::Valid => {}
            Verdict::Replayed => {
                let reason = "refresh_token.replayed";
                revoke_for_security(c, revoked, &grant.id, &client.id, reason, now)?;
                return Ok(Err(replayed()));
            }
            Verdict::Refused(why) => return Ok(Err(invalid_grant(why))),
        }
        if client.must_use_dpop() && proven_jkt.is_none() {
            return Ok(Err(dpop_required()));
        }
        // RFC 8705: a certificate-bound client's tokens are bound to the certificate it connects
        // with now (a client may renew its certificate; its refresh token is bound to the
        // client through client authentication, not to one certificate).
        let x5t = match (client.must_use_certificate(), certificate) {
            (true, None) => return Ok(Err(certificate_required())),
            (true, Some(c)) => Some(c),
            (false, _) => None,
        };
        // A bound family (FAPI 2.0): the token is sender-constrained, so it is not rotated, and
        // a retried refresh whose answer was lost is one more refresh, not a replay.
        if let Some(bound) = row.dpop_jkt.as_deref() {
            if proven_jkt != Some(bound) {
                return Ok(Err(OAuthError::InvalidDpopProof(
                    "this refresh token is bound to a DPoP key: send a proof it signed".into(),
                )));
            }
            let family = Family {
                id: &row.family,
                refresh_jkt: Some(bound),
                access_jkt: Some(bound),
                access_x5t: x5t,
                kept: Some((&row.id, token)),
            };
            return issue(c, svc, grant, client, family, "token.refreshed", now);
        }
        // A certificate-bound client's family is not rotated either (FAPI 2.0): the refresh
        // token is useless without the client's authentication, and a retried refresh whose
        // answer was lost must not end the grant.
        if x5t.is_some() {
            let family = Family {
                id: &row.family,
                refresh_jkt: None,
                access_jkt: proven_jkt,
                access_x5t: x5t,
                kept: Some((&row.id, token)),
            };
            return issue(c, svc, grant, client, family, "token.refreshed", now);
        }
        let won = diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::id.eq(&row.id))
                .filter(refresh_tokens::status.eq(RefreshTokenStatus::Active.as_str())),
        )
        .set((
            refresh_tokens::status.eq(RefreshTokenStatus::Used.as_str()),
            refresh_tokens::used_at.eq(now.naive_utc()),
        ))
        .execute(c)?;
        if won != 1 {
            let reason = "refresh_token.replayed";
            revoke_for_security(c, revoked, &grant.id, &client.id, reason, now)?;
            return Ok(Err(replayed()));
        }
        // A bearer family stays bearer; a proof binds the new access token (RFC 9449 section 5).
        let family = Family {
            id: &row.family,
            refresh_jkt: None,
            access_jkt: proven_jkt,
            access_x5t: None,
            kept: None,
        };
        issue(c, svc, grant, client, family, "token.refreshed", now)
    })?
}
