//! The second-factor pages a login goes through after the password ([`crate::second_factor`]):
//! the code page (developers who set up an authenticator, every staff member after the first
//! time) and the enrolment page (staff at their first login, developers from their dashboard).
//! The session these pages take owes its second factor and is good for nothing else; paying
//! replaces its cookie with a full session's.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use maud::{Markup, html};
use platform::session::{SecondFactorDue, Session, SessionKind};
use platform::web::auth::{Audience, CsrfForm, Developer, DeveloperSession, OwingForm, OwingPage};
use platform::web::session_cookie;

use super::Data;
use super::markup::{csrf_input, error_page, messages, render, see_other, status_of, with_cookie};
use super::session::PageKind;
use crate::accounts::LoggedIn;
use crate::error::{PortalResult, read};
use crate::second_factor::{self, Enrolled};

const CODE_TITLE: &str = "Two-step verification";
const ENROL_TITLE: &str = "Set up two-step verification";

fn code_form(action: &str, csrf: &str, label: &str, button: &str) -> Markup {
    html! {
        form method="post" action=(action) {
            (csrf_input(csrf))
            p { label { (label) " "
                input type="text" name="code" inputmode="numeric" autocomplete="one-time-code"
                    maxlength="64" required autofocus; } }
            button type="submit" { (button) }
        }
    }
}

fn code_page(status: StatusCode, action: &str, s: &Session, error: Option<&str>) -> HttpResponse {
    render(
        status,
        CODE_TITLE,
        html! {
            h1 { (CODE_TITLE) }
            @if let Some(e) = error { p.error #error { (e) } }
            p { "Enter the six-digit code your authenticator app shows, or one of your recovery codes." }
            (code_form(action, &s.csrf_token, "Code", "Continue"))
        },
    )
}

/// The full session replaces the owing one: its cookie, and on to `to`.
fn logged_in<K: PageKind>(p: &Data, l: &LoggedIn, page: HttpResponse) -> HttpResponse {
    with_cookie(page, Some(session_cookie(p, K::KIND, &l.token)))
}

/// GET: the code form (a login that owes enrolment is sent to enrol).
pub(crate) async fn code_get<K: PageKind>(OwingPage(o): OwingPage<K>) -> HttpResponse {
    match o.due {
        SecondFactorDue::Enrol => see_other(K::ENROL),
        SecondFactorDue::Verify => code_page(StatusCode::OK, K::SECOND_FACTOR, &o.session, None),
    }
}

/// POST: a code; right, the full session and home; wrong, the form again with the reason.
pub(crate) async fn code_post<K: PageKind>(p: Data, form: OwingForm<K>) -> HttpResponse {
    let (owing, fields) = (form.session, form.fields);
    if owing.due != SecondFactorDue::Verify {
        return see_other(K::ENROL);
    }
    let session = owing.session.clone();
    match second_factor::pay(&p, owing.session, owing.due, fields.get("code").to_string()).await {
        Ok(l) => logged_in::<K>(&p, &l, see_other(K::HOME)),
        Err(e) => code_page(
            status_of(&e),
            K::SECOND_FACTOR,
            &session,
            Some(&messages(&e).join("; ")),
        ),
    }
}

/// The account's label in the authenticator app.
async fn label<K: PageKind>(p: &Data, s: &Session) -> PortalResult<String> {
    let (kind, id) = (K::KIND, s.subject_id.clone());
    read(p, move |c| {
        Ok(match kind {
            SessionKind::Staff => crate::accounts::staff_member(c, &id)?.username,
            _ => crate::accounts::developer(c, &id)?.email,
        })
    })
    .await
}

fn enrol_page(
    status: StatusCode,
    action: &str,
    s: &Session,
    enrolment: Option<&second_factor::Enrolment>,
    error: Option<&str>,
) -> HttpResponse {
    render(
        status,
        ENROL_TITLE,
        html! {
            h1 { (ENROL_TITLE) }
            @if let Some(e) = error { p.error #error { (e) } }
            @match enrolment {
                None => {
                    p { "Logging in needs a code from an authenticator app on your phone as well as your password." }
                    form method="post" action=(action) {
                        (csrf_input(&s.csrf_token))
                        input type="hidden" name="step" value="start";
                        // Staff enrol only with the one-time code the operator handed over.
                        @if s.kind == SessionKind::Staff {
                            p { label { "Enrolment code (from your administrator, with your password) "
                                input type="text" name="enrolment_code" autocomplete="off"
                                    maxlength="64" required autofocus; } }
                        } @else {
                            // Developers confirm their password: a stolen session alone sets
                            // nothing up.
                            p { label { "Your password "
                                input type="password" name="password"
                                    autocomplete="current-password" required autofocus; } }
                        }
                        button type="submit" { "Create a secret" }
                    }
                }
                Some(e) => {
                    p { "Add this secret to your authenticator app (type it in, or open the link on your phone):" }
                    p { code #secret { (e.secret.as_str()) } }
                    p { a #otpauth href=(e.uri.as_str()) { "Open in an authenticator app" } }
                    (code_form(action, &s.csrf_token, "Then enter the code it shows", "Confirm"))
                }
            }
        },
    )
}

fn recovery_page(codes: &Enrolled, next: &str) -> HttpResponse {
    render(
        StatusCode::OK,
        "Recovery codes",
        html! {
            h1 { "Two-step verification is on" }
            p { "Keep these recovery codes somewhere safe. Each one logs you in once if you lose your phone; they are not shown again." }
            ul #recovery-codes { @for c in &codes.recovery_codes { li { code { (c.as_str()) } } } }
            p { a #continue href=(next) { "Continue" } }
        },
    )
}

/// The enrolment in progress of `s`, if any.
async fn pending<K: PageKind>(
    p: &Data,
    s: &Session,
) -> PortalResult<Option<second_factor::Enrolment>> {
    let label = label::<K>(p, s).await?;
    second_factor::pending(p, s, label).await
}

/// GET: a staff login that owes enrolment sets an authenticator up.
pub(crate) async fn enrol_get<K: PageKind>(p: Data, OwingPage(o): OwingPage<K>) -> HttpResponse {
    if o.due != SecondFactorDue::Enrol {
        return see_other(K::SECOND_FACTOR);
    }
    match pending::<K>(&p, &o.session).await {
        Ok(e) => enrol_page(StatusCode::OK, K::ENROL, &o.session, e.as_ref(), None),
        Err(e) => error_page(&e, K::LOGIN),
    }
}

/// POST: `step=start` creates the secret; a code confirms it (then the recovery codes, and the
/// full session).
pub(crate) async fn enrol_post<K: PageKind>(p: Data, form: OwingForm<K>) -> HttpResponse {
    let (owing, fields) = (form.session, form.fields);
    if owing.due != SecondFactorDue::Enrol {
        return see_other(K::SECOND_FACTOR);
    }
    let s = owing.session;
    if fields.get("step") == "start" {
        let code = fields.get("enrolment_code").to_string();
        let started = match label::<K>(&p, &s).await {
            Ok(label) => second_factor::begin(&p, &s, label, Some(code)).await,
            Err(e) => Err(e),
        };
        return match started {
            Ok(e) => enrol_page(StatusCode::OK, K::ENROL, &s, Some(&e), None),
            Err(e) => {
                let error = messages(&e).join("; ");
                enrol_page(status_of(&e), K::ENROL, &s, None, Some(&error))
            }
        };
    }
    match second_factor::confirm(&p, s.clone(), true, fields.get("code").to_string()).await {
        Ok(done) => match &done.upgraded {
            Some(l) => logged_in::<K>(&p, l, recovery_page(&done, K::HOME)),
            None => error_page(
                &crate::PortalError::Forbidden("not a login".into()),
                K::LOGIN,
            ),
        },
        Err(e) => {
            let shown = pending::<K>(&p, &s).await.ok().flatten();
            enrol_page(
                status_of(&e),
                K::ENROL,
                &s,
                shown.as_ref(),
                Some(&messages(&e).join("; ")),
            )
        }
    }
}

/// GET `/developers/second-factor`: a developer's authenticator, on or off, and the way to set
/// one up or remove it.
pub(crate) async fn developer_get(p: Data, s: DeveloperSession) -> HttpResponse {
    let id = s.subject_id.clone();
    match second_factor::status(&p, SessionKind::Developer, id).await {
        Ok((true, left)) => developer_on(StatusCode::OK, &s, left, None),
        Ok((false, _)) => match pending::<Developer>(&p, &s).await {
            Ok(e) => enrol_page(StatusCode::OK, Developer::ENROL, &s, e.as_ref(), None),
            Err(e) => error_page(&e, Developer::HOME),
        },
        Err(e) => error_page(&e, Developer::HOME),
    }
}

fn developer_on(status: StatusCode, s: &Session, left: i64, error: Option<&str>) -> HttpResponse {
    render(
        status,
        CODE_TITLE,
        html! {
            (super::nav(s))
            h1 { (CODE_TITLE) }
            @if let Some(e) = error { p.error #error { (e) } }
            p #second-factor-status { "On: every login asks for a code from your authenticator app. "
                (left) " recovery code(s) left." }
            h2 { "Turn it off" }
            form method="post" action=(Developer::ENROL) {
                (csrf_input(&s.csrf_token))
                input type="hidden" name="step" value="remove";
                p { label { "Current code or a recovery code "
                    input type="text" name="code" autocomplete="one-time-code" maxlength="64" required; } }
                button type="submit" { "Turn off two-step verification" }
            }
        },
    )
}

/// POST `/developers/second-factor`: `step=start` creates a secret, `step=remove` (with a code)
/// removes the authenticator, a code alone confirms enrolment (then the recovery codes).
pub(crate) async fn developer_post(p: Data, post: CsrfForm<Developer>) -> HttpResponse {
    let s = post.session.clone();
    let id = s.subject_id.clone();
    let code = post.field("code").to_string();
    match post.field("step") {
        "start" => {
            let started = match label::<Developer>(&p, &s).await {
                Ok(label) => {
                    let password = post.field("password").to_string();
                    second_factor::begin(&p, &s, label, Some(password)).await
                }
                Err(e) => Err(e),
            };
            match started {
                Ok(e) => enrol_page(StatusCode::OK, Developer::ENROL, &s, Some(&e), None),
                Err(e) => {
                    let error = messages(&e).join("; ");
                    enrol_page(status_of(&e), Developer::ENROL, &s, None, Some(&error))
                }
            }
        }
        "remove" => {
            match second_factor::remove_for(&p, SessionKind::Developer, id.clone(), code).await {
                Ok(()) => see_other(Developer::ENROL),
                Err(e) => {
                    let left = second_factor::status(&p, SessionKind::Developer, id)
                        .await
                        .map_or(0, |(_, n)| n);
                    developer_on(status_of(&e), &s, left, Some(&messages(&e).join("; ")))
                }
            }
        }
        _ => match second_factor::confirm(&p, s.clone(), false, code).await {
            Ok(done) => recovery_page(&done, Developer::HOME),
            Err(e) => {
                let shown = pending::<Developer>(&p, &s).await.ok().flatten();
                enrol_page(
                    status_of(&e),
                    Developer::ENROL,
                    &s,
                    shown.as_ref(),
                    Some(&messages(&e).join("; ")),
                )
            }
        },
    }
}

/// Mounts the code page of `K`.
pub(crate) fn code_route<K: PageKind>(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(K::SECOND_FACTOR)
            .route(web::get().to(code_get::<K>))
            .route(web::post().to(code_post::<K>)),
    );
}

/// Mounts the enrolment page of `K` for logins that owe enrolment.
pub(crate) fn enrol_route<K: PageKind>(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(K::ENROL)
            .route(web::get().to(enrol_get::<K>))
            .route(web::post().to(enrol_post::<K>)),
    );
}
