//! Small actix helpers shared by the consent server and the developer portal: session cookies,
//! the request extractors that authenticate every handler ([`auth`]), page chrome. (Like
//! `problem`, this is HTTP glue, not a service.)

pub mod auth;

use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, SameSite, time};

use maud::{DOCTYPE, Markup, html};

use crate::Platform;
use crate::crypto::PlainToken;
use crate::problem::ApiError;
use crate::session::{self, LoginCsrf, Session, SessionKind};

/// Whether cookies get the `Secure` flag: configured, or implied by an https public URL.
pub fn secure_cookies(platform: &Platform) -> bool {
    platform
        .settings
        .security
        .secure_cookies
        .unwrap_or_else(|| {
            platform
                .settings
                .server
                .public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
        })
}

/// The session cookie: HttpOnly, SameSite=Lax (sent on the top-level GET that an OAuth redirect
/// makes, never on cross-site POSTs), Secure when served over https.
pub fn session_cookie(
    platform: &Platform,
    kind: SessionKind,
    token: &PlainToken,
) -> Cookie<'static> {
    Cookie::build(kind.cookie_name(), token.expose().to_string())
        .path("/")
        .http_only(true)
        .secure(secure_cookies(platform))
        .same_site(SameSite::Lax)
        .max_age(time::Duration::seconds(kind.lifetime().num_seconds()))
        .finish()
}

/// A cookie that deletes the session cookie of `kind`.
pub fn clear_session_cookie(platform: &Platform, kind: SessionKind) -> Cookie<'static> {
    let mut c = Cookie::build(kind.cookie_name(), "")
        .path("/")
        .http_only(true)
        .secure(secure_cookies(platform))
        .same_site(SameSite::Lax)
        .finish();
    c.make_removal();
    c
}

/// The pre-login CSRF cookie (double-submit): SameSite=Strict, HttpOnly.
pub fn login_csrf_cookie(platform: &Platform, value: &str) -> Cookie<'static> {
    Cookie::build(LoginCsrf::COOKIE, value.to_string())
        .path("/")
        .http_only(true)
        .secure(secure_cookies(platform))
        .same_site(SameSite::Strict)
        .max_age(time::Duration::hours(1))
        .finish()
}

/// The live session of `kind` on this request, if any.
pub async fn current_session(
    platform: &Platform,
    req: &HttpRequest,
    kind: SessionKind,
) -> Result<Option<Session>, ApiError> {
    let Some(cookie) = req.cookie(kind.cookie_name()) else {
        return Ok(None);
    };
    let value = cookie.value().to_string();
    let now = platform.now();
    Ok(platform
        .db
        .run(move |c| session::load(c, kind, &value, now))
        .await?)
}

/// The caller's address as rate limits and throttling key it: the TCP peer, never a forwarded
/// header (a client-supplied header must not pick its own bucket).
pub fn peer_ip(req: &HttpRequest) -> String {
    req.peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// A 200 JSON answer that no cache may keep (tokens, secrets, personal data).
pub fn no_store_json<T: serde::Serialize>(body: &T) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(body)
}

/// The bearer token of an `Authorization: Bearer ...` header, if present and well-formed.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 4096)
        .then_some(token.trim())
}

/// Shared page chrome for every server-rendered page: inline styles only, no scripts, no
/// external assets (nothing is fetched from a CDN). Maud escapes every interpolated value.
pub fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (maud::PreEscaped(STYLE)) }
            }
            body { main { (body) } }
        }
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;\
padding:0 1rem;color:#1b1f24;line-height:1.5}a{color:#0b5cad}h1{font-size:1.6rem}\
ul.links li{margin:.4rem 0}.muted{color:#57606a;font-size:.9rem}";
