//! The portal's JSON API (`/api/v1/developers`, `/api/v1/clients`, `/api/v1/admin/...`). Handlers
//! are thin: parse, authenticate, call a service, shape the response. Errors are RFC 9457
//! problems.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use platform::Platform;
use platform::problem::ApiError;
use platform::session::SessionKind;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::accounts::{self, SignUp};
use crate::approvals::{self, ApprovalRequest, ApprovalStatus};
use crate::auth::{DeveloperAuth, StaffAuth, client_addr};
use crate::clients::{self, ClientUpdate, ClientView, ClientWithSecret, NewClient};
use crate::error::{PortalError, read, write, write_revoking};
use crate::kyc::{
    self, KycDetails, KycDocument, KycRecord, KycStatus, ReviewDecision, StaffKycView,
};

type Data = web::Data<Platform>;

// ----- bodies -----

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
    /// KYC status (`none` before any details are saved).
    #[schema(example = "submitted")]
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

/// A bearer token for the JSON API (shown once; the server stores only its hash).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KycDocumentBody {
    /// certificate_of_incorporation, proof_of_address, identity_document, license,
    /// ownership_structure or other.
    #[schema(example = "certificate_of_incorporation")]
    pub kind: String,
    #[schema(example = "incorporation.pdf")]
    pub filename: String,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KycRequest {
    pub legal_name: String,
    pub registration_number: String,
    /// ISO 3166-1 alpha-2.
    #[schema(example = "DE")]
    pub country: String,
    pub address: String,
    pub contact_person: String,
    pub documents: Vec<KycDocumentBody>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KycResponse {
    pub id: String,
    /// draft, submitted, approved, rejected or needs_information.
    pub status: String,
    /// Review round (a resubmission starts a new one).
    pub round: i32,
    pub legal_name: String,
    pub registration_number: String,
    pub country: String,
    pub address: String,
    pub contact_person: String,
    pub documents: Vec<KycDocumentBody>,
    /// Staff's reason, for rejected and needs_information.
    pub decision_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub submitted_at: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClientRequest {
    pub name: String,
    /// `sandbox` (any time) or `production` (approved KYC only).
    #[schema(example = "sandbox")]
    pub environment: String,
    /// Exact redirect URIs: https (http only on loopback, sandbox only), no fragment, no
    /// wildcard, no user info; 1 to 10, each at most 512 characters.
    #[schema(example = json!(["https://app.fintech.example/callback"]))]
    pub redirect_uris: Vec<String>,
    /// `client_secret_basic` (default) or `client_secret_post`.
    pub auth_method: Option<String>,
    /// Subset of accounts:read, balances:read, transactions:read (default: all).
    pub allowed_actions: Option<Vec<String>>,
    pub webhook_url: Option<String>,
}

fn double_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateClientRequest {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    /// A URL sets the webhook; `null` removes it; absent leaves it unchanged.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub webhook_url: Option<Option<String>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClientResponse {
    #[schema(example = "c_Zm9vYmFy")]
    pub client_id: String,
    pub name: String,
    pub environment: String,
    /// active or suspended.
    pub status: String,
    pub redirect_uris: Vec<String>,
    pub auth_method: String,
    pub allowed_actions: Vec<String>,
    pub webhook_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A client with its secret, returned once by create, secret rotation and (for the webhook
/// secret) the first update that sets a webhook URL.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClientSecretResponse {
    #[serde(flatten)]
    pub client: ClientResponse,
    /// Shown only in this response; store it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Webhook signing secret, shown only once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryList {
    pub deliveries: Vec<clients::WebhookDelivery>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookSecretResponse {
    /// `whsec_...` (Standard Webhooks format), shown only in this response.
    pub webhook_secret: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClientList {
    pub clients: Vec<ClientResponse>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KycQueueItem {
    pub id: String,
    pub developer_email: String,
    pub country: String,
    pub status: String,
    pub round: i32,
    pub approvals_this_round: usize,
    pub submitted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KycQueue {
    pub submissions: Vec<KycQueueItem>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StatusQuery {
    /// Filter by status.
    pub status: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KycReviewResponse {
    pub id: String,
    pub staff_id: String,
    pub staff_username: String,
    /// approve, reject or needs_information.
    pub decision: String,
    pub justification: String,
    pub round: i32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StaffKycResponse {
    pub developer_email: String,
    pub submission: KycResponse,
    /// Every review of every round, with its justification.
    pub reviews: Vec<KycReviewResponse>,
    pub approvals_this_round: usize,
    /// Approvals needed from distinct staff members.
    pub approvals_required: usize,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KycReviewRequest {
    /// approve, reject or needs_information.
    #[schema(example = "approve")]
    pub decision: String,
    /// At least 10 characters.
    pub justification: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JustificationRequest {
    /// At least 10 characters.
    pub justification: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApprovalResponse {
    pub id: String,
    /// e.g. client.suspend, keys.rotate, customer.grants.access
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub payload: serde_json::Value,
    pub justification: String,
    pub requested_by: String,
    /// pending, approved, rejected or expired.
    pub status: String,
    pub decided_by: Option<String>,
    pub decision_justification: Option<String>,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApprovalList {
    pub requests: Vec<ApprovalResponse>,
}

// ----- conversions -----

impl From<ClientView> for ClientResponse {
    fn from(c: ClientView) -> Self {
        Self {
            client_id: c.id,
            name: c.name,
            environment: c.environment,
            status: c.status,
            redirect_uris: c.redirect_uris,
            auth_method: c.auth_method,
            allowed_actions: c.allowed_actions,
            webhook_url: c.webhook_url,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

impl From<ClientWithSecret> for ClientSecretResponse {
    fn from(c: ClientWithSecret) -> Self {
        Self {
            client: c.client.into(),
            client_secret: Some(c.client_secret.expose().to_string()),
            webhook_secret: c.webhook_secret.map(|s| s.expose().to_string()),
        }
    }
}

impl From<KycRecord> for KycResponse {
    fn from(r: KycRecord) -> Self {
        let d = r.details;
        Self {
            id: r.id,
            status: r.status.as_str().into(),
            round: r.round,
            legal_name: d.legal_name,
            registration_number: d.registration_number,
            country: d.country,
            address: d.address,
            contact_person: d.contact_person,
            documents: d
                .documents
                .into_iter()
                .map(|x| KycDocumentBody {
                    kind: x.kind,
                    filename: x.filename,
                    sha256: x.sha256,
                })
                .collect(),
            decision_reason: r.decision_reason,
            created_at: r.created_at,
            updated_at: r.updated_at,
            submitted_at: r.submitted_at,
            decided_at: r.decided_at,
        }
    }
}

impl From<StaffKycView> for StaffKycResponse {
    fn from(v: StaffKycView) -> Self {
        Self {
            developer_email: v.developer_email,
            submission: v.record.into(),
            reviews: v
                .reviews
                .into_iter()
                .map(|r| KycReviewResponse {
                    id: r.id,
                    staff_id: r.staff_id,
                    staff_username: r.staff_username,
                    decision: r.decision,
                    justification: r.justification,
                    round: r.round,
                    created_at: r.created_at,
                })
                .collect(),
            approvals_this_round: v.approvals_this_round,
            approvals_required: 2,
        }
    }
}

pub(crate) fn approval_response(r: ApprovalRequest, now: DateTime<Utc>) -> ApprovalResponse {
    ApprovalResponse {
        status: r.status_at(now).as_str().into(),
        id: r.id,
        action: r.action.as_str().into(),
        target_type: r.target.kind,
        target_id: r.target.id,
        payload: r.payload,
        justification: r.justification,
        requested_by: r.requested_by,
        decided_by: r.decided_by,
        decision_justification: r.decision_justification,
        created_at: r.created_at,
        decided_at: r.decided_at,
        expires_at: r.expires_at,
    }
}

fn kyc_details(b: &KycRequest) -> Result<KycDetails, PortalError> {
    let docs: Vec<KycDocument> = b
        .documents
        .iter()
        .map(|d| KycDocument {
            kind: d.kind.clone(),
            filename: d.filename.clone(),
            sha256: d.sha256.clone(),
        })
        .collect();
    KycDetails::parse(
        &b.legal_name,
        &b.registration_number,
        &b.country,
        &b.address,
        &b.contact_person,
        &docs,
    )
}

/// Path ids longer than any id we issue cannot exist.
fn id_param(id: &str, what: &'static str) -> Result<String, ApiError> {
    if id.is_empty() || id.len() > 100 {
        return Err(ApiError::NotFound(what));
    }
    Ok(id.to_string())
}

fn kyc_status_param(q: &StatusQuery) -> Result<Option<KycStatus>, ApiError> {
    match q.status.as_deref() {
        None => Ok(None),
        Some(s) => KycStatus::parse(s).map(Some).ok_or_else(|| {
            ApiError::field(
                "status",
                "must be draft, submitted, approved, rejected or needs_information",
            )
        }),
    }
}

// ----- developers -----

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
        .json(DeveloperResponse {
            id: dev.id,
            email: dev.email,
            display_name: dev.display_name,
            created_at: dev.created_at,
            kyc_status: "none".into(),
        }))
}

fn token_response(l: accounts::LoggedIn) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(TokenResponse {
            access_token: l.token.expose().to_string(),
            token_type: "Bearer".into(),
            expires_at: l.session.expires_at,
        })
}

/// Log in as a developer: returns a bearer token for the JSON API.
#[utoipa::path(post, path = "/api/v1/developers/login", tag = "developers",
    request_body = DeveloperLoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 400, description = "Malformed request", body = platform::problem::Problem),
        (status = 401, description = "Wrong email or password", body = platform::problem::Problem),
        (status = 429, description = "Too many attempts (see Retry-After)", body = platform::problem::Problem)))]
pub async fn developer_login(
    p: Data,
    req: HttpRequest,
    body: web::Json<DeveloperLoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let l = accounts::login(
        &p,
        SessionKind::Developer,
        &body.email,
        &body.password,
        &client_addr(&req),
    )
    .await?;
    Ok(token_response(l))
}

/// End the bearer token's session.
#[utoipa::path(post, path = "/api/v1/developers/logout", tag = "developers",
    security(("developer_token" = [])),
    responses((status = 204, description = "Logged out"),
        (status = 401, description = "Missing or invalid bearer token", body = platform::problem::Problem)))]
pub async fn developer_logout(p: Data, auth: DeveloperAuth) -> Result<HttpResponse, ApiError> {
    let now = p.now();
    write(&p, move |c| accounts::logout(c, &auth.0, now)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The authenticated developer.
#[utoipa::path(get, path = "/api/v1/developers/me", tag = "developers",
    security(("developer_token" = [])),
    responses((status = 200, description = "The developer", body = DeveloperResponse),
        (status = 401, description = "Missing or invalid bearer token", body = platform::problem::Problem)))]
pub async fn me(p: Data, auth: DeveloperAuth) -> Result<web::Json<DeveloperResponse>, ApiError> {
    let id = auth.0.subject_id;
    let (dev, status) = read(&p, move |c| {
        Ok((accounts::developer(c, &id)?, kyc::status_of(c, &id)?))
    })
    .await?;
    Ok(web::Json(DeveloperResponse {
        id: dev.id,
        email: dev.email,
        display_name: dev.display_name,
        created_at: dev.created_at,
        kyc_status: status.map_or("none", KycStatus::as_str).into(),
    }))
}

/// The developer's KYC submission (decrypted for its owner).
#[utoipa::path(get, path = "/api/v1/developers/me/kyc", tag = "developers",
    security(("developer_token" = [])),
    responses((status = 200, description = "KYC details and status", body = KycResponse),
        (status = 401, description = "Missing or invalid bearer token", body = platform::problem::Problem),
        (status = 404, description = "No KYC details saved yet", body = platform::problem::Problem)))]
pub async fn get_kyc(p: Data, auth: DeveloperAuth) -> Result<web::Json<KycResponse>, ApiError> {
    let cipher = p.master_key.cipher(kyc::PII_KEY);
    let id = auth.0.subject_id;
    let r = read(&p, move |c| kyc::for_developer(c, &cipher, &id)).await?;
    r.map(|r| web::Json(r.into()))
        .ok_or(ApiError::NotFound("KYC submission"))
}

/// Save KYC details (as a draft, or while more information is requested).
#[utoipa::path(put, path = "/api/v1/developers/me/kyc", tag = "developers",
    security(("developer_token" = [])),
    request_body = KycRequest,
    responses((status = 200, description = "Saved", body = KycResponse),
        (status = 400, description = "Invalid field", body = platform::problem::Problem),
        (status = 401, description = "Missing or invalid bearer token", body = platform::problem::Problem),
        (status = 409, description = "Under review or decided: no longer editable", body = platform::problem::Problem)))]
pub async fn put_kyc(
    p: Data,
    auth: DeveloperAuth,
    body: web::Json<KycRequest>,
) -> Result<web::Json<KycResponse>, ApiError> {
    let details = kyc_details(&body)?;
    let cipher = p.master_key.cipher(kyc::PII_KEY);
    let id = auth.0.subject_id;
    let now = p.now();
    let r = write(&p, move |c| kyc::save(c, &cipher, &id, &details, now)).await?;
    Ok(web::Json(r.into()))
}

/// Submit (or resubmit) the saved KYC details for staff review.
#[utoipa::path(post, path = "/api/v1/developers/me/kyc/submit", tag = "developers",
    security(("developer_token" = [])),
    responses((status = 200, description = "Submitted", body = KycResponse),
        (status = 401, description = "Missing or invalid bearer token", body = platform::problem::Problem),
        (status = 404, description = "No KYC details saved yet", body = platform::problem::Problem),
        (status = 409, description = "Already submitted or decided", body = platform::problem::Problem)))]
pub async fn submit_kyc(p: Data, auth: DeveloperAuth) -> Result<web::Json<KycResponse>, ApiError> {
    let cipher = p.master_key.cipher(kyc::PII_KEY);
    let id = auth.0.subject_id;
    let now = p.now();
    let r = write(&p, move |c| kyc::submit(c, &cipher, &id, now)).await?;
    Ok(web::Json(r.into()))
}

// ----- clients -----

/// Register a client. The secret is in this response only.
#[utoipa::path(post, path = "/api/v1/clients", tag = "clients",
    security(("developer_token" = [])),
    request_body = CreateClientRequest,
    responses((status = 201, description = "Created; the secret is shown once", body = ClientSecretResponse),
        (status = 400, description = "Invalid field (e.g. a redirect URI)", body = platform::problem::Problem),
        (status = 401, description = "Missing or invalid bearer token", body = platform::problem::Problem),
        (status = 403, description = "Production client without approved KYC", body = platform::problem::Problem)))]
pub async fn create_client(
    p: Data,
    auth: DeveloperAuth,
    body: web::Json<CreateClientRequest>,
) -> Result<HttpResponse, ApiError> {
    let new = NewClient::parse(
        &body.name,
        &body.environment,
        &body.redirect_uris,
        body.auth_method.as_deref(),
        body.allowed_actions.as_deref(),
        body.webhook_url.as_deref(),
    )?;
    let key = p.master_key.clone();
    let dev = auth.0.subject_id;
    let now = p.now();
    let created = write(&p, move |c| clients::create(c, &key, &dev, &new, now)).await?;
    let location = format!("/api/v1/clients/{}", created.client.id);
    Ok(HttpResponse::Created()
        .insert_header(("Location", location))
        .insert_header(("Cache-Control", "no-store"))
        .json(ClientSecretResponse::from(created)))
}

/// The developer's clients.
#[utoipa::path(get, path = "/api/v1/clients", tag = "clients",
    security(("developer_token" = [])),
    responses((status = 200, description = "Clients", body = ClientList),
        (status = 401, description = "Missing or invalid bearer token", body = platform::problem::Problem)))]
pub async fn list_clients(p: Data, auth: DeveloperAuth) -> Result<web::Json<ClientList>, ApiError> {
    let dev = auth.0.subject_id;
    let list = read(&p, move |c| clients::list(c, &dev)).await?;
    Ok(web::Json(ClientList {
        clients: list.into_iter().map(Into::into).collect(),
    }))
}

/// One of the developer's clients.
#[utoipa::path(get, path = "/api/v1/clients/{client_id}", tag = "clients",
    security(("developer_token" = [])),
    params(("client_id" = String, Path, description = "Client id")),
    responses((status = 200, description = "The client", body = ClientResponse),
        (status = 401, description = "Missing or invalid bearer token", body = platform::problem::Problem),
        (status = 404, description = "No such client of yours", body = platform::problem::Problem)))]
pub async fn get_client(
    p: Data,
    auth: DeveloperAuth,
    path: web::Path<String>,
) -> Result<web::Json<ClientResponse>, ApiError> {
    let id = id_param(&path, "client")?;
    let dev = auth.0.subject_id;
    let c = read(&p, move |c| clients::get(c, &dev, &id)).await?;
    Ok(web::Json(c.into()))
}

/// Change a client's name, redirect URIs or webhook URL.
#[utoipa::path(patch, path = "/api/v1/clients/{client_id}", tag = "clients",
    security(("developer_token" = [])),
    params(("client_id" = String, Path, description = "Client id")),
    request_body = UpdateClientRequest,
    responses((status = 200, description = "Updated (webhook_secret present when a webhook was set for the first time)", body = ClientSecretResponse),
        (status = 400, description = "Invalid field", body = platform::problem::Problem),
        (status = 401, description = "Missing or invalid bearer token", body = platform::problem::Problem),
        (status = 404, description = "No such client of yours", body = platform::problem::Problem),
        (status = 409, description = "Client suspended", body = platform::problem::Problem)))]
pub async fn update_client(
    p: Data,
    auth: DeveloperAuth,
    path: web::Path<String>,
    body: web::Json<UpdateClientRequest>,
) -> Result<web::Json<ClientSecretResponse>, ApiError> {
    let id = id_param(&path, "client")?;
    let body = body.into_inner();
    if body.name.is_none() && body.redirect_uris.is_none() && body.webhook_url.is_none() {
        return Err(ApiError::BadRequest(
            "nothing to update: give name, redirect_uris or webhook_url".into(),
        ));
    }
    let change = ClientUpdate {
        name: body.name,
        redirect_uris: body.redirect_uris,
        webhook_url: body.webhook_url,
    };
    let key = p.master_key.clone();
    let dev = auth.0.subject_id;
    let now = p.now();
    let (client, webhook_secret) = write(&p, move |c| {
        clients::update(c, &key, &dev, &id, &change, now)
    })
    .await?;
    Ok(web::Json(ClientSecretResponse {
        client: client.into(),
        client_secret: None,
        webhook_secret: webhook_secret.map(|s| s.expose().to_string()),
    }))
}

/// Delete a client; all its grants and refresh tokens are revoked.
#[utoipa::path(delete, path = "/api/v1/clients/{client_id}", tag = "clients",
    security(("developer_token" = [])),
    params(("client_id" = String, Path, description = "Client id")),
    responses((status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid bearer token", body = platform::problem::Problem),
        (status = 404, description = "No such client of yours", body = platform::problem::Problem)))]
pub async fn delete_client(
    p: Data,
    auth: DeveloperAuth,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id_param(&path, "client")?;
    let dev = auth.0.subject_id;
    let now = p.now();
    write_revoking(&p, move |c, r| clients::delete(c, r, &dev, &id, now)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Replace the client secret; the old one stops working at once.
#[utoipa::path(post, path = "/api/v1/clients/{client_id}/secret", tag = "clients",
    security(("developer_token" = [])),
    params(("client_id" = String, Path, description = "Client id")),
    responses((status = 200, description = "New secret, shown once", body = ClientSecretResponse),
        (status = 401, description = "Missing or invalid bearer token", body = platform::problem::Problem),
        (status = 404, description = "No such client of yours", body = platform::problem::Problem),
        (status = 409, description = "Client suspended", body = platform::problem::Problem)))]
pub async fn rotate_secret(
    p: Data,
    auth: DeveloperAuth,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id_param(&path, "client")?;
    let dev = auth.0.subject_id;
    let now = p.now();
    let r = write(&p, move |c| clients::rotate_secret(c, &dev, &id, now)).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(ClientSecretResponse::from(r)))
}

/// The client's webhook events and their delivery status, newest first (at most 100).
#[utoipa::path(get, path = "/api/v1/clients/{client_id}/webhook-deliveries", tag = "clients",
    security(("developer_token" = [])),
    params(("client_id" = String, Path, description = "Client id")),
    responses((status = 200, description = "Recent events", body = WebhookDeliveryList),
        (status = 401, description = "Missing or invalid bearer token", body = platform::problem::Problem),
        (status = 404, description = "No such client of yours", body = platform::problem::Problem)))]
pub async fn webhook_deliveries(
    p: Data,
    auth: DeveloperAuth,
    path: web::Path<String>,
) -> Result<web::Json<WebhookDeliveryList>, ApiError> {
    let id = id_param(&path, "client")?;
    let dev = auth.0.subject_id;
    let deliveries = read(&p, move |c| clients::webhook_deliveries(c, &dev, &id, 100)).await?;
    Ok(web::Json(WebhookDeliveryList { deliveries }))
}

/// Send a failed webhook event again (after fixing the receiver).
#[utoipa::path(post, path = "/api/v1/clients/{client_id}/webhook-deliveries/{event_id}/retry", tag = "clients",
    security(("developer_token" = [])),
    params(("client_id" = String, Path, description = "Client id"),
        ("event_id" = String, Path, description = "Event id (msg_...)")),
    responses((status = 202, description = "Queued for delivery"),
        (status = 401, description = "Missing or invalid bearer token", body = platform::problem::Problem),
        (status = 404, description = "No such client or event", body = platform::problem::Problem),
        (status = 409, description = "The event is not failed, or the client is not active", body = platform::problem::Problem)))]
pub async fn redeliver_webhook(
    p: Data,
    auth: DeveloperAuth,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (client, event) = path.into_inner();
    let id = id_param(&client, "client")?;
    let event = id_param(&event, "webhook event")?;
    let dev = auth.0.subject_id;
    let now = p.now();
    write(&p, move |c| clients::redeliver(c, &dev, &id, &event, now)).await?;
    Ok(HttpResponse::Accepted().finish())
}

/// Replace the webhook signing secret; the old one stops at once.
#[utoipa::path(post, path = "/api/v1/clients/{client_id}/webhook-secret", tag = "clients",
    security(("developer_token" = [])),
    params(("client_id" = String, Path, description = "Client id")),
    responses((status = 200, description = "New webhook secret, shown once", body = WebhookSecretResponse),
        (status = 401, description = "Missing or invalid bearer token", body = platform::problem::Problem),
        (status = 404, description = "No such client of yours", body = platform::problem::Problem),
        (status = 409, description = "Client suspended or without webhook URL", body = platform::problem::Problem)))]
pub async fn rotate_webhook_secret(
    p: Data,
    auth: DeveloperAuth,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id_param(&path, "client")?;
    let dev = auth.0.subject_id;
    let now = p.now();
    let key = p.master_key.clone();
    let secret = write(&p, move |c| {
        clients::rotate_webhook_secret(c, &key, &dev, &id, now)
    })
    .await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(WebhookSecretResponse {
            webhook_secret: secret.expose().to_string(),
        }))
}

// ----- staff -----

/// Log in as staff: returns a bearer token for `/api/v1/admin`.
#[utoipa::path(post, path = "/api/v1/admin/login", tag = "staff",
    request_body = StaffLoginRequest,
    responses((status = 200, description = "Logged in", body = TokenResponse),
        (status = 400, description = "Malformed request", body = platform::problem::Problem),
        (status = 401, description = "Wrong username or password", body = platform::problem::Problem),
        (status = 429, description = "Too many attempts (see Retry-After)", body = platform::problem::Problem)))]
pub async fn staff_login(
    p: Data,
    req: HttpRequest,
    body: web::Json<StaffLoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let l = accounts::login(
        &p,
        SessionKind::Staff,
        &body.username,
        &body.password,
        &client_addr(&req),
    )
    .await?;
    Ok(token_response(l))
}

/// The KYC review queue (default: submissions awaiting review).
#[utoipa::path(get, path = "/api/v1/admin/kyc", tag = "staff",
    security(("staff_token" = [])),
    params(StatusQuery),
    responses((status = 200, description = "Queue, oldest first", body = KycQueue),
        (status = 400, description = "Unknown status", body = platform::problem::Problem),
        (status = 401, description = "Missing or invalid staff token", body = platform::problem::Problem)))]
pub async fn kyc_queue(
    p: Data,
    _auth: StaffAuth,
    q: web::Query<StatusQuery>,
) -> Result<web::Json<KycQueue>, ApiError> {
    let status = kyc_status_param(&q)?;
    let items = read(&p, move |c| kyc::queue(c, status)).await?;
    Ok(web::Json(KycQueue {
        submissions: items
            .into_iter()
            .map(|i| KycQueueItem {
                id: i.id,
                developer_email: i.developer_email,
                country: i.country,
                status: i.status.as_str().into(),
                round: i.round,
                approvals_this_round: i.approvals_this_round,
                submitted_at: i.submitted_at,
            })
            .collect(),
    }))
}

/// A submission with its decrypted details and every review (viewing is audited).
#[utoipa::path(get, path = "/api/v1/admin/kyc/{submission_id}", tag = "staff",
    security(("staff_token" = [])),
    params(("submission_id" = String, Path, description = "KYC submission id")),
    responses((status = 200, description = "Submission and reviews", body = StaffKycResponse),
        (status = 401, description = "Missing or invalid staff token", body = platform::problem::Problem),
        (status = 404, description = "No such submission", body = platform::problem::Problem)))]
pub async fn kyc_detail(
    p: Data,
    auth: StaffAuth,
    path: web::Path<String>,
) -> Result<web::Json<StaffKycResponse>, ApiError> {
    let id = id_param(&path, "KYC submission")?;
    let cipher = p.master_key.cipher(kyc::PII_KEY);
    let staff = auth.0.subject_id;
    let now = p.now();
    let v = write(&p, move |c| kyc::staff_view(c, &cipher, &id, &staff, now)).await?;
    Ok(web::Json(v.into()))
}

/// Review a submission: approve (two distinct staff approvals approve it), reject, or ask for
/// more information. Every review carries a justification visible to all staff.
#[utoipa::path(post, path = "/api/v1/admin/kyc/{submission_id}/reviews", tag = "staff",
    security(("staff_token" = [])),
    params(("submission_id" = String, Path, description = "KYC submission id")),
    request_body = KycReviewRequest,
    responses((status = 200, description = "Review recorded; the submission as it now stands", body = StaffKycResponse),
        (status = 400, description = "Unknown decision or missing justification", body = platform::problem::Problem),
        (status = 401, description = "Missing or invalid staff token", body = platform::problem::Problem),
        (status = 403, description = "Conflict of interest", body = platform::problem::Problem),
        (status = 404, description = "No such submission", body = platform::problem::Problem),
        (status = 409, description = "Not awaiting review, or already reviewed by you this round", body = platform::problem::Problem)))]
pub async fn kyc_review(
    p: Data,
    auth: StaffAuth,
    path: web::Path<String>,
    body: web::Json<KycReviewRequest>,
) -> Result<web::Json<StaffKycResponse>, ApiError> {
    let id = id_param(&path, "KYC submission")?;
    let decision =
        ReviewDecision::parse(&body.decision).map_err(|m| ApiError::field("decision", m))?;
    let justification = body.into_inner().justification;
    let cipher = p.master_key.cipher(kyc::PII_KEY);
    let staff = auth.0.subject_id;
    let now = p.now();
    let v = write(&p, move |c| {
        kyc::review(c, &cipher, &id, &staff, decision, &justification, now)
    })
    .await?;
    Ok(web::Json(v.into()))
}

fn approval_status_param(q: &StatusQuery) -> Result<Option<ApprovalStatus>, ApiError> {
    match q.status.as_deref() {
        None => Ok(None),
        Some(s) => ApprovalStatus::parse(s).map(Some).ok_or_else(|| {
            ApiError::field("status", "must be pending, approved, rejected or expired")
        }),
    }
}

/// Four-eyes approval requests, newest first.
#[utoipa::path(get, path = "/api/v1/admin/approvals", tag = "staff",
    security(("staff_token" = [])),
    params(StatusQuery),
    responses((status = 200, description = "Requests", body = ApprovalList),
        (status = 400, description = "Unknown status", body = platform::problem::Problem),
        (status = 401, description = "Missing or invalid staff token", body = platform::problem::Problem)))]
pub async fn list_approvals(
    p: Data,
    _auth: StaffAuth,
    q: web::Query<StatusQuery>,
) -> Result<web::Json<ApprovalList>, ApiError> {
    let status = approval_status_param(&q)?;
    let now = p.now();
    let list = read(&p, move |c| Ok(approvals::list(c, status, now, 200)?)).await?;
    Ok(web::Json(ApprovalList {
        requests: list
            .into_iter()
            .map(|r| approval_response(r, now))
            .collect(),
    }))
}

/// One approval request.
#[utoipa::path(get, path = "/api/v1/admin/approvals/{request_id}", tag = "staff",
    security(("staff_token" = [])),
    params(("request_id" = String, Path, description = "Approval request id")),
    responses((status = 200, description = "The request", body = ApprovalResponse),
        (status = 401, description = "Missing or invalid staff token", body = platform::problem::Problem),
        (status = 404, description = "No such request", body = platform::problem::Problem)))]
pub async fn get_approval(
    p: Data,
    _auth: StaffAuth,
    path: web::Path<String>,
) -> Result<web::Json<ApprovalResponse>, ApiError> {
    let id = id_param(&path, "approval request")?;
    let now = p.now();
    let r = read(&p, move |c| Ok(approvals::get(c, &id)?)).await?;
    Ok(web::Json(approval_response(r, now)))
}

async fn decide(
    p: Data,
    auth: StaffAuth,
    path: web::Path<String>,
    body: web::Json<JustificationRequest>,
    approve: bool,
) -> Result<web::Json<ApprovalResponse>, ApiError> {
    let id = id_param(&path, "approval request")?;
    let staff = auth.0.subject_id;
    let justification = body.into_inner().justification;
    let now = p.now();
    let r = write_revoking(&p, move |c, revoked| {
        clients::decide_and_execute(c, revoked, &id, &staff, approve, &justification, now)
    })
    .await?;
    Ok(web::Json(approval_response(r, now)))
}

/// Approve a request made by another staff member; the approved action is executed at once.
#[utoipa::path(post, path = "/api/v1/admin/approvals/{request_id}/approve", tag = "staff",
    security(("staff_token" = [])),
    params(("request_id" = String, Path, description = "Approval request id")),
    request_body = JustificationRequest,
    responses((status = 200, description = "Approved and executed", body = ApprovalResponse),
        (status = 400, description = "Missing justification", body = platform::problem::Problem),
        (status = 401, description = "Missing or invalid staff token", body = platform::problem::Problem),
        (status = 403, description = "Your own request", body = platform::problem::Problem),
        (status = 404, description = "No such request", body = platform::problem::Problem),
        (status = 409, description = "Already decided or expired", body = platform::problem::Problem)))]
pub async fn approve(
    p: Data,
    auth: StaffAuth,
    path: web::Path<String>,
    body: web::Json<JustificationRequest>,
) -> Result<web::Json<ApprovalResponse>, ApiError> {
    decide(p, auth, path, body, true).await
}

/// Reject a request made by another staff member.
#[utoipa::path(post, path = "/api/v1/admin/approvals/{request_id}/reject", tag = "staff",
    security(("staff_token" = [])),
    params(("request_id" = String, Path, description = "Approval request id")),
    request_body = JustificationRequest,
    responses((status = 200, description = "Rejected", body = ApprovalResponse),
        (status = 400, description = "Missing justification", body = platform::problem::Problem),
        (status = 401, description = "Missing or invalid staff token", body = platform::problem::Problem),
        (status = 403, description = "Your own request", body = platform::problem::Problem),
        (status = 404, description = "No such request", body = platform::problem::Problem),
        (status = 409, description = "Already decided or expired", body = platform::problem::Problem)))]
pub async fn reject(
    p: Data,
    auth: StaffAuth,
    path: web::Path<String>,
    body: web::Json<JustificationRequest>,
) -> Result<web::Json<ApprovalResponse>, ApiError> {
    decide(p, auth, path, body, false).await
}

/// Ask for a client's suspension (a second staff member must approve; approval revokes all of
/// the client's grants).
#[utoipa::path(post, path = "/api/v1/admin/clients/{client_id}/suspension", tag = "staff",
    security(("staff_token" = [])),
    params(("client_id" = String, Path, description = "Client id")),
    request_body = JustificationRequest,
    responses((status = 202, description = "Approval request opened", body = ApprovalResponse),
        (status = 400, description = "Missing justification, or a request is already pending", body = platform::problem::Problem),
        (status = 401, description = "Missing or invalid staff token", body = platform::problem::Problem),
        (status = 404, description = "No such client", body = platform::problem::Problem),
        (status = 409, description = "Client not active", body = platform::problem::Problem)))]
pub async fn request_suspension(
    p: Data,
    auth: StaffAuth,
    path: web::Path<String>,
    body: web::Json<JustificationRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = id_param(&path, "client")?;
    let staff = auth.0.subject_id;
    let justification = body.into_inner().justification;
    let now = p.now();
    let r = write(&p, move |c| {
        clients::request_suspension(c, &staff, &id, &justification, now)
    })
    .await?;
    Ok(HttpResponse::Accepted().json(approval_response(r, now)))
}

/// Mounts the JSON routes (full paths, no scopes: `/api/v1/admin` is shared with the server).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/developers").route(web::post().to(sign_up)))
        .service(web::resource("/api/v1/developers/login").route(web::post().to(developer_login)))
        .service(web::resource("/api/v1/developers/logout").route(web::post().to(developer_logout)))
        .service(web::resource("/api/v1/developers/me").route(web::get().to(me)))
        .service(
            web::resource("/api/v1/developers/me/kyc")
                .route(web::get().to(get_kyc))
                .route(web::put().to(put_kyc)),
        )
        .service(
            web::resource("/api/v1/developers/me/kyc/submit").route(web::post().to(submit_kyc)),
        )
        .service(
            web::resource("/api/v1/clients")
                .route(web::get().to(list_clients))
                .route(web::post().to(create_client)),
        )
        .service(
            web::resource("/api/v1/clients/{client_id}")
                .route(web::get().to(get_client))
                .route(web::patch().to(update_client))
                .route(web::delete().to(delete_client)),
        )
        .service(
            web::resource("/api/v1/clients/{client_id}/secret")
                .route(web::post().to(rotate_secret)),
        )
        .service(
            web::resource("/api/v1/clients/{client_id}/webhook-secret")
                .route(web::post().to(rotate_webhook_secret)),
        )
        .service(
            web::resource("/api/v1/clients/{client_id}/webhook-deliveries")
                .route(web::get().to(webhook_deliveries)),
        )
        .service(
            web::resource("/api/v1/clients/{client_id}/webhook-deliveries/{event_id}/retry")
                .route(web::post().to(redeliver_webhook)),
        )
        .service(web::resource("/api/v1/admin/login").route(web::post().to(staff_login)))
        .service(web::resource("/api/v1/admin/kyc").route(web::get().to(kyc_queue)))
        .service(
            web::resource("/api/v1/admin/kyc/{submission_id}").route(web::get().to(kyc_detail)),
        )
        .service(
            web::resource("/api/v1/admin/kyc/{submission_id}/reviews")
                .route(web::post().to(kyc_review)),
        )
        .service(web::resource("/api/v1/admin/approvals").route(web::get().to(list_approvals)))
        .service(
            web::resource("/api/v1/admin/approvals/{request_id}")
                .route(web::get().to(get_approval)),
        )
        .service(
            web::resource("/api/v1/admin/approvals/{request_id}/approve")
                .route(web::post().to(approve)),
        )
        .service(
            web::resource("/api/v1/admin/approvals/{request_id}/reject")
                .route(web::post().to(reject)),
        )
        .service(
            web::resource("/api/v1/admin/clients/{client_id}/suspension")
                .route(web::post().to(request_suspension)),
        );
}
