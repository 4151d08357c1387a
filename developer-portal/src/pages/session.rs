//! The login flow developer and staff pages share. Sessions and CSRF are checked by platform's
//! extractors ([`platform::web::auth`]: `DeveloperSession`, `StaffSession`, `CsrfForm`).
//! - Before login there is no session: sign-up and login forms carry a double-submit cookie
//!   ([`login_csrf`], [`login_csrf_ok`]). [`login_page`], [`login_submit`] and [`logout`] are the
//!   flows developer and staff pages share.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use maud::{Markup, html};
use platform::Platform;
use platform::session::{LoginCsrf, SecondFactorDue};
use platform::web::auth::{Audience, CsrfForm, Developer, Staff};
use platform::web::{clear_session_cookie, login_csrf_cookie, login_csrf_value, session_cookie};

use super::Form;
use super::markup::{
    csrf_refused, error_page, field, login_form, messages, render, see_other, status_of,
    with_cookie,
};
use crate::accounts;
use crate::auth::{Caller, client_addr};
use crate::error::{PortalError, PortalResult, write};

/// A signed-in `A`'s form post, its CSRF token checked ([`CsrfForm`]): the caller, whose
/// service calls run with its id and the request's time ([`Caller`]), and the form's fields.
pub(crate) struct Posted<A> {
    pub caller: Caller<A>,
    pub fields: Form,
}

impl<A> Posted<A> {
    /// The value of field `name`, empty when absent.
    pub fn field(&self, name: &str) -> &str {
        self.fields.get(name)
    }
}

impl<A> Deref for Posted<A> {
    type Target = Caller<A>;
    fn deref(&self) -> &Caller<A> {
        &self.caller
    }
}

impl<A: Audience> FromRequest for Posted<A> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, actix_web::Error>>>>;
    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let form = CsrfForm::<A>::from_request(req, payload);
        let platform = web::Data::<Platform>::extract(req);
        Box::pin(async move {
            let CsrfForm {
                session, fields, ..
            } = form.await?;
            Ok(Self {
                caller: Caller::new(platform.await?, session),
                fields,
            })
        })
    }
}

/// The page for the outcome of a form: `ok`'s, or the error page that links back to `back`.
pub(crate) fn respond<T>(
    outcome: PortalResult<T>,
    back: &str,
    ok: impl FnOnce(T) -> HttpResponse,
) -> HttpResponse {
    match outcome {
        Ok(value) => ok(value),
        Err(e) => error_page(&e, back),
    }
}

/// Whose pages: the audience, and the words of its login flow.
pub(crate) trait PageKind: Audience {
    const LOGIN_TITLE: &'static str;
    /// The login form's account field (`email`, `username`).
    const NAME_FIELD: &'static str;
    /// The page where a login that owes a code enters it.
    const SECOND_FACTOR: &'static str;
    /// The page where a login that owes enrolment sets an authenticator up.
    const ENROL: &'static str;

    /// The account field's label: its name, capitalised.
    fn name_label() -> String {
        let mut chars = Self::NAME_FIELD.chars();
        chars
            .next()
            .map(|first| first.to_uppercase().chain(chars).collect())
            .unwrap_or_default()
    }

    /// What a wrong name or password is told (never which of the two).
    fn wrong_credentials() -> String {
        format!("Wrong {} or password.", Self::NAME_FIELD)
    }
}

impl PageKind for Developer {
    const LOGIN_TITLE: &'static str = "Developer log in";
    const NAME_FIELD: &'static str = "email";
    const SECOND_FACTOR: &'static str = "/developers/login/second-factor";
    const ENROL: &'static str = "/developers/second-factor";
}

impl PageKind for Staff {
    const LOGIN_TITLE: &'static str = "Staff log in";
    const NAME_FIELD: &'static str = "username";
    const SECOND_FACTOR: &'static str = "/developers/staff/login/second-factor";
    const ENROL: &'static str = "/developers/staff/second-factor";
}

/// The pre-login double-submit token: the cookie's value if it has one, else a new one (and the
/// cookie to set).
pub(crate) fn login_csrf(
    p: &Platform,
    req: &HttpRequest,
) -> (String, Option<actix_web::cookie::Cookie<'static>>) {
    match login_csrf_value(p, req) {
        Some(c) if c.len() >= 16 && c.len() <= 100 => (c, None),
        _ => {
            let v = LoginCsrf::generate();
            let cookie = login_csrf_cookie(p, &v);
            (v, Some(cookie))
        }
    }
}

pub(crate) fn login_csrf_ok(p: &Platform, req: &HttpRequest, form: &Form) -> bool {
    LoginCsrf::check(
        login_csrf_value(p, req).as_deref(),
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
                (login_form(K::LOGIN, &csrf, K::NAME_FIELD, &K::name_label(), "", None))
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
    form: &Form,
) -> HttpResponse {
    if !login_csrf_ok(p, req, form) {
        return csrf_refused(K::LOGIN);
    }
    let name = field(form, K::NAME_FIELD);
    match accounts::login(p, K::KIND, name, field(form, "password"), &client_addr(req)).await {
        // A login that still owes its second factor goes on to the page that takes it.
        Ok(l) => with_cookie(
            see_other(match l.due {
                None => K::HOME,
                Some(SecondFactorDue::Verify) => K::SECOND_FACTOR,
                Some(SecondFactorDue::Enrol) => K::ENROL,
            }),
            Some(session_cookie(p, K::KIND, &l.token)),
        ),
        Err(e) => {
            let (csrf, _) = login_csrf(p, req);
            let msg = match &e {
                PortalError::InvalidCredentials => K::wrong_credentials(),
                other => messages(other).join("; "),
            };
            render(
                status_of(&e),
                K::LOGIN_TITLE,
                html! {
                    h1 { (K::LOGIN_TITLE) }
                    (login_form(K::LOGIN, &csrf, K::NAME_FIELD, &K::name_label(), name, Some(&msg)))
                },
            )
        }
    }
}

/// A posted logout form: ends the session, clears its cookie and goes to the login page.
pub(crate) async fn logout<K: PageKind>(p: &Platform, form: CsrfForm<K>) -> HttpResponse {
    let now = p.now();
    let s = form.session;
    if let Err(e) = write(p, move |c| accounts::logout(c, &s, now)).await {
        return error_page(&e, K::HOME);
    }
    with_cookie(see_other(K::LOGIN), Some(clear_session_cookie(p, K::KIND)))
}

#[cfg(test)]
mod tests {
    use super::PageKind;
    use platform::web::auth::{Developer, Staff};

    #[test]
    fn the_login_words_follow_the_account_field() {
        assert_eq!(Developer::name_label(), "Email");
        assert_eq!(Staff::name_label(), "Username");
        assert_eq!(Developer::wrong_credentials(), "Wrong email or password.");
        assert_eq!(Staff::wrong_credentials(), "Wrong username or password.");
    }
}
