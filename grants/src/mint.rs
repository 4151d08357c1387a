//! Minting access tokens from a grant.

use std::fmt;

use biscuit_auth::builder::{Fact, Term};
use biscuit_auth::{Biscuit, BiscuitBuilder};
use chrono::{DateTime, Utc};
use rand::{CryptoRng, RngCore};

use crate::error::MintError;
use crate::keys::SigningKey;
use crate::time::{floor_secs, format_timestamp};
use crate::vocab::{self, date_term};
use crate::{ClientId, GrantId, GrantScope, SubjectId};

/// Where a client runs. A sandbox client is a developer's test app (no KYC, test customers
/// only): its tokens carry `environment("sandbox")` in their authority block, and a verifier
/// set to [`Environment::Production`] refuses them. Production tokens carry no environment fact
/// (so tokens minted before it existed read as production).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Sandbox,
    #[default]
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Sandbox => "sandbox",
            Environment::Production => "production",
        }
    }

    /// `sandbox` or `production`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sandbox" => Some(Environment::Sandbox),
            "production" => Some(Environment::Production),
            _ => None,
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A consent as the token needs it: who, for which client, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The grant (consent) id.
    pub id: GrantId,
    /// The client the grant was given to.
    pub client: ClientId,
    /// The pseudonymous customer.
    pub subject: SubjectId,
    /// What was granted (accounts, actions, window, merchants, grant expiry).
    pub scope: GrantScope,
    /// The client's environment (sandbox tokens say so).
    pub environment: Environment,
}

/// A freshly minted access token.
#[derive(Clone, PartialEq, Eq)]
pub struct MintedToken {
    /// The Biscuit, base64url. A bearer secret: never log it.
    pub token: String,
    /// Revocation ids (hex), one per block; publish them when the grant ends.
    pub revocation_ids: Vec<String>,
    /// The access token's expiry: the requested one, capped at the grant's expiry.
    pub expires_at: DateTime<Utc>,
    /// The signing key id (Biscuit `root_key_id`).
    pub kid: u32,
}

impl fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedToken")
            .field("token", &"<redacted>")
            .field("revocation_ids", &self.revocation_ids)
            .field("expires_at", &self.expires_at)
            .field("kid", &self.kid)
            .finish()
    }
}

/// Mints an access token for `grant`, valid until `token_expires_at` (capped at the grant's
/// expiry). Fails if the token would already be expired at `now`.
pub fn mint(
    key: &SigningKey,
    grant: &Grant,
    token_expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<MintedToken, MintError> {
    mint_with_rng(key, grant, token_expires_at, now, &mut rand::rngs::OsRng)
}

/// [`mint`] for a DPoP client: the token carries `cnf_jkt(jkt)` (the RFC 7638 thumbprint of the
/// client's proof key, see [`crate::dpop`]) and verifies only with a proof from that key.
pub fn mint_bound(
    key: &SigningKey,
    grant: &Grant,
    jkt: &str,
    token_expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<MintedToken, MintError> {
    let cnf = Confirmation {
        jkt: Some(jkt),
        x5t: None,
    };
    mint_confirmed(key, grant, cnf, token_expires_at, now)
}

/// The keys a token is bound to (RFC 7800 `cnf`): a DPoP key (`jkt`, RFC 9449) and/or a TLS
/// client certificate (`x5t#S256`, RFC 8705), each a base64url SHA-256 thumbprint. A verifier
/// demands proof of every binding the token carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confirmation<'a> {
    /// The RFC 7638 thumbprint of the client's DPoP key (`cnf_jkt`).
    pub jkt: Option<&'a str>,
    /// The SHA-256 thumbprint of the client's certificate (`cnf_x5t`, see
    /// [`crate::mtls::certificate_thumbprint`]).
    pub x5t: Option<&'a str>,
}

/// [`mint`] for a sender-constrained client: the token carries `cnf_jkt` and/or `cnf_x5t` and
/// verifies only for a request that proves them (a DPoP proof from the key, a TLS connection
/// with the certificate).
pub fn mint_confirmed(
    key: &SigningKey,
    grant: &Grant,
    cnf: Confirmation<'_>,
    token_expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<MintedToken, MintError> {
    mint_inner(
        key,
        grant,
        cnf,
        token_expires_at,
        now,
        &mut rand::rngs::OsRng,
    )
}

fn is_thumbprint(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// [`mint`] with a caller-supplied CSPRNG for the next-block key (reproducible golden tokens).
pub fn mint_with_rng<R: RngCore + CryptoRng>(
    key: &SigningKey,
    grant: &Grant,
    token_expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
    rng: &mut R,
) -> Result<MintedToken, MintError> {
    mint_inner(
        key,
        grant,
        Confirmation::default(),
        token_expires_at,
        now,
        rng,
    )
}

fn mint_inner<R: RngCore + CryptoRng>(
    key: &SigningKey,
    grant: &Grant,
    cnf: Confirmation<'_>,
    token_expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
    rng: &mut R,
) -> Result<MintedToken, MintError> {
    if !cnf.jkt.is_none_or(is_thumbprint) {
        return Err(MintError::Biscuit(
            "cnf_jkt must be a base64url SHA-256 thumbprint".into(),
        ));
    }
    if !cnf.x5t.is_none_or(is_thumbprint) {
        return Err(MintError::Biscuit(
            "cnf_x5t must be a base64url SHA-256 thumbprint".into(),
        ));
    }
    let expires_at = floor_secs(token_expires_at.min(grant.scope.expires_at()));
    if expires_at <= now {
        return Err(MintError::AlreadyExpired(format_timestamp(expires_at)));
    }
    let token = authority_builder(grant, cnf, expires_at)
        .and_then(|b| {
            b.root_key_id(key.kid()).build_with_rng(
                key.keypair(),
                biscuit_auth::datalog::SymbolTable::new(),
                rng,
            )
        })
        .map_err(|e| MintError::Biscuit(e.to_string()))?;
    finish(&token, expires_at, key.kid())
}

fn finish(token: &Biscuit, expires_at: DateTime<Utc>, kid: u32) -> Result<MintedToken, MintError> {
    Ok(MintedToken {
        token: token
            .to_base64()
            .map_err(|e| MintError::Biscuit(e.to_string()))?,
        revocation_ids: token
            .revocation_identifiers()
            .iter()
            .map(hex::encode)
            .collect(),
        expires_at,
        kid,
    })
}

fn str_fact(name: &str, value: &str) -> Fact {
    Fact::new(name.to_owned(), vec![Term::Str(value.to_owned())])
}

/// The authority block, built from typed terms (never by string interpolation).
fn authority_builder(
    grant: &Grant,
    cnf: Confirmation<'_>,
    token_expires_at: DateTime<Utc>,
) -> Result<BiscuitBuilder, biscuit_auth::error::Token> {
    let scope = &grant.scope;
    let mut b = Biscuit::builder()
        .fact(str_fact(vocab::GRANT, grant.id.as_str()))?
        .fact(str_fact(vocab::CLIENT, grant.client.as_str()))?
        .fact(str_fact(vocab::SUBJECT, grant.subject.as_str()))?;
    if grant.environment == Environment::Sandbox {
        b = b.fact(str_fact(vocab::ENVIRONMENT, Environment::Sandbox.as_str()))?;
    }
    if let Some(jkt) = cnf.jkt {
        b = b.fact(str_fact(vocab::CNF_JKT, jkt))?;
    }
    if let Some(x5t) = cnf.x5t {
        b = b.fact(str_fact(vocab::CNF_X5T, x5t))?;
    }
    for action in scope.actions() {
        b = b.fact(str_fact(vocab::RIGHT, action.as_str()))?;
    }
    for account in scope.accounts() {
        b = b.fact(str_fact(vocab::ACCOUNT, account.as_str()))?;
    }
    if let Some(window) = scope.window() {
        b = b.fact(Fact::new(
            vocab::TX_WINDOW.to_owned(),
            vec![date_term(window.from()), date_term(window.until())],
        ))?;
    }
    for merchant in scope.merchants().unwrap_or_default() {
        b = b.fact(str_fact(vocab::MERCHANT, merchant.as_str()))?;
    }
    b.check(vocab::expiry_check(token_expires_at)?)?
        .check(vocab::expiry_check(scope.expires_at())?)
}
