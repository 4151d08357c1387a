//! OAuth errors: `Display` is the RFC 6749 / 9126 / 9396 error code. The HTTP response (status,
//! `WWW-Authenticate`, JSON body, `Cache-Control: no-store`) is built in one place, in
//! `routes::oauth`.

use platform::cache::CacheError;
use platform::storage::StorageError;

/// Declares the errors, each with its RFC error code (its `Display`), and their descriptions.
macro_rules! oauth_errors {
    ($($(#[$doc:meta])* $variant:ident = $code:literal,)*) => {
        /// An OAuth error: the RFC error code and a human-readable description.
        #[derive(Debug, thiserror::Error)]
        pub enum OAuthError {
            $($(#[$doc])* #[error($code)] $variant(String),)*
        }

        impl OAuthError {
            /// Human-readable `error_description` (never contains secrets).
            pub fn description(&self) -> &str {
                match self {
                    $(OAuthError::$variant(d))|* => d,
                }
            }
        }
    };
}

oauth_errors! {
    InvalidRequest = "invalid_request",
    InvalidClient = "invalid_client",
    InvalidGrant = "invalid_grant",
    UnauthorizedClient = "unauthorized_client",
    UnsupportedGrantType = "unsupported_grant_type",
    UnsupportedResponseType = "unsupported_response_type",
    InvalidScope = "invalid_scope",
    InvalidAuthorizationDetails = "invalid_authorization_details",
    InvalidRequestUri = "invalid_request_uri",
    AccessDenied = "access_denied",
    UnsupportedTokenType = "unsupported_token_type",
    /// RFC 9449: the DPoP proof is missing, malformed, replayed, or signed by another key than
    /// the one the request, code or refresh token is bound to.
    InvalidDpopProof = "invalid_dpop_proof",
    /// OpenID Grant Management: `grant_id` names no live grant of this client (and customer).
    InvalidGrantId = "invalid_grant_id",
    TemporarilyUnavailable = "temporarily_unavailable",
    /// Client authentication from this address is blocked for a while after repeated failures
    /// (answered 429 `temporarily_unavailable`, with `Retry-After: 60`: the caller's doing, not
    /// a fault of the server's, so monitoring does not count a credential spray as an outage).
    AuthenticationBlocked = "temporarily_unavailable",
    ServerError = "server_error",
}

impl OAuthError {
    /// The RFC error code.
    pub fn code(&self) -> String {
        self.to_string()
    }

    pub fn status(&self) -> u16 {
        match self {
            OAuthError::InvalidClient(_) => 401,
            OAuthError::TemporarilyUnavailable(_) => 503,
            OAuthError::AuthenticationBlocked(_) => 429,
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
