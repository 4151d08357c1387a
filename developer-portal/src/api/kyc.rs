//! KYC on the JSON API: the developer's own submission, and the staff review queue and reviews.

use actix_web::web;
use chrono::{DateTime, Utc};
use platform::problem::ApiError;
use platform::problem::documented::{NoDeveloperToken, NoStaffToken};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{PathId, StatusQuery, SubmissionId, status_param};
use crate::auth::{DeveloperAuth, StaffAuth};
use crate::error::PortalError;
use crate::kyc::{self, KycDetails, KycDocument, KycRecord, KycStatus, StaffKycView};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KycDocumentBody {
    #[schema(value_type = crate::api::DocumentKind, example = "certificate_of_incorporation")]
    pub kind: String,
    #[schema(example = "incorporation.pdf")]
    pub filename: String,
    /// SHA-256 of the file, hex.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
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
    #[schema(value_type = crate::api::KycStatus)]
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

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KycQueueItem {
    pub id: String,
    pub developer_email: String,
    pub country: String,
    #[schema(value_type = crate::api::KycStatus)]
    pub status: String,
    pub round: i32,
    pub approvals_this_round: usize,
    pub submitted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KycQueue {
    pub submissions: Vec<KycQueueItem>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KycReviewResponse {
    pub id: String,
    pub staff_id: String,
    pub staff_username: String,
    #[schema(value_type = crate::api::KycDecision)]
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
    #[schema(value_type = crate::api::KycDecision, example = "approve")]
    pub decision: String,
    #[schema(min_length = 10)]
    pub justification: String,
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
            created_at: r.times.created_at,
            updated_at: r.times.updated_at,
            submitted_at: r.times.submitted_at,
            decided_at: r.times.decided_at,
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

/// The developer's KYC submission (decrypted for its owner).
#[utoipa::path(get, path = "/api/v1/developers/me/kyc", tag = "developers",
    security(("developer_token" = [])),
    responses((status = 200, description = "KYC details and status", body = KycResponse),
        NoDeveloperToken,
        (status = 404, description = "No KYC details saved yet", body = platform::problem::Problem)))]
pub async fn get_kyc(auth: DeveloperAuth) -> Result<web::Json<KycResponse>, ApiError> {
    let cipher = auth.platform.master_key.cipher(kyc::PII_KEY);
    let r = auth
        .read(move |c, id, _| kyc::for_developer(c, &cipher, id))
        .await?;
    r.map(|r| web::Json(r.into()))
        .ok_or(ApiError::NotFound("KYC submission"))
}

/// Save KYC details (as a draft, or while more information is requested).
#[utoipa::path(put, path = "/api/v1/developers/me/kyc", tag = "developers",
    security(("developer_token" = [])),
    request_body = KycRequest,
    responses((status = 200, description = "Saved", body = KycResponse),
        (status = 400, description = "Invalid field", body = platform::problem::Problem),
        NoDeveloperToken,
        (status = 409, description = "Under review or decided: no longer editable", body = platform::problem::Problem)))]
pub async fn put_kyc(
    auth: DeveloperAuth,
    body: web::Json<KycRequest>,
) -> Result<web::Json<KycResponse>, ApiError> {
    let details = kyc_details(&body)?;
    let cipher = auth.platform.master_key.cipher(kyc::PII_KEY);
    let r = auth
        .write(move |c, id, now| kyc::save(c, &cipher, id, &details, now))
        .await?;
    Ok(web::Json(r.into()))
}

/// Submit (or resubmit) the saved KYC details for staff review.
#[utoipa::path(post, path = "/api/v1/developers/me/kyc/submit", tag = "developers",
    security(("developer_token" = [])),
    responses((status = 200, description = "Submitted", body = KycResponse),
        NoDeveloperToken,
        (status = 404, description = "No KYC details saved yet", body = platform::problem::Problem),
        (status = 409, description = "Already submitted or decided", body = platform::problem::Problem)))]
pub async fn submit_kyc(auth: DeveloperAuth) -> Result<web::Json<KycResponse>, ApiError> {
    let cipher = auth.platform.master_key.cipher(kyc::PII_KEY);
    let r = auth
        .write(move |c, id, now| kyc::submit(c, &cipher, id, now))
        .await?;
    Ok(web::Json(r.into()))
}

/// The KYC review queue (default: submissions awaiting review).
#[utoipa::path(get, path = "/api/v1/admin/kyc", tag = "staff",
    security(("staff_token" = [])),
    params(StatusQuery),
    responses((status = 200, description = "Queue, oldest first", body = KycQueue),
        (status = 400, description = "Unknown status", body = platform::problem::Problem),
        NoStaffToken))]
pub async fn kyc_queue(
    auth: StaffAuth,
    q: web::Query<StatusQuery>,
) -> Result<web::Json<KycQueue>, ApiError> {
    let status = status_param(
        &q,
        KycStatus::parse,
        "must be draft, submitted, approved, rejected or needs_information",
    )?;
    let items = auth.read(move |c, _, _| kyc::queue(c, status)).await?;
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

/// A submission awaiting review, with its decrypted details and every review (compliance role;
/// viewing is audited). Outside review it is read with a four-eyes credential instead:
/// `/api/v1/admin/kyc/{submission_id}/access-requests`, then `.../record`.
#[utoipa::path(get, path = "/api/v1/admin/kyc/{submission_id}", tag = "staff",
    security(("staff_token" = [])),
    params(SubmissionId),
    responses((status = 200, description = "Submission and reviews", body = StaffKycResponse),
        NoStaffToken,
        (status = 403, description = "Not a compliance member, or the submission is not awaiting review", body = platform::problem::Problem),
        (status = 404, description = "No such submission", body = platform::problem::Problem)))]
pub async fn kyc_detail(
    auth: StaffAuth,
    PathId(id, ..): SubmissionId,
) -> Result<web::Json<StaffKycResponse>, ApiError> {
    let cipher = auth.platform.master_key.cipher(kyc::PII_KEY);
    let v = auth
        .write(move |c, staff, now| kyc::staff_view(c, &cipher, &id, staff, now))
        .await?;
    Ok(web::Json(v.into()))
}

/// Review a submission: approve (two distinct staff approvals approve it), reject, or ask for
/// more information. Every review carries a justification visible to all staff.
#[utoipa::path(post, path = "/api/v1/admin/kyc/{submission_id}/reviews", tag = "staff",
    security(("staff_token" = [])),
    params(SubmissionId),
    request_body = KycReviewRequest,
    responses((status = 200, description = "Review recorded; the submission as it now stands", body = StaffKycResponse),
        (status = 400, description = "Unknown decision or missing justification", body = platform::problem::Problem),
        NoStaffToken,
        (status = 403, description = "Conflict of interest, or not a compliance member", body = platform::problem::Problem),
        (status = 404, description = "No such submission", body = platform::problem::Problem),
        (status = 409, description = "Not awaiting review, or already reviewed by you this round", body = platform::problem::Problem)))]
pub async fn kyc_review(
    auth: StaffAuth,
    PathId(id, ..): SubmissionId,
    body: web::Json<KycReviewRequest>,
) -> Result<web::Json<StaffKycResponse>, ApiError> {
    let decision =
        kyc::parse_decision(&body.decision).map_err(|m| ApiError::field("decision", m))?;
    let justification = body.into_inner().justification;
    let cipher = auth.platform.master_key.cipher(kyc::PII_KEY);
    let v = auth
        .write(move |c, staff, now| {
            kyc::review(c, &cipher, &id, staff, decision, &justification, now)
        })
        .await?;
    Ok(web::Json(v.into()))
}
