//! Access tokens for the SSF API (the `client_credentials` grant, scope `ssf`): a receiver whose
//! client authenticates with credentials in a form (`private_key_jwt`, `client_secret_post`)
//! cannot send them with a JSON request; it gets a token at the token endpoint, with any method
//! the endpoint supports, and presents it as `Authorization: Bearer`. The tokens are opaque,
//! short-lived (`tokens.access_token_ttl`), stored as SHA-256, good for the SSF API only, and
//! only while the client is active.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use platform::crypto::PlainToken;
use platform::storage::schema::client_access_tokens as tokens;
use platform::storage::{AnyConnection, StorageResult};
use serde::{Deserialize, Serialize};

use super::stored;
use crate::oauth::clients::ClientCredentials;
use crate::oauth::clients::{self, OAuthClient};
use crate::oauth::{OAuthError, OAuthService};

/// The one scope of the `client_credentials` grant.
pub const SCOPE: &str = "ssf";
const PREFIX: &str = "ssf_at_";

/// The token endpoint's answer to a `client_credentials` request.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClientTokenResponse {
    /// Opaque; for the SSF API (`/ssf/...`) only.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    pub expires_in: i64,
    /// `ssf`.
    pub scope: String,
}

/// `grant_type=client_credentials`: authenticates the client (every method the token endpoint
/// supports, with its throttling) and issues an SSF API token. Only `scope=ssf` is granted; a
/// DPoP proof is refused rather than ignored (these tokens are not sender-constrained).
pub async fn issue(
    oauth: &OAuthService,
    creds: ClientCredentials,
    peer: &str,
    scope: Option<String>,
    with_proof: bool,
    now: DateTime<Utc>,
) -> Result<ClientTokenResponse, OAuthError> {
    let client = oauth.authenticate(creds, peer, "token").await?;
    if scope.as_deref() != Some(SCOPE) {
        return Err(OAuthError::InvalidScope(format!(
            "client_credentials grants only scope={SCOPE} (the Shared Signals API)"
        )));
    }
    if with_proof {
        return Err(OAuthError::InvalidRequest(
            "client_credentials tokens for the SSF API are bearer tokens: send no DPoP proof"
                .into(),
        ));
    }
    let ttl = oauth.platform.settings.tokens.access_token_ttl.as_chrono();
    let token = PlainToken::generate(PREFIX);
    let hash = token.hash();
    oauth
        .platform
        .db
        .write(move |c| {
            diesel::insert_into(tokens::table)
                .values((
                    tokens::token_hash.eq(hash.as_str()),
                    tokens::client_id.eq(&client.id),
                    tokens::scope.eq(SCOPE),
                    tokens::expires_at.eq(stored(now + ttl)),
                    tokens::created_at.eq(stored(now)),
                ))
                .execute(c)?;
            Ok(())
        })
        .await?;
    Ok(ClientTokenResponse {
        access_token: token.expose().to_string(),
        token_type: "Bearer".into(),
        expires_in: ttl.num_seconds(),
        scope: SCOPE.into(),
    })
}

/// The active client a presented SSF API token belongs to; `None` for an unknown, expired or
/// malformed token, or a client no longer active.
pub fn client_of(
    c: &mut AnyConnection,
    presented: &str,
    now: DateTime<Utc>,
) -> StorageResult<Option<OAuthClient>> {
    if !presented.starts_with(PREFIX) || presented.len() > 128 {
        return Ok(None);
    }
    let hash = PlainToken::from_presented(presented).hash();
    let owner: Option<String> = tokens::table
        .filter(tokens::token_hash.eq(hash.as_str()))
        .filter(tokens::expires_at.gt(now.naive_utc()))
        .select(tokens::client_id)
        .first(c)
        .optional()?;
    let Some(owner) = owner else {
        return Ok(None);
    };
    Ok(clients::load(c, &owner)?.filter(OAuthClient::is_active))
}

/// Deletes expired tokens (the lifecycle sweep).
pub fn purge_expired(c: &mut AnyConnection, now: DateTime<Utc>) -> StorageResult<usize> {
    Ok(diesel::delete(tokens::table.filter(tokens::expires_at.le(now.naive_utc()))).execute(c)?)
}
