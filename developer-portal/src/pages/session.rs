//! Page sessions and CSRF, one way for developer and staff pages alike:
//! - [`PageSession`] is the extractor of the logged-in developer ([`DeveloperSession`]) or staff
//!   member ([`StaffSession`]); without a session the answer is a redirect to the login page, and
//!   a 503 page when sessions cannot be read. Handlers take it as their *last* argument, so a
//!   malformed form or query is refused first, as before any session lookup.
//! - [`require_csrf!`] checks the session's CSRF token on a posted form (403 page otherwise).
//! - Before login there is no session: sign-up and login forms carry a double-submit cookie
//!   ([`login_csrf`], [`login_csrf_ok`]). [`login_page`], [`login_submit`] and [`logout`] are the
//!   flows developer and staff pages share.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::Deref;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use maud::{Markup, html};
use platform::Platform;
use platform::session::{LoginCsrf, Session, SessionKind};
use platform::web::{clear_session_cookie, login_csrf_cookie, session_cookie};

use super::markup::{
    csrf_refused, error_page, field, login_form, messages, render, see_other, status_of,
    unavailable, with_cookie,
};
use crate::accounts;
use crate::auth::{client_addr, page_session};
use crate::error::{PortalError, write};

/// Whose pages: the session kind, and the addresses and words of its login flow.
pub(crate) trait PageKind: 'static {
    const KIND: SessionKind;
    /// Where a logged-in visitor starts.
    const HOME: &'static str;
    /// The login page, where a visitor without a session is sent.
    const LOGIN: &'static str;
    const LOGIN_TITLE: &'static str;
    /// The login form's account field: its name and label.
    const NAME_FIELD: &'static str;
    const NAME_LABEL: &'static str;
    const WRONG_CREDENTIALS: &'static str;
}

#[derive(Debug)]
pub(crate) struct Developer;

impl PageKind for Developer {
    const KIND: SessionKind = SessionKind::Developer;
    const HOME: &'static str = "/developers";
    const LOGIN: &'static str = "/developers/login";
    const LOGIN_TITLE: &'static str = "Developer log in";
    const NAME_FIELD: &'static str = "email";
    const NAME_LABEL: &'static str = "Email";
    const WRONG_CREDENTIALS: &'static str = "Wrong email or password.";
}

#[derive(Debug)]
pub(crate) struct Staff;

impl PageKind for Staff {
    const KIND: SessionKind = SessionKind::Staff;
    const HOME: &'static str = "/developers/staff";
    const LOGIN: &'static str = "/developers/staff/login";
    const LOGIN_TITLE: &'static str = "Staff log in";
    const NAME_FIELD: &'static str = "username";
    const NAME_LABEL: &'static str = "Username";
    const WRONG_CREDENTIALS: &'static str = "Wrong username or password.";
}

/// The live page session (cookie) of kind `K`.
#[derive(Debug)]
pub(crate) struct PageSession<K>(Session, PhantomData<K>);

pub(crate) type DeveloperSession = PageSession<Developer>;
pub(crate) type StaffSession = PageSession<Staff>;

impl<K> PageSession<K> {
    pub(crate) fn into_inner(self) -> Session {
        self.0
    }
}

impl<K> Deref for PageSession<K> {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.0
    }
}

/// Why a page has no session: the response is a redirect to the login page, or a 503 page.
#[derive(Debug)]
pub(crate) enum NoSession {
    Login(&'static str),
    Unavailable,
}

impl fmt::Display for NoSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Login(_) => f.write_str("not logged in"),
            Self::Unavailable => f.write_str("sessions unavailable"),
        }
    }
}

impl ResponseError for NoSession {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Login(_) => StatusCode::SEE_OTHER,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Login(to) => see_other(to),
            Self::Unavailable => unavailable(),
        }
    }
}

impl<K: PageKind> FromRequest for PageSession<K> {
    type Error = NoSession;
    type Future = Pin<Box<dyn Future<Output = Result<Self, NoSession>>>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let Some(p) = req.app_data::<web::Data<Platform>>() else {
                tracing::error!("Platform is not registered");
                return Err(NoSession::Unavailable);
            };
            match page_session(p, &req, K::KIND).await {
                Ok(Some(s)) => Ok(PageSession(s, PhantomData)),
                Ok(None) => Err(NoSession::Login(K::LOGIN)),
                Err(e) => {
                    tracing::error!(error = ?e, "session lookup failed");
                    Err(NoSession::Unavailable)
                }
            }
        })
    }
}

/// Checks the session's CSRF token on a posted form: a missing or wrong one returns the 403 page
/// (with a way `back`) and changes nothing.
macro_rules! require_csrf {
    ($s:expr, $form:expr, $back:expr) => {
        if !$s.check_csrf($crate::pages::markup::field(&$form, "csrf_token")) {
            return $crate::pages::markup::csrf_refused($back);
        }
    };
}
pub(crate) use require_csrf;

/// The pre-login double-submit token: the cookie's value if it has one, else a new one (and the
/// cookie to set).
pub(crate) fn login_csrf(
    p: &Platform,
    req: &HttpRequest,
) -> (String, Option<actix_web::cookie::Cookie<'static>>) {
    match req.cookie(LoginCsrf::COOKIE) {
        Some(c) if c.value().len() >= 16 && c.value().len() <= 100 => (c.value().to_string(), None),
        _ => {
            let v = LoginCsrf::generate();
            let cookie = login_csrf_cookie(p, &v);
            (v, Some(cookie))
        }
    }
}

pub(crate) fn login_csrf_ok(req: &HttpRequest, form: &HashMap<String, String>) -> bool {
    let cookie = req.cookie(LoginCsrf::COOKIE);
    LoginCsrf::check(
        cookie.as_ref().map(|c| c.value()),
        field(form, "csrf_token"),
    )
}

/// The login page of `K`, with `footer` under the form.
pub(crate) fn login_page<K: PageKind>(
    p: &Platform,
    req: &HttpRequest,
    footer: Markup,
) -> HttpResponse {
    let (csrf, cookie) = login_csrf(p, req);
    with_cookie(
        render(
            StatusCode::OK,
            K::LOGIN_TITLE,
            html! {
                h1 { (K::LOGIN_TITLE) }
                (login_form(K::LOGIN, &csrf, K::NAME_FIELD, K::NAME_LABEL, "", None))
                (footer)
            },
        ),
        cookie,
    )
}

/// A posted login form of `K`: the session cookie and a redirect home, or the form again with
/// the reason.
pub(crate) async fn login_submit<K: PageKind>(
    p: &Platform,
    req: &HttpRequest,
    form: &HashMap<String, String>,
) -> HttpResponse {
    if !login_csrf_ok(req, form) {
        return csrf_refused(K::LOGIN);
    }
    let name = field(form, K::NAME_FIELD);
    match accounts::login(p, K::KIND, name, field(form, "password"), &client_addr(req)).await {
        Ok(l) => with_cookie(
            see_other(K::HOME),
            Some(session_cookie(p, K::KIND, &l.token)),
        ),
        Err(e) => {
            let (csrf, _) = login_csrf(p, req);
            let msg = match &e {
                PortalError::InvalidCredentials => K::WRONG_CREDENTIALS.to_string(),
                other => messages(other).join("; "),
            };
            render(
                status_of(&e),
                K::LOGIN_TITLE,
                html! {
                    h1 { (K::LOGIN_TITLE) }
                    (login_form(K::LOGIN, &csrf, K::NAME_FIELD, K::NAME_LABEL, name, Some(&msg)))
                },
            )
        }
    }
}

/// A posted logout form: ends the session, clears its cookie and goes to the login page.
pub(crate) async fn logout<K: PageKind>(
    p: &Platform,
    form: &HashMap<String, String>,
    s: PageSession<K>,
) -> HttpResponse {
    require_csrf!(s, form, K::HOME);
    let now = p.now();
    let s = s.into_inner();
    if let Err(e) = write(p, move |c| accounts::logout(c, &s, now)).await {
        return error_page(&e, K::HOME);
    }
    with_cookie(see_other(K::LOGIN), Some(clear_session_cookie(p, K::KIND)))
}
