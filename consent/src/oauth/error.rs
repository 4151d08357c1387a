//! OAuth errors: `Display` is the RFC 6749 / 9126 / 9396 error code. The HTTP response (status,
//! `WWW-Authenticate`, JSON body, `Cache-Control: no-store`) is built in one place, in
//! `routes::oauth`.

use platform::cache::CacheError;
use platform::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("invalid_request")]
    InvalidRequest(String),
    #[error("invalid_client")]
    InvalidClient(String),
    #[error("invalid_grant")]
    InvalidGrant(String),
    #[error("unauthorized_client")]
    UnauthorizedClient(String),
    #[error("unsupported_grant_type")]
    UnsupportedGrantType(String),
    #[error("unsupported_response_type")]
    UnsupportedResponseType(String),
    #[error("invalid_scope")]
    InvalidScope(String),
    #[error("invalid_authorization_details")]
    InvalidAuthorizationDetails(String),
    #[error("invalid_request_uri")]
    InvalidRequestUri(String),
    #[error("access_denied")]
    AccessDenied(String),
    #[error("unsupported_token_type")]
    UnsupportedTokenType(String),
    /// RFC 9449: the DPoP proof is missing, malformed, replayed, or signed by another key than
    /// the one the request, code or refresh token is bound to.
    #[error("invalid_dpop_proof")]
    InvalidDpopProof(String),
    #[error("temporarily_unavailable")]
    TemporarilyUnavailable(String),
    /// Client authentication from this address is blocked for a while after repeated failures
    /// (answered as `temporarily_unavailable`, with `Retry-After: 60`).
    #[error("temporarily_unavailable")]
    AuthenticationBlocked(String),
    #[error("server_error")]
    ServerError(String),
}

impl OAuthError {
    /// The RFC error code.
    pub fn code(&self) -> String {
        self.to_string()
    }

    /// Human-readable `error_description` (never contains secrets).
    pub fn description(&self) -> &str {
        match self {
            OAuthError::InvalidRequest(d)
            | OAuthError::InvalidClient(d)
            | OAuthError::InvalidGrant(d)
            | OAuthError::UnauthorizedClient(d)
            | OAuthError::UnsupportedGrantType(d)
            | OAuthError::UnsupportedResponseType(d)
            | OAuthError::InvalidScope(d)
            | OAuthError::InvalidAuthorizationDetails(d)
            | OAuthError::InvalidRequestUri(d)
            | OAuthError::AccessDenied(d)
            | OAuthError::UnsupportedTokenType(d)
            | OAuthError::InvalidDpopProof(d)
            | OAuthError::TemporarilyUnavailable(d)
            | OAuthError::AuthenticationBlocked(d)
            | OAuthError::ServerError(d) => d,
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            OAuthError::InvalidClient(_) => 401,
            OAuthError::TemporarilyUnavailable(_) | OAuthError::AuthenticationBlocked(_) => 503,
            OAuthError::ServerError(_) => 500,
            _ => 400,
        }
    }
}

impl From<StorageError> for OAuthError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Unavailable(_) => {
                tracing::warn!(error = %e, "database unavailable");
                OAuthError::TemporarilyUnavailable("the service is temporarily unavailable".into())
            }
            other => {
                tracing::error!(error = ?other, "storage error in an OAuth flow");
                OAuthError::ServerError("an unexpected error occurred; it has been logged".into())
            }
        }
    }
}

impl From<CacheError> for OAuthError {
    fn from(e: CacheError) -> Self {
        tracing::warn!(error = %e, "cache unavailable in an OAuth flow");
        OAuthError::TemporarilyUnavailable("the service is temporarily unavailable".into())
    }
}

impl From<diesel::result::Error> for OAuthError {
    fn from(e: diesel::result::Error) -> Self {
        StorageError::from(e).into()
    }
}

impl From<::grants::dpop::DpopError> for OAuthError {
    fn from(e: ::grants::dpop::DpopError) -> Self {
        match e {
            ::grants::dpop::DpopError::ReplayStoreUnavailable(why) => {
                tracing::warn!(error = %why, "DPoP replay store unavailable");
                OAuthError::TemporarilyUnavailable("the service is temporarily unavailable".into())
            }
            other => OAuthError::InvalidDpopProof(other.to_string()),
        }
    }
}
