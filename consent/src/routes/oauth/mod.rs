//! OAuth 2.0 endpoints: RFC 8414 metadata, biscuit keys, PAR, authorize, token, revoke,
//! introspect. Handlers parse, authenticate and call `crate::oauth`; errors become RFC 6749 JSON
//! in exactly one place ([`OAuthError`]'s `ResponseError`).

use platform::web::client_ip;
use std::collections::HashMap;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::web::{self, Bytes};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, get, post};
use futures_util::future::LocalBoxFuture;
use maud::html;
use platform::ratelimit::Decision;
use platform::web::mtls::{ClientCertificate, presented_certificate};
use platform::web::page;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::oauth::OAuthError;
pub use crate::oauth::client_auth::client_credentials;
use crate::oauth::clients::{ClientCredentials, OAuthClient};
use crate::oauth::dpop;
use crate::oauth::endpoints::TokenGrant;
use crate::oauth::flow::{self, AuthorizationParams, AuthorizeFailure, ParResponse};
use crate::oauth::tokens::{Introspection, TokenResponse};
use crate::routes::State;

/// What an OAuth endpoint answers: its refusals are RFC 6749 errors.
type OAuthAnswer = Result<HttpResponse, OAuthError>;
pub use forms::{
    ClientAuthentication, ClientBlocked, ClientCallRefused, ClientRefused, OAuthRefused,
    OAuthUnavailable, ParRequest, TokenParam, TokenRequest,
};

mod forms;

/// RFC 6749 error body.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OAuthErrorBody {
    /// RFC 6749 / 9126 / 9396 error code, e.g. `invalid_grant`.
    pub error: String,
    pub error_description: String,
}

impl ResponseError for OAuthError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status()).unwrap_or(StatusCode::BAD_REQUEST)
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        resp.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        if matches!(self, OAuthError::InvalidClient(_)) {
            resp.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"consent\""),
            ));
        }
        match self {
            OAuthError::TemporarilyUnavailable(_) => {
                resp.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            OAuthError::AuthenticationBlocked(_) => {
                resp.insert_header((header::RETRY_AFTER, HeaderValue::from_static("60")));
            }
            _ => {}
        }
        // A server error's description is ours (what failed inside), not the client's to read:
        // it goes to the log under a reference that the answer carries instead.
        let error_description = match self {
            OAuthError::ServerError(cause) => {
                let id = platform::problem::correlation_id();
                tracing::error!(correlation_id = %id, %cause, "OAuth request failed");
                format!("an unexpected error occurred; quote {id} to support")
            }
            other => other.description().to_string(),
        };
        resp.json(OAuthErrorBody {
            error: self.code(),
            error_description,
        })
    }
}

/// A client's POST to an OAuth endpoint: its `application/x-www-form-urlencoded` body (a
/// repeated parameter is an error, RFC 6749 section 3.1), what can authenticate the client (the
/// `Authorization` header, the form, the TLS client certificate), and the caller's address.
pub(crate) struct ClientPost {
    pub form: HashMap<String, String>,
    authorization: Option<String>,
    certificate: Option<ClientCertificate>,
    pub ip: String,
}

impl FromRequest for ClientPost {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = Bytes::from_request(req, payload);
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut post = Self::without_form(req);
        Box::pin(async move {
            post.form = parse_form_body(content_type.as_deref(), &body.await?)?;
            Ok(post)
        })
    }
}

impl ClientPost {
    /// What can authenticate the client of a request whose body is not a form (the grant API).
    pub(crate) fn without_form(req: &HttpRequest) -> Self {
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Self {
            form: HashMap::new(),
            authorization,
            certificate: presented_certificate(req),
            ip: client_ip(req),
        }
    }

    /// The client's credentials (exactly one method), taken out of the form.
    fn credentials(&mut self) -> Result<ClientCredentials, OAuthError> {
        client_credentials(
            self.authorization.as_deref(),
            &mut self.form,
            self.certificate.take(),
        )
    }

    /// [`OAuthService::authenticate`] for this request at `endpoint`.
    pub(crate) async fn authenticate(
        &mut self,
        state: &AppState,
        endpoint: &'static str,
    ) -> Result<OAuthClient, OAuthError> {
        let creds = self.credentials()?;
        state.oauth.authenticate(creds, &self.ip, endpoint).await
    }
}

/// Parses a form body ([`ClientPost`]; `content_type` is the header's value), on its own so that
/// it can be tested and fuzzed.
pub fn parse_form_body(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<HashMap<String, String>, OAuthError> {
    let ct = content_type.unwrap_or_default();
    if !ct
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(OAuthError::InvalidRequest(
            "the body must be application/x-www-form-urlencoded".into(),
        ));
    }
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(OAuthError::InvalidRequest(format!(
                "parameter {k} is repeated"
            )));
        }
    }
    Ok(out)
}

fn no_store(mut resp: HttpResponse) -> HttpResponse {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// RFC 8414 authorization server metadata.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServerMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub pushed_authorization_request_endpoint: String,
    pub require_pushed_authorization_requests: bool,
    pub revocation_endpoint: String,
    pub introspection_endpoint: String,
    pub response_types_supported: Vec<String>,
    pub response_modes_supported: Vec<String>,
    pub grant_types_supported: Vec<String>,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// Algorithms accepted in `private_key_jwt` assertions (RFC 7523).
    pub token_endpoint_auth_signing_alg_values_supported: Vec<String>,
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    pub code_challenge_methods_supported: Vec<String>,
    pub scopes_supported: Vec<String>,
    pub authorization_details_types_supported: Vec<String>,
    pub authorization_response_iss_parameter_supported: bool,
    /// RFC 9449: the algorithms accepted in DPoP proofs.
    pub dpop_signing_alg_values_supported: Vec<String>,
    /// RFC 8705: tokens can be bound to the client's TLS certificate (mutual TLS is available:
    /// this server terminates TLS, or trusted proxies pass certificates on).
    pub tls_client_certificate_bound_access_tokens: bool,
    /// RFC 8705 section 5: where clients connect with their certificate (present when mutual
    /// TLS is available; the same endpoints, on the same host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls_endpoint_aliases: Option<MtlsEndpointAliases>,
    /// Where resource servers fetch the Biscuit public keys.
    pub biscuit_keys_uri: String,
    pub service_documentation: String,
    /// OpenID Grant Management.
    pub grant_management_actions_supported: Vec<String>,
    /// `GET`/`DELETE {grant_management_endpoint}/{grant_id}`, client-authenticated.
    pub grant_management_endpoint: String,
    pub grant_management_action_required: bool,
}

/// RFC 8705 section 5 endpoint aliases.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MtlsEndpointAliases {
    pub token_endpoint: String,
    pub pushed_authorization_request_endpoint: String,
    pub revocation_endpoint: String,
    pub introspection_endpoint: String,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

/// Authorization server metadata (RFC 8414).
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "oauth",
    responses((status = 200, description = "Metadata", body = ServerMetadata)))]
#[get("/.well-known/oauth-authorization-server")]
pub async fn server_metadata(state: web::Data<AppState>) -> HttpResponse {
    let iss = &state.issuer;
    let mtls = state.platform.settings.mtls_available();
    let mut auth_methods = strings(&[
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ]);
    if mtls {
        // tls_client_auth authenticates nobody without an authority to chain to.
        if state.platform.settings.server.client_ca_file.is_some() {
            auth_methods.push("tls_client_auth".into());
        }
        auth_methods.push("self_signed_tls_client_auth".into());
    }
    HttpResponse::Ok().json(ServerMetadata {
        issuer: iss.clone(),
        authorization_endpoint: format!("{iss}/oauth2/authorize"),
        token_endpoint: format!("{iss}/oauth2/token"),
        pushed_authorization_request_endpoint: format!("{iss}/oauth2/par"),
        require_pushed_authorization_requests: false,
        revocation_endpoint: format!("{iss}/oauth2/revoke"),
        introspection_endpoint: format!("{iss}/oauth2/introspect"),
        response_types_supported: strings(&["code"]),
        response_modes_supported: strings(&["query"]),
        grant_types_supported: strings(&[
            "authorization_code",
            "refresh_token",
            "client_credentials",
        ]),
        token_endpoint_auth_methods_supported: auth_methods.clone(),
        token_endpoint_auth_signing_alg_values_supported: strings(&grants::jws::ALGS),
        revocation_endpoint_auth_methods_supported: auth_methods.clone(),
        introspection_endpoint_auth_methods_supported: auth_methods,
        code_challenge_methods_supported: strings(&["S256"]),
        scopes_supported: strings(&["accounts:read", "balances:read", "transactions:read"]),
        authorization_details_types_supported: strings(&["account_access"]),
        authorization_response_iss_parameter_supported: true,
        dpop_signing_alg_values_supported: strings(&grants::dpop::DPOP_ALGS),
        tls_client_certificate_bound_access_tokens: mtls,
        mtls_endpoint_aliases: mtls.then(|| MtlsEndpointAliases {
            token_endpoint: format!("{iss}/oauth2/token"),
            pushed_authorization_request_endpoint: format!("{iss}/oauth2/par"),
            revocation_endpoint: format!("{iss}/oauth2/revoke"),
            introspection_endpoint: format!("{iss}/oauth2/introspect"),
        }),
        biscuit_keys_uri: format!("{iss}/.well-known/biscuit-keys"),
        service_documentation: format!("{iss}/docs/"),
        grant_management_actions_supported: strings(&flow::ACTIONS_SUPPORTED),
        grant_management_endpoint: format!("{iss}/api/v1/grants"),
        grant_management_action_required: false,
    })
}

/// Public keys that verify access tokens, with their validity; retired keys stay until every
/// token they signed has expired.
#[utoipa::path(get, path = "/.well-known/biscuit-keys", tag = "oauth",
    responses((status = 200, description = "Biscuit public keys", body = grants::BiscuitKeys)))]
#[get("/.well-known/biscuit-keys")]
pub async fn biscuit_keys(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=60"))
        .json(state.oauth.keys.document())
}

/// The request's DPoP proof for `POST path`, checked but not yet recorded (see
/// [`crate::oauth::dpop`]).
fn dpop_proof(
    state: &AppState,
    req: &HttpRequest,
    path: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<grants::dpop::CheckedProof>, OAuthError> {
    match dpop::proof_header(req.headers()).map_err(OAuthError::InvalidDpopProof)? {
        Some(proof) => Ok(Some(state.oauth.check_post_proof(proof, path, now)?)),
        None => Ok(None),
    }
}

/// The authorization request parameters of a PAR body.
pub fn params_from(form: &HashMap<String, String>) -> AuthorizationParams {
    let get = |k: &str| form.get(k).cloned();
    AuthorizationParams {
        client_id: get("client_id"),
        response_type: get("response_type"),
        redirect_uri: get("redirect_uri"),
        state: get("state"),
        code_challenge: get("code_challenge"),
        code_challenge_method: get("code_challenge_method"),
        scope: get("scope"),
        authorization_details: get("authorization_details"),
        request_uri: get("request_uri"),
        dpop_jkt: get("dpop_jkt"),
        grant_id: get("grant_id"),
        grant_management_action: get("grant_management_action"),
    }
}

/// Pushed authorization request (RFC 9126). Client-authenticated; the body carries the
/// authorization request parameters.
#[utoipa::path(post, path = "/oauth2/par", tag = "oauth",
    request_body(content = ParRequest, content_type = "application/x-www-form-urlencoded"),
    security(("client_basic" = []), ("mutual_tls" = []), ()),
    responses(
        (status = 201, description = "Request stored", body = ParResponse),
        ClientCallRefused))]
#[post("/oauth2/par")]
pub async fn par_endpoint(state: State, req: HttpRequest, mut post: ClientPost) -> OAuthAnswer {
    let now = state.platform.now();
    let proof = dpop_proof(&state, &req, "/oauth2/par", now)?;
    let client = post.authenticate(&state, "par").await?;
    // A proof's use is recorded only for an authenticated client: strangers fill no store.
    let proven = match proof {
        Some(p) => Some(state.oauth.record_proof(p, now).await?),
        None => None,
    };
    let params = params_from(&post.form);
    let resp = flow::push(&state.oauth, &client, params, proven.as_deref()).await?;
    Ok(no_store(HttpResponse::Created().json(resp)))
}

pub fn error_page(status: StatusCode, title: &str, message: &str) -> HttpResponse {
    let markup = page(
        title,
        html! {
            h1 { (title) }
            p { (message) }
            p.muted { "You can close this window and return to the app." }
        },
    );
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(markup.into_string())
}

pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// Authorization endpoint. Valid requests continue to login and the consent page; an unknown
/// client or unregistered redirect URI gets an error page (never a redirect); other errors are
/// returned to the client's redirect URI with `state` and `iss`.
#[utoipa::path(get, path = "/oauth2/authorize", tag = "oauth", params(AuthorizationParams),
    responses(
        (status = 303, description = "To the consent page, or back to the client with an error"),
        (status = 400, description = "Error page (untrusted client or redirect URI)", body = String, content_type = "text/html"),
        (status = 429, description = "Error page: too many authorization requests from this address (see Retry-After)", body = String, content_type = "text/html"),
        (status = 503, description = "Error page: temporarily unavailable (see Retry-After)", body = String, content_type = "text/html")))]
#[get("/oauth2/authorize")]
pub async fn authorize_endpoint(state: State, req: HttpRequest) -> HttpResponse {
    // Each valid request stores a pending row: bound how fast one address can create them.
    let ip = client_ip(&req);
    let ip = platform::web::throttle_unit(&ip);
    if let Decision::Limited { .. } = state
        .platform
        .rate_limiter
        .check(
            &format!("authorize:{ip}"),
            120,
            std::time::Duration::from_secs(60),
        )
        .await
    {
        let mut page = error_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
            "Wait a minute and try again.",
        );
        page.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return page;
    }
    let mut seen = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        if seen.insert(k.to_string(), v.to_string()).is_some() {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Invalid request",
                &format!("Parameter {k} is repeated."),
            );
        }
    }
    match flow::authorize(&state.oauth, params_from(&seen)).await {
        Ok(id) => see_other(&format!("/oauth2/consent/{id}")),
        Err(AuthorizeFailure::Page(msg)) => error_page(
            StatusCode::BAD_REQUEST,
            "This request cannot be processed",
            &msg,
        ),
        Err(AuthorizeFailure::Unavailable(msg)) => {
            let mut page = error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                &msg,
            );
            page.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            page
        }
        Err(AuthorizeFailure::Redirect {
            redirect_uri,
            error,
            state: st,
        }) => {
            let mut url = match url::Url::parse(&redirect_uri) {
                Ok(u) => u,
                Err(_) => {
                    return error_page(
                        StatusCode::BAD_REQUEST,
                        "Invalid request",
                        "Bad redirect URI.",
                    );
                }
            };
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("error", &error.code());
                q.append_pair("error_description", error.description());
                if let Some(s) = &st {
                    q.append_pair("state", s);
                }
                q.append_pair("iss", &state.issuer);
            }
            see_other(url.as_str())
        }
    }
}

/// Token endpoint: `authorization_code` (PKCE S256) and `refresh_token` (rotating). The access
/// token is a Biscuit; the response carries the granted `authorization_details` and `grant_id`.
/// `client_credentials` with `scope=ssf` answers an opaque token for the Shared Signals API
/// (`ClientTokenResponse`), for clients whose credentials go in a form.
#[utoipa::path(post, path = "/oauth2/token", tag = "oauth",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    security(("client_basic" = []), ("mutual_tls" = []), ()),
    responses(
        (status = 200, description = "Tokens", body = TokenAnswer),
        ClientCallRefused))]
#[post("/oauth2/token")]
pub async fn token_endpoint(state: State, req: HttpRequest, mut post: ClientPost) -> OAuthAnswer {
    let grant = TokenGrant::from_form(&mut post.form);
    // The certificate may authenticate the client, and binds the tokens.
    let thumbprint = post.certificate.as_ref().map(|c| c.thumbprint.clone());
    let creds = post.credentials()?;
    let label = grant.label();
    let now = state.platform.now();
    let proof = dpop_proof(&state, &req, "/oauth2/token", now)?;
    let result = match grant {
        TokenGrant::ClientCredentials { scope } => TokenAnswer::Ssf(
            crate::ssf::access::issue(&state.oauth, creds, &post.ip, scope, proof.is_some(), now)
                .await?,
        ),
        grant => TokenAnswer::Grant(
            state
                .oauth
                .token(creds, &post.ip, grant, proof, thumbprint, now)
                .await?,
        ),
    };
    metrics::counter!("consent_tokens_issued_total", "grant_type" => label).increment(1);
    Ok(no_store(HttpResponse::Ok().json(result)))
}

/// What the token endpoint answers: a grant's tokens, or (`client_credentials`) an SSF API token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum TokenAnswer {
    Grant(TokenResponse),
    Ssf(crate::ssf::access::ClientTokenResponse),
}

/// Token revocation (RFC 7009). Revoking a refresh token ends its grant; revoking an access
/// token lists its revocation ids. Always 200 for a well-formed request.
#[utoipa::path(post, path = "/oauth2/revoke", tag = "oauth",
    request_body(content = TokenParam, content_type = "application/x-www-form-urlencoded"),
    security(("client_basic" = []), ("mutual_tls" = []), ()),
    responses(
        (status = 200, description = "Revoked (or unknown token)"),
        ClientCallRefused))]
#[post("/oauth2/revoke")]
pub async fn revoke_endpoint(state: State, mut post: ClientPost) -> OAuthAnswer {
    let creds = post.credentials()?;
    let token = post.form.remove("token");
    let now = state.platform.now();
    state.oauth.revoke(creds, &post.ip, token, now).await?;
    Ok(no_store(HttpResponse::Ok().finish()))
}

/// Token introspection (RFC 7662): grant status and authorization details.
#[utoipa::path(post, path = "/oauth2/introspect", tag = "oauth",
    request_body(content = TokenParam, content_type = "application/x-www-form-urlencoded"),
    security(("client_basic" = []), ("mutual_tls" = []), ()),
    responses(
        (status = 200, description = "Introspection result", body = Introspection),
        ClientCallRefused))]
#[post("/oauth2/introspect")]
pub async fn introspect_endpoint(state: State, mut post: ClientPost) -> OAuthAnswer {
    let token = post.form.remove("token");
    let creds = post.credentials()?;
    let now = state.platform.now();
    let result = state
        .oauth
        .introspect(creds, &post.ip, token, &state.revocations, now)
        .await?;
    Ok(no_store(
        HttpResponse::Ok()
            .content_type(actix_web::http::header::ContentType::json())
            .body(result.json()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    /// `server_error` answers name no internals (key material, storage detail): only a reference
    /// that the error log carries with the cause.
    #[test]
    fn server_errors_describe_nothing_internal() {
        let resp =
            OAuthError::ServerError("cannot mint: key kid_7 unreadable".into()).error_response();
        assert_eq!(resp.status(), 500);
        let body = resp.into_body().try_into_bytes().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "server_error");
        let description = v["error_description"].as_str().unwrap();
        assert!(!description.contains("kid_7"), "{description}");
        assert!(description.contains("err_"), "{description}");
        // Client errors still explain themselves.
        let resp = OAuthError::InvalidGrant("the code was already used".into()).error_response();
        let body = resp.into_body().try_into_bytes().unwrap();
        assert!(String::from_utf8_lossy(&body).contains("already used"));
    }
}
