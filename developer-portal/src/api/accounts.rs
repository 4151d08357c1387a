//! Developer accounts and staff login on the JSON API: sign-up, bearer-token login and logout,
//! and the authenticated developer.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use platform::problem::ApiError;
use platform::problem::documented::NoDeveloperToken;
use platform::problem::documented::{Malformed, TooManyAttempts};
use platform::session::SessionKind;
use platform::web::no_store_json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Data;
use crate::accounts::{self, SignUp};
use crate::auth::{DeveloperAuth, client_addr};
use crate::kyc::{self, KycStatus};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUpRequest {
    /// Login email; trimmed and lower-cased.
    #[schema(example = "dev@fintech.example")]
    pub email: String,
    /// 12 to 256 characters.
    #[schema(example = "correct horse battery staple")]
    pub password: String,
    #[schema(example = "Dana Developer")]
    pub display_name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeveloperResponse {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
    #[schema(value_type = crate::api::DeveloperKycStatus, example = "submitted")]
    pub kyc_status: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeveloperLoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StaffLoginRequest {
    pub username: String,
    pub password: String,
}

impl DeveloperResponse {
    fn new(dev: accounts::DeveloperAccount, kyc: Option<KycStatus>) -> Self {
        Self {
            id: dev.id,
            email: dev.email,
            display_name: dev.display_name,
            created_at: dev.created_at,
            kyc_status: kyc.map_or("none", KycStatus::as_str).into(),
        }
    }
}

/// A session token for the portal's JSON API, developer or staff (shown once; the server stores
/// only its hash). Not an OAuth token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = SessionToken)]
pub struct TokenResponse {
    pub access_token: String,
    #[schema(value_type = crate::api::SessionTokenType)]
    pub token_type: String,
    pub expires_at: DateTime<Utc>,
    /// Present when the password was right and a second factor is still due: `verify` (send a
    /// code to `.../login/second-factor`) or `enrol` (staff without an authenticator: set one up
    /// at `/api/v1/admin/second-factor`). Until then the token is good for nothing else, for ten
    /// minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::api::SecondFactorDue>)]
    pub second_factor_due: Option<String>,
}

impl TokenResponse {
    pub(crate) fn of(l: &accounts::LoggedIn) -> Self {
        Self {
            access_token: l.token.expose().to_string(),
            token_type: "Bearer".into(),
            expires_at: l.session.expires_at,
            second_factor_due: l.due.map(|d| d.as_str().to_string()),
        }
    }
}

/// Sign up as a developer.
#[utoipa::path(post, path = "/api/v1/developers", tag = "developers",
    request_body = SignUpRequest,
    responses(
        (status = 201, description = "Account created", body = DeveloperResponse),
        (status = 400, description = "Invalid email, password or name", body = platform::problem::Problem),
        (status = 409, description = "Email already registered", body = platform::problem::Problem),
        (status = 415, description = "Not JSON", body = platform::problem::Problem),
        (status = 429, description = "Too many sign-ups from this address", body = platform::problem::Problem)))]
pub async fn sign_up(
    p: Data,
    req: HttpRequest,
    body: web::Json<SignUpRequest>,
) -> Result<HttpResponse, ApiError> {
    let input = SignUp::parse(&body.email, &body.password, &body.display_name)?;
    let dev = accounts::sign_up(&p, input, &client_addr(&req)).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", "/api/v1/developers/me"))
        .json(DeveloperResponse::new(dev, None)))
}

/// Logs `name` in for a `kind` session and answers its bearer token.
async fn login(
    p: &Data,
    req: &HttpRequest,
    kind: SessionKind,
    name: &str,
    password: &str,
) -> Result<HttpResponse, ApiError> {
    let l = accounts::login(p, kind, name, password, &client_addr(req)).await?;
    Ok(no_store_json(&TokenResponse::of(&l)))
}

/// Log in as a developer: returns a bearer token for the JSON API (which owes a second factor
/// when the developer has set one up: `second_factor_due`).
#[utoipa::path(post, path = "/api/v1/developers/login", tag = "developers",
    request_body = DeveloperLoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        Malformed,
        (status = 401, description = "Wrong email or password", body = platform::problem::Problem),
        TooManyAttempts))]
pub async fn developer_login(
    p: Data,
    req: HttpRequest,
    body: web::Json<DeveloperLoginRequest>,
) -> Result<HttpResponse, ApiError> {
    login(
        &p,
        &req,
        SessionKind::Developer,
        &body.email,
        &body.password,
    )
    .await
}

/// End the bearer token's session.
#[utoipa::path(post, path = "/api/v1/developers/logout", tag = "developers",
    security(("developer_token" = [])),
    responses((status = 204, description = "Logged out"),
        NoDeveloperToken))]
pub async fn developer_logout(auth: DeveloperAuth) -> Result<HttpResponse, ApiError> {
    let session = auth.session.clone();
    auth.write(move |c, _, now| accounts::logout(c, &session, now))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The authenticated developer.
#[utoipa::path(get, path = "/api/v1/developers/me", tag = "developers", operation_id = "developer_me",
    security(("developer_token" = [])),
    responses((status = 200, description = "The developer", body = DeveloperResponse),
        NoDeveloperToken))]
pub async fn me(auth: DeveloperAuth) -> Result<web::Json<DeveloperResponse>, ApiError> {
    let (dev, status) = auth
        .read(move |c, id, _| Ok((accounts::developer(c, id)?, kyc::status_of(c, id)?)))
        .await?;
    Ok(web::Json(DeveloperResponse::new(dev, status)))
}

/// Log in as staff: returns a token that owes the second factor (`second_factor_due`); the code
/// (or, the first time, enrolment) turns it into a bearer token for `/api/v1/admin`.
#[utoipa::path(post, path = "/api/v1/admin/login", tag = "staff",
    request_body = StaffLoginRequest,
    responses((status = 200, description = "Logged in", body = TokenResponse),
        Malformed,
        (status = 401, description = "Wrong username or password", body = platform::problem::Problem),
        TooManyAttempts))]
pub async fn staff_login(
    p: Data,
    req: HttpRequest,
    body: web::Json<StaffLoginRequest>,
) -> Result<HttpResponse, ApiError> {
    login(&p, &req, SessionKind::Staff, &body.username, &body.password).await
}
