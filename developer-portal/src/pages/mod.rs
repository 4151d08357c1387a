//! Server-rendered developer pages under `/developers` (maud escapes every value; no scripts).
//! Every form carries a CSRF token: the session's for logged-in forms, a double-submit cookie
//! for sign-up and login. A failed check is a 403 and changes nothing.
//!
//! [`account`] (landing, sign-up, log in), [`kyc`] and [`clients`] are the developer's pages,
//! [`staff`] the staff pages under `/developers/staff`; [`markup`] is their shared layout and
//! forms, [`session`] their session extractor, CSRF check and login flow.

use actix_web::web;
use maud::{Markup, html};
use platform::Platform;
use platform::session::Session;

mod account;
mod clients;
mod kyc;
pub(crate) mod markup;
pub(crate) mod session;
mod staff;

use markup::csrf_input;

pub(crate) type Form = platform::web::auth::FormFields;
pub(crate) type Data = web::Data<Platform>;

/// The developer pages' navigation.
fn nav(s: &Session) -> Markup {
    html! {
        nav {
            a href="/developers" { "Dashboard" } " · "
            a href="/developers/kyc" { "KYC" } " · "
            a href="/developers/clients" { "Clients" } " · "
            form.inline method="post" action="/developers/logout" style="display:inline" {
                (csrf_input(&s.csrf_token))
                button type="submit" { "Log out" }
            }
        }
    }
}

/// Mounts the developer pages, then the staff pages.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/developers").route(web::get().to(account::index)))
        .service(
            web::resource("/developers/signup")
                .route(web::get().to(account::signup_page))
                .route(web::post().to(account::signup_submit)),
        )
        .service(
            web::resource("/developers/login")
                .route(web::get().to(account::login_page))
                .route(web::post().to(account::login_submit)),
        )
        .service(web::resource("/developers/logout").route(web::post().to(account::logout)))
        .service(
            web::resource("/developers/kyc")
                .route(web::get().to(kyc::kyc_get))
                .route(web::post().to(kyc::kyc_post)),
        )
        .service(web::resource("/developers/clients").route(web::get().to(clients::clients_list)))
        .service(
            web::resource("/developers/clients/new")
                .route(web::get().to(clients::new_client_page))
                .route(web::post().to(clients::new_client_submit)),
        )
        .service(
            web::resource("/developers/clients/{client_id}")
                .route(web::get().to(clients::client_get))
                .route(web::post().to(clients::client_update)),
        )
        .service(
            web::resource("/developers/clients/{client_id}/rotate")
                .route(web::post().to(clients::client_rotate)),
        )
        .service(
            web::resource("/developers/clients/{client_id}/webhooks/{event_id}/retry")
                .route(web::post().to(clients::webhook_retry)),
        )
        .service(
            web::resource("/developers/clients/{client_id}/delete")
                .route(web::post().to(clients::client_delete)),
        );
    staff::configure(cfg);
}
