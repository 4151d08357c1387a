//! The `/api/v1/me` JSON API for the bank's mobile app (session cookie, `X-CSRF-Token`).

use super::*;
use crate::routes::{Answer, PathId};
use platform::problem::documented::{NoCsrfHeader, NotLoggedIn, NotYourGrant};
use platform::web::no_store_json;

/// The logged-in customer, and the CSRF token that state-changing calls must send in
/// `X-CSRF-Token`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MeResponse {
    pub customer_id: String,
    pub username: String,
    pub display_name: String,
    /// Send this in the `X-CSRF-Token` header of DELETE/POST calls.
    pub csrf_token: String,
    /// When the session ends.
    pub session_expires_at: DateTime<Utc>,
}

/// The customer's connected apps, newest first; `active` tells live grants from ended ones.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GrantListResponse {
    pub grants: Vec<GrantView>,
}

/// What happened to or through a grant, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ActivityResponse {
    pub grant_id: String,
    pub events: Vec<ActivityEvent>,
}

/// The grants that revoke-all ended.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RevokeAllResponse {
    /// How many grants were live and are now revoked.
    pub revoked: usize,
    pub grant_ids: Vec<String>,
}

/// The logged-in customer and their session's CSRF token.
#[utoipa::path(get, path = "/api/v1/me", tag = "customer", operation_id = "customer_me",
    security(("customer_session" = [])),
    responses(
        (status = 200, description = "The customer", body = MeResponse),
        NotLoggedIn))]
#[get("/api/v1/me")]
pub async fn me(my: MyGrants) -> Answer {
    let (identity, session) = (my.grants.identity().await?, my.session);
    let (username, display_name) = identity.ok_or(ApiError::NotFound("resource"))?;
    Ok(no_store_json(&MeResponse {
        customer_id: session.subject_id,
        username,
        display_name,
        csrf_token: session.csrf_token,
        session_expires_at: session.expires_at,
    }))
}

/// Every app the customer connected, live and ended, newest first.
#[utoipa::path(get, path = "/api/v1/me/grants", tag = "customer",
    security(("customer_session" = [])),
    responses(
        (status = 200, description = "The customer's grants", body = GrantListResponse),
        NotLoggedIn))]
#[get("/api/v1/me/grants")]
pub async fn list_grants(my: MyGrants) -> Answer {
    let grants = my.grants.list().await?;
    Ok(no_store_json(&GrantListResponse { grants }))
}

/// One of the customer's grants.
#[utoipa::path(get, path = "/api/v1/me/grants/{id}", tag = "customer",
    security(("customer_session" = [])),
    params(crate::openapi::values::GrantIdPath),
    responses(
        (status = 200, description = "The grant", body = GrantView),
        NotLoggedIn, NotYourGrant))]
#[get("/api/v1/me/grants/{id}")]
pub async fn get_grant(id: PathId, my: MyGrants) -> Answer {
    let grant = my.grants.get(&id).await?;
    Ok(no_store_json(&grant.ok_or(ApiError::NotFound("grant"))?))
}

/// Revokes one grant at once: its refresh tokens stop working, its access tokens are published
/// on the revocation feed. Revoking a grant that already ended changes nothing and also answers
/// 204 (idempotent).
#[utoipa::path(delete, path = "/api/v1/me/grants/{id}", tag = "customer",
    security(("customer_session" = [], "csrf_header" = [])),
    params(crate::openapi::values::GrantIdPath),
    responses(
        (status = 204, description = "Revoked (or had already ended)"), NotLoggedIn, NoCsrfHeader,
        NotYourGrant))]
#[delete("/api/v1/me/grants/{id}")]
pub async fn revoke_grant(id: PathId, my: MyGrantsChange) -> Answer {
    match my.grants.revoke(&id).await? {
        RevokeOutcome::NotFound => Err(ApiError::NotFound("grant")),
        RevokeOutcome::Revoked(_) | RevokeOutcome::AlreadyEnded => {
            Ok(HttpResponse::NoContent().finish())
        }
    }
}

/// Extends (re-confirms) one authorized grant that has not ended: its expiry moves to
/// `max(current expiry, now + min(original lifetime, maximum grant lifetime))`, and the
/// re-confirmation counts as the app's activity (the dormancy clock restarts), which clears the
/// grant's `notice`. The app's refresh token keeps working past the old expiry, new access
/// tokens carry the new expiry, and the app receives a `grant.extended` webhook event.
/// Answers the updated grant.
#[utoipa::path(post, path = "/api/v1/me/grants/{id}/extend", tag = "customer",
    security(("customer_session" = [], "csrf_header" = [])),
    params(crate::openapi::values::GrantIdPath),
    responses(
        (status = 200, description = "Extended; the updated grant", body = GrantView), NotLoggedIn,
        NoCsrfHeader, NotYourGrant,
        (status = 409, description = "The grant has ended (revoked, expired, rejected) or was never authorized; nothing changed", body = platform::problem::Problem)))]
#[post("/api/v1/me/grants/{id}/extend")]
pub async fn extend_grant(id: PathId, my: MyGrantsChange) -> Answer {
    let grants = my.grants;
    match grants.extend(&id).await? {
        ExtendOutcome::NotFound => Err(ApiError::NotFound("grant")),
        ExtendOutcome::Ended { status } => Err(ApiError::Conflict(format!(
            "the grant is {status} and cannot be extended; the app must ask for access again"
        ))),
        ExtendOutcome::Extended { .. } => {
            let grant = grants.get(&id).await?.ok_or(ApiError::NotFound("grant"))?;
            Ok(no_store_json(&grant))
        }
    }
}

/// Revokes every live grant of the customer.
#[utoipa::path(post, path = "/api/v1/me/grants/revoke-all", tag = "customer",
    security(("customer_session" = [], "csrf_header" = [])),
    responses(
        (status = 200, description = "The grants that were ended", body = RevokeAllResponse),
        NotLoggedIn, NoCsrfHeader))]
#[post("/api/v1/me/grants/revoke-all")]
pub async fn revoke_all_grants(my: MyGrantsChange) -> Answer {
    let ended = my.grants.revoke_all().await?;
    Ok(no_store_json(&RevokeAllResponse {
        revoked: ended.len(),
        grant_ids: ended,
    }))
}

/// What happened to or through a grant (consent, tokens issued and refreshed, data read,
/// revocation), newest first, in plain language.
#[utoipa::path(get, path = "/api/v1/me/grants/{id}/activity", tag = "customer",
    security(("customer_session" = [])),
    params(crate::openapi::values::GrantIdPath),
    responses(
        (status = 200, description = "The grant's history", body = ActivityResponse), NotLoggedIn,
        NotYourGrant))]
#[get("/api/v1/me/grants/{id}/activity")]
pub async fn grant_activity(id: PathId, my: MyGrants) -> Answer {
    let id = id.into_inner();
    let events = my.grants.activity(&id).await?;
    let events = events.ok_or(ApiError::NotFound("grant"))?;
    Ok(no_store_json(&ActivityResponse {
        grant_id: id,
        events,
    }))
}
