//! The developer landing page, sign-up, log in and log out.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use maud::{Markup, html};
use platform::session::SessionKind;
use platform::web::session_cookie;

use super::markup::{
    csrf_input, csrf_refused, error_list, error_page, field, messages, render, see_other,
    status_of, with_cookie,
};
use super::session::{self, login_csrf, login_csrf_ok};
use super::{Data, Form, nav};
use crate::accounts::{self, SignUp};
use crate::auth::client_addr;
use crate::clients::{self};
use crate::error::read;
use crate::kyc::{self};
use platform::web::auth::{CsrfForm, Developer, DeveloperSession};

pub(super) async fn index(p: Data, s: Option<DeveloperSession>) -> HttpResponse {
    let Some(s) = s else {
        return render(
            StatusCode::OK,
            "Developer portal",
            html! {
                h1 { "Developer portal" }
                p { "Register your app, pass KYC, and create sandbox and production OAuth clients." }
                ul.links {
                    li { a href="/developers/signup" { "Sign up" } }
                    li { a href="/developers/login" { "Log in" } }
                    li { a href="/developers/staff" { "Staff: KYC review" } }
                    li { a href="/docs/" { "API documentation" } }
                }
            },
        );
    };
    let id = s.subject_id.clone();
    let cipher = p.master_key.cipher(kyc::PII_KEY);
    let r = read(&p, move |c| {
        let dev = accounts::developer(c, &id)?;
        let kyc = kyc::for_developer(c, &cipher, &id)?;
        let n = clients::list(c, &id)?.len();
        Ok((dev, kyc.map(|k| k.status.as_str()), n))
    })
    .await;
    match r {
        Ok((dev, kyc_status, n)) => render(
            StatusCode::OK,
            "Developer portal",
            html! {
                (nav(&s))
                h1 { "Welcome, " (dev.display_name) }
                p { "Signed in as " strong { (dev.email) } }
                p { "KYC status: " strong id="kyc-status" { (kyc_status.unwrap_or("not started")) } " - " a href="/developers/kyc" { "KYC details" } }
                p { (n) " client(s) - " a href="/developers/clients" { "manage clients" } }
            },
        ),
        Err(e) => error_page(&e, "/developers"),
    }
}

fn signup_form(csrf: &str, email: &str, name: &str, errors: &[String]) -> Markup {
    html! {
        h1 { "Create a developer account" }
        (error_list(errors))
        form method="post" action="/developers/signup" {
            (csrf_input(csrf))
            p { label { "Email " input type="email" name="email" value=(email) required; } }
            p { label { "Your name " input type="text" name="display_name" value=(name) required; } }
            p { label { "Password (12 characters or more) " input type="password" name="password" minlength="12" required; } }
            button type="submit" { "Sign up" }
        }
        p { "Already registered? " a href="/developers/login" { "Log in" } }
    }
}

pub(super) async fn signup_page(p: Data, req: HttpRequest) -> HttpResponse {
    let (csrf, cookie) = login_csrf(&p, &req);
    with_cookie(
        render(StatusCode::OK, "Sign up", signup_form(&csrf, "", "", &[])),
        cookie,
    )
}

pub(super) async fn signup_submit(p: Data, req: HttpRequest, form: Form) -> HttpResponse {
    if !login_csrf_ok(&p, &req, &form) {
        return csrf_refused("/developers/signup");
    }
    let (csrf, _) = login_csrf(&p, &req);
    let email = field(&form, "email");
    let name = field(&form, "display_name");
    let result = match SignUp::parse(email, field(&form, "password"), name) {
        Ok(input) => accounts::sign_up(&p, input, &client_addr(&req)).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(dev) => match accounts::start_session(&p, SessionKind::Developer, dev.id).await {
            Ok(token) => with_cookie(
                see_other("/developers/kyc"),
                Some(session_cookie(&p, SessionKind::Developer, &token)),
            ),
            Err(e) => error_page(&e, "/developers/login"),
        },
        Err(e) => render(
            status_of(&e),
            "Sign up",
            signup_form(&csrf, email, name, &messages(&e)),
        ),
    }
}

pub(super) async fn login_page(p: Data, req: HttpRequest) -> HttpResponse {
    session::login_page::<Developer>(
        &p,
        &req,
        html! { p { "No account yet? " a href="/developers/signup" { "Sign up" } } },
    )
}

pub(super) async fn login_submit(p: Data, req: HttpRequest, form: Form) -> HttpResponse {
    session::login_submit::<Developer>(&p, &req, &form).await
}

pub(super) async fn logout(p: Data, form: CsrfForm<Developer>) -> HttpResponse {
    session::logout(&p, form).await
}
