//! The token endpoint (authorization_code, refresh_token), revocation (RFC 7009) and
//! introspection (RFC 7662).

use ::grants::{ClientId, Grant, GrantId, GrantScope, SubjectId};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use platform::audit::{self, Actor, NewEvent, Target};
use platform::crypto::{PlainToken, constant_time_eq, random_id};
use platform::revocation::{Revocations, RevokedBy, end_grants};
use platform::storage::models::GrantStatus;
use platform::storage::schema::{
    authorization_codes, clients, grants, issued_tokens, refresh_tokens, revocations,
};
use platform::storage::{AnyConnection, StorageError, write_tx};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::OAuthService;
use super::answers::Basis;
use super::clients::{self as oauth_clients, ClientCredentials, ClientRow, OAuthClient};
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

pub mod batched;

/// The grant columns the token endpoint and introspection need.
#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = grants)]
struct GrantRow {
    id: String,
    customer_id: String,
    client_id: String,
    status: String,
    #[diesel(column_name = authorization_details)]
    details: String,
    expires_at: NaiveDateTime,
    last_used_at: Option<NaiveDateTime>,
}

fn load_grant(c: &mut AnyConnection, id: &str) -> Result<Option<GrantRow>, StorageError> {
    Ok(grants::table
        .filter(grants::id.eq(id))
        .select(GrantRow::as_select())
        .first(c)
        .optional()?)
}

fn invalid_grant(msg: &str) -> OAuthError {
    OAuthError::InvalidGrant(msg.into())
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
    grant: &GrantRow,
    family: &str,
    now: DateTime<Utc>,
) -> Result<Issue, OAuthError> {
    let access = AccessRequest::from_stored(&grant.details)?;
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
    let minted = ::grants::mint(
        &keys.active,
        &Grant {
            id,
            client,
            subject,
            scope,
        },
        now + ttl,
        now,
    )
    .map_err(|e| invalid_grant(&format!("the grant cannot be used: {e}")))?;
    let refresh = PlainToken::generate("rt_");
    let refresh_expires =
        (now + svc.platform.settings.tokens.refresh_token_ttl.as_chrono()).min(access.expires_at);
    let details = serde_json::json!({
        "kid": minted.kid,
        "family": family,
        "expires_at": ::grants::format_timestamp(minted.expires_at),
    });
    Ok(Issue {
        refresh_hash: refresh.hash().as_str().to_string(),
        refresh_expires: refresh_expires.naive_utc(),
        access_hash: PlainToken::from_presented(&minted.token)
            .hash()
            .as_str()
            .to_string(),
        revocation_ids: minted.revocation_ids.clone(),
        access_expires: minted.expires_at.naive_utc(),
        details,
        response: TokenResponse {
            expires_in: (minted.expires_at - now).num_seconds().max(0),
            access_token: minted.token,
            token_type: "Bearer".into(),
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

/// Mints and stores an access token and a fresh refresh token for `grant` in `family`, in the
/// caller's transaction.
fn issue(
    c: &mut AnyConnection,
    svc: &OAuthService,
    grant: &GrantRow,
    family: &str,
    action: &'static str,
    now: DateTime<Utc>,
) -> Result<Result<TokenResponse, OAuthError>, StorageError> {
    let issue = match mint_issue(svc, grant, family, now) {
        Ok(i) => i,
        Err(e) => return Ok(Err(e)),
    };
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::id.eq(random_id("rtk_")),
            refresh_tokens::token_hash.eq(&issue.refresh_hash),
            refresh_tokens::grant_id.eq(&grant.id),
            refresh_tokens::family_id.eq(family),
            refresh_tokens::status.eq("active"),
            refresh_tokens::created_at.eq(now.naive_utc()),
            refresh_tokens::expires_at.eq(issue.refresh_expires),
        ))
        .execute(c)?;
    for (i, rid) in issue.revocation_ids.iter().enumerate() {
        diesel::insert_into(issued_tokens::table)
            .values((
                issued_tokens::revocation_id.eq(rid),
                issued_tokens::grant_id.eq(&grant.id),
                issued_tokens::family_id.eq(Some(family)),
                issued_tokens::token_hash.eq((i == 0).then_some(issue.access_hash.as_str())),
                issued_tokens::expires_at.eq(issue.access_expires),
            ))
            .execute(c)?;
    }
    if grant.last_used_at.is_none_or(|t| t < use_cutoff(now)) {
        diesel::update(grants::table.filter(grants::id.eq(&grant.id)))
            .set(grants::last_used_at.eq(now.naive_utc().trunc_subsecs(0)))
            .execute(c)?;
    }
    audit::record(
        c,
        &NewEvent::new(
            Actor::client(&grant.client_id),
            action,
            Target::new("grant", grant.id.clone()),
        )
        .details(issue.details),
        now,
    )?;
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

fn replayed() -> OAuthError {
    invalid_grant("the refresh token was already used; the grant has been revoked")
}

fn pkce_matches(verifier: &str, challenge: &str) -> bool {
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
        issue(c, svc, &grant, &random_id("fam_"), "token.issued", now)
    })?
}

/// A refresh token with its grant.
#[derive(Clone)]
struct RefreshRow {
    id: String,
    family: String,
    status: String,
    expires_at: NaiveDateTime,
    grant: GrantRow,
    /// The grant's client.
    client: OAuthClient,
}

/// Refresh tokens by hash, each joined with its grant and the grant's client: one indexed query
/// for any number of hashes (one request's, or a batch's). Pairs each row with its hash.
fn load_refreshes(
    c: &mut AnyConnection,
    hashes: &[String],
) -> Result<Vec<(String, RefreshRow)>, StorageError> {
    type Row = (
        (String, String, String, String, NaiveDateTime),
        GrantRow,
        ClientRow,
    );
    let rows: Vec<Row> = refresh_tokens::table
        .inner_join(grants::table.inner_join(clients::table))
        .filter(refresh_tokens::token_hash.eq_any(hashes))
        .select((
            (
                refresh_tokens::token_hash,
                refresh_tokens::id,
                refresh_tokens::family_id,
                refresh_tokens::status,
                refresh_tokens::expires_at,
            ),
            GrantRow::as_select(),
            ClientRow::as_select(),
        ))
        .load(c)?;
    Ok(rows
        .into_iter()
        .map(|((hash, id, family, status, expires_at), grant, client)| {
            let row = RefreshRow {
                id,
                family,
                status,
                expires_at,
                grant,
                client: client.into(),
            };
            (hash, row)
        })
        .collect())
}

/// [`load_refreshes`] for one hash.
fn load_refresh(c: &mut AnyConnection, hash: &str) -> Result<Option<RefreshRow>, StorageError> {
    Ok(load_refreshes(c, &[hash.to_string()])?
        .pop()
        .map(|(_, row)| row))
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
    now: DateTime<Utc>,
) -> Result<TokenResponse, OAuthError> {
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
        if let AnyConnection::Postgresql(pg) = c {
            // Grant before token, the order `end_grants` locks them in (no deadlock with a
            // concurrent revocation). A token's grant never changes, so the read above names it.
            diesel::sql_query("SELECT 1 FROM grants WHERE id = $1 FOR NO KEY UPDATE")
                .bind::<diesel::sql_types::Text, _>(&found.grant.id)
                .execute(pg)?;
        }
        // Token and grant as they are now, inside the transaction (and after the lock).
        let Some(row) = load_refresh(c, hash.as_str())? else {
            return Ok(Err(invalid_grant("the refresh token is invalid")));
        };
        let grant = &row.grant;
        if grant.client_id != client.id {
            return Ok(Err(invalid_grant(
                "the refresh token was issued to another client",
            )));
        }
        match row.status.as_str() {
            "active" => {}
            "used" => {
                let reason = "refresh_token.replayed";
                revoke_for_security(c, revoked, &grant.id, &client.id, reason, now)?;
                return Ok(Err(replayed()));
            }
            _ => return Ok(Err(invalid_grant("the refresh token has been revoked"))),
        }
        if row.expires_at <= now.naive_utc() {
            return Ok(Err(invalid_grant("the refresh token has expired")));
        }
        if grant.status != GrantStatus::Authorized.as_str() || grant.expires_at <= now.naive_utc() {
            return Ok(Err(invalid_grant("the grant is no longer active")));
        }
        let won = diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::id.eq(&row.id))
                .filter(refresh_tokens::status.eq("active")),
        )
        .set((
            refresh_tokens::status.eq("used"),
            refresh_tokens::used_at.eq(now.naive_utc()),
        ))
        .execute(c)?;
        if won != 1 {
            let reason = "refresh_token.replayed";
            revoke_for_security(c, revoked, &grant.id, &client.id, reason, now)?;
            return Ok(Err(replayed()));
        }
        issue(c, svc, grant, &row.family, "token.refreshed", now)
    })?
}

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
            platform::revocation::revoke_tokens(
                c,
                revoked,
                &auth.grant,
                &auth.revocation_ids,
                "access_token_revoked_by_client",
                auth.authority_expires_at,
                now,
            )?;
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
    Ok(())
}

/// Longest token text revocation and introspection look at (longer ones are unknown tokens).
const MAX_PRESENTED_TOKEN: usize = 8192;

/// Refresh tokens are opaque `rt_...`; anything else is read as a Biscuit access token.
pub fn is_refresh_token(token: &str) -> bool {
    token.starts_with("rt_")
}

/// An access token verified as ours: signed by one of our keys and unexpired (any action).
#[derive(Debug, Clone)]
pub struct OurToken {
    grant: String,
    client: String,
    revocation_ids: Vec<String>,
    /// When this token stops working (attenuated expiry included).
    expires_at: DateTime<Utc>,
    /// The authority block's expiry: its first revocation id is shared with the token it was
    /// attenuated from (and that token's other attenuations), which may live until then.
    authority_expires_at: DateTime<Utc>,
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
    svc.verify
        .run(move || verify_ours(keys, &token, now))
        .await
        .map_err(|e| OAuthError::TemporarilyUnavailable(e.to_string()))
}

/// Verifies that `token` is a Biscuit signed by one of our keys and not expired (any action).
fn verify_ours(
    keys: std::sync::Arc<::grants::KeySet>,
    token: &str,
    now: DateTime<Utc>,
) -> Option<OurToken> {
    let info = ::grants::inspect(token).ok()?;
    let summary = info.grant?;
    let verifier = ::grants::Verifier::new(keys, ::grants::NoRevocationCheck);
    // Some granted action must still be allowed. Only a denial depends on the action: any
    // other refusal (signature, expiry, limits) would repeat for every action, so stop there.
    let mut auth = None;
    for action in &summary.actions {
        match verifier.verify_listing(token, action.clone(), now) {
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
        expires_at: auth.scope.expires_at,
        authority_expires_at: summary.expires_at,
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

/// A minted access token found by the SHA-256 of its text.
#[derive(Clone)]
struct Minted {
    revocation_id: String,
    expires_at: NaiveDateTime,
    /// Its revocation id is on the revocation list.
    revoked: bool,
    grant: GrantRow,
    /// The grant's client.
    client: OAuthClient,
}

impl Minted {
    /// What introspection found, as asked by the token's own client: `None` once the token has
    /// expired.
    fn found(self, now: DateTime<Utc>) -> Option<Found> {
        (self.expires_at > now.naive_utc()).then(|| Found {
            grant: self.grant,
            client: self.client,
            token_type: "access_token",
            exp: self.expires_at.and_utc(),
            token_revoked: self.revoked,
            minted_rid: Some(self.revocation_id),
        })
    }
}

/// Minted tokens by hash, each with its grant, the grant's client and its revocation status: one
/// query for any number of hashes. Pairs each with its hash.
fn load_minteds(
    c: &mut AnyConnection,
    hashes: &[String],
) -> Result<Vec<(String, Minted)>, StorageError> {
    type Row = (
        Option<String>,
        String,
        NaiveDateTime,
        Option<i64>,
        GrantRow,
        ClientRow,
    );
    let rows: Vec<Row> = issued_tokens::table
        .inner_join(grants::table.inner_join(clients::table))
        .left_join(
            revocations::table
                .on(revocations::revocation_id.eq(issued_tokens::revocation_id.nullable())),
        )
        .filter(issued_tokens::token_hash.eq_any(hashes))
        .select((
            issued_tokens::token_hash,
            issued_tokens::revocation_id,
            issued_tokens::expires_at,
            revocations::seq.nullable(),
            GrantRow::as_select(),
            ClientRow::as_select(),
        ))
        .load(c)?;
    Ok(rows
        .into_iter()
        .filter_map(
            |(hash, revocation_id, expires_at, revoked, grant, client)| {
                let minted = Minted {
                    revocation_id,
                    expires_at,
                    revoked: revoked.is_some(),
                    grant,
                    client: client.into(),
                };
                Some((hash?, minted))
            },
        )
        .collect())
}

/// [`load_minteds`] for one hash.
fn load_minted(c: &mut AnyConnection, hash: &str) -> Result<Option<Minted>, StorageError> {
    Ok(load_minteds(c, &[hash.to_string()])?.pop().map(|(_, m)| m))
}

/// What introspection found with the database alone.
#[derive(Debug)]
pub enum Introspected {
    /// The answer (and, for a minted token, what it rests on, so it may be reused).
    Answer(Box<(Introspection, Option<Basis>)>),
    /// Not a token we minted as is (attenuated, or foreign): the client is authenticated;
    /// verify the token offline ([`verify_offline`], off this connection), then call
    /// [`introspect_verified`].
    Unverified(Box<OAuthClient>),
}

/// RFC 7662: a token is active when it is ours, unexpired, not revoked, its grant is authorized
/// and unexpired, and it belongs to the asking client. Anything else is `{"active": false}`.
pub fn introspect(
    c: &mut AnyConnection,
    svc: &OAuthService,
    creds: &ClientCredentials,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Introspected, OAuthError> {
    let inactive = Introspected::Answer(Box::new((Introspection::default(), None)));
    if token.is_empty() || token.len() > MAX_PRESENTED_TOKEN {
        oauth_clients::authenticate(c, creds)?;
        return Ok(inactive);
    }
    // As in `refresh`: the token's row brings its grant's client, which usually is the asking
    // client, so one query serves authentication and the answer.
    let hash = PlainToken::from_presented(token).hash();
    let found = if is_refresh_token(token) {
        let row = load_refresh(c, hash.as_str())?;
        let client = oauth_clients::authenticate_with(c, creds, row.as_ref().map(|r| &r.client))?;
        let Some(r) = row else {
            return Ok(inactive);
        };
        Found {
            token_revoked: r.status != "active" || r.expires_at <= now.naive_utc(),
            exp: r.expires_at.and_utc(),
            grant: r.grant,
            client,
            token_type: "refresh_token",
            minted_rid: None,
        }
    } else if let Some(minted) = load_minted(c, hash.as_str())? {
        // A token exactly as we minted it is found by its hash (its signature was made by us,
        // and nobody can produce another string with the same SHA-256): one indexed lookup that
        // also brings its grant and whether it was revoked.
        let client = oauth_clients::authenticate_with(c, creds, Some(&minted.client))?;
        let Some(found) = minted.found(now) else {
            return Ok(inactive);
        };
        // Asked by another client, the answer is inactive (`Found::answer`).
        Found { client, ..found }
    } else {
        // Attenuated (or foreign) tokens: authenticate; the caller verifies offline.
        return Ok(Introspected::Unverified(Box::new(
            oauth_clients::authenticate(c, creds)?,
        )));
    };
    conclude(c, svc, found, now).map(|answer| Introspected::Answer(Box::new(answer)))
}

/// Introspection of a token [`verify_offline`] found (`None`: not a valid token of ours), for a
/// client [`introspect`] authenticated.
pub fn introspect_verified(
    c: &mut AnyConnection,
    svc: &OAuthService,
    client: OAuthClient,
    verified: Option<OurToken>,
    now: DateTime<Utc>,
) -> Result<(Introspection, Option<Basis>), OAuthError> {
    let Some(t) = verified else {
        return Ok((Introspection::default(), None));
    };
    let revoked: i64 = revocations::table
        .filter(revocations::revocation_id.eq_any(&t.revocation_ids))
        .count()
        .get_result(c)?;
    let Some(grant) = load_grant(c, &t.grant)? else {
        return Ok((Introspection::default(), None));
    };
    let found = Found {
        grant,
        client,
        token_type: "access_token",
        exp: t.expires_at,
        token_revoked: revoked > 0,
        minted_rid: None,
    };
    conclude(c, svc, found, now)
}

/// Records use of a live grant (dormancy is measured from it) and builds the answer.
fn conclude(
    c: &mut AnyConnection,
    svc: &OAuthService,
    found: Found,
    now: DateTime<Utc>,
) -> Result<(Introspection, Option<Basis>), OAuthError> {
    // An introspection is use of the grant, recorded at most once a minute: the common case
    // costs no write. Best effort: a failed write (e.g. SQLite busy during a sweep) must not
    // fail the answer.
    if found.is_live(now)
        && use_due(&found.grant, now)
        && let Err(e) = diesel::update(
            grants::table.filter(grants::id.eq(&found.grant.id)).filter(
                grants::last_used_at
                    .is_null()
                    .or(grants::last_used_at.lt(use_cutoff(now))),
            ),
        )
        .set(grants::last_used_at.eq(now.naive_utc().trunc_subsecs(0)))
        .execute(c)
    {
        tracing::warn!(error = %e, "introspection: recording use of the grant failed");
    }
    found.answer(svc, now)
}

/// Whether the grant's use is due to be recorded (at most once a minute).
fn use_due(grant: &GrantRow, now: DateTime<Utc>) -> bool {
    grant.last_used_at.is_none_or(|t| t < use_cutoff(now))
}

/// A token introspection found, for an authenticated client.
struct Found {
    grant: GrantRow,
    client: OAuthClient,
    token_type: &'static str,
    exp: DateTime<Utc>,
    token_revoked: bool,
    /// The revocation id of a minted access token found by its hash (the answer may be reused).
    minted_rid: Option<String>,
}

impl Found {
    /// Active: the asking client's own token, not revoked, of an authorized and unexpired grant
    /// (the token's own expiry is checked where it is found).
    fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.grant.client_id == self.client.id
            && !self.token_revoked
            && self.grant.status == GrantStatus::Authorized.as_str()
            && self.grant.expires_at > now.naive_utc()
    }

    /// The RFC 7662 answer (no I/O).
    fn answer(
        self,
        svc: &OAuthService,
        now: DateTime<Utc>,
    ) -> Result<(Introspection, Option<Basis>), OAuthError> {
        if self.grant.client_id != self.client.id {
            return Ok((Introspection::default(), None));
        }
        let live = self.is_live(now);
        let Found {
            grant,
            client,
            token_type,
            exp,
            minted_rid,
            ..
        } = self;
        if !live {
            // Tell the owning client why: the grant's status (e.g. revoked by the customer).
            return Ok((
                Introspection {
                    grant_id: Some(grant.id),
                    grant_status: Some(grant.status),
                    ..Introspection::default()
                },
                None,
            ));
        }
        let access = AccessRequest::from_stored(&grant.details)?;
        let basis = minted_rid.map(|rid| Basis {
            client,
            grant_id: grant.id.clone(),
            revocation_ids: vec![rid],
            token_expires_at: exp,
            grant_expires_at: grant.expires_at.and_utc(),
        });
        let answer = Introspection {
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
        };
        Ok((answer, basis))
    }
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
