//! `/login/oidc` and `/login/oidc/callback`: customer login through the bank's own OpenID Connect
//! provider ([`crate::customer_login`]). Pages, not JSON: the browser is redirected to the
//! provider and back.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use platform::problem::ApiError;
use platform::problem::documented::{Malformed, TooLarge, Unavailable, UnsupportedType};
use platform::session::SessionKind;
use platform::web::{secure_cookies, session_cookie};

use crate::AppState;
use crate::customer_login::{ATTEMPT_TTL, LoginError, LogoutError};
use crate::routes::oauth::{error_page, see_other};
use crate::routes::{Answer, State};

/// The login attempt's cookie: HttpOnly, and SameSite=Lax so it comes back on the provider's
/// top-level redirect to the callback (never on a cross-site POST).
fn attempt_cookie_name(state: &AppState) -> &'static str {
    if secure_cookies(&state.platform) {
        "__Host-consent_oidc"
    } else {
        "consent_oidc"
    }
}

fn attempt_cookie(state: &AppState, value: String, max_age: i64) -> Cookie<'static> {
    let mut c = Cookie::build(attempt_cookie_name(state), value)
        .path("/")
        .http_only(true)
        .secure(secure_cookies(&state.platform))
        .same_site(SameSite::Lax)
        .max_age(actix_web::cookie::time::Duration::seconds(max_age))
        .finish();
    if max_age == 0 {
        c.make_removal();
    }
    c
}

#[derive(Debug, serde::Deserialize)]
pub struct StartQuery {
    next: Option<String>,
}

#[get("/login/oidc")]
pub async fn start(state: State, query: web::Query<StartQuery>) -> HttpResponse {
    let Some(upstream) = &state.customer_login else {
        return refused(&LoginError::NotConfigured);
    };
    let next = query
        .next
        .as_deref()
        .and_then(platform::web::return_path)
        .unwrap_or_else(|| "/".to_string());
    match upstream
        .start(&state.platform, &next, state.platform.now())
        .await
    {
        Ok(started) => {
            let mut res = see_other(&started.location);
            let _ = res.add_cookie(&attempt_cookie(
                &state,
                started.cookie,
                ATTEMPT_TTL.as_secs() as i64,
            ));
            res
        }
        Err(e) => refused(&e),
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

#[get("/login/oidc/callback")]
pub async fn callback(
    state: State,
    req: HttpRequest,
    query: Option<web::Query<CallbackQuery>>,
) -> HttpResponse {
    let Some(upstream) = &state.customer_login else {
        return refused(&LoginError::NotConfigured);
    };
    let Some(query) = query else {
        return with_attempt_cleared(&state, refused(&LoginError::BadAttempt));
    };
    let result = match (&query.error, &query.code, &query.state) {
        (Some(error), _, _) => Err(LoginError::Refused(
            error.chars().take(64).collect::<String>(),
        )),
        (None, Some(code), Some(s)) => {
            let cookie = req
                .cookie(attempt_cookie_name(&state))
                .map(|c| c.value().to_string());
            upstream
                .finish(
                    &state.platform,
                    cookie.as_deref(),
                    s,
                    code,
                    &platform::web::client_ip(&req),
                )
                .await
        }
        _ => Err(LoginError::BadAttempt),
    };
    // The attempt is used up whatever happened: a second callback with it is refused.
    match result {
        Ok(done) => {
            let mut res = see_other(&done.next);
            let _ = res.add_cookie(&session_cookie(
                &state.platform,
                SessionKind::Customer,
                &done.token,
            ));
            with_attempt_cleared(&state, res)
        }
        Err(e) => {
            tracing::info!(error = %e, "customer login through the provider refused");
            with_attempt_cleared(&state, refused(&e))
        }
    }
}

fn with_attempt_cleared(state: &AppState, mut res: HttpResponse) -> HttpResponse {
    let _ = res.add_cookie(&attempt_cookie(state, String::new(), 0));
    res
}

fn refused(e: &LoginError) -> HttpResponse {
    let status = match e {
        LoginError::NotConfigured => StatusCode::NOT_FOUND,
        LoginError::ProviderUnavailable(_) | LoginError::Storage(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        LoginError::UnknownCustomer | LoginError::AcrNotMet => StatusCode::FORBIDDEN,
        LoginError::BadAttempt | LoginError::Refused(_) | LoginError::InvalidIdToken(_) => {
            StatusCode::BAD_REQUEST
        }
    };
    error_page(status, "You are not logged in", &e.to_string())
}

/// The form the provider posts to end a customer's sessions.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct BackchannelLogoutForm {
    /// The provider's logout token: a signed JWT (OpenID Connect Back-Channel Logout 1.0).
    #[schema(max_length = 8192)]
    pub logout_token: String,
}

/// Back-channel logout (OpenID Connect Back-Channel Logout 1.0): the bank's provider ends the
/// sessions of the customer its subject is linked to, server to server. The logout token is
/// checked as an ID token is (signature against the provider's keys, `iss`, `aud`), and must be
/// fresh (`iat` within five minutes), carry the back-channel logout event, a `sub` and a `jti`
/// (each accepted once: a replay is refused), and no `nonce`.
#[utoipa::path(post, path = "/login/oidc/backchannel-logout", tag = "customer-login",
    request_body(content = BackchannelLogoutForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The customer's sessions ended (or the subject is linked to nobody)"),
        (status = 400, description = "A logout token that does not check out", body = platform::problem::Problem),
        (status = 404, description = "No provider is configured", body = platform::problem::Problem),
        Malformed, TooLarge, UnsupportedType, Unavailable))]
#[post("/login/oidc/backchannel-logout")]
pub async fn backchannel_logout(state: State, form: web::Form<BackchannelLogoutForm>) -> Answer {
    let Some(upstream) = &state.customer_login else {
        return Err(ApiError::NotFound("no provider login is configured"));
    };
    match upstream
        .backchannel_logout(&state.platform, &form.logout_token)
        .await
    {
        Ok(_) => Ok(HttpResponse::Ok()
            .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
            .finish()),
        Err(LogoutError::NotConfigured) => {
            Err(ApiError::NotFound("no provider login is configured"))
        }
        Err(e @ LogoutError::Invalid(_)) => Err(ApiError::BadRequest(e.to_string())),
        Err(LogoutError::ProviderUnavailable) => Err(ApiError::Unavailable(
            "the provider's keys cannot be fetched".into(),
        )),
        Err(LogoutError::Storage(e)) => Err(ApiError::Unavailable(Box::new(e))),
        Err(LogoutError::Cache(e)) => Err(ApiError::Unavailable(Box::new(e))),
    }
}
