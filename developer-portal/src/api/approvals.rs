//! Four-eyes approval requests on the JSON API (staff bearer token), and the client requests that
//! open one: suspension, unsuspension, a dormancy period.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use platform::problem::documented::NoStaffToken;
use platform::problem::{ApiError, Problem};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApprovalId, ClientId, PathId, StatusQuery, status_param};
use crate::approvals::{self, ApprovalRequest, ApprovalStatus};
use crate::auth::StaffAuth;
use crate::clients;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JustificationRequest {
    /// At least 10 characters.
    pub justification: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApprovalResponse {
    pub id: String,
    #[schema(value_type = crate::api::ApprovalActionName)]
    pub action: String,
    /// What the action applies to: `client`, `signing_keys`, `customer` or `kyc_submission`.
    pub target_type: String,
    pub target_id: String,
    /// The action's parameters (never secrets or PII).
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub justification: String,
    pub requested_by: String,
    #[schema(value_type = crate::api::ApprovalStatus)]
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

/// Four-eyes approval requests, newest first.
#[utoipa::path(get, path = "/api/v1/admin/approvals", tag = "staff",
    security(("staff_token" = [])),
    params(StatusQuery),
    responses((status = 200, description = "Requests", body = ApprovalList),
        (status = 400, description = "Unknown status", body = platform::problem::Problem),
        NoStaffToken))]
pub async fn list_approvals(
    auth: StaffAuth,
    q: web::Query<StatusQuery>,
) -> Result<web::Json<ApprovalList>, ApiError> {
    let status = status_param(
        &q,
        ApprovalStatus::parse,
        "must be pending, approved, rejected or expired",
    )?;
    let list = auth
        .read(move |c, _, now| Ok(approvals::list(c, status, now, 200)?))
        .await?;
    Ok(web::Json(ApprovalList {
        requests: list
            .into_iter()
            .map(|r| approval_response(r, auth.now))
            .collect(),
    }))
}

/// One approval request.
#[utoipa::path(get, path = "/api/v1/admin/approvals/{request_id}", tag = "staff",
    security(("staff_token" = [])),
    params(ApprovalId),
    responses((status = 200, description = "The request", body = ApprovalResponse),
        NoStaffToken,
        (status = 404, description = "No such request", body = platform::problem::Problem)))]
pub async fn get_approval(
    auth: StaffAuth,
    PathId(id, ..): ApprovalId,
) -> Result<web::Json<ApprovalResponse>, ApiError> {
    let r = auth
        .read(move |c, _, _| Ok(approvals::get(c, &id)?))
        .await?;
    Ok(web::Json(approval_response(r, auth.now)))
}

/// Why a staff member's approval or rejection is refused (documents the responses; never built).
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum DecisionRefused {
    #[response(status = 400, description = "Missing justification")]
    NoJustification(Problem),
    #[response(status = 401, description = "Missing or invalid staff token")]
    NoStaffToken(Problem),
    #[response(status = 403, description = "Your own request")]
    OwnRequest(Problem),
    #[response(
        status = 404,
        description = "No such request, or the client it changes no longer exists (nothing is decided)"
    )]
    NoSuchRequest(Problem),
    #[response(status = 409, description = "Already decided or expired")]
    Decided(Problem),
}

async fn decide(
    auth: StaffAuth,
    PathId(id, ..): ApprovalId,
    body: web::Json<JustificationRequest>,
    approve: bool,
) -> Result<web::Json<ApprovalResponse>, ApiError> {
    let justification = body.into_inner().justification;
    let r = auth
        .write_revoking(move |c, revoked, staff, now| {
            clients::decide_and_execute(c, revoked, &id, staff, approve, &justification, now)
        })
        .await?;
    Ok(web::Json(approval_response(r, auth.now)))
}

/// Approve a request made by another staff member; the approved action is executed at once.
#[utoipa::path(post, path = "/api/v1/admin/approvals/{request_id}/approve", tag = "staff",
    security(("staff_token" = [])),
    params(ApprovalId),
    request_body = JustificationRequest,
    responses((status = 200, description = "Approved and executed", body = ApprovalResponse),
        DecisionRefused))]
pub async fn approve(
    auth: StaffAuth,
    id: ApprovalId,
    body: web::Json<JustificationRequest>,
) -> Result<web::Json<ApprovalResponse>, ApiError> {
    decide(auth, id, body, true).await
}

/// Reject a request made by another staff member.
#[utoipa::path(post, path = "/api/v1/admin/approvals/{request_id}/reject", tag = "staff",
    security(("staff_token" = [])),
    params(ApprovalId),
    request_body = JustificationRequest,
    responses((status = 200, description = "Rejected", body = ApprovalResponse),
        DecisionRefused))]
pub async fn reject(
    auth: StaffAuth,
    id: ApprovalId,
    body: web::Json<JustificationRequest>,
) -> Result<web::Json<ApprovalResponse>, ApiError> {
    decide(auth, id, body, false).await
}

/// Why a request to suspend or unsuspend a client is refused (documents the responses; never
/// built).
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum StatusChangeRefused {
    #[response(
        status = 400,
        description = "Missing justification, or a request is already pending"
    )]
    Invalid(Problem),
    #[response(status = 404, description = "No such client")]
    NoSuchClient(Problem),
    #[response(
        status = 409,
        description = "The client is not in the status the change starts from (active to suspend, suspended to unsuspend)"
    )]
    WrongStatus(Problem),
}

/// Ask for a client's suspension (a second staff member must approve; approval revokes all of
/// the client's grants).
#[utoipa::path(post, path = "/api/v1/admin/clients/{client_id}/suspension", tag = "staff",
    security(("staff_token" = [])),
    params(ClientId),
    request_body = JustificationRequest,
    responses((status = 202, description = "Approval request opened", body = ApprovalResponse),
        StatusChangeRefused, NoStaffToken))]
pub async fn request_suspension(
    auth: StaffAuth,
    id: ClientId,
    body: web::Json<JustificationRequest>,
) -> Result<HttpResponse, ApiError> {
    request_status_change(auth, id, body, true).await
}

/// Ask for a suspended client to work again (a second staff member must approve; the grants it
/// lost stay revoked).
#[utoipa::path(post, path = "/api/v1/admin/clients/{client_id}/unsuspension", tag = "staff",
    security(("staff_token" = [])),
    params(ClientId),
    request_body = JustificationRequest,
    responses((status = 202, description = "Approval request opened", body = ApprovalResponse),
        StatusChangeRefused, NoStaffToken))]
pub async fn request_unsuspension(
    auth: StaffAuth,
    id: ClientId,
    body: web::Json<JustificationRequest>,
) -> Result<HttpResponse, ApiError> {
    request_status_change(auth, id, body, false).await
}

async fn request_status_change(
    auth: StaffAuth,
    PathId(id, ..): ClientId,
    body: web::Json<JustificationRequest>,
    suspend: bool,
) -> Result<HttpResponse, ApiError> {
    let justification = body.into_inner().justification;
    let r = auth
        .write(move |c, staff, now| {
            clients::request_status_change(c, staff, &id, suspend, &justification, now)
        })
        .await?;
    Ok(HttpResponse::Accepted().json(approval_response(r, auth.now)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DormancyChangeRequest {
    /// Days without use after which a grant of the client ends: longer than the bank's warning
    /// lead time (`lifecycle.warning_lead_time`) and at most its default
    /// (`lifecycle.dormancy_period`); `null` returns the client to the default. Required.
    #[serde(default, deserialize_with = "super::clients::double_option")]
    #[schema(value_type = Option<i64>, nullable, required = true, minimum = 1)]
    pub dormancy_days: Option<Option<i64>>,
    /// At least 10 characters.
    pub justification: String,
}

/// Ask to set a client's dormancy period (a compliance member must approve this exact value; the
/// approval sets it; a grant idle since before the change gets the whole new period, and its
/// warning, counted from the change).
#[utoipa::path(post, path = "/api/v1/admin/clients/{client_id}/dormancy", tag = "staff",
    security(("staff_token" = [])),
    params(ClientId),
    request_body = DormancyChangeRequest,
    responses((status = 202, description = "Approval request opened", body = ApprovalResponse),
        (status = 400, description = "Missing or out-of-range dormancy_days, missing justification, or a request is already pending", body = Problem),
        (status = 404, description = "No such client", body = Problem),
        (status = 409, description = "The client's dormancy period is already that", body = Problem),
        NoStaffToken))]
pub async fn request_dormancy_change(
    auth: StaffAuth,
    PathId(id, ..): ClientId,
    body: web::Json<DormancyChangeRequest>,
) -> Result<HttpResponse, ApiError> {
    let DormancyChangeRequest {
        dormancy_days,
        justification,
    } = body.into_inner();
    let days = dormancy_days.ok_or_else(|| {
        crate::error::PortalError::field(
            "dormancy_days",
            "is required: a number of days, or null for the bank's default",
        )
    })?;
    let bounds = clients::DormancyBounds::of(&auth.platform.settings.lifecycle);
    let r = auth
        .write(move |c, staff, now| {
            clients::request_dormancy_change(c, staff, &id, days, bounds, &justification, now)
        })
        .await?;
    Ok(HttpResponse::Accepted().json(approval_response(r, auth.now)))
}
