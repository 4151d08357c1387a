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
    /// What the token allows, attenuation included (introspection reports this, not the
    /// grant's whole scope): see [`allowed_access`]. `None` when a block is Datalog of the
    /// holder's own beyond the documented forms: what such a token allows can depend on the
    /// request as a whole, and one entry could say more than it allows.
    pub(super) allows: Option<AccessRequest>,
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
    // Some granted action must still be allowed; each one is tried as a listing, and what each
    // allows makes up what the token allows. Only a denial depends on the action: any other
    // refusal (signature, expiry, limits) would repeat for every action, so stop there.
    let mut auth = None;
    let mut others = Vec::new();
    let mut exact = true;
    for action in &summary.actions {
        // The token's DPoP and certificate bindings are the resource server's to enforce;
        // introspection reports them (`cnf`), and anyone holding the token may revoke it.
        let listing = ::grants::Request::new(action.clone(), now);
        match verifier.verify_reporting_binding(token, &listing) {
            Ok(a) if auth.is_none() => {
                exact &= a.exact;
                auth = Some((action.clone(), a));
            }
            Ok(a) => {
                exact &= a.exact;
                others.push((action.clone(), a.scope));
            }
            Err(::grants::error::VerifyError::Denied(_)) => continue,
            Err(_) => return None,
        }
    }
    let (first, auth) = auth?;
    let allows = exact.then(|| allowed_access(first, &auth.scope, &others));
    Some(OurToken {
        grant: auth.scope.grant.as_str().to_string(),
        client: auth.scope.client.as_str().to_string(),
        revocation_ids: auth.revocation_ids.clone(),
        cnf_jkt: auth.cnf_jkt.clone(),
        cnf_x5t: auth.cnf_x5t.clone(),
        expires_at: auth.scope.expires_at,
        authority_expires_at: summary.expires_at,
        allows,
    })
}

/// What an attenuated token allows, as the one `account_access` entry an answer carries: an
/// entry is a product (every action on every account, in the window, at the merchants), so it
/// holds the first action the token allows with the accounts, window and merchants its listing
/// allows, then each further allowed action whose own listing allows all of those too, the
/// dimensions narrowed to what both allow. The entry never reports more than the token allows;
/// a token whose blocks give different accounts to different actions (not one product) is
/// reported as the part of it that is one. Expiry: the earliest.
pub(super) fn allowed_access(
    first: ::grants::Action,
    scope: &::grants::EffectiveScope,
    others: &[(::grants::Action, ::grants::EffectiveScope)],
) -> AccessRequest {
    let mut allows = AccessRequest {
        actions: vec![first],
        accounts: Some(scope.accounts.clone()),
        window: scope.window,
        merchants: scope.merchants.clone(),
        expires_at: scope.expires_at,
    };
    for (action, other) in others {
        let accounts: Vec<_> = allows
            .accounts
            .iter()
            .flatten()
            .filter(|a| other.accounts.contains(a))
            .cloned()
            .collect();
        let window = match (allows.window, other.window) {
            (Some(a), Some(b)) => {
                let (from, until) = (a.from().max(b.from()), a.until().min(b.until()));
                match ::grants::TxWindow::new(from, until) {
                    Ok(w) => Some(w),
                    Err(_) => continue,
                }
            }
            (a, b) => a.or(b),
        };
        let merchants = match (&allows.merchants, &other.merchants) {
            (Some(a), Some(b)) => Some(a.iter().filter(|m| b.contains(m)).cloned().collect()),
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        if accounts.is_empty() || merchants.as_ref().is_some_and(Vec::is_empty) {
            continue;
        }
        allows.actions.push(action.clone());
        allows.accounts = Some(accounts);
        allows.window = window;
        allows.merchants = merchants;
        allows.expires_at = allows.expires_at.min(other.expires_at);
    }
    allows
}

#[cfg(test)]
mod tests {
    use ::grants::{AccountId, Action, ClientId, EffectiveScope, GrantId, SubjectId, TxWindow};
    use chrono::{Datelike, TimeZone, Utc};

    use super::allowed_access;

    fn scope(accounts: &[&str], window: Option<(u32, u32)>, hours: i64) -> EffectiveScope {
        let day = |d: u32| Utc.with_ymd_and_hms(2026, 1, d, 0, 0, 0).unwrap();
        EffectiveScope {
            grant: GrantId::parse("g_1").unwrap(),
            client: ClientId::parse("c_1").unwrap(),
            subject: SubjectId::parse("cust_1").unwrap(),
            accounts: accounts
                .iter()
                .map(|a| AccountId::parse(*a).unwrap())
                .collect(),
            actions: vec![],
            window: window.map(|(f, u)| TxWindow::new(day(f), day(u)).unwrap()),
            merchants: None,
            expires_at: Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()
                + chrono::Duration::hours(hours),
        }
    }

    /// One entry is a product: an action joins only where it allows every account and date the
    /// entry already holds, narrowed to what both allow; the earliest expiry counts.
    #[test]
    fn the_reported_entry_never_holds_more_than_each_action_allows() {
        let first = scope(&["acc_a", "acc_b"], Some((1, 20)), 5);
        let others = [
            // Fewer accounts and a shorter window: joins, and narrows the entry.
            (
                Action::BalancesRead,
                scope(&["acc_b", "acc_c"], Some((10, 30)), 2),
            ),
            // No account in common: left out (it would give it `acc_b`).
            (Action::TransactionsRead, scope(&["acc_a"], None, 1)),
        ];
        let allows = allowed_access(Action::AccountsRead, &first, &others);
        assert_eq!(
            allows.actions,
            vec![Action::AccountsRead, Action::BalancesRead]
        );
        assert_eq!(
            allows.accounts,
            Some(vec![AccountId::parse("acc_b").unwrap()])
        );
        let w = allows.window.unwrap();
        assert_eq!((w.from().day(), w.until().day()), (10, 20));
        assert_eq!(allows.expires_at, others[0].1.expires_at);

        // Windows that do not meet: the second action is left out.
        let others = [(
            Action::TransactionsRead,
            scope(&["acc_a", "acc_b"], Some((25, 30)), 0),
        )];
        let allows = allowed_access(Action::AccountsRead, &first, &others);
        assert_eq!(allows.actions, vec![Action::AccountsRead]);
        assert_eq!(allows.expires_at, first.expires_at);
    }
}
