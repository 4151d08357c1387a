//! Error types. Every failure is a value: no function in this crate panics on bad input.

use thiserror::Error;

/// A domain value failed validation (see [`crate::AccountId::parse`] and friends).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is longer than {max} characters")]
    TooLong { kind: &'static str, max: usize },
    #[error("{kind} must start with `{prefix}`")]
    MissingPrefix {
        kind: &'static str,
        prefix: &'static str,
    },
    #[error("{kind} may only contain {allowed}")]
    InvalidCharacter {
        kind: &'static str,
        allowed: &'static str,
    },
    #[error("unknown action `{0}`")]
    UnknownAction(String),
    #[error("invalid timestamp `{value}`: expected RFC 3339 in UTC (e.g. 2026-01-01T00:00:00Z)")]
    InvalidTimestamp { value: String },
    #[error("timestamp {value} is outside the supported range (1970-01-01 to 9999-12-31)")]
    TimestampOutOfRange { value: String },
    #[error("transaction window starts ({from}) after it ends ({until})")]
    WindowInverted { from: String, until: String },
    #[error("{field} must not be empty")]
    EmptyList { field: &'static str },
    #[error("{field} has more than {max} entries")]
    TooMany { field: &'static str, max: usize },
    #[error("{field} lists `{value}` twice")]
    Duplicate { field: &'static str, value: String },
    #[error("invalid public key: {0}")]
    InvalidPublicKey(String),
    #[error("invalid private key: {0}")]
    InvalidPrivateKey(String),
    #[error("invalid key id `{0}`: expected a decimal number that fits in 32 bits")]
    InvalidKid(String),
    #[error("unsupported key algorithm `{0}` (only Ed25519)")]
    UnsupportedAlgorithm(String),
}

/// Minting a token failed.
#[derive(Debug, Error)]
pub enum MintError {
    #[error("the access token would already be expired at {0}")]
    AlreadyExpired(String),
    #[error("biscuit error while minting: {0}")]
    Biscuit(String),
}

/// Attenuating a token failed.
#[derive(Debug, Error)]
pub enum AttenuateError {
    #[error(
        "the attenuation narrows nothing (give accounts, actions, merchants, a window or an expiry, or seal)"
    )]
    NothingToNarrow,
    #[error("the token is not valid base64url Biscuit data: {0}")]
    Malformed(String),
    #[error("the token is sealed and cannot be attenuated further")]
    Sealed,
    #[error("biscuit error while attenuating: {0}")]
    Biscuit(String),
}

/// Why a well-formed, correctly signed, unrevoked token does not allow a request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DenyReason {
    #[error("the grant does not include the action `{0}`")]
    ActionNotGranted(String),
    #[error("the grant does not include the account `{0}`")]
    AccountNotGranted(String),
    #[error("the grant does not include the merchant `{0}`")]
    MerchantNotGranted(String),
    #[error("the requested transaction range {from}..{until} is outside the granted window")]
    OutsideWindow { from: String, until: String },
    #[error("an attenuation block refuses the request (block {block}: `{check}`)")]
    Attenuation { block: u32, check: String },
    #[error("the attenuated token leaves no {0} for this request")]
    NothingLeft(&'static str),
    #[error("the authorizer refused the request: {0}")]
    Policy(String),
}

/// Verification of a token for a request failed. Every variant means "refuse the request".
#[derive(Debug, Error)]
pub enum VerifyError {
    #[error("the token is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("the token is not valid base64url")]
    BadEncoding,
    #[error("the token could not be decoded: {0}")]
    Malformed(String),
    #[error("the token has no key id")]
    MissingKid,
    #[error("unknown key id {0}")]
    UnknownKid(u32),
    #[error("the token signature is invalid")]
    BadSignature,
    #[error("the token has {count} blocks, more than the allowed {max}")]
    TooManyBlocks { count: usize, max: usize },
    #[error("the token's authority block is not a grant token: {0}")]
    InvalidAuthority(String),
    #[error("the token expired")]
    Expired,
    /// The token is bound to a DPoP key and was presented without a proof (as a bearer token).
    #[error("the token is bound to a DPoP key: present it with a DPoP proof")]
    ProofRequired,
    /// The token is not bound to any key and was presented with a DPoP proof.
    #[error("the token is not bound to a DPoP key: present it as a bearer token")]
    NotBound,
    /// The token is bound to a TLS client certificate (`cnf_x5t`) and the request's connection
    /// presented none.
    #[error("the token is bound to a TLS client certificate: present it over mutual TLS")]
    CertificateRequired,
    /// The request's connection presented another certificate than the token is bound to.
    #[error("the token is bound to another TLS client certificate than this connection's")]
    CertificateMismatch,
    /// The DPoP proof was refused, or proves another key than the token's.
    #[error(transparent)]
    Dpop(#[from] crate::dpop::DpopError),
    /// The token belongs to another environment than the verifier accepts (a sandbox client's
    /// token at a production resource server).
    #[error("a {token} token is not accepted here (this verifier accepts {expected} tokens only)")]
    WrongEnvironment {
        token: crate::Environment,
        expected: crate::Environment,
    },
    #[error("the grant or token was revoked")]
    Revoked,
    #[error("the revocation status could not be determined: {0}")]
    RevocationUnavailable(String),
    #[error("Datalog evaluation exceeded the run limits ({0})")]
    OverLimits(String),
    #[error("an attenuation block is outside the verification limits ({0})")]
    Inadmissible(String),
    #[error("request refused: {0}")]
    Denied(#[from] DenyReason),
    #[error("internal verification error: {0}")]
    Internal(String),
}

/// The revocation store could not answer (fail closed: the request is refused).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("revocation lookup failed: {0}")]
pub struct RevocationLookupError(pub String);

/// Loading a key set (the `/.well-known/biscuit-keys` document) failed.
#[derive(Debug, Error)]
pub enum KeySetError {
    #[error("invalid keys document: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid key `{kid}`: {source}")]
    Key {
        kid: String,
        #[source]
        source: ParseError,
    },
    #[error("key id {0} appears twice")]
    DuplicateKid(u32),
}
