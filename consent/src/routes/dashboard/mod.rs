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

pub(crate) mod api;
mod markup;
mod pages;

pub use api::{ActivityResponse, GrantListResponse, MeResponse, RevokeAllResponse};

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::web;
use actix_web::{FromRequest, HttpRequest, HttpResponse, delete, get, post};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use platform::problem::ApiError;
use platform::session::{Session, SessionKind};
use platform::web::auth::unavailable_page;
use platform::web::auth::{ApiSession, CsrfForm, CsrfHeader, Customer, CustomerSession};
use platform::web::page;
use serde::Serialize;
use std::marker::PhantomData;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::AppState;
use crate::dashboard::{
    self, ActivityEvent, CustomerGrants, ExtendOutcome, GrantNotice, GrantView, RevokeOutcome,
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
                SessionKind::Customer.cookie_name(true),
                "Customer session cookie set by POST /login (named `consent_customer`, without \
                 the `__Host-` prefix, only when `security.secure_cookies = false` in development)",
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
    cfg.service((
        pages::apps_page,
        pages::revoke_all_form,
        pages::app_page,
        pages::revoke_form,
        pages::extend_form,
    ))
    .service((
        api::me,
        api::list_grants,
        api::revoke_all_grants,
        api::get_grant,
        api::revoke_grant,
        api::extend_grant,
        api::grant_activity,
    ));
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

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

/// The logged-in customer's side of the dashboard service.
fn grants(state: &AppState, session: Session) -> CustomerGrants {
    CustomerGrants::new(&state.platform, session.subject_id)
}

/// A JSON call's session wrapper (`ApiSession` for reads, `CsrfHeader` for changes).
pub trait CustomerCall: FromRequest<Error = ApiError> + 'static {
    fn session(self) -> Session;
}

impl CustomerCall for ApiSession<Customer> {
    fn session(self) -> Session {
        self.into_inner()
    }
}

impl CustomerCall for CsrfHeader<Customer> {
    fn session(self) -> Session {
        self.into_inner()
    }
}

/// The dashboard service of the customer whose session cookie came with a JSON call, checked
/// by `W`: [`MyGrants`] for reads, [`MyGrantsChange`] for changes (which must also carry the
/// session's CSRF token in `X-CSRF-Token`).
#[derive(Debug)]
pub struct Mine<W> {
    pub grants: CustomerGrants,
    pub session: Session,
    checked_by: PhantomData<W>,
}

pub type MyGrants = Mine<ApiSession<Customer>>;
pub type MyGrantsChange = Mine<CsrfHeader<Customer>>;

impl<W: CustomerCall> FromRequest for Mine<W> {
    type Error = ApiError;
    type Future = crate::routes::Extracted<Self>;
    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let state = crate::routes::app_state(req);
        let call = W::from_request(req, payload);
        Box::pin(async move {
            let session = call.await?.session();
            let state = state?;
            Ok(Self {
                grants: grants(&state, session.clone()),
                session,
                checked_by: PhantomData,
            })
        })
    }
}
