//! Server-rendered developer pages under `/developers` (maud escapes every value; no scripts).
//! Every form carries a CSRF token: the session's for logged-in forms, a double-submit cookie
//! for sign-up and login. A failed check is a 403 and changes nothing.
//!
//! [`account`] (landing, sign-up, log in), [`kyc`] and [`clients`] are the developer's pages,
//! [`staff`] the staff pages under `/developers/staff`; [`markup`] is their shared layout and
//! forms, [`session`] their session extractor, CSRF check and login flow.

use actix_web::web;
use maud::Markup;
use platform::Platform;
use platform::session::Session;

mod account;
mod clients;
mod kyc;
pub(crate) mod markup;
mod second_factor;
pub(crate) mod session;
pub(crate) mod staff;

pub(crate) type Form = platform::web::auth::FormFields;
pub(crate) type Data = web::Data<Platform>;

/// The developer pages' navigation.
fn nav(s: &Session) -> Markup {
    markup::nav_bar(
        &[
            ("/developers", "Dashboard"),
            ("/developers/kyc", "KYC"),
            ("/developers/clients", "Clients"),
            ("/developers/second-factor", "Two-step verification"),
        ],
        "/developers/logout",
        &s.csrf_token,
    )
}

/// Mounts the developer pages, then the staff pages.
pub fn configure(cfg: &mut web::ServiceConfig) {
    routes! { cfg;
        "/developers" => get account::index;
        "/developers/signup" => get account::signup_page, post account::signup_submit;
        "/developers/login" => get account::login_page, post account::login_submit;
        "/developers/logout" => post account::logout;
        "/developers/kyc" => get kyc::kyc_get, post kyc::kyc_post;
        "/developers/clients" => get clients::clients_list;
        "/developers/clients/new" => get clients::new_client_page, post clients::new_client_submit;
        "/developers/clients/{client_id}" => get clients::client_get, post clients::client_update;
        "/developers/clients/{client_id}/rotate" => post clients::client_rotate;
        "/developers/clients/{client_id}/webhooks/{event_id}/retry" => post clients::webhook_retry;
        "/developers/clients/{client_id}/delete" => post clients::client_delete;
        "/developers/second-factor" => get second_factor::developer_get, post second_factor::developer_post;
    }
    staff::configure(cfg);
    second_factor::code_route::<platform::web::auth::Developer>(cfg);
    second_factor::code_route::<platform::web::auth::Staff>(cfg);
    second_factor::enrol_route::<platform::web::auth::Staff>(cfg);
}
