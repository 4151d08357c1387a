//! The authorization server's service layer: plain Rust over `platform` storage, no actix types.
//! HTTP lives in `routes::oauth` and `routes::pages`.
//!
//! Why not oxide-auth: its synchronous Registrar/Authorizer/Issuer traits fit none of what this
//! server needs beyond the basics - PAR, RAR, `iss`, S256-only PKCE (oxide-auth also accepts
//! `plain`), DB-backed single-use codes with reuse detection, and Biscuit access tokens minted
//! from a customer-narrowed grant - and each would have to be built beside it anyway. The
//! primitives it would contribute (exact redirect matching, the S256 comparison) are a few lines
//! here, tested directly.

pub mod answers;
pub mod assertion;
pub mod client_auth;
pub mod clients;
pub mod dpop;
pub mod endpoints;
pub mod error;
pub mod flow;
pub mod keys;
pub mod rar;
pub mod tokens;

use platform::Platform;

pub use error::OAuthError;

/// Everything the OAuth flows need; one `Arc`, so a clone is one reference count (a handler that
/// moves the service into a blocking call or a batch clones it on every request).
#[derive(Debug, Clone)]
pub struct OAuthService(std::sync::Arc<OAuthParts>);

impl OAuthService {
    pub fn new(parts: OAuthParts) -> Self {
        Self(std::sync::Arc::new(parts))
    }
}

impl std::ops::Deref for OAuthService {
    type Target = OAuthParts;

    fn deref(&self) -> &OAuthParts {
        &self.0
    }
}

/// What an [`OAuthService`] holds.
#[derive(Debug)]
pub struct OAuthParts {
    pub platform: Platform,
    pub keys: keys::KeyRing,
    /// The issuer identifier (RFC 8414 / RFC 9207 `iss`).
    pub issuer: String,
    /// Recent active introspection answers (see [`answers`]).
    pub answers: std::sync::Arc<answers::AnswerCache>,
    /// Batched refresh and introspection statements (PostgreSQL only; see [`tokens::batched`]).
    pub batches: Option<std::sync::Arc<tokens::batched::TokenBatches>>,
    /// Where Biscuits are verified (never on an HTTP worker or inside a database connection).
    pub verify: crate::verification::VerifyPool,
    /// Tokens verified before, by their bytes: a token presented again (as every token is, for
    /// its lifetime) skips its signature checks and block parsing (see [`::grants::DecodeCache`]).
    pub decoded: ::grants::DecodeCache,
}

impl OAuthService {
    /// The active client `id`, if there is one.
    pub async fn active_client(
        &self,
        id: &str,
    ) -> platform::storage::StorageResult<Option<clients::OAuthClient>> {
        let id = id.to_string();
        let client = self.platform.db.run(move |c| clients::load(c, &id)).await?;
        Ok(client.filter(clients::OAuthClient::is_active))
    }

    pub fn max_lifetime(&self) -> chrono::Duration {
        self.platform
            .settings
            .lifecycle
            .max_grant_lifetime
            .as_chrono()
    }
}
