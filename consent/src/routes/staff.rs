//! Staff access to a customer's grants on the JSON API (`/api/v1/admin/...`, staff bearer
//! token): ask, take the credential once a colleague approved, read with it, revoke one. The
//! rules are [`crate::staff_access`]'s.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use platform::config::Secret;
use platform::problem::documented::{Malformed, NoStaffToken};
use platform::problem::{ApiError, Problem};
use platform::web::auth::{BearerSession, Staff};
use platform::web::no_store_json;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::dashboard::api::GrantListResponse;
use crate::AppState;
use crate::oauth::keys::KeyPurpose;
use crate::staff_access::{self, StaffAccessCategory};

/// The header that carries a staff credential.
pub const CREDENTIAL_HEADER: &str = "X-Staff-Credential";

/// OpenAPI fragment merged into the server's document.
#[derive(Debug, OpenApi)]
#[openapi(
    paths(
        request_access,
        take_credential,
        customer_grants,
        revoke_credential,
        request_key_rotation,
        rotate_keys
    ),
    components(schemas(
        AccessRequestBody,
        OpenedRequest,
        StaffCredentialResponse,
        StaffAccessCategory,
        KeyRotationRequestBody,
        RotatedKey
    ))
)]
pub struct ApiDoc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(request_access)
        .service(take_credential)
        .service(customer_grants)
        .service(revoke_credential)
        .service(request_key_rotation)
        .service(rotate_keys);
}

platform::documented_responses! {
    /// An id in the path that names nothing of the kind (or not the caller's).
    NoSuchTarget(Problem) = 404, "No such customer, request or credential (of yours)";
    /// A credential that is missing, foreign, changed, for something else, expired or revoked.
    CredentialRefused(Problem) = 403, "Missing or refused staff credential (X-Staff-Credential)";
}

/// Ids in paths: 1 to 100 characters of `[A-Za-z0-9_-]`.
fn path_id(raw: &str) -> Result<String, ApiError> {
    if raw.is_empty()
        || raw.len() > 100
        || !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ApiError::NotFound("resource"));
    }
    Ok(raw.to_string())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessRequestBody {
    /// Why the access is needed (at least 10 characters; every colleague sees it).
    pub justification: String,
    /// Why, as the customer is told in their history.
    #[schema(value_type = StaffAccessCategory)]
    pub category: String,
    /// The case it is for: a ticket or complaint number (1 to 100 characters).
    #[schema(example = "CASE-2026-0042")]
    pub reference: String,
}

/// An open request, waiting for a second staff member.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OpenedRequest {
    /// The approval request: a colleague approves it at `/api/v1/admin/approvals/{id}/approve`.
    pub request_id: String,
    /// `customer.grants.access` or `keys.rotate`.
    pub action: String,
    /// What it is about: `customer` or `signing_keys`, and its id.
    pub target_type: String,
    pub target_id: String,
    pub expires_at: DateTime<Utc>,
}

impl From<developer_portal::approvals::ApprovalRequest> for OpenedRequest {
    fn from(r: developer_portal::approvals::ApprovalRequest) -> Self {
        Self {
            request_id: r.id,
            action: r.action.as_str().into(),
            target_type: r.target.kind,
            target_id: r.target.id,
            expires_at: r.expires_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRotationRequestBody {
    /// Why the keys must change (at least 10 characters; every colleague sees it).
    pub justification: String,
    /// The change or incident it is for (1 to 100 characters).
    #[schema(example = "CHG-2026-1201")]
    pub reference: String,
}

/// The new active key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RotatedKey {
    pub kid: u32,
}

/// A staff credential, shown once: send it as `X-Staff-Credential` with the staff token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StaffCredentialResponse {
    pub credential_id: String,
    #[schema(value_type = String)]
    pub credential: Secret<String>,
    /// What it allows (`customer.grants.access` or `keys.rotate`), on what.
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub expires_at: DateTime<Utc>,
}

/// Ask to see a customer's grants: opens a four-eyes request that another staff member must
/// approve.
#[utoipa::path(post, path = "/api/v1/admin/customers/{customer_id}/access-requests", tag = "staff",
    security(("staff_token" = [])),
    params(("customer_id" = String, Path, description = "Customer id")),
    request_body = AccessRequestBody,
    responses((status = 201, description = "Request opened", body = OpenedRequest),
        (status = 400, description = "Invalid justification or reference, or a request for this customer is already pending", body = Problem),
        NoStaffToken, NoSuchTarget, Malformed))]
#[post("/api/v1/admin/customers/{customer_id}/access-requests")]
pub async fn request_access(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<AccessRequestBody>,
    BearerSession(session, ..): BearerSession<Staff>,
) -> Result<HttpResponse, ApiError> {
    let customer = path_id(&path)?;
    let AccessRequestBody {
        justification,
        category,
        reference,
    } = body.into_inner();
    let r = staff_access::request(
        &state.oauth,
        session.subject_id,
        customer,
        justification,
        category,
        reference,
    )
    .await?;
    Ok(HttpResponse::Created().json(OpenedRequest::from(r)))
}

/// Take the credential of your approved request (customer access or key rotation; once, within
/// 15 minutes of the approval); it is valid for 15 minutes.
#[utoipa::path(post, path = "/api/v1/admin/approvals/{request_id}/credential", tag = "staff",
    security(("staff_token" = [])),
    params(("request_id" = String, Path, description = "Approval request id")),
    responses((status = 201, description = "The credential, shown once", body = StaffCredentialResponse),
        NoStaffToken, NoSuchTarget,
        (status = 409, description = "Not approved, approved too long ago, or already taken", body = Problem)))]
#[post("/api/v1/admin/approvals/{request_id}/credential")]
pub async fn take_credential(
    state: web::Data<AppState>,
    path: web::Path<String>,
    BearerSession(session, ..): BearerSession<Staff>,
) -> Result<HttpResponse, ApiError> {
    let request = path_id(&path)?;
    let issued = staff_access::issue(&state.oauth, session.subject_id, request).await?;
    let mut resp = no_store_json(&StaffCredentialResponse {
        credential_id: issued.id,
        credential: Secret::new(issued.credential.clone()),
        action: issued.action.into(),
        resource_type: issued.resource_type,
        resource_id: issued.resource_id,
        expires_at: issued.expires_at,
    });
    *resp.status_mut() = actix_web::http::StatusCode::CREATED;
    Ok(resp)
}

/// A customer's grants, read with a staff credential for that customer (`X-Staff-Credential`);
/// every read is audited and shown in the customer's history.
#[utoipa::path(get, path = "/api/v1/admin/customers/{customer_id}/grants", tag = "staff",
    security(("staff_token" = [])),
    params(("customer_id" = String, Path, description = "Customer id"),
        ("X-Staff-Credential" = String, Header, description = "The credential from `/api/v1/admin/approvals/{request_id}/credential`")),
    responses((status = 200, description = "The customer's grants", body = GrantListResponse),
        NoStaffToken, CredentialRefused, NoSuchTarget))]
#[get("/api/v1/admin/customers/{customer_id}/grants")]
pub async fn customer_grants(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    BearerSession(session, ..): BearerSession<Staff>,
) -> Result<HttpResponse, ApiError> {
    let customer = path_id(&path)?;
    let credential = req
        .headers()
        .get(CREDENTIAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::Forbidden(format!("send the credential in {CREDENTIAL_HEADER}"))
        })?;
    let grants =
        staff_access::customer_grants(&state.oauth, session.subject_id, customer, credential)
            .await?;
    Ok(no_store_json(&GrantListResponse { grants }))
}

/// End a staff credential at once (any staff member may).
#[utoipa::path(post, path = "/api/v1/admin/credentials/{credential_id}/revocation", tag = "staff",
    security(("staff_token" = [])),
    params(("credential_id" = String, Path, description = "Staff credential id")),
    responses((status = 204, description = "Revoked"),
        NoStaffToken, NoSuchTarget))]
#[post("/api/v1/admin/credentials/{credential_id}/revocation")]
pub async fn revoke_credential(
    state: web::Data<AppState>,
    path: web::Path<String>,
    BearerSession(session, ..): BearerSession<Staff>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&path)?;
    staff_access::revoke(&state.oauth, session.subject_id, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The credential in [`CREDENTIAL_HEADER`].
fn presented_credential(req: &HttpRequest) -> Result<&str, ApiError> {
    req.headers()
        .get(CREDENTIAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::Forbidden(format!("send the credential in {CREDENTIAL_HEADER}")))
}

fn purpose(raw: &str) -> Result<KeyPurpose, ApiError> {
    staff_access::key_purpose(raw).ok_or(ApiError::NotFound("key purpose"))
}

/// Ask to rotate the signing keys of `purpose` (`biscuit` or `security_events`): opens a
/// four-eyes request that another staff member must approve.
#[utoipa::path(post, path = "/api/v1/admin/keys/{purpose}/rotation-requests", tag = "staff",
    security(("staff_token" = [])),
    params(("purpose" = String, Path, description = "`biscuit` or `security_events`")),
    request_body = KeyRotationRequestBody,
    responses((status = 201, description = "Request opened", body = OpenedRequest),
        (status = 400, description = "Invalid justification or reference, or a rotation of these keys is already pending", body = Problem),
        NoStaffToken, NoSuchTarget, Malformed))]
#[post("/api/v1/admin/keys/{purpose}/rotation-requests")]
pub async fn request_key_rotation(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<KeyRotationRequestBody>,
    BearerSession(session, ..): BearerSession<Staff>,
) -> Result<HttpResponse, ApiError> {
    let purpose = purpose(&path)?;
    let KeyRotationRequestBody {
        justification,
        reference,
    } = body.into_inner();
    let r = staff_access::request_key_rotation(
        &state.oauth,
        session.subject_id,
        purpose,
        justification,
        reference,
    )
    .await?;
    Ok(HttpResponse::Created().json(OpenedRequest::from(r)))
}

/// Rotate the signing keys of `purpose` with a credential approved for it
/// (`X-Staff-Credential`; used up by the rotation). The previous key stays published until what
/// it signed has expired.
#[utoipa::path(post, path = "/api/v1/admin/keys/{purpose}/rotation", tag = "staff",
    security(("staff_token" = [])),
    params(("purpose" = String, Path, description = "`biscuit` or `security_events`"),
        ("X-Staff-Credential" = String, Header, description = "The credential from `/api/v1/admin/approvals/{request_id}/credential`")),
    responses((status = 200, description = "The new active key", body = RotatedKey),
        NoStaffToken, CredentialRefused, NoSuchTarget))]
#[post("/api/v1/admin/keys/{purpose}/rotation")]
pub async fn rotate_keys(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    BearerSession(session, ..): BearerSession<Staff>,
) -> Result<HttpResponse, ApiError> {
    let purpose = purpose(&path)?;
    let kid = staff_access::rotate_keys(
        &state.oauth,
        session.subject_id,
        purpose,
        presented_credential(&req)?,
    )
    .await?;
    // This instance signs with the new key at once; the others within their key refresh.
    crate::startup::reload_keys(&state, purpose).await;
    Ok(no_store_json(&RotatedKey { kid }))
}
