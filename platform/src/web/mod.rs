//! Small actix helpers shared by the consent server and the developer portal: session cookies,
//! the request extractors that authenticate every handler ([`auth`]), page chrome. (Like
//! `problem`, this is HTTP glue, not a service.)

pub mod auth;
mod client_addr;
pub mod mtls;

pub use client_addr::{client_ip, throttle_unit};

use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, SameSite, time};

use maud::{DOCTYPE, Markup, html};

use crate::Platform;
use crate::crypto::PlainToken;
use crate::problem::ApiError;
use crate::session::{self, LoginCsrf, Session, SessionKind};

/// Whether cookies get the `Secure` flag (and the `__Host-` prefix): always, unless
/// `security.secure_cookies = false` (a development setting, which `serve --demo` on a loopback
/// address turns on; refused with an https `public_url`).
pub fn secure_cookies(platform: &Platform) -> bool {
    platform.settings.security.secure_cookies.unwrap_or(true)
}

/// The name of `kind`'s session cookie under this configuration.
pub fn session_cookie_name(platform: &Platform, kind: SessionKind) -> &'static str {
    kind.cookie_name(secure_cookies(platform))
}

/// The session cookie: HttpOnly, SameSite=Lax (sent on the top-level GET that an OAuth redirect
/// makes, never on cross-site POSTs), Secure and `__Host-` prefixed unless in development.
pub fn session_cookie(
    platform: &Platform,
    kind: SessionKind,
    token: &PlainToken,
) -> Cookie<'static> {
    Cookie::build(
        session_cookie_name(platform, kind),
        token.expose().to_string(),
    )
    .path("/")
    .http_only(true)
    .secure(secure_cookies(platform))
    .same_site(SameSite::Lax)
    .max_age(time::Duration::seconds(kind.lifetime().num_seconds()))
    .finish()
}

/// A cookie that deletes the session cookie of `kind`.
pub fn clear_session_cookie(platform: &Platform, kind: SessionKind) -> Cookie<'static> {
    let mut c = Cookie::build(session_cookie_name(platform, kind), "")
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
    Cookie::build(
        LoginCsrf::cookie_name(secure_cookies(platform)),
        value.to_string(),
    )
    .path("/")
    .http_only(true)
    .secure(secure_cookies(platform))
    .same_site(SameSite::Strict)
    .max_age(time::Duration::hours(1))
    .finish()
}

/// The pre-login CSRF cookie's value on this request, if any.
pub fn login_csrf_value(platform: &Platform, req: &HttpRequest) -> Option<String> {
    req.cookie(LoginCsrf::cookie_name(secure_cookies(platform)))
        .map(|c| c.value().to_string())
}

/// The live session of `kind` on this request, if any.
pub async fn current_session(
    platform: &Platform,
    req: &HttpRequest,
    kind: SessionKind,
) -> Result<Option<Session>, ApiError> {
    let Some(cookie) = req.cookie(session_cookie_name(platform, kind)) else {
        return Ok(None);
    };
    let value = cookie.value().to_string();
    let now = platform.now();
    Ok(platform
        .db
        .run(move |c| session::load(c, kind, &value, now))
        .await?)
}

/// A 200 JSON answer that no cache may keep (tokens, secrets, personal data).
pub fn no_store_json<T: serde::Serialize>(body: &T) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(body)
}

/// The bearer token of an `Authorization: Bearer ...` header, if present and well-formed.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    match presented_token(req)? {
        (TokenScheme::Bearer, token) => Some(token),
        (TokenScheme::Dpop, _) => None,
    }
}

/// How an access token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenScheme {
    /// `Authorization: Bearer` (RFC 6750).
    Bearer,
    /// `Authorization: DPoP`, with a `DPoP` proof header (RFC 9449 section 7.1).
    Dpop,
}

/// The access token of `Authorization: Bearer <token>` or `Authorization: DPoP <token>` (schemes
/// case-insensitive), with its scheme; at most 4096 bytes.
pub fn presented_token(req: &HttpRequest) -> Option<(TokenScheme, &str)> {
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    if token.is_empty() || token.len() > 4096 {
        return None;
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        Some((TokenScheme::Bearer, token))
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Some((TokenScheme::Dpop, token))
    } else {
        None
    }
}

/// Shared page chrome for every server-rendered page: the one self-hosted stylesheet
/// (`/assets/app.css`, no inline styles: the CSP allows none), no external assets (nothing is
/// fetched from a CDN). Maud escapes every interpolated value.
pub fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                link rel="stylesheet" href="/assets/app.css";
            }
            body { main { (body) } }
        }
    }
}

/// A post-login (or other return) destination that can only lead back into this site: a
/// same-origin relative path, parsed and re-serialised. Refused (`None`): anything not starting
/// with exactly one `/`, schemes, userinfo and hosts, backslashes, control characters and
/// whitespace, and the same tricks percent-encoded (`/%09/evil`, `/%2F%2Fevil`, `/%5Cevil`),
/// since browsers and proxies may decode them before following the redirect.
pub fn return_path(next: &str) -> Option<String> {
    const BASE: &str = "https://return.invalid/";
    if next.len() > 512 || !next.starts_with('/') || next.starts_with("//") {
        return None;
    }
    // The path as written and every percent-decoding of it (at most three rounds) must be free
    // of anything a browser could read as another origin.
    let mut seen = next.to_string();
    for _ in 0..4 {
        let unsafe_char = seen
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\');
        if unsafe_char || seen.contains("//") {
            return None;
        }
        let decoded = percent_encoding::percent_decode_str(&seen)
            .decode_utf8()
            .ok()?
            .into_owned();
        if decoded == seen {
            break;
        }
        seen = decoded;
    }
    if seen.contains('%')
        && percent_encoding::percent_decode_str(&seen)
            .decode_utf8()
            .ok()?
            != seen
    {
        // Still encoded after four rounds: nothing of ours looks like that.
        return None;
    }
    let base = url::Url::parse(BASE).ok()?;
    let joined = base.join(next).ok()?;
    if joined.origin() != base.origin() || !joined.username().is_empty() {
        return None;
    }
    let mut out = joined.path().to_string();
    if let Some(q) = joined.query() {
        out.push('?');
        out.push_str(q);
    }
    (out.starts_with('/') && !out.starts_with("//")).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::return_path;

    #[test]
    fn return_paths_stay_on_this_site() {
        for ok in [
            "/account/apps",
            "/account/apps/g_abc-1",
            "/oauth2/consent/ar_x?step=1",
            "/",
        ] {
            assert_eq!(return_path(ok).as_deref(), Some(ok), "{ok}");
        }
        for bad in [
            "//evil.example",
            "/\t/evil.example",
            "/%09/evil.example",
            "/\n/evil.example",
            "/%0a/evil.example",
            "/\\evil.example",
            "/%5Cevil.example",
            "/%5cevil.example",
            "\\/evil.example",
            "/%2F%2Fevil.example",
            "/%2f/evil.example",
            "/%252F%252Fevil.example",
            "https://evil.example/",
            "https:evil.example",
            "javascript:alert(1)",
            "//user@evil.example",
            "/ /evil.example",
            "evil.example",
            "",
        ] {
            assert_eq!(return_path(bad), None, "{bad:?}");
        }
        assert_eq!(return_path(&format!("/{}", "a".repeat(600))), None);
    }
}
