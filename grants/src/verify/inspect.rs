//! Reading a token without verifying it, for `grants inspect` and debugging.

use biscuit_auth::error::Token;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::revocation::hex_ids;
use crate::authority::parse_authority;
use crate::error::VerifyError;
use crate::time::TxWindow;
use crate::{AccountId, Action, ClientId, GrantId, MerchantId, SubjectId};

/// A token's content read without checking its signature (for `grants inspect` and
/// debugging; never for authorization).
#[derive(Clone, Debug, Serialize)]
pub struct TokenInfo {
    /// The kid (`root_key_id`), if any.
    pub kid: Option<u32>,
    /// Each block's Datalog source, authority first.
    pub blocks: Vec<String>,
    /// Revocation ids (hex), one per block.
    pub revocation_ids: Vec<String>,
    /// The authority block's grant data, if it is a well-formed grant token.
    pub grant: Option<GrantSummary>,
    /// Why `grant` is missing, if it is.
    pub grant_error: Option<String>,
}

/// The authority block's facts, as read by [`inspect`].
#[derive(Clone, Debug, Serialize)]
pub struct GrantSummary {
    /// Grant id.
    pub grant: GrantId,
    /// Client id.
    pub client: ClientId,
    /// Subject.
    pub subject: SubjectId,
    /// Granted actions.
    pub actions: Vec<Action>,
    /// Granted accounts.
    pub accounts: Vec<AccountId>,
    /// Window, if limited.
    pub window: Option<TxWindow>,
    /// Merchants, if limited.
    pub merchants: Option<Vec<MerchantId>>,
    /// Earliest expiry in the authority block.
    #[serde(serialize_with = "crate::time::serialize_ts")]
    pub expires_at: DateTime<Utc>,
    /// `sandbox` for a sandbox client's token, else `production`.
    pub environment: crate::Environment,
    /// The DPoP key thumbprint the token is bound to, if any.
    pub cnf_jkt: Option<String>,
    /// The TLS client certificate thumbprint the token is bound to, if any.
    pub cnf_x5t: Option<String>,
}

/// Reads a token WITHOUT verifying its signature.
pub fn inspect(token: &str) -> Result<TokenInfo, VerifyError> {
    let parsed =
        biscuit_auth::UnverifiedBiscuit::from_base64(token.trim()).map_err(|e| match e {
            Token::Base64(_) => VerifyError::BadEncoding,
            other => VerifyError::Malformed(other.to_string()),
        })?;
    let blocks = (0..parsed.block_count())
        .map(|i| parsed.print_block_source(i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let (grant, grant_error) = match blocks.first().map(|s| parse_authority(s)) {
        Some(Ok(a)) => (
            Some(GrantSummary {
                grant: a.grant,
                client: a.client,
                subject: a.subject,
                actions: a.rights,
                accounts: a.accounts,
                window: a.window,
                merchants: (!a.merchants.is_empty()).then_some(a.merchants),
                expires_at: a.expires_at,
                environment: a.environment,
                cnf_jkt: a.cnf_jkt,
                cnf_x5t: a.cnf_x5t,
            }),
            None,
        ),
        Some(Err(e)) => (None, Some(e)),
        None => (None, Some("no authority block".into())),
    };
    Ok(TokenInfo {
        kid: parsed.root_key_id(),
        revocation_ids: hex_ids(&parsed.revocation_identifiers()),
        blocks,
        grant,
        grant_error,
    })
}
