//! Customer dashboard: the `/account/apps` pages and the `/api/v1/me/grants` JSON API for the
//! bank's mobile app. Thin handlers over [`crate::dashboard`].
//!
//! Authentication is the customer session cookie (HttpOnly, SameSite=Lax). State-changing
//! requests must also prove they come from the bank's own pages or app: forms carry the session's
//! `csrf_token`, JSON calls send it in the `X-CSRF-Token` header (read it from `GET /api/v1/me`).
//! Another customer's grant is answered exactly like an unknown one (404). Revoking an already
//! ended grant is a no-op that succeeds (204 / back to the page). Extending (re-confirming) a
//! grant that has ended is refused (409 / an error page): the app must ask for access again.

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse, delete, get, post};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use maud::{Markup, html};
use platform::problem::ApiError;
use platform::session::{Session, SessionKind};
use platform::storage::schema::customers;
use platform::web::{current_session, page};
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::AppState;
use crate::dashboard::{
    self, ActivityEvent, ExtendOutcome, GrantNotice, GrantView, LifecyclePolicy, RevokeOutcome,
};
use crate::routes::oauth::{error_page, see_other};

/// Header carrying the session's CSRF token on state-changing JSON calls.
pub const CSRF_HEADER: &str = "X-CSRF-Token";

/// OpenAPI fragment merged into the server's document.
#[derive(Debug, OpenApi)]
#[openapi(
    paths(
        me,
        list_grants,
        get_grant,
        revoke_grant,
        extend_grant,
        revoke_all_grants,
        grant_activity
    ),
    components(schemas(
        MeResponse,
        GrantListResponse,
        ActivityResponse,
        RevokeAllResponse,
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
    cfg.service(apps_page)
        .service(revoke_all_form)
        .service(app_page)
        .service(revoke_form)
        .service(extend_form)
        .service(me)
        .service(list_grants)
        .service(revoke_all_grants)
        .service(get_grant)
        .service(revoke_grant)
        .service(extend_grant)
        .service(grant_activity);
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

fn form_field(body: &Bytes, name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn html_response(markup: Markup) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(markup.into_string())
}

fn unavailable_page() -> HttpResponse {
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        "The service is temporarily unavailable; try again.",
    )
}

fn not_found_page() -> HttpResponse {
    error_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such connected app.",
    )
}

fn csrf_failed_page() -> HttpResponse {
    error_page(
        StatusCode::FORBIDDEN,
        "Form expired",
        "The form was not submitted from this site or has expired; reload the page.",
    )
}

/// The customer session for a page, or the redirect to the login page (and back to `next`).
async fn page_session(
    state: &AppState,
    req: &HttpRequest,
    next: &str,
) -> Result<Session, HttpResponse> {
    match current_session(&state.platform, req, SessionKind::Customer).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(see_other(&format!("/login?next={next}"))),
        Err(_) => Err(unavailable_page()),
    }
}

/// The customer session of a JSON call (401 without one).
async fn api_session(state: &AppState, req: &HttpRequest) -> Result<Session, ApiError> {
    current_session(&state.platform, req, SessionKind::Customer)
        .await?
        .ok_or(ApiError::Unauthorized)
}

/// The session of a state-changing JSON call: logged in and carrying the CSRF header.
async fn api_session_csrf(state: &AppState, req: &HttpRequest) -> Result<Session, ApiError> {
    let session = api_session(state, req).await?;
    let submitted = req
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if submitted.is_empty() || !session.check_csrf(submitted) {
        return Err(ApiError::Forbidden(format!(
            "missing or wrong {CSRF_HEADER} header; read csrf_token from GET /api/v1/me"
        )));
    }
    Ok(session)
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

// ---------------------------------------------------------------------------------------------
// Pages

fn day(t: DateTime<Utc>) -> String {
    dashboard::format_day(t)
}

fn day_time(t: DateTime<Utc>) -> String {
    t.format("%-d %b %Y, %H:%M UTC").to_string()
}

fn window_text(g: &GrantView) -> String {
    let short = |s: &str| s.get(..10).unwrap_or(s).to_string();
    match (&g.transactions_from, &g.transactions_until) {
        (Some(f), Some(u)) => format!("From {} to {}", short(f), short(u)),
        (Some(f), None) => format!("From {}", short(f)),
        (None, Some(u)) => format!("Until {}", short(u)),
        (None, None) => "Your whole transaction history".into(),
    }
}

fn status_text(g: &GrantView) -> &'static str {
    match (g.status.as_str(), g.revoked_by.as_deref()) {
        ("authorized", _) => "Active",
        ("awaiting_authorization", _) => "Waiting for the app",
        ("rejected", _) => "Refused by you",
        ("expired", _) => "Expired",
        ("revoked", Some("customer")) => "Ended by you",
        ("revoked", Some("client")) => "Ended by the app",
        ("revoked", Some("staff")) => "Ended by the bank",
        ("revoked", Some("dormancy")) => "Ended (not used for a long time)",
        ("revoked", Some("security")) => "Ended by the bank for your protection",
        ("revoked", _) => "Ended",
        _ => "Unknown",
    }
}

const NOTICE_STYLE: &str = "border:2px solid #bf8700;background:#fff8c5;border-radius:6px;\
    padding:.5rem .9rem;margin:.6rem 0";
const FLASH_STYLE: &str = "border:2px solid #1a7f37;background:#dafbe1;border-radius:6px;\
    padding:.5rem .9rem;margin:.6rem 0";

/// The warning that an app is about to lose its access, with the button that extends it.
/// `back` is the page the form returns to.
fn notice_markup(g: &GrantView, n: &GrantNotice, csrf: &str, back: &str) -> Markup {
    html! {
        div.notice role="alert" data-kind=(n.kind) style=(NOTICE_STYLE) {
            p { strong { (n.message) } }
            form.extend method="post" action={ "/account/apps/" (g.grant_id) "/extend" } {
                input type="hidden" name="csrf_token" value=(csrf);
                input type="hidden" name="next" value=(back);
                button type="submit" { "Extend access for " (g.client_name) }
            }
        }
    }
}

/// The confirmation shown after an extension (`?extended=<grant id>` on the page).
fn flash_markup(g: Option<&GrantView>) -> Markup {
    html! {
        @if let Some(g) = g {
            p.flash role="status" style=(FLASH_STYLE) {
                "Done: " (g.client_name) " stays connected until " (day(g.expires_at)) "."
            }
        }
    }
}

/// The grant id in the page's `?extended=` confirmation parameter, if any.
fn extended_param(req: &HttpRequest) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "extended")
        .map(|(_, v)| v.into_owned())
}

fn grant_card(g: &GrantView, csrf: &str, detail_link: bool) -> Markup {
    // The list page links to the detail page; forms return to the page they are on.
    let back = if detail_link {
        "/account/apps".to_string()
    } else {
        format!("/account/apps/{}", g.grant_id)
    };
    html! {
        section.app data-grant-id=(g.grant_id) data-status=(g.status) {
            h3.app-name { (g.client_name) }
            @if let Some(n) = &g.notice {
                (notice_markup(g, n, csrf, &back))
            }
            @if g.verified {
                p.operator { "Operated by " strong { (g.operator_label) } " - identity verified by your bank." }
            } @else {
                p.operator.warning { strong { (g.operator_label) } }
            }
            dl {
                dt { "Status" } dd.status { (status_text(g)) }
                dt { "Accounts" }
                dd {
                    @if g.accounts.is_empty() { "None" }
                    ul.accounts {
                        @for a in &g.accounts {
                            li { (a.name) " " span.muted { (a.masked_number) " " (a.currency) } }
                        }
                    }
                }
                dt { "The app may" }
                dd { ul.actions { @for a in &g.actions { li { (a.description) } } } }
                @if g.actions.iter().any(|a| a.action == "transactions:read") {
                    dt { "Transactions" } dd.window { (window_text(g)) }
                    dt { "Merchants" }
                    dd.merchants {
                        @match &g.merchants {
                            None => { "All merchants" },
                            Some(m) => { (m.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")) }
                        }
                    }
                }
                dt { "Connected on" } dd { (day(g.authorized_at.unwrap_or(g.created_at))) }
                @if g.active {
                    dt { "Access ends on" } dd.expires { (day(g.expires_at)) }
                    @if let Some(t) = g.dormancy_deadline {
                        dt { "Disconnected if unused until" } dd.dormancy { (day(t)) }
                    }
                } @else if let Some(t) = g.revoked_at {
                    dt { "Ended on" } dd { (day(t)) }
                } @else {
                    dt { "Access ended on" } dd { (day(g.expires_at)) }
                }
                dt { "Last used" }
                dd { @match g.last_used_at { Some(t) => { (day_time(t)) }, None => { "Never" } } }
            }
            @if g.active {
                form.revoke method="post" action={ "/account/apps/" (g.grant_id) "/revoke" } {
                    input type="hidden" name="csrf_token" value=(csrf);
                    button type="submit" { "Revoke access for " (g.client_name) }
                }
            }
            @if detail_link {
                p { a href={ "/account/apps/" (g.grant_id) } { "What this app did" } }
            }
        }
    }
}

fn logout_form(csrf: &str) -> Markup {
    html! {
        form.logout method="post" action="/logout" {
            input type="hidden" name="csrf_token" value=(csrf);
            button type="submit" { "Log out" }
        }
    }
}

fn apps_markup(
    name: &str,
    grants: &[GrantView],
    csrf: &str,
    extended: Option<&GrantView>,
) -> Markup {
    let (active, past): (Vec<&GrantView>, Vec<&GrantView>) = grants.iter().partition(|g| g.active);
    let ending: Vec<&GrantView> = active
        .iter()
        .copied()
        .filter(|g| g.notice.is_some())
        .collect();
    page(
        "Your connected apps",
        html! {
            h1 { "Your connected apps" }
            p.muted { "Logged in as " (name) "." }
            (logout_form(csrf))
            (flash_markup(extended))
            @if !ending.is_empty() {
                section.attention role="alert" style=(NOTICE_STYLE) {
                    h2 { "Needs your attention" }
                    @for g in &ending {
                        @if let Some(n) = &g.notice {
                            p data-grant-id=(g.grant_id) {
                                strong { (g.client_name) ": " } (n.message)
                            }
                            form.extend method="post" action={ "/account/apps/" (g.grant_id) "/extend" } {
                                input type="hidden" name="csrf_token" value=(csrf);
                                input type="hidden" name="next" value="/account/apps";
                                button type="submit" { "Extend access for " (g.client_name) }
                            }
                        }
                    }
                }
            }
            p { "These apps can see some of your bank data because you allowed them to. You can end any app's access at once; it stops working immediately." }
            section id="active" {
                h2 { "Connected now" }
                @if active.is_empty() {
                    p.empty { "No apps are connected to your accounts." }
                } @else {
                    form.revoke-all method="post" action="/account/apps/revoke-all" {
                        input type="hidden" name="csrf_token" value=(csrf);
                        button type="submit" { "Revoke access for all apps" }
                    }
                    @for g in &active { (grant_card(g, csrf, true)) }
                }
            }
            section id="past" {
                h2 { "Past apps" }
                @if past.is_empty() {
                    p.empty { "None." }
                } @else {
                    @for g in &past { (grant_card(g, csrf, true)) }
                }
            }
        },
    )
}

fn detail_markup(g: &GrantView, events: &[ActivityEvent], csrf: &str, extended: bool) -> Markup {
    page(
        &format!("{} - connected app", g.client_name),
        html! {
            p { a href="/account/apps" { "All connected apps" } }
            h1 { (g.client_name) }
            (flash_markup(extended.then_some(g)))
            (grant_card(g, csrf, false))
            h2 { "What this app did" }
            @if events.is_empty() {
                p.empty { "Nothing yet." }
            } @else {
                table.history {
                    thead { tr { th { "When" } th { "What happened" } } }
                    tbody {
                        @for e in events {
                            tr data-action=(e.action) {
                                td { (day_time(e.occurred_at)) }
                                td { (e.description) }
                            }
                        }
                    }
                }
            }
            (logout_form(csrf))
        },
    )
}

async fn customer_name(state: &AppState, id: String) -> String {
    state
        .platform
        .db
        .run(move |c| {
            Ok(customers::table
                .filter(customers::id.eq(&id))
                .select(customers::display_name)
                .first::<String>(c)
                .optional()?)
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

#[get("/account/apps")]
pub async fn apps_page(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let session = match page_session(&state, &req, "/account/apps").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Ok(grants) = load_list(&state, session.subject_id.clone()).await else {
        return unavailable_page();
    };
    let name = customer_name(&state, session.subject_id.clone()).await;
    let extended =
        extended_param(&req).and_then(|id| grants.iter().find(|g| g.grant_id == id && g.active));
    html_response(apps_markup(&name, &grants, &session.csrf_token, extended))
}

#[get("/account/apps/{grant_id}")]
pub async fn app_page(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    let id = id.into_inner();
    let next = if valid_grant_id(&id) {
        format!("/account/apps/{id}")
    } else {
        "/account/apps".into()
    };
    let session = match page_session(&state, &req, &next).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let customer = session.subject_id.clone();
    let grant = match load_grant(&state, customer.clone(), id.clone()).await {
        Ok(Some(g)) => g,
        Ok(None) => return not_found_page(),
        Err(_) => return unavailable_page(),
    };
    let events = match load_activity(&state, customer, id).await {
        Ok(e) => e.unwrap_or_default(),
        Err(_) => return unavailable_page(),
    };
    let extended = grant.active && extended_param(&req).as_deref() == Some(grant.grant_id.as_str());
    html_response(detail_markup(
        &grant,
        &events,
        &session.csrf_token,
        extended,
    ))
}

#[post("/account/apps/{grant_id}/revoke")]
pub async fn revoke_form(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: Bytes,
) -> HttpResponse {
    let session = match page_session(&state, &req, "/account/apps").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !session.check_csrf(&form_field(&body, "csrf_token").unwrap_or_default()) {
        return csrf_failed_page();
    }
    match do_revoke(&state, session.subject_id.clone(), id.into_inner()).await {
        Ok(RevokeOutcome::NotFound) => not_found_page(),
        Ok(_) => see_other("/account/apps"),
        Err(_) => unavailable_page(),
    }
}

/// The customer re-confirms a grant from the page; back to the page it was sent from, with a
/// confirmation.
#[post("/account/apps/{grant_id}/extend")]
pub async fn extend_form(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: Bytes,
) -> HttpResponse {
    let session = match page_session(&state, &req, "/account/apps").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !session.check_csrf(&form_field(&body, "csrf_token").unwrap_or_default()) {
        return csrf_failed_page();
    }
    let id = id.into_inner();
    match do_extend(&state, session.subject_id.clone(), id.clone()).await {
        Ok(ExtendOutcome::NotFound) => not_found_page(),
        Ok(ExtendOutcome::Ended { .. }) => error_page(
            StatusCode::CONFLICT,
            "Access has ended",
            "This app's access has already ended, so it cannot be extended. To connect the app \
             again, start from the app itself.",
        ),
        Ok(ExtendOutcome::Extended { .. }) => {
            // Only the two dashboard pages are valid destinations (no open redirect).
            let detail = format!("/account/apps/{id}");
            let back = match form_field(&body, "next") {
                Some(n) if n == detail => detail,
                _ => "/account/apps".to_string(),
            };
            see_other(&format!("{back}?extended={id}"))
        }
        Err(_) => unavailable_page(),
    }
}

#[post("/account/apps/revoke-all")]
pub async fn revoke_all_form(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    let session = match page_session(&state, &req, "/account/apps").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !session.check_csrf(&form_field(&body, "csrf_token").unwrap_or_default()) {
        return csrf_failed_page();
    }
    match do_revoke_all(&state, session.subject_id.clone()).await {
        Ok(_) => see_other("/account/apps"),
        Err(_) => unavailable_page(),
    }
}

// ---------------------------------------------------------------------------------------------
// JSON API

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

fn json_ok<T: Serialize>(body: &T) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(body)
}

/// The logged-in customer and their session's CSRF token.
#[utoipa::path(get, path = "/api/v1/me", tag = "customer",
    security(("customer_session" = [])),
    responses(
        (status = 200, description = "The customer", body = MeResponse),
        (status = 401, description = "Not logged in", body = platform::problem::Problem)))]
#[get("/api/v1/me")]
pub async fn me(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let session = api_session(&state, &req).await?;
    let id = session.subject_id.clone();
    let (username, display_name) = state
        .platform
        .db
        .run(move |c| {
            Ok(customers::table
                .filter(customers::id.eq(&id))
                .select((customers::username, customers::display_name))
                .first::<(String, String)>(c)?)
        })
        .await?;
    Ok(json_ok(&MeResponse {
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
        (status = 401, description = "Not logged in", body = platform::problem::Problem)))]
#[get("/api/v1/me/grants")]
pub async fn list_grants(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let session = api_session(&state, &req).await?;
    let grants = load_list(&state, session.subject_id).await?;
    Ok(json_ok(&GrantListResponse { grants }))
}

/// One of the customer's grants.
#[utoipa::path(get, path = "/api/v1/me/grants/{id}", tag = "customer",
    security(("customer_session" = [])),
    params(("id" = String, Path, description = "Grant id (`g_...`)")),
    responses(
        (status = 200, description = "The grant", body = GrantView),
        (status = 401, description = "Not logged in", body = platform::problem::Problem),
        (status = 404, description = "No such grant for this customer", body = platform::problem::Problem)))]
#[get("/api/v1/me/grants/{id}")]
pub async fn get_grant(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let session = api_session(&state, &req).await?;
    let grant = load_grant(&state, session.subject_id, id.into_inner())
        .await?
        .ok_or(ApiError::NotFound("grant"))?;
    Ok(json_ok(&grant))
}

/// Revokes one grant at once: its refresh tokens stop working, its access tokens are published
/// on the revocation feed. Revoking a grant that already ended changes nothing and also answers
/// 204 (idempotent).
#[utoipa::path(delete, path = "/api/v1/me/grants/{id}", tag = "customer",
    security(("customer_session" = [], "csrf_header" = [])),
    params(("id" = String, Path, description = "Grant id (`g_...`)")),
    responses(
        (status = 204, description = "Revoked (or had already ended)"),
        (status = 401, description = "Not logged in", body = platform::problem::Problem),
        (status = 403, description = "Missing or wrong X-CSRF-Token", body = platform::problem::Problem),
        (status = 404, description = "No such grant for this customer", body = platform::problem::Problem)))]
#[delete("/api/v1/me/grants/{id}")]
pub async fn revoke_grant(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let session = api_session_csrf(&state, &req).await?;
    match do_revoke(&state, session.subject_id, id.into_inner()).await? {
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
    params(("id" = String, Path, description = "Grant id (`g_...`)")),
    responses(
        (status = 200, description = "Extended; the updated grant", body = GrantView),
        (status = 401, description = "Not logged in", body = platform::problem::Problem),
        (status = 403, description = "Missing or wrong X-CSRF-Token", body = platform::problem::Problem),
        (status = 404, description = "No such grant for this customer", body = platform::problem::Problem),
        (status = 409, description = "The grant has ended (revoked, expired, rejected) or was never authorized; nothing changed", body = platform::problem::Problem)))]
#[post("/api/v1/me/grants/{id}/extend")]
pub async fn extend_grant(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let session = api_session_csrf(&state, &req).await?;
    let id = id.into_inner();
    match do_extend(&state, session.subject_id.clone(), id.clone()).await? {
        ExtendOutcome::NotFound => Err(ApiError::NotFound("grant")),
        ExtendOutcome::Ended { status } => Err(ApiError::Conflict(format!(
            "the grant is {status} and cannot be extended; the app must ask for access again"
        ))),
        ExtendOutcome::Extended { .. } => {
            let grant = load_grant(&state, session.subject_id, id)
                .await?
                .ok_or(ApiError::NotFound("grant"))?;
            Ok(json_ok(&grant))
        }
    }
}

/// Revokes every live grant of the customer.
#[utoipa::path(post, path = "/api/v1/me/grants/revoke-all", tag = "customer",
    security(("customer_session" = [], "csrf_header" = [])),
    responses(
        (status = 200, description = "The grants that were ended", body = RevokeAllResponse),
        (status = 401, description = "Not logged in", body = platform::problem::Problem),
        (status = 403, description = "Missing or wrong X-CSRF-Token", body = platform::problem::Problem)))]
#[post("/api/v1/me/grants/revoke-all")]
pub async fn revoke_all_grants(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let session = api_session_csrf(&state, &req).await?;
    let ended = do_revoke_all(&state, session.subject_id).await?;
    Ok(json_ok(&RevokeAllResponse {
        revoked: ended.len(),
        grant_ids: ended,
    }))
}

/// What happened to or through a grant (consent, tokens issued and refreshed, data read,
/// revocation), newest first, in plain language.
#[utoipa::path(get, path = "/api/v1/me/grants/{id}/activity", tag = "customer",
    security(("customer_session" = [])),
    params(("id" = String, Path, description = "Grant id (`g_...`)")),
    responses(
        (status = 200, description = "The grant's history", body = ActivityResponse),
        (status = 401, description = "Not logged in", body = platform::problem::Problem),
        (status = 404, description = "No such grant for this customer", body = platform::problem::Problem)))]
#[get("/api/v1/me/grants/{id}/activity")]
pub async fn grant_activity(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let session = api_session(&state, &req).await?;
    let id = id.into_inner();
    let events = load_activity(&state, session.subject_id, id.clone())
        .await?
        .ok_or(ApiError::NotFound("grant"))?;
    Ok(json_ok(&ActivityResponse {
        grant_id: id,
        events,
    }))
}
