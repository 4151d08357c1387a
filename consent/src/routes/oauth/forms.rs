//! The form bodies of the client-authenticated OAuth endpoints, as the OpenAPI document describes
//! them. The handlers read forms through [`super::ClientPost`], which takes the credentials out
//! first; these types only document what a client sends.

use serde::Deserialize;

use super::OAuthErrorBody;
use crate::oauth::flow::AuthorizationParams;

platform::documented_responses! {
    /// An RFC 6749 refusal of the request (`invalid_request`, `invalid_grant`, `invalid_scope`,
    /// `unsupported_grant_type`, `invalid_dpop_proof`, ...).
    OAuthRefused(OAuthErrorBody) = 400, "Refused: an RFC 6749 error code says why";
    /// The client did not authenticate.
    ClientRefused(OAuthErrorBody) = 401, "invalid_client: client authentication failed";
    /// `temporarily_unavailable`: storage is down.
    OAuthUnavailable(OAuthErrorBody) = 503,
        "temporarily_unavailable: storage is down (see Retry-After)";
    /// `temporarily_unavailable`: client authentication from this address is blocked for a while
    /// after repeated failures.
    ClientBlocked(OAuthErrorBody) = 429,
        "temporarily_unavailable: too many failed client authentications from this \
         address (see Retry-After)";
}

/// What every client-authenticated OAuth endpoint may refuse with: [`OAuthRefused`],
/// [`ClientRefused`], [`ClientBlocked`], a body over the size limit and [`OAuthUnavailable`].
#[derive(Debug)]
pub struct ClientCallRefused;

impl utoipa::IntoResponses for ClientCallRefused {
    fn responses() -> std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
    > {
        let mut all = OAuthRefused::responses();
        all.extend(ClientRefused::responses());
        all.extend(ClientBlocked::responses());
        all.extend(platform::problem::documented::TooLarge::responses());
        all.extend(OAuthUnavailable::responses());
        all
    }
}

/// Client authentication in the body (RFC 6749 section 2.3.1 `client_secret_post`, RFC 7523
/// `private_key_jwt`). Clients using `client_secret_basic` send the secret in `Authorization`
/// instead, and certificate-authenticated clients (RFC 8705) only their `client_id`. Use one
/// method per request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ClientAuthentication {
    /// The client's id; required here unless `Authorization: Basic` names it.
    #[schema(pattern = "^c_[A-Za-z0-9_-]+$", max_length = 128)]
    pub client_id: Option<String>,
    /// `client_secret_post`: the client's secret.
    #[schema(max_length = 512)]
    pub client_secret: Option<String>,
    /// `private_key_jwt`: the assertion's type.
    pub client_assertion_type: Option<ClientAssertionType>,
    /// `private_key_jwt`: a JWT the client signed (ES256, PS256 or EdDSA) for this server's
    /// issuer, single use.
    pub client_assertion: Option<String>,
}

/// RFC 7523 section 2.2.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub enum ClientAssertionType {
    #[serde(rename = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")]
    JwtBearer,
}

/// A pushed authorization request (RFC 9126): the authorization request's parameters and the
/// client's authentication.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ParRequest {
    #[serde(flatten)]
    pub request: AuthorizationParams,
    #[serde(flatten)]
    pub client: ClientAuthentication,
}

/// The grants the token endpoint serves.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    /// With `scope=ssf` only: a token for the Shared Signals API.
    ClientCredentials,
}

/// Token request (form fields).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TokenRequest {
    pub grant_type: GrantType,
    /// `authorization_code`: the code from the redirect.
    pub code: Option<String>,
    /// `authorization_code`: the redirect URI of the authorization request.
    pub redirect_uri: Option<String>,
    /// `authorization_code`: the PKCE verifier (RFC 7636: 43 to 128 characters).
    #[schema(min_length = 43, max_length = 128, pattern = "^[A-Za-z0-9._~-]+$")]
    pub code_verifier: Option<String>,
    /// `refresh_token`: the refresh token.
    pub refresh_token: Option<String>,
    /// `client_credentials`: `ssf`.
    pub scope: Option<String>,
    #[serde(flatten)]
    pub client: ClientAuthentication,
}

/// What kind of token a revocation or introspection request names (RFC 7009 section 2.1).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenTypeHint {
    AccessToken,
    RefreshToken,
}

/// Body of revocation and introspection requests.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TokenParam {
    /// An access token (Biscuit) or a refresh token.
    pub token: String,
    /// Optional; the token's form decides.
    pub token_type_hint: Option<TokenTypeHint>,
    #[serde(flatten)]
    pub client: ClientAuthentication,
}
