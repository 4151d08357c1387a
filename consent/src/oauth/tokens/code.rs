//! `grant_type=authorization_code`: single-use codes, PKCE S256, replay ends the grant.

use super::*;

pub(super) fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let valid = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    valid && constant_time_eq(computed.as_bytes(), challenge.as_bytes())
}

/// The parameters of `grant_type=authorization_code` besides client authentication.
#[derive(Debug, Clone, Copy)]
pub struct CodeExchange<'a> {
    pub code: &'a str,
    pub redirect_uri: Option<&'a str>,
    pub code_verifier: Option<&'a str>,
    /// The key of the request's DPoP proof (checked and recorded by the caller).
    pub proven_jkt: Option<&'a str>,
    /// The thumbprint of the request's TLS client certificate.
    pub certificate: Option<&'a str>,
}

/// `grant_type=authorization_code`.
pub fn exchange_code(
    c: &mut AnyConnection,
    revoked: &mut Revocations,
    svc: &OAuthService,
    client: &OAuthClient,
    exchange: CodeExchange<'_>,
    now: DateTime<Utc>,
) -> Result<TokenResponse, OAuthError> {
    let CodeExchange {
        code,
        redirect_uri,
        code_verifier,
        proven_jkt,
        certificate,
    } = exchange;
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
            Option<String>,
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
                authorization_codes::dpop_jkt,
            ))
            .first(c)
            .optional()?;
        let Some((grant_id, code_client, code_redirect, challenge, expires_at, _, bound)) = row
        else {
            return Ok(Err(invalid_grant("the authorization code is invalid")));
        };
        if code_client != client.id {
            return Ok(Err(invalid_grant(
                "the authorization code was issued to another client",
            )));
        }
        // RFC 9449 section 10: a code bound at PAR (`dpop_jkt` or a proof) needs a proof from the
        // same key. Without a binding, a proof binds the tokens to its key from here on. Checked
        // before the code is spent, so a thief without the key cannot burn it (and, through the
        // replay rule, end the customer's grant).
        let key = match (bound.as_deref(), proven_jkt) {
            (Some(_), None) => {
                return Ok(Err(OAuthError::InvalidDpopProof(
                    "the authorization request was bound to a DPoP key: send a proof it signed"
                        .into(),
                )));
            }
            (Some(b), Some(p)) if b != p => {
                return Ok(Err(OAuthError::InvalidDpopProof(
                    "the DPoP proof was signed by another key than the authorization request named"
                        .into(),
                )));
            }
            (None, None) if client.must_use_dpop() => {
                return Ok(Err(dpop_required()));
            }
            (b, p) => b.or(p),
        };
        // RFC 8705: likewise before the code is spent.
        let x5t = match (client.must_use_certificate(), certificate) {
            (true, None) => return Ok(Err(certificate_required())),
            (true, Some(c)) => Some(c),
            (false, _) => None,
        };
        // The grant first (the lock order), so a concurrent Grant Management change (which locks
        // it, ends its tokens and deletes its unexchanged codes) is either wholly before this
        // exchange or wholly after it.
        platform::revocation::lock_grants(
            c,
            std::slice::from_ref(&grant_id),
            platform::revocation::TokenLocks::None,
        )?;
        // Single use: whoever flips used_at first wins; anyone else is replaying.
        let won = diesel::update(
            authorization_codes::table
                .filter(authorization_codes::code_hash.eq(hash.as_str()))
                .filter(authorization_codes::used_at.is_null()),
        )
        .set(authorization_codes::used_at.eq(now.naive_utc()))
        .execute(c)?;
        if won != 1 {
            // Lost: read the code again (only on this path) to tell a replay from a code that a
            // change of its grant deleted meanwhile, which is unknown now, not a replay.
            let still_there = authorization_codes::table
                .filter(authorization_codes::code_hash.eq(hash.as_str()))
                .count()
                .get_result::<i64>(c)?
                > 0;
            if !still_there {
                return Ok(Err(invalid_grant("the authorization code is invalid")));
            }
            revoke_for_security(
                c,
                revoked,
                &grant_id,
                &client.id,
                "authorization_code.reused",
                now,
            )?;
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
        if grant.status != GrantStatus::Authorized.as_str() || grant.expires_at <= now.naive_utc() {
            return Ok(Err(invalid_grant("the grant is no longer active")));
        }
        let family = random_id("fam_");
        let family = Family {
            id: &family,
            refresh_jkt: key,
            access_jkt: key,
            access_x5t: x5t,
            kept: None,
        };
        issue(c, svc, &grant, client, family, "token.issued", now)
    })?
}
