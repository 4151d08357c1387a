//! Staff access on the JSON API (`/api/v1/admin/...`, staff bearer token) to a customer's
//! grants, to the signing keys and to KYC submissions outside review: ask, take the credential
//! once a colleague approved, use it, revoke one. The rules are [`crate::staff_access`]'s.

use actix_web::dev::Payload;
use actix_web::web::{self, Json};
use actix_web::{FromRequest, HttpRequest, HttpResponse, get, post};
use chrono::{DateTime, Utc};
use platform::config::Secret;
use platform::problem::documented::{Malformed, NoStaffToken};
use platform::problem::{ApiError, Problem};
use platform::web::auth::{BearerSession, Staff};
use platform::web::no_store_json;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::dashboard::api::GrantListResponse;
use crate::oauth::keys::KeyPurpose;
use crate::routes::{Answer, PathId, State};
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
        rotate_keys,
        request_kyc_access,
        kyc_record
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
        .service(rotate_keys)
        .service(request_kyc_access)
        .service(kyc_record);
}

platform::documented_responses! {
    /// An id in the path that names nothing of the kind (or not the caller's).
    NoSuchTarget(Problem) = 404, "No such customer, submission, request or credential (of yours)";
    /// A credential that is missing, foreign, changed, for something else, expired or revoked.
    CredentialRefused(Problem) = 403, "Missing or refused staff credential (X-Staff-Credential)";
}

/// A staff member's call (staff bearer token; 401 without a valid one), with this instance's
/// state and the staff credential presented in [`CREDENTIAL_HEADER`], if any.
pub struct StaffCall {
    state: State,
    staff: String,
    credential: Option<String>,
}

impl std::fmt::Debug for StaffCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credential.
        write!(f, "StaffCall by {}", self.staff)
    }
}

impl StaffCall {
    /// The presented credential; 403 without one.
    fn credential(&self) -> Result<&str, ApiError> {
        self.credential.as_deref().ok_or_else(|| {
            ApiError::Forbidden(format!("send the credential in {CREDENTIAL_HEADER}"))
        })
    }
}

impl FromRequest for StaffCall {
    type Error = ApiError;
    type Future = super::Extracted<Self>;
    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let state = super::app_state(req);
        let credential = req
            .headers()
            .get(CREDENTIAL_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bearer = BearerSession::<Staff>::from_request(req, payload);
        Box::pin(async move {
            let BearerSession(session, ..) = bearer.await?;
            Ok(Self {
                state: state?,
                staff: session.subject_id,
                credential,
            })
        })
    }
}

/// The staff credential a read or a change needs, in the OpenAPI document.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // documents the header; [`StaffCall`] reads it
struct CredentialHeader {
    /// The credential from `/api/v1/admin/approvals/{request_id}/credential`
    #[param(rename = "X-Staff-Credential")]
    credential: String,
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

impl From<AccessRequestBody> for staff_access::Reason {
    fn from(b: AccessRequestBody) -> Self {
        Self {
            justification: b.justification,
            category: b.category,
            reference: b.reference,
        }
    }
}

/// An open request, waiting for a second staff member.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OpenedRequest {
    /// The approval request: a colleague approves it at `/api/v1/admin/approvals/{id}/approve`.
    pub request_id: String,
    /// `customer.grants.access`, `keys.rotate` or `kyc.read`.
    pub action: String,
    /// What it is about: `customer`, `signing_keys` or `kyc_submission`, and its id.
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
    /// What it allows (`customer.grants.access`, `keys.rotate` or `kyc.read`), on what.
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
    path: PathId,
    body: Json<AccessRequestBody>,
    call: StaffCall,
) -> Answer {
    let customer = path_id(&path)?;
    let reason = body.into_inner().into();
    let r = staff_access::request(&call.state.oauth, call.staff, customer, reason).await?;
    Ok(HttpResponse::Created().json(OpenedRequest::from(r)))
}

/// Take the credential of your approved request (customer access, key rotation or a KYC read;
/// once, within `security.staff_redeem_window` of the approval, 15 minutes unless set); it is
/// valid for `security.staff_credential_ttl` (15 minutes unless set).
#[utoipa::path(post, path = "/api/v1/admin/approvals/{request_id}/credential", tag = "staff",
    security(("staff_token" = [])),
    params(("request_id" = String, Path, description = "Approval request id")),
    responses((status = 201, description = "The credential, shown once", body = StaffCredentialResponse),
        NoStaffToken, NoSuchTarget,
        (status = 409, description = "Not approved, approved too long ago, or already taken", body = Problem)))]
#[post("/api/v1/admin/approvals/{request_id}/credential")]
pub async fn take_credential(path: PathId, call: StaffCall) -> Answer {
    let request = path_id(&path)?;
    let issued = staff_access::issue(&call.state.oauth, call.staff, request).await?;
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
        CredentialHeader),
    responses((status = 200, description = "The customer's grants", body = GrantListResponse),
        NoStaffToken, CredentialRefused, NoSuchTarget))]
#[get("/api/v1/admin/customers/{customer_id}/grants")]
pub async fn customer_grants(path: PathId, call: StaffCall) -> Answer {
    let customer = path_id(&path)?;
    let (oauth, credential) = (&call.state.oauth, call.credential()?);
    let grants = staff_access::customer_grants(oauth, call.staff.clone(), customer, credential);
    let grants = grants.await?;
    Ok(no_store_json(&GrantListResponse { grants }))
}

/// End a staff credential at once (any staff member may).
#[utoipa::path(post, path = "/api/v1/admin/credentials/{credential_id}/revocation", tag = "staff",
    security(("staff_token" = [])),
    params(("credential_id" = String, Path, description = "Staff credential id")),
    responses((status = 204, description = "Revoked"),
        NoStaffToken, NoSuchTarget))]
#[post("/api/v1/admin/credentials/{credential_id}/revocation")]
pub async fn revoke_credential(path: PathId, call: StaffCall) -> Answer {
    let id = path_id(&path)?;
    staff_access::revoke(&call.state.oauth, call.staff, id).await?;
    Ok(HttpResponse::NoContent().finish())
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
    path: PathId,
    body: Json<KeyRotationRequestBody>,
    call: StaffCall,
) -> Answer {
    let purpose = purpose(&path)?;
    let b = body.into_inner();
    let (oauth, why, case) = (&call.state.oauth, b.justification, b.reference);
    let r = staff_access::request_key_rotation(oauth, call.staff, purpose, why, case);
    let r = r.await?;
    Ok(HttpResponse::Created().json(OpenedRequest::from(r)))
}

/// Rotate the signing keys of `purpose` with a credential approved for it
/// (`X-Staff-Credential`; used up by the rotation). The previous key stays published until what
/// it signed has expired.
#[utoipa::path(post, path = "/api/v1/admin/keys/{purpose}/rotation", tag = "staff",
    security(("staff_token" = [])),
    params(("purpose" = String, Path, description = "`biscuit` or `security_events`"),
        CredentialHeader),
    responses((status = 200, description = "The new active key", body = RotatedKey),
        NoStaffToken, CredentialRefused, NoSuchTarget))]
#[post("/api/v1/admin/keys/{purpose}/rotation")]
pub async fn rotate_keys(path: PathId, call: StaffCall) -> Answer {
    let purpose = purpose(&path)?;
    let (oauth, credential) = (&call.state.oauth, call.credential()?);
    let kid = staff_access::rotate_keys(oauth, call.staff.clone(), purpose, credential);
    let kid = kid.await?;
    // This instance signs with the new key at once; the others within their key refresh.
    crate::startup::reload_keys(&call.state, purpose).await;
    Ok(no_store_json(&RotatedKey { kid }))
}

/// Ask to read a decided KYC submission (approved or rejected) outside its review: opens a
/// four-eyes request that another compliance member must approve. Compliance role only; a
/// submission awaiting review is read in the review queue instead, and a draft or one back with
/// its developer is not the bank's to read (409).
#[utoipa::path(post, path = "/api/v1/admin/kyc/{submission_id}/access-requests", tag = "staff",
    security(("staff_token" = [])),
    params(("submission_id" = String, Path, description = "KYC submission id")),
    request_body = AccessRequestBody,
    responses((status = 201, description = "Request opened", body = OpenedRequest),
        (status = 400, description = "Invalid justification, category or reference, or a request for this submission is already pending", body = Problem),
        NoStaffToken,
        (status = 403, description = "Not a compliance member", body = Problem),
        NoSuchTarget,
        (status = 409, description = "The submission is not decided (in review, a draft, or back with the developer)", body = Problem),
        Malformed))]
#[post("/api/v1/admin/kyc/{submission_id}/access-requests")]
pub async fn request_kyc_access(
    path: PathId,
    body: Json<AccessRequestBody>,
    call: StaffCall,
) -> Answer {
    let submission = path_id(&path)?;
    let reason = body.into_inner().into();
    let r = staff_access::kyc::request(&call.state.oauth, call.staff, submission, reason).await?;
    Ok(HttpResponse::Created().json(OpenedRequest::from(r)))
}

/// A KYC submission outside its review, with its decrypted details and every review, read with
/// a staff credential for it (`X-Staff-Credential`; compliance role); every read is audited.
#[utoipa::path(get, path = "/api/v1/admin/kyc/{submission_id}/record", tag = "staff",
    security(("staff_token" = [])),
    params(("submission_id" = String, Path, description = "KYC submission id"),
        CredentialHeader),
    responses((status = 200, description = "Submission and reviews", body = developer_portal::StaffKycResponse),
        NoStaffToken, CredentialRefused, NoSuchTarget))]
#[get("/api/v1/admin/kyc/{submission_id}/record")]
pub async fn kyc_record(path: PathId, call: StaffCall) -> Answer {
    let submission = path_id(&path)?;
    let (oauth, credential) = (&call.state.oauth, call.credential()?);
    let view = staff_access::kyc::read(oauth, call.staff.clone(), submission, credential);
    let view = view.await?;
    Ok(no_store_json(&developer_portal::StaffKycResponse::from(
        view,
    )))
}
