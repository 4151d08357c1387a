//! Customer dashboard: the `/account/apps` pages and the `/api/v1/me/grants` JSON API for the
//! bank's mobile app. Thin handlers over [`crate::dashboard`].
//!
//! Authentication is the customer session cookie (HttpOnly, SameSite=Lax). State-changing
//! requests must also prove they come from the bank's own pages or app: forms carry the session's
//! `csrf_token`, JSON calls send it in the `X-CSRF-Token` header (read it from `GET /api/v1/me`).
//! Another customer's grant is answered exactly like an unknown one (404). Revoking an already
//! ended grant is a no-op that succeeds (204 / back to the page). Extending (re-confirming) a
//! grant that has ended is refused (409 / an error page): the app must ask for access again.
//!
//! `pages` (HTML handlers), `markup` (what the pages show), `api` (the JSON API); this module
//! holds the calls into the dashboard service they share. Sessions and CSRF tokens are checked
//! by platform's extractors (`CustomerSession`, `CsrfForm`, `ApiSession`, `CsrfHeader`).

mod api;
mod markup;
mod pages;

pub use api::{ActivityResponse, GrantListResponse, MeResponse, RevokeAllResponse};

use actix_web::http::StatusCode;
use actix_web::web;
use actix_web::{HttpRequest, HttpResponse, delete, get, post};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use platform::problem::ApiError;
use platform::session::SessionKind;
use platform::web::auth::unavailable_page;
use platform::web::auth::{ApiSession, CsrfForm, CsrfHeader, Customer, CustomerSession};
use platform::web::page;
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::AppState;
use crate::dashboard::{
    self, ActivityEvent, ExtendOutcome, GrantNotice, GrantView, LifecyclePolicy, RevokeOutcome,
};
use crate::routes::oauth::{error_page, see_other};

/// Header carrying the session's CSRF token on state-changing JSON calls.
pub use platform::web::auth::CSRF_HEADER;

/// OpenAPI fragment merged into the server's document.
#[derive(Debug, OpenApi)]
#[openapi(
    paths(
        api::me,
        api::list_grants,
        api::get_grant,
        api::revoke_grant,
        api::extend_grant,
        api::revoke_all_grants,
        api::grant_activity
    ),
    components(schemas(
        api::MeResponse,
        api::GrantListResponse,
        api::ActivityResponse,
        api::RevokeAllResponse,
        GrantView,
        GrantNotice,
        ActivityEvent,
        dashboard::AccountView,
        dashboard::MerchantView,
        dashboard::ActionView,
    )),
    modifiers(&CustomerSchemes),
    tags((name = "customer", description = "The customer's connected apps (customer session \
        cookie; state-changing calls also need the X-CSRF-Token header from GET /api/v1/me)")),
)]
pub struct ApiDoc;

#[derive(Debug)]
struct CustomerSchemes;

impl Modify for CustomerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "customer_session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                SessionKind::Customer.cookie_name(),
                "Customer session cookie set by POST /login",
            ))),
        );
        components.add_security_scheme(
            "csrf_header",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                CSRF_HEADER,
                "The session's csrf_token from GET /api/v1/me",
            ))),
        );
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(pages::apps_page)
        .service(pages::revoke_all_form)
        .service(pages::app_page)
        .service(pages::revoke_form)
        .service(pages::extend_form)
        .service(api::me)
        .service(api::list_grants)
        .service(api::revoke_all_grants)
        .service(api::get_grant)
        .service(api::revoke_grant)
        .service(api::extend_grant)
        .service(api::grant_activity);
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// Grant ids are `g_` + URL-safe characters; anything else cannot exist and is a 404.
fn valid_grant_id(id: &str) -> bool {
    id.starts_with("g_")
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn html_response(markup: Markup) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(markup.into_string())
}

fn not_found_page() -> HttpResponse {
    error_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such connected app.",
    )
}

fn policy(state: &AppState) -> LifecyclePolicy {
    LifecyclePolicy::from_settings(&state.platform.settings)
}

async fn load_list(state: &AppState, customer: String) -> Result<Vec<GrantView>, ApiError> {
    let p = state.platform.clone();
    let now = p.now();
    let policy = policy(state);
    Ok(state
        .platform
        .db
        .run(move |c| dashboard::list_grants(c, &p.master_key, &customer, &policy, now))
        .await?)
}

async fn load_grant(
    state: &AppState,
    customer: String,
    id: String,
) -> Result<Option<GrantView>, ApiError> {
    if !valid_grant_id(&id) {
        return Ok(None);
    }
    let p = state.platform.clone();
    let now = p.now();
    let policy = policy(state);
    Ok(state
        .platform
        .db
        .run(move |c| dashboard::get_grant(c, &p.master_key, &customer, &id, &policy, now))
        .await?)
}

async fn load_activity(
    state: &AppState,
    customer: String,
    id: String,
) -> Result<Option<Vec<ActivityEvent>>, ApiError> {
    if !valid_grant_id(&id) {
        return Ok(None);
    }
    Ok(state
        .platform
        .db
        .run(move |c| dashboard::activity(c, &customer, &id))
        .await?)
}

/// Revokes one grant (committed and announced to every instance before this returns).
async fn do_revoke(
    state: &AppState,
    customer: String,
    id: String,
) -> Result<RevokeOutcome, ApiError> {
    if !valid_grant_id(&id) {
        return Ok(RevokeOutcome::NotFound);
    }
    let now = state.platform.now();
    Ok(platform::revocation::write(&state.platform, move |c, r| {
        dashboard::revoke(c, r, &customer, &id, now)
    })
    .await?)
}

/// Extends (re-confirms) one grant, committed before this returns.
async fn do_extend(
    state: &AppState,
    customer: String,
    id: String,
) -> Result<ExtendOutcome, ApiError> {
    if !valid_grant_id(&id) {
        return Ok(ExtendOutcome::NotFound);
    }
    let now = state.platform.now();
    let policy = policy(state);
    Ok(state
        .platform
        .db
        .write(move |c| dashboard::extend(c, &customer, &id, &policy, now))
        .await?)
}

async fn do_revoke_all(state: &AppState, customer: String) -> Result<Vec<String>, ApiError> {
    let now = state.platform.now();
    Ok(platform::revocation::write(&state.platform, move |c, r| {
        dashboard::revoke_all(c, r, &customer, now)
    })
    .await?)
}

/// The customer's display name for the page header (empty if it cannot be read).
async fn customer_name(state: &AppState, id: String) -> String {
    state
        .platform
        .db
        .run(move |c| dashboard::customer_identity(c, &id))
        .await
        .ok()
        .flatten()
        .map(|(_, display_name)| display_name)
        .unwrap_or_default()
}
