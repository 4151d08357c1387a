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

/// An authorization code as stored.
#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = authorization_codes)]
pub(super) struct StoredCode {
    pub(super) code_hash: String,
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    pub(super) code_challenge: String,
    pub(super) expires_at: NaiveDateTime,
    pub(super) used_at: Option<NaiveDateTime>,
    /// The DPoP key the authorization request was bound to (PAR's `dpop_jkt` or proof).
    pub(super) dpop_jkt: Option<String>,
}

/// An authorization code, joined with its grant and the grant's client.
#[derive(Clone)]
pub(super) struct CodeRow {
    pub(super) code: StoredCode,
    pub(super) grant: GrantRecord,
    /// The grant's client.
    pub(super) client: OAuthClient,
}

/// Codes by hash, each joined with its grant and the grant's client: one indexed query for any
/// number of hashes (a batch's). Pairs each row with its hash.
pub(super) fn load_codes(
    c: &mut AnyConnection,
    hashes: &[String],
) -> Result<Vec<(String, CodeRow)>, StorageError> {
    let rows: Vec<(StoredCode, GrantRecord, ClientRow)> = authorization_codes::table
        .inner_join(grant_rows::table.inner_join(clients::table))
        .filter(authorization_codes::code_hash.eq_any(hashes))
        .select((
            StoredCode::as_select(),
            GrantRecord::as_select(),
            ClientRow::as_select(),
        ))
        .load(c)?;
    Ok(rows
        .into_iter()
        .map(|(code, grant, client)| {
            let hash = code.code_hash.clone();
            let client = client.into();
            (
                hash,
                CodeRow {
                    code,
                    grant,
                    client,
                },
            )
        })
        .collect())
}

/// The key the tokens of a code are bound to, or why the request is refused: RFC 9449 section
/// 10, a code bound at PAR (`dpop_jkt` or a proof) needs a proof from the same key; without a
/// binding, a proof binds the tokens to its key from here on. Decided before the code is spent,
/// so a thief without the key cannot burn it (and, through the replay rule, end the customer's
/// grant). Written once for both paths.
pub(super) fn code_binding<'a>(
    bound: Option<&'a str>,
    proven: Option<&'a str>,
    client: &OAuthClient,
) -> Result<Option<&'a str>, OAuthError> {
    match (bound, proven) {
        (Some(_), None) => Err(OAuthError::InvalidDpopProof(
            "the authorization request was bound to a DPoP key: send a proof it signed".into(),
        )),
        (Some(b), Some(p)) if b != p => Err(OAuthError::InvalidDpopProof(
            "the DPoP proof was signed by another key than the authorization request named".into(),
        )),
        (None, None) if client.must_use_dpop() => Err(dpop_required()),
        (b, p) => Ok(b.or(p)),
    }
}

/// The rules a spent code must meet to be exchanged (it is spent whether or not it meets them):
/// unexpired, the same redirect URI, the PKCE verifier, a live grant. Written once for both
/// paths.
pub(super) fn code_refusal(
    expires_at: NaiveDateTime,
    code_redirect: &str,
    challenge: &str,
    exchange: &CodeExchange<'_>,
    grant: &GrantRecord,
    now: DateTime<Utc>,
) -> Option<OAuthError> {
    let now = now.naive_utc();
    if expires_at <= now {
        return Some(invalid_grant("the authorization code has expired"));
    }
    if exchange.redirect_uri != Some(code_redirect) {
        return Some(invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    if !exchange
        .code_verifier
        .is_some_and(|v| pkce_matches(v, challenge))
    {
        return Some(invalid_grant(
            "code_verifier does not match the code_challenge",
        ));
    }
    if !grant.is_authorized() || grant.expires_at <= now {
        return Some(invalid_grant("the grant is no longer active"));
    }
    None
}

/// `grant_type=authorization_code` on the transactional path ([`super::batched::exchange`]
/// answers the plain cases first on PostgreSQL).
pub fn exchange_code(
    c: &mut AnyConnection,
    revoked: &mut Revocations,
    svc: &OAuthService,
    client: &OAuthClient,
    exchange: CodeExchange<'_>,
    now: DateTime<Utc>,
) -> Result<TokenResponse, OAuthError> {
    let code = exchange.code;
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
                authorization_codes::dpop_jkt,
            ))
            .first(c)
            .optional()?;
        let Some((grant_id, code_client, code_redirect, challenge, expires_at, bound)) = row else {
            return Ok(Err(invalid_grant("the authorization code is invalid")));
        };
        if code_client != client.id {
            return Ok(Err(invalid_grant(
                "the authorization code was issued to another client",
            )));
        }
        let key = match code_binding(bound.as_deref(), exchange.proven_jkt, client) {
            Ok(key) => key,
            Err(e) => return Ok(Err(e)),
        };
        // RFC 8705: likewise before the code is spent.
        let x5t = match (client.must_use_certificate(), exchange.certificate) {
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
        let Some(grant) = load_grant(c, &grant_id)? else {
            return Ok(Err(invalid_grant("the grant no longer exists")));
        };
        if let Some(e) = code_refusal(
            expires_at,
            &code_redirect,
            &challenge,
            &exchange,
            &grant,
            now,
        ) {
            return Ok(Err(e));
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
