//! Developer portal: developer accounts, KYC, four-eyes staff review and client registration.
//! Its routes are mounted by the `consent` binary through [`configure`] (which expects a
//! `web::Data<platform::Platform>` in the app); its JSON endpoints are merged into the server's
//! OpenAPI document through [`ApiDoc`].
//!
//! Layers: `api` (JSON handlers) and `pages` (server-rendered HTML) are thin; the services
//! ([`accounts`], [`kyc`], [`clients`], [`approvals`]) are plain Rust over
//! `&mut AnyConnection` / `&Platform` with no actix types, so the authorization server calls them
//! directly, e.g. [`clients::client_display`] for the consent page,
//! [`clients::revoke_client_grants`], and [`approvals::request`] / [`approvals::decide`] for its
//! own four-eyes actions.
//!
//! Authentication: pages use cookie sessions (`SessionKind::Developer` / `SessionKind::Staff`,
//! separate cookies) with a per-session CSRF token on every form, and a double-submit cookie on
//! the sign-up and login forms. The JSON API uses bearer tokens from `POST
//! /api/v1/developers/login` and `POST /api/v1/admin/login`: rows of the same `sessions` table
//! (only the SHA-256 of the token is stored), never cookies, so it needs no CSRF defence.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)
)]

/// Mounts a route table on `$cfg`: one line per path, each with its methods and handlers
/// (`"/path" => get list, post create;`). A path answers 405 to a method it does not list.
macro_rules! routes {
    ($cfg:expr; $($path:literal => $($method:ident $handler:expr),+;)+) => {
        $cfg$(.service(
            actix_web::web::resource($path)$(.route(actix_web::web::$method().to($handler)))+
        ))+;
    };
}

pub mod accounts;
mod api;
pub mod approvals;
mod auth;
pub mod clients;
mod countries;
pub mod domain;
pub mod error;
pub mod kyc;
mod pages;
pub mod second_factor;

use actix_web::web;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

pub use accounts::{StaffAccount, create_staff_user, set_staff_roles};
pub use api::kyc::StaffKycResponse;
pub use approvals::StaffRole;
pub use clients::{
    ClientDisplay, approved_legal_name, client_display, developer_legal_name, revoke_client_grants,
};
pub use error::{PortalError, PortalResult};
pub use pages::staff::{kyc_details, reviews_list};

/// OpenAPI fragment of the portal's JSON API.
#[derive(Debug, OpenApi)]
#[openapi(
    paths(
        api::accounts::sign_up,
        api::accounts::developer_login,
        api::accounts::developer_logout,
        api::accounts::me,
        api::second_factor::developer_second_factor_login,
        api::second_factor::developer_status,
        api::second_factor::developer_enrol,
        api::second_factor::developer_confirm,
        api::second_factor::developer_remove,
        api::kyc::get_kyc,
        api::kyc::put_kyc,
        api::kyc::submit_kyc,
        api::clients::create_client,
        api::clients::list_clients,
        api::clients::get_client,
        api::clients::update_client,
        api::clients::delete_client,
        api::clients::rotate_secret,
        api::clients::rotate_webhook_secret,
        api::clients::webhook_deliveries,
        api::clients::redeliver_webhook,
        api::accounts::staff_login,
        api::second_factor::staff_second_factor_login,
        api::second_factor::staff_enrol,
        api::second_factor::staff_confirm,
        api::kyc::kyc_queue,
        api::kyc::kyc_detail,
        api::kyc::kyc_review,
        api::approvals::list_approvals,
        api::approvals::get_approval,
        api::approvals::approve,
        api::approvals::reject,
        api::approvals::request_suspension,
        api::approvals::request_unsuspension,
        api::approvals::request_dormancy_change,
    ),
    modifiers(&BearerSchemes),
    tags(
        (name = "developers", description = "Developer accounts and KYC"),
        (name = "clients", description = "OAuth client registration (developer bearer token)"),
        (name = "staff", description = "KYC review and four-eyes approvals (staff bearer token)"),
    )
)]
pub struct ApiDoc;

#[derive(Debug)]
struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, desc) in [
            (
                "developer_token",
                "Token from POST /api/v1/developers/login",
            ),
            ("staff_token", "Token from POST /api/v1/admin/login"),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(desc))
                        .build(),
                ),
            );
        }
    }
}

/// Mounts the portal's routes: the JSON API and the pages under `/developers`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    api::configure(cfg);
    pages::configure(cfg);
}

/// A one-line description of a service error for command-line output (field errors included).
pub fn describe(e: &PortalError) -> String {
    match e {
        PortalError::Validation(errs) => errs
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}
