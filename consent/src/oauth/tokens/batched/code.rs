//! The code exchange through the batch statements: the plain case of [`super::super::exchange_code`].
//!
//! A known, unused, unexpired code of an authorized, unexpired grant, presented by its own client
//! with valid credentials, the redirect URI and PKCE verifier it was issued with, and the DPoP
//! proof it was bound to (if any), is read through the code-read batch and spent by the exchange
//! statement with everything the exchange writes, in one statement and one commit per batch.
//! Everything else - an unknown or used code, a wrong verifier or redirect URI, a missing or
//! another key's proof, a certificate-bound client, a code spent or a grant ended meanwhile, a
//! failed batch statement - is declined (`None`), and the transactional path decides it with its
//! precise error: it spends the code where it always did and ends the grant on a replay. The
//! rules are the ones that path uses ([`code_binding`], [`code_refusal`]); the statement re-checks
//! under the grant's row lock what can change between the read and the write.

use chrono::{DateTime, Utc};
use platform::crypto::{PlainToken, random_id};

use super::super::super::OAuthService;
use super::super::super::clients::ClientCredentials;
use super::super::super::error::OAuthError;
use super::super::{
    CodeExchange, TokenResponse, code_binding, code_refusal, dpop_only, mint_issue,
};
use super::statements::Exchange;
use super::{TokenBatches, read_authenticated, refreshed};

/// The plain code exchange (see the module documentation); `None` sends the request down the
/// transactional path. An `invalid_client` answer is final: the presented client is the code's
/// client and its credentials failed, exactly as the transactional path would decide.
pub async fn exchange(
    svc: &OAuthService,
    batch: &TokenBatches,
    creds: &ClientCredentials,
    exchange: CodeExchange<'_>,
    now: DateTime<Utc>,
) -> Option<Result<TokenResponse, OAuthError>> {
    let code = exchange.code;
    if code.is_empty() || code.len() > 256 {
        return None;
    }
    let hash = PlainToken::from_presented(code).hash().into_string();
    let row = match read_authenticated(&batch.codes, hash.clone(), creds, |r| &r.client).await {
        Ok(row) => row,
        Err(e) => return e.map(Err),
    };
    let stored = &row.code;
    let refused = code_refusal(
        stored.expires_at,
        &stored.redirect_uri,
        &stored.code_challenge,
        &exchange,
        &row.grant,
        now,
    );
    if stored.used_at.is_some()
        || stored.client_id != row.client.id
        || row.client.must_use_certificate()
        || refused.is_some()
    {
        return None;
    }
    let key = code_binding(stored.dpop_jkt.as_deref(), exchange.proven_jkt, &row.client).ok()?;
    let key = key.map(str::to_string);
    let family = random_id("fam_");
    let cnf = key.as_deref().map(dpop_only).unwrap_or_default();
    let mut issue = mint_issue(svc, &row.grant, &row.client, &family, cnf, now).ok()?;
    let job = Exchange {
        code_hash: hash,
        refresh_id: random_id("rtk_"),
        refresh_hash: std::mem::take(&mut issue.refresh_hash),
        event_id: random_id("evt_"),
        jkt: key,
        refreshed: refreshed(&mut issue, row.grant.id, family, row.client.id, now),
    };
    match batch.exchanges.submit(job).await {
        Ok(true) => {
            platform::audit::recorded(1);
            Some(Ok(issue.response))
        }
        Ok(false) => None,
        Err(e) => Some(Err(e.into())),
    }
}
